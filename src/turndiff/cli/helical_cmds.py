"""`turndiff rebin` (DICOM-CT-PD helical projections -> fan-beam HDF5) and
`turndiff simulate-helical` (a synthetic helical scanner writing DICOM-CT-PD)."""

from __future__ import annotations

import json
import math

import click
import numpy as np

from . import cli
from .common import overwrite_option, phantom_count, refuse_output_over_input, seed_option
from ..errors import InputError


def _valid_range(scan) -> tuple[float, float]:
    """Slice positions every view angle reaches: half a turn's feed or half the detector's
    height at the axis (whichever is more) inside the ends of the helix."""
    cov = scan.rows * scan.dv * scan.source_radius / scan.det_radius
    margin = 0.5 * max(abs(scan.feed_per_turn), cov) + float(np.abs(scan.dz).max())
    z = scan.z
    return math.ceil((z.min() + margin) * 100) / 100, math.floor((z.max() - margin) * 100) / 100


def _parse_slices(spec: str | None, lo: float, hi: float, step: float) -> np.ndarray:
    if lo > hi:
        raise InputError(f"the helix is too short to rebin any slice (it covers {hi - lo:.1f} mm less than one "
                         "turn and the detector's height need)")
    if spec is None:
        return np.arange(lo, hi + 1e-9, step)
    try:
        if ":" in spec:
            a, b, c = (float(v) for v in spec.split(":"))
            if c <= 0:
                raise ValueError
            z = np.arange(a, b + 1e-9 * c, c)
        else:
            n = int(spec)
            if n < 1:
                raise ValueError
            z = np.linspace(lo, hi, n) if n > 1 else np.array([(lo + hi) / 2])
    except ValueError:
        raise InputError(f"--slices must be START:STOP:STEP in mm (STEP > 0) or a number of slices, got {spec!r}") \
            from None
    if z.size == 0:
        raise InputError(f"--slices {spec} selects no slice")
    out = z[(z < lo - 1e-6) | (z > hi + 1e-6)]
    if out.size:
        raise InputError(f"--slices: z = {out[0]:.2f} mm is outside what the helix covers ({lo:.2f} to {hi:.2f} mm)")
    return z


@cli.command()
@click.argument("proj_dir", metavar="PROJ_DIR", type=click.Path(file_okay=False))
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False), help="Output .h5 file (fit / reconstruct take it).")
@click.option("--slices", default=None,
              help="START:STOP:STEP (mm along the scan's z) or a number of slices spread over the covered "
                   "range [default: the covered range every 1 mm].")
@click.option("--pitch-interp", type=click.Choice(["180", "360"]), default="180", show_default=True,
              help="180: direct and complementary rays; 360: direct rays only.")
@click.option("--size", type=click.IntRange(min=16), default=512, show_default=True, help="Image grid of the geometry written.")
@click.option("--fov", type=click.FloatRange(min=1, min_open=True), default=384.0, show_default=True,
              help="Reconstruction field of view (mm): pixel spacing = FOV / SIZE.")
@overwrite_option
def rebin(proj_dir: str, out: str, slices, pitch_interp, size, fov, overwrite) -> None:
    """Rebin a DICOM-CT-PD helical scan (PROJ_DIR: one series, one file per view) to fan-beam
    sinograms at chosen slice positions, written as the HDF5 that fit / reconstruct take."""
    import h5py

    from ..dose import estimate_photons
    from ..io import atomic_output
    from ..io.ctpd import read_ctpd
    from ..io.hdf5 import h5_attrs
    from ..physics.helical import fan_geometry_for, rebin_noise_gain, rebin_to_fan

    refuse_output_over_input(out, proj_dir, overwrite=overwrite)
    if not out.endswith((".h5", ".hdf5")):
        raise InputError(f"--out {out}: rebin writes HDF5; name it .h5")
    scan, proj = read_ctpd(proj_dir, progress=True)
    if str(scan.extra.get("projection_data", "")).upper() == "AXIAL" or abs(scan.feed_per_turn) < 1e-6:
        raise InputError(f"{proj_dir}: an axial (step-and-shoot) scan; rebin handles helical scans only")
    lo, hi = _valid_range(scan)
    z = _parse_slices(slices, lo, hi, 1.0)
    try:
        g = fan_geometry_for(scan, size, fov / size)
    except ValueError as e:
        raise InputError(f"--size/--fov: {e}") from None
    click.echo(f"{scan.n_views} views of {scan.cols} x {scan.rows}, {scan.views_per_turn} per turn, pitch "
               f"{scan.pitch:.2f}, flying focal spot {scan.ffs_mode}; rebinning {len(z)} slice(s) from "
               f"z = {z[0]:.2f} to {z[-1]:.2f} mm onto {g.views} views x {g.det_count} columns", err=True)
    placement = {"row_dir": [1.0, 0.0, 0.0], "col_dir": [0.0, 1.0, 0.0], "centre": [0.0, 0.0, float(z[0])],
                 "positions": [float(v) for v in z], "thickness": float(z[1] - z[0]) if len(z) > 1 else None}
    extra = {"placement": json.dumps(placement), "rebinning": f"single-slice, {pitch_interp} LI",
             "flying_focal_spot": scan.ffs_mode}
    # Slice by slice into the file: a whole scan's sinograms are never in memory at once.
    with atomic_output(out) as tmp, h5py.File(tmp, "w") as f:
        ds = f.create_dataset("sinogram", shape=(len(z), g.views, g.det_count), dtype=np.float32,
                              chunks=(1, g.views, g.det_count))
        rebin_to_fan(scan, proj, z, g, interp=int(pitch_interp), progress=True, out=ds)
        if scan.photons is not None:
            i0, how = scan.photons, "PhotonStatistics (7033,1065)"
        else:  # from the raw projections, whose noise is independent element to element
            mid = int(np.argmin(np.abs(scan.z - float(np.median(z)))))
            views = np.arange(max(0, mid - 128), min(scan.n_views, mid + 128))
            i0, how = estimate_photons(proj(views).transpose(2, 0, 1)), "estimated from the projections"
        gain = rebin_noise_gain(scan, g, float(np.median(z)), interp=int(pitch_interp))
        extra.update(photons_scanner=float(i0), rebin_noise_gain=gain)
        for k, v in h5_attrs(out, geometry_json=g, photons=i0 * gain, source=str(proj_dir),
                             extra_attrs=extra).items():
            f.attrs[k] = v
    click.echo(f"I0 = {i0:.4g} photons per element ({how}); the rebinned sinograms are as noisy as "
               f"I0 = {i0 * gain:.4g} (rebinning averages {gain:.2f} measurements' worth of noise)", err=True)
    click.echo(f"wrote {out}", err=True)


@cli.command("simulate-helical")
@click.argument("input", metavar="INPUT")
@click.option("--out", "out", required=True, type=click.Path(file_okay=False), help="Output folder (DICOM-CT-PD series).")
@click.option("--size", type=click.IntRange(min=16), default=256, show_default=True, help="In-plane grid of phantom:N.")
@click.option("--slice-spacing", type=click.FloatRange(min=0.1), default=1.0, show_default=True,
              help="mm between the slices of phantom:N.")
@click.option("--rows", type=click.IntRange(min=1), default=64, show_default=True, help="Detector rows.")
@click.option("--row-width", type=click.FloatRange(min=0.05), default=0.6, show_default=True,
              help="Detector row width at the isocentre (mm).")
@click.option("--views", type=click.IntRange(min=16), default=None,
              help="Views per turn [default: turndiff's fan default for the grid; doubled with --ffs phi].")
@click.option("--pitch", type=click.FloatRange(min=0.1, max=2.0), default=1.0, show_default=True)
@click.option("--ffs", type=click.Choice(["none", "phi", "z", "phiz"]), default="none", show_default=True,
              help="Flying focal spot: in plane (phi), along z, or both.")
@click.option("--dose-fraction", type=float, default=0.25, show_default=True, help="I0 = F x 1e5 photons.")
@seed_option("Seed of the noise (and of the phantom).")
@overwrite_option
def simulate_helical(input, out, size, slice_spacing, rows, row_width, views, pitch, ffs, dose_fraction, seed,
                     overwrite) -> None:
    """Simulate a helical multi-row scan of a volume (phantom:N, or a NIfTI / DICOM series) and
    write it as DICOM-CT-PD, as a scanner would. Poisson noise at --dose-fraction."""
    from ..dose import add_noise, check_photons, photons_from_dose
    from ..io import read_volume
    from ..io.ctpd import write_ctpd
    from ..phantoms import make_volume
    from ..physics.geometry import MU_WATER, default_fan_geometry
    from ..physics.helical import helical_project, make_helical_scan

    refuse_output_over_input(out, input, overwrite=overwrite)
    photons = check_photons(photons_from_dose(dose_fraction), "--dose-fraction x 1e5")
    if input.startswith("phantom:"):
        hu = make_volume(phantom_count(input, least=2), size, seed=seed, slice_spacing=slice_spacing)
        ps, dzs = 384.0 / size, slice_spacing
    else:
        vol = read_volume(input)
        hu = vol.hu
        if hu.shape[1] != hu.shape[2]:
            raise InputError(f"{input}: slices must be square, got {hu.shape[1]} x {hu.shape[2]}")
        if vol.spacing is None:
            raise InputError(f"{input}: says nothing of its voxel spacing")
        dzs, ps = float(vol.spacing[0]), float(vol.spacing[1])
    g2 = default_fan_geometry(hu.shape[-1], ps)
    R, D = g2.src_radius, g2.src_det_distance
    per_turn = views or g2.views * (2 if ffs in ("phi", "phiz") else 1)
    dv = row_width * D / R
    extent = (hu.shape[0] - 1) * dzs
    feed = pitch * rows * row_width
    cov = rows * row_width
    turns = (extent - cov) / feed
    if turns < 1.5:
        raise InputError(f"the volume is {extent:.1f} mm long; a helix of {rows} rows x {row_width} mm at pitch "
                         f"{pitch} needs at least {cov + 1.5 * feed:.1f} mm (more slices, or fewer rows)")
    scan = make_helical_scan(views_per_turn=per_turn, turns=turns, rows=rows, cols=g2.det_count, du=g2.det_spacing,
                             dv=dv, source_radius=R, det_radius=D, pitch=pitch, z_start=cov / 2, ffs=ffs)
    from dataclasses import replace

    scan = replace(scan, photons=photons, mu_water=MU_WATER)
    mu = np.maximum(MU_WATER * (1 + hu / 1000.0), 0).astype(np.float32)
    click.echo(f"simulating {scan.n_views} views ({turns:.2f} turns, {per_turn} per turn) of {scan.cols} x {rows} "
               f"over {hu.shape[0]} slices of {hu.shape[-1]}x{hu.shape[-1]}, pitch {pitch}, FFS {ffs}, "
               f"I0 = {photons:g}", err=True)
    if scan.n_views * scan.cols * rows > 4e8:
        raise InputError(f"{scan.n_views} views x {scan.cols} x {rows} elements is over 1.6 GB of projections; "
                         "use fewer slices, rows or views")
    clean = helical_project(mu, scan, pixel_spacing=ps, slice_positions=np.arange(hu.shape[0]) * dzs, progress=True)
    write_ctpd(out, add_noise(clean, photons, rng=seed), scan, overwrite=overwrite, progress=True)
    click.echo(f"wrote {scan.n_views} files to {out}", err=True)
