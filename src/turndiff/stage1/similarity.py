"""Self-enhancing similarity maps and the noise model they rest on.

Two sub-sinograms ``a = s1(.)`` and ``b = s2(.)`` sample the same anatomy one bin or one
view apart, with independent noise. Where the anatomy is locally flat their difference
is pure noise, with variance ``var_a + var_b``; at an edge the difference also holds the
structure that moved between the two positions. Post-log Poisson statistics predict the
noise variance of every bin from its own counts (``I = I0 exp(-p)``):

``sigma^2(p) = (I + sigma_e^2) / I^2``.

The similarity map is a local, noise-normalised dissimilarity test:

``r = mean_k((a - b)^2) / mean_k(sigma_a^2 + sigma_b^2)``     (k x k box, k = 5)

Under the noise-only hypothesis ``r`` is about 1 with standard deviation
``sqrt(2) / k``; its z-score ``z = (r - 1) * k / sqrt(2)`` measures how far the two
sub-samples differ by *structure*. The map is

``e = clip((z - z0) / z1, 0, e_max)``     (z0 = 2, z1 = 6, e_max = 0.95)

so ``e = 0`` where the difference is explained by noise (the pair is a valid
Neighbor2Neighbor target) and ``e -> e_max`` where it is not (edges, where the
sub-sample shift is larger than the noise; the loss down-weights those places by
``1 - e``). ``e_max < 1`` keeps a little gradient everywhere. ``e1`` is computed from
``s1(y), s2(y)``, ``e2`` from ``s1(f(y)), s2(f(y))`` with the same noise model (for the
denoised sinogram the difference is nearly noise-free, so ``e2`` marks structure only).
Maps are computed without gradient.

The noise model (:func:`turndiff.dose.postlog_variance`) and the photon estimator
(:func:`turndiff.dose.estimate_photons`) live in :mod:`turndiff.dose`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


__all__ = ["SimilarityConfig", "similarity_map"]


class SimilarityConfig:
    """Parameters of :func:`similarity_map` (see the module docstring)."""

    def __init__(self, window: int = 5, z0: float = 2.0, z1: float = 6.0, e_max: float = 0.95) -> None:
        if window < 1 or window % 2 == 0:
            raise ValueError("window must be a positive odd integer")
        self.window, self.z0, self.z1, self.e_max = int(window), float(z0), float(z1), float(e_max)

    def to_dict(self) -> dict:
        return {"window": self.window, "z0": self.z0, "z1": self.z1, "e_max": self.e_max}


def _box(x: torch.Tensor, k: int) -> torch.Tensor:
    return F.avg_pool2d(F.pad(x, (k // 2,) * 4, mode="replicate"), k, stride=1)


@torch.no_grad()
def similarity_map(
    a: torch.Tensor,
    b: torch.Tensor,
    var_a: torch.Tensor,
    var_b: torch.Tensor,
    config: SimilarityConfig | None = None,
) -> torch.Tensor:
    """Structure map ``e`` in ``[0, e_max]`` for two sub-sinograms ``[B, C, v, d]``."""
    cfg = config or SimilarityConfig()
    k = cfg.window
    r = _box((a - b) ** 2, k) / _box(var_a + var_b, k).clamp_min(1e-12)
    z = (r - 1.0) * k / math.sqrt(2.0)
    return ((z - cfg.z0) / cfg.z1).clamp(0.0, cfg.e_max)
