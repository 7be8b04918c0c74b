"""Stage 2 of TurnDiff: image latent diffusion distilled from the stage-1 teacher.

An ``AutoencoderKL`` (MONAI) maps HU slices to a latent ``downsample`` times smaller; a
``DiffusionModelUNet`` (MONAI) denoises the teacher's latent conditioned on the
low-dose image; ``L_image`` pulls the decoded prediction toward the teacher ``x0``.
Sampling is seeded DDIM that may start part-way from the noised latent of the
condition (partial diffusion). See docs/STAGE2.md.
"""

from turndiff.stage2.autoencoder import PatchSkipAutoencoder, build_autoencoder, init_patch_pca
from turndiff.stage2.config import Stage2Config, hu_to_unit, unit_to_hu
from turndiff.stage2.model import LatentDiffusion, SampleSpread, sample_spread
from turndiff.stage2.scheduler import PartialDDIMScheduler, sampling_timesteps
from turndiff.stage2.objectives import AutoencoderObjective, DiffusionObjective
from turndiff.stage2.train import (
    autoencoder_error_hu,
    estimate_latent_stats,
    train_autoencoder,
    train_latent_diffusion,
    train_stage2,
)

__all__ = [
    "Stage2Config",
    "LatentDiffusion",
    "PartialDDIMScheduler",
    "PatchSkipAutoencoder",
    "build_autoencoder",
    "init_patch_pca",
    "SampleSpread",
    "AutoencoderObjective",
    "DiffusionObjective",
    "train_stage2",
    "train_autoencoder",
    "train_latent_diffusion",
    "estimate_latent_stats",
    "autoencoder_error_hu",
    "sample_spread",
    "sampling_timesteps",
    "hu_to_unit",
    "unit_to_hu",
]
