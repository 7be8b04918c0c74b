"""Pieces the CLI commands share: input loading, output writing, geometry checks."""

from __future__ import annotations

import json

import numpy as np

from ..errors import InputError

OUTPUT_FORMATS = ("h5", "npy", "nii", "nifti", "dicom", "png")


def load_hu_input(spec: str, *, size: int | None, seed: int) -> tuple[np.ndarray, float | None, str, dict | None]:
    """Load images in HU from a path or ``phantom:N``.

    Returns ``(hu [N, H, W], pixel spacing mm or None, source description, placement)``,
    the placement (:func:`turndiff.io.placement_of`) saying where the slices sit in
    patient space, or None where the input does not say (phantoms, ``.npy``).
    """
    if spec.startswith("phantom:"):
        from ..phantoms import make_phantoms

        n = phantom_count(spec)
        s = size or 256
        return make_phantoms(n, s, seed=seed), 384.0 / s, f"turndiff phantoms (seed {seed})", None
    from ..io import placement_of, read_volume

    vol = read_volume(spec)
    ps = None
    if vol.spacing is not None:
        ps = float(vol.spacing[1])
    return vol.hu, ps, vol.source, placement_of(vol)


def phantom_count(spec: str, least: int = 1) -> int:
    """N of a ``phantom:N`` input, checked."""
    try:
        n = int(spec.split(":", 1)[1])
    except ValueError:
        raise InputError(f"phantom spec must be 'phantom:N' with N an integer, got {spec!r}") from None
    if n < least:
        raise InputError(f"phantom:N needs N >= {least}")
    return n


def to_square_grid(hu: np.ndarray, spacing: float | None, size: int | None) -> tuple[np.ndarray, float]:
    """Pad to a square (with air) and resample to ``size`` x ``size``; returns new spacing (mm).

    Without a known spacing, the field of view is taken as 384 mm.
    """
    from skimage.transform import resize

    n, h, w = hu.shape
    if h != w:
        m = max(h, w)
        out = np.full((n, m, m), -1000.0, np.float32)
        out[:, (m - h) // 2 : (m - h) // 2 + h, (m - w) // 2 : (m - w) // 2 + w] = hu
        hu, h = out, m
    ps = spacing if spacing else 384.0 / h
    if size and size != h:
        hu = np.stack([resize(s, (size, size), order=1, anti_aliasing=size < h, preserve_range=True) for s in hu])
        ps = ps * h / size
    return hu.astype(np.float32), float(ps)


def output_format(path: str, fmt: str | None) -> str:
    if fmt:
        return fmt
    p = path.lower()
    if p.endswith(".h5") or p.endswith(".hdf5"):
        return "h5"
    if p.endswith(".npy"):
        return "npy"
    if p.endswith(".nii") or p.endswith(".nii.gz"):
        return "nii"
    raise InputError(f"cannot tell the output format of {path!r}: use .h5, .npy, .nii(.gz) or --format dicom|png")


def uncertainty_path(out: str, fmt: str) -> str:
    """Where ``reconstruct --uncertainty`` writes the map beside a non-HDF5 output ``out``:
    ``_uncertainty`` before the suffix (``recon_uncertainty.nii.gz``, a DICOM folder
    ``recon_uncertainty``)."""
    p = str(out).rstrip("/")
    for suffix in (".nii.gz", ".nii", ".npy"):
        if p.lower().endswith(suffix):
            return p[: -len(suffix)] + "_uncertainty" + p[-len(suffix):]
    return p + "_uncertainty"


def geometry_of(attrs: dict, where: str):
    from ..physics import geometry_from_json

    g = attrs.get("geometry")
    if g is None:
        raise InputError(f"{where}: no 'geometry' attribute; cannot reconstruct")
    try:
        return geometry_from_json(g if isinstance(g, str) else json.dumps(g))
    except ValueError as e:
        raise InputError(f"{where}: {e}") from None


def check_image_output(out: str, fmt: str | None) -> str:
    """Check ``--out`` / ``--format`` of an image output before any work; returns the format."""
    from ..io.volume import check_volume_output

    f = output_format(out, fmt)
    check_volume_output(out, "nifti" if f == "nii" else f)
    return f


def write_images(out: str, hu: np.ndarray, *, fmt: str | None, spacing: float | None, extra: dict | None = None,
                 attrs: dict | None = None, template=None, anonymize: bool = False) -> str:
    """Write HU images in the format the extension (or ``fmt``) names. Returns the format."""
    from ..io import write_h5, write_volume

    f = output_format(out, fmt)
    if f == "h5":
        datasets = {"image_hu": hu, **(extra or {})}
        a = dict(attrs or {})
        write_h5(out, datasets, geometry_json=a.pop("geometry", None), photons=a.pop("photons", None),
                 source=a.pop("source", None), extra_attrs=a)
    else:
        sp = (spacing, spacing) if spacing else None
        place = (attrs or {}).get("placement")
        write_volume(out, hu, format="nifti" if f == "nii" else f, spacing=sp, template=template, anonymize=anonymize,
                     placement=json.loads(place) if isinstance(place, str) else place)
    return f


def seed_option(help: str = "Seed of every random choice (noise, initialisation, sampling).", default: int = 0):
    """``--seed``: an integer in [0, 2**32 - 1] (what every seeded library takes), checked
    by click so that a bad value is refused naming the option."""
    import click

    return click.option("--seed", type=click.IntRange(min=0, max=2**32 - 1), default=default, show_default=True,
                        help=help)


def overwrite_option(f):
    """``--overwrite``: the one output policy of every command that writes."""
    import click

    return click.option("--overwrite", is_flag=True, default=False,
                        help="Replace an existing output (never an input; a folder only if turndiff wrote it).")(f)


def refuse_output_over_input(out: str, *inputs: str, model_folder: bool = False, overwrite: bool = False) -> None:
    """The output policy, checked before any work: one-line error when ``--out`` names one
    of the command's inputs (the input would be replaced by the output, and a scan may not
    be repeatable), when it exists (a file, or a non-empty folder) and ``overwrite`` is
    off, or, with ``model_folder``, when it could not take a model folder."""
    import os
    from pathlib import Path

    target = Path(out).expanduser()
    for inp in inputs:
        if inp is None or str(inp).startswith("phantom:"):
            continue
        src = Path(inp).expanduser()
        same = target.resolve() == src.resolve()
        if not same and target.exists() and src.exists():
            same = os.path.samefile(target, src)
        if same:
            raise InputError(f"--out {out} is the input {inp}; write the output under another name")
    if not overwrite and (target.is_file() or target.is_symlink() or (target.is_dir() and any(target.iterdir()))):
        raise InputError(f"--out {out} exists; pass --overwrite to replace it")
    if model_folder:
        from ..io import check_output

        check_output(target, directory=True)


def claim_run_dir(run_dir, sinogram, settings: dict, restart: bool = False) -> bool:
    """:func:`turndiff.io.claim_run_dir` (the CLI's commands import it from here)."""
    from ..io import claim_run_dir as claim

    return claim(run_dir, sinogram, settings, restart=restart)


def restart_option(f):
    """``--restart``: discard an interrupted run in OUT.run/ instead of resuming it."""
    import click

    return click.option("--restart", is_flag=True, default=False,
                        help="Discard an interrupted run in OUT.run/ and start again (default: resume it).")(f)
