"""Detail restoration: put back what a denoiser removed that the noise cannot explain.

The residual ``r = x_ld - x`` of a denoised image ``x`` against the low-dose FBP ``x_ld``
is the noise that was removed plus whatever structure was removed with it (blurred
edges, flattened small features). The noise of ``x_ld`` has a known level per pixel:
the post-log variance of each measured bin (:func:`turndiff.dose.postlog_variance`)
carried through the FBP. Structure that stands out of that level by more than ``k``
standard deviations is put back by shrinking the residual against ``t = k sigma``, with
the non-negative garrote (default; Breiman 1995, Gao 1998)

``x' = x + r max(1 - t^2 / r^2, 0)``

or soft thresholding, ``x' = x + sign(r) max(|r| - t, 0)``: the classical "method noise"
check of a denoiser turned into a correction. Both zero what lies within ``t``; soft
thresholding also takes ``t`` off every large residual, so a bone or skin edge of several
hundred HU comes back short by ``t``, while the garrote returns it almost whole (its
shortfall ``t^2 / r`` falls as the residual grows). Because
``sigma`` falls with the dose, more is put back at higher doses, where a denoiser
trained at a lower dose over-smooths. No clean data are used; ``k`` was chosen on
validation phantoms (docs/METHOD.md, "Detail restoration").
"""

from __future__ import annotations

import zlib
from typing import Callable

import numpy as np
from scipy.ndimage import gaussian_filter, uniform_filter

from ..dose import estimate_photons, postlog_variance

__all__ = ["DETAIL_BLUR_PX", "DETAIL_K", "DETAIL_SHRINK", "SHRINK_RULES", "input_noise_std", "restore_detail"]

#: Threshold of the restoration in noise standard deviations, and the Gaussian blur (pixels)
#: of the residual before it: chosen on validation phantoms (docs/METHOD.md).
DETAIL_K: float = 1.5
DETAIL_BLUR_PX: float = 1.0
#: How the residual is shrunk against the threshold (also chosen on validation phantoms).
DETAIL_SHRINK: str = "garrote"
SHRINK_RULES = ("garrote", "soft")


def input_noise_std(
    sinogram: np.ndarray,
    fbp_hu: Callable[[np.ndarray], np.ndarray],
    *,
    photons: float | None = None,
    denoised: np.ndarray | None = None,
    draws: int = 2,
    smooth_px: float = 3.0,
    blur_px: float = 0.0,
    seed: int = 0,
) -> np.ndarray:
    """Noise standard deviation (HU) of ``fbp_hu(sinogram)`` per pixel, or of that image
    blurred by a Gaussian of ``blur_px`` pixels.

    Monte Carlo: ``draws`` noise sinograms with the post-log variance of the measured bins
    (``I0`` = ``photons``, estimated from the data when None; the variance is computed from
    ``denoised`` line integrals, by default the sinogram under a 3 x 3 mean, since a noisy
    bin's own value overstates the variance of starved bins) are reconstructed (and
    blurred), and their squares averaged over draws and over a Gaussian window of
    ``smooth_px`` pixels. Each slice's noise is seeded by ``seed`` and the slice's own
    bytes, so a slice gets the same map whatever batch it is reconstructed in.

    Parameters
    ----------
    sinogram : array [V, D] or [N, V, D]
        Post-log line integrals.
    fbp_hu
        The FBP that made ``x_ld``: ``[N, V, D]`` line integrals -> ``[N, H, W]`` HU (a
        zero sinogram gives -1000 HU, which is taken off).

    Returns
    -------
    float32 array [N, H, W] (or [H, W] for one sinogram), HU.
    """
    y = np.asarray(sinogram, np.float32)
    squeeze = y.ndim == 2
    y = y[None] if squeeze else y
    i0 = float(photons) if photons is not None else estimate_photons(y)
    p = uniform_filter(y, size=(1, 3, 3), mode="nearest") if denoised is None else np.asarray(denoised, np.float32)
    std = np.sqrt(postlog_variance(p.reshape(y.shape), i0)).astype(np.float32)
    draws = max(1, int(draws))
    noise = np.empty((draws, *y.shape), np.float32)
    for k in range(y.shape[0]):
        rng = np.random.default_rng([int(seed), zlib.crc32(np.ascontiguousarray(y[k]).tobytes())])
        noise[:, k] = std[k] * rng.standard_normal((draws, *y.shape[1:]), dtype=np.float32)
    # One FBP call for every draw of every slice; the blurs act within each image only.
    n_img = np.asarray(fbp_hu(noise.reshape(-1, *y.shape[1:])), np.float64) + 1000.0
    n_img = gaussian_filter(n_img, (0, blur_px, blur_px)) if blur_px > 0 else n_img
    var = (n_img**2).reshape(draws, y.shape[0], *n_img.shape[1:]).mean(0)
    var = gaussian_filter(var, (0, smooth_px, smooth_px)) if smooth_px > 0 else var
    out = np.sqrt(var).astype(np.float32)
    return out[0] if squeeze else out


def restore_detail(x: np.ndarray, x_ld: np.ndarray, sigma: np.ndarray, *, k: float = DETAIL_K,
                   blur_px: float = 0.0, shrink: str = DETAIL_SHRINK) -> np.ndarray:
    """``x + shrink(G(x_ld - x), k sigma)``: the residual's part above ``k`` noise standard
    deviations put back, the residual first blurred by a Gaussian ``G`` of ``blur_px``
    pixels (``sigma`` must then be :func:`input_noise_std` with the same ``blur_px``).
    ``shrink``: ``"garrote"`` (``r max(1 - t^2/r^2, 0)``) or ``"soft"``
    (``sign(r) max(|r| - t, 0)``), ``t = k sigma``. All HU, same shape."""
    if not k >= 0:
        raise ValueError(f"k must be >= 0, got {k}")
    if shrink not in SHRINK_RULES:
        raise ValueError(f"shrink must be one of {SHRINK_RULES}, got {shrink!r}")
    r = np.asarray(x_ld, np.float32) - np.asarray(x, np.float32)
    if blur_px > 0:
        r = gaussian_filter(r, (0,) * (r.ndim - 2) + (blur_px, blur_px))
    t = np.float32(k) * np.asarray(sigma, np.float32)
    if shrink == "soft":
        d = np.sign(r) * np.maximum(np.abs(r) - t, 0.0)
    else:
        d = r * np.maximum(1.0 - np.square(t) / np.maximum(np.square(r), np.float32(1e-12)), 0.0)
    return (np.asarray(x, np.float32) + d).astype(np.float32)
