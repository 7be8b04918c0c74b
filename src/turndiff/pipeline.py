"""TurnDiff end to end: ``fit`` trains both stages on noisy sinograms; ``TurnDiffPipeline``
loads a model folder and reconstructs arrays or files.

A model folder::

    MODEL_DIR/
      turndiff.json            components, geometry, training dose, presets, version
      projection_denoiser/     stage 1: config.json + model.safetensors
      latent_diffusion/        stage 2: stage2.json + autoencoder/ + unet/ (safetensors)

Inference (fig. 2, bottom):

1. ``x_ld = FBP(y)``, ``x0 = FBP(f(y))``;
2. the tunable strategy blends them into the condition ``x^`` (``auto`` by default);
3. the latent diffusion samples ``x~0`` from ``x^``;
4. the pixel-level self-correcting fusion combines ``x~0`` with ``x0``.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from . import __version__
from .dose import dose_from_photons, estimate_photons
from ._checks import as_stack, check_sinograms
from .checkpoint import write_json
from .errors import InputError
from .io import atomic_output
from .inference import (LOWBAND_PX, FusionConfig, StrategyChoice, blend, choose_strategy, global_fusion,
                        lowband_fusion, pixel_fusion)
from .inference.consistency import data_consistency
from .inference.detail import DETAIL_BLUR_PX, DETAIL_K, input_noise_std, restore_detail
from .inference.polish import POLISH_TV_HU, bregman_tv
from .inference.uncertainty import PRIOR_UNCERTAINTY_COEF, uncertainty_map
from .physics import CTProjector, Geometry, geometry_from_json
from .stage1 import ProjectionDenoiser, Stage1Config, train_projection_denoiser
from .stage1.sure import CALIBRATE_MAX_NOISE_RATIO, calibration_applies  # noqa: F401  (documented here before)
from .stage1.model import DEFAULT_SYMMETRIES
from .stage2 import LatentDiffusion, Stage2Config, sampling_timesteps, train_stage2
from .stage2.train import recorrupted_images
from .training import resolve_device

__all__ = ["TurnDiffPipeline", "TurnDiffOutput", "ProjectionPass", "consistency_prior", "consistent_teacher", "fit", "fit_stage2", "stage2_copies", "fbp_hu_on",
           "model_index", "MODEL_JSON"]

MODEL_JSON = "turndiff.json"
STAGE1_DIR = "projection_denoiser"
STAGE2_DIR = "latent_diffusion"


@dataclass
class TurnDiffOutput:
    """What a reconstruction returns: the image and every intermediate, HU ``[N, H, W]``."""

    image_hu: np.ndarray
    x_ld: np.ndarray
    x0: np.ndarray
    x_prior: np.ndarray
    x_diffusion: np.ndarray | None
    fusion_weight: np.ndarray | None
    strategy: StrategyChoice
    photons_estimated: float | None = None
    seconds: dict = field(default_factory=dict)
    calibration: np.ndarray | None = None  # SURE weights [N, view bands * detector bands], view-major
    x_fused: np.ndarray | None = None  # the fused image before detail restoration (None without it)
    x_restored: np.ndarray | None = None  # the image before the data-consistency step (None without it)
    posterior_std: np.ndarray | None = None  # that step's posterior standard-deviation bound, HU (None without it)
    x_unpolished: np.ndarray | None = None  # the image before the TV polish (None without it)

    @property
    def unpolished(self) -> np.ndarray:
        """The image before the final polish: ``x_unpolished``, or ``image_hu`` where there was none."""
        return self.image_hu if self.x_unpolished is None else self.x_unpolished

    def uncertainty(self) -> np.ndarray:
        """Per-pixel uncertainty of ``image_hu`` (HU, ``[N, H, W]``):
        :func:`turndiff.inference.uncertainty.uncertainty_map` of this output (with the
        image before the data-consistency step as ``x_before`` where there was one). The map
        is computed on the image before the polish, the image its coefficients were fitted
        to; scored against the polished output's error it still ranks and covers it
        (`turndiff iq`, docs/BENCHMARKS.md "Session 36": Spearman 0.536, 96.2% within 2u)."""
        return uncertainty_map(self.unpolished, self.x_ld, self.x0, self.x_diffusion, x_before=self.x_restored,
                               posterior_std=self.posterior_std)

    def intermediates(self) -> dict[str, np.ndarray]:
        out = {"x_ld": self.x_ld, "x0": self.x0, "x_prior": self.x_prior}
        if self.x_diffusion is not None:
            out["x_diffusion"] = self.x_diffusion
        if self.fusion_weight is not None:
            out["fusion_weight"] = self.fusion_weight
        if self.x_fused is not None:
            out["x_fused"] = self.x_fused
        if self.x_restored is not None:
            out["x_restored"] = self.x_restored
        if self.x_unpolished is not None:
            out["x_unpolished"] = self.x_unpolished
        return out


@dataclass
class ProjectionPass:
    """Stage 1's part of a reconstruction (:meth:`TurnDiffPipeline.project`): the FBP of the
    input, the denoised line integrals and their FBP. Everything after it (strategy,
    diffusion, fusion, restoration, data consistency) reads only this, so one pass serves
    any number of those settings on the same sinogram (``TurnDiffPipeline(...,
    projection=...)``)."""

    x_ld: np.ndarray  # FBP of the input, HU [N, H, W]
    x0: np.ndarray  # FBP of the (calibrated) denoised sinogram, HU [N, H, W]
    denoised: np.ndarray  # stage 1's output before calibration, line integrals [N, V, D]
    photons: float | None  # the input's estimated I0 (None when nothing needed it)
    calibration: np.ndarray | None  # SURE calibration weights (None: not calibrated)
    seconds: dict = field(default_factory=dict)
    # FBP of ``denoised``, HU [N, H, W]: :meth:`TurnDiffPipeline.project` sets it whenever it
    # calibrates (None: ``x0`` is uncalibrated and is it).
    x0_raw: np.ndarray | None = None

    @property
    def x0_uncalibrated(self) -> np.ndarray:
        """FBP of stage 1's output before the calibration: the image stage 2 was trained on."""
        return self.x0 if self.x0_raw is None else self.x0_raw




def fbp_hu_on(projector: CTProjector, sinogram: np.ndarray, device: torch.device, batch: int = 8) -> np.ndarray:
    """``projector.fbp_hu`` of NumPy sinograms ``[N, V, D]`` on ``device``: the numba kernels
    on the CPU, the torch backend on a GPU (``batch`` slices per transfer, so GPU memory
    stays bounded). Returns float32 HU ``[N, H, W]`` on the host either way."""
    if device.type == "cpu":
        return projector.fbp_hu(sinogram)
    y = np.asarray(sinogram, np.float32)
    squeeze = y.ndim == 2
    y = y[None] if squeeze else y
    gpu = CTProjector(projector.geometry, backend="torch", view_chunk=90)
    out = np.empty((y.shape[0], *projector.geometry.image_shape), np.float32)
    for a in range(0, y.shape[0], batch):
        out[a : a + batch] = gpu.fbp_hu(torch.from_numpy(np.ascontiguousarray(y[a : a + batch])).to(device)).cpu().numpy()
    return out[0] if squeeze else out


def _geometry_dict(geometry, where) -> dict:
    try:
        value = json.loads(geometry) if isinstance(geometry, str) else geometry
    except json.JSONDecodeError:
        raise InputError(f"{where}: the stored geometry is not valid JSON") from None
    if not isinstance(value, dict):
        raise InputError(f"{where}: the stored geometry is not a JSON object")
    return value


class TurnDiffPipeline:
    """The trained TurnDiff model: stage 1, stage 2 and the geometry they were trained on.

    Examples
    --------
    >>> pipe = TurnDiffPipeline.from_pretrained("model")          # doctest: +SKIP
    >>> out = pipe(sinogram, strategy="auto", fusion="pixel")     # doctest: +SKIP
    >>> out.image_hu.shape                                        # doctest: +SKIP
    (4, 256, 256)
    """

    def __init__(self, stage1: ProjectionDenoiser, stage2, info: dict, *, device: str | torch.device = "auto") -> None:
        self.stage1 = stage1
        self.stage2 = stage2
        self.info = info
        self.geometry: Geometry = geometry_from_json(info["geometry"])
        self.device = resolve_device(device)
        self.projector = CTProjector(self.geometry)

    # ----------------------------------------------------------------- persistence
    @classmethod
    def from_pretrained(cls, model_dir: str | Path, *, device: str | torch.device = "auto") -> "TurnDiffPipeline":
        """Load a model folder written by :func:`fit` / :meth:`save_pretrained`."""
        d = Path(model_dir)
        meta = d / MODEL_JSON
        if not meta.is_file():
            raise InputError(f"{d}: not a TurnDiff model folder (no {MODEL_JSON})")
        try:
            info = json.loads(meta.read_text())
        except json.JSONDecodeError as e:
            raise InputError(f"{meta}: not valid JSON ({e.msg})") from None
        if not isinstance(info, dict) or not isinstance(info.get("geometry"), str):
            raise InputError(f"{meta}: not a TurnDiff model index (needs a 'geometry' string)")
        _check_index(info, meta)
        dev = resolve_device(device)
        stage1 = ProjectionDenoiser.from_pretrained(d / STAGE1_DIR)
        components = info.get("components") if isinstance(info.get("components"), dict) else {}
        wants_stage2 = components.get("stage2") is not None if "stage2" in components else (d / STAGE2_DIR).is_dir()
        if wants_stage2 and not (d / STAGE2_DIR).is_dir():
            raise InputError(f"{d}: {MODEL_JSON} lists the stage-2 model but {STAGE2_DIR}/ is missing")
        stage2 = LatentDiffusion.from_pretrained(d / STAGE2_DIR, device=dev) if wants_stage2 else None
        s1_geometry = stage1.info.get("geometry")
        if s1_geometry is not None and _geometry_dict(s1_geometry, d) != _geometry_dict(info["geometry"], meta):
            raise InputError(f"{d}: the stage-1 model was trained on another geometry than {MODEL_JSON} states")
        return cls(stage1, stage2, info, device=dev)

    def save_pretrained(self, model_dir: str | Path) -> Path:
        """Write the model folder (atomically: a crash leaves no half-written folder)."""
        d = Path(model_dir)
        with atomic_output(d, directory=True) as tmp:
            self.stage1.save_pretrained(tmp / STAGE1_DIR)
            if self.stage2 is not None:
                self.stage2.save_pretrained(tmp / STAGE2_DIR)
            write_json(tmp / MODEL_JSON, self.info)
        return d

    # ----------------------------------------------------------------- inference
    def check_sinogram(self, sinogram: np.ndarray, geometry: Geometry | None = None, where: str = "input") -> np.ndarray:
        """Validate shape / values (and geometry when given) against the model."""
        y, _ = as_stack(sinogram, f"{where}: sinogram", "V, D")
        if tuple(y.shape[1:]) != self.geometry.sinogram_shape:
            raise InputError(f"{where}: sinogram is {list(y.shape[1:])} (V, D) but the model was trained on "
                             f"{list(self.geometry.sinogram_shape)}")
        if geometry is not None and geometry != self.geometry:
            a, b = self.geometry.to_dict(), geometry.to_dict()
            diffs = [k for k in a if a[k] != b.get(k)]
            raise InputError(f"{where}: geometry does not match the model's (differs in {', '.join(diffs)})")
        return y

    def calibrates(self, photons_input: float | None, calibrate: bool | None) -> bool:
        """Whether :meth:`__call__` runs the SURE calibration for an input of estimated
        ``I0`` ``photons_input`` (see its ``calibrate``)."""
        return calibration_applies(photons_input, self.info.get("photons_train_estimated"), calibrate)

    def check_sampler(self, steps: int | None, strength: float | None) -> None:
        """Raise :class:`InputError` now if stage 2 cannot sample with ``steps`` and
        ``strength`` (a stage-1-only model takes anything)."""
        if self.stage2 is not None:
            cfg2 = self.stage2.config
            sampling_timesteps(cfg2, cfg2.sampler.steps if steps is None else steps, strength=strength)

    def project(
        self,
        sinogram: np.ndarray,
        *,
        calibrate: bool | None = None,
        symmetries: str = DEFAULT_SYMMETRIES,
        photons_input: float | None = None,
        probe_rng: np.random.Generator | None = None,
        progress: bool = True,
        need_photons: bool = True,
        calibration_bands: tuple[int, int] | None = None,
    ) -> ProjectionPass:
        """Stage 1 of :meth:`__call__` alone, on post-log sinograms ``[N, V, D]``: ``x_ld``,
        the denoised line integrals (SURE-calibrated as ``calibrate`` says) and ``x0``.
        The parameters are :meth:`__call__`'s; pass the result back as its ``projection``
        to try strategies, fusions or samplers on one input without denoising it again."""
        y = self.check_sinogram(sinogram)
        t = {}
        t0 = time.perf_counter()
        x_ld = fbp_hu_on(self.projector, y, self.device)
        t["fbp"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        cal = self.stage1.denoise_calibrated(
            y, calibrate=calibrate, photons_input=photons_input, need_photons=need_photons,
            photons_train_estimated=self.info.get("photons_train_estimated"), device=self.device, progress=progress,
            symmetries=symmetries, probe_rng=probe_rng, bands=calibration_bands)
        y0_raw, y0, weights, i0_in = cal.raw, cal.denoised, cal.weights, cal.photons_input
        x0 = fbp_hu_on(self.projector, y0, self.device)
        x0_raw = None if weights is None else fbp_hu_on(self.projector, y0_raw, self.device)
        t["stage1"] = time.perf_counter() - t0
        return ProjectionPass(x_ld, x0, y0_raw, i0_in, weights, t, x0_raw)

    def __call__(
        self,
        sinogram: np.ndarray,
        *,
        strategy: Literal["auto", "up", "down", "none"] = "auto",
        lam: float | None = None,
        fusion: Literal["pixel", "global"] = "pixel",
        fusion_lam: float | None = None,
        steps: int | None = None,
        strength: float | None = None,
        seed: int = 0,
        fusion_config: FusionConfig | None = None,
        calibrate: bool | None = None,
        symmetries: str = DEFAULT_SYMMETRIES,
        photons_input: float | None = None,
        generator: torch.Generator | None = None,
        probe_rng: np.random.Generator | None = None,
        restore: bool = True,
        consistency: bool = True,
        lowband: bool = True,
        progress: bool = True,
        projection: ProjectionPass | None = None,
        calibration_bands: tuple[int, int] | None = None,
        x_diffusion: np.ndarray | None = None,
        lowband_x0: Literal["calibrated", "uncalibrated"] = "calibrated",
        polish: float = POLISH_TV_HU,
    ) -> TurnDiffOutput:
        """Reconstruct post-log sinograms ``[N, V, D]`` into HU images ``[N, H, W]``.

        Parameters
        ----------
        strategy, lam
            Tunable dose strategy (``auto`` estimates the input's dose from its noise).
        fusion, fusion_lam
            ``pixel`` (default, self-correcting) or ``global`` with weight ``fusion_lam``
            (default 0.5) of the diffusion output.
        steps, strength
            DDIM steps and the partial-diffusion start (fraction of the chain);
            defaults from the model's stage-2 config.
        seed
            Seed of the diffusion sampler.
        calibrate
            Blend stage 1's output with the measured sinogram per band of detector x view
            frequency with SURE's weights (:func:`turndiff.stage1.sure_calibrate`; no clean data).
            ``None`` (default): on when the input is at most ``CALIBRATE_MAX_NOISE_RATIO``
            times as noisy as the training scans (a denoiser over-smooths cleaner data;
            on noisier data SURE's Gaussian model was measured to cost, docs/METHOD.md).
        symmetries
            Test-time flips of stage 1 (:data:`turndiff.stage1.SYMMETRIES`; default all
            four, chosen by SURE; ``"none"``: one pass, four times faster).
        photons_input
            The input's ``I0`` as :func:`turndiff.dose.estimate_photons` gives it (default:
            estimated from ``sinogram``). A study reconstructed in batches passes one
            estimate for all of them, so every slice gets the same strategy.
        generator
            CPU generator of the sampler's per-slice seeds, instead of ``seed``; a study
            reconstructed in batches passes one generator through all of them, so slice
            ``k`` gets the noise it would get in one call.
        probe_rng
            NumPy generator of the SURE calibration's probes (default: seeded 0 per call);
            passed through a study's batches for the same reason.
        restore
            Detail restoration after the fusion (:mod:`turndiff.inference.detail`): the part
            of ``x_ld - image`` that stands out of the input's own noise level is put back
            (``x_fused`` keeps the image before it). False: the paper's output.
        consistency
            Data consistency after them (:mod:`turndiff.inference.consistency`): the penalised
            weighted least-squares image with the output so far as a Gaussian prior whose
            standard deviation is the uncertainty map (``x_restored`` keeps the image before
            it). False: the image before it.
        lowband
            The data-consistency prior takes ``x0``'s band below a Gaussian of
            :data:`~turndiff.inference.LOWBAND_PX` pixels (:func:`consistency_prior`): faint
            lesions that the diffusion flattened keep ``x0``'s contrast (docs/METHOD.md, "The
            prior's low band from x0"). On by default since session 33 (chosen on validation
            phantoms with the consistent teacher, docs/STAGE2.md, "Session 33"); False: the
            restored image itself is the prior's mean.
        projection
            Stage 1's pass on this ``sinogram`` (:meth:`project`), reused instead of running
            stage 1 again; ``calibrate``, ``symmetries``, ``photons_input``, ``probe_rng`` and
            ``calibration_bands`` are then the pass's own and are not read.
        lowband_x0
            Which stage-1 image gives the low band: ``"calibrated"`` (default), ``x0``
            itself, or ``"uncalibrated"``, stage 1's output before the SURE calibration
            (the same where it did not run); everything else keeps ``x0``.
        polish
            The TV weight (HU) of the edge-preserving polish last
            (:func:`turndiff.inference.polish.bregman_tv`: TV with one Bregman step, which
            removes the fine-grained texture the diffusion leaves in flat tissue and keeps
            faint compact structure; ``x_unpolished`` keeps the image before it). Default
            :data:`~turndiff.inference.polish.POLISH_TV_HU`; 0: no polish. Part of the
            data-consistency stage: no effect with ``consistency=False``.
        x_diffusion
            Stage 2's output for this input (a previous result's ``x_diffusion``, made with
            the same ``projection``, strategy and sampler settings), reused instead of
            sampling again: fusions, restoration and data consistency can then be compared
            on one draw of the diffusion (the benchmark's ablations do).
        calibration_bands
            ``(detector bands, view bands)`` of the SURE calibration (default
            ``(CALIBRATION_BANDS, CALIBRATION_VIEW_BANDS)``, 8 x 8; ``(8, 1)`` is the layout
            before session 18, detector frequency alone).
        """
        if fusion not in ("pixel", "global"):
            raise ValueError(f"unknown fusion {fusion!r}; choose pixel or global")
        if lowband_x0 not in ("calibrated", "uncalibrated"):
            raise ValueError(f"lowband_x0 must be calibrated or uncalibrated, got {lowband_x0!r}")
        if not (np.isfinite(polish) and polish >= 0):
            raise ValueError(f"polish must be a TV weight >= 0 HU, got {polish}")
        y = self.check_sinogram(sinogram)
        self.check_sampler(steps, strength)  # before stage 1 runs, not after
        if projection is None:
            projection = self.project(y, calibrate=calibrate, symmetries=symmetries, photons_input=photons_input,
                                      probe_rng=probe_rng, progress=progress,
                                      need_photons=strategy == "auto" or calibrate is not False,
                                      calibration_bands=calibration_bands)
        elif projection.x_ld.shape[0] != y.shape[0]:
            raise InputError(f"the projection pass has {projection.x_ld.shape[0]} slices, the sinogram {y.shape[0]}")
        t = dict(projection.seconds)
        x_ld, x0, y0_raw, i0_in = projection.x_ld, projection.x0, projection.denoised, projection.photons
        weights = projection.calibration
        if i0_in is None and strategy == "auto":  # a pass made with need_photons=False
            i0_in = float(photons_input) if photons_input is not None else estimate_photons(y)
        i0_train = self.info.get("photons_train_estimated")
        choice = choose_strategy(strategy, lam, photons_input=i0_in if strategy == "auto" else None,
                                 photons_train=i0_train)
        if self.stage2 is None:  # a stage-1-only model folder
            return TurnDiffOutput(x0, x_ld, x0, blend(x_ld, x0, choice), None, None, choice, i0_in, t, weights)
        # Stage 2 learnt from FBP of stage 1's *uncalibrated* output (fit_stage2), so it is
        # given that image; the calibrated x0 serves the fusion and the data-consistency
        # prior (session 18, validation phantoms: better in PSNR and SSIM at 25% and 50%).
        x_prior = blend(x_ld, projection.x0_uncalibrated, choice)
        t0 = time.perf_counter()
        if x_diffusion is not None:
            x_d = np.asarray(x_diffusion, np.float32)
            if x_d.shape != x_prior.shape:
                raise InputError(f"x_diffusion is {list(x_d.shape)}, the input's images {list(x_prior.shape)}")
        else:
            x_d = self.stage2.sample(x_prior, steps=steps, strength=strength, seed=None if generator else seed,
                                     generator=generator, progress=progress, amp=self.device.type == "cuda")
        t["stage2"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        if fusion == "pixel":
            image, weight = pixel_fusion(x_d, x0, x_ld, fusion_config)
        else:
            lam_f = 0.5 if fusion_lam is None else float(fusion_lam)
            image, weight = global_fusion(x_d, x0, lam_f), None
        fused = image
        if restore:
            image = _restore(fused, y, x_ld, self.projector, photons=i0_in, denoised=y0_raw, device=self.device)
        t["fusion"] = time.perf_counter() - t0
        restored = post_std = None
        if consistency:
            t0 = time.perf_counter()
            restored = image
            band = projection.x0_uncalibrated if lowband_x0 == "uncalibrated" else None
            image, post_std = _consistency(restored, y, x_ld, x0, x_d, self.projector, photons=i0_in, denoised=y0_raw,
                                           device=self.device, lowband=lowband, progress=progress, band_x0=band)
            t["consistency"] = time.perf_counter() - t0
        unpolished = None
        # The polish is for the step's output (validated there); without the step the
        # output stays what it was (``--no-restore --no-consistency``: the paper's).
        if consistency and polish > 0:
            t0 = time.perf_counter()
            unpolished, image = image, bregman_tv(image, polish)
            t["polish"] = time.perf_counter() - t0
        return TurnDiffOutput(image, x_ld, x0, x_prior, x_d, weight, choice, i0_in, t, weights,
                              fused if restore else None, restored, post_std, unpolished)


def _restore(x, y, x_ld, projector, *, photons, denoised, device) -> np.ndarray:
    """The detail restoration of :meth:`TurnDiffPipeline.__call__` (its ``restore``)."""
    sigma = input_noise_std(y, lambda s: fbp_hu_on(projector, s, device), photons=photons, denoised=denoised,
                            blur_px=DETAIL_BLUR_PX)
    return restore_detail(x, x_ld, sigma, k=DETAIL_K, blur_px=DETAIL_BLUR_PX)


def _consistency(x, y, x_ld, x0, x_d, projector, *, photons, denoised, device, lowband=False, progress=False,
                 band_x0=None):
    """The data-consistency step of :meth:`TurnDiffPipeline.__call__`: (image, posterior bound)."""
    prior_mean, prior_std = consistency_prior(x, x_ld, x0, x_d, lowband=lowband, band_x0=band_x0)
    return data_consistency(prior_mean, y, projector, prior_std_hu=prior_std, photons=photons, denoised=denoised,
                            device=device, progress=progress, return_std=True)


def consistent_teacher(sinogram: np.ndarray, denoised: np.ndarray, projector: CTProjector, *, photons: float,
                       device: str | torch.device = "cpu") -> np.ndarray:
    """Stage 2's ``"consistent"`` teacher (HU ``[N, H, W]``): ``x0 = FBP(f(y))`` through the
    pipeline's detail restoration and data consistency with its own sinogram, as the
    pipeline treats an image without a diffusion output (the benchmark's "no diffusion"
    row). Built from the noisy sinogram ``y`` ``[N, V, D]``, its stage-1 output ``f(y)`` and
    its ``I0`` alone: no clean data."""
    dev = resolve_device(device)
    x_ld, x0 = fbp_hu_on(projector, sinogram, dev), fbp_hu_on(projector, denoised, dev)
    image = _restore(x0, sinogram, x_ld, projector, photons=photons, denoised=denoised, device=dev)
    return _consistency(image, sinogram, x_ld, x0, x0, projector, photons=photons, denoised=denoised, device=dev)[0]


def consistency_prior(x: np.ndarray, x_ld: np.ndarray, x0: np.ndarray, x_d: np.ndarray | None, *,
                      lowband: bool = False, band_x0: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation (HU, ``[N, H, W]``) of the Gaussian prior that the
    data-consistency step gives the image ``x`` (the restored fusion): the mean is ``x``
    with ``x0``'s band below :data:`~turndiff.inference.LOWBAND_PX` pixels
    (:func:`~turndiff.inference.lowband_fusion`; ``lowband=False``: ``x`` itself; ``band_x0``:
    that band from this image instead of ``x0``), the standard deviation the uncertainty map
    of that mean."""
    mean = lowband_fusion(x, x0 if band_x0 is None else band_x0, LOWBAND_PX) if lowband else np.asarray(x, np.float32)
    return mean, uncertainty_map(mean, x_ld, x0, x_d, coef=PRIOR_UNCERTAINTY_COEF)


#: The types of the index entries that :func:`model_index` writes (others are kept, unread).
_INDEX_TYPES = {"format": str, "version": str, "components": dict, "geometry": str, "photons_train": float,
                "photons_train_estimated": float, "dose_fraction_train": float, "preset": str, "seed": int,
                "train_slices": int, "train_seconds": dict}


def _check_index(info: dict, where: Path) -> None:
    """Refuse an index entry of the wrong type (a hand-edited or damaged ``turndiff.json``)
    here, with its name, instead of as a TypeError deep in inference."""
    for key, kind in _INDEX_TYPES.items():
        value = info.get(key)
        if value is None:
            continue
        if kind is float:
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and bool(np.isfinite(value))
            ok = ok and (value > 0 or not key.startswith("photons"))
        else:
            ok = isinstance(value, kind) and not isinstance(value, bool)
        if not ok:
            what = {float: "a finite number" + (" > 0" if key.startswith("photons") else ""), int: "an integer",
                    str: "a string", dict: "an object"}[kind]
            raise InputError(f"{where}: '{key}' must be {what}, got {json.dumps(value)[:40]}")


def model_index(
    *,
    geometry: Geometry,
    stage1: ProjectionDenoiser,
    sinogram: np.ndarray,
    preset: str,
    seed: int,
    train_seconds: dict,
    has_stage2: bool = True,
) -> dict:
    """The model index ``turndiff.json`` of a model folder; ``fit`` and ``train-ldm`` both
    write it through this function, so every model folder states the same facts."""
    return {
        "format": "turndiff-model",
        "version": __version__,
        "components": {"stage1": STAGE1_DIR, "stage2": STAGE2_DIR if has_stage2 else None},
        "geometry": geometry.to_json(),
        "photons_train": float(stage1.photons),
        "photons_train_estimated": float(estimate_photons(sinogram)),
        "dose_fraction_train": dose_from_photons(stage1.photons),
        "preset": preset,
        "seed": int(seed),
        "train_slices": int(sinogram.shape[0]),
        "train_seconds": {k: float(v) for k, v in train_seconds.items()},
    }


def stage2_copies(sinogram: np.ndarray, stage1: ProjectionDenoiser, projector: CTProjector, config: Stage2Config,
                  *, seed: int = 0, denoised: np.ndarray | None = None,
                  device: str | torch.device = "cpu") -> tuple[np.ndarray, ...] | None:
    """The recorrupted copies stage 2's U-Net trains on under ``config``
    (:func:`turndiff.stage2.train.recorrupted_images`, with the :func:`consistent_teacher`
    of each copy as a fourth stack when ``config.unet.teacher == "consistent"``), or
    ``None`` when it trains on ``x_ld`` and ``x0`` themselves. From the noisy sinograms
    ``[N, V, D]`` and the frozen stage 1 alone; ``denoised`` is ``f(y)`` when the caller has
    it. What each stack is: :func:`turndiff.stage2.train.distillation_stacks`."""
    dev = resolve_device(device)
    teacher = None
    if config.unet.teacher == "consistent":
        def teacher(y, f, photons):
            return consistent_teacher(y, f, projector, photons=photons, device=dev)
    if not (config.unet.r2r_weight > 0 or teacher is not None):
        return None
    return recorrupted_images(
        sinogram, float(stage1.photons), lambda s: stage1.denoise(s, device=dev),
        lambda s: fbp_hu_on(projector, s, dev), recorrupt=config.unet.r2r_recorrupt, copies=config.unet.r2r_copies,
        seed=seed, denoised=denoised, teacher=teacher)


def fit_stage2(
    sinogram: np.ndarray,
    stage1: ProjectionDenoiser,
    geometry: Geometry,
    *,
    config=None,
    preset: str = "fast",
    device: str | torch.device = "auto",
    seed: int = 0,
    run_dir: str | Path | None = None,
    denoised: np.ndarray | None = None,
    progress: bool = True,
):
    """Train stage 2 from noisy sinograms ``[N, V, D]`` and a trained, frozen stage 1.

    The teacher ``x0 = FBP(f(y))`` and the condition ``x_ld = FBP(y)`` are computed here,
    and, when the config's ``r2r_weight > 0`` or its teacher is ``"consistent"``, the
    recorrupted copies (:func:`turndiff.stage2.train.recorrupted_images`), with the
    :func:`consistent_teacher` of each copy for the latter. ``denoised`` is ``f(y)`` when
    the caller has it already. The one stage-2 training step of ``fit`` and ``train-ldm``.
    """
    dev = resolve_device(device)
    A = CTProjector(geometry)
    y0 = stage1.denoise(sinogram, device=dev, progress=progress) if denoised is None else denoised
    cfg2 = config or Stage2Config.preset(preset)
    recorrupted = stage2_copies(sinogram, stage1, A, cfg2, seed=seed, denoised=y0, device=dev)
    return train_stage2(fbp_hu_on(A, sinogram, dev), fbp_hu_on(A, y0, dev), cfg2, recorrupted=recorrupted,
                        run_dir=Path(run_dir) if run_dir else None, device=dev, seed=seed, progress=progress)


def fit(
    sinogram: np.ndarray,
    *,
    geometry: Geometry,
    photons: float | None = None,
    preset: str = "fast",
    device: str | torch.device = "auto",
    seed: int = 0,
    run_dir: str | Path | None = None,
    stage1_overrides: dict | None = None,
    stage2_config=None,
    train_stage2: bool = True,
    progress: bool = True,
) -> TurnDiffPipeline:
    """Train TurnDiff on noisy sinograms ``[N, V, D]`` alone (no clean data).

    Stage 1 (CSSS) is trained first; it is then frozen and its teacher images
    ``x0 = FBP(f(y))`` are computed once; stage 2 learns from ``x_ld = FBP(y)`` and ``x0``
    (:func:`fit_stage2`). ``run_dir`` holds checkpoints so an interrupted fit resumes.
    """
    y = check_sinograms(sinogram, geometry, "training sinograms")
    dev = resolve_device(device)
    run = Path(run_dir) if run_dir else None
    t0 = time.perf_counter()
    cfg1 = Stage1Config.preset(preset, seed=seed, **(stage1_overrides or {}))
    stage1 = train_projection_denoiser(y, photons=photons, geometry_json=geometry.to_json(), config=cfg1,
                                       run_dir=run / "stage1" if run else None, device=dev, progress=progress)
    seconds = {"stage1": time.perf_counter() - t0}
    stage2 = None
    if train_stage2:
        t0 = time.perf_counter()
        stage2 = fit_stage2(y, stage1, geometry, config=stage2_config, preset=preset, device=dev, seed=seed,
                            run_dir=run / "stage2" if run else None, progress=progress)
        seconds["stage2"] = time.perf_counter() - t0
    info = model_index(geometry=geometry, stage1=stage1, sinogram=y, preset=preset, seed=seed,
                       train_seconds=seconds, has_stage2=train_stage2)
    return TurnDiffPipeline(stage1, stage2, info, device=dev)
