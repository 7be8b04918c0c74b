"""`turndiff train-ldm`, `turndiff fit` and `turndiff reconstruct`."""

from __future__ import annotations

import shutil
from pathlib import Path

import click

from . import cli
from .common import (OUTPUT_FORMATS, check_image_output, claim_run_dir, geometry_of, overwrite_option,
                     uncertainty_path,
                     refuse_output_over_input, restart_option, write_images, seed_option)
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
@restart_option
def train_ldm(proj_dir, input, out, preset, device, seed, overwrite, restart) -> None:
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
                                  "stage1": str(Path(proj_dir).resolve())}, restart=restart)
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


@cli.command("fit")
@click.argument("input", metavar="IN.h5", type=click.Path(dir_okay=False))
@click.option("--out", "out", required=True, type=click.Path(file_okay=False), help="Model folder to write.")
@PRESET
@click.option("--device", type=DEVICE, default="auto", show_default=True)
@click.option("--train-slices", type=click.IntRange(min=1), default=TRAIN_SLICES, show_default=True,
              help="Train on this many slices spread evenly through IN.h5 (all of them if it has fewer).")
@seed_option()
@overwrite_option
@restart_option
def fit_cmd(input, out, preset, device, train_slices, seed, overwrite, restart) -> None:
    """Train both stages on the noisy `sinogram` of IN.h5 alone (resumes after an interruption)."""
    from .. import distributed
    from ..io import SinogramReader, spread_slices
    from ..pipeline import fit
    from ..training import resolve_device

    dev = resolve_device(device)
    distributed.setup(dev)  # under torchrun: join the other ranks (a no-op otherwise)
    main = distributed.is_main()
    refuse_output_over_input(out, input, model_folder=True, overwrite=overwrite)
    with SinogramReader(input) as reader:  # only the training slices are read
        chosen = spread_slices(len(reader), train_slices)
        sino, attrs = reader.read(chosen), reader.attrs
    if len(chosen) < reader.shape[0] and main:
        click.echo(f"training on {len(chosen)} of {reader.shape[0]} slices, spread through the scan", err=True)
    if distributed.world_size() > 1 and main:
        click.echo(f"{distributed.world_size()} processes: each step's batch is shared out among them", err=True)
    g = geometry_of(attrs, input)
    run_dir = Path(out).with_name(Path(out).name + ".run")
    if main:  # the run folder is rank 0's; the others read its checkpoints
        claim_run_dir(run_dir, sino, {"command": "fit", "preset": preset, "seed": seed}, restart=restart)
    distributed.barrier()
    pipe = fit(sino, geometry=g, photons=attrs.get("photons"), preset=preset, device=dev, seed=seed,
               run_dir=run_dir, progress=main)
    if main:
        pipe.save_pretrained(out)
        shutil.rmtree(run_dir, ignore_errors=True)
        secs = pipe.info["train_seconds"]
        click.echo(f"wrote {out} (stage 1 {secs['stage1']:.0f} s, stage 2 {secs.get('stage2', 0):.0f} s)", err=True)
    distributed.barrier()


_RECONSTRUCT_OPTIONS = [
    click.option("--format", "fmt", type=click.Choice(OUTPUT_FORMATS), default=None,
                 help="Override the output format."),
    click.option("--strategy", type=click.Choice(["auto", "up", "down", "none"]), default="auto", show_default=True,
                 help="Tunable dose strategy: up: lam*x_ld + (1-lam)*x0; down: lam*x0 + (1-lam)*x_ld; none: x_ld; "
                      "auto: estimates the input's dose from its sinogram and sets the condition's noise to 0.2 of "
                      "the training noise (docs/METHOD.md)."),
    click.option("--lam", type=click.FloatRange(0, 1), default=None,
                 help="Blend weight of the strategy (up/down), or of the diffusion output with --fusion global."),
    click.option("--fusion", type=click.Choice(["pixel", "global"]), default="pixel", show_default=True),
    click.option("--fusion-lam", type=click.FloatRange(0, 1), default=None,
                 help="Weight of the diffusion output with --fusion global [default: --lam, else 0.5]."),
    click.option("--steps", type=click.IntRange(min=1), default=None, help="DDIM steps [model default]."),
    click.option("--strength", type=click.FloatRange(0, 1, min_open=True), default=None,
                 help="Partial-diffusion start, fraction of the chain [model default]."),
    seed_option(),
    # Literal rather than turndiff.stage1.SYMMETRIES: the CLI must start without torch (a test
    # checks that they agree).
    click.option("--symmetries", type=click.Choice(["mirror", "flips", "none"]), default="mirror", show_default=True,
                 help="Test-time flips of stage 1, averaged (mirror: two passes, flips: all four, none: one)."),
    click.option("--calibrate", type=click.Choice(["auto", "on", "off"]), default="auto", show_default=True,
                 help="Blend stage 1 with the data per frequency band by SURE (auto: on unless the scan is "
                      "much noisier than the training scans)."),
    click.option("--device", type=DEVICE, default="auto", show_default=True),
    click.option("--batch", type=click.IntRange(min=1), default=None,
                 help="Slices reconstructed at once (the unit of progress and of resumption; results do not "
                      "depend on it) [default: 8 on a CPU, 32 on a GPU]."),
    click.option("--save-intermediates", is_flag=True,
                 help="Also store x_ld, x0, x_prior, x_diffusion, fusion_weight, x_fused, x_restored, "
                      "x_unpolished (.h5)."),
    click.option("--restore/--no-restore", default=True, show_default=True,
                 help="Detail restoration after the fusion: put back the part of x_ld - image that stands out "
                      "of the input's own noise level (docs/METHOD.md); --no-restore gives the paper's output."),
    click.option("--consistency/--no-consistency", default=True, show_default=True,
                 help="Data consistency after the restoration: the weighted least-squares image that keeps closest "
                      "to the output where its uncertainty map is small (docs/METHOD.md); --no-consistency also "
                      "skips the polish."),
    click.option("--lowband/--no-lowband", default=True, show_default=True,
                 help="The data-consistency prior takes stage 1's band below a 1-pixel Gaussian: faint lesions "
                      "keep stage 1's contrast (docs/METHOD.md); --no-lowband: the restored image alone is the prior's "
                      "mean (the default before session 33)."),
    click.option("--polish", type=click.FloatRange(min=0), default=None, metavar="HU",
                 help="TV weight (HU) of the edge-preserving polish last: total variation with one Bregman step "
                      "removes the diffusion's fine grain in flat tissue and keeps faint compact lesions "
                      "(docs/METHOD.md); 0: no polish [default: the pipeline's, turndiff.inference.polish."
                      "POLISH_TV_HU]."),
    click.option("--uncertainty", is_flag=True,
                 help="Also write a per-pixel uncertainty map (HU; docs/METHOD.md): the `uncertainty_hu` dataset "
                      "of an .h5 output, else OUT_uncertainty beside OUT in the same format."),
    click.option("--template", type=click.Path(exists=True), default=None,
                 help="Source DICOM series whose patient/study tags a DICOM output copies."),
    click.option("--anonymize", is_flag=True, help="DICOM output: drop patient identifiers."),
    overwrite_option,
    restart_option,
]


def reconstruct_options(f):
    """The options of `reconstruct`, shared by `reconstruct-all`."""
    for option in reversed(_RECONSTRUCT_OPTIONS):
        f = option(f)
    return f


def _reconstruct_one(pipe, model_dir: str, input: str, out: str, opts: dict, tmpl, *, progress: bool = True):
    """One study, streamed: the output policy, then :func:`turndiff.streaming.reconstruct_study`."""
    from ..streaming import finish_h5, finish_images, reconstruct_study

    refuse_output_over_input(out, input, model_dir, overwrite=opts["overwrite"])
    f = check_image_output(out, opts["fmt"])
    sibling = uncertainty_path(out, f) if opts.get("uncertainty") and f != "h5" else None
    if sibling is not None:
        refuse_output_over_input(sibling, input, model_dir, overwrite=opts["overwrite"])
        check_image_output(sibling, opts["fmt"] or f)
    fusion_lam = opts["fusion_lam"]
    if opts["fusion"] == "global" and fusion_lam is None:
        fusion_lam = opts["lam"]  # SURFACE.md: `--fusion global --lam L`
    if f == "h5":
        finish = finish_h5(out, overwrite=opts["overwrite"])
    else:
        spacing = geometry_of(pipe.info, model_dir).pixel_spacing
        finish = finish_images(lambda hu, attrs, extra: write_images(
            out, hu, fmt=opts["fmt"], spacing=spacing, extra=extra, attrs=attrs, template=tmpl,
            anonymize=opts["anonymize"]), intermediates=opts["save_intermediates"], lazy=f in ("dicom", "png", "nii"),
            write_uncertainty=None if sibling is None else lambda u, attrs: write_images(
                str(sibling), u, fmt=opts["fmt"] or f, spacing=spacing, attrs=attrs, template=tmpl,
                anonymize=opts["anonymize"]))
    return reconstruct_study(
        pipe, input, finish, out=out, strategy=opts["strategy"],
        lam=opts["lam"] if opts["strategy"] in ("up", "down") else None, fusion=opts["fusion"], fusion_lam=fusion_lam,
        steps=opts["steps"], strength=opts["strength"], seed=opts["seed"],
        calibrate={"auto": None, "on": True, "off": False}[opts["calibrate"]], symmetries=opts["symmetries"],
        save_intermediates=opts["save_intermediates"] and f == "h5", uncertainty=bool(opts.get("uncertainty")),
        batch=opts.get("batch"), restore=opts.get("restore", True),
        consistency=opts.get("consistency", True), lowband=opts.get("lowband", True),
        polish=opts.get("polish"), restart=opts["restart"], progress=progress)


@cli.command("reconstruct")
@click.argument("model_dir", metavar="MODEL_DIR", type=click.Path(file_okay=False))
@click.argument("input", metavar="IN.h5", type=click.Path(dir_okay=False))
@click.option("--out", "out", required=True, help="Output: .h5, .npy, .nii(.gz), or a folder with --format dicom|png.")
@reconstruct_options
def reconstruct(model_dir, input, out, **opts) -> None:
    """Reconstruct the `sinogram` of IN.h5 with a TurnDiff model.

    The study is read, reconstructed and written a batch of slices at a time, so its
    length is not limited by memory. An interrupted run (Ctrl-C, a kill) resumes from
    OUT.run/ when the same command is run again; the output appears only when complete.
    """
    from .. import distributed
    from ..io import read_volume
    from ..pipeline import TurnDiffPipeline
    from ..training import resolve_device

    refuse_output_over_input(out, input, model_dir, overwrite=opts["overwrite"])
    check_image_output(out, opts["fmt"])
    tmpl = read_volume(opts["template"]).dicom_template if opts["template"] else None  # fails before the work
    dev = resolve_device(opts["device"])
    distributed.setup(dev)  # under torchrun: the study's batches are shared out among the ranks
    pipe = TurnDiffPipeline.from_pretrained(model_dir, device=dev)
    res = _reconstruct_one(pipe, model_dir, input, out, opts, tmpl, progress=distributed.is_main())
    distributed.barrier()
    if not distributed.is_main():
        return
    c = res.strategy
    click.echo(f"strategy {c.strategy} (lam {c.lam:.3f}, weight of x_ld {c.weight_ld:.3f}"
               + (f", input noise / training noise {c.noise_ratio:.2f}" if c.noise_ratio else "") + ")", err=True)
    if res.calibration is not None:
        click.echo(f"stage 1 calibrated by SURE: mean weight of its correction {res.calibration:.2f}", err=True)
    if res.computed < res.slices:
        click.echo(f"resumed: {res.slices - res.computed} of {res.slices} slices were done by an interrupted run",
                   err=True)
    click.echo(f"wrote {out}", err=True)


_SUFFIX = {"h5": ".h5", "npy": ".npy", "nii": ".nii.gz", "nifti": ".nii.gz", "dicom": "", "png": ""}


def _cohort(in_dir: Path, listing: str | None) -> list[Path]:
    """The scans of a cohort: the ``.h5`` files under ``in_dir`` (sorted), or the paths in
    the first column of a CSV file (relative to ``in_dir``; a header ``path`` is skipped)."""
    import csv

    if listing is None:
        return sorted(p for p in in_dir.rglob("*.h5") if p.is_file() and not p.name.startswith("."))
    with open(listing, newline="") as fh:
        rows = [r[0].strip() for r in csv.reader(fh) if r and r[0].strip()]
    if rows and rows[0].lower() == "path":
        rows = rows[1:]
    return [p if p.is_absolute() else in_dir / p for p in map(Path, rows)]


@cli.command("reconstruct-all")
@click.argument("model_dir", metavar="MODEL_DIR", type=click.Path(file_okay=False))
@click.argument("in_dir", metavar="IN_DIR", type=click.Path(file_okay=False, exists=True))
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Output folder; mirrors IN_DIR's tree (scan.h5 -> scan.nii.gz, or a folder scan/ for DICOM/PNG).")
@click.option("--list", "listing", type=click.Path(dir_okay=False, exists=True), default=None,
              help="CSV whose first column lists the scans (relative to IN_DIR) instead of every .h5 under it.")
@reconstruct_options
def reconstruct_all(model_dir, in_dir, out_dir, listing, **opts) -> None:
    """Reconstruct every scan of a cohort with one model.

    Each scan is reconstructed as `reconstruct` would (streamed, resumable); a scan whose
    output exists is skipped unless --overwrite is given, and a bad scan is refused with
    its reason without stopping the others. OUT/summary.csv lists what was done, skipped or
    refused; the exit status is non-zero only when a scan was refused or failed.
    """
    import csv
    import io as _io
    import time

    from ..errors import TurnDiffError
    from ..io import atomic_output, read_volume
    from ..pipeline import TurnDiffPipeline

    fmt = opts["fmt"] or "h5"
    opts["fmt"] = fmt
    tmpl = read_volume(opts["template"]).dicom_template if opts["template"] else None
    pipe = TurnDiffPipeline.from_pretrained(model_dir, device=opts["device"])
    in_root, out_root = Path(in_dir), Path(out_dir)
    scans = _cohort(in_root, listing)
    if not scans:
        raise click.ClickException(f"{in_dir}: no .h5 scans found")
    rows = []
    for k, scan in enumerate(scans, 1):
        try:
            rel = scan.relative_to(in_root)
        except ValueError:
            rel = Path(scan.name)
        out = out_root / rel.with_suffix(_SUFFIX[fmt]) if _SUFFIX[fmt] else out_root / rel.with_suffix("")
        t0 = time.perf_counter()
        click.echo(f"[{k}/{len(scans)}] {scan}", err=True)
        if (out.is_file() or (out.is_dir() and any(out.iterdir()))) and not opts["overwrite"]:
            rows.append((str(scan), str(out), "skipped", "output exists (--overwrite replaces it)", 0.0))
            continue
        try:
            res = _reconstruct_one(pipe, model_dir, str(scan), str(out), opts, tmpl)
            note = f"{res.slices} slices" + (f", {res.slices - res.computed} resumed" if res.computed < res.slices
                                             else "")
            rows.append((str(scan), str(out), "done", note, time.perf_counter() - t0))
        except (TurnDiffError, ValueError, OSError) as e:
            reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
            rows.append((str(scan), str(out), "refused", reason, time.perf_counter() - t0))
            click.echo(f"  refused: {reason}", err=True)
    buf = _io.StringIO()
    w = csv.writer(buf)
    w.writerow(["input", "output", "status", "detail", "seconds"])
    w.writerows([(a, b, c, d, f"{e:.1f}") for a, b, c, d, e in rows])
    out_root.mkdir(parents=True, exist_ok=True)
    with atomic_output(out_root / "summary.csv") as tmp:
        tmp.write_text(buf.getvalue())
    counts = {s: sum(r[2] == s for r in rows) for s in ("done", "skipped", "refused")}
    click.echo("| input | status | detail |\n|---|---|---|", err=True)
    for a, _, c, d, _ in rows:
        click.echo(f"| {a} | {c} | {d} |", err=True)
    click.echo(f"{counts['done']} done, {counts['skipped']} skipped, {counts['refused']} refused; "
               f"summary in {out_root / 'summary.csv'}", err=True)
    if counts["refused"]:
        raise SystemExit(1)
