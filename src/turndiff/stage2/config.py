"""Configuration of stage 2 (image latent diffusion) and the fixed HU normalisation."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from turndiff.errors import InputError

__all__ = ["Stage2Config", "hu_to_unit", "unit_to_hu", "PREDICTION_TYPES", "CONDITIONINGS", "SOFT_TISSUE_HU"]

PREDICTION_TYPES = ("epsilon", "v_prediction", "sample", "residual")
CONDITIONINGS = ("unshuffle", "latent")
# HU range emphasised by ``soft_tissue_weight`` (the soft metric window, with a margin).
SOFT_TISSUE_HU = (-200.0, 300.0)


def hu_to_unit(hu: torch.Tensor | np.ndarray, offset: float = 0.0, scale: float = 1000.0):
    """Map HU to network units, ``(hu - offset) / scale`` (default: water 0, air -1).

    The map is fixed (not fitted to the data) so that the networks see the same
    numbers at every dose; only the noise level changes with the dose.
    """
    return (hu - offset) / scale


def unit_to_hu(unit: torch.Tensor | np.ndarray, offset: float = 0.0, scale: float = 1000.0):
    """Inverse of :func:`hu_to_unit`."""
    return unit * scale + offset


def _tuple(value: Any, kind: type) -> tuple:
    return tuple(kind(v) for v in value)


@dataclass
class Stage2Config:
    """Everything that defines the stage-2 networks, their training and default sampling.

    Use :meth:`preset` for the tested settings. All fields are JSON-serialisable
    (:meth:`to_dict` / :meth:`from_dict`) and saved with a trained model.

    Attributes
    ----------
    hu_offset, hu_scale : float
        Fixed intensity map ``unit = (HU - hu_offset) / hu_scale``.
    downsample : int
        Autoencoder spatial downsampling (2, 4 or 8): a 256x256 slice has a 64x64 latent
        at 4. ``len(ae_channels)`` must be ``log2(downsample) + 1``.
    latent_channels : int
        Channels of the latent.
    ae_channels : tuple of int
        Autoencoder channels per level.
    ae_res_blocks : int
        Residual blocks per autoencoder level.
    ae_attention : bool
        Non-local attention in the autoencoder's middle blocks (costly at 64x64 latents).
    ae_patch_skip : bool
        Add a linear patch path (pixel unshuffle + 1x1 convolution, initialised to the
        PCA of the training patches) in parallel with MONAI's encoder and decoder; see
        :mod:`turndiff.stage2.autoencoder`. False: plain ``AutoencoderKL``.
    kl_weight : float
        Weight of the KL term of the autoencoder loss (L1 + kl_weight * KL).
    ae_grad_weight : float
        Weight of an L1 loss on image gradients (keeps edges sharp; needs no download).
    soft_tissue_weight : float
        Loss weight of pixels whose target lies in the soft-tissue range
        ``SOFT_TISSUE_HU`` (other pixels weigh 1), in the autoencoder loss and in
        ``L_image``: the reconstruction matters most there, and those contrasts are
        small in normalised units.
    ae_teacher_fraction : float
        Fraction of autoencoder training crops taken from the teacher ``x0``; the rest are
        random blends ``lam * x_ld + (1 - lam) * x0``, ``lam ~ U(0, 1)``, the kind of
        image the tunable strategy feeds to the sampler.
    unet_channels : tuple of int
        Diffusion U-Net channels per level (the latent is downsampled
        ``2 ** (len - 1)`` times more inside it).
    unet_res_blocks : int
        Residual blocks per U-Net level.
    unet_attention : tuple of bool
        Self-attention per U-Net level (MONAI always adds one in the middle block).
    unet_head_channels : int
        Channels per attention head.
    norm_groups : int
        GroupNorm groups (must divide every channel count).
    conditioning : {"unshuffle", "latent"}
        How the condition image enters the U-Net, concatenated to the noisy latent:
        ``"unshuffle"``: the image itself, rearranged losslessly to latent resolution
        (pixel unshuffle, ``downsample ** 2`` channels); ``"latent"``: its encoder latent.
    prediction_type : {"epsilon", "v_prediction", "sample", "residual"}
        What the U-Net predicts: the noise, the velocity, the clean latent, or the clean
        latent minus the condition's latent (``"residual"``: a clean-latent prediction
        that only has to learn the correction; zero output returns the condition).
    num_train_timesteps : int
        Length of the diffusion chain.
    schedule, beta_start, beta_end : str, float, float
        MONAI noise schedule name and its beta range.
    image_loss_weight : float
        Weight of the knowledge-distillation loss ``L_image = |D(z0_pred) - x0|_1`` (in
        normalised units) added to the diffusion loss.
    r2r_weight : float
        Weight of the image-domain recorrupted loss (beyond the paper; 0 turns it off):
        ``mean((D(z0_hat) - FBP(y - z / a))^2)`` on triples built from recorrupted
        sinograms, see :class:`~turndiff.stage2.objectives.DiffusionObjective`.
    r2r_recorrupt : float
        ``a`` of those triples.
    r2r_copies : int
        Recorrupted copies drawn per training slice.
    max_train_strength : float
        Training timesteps are drawn in ``[0, max_train_strength * T)``; sampling with a
        larger ``strength`` is refused.
    cond_noise_scale : tuple of float
        Range of ``s`` (drawn uniformly per crop) in the training condition
        ``x0 + s * (x_ld - x0)``: ``s = 1`` is ``x_ld`` itself (the paper's condition),
        ``s < 1`` the cleaner blends the tunable strategy sends, ``s > 1`` a noisier,
        lower-dose-like input. Default ``(0.2, 1.5)``; ``(1, 1)`` trains on ``x_ld`` only.
    ae_iters, ae_lr, ae_batch, ae_crop : int, float, int, int
        Autoencoder training: steps, peak learning rate, batch size, random-crop size.
    ldm_iters, ldm_lr, ldm_batch, ldm_crop : int, float, int, int
        Diffusion training: the same.
    warmup : int
        Learning-rate warm-up steps (both trainings).
    ema_decay : float or None
        EMA of the weights (both trainings); the EMA weights are saved.
    grad_clip : float or None
        Gradient-norm clipping.
    flip : bool
        Random left-right flips of training crops.
    sample_steps : int
        Default number of DDIM steps.
    sample_strength : float
        Default start of partial diffusion, as a fraction of the chain (1: pure noise).
    eta : float
        DDIM eta (0: deterministic given the initial noise).
    """

    hu_offset: float = 0.0
    hu_scale: float = 1000.0
    downsample: int = 4
    latent_channels: int = 4
    ae_channels: tuple[int, ...] = (32, 64, 64)
    ae_res_blocks: int = 1
    ae_attention: bool = False
    ae_patch_skip: bool = True
    kl_weight: float = 1e-6
    ae_grad_weight: float = 0.5
    soft_tissue_weight: float = 3.0
    ae_teacher_fraction: float = 0.5
    unet_channels: tuple[int, ...] = (64, 128, 128)
    unet_res_blocks: int = 2
    unet_attention: tuple[bool, ...] = (False, False, True)
    unet_head_channels: int = 32
    norm_groups: int = 16
    conditioning: str = "unshuffle"
    prediction_type: str = "residual"
    num_train_timesteps: int = 1000
    schedule: str = "scaled_linear_beta"
    beta_start: float = 0.0015
    beta_end: float = 0.0195
    image_loss_weight: float = 1.0
    r2r_weight: float = 100.0
    r2r_recorrupt: float = 0.5
    r2r_copies: int = 2
    max_train_strength: float = 0.5
    cond_noise_scale: tuple[float, float] = (0.2, 1.5)
    ae_iters: int = 20000
    ae_lr: float = 2e-4
    ae_batch: int = 8
    ae_crop: int = 128
    ldm_iters: int = 40000
    ldm_lr: float = 1e-4
    ldm_batch: int = 8
    ldm_crop: int = 256
    warmup: int = 500
    ema_decay: float | None = 0.999
    grad_clip: float | None = 1.0
    flip: bool = True
    sample_steps: int = 20
    sample_strength: float = 0.3
    eta: float = 0.0

    def __post_init__(self) -> None:
        self.ae_channels = _tuple(self.ae_channels, int)
        self.unet_channels = _tuple(self.unet_channels, int)
        self.unet_attention = _tuple(self.unet_attention, bool)
        self.cond_noise_scale = _tuple(self.cond_noise_scale, float)
        self.validate()

    def validate(self) -> None:
        """Raise :class:`InputError` naming the first inconsistent field."""
        levels = math.log2(self.downsample) if self.downsample > 0 else -1
        checks = [
            (self.hu_scale > 0, f"hu_scale must be > 0, got {self.hu_scale}"),
            (self.downsample in (2, 4, 8), f"downsample must be 2, 4 or 8, got {self.downsample}"),
            (
                len(self.ae_channels) == int(levels) + 1,
                f"ae_channels needs log2(downsample)+1 = {int(levels) + 1} levels, got {len(self.ae_channels)}",
            ),
            (self.latent_channels >= 1, f"latent_channels must be >= 1, got {self.latent_channels}"),
            (len(self.unet_channels) >= 1, "unet_channels must not be empty"),
            (
                len(self.unet_attention) == len(self.unet_channels),
                f"unet_attention has {len(self.unet_attention)} levels, unet_channels {len(self.unet_channels)}",
            ),
            (
                all(c % self.norm_groups == 0 for c in self.ae_channels + self.unet_channels),
                f"norm_groups={self.norm_groups} must divide every channel count",
            ),
            (
                all(c % self.unet_head_channels == 0
                    for c, a in zip(self.unet_channels, self.unet_attention) if a)
                and self.unet_channels[-1] % self.unet_head_channels == 0,
                f"unet_head_channels={self.unet_head_channels} must divide the attended channel counts",
            ),
            (self.ae_res_blocks >= 1 and self.unet_res_blocks >= 1, "res_blocks must be >= 1"),
            (self.conditioning in CONDITIONINGS, f"conditioning must be one of {CONDITIONINGS}"),
            (self.prediction_type in PREDICTION_TYPES, f"prediction_type must be one of {PREDICTION_TYPES}"),
            (self.num_train_timesteps >= 2, "num_train_timesteps must be >= 2"),
            (0 < self.beta_start < self.beta_end < 1, "need 0 < beta_start < beta_end < 1"),
            (self.kl_weight >= 0 and self.ae_grad_weight >= 0, "loss weights must be >= 0"),
            (self.soft_tissue_weight >= 1, "soft_tissue_weight must be >= 1"),
            (self.image_loss_weight >= 0, "image_loss_weight must be >= 0"),
            (self.r2r_weight >= 0, f"r2r_weight must be >= 0, got {self.r2r_weight}"),
            (self.r2r_recorrupt > 0, f"r2r_recorrupt must be > 0, got {self.r2r_recorrupt}"),
            (self.r2r_copies >= 1, f"r2r_copies must be >= 1, got {self.r2r_copies}"),
            (0 <= self.ae_teacher_fraction <= 1, "ae_teacher_fraction must be in [0, 1]"),
            (0 < self.max_train_strength <= 1, "max_train_strength must be in (0, 1]"),
            (
                len(self.cond_noise_scale) == 2 and 0 <= self.cond_noise_scale[0] <= self.cond_noise_scale[1],
                "cond_noise_scale must be (low, high) with 0 <= low <= high",
            ),
            (min(self.ae_iters, self.ldm_iters, self.ae_batch, self.ldm_batch) >= 1, "iters and batch must be >= 1"),
            (self.ae_lr > 0 and self.ldm_lr > 0, "learning rates must be > 0"),
            (
                self.ae_crop % self.downsample == 0 and self.ldm_crop % self.size_multiple == 0,
                f"ae_crop must be a multiple of {self.downsample} and ldm_crop of {self.size_multiple}",
            ),
            (self.sample_steps >= 1, "sample_steps must be >= 1"),
            (
                0 < self.sample_strength <= self.max_train_strength,
                "sample_strength must be in (0, max_train_strength]",
            ),
            (self.eta >= 0, "eta must be >= 0"),
        ]
        for ok, message in checks:
            if not ok:
                raise InputError(f"Stage2Config: {message}")

    @property
    def size_multiple(self) -> int:
        """Image sides must be multiples of this (inputs are padded to it when sampling)."""
        return self.downsample * 2 ** (len(self.unet_channels) - 1)

    @property
    def condition_channels(self) -> int:
        """Channels the condition adds to the U-Net input."""
        return self.downsample**2 if self.conditioning == "unshuffle" else self.latent_channels

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict of all fields (tuples become lists)."""
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Stage2Config:
        """Inverse of :meth:`to_dict`; unknown keys raise :class:`InputError`."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise InputError(f"unknown Stage2Config fields: {', '.join(unknown)}")
        return cls(**dict(data))

    def replace(self, **changes: Any) -> Stage2Config:
        """A validated copy with some fields changed."""
        return dataclasses.replace(self, **changes)

    @classmethod
    def preset(cls, name: str) -> Stage2Config:
        """Tested settings.

        ``"fast"``: CPU, a few minutes on 2 cores for 8 slices of 256x256 (small
        networks, random crops, a few thousand steps in all). ``"paper"``: GPU, 512x512
        slices, wider networks with attention, long training.
        """
        if name == "paper":
            return cls()
        if name == "fast":
            return cls(
                latent_channels=8,
                ae_channels=(16, 32, 32),
                ae_res_blocks=1,
                unet_channels=(32, 64, 64),
                unet_res_blocks=1,
                unet_attention=(False, False, False),
                unet_head_channels=16,
                norm_groups=8,
                ae_iters=1200,
                ae_lr=1e-3,
                ae_batch=8,
                ae_crop=64,
                ldm_iters=1500,
                ldm_lr=5e-4,
                ldm_batch=8,
                ldm_crop=64,
                warmup=100,
                ema_decay=0.995,
                max_train_strength=0.3,
                sample_steps=10,
                sample_strength=0.25,
            )
        raise InputError(f"unknown stage-2 preset {name!r} (use 'fast' or 'paper')")
