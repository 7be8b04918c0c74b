"""Kill turndiff commands at random points and check what they leave (docs/RELIABILITY.md).

Run::

    python benchmarks/kill_test.py [--kills 30] [--seed 0] [--workdir DIR] [--only fbp,fit]

Each round starts one of ``simulate``, ``fbp``, ``fit --preset tiny`` (both stages, a few
steps each: the training, checkpoint and resume machinery of every preset), ``train-proj``
(40 steps with SURE checkpoint selection, whose state must survive a resume) and
``reconstruct`` (a tiny model) on a small scan, sends SIGTERM or SIGKILL after a random
delay, and checks:

* SIGTERM: exit 143, no output and no hidden temporary left;
* SIGKILL: no output, and within 5 s (the janitor process removes what the killed writer
  could not) nothing left but a training run's ``OUT.run/`` resume folder; the same
  command run again completes and leaves nothing but its output;
* a signal that arrives after the output was renamed into place finds the work done: the
  output must then read back whole;
* ``fit`` and ``train-proj``: a run killed and rerun (resuming from ``OUT.run/``) gives the
  same weights, every safetensors file of the model folder bit for bit, as an
  uninterrupted run.

Prints one line per kill and a summary; exits non-zero if any check failed.
"""

from __future__ import annotations

import argparse
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file


#: The training run that is killed and resumed, and its uninterrupted reference.
TRAIN = ("--iters", "40", "--sure-every", "20")
FIT = ("--preset", "tiny")
#: Seconds after the start at which the signal is sent (uniform); `fbp` is done in about
#: two seconds, start-up included, so its signals come sooner.
DELAYS = {"fbp": (0.3, 2.0)}


def _turndiff(*args: str) -> list[str]:
    return [sys.executable, "-m", "turndiff", *args]


def _complete(path: Path) -> bool:
    """Whether an output reads back whole (a model folder: its weights load)."""
    from turndiff.io import read_h5, read_volume

    try:
        if path.is_dir():
            load_file(str(path / "model.safetensors"))
        elif path.suffix == ".h5":
            read_h5(path)
        else:
            read_volume(path)
        return True
    except Exception:
        return False


def _leftovers(folder: Path, keep: set[str], wait: float = 0.0) -> list[str]:
    """What ``folder`` holds beyond ``keep``, after waiting up to ``wait`` seconds for it to
    empty (the janitor cleans up asynchronously, after the writer's death)."""
    deadline = time.monotonic() + wait
    while True:
        left = sorted(p.name for p in folder.iterdir() if p.name not in keep)
        if not left or time.monotonic() >= deadline:
            return left
        time.sleep(0.05)


def _weights(folder: Path) -> dict[str, dict]:
    """Every safetensors file of a model folder, by path inside it."""
    return {str(f.relative_to(folder)): load_file(str(f)) for f in sorted(folder.rglob("*.safetensors"))}


def _same(a: dict[str, dict], b: dict[str, dict]) -> bool:
    return a.keys() == b.keys() and all(
        a[f].keys() == b[f].keys() and all(np.array_equal(a[f][n], b[f][n]) for n in a[f]) for f in a)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--kills", type=int, default=30)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--only", default=None, help="comma-separated commands to kill (default: all five)")
    args = ap.parse_args()
    rng = random.Random(args.seed)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="turndiff-kill-"))
    work.mkdir(parents=True, exist_ok=True)
    scan = work / "scan.h5"
    subprocess.run(_turndiff("simulate", "phantom:2", "--size", "64", "--out", str(scan), "--overwrite"),
                   check=True, capture_output=True)
    # `simulate` and `fbp` take a second or two on small data: give them enough to be
    # killed in the middle of (a few seconds at 256 x 256).
    big = work / "big.h5"
    subprocess.run(_turndiff("simulate", "phantom:48", "--size", "256", "--out", str(big), "--overwrite"),
                   check=True, capture_output=True)
    # A tiny TurnDiff model for `reconstruct` (the CLI's `fit` has only the fast and paper presets).
    from turndiff.io import read_sinogram_h5
    from turndiff.physics import geometry_from_json
    from turndiff.pipeline import fit

    sino, attrs = read_sinogram_h5(scan)
    model = work / "model"
    fit(sino, geometry=geometry_from_json(attrs["geometry"]), photons=attrs["photons"], preset="tiny",
        device="cpu", progress=False).save_pretrained(model)
    # The reference training runs: uninterrupted, in their own folder.
    ref_dir = work / "ref"
    ref_dir.mkdir(exist_ok=True)
    subprocess.run(_turndiff("train-proj", str(scan), "--out", str(ref_dir / "proj"), *TRAIN), check=True,
                   capture_output=True)
    subprocess.run(_turndiff("fit", str(scan), "--out", str(ref_dir / "fit"), *FIT), check=True, capture_output=True)
    reference = {"train-proj": _weights(ref_dir / "proj"), "fit": _weights(ref_dir / "fit")}

    commands = {
        "simulate": lambda out: _turndiff("simulate", "phantom:24", "--size", "256", "--out", str(out / "s.h5")),
        "fbp": lambda out: _turndiff("fbp", str(big), "--out", str(out / "r.nii.gz")),
        "fit": lambda out: _turndiff("fit", str(scan), "--out", str(out / "fit"), *FIT),
        "train-proj": lambda out: _turndiff("train-proj", str(scan), "--out", str(out / "proj"), *TRAIN),
        "reconstruct": lambda out: _turndiff("reconstruct", str(model), str(scan), "--out", str(out / "x.h5"),
                                             "--save-intermediates"),
    }
    outputs = {"simulate": "s.h5", "fbp": "r.nii.gz", "fit": "fit", "train-proj": "proj", "reconstruct": "x.h5"}
    names = args.only.split(",") if args.only else list(commands)
    unknown = set(names) - set(commands)
    if unknown:
        raise SystemExit(f"--only: unknown command(s) {sorted(unknown)}; choose from {list(commands)}")
    failures = 0
    for k in range(args.kills):
        name = names[k % len(names)]
        sig = signal.SIGTERM if k % 2 == 0 else signal.SIGKILL
        out = work / f"round{k:02d}"
        out.mkdir()
        proc = subprocess.Popen(commands[name](out), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        time.sleep(rng.uniform(*DELAYS.get(name, (0.5, 4.0))))
        proc.send_signal(sig)
        try:
            _, err = proc.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
        target = out / outputs[name]
        # The signal may arrive after the output was renamed into place (the work was
        # done): then the output must be complete, which reading it back checks.
        finished = proc.returncode == 0 or (target.exists() and _complete(target))
        problems = []
        run_dir = outputs[name] + ".run"
        if finished:
            note = "output complete before the signal" + ("" if proc.returncode == 0 else f" (exit {proc.returncode})")
        elif sig == signal.SIGTERM:
            note = f"SIGTERM -> exit {proc.returncode}"
            if proc.returncode != 143:
                problems.append(f"exit {proc.returncode}, expected 143")
            if "Traceback" in err:
                problems.append("traceback")
            left = _leftovers(out, {run_dir})
            if left:
                problems.append(f"left {left}")
        else:
            note = "SIGKILL"
            if (out / outputs[name]).exists():
                problems.append("an output appeared although the command was killed")
            left = _leftovers(out, {run_dir}, wait=5.0)
            if left:
                problems.append(f"left {left}")
        # Rerun (resuming a killed training run) and check what is left.
        again = subprocess.run(commands[name](out) + (["--overwrite"] if finished else []), capture_output=True,
                               text=True)
        if again.returncode != 0:
            problems.append(f"rerun failed: {again.stderr.strip().splitlines()[-1:]}")
        left = _leftovers(out, {outputs[name]})
        if left:
            problems.append(f"after the rerun, left {left}")
        if name in reference and again.returncode == 0:
            same = _same(_weights(out / outputs[name]), reference[name])
            note += ", resumed weights " + ("identical" if same else "DIFFER")
            if not same:
                problems.append("resumed weights differ from the uninterrupted run")
        failures += bool(problems)
        print(f"{k:2d} {name:12s} {note}: {'ok' if not problems else '; '.join(problems)}", flush=True)
        shutil.rmtree(out, ignore_errors=True)
    print(f"{args.kills} kills, {failures} with problems")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
