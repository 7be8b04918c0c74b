"""A per-pixel uncertainty map of TurnDiff's output, from what inference already has.

The sampler's seed spread (0.2-0.5 HU) is far below the real error, so it says little.
This map is built from where the method's own pieces disagree and where the image has
structure, with no clean data at inference:

- ``noise``: local RMS (7 x 7) of ``x_ld - x``, the noise the method removed (its level
  follows the attenuation along the rays);
- ``diffusion``: ``|x~0 - x0|`` and its 3 x 3 mean, where the diffusion output and the
  stage-1 prior disagree (the fusion's own doubt);
- ``edges``: the Sobel gradient magnitude of the output and its 3 x 3 mean, and that of
  ``x0`` (blurred or shifted edges are most of the large errors);
- ``fusion``: ``|x - x0|``, how far the output moved from the prior;
- ``consistency``: ``|x - x_before|`` and its 3 x 3 mean, how far the data-consistency
  step (the pipeline's last before the polish) moved the image: it moves it where the image
  disagreed with the projections, which is where the error was (zero without the step);
- ``posterior``: that step's bound on each pixel's posterior standard deviation
  (:func:`~turndiff.inference.consistency.data_consistency` with ``return_std``): small
  where the projections pin the pixel down (zero without the step).

``log u = sum_k beta_k log(1 + f_k) + beta_0``, with ``beta`` fitted by least squares to
``log(1 + |error|)`` on the *validation* phantoms with the benchmark's ``fast`` model
(``benchmarks/bench_uncertainty.py``; its numbers on held-out test phantoms come from
``turndiff iq``: docs/BENCHMARKS.md), and the scale set there so that ``|error| <= 2 u``
on 95% of the validation pixels. There are two fits: :data:`UNCERTAINTY_COEF` for the
pipeline's output (``x_before`` given: the image before the data-consistency step), and
:data:`PRIOR_UNCERTAINTY_COEF` for an image with no such step (``x_before`` None): the
pipeline's image before that step, whose map is that step's prior standard deviation, or
an output made with ``consistency=False``. What it is: an estimate, in HU, of the typical size of the error at
each pixel, calibrated on phantoms; on other data its ranking (where the error is larger)
transfers better than its scale.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

__all__ = ["UNCERTAINTY_FEATURES", "UNCERTAINTY_COEF", "PRIOR_UNCERTAINTY_COEF", "uncertainty_features",
           "uncertainty_map"]

UNCERTAINTY_FEATURES = ("noise", "diffusion", "diffusion_mean", "edges", "edges_mean", "edges_x0", "fusion",
                        "consistency", "consistency_mean", "posterior")
#: The map of an image made without the data-consistency step (``x_before`` None; the
#: ``consistency`` features are zero): beta_k per feature, beta_0 (``offset``) and the
#: coverage scale (``log_scale``), fitted by ``benchmarks/bench_uncertainty.py`` on 6
#: validation phantoms at 25% dose, 2026-11-30. The data-consistency step's prior.
PRIOR_UNCERTAINTY_COEF: dict[str, float] = {
    "noise": 0.272, "diffusion": -0.052, "diffusion_mean": 0.047, "edges": -0.066, "edges_mean": 0.638,
    "edges_x0": 0.124, "fusion": 0.131, "consistency": 0.0, "consistency_mean": 0.0, "posterior": 0.0, "offset": -0.769,
    "log_scale": 0.51,
}
#: The map of the pipeline's output, after the data-consistency step (``x_before`` given),
#: fitted the same way to the error of that output (``bench_uncertainty.py``, 6 validation
#: phantoms at 25% dose, the ``fast`` benchmark model of 2026-12-01). The features are
#: correlated, so single signs mean little: the posterior bound carries most of the weight.
UNCERTAINTY_COEF: dict[str, float] = {
    "noise": -0.196, "diffusion": -0.021, "diffusion_mean": 0.059, "edges": 0.091, "edges_mean": 0.371,
    "edges_x0": -0.161, "fusion": 0.057, "consistency": -0.005, "consistency_mean": 0.125, "posterior": 0.908,
    "offset": 0.676, "log_scale": 0.509,
}


def _grad(a: np.ndarray) -> np.ndarray:
    """Sobel gradient magnitude within each slice (``ndimage.sobel`` on a stack would also
    smooth across slices, making a slice's map depend on its neighbours)."""
    d, s = [-1.0, 0.0, 1.0], [1.0, 2.0, 1.0]
    gx = ndimage.correlate1d(ndimage.correlate1d(a, d, axis=-1), s, axis=-2)
    gy = ndimage.correlate1d(ndimage.correlate1d(a, d, axis=-2), s, axis=-1)
    return np.hypot(gx, gy) / 8.0


def uncertainty_features(x: np.ndarray, x_ld: np.ndarray, x0: np.ndarray, x_d: np.ndarray | None,
                         x_before: np.ndarray | None = None, posterior_std: np.ndarray | None = None) -> dict:
    """The features of :data:`UNCERTAINTY_FEATURES` for HU stacks ``[N, H, W]`` (``x`` the
    output, ``x_d`` the diffusion output, or None for a stage-1-only model; ``x_before`` the
    image before the data-consistency step and ``posterior_std`` its bound on the posterior
    standard deviation, or None without the step)."""
    x, x_ld, x0 = (np.asarray(a, np.float64) for a in (x, x_ld, x0))
    xd = x0 if x_d is None else np.asarray(x_d, np.float64)
    size = (1,) * (x.ndim - 2)
    diff = np.abs(xd - x0)
    g = _grad(x)
    moved = np.zeros_like(x) if x_before is None else np.abs(x - np.asarray(x_before, np.float64))
    return {"noise": np.sqrt(ndimage.uniform_filter((x_ld - x) ** 2, size + (7, 7))),
            "diffusion": diff, "diffusion_mean": ndimage.uniform_filter(diff, size + (3, 3)),
            "edges": g, "edges_mean": ndimage.uniform_filter(g, size + (3, 3)), "edges_x0": _grad(x0),
            "fusion": np.abs(x - x0), "consistency": moved,
            "consistency_mean": ndimage.uniform_filter(moved, size + (3, 3)),
            "posterior": np.zeros_like(x) if posterior_std is None else np.asarray(posterior_std, np.float64)}


def uncertainty_map(x, x_ld, x0, x_d=None, *, x_before=None, posterior_std=None,
                    coef: dict[str, float] | None = None) -> np.ndarray:
    """The uncertainty map (HU, float32, the shape of ``x``): see the module docstring.

    ``x_before`` and ``posterior_std``: the image before the data-consistency step and that
    step's posterior bound, where ``x`` is the step's output; the default ``coef`` is then
    :data:`UNCERTAINTY_COEF`, else :data:`PRIOR_UNCERTAINTY_COEF`."""
    c = coef if coef is not None else UNCERTAINTY_COEF if x_before is not None else PRIOR_UNCERTAINTY_COEF
    f = uncertainty_features(x, x_ld, x0, x_d, x_before, posterior_std)
    log_u = sum(c[k] * np.log1p(f[k]) for k in UNCERTAINTY_FEATURES) + c["offset"] + c["log_scale"]
    return np.exp(log_u).astype(np.float32)
