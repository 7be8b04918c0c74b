"""Digital QA phantoms for task-based image quality (docs/PHANTOMS.md, "QA phantoms").

Generated, like the anatomical ones, so nothing is downloaded:

- :func:`make_lcd_phantom`, in the spirit of the MITA-LCD phantom (CCT189, The Phantom
  Laboratory), which the FDA's LCD-CT toolbox images: a 200 mm water cylinder with
  low-contrast rods of 3, 5, 7 and 10 mm at +14, +7, +5 and +3 HU (CCT189's pairs), here
  four times each on two rings; ``signal=False`` renders the same cylinder without the rods
  (the signal-absent scans of an observer study, read at the rods' positions);
- :func:`make_ctp404_phantom`, in the spirit of the CTP404 sensitometry module (Catphan):
  a 200 mm water cylinder with 12.2 mm inserts of nominal air, PMP, LDPE, polystyrene,
  acrylic, Delrin, Teflon and a 50% bone mimic, on a 58.5 mm radius ring; their edges give
  the TTF at each contrast and their means the CT-number accuracy.

Both are rendered with partial-volume edges (8x supersampling) and the same system PSF as
the anatomical phantoms, on the same field of view (``DEFAULT_FOV_MM``), row 0 anterior.
The values are nominal HU, not measured material properties.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from .generator import DEFAULT_FOV_MM, HU_RANGE, SYSTEM_PSF_PX, _check_args, _check_psf

__all__ = ["Insert", "QAPhantom", "LCD_RODS", "CTP404_INSERTS", "make_lcd_phantom", "make_ctp404_phantom"]

#: CCT189's four rods: (diameter mm, contrast HU).
LCD_RODS: tuple[tuple[float, float], ...] = ((3.0, 14.0), (5.0, 7.0), (7.0, 5.0), (10.0, 3.0))
#: CTP404-like inserts: name -> nominal HU.
CTP404_INSERTS: dict[str, float] = {"air": -1000.0, "PMP": -200.0, "LDPE": -100.0, "polystyrene": -35.0,
                                    "acrylic": 120.0, "Delrin": 340.0, "bone 50%": 700.0, "Teflon": 990.0}
_CYLINDER_MM = 200.0
_WATER_HU = 0.0


@dataclass
class Insert:
    """One insert: ``name``, ``centre`` ``(row, col)`` and ``radius`` in pixels, its HU
    (``value``) and its contrast against the water background (HU)."""

    name: str
    centre: tuple[float, float]
    radius: float
    value: float
    contrast: float


@dataclass
class QAPhantom:
    """``hu`` ``[H, W]`` and its inserts; ``background`` ``(row, col)`` centres (pixels) of
    signal-free ROIs at the same radius from the centre as the inserts (for the
    signal-absent class of an observer study), and ``pixel_spacing`` (mm)."""

    hu: np.ndarray
    inserts: list[Insert]
    pixel_spacing: float
    background: list[tuple[float, float]] = field(default_factory=list)

    def mask(self, insert: Insert, inset: float = 0.5) -> np.ndarray:
        """Pixels well inside ``insert`` (within ``inset`` of its radius), for its mean. The
        default half radius keeps clear of the edge blur (at 0.7 an FBP's blurred edge
        moved the mean of air and Teflon inserts by 30 HU at 1.5 mm pixels)."""
        yy, xx = np.mgrid[: self.hu.shape[0], : self.hu.shape[1]]
        return np.hypot(yy - insert.centre[0], xx - insert.centre[1]) <= inset * insert.radius


def _render(size: int, spacing: float, discs: list[tuple[float, float, float, float]], psf: float) -> np.ndarray:
    """Water cylinder plus discs ``(x_mm, y_mm, radius_mm, hu)`` with partial volume."""
    up = 8
    c = (np.arange(size * up) + 0.5) / up - 0.5 - (size - 1) / 2  # pixel units, sub-sampled
    yy, xx = np.meshgrid(c * spacing, c * spacing, indexing="ij")
    hi = np.full(yy.shape, HU_RANGE[0], np.float32)
    hi[np.hypot(yy, xx) <= _CYLINDER_MM / 2] = _WATER_HU
    for x, y, r, v in discs:
        hi[np.hypot(yy - y, xx - x) <= r] = v
    hu = hi.reshape(size, up, size, up).mean((1, 3))
    if psf > 0:
        hu = ndimage.gaussian_filter(hu.astype(np.float64), psf, mode="nearest")
    return np.clip(hu, *HU_RANGE).astype(np.float32)


def _to_pixels(size: int, spacing: float, x_mm: float, y_mm: float) -> tuple[float, float]:
    return (y_mm / spacing + (size - 1) / 2, x_mm / spacing + (size - 1) / 2)


def make_lcd_phantom(size: int = 256, *, pixel_spacing: float | None = None, rings_mm: tuple[float, ...] = (45.0, 80.0),
                     psf: float = SYSTEM_PSF_PX, rods=LCD_RODS, signal: bool = True) -> QAPhantom:
    """The low-contrast detectability phantom (MITA-LCD / CCT189 in spirit): each of ``rods``
    ``(diameter mm, contrast HU)`` placed twice, opposite each other, on each ring of
    ``rings_mm`` around the centre of a 200 mm water cylinder, and a signal-free background
    position half-way between neighbouring rods on the same rings (same distance from the
    centre, hence the same noise level in FBP).

    ``signal=False`` renders the cylinder without the rods but keeps ``inserts`` (where the
    rods would be): scans of it give an observer its signal-absent ROIs at the very positions
    of the signal-present ones, as a phantom scanned again with its rods removed does (Yu et
    al., Med. Phys. 2013; the FDA's LCD-CT toolbox). For a nonlinear reconstruction the
    background positions are not interchangeable with the rods' (docs/METHOD.md, "Signal-absent
    scans")."""
    spacing = _check_args(size, pixel_spacing, None)
    psf = _check_psf(psf)
    n = len(rods)
    discs, inserts, background = [], [], []
    for ring, radius in enumerate(rings_mm):
        turn = math.pi / (2 * n) * ring  # the second ring is turned so its rods are not in line
        for k, (d, c) in enumerate(rods):
            for copy in range(2):
                th = 2 * math.pi * (k + n * copy) / (2 * n) + turn
                x, y = radius * math.cos(th), radius * math.sin(th)
                if signal:
                    discs.append((x, y, d / 2, _WATER_HU + c))
                inserts.append(Insert(f"{d:g} mm, {c:+g} HU", _to_pixels(size, spacing, x, y), d / 2 / spacing,
                                      _WATER_HU + c, c))
        for k in range(2 * n):  # half-way between neighbouring rods
            th = 2 * math.pi * (k + 0.5) / (2 * n) + turn
            background.append(_to_pixels(size, spacing, radius * math.cos(th), radius * math.sin(th)))
    return QAPhantom(_render(size, spacing, discs, psf), inserts, spacing, background)


def make_ctp404_phantom(size: int = 256, *, pixel_spacing: float | None = None, ring_mm: float = 58.5,
                        diameter_mm: float = 12.2, psf: float = SYSTEM_PSF_PX) -> QAPhantom:
    """The CT-number / resolution phantom (CTP404 in spirit): :data:`CTP404_INSERTS` of
    ``diameter_mm`` on a ring of ``ring_mm`` in a 200 mm water cylinder."""
    spacing = _check_args(size, pixel_spacing, None)
    psf = _check_psf(psf)
    discs, inserts = [], []
    for k, (name, v) in enumerate(CTP404_INSERTS.items()):
        th = 2 * math.pi * k / len(CTP404_INSERTS) + math.pi / 8
        x, y = ring_mm * math.cos(th), ring_mm * math.sin(th)
        discs.append((x, y, diameter_mm / 2, v))
        inserts.append(Insert(name, _to_pixels(size, spacing, x, y), diameter_mm / 2 / spacing, v, v - _WATER_HU))
    return QAPhantom(_render(size, spacing, discs, psf), inserts, spacing)


def fov_fits(size: int, pixel_spacing: float | None = None) -> bool:
    """Whether the 200 mm cylinder fits in the field of view."""
    spacing = pixel_spacing or DEFAULT_FOV_MM / size
    return size * spacing > _CYLINDER_MM + 4 * spacing
