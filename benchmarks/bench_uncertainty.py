"""Fit the uncertainty maps (issue 17) on the *validation* phantoms. Their numbers on the
test phantoms come from `turndiff iq` (the tuning protocol keeps this development script
off the test seeds).

Run::

    python benchmarks/bench_uncertainty.py MODEL_DIR [--slices 6] [--dose 0.25]

MODEL_DIR is a model trained on the benchmark's training phantoms (e.g.
``BENCH_OUT/runs/turndiff/model`` of ``turndiff benchmark --preset fast``). Two fits, each
``log(1 + |error|)`` on ``log(1 + feature)`` by least squares, then the scale that makes
``|error| <= 2 u`` hold on 95% of the validation pixels:

- ``output``: the map of the pipeline's output (after the data-consistency step, with the
  image before it as ``x_before``) against that output's error: the coefficients for
  :data:`turndiff.inference.uncertainty.UNCERTAINTY_COEF`;
- ``prior``: the map of the image before the data-consistency step against its own error
  (:data:`~turndiff.inference.uncertainty.PRIOR_UNCERTAINTY_COEF`, the step's prior;
  refitting it changes the step and every output, so it is printed, not adopted lightly).

The output's features include the data-consistency step's own quantities: how far it moved
each pixel and its bound on the posterior standard deviation (``posterior_std``).

For the shipped and the refitted coefficients it prints, inside the body of the
validation phantoms, Spearman's rank correlation of the map with the absolute error and the
coverage of ``|error| <= 2 u``, and for scale what a map that knew the error would reach
(the error's own RMS, smoothed by a Gaussian of 2 px: the random part of the error caps any
smooth map near there). ``--drop`` refits without some features (comma-separated).
"""

from __future__ import annotations

import argparse

import numpy as np
from scipy import ndimage, stats

from turndiff.benchmark.data import make_dev_data
from turndiff.inference.uncertainty import (PRIOR_UNCERTAINTY_COEF, UNCERTAINTY_COEF, UNCERTAINTY_FEATURES,
                                            uncertainty_features, uncertainty_map)
from turndiff.masks import body_mask
from turndiff.pipeline import TurnDiffPipeline


def _score(u, err, mask) -> tuple[float, float]:
    return float(stats.spearmanr(u[mask], np.abs(err[mask]))[0]), float(np.mean(np.abs(err[mask]) <= 2 * u[mask]))


def _map(x, before, res, coef):
    post = None if before is None else res.posterior_std
    return uncertainty_map(x, res.x_ld, res.x0, res.x_diffusion, x_before=before, posterior_std=post, coef=coef)


def _fit(x, before, res, err, mask, names) -> dict:
    f = uncertainty_features(x, res.x_ld, res.x0, res.x_diffusion, before, None if before is None else res.posterior_std)
    design = np.stack([np.log1p(f[k][mask]) for k in names] + [np.ones(mask.sum())], 1)
    beta, *_ = np.linalg.lstsq(design, np.log1p(np.abs(err[mask])), rcond=None)
    coef = {k: 0.0 for k in UNCERTAINTY_FEATURES} | {k: float(b) for k, b in zip(names, beta)}
    coef |= {"offset": float(beta[-1]), "log_scale": 0.0}
    u = _map(x, before, res, coef)
    coef["log_scale"] = float(np.log(np.quantile(np.abs(err[mask]) / u[mask], 0.95) / 2))
    return coef


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("--slices", type=int, default=6)
    ap.add_argument("--dose", type=float, default=0.25)
    ap.add_argument("--drop", default="", help="features left out of the refit, comma-separated")
    args = ap.parse_args()
    pipe = TurnDiffPipeline.from_pretrained(args.model, device="cpu")
    data = make_dev_data(n_val=args.slices, val_doses=(args.dose,), progress=False)
    res = pipe(data.test_sinograms[args.dose], progress=False)
    ref = data.test_reference_hu
    mask = body_mask(ref)
    if res.x_restored is None:
        raise SystemExit("the model's pipeline made no data-consistency step")
    names = [k for k in UNCERTAINTY_FEATURES if k not in set(filter(None, args.drop.split(",")))]
    # (label, image, its x_before, shipped coefficients, features the fit may use)
    cases = (("output", res.image_hu, res.x_restored, UNCERTAINTY_COEF, names),
             ("prior", res.x_restored, None, PRIOR_UNCERTAINTY_COEF,
              [k for k in names if "consistency" not in k and k != "posterior"]))
    for label, x, before, shipped, use in cases:
        err = x - ref
        fitted = _fit(x, before, res, err, mask, use)
        print(f"{label}: fitted on validation:", {k: round(v, 3) for k, v in fitted.items()})
        for name, coef in (("shipped", shipped), ("refitted", fitted)):
            rho, cover = _score(_map(x, before, res, coef), err, mask)
            print(f"  {name:9s}: Spearman {rho:.3f}, |error| <= 2u on {cover:.1%} of the body pixels")
        oracle = np.sqrt(ndimage.gaussian_filter(err**2, (0, 2, 2)))
        print(f"  oracle   : Spearman {_score(oracle, err, mask)[0]:.3f} (the error's own RMS, smoothed 2 px)")
    pre = uncertainty_map(res.x_restored, res.x_ld, res.x0, res.x_diffusion, coef=PRIOR_UNCERTAINTY_COEF)
    rho, cover = _score(pre, res.image_hu - ref, mask)
    print(f"the prior map against the output's error (the session-12 output map): Spearman {rho:.3f}, "
          f"coverage {cover:.1%}")


if __name__ == "__main__":
    main()
