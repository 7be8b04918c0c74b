"""`turndiff demo`, `turndiff benchmark` and `turndiff iq`."""

from __future__ import annotations

import click

from . import cli
from .common import seed_option
from .stage1_cmds import DEVICE


@cli.command("demo")
@click.option("--out", "out", default="demo_out", show_default=True, type=click.Path(file_okay=False))
@click.option("--size", type=click.IntRange(min=32), default=128, show_default=True, help="Phantom size (pixels).")
@click.option("--train-slices", type=click.IntRange(min=1), default=8, show_default=True)
@click.option("--test-slices", type=click.IntRange(min=1), default=4, show_default=True)
@click.option("--preset", type=click.Choice(["fast", "paper", "tiny"]), default="fast", show_default=True,
              help="Training preset (tiny: seconds, for smoke tests).")
@click.option("--device", type=DEVICE, default="auto", show_default=True)
@seed_option()
def demo(out, size, train_slices, test_slices, preset, device, seed) -> None:
    """The main job end to end on the embedded phantoms: simulate at 25% dose, fit, reconstruct
    at 25% and the unseen 10% and 50%, and write a figure and a metrics table to OUT."""
    from ..benchmark.demo import run_demo

    run_demo(out, size=size, n_train=train_slices, n_test=test_slices, preset=preset, device=device, seed=seed,
             log=lambda m: click.echo(m, err=True))


@cli.command("benchmark")
@click.option("--out", "out", default=None, type=click.Path(file_okay=False), help="Output folder (required).")
@click.option("--preset", type=click.Choice(["fast", "paper", "tiny"]), default="fast", show_default=True)
@click.option("--methods", default=None, help="Comma-separated methods (default: all). See --list.")
@click.option("--list", "list_methods", is_flag=True, help="List the methods and exit.")
@click.option("--device", type=DEVICE, default="auto", show_default=True)
@click.option("--restart", is_flag=True,
              help="Delete OUT/runs (checkpoints and finished methods' images) and start again "
                   "(default: resume an interrupted run).")
@seed_option()
@click.option("--train-seed", type=click.IntRange(min=0, max=2**32 - 1), default=None,
              help="Seed the trainings (initialisation, crops, sampling) with this instead of --seed, on "
                   "the same phantoms and noise: runs with several give the spread over retraining "
                   "(benchmarks/seed_spread.py).  [default: --seed]")
@click.option("--split", type=click.Choice(["test", "validation"]), default="test", show_default=True,
              help="Score on the test phantoms (the reported numbers) or on validation phantoms (where "
                   "choices that depend on the baselines are made; the same trainings).")
def benchmark(out, preset, methods, list_methods, device, restart, seed, train_seed, split) -> None:
    """Every method and ablation on the phantoms: tables, figures, an HTML report and results.json.

    Resumes: a rerun into the same OUT reuses the finished methods' images (same code and
    settings) and the trainings' checkpoints."""
    from ..benchmark.runner import ALL_METHODS, run_benchmark

    if list_methods:
        click.echo("\n".join(ALL_METHODS))
        return
    if out is None:
        raise click.UsageError("Missing option '--out'.")
    chosen = [m.strip() for m in methods.split(",")] if methods else None
    run_benchmark(out, preset=preset, methods=chosen, device=device, seed=seed, train_seed=train_seed,
                  split=split, restart=restart,
                  log=lambda m: click.echo(m, err=True))


@cli.command("iq")
@click.argument("model_dir", metavar="MODEL_DIR", type=click.Path(file_okay=False))
@click.option("--out", "out", required=True, type=click.Path(file_okay=False), help="Output folder.")
@click.option("--doses", default="0.25,0.10,0.50", show_default=True,
              help="Comma-separated dose fractions (the first is also the lesion study's).")
@click.option("--realizations", type=click.IntRange(min=12), default=16, show_default=True,
              help="Noise realisations of each QA phantom per dose (the LCD phantom with its rods and "
                   "as many without them); d' is noisy below about 64.")
@click.option("--lesion-slices", type=click.IntRange(min=1), default=8, show_default=True,
              help="Test phantoms that get inserted lesions (two each).")
@click.option("--baselines", default=None,
              help="Also these benchmark baselines (comma-separated names, or 'all'), fitted as "
                   "`turndiff benchmark --preset PRESET` fits them.")
@click.option("--preset", type=click.Choice(["fast", "paper", "tiny"]), default="fast", show_default=True,
              help="Whose benchmark training the baselines repeat.")
@click.option("--runs", "runs", type=click.Path(file_okay=False), default=None,
              help="Checkpoint folder of the baselines [default: OUT/runs]; BENCH_OUT/runs of a benchmark "
                   "reuses its trainings.")
@click.option("--device", type=DEVICE, default="auto", show_default=True)
@seed_option()
def iq(model_dir, out, doses, realizations, lesion_slices, baselines, preset, runs, device, seed) -> None:
    """Task-based image quality of a model against FBP (and --baselines): CHO detectability
    (d', dose-reduction factor) on a MITA-LCD-like phantom, against scans of it without its
    rods at the rods' positions, NPS, TTF and CT numbers on a
    CTP404-like phantom, and contrast recovery of lesions inserted into test scans' projections."""
    from ..benchmark.iq import run_iq
    from ..errors import InputError

    try:
        values = tuple(float(v) for v in doses.split(","))
    except ValueError:
        raise InputError(f"--doses must be comma-separated numbers, got {doses!r}") from None
    if not values or not all(0 < v <= 1 for v in values):
        raise InputError(f"--doses must be fractions in (0, 1], got {doses!r}")
    from ..baselines import BASELINES

    names: tuple[str, ...] = ()
    if baselines:
        names = tuple(BASELINES) if baselines.strip() == "all" else tuple(b.strip() for b in baselines.split(","))
        unknown = [b for b in names if b not in BASELINES]
        if unknown:
            raise InputError(f"--baselines: unknown method {unknown[0]!r}; choose from {', '.join(BASELINES)}")
    run_iq(model_dir, out, doses=values, realizations=realizations, lesion_slices=lesion_slices, seed=seed,
           baselines=names, preset=preset, runs_dir=runs,
           device=device, log=lambda m: click.echo(m, err=True))
