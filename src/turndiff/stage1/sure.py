"""Stein's unbiased risk estimate (SURE) of a sinogram denoiser's error, from noisy data only.

For ``y = p + n`` with independent zero-mean noise of known variance ``sigma_i^2`` (the
post-log noise model of :func:`~turndiff.dose.postlog_variance`, Gaussian to a
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
from ..dose import ELECTRONIC_NOISE_STD, postlog_variance

__all__ = ["CALIBRATE_MAX_NOISE_RATIO", "CALIBRATION_BANDS", "CALIBRATION_VIEW_BANDS", "apply_band_weights",
           "calibration_applies", "sure_band_weights", "sure_calibrate", "sure_mse"]

#: Bands of the SURE calibration along the detector frequency and along the view frequency
#: (docs/METHOD.md, "SURE calibration": chosen on the validation phantoms).
CALIBRATION_BANDS = 8
CALIBRATION_VIEW_BANDS = 8

#: ``calibrate=None`` (auto) turns the SURE calibration on up to this input-to-training noise
#: ratio ``sqrt(I0_train / I0_input)`` (validation phantoms: it gained at 25%, 50% and 75% dose
#: of a model trained at 25%, and lost 0.17 dB at 10%).
CALIBRATE_MAX_NOISE_RATIO: float = 1.25


def calibration_applies(photons_input: float | None, photons_train: float | None, calibrate: bool | None) -> bool:
    """Whether to SURE-calibrate a denoiser trained at ``I0 = photons_train`` on an input of
    ``I0 = photons_input`` (both estimated the same way): ``calibrate`` True / False forces it,
    None decides by :data:`CALIBRATE_MAX_NOISE_RATIO`. Without both ``I0`` it is off."""
    if calibrate is False or not photons_input or not photons_train:
        return False
    return bool(calibrate) or float(np.sqrt(photons_train / photons_input)) <= CALIBRATE_MAX_NOISE_RATIO


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
    var = postlog_variance(torch.from_numpy(f), float(photons), electronic_std=electronic_std).numpy()
    sigma = np.sqrt(var)
    probe = np.random.default_rng(seed).standard_normal(y.shape) * sigma
    f_probe = np.asarray(denoise((y + eps * probe).astype(np.float32)), np.float64)
    divergence = float(np.sum(probe * (f_probe - f)) / eps)
    return float((np.sum((y - f) ** 2) - np.sum(var) + 2.0 * divergence) / y.size)


def _band_index(n_freq: int, bands: int) -> np.ndarray:
    """Band of each of ``n_freq`` rfft bins: ``bands`` equal-width bands of ``|omega|``."""
    return np.minimum((np.arange(n_freq) * bands) // n_freq, bands - 1)


def _band_grid(shape: tuple[int, int], bands: int, view_bands: int) -> np.ndarray:
    """Band of every bin of a slice's ``rfft2`` ``[V, D // 2 + 1]``: ``view_bands`` equal-width
    bands of ``|omega|`` along the views times ``bands`` along the detector, view-major."""
    V, D = shape
    kd = _band_index(D // 2 + 1, bands)
    kv = np.minimum((np.abs(np.fft.fftfreq(V)) * 2 * view_bands).astype(int), view_bands - 1)
    return kv[:, None] * bands + kd[None, :]


def sure_band_weights(
    y: np.ndarray,
    f: np.ndarray,
    f_probe: np.ndarray,
    probe: np.ndarray,
    eps: float,
    bands: int,
    view_bands: int = 1,
) -> np.ndarray:
    """SURE-optimal weights ``beta_k`` of the denoiser's correction per frequency band.

    The blend is ``g = y + sum_k beta_k P_k (f(y) - y)``, ``P_k`` the projection of one slice
    ``[V, D]`` on band ``k``: ``bands`` equal-width bands of ``|omega|`` along the detector
    times ``view_bands`` along the views (1: detector frequency alone). The bands are
    orthogonal, so SURE of ``g`` separates,

    ``SURE(beta) = sum_k [beta_k^2 R_k + 2 beta_k (D_k - T_k)] + const``,

    with ``R_k = ||P_k (f - y)||^2``, ``T_k = u^T P_k u`` (the band's noise energy) and
    ``D_k = u^T P_k (f(y + eps u) - f(y)) / eps`` (its share of the divergence), ``u`` the
    probe ``N(0, Sigma)``. The minimiser is ``beta_k = (T_k - D_k) / R_k``, clipped to
    ``[0, 1]``: 1 keeps the denoiser, 0 gives the band back its measured data. A denoiser
    trained at one dose over-smooths a cleaner scan; this undoes it without clean data.
    View bands matter because a sinogram's signal is smooth along the views (the views
    oversample the object) while its noise is white: the data are worth keeping at low
    view frequencies and not at high ones, at every detector frequency.

    Parameters
    ----------
    y, f, f_probe, probe : arrays [V, D]
        Noisy slice, its denoised version, the denoised ``y + eps * probe``, the probe.
    eps : float
        Probe scale used for ``f_probe``.
    bands, view_bands : int
        Number of frequency bands along the detector and along the views (>= 1).

    Returns
    -------
    array [view_bands * bands]
        Weights in ``[0, 1]``, view-major (``[bands]`` alone for one view band).
    """
    shape = y.shape[-2:]
    r = np.fft.rfft2(f - y, s=shape)
    u = np.fft.rfft2(probe, s=shape)
    d = np.fft.rfft2((f_probe - f) / eps, s=shape)
    band = _band_grid(shape, bands, view_bands).ravel()
    mult = np.full(r.shape[-1], 2.0)  # rfft keeps one of each +-omega pair along the detector
    mult[0] = 1.0
    if shape[-1] % 2 == 0:
        mult[-1] = 1.0
    n = bands * view_bands

    def per_band(x: np.ndarray) -> np.ndarray:
        return np.bincount(band, (x * mult).ravel(), minlength=n)

    rk = per_band(np.abs(r) ** 2)
    tk = per_band(np.abs(u) ** 2)
    dk = per_band((u.conj() * d).real)
    return np.where(rk > 0, np.clip((tk - dk) / np.where(rk > 0, rk, 1.0), 0.0, 1.0), 1.0)


def apply_band_weights(y: np.ndarray, f: np.ndarray, weights: np.ndarray, view_bands: int = 1) -> np.ndarray:
    """``y + sum_k weights[k] P_k (f - y)`` for one slice ``[V, D]``, ``weights``
    ``[view_bands * bands]`` view-major (see :func:`sure_band_weights`)."""
    w = np.asarray(weights, np.float64).ravel()
    if w.size % view_bands:
        raise InputError(f"{w.size} weights do not split into {view_bands} view bands")
    shape = y.shape[-2:]
    r = np.fft.rfft2(f - y, s=shape)
    r = r * w[_band_grid(shape, w.size // view_bands, view_bands)]
    return (y + np.fft.irfft2(r, s=shape)).astype(np.float32)


def sure_calibrate(
    denoise: Callable[[np.ndarray], np.ndarray],
    sinogram: np.ndarray,
    photons: float,
    *,
    bands: int = CALIBRATION_BANDS,
    view_bands: int = CALIBRATION_VIEW_BANDS,
    denoised: np.ndarray | None = None,
    electronic_std: float = ELECTRONIC_NOISE_STD,
    eps: float = 0.01,
    seed: int = 0,
    rng: np.random.Generator | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Blend a denoiser's output with its input, per slice and frequency band (detector x
    view frequency), with the weights SURE finds best (:func:`sure_band_weights`); no clean data.

    A stage-1 network trained at one dose removes the noise level it was trained on; on a
    cleaner scan that over-smooths. This gives each band back as much of the measured data
    as SURE says it holds signal. Costs one more denoiser pass per slice.

    Parameters
    ----------
    denoise : callable
        ``[N, V, D] -> [N, V, D]`` post-log sinograms.
    sinogram : array [N, V, D] or [V, D]
        Noisy post-log sinograms.
    photons : float
        ``I0`` of *this* scan (e.g. :func:`~turndiff.dose.estimate_photons`).
    bands, view_bands : int
        Equal-width bands of detector frequency and of view frequency.
    denoised : array, optional
        ``denoise(sinogram)`` if already computed.
    electronic_std, eps, seed
        Noise model, probe scale (fraction of the noise std) and probe seed.
    rng : numpy.random.Generator, optional
        Draws the probes instead of ``seed``, slice after slice: a study calibrated in
        batches passes one generator through all of them, so slice ``k`` gets the probe it
        would get in one call.

    Returns
    -------
    blended : array, same shape as ``sinogram``
        float32 calibrated sinograms.
    weights : array [N, view_bands * bands]
        The weight of the denoiser's correction per slice and band, view-major (1: kept).
    """
    y, squeeze = as_stack(sinogram, "sinogram", "V, D")
    if not (np.isfinite(photons) and photons > 0):
        raise InputError(f"photons must be a positive number, got {photons!r}")
    for name, v in (("bands", bands), ("view_bands", view_bands)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise InputError(f"{name} must be a positive integer, got {v!r}")
    f = np.asarray(denoise(y) if denoised is None else denoised, np.float32).reshape(y.shape)
    rng = np.random.default_rng(seed) if rng is None else rng
    out = np.empty_like(y, dtype=np.float32)
    weights = np.ones((y.shape[0], view_bands * bands))
    for i in range(y.shape[0]):
        var = postlog_variance(torch.from_numpy(f[i].astype(np.float64)), float(photons), electronic_std=electronic_std).numpy()
        probe = rng.standard_normal(var.shape) * np.sqrt(var)
        f_probe = np.asarray(denoise((y[i] + eps * probe)[None].astype(np.float32)), np.float64).reshape(var.shape)
        weights[i] = sure_band_weights(y[i].astype(np.float64), f[i].astype(np.float64), f_probe, probe, eps, bands,
                                       view_bands)
        out[i] = apply_band_weights(y[i], f[i], weights[i], view_bands)
    return (out[0] if squeeze else out), weights
