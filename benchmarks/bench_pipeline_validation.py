"""Whole-pipeline scores of trained TurnDiff models on validation phantoms (docs/METHOD.md).

Run::

    python benchmarks/bench_pipeline_validation.py MODEL_DIR [MODEL_DIR ...] [--slices 6]
        [--doses 0.25,0.1,0.5] [--seed 0]

MODEL_DIR: a TurnDiff model folder (e.g. ``BENCH_OUT/runs/turndiff/model``). For each model
and dose, reconstructs the validation phantoms with the pipeline's defaults and prints the
soft-window PSNR / SSIM inside the body of TurnDiff's output and of its calibrated x0. A
stage-1 choice is judged here, through the whole pipeline, not through FBP(f(y)) alone
(session 16: a checkpoint selection that gained 0.49 dB in FBP(f(y)) lost 0.19 dB here).
References are used for evaluation only; ``make_dev_data`` refuses the test seeds.
"""

from __future__ import annotations

import argparse

from turndiff.benchmark.data import make_dev_data
from turndiff.metrics import evaluate
from turndiff.pipeline import TurnDiffPipeline


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("models", nargs="+", help="TurnDiff model folders")
    ap.add_argument("--slices", type=int, default=6, help="validation phantoms")
    ap.add_argument("--doses", default="0.25,0.1,0.5")
    ap.add_argument("--seed", type=int, default=0, help="sampler seed")
    args = ap.parse_args()
    doses = tuple(float(d) for d in args.doses.split(","))
    data = make_dev_data(size=256, n_train=8, n_val=args.slices, val_doses=doses)
    print("| model | dose | TurnDiff PSNR / SSIM soft | x0 PSNR / SSIM soft |\n|---|---|---|---|")
    for model in args.models:
        pipe = TurnDiffPipeline.from_pretrained(model, device="cpu")
        for d in doses:
            res = pipe(data.test_sinograms[d], seed=args.seed, progress=False)
            cells = []
            for img in (res.image_hu, res.x0):
                e = evaluate(img, data.test_reference_hu, mask="body")["soft"]
                cells.append(f"{e['psnr']['mean']:.2f} / {e['ssim']['mean']:.4f}")
            print(f"| {model} | {d:.0%} | {' | '.join(cells)} |", flush=True)


if __name__ == "__main__":
    main()
