"""Image volumes in HU: one reader and one writer for every supported format.

Formats
-------
* DICOM: a file (single slice, multi-frame or Enhanced CT) or a series folder; see
  :mod:`turndiff.io.dicom`. Writing gives a folder of CT Image Storage files.
* NIfTI (``.nii``, ``.nii.gz``): data ``[X, Y, Z]`` in RAS+ world space. Reading
  reorients to the closest canonical (RAS+) axes, then slices along Z become ``N``
  (inferior to superior), anterior is row 0 and the patient's right is column 0, i.e. the
  upright radiological display of an axial DICOM image:
  ``hu[n, r, c] = canonical[X - 1 - c, Y - 1 - r, n]``, and the affine becomes the
  volume's ``placement``. Writing takes ``hu.transpose(2, 1, 0)`` (``[columns, rows,
  slices]``) with the affine of the DICOM geometry (LPS turned into RAS), as DICOM-to-NIfTI
  converters do, and stores it in RAS+ voxel order (``nibabel.as_closest_canonical``): the
  same voxel-to-world map, the very affine of a RAS+ source, so write -> read round-trips
  and the file overlays the source scan in NIfTI viewers.
* ``.npy``: ``[H, W]`` or ``[N, H, W]`` HU, no spacing.
* ``.h5``: the ``image_hu`` dataset (plus ``pixel_spacing`` attribute where written).
* PNG (write only): a folder of 8-bit greyscale images, one per slice, windowed.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from turndiff.windows import WINDOWS
from turndiff._checks import PLAUSIBLE_HU
from turndiff.errors import InputError
from turndiff.io import dicom as _dicom
from turndiff.io.atomic import atomic_output, check_output
from turndiff.io.hdf5 import read_h5, write_h5

__all__ = ["Volume", "WINDOWS", "placement_of", "read_volume", "write_volume", "window_to_uint8"]


Format = Literal["h5", "npy", "nifti", "dicom", "png"]
_FORMATS = ("h5", "npy", "nifti", "dicom", "png")


@dataclass(eq=False, repr=False)
class Volume:
    """A stack of CT slices in HU and where it came from.

    Attributes
    ----------
    hu : numpy.ndarray
        float32 ``[N, H, W]``, Hounsfield units, finite.
    spacing : (float, float) or None
        Pixel spacing ``(row_mm, col_mm)`` where known.
    slice_positions : numpy.ndarray or None
        float64 ``[N]``, position of each slice along the slice normal (mm), in
        ascending order for DICOM series, where known.
    source : str
        What the volume was read from.
    dicom_template : pydicom.Dataset or None
        Header (no pixel data) of the first slice of a source DICOM series, used to
        write a derived series that lines up with it.
    placement : dict or None
        Where the slices sit in patient space, as :func:`placement_of` returns it, when the
        reader knows it directly (a NIfTI affine); DICOM series carry it in
        ``dicom_template`` instead.
    """

    hu: np.ndarray
    spacing: tuple[float, float] | None = None
    slice_positions: np.ndarray | None = None
    source: str = ""
    dicom_template: Any = None
    placement: dict | None = None

    def __post_init__(self) -> None:
        self.hu = _check_hu(self.hu, self.source or "volume")
        if self.spacing is not None:
            self.spacing = (float(self.spacing[0]), float(self.spacing[1]))
        if self.slice_positions is not None:
            self.slice_positions = np.asarray(self.slice_positions, dtype=np.float64)
            if self.slice_positions.shape != (self.hu.shape[0],):
                raise ValueError(
                    f"slice_positions has shape {self.slice_positions.shape}, "
                    f"expected ({self.hu.shape[0]},)"
                )

    def __repr__(self) -> str:
        tmpl = "yes" if self.dicom_template is not None else "no"
        return (
            f"Volume(hu={tuple(self.hu.shape)}, spacing={self.spacing}, "
            f"source={self.source!r}, dicom_template={tmpl})"
        )


def _check_hu(arr: Any, where: str) -> np.ndarray:
    """``[H, W]`` or ``[N, H, W]`` finite numbers -> float32 ``[N, H, W]``."""
    arr = np.asarray(arr)
    if arr.dtype.kind not in "iufb":
        raise InputError(f"{where}: image data is not numeric (dtype {arr.dtype})")
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3:
        raise InputError(
            f"{where}: image must be [H, W] or [N, H, W], got shape {tuple(arr.shape)}"
        )
    if 0 in arr.shape:
        raise InputError(f"{where}: image is empty, shape {tuple(arr.shape)}")
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    if not np.isfinite(arr).all():
        bad = int(arr.size - np.count_nonzero(np.isfinite(arr)))
        raise InputError(f"{where}: image has {bad} NaN/inf value(s)")
    lo, hi = PLAUSIBLE_HU
    if arr.min() < lo or arr.max() > hi:
        raise InputError(f"{where}: values from {arr.min():.3g} to {arr.max():.3g} are not HU "
                         f"(a CT image lies within [{lo:g}, {hi:g}])")
    return arr


# ---------------------------------------------------------------------------------------
# reading
# ---------------------------------------------------------------------------------------
def _suffix(path: Path) -> str:
    name = path.name.lower()
    if name.endswith(".nii.gz"):
        return ".nii.gz"
    return path.suffix.lower()


def read_volume(path: str | os.PathLike[str]) -> Volume:
    """Read a CT volume in HU from DICOM, NIfTI, ``.npy`` or turndiff ``.h5``.

    Parameters
    ----------
    path : path-like
        A DICOM file (any extension), a DICOM series folder (searched recursively,
        non-DICOM files such as DICOMDIR or readme skipped; exactly one CT series
        allowed), ``.nii``/``.nii.gz``, ``.npy`` (``[H, W]`` or ``[N, H, W]`` HU) or
        ``.h5`` (dataset ``image_hu``). DICOM must have Modality CT; a missing
        Modality is accepted (anonymisers sometimes drop it). Stored values become HU
        through RescaleSlope/Intercept (per frame for Enhanced CT).

    Returns
    -------
    Volume
        ``hu`` float32 ``[N, H, W]``; see the module docstring for axis conventions.

    Raises
    ------
    InputError
        Missing path, unknown extension, corrupt or truncated file, folder without
        images, non-CT Modality, wrong rank, NaN/inf values.

    Examples
    --------
    >>> import numpy as np, tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "ct.npy"
    >>> np.save(p, np.zeros((2, 8, 8), np.float32))
    >>> read_volume(p).hu.shape
    (2, 8, 8)
    """
    path = Path(path)
    where = str(path)
    if not path.exists():
        raise InputError(f"{where}: no such file or folder")
    if path.is_dir():
        s = _dicom.read_dicom_folder(path)
        return Volume(s.hu, s.spacing, s.slice_positions, where, s.template)
    ext = _suffix(path)
    if ext == ".npy":
        return Volume(_read_npy(path), None, None, where)
    if ext in (".nii", ".nii.gz"):
        return _read_nifti(path)
    if ext in (".h5", ".hdf5"):
        data = read_h5(path, keys=["image_hu"])
        ps = data.attrs.get("pixel_spacing")
        spacing = (float(ps[0]), float(ps[1])) if isinstance(ps, list) and len(ps) == 2 else None
        return Volume(data["image_hu"], spacing, None, where)
    if ext in ("", ".dcm", ".dicom", ".ima") or _dicom.is_dicom_path(path):
        s = _dicom.read_dicom_file(path)
        return Volume(s.hu, s.spacing, s.slice_positions, where, s.template)
    raise InputError(
        f"{where}: unknown file type '{path.suffix}' "
        "(expected DICOM, .nii, .nii.gz, .npy or .h5)"
    )


def _read_npy(path: Path) -> np.ndarray:
    try:
        arr = np.load(path, allow_pickle=False)
    except ValueError as e:
        if "pickle" in str(e):  # NumPy's hint to load it unsafely is not advice we give
            raise InputError(f"{path}: not a NumPy array file (a text file, or pickled Python objects, "
                             "which turndiff never loads)") from None
        raise InputError(f"{path}: cannot read .npy ({_short(e)})") from None
    except (OSError, EOFError) as e:
        raise InputError(f"{path}: corrupt .npy file ({_short(e)})") from None
    if not isinstance(arr, np.ndarray):
        raise InputError(f"{path}: expected one array, got {type(arr).__name__}")
    return _check_hu(arr, str(path))


def _short(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return lines[0] if lines else type(e).__name__


def _read_nifti(path: Path) -> Volume:
    import nibabel as nib

    where = str(path)
    try:
        img = nib.load(path)
        if len(img.shape) == 2:
            img = nib.Nifti1Image(np.asanyarray(img.dataobj)[..., None], img.affine, img.header)
        # Extra dimensions of length 1 (e.g. [X, Y, Z, 1]) are a single volume.
        while len(img.shape) > 3 and img.shape[-1] == 1:
            img = img.slicer[..., 0]
        if len(img.shape) != 3:
            raise InputError(f"{where}: NIfTI must be 2-D or 3-D, got shape {tuple(img.shape)}")
        img = nib.as_closest_canonical(img)
        data = img.get_fdata(dtype=np.float32)
    except InputError:
        raise
    except Exception as e:  # nibabel raises many types for corrupt/truncated files
        raise InputError(f"{where}: cannot read NIfTI ({_short(e)})") from None
    hu = _check_hu(data.transpose(2, 1, 0)[:, ::-1, ::-1], where)
    zooms = img.header.get_zooms()[:3]
    # NIfTI stores float32: round off the float32 noise (0.699999988 -> 0.7).
    spacing = (round(float(zooms[1]), 6), round(float(zooms[0]), 6))
    place = _nifti_placement(img.affine, data.shape)
    return Volume(hu, spacing, np.asarray(place["positions"]), where, placement=place)


#: DICOM's LPS and NIfTI's RAS differ in the sign of x and y.
_LPS_RAS = np.diag([-1.0, -1.0, 1.0])


def _nifti_placement(affine: np.ndarray, shape: tuple[int, ...]) -> dict[str, Any]:
    """The :func:`placement_of` dict of a RAS+ (canonical) NIfTI image of ``shape``
    ``[X, Y, Z]`` read as ``hu[k, row, col] = data[X-1-col, Y-1-row, k]``."""
    a = np.asarray(affine, np.float64)
    nx, ny, nz = (int(v) for v in shape[:3])

    def lps(i: float, j: float, k: float) -> np.ndarray:
        return _LPS_RAS @ (a @ np.array([i, j, k, 1.0]))[:3]

    row_dir = _LPS_RAS @ -a[:3, 0]  # columns run against the image's i axis
    col_dir = _LPS_RAS @ -a[:3, 1]
    row_dir, col_dir = row_dir / np.linalg.norm(row_dir), col_dir / np.linalg.norm(col_dir)
    normal = np.cross(row_dir, col_dir)
    positions = [float(lps(nx - 1, ny - 1, k) @ normal) for k in range(nz)]
    return {"row_dir": row_dir.tolist(), "col_dir": col_dir.tolist(),
            "centre": lps((nx - 1) / 2, (ny - 1) / 2, 0).tolist(), "positions": positions,
            "thickness": float(np.linalg.norm(a[:3, 2]))}


# ---------------------------------------------------------------------------------------
# writing
# ---------------------------------------------------------------------------------------
def _resolve_window(window: str | Sequence[float]) -> tuple[float, float]:
    if isinstance(window, str):
        if window not in WINDOWS:
            names = ", ".join(sorted(WINDOWS))
            raise InputError(f"unknown window {window!r} (expected one of {names}, or (lo, hi))")
        return WINDOWS[window]
    try:
        lo, hi = (float(v) for v in window)
    except (TypeError, ValueError):
        raise InputError(f"window must be a name or (lo, hi) in HU, got {window!r}") from None
    if not (np.isfinite(lo) and np.isfinite(hi) and hi > lo):
        raise InputError(f"window must have lo < hi, got ({lo}, {hi})")
    return lo, hi


def window_to_uint8(hu: np.ndarray, window: str | Sequence[float] = "abdomen") -> np.ndarray:
    """Clip ``hu`` to a display window and scale it to 0..255 (uint8, same shape).

    ``window`` is a name from :data:`WINDOWS` (``"abdomen"`` [-100, 200] HU,
    ``"lung"`` [-1350, 200] HU, ...) or ``(lo, hi)`` in HU.
    """
    lo, hi = _resolve_window(window)
    scaled = (np.asarray(hu, dtype=np.float64) - lo) / (hi - lo)
    return np.rint(np.clip(scaled, 0.0, 1.0) * 255.0).astype(np.uint8)


def _infer_format(path: Path, format: str | None) -> str:
    if format is not None:
        f = format.lower()
        f = {"nii": "nifti", "nii.gz": "nifti", "hdf5": "h5", "dcm": "dicom"}.get(f, f)
        if f not in _FORMATS:
            raise InputError(f"unknown output format {format!r} (expected one of {list(_FORMATS)})")
        return f
    ext = _suffix(path)
    by_ext = {".h5": "h5", ".hdf5": "h5", ".npy": "npy", ".nii": "nifti", ".nii.gz": "nifti"}
    if ext in by_ext:
        return by_ext[ext]
    raise InputError(
        f"{path}: cannot tell the output format from the name; use .h5, .npy, .nii, "
        ".nii.gz, or format='dicom' / 'png' for a folder"
    )


@dataclass
class _Placement:
    """Where the slices sit in patient space (DICOM LPS, mm)."""

    row_dir: np.ndarray
    col_dir: np.ndarray
    origins: np.ndarray  # [N, 3] ImagePositionPatient of each slice
    spacing: tuple[float, float]
    thickness: float | None


def _placement(
    shape: tuple[int, int, int],
    template: Any,
    spacing: Sequence[float] | None,
    slice_thickness: float | None,
    placement: Mapping[str, Any] | None = None,
) -> _Placement:
    """Geometry of the output: explicit values, then ``placement`` (a source's geometry
    carried by :func:`placement_of`), then the template, then defaults.

    A template whose image size differs from ``hu`` (e.g. a reconstruction on a
    resampled grid) is assumed to cover the same field of view with the same centre.
    """
    n, h, w = shape
    ds = template.dicom_template if isinstance(template, Volume) else template
    positions = None
    t_spacing: tuple[float, float] | None = None
    t_shape: tuple[int, int] | None = None
    row_dir, col_dir = np.array([1.0, 0.0, 0.0]), np.array([0.0, 1.0, 0.0])
    centre = np.zeros(3)
    t_thick: float | None = None
    if placement is not None:
        row_dir, col_dir, centre, positions, t_thick = _read_placement(placement, n)
        ds, template = None, None  # the carried geometry wins; a template still gives the tags
    if isinstance(template, Volume):
        t_spacing, t_shape = template.spacing, template.hu.shape[1:]
        if template.slice_positions is not None and len(template.slice_positions) == n:
            positions = template.slice_positions
    if ds is not None:
        g = _dicom.frame_geometry(ds, 0)
        t_spacing = t_spacing or g.spacing
        t_shape = t_shape or (int(ds.Rows), int(ds.Columns))
        t_thick = g.thickness
        if g.orientation is not None and g.normal is not None:
            row_dir, col_dir = g.orientation[:3], g.orientation[3:]
        if g.position is not None:
            sr, sc = t_spacing or (1.0, 1.0)
            th, tw = t_shape
            centre = g.position + (tw - 1) / 2 * sc * row_dir + (th - 1) / 2 * sr * col_dir
        if t_thick is None:
            sbs = ds.get("SpacingBetweenSlices")
            t_thick = float(sbs) if sbs not in (None, "") else None

    if spacing is not None:
        sp = tuple(float(v) for v in spacing)
        if len(sp) != 2 or not all(np.isfinite(v) and v > 0 for v in sp):
            raise InputError(f"spacing must be (row_mm, col_mm) > 0, got {spacing!r}")
        out_spacing: tuple[float, float] = (sp[0], sp[1])
    elif t_spacing is not None and t_shape is not None:
        # Same field of view on a different grid.
        out_spacing = (t_spacing[0] * t_shape[0] / h, t_spacing[1] * t_shape[1] / w)
    else:
        out_spacing = (1.0, 1.0)

    normal = np.cross(row_dir, col_dir)
    dz = slice_thickness or t_thick or 1.0
    if positions is None:
        start = float(np.dot(centre, normal))
        positions = start + dz * np.arange(n)
    sr, sc = out_spacing
    in_plane = centre - np.dot(centre, normal) * normal
    corner = in_plane - (w - 1) / 2 * sc * row_dir - (h - 1) / 2 * sr * col_dir
    origins = corner[None, :] + np.asarray(positions, dtype=np.float64)[:, None] * normal[None, :]
    thickness = slice_thickness or t_thick
    if thickness is None and n > 1:
        thickness = float(np.median(np.abs(np.diff(positions))))
    return _Placement(row_dir, col_dir, origins, out_spacing, thickness)


def placement_of(volume: Volume) -> dict[str, Any] | None:
    """Where ``volume``'s slices sit in patient space, as plain JSON-able values, for an
    output derived from it on another grid (``simulate`` stores it in the ``.h5`` file as
    the ``placement`` attribute; ``fbp`` and ``reconstruct`` write their DICOM and NIfTI
    with it): ``row_dir``, ``col_dir`` (unit vectors, DICOM LPS), ``centre`` (mm, the
    centre of the field of view in the first slice), ``positions`` (mm along the slice
    normal, one per slice) and ``thickness`` (mm or None). None when the volume does not
    say where its slices are (a ``.npy`` file)."""
    if volume.placement is not None:
        _read_placement(volume.placement, volume.hu.shape[0])  # validated
        return dict(volume.placement)
    if volume.slice_positions is None:
        return None
    n, h, w = volume.hu.shape
    place = _placement(volume.hu.shape, volume, None, None)
    sr, sc = place.spacing
    centre = place.origins[0] + (w - 1) / 2 * sc * place.row_dir + (h - 1) / 2 * sr * place.col_dir
    normal = np.cross(place.row_dir, place.col_dir)
    return {"row_dir": place.row_dir.tolist(), "col_dir": place.col_dir.tolist(), "centre": centre.tolist(),
            "positions": (place.origins @ normal).tolist(), "thickness": place.thickness}


def _read_placement(placement: Mapping[str, Any], n: int):
    """Validate a :func:`placement_of` dict -> (row_dir, col_dir, centre, positions, thickness)."""
    try:
        row_dir = np.asarray(placement["row_dir"], np.float64)
        col_dir = np.asarray(placement["col_dir"], np.float64)
        centre = np.asarray(placement["centre"], np.float64)
        positions = np.asarray(placement["positions"], np.float64)
        thickness = placement.get("thickness")
        thickness = None if thickness is None else float(thickness)
    except (KeyError, TypeError, ValueError) as e:
        raise InputError(f"bad slice placement ({e})") from None
    ok = (row_dir.shape == col_dir.shape == centre.shape == (3,) and positions.ndim == 1
          and np.isfinite(np.concatenate([row_dir, col_dir, centre, positions])).all())
    if not ok:
        raise InputError("bad slice placement (expected 3-vectors and one position per slice)")
    if positions.shape[0] != n:
        raise InputError(f"the slice placement is for {positions.shape[0]} slices, the image has {n}")
    return row_dir, col_dir, centre, positions, thickness


def write_volume(
    path: str | os.PathLike[str],
    hu: Any,
    *,
    format: Format | str | None = None,
    template: Any = None,
    anonymize: bool = False,
    window: str | Sequence[float] = "abdomen",
    series_description: str = "turndiff reconstruction",
    spacing: Sequence[float] | None = None,
    slice_thickness: float | None = None,
    placement: Mapping[str, Any] | None = None,
) -> Path:
    """Write a HU volume; the format follows the extension unless ``format`` is given.

    Parameters
    ----------
    path : path-like
        ``.h5`` (dataset ``image_hu``), ``.npy``, ``.nii``/``.nii.gz``, or a folder for
        ``format="dicom"`` / ``format="png"``. Written atomically; an existing file is
        replaced, an existing folder only when empty or holding nothing but the files
        a previous write of the same format makes.
    hu : array_like
        ``[H, W]`` or ``[N, H, W]`` HU.
    format : {"h5", "npy", "nifti", "dicom", "png"}, optional
        Overrides the extension.
    template : Volume or pydicom.Dataset, optional
        Source scan to line up with (DICOM and NIfTI): patient/study tags, orientation,
        slice positions (when a Volume has as many slices), pixel spacing (scaled when
        the image size differs: same field of view assumed).
    anonymize : bool
        DICOM: do not copy patient/study identifiers; new study UIDs.
    window : str or (lo, hi)
        Display window: PNG scaling and the DICOM WindowCenter/Width. Names:
        ``"abdomen"`` [-100, 200] HU, ``"lung"`` [-1350, 200] HU, ``"soft"``, ``"full"``.
    series_description : str
        DICOM SeriesDescription (also the ``source`` attribute of ``.h5`` output).
    spacing : (row_mm, col_mm), optional
        Pixel spacing; default from the template, else 1 mm.
    slice_thickness : float, optional
        Distance between slices (mm) where the template does not give positions;
        default the template's, else 1 mm.
    placement : dict, optional
        Where the slices sit (:func:`placement_of` of the source volume): DICOM
        positions and orientation, and the NIfTI affine, follow it; the field of view's
        centre is kept and ``spacing`` gives the grid. A template then only gives the
        patient and study tags.

    Returns
    -------
    pathlib.Path
        ``path``.

    Notes
    -----
    DICOM output is int16 with RescaleSlope 1 and RescaleIntercept -1024, so values are
    rounded to whole HU and clipped to [-33792, 31743]; ImageType DERIVED\\SECONDARY,
    new SeriesInstanceUID and SOPInstanceUIDs.

    Examples
    --------
    >>> import numpy as np, tempfile, pathlib
    >>> out = pathlib.Path(tempfile.mkdtemp()) / "recon.nii.gz"
    >>> _ = write_volume(out, np.zeros((2, 8, 8)), spacing=(0.5, 0.5))
    >>> read_volume(out).spacing
    (0.5, 0.5)
    """
    path = Path(path)
    fmt = _infer_format(path, format)
    if fmt in ("dicom", "png", "nifti") and not isinstance(hu, np.ndarray) and getattr(hu, "ndim", 0) == 3:
        hu = _CheckedSlices(hu, f"image for {path}")  # a lazy stack (HDF5): read and checked slice by slice
    else:
        hu = _check_hu(hu, f"image for {path}")
    lohi = _resolve_window(window)

    if fmt == "h5":
        extra = {"pixel_spacing": [float(v) for v in spacing]} if spacing is not None else None
        return write_h5(path, {"image_hu": hu}, source=series_description, extra_attrs=extra)
    if fmt == "npy":
        with atomic_output(path) as tmp, open(tmp, "wb") as fh:
            np.save(fh, hu)  # a file object: np.save would append ".npy" to "x.NPY"
        return path
    if fmt == "png":
        from skimage.io import imsave

        width = max(4, len(str(hu.shape[0])))
        with atomic_output(path, directory=True, replaceable=lambda p: _replaceable(p, ".png")) as tmp:
            for k in range(hu.shape[0]):
                imsave(tmp / f"slice_{k + 1:0{width}d}.png", window_to_uint8(hu[k], lohi), check_contrast=False)
        return path

    place = _placement(hu.shape, template, spacing, slice_thickness, placement)
    if fmt == "nifti":
        _write_nifti(path, hu, place)
        return path
    ds = template.dicom_template if isinstance(template, Volume) else template
    with atomic_output(path, directory=True, replaceable=lambda p: _replaceable(p, ".dcm")) as tmp:
        _dicom.write_dicom_series(
            tmp,
            hu,
            template=ds,
            row_dir=place.row_dir,
            col_dir=place.col_dir,
            origins=place.origins,
            spacing=place.spacing,
            thickness=place.thickness,
            window=lohi,
            anonymize=anonymize,
            series_description=series_description,
        )
    return path


def check_volume_output(path: str | os.PathLike[str], format: Format | str | None = None) -> None:
    """Raise :class:`InputError` now if :func:`write_volume` would refuse ``path`` (a file
    where a folder belongs, a folder of other files for DICOM or PNG), so that a command
    fails before its work, not after it."""
    path = Path(path)
    fmt = _infer_format(path, format)
    if fmt in ("dicom", "png"):
        ext = ".dcm" if fmt == "dicom" else ".png"
        check_output(path, directory=True, replaceable=lambda p: _replaceable(p, ext))
    else:
        check_output(path)


class _CheckedSlices:
    """A lazy ``[N, H, W]`` stack (an ``h5py.Dataset``) whose slices are read, and checked
    as :func:`_check_hu` checks a whole stack, one at a time: a study written to DICOM or
    PNG is never held in memory at once."""

    def __init__(self, stack: Any, where: str) -> None:
        if 0 in tuple(stack.shape):
            raise InputError(f"{where}: image is empty, shape {tuple(stack.shape)}")
        self._stack, self._where = stack, where
        self.shape: tuple[int, int, int] = tuple(int(v) for v in stack.shape)

    def __getitem__(self, k: int) -> np.ndarray:
        return _check_hu(np.asarray(self._stack[k]), self._where)[0]


def _replaceable(folder: Path, ext: str) -> bool:
    """A folder holding only ``*ext`` files is an earlier output of ours: replace it."""
    if not folder.is_dir():
        return False
    entries = list(folder.iterdir())
    return bool(entries) and all(p.is_file() and p.suffix.lower() == ext for p in entries)


def _write_nifti(path: Path, hu: Any, place: _Placement) -> None:
    """Write ``hu`` ``[N, H, W]`` (an array, or a lazy stack read slice by slice) as NIfTI in
    RAS+ voxel order, one slice at a time, so a study of any length is never whole in
    memory. That holds for axial stacks, whose slice axis is RAS+'s third; a coronal or
    sagittal stack, whose slices run along another RAS+ axis, is gathered first."""
    import gzip

    import nibabel as nib

    n, h, w = hu.shape
    sr, sc = place.spacing
    normal = np.cross(place.row_dir, place.col_dir)
    if n > 1:
        step = (place.origins[-1] - place.origins[0]) / (n - 1)
    else:
        step = normal * (place.thickness or 1.0)
    lps = np.eye(4)
    lps[:3, 0] = place.row_dir * sc
    lps[:3, 1] = place.col_dir * sr
    lps[:3, 2] = step
    lps[:3, 3] = place.origins[0]
    affine = np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps  # DICOM LPS -> NIfTI RAS; data[x, y, z] = hu[z, y, x]
    # Stored in RAS+ voxel order (nibabel's canonical form, the one the reader returns), so
    # an image read from a RAS+ NIfTI is written back with the very same affine.
    ornt = nib.orientations.io_orientation(affine)
    if int(ornt[2, 0]) != 2:  # the slice axis would move: reorder in memory
        data = nib.orientations.apply_orientation(np.stack([np.asarray(hu[k]).T for k in range(n)], -1), ornt)
        slices = (data[..., k] for k in range(data.shape[2]))
    else:
        order = range(n - 1, -1, -1) if ornt[2, 1] < 0 else range(n)
        slices = (nib.orientations.apply_orientation(np.asarray(hu[k], np.float32).T, ornt[:2]) for k in order)
    shape = nib.orientations.apply_orientation(np.zeros((w, h, n), np.int8), ornt).shape
    canonical = affine @ nib.orientations.inv_ornt_aff(ornt, (w, h, n))
    header = nib.Nifti1Header()
    header.set_data_shape(shape)
    header.set_data_dtype(np.float32)
    header.set_xyzt_units("mm", "sec")
    header.set_qform(canonical, code=1)
    header.set_sform(canonical, code=1)
    header["vox_offset"] = 352
    gz = path.name.lower().endswith(".gz")
    with atomic_output(path) as tmp, (gzip.open(tmp, "wb", compresslevel=1) if gz else open(tmp, "wb")) as fh:
        header.write_to(fh)  # 348 bytes and the 4-byte extension flag (none): data at vox_offset 352
        for sl in slices:
            fh.write(np.asarray(sl, "<f4").tobytes(order="F"))
