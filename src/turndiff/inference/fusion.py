"""Pixel-level self-correcting fusion (PSF) of the diffusion output with the prior.

Inputs, all HU ``[N, H, W]``: the diffusion output ``x_d`` (``x~0``), the stage-1 prior
``x0`` and the low-dose image ``x_ld``.

1. Noise level (fig. 5, noise maps): ``x_ld - x0`` is, to first order, the noise that
   stage 1 removed. Its local RMS over a Gaussian window gives ``sigma(x)``, the
   input's noise level per pixel, in HU (it rises with lower dose, behind bone and
   along the long axis of the body).
2. Edge confidence (fig. 5, edge maps): the Gaussian-smoothed gradient magnitude ``g``
   of ``x0`` against that noise, ``c = g^2 / (g^2 + (k_edge sigma)^2)``; ``c -> 1`` on
   anatomical edges that stand clear of the noise.
3. Self-correction: where the diffusion strays from the prior by more than the noise
   explains, ``d = |x_d - x0| / (k_dev sigma)``, it is not trusted: ``exp(-d^2 / 2)``.

The weight of the diffusion output is

``W = (1 - c) * exp(-d^2 / 2)``,  ``x = W x_d + (1 - W) x0``

so flat, noisy regions take the diffusion's texture-faithful estimate, anatomical
edges keep the prior's geometry, and local hallucinations are corrected towards the
prior. ``global_fusion`` is the ablation: one weight ``lam`` everywhere.

``lowband_fusion`` is a fusion by frequency instead of by pixel (beyond the paper): the
image's band below a Gaussian of ``sigma_px`` pixels is replaced by ``x0``'s. The
diffusion flattens faint, small structures that the prior kept (a 3-5 px, 20-30 HU lesion
loses a further 3% of its contrast, docs/BENCHMARKS.md "Where the lesion contrast goes");
with ``lowband=True`` the pipeline builds its data-consistency prior this way, so the prior
keeps ``x0``'s contrast and the diffusion's finest texture.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter, sobel

__all__ = ["FusionConfig", "LOWBAND_PX", "noise_map", "edge_confidence", "fusion_weight", "pixel_fusion",
           "global_fusion", "lowband_fusion"]

#: Gaussian (pixels) below which the data-consistency prior takes ``x0``'s band: chosen on
#: validation phantoms as the widest that keeps inserted lesions' contrast at least x0's at
#: the training dose (docs/METHOD.md, "Data consistency").
LOWBAND_PX: float = 1.0


@dataclass(frozen=True)
class FusionConfig:
    """Parameters of the pixel-level fusion (pixels and multiples of the noise level)."""

    noise_sigma_px: float = 4.0
    edge_sigma_px: float = 1.0
    k_edge: float = 0.5
    k_dev: float = 2.0

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def _stack(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float32)
    return x[None] if x.ndim == 2 else x


def noise_map(x_ld: np.ndarray, x0: np.ndarray, *, sigma_px: float = 4.0) -> np.ndarray:
    """Local noise level (HU) of the input, ``[N, H, W]``."""
    r = _stack(x_ld) - _stack(x0)
    var = np.stack([gaussian_filter(s * s, sigma_px) for s in r])
    return np.sqrt(np.maximum(var, 1e-6)).astype(np.float32)


def edge_confidence(x0: np.ndarray, sigma: np.ndarray, *, sigma_px: float = 1.0, k_edge: float = 0.5) -> np.ndarray:
    """``c = g^2 / (g^2 + (k_edge sigma)^2)`` with ``g`` the smoothed gradient of ``x0`` (HU/px)."""
    out = []
    for s, n in zip(_stack(x0), _stack(sigma)):
        sm = gaussian_filter(s, sigma_px)
        g2 = (sobel(sm, 0) / 8.0) ** 2 + (sobel(sm, 1) / 8.0) ** 2
        out.append(g2 / (g2 + (k_edge * n) ** 2))
    return np.stack(out).astype(np.float32)


def fusion_weight(x_d: np.ndarray, x0: np.ndarray, x_ld: np.ndarray, config: FusionConfig | None = None) -> np.ndarray:
    """Per-pixel weight ``W`` in [0, 1] of the diffusion output."""
    cfg = config or FusionConfig()
    sigma = noise_map(x_ld, x0, sigma_px=cfg.noise_sigma_px)
    c = edge_confidence(x0, sigma, sigma_px=cfg.edge_sigma_px, k_edge=cfg.k_edge)
    d = np.abs(_stack(x_d) - _stack(x0)) / (cfg.k_dev * sigma)
    return ((1.0 - c) * np.exp(-0.5 * d * d)).astype(np.float32)


def pixel_fusion(
    x_d: np.ndarray, x0: np.ndarray, x_ld: np.ndarray, config: FusionConfig | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Fused image and its weight map, both ``[N, H, W]``."""
    w = fusion_weight(x_d, x0, x_ld, config)
    return (w * _stack(x_d) + (1.0 - w) * _stack(x0)).astype(np.float32), w


def global_fusion(x_d: np.ndarray, x0: np.ndarray, lam: float) -> np.ndarray:
    """``lam * x_d + (1 - lam) * x0`` (the ablation of the pixel-level fusion)."""
    if not 0.0 <= lam <= 1.0:
        raise ValueError(f"lam must be in [0, 1], got {lam}")
    return (lam * _stack(x_d) + (1.0 - lam) * _stack(x0)).astype(np.float32)


def lowband_fusion(x: np.ndarray, x0: np.ndarray, sigma_px: float = LOWBAND_PX) -> np.ndarray:
    """``x + G(x0 - x)``, ``G`` a Gaussian of ``sigma_px`` pixels within each image: ``x0``'s
    band below ``G``, ``x``'s above it. HU, ``[H, W]`` or ``[N, H, W]``; ``sigma_px = 0``
    returns ``x``."""
    if not sigma_px >= 0:
        raise ValueError(f"sigma_px must be >= 0, got {sigma_px}")
    xs, x0s = _stack(x), _stack(x0)
    if xs.shape != x0s.shape:
        raise ValueError(f"x and x0 differ in shape: {xs.shape} and {x0s.shape}")
    out = xs.copy() if sigma_px == 0 else xs + gaussian_filter(x0s - xs, (0, sigma_px, sigma_px))
    return out.astype(np.float32).reshape(np.shape(x))
