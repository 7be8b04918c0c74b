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

__all__ = ["DEFAULT_FOV_MM", "DEFAULT_SLICE_SPACING_MM", "HU_RANGE", "SYSTEM_PSF_PX", "make_phantom", "make_phantoms",
           "make_volume", "body_mask"]

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


def _check_count(n, what: str) -> None:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise InputError(f"number of {what} must be a positive integer, got {n!r}")


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
    _check_count(n, "phantoms")
    spacing = _check_args(size, pixel_spacing, region)
    psf = _check_psf(psf)
    hu = np.empty((int(n), int(size), int(size)), np.float32)
    labels = np.empty(hu.shape, np.uint8)
    for i in range(int(n)):
        seq = np.random.SeedSequence(seed, spawn_key=(i,))
        hu[i], labels[i] = _generate(int(size), spacing, seq, region, contrast, table, psf)
    return (hu, labels) if return_labels else hu


#: Default distance between the slices of :func:`make_volume` (mm).
DEFAULT_SLICE_SPACING_MM: float = 2.5


def make_volume(
    n: int,
    size: int,
    *,
    seed: int,
    slice_spacing: float = DEFAULT_SLICE_SPACING_MM,
    pixel_spacing: float | None = None,
    region: Region | None = None,
    contrast: bool | None = None,
    table: bool | None = None,
    psf: float = SYSTEM_PSF_PX,
    return_labels: bool = False,
):
    """``n`` consecutive axial slices of one patient, ``slice_spacing`` mm apart: a volume
    whose neighbouring slices are anatomically continuous, as in a real scan.

    One slice is drawn as :func:`make_phantom` draws it (the anatomy of ``seed``), and the
    others are that anatomy carried smoothly through z: a smooth random displacement field
    (a few sine modes in x, y and z, wavelengths 80-250 mm in-plane and 60-200 mm through
    the plane, amplitudes 1.5-4 mm) plus a slow change of the body's width and depth
    (+-4%), confined to the body so the table and the air stay put; and a band-limited
    texture field correlated over about 1 mm in-plane and one slice through the plane
    (8 HU std in soft tissue), so the fine texture changes from slice to slice as real
    tissue does. What the generator cannot give (documented in docs/PHANTOMS.md): organs
    that begin or end within the volume, and lesions, which run through it as tubes.

    Returns float32 HU ``[n, size, size]`` (with ``return_labels`` also uint8 labels);
    slice 0 is the most cranial. Its reformats (``vol[:, row, :]`` coronal,
    ``vol[:, :, col]`` sagittal) have ``slice_spacing`` mm between rows.

    Examples
    --------
    >>> make_volume(4, 32, seed=1).shape
    (4, 32, 32)
    """
    from ..masks import body_mask as _body_mask

    _check_count(n, "slices")
    ok = isinstance(slice_spacing, (int, float)) and not isinstance(slice_spacing, bool)
    if not (ok and math.isfinite(slice_spacing) and slice_spacing > 0):
        raise InputError(f"slice_spacing must be a positive number of mm, got {slice_spacing!r}")
    spacing = _check_args(size, pixel_spacing, region)
    psf = _check_psf(psf)
    size, n = int(size), int(n)
    base, labels = _generate(size, spacing, np.random.SeedSequence(seed), region, contrast, table, psf=0.0)
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(0x766F6C,)))
    c = (np.arange(size) - (size - 1) / 2) * spacing  # mm, row 0 anterior
    yy, xx = np.meshgrid(c, c, indexing="ij")
    z = (np.arange(n) - (n - 1) / 2) * float(slice_spacing)
    body = _body_mask(base).astype(np.float64)
    # Displacements fade out over ~10 mm at the skin, so the outline moves about half as much.
    weight = ndimage.gaussian_filter(body, 10.0 / spacing)
    by, bx = (np.average(a, weights=body) if body.any() else 0.0 for a in (yy, xx))
    modes = []
    for _ in range(6):
        wl, wz = rng.uniform(80, 250), rng.uniform(60, 200)
        th = rng.uniform(0, 2 * np.pi)
        k = 2 * np.pi / wl * np.array([np.sin(th), np.cos(th)])
        direction = rng.normal(size=2)
        modes.append((k, 2 * np.pi / wz, rng.uniform(1.5, 4.0) * direction / np.linalg.norm(direction),
                      rng.uniform(0, 2 * np.pi)))
    scale_par = [(rng.uniform(0.02, 0.04), 2 * np.pi / rng.uniform(150, 300), rng.uniform(0, 2 * np.pi))
                 for _ in range(2)]
    # Texture: white noise filtered in 3D (z sigma one slice), scaled to 8 HU std.
    tex = ndimage.gaussian_filter(rng.standard_normal((n, size, size)), (1.0, 1.0 / spacing, 1.0 / spacing))
    tex *= 8.0 / max(float(tex.std()), 1e-12)
    soft = (base > -200) & (base < 300)
    hu = np.empty((n, size, size), np.float32)
    lab = np.empty((n, size, size), np.uint8)
    for i, zi in enumerate(z):
        dy = np.zeros_like(yy)
        dx = np.zeros_like(xx)
        for k, kz, amp, ph in modes:
            # The field at the middle slice is subtracted, so that slice is the phantom of `seed`.
            s = np.sin(k[0] * xx + k[1] * yy + kz * zi + ph) - np.sin(k[0] * xx + k[1] * yy + ph)
            dy += amp[0] * s
            dx += amp[1] * s
        (ay, ky, py), (ax, kx, px) = scale_par
        dy += ay * (np.sin(ky * zi + py) - np.sin(py)) * (yy - by)
        dx += ax * (np.sin(kx * zi + px) - np.sin(px)) * (xx - bx)
        rows = (yy + dy * weight) / spacing + (size - 1) / 2
        cols = (xx + dx * weight) / spacing + (size - 1) / 2
        sl = ndimage.map_coordinates(base, [rows, cols], order=1, mode="nearest")
        m = ndimage.map_coordinates(soft.astype(np.float32), [rows, cols], order=1, mode="nearest")
        sl = sl + tex[i] * m
        if psf > 0:
            sl = ndimage.gaussian_filter(sl, psf, mode="nearest")
        hu[i] = np.clip(sl, *HU_RANGE)
        lab[i] = ndimage.map_coordinates(labels, [rows, cols], order=0, mode="nearest")
    return (hu, lab) if return_labels else hu
