"""Projector speed: FP and FBP per 512x512 slice, fan beam, 720 views x 736 bins.

Compares with ASTRA 2.5's CPU fan-beam forward projector (``line_fanflat``) on the same
geometry when astra-toolbox is installed. Prints a Markdown table; ``--json`` writes the
numbers. Run: ``python benchmarks/bench_projectors.py [--repeats 5] [--device cpu|cuda]``.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import time

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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--views", type=int, default=720)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()

    rows = {}
    for shape in ("arc", "flat"):
        g = default_fan_geometry(args.size, det_shape=shape, views=args.views)
        img = ellipse_image(g)
        if args.device == "cpu":
            A = CTProjector(g, backend="numba")
            sino = A.forward(img)
            rows[f"turndiff numba, {shape} FP"] = _best(lambda: A.forward(img), args.repeats)
            rows[f"turndiff numba, {shape} FBP"] = _best(lambda: A.fbp(sino), args.repeats)
        else:
            A = CTProjector(g, backend="torch", view_chunk=90)
            x = torch.from_numpy(img).to(args.device)

            def sync(f):
                def run():
                    f()
                    torch.cuda.synchronize()
                return run

            s = A.forward(x)
            rows[f"turndiff torch {args.device}, {shape} FP"] = _best(sync(lambda: A.forward(x)), args.repeats)
            rows[f"turndiff torch {args.device}, {shape} FBP"] = _best(sync(lambda: A.fbp(s)), args.repeats)
    g = default_fan_geometry(args.size, det_shape="flat", views=args.views)
    try:
        import astra

        ps = g.pixel_spacing
        pg = astra.create_proj_geom("fanflat", g.det_spacing / ps, g.det_count, CTProjector(g).angles + math.pi / 2,
                                    g.src_radius / ps, (g.src_det_distance - g.src_radius) / ps)
        vg = astra.create_vol_geom(g.image_size, g.image_size)
        pid = astra.create_projector("line_fanflat", pg, vg)
        img = ellipse_image(g)

        def astra_fp():
            sid, _ = astra.create_sino(img, pid)
            astra.data2d.delete(sid)

        rows[f"ASTRA {astra.__version__} CPU line_fanflat FP"] = _best(astra_fp, args.repeats)
    except ImportError:
        pass

    print(f"{args.size}x{args.size}, fan beam {g.views} views x {g.det_count} bins; best of {args.repeats}; "
          f"{platform.processor() or platform.machine()}, torch threads {torch.get_num_threads()}")
    print("| operation | seconds per slice |\n|---|---|")
    for k, v in rows.items():
        print(f"| {k} | {v:.3f} |")
    if args.device == "cpu":
        total = rows["turndiff numba, arc FP"] + rows["turndiff numba, arc FBP"]
        astra_key = next((k for k in rows if k.startswith("ASTRA")), None)
        print(f"\nturndiff arc FP + FBP: {total:.3f} s")
        if astra_key:
            print(f"ratio (turndiff FP+FBP) / (ASTRA FP alone): {total / rows[astra_key]:.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
