"""Stage 1 with and without the SURE calibration, on validation phantoms (docs/METHOD.md).

Run::

    python benchmarks/bench_stage1_calibration.py MODEL_DIR/projection_denoiser \
        [--train 'paper CSSS=objective="csss",pairs="cell",loss_weighting="none",alpha=1,iters=1000,sure_every=0']
        [--layouts 8x1,4x8] [--doses 0.25,0.1,0.5,0.75]

Evaluates the given trained stage 1 (and any stage 1 trained here from ``Stage1Config``
overrides on the benchmark's 8 training sinograms) on 6 validation phantoms at 25%, 10%,
50% and 75% dose: soft PSNR / soft SSIM / full-window PSNR inside the body of FBP(f(y)) and
of the calibrated sinogram (:func:`turndiff.stage1.sure_calibrate`) for each band layout
``DxV`` of ``--layouts`` (D bands of detector frequency times V of view frequency; default:
the pipeline's, ``CALIBRATION_BANDS x CALIBRATION_VIEW_BANDS``). Every layout sees the same
probe (seed 0), so the columns differ by the layout alone.
The references are used for evaluation only; ``make_dev_data`` refuses the test seeds.
"""

from __future__ import annotations

import argparse

from _settings import parse_settings

from turndiff.benchmark.data import make_dev_data
from turndiff.dose import estimate_photons
from turndiff.metrics import evaluate
from turndiff.physics import CTProjector
from turndiff.stage1 import ProjectionDenoiser, Stage1Config, sure_calibrate, train_projection_denoiser
from turndiff.stage1.sure import CALIBRATION_BANDS, CALIBRATION_VIEW_BANDS


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("stage1_dir", help="a saved stage-1 model folder")
    ap.add_argument("--train", action="append", default=[], help="NAME=k=v,... stage-1 overrides to train and add")
    ap.add_argument("--layouts", default=f"{CALIBRATION_BANDS}x{CALIBRATION_VIEW_BANDS}",
                    help="comma-separated DxV: detector x view frequency bands of the calibration")
    ap.add_argument("--doses", default="0.25,0.1,0.5,0.75")
    args = ap.parse_args()
    layouts = [tuple(int(v) for v in text.split("x")) for text in args.layouts.split(",")]
    doses = tuple(float(d) for d in args.doses.split(","))
    data = make_dev_data(size=256, n_train=8, n_val=6, val_doses=doses)
    A, ref = CTProjector(data.geometry), data.test_reference_hu
    i0_train = estimate_photons(data.train_sinogram)

    def metrics(s) -> str:
        e = evaluate(A.fbp_hu(s), ref, mask="body")
        return f"{e['soft']['psnr']['mean']:.2f} / {e['soft']['ssim']['mean']:.4f} / {e['full']['psnr']['mean']:.2f}"

    models = {args.stage1_dir: ProjectionDenoiser.from_pretrained(args.stage1_dir)}
    for spec in args.train:
        name, _, text = spec.partition("=")
        models[name] = train_projection_denoiser(data.train_sinogram, photons=data.train_photons, progress=False,
                                                 config=Stage1Config.preset("fast", **parse_settings(text)))
    print("cells: soft PSNR / soft SSIM / full PSNR inside the body\n")
    print("| stage 1 | dose | uncalibrated | " + " | ".join(f"calibrated {b}x{v}" for b, v in layouts) + " |")
    print("|---|---|---|" + "---|" * len(layouts))
    for name, den in models.items():
        for d in doses:
            y = data.test_sinograms[d]
            f = den.denoise(y)
            cells = [metrics(f)]
            for bands, view_bands in layouts:
                calibrated, _ = sure_calibrate(den.denoise, y, float(den.photons) * estimate_photons(y) / i0_train,
                                               denoised=f, bands=bands, view_bands=view_bands)
                cells.append(metrics(calibrated))
            print(f"| {name} | {d:.0%} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
