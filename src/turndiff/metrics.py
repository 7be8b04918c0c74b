"""Image quality metrics for CT reconstructions, in the windows of docs/SURFACE.md.

Every metric compares a reconstruction ``x`` with a reference ``ref``, both in HU, as
one image ``[H, W]`` (a float comes back) or a stack ``[N, H, W]`` (one value per
slice comes back, float64 ``[N]``).

Windows: ``full`` = [-1024, 3072] HU and ``soft`` = [-160, 240] HU. PSNR and SSIM are
computed on the windowed images (clipped to the window, then scaled to [0, 1], so the
data range is 1). RMSE is computed on the same clipped images but reported in HU:
``rmse = (hi - lo) * sqrt(mse_scaled)``, hence ``psnr = 20 log10((hi - lo) / rmse)``.

A ``mask`` (bool, ``[H, W]`` or ``[N, H, W]``) restricts every metric to its pixels,
e.g. the body (``mask="body"`` uses :func:`turndiff.masks.body_mask` of ``ref``).
PSNR, SSIM (without mask) come straight from :mod:`skimage.metrics`; with a mask, SSIM
is the mean of scikit-image's SSIM map over the mask.

Examples
--------
>>> import numpy as np
>>> ref = np.zeros((32, 32), np.float32)
>>> round(psnr(ref + 40.0, ref), 2)  # 40 HU offset in a 400 HU window
20.0
>>> rmse(ref + 40.0, ref)
40.0
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import ndimage

from .errors import InputError
from .masks import body_mask
from .windows import WINDOWS

__all__ = [
    "WINDOWS",
    "apply_window",
    "psnr",
    "ssim",
    "rmse",
    "evaluate",
    "mean_gradient_magnitude",
    "gradient_ratios",
    "through_plane",
]


Window = str | tuple[float, float]
Mask = np.ndarray | str | None

#: scikit-image's default SSIM window (7 x 7, uniform); images must be at least this big.
_SSIM_WIN = 7


def _window_range(window: Window) -> tuple[float, float]:
    if isinstance(window, str):
        if window not in WINDOWS:
            raise InputError(f"unknown metric window {window!r}; choose from {sorted(WINDOWS)} or give (lo, hi) in HU")
        return WINDOWS[window]
    try:
        lo, hi = (float(v) for v in window)
    except (TypeError, ValueError):
        raise InputError(f"a metric window is a name or (lo, hi) in HU, got {window!r}") from None
    if not (math.isfinite(lo) and math.isfinite(hi) and hi > lo):
        raise InputError(f"a metric window needs finite lo < hi, got {window!r}")
    return lo, hi


def apply_window(hu: np.ndarray, window: Window = "soft") -> np.ndarray:
    """Clip ``hu`` to the window and scale it to [0, 1] (float64, same shape)."""
    lo, hi = _window_range(window)
    return (np.clip(np.asarray(hu, np.float64), lo, hi) - lo) / (hi - lo)


def _as_image(a: Any, name: str) -> np.ndarray:
    arr = np.asarray(a)
    if arr.dtype == bool or not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise InputError(f"{name} must be a real-valued HU image, got dtype {arr.dtype}")
    if arr.ndim not in (2, 3) or arr.size == 0:
        raise InputError(f"{name} must be an image [H, W] or a stack [N, H, W], got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise InputError(f"{name} contains NaN or infinite values")
    return arr.astype(np.float64, copy=False)


def _pair(x: Any, ref: Any) -> tuple[np.ndarray, np.ndarray, bool]:
    """Validated float64 stacks ``[N, H, W]`` and whether the input was one image."""
    xa, ra = _as_image(x, "image"), _as_image(ref, "reference")
    if xa.shape != ra.shape:
        raise InputError(f"image shape {xa.shape} does not match reference shape {ra.shape}")
    single = xa.ndim == 2
    return (xa[None], ra[None], True) if single else (xa, ra, False)


def _mask(mask: Mask, ref: np.ndarray) -> np.ndarray | None:
    """Validated bool mask broadcast to ``ref``'s ``[N, H, W]``, or None."""
    if mask is None:
        return None
    if isinstance(mask, str):
        if mask != "body":
            raise InputError(f"mask must be a boolean array, 'body' or None, got {mask!r}")
        m = body_mask(ref)
    else:
        m = np.asarray(mask)
        if m.dtype != bool:
            raise InputError(f"mask must be boolean, got dtype {m.dtype}")
        if m.shape not in (ref.shape, ref.shape[1:]):
            raise InputError(f"mask shape {m.shape} does not match image shape {ref.shape[1:]} or {ref.shape}")
        m = np.broadcast_to(m, ref.shape)
    empty = np.flatnonzero(~m.reshape(len(m), -1).any(axis=1))
    if empty.size:
        raise InputError(f"mask is empty on slice {int(empty[0])}")
    return m


def _out(values: np.ndarray, single: bool) -> float | np.ndarray:
    return float(values[0]) if single else values


def psnr(x: Any, ref: Any, *, window: Window = "soft", mask: Mask = None) -> float | np.ndarray:
    """Peak signal-to-noise ratio (dB) of the windowed images, data range 1.

    Parameters
    ----------
    x, ref : array [H, W] or [N, H, W]
        Reconstruction and reference, HU.
    window : str or (lo, hi)
        ``'full'``, ``'soft'`` (see :data:`WINDOWS`) or a custom HU range.
    mask : bool array [H, W] or [N, H, W], 'body', optional
        Pixels to compare; default all.

    Returns
    -------
    float, or float64 [N] per slice; ``inf`` where the windowed images are identical.

    Examples
    --------
    >>> import numpy as np
    >>> ref = np.zeros((2, 16, 16))
    >>> psnr(ref + 4.0, ref, window="soft").round(2)
    array([40., 40.])
    """
    xs, rs, single = _pair(x, ref)
    m = _mask(mask, rs)
    xw, rw = apply_window(xs, window), apply_window(rs, window)
    if m is None:
        from skimage.metrics import peak_signal_noise_ratio

        with np.errstate(divide="ignore"):
            vals = np.array([peak_signal_noise_ratio(r, a, data_range=1.0) for a, r in zip(xw, rw)])
    else:
        mse = np.array([np.mean((a[k] - r[k]) ** 2) for a, r, k in zip(xw, rw, m)])
        with np.errstate(divide="ignore"):
            vals = 10.0 * np.log10(1.0 / mse)
    return _out(vals, single)


def ssim(x: Any, ref: Any, *, window: Window = "soft", mask: Mask = None) -> float | np.ndarray:
    """Structural similarity of the windowed images (scikit-image, data range 1).

    scikit-image defaults: 7 x 7 uniform window, K1 = 0.01, K2 = 0.03; the mean skips
    the 3-pixel border, as :func:`skimage.metrics.structural_similarity` does. With a
    mask, the SSIM map is averaged over the mask (inside that border). Images must be
    at least 7 x 7.

    Returns
    -------
    float, or float64 [N] per slice; 1 for identical images.

    Examples
    --------
    >>> import numpy as np
    >>> ref = np.random.default_rng(0).normal(0, 50, (32, 32))
    >>> ssim(ref, ref)
    1.0
    """
    from skimage.metrics import structural_similarity

    xs, rs, single = _pair(x, ref)
    if min(xs.shape[1:]) < _SSIM_WIN:
        raise InputError(f"SSIM needs images of at least {_SSIM_WIN} x {_SSIM_WIN} pixels, got {xs.shape[1:]}")
    m = _mask(mask, rs)
    xw, rw = apply_window(xs, window), apply_window(rs, window)
    vals = np.empty(len(xs))
    pad = (_SSIM_WIN - 1) // 2
    for i, (a, r) in enumerate(zip(xw, rw)):
        if m is None:
            vals[i] = structural_similarity(r, a, data_range=1.0, win_size=_SSIM_WIN)
        else:
            _, smap = structural_similarity(r, a, data_range=1.0, win_size=_SSIM_WIN, full=True)
            inner = np.zeros(smap.shape, bool)
            inner[pad:-pad, pad:-pad] = True
            sel = m[i] & inner
            if not sel.any():
                raise InputError(f"mask on slice {i} lies entirely within the {pad}-pixel SSIM border")
            vals[i] = smap[sel].mean()
    return _out(vals, single)


def rmse(x: Any, ref: Any, *, window: Window | None = "soft", mask: Mask = None) -> float | np.ndarray:
    """Root-mean-square error in HU between the window-clipped images.

    Both images are clipped to the window (no scaling) before the difference, so
    ``rmse(..., window=w)`` and ``psnr(..., window=w)`` describe the same error:
    ``psnr = 20 log10((hi - lo) / rmse)``. ``window=None`` compares raw HU.

    Returns
    -------
    float, or float64 [N] per slice (HU).

    Examples
    --------
    >>> import numpy as np
    >>> ref = np.zeros((16, 16))
    >>> rmse(ref + 500.0, ref, window="soft"), rmse(ref + 500.0, ref, window=None)
    (240.0, 500.0)
    """
    xs, rs, single = _pair(x, ref)
    m = _mask(mask, rs)
    if window is not None:
        lo, hi = _window_range(window)
        xs, rs = np.clip(xs, lo, hi), np.clip(rs, lo, hi)
    sq = (xs - rs) ** 2
    if m is None:
        vals = np.sqrt(sq.reshape(len(sq), -1).mean(axis=1))
    else:
        vals = np.array([math.sqrt(s[k].mean()) for s, k in zip(sq, m)])
    return _out(vals, single)


def _summary(vals: np.ndarray) -> dict[str, Any]:
    finite = vals[np.isfinite(vals)]
    mean = float(np.mean(vals)) if finite.size == vals.size else (math.inf if np.all(vals > 0) else math.nan)
    std = float(np.std(vals)) if finite.size == vals.size else math.nan
    return {"mean": mean, "std": std, "per_slice": [float(v) for v in vals]}


def evaluate(
    x: Any,
    ref: Any,
    *,
    windows: Sequence[Window] = ("full", "soft"),
    mask: Mask = None,
) -> dict[str, dict[str, dict[str, Any]]]:
    """PSNR, SSIM and RMSE in each window, summarised over slices.

    Returns
    -------
    dict
        ``{window: {"psnr" | "ssim" | "rmse": {"mean", "std", "per_slice"}}}`` with plain
        Python floats (``per_slice`` a list of N values). Window keys are the names, or
        ``"lo,hi"`` for custom ranges. ``mean`` is ``inf`` when every PSNR is infinite,
        and ``std`` NaN when any value is.

    Examples
    --------
    >>> import numpy as np
    >>> ref = np.zeros((3, 16, 16))
    >>> r = evaluate(ref + 4.0, ref)
    >>> round(r["soft"]["psnr"]["mean"], 2), r["soft"]["rmse"]["per_slice"]
    (40.0, [4.0, 4.0, 4.0])
    """
    xs, rs, _ = _pair(x, ref)
    m = _mask(mask, rs)
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for w in windows:
        key = w if isinstance(w, str) else "{:g},{:g}".format(*_window_range(w))
        out[key] = {
            "psnr": _summary(np.atleast_1d(psnr(xs, rs, window=w, mask=m))),
            "ssim": _summary(np.atleast_1d(ssim(xs, rs, window=w, mask=m))),
            "rmse": _summary(np.atleast_1d(rmse(xs, rs, window=w, mask=m))),
        }
    return out


def _sobel_magnitude(xs: np.ndarray) -> np.ndarray:
    """Normalised Sobel gradient magnitude (HU per pixel) of each slice of ``[N, H, W]``."""
    out = np.empty(xs.shape, np.float64)
    for i, img in enumerate(xs):
        gx = ndimage.sobel(img, axis=1, mode="reflect") / 8.0
        gy = ndimage.sobel(img, axis=0, mode="reflect") / 8.0
        out[i] = np.hypot(gx, gy)
    return out


def mean_gradient_magnitude(
    x: Any, *, mask: Mask = None, pixel_spacing: float | None = None
) -> float | np.ndarray:
    """Mean Sobel gradient magnitude, a measure of how much detail an image keeps.

    The Sobel derivatives are normalised (divided by 8) so a ramp of 1 HU per pixel gives
    1; the magnitude is ``sqrt(gx^2 + gy^2)`` in HU per pixel, or HU per mm when
    ``pixel_spacing`` (mm) is given. Borders use reflection. Compare it with the
    reference's value: lower means smoothed detail, higher means residual noise.

    Parameters
    ----------
    x : array [H, W] or [N, H, W]
        Image(s), HU.
    mask : bool array [H, W] or [N, H, W], 'body', optional
        Pixels to average over (``'body'``: the body of ``x``).

    Returns
    -------
    float, or float64 [N] per slice.

    Examples
    --------
    >>> import numpy as np
    >>> ramp = np.tile(np.arange(16.0) * 3.0, (16, 1))
    >>> mean_gradient_magnitude(ramp)  # doctest: +ELLIPSIS
    2.81...
    """
    xs = _as_image(x, "image")
    single = xs.ndim == 2
    if single:
        xs = xs[None]
    m = _mask(mask, xs)
    vals = np.empty(len(xs))
    for i, mag in enumerate(_sobel_magnitude(xs)):
        vals[i] = mag.mean() if m is None else mag[m[i]].mean()
    if pixel_spacing is not None:
        if not (isinstance(pixel_spacing, (int, float)) and math.isfinite(pixel_spacing) and pixel_spacing > 0):
            raise InputError(f"pixel_spacing must be a positive number of mm, got {pixel_spacing!r}")
        vals = vals / pixel_spacing
    return _out(vals, single)


def gradient_ratios(
    x: Any, ref: Any, *, mask: Mask = "body", edge_quantile: float = 0.9, flat_quantile: float = 0.5
) -> dict[str, float]:
    """Gradient magnitude of ``x`` relative to ``ref``'s, overall and split by structure.

    :func:`mean_gradient_magnitude` alone mixes two opposite things: blurred edges lower
    it, residual noise raises it, so a noisy, blurred image can score 1. This splits the
    pixels of ``mask`` by the reference's own gradient: ``edges`` are the strongest
    ``1 - edge_quantile`` (the sharpness of true structure; below 1 means blurred),
    ``flat`` the weakest ``flat_quantile`` (there, gradient is mostly noise or invented
    texture; above 1 means noise). Each value is ``sum |grad x| / sum |grad ref|`` over
    those pixels of all slices.

    Parameters
    ----------
    x, ref : array [H, W] or [N, H, W]
        Image(s) and reference, HU.
    mask : bool array, 'body' or None
        Pixels considered (``'body'``: the body of ``ref``).
    edge_quantile, flat_quantile : float
        Quantiles of the reference's gradient inside ``mask`` that bound the two groups.

    Returns
    -------
    dict with ``all``, ``edges``, ``flat`` (floats; nan where the reference's gradient
    is zero over the group).

    Examples
    --------
    >>> import numpy as np
    >>> ref = np.zeros((32, 32)); ref[:, 16:] = 100.0
    >>> r = gradient_ratios(ref + np.random.default_rng(0).normal(0, 5, ref.shape), ref, mask=None)
    >>> r["flat"] > 1.0  # noise adds gradient where the reference is flat
    True
    """
    xs, rs, _ = _pair(x, ref)
    if not (0.0 < flat_quantile <= edge_quantile < 1.0):
        raise InputError(f"need 0 < flat_quantile <= edge_quantile < 1, got {flat_quantile}, {edge_quantile}")
    m = _mask(mask, rs)
    m = np.ones(rs.shape, bool) if m is None else m
    gx, gr = _sobel_magnitude(xs), _sobel_magnitude(rs)
    hi, lo = np.quantile(gr[m], [edge_quantile, flat_quantile])
    groups = {"all": m, "edges": m & (gr > hi), "flat": m & (gr <= lo)}
    # nan where the reference has no gradient at all (e.g. a piecewise-constant phantom's flats)
    return {k: float(gx[g].sum() / gr[g].sum()) if gr[g].sum() > 0 else math.nan for k, g in groups.items()}


def through_plane(x: Any, ref: Any, *, mask: Mask = "body") -> dict[str, float]:
    """Slice-to-slice consistency of a reconstructed stack against its reference volume.

    Slices reconstructed one by one can disagree with their neighbours in ways no single
    slice shows: a level that jumps from slice to slice (banding in a coronal or sagittal
    reformat), or noise and invented texture that change between slices. With
    ``d(v)[k] = v[k + 1] - v[k]`` the difference between neighbouring slices:

    - ``dz_rmse``: RMS of ``d(x) - d(ref)`` (HU) over ``mask`` of both slices: the error in
      the through-plane change (0 when every slice is off by the same amount);
    - ``dz_ratio``: RMS of ``d(x)`` over RMS of ``d(ref)``: 1 when the stack changes from
      slice to slice as much as the anatomy does, above 1 for noise or flicker between
      slices, below 1 for a stack smoothed through the plane;
    - ``banding``: the standard deviation over slices of each slice's mean error inside
      ``mask`` (HU): level shifts between slices, the banding of a reformat.

    Parameters
    ----------
    x, ref : array [N, H, W]
        Stack and reference, HU, ``N >= 2`` consecutive slices of one volume.
    mask : bool array, 'body' or None

    Examples
    --------
    >>> import numpy as np
    >>> ref = np.zeros((4, 16, 16)); x = ref + np.arange(4)[:, None, None] * 10.0
    >>> round(through_plane(x, ref, mask=None)["banding"], 2)   # levels 0, 10, 20, 30 HU
    11.18
    """
    xs, rs, single = _pair(x, ref)
    if single or len(rs) < 2:
        raise InputError("through_plane needs a stack of at least 2 consecutive slices [N, H, W]")
    m = _mask(mask, rs)
    m = np.ones(rs.shape, bool) if m is None else m
    both = m[1:] & m[:-1]
    dx, dr = np.diff(xs.astype(np.float64), axis=0), np.diff(rs.astype(np.float64), axis=0)
    err = xs.astype(np.float64) - rs
    means = np.array([err[k][m[k]].mean() for k in range(len(err))])
    ref_change = float(np.sqrt(np.mean(dr[both] ** 2)))
    return {"dz_rmse": float(np.sqrt(np.mean((dx - dr)[both] ** 2))),
            "dz_ratio": float(np.sqrt(np.mean(dx[both] ** 2)) / ref_change) if ref_change > 0 else math.nan,
            "banding": float(means.std())}
