"""Stage 1 with test-time flips, on validation phantoms and by SURE (docs/METHOD.md).

Run::

    python benchmarks/bench_stage1_tta.py MODEL_DIR/projection_denoiser

For each set of test-time flips (:data:`turndiff.stage1.SYMMETRIES`), prints SURE of the
sinogram MSE on 4 training sinograms (noisy data only: the choice) and PSNR / SSIM soft /
PSNR full inside the body of FBP(f(y)) on 6 validation phantoms at 25%, 10%, 50% and 75%
dose. The references are used for evaluation only; ``make_dev_data`` refuses the test seeds.
"""

from __future__ import annotations

import argparse

from turndiff.benchmark.data import make_dev_data
from turndiff.metrics import evaluate
from turndiff.physics import CTProjector
from turndiff.stage1 import SYMMETRIES, ProjectionDenoiser, sure_mse

DOSES = (0.25, 0.1, 0.5, 0.75)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("stage1_dir", help="a saved stage-1 model folder")
    args = ap.parse_args()
    data = make_dev_data(size=256, n_train=8, n_val=6, val_doses=DOSES)
    A, ref = CTProjector(data.geometry), data.test_reference_hu
    den = ProjectionDenoiser.from_pretrained(args.stage1_dir)

    def cells(s) -> str:
        e = evaluate(A.fbp_hu(s), ref, mask="body")
        return f"{e['soft']['psnr']['mean']:.2f} / {e['soft']['ssim']['mean']:.3f} / {e['full']['psnr']['mean']:.2f}"

    print("| test-time flips | passes | SURE (x 1e-4) | " + " | ".join(f"{d:.0%}" for d in DOSES) + " |")
    print("|---|---|---|" + "---|" * len(DOSES))
    for name, flips in SYMMETRIES.items():
        f = lambda y, name=name: den.denoise(y, symmetries=name)  # noqa: E731
        sure = sure_mse(f, data.train_sinogram[:4], data.train_photons)
        row = " | ".join(cells(f(data.test_sinograms[d])) for d in DOSES)
        print(f"| {name} | {len(flips)} | {sure * 1e4:.2f} | {row} |", flush=True)


if __name__ == "__main__":
    main()
