"""DICOM CT: read a file or a series folder to HU, write a derived CT series.

Reading
-------
* Classic single-frame series (one file per slice), ordered by ImagePositionPatient
  projected on the slice normal (row x column direction of ImageOrientationPatient),
  falling back to InstanceNumber, then to file name.
* Multi-frame and Enhanced CT files: per-frame RescaleSlope/Intercept, PixelSpacing and
  positions from PerFrameFunctionalGroupsSequence, falling back to
  SharedFunctionalGroupsSequence, then to the top level.
* Compressed transfer syntaxes decode through pydicom's plugins (RLE natively; JPEG,
  JPEG-LS and JPEG 2000 through pylibjpeg).
* Stored values become HU with RescaleSlope/Intercept (1 and 0 where absent). Pixels
  equal to PixelPaddingValue (outside the scanned field) become -1000 HU (air).
* Modality must be CT. A missing Modality is accepted (anonymisers and converters
  sometimes drop it); anything else (MR, PT, ...) is refused.
"""

from __future__ import annotations

import copy
import datetime as _dt
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from turndiff.errors import InputError

__all__: list[str] = []  # internal; the public API is turndiff.io.read_volume / write_volume

PADDING_HU = -1000.0
STORED_INTERCEPT = -1024.0

# Tags copied from a template into a derived series (never the pixel description).
_PATIENT_TAGS = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "PatientAge")
_STUDY_TAGS = (
    "StudyInstanceUID",
    "StudyDate",
    "StudyTime",
    "StudyID",
    "AccessionNumber",
    "ReferringPhysicianName",
    "StudyDescription",
)
_GEOMETRY_TAGS = ("FrameOfReferenceUID", "PositionReferenceIndicator")
_ALWAYS_TAGS = ("PatientPosition", "BodyPartExamined")


# ---------------------------------------------------------------------------------------
# reading
# ---------------------------------------------------------------------------------------
class _NotDicom(Exception):
    pass


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


def _dcmread(path: Path, *, header_only: bool) -> Any:
    """Read a DICOM file; raise _NotDicom when it is not one."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        return pydicom.dcmread(path, stop_before_pixels=header_only)
    except InvalidDicomError:
        pass
    except Exception as e:  # truncated / corrupt Part-10 files
        raise InputError(f"{path}: corrupt DICOM file ({_first_line(e)})") from None
    # Old files without the 128-byte preamble and 'DICM': accept them only when they
    # parse into something image-like, so text files and the like are still skipped.
    try:
        with warnings.catch_warnings():  # forced parsing of non-DICOM files is noisy
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(path, stop_before_pixels=header_only, force=True)
    except Exception:
        raise _NotDicom() from None
    if "Rows" not in ds or "Columns" not in ds:
        raise _NotDicom()
    if "TransferSyntaxUID" not in getattr(ds, "file_meta", {}):
        from pydicom.dataset import FileMetaDataset
        from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

        meta = getattr(ds, "file_meta", None) or FileMetaDataset()
        implicit = ds.original_encoding[0] if ds.original_encoding[0] is not None else True
        meta.TransferSyntaxUID = ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian
        ds.file_meta = meta
    return ds


def _check_image(ds: Any, where: str) -> None:
    modality = str(ds.get("Modality", "") or "").strip()
    if modality and modality.upper() != "CT":
        raise InputError(f"{where}: Modality is {modality}, expected CT")
    if "Rows" not in ds or "Columns" not in ds:
        raise InputError(f"{where}: DICOM file holds no image (truncated, or not an image?)")
    spp = int(ds.get("SamplesPerPixel", 1) or 1)
    if spp != 1:
        raise InputError(f"{where}: colour image (SamplesPerPixel={spp}), expected greyscale CT")


def _fg_attr(ds: Any, frame: int, seq: str, keyword: str) -> Any:
    """Value of ``keyword`` for ``frame``: per-frame group, shared group, then top level."""
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    if per_frame is not None and frame < len(per_frame):
        item = per_frame[frame]
        if seq in item and len(item[seq].value) and keyword in item[seq].value[0]:
            return item[seq].value[0][keyword].value
    shared = ds.get("SharedFunctionalGroupsSequence")
    if shared:
        item = shared[0]
        if seq in item and len(item[seq].value) and keyword in item[seq].value[0]:
            return item[seq].value[0][keyword].value
    return ds.get(keyword)


def _floats(value: Any, n: int) -> np.ndarray | None:
    if value is None:
        return None
    try:
        arr = np.asarray([float(v) for v in value], dtype=np.float64)
    except (TypeError, ValueError):
        return None
    return arr if arr.shape == (n,) and np.isfinite(arr).all() else None


@dataclass
class FrameGeometry:
    """Where one frame sits (LPS, mm): what a derived series needs to line up."""

    orientation: np.ndarray | None  # [6]: row direction, column direction
    position: np.ndarray | None  # [3]: centre of the top-left pixel
    spacing: tuple[float, float] | None  # (row_mm, col_mm)
    thickness: float | None

    @property
    def normal(self) -> np.ndarray | None:
        if self.orientation is None:
            return None
        n = np.cross(self.orientation[:3], self.orientation[3:])
        norm = np.linalg.norm(n)
        return n / norm if norm > 0 else None


def frame_geometry(ds: Any, frame: int = 0) -> FrameGeometry:
    """Orientation, position, pixel spacing and thickness of one frame of ``ds``."""
    iop = _floats(_fg_attr(ds, frame, "PlaneOrientationSequence", "ImageOrientationPatient"), 6)
    ipp = _floats(_fg_attr(ds, frame, "PlanePositionSequence", "ImagePositionPatient"), 3)
    ps = _floats(_fg_attr(ds, frame, "PixelMeasuresSequence", "PixelSpacing"), 2)
    th = _fg_attr(ds, frame, "PixelMeasuresSequence", "SliceThickness")
    try:
        thickness = float(th) if th not in (None, "") else None
    except (TypeError, ValueError):
        thickness = None
    spacing = (float(ps[0]), float(ps[1])) if ps is not None and (ps > 0).all() else None
    return FrameGeometry(iop, ipp, spacing, thickness)


def _rescale(ds: Any, frame: int) -> tuple[float, float]:
    slope = _fg_attr(ds, frame, "PixelValueTransformationSequence", "RescaleSlope")
    inter = _fg_attr(ds, frame, "PixelValueTransformationSequence", "RescaleIntercept")
    try:
        slope = 1.0 if slope in (None, "") else float(slope)
        inter = 0.0 if inter in (None, "") else float(inter)
    except (TypeError, ValueError):
        raise InputError(f"bad RescaleSlope/RescaleIntercept ({slope!r}, {inter!r})") from None
    return slope, inter


def _frames_hu(ds: Any, where: str) -> np.ndarray:
    """All frames of ``ds`` in HU, float32 ``[F, H, W]`` (file order)."""
    _check_image(ds, where)
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        raise InputError(f"{where}: DICOM file holds no pixel data (truncated?)")
    try:
        stored = np.asarray(ds.pixel_array)
    except Exception as e:
        ts = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        name = getattr(ts, "name", str(ts)) if ts is not None else "unknown transfer syntax"
        if "less than expected" in str(e):
            msg = "pixel data is shorter than the header says (truncated file?)"
            raise InputError(f"{where}: {msg}") from None
        raise InputError(f"{where}: cannot decode pixel data ({name}): {_first_line(e)}") from None
    nframes = int(ds.get("NumberOfFrames", 1) or 1)
    if nframes == 1 and stored.ndim == 2:
        stored = stored[None]
    if stored.ndim != 3 or stored.shape[0] != nframes:
        raise InputError(f"{where}: unexpected pixel array shape {tuple(stored.shape)}")

    pad = ds.get("PixelPaddingValue")
    pad_limit = ds.get("PixelPaddingRangeLimit")
    hu = np.empty(stored.shape, dtype=np.float32)
    for i in range(nframes):
        try:
            slope, inter = _rescale(ds, i)
        except InputError as e:
            raise InputError(f"{where}: {e}") from None
        frame = stored[i].astype(np.float64)
        hu[i] = frame * slope + inter
        if pad is not None and stored.dtype.kind in "iu":
            lo, hi = (pad, pad) if pad_limit is None else sorted((int(pad), int(pad_limit)))
            hu[i][(stored[i] >= lo) & (stored[i] <= hi)] = PADDING_HU
    if not np.isfinite(hu).all():
        raise InputError(f"{where}: pixel data has NaN/inf values")
    return hu


def _order_key_positions(
    geoms: Sequence[FrameGeometry], instance_numbers: Sequence[Any]
) -> tuple[np.ndarray, np.ndarray | None]:
    """Order of slices and their positions along the normal (mm) where known."""
    n = len(geoms)
    normal = geoms[0].normal if geoms else None
    if normal is not None and all(g.position is not None for g in geoms):
        pos = np.array([float(np.dot(g.position, normal)) for g in geoms])
        inst = [_int_or(v, k) for k, v in enumerate(instance_numbers)]
        order = np.array(sorted(range(n), key=lambda k: (pos[k], inst[k])))
        return order, pos[order]
    if all(v not in (None, "") for v in instance_numbers):
        inst = [_int_or(v, k) for k, v in enumerate(instance_numbers)]
        return np.array(sorted(range(n), key=lambda k: (inst[k], k))), None
    return np.arange(n), None


def _int_or(v: Any, default: int) -> int:
    try:
        return int(v)
    except (TypeError, ValueError):
        return default


@dataclass
class DicomStack:
    hu: np.ndarray
    spacing: tuple[float, float] | None
    slice_positions: np.ndarray | None
    template: Any


def _strip_pixels(ds: Any) -> Any:
    for kw in ("PixelData", "FloatPixelData", "DoubleFloatPixelData"):
        if kw in ds:
            delattr(ds, kw)
    return ds


def read_dicom_file(path: Path) -> DicomStack:
    """One DICOM file: a single slice or a multi-frame / Enhanced CT volume."""
    where = str(path)
    try:
        ds = _dcmread(path, header_only=False)
    except _NotDicom:
        raise InputError(f"{where}: not a DICOM file") from None
    hu = _frames_hu(ds, where)
    nframes = hu.shape[0]
    geoms = [frame_geometry(ds, i) for i in range(nframes)]
    if nframes > 1:
        # Enhanced CT frames need not be stored in spatial order.
        order, positions = _order_key_positions(geoms, [None] * nframes)
        hu = hu[order]
    else:
        order = np.zeros(1, dtype=int)
        n = geoms[0].normal
        positions = (
            np.array([float(np.dot(geoms[0].position, n))])
            if n is not None and geoms[0].position is not None
            else None
        )
    spacing = geoms[int(order[0])].spacing
    return DicomStack(np.ascontiguousarray(hu), spacing, positions, _strip_pixels(ds))


def read_dicom_folder(folder: Path) -> DicomStack:
    """A folder holding one CT series (searched recursively; non-DICOM files skipped)."""
    where = str(folder)
    files = sorted(
        p
        for p in folder.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )
    series: dict[str, list[tuple[Path, Any]]] = {}
    other_modalities: set[str] = set()
    localizers = 0
    without_pixels: set[str] = set()
    for p in files:
        try:
            ds = _dcmread(p, header_only=True)
        except (_NotDicom, InputError):
            continue
        if "Rows" not in ds or "Columns" not in ds:  # DICOMDIR, RT structures, reports, presentation states
            without_pixels.add(str(ds.get("Modality", "") or "") or "no Modality")
            continue
        image_type = [str(v).upper() for v in (ds.get("ImageType") or [])]
        if "LOCALIZER" in image_type:  # scout views: projections, not slices
            localizers += 1
            continue
        modality = str(ds.get("Modality", "") or "").strip()
        if modality and modality.upper() != "CT":
            other_modalities.add(modality)
            continue
        series.setdefault(str(ds.get("SeriesInstanceUID", "")), []).append((p, ds))

    if not series:
        if other_modalities:
            mods = ", ".join(sorted(other_modalities))
            raise InputError(f"{where}: Modality is {mods}, expected CT")
        if localizers:
            raise InputError(f"{where}: no CT slices found, only {localizers} localizer image(s)")
        if without_pixels:
            kinds = ", ".join(sorted(without_pixels))
            raise InputError(f"{where}: no CT images, only DICOM files without pixel data ({kinds})")
        raise InputError(f"{where}: no DICOM images found ({len(files)} file(s) looked at)")
    if len(series) > 1:
        desc = "; ".join(
            f"{str(items[0][1].get('SeriesDescription', '') or '?')!r} ({len(items)} files)"
            for items in series.values()
        )
        raise InputError(
            f"{where}: holds {len(series)} CT series ({desc}); pass one series folder"
        )
    items = next(iter(series.values()))
    if len(items) == 1:
        return read_dicom_file(items[0][0])
    if any(int(ds.get("NumberOfFrames", 1) or 1) > 1 for _, ds in items):
        raise InputError(f"{where}: series mixes several multi-frame files; pass one file")
    sizes = {(int(ds.Rows), int(ds.Columns)) for _, ds in items}
    if len(sizes) > 1:
        shown = ", ".join(f"{r}x{c}" for r, c in sorted(sizes))
        raise InputError(f"{where}: images of different sizes in one series ({shown})")

    geoms = [frame_geometry(ds) for _, ds in items]
    order, positions = _order_key_positions(geoms, [ds.get("InstanceNumber") for _, ds in items])
    slices = []
    for k in order:
        p = items[int(k)][0]
        try:
            ds = _dcmread(p, header_only=False)
        except _NotDicom:
            raise InputError(f"{p}: not a DICOM file") from None
        slices.append(_frames_hu(ds, str(p))[0])
    template = items[int(order[0])][1]
    return DicomStack(np.stack(slices), geoms[int(order[0])].spacing, positions, template)


# ---------------------------------------------------------------------------------------
# writing
# ---------------------------------------------------------------------------------------
def _ds_str(x: float) -> str:
    """Shortest decimal string (DICOM DS: at most 16 characters) close to ``x``."""
    x = float(x)
    for digits in range(10, 0, -1):
        s = f"{x:.{digits}g}"
        if len(s) <= 16:
            return s
    return f"{x:.1e}"


def write_dicom_series(
    folder: Path,
    hu: np.ndarray,
    *,
    template: Any,
    row_dir: np.ndarray,
    col_dir: np.ndarray,
    origins: np.ndarray,
    spacing: tuple[float, float],
    thickness: float | None,
    window: tuple[float, float],
    anonymize: bool,
    series_description: str,
) -> list[Path]:
    """Write ``hu`` ``[N, H, W]`` as one CT Image Storage file per slice into ``folder``.

    ``origins`` ``[N, 3]`` are the ImagePositionPatient of each slice (LPS, mm).
    """
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    from turndiff import __version__ as version

    n, h, w = hu.shape
    now = _dt.datetime.now()
    date, time = now.strftime("%Y%m%d"), now.strftime("%H%M%S")

    base = Dataset()
    base.SpecificCharacterSet = "ISO_IR 192"
    base.SOPClassUID = CTImageStorage
    base.Modality = "CT"
    base.ImageType = ["DERIVED", "SECONDARY", "AXIAL"]
    # Type 2 elements of the CT Image IOD: present, empty unless the template has them.
    for kw in _PATIENT_TAGS[:4] + _STUDY_TAGS[1:6] + ("PositionReferenceIndicator",):
        setattr(base, kw, "")
    base.KVP = ""
    # Type 2C elements dciodvfy asks for: Laterality (empty: an unpaired body part) and
    # PatientPosition (head first supine unless the template says otherwise).
    base.Laterality = ""
    base.PatientPosition = "HFS"
    base.AcquisitionNumber = None
    base.Manufacturer = "turndiff"
    base.SoftwareVersions = str(version)
    base.DerivationDescription = "turndiff low-dose CT reconstruction"
    if template is not None:
        keep = _ALWAYS_TAGS if anonymize else (
            _ALWAYS_TAGS + _PATIENT_TAGS + _STUDY_TAGS + _GEOMETRY_TAGS
        )
        for kw in keep:
            if kw in template and template[kw].value not in (None, ""):
                setattr(base, kw, copy.deepcopy(template[kw].value))
        if not anonymize and "SeriesNumber" in template:
            base.SeriesNumber = _int_or(template.SeriesNumber, 0) + 1000
    if anonymize:
        base.PatientName = "Anonymous"
        base.PatientID = "ANON"
        base.PatientIdentityRemoved = "YES"
        base.DeidentificationMethod = "turndiff: patient and study identifiers removed"
    if "StudyInstanceUID" not in base:
        base.StudyInstanceUID = generate_uid()
        base.StudyDate, base.StudyTime = ("", "") if anonymize else (date, time)
    if "FrameOfReferenceUID" not in base:
        base.FrameOfReferenceUID = generate_uid()
    if "SeriesNumber" not in base:
        base.SeriesNumber = 1000
    base.SeriesInstanceUID = generate_uid()
    base.SeriesDescription = str(series_description)[:64]
    base.SeriesDate = base.ContentDate = date
    base.SeriesTime = base.ContentTime = time
    base.ImageOrientationPatient = [_ds_str(v) for v in (*row_dir, *col_dir)]
    base.PixelSpacing = [_ds_str(spacing[0]), _ds_str(spacing[1])]
    if thickness is not None:
        base.SliceThickness = _ds_str(thickness)
    base.SamplesPerPixel = 1
    base.PhotometricInterpretation = "MONOCHROME2"
    base.Rows, base.Columns = h, w
    base.BitsAllocated = 16
    base.BitsStored = 16
    base.HighBit = 15
    base.PixelRepresentation = 1
    base.RescaleIntercept = _ds_str(STORED_INTERCEPT)
    base.RescaleSlope = _ds_str(1.0)
    base.RescaleType = "HU"
    lo, hi = window
    base.WindowCenter = _ds_str((lo + hi) / 2)
    base.WindowWidth = _ds_str(hi - lo)

    normal = np.cross(row_dir, col_dir)
    info = np.iinfo(np.int16)
    width = max(4, len(str(n)))
    paths = []
    for k in range(n):
        ds = copy.deepcopy(base)
        ds.SOPInstanceUID = generate_uid()
        ds.InstanceNumber = k + 1
        ds.ImagePositionPatient = [_ds_str(v) for v in origins[k]]
        ds.SliceLocation = _ds_str(float(np.dot(origins[k], normal)))
        # One slice at a time: ``hu`` may be a lazy stack (an HDF5 dataset) of a whole study.
        stored = np.clip(np.rint(np.asarray(hu[k], np.float64) - STORED_INTERCEPT), info.min, info.max)
        ds.PixelData = stored.astype("<i2").tobytes()
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = ds.SOPClassUID
        meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta = meta
        p = folder / f"{k + 1:0{width}d}.dcm"
        ds.save_as(p, enforce_file_format=True)
        paths.append(p)
    return paths


def is_dicom_path(path: os.PathLike[str] | str) -> bool:
    """Whether ``path`` is a readable DICOM file (header check only)."""
    try:
        _dcmread(Path(path), header_only=True)
    except (_NotDicom, InputError):
        return False
    return True
