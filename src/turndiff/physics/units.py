"""CT numbers: Hounsfield units <-> linear attenuation (1/mm)."""

from __future__ import annotations

import numpy as np

from .geometry import MU_WATER

__all__ = ["hu_to_mu", "mu_to_hu"]


def hu_to_mu(hu: np.ndarray, mu_water: float = MU_WATER) -> np.ndarray:
    """``mu = mu_water * (1 + HU / 1000)`` (per mm), clipped at 0 (nothing below air)."""
    return np.maximum(mu_water * (1.0 + np.asarray(hu, np.float32) / 1000.0), 0.0).astype(np.float32)


def mu_to_hu(mu, mu_water: float = MU_WATER):
    """Inverse of :func:`hu_to_mu` (works on NumPy arrays and torch tensors)."""
    return (mu / mu_water - 1.0) * 1000.0
