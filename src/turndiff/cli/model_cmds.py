"""`turndiff train-ldm`, `turndiff fit` and `turndiff reconstruct`."""

from __future__ import annotations

import shutil
from pathlib import Path

import click
import numpy as np

from . import cli
from .common import (OUTPUT_FORMATS, check_image_output, claim_run_dir, geometry_of, overwrite_option,
                     refuse_output_over_input, write_images, seed_option)
from .stage1_cmds import DEVICE, _stage1_dir, check_geometry_matches


#: ``fast`` (the 2-core CPU budget), ``paper`` (the paper's settings, for a GPU) and
#: ``tiny``, seconds long: it checks the machinery (a fresh install, a batch script, the
#: kill test of docs/RELIABILITY.md) and makes no useful model.
PRESET = click.option("--preset", type=click.Choice(["fast", "paper", "tiny"]), default="fast", show_default=True,
                      help="fast: 2-core CPU budget; paper: the paper's settings (GPU); tiny: a seconds-long "
                           "check of the machinery, not a useful model.")


@cli.command("train-ldm")
@click.argument("proj_dir", metavar="PROJ_DIR", type=click.Path(file_okay=False))
@click.argument("input", metavar="IN.h5", type=click.Path(dir_okay=False))
@click.option("--out", "out", required=True, type=click.Path(file_okay=False), help="Model folder to write.")
@PRESET
@click.option("--device", type=DEVICE, default="auto", show_default=True)
@seed_option()
@overwrite_option
def train_ldm(proj_dir, input, out, preset, device, seed, overwrite) -> None:
    """Train stage 2 (latent diffusion) from a trained stage-1 model and the noisy `sinogram` of IN.h5.

    OUT becomes a full TurnDiff model folder (stage 1 copied in), usable by `reconstruct`.
    """
    import time

    from ..io import read_sinogram_h5
    from ..pipeline import TurnDiffPipeline, fit_stage2, model_index
    from ..stage1 import ProjectionDenoiser

    refuse_output_over_input(out, input, proj_dir, model_folder=True, overwrite=overwrite)

    stage1 = ProjectionDenoiser.from_pretrained(_stage1_dir(proj_dir))
    sino, attrs = read_sinogram_h5(input)
    check_geometry_matches(stage1.info.get("geometry"), attrs, input)
    g = geometry_of(attrs, input)
    run_dir = Path(out).with_name(Path(out).name + ".run")
    claim_run_dir(run_dir, sino, {"command": "train-ldm", "preset": preset, "seed": seed,
                                  "stage1": str(Path(proj_dir).resolve())})
    t0 = time.perf_counter()
    stage2 = fit_stage2(sino, stage1, g, preset=preset, device=device, seed=seed, run_dir=run_dir)
    seconds = {"stage1": float(stage1.info.get("train_seconds", 0.0)), "stage2": time.perf_counter() - t0}
    info = model_index(geometry=g, stage1=stage1, sinogram=sino, preset=preset, seed=seed, train_seconds=seconds)
    TurnDiffPipeline(stage1, stage2, info, device="cpu").save_pretrained(out)
    shutil.rmtree(run_dir, ignore_errors=True)
    click.echo(f"wrote {out}", err=True)


#: Slices `fit` trains on by default: self-supervision needs no labels, but it does need
#: time, and a study's neighbouring slices add little that 32 spread through it lack.
TRAIN_SLICES = 32


def spread_slices(n: int, k: int) -> np.ndarray:
    """``min(k, n)`` increasing slice indices spread evenly over ``0 .. n - 1`` (first and
    last included)."""
    if k >= n:
        return np.arange(n)
    return np.unique(np.round(np.linspace(0, n - 1, k)).astype(np.int64))


@cli.command("fit")
@click.argument("input", metavar="IN.h5", type=click.Path(dir_okay=False))
@click.option("--out", "out", required=True, type=click.Path(file_okay=False), help="Model folder to write.")
@PRESET
@click.option("--device", type=DEVICE, default="auto", show_default=True)
@click.option("--train-slices", type=click.IntRange(min=1), default=TRAIN_SLICES, show_default=True,
              help="Train on this many slices spread evenly through IN.h5 (all of them if it has fewer).")
@seed_option()
@overwrite_option
def fit_cmd(input, out, preset, device, train_slices, seed, overwrite) -> None:
    """Train both stages on the noisy `sinogram` of IN.h5 alone (resumes after an interruption)."""
    from ..io import SinogramReader
    from ..pipeline import fit

    refuse_output_over_input(out, input, model_folder=True, overwrite=overwrite)
    with SinogramReader(input) as reader:  # only the training slices are read
        chosen = spread_slices(len(reader), train_slices)
        sino, attrs = reader.read(chosen), reader.attrs
    if len(chosen) < reader.shape[0]:
        click.echo(f"training on {len(chosen)} of {reader.shape[0]} slices, spread through the scan", err=True)
    g = geometry_of(attrs, input)
    run_dir = Path(out).with_name(Path(out).name + ".run")
    claim_run_dir(run_dir, sino, {"command": "fit", "preset": preset, "seed": seed})
    pipe = fit(sino, geometry=g, photons=attrs.get("photons"), preset=preset, device=device, seed=seed,
               run_dir=run_dir)
    pipe.save_pretrained(out)
    shutil.rmtree(run_dir, ignore_errors=True)
    secs = pipe.info["train_seconds"]
    click.echo(f"wrote {out} (stage 1 {secs['stage1']:.0f} s, stage 2 {secs.get('stage2', 0):.0f} s)", err=True)


@cli.command("reconstruct")
@click.argument("model_dir", metavar="MODEL_DIR", type=click.Path(file_okay=False))
@click.argument("input", metavar="IN.h5", type=click.Path(dir_okay=False))
@click.option("--out", "out", required=True, help="Output: .h5, .npy, .nii(.gz), or a folder with --format dicom|png.")
@click.option("--format", "fmt", type=click.Choice(OUTPUT_FORMATS), default=None, help="Override the output format.")
@click.option("--strategy", type=click.Choice(["auto", "up", "down", "none"]), default="auto", show_default=True,
              help="Tunable dose strategy: up: lam*x_ld + (1-lam)*x0; down: lam*x0 + (1-lam)*x_ld; none: x_ld; "
                   "auto: estimates the input's dose from its sinogram and sets the condition's noise to 0.2 of "
                   "the training noise (docs/METHOD.md).")
@click.option("--lam", type=click.FloatRange(0, 1), default=None,
              help="Blend weight of the strategy (up/down), or of the diffusion output with --fusion global.")
@click.option("--fusion", type=click.Choice(["pixel", "global"]), default="pixel", show_default=True)
@click.option("--fusion-lam", type=click.FloatRange(0, 1), default=None,
              help="Weight of the diffusion output with --fusion global [default: --lam, else 0.5].")
@click.option("--steps", type=click.IntRange(min=1), default=None, help="DDIM steps [model default].")
@click.option("--strength", type=click.FloatRange(0, 1, min_open=True), default=None,
              help="Partial-diffusion start, fraction of the chain [model default].")
@seed_option()
@click.option("--symmetries", type=click.Choice(["flips", "mirror", "none"]), default="flips", show_default=True,
              help="Test-time flips of stage 1, averaged (none: one pass, 4x faster stage 1).")
@click.option("--calibrate", type=click.Choice(["auto", "on", "off"]), default="auto", show_default=True,
              help="Blend stage 1 with the data per frequency band by SURE (auto: on unless the scan is "
                   "much noisier than the training scans).")
@click.option("--device", type=DEVICE, default="auto", show_default=True)
@click.option("--save-intermediates", is_flag=True, help="Also store x_ld, x_prior, x_diffusion, fusion_weight (.h5).")
@click.option("--template", type=click.Path(exists=True), default=None,
              help="Source DICOM series whose patient/study tags a DICOM output copies.")
@click.option("--anonymize", is_flag=True, help="DICOM output: drop patient identifiers.")
@overwrite_option
def reconstruct(model_dir, input, out, fmt, strategy, lam, fusion, fusion_lam, steps, strength, seed, symmetries,
                calibrate,
                device, save_intermediates, template, anonymize, overwrite) -> None:
    """Reconstruct the `sinogram` of IN.h5 with a TurnDiff model.

    The study is read, reconstructed and written a batch of slices at a time, so its
    length is not limited by memory. An interrupted run (Ctrl-C, a kill) resumes from
    OUT.run/ when the same command is run again; the output appears only when complete.
    """
    from ..io import read_volume
    from ..pipeline import TurnDiffPipeline
    from ..streaming import finish_h5, finish_images, reconstruct_study

    refuse_output_over_input(out, input, model_dir, overwrite=overwrite)
    f = check_image_output(out, fmt)
    tmpl = read_volume(template).dicom_template if template else None  # a bad template fails before the work
    pipe = TurnDiffPipeline.from_pretrained(model_dir, device=device)
    if fusion == "global" and fusion_lam is None:
        fusion_lam = lam  # SURFACE.md: `--fusion global --lam L`
    if f == "h5":
        finish = finish_h5(out, overwrite=overwrite)
    else:
        spacing = geometry_of(pipe.info, model_dir).pixel_spacing
        finish = finish_images(lambda hu, attrs, extra: write_images(
            out, hu, fmt=fmt, spacing=spacing, extra=extra, attrs=attrs, template=tmpl, anonymize=anonymize),
            intermediates=save_intermediates)
    res = reconstruct_study(pipe, input, finish, out=out, strategy=strategy,
                            lam=lam if strategy in ("up", "down") else None, fusion=fusion, fusion_lam=fusion_lam,
                            steps=steps, strength=strength, seed=seed,
                            calibrate={"auto": None, "on": True, "off": False}[calibrate], symmetries=symmetries,
                            save_intermediates=save_intermediates and f == "h5")
    c = res.strategy
    click.echo(f"strategy {c.strategy} (lam {c.lam:.3f}, weight of x_ld {c.weight_ld:.3f}"
               + (f", input noise / training noise {c.noise_ratio:.2f}" if c.noise_ratio else "") + ")", err=True)
    if res.calibration is not None:
        click.echo(f"stage 1 calibrated by SURE: mean weight of its correction {res.calibration:.2f}", err=True)
    if res.computed < res.slices:
        click.echo(f"resumed: {res.slices - res.computed} of {res.slices} slices were done by an interrupted run",
                   err=True)
    click.echo(f"wrote {out}", err=True)
