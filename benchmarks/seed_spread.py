"""The spread of the benchmark's numbers over retraining.

    turndiff benchmark --out bench_out/s0 --methods turndiff                # training seed 0
    turndiff benchmark --out bench_out/s1 --methods turndiff --train-seed 1
    turndiff benchmark --out bench_out/s2 --methods turndiff --train-seed 2
    python benchmarks/seed_spread.py bench_out/s0 bench_out/s1 bench_out/s2

The runs share the phantoms and their noise (``--seed``) and differ only in the seed of
their trainings; the table gives each method's mean PSNR / SSIM over the runs as ``mean +-
std (min - max)``. A margin between two methods smaller than that spread is not settled by
one training. This script only reads finished reports: it chooses nothing and computes
nothing on the images.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from turndiff.benchmark.report import seed_spread_table


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", help="benchmark output folders (or their results.json)")
    ap.add_argument("--window", choices=("soft", "full"), default="soft")
    ap.add_argument("--methods", default=None, help="comma-separated rows (default: those in every run)")
    ap.add_argument("--doses", default=None, help="comma-separated dose fractions (default: the runs' doses)")
    args = ap.parse_args()
    summaries = []
    for r in args.runs:
        path = Path(r) / "results.json" if Path(r).is_dir() else Path(r)
        if not path.is_file():
            raise SystemExit(f"{r}: no results.json (run `turndiff benchmark --out {r}` first)")
        summaries.append(json.loads(path.read_text()))
    methods = [m.strip() for m in args.methods.split(",")] if args.methods else None
    try:
        doses = [float(d) for d in args.doses.split(",")] if args.doses else None
        table = seed_spread_table(summaries, window=args.window, methods=methods, doses=doses)
    except (ValueError, KeyError) as e:
        raise SystemExit(f"seed_spread: {e}") from None
    seeds = ", ".join(str(s.get("train_seed", s["seed"])) for s in summaries)
    print(f"{args.window} window, {len(summaries)} runs (training seeds {seeds}), preset {summaries[0]['preset']}\n")
    print(table)


if __name__ == "__main__":
    main()
