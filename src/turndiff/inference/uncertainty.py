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
- ``fusion``: ``|x - x0|``, how far the output moved from the prior.

``log u = sum_k beta_k log(1 + f_k) + beta_0``, with ``beta`` fitted by least squares to
``log(1 + |error|)`` on the *validation* phantoms with the benchmark's ``fast`` model
(``benchmarks/bench_uncertainty.py``, which also measures it on the test phantoms:
docs/BENCHMARKS.md), and the scale set there so that ``|error| <= 2 u`` on 95% of the
validation pixels. What it is: an estimate, in HU, of the typical size of the error at
each pixel, calibrated on phantoms; on other data its ranking (where the error is larger)
transfers better than its scale.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

__all__ = ["UNCERTAINTY_FEATURES", "UNCERTAINTY_COEF", "uncertainty_features", "uncertainty_map"]

UNCERTAINTY_FEATURES = ("noise", "diffusion", "diffusion_mean", "edges", "edges_mean", "edges_x0", "fusion")
#: beta_k per feature, beta_0 (``offset``) and the coverage scale (``log_scale``), fitted by
#: ``benchmarks/bench_uncertainty.py`` on 6 validation phantoms at 25% dose, 2026-11-30.
UNCERTAINTY_COEF: dict[str, float] = {
    "noise": 0.272, "diffusion": -0.052, "diffusion_mean": 0.047, "edges": -0.066, "edges_mean": 0.638,
    "edges_x0": 0.124, "fusion": 0.131, "offset": -0.769, "log_scale": 0.51,
}


def _grad(a: np.ndarray) -> np.ndarray:
    """Sobel gradient magnitude within each slice (``ndimage.sobel`` on a stack would also
    smooth across slices, making a slice's map depend on its neighbours)."""
    d, s = [-1.0, 0.0, 1.0], [1.0, 2.0, 1.0]
    gx = ndimage.correlate1d(ndimage.correlate1d(a, d, axis=-1), s, axis=-2)
    gy = ndimage.correlate1d(ndimage.correlate1d(a, d, axis=-2), s, axis=-1)
    return np.hypot(gx, gy) / 8.0


def uncertainty_features(x: np.ndarray, x_ld: np.ndarray, x0: np.ndarray, x_d: np.ndarray | None) -> dict:
    """The features of :data:`UNCERTAINTY_FEATURES` for HU stacks ``[N, H, W]`` (``x`` the
    output, ``x_d`` the diffusion output, or None for a stage-1-only model)."""
    x, x_ld, x0 = (np.asarray(a, np.float64) for a in (x, x_ld, x0))
    xd = x0 if x_d is None else np.asarray(x_d, np.float64)
    size = (1,) * (x.ndim - 2)
    diff = np.abs(xd - x0)
    g = _grad(x)
    return {"noise": np.sqrt(ndimage.uniform_filter((x_ld - x) ** 2, size + (7, 7))),
            "diffusion": diff, "diffusion_mean": ndimage.uniform_filter(diff, size + (3, 3)),
            "edges": g, "edges_mean": ndimage.uniform_filter(g, size + (3, 3)), "edges_x0": _grad(x0),
            "fusion": np.abs(x - x0)}


def uncertainty_map(x, x_ld, x0, x_d=None, *, coef: dict[str, float] | None = None) -> np.ndarray:
    """The uncertainty map (HU, float32, the shape of ``x``): see the module docstring."""
    c = UNCERTAINTY_COEF if coef is None else coef
    f = uncertainty_features(x, x_ld, x0, x_d)
    log_u = sum(c[k] * np.log1p(f[k]) for k in UNCERTAINTY_FEATURES) + c["offset"] + c["log_scale"]
    return np.exp(log_u).astype(np.float32)
