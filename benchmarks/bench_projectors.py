"""Projector speed (issue 20): FP and FBP per 512x512 slice, single and batched, against
ASTRA's CPU forward projector in the same run, and what the CLI pays before its work.

Run::

    python benchmarks/bench_projectors.py [--repeats 5] [--batch 8] [--views 720]
        [--device cpu|cuda] [--no-cli] [--json FILE]

Prints Markdown tables:

* per-slice seconds of the numba FP and FBP (arc and flat fan detectors), for one slice
  and for a batch of ``--batch`` slices (total time / batch), best of ``--repeats``;
* ASTRA 2.5's CPU ``line_fanflat`` FP on the same flat geometry (when astra-toolbox is
  installed: ``pip install -e ".[astra]"``) and the ratio of turndiff's arc FP + FBP to
  it, single and batched;
* the CLI: wall seconds of ``turndiff --version``, ``turndiff fbp --help`` and
  ``turndiff fbp`` of one 512x512 slice, with the FBP's own share of the last.

With ``--device cuda``, the torch backend's per-slice times (single and batched) instead.
The absolute seconds drift 2x between machines; quote the ratios of one run.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from turndiff.physics import CTProjector, default_fan_geometry
from turndiff.physics.analytic import ellipse_image


def _best(fn, repeats: int) -> float:
    fn()  # warm-up (JIT compile, caches)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def _stack(img: np.ndarray, batch: int) -> np.ndarray:
    # Different slices (scaled copies), so nothing can be cached between them.
    return np.ascontiguousarray(np.stack([img * (1 + 0.05 * k) for k in range(batch)]), np.float32)


def _cpu(args, rows: dict) -> None:
    for shape in ("arc", "flat"):
        g = default_fan_geometry(args.size, det_shape=shape, views=args.views)
        A = CTProjector(g, backend="numba")
        img = ellipse_image(g).astype(np.float32)
        sino = A.forward(img)
        imgs = _stack(img, args.batch)
        sinos = A.forward(imgs)
        rows[f"numba {shape} FP, 1 slice"] = _best(lambda: A.forward(img), args.repeats)
        rows[f"numba {shape} FBP, 1 slice"] = _best(lambda: A.fbp(sino), args.repeats)
        rows[f"numba {shape} FP, batch of {args.batch}"] = _best(lambda: A.forward(imgs), args.repeats) / args.batch
        rows[f"numba {shape} FBP, batch of {args.batch}"] = _best(lambda: A.fbp(sinos), args.repeats) / args.batch


def _astra(args, rows: dict) -> str | None:
    try:
        import astra
    except ImportError:
        return None
    g = default_fan_geometry(args.size, det_shape="flat", views=args.views)
    ps = g.pixel_spacing
    pg = astra.create_proj_geom("fanflat", g.det_spacing / ps, g.det_count, CTProjector(g).angles + math.pi / 2,
                                g.src_radius / ps, (g.src_det_distance - g.src_radius) / ps)
    vg = astra.create_vol_geom(g.image_size, g.image_size)
    pid = astra.create_projector("line_fanflat", pg, vg)
    img = ellipse_image(g)

    def astra_fp():
        sid, _ = astra.create_sino(img, pid)
        astra.data2d.delete(sid)

    key = f"ASTRA {astra.__version__} CPU line_fanflat FP, 1 slice"
    rows[key] = _best(astra_fp, args.repeats)
    astra.projector.delete(pid)
    return key


def _cuda(args, rows: dict) -> None:
    def sync(f):
        def run():
            f()
            torch.cuda.synchronize()
        return run

    for shape in ("arc", "flat"):
        g = default_fan_geometry(args.size, det_shape=shape, views=args.views)
        A = CTProjector(g, backend="torch", view_chunk=90)
        x = torch.from_numpy(ellipse_image(g).astype(np.float32)).to(args.device)
        xs = torch.from_numpy(_stack(ellipse_image(g), args.batch)).to(args.device)
        s, ss = A.forward(x), A.forward(xs)
        rows[f"torch {args.device} {shape} FP, 1 slice"] = _best(sync(lambda: A.forward(x)), args.repeats)
        rows[f"torch {args.device} {shape} FBP, 1 slice"] = _best(sync(lambda: A.fbp(s)), args.repeats)
        rows[f"torch {args.device} {shape} FP, batch of {args.batch}"] = (
            _best(sync(lambda: A.forward(xs)), args.repeats) / args.batch)
        rows[f"torch {args.device} {shape} FBP, batch of {args.batch}"] = (
            _best(sync(lambda: A.fbp(ss)), args.repeats) / args.batch)
        if args.device.startswith("cuda"):  # the grid_sample FP beside the Triton one it falls back to
            A.use_triton = False
            grid = A.forward(xs)
            rows[f"torch {args.device} {shape} FP (grid_sample), batch of {args.batch}"] = (
                _best(sync(lambda: A.forward(xs)), args.repeats) / args.batch)
            A.use_triton = True
            rows[f"{shape} FP: max |Triton - grid_sample| / max |FP| (not seconds)"] = float(
                (grid - ss).abs().max() / ss.abs().max())


def _wall(cmd: list[str], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        times.append(time.perf_counter() - t)
    return min(times)


def _cli(args, rows: dict) -> None:
    """Start-up of the CLI and the share of one 512x512 ``turndiff fbp`` outside its FBP."""
    turndiff = [sys.executable, "-m", "turndiff"]
    rows["CLI: turndiff --version"] = _wall([*turndiff, "--version"], args.repeats)
    rows["CLI: turndiff fbp --help"] = _wall([*turndiff, "fbp", "--help"], args.repeats)
    with tempfile.TemporaryDirectory() as tmp:
        scan = Path(tmp) / "scan.h5"
        subprocess.run([*turndiff, "simulate", "phantom:1", "--size", str(args.size), "--out", str(scan)],
                       check=True, capture_output=True)
        out = Path(tmp) / "r.npy"
        rows["CLI: turndiff fbp, one slice (wall)"] = _wall(
            [*turndiff, "fbp", str(scan), "--out", str(out), "--overwrite"], args.repeats)
        # The FBP itself, as the command runs it (cached kernels loaded, first call in a process).
        code = ("import time, sys; from turndiff.io import read_sinogram_h5; from turndiff.physics import "
                "CTProjector, geometry_from_json; s, a = read_sinogram_h5(sys.argv[1]); "
                "A = CTProjector(geometry_from_json(a['geometry'])); t = time.perf_counter(); A.fbp_hu(s); "
                "print(time.perf_counter() - t)")
        inside = [float(subprocess.run([sys.executable, "-c", code, str(scan)], check=True, capture_output=True,
                                       text=True).stdout) for _ in range(args.repeats)]
        rows["CLI: the FBP inside it (first call in a process)"] = min(inside)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--views", type=int, default=720)
    ap.add_argument("--no-cli", action="store_true", help="skip the CLI start-up measurements")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()

    import numba

    rows: dict[str, float] = {}
    g = default_fan_geometry(args.size, views=args.views)
    print(f"{args.size}x{args.size}, fan beam {g.views} views x {g.det_count} bins; best of {args.repeats}; "
          f"{platform.processor() or platform.machine()}, numba threads {numba.get_num_threads()}")
    if args.device == "cpu":
        _cpu(args, rows)
        astra_key = _astra(args, rows)
    else:
        _cuda(args, rows)
        astra_key = None
    if not args.no_cli and args.device == "cpu":
        _cli(args, rows)
    print("| operation | seconds (per slice for batches) |\n|---|---|")
    for k, v in rows.items():
        print(f"| {k} | {v:.3f} |")
    if args.device == "cpu":
        b = args.batch
        single = rows["numba arc FP, 1 slice"] + rows["numba arc FBP, 1 slice"]
        batched = rows[f"numba arc FP, batch of {b}"] + rows[f"numba arc FBP, batch of {b}"]
        print(f"\narc FP + FBP per slice: {single:.3f} s single, {batched:.3f} s in a batch of {b} "
              f"(batch / single {batched / single:.2f}; bar <= 1)")
        if astra_key:
            a = rows[astra_key]
            print(f"ratio to ASTRA's FP alone: {single / a:.2f} single, {batched / a:.2f} batched (bar <= 0.40)")
        if "CLI: turndiff fbp, one slice (wall)" in rows:
            wall, inside = rows["CLI: turndiff fbp, one slice (wall)"], rows["CLI: the FBP inside it (first call in a process)"]
            print(f"turndiff fbp: {wall:.2f} s wall, FBP {inside:.2f} s, outside the FBP {wall - inside:.2f} s "
                  f"({(wall - inside) / wall:.0%}; bar < 50%)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
