"""Issue 15: every bad input, fault and misuse found by the issue's audit, through the CLI.

One table, one assertion for all: exit status 2, exactly one line ``turndiff: error: ...``
naming the file or option at fault, no traceback, and the working folder exactly as it was
(no file created, changed or deleted, hidden temporaries included). The defects that are
not a refusal are kept by the tests named here:

* 7 (SURE selection state survives a resume): ``test_stage1.py``, the SURE resume test;
* 9 (signals): ``test_cli.py::test_signals_leave_no_partial_output``,
  ``test_a_swallowed_signal_still_exits_non_zero``, ``test_io.py::test_sigkill_*``;
* 10 (DICOM validity): ``test_io.py::test_dicom_out_passes_the_standards_validator``,
  ``test_cli.py`` (``--template`` / ``--anonymize`` on ``fbp``);
* 14 (permissions): ``test_io.py::test_folder_outputs_get_ordinary_permissions``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from turndiff.cli import main
from turndiff.io import write_h5
from turndiff.physics import default_fan_geometry

SIZE = 32


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    """A folder a user might have: a scan, a TurnDiff model (its stage 1 is a stage-1 model
    folder of its own), an image, and folders of other data."""
    from turndiff.dose import simulate_scan
    from turndiff.phantoms import make_phantoms
    from turndiff.pipeline import fit

    ws = tmp_path_factory.mktemp("ws")
    g = default_fan_geometry(SIZE)
    hu = make_phantoms(2, SIZE, seed=5)
    sinogram, _ = simulate_scan(hu, g, photons=2.5e4, seed=0)
    write_h5(ws / "scan.h5", {"sinogram": sinogram}, geometry_json=g.to_json(), photons=2.5e4)
    fit(sinogram, geometry=g, photons=2.5e4, preset="tiny", device="cpu", progress=False
        ).save_pretrained(ws / "model")
    np.save(ws / "image.npy", hu.astype(np.float32))
    (ws / "data" / "sub").mkdir(parents=True)
    (ws / "data" / "precious.txt").write_text("irreplaceable")
    return ws


# ---------------------------------------------------------------------------------------
# Damage done to a copy of the workspace before a case runs
# ---------------------------------------------------------------------------------------
def _photons(value):
    def damage(ws: Path) -> None:
        with h5py.File(ws / "scan.h5", "a") as f:
            f.attrs["photons"] = value
    return damage


def _weights(data: bytes):
    def damage(ws: Path) -> None:
        (ws / "model" / "projection_denoiser" / "model.safetensors").write_bytes(data)
    return damage


def _index(change):
    def damage(ws: Path) -> None:
        p = ws / "model" / "turndiff.json"
        p.write_text(json.dumps(change(json.loads(p.read_text()))))
    return damage


def _component_config(value):
    def damage(ws: Path) -> None:
        (ws / "model" / "projection_denoiser" / "config.json").write_text(json.dumps(value))
    return damage


def _other_geometry(info: dict) -> dict:
    geometry = json.loads(info["geometry"])
    return {**info, "geometry": json.dumps({**geometry, "views": geometry["views"] + 2})}


def _sinogram(value: float):
    def damage(ws: Path) -> None:
        with h5py.File(ws / "scan.h5", "a") as f:
            f["sinogram"][...] = value
    return damage


def _image(value: float):
    def damage(ws: Path) -> None:
        hu = np.load(ws / "image.npy")
        hu[:, 4:8, 4:8] = value
        np.save(ws / "image.npy", hu)
    return damage


def _fifo(ws: Path) -> None:
    os.mkfifo(ws / "pipe.npy")


def _text_npy(ws: Path) -> None:
    (ws / "notes.npy").write_text("hello world\n")


def _rtstruct(ws: Path) -> None:
    from test_io import _bad_rtstruct_folder  # an RT structure set alone, in ws/rt

    _bad_rtstruct_folder(ws, None)


def _second_scan_interrupted(ws: Path) -> None:
    """``train-proj scan.h5 --out m`` was interrupted (its run folder claimed); then the user
    points the same --out at another scan."""
    from turndiff.cli.common import claim_run_dir
    from turndiff.io import read_sinogram_h5

    shutil.copy(ws / "scan.h5", ws / "other.h5")
    with h5py.File(ws / "other.h5", "a") as f:
        f["sinogram"][0, 0, 0] += 0.5
    claim_run_dir(ws / "m.run", read_sinogram_h5(ws / "scan.h5")[0], {"command": "train-proj"})


def _file_where_a_folder_belongs(ws: Path) -> None:
    (ws / "notafolder").write_text("a file")


DEFECTS = [
    # (defect, id, damage or None, args, what the message must name)
    (1, "model over a folder of other data", None, "train-proj scan.h5 --out data --iters 1", "--overwrite"),
    (1, "--overwrite still spares other data", None, "train-proj scan.h5 --out data --iters 1 --overwrite",
     "not written by turndiff"),
    (1, "fit over a folder of other data", None, "fit scan.h5 --out data --overwrite", "not written by turndiff"),
    (2, "fbp over its input", None, "fbp scan.h5 --out scan.h5 --overwrite", "input"),
    (2, "reconstruct over its input", None, "reconstruct model scan.h5 --out scan.h5 --overwrite", "input"),
    (2, "denoise-proj over its input", None,
     "denoise-proj model/projection_denoiser scan.h5 --out scan.h5 --overwrite", "input"),
    (2, "simulate over its input", None, "simulate image.npy --out image.npy --overwrite", "input"),
    (3, "output is a FIFO", _fifo, "fbp scan.h5 --out pipe.npy --overwrite", "special file"),
    (4, "stage-1 weights truncated", _weights(b"\x00" * 7), "reconstruct model scan.h5 --out r.h5", "safetensors"),
    (4, "stage-1 weights a pickle", _weights(b"\x80\x04K\x01."), "reconstruct model scan.h5 --out r.h5",
     "safetensors"),
    (4, "stage-1 weights empty", _weights(b""), "reconstruct model scan.h5 --out r.h5", "safetensors"),
    (4, "stage-1 weights bad header", _weights(b"\xff" * 8 + b"{not json"), "reconstruct model scan.h5 --out r.h5",
     "safetensors"),
    (4, "stage-1 weights damaged (denoise-proj)", _weights(b"\x00" * 7),
     "denoise-proj model/projection_denoiser scan.h5 --out d.h5", "safetensors"),
    (4, "index without geometry", _index(lambda i: {k: v for k, v in i.items() if k != "geometry"}),
     "reconstruct model scan.h5 --out r.h5", "turndiff.json"),
    (4, "index is a list", _index(lambda i: [1, 2]), "reconstruct model scan.h5 --out r.h5", "turndiff.json"),
    (4, "photons in the index a string", _index(lambda i: {**i, "photons_train_estimated": "lots"}),
     "reconstruct model scan.h5 --out r.h5", "'photons_train_estimated'"),
    (4, "seed in the index a list", _index(lambda i: {**i, "seed": [0]}), "reconstruct model scan.h5 --out r.h5",
     "'seed'"),
    (4, "component config a list", _component_config([1, 2]), "reconstruct model scan.h5 --out r.h5", "config.json"),
    (5, "stage 2 deleted", lambda ws: shutil.rmtree(ws / "model" / "latent_diffusion"),
     "reconstruct model scan.h5 --out r.h5", "latent_diffusion"),
    (5, "stage 1 on another geometry", _index(_other_geometry), "reconstruct model scan.h5 --out r.h5", "geometry"),
    (6, "resume on other data", _second_scan_interrupted, "train-proj other.h5 --out m --iters 1",
     "--restart"),
    (8, "photons negative (fbp)", _photons(-100.0), "fbp scan.h5 --out r.npy", "'photons'"),
    (8, "photons negative (train-proj)", _photons(-100.0), "train-proj scan.h5 --out m --iters 1", "'photons'"),
    (8, "photons a word (reconstruct)", _photons("lots"), "reconstruct model scan.h5 --out r.h5", "'photons'"),
    (8, "photons NaN (denoise-proj)", _photons(float("nan")),
     "denoise-proj model/projection_denoiser scan.h5 --out d.h5", "'photons'"),
    (11, "--alpha nan", None, "train-proj scan.h5 --out m --iters 1 --alpha nan", "alpha"),
    (11, "--electronic-noise nan", None, "simulate image.npy --out s.h5 --electronic-noise nan", "electronic"),
    (11, "image of 1e30 HU", _image(1e30), "simulate image.npy --out s.h5", "not HU"),
    (11, "image of -1e30 HU", _image(-1e30), "simulate image.npy --out s.h5", "not HU"),
    (11, "sinogram of 1e30", _sinogram(1e30), "fbp scan.h5 --out r.npy", "not post-log"),
    (11, "--photons 1e-3", None, "simulate image.npy --out s.h5 --photons 1e-3", "photons"),
    (11, "--photons 1e30", None, "simulate image.npy --out s.h5 --photons 1e30", "photons"),
    (12, "fit under a file", _file_where_a_folder_belongs, "fit scan.h5 --out notafolder/m", "notafolder"),
    (12, "bad --template", None, "reconstruct model scan.h5 --out r.h5 --template scan.h5", "scan.h5"),
    (12, "--steps too large", None, "reconstruct model scan.h5 --out r.h5 --steps 100000", "steps"),
    (12, "DICOM out over other data", None, "reconstruct model scan.h5 --out data --format dicom --overwrite",
     "not written by turndiff"),
    (12, "PNG out over other data (fbp)", None, "fbp scan.h5 --out data --format png --overwrite",
     "not written by turndiff"),
    (13, "unknown option", None, "fbp scan.h5 --out r.npy --bogus", "--bogus"),
    (13, "--photons not a number", None, "simulate image.npy --out s.h5 --photons abc", "--photons"),
    (13, "--seed -1", None, "simulate image.npy --out s.h5 --seed -1", "--seed"),
    (13, "text file named .npy", _text_npy, "simulate notes.npy --out s.h5", "not a NumPy array file"),
    (13, "RT structure set", _rtstruct, "simulate rt --out s.h5", "without pixel data"),
]


def _snapshot(folder: Path) -> dict[str, tuple]:
    """Every entry under ``folder`` (hidden ones included): kind, permissions and content."""
    out = {}
    for root, dirs, files in os.walk(folder):
        for name in dirs + files:
            p = Path(root) / name
            st = p.lstat()
            digest = None
            if p.is_file() and not p.is_symlink():
                digest = hashlib.sha1(p.read_bytes()).hexdigest()
            out[str(p.relative_to(folder))] = (st.st_mode, digest)
    return out


@pytest.mark.parametrize("defect, damage, args, names",
                         [pytest.param(d, dmg, a, n, id=f"{d}: {name}") for d, name, dmg, a, n in DEFECTS])
def test_bad_input_is_refused_with_one_line_and_nothing_touched(workspace, tmp_path, monkeypatch, defect, damage,
                                                                args, names):
    ws = tmp_path / "ws"
    shutil.copytree(workspace, ws)
    if damage is not None:
        damage(ws)
    before = _snapshot(ws)
    monkeypatch.chdir(ws)
    import io
    from contextlib import redirect_stderr

    err = io.StringIO()
    with redirect_stderr(err), pytest.raises(SystemExit) as exit_:
        main(args.split())
    text = err.getvalue()
    lines = [ln for ln in text.splitlines() if ln.strip()]
    assert exit_.value.code == 2, (exit_.value.code, text[-2000:])
    assert len(lines) == 1 and lines[0].startswith("turndiff: error:"), text[-2000:]
    assert names in lines[0], lines[0]
    assert "Traceback" not in text
    assert _snapshot(ws) == before, "the working folder changed"


def test_absurd_values_print_no_warning_first(tmp_path):
    """Defect 13: an overflow printed a RuntimeWarning before the error. Through a real
    process (pytest captures warnings in-process): stderr is the one line and nothing else."""
    g = default_fan_geometry(SIZE)
    write_h5(tmp_path / "huge.h5", {"sinogram": np.full((1, *g.sinogram_shape), 1e30, np.float32)},
             geometry_json=g.to_json(), photons=2.5e4)
    out = subprocess.run([sys.executable, "-m", "turndiff", "fbp", str(tmp_path / "huge.h5"), "--out",
                          str(tmp_path / "r.npy")], capture_output=True, text=True)
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and "Warning" not in out.stderr, out.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["huge.h5"]


def test_no_development_script_evaluates_its_arguments():
    """Defect 15: a benchmark script called ``eval`` on a command-line argument."""
    import ast

    for script in (Path(__file__).parents[1] / "benchmarks").glob("*.py"):
        for node in ast.walk(ast.parse(script.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) in ("eval", "exec"):
                pytest.fail(f"{script.name}:{node.lineno} calls {node.func.id}")
