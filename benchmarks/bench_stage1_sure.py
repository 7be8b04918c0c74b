"""Does SURE (no clean data) track the stage-1 error over training? (docs/BENCHMARKS.md)

Run: python benchmarks/bench_stage1_sure.py [--iters 2500] [--chunk 250] [--run-dir DIR]
     python benchmarks/bench_stage1_sure.py --compare "alpha=1;alpha=2;use_similarity=false" [--iters 1000]
     python benchmarks/bench_stage1_sure.py --compare "iters=1000" --model bench_out/fast13/runs/turndiff/model/projection_denoiser

Trains the `fast` stage-1 network on the benchmark's 8 training sinograms (256 x 256,
25% dose) in chunks and prints, after each chunk, the SURE estimate of the sinogram MSE
(noisy data only), the true sinogram MSE against the projected reference and the soft
window PSNR of FBP(f(y)) on the training and validation slices. With ``--compare``, trains
one model per setting instead and prints its SURE next to its validation PSNR / SSIM at
25%, 10% and 50%: SURE as a clean-data-free way to choose stage-1 hyper-parameters. The
references are used for evaluation only, and only validation phantoms are scored
(``make_dev_data`` refuses the test seeds; docs/BENCHMARKS.md, "Tuning protocol").
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np

from _settings import parse_settings

from turndiff.benchmark.data import make_dev_data
from turndiff.dose import hu_to_mu
from turndiff.metrics import evaluate, gradient_ratios
from turndiff.physics import CTProjector
from turndiff.stage1 import ProjectionDenoiser, Stage1Config, sure_mse, train_projection_denoiser


def _soft(A: CTProjector, sinograms: np.ndarray, reference_hu: np.ndarray) -> dict:
    """Soft-window metrics (inside the body) of FBP(sinograms) against the reference."""
    return evaluate(A.fbp_hu(sinograms), reference_hu, mask="body")["soft"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--iters", type=int, default=2500)
    ap.add_argument("--chunk", type=int, default=250)
    ap.add_argument("--run-dir", default=None, help="checkpoint folder (default: a temporary one)")
    ap.add_argument("--setting", default="", help='stage-1 overrides of the chunked run, e.g. \'objective="r2r"\'')
    ap.add_argument("--compare", default=None, help='settings separated by ";", e.g. "alpha=1;alpha=2"')
    ap.add_argument("--model", action="append", default=[],
                    help="with --compare: also score this trained stage 1 (a projection_denoiser folder) as a row")
    args = ap.parse_args()
    if args.compare is not None:
        return compare(args.compare, args.iters, args.model)
    data = make_dev_data(size=256, n_train=8, n_val=6, val_doses=(0.25,))
    A = CTProjector(data.geometry)
    y, yt = data.train_sinogram, data.test_sinograms[0.25]
    clean = np.asarray(A.forward(hu_to_mu(data.train_reference_hu, data.geometry.mu_water)), np.float32)  # eval only
    cfg = Stage1Config.preset("fast", iters=args.iters, checkpoint_every=args.chunk, **parse_settings(args.setting))

    print("| step | SURE (x 1e-4) | true sinogram MSE (x 1e-4) | PSNR soft, training | PSNR soft, validation |")
    print("|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = args.run_dir or tmp
        for step in range(args.chunk, args.iters + 1, args.chunk):
            den = train_projection_denoiser(y, photons=data.train_photons, config=cfg, run_dir=run_dir,
                                            max_steps=step, progress=False)
            f = den.denoise(y)
            sure = sure_mse(den.denoise, y, data.train_photons)
            true = float(np.mean((f - clean) ** 2))
            p_train = _soft(A, f, data.train_reference_hu)["psnr"]["mean"]
            p_test = _soft(A, den.denoise(yt), data.test_reference_hu)["psnr"]["mean"]
            print(f"| {step} | {sure * 1e4:.2f} | {true * 1e4:.2f} | {p_train:.2f} | {p_test:.2f} |", flush=True)


def compare(settings: str, iters: int, models: list[str] = ()) -> None:
    doses = (0.25, 0.1, 0.5)
    data = make_dev_data(size=256, n_train=8, n_val=6, val_doses=doses)
    A = CTProjector(data.geometry)
    print(f"| setting ({iters} steps) | SURE (x 1e-4), training sinograms | "
          + " | ".join(f"{d:.0%} PSNR / SSIM soft (validation)" for d in doses) + " | edges 25% | s |")
    print("|---|---|" + "---|" * len(doses) + "---|---|")
    rows = [("model", m) for m in models] + [("setting", t) for t in settings.split(";") if t.strip()]
    for kind, text in rows:
        t0 = time.perf_counter()
        if kind == "model":  # trained elsewhere (e.g. a benchmark's); its own training seconds
            den = ProjectionDenoiser.from_pretrained(text)
            secs = den.info.get("train_seconds", float("nan"))
        else:
            den = train_projection_denoiser(data.train_sinogram, photons=data.train_photons,
                                            config=Stage1Config.preset("fast", **{"iters": iters, **parse_settings(text)}),
                                            progress=False)
            secs = time.perf_counter() - t0
        sure = sure_mse(den.denoise, data.train_sinogram, data.train_photons)
        cells = []
        for d in doses:
            e = _soft(A, den.denoise(data.test_sinograms[d]), data.test_reference_hu)
            cells.append(f"{e['psnr']['mean']:.2f} / {e['ssim']['mean']:.3f}")
            if d == 0.25:
                img = A.fbp_hu(den.denoise(data.test_sinograms[d]))
                edges = gradient_ratios(img, data.test_reference_hu, mask="body")["edges"]
        sel = den.info.get("sure_selection")
        chosen = f" (SURE kept step {sel['selected_step']} {sel['selected_weights']})" if sel else ""
        print(f"| {text}{chosen} | {sure * 1e4:.2f} | {' | '.join(cells)} | {edges:.3f} | {secs:.0f} |", flush=True)
        if sel:
            print("  SURE during training (x 1e-4): " + ", ".join(
                f"{h['step']} {h['weights']} {h['sure_mse'] * 1e4:.2f}" for h in sel["history"]), flush=True)


if __name__ == "__main__":
    main()
