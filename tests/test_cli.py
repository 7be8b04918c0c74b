"""CLI: round trips and one-line errors, through the real entry point."""

import json
import subprocess
import sys

import h5py
import numpy as np
import pytest

from turndiff.cli import main
from turndiff.training import cpu_bf16_native


def run(*args, expect=0):
    """Run `turndiff ARGS` in-process; return (exit code, stderr text)."""
    import io
    from contextlib import redirect_stderr

    err = io.StringIO()
    with redirect_stderr(err), pytest.raises(SystemExit) as e:
        main(list(args))
    code = e.value.code or 0
    assert code == expect, (code, err.getvalue()[-2000:])
    return err.getvalue()


def test_version_and_help():
    out = subprocess.run([sys.executable, "-m", "turndiff", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and "turndiff" in out.stdout
    for cmd in ("simulate", "fbp", "train-proj", "denoise-proj"):
        out = subprocess.run([sys.executable, "-m", "turndiff", cmd, "--help"], capture_output=True, text=True)
        assert out.returncode == 0 and "Usage" in out.stdout


def test_phantom_simulate_fbp_metrics_roundtrip(tmp_path):
    scan = tmp_path / "scan.h5"
    run("simulate", "phantom:2", "--out", str(scan), "--size", "64", "--dose-fraction", "0.5", "--keep-clean")
    with h5py.File(scan) as f:
        assert f["sinogram"].shape == (2, 720, 92) and f["reference_hu"].shape == (2, 64, 64)
        assert "clean_sinogram" in f and f.attrs["photons"] == 5e4
        ref = f["reference_hu"][()]
    rec = tmp_path / "fbp.npy"
    run("fbp", str(scan), "--out", str(rec))
    hu = np.load(rec)
    assert hu.shape == (2, 64, 64)
    from turndiff.metrics import psnr

    assert float(np.mean(psnr(hu, ref, window="full"))) > 25.0
    from PIL import Image

    from turndiff.io import read_volume, window_to_uint8

    for ext, fmt in ((".nii.gz", None), (".h5", None), ("dcm", "dicom"), ("png", "png")):
        target = tmp_path / f"out{ext}"
        run("fbp", str(scan), "--out", str(target), *(["--format", fmt] if fmt else []))
        if fmt == "png":  # 8-bit, abdomen window, one file per slice in slice order
            pngs = sorted(target.glob("*.png"))
            assert len(pngs) == 2
            for k, f in enumerate(pngs):
                assert np.abs(np.asarray(Image.open(f), np.int16) - window_to_uint8(hu[k])).max() <= 1
            continue
        back = read_volume(target).hu  # the image itself, not only a file: DICOM stores whole HU
        np.testing.assert_allclose(back, hu, atol=0.51 if fmt == "dicom" else 1e-3)
    assert len(list((tmp_path / "outdcm").glob("*.dcm"))) == 2
    # Issue 15, defect 10: fbp keeps the patient/study link of a template, or drops it.
    import pydicom

    src = sorted((tmp_path / "outdcm").glob("*.dcm"))
    for f in src:
        ds = pydicom.dcmread(f)
        ds.PatientID, ds.PatientName = "P-123", "Doe^Jane"
        ds.save_as(f)
    run("fbp", str(scan), "--out", str(tmp_path / "linked"), "--format", "dicom", "--template", str(tmp_path / "outdcm"))
    linked = pydicom.dcmread(sorted((tmp_path / "linked").glob("*.dcm"))[0])
    assert linked.PatientID == "P-123" and linked.StudyInstanceUID == pydicom.dcmread(src[0]).StudyInstanceUID
    run("fbp", str(scan), "--out", str(tmp_path / "anon"), "--format", "dicom", "--template", str(tmp_path / "outdcm"),
        "--anonymize")
    assert pydicom.dcmread(sorted((tmp_path / "anon").glob("*.dcm"))[0]).PatientID != "P-123"


def test_simulate_from_npy_parallel_and_views(tmp_path):
    x = np.zeros((48, 48), np.float32) - 1000
    x[10:38, 10:38] = 40
    np.save(tmp_path / "x.npy", x)
    run("simulate", str(tmp_path / "x.npy"), "--out", str(tmp_path / "s.h5"), "--geometry", "parallel",
        "--views", "40", "--photons", "1e4", "--seed", "3")
    with h5py.File(tmp_path / "s.h5") as f:
        assert f["sinogram"].shape[:2] == (1, 40) and f.attrs["photons"] == 1e4


@pytest.mark.parametrize(
    "args, message",
    [
        (("fbp", "missing.h5", "--out", "x.npy"), "missing.h5"),
        (("simulate", "phantom:1", "--out", "a.h5", "--photons", "5", "--dose-fraction", "1"), "not both"),
        (("simulate", "phantom:x", "--out", "a.h5"), "phantom"),
        (("simulate", "bad.npy", "--out", "a.h5"), "bad.npy"),
        (("simulate", "nan.npy", "--out", "a.h5"), "NaN"),
        (("simulate", "rank4.npy", "--out", "a.h5"), "rank4.npy"),
        (("fbp", "mismatch.h5", "--out", "x.npy"), "geometry"),
        # Issue 15, defect 11: absurd values are not CT data.
        (("simulate", "huge.npy", "--out", "a.h5"), "not HU"),
        (("fbp", "counts.h5", "--out", "x.npy"), "not post-log"),
    ],
)
def test_bad_input_gives_one_line_error_and_no_output(tmp_path, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bad.npy").write_bytes(b"not numpy")
    np.save(tmp_path / "nan.npy", np.full((8, 8), np.nan, np.float32))
    np.save(tmp_path / "rank4.npy", np.zeros((1, 2, 8, 8), np.float32))
    from turndiff.io import write_h5
    from turndiff.physics import default_fan_geometry

    write_h5(tmp_path / "mismatch.h5", {"sinogram": np.zeros((1, 10, 10), np.float32)},
             geometry_json=default_fan_geometry(64).to_json())
    huge = np.zeros((8, 8), np.float32)
    huge[2:4, 2:4] = 1e30
    np.save(tmp_path / "huge.npy", huge)
    g = default_fan_geometry(32)
    write_h5(tmp_path / "counts.h5", {"sinogram": np.full((1, *g.sinogram_shape), 5e4, np.float32)},
             geometry_json=g.to_json())
    err = run(*args, expect=2)
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("turndiff: error:") and message in lines[0], err
    assert "Traceback" not in err
    assert not (tmp_path / "a.h5").exists() and not (tmp_path / "x.npy").exists()
    assert not list(tmp_path.glob(".*tmp*"))


def test_unknown_option_exits_nonzero(tmp_path):
    out = subprocess.run([sys.executable, "-m", "turndiff", "simulate", "phantom:1", "--out", str(tmp_path / "a.h5"),
                          "--bogus"], capture_output=True, text=True)
    assert out.returncode == 2 and "No such option" in out.stderr and "Traceback" not in out.stderr
    # Issue 15, defect 13: option errors are one line like every other error.
    assert out.stderr.strip().count("\n") == 0 and out.stderr.startswith("turndiff: error:"), out.stderr
    bad = subprocess.run([sys.executable, "-m", "turndiff", "simulate", "phantom:1", "--out", str(tmp_path / "b.h5"),
                          "--photons", "abc"], capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.strip().count("\n") == 0 and "--photons" in bad.stderr


def test_train_and_denoise_projections_without_reference_data(tmp_path):
    """Training reads only `sinogram`: a file without reference_hu / clean_sinogram works."""
    scan = tmp_path / "scan.h5"
    run("simulate", "phantom:2", "--out", str(scan), "--size", "64")
    noisy_only = tmp_path / "noisy_only.h5"
    with h5py.File(scan) as f, h5py.File(noisy_only, "w") as g:
        g["sinogram"] = f["sinogram"][()]
        for k, v in f.attrs.items():
            g.attrs[k] = v
    run("train-proj", str(noisy_only), "--out", str(tmp_path / "proj"), "--iters", "2", "--sure-every", "1")
    assert (tmp_path / "proj" / "model.safetensors").is_file() and (tmp_path / "proj" / "config.json").is_file()
    info = json.loads((tmp_path / "proj" / "config.json").read_text())["config"]
    assert info["train_autocast_bf16"] is cpu_bf16_native()  # the fast preset trains in bf16 where native
    run("train-proj", str(noisy_only), "--out", str(tmp_path / "proj32"), "--iters", "1", "--no-cpu-bf16")
    info32 = json.loads((tmp_path / "proj32" / "config.json").read_text())["config"]
    assert info32["train_autocast_bf16"] is False and info32["stage1"]["train"]["amp_cpu"] is False
    sel = info["sure_selection"]
    assert [h["step"] for h in sel["history"]] == [1, 2, 2]  # steps 1, 2 and the final EMA weights
    assert not list(tmp_path.glob("*.pkl")) and not list(tmp_path.rglob("*.pt"))
    # The scan is the training data: auto mode SURE-calibrates (as `reconstruct` does); off does not.
    assert "calibrated by SURE" in run("denoise-proj", str(tmp_path / "proj"), str(scan), "--out",
                                       str(tmp_path / "den.h5"))
    assert "calibrated" not in run("denoise-proj", str(tmp_path / "proj"), str(scan), "--out",
                                   str(tmp_path / "raw.h5"), "--calibrate", "off")
    with h5py.File(tmp_path / "den.h5") as f, h5py.File(tmp_path / "raw.h5") as r:
        assert f["sinogram"].shape == (2, 720, 92) and f["image_hu"].shape == (2, 64, 64)
        assert np.isfinite(f["image_hu"][()]).all()
        assert not np.allclose(f["sinogram"][()], r["sinogram"][()])
    # A model saved before the record: auto says why it does not calibrate; `on` is refused.
    cfg = tmp_path / "proj" / "config.json"
    doc = json.loads(cfg.read_text())
    doc["config"].pop("photons_train_estimated")
    doc["config"]["photons_estimated"] = False
    cfg.write_text(json.dumps(doc))
    assert "not calibrated: the model does not record" in run(
        "denoise-proj", str(tmp_path / "proj"), str(scan), "--out", str(tmp_path / "old.h5"))
    err = run("denoise-proj", str(tmp_path / "proj"), str(scan), "--out", str(tmp_path / "old_on.h5"),
              "--calibrate", "on", expect=2)
    assert "estimated I0" in err and err.count("\n") == 1 and not (tmp_path / "old_on.h5").exists()


def test_outputs_never_destroy_user_data(tmp_path):
    """Issue 15, defects 1 and 2: a model folder is never written over a folder holding
    other files, and no command writes its output over its own input."""
    scan = tmp_path / "scan.h5"
    run("simulate", "phantom:1", "--out", str(scan), "--size", "64", "--dose-fraction", "0.25")
    before = scan.read_bytes()
    for cmd in (("fbp", str(scan), "--out", str(scan)),
                ("simulate", str(scan), "--out", str(scan))):
        err = run(*cmd, expect=2)
        assert "input" in err and err.count("\n") == 1, err
        assert scan.read_bytes() == before
    data = tmp_path / "data"
    (data / "sub").mkdir(parents=True)
    (data / "precious.txt").write_text("x")
    err = run("train-proj", str(scan), "--out", str(data), "--iters", "1", expect=2)
    assert "--overwrite" in err and err.count("\n") == 1, err  # an existing output needs --overwrite
    err = run("train-proj", str(scan), "--out", str(data), "--iters", "1", "--overwrite", expect=2)
    assert "not written by turndiff" in err and err.count("\n") == 1, err  # and even then, never user data
    assert (data / "precious.txt").read_text() == "x" and (data / "sub").is_dir()
    # A model folder turndiff wrote may be replaced with --overwrite (re-training into it).
    model = tmp_path / "proj"
    run("train-proj", str(scan), "--out", str(model), "--iters", "1")
    run("train-proj", str(scan), "--out", str(model), "--iters", "1", expect=2)
    run("train-proj", str(scan), "--out", str(model), "--iters", "1", "--overwrite")
    assert (model / "model.safetensors").is_file()
    rec = tmp_path / "rec.npy"  # files likewise
    run("fbp", str(scan), "--out", str(rec))
    first = rec.read_bytes()
    assert "--overwrite" in run("fbp", str(scan), "--out", str(rec), expect=2) and rec.read_bytes() == first
    run("fbp", str(scan), "--out", str(rec), "--overwrite")
    err = run("denoise-proj", str(model), str(scan), "--out", str(scan), expect=2)
    assert "input" in err and scan.read_bytes() == before


@pytest.mark.parametrize("option", [("--electronic-noise", "nan"), ("--photons", "nan"), ("--photons", "1e-3"),
                                    ("--photons", "1e30"), ("--dose-fraction", "1e-9")])
def test_simulate_refuses_unphysical_values_before_work(tmp_path, option):
    """Issue 15, defect 11: NaN and absurd doses give a one-line error naming the option,
    and no file."""
    out = tmp_path / "scan.h5"
    err = run("simulate", "phantom:1", "--out", str(out), "--size", "32", *option, expect=2)
    assert err.strip().count("\n") == 0 and err.startswith("turndiff: error:"), err
    assert option[0].lstrip("-").split("-")[0] in err
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_resume_refuses_a_run_started_on_other_data(tmp_path):
    """Issue 15, defect 6: an interrupted run folder is tied to its input; training on
    another scan into the same --out is refused instead of resuming from the first
    scan's weights, and the same command still resumes."""
    from turndiff.cli.common import claim_run_dir
    from turndiff.io import read_sinogram_h5

    a, b = tmp_path / "a.h5", tmp_path / "b.h5"
    run("simulate", "phantom:1", "--out", str(a), "--size", "32", "--seed", "0")
    run("simulate", "phantom:1", "--out", str(b), "--size", "32", "--seed", "1")
    run_dir = tmp_path / "m.run"
    claim_run_dir(run_dir, read_sinogram_h5(a)[0], {"command": "fit"})  # "interrupted" on a
    err = run("train-proj", str(b), "--out", str(tmp_path / "m"), "--iters", "1", expect=2)
    assert "other data or settings" in err and "--restart" in err and not (tmp_path / "m").exists()
    claim_run_dir(run_dir, read_sinogram_h5(a)[0], {"command": "fit"})  # same input: accepted
    # --restart, the option the message names, discards the interrupted run and starts over.
    run("train-proj", str(b), "--out", str(tmp_path / "m"), "--iters", "1", "--restart")
    assert (tmp_path / "m" / "model.safetensors").is_file() and not run_dir.exists()


@pytest.mark.parametrize("signame, code", [("SIGTERM", 143), ("SIGINT", 130)])
def test_signals_leave_no_partial_output(tmp_path, signame, code):
    """Issue 15, defect 9: SIGTERM (timeout, Slurm, docker) and SIGINT (Ctrl-C) end the
    command with 128 + the signal number and remove its temporary output; nothing is left
    in the output folder."""
    import signal
    import time

    out = tmp_path / "out" / "scan.h5"
    out.parent.mkdir()
    proc = subprocess.Popen([sys.executable, "-m", "turndiff", "simulate", "phantom:24", "--size", "256",
                             "--out", str(out)], stderr=subprocess.PIPE, text=True)
    first = proc.stderr.readline()  # "simulating ...": the work is under way
    assert first.startswith("simulating"), first
    time.sleep(0.5)
    proc.send_signal(getattr(signal, signame))
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err[-500:]
    assert "Traceback" not in err
    assert not out.exists() and list((tmp_path / "out").iterdir()) == []


def test_a_swallowed_signal_still_exits_non_zero(monkeypatch, capsys):
    """Issue 15, defect 9: h5py swallows an exception raised in a signal handler inside its
    C callbacks, and the command then ran on to exit 0. The signal is remembered instead."""
    import signal

    import turndiff.cli as tcli

    def swallowing(**kwargs):
        try:
            tcli._on_signal(signal.SIGINT, None)
        except BaseException:  # what the library does
            pass
        return 0

    monkeypatch.setattr(tcli.cli, "main", swallowing)
    before = signal.getsignal(signal.SIGINT)
    with pytest.raises(SystemExit) as exc:
        tcli.main(["fbp", "--help"])
    assert exc.value.code == 130 and "interrupted" in capsys.readouterr().err
    assert signal.getsignal(signal.SIGINT) is before  # the caller's handler is given back


def test_sigkill_leftovers_are_removed_by_the_next_write(tmp_path):
    """Issue 15, defect 9: SIGKILL cannot be caught, so a killed write leaves its hidden
    temporary. The next command that writes the same output removes the temporaries of
    dead processes on this host, and never those of a live one."""
    import os
    import signal
    import time

    from turndiff.io.atomic import _host

    out = tmp_path / "out" / "scan.h5"
    out.parent.mkdir()
    cmd = [sys.executable, "-m", "turndiff", "simulate", "phantom:2", "--size", "64", "--out", str(out)]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
    assert proc.stderr.readline().startswith("simulating")
    time.sleep(0.3)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    stale = out.parent / f".scan.tmp-{_host()}-{dead}-abcd.h5"  # as a killed write leaves it
    stale.write_bytes(b"partial")
    live = out.parent / f".scan.tmp-{_host()}-{os.getpid()}-efgh.h5"  # a write in progress
    live.write_bytes(b"in progress")
    # On a fast machine the killed write may have finished within the 0.3 s (session 31's
    # fresh clone did); what is tested is the next write's clean-up, so start it without
    # an output in the way either way.
    out.unlink(missing_ok=True)
    subprocess.run(cmd, check=True, capture_output=True)
    assert out.is_file() and not stale.exists() and live.exists()
    live.unlink()
    assert sorted(p.name for p in out.parent.iterdir()) == ["scan.h5"]


def test_light_commands_do_not_import_torch(tmp_path):
    """Issue 20: every command pays its imports before its first slice. `simulate` and
    `fbp` need NumPy and the numba kernels, not torch (over a second to import); `--help`
    and `--version` need neither."""
    code = ("import sys; from turndiff.cli import main\n"
            "try:\n    main(sys.argv[1:])\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
            "print('MODULES:' + ' '.join(m for m in ('torch', 'numba', 'monai') if m in sys.modules))")
    scan = tmp_path / "scan.h5"
    for args, allowed in ((["--version"], set()), (["fbp", "--help"], set()),
                          (["simulate", "phantom:1", "--size", "32", "--out", str(scan)], {"numba"}),
                          (["fbp", str(scan), "--out", str(tmp_path / "r.npy")], {"numba"})):
        out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True)
        assert out.returncode == 0, out.stderr[-2000:]
        loaded = next(ln for ln in out.stdout.splitlines() if ln.startswith("MODULES:"))[len("MODULES:"):]
        assert set(loaded.split()) <= allowed, (args, loaded)


def test_spread_slices():
    from turndiff.io import spread_slices

    assert spread_slices(100, 5).tolist() == [0, 25, 50, 74, 99]  # ends included, evenly spread
    assert spread_slices(3, 32).tolist() == [0, 1, 2]  # fewer slices than asked: all of them
    assert spread_slices(7, 7).tolist() == list(range(7))


def test_fit_trains_on_the_chosen_slices_only(tmp_path, monkeypatch):
    """Issue 16: `fit --train-slices N` reads and trains on N slices spread through the
    scan, not the whole study."""
    from turndiff.io import hdf5

    scan = tmp_path / "scan.h5"
    run("simulate", "phantom:5", "--size", "32", "--out", str(scan))
    reads = []
    original = hdf5.SinogramReader.read
    monkeypatch.setattr(hdf5.SinogramReader, "read", lambda self, index=slice(None): reads.append(
        np.asarray(index).tolist() if not isinstance(index, slice) else index) or original(self, index))
    err = run("fit", str(scan), "--out", str(tmp_path / "m"), "--preset", "tiny", "--train-slices", "2")
    assert "training on 2 of 5 slices" in err
    assert reads == [[0, 4]]  # only the two training slices were read
    assert json.loads((tmp_path / "m" / "turndiff.json").read_text())["train_slices"] == 2


def test_series_geometry_survives_simulate_fbp_and_reconstruct(tmp_path):
    """Issue 16: slices keep their place. A tilted, off-centre DICOM series (3 slices 2.5 mm
    apart) goes through `simulate --size 32`; the DICOM `fbp` writes reads back as one
    series with the input's orientation, slice positions and field-of-view centre (on the
    new grid), and NIfTI out keeps the slice positions."""
    import pydicom

    from turndiff.io import placement_of, read_volume, write_volume
    from turndiff.phantoms import make_phantoms

    c, s = np.cos(0.3), np.sin(0.3)
    src_place = {"row_dir": [1.0, 0.0, 0.0], "col_dir": [0.0, c, -s], "centre": [12.0, -30.0, 104.0],
                 "positions": [40.0, 42.5, 45.0], "thickness": 2.5}
    write_volume(tmp_path / "series", make_phantoms(3, 48, seed=2), format="dicom", spacing=(0.8, 0.8),
                 placement=src_place)
    source = read_volume(tmp_path / "series")
    expect = placement_of(source)
    np.testing.assert_allclose(expect["positions"], src_place["positions"], atol=1e-3)  # the fixture is what we meant
    scan = tmp_path / "scan.h5"
    run("simulate", str(tmp_path / "series"), "--size", "32", "--out", str(scan))
    run("fbp", str(scan), "--out", str(tmp_path / "out"), "--format", "dicom")
    files = sorted((tmp_path / "out").glob("*.dcm"))
    assert len({pydicom.dcmread(f).SeriesInstanceUID for f in files}) == 1
    back = read_volume(tmp_path / "out")
    got = placement_of(back)
    np.testing.assert_allclose(got["positions"], expect["positions"], atol=1e-3)
    np.testing.assert_allclose(got["row_dir"], expect["row_dir"], atol=1e-6)
    np.testing.assert_allclose(got["col_dir"], expect["col_dir"], atol=1e-6)
    np.testing.assert_allclose(got["centre"], expect["centre"], atol=1e-2)  # same FOV centre, new grid
    np.testing.assert_allclose(back.spacing, (0.8 * 48 / 32,) * 2, rtol=1e-6)
    # NIfTI: the affine places voxel (i, j, k) where the DICOM series puts that pixel.
    import nibabel as nib

    run("fbp", str(scan), "--out", str(tmp_path / "out.nii.gz"))
    affine = nib.load(tmp_path / "out.nii.gz").affine
    ipp = np.array([[float(v) for v in pydicom.dcmread(f).ImagePositionPatient] for f in files])
    ipp = ipp[np.argsort(ipp @ np.cross(got["row_dir"], got["col_dir"]))]
    ras = np.diag([-1.0, -1.0, 1.0])
    # The series' own voxel order ([columns, rows, slices] from the first pixel of the first
    # slice), which the writer stores in nibabel's RAS+ order: the same voxel-to-world map.
    natural = np.eye(4)
    natural[:3, 0] = ras @ np.asarray(got["row_dir"]) * back.spacing[1]
    natural[:3, 1] = ras @ np.asarray(got["col_dir"]) * back.spacing[0]
    natural[:3, 2] = ras @ (ipp[1] - ipp[0])
    natural[:3, 3] = ras @ ipp[0]
    expected = nib.as_closest_canonical(nib.Nifti1Image(np.zeros((32, 32, 3), np.float32), natural)).affine
    np.testing.assert_allclose(affine, expected, atol=1e-3)
    # reconstruct (streamed) writes its series in the same place.
    run("fit", str(scan), "--out", str(tmp_path / "m"), "--preset", "tiny")
    run("reconstruct", str(tmp_path / "m"), str(scan), "--out", str(tmp_path / "rec"), "--format", "dicom")
    np.testing.assert_allclose(placement_of(read_volume(tmp_path / "rec"))["positions"], expect["positions"],
                               atol=1e-3)


def test_reconstruct_symmetries_option_matches_the_library():
    """The CLI spells stage 1's test-time flips out (it starts without torch); its choices and
    default must be the library's, or `reconstruct` and the Python API would disagree."""
    from turndiff.cli.model_cmds import reconstruct, reconstruct_all
    from turndiff.stage1 import SYMMETRIES
    from turndiff.stage1.model import DEFAULT_SYMMETRIES

    for command in (reconstruct, reconstruct_all):
        opt = next(p for p in command.params if p.name == "symmetries")
        assert set(opt.type.choices) == set(SYMMETRIES) and opt.default == DEFAULT_SYMMETRIES
