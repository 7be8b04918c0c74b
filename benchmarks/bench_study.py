"""Whole studies (issue 16): `simulate` -> `fit --train-slices` -> `reconstruct` -> DICOM,
the time of each step, `reconstruct` seconds per slice, and the peak resident memory of
`reconstruct` on a short and a long study (it streams: the two should be close).

Run::

    python benchmarks/bench_study.py [--size 512] [--slices 64,256] [--train-slices 16]
        [--preset fast] [--workdir DIR]

The long study is simulated once (phantoms, 25% dose); the short one is its first slices.
Every command runs as its own process (`python -m turndiff ...`), timed as a whole, with
its peak RSS from ``wait4``. The DICOM series written is read back with pydicom: one
series, one file per slice. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _run(*args: str) -> tuple[float, float]:
    """Run ``turndiff ARGS``; return (wall seconds, peak RSS in MB). Its progress bars go to
    a temporary file, not a pipe: a pipe nobody reads until the end fills up (64 KB) and
    blocks a long command for good (it did, 40 minutes into a 512 x 512 fit)."""
    t = time.perf_counter()
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen([sys.executable, "-m", "turndiff", *args], stdout=subprocess.DEVNULL, stderr=log)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t
        log.seek(0)
        err = log.read().decode(errors="replace")
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"turndiff {' '.join(args)} failed:\n{err[-2000:]}")
    print(f"turndiff {' '.join(args)}: {wall:.1f} s, peak RSS {usage.ru_maxrss / 1024.0:.0f} MB", flush=True)
    return wall, usage.ru_maxrss / 1024.0  # Linux: KB


def _first_slices(src: Path, dst: Path, n: int) -> None:
    import h5py

    with h5py.File(src) as f, h5py.File(dst, "w") as g:
        g["sinogram"] = f["sinogram"][:n]
        for k, v in f.attrs.items():
            g.attrs[k] = v


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--slices", default="64,256", help="short,long study lengths")
    ap.add_argument("--train-slices", type=int, default=16)
    ap.add_argument("--preset", default="fast")
    ap.add_argument("--workdir", default=None)
    args = ap.parse_args()
    short, long_ = (int(v) for v in args.slices.split(","))
    work = Path(args.workdir or tempfile.mkdtemp(prefix="turndiff-study-"))
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    scan = work / f"study{long_}.h5"
    t, m = _run("simulate", f"phantom:{long_}", "--size", str(args.size), "--out", str(scan), "--overwrite")
    rows.append((f"simulate {long_} slices", t, m, t / long_))
    _first_slices(scan, work / f"study{short}.h5", short)
    model = work / "model"
    t, m = _run("fit", str(scan), "--out", str(model), "--preset", args.preset, "--train-slices",
                str(args.train_slices), "--overwrite")
    rows.append((f"fit --preset {args.preset} --train-slices {args.train_slices}", t, m, None))
    rss = {}
    for n in (short, long_):
        out = work / f"recon{n}"
        t, m = _run("reconstruct", str(model), str(work / f"study{n}.h5"), "--out", str(out), "--format", "dicom",
                    "--overwrite")
        rss[n] = m
        rows.append((f"reconstruct {n} slices -> DICOM", t, m, t / n))
        import pydicom

        files = sorted(out.glob("*.dcm"))
        series = {pydicom.dcmread(f, stop_before_pixels=True).SeriesInstanceUID for f in files}
        assert len(files) == n and len(series) == 1, (len(files), series)
    print(f"{args.size}x{args.size}, {os.cpu_count()} CPUs; work folder {work}")
    print("| step | wall s | peak RSS MB | s per slice |\n|---|---|---|---|")
    for name, t, m, per in rows:
        print(f"| {name} | {t:.1f} | {m:.0f} | {'' if per is None else f'{per:.2f}'} |")
    print(f"\npeak RSS of reconstruct, {long_} against {short} slices: {rss[long_] / rss[short]:.2f}x "
          f"(bar: within 25%)")


if __name__ == "__main__":
    main()
