"""Public entry points: seeded CT-like phantoms and body masks."""

from __future__ import annotations

import math
from typing import Literal, overload

import numpy as np
from scipy import ndimage

from ..errors import InputError
from ..masks import body_mask
from ._anatomy import render
from ._raster import Canvas

__all__ = ["DEFAULT_FOV_MM", "HU_RANGE", "SYSTEM_PSF_PX", "make_phantom", "make_phantoms", "body_mask"]

#: Default field of view (mm): ``pixel_spacing = DEFAULT_FOV_MM / size``.
DEFAULT_FOV_MM: float = 384.0
#: Values are clipped to the 12-bit CT range.
HU_RANGE: tuple[float, float] = (-1024.0, 3071.0)
#: Default system point-spread function: Gaussian sigma in pixels (MTF 17% at Nyquist).
#: A CT image is never sharper than its scanner; a reference rendered sharper than any
#: reconstruction could be puts an error floor under every method (docs/PHANTOMS.md).
SYSTEM_PSF_PX: float = 0.6

Region = Literal["abdomen", "thorax"]


def _check_psf(psf: float) -> float:
    ok = isinstance(psf, (int, float, np.floating)) and not isinstance(psf, bool)
    if not (ok and math.isfinite(psf) and psf >= 0):
        raise InputError(f"psf must be a non-negative Gaussian sigma in pixels, got {psf!r}")
    return float(psf)


def _check_args(size: int, pixel_spacing: float | None, region: str | None) -> float:
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 8:
        raise InputError(f"phantom size must be an integer >= 8, got {size!r}")
    if region is not None and region not in ("abdomen", "thorax"):
        raise InputError(f"region must be 'abdomen', 'thorax' or None, got {region!r}")
    if pixel_spacing is None:
        return DEFAULT_FOV_MM / int(size)
    ok = isinstance(pixel_spacing, (int, float)) and not isinstance(pixel_spacing, bool)
    if not (ok and math.isfinite(pixel_spacing) and pixel_spacing > 0):
        raise InputError(f"pixel_spacing must be a positive number of mm, got {pixel_spacing!r}")
    return float(pixel_spacing)


def _generate(
    size: int,
    spacing: float,
    seq: np.random.SeedSequence,
    region: str | None,
    contrast: bool | None,
    table: bool | None,
    psf: float = SYSTEM_PSF_PX,
) -> tuple[np.ndarray, np.ndarray]:
    anatomy_seq, texture_seq = seq.spawn(2)
    rng = np.random.default_rng(anatomy_seq)
    # Draw every per-slice choice first so that fixing one keeps the others.
    r_region, r_contrast, r_table = rng.random(3)
    region = region or ("abdomen" if r_region < 0.6 else "thorax")
    contrast = bool(r_contrast < 0.5) if contrast is None else bool(contrast)
    table = bool(r_table < 0.8) if table is None else bool(table)
    canvas = Canvas(size, spacing)
    render(canvas, rng, texture_seq, region=region, contrast=contrast, table=table)
    hu = canvas.hu
    if psf > 0:
        hu = ndimage.gaussian_filter(hu.astype(np.float64), psf, mode="nearest")
    hu = np.clip(hu, *HU_RANGE).astype(np.float32, copy=False)
    return hu, canvas.label


@overload
def make_phantom(size: int, *, seed: int, pixel_spacing: float | None = ..., region: Region | None = ...,
                 contrast: bool | None = ..., table: bool | None = ..., psf: float = ...,
                 return_labels: Literal[False] = ...) -> np.ndarray: ...
@overload
def make_phantom(size: int, *, seed: int, pixel_spacing: float | None = ..., region: Region | None = ...,
                 contrast: bool | None = ..., table: bool | None = ..., psf: float = ...,
                 return_labels: Literal[True]) -> tuple[np.ndarray, np.ndarray]: ...
def make_phantom(
    size: int,
    *,
    seed: int,
    pixel_spacing: float | None = None,
    region: Region | None = None,
    contrast: bool | None = None,
    table: bool | None = None,
    psf: float = SYSTEM_PSF_PX,
    return_labels: bool = False,
):
    """One procedural axial CT slice of the upper abdomen or lower thorax, in HU.

    The anatomy is drawn in millimetres (patient size, organs, vessels, bone, lesions)
    and rendered with partial-volume edges and band-limited tissue texture, so the same
    seed gives the same patient at any ``size``.

    Parameters
    ----------
    size : int
        Image side in pixels (>= 8).
    seed : int
        Seed of everything random; same seed, same slice.
    pixel_spacing : float, optional
        Pixel size in mm; default ``384 / size`` (a 384 mm field of view).
    region : {'abdomen', 'thorax'}, optional
        Anatomical level; drawn at random (60% abdomen) when None.
    contrast : bool, optional
        Portal-venous contrast enhancement; drawn at random (50%) when None.
    table : bool, optional
        Draw the patient table; drawn at random (80%) when None.
    psf : float
        Gaussian sigma, in pixels, of the scanner's point-spread function applied to
        the rendered slice (default :data:`SYSTEM_PSF_PX`); 0 gives the ideal,
        pixel-sharp rendering.
    return_labels : bool
        Also return the tissue label map (values of :class:`Tissue`).

    Returns
    -------
    hu : ndarray, float32 [size, size]
        HU, clipped to [-1024, 3071]; row 0 is anterior, column 0 the patient's right.
    labels : ndarray, uint8 [size, size]
        Only with ``return_labels``: the tissue covering most of each pixel.

    Examples
    --------
    >>> hu = make_phantom(64, seed=0)
    >>> hu.shape, hu.dtype
    ((64, 64), dtype('float32'))
    """
    spacing = _check_args(size, pixel_spacing, region)
    psf = _check_psf(psf)
    hu, labels = _generate(int(size), spacing, np.random.SeedSequence(seed), region, contrast, table, psf)
    return (hu, labels) if return_labels else hu


def make_phantoms(
    n: int,
    size: int,
    *,
    seed: int,
    pixel_spacing: float | None = None,
    region: Region | None = None,
    contrast: bool | None = None,
    table: bool | None = None,
    psf: float = SYSTEM_PSF_PX,
    return_labels: bool = False,
):
    """A stack of ``n`` independent phantoms, float32 ``[n, size, size]`` HU.

    Slice ``i`` is seeded by ``SeedSequence(seed).spawn(...)[i]`` (spawn key ``(i,)``),
    so it does not depend on ``n``: ``make_phantoms(8, ...)[:4]`` equals
    ``make_phantoms(4, ...)``. Other arguments as in :func:`make_phantom`; with
    ``return_labels`` a uint8 ``[n, size, size]`` label stack is returned too.

    Examples
    --------
    >>> make_phantoms(2, 32, seed=1).shape
    (2, 32, 32)
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise InputError(f"number of phantoms must be a positive integer, got {n!r}")
    spacing = _check_args(size, pixel_spacing, region)
    psf = _check_psf(psf)
    hu = np.empty((int(n), int(size), int(size)), np.float32)
    labels = np.empty(hu.shape, np.uint8)
    for i in range(int(n)):
        seq = np.random.SeedSequence(seed, spawn_key=(i,))
        hu[i], labels[i] = _generate(int(size), spacing, seq, region, contrast, table, psf)
    return (hu, labels) if return_labels else hu
