"""Whole studies: reconstruct a scan of any length a batch of slices at a time.

:func:`reconstruct_study` reads the ``sinogram`` of an ``.h5`` file in batches
(:class:`turndiff.io.SinogramReader`), runs the pipeline on each and writes each result
into a work file in the run folder ``OUT.run/`` (chunked HDF5, one slice per chunk), so the
memory it needs does not grow with the number of slices. The slices stay consistent with
each other and with a single call: the input's dose is estimated once for the whole study
(from up to :data:`DOSE_SLICES` slices spread through it), and one generator hands every
slice the sampler seed it would get in one call. An interrupted run (Ctrl-C, SIGTERM, a
SIGKILL, a power cut) is rerun with the same command: the run folder, tied to its input and
settings, says which slices are done, and only the others are computed. The output appears
at once, complete, when the last slice is done; the run folder is then removed.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from . import distributed
from .dose import estimate_photons
from .errors import InputError
from .inference.polish import POLISH_TV_HU
from .io import SinogramReader, atomic_output, claim_run_dir, run_dir_for, spread_slices
from .pipeline import TurnDiffPipeline
from .physics import geometry_from_json
from .stage1.model import DEFAULT_SYMMETRIES

__all__ = ["DOSE_SLICES", "GPU_STUDY_BATCH", "STUDY_BATCH", "StudyResult", "reconstruct_study"]

#: Slices the dose of a study is estimated from (spread evenly; all of a shorter study).
DOSE_SLICES = 16
#: Slices reconstructed at once on a CPU: the unit of progress, of resumption and of memory.
STUDY_BATCH = 8
#: The same on a GPU, where a batch of 32 512 x 512 slices fills the device better (docs/BENCHMARKS.md).
GPU_STUDY_BATCH = 32
_WORK = "partial.h5"


@dataclass
class StudyResult:
    """What :func:`reconstruct_study` did: slices in the study, slices computed by this
    call (the others were done by an interrupted one), the strategy chosen, the study's
    estimated ``I0``, and the mean SURE calibration weight (None when off)."""

    slices: int
    computed: int
    strategy: Any
    photons_input: float | None
    calibration: float | None


def _open_work(path: Path, n: int, shape: tuple[int, int], names: tuple[str, ...]):
    """The work file: ``image_hu`` (and intermediates) ``[n, H, W]`` chunked by slice, and
    ``done`` ``[n]``; created if missing, else reopened as an interrupted run left it."""
    import h5py

    if path.is_file():
        f = None
        try:
            f = h5py.File(path, "r+")
            if all(k in f and f[k].shape == (n, *shape) for k in names) and f["done"].shape == (n,):
                f["done"][()]  # readable to the end
                return f
        except (OSError, KeyError, ValueError, RuntimeError):  # killed mid-write: start it again
            pass
        if f is not None:
            try:
                f.close()
            except Exception:  # a damaged file may not even close cleanly
                pass
        path.unlink()
    f = h5py.File(path, "w")
    for k in names:
        f.create_dataset(k, shape=(n, *shape), dtype=np.float32, chunks=(1, *shape))
    f.create_dataset("done", shape=(n,), dtype=np.uint8)
    return f


def reconstruct_study(
    pipe: TurnDiffPipeline,
    input_h5: str | os.PathLike[str],
    finish: Callable[[Path, dict[str, Any]], None],
    *,
    out: str | os.PathLike[str],
    strategy: str = "auto",
    lam: float | None = None,
    fusion: str = "pixel",
    fusion_lam: float | None = None,
    steps: int | None = None,
    strength: float | None = None,
    seed: int = 0,
    calibrate: bool | None = None,
    symmetries: str = DEFAULT_SYMMETRIES,
    save_intermediates: bool = False,
    uncertainty: bool = False,
    restore: bool = True,
    consistency: bool = True,
    lowband: bool = True,
    polish: float | None = None,
    batch: int | None = None,
    restart: bool = False,
    progress: bool = True,
) -> StudyResult:
    """Reconstruct every slice of ``input_h5`` in batches, resumably.

    Parameters
    ----------
    pipe
        The model.
    input_h5
        A turndiff ``.h5`` scan (its ``sinogram``, ``[N, V, D]``, any N).
    finish
        ``finish(work, attrs)`` turns the completed work file (an HDF5 file holding
        ``image_hu`` ``[N, H, W]`` and, with ``save_intermediates``, the intermediates) into
        the output; ``attrs`` are the input's ``geometry`` and ``photons`` and a ``source``
        line. Called once, after the last slice.
    out
        The output path: the run folder is ``OUT.run`` beside it.
    strategy, lam, fusion, fusion_lam, steps, strength, seed, calibrate, symmetries
        As for :meth:`TurnDiffPipeline.__call__`.
    restore, consistency, lowband
        Detail restoration after the fusion, the data-consistency step after it, and its
        prior's low band from ``x0`` (:meth:`TurnDiffPipeline.__call__`).
    polish
        The final polish's TV weight in HU (:meth:`TurnDiffPipeline.__call__`; 0: none;
        None: the pipeline's default, :data:`turndiff.inference.polish.POLISH_TV_HU`).
    uncertainty
        Also compute the per-pixel uncertainty map (``uncertainty_hu`` in the work file;
        :meth:`TurnDiffOutput.uncertainty`).
    batch
        Slices per batch (memory and the unit of resumption). Results do not depend on it,
        to float round-off (5e-4 HU on the test study; docs/METHOD.md, "Batching").
        Default: :data:`STUDY_BATCH` on a CPU, :data:`GPU_STUDY_BATCH` on a GPU.
    restart
        Discard an interrupted run in ``OUT.run/`` instead of resuming it.

    Returns
    -------
    StudyResult
    """
    from tqdm.auto import tqdm

    if polish is None:
        polish = POLISH_TV_HU
    if batch is None:
        batch = STUDY_BATCH if pipe.device.type == "cpu" else GPU_STUDY_BATCH
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise InputError(f"batch must be an integer >= 1, got {batch!r}")
    with SinogramReader(input_h5) as reader:
        n = len(reader)
        attrs = reader.attrs
        g = geometry_from_json(attrs["geometry"]) if "geometry" in attrs else None
        pipe.check_sinogram(reader.read(slice(0, 1)), g, where=str(input_h5))
        pipe.check_sampler(steps, strength)  # before hashing the study, not at its first batch
        run_dir = run_dir_for(out)
        settings = {"command": "reconstruct", "strategy": strategy, "lam": lam, "fusion": fusion,
                    "fusion_lam": fusion_lam, "steps": steps, "strength": strength, "seed": seed,
                    "calibrate": calibrate, "symmetries": symmetries, "intermediates": bool(save_intermediates),
                    "uncertainty": bool(uncertainty), "restore": bool(restore),
                    "consistency": bool(consistency), "lowband": bool(lowband), "polish": float(polish),
                    "model": pipe.info.get("version"), "model_geometry": pipe.info.get("geometry")}
        # Under torchrun rank 0 owns the run folder and the work file and writes every result;
        # the batches are shared out round-robin and their results gathered to it.
        rank, world = distributed.rank(), distributed.world_size()
        if rank == 0:
            claim_run_dir(run_dir, reader, settings, restart=restart)
        photons = None
        if (strategy == "auto" or calibrate is not False) and rank == 0:
            photons = float(estimate_photons(reader.read(spread_slices(n, DOSE_SLICES))))
        photons = distributed.broadcast(photons)
        names = ("image_hu",)
        if save_intermediates:  # what TurnDiffOutput.intermediates() holds for this model and fusion
            names += ("x_ld", "x0", "x_prior") + (
                ("x_diffusion",) + (("fusion_weight",) if fusion == "pixel" else ())
                + (("x_fused",) if restore else ()) + (("x_restored",) if consistency else ())
                + (("x_unpolished",) if consistency and polish > 0 else ()) if pipe.stage2 else ())
        if uncertainty:
            names += ("uncertainty_hu",)
        # One generator each for the sampler's seeds and the calibration's probes, through
        # every batch: slice k gets what it would get in one call, whatever the batching.
        generator = torch.Generator().manual_seed(int(seed))
        probe_rng = np.random.default_rng(0)
        calibrated = pipe.calibrates(photons, calibrate)
        computed, choice, weights = 0, None, []
        work = _open_work(run_dir / _WORK, n, pipe.geometry.image_shape, names) if rank == 0 else None
        try:
            with tqdm(total=n, desc="reconstruct", unit="slice", disable=not progress) as bar:
                done = distributed.broadcast(np.asarray(work["done"][()], bool) if work is not None else None)
                bar.update(int(done.sum()))
                starts = list(range(0, n, batch))
                mine = None
                for j, a in enumerate(starts):
                    b = min(a + batch, n)
                    if done[a:b].all() or j % world != rank:  # done before, or another rank's
                        torch.randint(0, 2**62, (b - a,), generator=generator)  # only advance the generators
                        if calibrated:
                            probe_rng.standard_normal((b - a, *pipe.geometry.sinogram_shape))
                    else:
                        res = pipe(reader.read(slice(a, b)), strategy=strategy, lam=lam, fusion=fusion,
                                   fusion_lam=fusion_lam, steps=steps, strength=strength, calibrate=calibrate,
                                   symmetries=symmetries, photons_input=photons, generator=generator,
                                   probe_rng=probe_rng, restore=restore, consistency=consistency, lowband=lowband,
                                   polish=polish, progress=False)
                        extra = ({k: np.asarray(v, np.float32) for k, v in res.intermediates().items()}
                                 if save_intermediates else {})
                        if uncertainty:
                            extra["uncertainty_hu"] = res.uncertainty()
                        mine = (a, b, res.image_hu.astype(np.float32), extra, res.strategy,
                                None if res.calibration is None else float(np.mean(res.calibration)))
                    if j % world == world - 1 or j == len(starts) - 1:  # end of a round: rank 0 writes it
                        for part in distributed.gather(mine) or []:
                            if part is None:
                                continue
                            a0, b0, image, extra, choice, weight = part
                            work["image_hu"][a0:b0] = image
                            for k, v in extra.items():
                                work[k][a0:b0] = v
                            work["done"][a0:b0] = 1
                            work.flush()
                            if weight is not None:
                                weights.append(weight)
                            computed += b0 - a0
                            bar.update(b0 - a0)
                        mine = None
        finally:
            if work is not None:
                work.close()
    if rank > 0:
        distributed.barrier()  # rank 0 writes the output; the others wait for it
        return StudyResult(n, computed, choice, photons, None)
    if choice is None:  # every slice was done before: the strategy of this input, again
        from .inference import choose_strategy

        choice = choose_strategy(strategy, lam, photons_input=photons if strategy == "auto" else None,
                                 photons_train=pipe.info.get("photons_train_estimated"))
    keep = {k: attrs[k] for k in ("geometry", "photons", "placement") if k in attrs}
    keep["source"] = f"turndiff reconstruct ({choice.strategy}, fusion {fusion}) of {input_h5}"
    try:
        finish(run_dir / _WORK, keep)
        shutil.rmtree(run_dir, ignore_errors=True)
    finally:
        distributed.barrier()
    return StudyResult(n, computed, choice, photons, float(np.mean(weights)) if weights else None)


def finish_h5(out: str | os.PathLike[str], *, overwrite: bool = False) -> Callable[[Path, dict[str, Any]], None]:
    """A ``finish`` for :func:`reconstruct_study` that makes the work file itself the
    ``.h5`` output (attributes added, bookkeeping dropped, renamed into place): the study
    is never held in memory, not even to write it."""
    import h5py

    def finish(work: Path, attrs: dict[str, Any]) -> None:
        with h5py.File(work, "r+") as f:
            del f["done"]
            for k, v in attrs.items():
                f.attrs[k] = v
        with atomic_output(out, overwrite=overwrite) as tmp:
            os.replace(work, tmp)

    return finish


def finish_images(write: Callable[[Any, dict[str, Any], dict[str, np.ndarray] | None], None],
                  intermediates: bool = False, lazy: bool = False,
                  write_uncertainty: Callable[[Any, dict[str, Any]], None] | None = None,
                  ) -> Callable[[Path, dict[str, Any]], None]:
    """A ``finish`` for formats written from an array (NumPy, NIfTI, DICOM, PNG):
    ``write(image_hu, attrs, extra)`` gets the completed stack, as an array, or with
    ``lazy`` as the work file's HDF5 dataset, which DICOM and PNG writers read one slice at
    a time (:func:`turndiff.io.write_volume`), so the study is never whole in memory.
    ``write_uncertainty(uncertainty_hu, attrs)`` writes the uncertainty map the same way."""
    import h5py

    def finish(work: Path, attrs: dict[str, Any]) -> None:
        with h5py.File(work, "r") as f:
            extra = ({k: f[k][()] for k in f if k not in ("image_hu", "done", "uncertainty_hu")}
                     if intermediates else None)
            write(f["image_hu"] if lazy else f["image_hu"][()], attrs, extra)
            if write_uncertainty is not None and "uncertainty_hu" in f:
                write_uncertainty(f["uncertainty_hu"] if lazy else f["uncertainty_hu"][()], attrs)

    return finish
