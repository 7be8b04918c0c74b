"""Which x0 should each step of the pipeline get, calibrated or not? (session 18, on
*validation* phantoms only; docs/METHOD.md, "Stage 2 gets the x0 it was trained on").

Run::

    python benchmarks/bench_stage2_input.py MODEL_DIR [--doses 0.25,0.5]

Runs the pipeline's steps (strategy blend and stage 2, pixel fusion, detail restoration,
data-consistency prior) with stage 1's SURE-calibrated x0 or its uncalibrated one at each
place, and prints TurnDiff's soft PSNR / SSIM inside the body. Calibrated everywhere is the
pipeline before session 18; uncalibrated everywhere is ``--calibrate off``. Validation noise
is drawn as ``make_dev_data(val_doses=(0.25, 0.1, 0.5))`` draws it, so the rows pair with
``bench_pipeline_validation.py``'s.
"""

from __future__ import annotations

import argparse

from turndiff.benchmark.data import make_dev_data
from turndiff.inference import blend, choose_strategy, pixel_fusion
from turndiff.inference.consistency import data_consistency
from turndiff.inference.detail import DETAIL_BLUR_PX, DETAIL_K, input_noise_std, restore_detail
from turndiff.metrics import evaluate
from turndiff.pipeline import TurnDiffPipeline, consistency_prior, fbp_hu_on

#: (stage 2, fusion, data-consistency prior): which x0 each gets.
PLACEMENTS = (("cal", "cal", "cal"), ("raw", "cal", "cal"), ("raw", "raw", "cal"), ("cal", "raw", "raw"),
              ("raw", "cal", "raw"), ("raw", "raw", "raw"))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--doses", default="0.25,0.5", help="calibrated doses to score (of 0.25, 0.1, 0.5)")
    args = ap.parse_args()
    data = make_dev_data(size=256, n_train=8, n_val=6, val_doses=(0.25, 0.1, 0.5))
    pipe = TurnDiffPipeline.from_pretrained(args.model, device="cpu")
    ref = data.test_reference_hu
    print("| dose | x0 to stage 2 / fusion / consistency prior | TurnDiff PSNR / SSIM soft |\n|---|---|---|")
    for d in (float(v) for v in args.doses.split(",")):
        y = data.test_sinograms[d]
        proj = pipe.project(y, progress=False)
        x0 = {"cal": proj.x0, "raw": proj.x0_uncalibrated}
        choice = choose_strategy("auto", None, photons_input=proj.photons,
                                 photons_train=pipe.info["photons_train_estimated"])
        sigma = input_noise_std(y, lambda s: fbp_hu_on(pipe.projector, s, pipe.device), photons=proj.photons,
                                denoised=proj.denoised, blur_px=DETAIL_BLUR_PX)
        x_d = {k: pipe.stage2.sample(blend(proj.x_ld, v, choice), seed=0, progress=False) for k, v in x0.items()}
        for s2, fu, dc in PLACEMENTS:
            fused, _ = pixel_fusion(x_d[s2], x0[fu], proj.x_ld, None)
            restored = restore_detail(fused, proj.x_ld, sigma, k=DETAIL_K, blur_px=DETAIL_BLUR_PX)
            mean, std = consistency_prior(restored, proj.x_ld, x0[dc], x_d[s2])
            out = data_consistency(mean, y, pipe.projector, prior_std_hu=std, photons=proj.photons,
                                   denoised=proj.denoised)
            e = evaluate(out, ref, mask="body")["soft"]
            print(f"| {d:.0%} | {s2} / {fu} / {dc} | {e['psnr']['mean']:.2f} / {e['ssim']['mean']:.4f} |", flush=True)


if __name__ == "__main__":
    main()
