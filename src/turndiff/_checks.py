"""Input checks shared by the public entry points (one-line :class:`InputError` messages)."""

from __future__ import annotations

from typing import Any

import numpy as np

from .errors import InputError

#: Inputs outside these ranges are refused as not CT data (a unit mix-up or garbage):
#: images in HU (padding values down to -3024 and metal in extended-scale CT up to a few
#: 10^4 fit inside), and post-log line integrals ``-log(I / I0)`` (dimensionless; a patient
#: stays below about 25, a starved ray at the log of ``I0``; raw counts would be 10^3-10^6).
PLAUSIBLE_HU: tuple[float, float] = (-1e4, 1e5)
PLAUSIBLE_LINE_INTEGRAL: tuple[float, float] = (-100.0, 100.0)


def as_stack(data: Any, name: str, axes: str) -> tuple[np.ndarray, bool]:
    """``data`` as float32 ``[N, ...]`` plus whether a single 2D item was given.

    ``axes`` names the last two axes for the error message (``"V, D"``, ``"H, W"``).
    """
    x = np.asarray(data, np.float32)
    squeeze = x.ndim == 2
    x = x[None] if squeeze else x
    if x.ndim != 3:
        raise InputError(f"{name} must be [N, {axes}], got shape {x.shape}")
    if not np.isfinite(x).all():
        raise InputError(f"{name} holds NaN or inf")
    return x, squeeze


def check_sinograms(sinograms: Any, geometry: Any = None, what: str = "sinograms") -> np.ndarray:
    """Post-log sinograms as contiguous float32 ``[N, V, D]`` (a single ``[V, D]`` is
    promoted), finite, and of ``geometry.sinogram_shape`` when a geometry is given. The one
    sinogram check of the library's entry points."""
    y, _ = as_stack(sinograms, what, "V, D")
    if y.shape[0] < 1:
        raise InputError(f"{what} must be [N, V, D] with N >= 1, got shape {tuple(y.shape)}")
    if geometry is not None and tuple(y.shape[1:]) != tuple(geometry.sinogram_shape):
        raise InputError(f"{what} of shape {tuple(y.shape)} do not match the geometry "
                         f"([N, {geometry.views}, {geometry.det_count}])")
    return np.ascontiguousarray(y)
