"""Stage 1 with and without the SURE calibration, on validation phantoms (docs/METHOD.md).

Run::

    python benchmarks/bench_stage1_calibration.py MODEL_DIR/projection_denoiser \
        [--train 'paper CSSS=objective="csss",pairs="cell",loss_weighting="none",alpha=1,iters=1000,sure_every=0']

Evaluates the given trained stage 1 (and any stage 1 trained here from ``Stage1Config``
overrides on the benchmark's 8 training sinograms) on 6 validation phantoms at 25%, 10%,
50% and 75% dose: soft / full-window PSNR inside the body of FBP(f(y)) and of the
calibrated sinogram (:func:`turndiff.stage1.sure_calibrate`, bands as the pipeline uses).
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

DOSES = (0.25, 0.1, 0.5, 0.75)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("stage1_dir", help="a saved stage-1 model folder")
    ap.add_argument("--train", action="append", default=[], help="NAME=k=v,... stage-1 overrides to train and add")
    ap.add_argument("--bands", type=int, default=8, help="detector-frequency bands of the calibration")
    args = ap.parse_args()
    data = make_dev_data(size=256, n_train=8, n_val=6, val_doses=DOSES)
    A, ref = CTProjector(data.geometry), data.test_reference_hu
    i0_train = estimate_photons(data.train_sinogram)

    def metrics(s) -> str:
        e = evaluate(A.fbp_hu(s), ref, mask="body")
        return f"{e['soft']['psnr']['mean']:.2f} / {e['full']['psnr']['mean']:.2f}"

    models = {args.stage1_dir: ProjectionDenoiser.from_pretrained(args.stage1_dir)}
    for spec in args.train:
        name, _, text = spec.partition("=")
        models[name] = train_projection_denoiser(data.train_sinogram, photons=data.train_photons, progress=False,
                                                 config=Stage1Config.preset("fast", **parse_settings(text)))
    print("| stage 1 | " + " | ".join(f"{d:.0%} | {d:.0%} calibrated" for d in DOSES) + " |")
    print("|---|" + "---|---|" * len(DOSES))
    for name, den in models.items():
        cells = []
        for d in DOSES:
            y = data.test_sinograms[d]
            f = den.denoise(y)
            calibrated, _ = sure_calibrate(den.denoise, y, float(den.photons) * estimate_photons(y) / i0_train,
                                           denoised=f, bands=args.bands)
            cells += [metrics(f), metrics(calibrated)]
        print(f"| {name} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
