"""A residual U-Net denoiser for sinograms and images of any size.

MONAI's ``BasicUNet`` (four 2x down-samplings) predicts a correction that is added to
the input: ``f(y) = y + scale * unet((y - shift) / scale)``. The fixed ``shift``/``scale``
pair is the documented input normalisation; they are stored in the model config so a
saved model is self-describing. Inputs of any height and width are padded to a multiple
of 16; the first spatial axis can be padded circularly, which is exact for sinograms
over 360 degrees (view V wraps to view 0) and avoids edge artefacts at the first and last
views.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ResidualDenoiser", "build_denoiser"]

_MULTIPLE = 16


class ResidualDenoiser(nn.Module):
    """``x + scale * UNet((x - shift) / scale)`` on ``[B, C, H, W]`` tensors.

    Parameters
    ----------
    channels
        Input (= output) channels.
    features
        MONAI ``BasicUNet`` features (6 numbers: 5 encoder levels and the last decoder).
    shift, scale
        Input normalisation (data units).
    circular_rows
        Pad the first spatial axis circularly (sinogram views over 360 degrees).
    in_extra
        Extra conditioning channels appended to the normalised input (not denoised).
    """

    def __init__(
        self,
        channels: int = 1,
        *,
        features: Sequence[int] = (32, 32, 64, 128, 256, 32),
        shift: float = 0.0,
        scale: float = 1.0,
        circular_rows: bool = False,
        in_extra: int = 0,
    ) -> None:
        super().__init__()
        from monai.networks.nets import BasicUNet

        if len(features) != 6:
            raise ValueError("features must hold 6 numbers (MONAI BasicUNet)")
        if scale <= 0:
            raise ValueError("scale must be positive")
        self.config = {
            "channels": int(channels),
            "features": [int(f) for f in features],
            "shift": float(shift),
            "scale": float(scale),
            "circular_rows": bool(circular_rows),
            "in_extra": int(in_extra),
        }
        self.unet = BasicUNet(
            spatial_dims=2,
            in_channels=channels + in_extra,
            out_channels=channels,
            features=tuple(features),
            norm=("instance", {"affine": True}),
            act=("LeakyReLU", {"negative_slope": 0.1, "inplace": True}),
        )
        # Start as the identity: a zero last layer means f(x) = x before training, so
        # early steps refine the input instead of first undoing a random residual.
        torch.nn.init.zeros_(self.unet.final_conv.weight)
        torch.nn.init.zeros_(self.unet.final_conv.bias)

    def forward(self, x: torch.Tensor, extra: torch.Tensor | None = None) -> torch.Tensor:
        c = self.config
        h, w = x.shape[-2:]
        # Pad to a multiple of 16 and at least 32 (instance norm needs > 1 pixel at the bottom).
        ph = max(32 - h, (-h) % _MULTIPLE)
        pw = max(32 - w, (-w) % _MULTIPLE)
        z = (x - c["shift"]) / c["scale"]
        if extra is not None:
            z = torch.cat([z, extra], 1)
        if ph or pw:
            if c["circular_rows"] and ph:
                z = F.pad(z, (0, 0, ph // 2, ph - ph // 2), mode="circular")
                z = F.pad(z, (pw // 2, pw - pw // 2, 0, 0), mode="replicate")
            else:
                z = F.pad(z, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2), mode="replicate")
        r = self.unet(z)[..., ph // 2 : ph // 2 + h, pw // 2 : pw // 2 + w]
        return x + c["scale"] * r


def build_denoiser(config: dict) -> ResidualDenoiser:
    """Rebuild a :class:`ResidualDenoiser` from its ``config`` dict (as saved)."""
    return ResidualDenoiser(**config)
