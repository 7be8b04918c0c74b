"""`turndiff simulate` and `turndiff fbp`."""

from __future__ import annotations

import json
import math

import click
import numpy as np

from . import cli
from .common import (OUTPUT_FORMATS, check_image_output, geometry_of, load_hu_input, overwrite_option,
                     refuse_output_over_input, to_square_grid, write_images, seed_option)


@cli.command()
@click.argument("input", metavar="INPUT")
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False), help="Output .h5 file.")
@click.option("--photons", type=float, default=None, help="I0, photons per detector bin (exclusive with --dose-fraction).")
@click.option("--dose-fraction", type=float, default=None, help="Dose as a fraction of 1e5 photons [default: 0.25].")
@click.option("--geometry", "geom", type=click.Choice(["fan", "parallel"]), default="fan", show_default=True)
@click.option("--det-shape", type=click.Choice(["arc", "flat"]), default="arc", show_default=True,
              help="Fan-beam detector shape.")
@click.option("--views", type=click.IntRange(min=8), default=None, help="Views over 360 degrees [default: 720 per 512 px].")
@click.option("--size", type=click.IntRange(min=16), default=None, help="Resample images to SIZE x SIZE first.")
@seed_option("Seed of the noise (and of phantoms).")
@click.option("--keep-clean", is_flag=True, help="Also store the noiseless `clean_sinogram`.")
@click.option("--electronic-noise", type=click.FloatRange(min=0), default=None,
              help="Electronic noise std in photons [default: sqrt(10)].")
@overwrite_option
def simulate(input: str, out: str, photons, dose_fraction, geom, det_shape, views, size, seed, keep_clean,
             electronic_noise, overwrite) -> None:
    """Simulate a low-dose scan of INPUT (DICOM file/folder, .nii(.gz), .npy in HU, or phantom:N)."""
    from ..dose import ELECTRONIC_NOISE_STD, check_photons, photons_from_dose, simulate_scan
    from ..errors import InputError
    from ..io import write_h5
    from ..physics import default_fan_geometry, default_parallel_geometry

    refuse_output_over_input(out, input, overwrite=overwrite)
    if photons is not None and dose_fraction is not None:
        raise InputError("give --photons or --dose-fraction, not both")
    if dose_fraction is not None:
        check_photons(photons_from_dose(dose_fraction), "--dose-fraction x 1e5")
    i0 = check_photons(photons, "--photons") if photons is not None else photons_from_dose(
        0.25 if dose_fraction is None else dose_fraction)
    if electronic_noise is not None and not math.isfinite(electronic_noise):
        raise InputError(f"--electronic-noise must be a finite number of photons, got {electronic_noise}")
    hu, spacing, source, placement = load_hu_input(input, size=size, seed=seed)
    hu, ps = to_square_grid(hu, spacing, size)
    n = hu.shape[-1]
    if geom == "fan":
        g = default_fan_geometry(n, ps, views=views, det_shape=det_shape)
    else:
        g = default_parallel_geometry(n, ps, views=views)
    click.echo(f"simulating {hu.shape[0]} slice(s) of {n}x{n} at {ps:.3f} mm, {g.kind}-beam {g.views} views x "
               f"{g.det_count} bins, I0 = {i0:g} photons", err=True)
    noisy, clean = simulate_scan(hu, g, photons=i0, seed=seed, progress=True,
                                 electronic_std=ELECTRONIC_NOISE_STD if electronic_noise is None else electronic_noise)
    datasets = {"sinogram": noisy, "reference_hu": hu}
    if keep_clean:
        datasets["clean_sinogram"] = clean
    # Where the slices sit (DICOM or NIfTI input): fbp and reconstruct write their series there.
    extra = {"placement": json.dumps(placement)} if placement is not None else None
    write_h5(out, datasets, geometry_json=g.to_json(), photons=i0, source=source, extra_attrs=extra)
    click.echo(f"wrote {out}", err=True)


@cli.command()
@click.argument("input", metavar="IN.h5", type=click.Path(dir_okay=False))
@click.option("--out", "out", required=True, help="Output: .h5, .npy, .nii(.gz), or a folder with --format dicom|png.")
@click.option("--format", "fmt", type=click.Choice(OUTPUT_FORMATS), default=None, help="Override the output format.")
@click.option("--filter", "filt", type=click.Choice(["ram-lak", "shepp-logan", "hann"]), default="ram-lak",
              show_default=True)
@click.option("--template", type=click.Path(exists=True), default=None,
              help="Source DICOM series whose patient/study tags a DICOM output copies.")
@click.option("--anonymize", is_flag=True, help="DICOM output: drop patient identifiers.")
@overwrite_option
def fbp(input: str, out: str, fmt, filt, template, anonymize, overwrite) -> None:
    """Filtered back-projection of the `sinogram` of IN.h5."""
    from tqdm.auto import tqdm

    from ..io import read_sinogram_h5, read_volume
    from ..physics import CTProjector
    from ..physics.projector import BATCH

    refuse_output_over_input(out, input, overwrite=overwrite)
    check_image_output(out, fmt)
    tmpl = read_volume(template).dicom_template if template else None  # checked before the work
    sino, attrs = read_sinogram_h5(input)
    g = geometry_of(attrs, input)
    A = CTProjector(g)
    hu = np.empty((sino.shape[0], *g.image_shape), np.float32)
    with tqdm(total=sino.shape[0], desc="fbp", unit="slice") as bar:
        for a in range(0, sino.shape[0], BATCH):  # batches: cheaper per slice than one at a time
            hu[a : a + BATCH] = A.fbp_hu(sino[a : a + BATCH], filter=filt)
            bar.update(len(hu[a : a + BATCH]))
    keep = {k: attrs[k] for k in ("geometry", "photons", "source", "placement") if k in attrs}
    write_images(out, hu, fmt=fmt, spacing=g.pixel_spacing, attrs=keep, template=tmpl, anonymize=anonymize)
    click.echo(f"wrote {out}", err=True)
