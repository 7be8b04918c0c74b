"""Networks of the learned baselines: RED-CNN, and a builder for saved specs.

The self-supervised baselines use the project's residual U-Net
(:class:`turndiff.nets.ResidualDenoiser`); the supervised upper bound uses RED-CNN.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..nets import ResidualDenoiser
from .ipdm import IPDMNet
from .promptsid import PromptSIDNet

__all__ = ["REDCNN", "build_network", "network_spec"]


class REDCNN(nn.Module):
    """Residual encoder-decoder CNN (Chen et al. 2017) on ``[B, 1, H, W]`` HU images.

    Five 5x5 convolutions (no padding, so each trims 4 pixels) and five 5x5 transposed
    convolutions (each adds them back), ReLU after every layer, and three residual
    shortcuts: input -> output, after conv 2 -> before deconv 4, after conv 4 ->
    before deconv 2. The paper scales HU to [0, 1] and ends with a ReLU; here the input
    is ``(hu - shift) / scale`` with ``shift = -1024`` (air is 0, the final ReLU stops
    at air, as in the paper) and ``scale = 500`` HU (soft-tissue contrasts are not
    squeezed into a few thousandths, which trains faster).

    Parameters
    ----------
    channels : int
        Feature maps per layer (96 in the paper).
    kernel : int
        Kernel size (5 in the paper).
    shift, scale : float
        Input normalisation (HU).

    References
    ----------
    H. Chen et al., "Low-dose CT with a residual encoder-decoder convolutional neural
    network," IEEE Trans. Med. Imaging 36(12), 2017.
    """

    def __init__(self, channels: int = 96, *, kernel: int = 5, shift: float = -1024.0, scale: float = 500.0) -> None:
        super().__init__()
        if channels < 1 or kernel < 1 or kernel % 2 == 0:
            raise ValueError("channels must be >= 1 and kernel a positive odd number")
        if scale <= 0:
            raise ValueError("scale must be positive")
        self.config = {"channels": int(channels), "kernel": int(kernel), "shift": float(shift), "scale": float(scale)}
        c, k = channels, kernel
        self.convs = nn.ModuleList([nn.Conv2d(1 if i == 0 else c, c, k) for i in range(5)])
        self.deconvs = nn.ModuleList([nn.ConvTranspose2d(c, 1 if i == 4 else c, k) for i in range(5)])

    @property
    def trim(self) -> int:
        """Pixels one side loses through the encoder (the smallest input is ``2 * trim + 1``)."""
        return 5 * (self.config["kernel"] // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cfg = self.config
        if min(x.shape[-2:]) <= 2 * self.trim:
            raise ValueError(f"RED-CNN needs images larger than {2 * self.trim} pixels, got {tuple(x.shape[-2:])}")
        z = (x - cfg["shift"]) / cfg["scale"]
        r1 = z
        h = torch.relu(self.convs[0](z))
        r2 = h = torch.relu(self.convs[1](h))
        h = torch.relu(self.convs[2](h))
        r3 = h = torch.relu(self.convs[3](h))
        h = torch.relu(self.convs[4](h))
        h = self.deconvs[0](h) + r3
        h = self.deconvs[1](torch.relu(h))
        h = self.deconvs[2](torch.relu(h)) + r2
        h = self.deconvs[3](torch.relu(h))
        h = self.deconvs[4](torch.relu(h)) + r1
        return torch.relu(h) * cfg["scale"] + cfg["shift"]


_CLASSES = {"ResidualDenoiser": ResidualDenoiser, "REDCNN": REDCNN, "PromptSIDNet": PromptSIDNet,
            "IPDMNet": IPDMNet}


def network_spec(network: nn.Module) -> dict[str, Any]:
    """``{"class": name, "config": constructor arguments}`` of a baseline network."""
    name = type(network).__name__
    if name not in _CLASSES:
        raise TypeError(f"not a baseline network: {name}")
    return {"class": name, "config": dict(network.config)}


def build_network(spec: dict[str, Any]) -> nn.Module:
    """Rebuild a network from :func:`network_spec` output."""
    try:
        cls = _CLASSES[spec["class"]]
        return cls(**spec["config"])
    except (KeyError, TypeError) as e:
        from ..errors import InputError

        raise InputError(f"bad baseline network spec {spec!r} ({e})") from None
