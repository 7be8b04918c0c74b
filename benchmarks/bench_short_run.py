"""The issue-13 short-run check on validation phantoms (docs/BENCHMARKS.md).

Run::

    python benchmarks/bench_short_run.py [--compare ';loss_weighting="none";objective="csss";objective="sure"']

Trains stage 1 for 300 steps on 4 training sinograms of 128 x 128 phantoms at 25% dose
(the ``fast`` preset otherwise, SURE selection off) once per setting, and prints the
soft-window PSNR inside the body of FBP(f(y)) on 4 validation phantoms, and of the
SURE-calibrated f(y) that ``denoise-proj`` writes by default
(``ProjectionDenoiser.denoise_calibrated``), next to plain FBP and to Gaussian smoothings
of the sinogram along views / bins (linear references).
References are used for evaluation only; ``make_dev_data`` refuses the test seeds.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
from scipy.ndimage import gaussian_filter

from turndiff.benchmark.data import make_dev_data
from turndiff.metrics import evaluate
from turndiff.physics import CTProjector
from turndiff.stage1 import Stage1Config, train_projection_denoiser


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--compare", default=';loss_weighting="none";objective="csss";objective="sure"',
                    help='stage-1 settings separated by ";" (empty: the default)')
    ap.add_argument("--iters", type=int, default=300)
    args = ap.parse_args()
    data = make_dev_data(size=128, n_train=4, n_val=4, val_doses=(0.25,))
    A = CTProjector(data.geometry)
    y, yt, ref = data.train_sinogram, data.test_sinograms[0.25], data.test_reference_hu

    def soft(s: np.ndarray) -> str:
        return f"{evaluate(A.fbp_hu(s), ref, mask='body')['soft']['psnr']['mean']:.2f}"

    print(f"| setting | PSNR soft, validation | calibrated (denoise-proj) | s |\n|---|---|---|---|\n"
          f"| FBP | {soft(yt)} | | |")
    for sv, sd in ((2, 0.0), (2, 0.5), (4, 0.0)):
        print(f"| Gaussian along views {sv}, bins {sd} | {soft(np.stack([gaussian_filter(s, (sv, sd)) for s in yt]))} | | |")
    for text in args.compare.split(";"):
        kw = {}
        for part in filter(None, (p.strip() for p in text.split(","))):
            k, v = part.split("=", 1)
            kw[k.strip()] = json.loads(v)
        t0 = time.perf_counter()
        den = train_projection_denoiser(y, photons=data.train_photons, progress=False,
                                        config=Stage1Config.preset("fast", **{"iters": args.iters, "sure_every": 0,
                                                                              **kw}))
        seconds = time.perf_counter() - t0
        cal = den.denoise_calibrated(yt)
        print(f"| {text or 'default'} ({args.iters} steps) | {soft(cal.raw)} | {soft(cal.denoised)} | {seconds:.0f} |",
              flush=True)


if __name__ == "__main__":
    main()
