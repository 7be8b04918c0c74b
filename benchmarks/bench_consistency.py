"""The data-consistency step (issue 13): its prior scale and iteration count, on *validation*
phantoms only (docs/METHOD.md, "Data consistency").

TurnDiff's output ``p`` and its uncertainty map ``u`` are read as a Gaussian prior
``N(p, (s u)^2)``; with the post-log noise model of the measured sinogram, the MAP image is
the penalised weighted least-squares solution (``turndiff.inference.consistency``), found
by preconditioned conjugate gradients from ``p``. This script scores ``s``, the
preconditioner and the iteration count on the validation phantoms of ``make_dev_data``
(never the test slices), with the prior the pipeline gives the step
(:func:`turndiff.pipeline.consistency_prior`).

Run::

    python benchmarks/bench_consistency.py MODEL_DIR [--slices 6] [--doses 0.25,0.5,0.1]
        [--scales 1,0.577,0.316] [--iters 5,10,15,20,30]
        [--preconditioners circulant,diagonal] [--converged 80] [--time 3] [--lowband on|off]

MODEL_DIR: a model of the benchmark's training phantoms (``BENCH_OUT/runs/turndiff/model``).
Prints soft PSNR / soft SSIM / full PSNR inside the body per dose, for the image before the
step and after each iteration count; with ``--converged K`` (K diagonal-preconditioned
iterations taken as the exact MAP image) each cell also gives the RMS distance (HU, in the
body) to it, and the last column the seconds of the longest run. ``--time R`` then times
the shipped step (circulant, ``CONSISTENCY_ITERS``) against the old one (diagonal, 20
iterations) on the same cached inputs of every dose, R alternating repeats, and prints the
median seconds per slice of each (run it alone: it is a timing).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from turndiff.benchmark.data import make_dev_data
from turndiff.inference.consistency import CONSISTENCY_ITERS, data_consistency
from turndiff.masks import body_mask
from turndiff.metrics import psnr, ssim
from turndiff.pipeline import TurnDiffPipeline, consistency_prior


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("--slices", type=int, default=6)
    ap.add_argument("--doses", default="0.25,0.5,0.1")
    ap.add_argument("--scales", default="1,0.577,0.316", help="prior scales s (standard deviation s * u)")
    ap.add_argument("--iters", default="5,10,15,20,30", help="iteration counts to report")
    ap.add_argument("--preconditioners", default="circulant", help="circulant and/or diagonal")
    ap.add_argument("--converged", type=int, default=0,
                    help="diagonal-preconditioned iterations of the reference MAP image (0: none)")
    ap.add_argument("--lowband", choices=("on", "off"), default="on",
                    help="the prior's mean with x0's low band, as the pipeline's default (on since session 33)")
    ap.add_argument("--time", type=int, default=0, help="alternating timing repeats of shipped vs old step (0: none)")
    args = ap.parse_args()
    preconds = args.preconditioners.split(",")
    doses = tuple(float(d) for d in args.doses.split(","))
    scales = [float(v) for v in args.scales.split(",")]
    counts = sorted({int(v) for v in args.iters.split(",")})
    pipe = TurnDiffPipeline.from_pretrained(args.model, device="cpu")
    data = make_dev_data(n_val=args.slices, val_doses=doses, progress=False)
    ref = data.test_reference_hu
    body = body_mask(ref)

    def score(x: np.ndarray) -> str:
        return (f"{np.mean(psnr(x, ref, window='soft', mask=body)):.2f} / "
                f"{np.mean(ssim(x, ref, window='soft', mask=body)):.4f} / "
                f"{np.mean(psnr(x, ref, window='full', mask=body)):.2f}")

    print(f"validation phantoms: {args.slices}; cells: soft PSNR / soft SSIM / full PSNR inside the body\n")
    print("| dose | image | " + " | ".join(f"{k} iterations" for k in counts) + " | s |")
    print("|---|---|" + "---|" * (len(counts) + 1))
    cached = []
    for dose in doses:
        sino = data.test_sinograms[dose]
        proj = pipe.project(sino, progress=False)
        out = pipe(sino, seed=0, progress=False, consistency=False, projection=proj)
        mean, prior_std = consistency_prior(out.image_hu, out.x_ld, out.x0, out.x_diffusion,
                                            lowband=args.lowband == "on")
        print(f"| {dose:.0%} | before the step | {score(out.image_hu)} |" + " |" * len(counts), flush=True)
        cached.append((mean, sino, prior_std, out.photons_estimated, proj.denoised))
        for s in scales:
            def run(k: int, precond: str) -> np.ndarray:
                return data_consistency(mean, sino, pipe.projector, prior_std_hu=prior_std, photons=out.photons_estimated,
                                        denoised=proj.denoised, iters=k, prior_scale=s, preconditioner=precond)

            exact = run(args.converged, "diagonal") if args.converged else None
            for precond in preconds:
                cells = []
                for k in counts:  # CG is deterministic: k iterations of a longer run equal a run of k
                    t0 = time.perf_counter()
                    x = run(k, precond)
                    secs = time.perf_counter() - t0
                    dist = "" if exact is None else f" ({np.sqrt(np.mean((x - exact)[body] ** 2)):.2f} HU)"
                    cells.append(score(x) + dist)
                print(f"| {dose:.0%} | s {s:g}, {precond} | " + " | ".join(cells) + f" | {secs:.1f} |", flush=True)

    if args.time:
        steps = {f"circulant, {CONSISTENCY_ITERS} iterations (shipped)": ("circulant", CONSISTENCY_ITERS),
                 "diagonal, 20 iterations (before session 17)": ("diagonal", 20)}
        secs = {name: [] for name in steps}
        n = sum(c[1].shape[0] for c in cached)
        for _ in range(args.time):
            for name, (precond, k) in steps.items():
                t0 = time.perf_counter()
                for mean, sino, prior_std, photons, denoised in cached:
                    data_consistency(mean, sino, pipe.projector, prior_std_hu=prior_std, photons=photons,
                                     denoised=denoised, iters=k, preconditioner=precond)
                secs[name].append((time.perf_counter() - t0) / n)
        print(f"\nseconds per slice ({n} slices, {args.time} alternating repeats, median):")
        for name, v in secs.items():
            print(f"- {name}: {np.median(v):.2f} (min {min(v):.2f}, max {max(v):.2f})")


if __name__ == "__main__":
    main()
