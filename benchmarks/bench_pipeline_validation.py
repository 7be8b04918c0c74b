"""Whole-pipeline scores of trained TurnDiff models on validation phantoms (docs/METHOD.md).

Run::

    python benchmarks/bench_pipeline_validation.py [MODEL_DIR ...] [--slices 6]
        [--doses 0.25,0.1,0.5] [--seed 0] [--fit 'key=JSON,...' --fit-dir DIR] [--calibrate auto|on|off]
        [--layouts 4x8,8x1] [--symmetries flips,mirror] [--lowband on,off] [--polish 0,28]
        [--baselines TV,Noiser2Noise --runs BENCH_OUT/runs]

MODEL_DIR: a TurnDiff model folder (e.g. ``BENCH_OUT/runs/turndiff/model``). For each model
and dose, reconstructs the validation phantoms with the pipeline's defaults and prints the
soft-window PSNR / SSIM inside the body of TurnDiff's output, of its calibrated x0 and of
x~0 (the diffusion's output). A
stage-1 choice is judged here, through the whole pipeline, not through FBP(f(y)) alone
(session 16: a checkpoint selection that gained 0.49 dB in FBP(f(y)) lost 0.19 dB here).
References are used for evaluation only; ``make_dev_data`` refuses the test seeds.

``--fit SETTINGS`` (repeatable) first fits TurnDiff (``fit``, ``fast`` preset, seed 0) on the
benchmark's 8 training sinograms with those stage-1 overrides (``Stage1Config`` fields, e.g.
``'features=[16,16,32,64,128,16]'``), saves it under ``--fit-dir`` (resumed when there) and
scores it beside the given models: a stage-1 choice scored through the whole pipeline.
``--layouts DxV,...`` scores each model once per band layout of stage 1's SURE calibration
(D detector x V view frequency bands; default: the shipped one). ``--symmetries A,B``
scores each model once per set of stage 1's test-time flips (``turndiff.stage1.SYMMETRIES``)
and prints the seconds each reconstruction took. ``--lowband on,off`` scores each model with
and without the data-consistency prior's low band from x0 (default: the pipeline's, on).
``--polish W,...`` scores each reconstruction once per TV weight (HU) of the final polish
(``turndiff.inference.polish.bregman_tv``; 0: none), on the same draw (default: the
pipeline's weight).
``--baselines NAMES`` also scores those benchmark baselines on the same validation scans,
their trainings resumed from ``--runs`` (a benchmark's ``runs/`` folder; fitted there when
absent): with ``--slices`` above the benchmark's 6, where TurnDiff stands against them is
read on more validation phantoms than ``turndiff benchmark --split validation`` scores.
"""

from __future__ import annotations

import argparse
import re
import time
from pathlib import Path

from _settings import parse_settings
from turndiff.baselines import BASELINES
from turndiff.benchmark.data import make_dev_data
from turndiff.benchmark.methods import METHODS, RunContext
from turndiff.inference.polish import POLISH_TV_HU, bregman_tv
from turndiff.metrics import evaluate
from turndiff.pipeline import TurnDiffPipeline, fit
from turndiff.stage1 import SYMMETRIES
from turndiff.stage1.model import DEFAULT_SYMMETRIES
from turndiff.stage1.sure import CALIBRATION_BANDS, CALIBRATION_VIEW_BANDS


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("models", nargs="*", help="TurnDiff model folders")
    ap.add_argument("--slices", type=int, default=6, help="validation phantoms")
    ap.add_argument("--doses", default="0.25,0.1,0.5")
    ap.add_argument("--seed", type=int, default=0, help="sampler seed")
    ap.add_argument("--calibrate", choices=("auto", "on", "off"), default="auto", help="stage 1's SURE calibration")
    ap.add_argument("--layouts", default=f"{CALIBRATION_BANDS}x{CALIBRATION_VIEW_BANDS}",
                    help="comma-separated DxV band layouts of the SURE calibration")
    ap.add_argument("--symmetries", default=DEFAULT_SYMMETRIES,
                    help=f"comma-separated test-time flips of stage 1 ({', '.join(SYMMETRIES)})")
    ap.add_argument("--lowband", default="on", help="comma-separated on/off: the prior's low band from x0")
    ap.add_argument("--band-x0", default="calibrated",
                    help="comma-separated calibrated/uncalibrated: the stage-1 image of the prior's low band")
    ap.add_argument("--polish", default=str(POLISH_TV_HU),
                    help="comma-separated TV weights (HU) of the final polish, 0: none (default: the pipeline's)")
    ap.add_argument("--baselines", default="", help="comma-separated benchmark baselines to score too")
    ap.add_argument("--runs", default="bench_out/pipeline_validation/runs",
                    help="the baselines' checkpoint folder (a benchmark's runs/ reuses its trainings)")
    ap.add_argument("--fit", action="append", default=[], help="stage-1 overrides of a model to fit first")
    ap.add_argument("--fit-dir", default="bench_out/pipeline_validation", help="where fitted models go")
    args = ap.parse_args()
    if not args.models and not args.fit and not args.baselines:
        ap.error("give MODEL_DIR(s), --fit or --baselines")
    if not set(args.lowband.split(",")) <= {"on", "off"}:
        ap.error("--lowband takes on, off or on,off")
    lowbands = [v == "on" for v in args.lowband.split(",")]
    band_x0s = args.band_x0.split(",")
    if not set(band_x0s) <= {"calibrated", "uncalibrated"}:
        ap.error("--band-x0 takes calibrated, uncalibrated or both")
    try:
        polishes = [float(v) for v in args.polish.split(",")]
    except ValueError:
        ap.error(f"--polish takes comma-separated TV weights in HU, got {args.polish!r}")
    baselines = [b for b in args.baselines.split(",") if b]
    if any(b not in BASELINES for b in baselines):
        ap.error(f"--baselines: choose from {', '.join(BASELINES)}")
    doses = tuple(float(d) for d in args.doses.split(","))
    flips = args.symmetries.split(",")
    unknown = [f for f in flips if f not in SYMMETRIES]
    if unknown:
        ap.error(f"unknown --symmetries {unknown}; choose from {', '.join(SYMMETRIES)}")
    data = make_dev_data(size=256, n_train=8, n_val=args.slices, val_doses=doses)
    models = list(args.models)
    for text in args.fit:
        folder = Path(args.fit_dir) / re.sub(r"[^A-Za-z0-9=._-]+", "_", text).strip("_")
        if not (folder / "model").exists():
            pipe = fit(data.train_sinogram, geometry=data.geometry, photons=data.train_photons, preset="fast",
                       seed=0, run_dir=folder / "run", stage1_overrides=parse_settings(text), progress=False)
            secs = pipe.info["train_seconds"]
            print(f"fitted {text}: stage 1 {secs['stage1']:.0f} s, stage 2 {secs.get('stage2', 0):.0f} s", flush=True)
            pipe.save_pretrained(folder / "model")
        models.append(str(folder / "model"))
    layouts = [tuple(int(v) for v in text.split("x")) for text in args.layouts.split(",")]
    print(f"validation phantoms: {args.slices}")
    print("| model | calibration bands | flips | low band | dose | TurnDiff PSNR / SSIM soft | x0 PSNR / SSIM soft | "
          "x~0 PSNR / SSIM soft | s |\n|---|---|---|---|---|---|---|---|---|")
    ctx = RunContext(preset="fast", seed=0, device="cpu", run_dir=Path(args.runs), log=lambda m: None)
    for name in baselines:
        rows = METHODS[name].run(data, doses, ctx)[name].images
        for d in doses:
            e = evaluate(rows[d], data.test_reference_hu, mask="body")["soft"]
            print(f"| {name} | | | | {d:.0%} | {e['psnr']['mean']:.2f} / {e['ssim']['mean']:.4f} | | | |", flush=True)
    for model in models:
        pipe = TurnDiffPipeline.from_pretrained(model, device="cpu")
        for (bands, view_bands), sym, band, bx, d in ((lay, s, b, bx, d) for lay in layouts for s in flips
                                                      for b in lowbands for bx in band_x0s for d in doses):
            t0 = time.perf_counter()
            res = pipe(data.test_sinograms[d], seed=args.seed, progress=False, calibration_bands=(bands, view_bands),
                       calibrate={"auto": None, "on": True, "off": False}[args.calibrate], symmetries=sym,
                       lowband=band, lowband_x0=bx, polish=0.0)
            secs = time.perf_counter() - t0
            label = ("on" if bx == "calibrated" else "on, from x0 uncalibrated") if band else "off"
            # The polish is the pipeline's last step, so each weight is applied to one draw.
            for w in polishes:
                cells = []
                for img in (bregman_tv(res.image_hu, w), res.x0, res.x_diffusion):
                    e = evaluate(img, data.test_reference_hu, mask="body")["soft"]
                    cells.append(f"{e['psnr']['mean']:.3f} / {e['ssim']['mean']:.4f}")
                polished = f", polish {w:g} HU" if len(polishes) > 1 or w != POLISH_TV_HU else ""
                print(f"| {model} | {bands}x{view_bands} | {sym} | {label}{polished} | {d:.0%} | {' | '.join(cells)} "
                      f"| {secs:.1f} |", flush=True)


if __name__ == "__main__":
    main()
