"""Input checks shared by the public entry points (one-line :class:`InputError` messages)."""

from __future__ import annotations

from typing import Any

import numpy as np

from .errors import InputError


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
