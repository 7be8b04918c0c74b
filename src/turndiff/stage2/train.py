"""Stage-2 training: autoencoder, then conditional latent diffusion with distillation.

Both run through the shared loop :func:`turndiff.training.train` on random crops (every
network is convolutional, so crops train it for whole slices). Inputs are HU stacks:
``x_ld`` (FBP of the noisy sinogram) and ``x0`` (the frozen stage-1 teacher, computed
once by the caller); stage 2 never sees a clean image.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from turndiff.dose import postlog_variance
from turndiff.errors import InputError
from turndiff.windows import WINDOWS
from turndiff.stage2.config import Stage2Config, hu_to_unit
from turndiff.stage2.autoencoder import PatchSkipAutoencoder, build_autoencoder, init_patch_pca
from turndiff.stage2.model import LatentDiffusion, _as_stack, build_unet
from turndiff.stage2.objectives import AutoencoderObjective, DiffusionObjective
from turndiff.training import TrainConfig, TrainResult, resolve_device, train

__all__ = [
    "distillation_stacks",
    "recorrupted_images",
    "train_autoencoder",
    "train_latent_diffusion",
    "train_stage2",
    "estimate_latent_stats",
    "autoencoder_error_hu",
]


def _pair(x_ld: Any, x0: Any, config: Stage2Config) -> tuple[torch.Tensor, torch.Tensor]:
    """Validated unit-scaled float32 CPU stacks [N, H, W]."""
    a, _ = _as_stack(x_ld, "x_ld")
    b, _ = _as_stack(x0, "x0")
    if a.shape != b.shape:
        raise InputError(f"x_ld has shape {tuple(a.shape)} but x0 has {tuple(b.shape)}")
    if min(a.shape[-2:]) < config.size_multiple:
        raise InputError(f"stage 2 needs images of at least {config.size_multiple} pixels a side, got {tuple(a.shape)}")
    return (hu_to_unit(a, config.hu_offset, config.hu_scale).contiguous(),
            hu_to_unit(b, config.hu_offset, config.hu_scale).contiguous())


def recorrupted_images(
    sinograms: np.ndarray,
    photons: float,
    denoise: Callable[[np.ndarray], np.ndarray],
    fbp_hu: Callable[[np.ndarray], np.ndarray],
    *,
    recorrupt: float = 0.5,
    copies: int = 2,
    seed: int = 0,
    denoised: np.ndarray | None = None,
    teacher: Callable[[np.ndarray, np.ndarray, float], np.ndarray] | None = None,
) -> tuple[np.ndarray, ...]:
    """Image triples for the stage-2 recorrupted loss, from the noisy sinograms alone.

    For each slice and copy, ``z ~ N(0, sigma^2)`` with the post-log variance of the
    noise model (:func:`turndiff.dose.postlog_variance` of the denoised sinogram, so the
    variance does not depend on the noise), ``y+ = y + a z`` and ``y- = y - z / a``.
    Returns ``x_ld+ = FBP(y+)``, ``x0+ = FBP(f(y+))`` and ``x- = FBP(y-)``, each float32
    ``[N * copies, H, W]`` HU. The noise of ``y-`` is independent of that of ``y+`` (and so
    of everything computed from it, including the teacher), which keeps the loss unbiased.

    Parameters
    ----------
    sinograms : array [N, V, D]
        Noisy post-log training sinograms.
    photons : float
        Their unattenuated counts per bin ``I0``.
    denoise : callable
        The frozen stage-1 denoiser, ``[N, V, D] -> [N, V, D]``.
    fbp_hu : callable
        Sinograms ``[N, V, D]`` to HU images ``[N, H, W]``.
    recorrupt, copies, seed
        ``a``, recorrupted copies per slice, seed of ``z``.
    denoised : array [N, V, D], optional
        ``denoise(sinograms)`` if the caller has it already (saves a stage-1 pass).
    teacher : callable, optional
        ``teacher(y+, f(y+), I0+) -> HU [n, H, W]``, a distillation target other than
        ``x0+`` (``I0+ = I0 / (1 + a^2)``, the counts whose noise ``y+`` has); its images are
        returned fourth. It sees ``y+`` only, so its noise too is independent of ``x-``'s.
    """

    y = np.asarray(sinograms, np.float32)
    if not (np.isfinite(photons) and photons > 0):
        raise InputError(f"photons must be a positive number, got {photons!r}")
    rng = np.random.default_rng(seed)
    f = denoise(y) if denoised is None else np.asarray(denoised, np.float32)
    sigma = np.sqrt(postlog_variance(torch.from_numpy(f).double(), float(photons)).numpy())
    plus, x0, minus, taught = [], [], [], []
    for _ in range(copies):
        z = (rng.standard_normal(y.shape) * sigma).astype(np.float32)
        y_plus = y + recorrupt * z
        f_plus = denoise(y_plus)
        plus.append(fbp_hu(y_plus))
        x0.append(fbp_hu(f_plus))
        minus.append(fbp_hu(y - z / recorrupt))
        if teacher is not None:
            taught.append(teacher(y_plus, f_plus, float(photons) / (1.0 + recorrupt ** 2)))
    out = (plus, x0, minus, taught) if teacher is not None else (plus, x0, minus)
    return tuple(np.concatenate(v).astype(np.float32) for v in out)


def _effective_crop(crop: int, shape: torch.Size, multiple: int) -> int:
    side = min(shape[-2:])
    return min(crop, side - side % multiple)


def _crops(stacks: list[torch.Tensor], batch: int, crop: int, flip: bool,
           generator: torch.Generator) -> list[torch.Tensor]:
    n, h, w = stacks[0].shape
    idx = torch.randint(0, n, (batch,), generator=generator)
    ys = torch.randint(0, h - crop + 1, (batch,), generator=generator)
    xs = torch.randint(0, w - crop + 1, (batch,), generator=generator)
    flips = torch.rand(batch, generator=generator) < 0.5
    out = []
    for s in stacks:
        parts = []
        for i in range(batch):
            c = s[idx[i], ys[i]:ys[i] + crop, xs[i]:xs[i] + crop]
            parts.append(c.flip(-1) if flip and flips[i] else c)
        out.append(torch.stack(parts)[:, None])
    return out


def _train_config(part: TrainConfig, *, seed: int, device: torch.device, checkpoint_every: int | None) -> TrainConfig:
    """The part's own :class:`TrainConfig` with what a run adds: the seed, the device, and
    the warm-up capped at (and checkpoints every) a tenth of the steps."""
    iters = part.iters
    return part.replace(
        warmup=min(part.warmup, max(iters // 10, 0)),
        checkpoint_every=checkpoint_every if checkpoint_every is not None else max(iters // 10, 1),
        seed=seed,
        device=str(device),
        log_every=max(1, min(25, iters // 20)),
    )


def _seeded(seed: int, build: Callable[[], torch.nn.Module]) -> torch.nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


def train_autoencoder(
    x_ld: np.ndarray | torch.Tensor,
    x0: np.ndarray | torch.Tensor,
    config: Stage2Config,
    *,
    run_dir: str | Path | None = None,
    device: str | torch.device = "cpu",
    seed: int = 0,
    progress: bool = True,
    checkpoint_every: int | None = None,
) -> tuple[torch.nn.Module, TrainResult]:
    """Train MONAI's ``AutoencoderKL`` on the teacher and on blends with the low-dose image.

    Parameters
    ----------
    x_ld, x0 : array or tensor
        float [N, H, W] HU: low-dose FBP and stage-1 teacher, same shape.
    config : Stage2Config
        Architecture (``ae_*``, ``downsample``, ``latent_channels``) and training settings.
    run_dir : path, optional
        Checkpoint folder (resumes from it).
    device : str
        ``"cpu"``, ``"cuda"`` or ``"auto"``.
    seed : int
        Seeds the initialisation and the batches.
    progress : bool
        Show a progress bar.
    checkpoint_every : int, optional
        Checkpoint period in steps (default: every tenth of the run).

    Returns
    -------
    autoencoder : torch.nn.Module
        The trained (EMA) ``AutoencoderKL`` in eval mode, on ``device``.
    result : TrainResult
        Losses and timing.
    """
    ld, teacher = _pair(x_ld, x0, config)
    dev = resolve_device(device)
    crop = _effective_crop(config.autoencoder.crop, ld.shape, config.autoencoder.downsample)
    autoencoder = _seeded(seed, lambda: build_autoencoder(config))
    if isinstance(autoencoder, PatchSkipAutoencoder):
        init_patch_pca(autoencoder, teacher[:, None], generator=torch.Generator().manual_seed(seed))
    objective = AutoencoderObjective(autoencoder, config)

    def batch_fn(step: int, g: torch.Generator) -> torch.Tensor:
        a, b = _crops([ld, teacher], config.autoencoder.batch, crop, config.flip, g)
        use_teacher = (torch.rand(config.autoencoder.batch, generator=g) < config.autoencoder.teacher_fraction).reshape(-1, 1, 1, 1)
        lam = torch.rand(config.autoencoder.batch, generator=g).reshape(-1, 1, 1, 1)
        return torch.where(use_teacher, b, lam * a + (1 - lam) * b)

    tcfg = _train_config(config.autoencoder.train, seed=seed, device=dev, checkpoint_every=checkpoint_every)
    result = train(objective, batch_fn, tcfg, run_dir=run_dir, progress=progress, desc="stage 2: autoencoder")
    return autoencoder.eval(), result


@torch.no_grad()
def estimate_latent_stats(autoencoder: torch.nn.Module, x0: np.ndarray | torch.Tensor, config: Stage2Config,
                          *, max_slices: int = 16, batch_size: int = 4) -> tuple[list[float], list[float]]:
    """Latent normalisation from the teacher images: per-channel means, one common scale.

    Returns ``(shift, scale)``: the mean of each latent channel, and ``1 / std`` of all
    centred channels pooled (repeated per channel), so the latents have unit variance
    overall, the scale the noise schedule assumes. The scale is shared on purpose:
    equalising each channel would blow up the low-variance (fine detail) channels, in
    which the noise of a low-dose condition image then dominates the diffusion noise
    at the start of partial diffusion.
    """
    images, _ = _as_stack(x0, "x0")
    step = max(1, math.ceil(images.shape[0] / max_slices))
    images = hu_to_unit(images[::step], config.hu_offset, config.hu_scale)
    m = config.size_multiple
    h, w = images.shape[-2:]
    images = images[:, : h - h % m, : w - w % m]
    device = next(autoencoder.parameters()).device
    latents = [autoencoder.encode(images[i:i + batch_size, None].to(device))[0].float().cpu()
               for i in range(0, images.shape[0], batch_size)]
    latents = torch.cat(latents).transpose(0, 1).flatten(1).double()
    mean = latents.mean(1)
    std = (latents - mean[:, None]).std().item()
    if not (math.isfinite(std) and std > 0 and torch.isfinite(mean).all()):
        raise InputError("the autoencoder latents are constant or not finite; cannot scale them")
    return mean.tolist(), [1.0 / std] * latents.shape[0]


def train_latent_diffusion(
    autoencoder: torch.nn.Module,
    x_ld: np.ndarray | torch.Tensor,
    x0: np.ndarray | torch.Tensor,
    config: Stage2Config,
    *,
    latent_stats: tuple[list[float], list[float]] | None = None,
    target: np.ndarray | torch.Tensor | None = None,
    prior: np.ndarray | torch.Tensor | None = None,
    run_dir: str | Path | None = None,
    device: str | torch.device = "cpu",
    seed: int = 0,
    progress: bool = True,
    checkpoint_every: int | None = None,
) -> tuple[LatentDiffusion, TrainResult]:
    """Train the conditional latent diffusion U-Net with distillation toward ``x0``.

    Parameters
    ----------
    autoencoder : torch.nn.Module
        Trained ``AutoencoderKL`` (frozen here).
    x_ld, x0 : array or tensor
        float [N, H, W] HU: the condition (low-dose FBP) and the teacher (stage 1 output).
    config : Stage2Config
        Settings (``unet_*``, ``ldm_*``, ``prediction_type``, ``image_loss_weight``, ...).
    latent_stats : (shift, scale), optional
        Per-channel latent normalisation; estimated from ``x0`` when omitted
        (:func:`estimate_latent_stats`).
    target : array or tensor, optional
        float [N, H, W] HU, the recorrupted partner images ``x-`` of the loss weighted by
        ``config.unet.r2r_weight``; ``x_ld`` and ``x0`` are then the triples' ``x_ld+`` and
        ``x0+`` (:func:`recorrupted_images`).
    prior : array or tensor, optional
        float [N, H, W] HU: the image blended with ``x_ld`` into the training condition
        (default ``x0``). Given when the teacher ``x0`` is not the image inference blends,
        e.g. a data-consistent teacher beside stage 1's ``FBP(f(y))``.
    run_dir, device, seed, progress, checkpoint_every
        As in :func:`train_autoencoder`.

    Returns
    -------
    model : LatentDiffusion
        Trained (EMA) model in eval mode, on ``device``.
    result : TrainResult
        Losses and timing.
    """
    ld, teacher = _pair(x_ld, x0, config)
    stacks = [ld, teacher]
    if target is not None:
        _, tgt = _pair(x_ld, target, config)
        stacks.append(tgt)
    if prior is not None:
        _, pri = _pair(x_ld, prior, config)
        stacks.append(pri)
    dev = resolve_device(device)
    autoencoder = autoencoder.to(dev)
    shift, scale = estimate_latent_stats(autoencoder, x0, config) if latent_stats is None else latent_stats
    unet = _seeded(seed, lambda: build_unet(config))
    model = LatentDiffusion(config, autoencoder, unet, latent_shift=shift, latent_scale=scale)
    objective = DiffusionObjective(model)
    crop = _effective_crop(config.unet.crop, ld.shape, config.size_multiple)
    t_max = int(math.ceil(config.unet.max_train_strength * config.schedule.num_train_timesteps))
    latent_side = crop // config.autoencoder.downsample
    lo, hi = config.unet.cond_noise_scale

    def batch_fn(step: int, g: torch.Generator) -> dict[str, torch.Tensor]:
        crops = _crops(stacks, config.unet.batch, crop, config.flip, g)
        batch = {
            "x_ld": crops[0],
            "x0": crops[1],
            "t": torch.randint(0, t_max, (config.unet.batch,), generator=g),
            "noise": torch.randn(config.unet.batch, config.autoencoder.latent_channels, latent_side, latent_side, generator=g),
            "cond_scale": lo + (hi - lo) * torch.rand(config.unet.batch, generator=g),
        }
        rest = iter(crops[2:])
        if target is not None:
            batch["target"] = next(rest)
        if prior is not None:
            batch["prior"] = next(rest)
        return batch

    tcfg = _train_config(config.unet.train, seed=seed, device=dev, checkpoint_every=checkpoint_every)
    result = train(objective, batch_fn, tcfg, run_dir=run_dir, progress=progress, desc="stage 2: diffusion")
    return model.eval(), result


def autoencoder_error_hu(model: LatentDiffusion, images_hu: np.ndarray | torch.Tensor) -> dict[str, float]:
    """Autoencoder round-trip error in HU: RMSE, MAE, and RMSE inside the soft window.

    The soft-window figure counts pixels whose input lies in [-160, 240] HU.
    """
    images, _ = _as_stack(images_hu, "images_hu")
    recon = torch.from_numpy(model.reconstruct(images))
    diff = recon - images
    lo, hi = WINDOWS["soft"]
    soft = (images >= lo) & (images <= hi)
    return {
        "rmse_hu": float(diff.square().mean().sqrt()),
        "mae_hu": float(diff.abs().mean()),
        "soft_rmse_hu": float(diff[soft].square().mean().sqrt()) if soft.any() else float("nan"),
    }


def _summary(result: TrainResult) -> dict[str, Any]:
    tail = result.losses[-max(1, len(result.losses) // 20):]
    return {"steps": result.steps, "seconds": round(result.seconds, 2),
            "final_loss": float(np.mean(tail)) if tail else None}


def distillation_stacks(recorrupted: tuple | None, config: Stage2Config) -> tuple | None:
    """What each stack of :func:`recorrupted_images` is to the diffusion's training:
    ``(condition, teacher, recorrupted target, prior)``, or ``None`` when the U-Net trains
    on ``x_ld`` and ``x0`` themselves (no copies, or triples with ``r2r_weight == 0``).

    Triples ``(x_ld+, x0+, x-)`` give ``(x_ld+, x0+, x-, None)``: distilled onto ``x0+``.
    Four stacks ``(x_ld+, x0+, x-, teacher+)`` give ``(x_ld+, teacher+, x- or None, x0+)``:
    distilled onto ``teacher+``, the condition blended from ``x0+`` (the image inference
    sends), ``x-`` only with ``r2r_weight > 0``. The one place that reads the order, so a
    caller cannot take ``x-`` for the teacher."""
    if recorrupted is None:
        return None
    if len(recorrupted) not in (3, 4):
        raise InputError(f"recorrupted must hold 3 or 4 stacks (recorrupted_images), got {len(recorrupted)}")
    r2r = config.unet.r2r_weight > 0
    if len(recorrupted) == 3:
        x_plus, x0_plus, minus = recorrupted
        return (x_plus, x0_plus, minus, None) if r2r else None
    x_plus, x0_plus, minus, taught = recorrupted
    return x_plus, taught, minus if r2r else None, x0_plus


def train_stage2(
    x_ld: np.ndarray | torch.Tensor,
    x0: np.ndarray | torch.Tensor,
    config: Stage2Config | None = None,
    *,
    recorrupted: tuple[np.ndarray, ...] | None = None,
    run_dir: str | Path | None = None,
    device: str | torch.device = "cpu",
    seed: int = 0,
    progress: bool = True,
) -> LatentDiffusion:
    """Train stage 2 end to end: autoencoder, then latent diffusion with distillation.

    Parameters
    ----------
    x_ld : array or tensor
        float [N, H, W] HU, FBP of the low-dose sinograms.
    x0 : array or tensor
        float [N, H, W] HU, the frozen stage-1 teacher ``FBP(f(y))`` (computed once).
    config : Stage2Config, optional
        Default ``Stage2Config.preset("fast")``.
    recorrupted : (x_ld+, x0+, x-) or (x_ld+, x0+, x-, teacher+), optional
        What :func:`recorrupted_images` returns; with triples (and ``config.unet.r2r_weight >
        0``) the diffusion trains on them with the image-domain recorrupted loss. With a
        fourth stack it trains on the copies whatever ``r2r_weight``, distilled onto
        ``teacher+``, its condition blended from ``x0+``. The autoencoder always trains on
        ``x_ld`` and ``x0``.
    run_dir : path, optional
        Checkpoints go to ``run_dir/autoencoder`` and ``run_dir/diffusion``; a rerun
        resumes (finished parts are loaded, not retrained).
    device : str
        ``"cpu"``, ``"cuda"`` or ``"auto"``.
    seed : int
        Seeds initialisation and batches (the diffusion uses ``seed + 1``).
    progress : bool
        Progress bars.

    Returns
    -------
    LatentDiffusion
        Trained model; ``model.training_info`` holds timings, final losses and the
        autoencoder's reconstruction error on ``x0`` in HU (saved with the model).

    Examples
    --------
    >>> import numpy as np
    >>> from turndiff.stage2 import Stage2Config, train_stage2
    >>> rng = np.random.default_rng(0)
    >>> x0 = np.zeros((2, 32, 32), np.float32); x0[:, 8:24, 8:24] = 60.0
    >>> x_ld = x0 + rng.normal(0, 30, x0.shape).astype(np.float32)
    >>> cfg = Stage2Config.preset("fast").replace(
    ...     autoencoder={"channels": (8, 8, 8), "crop": 32, "train": {"iters": 5, "warmup": 0}},
    ...     unet={"channels": (8, 8), "attention": (False, False), "head_channels": 8, "crop": 32,
    ...           "train": {"iters": 5, "warmup": 0}})
    >>> model = train_stage2(x_ld, x0, cfg, progress=False)
    >>> model.sample(x_ld, steps=4, seed=1).shape
    (2, 32, 32)
    """
    config = Stage2Config.preset("fast") if config is None else config
    root = Path(run_dir) if run_dir is not None else None
    ld_t, x0_t = _as_stack(x_ld, "x_ld")[0], _as_stack(x0, "x0")[0]
    t0 = time.perf_counter()
    autoencoder, ae_result = train_autoencoder(
        ld_t, x0_t, config, run_dir=root / "autoencoder" if root else None, device=device, seed=seed,
        progress=progress)
    roles = distillation_stacks(recorrupted, config)
    if roles is not None:
        cond_t, teacher_t, target_t, prior_t = (None if v is None else _as_stack(v, name)[0] for v, name in
                                                zip(roles, ("x_ld+", "teacher", "x-", "x0+")))
    else:
        cond_t, teacher_t, target_t, prior_t = ld_t, x0_t, None, None
    model, ldm_result = train_latent_diffusion(
        autoencoder, cond_t, teacher_t, config, target=target_t, prior=prior_t,
        run_dir=root / "diffusion" if root else None, device=device, seed=seed + 1, progress=progress)
    model.training_info = {
        "autoencoder": _summary(ae_result),
        "diffusion": _summary(ldm_result),
        "autoencoder_error_on_x0": autoencoder_error_hu(model, x0_t),
        "latent_shift": model.latent_shift,
        "latent_scale": model.latent_scale,
        "slices": int(ld_t.shape[0]),
        "image_shape": [int(s) for s in ld_t.shape[-2:]],
        "device": str(resolve_device(device)),
        "seed": seed,
        "seconds": round(time.perf_counter() - t0, 2),
    }
    return model
