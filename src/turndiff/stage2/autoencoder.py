"""The stage-2 autoencoder: MONAI's ``AutoencoderKL`` with an optional linear patch path.

A KL autoencoder learns slowly: after a few minutes of CPU training it reconstructs
a CT slice worse than a principal-component code of its ``d x d`` patches (measured:
61 HU vs 22 HU RMSE in soft tissue with 8 components; docs/STAGE2.md).
``PatchSkipAutoencoder`` therefore adds, in parallel with MONAI's encoder and decoder,
a linear path: ``pixel_unshuffle`` (a lossless rearrangement of each ``d x d`` patch
into ``d^2`` channels) followed by a 1x1 convolution into the latent, and the mirror
image in the decoder. :func:`init_patch_pca` sets that path to the PCA of the training
patches and zeroes the nonlinear branches' outputs, so training starts from the PCA
code and the networks learn what it misses. ``encode`` / ``decode`` / ``forward`` keep
``AutoencoderKL``'s signatures, so nothing downstream checks which one it has.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from turndiff.stage2.config import Stage2Config

__all__ = ["PatchSkipAutoencoder", "autoencoder_kwargs", "autoencoder_component_config", "build_autoencoder",
           "init_patch_pca"]

# Initial latent sigma of the nonlinear branch: near-deterministic at the start, so the
# sampling noise of the KL autoencoder does not drown the PCA code (the tiny KL weight
# lets it grow only where the reconstruction allows).
_INIT_SIGMA = 0.01


def autoencoder_kwargs(config: Stage2Config) -> dict[str, Any]:
    """Constructor arguments of MONAI's ``AutoencoderKL`` for ``config``."""
    return {
        "spatial_dims": 2,
        "in_channels": 1,
        "out_channels": 1,
        "num_res_blocks": config.autoencoder.res_blocks,
        "channels": list(config.autoencoder.channels),
        "attention_levels": [False] * len(config.autoencoder.channels),
        "latent_channels": config.autoencoder.latent_channels,
        "norm_num_groups": config.norm_groups,
        "with_encoder_nonlocal_attn": config.autoencoder.attention,
        "with_decoder_nonlocal_attn": config.autoencoder.attention,
    }


def autoencoder_component_config(config: Stage2Config) -> dict[str, Any]:
    """What ``autoencoder/config.json`` stores: MONAI arguments plus the patch path."""
    if not config.autoencoder.patch_skip:
        return autoencoder_kwargs(config)
    return {"autoencoder_kl": autoencoder_kwargs(config), "downsample": config.autoencoder.downsample}


class PatchSkipAutoencoder(torch.nn.Module):
    """``AutoencoderKL`` plus a linear ``d x d`` patch code in parallel (see module doc).

    Parameters
    ----------
    autoencoder_kl : dict
        Arguments of MONAI's ``AutoencoderKL`` (2D); its ``len(channels) - 1``
        downsamplings must equal ``log2(downsample)``.
    downsample : int
        Patch side ``d`` (the latent is ``d`` times smaller than the image).
    """

    def __init__(self, autoencoder_kl: dict[str, Any], downsample: int) -> None:
        super().__init__()
        from monai.networks.nets import AutoencoderKL

        if 2 ** (len(autoencoder_kl["channels"]) - 1) != downsample:
            raise ValueError("AutoencoderKL levels do not match downsample")
        self.autoencoder = AutoencoderKL(**autoencoder_kl)
        self.downsample = int(downsample)
        channels = int(autoencoder_kl["latent_channels"])
        self.patch_encode = torch.nn.Conv2d(downsample**2, channels, 1)
        self.patch_decode = torch.nn.Conv2d(channels, downsample**2, 1)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Latent mean and sigma of ``x`` [B, 1, H, W] (H, W multiples of ``downsample``)."""
        z_mu, z_sigma = self.autoencoder.encode(x)
        return z_mu + self.patch_encode(F.pixel_unshuffle(x, self.downsample)), z_sigma

    def sampling(self, z_mu: torch.Tensor, z_sigma: torch.Tensor) -> torch.Tensor:
        return self.autoencoder.sampling(z_mu, z_sigma)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Image [B, 1, H, W] of latent ``z``."""
        return self.autoencoder.decode(z) + F.pixel_shuffle(self.patch_decode(z), self.downsample)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        z_mu, z_sigma = self.encode(x)
        return self.decode(self.sampling(z_mu, z_sigma)), z_mu, z_sigma


def build_autoencoder(config: Stage2Config) -> torch.nn.Module:
    """A fresh autoencoder for ``config``: ``PatchSkipAutoencoder`` or plain ``AutoencoderKL``."""
    if config.autoencoder.patch_skip:
        return PatchSkipAutoencoder(autoencoder_kwargs(config), config.autoencoder.downsample)
    from monai.networks.nets import AutoencoderKL

    return AutoencoderKL(**autoencoder_kwargs(config))


@torch.no_grad()
def init_patch_pca(autoencoder: PatchSkipAutoencoder, images: torch.Tensor, *, max_patches: int = 200_000,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """Set the linear path to the PCA of the ``d x d`` patches of ``images`` [N, 1, H, W].

    The nonlinear branch's latent mean and output are zeroed, and its latent sigma set
    small, so ``decode(encode(x))`` is the PCA reconstruction of ``x`` until trained.

    Returns
    -------
    torch.Tensor
        The explained-variance ratio of each kept component.
    """
    d = autoencoder.downsample
    h, w = images.shape[-2:]
    images = images[..., : h - h % d, : w - w % d]
    patches = F.pixel_unshuffle(images.float(), d).permute(0, 2, 3, 1).reshape(-1, d * d).double()
    if patches.shape[0] > max_patches:
        keep = torch.randperm(patches.shape[0], generator=generator)[:max_patches]
        patches = patches[keep]
    mean = patches.mean(0)
    _, s, vt = torch.linalg.svd(patches - mean, full_matrices=False)
    k = autoencoder.patch_encode.out_channels
    basis = torch.zeros(k, d * d, dtype=torch.float64)
    basis[: min(k, d * d)] = vt[: min(k, d * d)]
    enc, dec = autoencoder.patch_encode, autoencoder.patch_decode
    enc.weight.copy_(basis.reshape(k, d * d, 1, 1).to(enc.weight.dtype))
    enc.bias.copy_((-basis @ mean).to(enc.bias.dtype))
    dec.weight.copy_(basis.T.reshape(d * d, k, 1, 1).to(dec.weight.dtype))
    dec.bias.copy_(mean.to(dec.bias.dtype))
    kl = autoencoder.autoencoder
    for conv in (kl.quant_conv_mu.conv, kl.decoder.blocks[-1].conv):
        conv.weight.zero_()
        conv.bias.zero_()
    kl.quant_conv_log_sigma.conv.weight.zero_()
    kl.quant_conv_log_sigma.conv.bias.fill_(2.0 * math.log(_INIT_SIGMA))
    energy = s.square()
    return (energy / energy.sum())[:k].float()
