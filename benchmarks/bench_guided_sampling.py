"""Measurement-guided sampling of stage 2, on *validation* phantoms (issue 13, x~0 bar).

The diffusion's own output x~0 stays below stage 1's calibrated x0 (it learnt to copy its
teacher), while the pipeline's last step, data consistency, is what lifts TurnDiff above
both. This script moves that step *into* the sampler, as decomposed diffusion sampling
does (Chung et al. 2023): at the chosen DDIM steps the decoded clean-image prediction goes
through the data-consistency solve (:func:`turndiff.inference.consistency.data_consistency`,
its prior built like the pipeline's, :func:`turndiff.pipeline.consistency_prior`) and its
latent replaces the prediction (:meth:`LatentDiffusion.sample`'s ``guidance``). The guided
x~0 then goes through the pipeline's fusion, restoration and final data consistency
unchanged (``x_diffusion=``), so the table shows what guidance does to x~0 and to
TurnDiff's output, with the same draw, seed and stage-1 pass.

Run::

    python benchmarks/bench_guided_sampling.py MODEL_DIR [--slices 6] [--doses 0.25,0.1,0.5]
        [--variants -1:8,-3/-1:4] [--lesions]

A variant ``STEPS:ITERS`` guides at the DDIM step indices ``STEPS`` (``/``-separated,
negative from the end; ``-1`` is the last) with ``ITERS`` conjugate-gradient iterations
each. ``--lesions``: 8 validation scans with 16 lesions of 3-5 px, +20 to +30 HU inserted
into their projections (as ``bench_fusion_contrast.py`` does), and the lesions' contrast
recovery and CNR for every image. Prints a Markdown table; seconds are per slice for the
guided sampling alone.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from bench_fusion_contrast import _lesion_scores
from turndiff.benchmark.data import make_dev_data
from turndiff.benchmark.iq import lesion_positions
from turndiff.dose import insert_lesions, photons_from_dose
from turndiff.inference.consistency import data_consistency
from turndiff.masks import body_mask
from turndiff.metrics import psnr, ssim
from turndiff.pipeline import TurnDiffPipeline, consistency_prior


def guided_x_diffusion(pipe: TurnDiffPipeline, out, sinogram: np.ndarray, denoised: np.ndarray, steps, iters: int,
                       seed: int = 0) -> np.ndarray:
    """Stage 2 on ``out.x_prior`` (the same condition and seed as ``out``), with the data
    consistency of ``sinogram`` at DDIM steps ``steps``."""

    def guidance(k, rows, x0_hat):
        prior_mean, prior_std = consistency_prior(x0_hat, out.x_ld[rows], out.x0[rows], x0_hat)
        return data_consistency(prior_mean, sinogram[rows], pipe.projector, prior_std_hu=prior_std,
                                photons=out.photons_estimated, denoised=denoised[rows], iters=iters, device=pipe.device)

    return pipe.stage2.sample(out.x_prior, seed=seed, guidance=guidance, guidance_steps=steps)


def _parse_variant(text: str) -> tuple[tuple[int, ...], int]:
    steps, iters = text.split(":")
    return tuple(int(s) for s in steps.split("/")), int(iters)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("--slices", type=int, default=6, help="validation phantoms (8 with --lesions)")
    ap.add_argument("--doses", default="0.25,0.1,0.5")
    ap.add_argument("--variants", default="-1:8", help="comma-separated STEPS:ITERS, steps '/'-separated")
    ap.add_argument("--lesions", action="store_true", help="insert lesions and report their contrast")
    ap.add_argument("--seed", type=int, default=0, help="sampler seed")
    args = ap.parse_args()
    doses = tuple(float(d) for d in args.doses.split(","))
    variants = [(v, *_parse_variant(v)) for v in args.variants.split(",") if v]
    pipe = TurnDiffPipeline.from_pretrained(args.model, device="cpu")
    data = make_dev_data(n_val=8 if args.lesions else args.slices, val_doses=doses, progress=False)
    ref = data.test_reference_hu
    body = body_mask(ref)
    lesions = lesion_positions(ref, np.random.default_rng(0), per_slice=2) if args.lesions else []
    rows = []

    def add(dose, name, imgs, secs=float("nan")):
        b = imgs[0]
        les = _lesion_scores(b, imgs[1], ref, lesions) if lesions else (float("nan"),) * 3
        rows.append((dose, name, float(np.mean(psnr(b, ref, window="soft", mask=body))),
                     float(np.mean(ssim(b, ref, window="soft", mask=body))), les[0], les[2], secs))
        print(rows[-1], flush=True)

    for dose in doses:
        scans = [data.test_sinograms[dose]]
        if lesions:
            scans.append(insert_lesions(scans[0], data.geometry, lesions, photons=photons_from_dose(dose), seed=37)[0])
        runs = []
        for y in scans:
            proj = pipe.project(y, progress=False)
            runs.append((y, proj, pipe(y, seed=args.seed, progress=False, projection=proj)))
        add(dose, "x0", [r[2].x0 for r in runs])
        add(dose, "x~0", [r[2].x_diffusion for r in runs])
        add(dose, "TurnDiff", [r[2].image_hu for r in runs])
        # Stage 2 taken out: x0 in place of x~0 through the same fusion, restoration and
        # data consistency (what the diffusion adds to the output).
        add(dose, "TurnDiff without stage 2 (x0 as x~0)",
            [pipe(y, seed=args.seed, progress=False, projection=proj, x_diffusion=out.x0).image_hu
             for y, proj, out in runs])
        for name, steps, iters in variants:
            guided, final, secs = [], [], 0.0
            for y, proj, out in runs:
                t0 = time.perf_counter()
                xd = guided_x_diffusion(pipe, out, y, proj.denoised, steps, iters, seed=args.seed)
                secs += time.perf_counter() - t0
                guided.append(xd)
                final.append(pipe(y, seed=args.seed, progress=False, projection=proj, x_diffusion=xd).image_hu)
            per_slice = secs / sum(len(r[0]) for r in runs)
            add(dose, f"x~0 guided {name}", guided, per_slice)
            add(dose, f"TurnDiff, x~0 guided {name}", final)
    print(f"\nvalidation phantoms: {len(ref)}, {len(lesions)} lesions\n")
    print("| dose | image | soft PSNR | soft SSIM | lesion contrast | lesion CNR | guided s/slice |\n"
          "|---|---|---|---|---|---|---|")
    for dose, name, p, s, rec, cnr, secs in rows:
        print(f"| {dose:.0%} | {name} | {p:.2f} | {s:.4f} | {rec:.3f} | {cnr:.2f} | {secs:.1f} |")


if __name__ == "__main__":
    main()
