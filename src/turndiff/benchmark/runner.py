"""The benchmark: every method and ablation on the same phantoms, one evaluation path.

Quality (PSNR / SSIM / RMSE, mean +- std over test slices) per method x dose x window,
an ablation table, a cost table (training time, inference seconds per slice, peak
memory), figures and a self-contained HTML report plus ``results.json``.

Training uses the noisy training sinograms only; the one exception is the supervised
RED-CNN upper bound, which is marked ``uses_clean_data``.
"""

from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from ..metrics import evaluate, gradient_ratios
from ..masks import body_mask
from ..physics import CTProjector
from .data import BenchData, make_bench_data

__all__ = ["PRESETS", "ALL_METHODS", "run_benchmark"]

#: Data and training sizes per preset.
PRESETS = {
    "fast": dict(size=256, n_train=8, n_test=6, doses=(0.25, 0.10, 0.50, 0.05, 0.75)),
    "paper": dict(size=512, n_train=32, n_test=16, doses=(0.25, 0.10, 0.50, 0.05, 0.75)),
    "tiny": dict(size=64, n_train=2, n_test=2, doses=(0.25, 0.10)),
}
TURNDIFF_ROWS = ("TurnDiff", "x0 (only projection)", "x~0 (diffusion, no fusion)", "x~0 (condition x_ld)",
                 "no tunable strategy", "global fusion 0.5", "global fusion 1", "no SURE calibration",
                 "x0, no SURE calibration")
#: Stage-1 ablations: stage 1 retrained with these overrides, stage 2 and fusion reused.
#: The first is the paper's stage 1 as the project shipped it before issue 13.
STAGE1_ABLATIONS = {
    "stage 1: paper CSSS (2x2 cells)": dict(objective="csss", pairs="cell", loss_weighting="none", alpha=1.0,
                                            iters=1000, sure_every=0),
    "stage 1: CSSS view pairs": dict(objective="csss", pairs="views", loss_weighting="none", alpha=2.0,
                                     iters=1000, sure_every=0),
    "stage 1: no ramp weighting": dict(loss_weighting="none"),
}
ABLATION_STAGE1 = tuple(STAGE1_ABLATIONS)
BASELINE_ORDER = ("FBP", "TV", "BM3D", "Neighbor2Neighbor", "Blind2Unblind", "Noiser2Noise", "Noise2Sim",
                  "Noise2Inverse", "RED-CNN (supervised)")
ALL_METHODS = ("turndiff", "ablations", *BASELINE_ORDER)


class _PeakRSS:
    """Peak resident memory (MB) of this process while the block runs (sampled, 20 Hz)."""

    def __enter__(self):
        self.peak = self.base = self._rss()
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._watch, daemon=True)
        self._t.start()
        return self

    @staticmethod
    def _rss() -> float:
        try:
            with open(f"/proc/{os.getpid()}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        return int(line.split()[1]) / 1024.0
        except OSError:
            pass
        return 0.0

    def _watch(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._rss())
            time.sleep(0.05)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, self._rss())

    @property
    def delta(self) -> float:
        return self.peak - self.base


@dataclass
class _Result:
    images: dict  # dose -> HU [N, H, W]
    train_seconds: float
    infer_seconds_per_slice: float
    peak_mb: float
    uses_clean_data: bool = False
    notes: str = ""
    spread: dict | None = None


def _turndiff_results(data: BenchData, doses, preset: str, seed: int, device: str, log, run_dir: Path,
                      ablations: bool) -> dict[str, _Result]:
    from ..pipeline import fit

    out: dict[str, _Result] = {}
    with _PeakRSS() as mem:
        t0 = time.perf_counter()
        pipe = fit(data.train_sinogram, geometry=data.geometry, photons=data.train_photons, preset=preset,
                   device=device, seed=seed, run_dir=run_dir / "turndiff")
        train_s = time.perf_counter() - t0
        pipe.save(run_dir / "turndiff" / "model")  # the benchmarked model, for `turndiff reconstruct`
        imgs: dict[str, dict] = {k: {} for k in TURNDIFF_ROWS}
        infer = 0.0
        spread = None
        for d in doses:
            sino = data.test_sinograms[d]
            t1 = time.perf_counter()
            res = pipe(sino, strategy="auto", fusion="pixel", seed=seed, progress=False)
            infer += time.perf_counter() - t1
            imgs["TurnDiff"][d] = res.image_hu
            imgs["x0 (only projection)"][d] = res.x0
            if res.x_diffusion is not None:
                imgs["x~0 (diffusion, no fusion)"][d] = res.x_diffusion
                # Stage 2 on the condition it was trained on (issue 4 measures x~0 this way).
                imgs["x~0 (condition x_ld)"][d] = pipe.stage2.sample(res.x_ld, seed=seed)
            if d == doses[0] and res.x_diffusion is not None:
                # Honest stochasticity (issue 4): per-pixel spread of x~0 over 4 sampler seeds.
                from ..stage2 import sample_spread

                sp = sample_spread(pipe.stage2, res.x_prior, seeds=(seed, seed + 1, seed + 2, seed + 3),
                                   progress=False)
                spread = {"dose": d, "seeds": 4, "std_hu_mean": float(sp.std.mean()),
                          "std_hu_p95": float(np.percentile(sp.std, 95)),
                          "std_hu_mean_in_body": float(sp.std[body_mask(data.test_reference_hu)].mean())}
                log(f"  x~0 spread over 4 seeds at {d:.0%}: mean {spread['std_hu_mean']:.2f} HU per pixel")
            log(f"  TurnDiff {d:.0%}: strategy {res.strategy.strategy} lam {res.strategy.lam:.2f}")
            if ablations:
                from ..inference import global_fusion

                none = pipe(sino, strategy="none", fusion="pixel", seed=seed, progress=False)
                imgs["no tunable strategy"][d] = none.image_hu
                imgs["global fusion 0.5"][d] = global_fusion(res.x_diffusion, res.x0, 0.5)
                imgs["global fusion 1"][d] = global_fusion(res.x_diffusion, res.x0, 1.0)
                plain = pipe(sino, strategy="auto", fusion="pixel", seed=seed, calibrate=False, progress=False)
                imgs["no SURE calibration"][d] = plain.image_hu
                imgs["x0, no SURE calibration"][d] = plain.x0
    n_slices = sum(data.test_sinograms[d].shape[0] for d in doses)
    for k, v in imgs.items():
        if v:
            out[k] = _Result(v, train_s, infer / n_slices, mem.delta)
    out["TurnDiff"].spread = spread
    out["TurnDiff"].notes = f"stage 1 {pipe.info['train_seconds']['stage1']:.0f} s + stage 2 " \
                            f"{pipe.info['train_seconds'].get('stage2', 0):.0f} s"
    if ablations:
        # Stage-1 ablations: retrain stage 1 only, keep the trained stage 2 and fusion.
        from ..stage1 import Stage1Config, train_projection_denoiser

        for name, kw in STAGE1_ABLATIONS.items():
            if preset == "tiny":
                kw = {k: v for k, v in kw.items() if k not in ("iters", "sure_every")}
            t0 = time.perf_counter()
            s1 = train_projection_denoiser(data.train_sinogram, photons=data.train_photons,
                                           config=Stage1Config.preset(preset, seed=seed, **kw), device=device,
                                           progress=False)
            secs = time.perf_counter() - t0
            swapped = type(pipe)(s1, pipe.stage2, pipe.info, device=device)
            out[name] = _Result({d: swapped(data.test_sinograms[d], seed=seed, progress=False).image_hu
                                 for d in doses}, secs, float("nan"), float("nan"),
                                notes="stage 1 retrained with the ablation; stage 2 reused")
            log(f"  ablation {name}: stage 1 retrained in {secs:.0f} s")
    return out


def _baseline_results(name: str, data: BenchData, doses, preset: str, seed: int, device: str,
                      run_dir: Path) -> _Result:
    from .. import baselines

    b = baselines.BASELINES[name]
    with _PeakRSS() as mem:
        t0 = time.perf_counter()
        kwargs = {}
        if b.uses_clean_data:
            kwargs["reference_hu"] = data.train_reference_hu
        state = b.fit(data.train_sinogram, data.geometry, photons=data.train_photons, preset=preset, seed=seed,
                      device=device, run_dir=run_dir / name.replace(" ", "_"), progress=False, **kwargs)
        train_s = time.perf_counter() - t0
        imgs, infer = {}, 0.0
        for d in doses:
            t1 = time.perf_counter()
            imgs[d] = np.asarray(b.reconstruct(state, data.test_sinograms[d], data.geometry,
                                               photons=data.photons(d)), np.float32)
            infer += time.perf_counter() - t1
    n_slices = sum(data.test_sinograms[d].shape[0] for d in doses)
    return _Result(imgs, train_s if b.trained else 0.0, infer / n_slices, mem.delta, b.uses_clean_data)


def _fbp_result(data: BenchData, doses) -> _Result:
    A = CTProjector(data.geometry)
    imgs, t = {}, 0.0
    for d in doses:
        t1 = time.perf_counter()
        imgs[d] = A.fbp_hu(data.test_sinograms[d])
        t += time.perf_counter() - t1
    return _Result(imgs, 0.0, t / sum(data.test_sinograms[d].shape[0] for d in doses), 0.0)


def run_benchmark(
    out_dir: str | Path,
    *,
    preset: str = "fast",
    methods: list[str] | None = None,
    device: str = "auto",
    seed: int = 0,
    log: Callable[[str], None] = print,
) -> dict:
    """Run the benchmark; writes tables, figures, ``report.html`` and ``results.json`` to ``out_dir``."""
    from .report import write_report

    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose {', '.join(PRESETS)}")
    p = PRESETS[preset]
    chosen = list(methods) if methods else list(ALL_METHODS)
    unknown = [m for m in chosen if m not in ALL_METHODS]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; choose from {', '.join(ALL_METHODS)}")
    model_preset = "tiny" if preset == "tiny" else preset
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    log(f"data: {p['n_train']} training + {p['n_test']} test phantoms at {p['size']}x{p['size']}, "
        f"doses {', '.join(f'{d:.0%}' for d in p['doses'])} (training at 25%)")
    data = make_bench_data(size=p["size"], n_train=p["n_train"], n_test=p["n_test"], test_doses=p["doses"],
                           seed=seed, progress=False)
    doses = p["doses"]
    results: dict[str, _Result] = {}
    if "FBP" in chosen:
        results["FBP"] = _fbp_result(data, doses)
    if "turndiff" in chosen or "ablations" in chosen:
        log("TurnDiff: fit and reconstruct" + (" (with ablations)" if "ablations" in chosen else ""))
        results.update(_turndiff_results(data, doses, model_preset, seed, device, log, out / "runs",
                                         ablations="ablations" in chosen))
    for name in BASELINE_ORDER:
        if name in chosen and name != "FBP":
            log(f"{name}: fit and reconstruct")
            t0 = time.perf_counter()
            results[name] = _baseline_results(name, data, doses, model_preset, seed, device, out / "runs")
            log(f"  {name} done in {time.perf_counter() - t0:.0f} s")
    ref = data.test_reference_hu
    quality = {}
    for name, r in results.items():
        quality[name] = {f"{d}": evaluate(r.images[d], ref, mask="body") for d in doses}
        # Detail at the training dose: gradient relative to the reference in its body, and
        # split into the reference's strongest edges and its flat regions (noise / texture).
        quality[name]["gradient_ratios"] = gradient_ratios(r.images[doses[0]], ref, mask="body")
        quality[name]["gradient_ratio"] = quality[name]["gradient_ratios"]["all"]
    summary = {
        "preset": preset,
        "seed": seed,
        "data": {k: (list(v) if isinstance(v, tuple) else v) for k, v in p.items()},
        "geometry": json.loads(data.geometry.to_json()),
        "quality": quality,
        "cost": {n: {"train_seconds": r.train_seconds, "infer_seconds_per_slice": r.infer_seconds_per_slice,
                     "peak_memory_mb": r.peak_mb, "uses_clean_data": r.uses_clean_data, "notes": r.notes}
                 for n, r in results.items()},
        "sampling_spread": next((r.spread for r in results.values() if r.spread), None),
        "total_seconds": time.perf_counter() - t_start,
        "machine": _machine(),
        "date": time.strftime("%Y-%m-%d"),
    }
    write_report(out, summary, results, data, log=log)
    log(f"benchmark done in {summary['total_seconds'] / 60:.1f} min; report: {out / 'report.html'}")
    return summary


def _machine() -> str:
    import platform

    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{platform.machine()}, {os.cpu_count()} CPU cores, {gpu}, torch {torch.__version__}"
