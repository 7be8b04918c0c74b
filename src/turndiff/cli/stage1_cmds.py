"""`turndiff train-proj` and `turndiff denoise-proj` (stage 1 on its own)."""

from __future__ import annotations

import click

from . import cli
from .common import (claim_run_dir, geometry_of, overwrite_option, refuse_output_over_input, restart_option,
                     seed_option)

DEVICE = click.Choice(["auto", "cpu", "cuda"])


def check_geometry_matches(model_geometry_json: str | None, attrs: dict, where: str) -> None:
    """Refuse a sinogram whose geometry differs from the model's (one-line error)."""
    from ..errors import InputError
    from ..physics import geometry_from_json

    if not model_geometry_json:
        return
    g_model = geometry_from_json(model_geometry_json)
    g_in = geometry_of(attrs, where)
    if g_in != g_model:
        diffs = [k for k in g_model.to_dict() if g_model.to_dict()[k] != g_in.to_dict().get(k)]
        raise InputError(f"{where}: geometry does not match the model's (differs in {', '.join(diffs)})")


@cli.command("train-proj")
@click.argument("input", metavar="IN.h5", type=click.Path(dir_okay=False))
@click.option("--out", "out", required=True, type=click.Path(file_okay=False), help="Model folder to write.")
@click.option("--preset", type=click.Choice(["fast", "paper"]), default="fast", show_default=True)
@click.option("--iters", type=click.IntRange(min=1), default=None, help="Training iterations (overrides the preset).")
@click.option("--no-similarity", is_flag=True, help="Ablation: e1 = e2 = 0 (plain Neighbor2Neighbor).")
@click.option("--alpha", type=click.FloatRange(min=0), default=None,
              help="Weight of the CSSS regulariser [preset: 2].")
@click.option("--objective", type=click.Choice(["r2r", "csss", "sure"]), default=None,
              help="Training signal: recorrupted pairs from the noise model, the paper's sub-sampled "
                   "CSSS pairs, or SURE of the sinogram error (2x the time per step) [preset: r2r].")
@click.option("--pairs", type=click.Choice(["cell", "views"]), default=None,
              help="CSSS pairs: the paper's 2x2 cells, or two views of one bin [preset: cell].")
@click.option("--loss-weighting", type=click.Choice(["ramp", "none"]), default=None,
              help="Weigh residuals by the detector ramp that FBP applies [preset: ramp].")
@click.option("--sure-every", type=click.IntRange(min=0), default=None,
              help="Every N steps, estimate the sinogram MSE of the weights by SURE (no clean data) and "
                   "keep the best; 0 turns it off [preset: fast 500, paper 1000].")
@click.option("--sure-ema/--no-sure-ema", default=None,
              help="SURE also scores the EMA of the weights at every check [preset: off].")
@click.option("--sure-patience", type=click.IntRange(min=0), default=None,
              help="Stop once this many SURE checks in a row found no better weights; 0 trains all "
                   "--iters steps [preset: 0].")
@click.option("--cpu-bf16/--no-cpu-bf16", default=None,
              help="On a CPU with native bf16, run training's forward pass in bf16 (weights, loss and "
                   "inference stay float32; about 1.6x faster per step) [preset: fast on].")
@click.option("--device", type=DEVICE, default="auto", show_default=True)
@seed_option()
@overwrite_option
@restart_option
def train_proj(input, out, preset, iters, no_similarity, alpha, objective, pairs, loss_weighting, sure_every,
               sure_ema, sure_patience, cpu_bf16, device, seed, overwrite, restart) -> None:
    """Train the projection denoiser on the noisy `sinogram` of IN.h5 alone."""
    from pathlib import Path

    from ..io import read_sinogram_h5
    from ..stage1 import Stage1Config, train_projection_denoiser

    refuse_output_over_input(out, input, model_folder=True, overwrite=overwrite)
    sino, attrs = read_sinogram_h5(input)
    g = geometry_of(attrs, input)
    cfg = Stage1Config.preset(preset, iters=iters, alpha=alpha, seed=seed, sure_every=sure_every,
                              sure_ema=sure_ema, sure_patience=sure_patience,
                              use_similarity=False if no_similarity else None, objective=objective, pairs=pairs,
                              loss_weighting=loss_weighting, amp_cpu=cpu_bf16)
    run_dir = Path(out).with_name(Path(out).name + ".run")
    claim_run_dir(run_dir, sino, {"command": "train-proj", "stage1": cfg.to_dict()}, restart=restart)
    model = train_projection_denoiser(sino, photons=attrs.get("photons"), geometry_json=g.to_json(), config=cfg,
                                      run_dir=run_dir, device=device)
    model.save_pretrained(out)
    _cleanup(run_dir)
    sel = model.info.get("sure_selection")
    if sel:
        if "stopped_at" in sel:
            click.echo(f"stopped at step {sel['stopped_at']} of {cfg.train.iters}: "
                       f"{cfg.sure_patience} SURE checks in a row found no better weights", err=True)
        click.echo(f"kept the {sel['selected_weights']} weights of step {sel['selected_step']} "
                   f"(lowest SURE of the sinogram MSE, {sel['selected_sure_mse']:.3g})", err=True)
    click.echo(f"wrote {out} (trained {model.info['train_seconds']:.0f} s on {sino.shape[0]} slice(s))", err=True)


def _cleanup(run_dir) -> None:
    import shutil

    shutil.rmtree(run_dir, ignore_errors=True)


@cli.command("denoise-proj")
@click.argument("model_dir", metavar="DIR", type=click.Path(file_okay=False))
@click.argument("input", metavar="IN.h5", type=click.Path(dir_okay=False))
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False), help="Output .h5 file.")
@click.option("--calibrate", type=click.Choice(["auto", "on", "off"]), default="auto", show_default=True,
              help="Blend the network's correction with the data per frequency band as SURE finds best for this "
                   "scan (no clean data; one more network pass); auto: on unless the scan is much noisier than "
                   "the training data.")
@click.option("--device", type=DEVICE, default="auto", show_default=True)
@overwrite_option
def denoise_proj(model_dir, input, out, calibrate, device, overwrite) -> None:
    """Denoise the `sinogram` of IN.h5 with a stage-1 model; writes `sinogram` and its FBP `image_hu`.

    By default the network's output is SURE-calibrated to the scan, as `reconstruct` does."""
    from ..io import read_sinogram_h5, write_h5
    from ..physics import CTProjector
    from ..stage1 import ProjectionDenoiser

    refuse_output_over_input(out, input, model_dir, overwrite=overwrite)
    model = ProjectionDenoiser.from_pretrained(_stage1_dir(model_dir))
    sino, attrs = read_sinogram_h5(input)
    check_geometry_matches(model.info.get("geometry"), attrs, input)
    g = geometry_of(attrs, input)
    res = model.denoise_calibrated(sino, calibrate={"auto": None, "on": True, "off": False}[calibrate],
                                   device=device, progress=True)
    y0 = res.denoised
    if res.weights is not None:
        click.echo(f"calibrated by SURE: mean weight of the network's correction {float(res.weights.mean()):.2f}",
                   err=True)
    elif calibrate == "auto":
        why = ("the model does not record its training data's estimated I0 (saved before it was; retrain to "
               "calibrate)" if model.photons_train_estimated is None else
               "the scan is much noisier than the training data (--calibrate on forces it)")
        click.echo(f"not calibrated: {why}", err=True)
    hu = CTProjector(g).fbp_hu(y0)
    write_h5(out, {"sinogram": y0, "image_hu": hu}, geometry_json=g.to_json(), photons=attrs.get("photons"),
             source=f"turndiff denoise-proj of {input}")
    click.echo(f"wrote {out}", err=True)


def _stage1_dir(model_dir: str):
    """Accept a stage-1 folder or a full TurnDiff model folder (its stage-1 part)."""
    from pathlib import Path

    p = Path(model_dir)
    if (p / "projection_denoiser" / "config.json").is_file():
        return p / "projection_denoiser"
    return p
