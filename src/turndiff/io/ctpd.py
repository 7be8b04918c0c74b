"""DICOM-CT-PD: the open format for CT projection data (one DICOM file per projection).

The Mayo Clinic / TCIA "LDCT-and-Projection-data" collection ships full- and quarter-dose
helical scans in it. :func:`read_ctpd` reads a folder into a
:class:`~turndiff.physics.helical.HelicalScan` (per-view geometry) and a loader of its
post-log projections, validating the folder first; :func:`write_ctpd` writes one (the
synthetic helical scanner, tests and tutorials). The tags, their meaning and the public
sources they were checked against are in docs/FORMATS.md.

Pixel layout: a file's image has ``Rows`` = detector *columns* and ``Columns`` = detector
*rows* (the layout of the public data and of the readers written for it), stored as
unsigned 16-bit values that ``RescaleSlope`` / ``RescaleIntercept`` turn into post-log line
integrals. Private values are read whether the file declares their VRs (explicit VR, as
turndiff writes) or not (implicit VR, where pydicom hands them over as raw little-endian
bytes).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from turndiff.errors import InputError

__all__ = ["TAGS", "read_ctpd", "write_ctpd", "CTPDProjections"]

#: (tag, name, VR, needed to rebin). Names as the DICOM-CT-PD dictionary spells them.
TAGS: tuple[tuple[int, str, str, bool], ...] = (
    (0x70291010, "NumberofDetectorRows", "US", True),
    (0x70291011, "NumberofDetectorColumns", "US", True),
    (0x70291002, "DetectorElementTransverseSpacing", "FL", True),
    (0x70291006, "DetectorElementAxialSpacing", "FL", True),
    (0x7029100B, "DetectorShape", "CS", False),
    (0x70311001, "DetectorFocalCenterAngularPosition", "FL", True),
    (0x70311002, "DetectorFocalCenterAxialPosition", "FL", True),
    (0x70311003, "DetectorFocalCenterRadialDistance", "FL", True),
    (0x70311031, "ConstantRadialDistance", "FL", True),
    (0x70311033, "DetectorCentralElement", "FL", True),
    (0x7033100B, "SourceAngularPositionShift", "FL", False),
    (0x7033100C, "SourceAxialPositionShift", "FL", False),
    (0x7033100D, "SourceRadialDistanceShift", "FL", False),
    (0x7033100E, "FlyingFocalSpotMode", "CS", False),
    (0x70331013, "NumberofSourceAngularSteps", "US", True),
    (0x70331065, "PhotonStatistics", "FL", False),
    (0x70371009, "TypeofProjectionData", "CS", False),
    (0x7037100A, "TypeofProjectionGeometry", "CS", False),
    (0x70411001, "WaterAttenuationCoefficient", "FL", False),
    (0x00180061, "HUCalibrationFactor", "DS", False),
)
_NAME = {t: n for t, n, _, _ in TAGS}
_VR = {t: vr for t, _, vr, _ in TAGS}
#: Private creators written for each group (a reader matches on the element number only).
_CREATORS = {0x7029: "DetectorSystemArrangementModule", 0x7031: "DetectorDynamicsModule",
             0x7033: "SourceDynamicsModule", 0x7037: "ProjectionDataDefinitions",
             0x7041: "ProjectionDataCalibration"}
_CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
_UNCOMPRESSED = ("1.2.840.10008.1.2", "1.2.840.10008.1.2.1")


def _tagname(tag: int) -> str:
    return f"({tag >> 16:04X},{tag & 0xFFFF:04X}) {_NAME.get(tag, '')}".rstrip()


def _value(ds: Any, tag: int, where: str, *, many: bool = False):
    """A tag's value as float(s) or str, whatever VR the file gave it."""
    elem = ds.get(tag)
    if elem is None:
        return None
    v = elem.value
    vr = _VR.get(tag, "FL")
    if isinstance(v, (bytes, bytearray)):  # implicit VR / unknown private tag: raw bytes
        if vr == "CS":
            return bytes(v).decode("ascii", "replace").strip("\x00 ")
        if vr == "DS":
            v = bytes(v).decode("ascii", "replace").strip("\x00 ").split("\\")
        else:
            dt = {"US": "<u2", "FL": "<f4"}[vr]
            if len(v) % np.dtype(dt).itemsize:
                raise InputError(f"{where}: {_tagname(tag)} holds {len(v)} bytes, not whole {vr} values")
            v = np.frombuffer(bytes(v), dt)
    if vr == "CS":
        return str(v).strip()
    try:
        arr = np.atleast_1d(np.asarray(v, np.float64).ravel() if not isinstance(v, str) else float(v))
    except (TypeError, ValueError):
        raise InputError(f"{where}: {_tagname(tag)} is not a number ({v!r})") from None
    if not np.isfinite(arr).all():
        raise InputError(f"{where}: {_tagname(tag)} is not finite")
    return arr if many else float(arr[0])


@dataclass
class CTPDProjections:
    """Loader of a DICOM-CT-PD folder's projections: ``proj(views)`` returns float32
    ``[len(views), columns, rows]`` post-log line integrals, reading only those files."""

    files: list[Path]
    cols: int
    rows: int

    def __call__(self, views) -> np.ndarray:
        import pydicom

        views = np.atleast_1d(np.asarray(views))
        out = np.empty((len(views), self.cols, self.rows), np.float32)
        for k, v in enumerate(views):
            f = self.files[int(v)]
            try:
                ds = pydicom.dcmread(f)
                if str(ds.file_meta.TransferSyntaxUID) in _UNCOMPRESSED and ds.BitsAllocated == 16:
                    raw = np.frombuffer(ds.PixelData, "<u2" if int(ds.PixelRepresentation) == 0 else "<i2")
                    if raw.size != self.cols * self.rows:
                        raise InputError(f"{f}: truncated: {raw.size} pixels, expected {self.cols * self.rows}")
                    img = raw.reshape(self.cols, self.rows)
                else:
                    img = ds.pixel_array
            except InputError:
                raise
            except Exception as e:  # pydicom raises many kinds on a damaged file
                raise InputError(f"{f}: cannot read its pixel data ({type(e).__name__}: {e})") from None
            if img.shape != (self.cols, self.rows):
                raise InputError(f"{f}: image is {img.shape[0]} x {img.shape[1]}, expected "
                                 f"{self.cols} columns x {self.rows} rows")
            slope = float(getattr(ds, "RescaleSlope", 1.0) or 1.0)
            icpt = float(getattr(ds, "RescaleIntercept", 0.0) or 0.0)
            out[k] = img.astype(np.float32) * slope + icpt
        return out


def _list_files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise InputError(f"{folder}: not a folder (give the folder that holds one DICOM-CT-PD series)")
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    if not files:
        raise InputError(f"{folder}: no files")
    return files


def read_ctpd(folder: str | os.PathLike[str], *, progress: bool = False):
    """Read and check a DICOM-CT-PD series folder.

    Every file is opened (headers only; pixel data is located, not read) and refused with
    one line naming the file and the problem when: it is not DICOM, a needed tag is
    missing, its pixel data is shorter than its size says (a truncated copy), or it
    disagrees with the others (another series, another detector). The views must follow
    one another without a gap (instance numbers and source angles are both checked).

    Returns
    -------
    scan : turndiff.physics.helical.HelicalScan
    projections : CTPDProjections
        ``projections(views)`` -> float32 ``[k, columns, rows]``.
    """
    import pydicom
    from pydicom.errors import InvalidDicomError

    from turndiff.physics.helical import HelicalScan

    folder = Path(folder)
    files = _list_files(folder)
    it = files
    if progress:
        from tqdm.auto import tqdm

        # Shown only past 2 s: a short folder's refusal stays one line.
        it = tqdm(files, desc="reading headers", unit="file", delay=2)
    rec = []
    for f in it:
        try:
            ds = pydicom.dcmread(f)  # pixel bytes are read, not decoded
        except (InvalidDicomError, EOFError, OSError, ValueError, TypeError) as e:
            raise InputError(f"{f}: not a readable DICOM file ({type(e).__name__}: {e})") from None
        for tag, name, _, needed in TAGS:
            if needed and tag not in ds:
                raise InputError(f"{f}: not DICOM-CT-PD projection data: no {_tagname(tag)}")
        if 0x7FE00010 not in ds:
            raise InputError(f"{f}: has no pixel data")
        rows, cols = int(_value(ds, 0x70291010, str(f))), int(_value(ds, 0x70291011, str(f)))
        need = rows * cols * 2
        compressed = str(getattr(ds.file_meta, "TransferSyntaxUID", "")) not in _UNCOMPRESSED
        got = len(ds.PixelData or b"")
        if not compressed and got < need:
            raise InputError(f"{f}: truncated: {got} bytes of pixel data, expected {need} "
                             f"({cols} columns x {rows} rows x 2)")
        if int(getattr(ds, "Rows", cols)) != cols or int(getattr(ds, "Columns", rows)) != rows:
            raise InputError(f"{f}: image is {ds.Rows} x {ds.Columns}, but the detector has {cols} columns x "
                             f"{rows} rows (DICOM-CT-PD stores columns as image rows)")
        w = str(f)
        ffs_shift = [_value(ds, t, w) for t in (0x7033100B, 0x7033100C, 0x7033100D)]
        photon = _value(ds, 0x70331065, w, many=True)
        rec.append({
            "file": f,
            "series": str(getattr(ds, "SeriesInstanceUID", "")),
            "instance": int(getattr(ds, "InstanceNumber", len(rec) + 1) or 0),
            "det": (rows, cols, round(_value(ds, 0x70291002, w), 6), round(_value(ds, 0x70291006, w), 6),
                    round(_value(ds, 0x70311031, w), 4), tuple(np.round(_value(ds, 0x70311033, w, many=True), 4))),
            "phi": _value(ds, 0x70311001, w), "z": _value(ds, 0x70311002, w), "rho": _value(ds, 0x70311003, w),
            "dphi": ffs_shift[0] or 0.0, "dz": ffs_shift[1] or 0.0, "drho": ffs_shift[2] or 0.0,
            "steps": int(_value(ds, 0x70331013, w)),
            "ffs": _value(ds, 0x7033100E, w) or "FFSNONE",
            "photons": None if photon is None else float(np.mean(photon)),
            "mu_water": _value(ds, 0x70411001, w),
            "hu_factor": _value(ds, 0x00180061, w),
            "kind": _value(ds, 0x70371009, w),
            "shape": _value(ds, 0x7029100B, w),
        })
    series = {}
    for r in rec:
        series.setdefault(r["series"], []).append(r["file"].name)
    if len(series) > 1:
        parts = ", ".join(f"{len(v)} files of series {k or '(none)'}" for k, v in list(series.items())[:3])
        raise InputError(f"{folder}: mixed series ({parts}): give a folder with one series")
    dets = {r["det"] for r in rec}
    if len(dets) > 1:
        a = rec[0]
        b = next(r for r in rec if r["det"] != a["det"])
        raise InputError(f"{b['file']}: its detector ({b['det'][:2]}) differs from {a['file'].name}'s ({a['det'][:2]}); "
                         "mixed scans in one folder")
    for r in rec:
        if r["kind"] and r["kind"].upper() not in ("HELICAL", "AXIAL"):
            raise InputError(f"{r['file']}: TypeofProjectionData is {r['kind']!r}, expected HELICAL")
        if r["shape"] and r["shape"].upper() not in ("CYLINDRICAL",):
            raise InputError(f"{r['file']}: DetectorShape is {r['shape']!r}; only CYLINDRICAL detectors are supported")
    rec.sort(key=lambda r: r["instance"])
    inst = np.array([r["instance"] for r in rec])
    if len(rec) < 2:
        raise InputError(f"{folder}: only {len(rec)} projection; a helical scan has thousands")
    dup = np.flatnonzero(np.diff(inst) == 0)
    if dup.size:
        raise InputError(f"{rec[dup[0]]['file']} and {rec[dup[0] + 1]['file'].name}: the same instance number "
                         f"{inst[dup[0]]} twice")
    gap = np.flatnonzero(np.diff(inst) > 1)
    if gap.size:
        i = gap[0]
        raise InputError(f"{folder}: missing view(s): instance numbers jump from {inst[i]} to {inst[i + 1]} "
                         f"({rec[i]['file'].name} -> {rec[i + 1]['file'].name})")
    phi = np.unwrap(np.array([r["phi"] for r in rec]))
    step = np.diff(phi)
    med = float(np.median(step))
    bad = np.flatnonzero(np.abs(step) > 1.5 * abs(med) + 1e-9)
    if med == 0 or bad.size:
        i = int(bad[0]) if bad.size else 0
        raise InputError(f"{folder}: missing view(s): the source angle jumps by {math.degrees(step[i]):.3f} deg "
                         f"between {rec[i]['file'].name} and {rec[i + 1]['file'].name} (one step is "
                         f"{math.degrees(med):.3f} deg)")
    rows, cols, du, dv, D, central = rec[0]["det"]
    if len(central) < 2:
        raise InputError(f"{rec[0]['file']}: DetectorCentralElement needs two values (column, row)")
    photons = [r["photons"] for r in rec if r["photons"] is not None]
    mu_w = rec[0]["mu_water"] if rec[0]["mu_water"] is not None else rec[0]["hu_factor"]
    if mu_w is not None and not (0.005 < mu_w < 0.05):
        raise InputError(f"{rec[0]['file']}: water attenuation {mu_w} is not in mm^-1 (expected about 0.02)")
    try:
        scan = HelicalScan(
            rows=rows, cols=cols, du=du, dv=dv, det_radius=D, central=(central[0] - 1.0, central[1] - 1.0),
            phi=phi, z=np.array([r["z"] for r in rec]), rho=np.array([r["rho"] for r in rec]),
            dphi=np.array([r["dphi"] for r in rec]), dz=np.array([r["dz"] for r in rec]),
            drho=np.array([r["drho"] for r in rec]), views_per_turn=rec[0]["steps"], ffs_mode=rec[0]["ffs"],
            mu_water=mu_w, photons=float(np.median(photons)) if photons else None,
            extra={"hu_calibration_factor": rec[0]["hu_factor"], "projection_data": rec[0]["kind"] or "HELICAL"})
    except ValueError as e:
        raise InputError(f"{folder}: {e}") from None
    return scan, CTPDProjections([r["file"] for r in rec], cols, rows)


def write_ctpd(
    folder: str | os.PathLike[str],
    projections: np.ndarray | Callable[[np.ndarray], np.ndarray],
    scan,
    *,
    overwrite: bool = False,
    series_description: str = "turndiff synthetic helical scan",
    progress: bool = False,
) -> Path:
    """Write a helical scan as a DICOM-CT-PD series, one file per view (atomically: the
    folder appears whole or not at all).

    ``projections``: float ``[P, cols, rows]`` post-log, or a callable returning those of an
    array of view indices (so a long scan is never whole in memory). Values are stored as
    unsigned 16 bits with one rescale slope and intercept for the series (about 1e-4 of a
    line integral per step, far below any noise).
    """
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    from turndiff.io.atomic import atomic_output
    from turndiff.io.volume import _replaceable

    get = projections if callable(projections) else (lambda v: np.asarray(projections)[v])
    P = scan.n_views
    chunk = 256
    lo, hi = np.inf, -np.inf
    for s in range(0, P, chunk):  # the range first, so one slope serves every file
        a = get(np.arange(s, min(s + chunk, P)))
        lo, hi = min(lo, float(a.min())), max(hi, float(a.max()))
    icpt = min(0.0, math.floor(lo * 1000) / 1000)
    slope = max(hi - icpt, 1e-3) * 1.0001 / 65535.0
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    mode = scan.ffs_mode
    it = range(0, P, chunk)
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(it, desc="writing DICOM-CT-PD", unit="chunk")
    with atomic_output(folder, directory=True, overwrite=overwrite,
                       replaceable=lambda p: _replaceable(p, ".dcm")) as tmp:
        for s in it:
            block = get(np.arange(s, min(s + chunk, P)))
            for k, a in enumerate(block):
                p = s + k
                meta = FileMetaDataset()
                meta.MediaStorageSOPClassUID = _CT_IMAGE
                meta.MediaStorageSOPInstanceUID = generate_uid()
                meta.TransferSyntaxUID = ExplicitVRLittleEndian
                ds = FileDataset(None, {}, file_meta=meta, preamble=b"\0" * 128)
                ds.SOPClassUID = _CT_IMAGE
                ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
                ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
                ds.Modality = "CT"
                ds.Manufacturer = "turndiff (synthetic)"
                ds.PatientName, ds.PatientID = "TURNDIFF^PHANTOM", "TURNDIFF"
                ds.SeriesDescription = series_description
                ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
                ds.InstanceNumber = p + 1
                ds.SpiralPitchFactor = float(scan.pitch)
                ds.Rows, ds.Columns = scan.cols, scan.rows
                ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
                ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
                ds.RescaleIntercept, ds.RescaleSlope = f"{icpt:.6g}", f"{slope:.9g}"
                q = np.clip(np.round((np.asarray(a, np.float64) - icpt) / float(f"{slope:.9g}")), 0, 65535)
                ds.PixelData = q.astype("<u2").tobytes()
                for group, creator in _CREATORS.items():
                    ds.add_new((group << 16) | 0x0010, "LO", creator)
                vals = {
                    0x70291010: scan.rows, 0x70291011: scan.cols, 0x70291002: scan.du, 0x70291006: scan.dv,
                    0x7029100B: "CYLINDRICAL",
                    0x70311001: float(np.mod(scan.phi[p], 2 * np.pi)), 0x70311002: float(scan.z[p]),
                    0x70311003: float(scan.rho[p]), 0x70311031: scan.det_radius,
                    0x70311033: [scan.central[0] + 1.0, scan.central[1] + 1.0],
                    0x7033100B: float(scan.dphi[p]), 0x7033100C: float(scan.dz[p]), 0x7033100D: float(scan.drho[p]),
                    0x7033100E: mode, 0x70331013: scan.views_per_turn,
                    0x70371009: "HELICAL", 0x7037100A: "FANBEAM",
                }
                if scan.photons is not None:
                    vals[0x70331065] = [float(scan.photons)] * scan.cols
                if scan.mu_water is not None:
                    vals[0x70411001] = float(scan.mu_water)
                    vals[0x00180061] = f"{scan.mu_water:.8g}"
                for tag, v in vals.items():
                    ds.add_new(tag, _VR[tag], v)
                ds.save_as(tmp / f"{p + 1:06d}.dcm", enforce_file_format=True)
    return Path(folder)
