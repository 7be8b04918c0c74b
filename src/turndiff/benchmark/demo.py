"""The demo: the main job end to end on the embedded phantoms.

phantoms -> simulate at 25% dose -> fit (``fast``) -> reconstruct at 25% and at the
unseen 10% and 50%, and a volume of consecutive slices at 25% -> a fig6/fig9-style figure,
an axial + coronal reformat of the volume, and a metrics table (printed and saved).
"""

from __future__ import annotations

import json
import time
from pathlib import Path


from ..metrics import evaluate, through_plane
from ..physics import CTProjector
from .data import VOLUME, make_bench_data
from .figures import comparison_figure, dose_grid_figure, reformat_figure

__all__ = ["run_demo"]

DEMO_DOSES = (0.25, 0.10, 0.50)


def _fmt(m: dict) -> str:
    s = m["soft"]
    return f"{s['psnr']['mean']:.2f} dB / {s['ssim']['mean']:.3f}"


def run_demo(
    out_dir: str | Path = "demo_out",
    *,
    size: int = 128,
    n_train: int = 8,
    n_test: int = 4,
    n_volume: int = 16,
    preset: str = "fast",
    seed: int = 0,
    device: str = "auto",
    log=print,
) -> dict:
    """Run the demo; returns the metrics table (also written to ``out_dir``)."""
    from ..pipeline import fit

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    log(f"[1/4] phantoms ({n_train} training, {n_test} test slices, {size}x{size}) and 25%-dose simulation")
    data = make_bench_data(size=size, n_train=n_train, n_test=n_test, test_doses=DEMO_DOSES, seed=seed,
                           volume=n_volume)
    g = data.geometry
    log(f"[2/4] fit TurnDiff ({preset}) on the {n_train} noisy training sinograms (no clean data)")
    if (out / "run").is_dir() and any((out / "run").iterdir()):
        # A finished run resumes at its end: say so, or a rerun after a code change looks trained.
        log(f"      resuming the checkpoints in {out / 'run'} (delete {out} to train afresh)")
    pipe = fit(data.train_sinogram, geometry=g, photons=data.train_photons, preset=preset, device=device, seed=seed,
               run_dir=out / "run")
    pipe.save_pretrained(out / "model")
    log(f"      trained in {sum(pipe.info['train_seconds'].values()):.0f} s; model in {out / 'model'}")
    A = CTProjector(g)
    ref = data.test_reference_hu
    table: dict = {}
    images: dict = {}
    log("[3/4] reconstruct the test slices at 25% (training dose) and the unseen 10% and 50%")
    for d in DEMO_DOSES:
        sino = data.test_sinograms[d]
        res = pipe(sino, strategy="auto", fusion="pixel", seed=seed)
        fbp = A.fbp_hu(sino)
        rows = {"FBP": fbp, "x0 (stage 1)": res.x0, "TurnDiff": res.image_hu}
        table[f"{d:.0%}"] = {k: evaluate(v, ref, mask="body") for k, v in rows.items()}
        table[f"{d:.0%}"]["_strategy"] = res.strategy.to_dict()
        images[f"{d:.0%}"] = {k: v[0] for k, v in rows.items()}
        log(f"      {d:.0%}: " + ", ".join(f"{k} {_fmt(v)}" for k, v in table[f"{d:.0%}"].items()
                                         if not k.startswith("_"))
            + f"  (strategy {res.strategy.strategy}, lam {res.strategy.lam:.2f})")
    volume = {}
    if n_volume:
        log(f"      and a volume of {n_volume} consecutive slices ({data.slice_spacing:g} mm apart) at 25%, "
            "slice by slice")
        sino = data.test_sinograms[VOLUME]
        res = pipe(sino, strategy="auto", fusion="pixel", seed=seed)
        volume = {"FBP": A.fbp_hu(sino), "x0 (stage 1)": res.x0, "TurnDiff": res.image_hu}
        vref = data.volume_reference_hu
        table["volume"] = {k: {**evaluate(v, vref, mask="body"), "through_plane": through_plane(v, vref)}
                           for k, v in volume.items()}
    log("[4/4] figures and tables")
    for d in DEMO_DOSES:
        key = f"{d:.0%}"
        comparison_figure(images[key], ref[0], out / f"comparison_{int(d * 100)}pct.png", window="abdomen",
                          metrics={k: _fmt(v) for k, v in table[key].items() if not k.startswith("_")},
                          title=f"{key} dose (trained at 25%), abdomen window [-100, 200] HU")
    dose_grid_figure(images, ref[0], out / "dose_generalisation.png", window="abdomen",
                     title="Dose generalisation (trained at 25%)")
    if volume:
        reformat_figure(volume, data.volume_reference_hu, out / "volume_reformat.png",
                        pixel_spacing=g.pixel_spacing, slice_spacing=data.slice_spacing, window="abdomen",
                        metrics={k: _fmt(v) for k, v in table["volume"].items()},
                        title=f"{n_volume} consecutive slices at 25% dose: axial slice and coronal reformat")
    lines = ["| dose | method | PSNR soft (dB) | SSIM soft | RMSE soft (HU) | PSNR full (dB) | SSIM full |",
             "|---|---|---|---|---|---|---|"]
    for d, rows in table.items():
        if d == "volume":
            continue
        for k, m in rows.items():
            if k.startswith("_"):
                continue
            s, f = m["soft"], m["full"]
            lines.append(f"| {d} | {k} | {s['psnr']['mean']:.2f} +- {s['psnr']['std']:.2f} | "
                         f"{s['ssim']['mean']:.4f} | {s['rmse']['mean']:.1f} | {f['psnr']['mean']:.2f} | "
                         f"{f['ssim']['mean']:.4f} |")
    if volume:
        lines += ["", f"Volume ({n_volume} consecutive slices, 25% dose): slice-to-slice consistency",
                  "", "| method | PSNR soft (dB) | SSIM soft | dz RMSE (HU) | dz ratio | banding (HU) |",
                  "|---|---|---|---|---|---|"]
        for k, m in table["volume"].items():
            t = m["through_plane"]
            lines.append(f"| {k} | {m['soft']['psnr']['mean']:.2f} | {m['soft']['ssim']['mean']:.4f} | "
                         f"{t['dz_rmse']:.1f} | {t['dz_ratio']:.2f} | {t['banding']:.2f} |")
    md = "\n".join(lines)
    (out / "metrics.md").write_text(md + "\n")
    (out / "metrics.json").write_text(json.dumps(table, indent=2, default=float))
    log(md)
    log(f"done in {time.perf_counter() - t_start:.0f} s; outputs in {out}/")
    return table
