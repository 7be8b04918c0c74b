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

``estimate_photons`` recovers ``I0`` from a sinogram alone (used when a file does not
state it, and by the inference's automatic dose strategy).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from ..dose import ELECTRONIC_NOISE_STD

__all__ = ["SimilarityConfig", "noise_variance", "similarity_map", "estimate_photons"]


class SimilarityConfig:
    """Parameters of :func:`similarity_map` (see the module docstring)."""

    def __init__(self, window: int = 5, z0: float = 2.0, z1: float = 6.0, e_max: float = 0.95) -> None:
        if window < 1 or window % 2 == 0:
            raise ValueError("window must be a positive odd integer")
        self.window, self.z0, self.z1, self.e_max = int(window), float(z0), float(z1), float(e_max)

    def to_dict(self) -> dict:
        return {"window": self.window, "z0": self.z0, "z1": self.z1, "e_max": self.e_max}


def noise_variance(p: torch.Tensor, photons: torch.Tensor | float, electronic_std: float = ELECTRONIC_NOISE_STD) -> torch.Tensor:
    """Predicted post-log variance of bins with line integral ``p`` at ``I0 = photons``.

    ``photons`` may be a float or a ``[B]`` tensor (one I0 per sample).
    """
    if isinstance(photons, torch.Tensor) and photons.ndim == 1:
        photons = photons.view(-1, *([1] * (p.ndim - 1)))
    counts = (photons * torch.exp(-p.clamp(min=-1.0, max=20.0))).clamp_min(1e-3)
    return (counts + electronic_std**2) / counts**2


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


def estimate_photons(sinogram: np.ndarray | torch.Tensor, *, electronic_std: float = ELECTRONIC_NOISE_STD) -> float:
    """Estimate ``I0`` (photons per bin) from noisy post-log sinograms ``[..., V, D]`` alone.

    A cubic prediction from the neighbours, ``d = y[j] - (4 (y[j-1] + y[j+1]) - (y[j-2] + y[j+2])) / 6``,
    removes smooth anatomy; for independent noise ``var(d) = (1 + 34/36) sigma^2`` with
    ``sigma^2 = (I + sigma_e^2) / I^2`` and ``I = I0 exp(-y)``. Each residual is
    normalised by its own predicted variance per unit ``1/I0``,
    ``u = d^2 / ((1 + 34/36) exp(y) (1 + sigma_e^2 exp(y) / I0))`` (mean ``1 / I0``; the
    electronic term is refined by a fixed-point iteration). Edges only add variance, so
    ``u`` is averaged over windows of 9 bins and the median window is taken, corrected
    by the median of a chi-square with 9 degrees of freedom.

    Accuracy on simulated 256 x 256 fan-beam scans is a few percent (tests check 15%);
    on coarse sinograms of sharp-edged objects it underestimates. The automatic dose
    strategy uses the *ratio* of two such estimates, where the bias cancels.
    """
    y = torch.as_tensor(sinogram, dtype=torch.float64)
    y = y.reshape(-1, y.shape[-1])
    pred = (4.0 * (y[:, 1:-3] + y[:, 3:-1]) - (y[:, :-4] + y[:, 4:])) / 6.0
    d = y[:, 2:-2] - pred
    ym = y[:, 2:-2]
    w = 9
    keep = F.avg_pool1d(((ym > 0.5) & (ym < 7.0)).double()[:, None], w, stride=w).flatten() == 1.0
    if keep.sum() < 16:
        keep = torch.ones_like(keep)
    e = torch.exp(ym)
    chi2_median = (1.0 - 2.0 / (9.0 * w)) ** 3  # Wilson-Hilferty: median of chi2_w / w
    i0 = float("inf")
    for _ in range(4):
        u = d**2 / ((1.0 + 34.0 / 36.0) * e * (1.0 + electronic_std**2 * e / i0))
        um = F.avg_pool1d(u[:, None], w, stride=w).flatten()[keep]
        i0 = chi2_median / max(float(um.median()), 1e-30)
    return i0
