"""Stein's unbiased risk estimate (SURE) of a sinogram denoiser's error, from noisy data only.

For ``y = p + n`` with independent zero-mean noise of known variance ``sigma_i^2`` (the
post-log noise model of :func:`~turndiff.stage1.similarity.noise_variance`, Gaussian to a
good approximation at CT counts), and a denoiser ``f``,

    E ||f(y) - p||^2 = E[ ||y - f(y)||^2 - sum_i sigma_i^2 + 2 sum_i sigma_i^2 df_i/dy_i ]

(Stein 1981). The divergence term is estimated with one Monte-Carlo probe
(Ramani, Blu and Unser 2008): ``b ~ N(0, I)``, ``sum_i sigma_i^2 df_i/dy_i ~=
(sigma b) . (f(y + eps sigma b) - f(y)) / eps``. Nothing here needs the clean sinogram
``p``, so it can choose among stage-1 checkpoints without clean data. The self-supervised
training loss cannot: it keeps falling while the image gets worse (docs/METHOD.md).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from .._checks import as_stack
from ..errors import InputError
from .similarity import ELECTRONIC_NOISE_STD, noise_variance

__all__ = ["sure_mse"]


def sure_mse(
    denoise: Callable[[np.ndarray], np.ndarray],
    sinogram: np.ndarray,
    photons: float,
    *,
    electronic_std: float = ELECTRONIC_NOISE_STD,
    eps: float = 0.01,
    seed: int = 0,
) -> float:
    """Monte-Carlo SURE of the mean squared error of ``denoise`` on ``sinogram``.

    Parameters
    ----------
    denoise : callable
        Maps post-log sinograms ``[N, V, D]`` to denoised ones of the same shape, e.g.
        ``ProjectionDenoiser.denoise``.
    sinogram : array [N, V, D] or [V, D]
        Noisy post-log sinograms (line integrals, 1/mm x mm).
    photons : float
        Unattenuated counts per bin ``I0`` of the data.
    electronic_std : float
        Electronic noise standard deviation in counts.
    eps : float
        Probe size, as a fraction of each bin's noise standard deviation.
    seed : int
        Seed of the probe.

    Returns
    -------
    float
        Estimated mean over bins of ``(f(y) - p)^2``, in (line-integral units)^2. It is
        unbiased as far as the noise model is right; the spread of one probe is small
        for a full sinogram. Compare values of one sinogram across denoisers or
        checkpoints.

    Examples
    --------
    >>> import numpy as np
    >>> from scipy import ndimage
    >>> rng = np.random.default_rng(0)
    >>> clean = np.full((2, 64, 64), 2.0)
    >>> i0 = 1e4
    >>> noisy = -np.log(rng.poisson(i0 * np.exp(-clean)) / i0)
    >>> smooth = lambda s: np.stack([ndimage.uniform_filter(x, 5) for x in s])
    >>> est = sure_mse(smooth, noisy, i0, electronic_std=0.0)
    >>> true = float(np.mean((smooth(noisy) - clean) ** 2))
    >>> noise_var = float(np.mean((noisy - clean) ** 2))
    >>> abs(est - true) < 0.05 * noise_var  # as accurate as the noise model
    True
    """
    y, _ = as_stack(sinogram, "sinogram", "V, D")
    if not (np.isfinite(photons) and photons > 0):
        raise InputError(f"photons must be a positive number, got {photons!r}")
    if not eps > 0:
        raise InputError(f"eps must be > 0, got {eps!r}")
    y = y.astype(np.float64)
    f = np.asarray(denoise(y.astype(np.float32)), np.float64)
    if f.shape != y.shape:
        raise InputError(f"denoise returned shape {f.shape} for input {y.shape}")
    # Variance from the denoised sinogram: the noisy one would correlate it with the noise.
    var = noise_variance(torch.from_numpy(f), float(photons), electronic_std).numpy()
    sigma = np.sqrt(var)
    probe = np.random.default_rng(seed).standard_normal(y.shape) * sigma
    f_probe = np.asarray(denoise((y + eps * probe).astype(np.float32)), np.float64)
    divergence = float(np.sum(probe * (f_probe - f)) / eps)
    return float((np.sum((y - f) ** 2) - np.sum(var) + 2.0 * divergence) / y.size)
