"""The benchmark: every method and ablation on the same phantoms, one evaluation path.

Quality (PSNR / SSIM / RMSE, mean +- std over test slices) per method x dose x window,
an ablation table, a cost table (training time, inference seconds per slice, peak
memory), figures and a self-contained HTML report plus ``results.json``.

Every method comes from one registry (:data:`turndiff.benchmark.methods.METHODS`) and its
rows go through one evaluation. Training uses the noisy training sinograms only; the
exceptions declare their clean data: IPDM (unpaired) and the supervised RED-CNN upper bound.
"""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path
from typing import Callable

import torch

from ..metrics import evaluate, gradient_ratios, through_plane
from .data import VOLUME, make_bench_data
from .methods import METHOD_ORDER, METHODS, Result, RunContext
from .report import write_report

__all__ = ["PRESETS", "ALL_METHODS", "run_benchmark"]

#: Data and training sizes per preset.
PRESETS = {
    "fast": dict(size=256, n_train=8, n_test=6, doses=(0.25, 0.10, 0.50, 0.05, 0.75), volume=16),
    "paper": dict(size=512, n_train=32, n_test=16, doses=(0.25, 0.10, 0.50, 0.05, 0.75), volume=48),
    "tiny": dict(size=64, n_train=2, n_test=2, doses=(0.25, 0.10), volume=3),
}
ALL_METHODS = METHOD_ORDER


def run_benchmark(
    out_dir: str | Path,
    *,
    preset: str = "fast",
    methods: list[str] | None = None,
    device: str = "auto",
    seed: int = 0,
    log: Callable[[str], None] = print,
) -> dict:
    """Run the benchmark; writes tables, figures, ``report.html`` and ``results.json`` to ``out_dir``."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose {', '.join(PRESETS)}")
    p = PRESETS[preset]
    chosen = list(methods) if methods else list(ALL_METHODS)
    unknown = [m for m in chosen if m not in ALL_METHODS]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; choose from {', '.join(ALL_METHODS)}")
    if "ablations" in chosen and "turndiff" not in chosen:
        chosen.append("turndiff")  # the ablations are read against TurnDiff's own rows
    model_preset = "tiny" if preset == "tiny" else preset
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    log(f"data: {p['n_train']} training + {p['n_test']} test phantoms at {p['size']}x{p['size']}, "
        f"doses {', '.join(f'{d:.0%}' for d in p['doses'])} (training at 25%)")
    data = make_bench_data(size=p["size"], n_train=p["n_train"], n_test=p["n_test"], test_doses=p["doses"],
                           seed=seed, progress=False, volume=p.get("volume", 0))
    doses = p["doses"]
    # The test volume is reconstructed as one more "dose" (the training dose, another patient);
    # the ablations skip it.
    with_volume = tuple(doses) + ((VOLUME,) if p.get("volume") else ())
    results: dict[str, Result] = {}
    ctx = RunContext(preset=model_preset, seed=seed, device=device, run_dir=out / "runs", log=log)
    for key in METHOD_ORDER:  # one registry, one way to run every method
        if key in chosen:
            log(f"{key}: fit and reconstruct")
            t0 = time.perf_counter()
            results.update(METHODS[key].run(data, doses if key == "ablations" else with_volume, ctx))
            log(f"  {key} done in {time.perf_counter() - t0:.0f} s")
    ref = data.test_reference_hu
    quality = {}
    for name, r in results.items():
        quality[name] = {f"{d}": evaluate(r.images[d], ref, mask="body") for d in doses}
        # Detail at the training dose: gradient relative to the reference in its body, and
        # split into the reference's strongest edges and its flat regions (noise / texture).
        quality[name]["gradient_ratios"] = gradient_ratios(r.images[doses[0]], ref, mask="body")
        quality[name]["gradient_ratio"] = quality[name]["gradient_ratios"]["all"]
        if VOLUME in r.images:  # slice-to-slice consistency on consecutive slices of one patient
            vref = data.volume_reference_hu
            quality[name][VOLUME] = {**evaluate(r.images[VOLUME], vref, mask="body"),
                                     "through_plane": through_plane(r.images[VOLUME], vref, mask="body")}
    summary = {
        "preset": preset,
        "seed": seed,
        "data": {k: (list(v) if isinstance(v, tuple) else v) for k, v in p.items()},
        "geometry": json.loads(data.geometry.to_json()),
        "quality": quality,
        "cost": {n: {"train_seconds": r.train_seconds, "infer_seconds_per_slice": r.infer_seconds_per_slice,
                     "peak_memory_mb": r.peak_mb, "uses_clean_data": r.uses_clean_data,
                     "clean_data": r.clean_data, "notes": r.notes}
                 for n, r in results.items()},
        "sampling_spread": next((r.spread for r in results.values() if r.spread), None),
        "total_seconds": time.perf_counter() - t_start,
        "machine": _machine(),
        "date": time.strftime("%Y-%m-%d"),
    }
    write_report(out, summary, results, data, log=log)
    log(f"benchmark done in {summary['total_seconds'] / 60:.1f} min; report: {out / 'report.html'}")
    return summary


def _machine() -> str:
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{platform.machine()}, {os.cpu_count()} CPU cores, {gpu}, torch {torch.__version__}"
