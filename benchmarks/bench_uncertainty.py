"""Fit the uncertainty map (issue 17) on the *validation* phantoms. Its numbers on the
test phantoms come from `turndiff iq` (the tuning protocol keeps this development script
off the test seeds).

Run::

    python benchmarks/bench_uncertainty.py MODEL_DIR [--slices 6] [--dose 0.25]

MODEL_DIR is a model trained on the benchmark's training phantoms (e.g.
``BENCH_OUT/runs/turndiff/model`` of ``turndiff benchmark --preset fast``). Prints the
coefficients for :data:`turndiff.inference.uncertainty.UNCERTAINTY_COEF` (fitted on
validation: ``log(1 + |error|)`` on ``log(1 + feature)`` by least squares, then the scale
that makes ``|error| <= 2 u`` hold on 95% of the validation pixels), and, for the shipped
coefficients and the refitted ones, inside the body of the validation phantoms: Spearman's rank
correlation of the map with the absolute error, the coverage of ``|error| <= 2 u``, and for scale
what a map that knew the error would reach (the error's own RMS, smoothed by a Gaussian of
2 px: the random part of the error caps any smooth map near there).
"""

from __future__ import annotations

import argparse

import numpy as np
from scipy import ndimage, stats

from turndiff.benchmark.data import make_dev_data
from turndiff.inference.uncertainty import UNCERTAINTY_COEF, UNCERTAINTY_FEATURES, uncertainty_features, uncertainty_map
from turndiff.masks import body_mask
from turndiff.pipeline import TurnDiffPipeline


def _run(pipe, data, dose):
    res = pipe(data.test_sinograms[dose], progress=False)
    ref = data.test_reference_hu
    return res, res.image_hu - ref, body_mask(ref)


def _score(u, err, mask) -> tuple[float, float]:
    return float(stats.spearmanr(u[mask], np.abs(err[mask]))[0]), float(np.mean(np.abs(err[mask]) <= 2 * u[mask]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("--slices", type=int, default=6)
    ap.add_argument("--dose", type=float, default=0.25)
    args = ap.parse_args()
    pipe = TurnDiffPipeline.from_pretrained(args.model, device="cpu")
    val = _run(pipe, make_dev_data(n_val=args.slices, val_doses=(args.dose,), progress=False), args.dose)

    def design(res, mask):
        f = uncertainty_features(res.image_hu, res.x_ld, res.x0, res.x_diffusion)
        return np.stack([np.log1p(f[k][mask]) for k in UNCERTAINTY_FEATURES] + [np.ones(mask.sum())], 1)

    res, err, mask = val
    beta, *_ = np.linalg.lstsq(design(res, mask), np.log1p(np.abs(err[mask])), rcond=None)
    fitted = {k: float(b) for k, b in zip(UNCERTAINTY_FEATURES, beta)} | {"offset": float(beta[-1]), "log_scale": 0.0}
    u = uncertainty_map(res.image_hu, res.x_ld, res.x0, res.x_diffusion, coef=fitted)
    ratio = np.abs(err[mask]) / u[mask]
    fitted["log_scale"] = float(np.log(np.quantile(ratio, 0.95) / 2))
    print("fitted on validation:", {k: round(v, 3) for k, v in fitted.items()})
    for name, coef in (("shipped", UNCERTAINTY_COEF), ("refitted", fitted)):
        for split, (res, err, mask) in (("validation", val),):
            u = uncertainty_map(res.image_hu, res.x_ld, res.x0, res.x_diffusion, coef=coef)
            rho, cover = _score(u, err, mask)
            print(f"{name:9s} {split:10s}: Spearman {rho:.3f}, |error| <= 2u on {cover:.1%} of the body pixels")
    for split, (res, err, mask) in (("validation", val),):
        oracle = np.sqrt(ndimage.gaussian_filter(err**2, (0, 2, 2)))
        print(f"oracle    {split:10s}: Spearman {_score(oracle, err, mask)[0]:.3f} (the error's own RMS, smoothed 2 px)")


if __name__ == "__main__":
    main()
