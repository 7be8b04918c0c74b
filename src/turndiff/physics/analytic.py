"""Analytic ellipse phantoms and their exact line integrals (for validating projectors)."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from .geometry import Geometry
from .projector import CTProjector

__all__ = ["Ellipse", "ellipse_image", "ellipse_sinogram", "TEST_ELLIPSES"]

#: (centre x, centre y, semi-axis a, semi-axis b, rotation in radians, value); mm and mu.
Ellipse = tuple[float, float, float, float, float, float]

#: A small ellipse phantom (mu per mm), smaller than a 384 mm field of view.
TEST_ELLIPSES: tuple[Ellipse, ...] = (
    (0.0, 0.0, 140.0, 105.0, 0.0, 0.0192),
    (-45.0, 10.0, 35.0, 55.0, 0.3, -0.004),
    (50.0, -5.0, 30.0, 45.0, -0.4, 0.003),
    (0.0, -70.0, 18.0, 12.0, 0.0, 0.015),
    (20.0, 50.0, 8.0, 8.0, 0.0, 0.002),
)


def _unit_coords(x, y, e: Ellipse):
    cx, cy, a, b, phi, _ = e
    c, s = np.cos(phi), np.sin(phi)
    xr = (x - cx) * c + (y - cy) * s
    yr = -(x - cx) * s + (y - cy) * c
    return xr / a, yr / b


def ellipse_image(geometry: Geometry, ellipses: Sequence[Ellipse] = TEST_ELLIPSES, *, supersample: int = 4) -> np.ndarray:
    """Rasterise ellipses on the geometry's grid, area-averaged over ``supersample^2`` points."""
    n, ps, ss = geometry.image_size, geometry.pixel_spacing, supersample
    c = (np.arange(n * ss) - (n * ss - 1) / 2) * ps / ss
    X, Y = np.meshgrid(c, -c)
    img = np.zeros_like(X)
    for e in ellipses:
        u, v = _unit_coords(X, Y, e)
        img += e[5] * (u * u + v * v <= 1.0)
    return img.reshape(n, ss, n, ss).mean((1, 3)).astype(np.float32)


def ellipse_sinogram(geometry: Geometry, ellipses: Sequence[Ellipse] = TEST_ELLIPSES) -> np.ndarray:
    """Exact line integrals ``[V, D]`` of the ellipses along every ray of ``geometry``."""
    src, dirs = CTProjector(geometry).rays
    ps = geometry.pixel_spacing
    ox, oy = src[..., 0] * ps, src[..., 1] * ps
    dx, dy = dirs[..., 0], dirs[..., 1]
    out = np.zeros(ox.shape)
    for e in ellipses:
        cx, cy, a, b, phi, val = e
        c, s = np.cos(phi), np.sin(phi)
        # Ray o + t d in the ellipse's unit-disc coordinates: |o' + t d'|^2 = 1.
        ou = ((ox - cx) * c + (oy - cy) * s) / a
        ov = (-(ox - cx) * s + (oy - cy) * c) / b
        du = (dx * c + dy * s) / a
        dv = (-dx * s + dy * c) / b
        A = du * du + dv * dv
        B = ou * du + ov * dv
        C = ou * ou + ov * ov - 1.0
        disc = np.maximum(B * B - A * C, 0.0)
        out += val * 2.0 * np.sqrt(disc) / A
    return out.astype(np.float32)
