"""Stage-1 benchmark (issue 3): CSSS vs. plain Neighbor2Neighbor (--no-similarity) vs.
alpha 0, in the projection domain, evaluated as FBP(f(y)) on validation phantom slices
(``make_dev_data``: never the benchmark's test slices).

Run: python benchmarks/bench_stage1.py --out bench_out/stage1 [--iters N] [--variants csss,no_similarity]
Prints a Markdown table (PSNR / SSIM mean +- std over test slices, soft and full window,
inside the body mask as in the benchmark; FBP with the Hann filter is shown for scale)
and writes results.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


from turndiff.benchmark.data import make_dev_data
from turndiff.metrics import evaluate
from turndiff.physics import CTProjector
from turndiff.stage1 import Stage1Config, train_projection_denoiser

VARIANTS = {
    "csss": {},
    "no_similarity": {"use_similarity": False},
    "alpha0": {"alpha": 0.0},
    "normalise": {"normalise": True},
    "paper_regulariser": {"regulariser": "paper"},
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="bench_out/stage1")
    ap.add_argument("--iters", type=int, default=None)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--variants", default="csss,no_similarity")
    ap.add_argument("--doses", default="0.25,0.1")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    doses = tuple(float(d) for d in args.doses.split(","))
    data = make_dev_data(size=args.size, n_val=8, val_doses=doses, cache=out / "data.npz")
    g = data.geometry
    A = CTProjector(g)
    ref = data.test_reference_hu
    fbp = A.fbp_hu
    results: dict = {"fbp": {}, "fbp_hann": {}, "config": {"size": args.size, "iters": args.iters}}
    for d in doses:
        results["fbp"][str(d)] = evaluate(fbp(data.test_sinograms[d]), ref, mask="body")
        hann = A.fbp_hu(data.test_sinograms[d], filter="hann")
        results["fbp_hann"][str(d)] = evaluate(hann, ref, mask="body")
    for name in args.variants.split(","):
        cfg = Stage1Config.preset("fast", iters=args.iters, **VARIANTS[name])
        t0 = time.time()
        model = train_projection_denoiser(data.train_sinogram, photons=data.train_photons,
                                          geometry_json=g.to_json(), config=cfg, run_dir=None)
        secs = time.time() - t0
        results[name] = {"train_seconds": secs}
        for d in doses:
            results[name][str(d)] = evaluate(fbp(model.denoise(data.test_sinograms[d])), ref, mask="body")
        print(f"{name}: trained in {secs:.0f} s", flush=True)
    (out / "results.json").write_text(json.dumps(results, indent=2, default=float))
    print("| method | dose | PSNR soft | SSIM soft | PSNR full | SSIM full |\n|---|---|---|---|---|---|")
    for name, r in results.items():
        if name in ("config",) or str(doses[0]) not in r:
            continue
        for d in doses:
            m = r[str(d)]
            s, f = m["soft"], m["full"]
            print(f"| {name} | {d:.0%} | {s['psnr']['mean']:.2f} +- {s['psnr']['std']:.2f} | "
                  f"{s['ssim']['mean']:.4f} +- {s['ssim']['std']:.4f} | "
                  f"{f['psnr']['mean']:.2f} +- {f['psnr']['std']:.2f} | "
                  f"{f['ssim']['mean']:.4f} +- {f['ssim']['std']:.4f} |")


if __name__ == "__main__":
    main()
