"""The stage-2 model: autoencoder + conditional latent diffusion U-Net + DDIM sampler.

``LatentDiffusion`` bundles MONAI's ``AutoencoderKL`` (encoder E, decoder D) and
``DiffusionModelUNet`` with a :class:`~turndiff.stage2.scheduler.PartialDDIMScheduler`
(the noise schedule and the DDIM step, kept apart from the networks). The
U-Net sees the noisy latent of the teacher image concatenated with the condition (the
low-dose image during training, the blended image of the tunable strategy at
inference), and predicts epsilon, v or the clean latent.

Sampling is DDIM over an explicit list of timesteps that may start part-way (partial
diffusion); why MONAI's own ``step`` cannot do that is in :mod:`turndiff.stage2.scheduler`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from turndiff.checkpoint import (
    CheckpointError,
    load_pretrained_config,
    load_state,
    read_json,
    save_pretrained,
    write_json,
)
from turndiff.errors import InputError
from turndiff.stage2.autoencoder import autoencoder_component_config, build_autoencoder
from turndiff.stage2.config import Stage2Config, hu_to_unit, unit_to_hu
from turndiff.stage2.scheduler import PartialDDIMScheduler, sampling_timesteps

__all__ = [
    "LatentDiffusion",
    "SampleSpread",
    "build_unet",
    "unet_kwargs",
    "sample_spread",
]

MODEL_JSON = "stage2.json"


def unet_kwargs(config: Stage2Config) -> dict[str, Any]:
    """Constructor arguments of MONAI's ``DiffusionModelUNet`` for ``config``."""
    return {
        "spatial_dims": 2,
        "in_channels": config.autoencoder.latent_channels + config.condition_channels,
        "out_channels": config.autoencoder.latent_channels,
        "num_res_blocks": config.unet.res_blocks,
        "channels": list(config.unet.channels),
        "attention_levels": list(config.unet.attention),
        "norm_num_groups": config.norm_groups,
        "num_head_channels": config.unet.head_channels,
    }


def build_unet(config: Stage2Config) -> torch.nn.Module:
    """A fresh MONAI ``DiffusionModelUNet`` for the latent."""
    from monai.networks.nets import DiffusionModelUNet

    return DiffusionModelUNet(**unet_kwargs(config))


def _as_stack(images: Any, name: str) -> tuple[torch.Tensor, bool]:
    if isinstance(images, np.ndarray):
        t = torch.from_numpy(np.ascontiguousarray(images))
    elif torch.is_tensor(images):
        t = images.detach()
    else:
        raise InputError(f"{name} must be a numpy array or torch tensor, got {type(images).__name__}")
    squeeze = t.ndim == 2
    if squeeze:
        t = t[None]
    if t.ndim != 3 or min(t.shape) < 1:
        raise InputError(f"{name} must be [N, H, W] (or [H, W]) HU, got shape {tuple(t.shape)}")
    t = t.to(torch.float32).cpu()
    if not torch.isfinite(t).all():
        raise InputError(f"{name} contains NaN or infinite values")
    return t, squeeze


@dataclass
class SampleSpread:
    """How much the output varies across sampling seeds (:func:`sample_spread`).

    Attributes
    ----------
    mean : np.ndarray
        float32 [N, H, W] HU, mean over seeds.
    std : np.ndarray
        float32 [N, H, W] HU, per-pixel standard deviation over seeds (ddof=1).
    seeds : tuple of int
        The seeds used.
    """

    mean: np.ndarray
    std: np.ndarray
    seeds: tuple[int, ...]

    def summary(self) -> dict[str, float]:
        """Mean, median and 99th percentile of the per-pixel standard deviation (HU)."""
        return {
            "std_mean_hu": float(self.std.mean()),
            "std_median_hu": float(np.median(self.std)),
            "std_p99_hu": float(np.percentile(self.std, 99)),
        }


class LatentDiffusion(torch.nn.Module):
    """Autoencoder + conditional latent diffusion U-Net; samples x~0 from a condition image.

    Parameters
    ----------
    config : Stage2Config
        Architecture, schedule and sampling defaults.
    autoencoder : torch.nn.Module, optional
        The autoencoder built from ``config`` (:func:`build_autoencoder`; new if omitted).
    unet : torch.nn.Module, optional
        A MONAI ``DiffusionModelUNet`` built from ``config`` (new if omitted).
    latent_shift, latent_scale : float or sequence of float
        Per-channel affine map of the encoder mean, ``(mu - shift) * scale``, chosen so
        that the teacher's latents are centred with unit overall variance
        (:func:`turndiff.stage2.estimate_latent_stats`). Scalars apply to all channels.

    Examples
    --------
    >>> import numpy as np
    >>> from turndiff.stage2 import LatentDiffusion, Stage2Config
    >>> cfg = Stage2Config.preset("fast").replace(
    ...     autoencoder={"channels": (8, 8, 8)},
    ...     unet={"channels": (8, 8), "attention": (False, False), "head_channels": 8, "crop": 32})
    >>> model = LatentDiffusion(cfg)
    >>> out = model.sample(np.zeros((2, 32, 32), np.float32), steps=3, seed=0)
    >>> out.shape, out.dtype
    ((2, 32, 32), dtype('float32'))
    """

    def __init__(
        self,
        config: Stage2Config,
        autoencoder: torch.nn.Module | None = None,
        unet: torch.nn.Module | None = None,
        *,
        latent_shift: float | Sequence[float] = 0.0,
        latent_scale: float | Sequence[float] = 1.0,
    ) -> None:
        super().__init__()
        if not isinstance(config, Stage2Config):
            raise InputError("config must be a Stage2Config")
        self.config = config
        self.autoencoder = autoencoder if autoencoder is not None else build_autoencoder(config)
        self.unet = unet if unet is not None else build_unet(config)
        self.scheduler = PartialDDIMScheduler.from_config(config)
        self.register_buffer("_shift", torch.zeros(1, config.autoencoder.latent_channels, 1, 1), persistent=False)
        self.register_buffer("_scale", torch.ones(1, config.autoencoder.latent_channels, 1, 1), persistent=False)
        self.set_latent_stats(latent_shift, latent_scale)
        self.training_info: dict[str, Any] = {}

    # ------------------------------------------------------------------ building blocks

    @property
    def device(self) -> torch.device:
        return self._shift.device

    def set_latent_stats(self, shift: float | Sequence[float], scale: float | Sequence[float]) -> None:
        """Set the per-channel latent normalisation ``(mu - shift) * scale``."""
        c = self.config.autoencoder.latent_channels
        values = []
        for name, v in (("latent_shift", shift), ("latent_scale", scale)):
            t = torch.as_tensor(v, dtype=torch.float32).flatten()
            if t.numel() == 1:
                t = t.expand(c)
            if t.numel() != c or not torch.isfinite(t).all():
                raise InputError(f"{name} needs {c} finite values, got {v!r}")
            values.append(t.reshape(1, c, 1, 1))
        if not (values[1] > 0).all():
            raise InputError(f"latent_scale must be positive, got {scale!r}")
        self._shift.copy_(values[0])
        self._scale.copy_(values[1])

    @property
    def latent_shift(self) -> list[float]:
        return self._shift.flatten().tolist()

    @property
    def latent_scale(self) -> list[float]:
        return self._scale.flatten().tolist()

    def to_unit(self, hu: torch.Tensor) -> torch.Tensor:
        return hu_to_unit(hu, self.config.hu_offset, self.config.hu_scale)

    def to_hu(self, unit: torch.Tensor) -> torch.Tensor:
        return unit_to_hu(unit, self.config.hu_offset, self.config.hu_scale)

    def encode(self, image: torch.Tensor) -> torch.Tensor:
        """Scaled latent mean of ``image`` ([B, 1, H, W] normalised units)."""
        z_mu, _ = self.autoencoder.encode(image)
        return (z_mu - self._shift.to(z_mu.dtype)) * self._scale.to(z_mu.dtype)

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        """Image ([B, 1, H, W] normalised units) of a scaled latent."""
        return self.autoencoder.decode(latent / self._scale.to(latent.dtype) + self._shift.to(latent.dtype))

    @property
    def needs_condition_latent(self) -> bool:
        """Whether the U-Net input or output refers to the condition's latent."""
        return self.config.unet.conditioning == "latent" or self.config.unet.prediction_type == "residual"

    def condition_features(self, condition: torch.Tensor, condition_latent: torch.Tensor | None = None
                           ) -> torch.Tensor:
        """U-Net conditioning channels at latent resolution for ``condition`` [B, 1, H, W]."""
        if self.config.unet.conditioning == "unshuffle":
            return F.pixel_unshuffle(condition, self.config.autoencoder.downsample)
        if condition_latent is not None:
            return condition_latent
        with torch.no_grad():
            return self.encode(condition)

    def denoise(self, noisy_latent: torch.Tensor, timesteps: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        """U-Net output (epsilon, v or latent, per ``prediction_type``)."""
        return self.unet(torch.cat([noisy_latent, features], dim=1), timesteps=timesteps)

    # ------------------------------------------------------------------------- sampling

    def _pad(self, images: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        m = self.config.size_multiple
        h, w = images.shape[-2:]
        ph, pw = (-h) % m, (-w) % m
        if ph or pw:
            images = F.pad(images, (0, pw, 0, ph), mode="replicate")
        return images, (h, w)

    @torch.no_grad()
    def sample(
        self,
        condition_hu: np.ndarray | torch.Tensor,
        *,
        steps: int | None = None,
        strength: float | None = None,
        start_step: int | None = None,
        init_hu: np.ndarray | torch.Tensor | None = None,
        seed: int | None = 0,
        generator: torch.Generator | None = None,
        eta: float | None = None,
        batch_size: int = 8,
        amp: bool = True,
        progress: bool = False,
        guidance: Callable[[int, slice, np.ndarray], np.ndarray] | None = None,
        guidance_steps: Sequence[int] = (-1,),
    ) -> np.ndarray:
        """Sample x~0 conditioned on ``condition_hu`` with DDIM (partial diffusion).

        Parameters
        ----------
        condition_hu : array or tensor
            float [N, H, W] (or [H, W]) HU: ``x_ld`` during training, the blended image of
            the tunable strategy at inference. Any size; padded to
            ``config.size_multiple`` internally.
        steps : int, optional
            DDIM steps (network evaluations); default ``config.sampler.steps``.
        strength : float, optional
            Start at timestep ``round(strength * (T - 1))`` from the noised latent of the
            initial image (1: from pure noise). Default ``config.sampler.strength``.
        start_step : int, optional
            Start timestep given directly (instead of ``strength``).
        init_hu : array or tensor, optional
            Image whose latent is noised to start from (default: the condition).
        seed : int or None
            Seed of the noise when no ``generator`` is given.
        generator : torch.Generator, optional
            CPU generator; one seed per slice is drawn from it, so a slice's result does
            not depend on ``batch_size``.
        eta : float, optional
            DDIM eta; default ``config.sampler.eta`` (0: deterministic given the initial noise).
        batch_size : int
            Slices per forward pass.
        amp : bool
            bf16 autocast on CUDA (ignored on CPU).
        progress : bool
            tqdm bar over batches.
        guidance : callable, optional
            Measurement guidance (as in decomposed diffusion sampling, Chung et al. 2023):
            ``guidance(k, slices, x0_hat)`` gets the step index ``k``, the slices of the
            input in this batch (a ``slice`` of its first axis) and the decoded clean-image
            prediction of the step, float32 HU ``[B, H, W]``, and returns a corrected image
            of the same shape (e.g. :func:`turndiff.inference.consistency.data_consistency`
            on the slices' sinograms). Its latent replaces the prediction, and the step's
            noise estimate is recomputed from it. Default: none (the plain sampler).
        guidance_steps : sequence of int
            Indices into the DDIM steps at which ``guidance`` runs (negative from the end;
            default ``(-1,)``: the last step, whose prediction is the output).

        Returns
        -------
        np.ndarray
            float32 [N, H, W] (or [H, W]) HU.
        """
        cfg = self.config
        cond, squeeze = _as_stack(condition_hu, "condition_hu")
        init = cond if init_hu is None else _as_stack(init_hu, "init_hu")[0]
        if init.shape != cond.shape:
            raise InputError(f"init_hu has shape {tuple(init.shape)}, condition_hu {tuple(cond.shape)}")
        steps = cfg.sampler.steps if steps is None else steps
        eta = cfg.sampler.eta if eta is None else float(eta)
        if eta < 0:
            raise InputError(f"eta must be >= 0, got {eta}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise InputError(f"batch_size must be an integer >= 1, got {batch_size!r}")
        timesteps = sampling_timesteps(cfg, steps, strength=strength, start_step=start_step)
        n_steps = len(timesteps)
        guided = set()
        if guidance is not None:
            for k in guidance_steps:
                if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not -n_steps <= k < n_steps:
                    raise InputError(f"guidance_steps must be step indices in [-{n_steps}, {n_steps - 1}], got {k!r}")
                guided.add(int(k) % n_steps)
        if generator is None:
            if seed is None:
                raise InputError("give a seed or a generator")
            generator = torch.Generator().manual_seed(int(seed))
        n = cond.shape[0]
        slice_seeds = torch.randint(0, 2**62, (n,), generator=generator).tolist()

        was_training = self.training
        self.eval()
        device = self.device
        use_amp = amp and device.type == "cuda"
        # At the last timestep the signal left is negligible: start from pure noise.
        from_noise = int(timesteps[0]) == cfg.schedule.num_train_timesteps - 1
        out = torch.empty_like(cond)
        from tqdm.auto import tqdm

        try:
            for lo in tqdm(range(0, n, batch_size), desc="sampling", disable=not progress):
                hi = min(lo + batch_size, n)
                c_img, (h, w) = self._pad(self.to_unit(cond[lo:hi, None]).to(device))
                i_img, _ = self._pad(self.to_unit(init[lo:hi, None]).to(device))
                gens = [torch.Generator().manual_seed(s) for s in slice_seeds[lo:hi]]
                with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_amp):
                    z_cond = self.encode(c_img).float() if self.needs_condition_latent else None
                    feats = self.condition_features(c_img, z_cond)
                    lat_shape = (self.config.autoencoder.latent_channels, c_img.shape[-2] // cfg.autoencoder.downsample,
                                 c_img.shape[-1] // cfg.autoencoder.downsample)
                    noise = torch.stack([torch.randn(lat_shape, generator=g) for g in gens]).to(device)
                    t0 = timesteps[:1].to(device).expand(hi - lo)
                    if from_noise:
                        z = noise
                    else:
                        z_init = z_cond if (z_cond is not None and init_hu is None) else self.encode(i_img).float()
                        z = self.scheduler.add_noise(z_init, noise, t0)
                    for k, t in enumerate(timesteps.tolist()):
                        t_batch = torch.full((hi - lo,), t, device=device, dtype=torch.long)
                        output = self.denoise(z, t_batch, feats).float()
                        z0, eps = self.scheduler.split_prediction(z, t_batch, output, z_cond)
                        if k in guided:
                            z0, eps = self._guide(guidance, k, slice(lo, hi), z, z0, t_batch, (h, w))
                        t_prev = int(timesteps[k + 1]) if k + 1 < len(timesteps) else -1
                        z = self.scheduler.step(z0, eps, t, t_prev, eta, gens)
                    image = self.decode(z).float()
                out[lo:hi] = self.to_hu(image[:, 0, :h, :w]).cpu()
        finally:
            self.train(was_training)
        result = out.numpy()
        return result[0] if squeeze else result

    def _guide(self, guidance, k: int, slices: slice, z: torch.Tensor, z0: torch.Tensor, t: torch.Tensor,
               size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(z0, eps)`` of one guided step: the decoded prediction through ``guidance``,
        encoded again, and the noise estimate that goes with it at ``t``."""
        h, w = size
        x0_hat = self.to_hu(self.decode(z0).float()[:, 0, :h, :w]).cpu().numpy()
        fixed = np.asarray(guidance(k, slices, x0_hat), np.float32)
        if fixed.shape != x0_hat.shape or not np.isfinite(fixed).all():
            raise InputError(f"guidance returned {fixed.dtype} {list(fixed.shape)} with non-finite values or "
                             f"the wrong shape; expected finite {list(x0_hat.shape)}")
        img, _ = self._pad(self.to_unit(torch.from_numpy(fixed)[:, None]).to(z.device))
        z0 = self.encode(img).float()
        return z0, self.scheduler.noise_of(z, t, z0)

    @torch.no_grad()
    def reconstruct(self, images_hu: np.ndarray | torch.Tensor, *, batch_size: int = 8) -> np.ndarray:
        """Autoencoder round trip D(E(x)) in HU (float32 [N, H, W]), to measure its error."""
        images, squeeze = _as_stack(images_hu, "images_hu")
        was_training = self.training
        self.eval()
        out = torch.empty_like(images)
        try:
            for lo in range(0, images.shape[0], batch_size):
                x, (h, w) = self._pad(self.to_unit(images[lo:lo + batch_size, None]).to(self.device))
                out[lo:lo + batch_size] = self.to_hu(self.decode(self.encode(x))[:, 0, :h, :w]).float().cpu()
        finally:
            self.train(was_training)
        result = out.numpy()
        return result[0] if squeeze else result

    # ------------------------------------------------------------------- persistence

    def save_pretrained(self, directory: str | os.PathLike) -> Path:
        """Write ``stage2.json`` plus ``autoencoder/`` and ``unet/`` component folders.

        Each component folder holds ``config.json`` (constructor arguments) and
        ``model.safetensors`` (float32 weights); no pickles.
        """
        directory = Path(directory)
        save_pretrained(directory / "autoencoder", autoencoder_component_config(self.config), self.autoencoder)
        save_pretrained(directory / "unet", unet_kwargs(self.config), self.unet)
        write_json(directory / MODEL_JSON, {
            "class": "LatentDiffusion",
            "components": ["autoencoder", "unet"],
            "config": self.config.to_dict(),
            "latent_shift": self.latent_shift,
            "latent_scale": self.latent_scale,
            "scheduler": self.scheduler.to_dict(),
            "training": self.training_info,
        })
        return directory

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, *, device: str | torch.device = "cpu") -> LatentDiffusion:
        """Load a model written by :meth:`save_pretrained` (float32, eval mode, on ``device``)."""
        directory = Path(directory)
        if not (directory / MODEL_JSON).is_file():
            raise CheckpointError(f"{directory} is not a stage-2 model folder (no {MODEL_JSON})")
        meta = read_json(directory / MODEL_JSON)
        try:
            config = Stage2Config.from_dict(meta["config"])
            shift, scale = meta["latent_shift"], meta["latent_scale"]
        except (KeyError, TypeError, InputError) as exc:
            raise CheckpointError(f"{directory / MODEL_JSON} is malformed: {exc}") from None
        autoencoder, unet = build_autoencoder(config), build_unet(config)
        ae_cfg = load_pretrained_config(directory / "autoencoder", expected_class=type(autoencoder).__name__)
        un_cfg = load_pretrained_config(directory / "unet", expected_class="DiffusionModelUNet")
        if ae_cfg != autoencoder_component_config(config) or un_cfg != unet_kwargs(config):
            raise CheckpointError(f"{directory}: component configs disagree with {MODEL_JSON}")
        load_state(autoencoder, directory / "autoencoder")
        load_state(unet, directory / "unet")
        try:
            model = cls(config, autoencoder, unet, latent_shift=shift, latent_scale=scale)
        except InputError as exc:
            raise CheckpointError(f"{directory / MODEL_JSON}: {exc}") from None
        model.training_info = dict(meta.get("training", {}))
        return model.to(device).eval()


def sample_spread(
    model: LatentDiffusion,
    condition_hu: np.ndarray | torch.Tensor,
    *,
    seeds: Sequence[int] = (0, 1, 2, 3),
    **sample_kwargs: Any,
) -> SampleSpread:
    """Sample once per seed and report the per-pixel spread in HU (honest stochasticity).

    Parameters
    ----------
    model : LatentDiffusion
        Trained model.
    condition_hu : array or tensor
        float [N, H, W] HU condition.
    seeds : sequence of int
        At least two distinct seeds (default four).
    **sample_kwargs
        Passed to :meth:`LatentDiffusion.sample` (``steps``, ``strength``, ...).

    Returns
    -------
    SampleSpread
        Mean and per-pixel standard deviation over seeds, float32 HU.
    """
    seeds = tuple(int(s) for s in seeds)
    if len(set(seeds)) < 2:
        raise InputError("sample_spread needs at least two distinct seeds")
    if "seed" in sample_kwargs or "generator" in sample_kwargs:
        raise InputError("pass the seeds through `seeds`, not seed/generator")
    stack = np.stack([model.sample(condition_hu, seed=s, **sample_kwargs) for s in seeds])
    return SampleSpread(mean=stack.mean(0).astype(np.float32), std=stack.std(0, ddof=1).astype(np.float32),
                        seeds=seeds)
