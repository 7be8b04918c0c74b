"""Development check of one baseline on validation phantoms (issue 19: Prompt-SID, IPDM).

Run::

    python benchmarks/bench_paper_baselines.py Prompt-SID ['{"replay": 0.0}']
    python benchmarks/bench_paper_baselines.py IPDM

Fits the baseline (``fast`` preset, the options given as JSON) on the benchmark's 8
training sinograms at 25% dose (256 x 256), reconstructs 2 validation phantoms at 25% and
prints its soft-window PSNR inside the body next to FBP's, with the fit and inference
times. A method trained on unpaired clean data gets the clean phantoms of
``UNPAIRED_SEED``, as in the benchmark. ``make_dev_data`` refuses the test seeds.
"""

from __future__ import annotations

import argparse
import json
import time

from turndiff.baselines import BASELINES
from turndiff.benchmark.data import make_dev_data
from turndiff.benchmark.splits import UNPAIRED_SEED
from turndiff.metrics import evaluate
from turndiff.phantoms import make_phantoms
from turndiff.physics import CTProjector


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("method", choices=list(BASELINES))
    ap.add_argument("options", nargs="?", default="{}", help="preset overrides as JSON")
    ap.add_argument("--n-val", type=int, default=2)
    args = ap.parse_args()
    data = make_dev_data(size=256, n_train=8, n_val=args.n_val, val_doses=(0.25,))
    b = BASELINES[args.method]
    n = data.train_sinogram.shape[0]
    kw = {"reference_hu": make_phantoms(n, 256, seed=UNPAIRED_SEED)} if b.clean_data == "unpaired" else {}
    if b.clean_data == "paired":
        kw = {"reference_hu": data.train_reference_hu}
    t0 = time.perf_counter()
    state = b.fit(data.train_sinogram, data.geometry, photons=data.train_photons, preset="fast", seed=0,
                  options=json.loads(args.options), **kw)
    fit_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    out = b.reconstruct(state, data.test_sinograms[0.25], data.geometry, photons=data.photons(0.25))
    infer_s = (time.perf_counter() - t0) / out.shape[0]
    ref = data.test_reference_hu
    fbp = CTProjector(data.geometry).fbp_hu(data.test_sinograms[0.25])
    psnr = evaluate(out, ref, mask="body")["soft"]["psnr"]["mean"]
    print(f"| {args.method} {args.options} | {psnr:.2f} | FBP {evaluate(fbp, ref, mask='body')['soft']['psnr']['mean']:.2f}"
          f" | fit {fit_s:.0f} s | {infer_s:.2f} s / slice |")


if __name__ == "__main__":
    main()
