"""Resumable run folders (``OUT.run/``): the work of an interrupted ``fit``, ``train-proj``,
``train-ldm`` or ``reconstruct``, tied to the input and settings that started it."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np

from turndiff.errors import InputError
from turndiff.io.hdf5 import SinogramReader

__all__ = ["RUN_INPUT", "claim_run_dir", "claimed_run_dirs", "run_dir_for"]

RUN_INPUT = "input.json"

_CLAIMED: list[Path] = []


def claimed_run_dirs() -> list[Path]:
    """The run folders this process has claimed (the CLI names them when interrupted)."""
    return list(_CLAIMED)


def run_dir_for(out: str | os.PathLike[str]) -> Path:
    """The run folder of an output: ``OUT.run`` beside it."""
    out = Path(out)
    return out.with_name(out.name + ".run")


def _sha256(sinogram: np.ndarray | SinogramReader, batch: int = 16) -> tuple[str, list[int]]:
    h = hashlib.sha256()
    if isinstance(sinogram, SinogramReader):  # a study read in batches, never whole
        for a in range(0, len(sinogram), batch):
            h.update(np.ascontiguousarray(sinogram.read(slice(a, a + batch)), np.float32).tobytes())
        return h.hexdigest(), list(sinogram.shape)
    h.update(np.ascontiguousarray(sinogram, np.float32).tobytes())
    return h.hexdigest(), list(sinogram.shape)


def claim_run_dir(run_dir: str | os.PathLike[str], sinogram: np.ndarray | SinogramReader, settings: dict, *,
                  restart: bool = False) -> bool:
    """Tie a resumable run folder to its input: a run interrupted on other data or
    settings is refused instead of silently continued (resuming from another scan's
    weights). Writes ``run_dir/input.json`` (SHA-256 of the sinogram, its shape and the
    settings); ``sinogram`` may be an array or a :class:`SinogramReader` (hashed in
    batches). ``restart`` discards an interrupted run first (the CLI's ``--restart``).
    Returns True when an interrupted run of the same input is resumed."""
    import shutil

    run_dir = Path(run_dir)
    if restart and run_dir.is_dir():
        shutil.rmtree(run_dir)
    digest, shape = _sha256(sinogram)
    stamp = {"sinogram_sha256": digest, "shape": shape, "settings": settings}
    path = run_dir / RUN_INPUT
    if path.is_file():
        try:
            before = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            before = None
        if before != json.loads(json.dumps(stamp)):
            raise InputError(f"{run_dir}: holds an interrupted run on other data or settings; "
                             "pass --restart to discard it and start again, or rerun the same command to resume")
        _CLAIMED.append(run_dir)
        return True
    run_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(stamp, indent=2))
    _CLAIMED.append(run_dir)
    return False
