"""The benchmark: every method and ablation on the same phantoms, one evaluation path.

Quality (PSNR / SSIM / RMSE, mean +- std over test slices) per method x dose x window,
an ablation table, a cost table (training time, inference seconds per slice, peak
memory), figures and a self-contained HTML report plus ``results.json``.

Every method comes from one registry (:data:`turndiff.benchmark.methods.METHODS`) and its
rows go through one evaluation. Training uses the noisy training sinograms only; the
exceptions declare their clean data: IPDM (unpaired) and the supervised RED-CNN upper bound.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..checkpoint import CheckpointError, load_tensors, read_json, save_tensors, write_json
from ..metrics import evaluate, gradient_ratios, through_plane
from .data import VOLUME, make_bench_data
from .machine import describe_machine, machine_speed, speed_text
from .methods import METHOD_ORDER, METHODS, Result, RunContext
from .report import write_report
from .splits import TEST_SEED, VALIDATION_SEED

__all__ = ["PRESETS", "ALL_METHODS", "SPLITS", "run_benchmark"]

#: The phantoms a benchmark can be scored on: the reported ``test`` slices, or the
#: ``validation`` slices on which choices that involve the baselines are made (the same
#: trainings, another base seed; docs/BENCHMARKS.md, "Tuning protocol").
SPLITS = {"test": TEST_SEED, "validation": VALIDATION_SEED}

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
    train_seed: int | None = None,
    split: str = "test",
    restart: bool = False,
    log: Callable[[str], None] = print,
) -> dict:
    """Run the benchmark; writes tables, figures, ``report.html`` and ``results.json`` to ``out_dir``.

    Resumable: every trained model checkpoints under ``out_dir/runs``, and each method's test
    images are saved in ``out_dir/runs/rows`` as soon as it finishes, so a rerun after an
    interruption redoes only the unfinished methods. Saved rows are reused only when the
    preset, seed, doses, device and the package's code are the same (:func:`rows_stamp`).
    ``restart=True`` deletes ``out_dir/runs`` first.

    ``seed`` draws the phantoms and their noise, and seeds every training; ``train_seed``,
    when given, seeds the trainings (initialisation, crops, recorrupted copies, sampling) in
    its place on the *same* data, so runs with several training seeds give the spread of a
    method's numbers over retraining (``benchmarks/seed_spread.py`` summarises them). (The
    unpaired IPDM's clean phantoms are drawn from it too: they are its training data.)

    ``split="validation"`` scores every method on validation phantoms (base seed
    ``VALIDATION_SEED + seed``) instead of the test ones, with the same training data and
    noise seeds: the table on which a choice that depends on the baselines' numbers (e.g.
    "does TurnDiff keep its lead with this option?") is made without seeing the test slices.
    Its checkpoints can be a test run's (copy ``runs/`` without ``runs/rows``); its saved
    rows are its own."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose {', '.join(PRESETS)}")
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose {', '.join(SPLITS)}")
    p = PRESETS[preset]
    chosen = list(methods) if methods else list(ALL_METHODS)
    unknown = [m for m in chosen if m not in ALL_METHODS]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; choose from {', '.join(ALL_METHODS)}")
    if "ablations" in chosen and "turndiff" not in chosen:
        chosen.append("turndiff")  # the ablations are read against TurnDiff's own rows
    model_preset = "tiny" if preset == "tiny" else preset
    out = Path(out_dir)
    if restart and (out / "runs").is_dir():
        shutil.rmtree(out / "runs")
    out.mkdir(parents=True, exist_ok=True)
    speed = machine_speed(device)
    log(f"machine {speed_text(speed)}")
    t_start = time.perf_counter()
    log(f"data: {p['n_train']} training + {p['n_test']} {split} phantoms at {p['size']}x{p['size']}, "
        f"doses {', '.join(f'{d:.0%}' for d in p['doses'])} (training at 25%)")
    data = make_bench_data(size=p["size"], n_train=p["n_train"], n_test=p["n_test"], test_doses=p["doses"],
                           seed=seed, progress=False, volume=p.get("volume", 0), eval_seed=SPLITS[split] + seed)
    doses = p["doses"]
    # The test volume is reconstructed as one more "dose" (the training dose, another patient);
    # the ablations skip it.
    with_volume = tuple(doses) + ((VOLUME,) if p.get("volume") else ())
    results: dict[str, Result] = {}
    resumed: list[str] = []  # methods whose rows came from an earlier run (not in total_seconds)
    fit_seed = seed if train_seed is None else int(train_seed)
    ctx = RunContext(preset=model_preset, seed=fit_seed, device=device, run_dir=out / "runs", log=log)
    for key in METHOD_ORDER:  # one registry, one way to run every method
        if key in chosen:
            method_doses = doses if key == "ablations" else with_volume
            stamp = rows_stamp(key, preset=preset, seed=seed, doses=method_doses, device=device, train_seed=fit_seed,
                               split=split)
            rows = load_rows(ctx.run_dir / ROWS_DIR, stamp)
            if rows is not None:
                log(f"{key}: test images of an earlier run of this code ({ctx.run_dir / ROWS_DIR})")
                results.update(rows)
                resumed.append(key)
                continue
            log(f"{key}: fit and reconstruct")
            t0 = time.perf_counter()
            rows = METHODS[key].run(data, method_doses, ctx)
            save_rows(ctx.run_dir / ROWS_DIR, stamp, rows)
            results.update(rows)
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
        "train_seed": fit_seed,
        "split": split,
        "data": {k: (list(v) if isinstance(v, tuple) else v) for k, v in p.items()},
        "geometry": json.loads(data.geometry.to_json()),
        "quality": quality,
        "cost": {n: {"train_seconds": r.train_seconds, "infer_seconds_per_slice": r.infer_seconds_per_slice,
                     "peak_memory_mb": r.peak_mb, "uses_clean_data": r.uses_clean_data,
                     "clean_data": r.clean_data, "notes": r.notes}
                 for n, r in results.items()},
        "sampling_spread": next((r.spread for r in results.values() if r.spread), None),
        "total_seconds": time.perf_counter() - t_start,
        "resumed_methods": resumed,
        "machine": describe_machine(),
        "machine_speed_s": speed,
        "date": time.strftime("%Y-%m-%d"),
    }
    write_report(out, summary, results, data, log=log)
    log(f"benchmark done in {summary['total_seconds'] / 60:.1f} min; report: {out / 'report.html'}")
    return summary


#: Where each finished method's test images are kept, under ``out_dir/runs``.
ROWS_DIR = "rows"
_RESULT_FIELDS = ("train_seconds", "infer_seconds_per_slice", "peak_mb", "clean_data", "notes", "spread")


def code_fingerprint() -> str:
    """Hash of the installed ``turndiff`` package's Python sources: saved rows of other code
    are never reused."""
    root = Path(__file__).resolve().parents[1]
    h = hashlib.sha256()
    for f in sorted(root.rglob("*.py")):
        h.update(f.relative_to(root).as_posix().encode())
        h.update(f.read_bytes())
    return h.hexdigest()[:16]


def rows_stamp(key: str, *, preset: str, seed: int, doses, device: str, train_seed: int | None = None,
               split: str = "test") -> dict:
    """What a method's saved rows must match to be reused."""
    stamp = {"method": key, "preset": preset, "seed": int(seed), "doses": list(doses), "device": str(device),
             "code": code_fingerprint()}
    if train_seed is not None and int(train_seed) != int(seed):  # rows of the plain seed keep their stamp
        stamp["train_seed"] = int(train_seed)
    if split != "test":  # test rows keep their stamp
        stamp["split"] = split
    return stamp


def _rows_stem(key: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", key).strip("_")


def save_rows(folder: Path, stamp: dict, rows: dict[str, Result]) -> None:
    """A method's rows: images as safetensors, the rest as JSON (written last, so a JSON file
    means its images are complete)."""
    tensors, meta = {}, {}
    for i, (name, r) in enumerate(rows.items()):
        images = []
        for j, (dose, img) in enumerate(r.images.items()):
            tensors[f"r{i}_d{j}"] = torch.from_numpy(np.ascontiguousarray(img, np.float32))
            images.append([dose, f"r{i}_d{j}"])
        # JSON has no NaN (write_json refuses it): "not measured" is stored as null.
        fields = {k: getattr(r, k) for k in _RESULT_FIELDS}
        fields = {k: None if isinstance(v, float) and v != v else v for k, v in fields.items()}
        meta[name] = {**fields, "images": images}
    stem = _rows_stem(stamp["method"])
    save_tensors(folder / f"{stem}.safetensors", tensors)
    write_json(folder / f"{stem}.json", {"stamp": stamp, "rows": meta})


def load_rows(folder: Path, stamp: dict) -> dict[str, Result] | None:
    """The rows :func:`save_rows` kept for ``stamp``, or None (none, another stamp, unreadable)."""
    stem = _rows_stem(stamp["method"])
    if not (folder / f"{stem}.json").is_file():
        return None
    try:
        saved = read_json(folder / f"{stem}.json")
        if saved.get("stamp") != stamp:
            return None
        tensors = load_tensors(folder / f"{stem}.safetensors")
        rows = {}
        for name, m in saved["rows"].items():
            fields = {k: float("nan") if m[k] is None and k != "spread" else m[k] for k in _RESULT_FIELDS}
            rows[name] = Result({dose: tensors[t].numpy() for dose, t in m["images"]}, **fields)
        return rows
    except (CheckpointError, KeyError, TypeError, ValueError):
        return None
