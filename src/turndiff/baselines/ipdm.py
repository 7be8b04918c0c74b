"""IPDM (Liao et al., "Domain progressive low-dose CT imaging using iterative partial
diffusion model"): two unconditional diffusion models trained on *normal-dose* data,
one on projections and one on images, used on low-dose data by iterated partial
diffusion with the low-dose data as guidance.

It needs clean data, though not paired with any low-dose scan: the benchmark trains it on
the clean sinograms and images of phantoms that no other method sees and that are disjoint
from the test set (``clean_data = "unpaired"``). What it does, in our words:

- **Training.** Two DDPMs (MONAI ``DiffusionModelUNet``, epsilon prediction), one on
  random crops of normal-dose sinograms, one on crops of normal-dose images. Inference only
  ever starts a few percent into the chain, so the ``fast`` preset trains the first
  ``train_t_max`` timesteps only (``paper``: all of them).
- **Iterative partial diffusion.** The low-dose data ``x_c`` is diffused to the timestep
  ``t`` whose noise level matches its own (``(1 - abar_t) / abar_t = sigma^2``: the dose
  model gives sigma for the sinogram, ``skimage.restoration.estimate_sigma`` for the
  image) and brought back to 0 in a few DDIM steps. At each step the network's noise
  estimate is blended with the noise that would lead from ``x_c`` to the current sample,
  both standardised, ``eps = std((1 - lam) std(eps_net) + lam std(eps_c))``: the guidance
  keeps the sample close to the measured data. The process is repeated ``iterations``
  times from its own output, with the guidance moved to ``eta x_k + (1 - eta) x_c`` and
  ``lam`` decreasing from ``lambda_max`` to ``lambda_min``; the result is the mean of the
  last two iterations.
- **Domain progressive.** The projection model cleans the sinogram first; its FBP is
  then refined by the image model in the same way.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..dose.noise_model import postlog_variance
from ..stage2.scheduler import PartialDDIMScheduler

__all__ = ["IPDMNet", "IPDMObjective", "matched_timestep", "iterative_partial_diffusion"]


class IPDMNet(nn.Module):
    """The two diffusion U-Nets of IPDM (``proj`` and ``image``) with their normalisations
    and noise schedule.

    Parameters
    ----------
    channels : list of int
        Features per level of both U-Nets (attention only in MONAI's middle block).
    res_blocks : int
        Residual blocks per level.
    norm_groups : int
        Group-norm groups.
    num_train_timesteps, beta_start, beta_end : int, float, float
        The linear-beta DDPM schedule (the DDPM paper's).
    sino_shift, sino_scale : float
        Post-log values are used as ``(p - sino_shift) / sino_scale`` (the mean and standard
        deviation of the normal-dose training sinograms: a [-1, 1] range would put the
        noise of a 25%-dose sinogram below the first timestep's).
    image_scale : float
        HU per unit (water is 0, air -1).
    """

    def __init__(self, channels: list[int] | tuple[int, ...] = (32, 64, 64, 64), res_blocks: int = 1,
                 norm_groups: int = 8, num_train_timesteps: int = 1000, beta_start: float = 1e-4,
                 beta_end: float = 0.02, sino_shift: float = 0.0, sino_scale: float = 1.0,
                 image_scale: float = 1000.0) -> None:
        super().__init__()
        from monai.networks.nets import DiffusionModelUNet

        if len(channels) < 2 or min(channels) < 1 or any(c % norm_groups for c in channels):
            raise ValueError("IPDMNet: two or more levels, each a multiple of norm_groups")
        if sino_scale <= 0 or image_scale <= 0:
            raise ValueError("IPDMNet: scales must be positive")
        self.config = {"channels": [int(c) for c in channels], "res_blocks": int(res_blocks),
                       "norm_groups": int(norm_groups), "num_train_timesteps": int(num_train_timesteps),
                       "beta_start": float(beta_start), "beta_end": float(beta_end),
                       "sino_shift": float(sino_shift), "sino_scale": float(sino_scale),
                       "image_scale": float(image_scale)}

        def unet() -> nn.Module:
            return DiffusionModelUNet(spatial_dims=2, in_channels=1, out_channels=1, num_res_blocks=int(res_blocks),
                                      channels=list(channels), attention_levels=[False] * len(channels),
                                      norm_num_groups=int(norm_groups), num_head_channels=int(channels[-1]))

        self.proj, self.image = unet(), unet()
        self.scheduler = PartialDDIMScheduler(num_train_timesteps, "linear_beta", beta_start, beta_end, "epsilon")
        self._multiple = 2 ** (len(channels) - 1)

    def to_unit(self, domain: str, x: torch.Tensor) -> torch.Tensor:
        """Post-log values (``"proj"``) or HU (``"image"``) -> the models' units."""
        if domain == "proj":
            return (x - self.config["sino_shift"]) / self.config["sino_scale"]
        return x / self.config["image_scale"]

    def from_unit(self, domain: str, x: torch.Tensor) -> torch.Tensor:
        if domain == "proj":
            return x * self.config["sino_scale"] + self.config["sino_shift"]
        return x * self.config["image_scale"]

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor, domain: str = "image") -> torch.Tensor:
        """The noise estimate of the ``domain`` model for ``x`` ``[B, 1, H, W]`` (any size:
        padded to the U-Net's multiple and cropped back)."""
        h, w = x.shape[-2:]
        m = self._multiple
        xp = F.pad(x, (0, (-w) % m, 0, (-h) % m), mode="replicate")
        t = torch.as_tensor(timesteps, device=x.device).long().reshape(-1).expand(x.shape[0])
        out = (self.proj if domain == "proj" else self.image)(xp, timesteps=t)
        return out[..., :h, :w]


class IPDMObjective(nn.Module):
    """Epsilon-prediction loss of both models on one batch each: ``images`` (HU crops of
    normal-dose images) and ``sinograms`` (crops of normal-dose sinograms), timesteps drawn
    uniformly from ``[0, t_max)``."""

    def __init__(self, network: IPDMNet, *, t_max: int) -> None:
        super().__init__()
        self.network = network
        self.t_max = int(min(max(t_max, 1), network.config["num_train_timesteps"]))

    def forward(self, batch: dict) -> tuple[torch.Tensor, dict]:
        net, gen = self.network, batch.get("generator")
        total, logs = 0.0, {}
        for domain, key in (("proj", "sinograms"), ("image", "images")):
            x0 = net.to_unit(domain, batch[key])
            noise = torch.randn(x0.shape, generator=gen).to(x0)
            t = torch.randint(0, self.t_max, (x0.shape[0],), generator=gen).to(x0.device)
            loss = F.mse_loss(net(net.scheduler.add_noise(x0, noise, t), t, domain), noise)
            total = total + loss
            logs[domain] = float(loss.detach())
        return total, logs


def matched_timestep(scheduler: PartialDDIMScheduler, sigma: float, t_max: int) -> int:
    """The timestep whose noise-to-signal ratio ``(1 - abar) / abar`` is ``sigma^2``
    (clipped to ``[1, t_max - 1]``)."""
    ab = scheduler.alphas_cumprod.double()
    ratio = (1 - ab) / ab
    t = int(torch.argmin((ratio - float(sigma) ** 2).abs()))
    return int(min(max(t, 1), max(t_max - 1, 1)))


def _standardise(x: torch.Tensor) -> torch.Tensor:
    dims = tuple(range(1, x.ndim))
    return (x - x.mean(dims, keepdim=True)) / x.std(dims, keepdim=True).clamp_min(1e-8)


@torch.no_grad()
def iterative_partial_diffusion(eps_fn: Callable[[torch.Tensor, int], torch.Tensor],
                                scheduler: PartialDDIMScheduler, condition: torch.Tensor, t_start: int, *,
                                iterations: int = 3, steps: int = 3, lambda_max: float = 0.5,
                                lambda_min: float = 0.25, eta: float = 0.5,
                                generator: torch.Generator | None = None) -> torch.Tensor:
    """IPDM's guided reverse process (module docstring) on ``condition`` ``[B, C, H, W]``
    (the models' units), starting at ``t_start`` each iteration with ``steps`` DDIM steps.

    ``eps_fn(x_t, t)`` is the network's noise estimate. Returns the restored sample.
    """
    x_c = condition
    guide, x = x_c, x_c
    lams = np.linspace(lambda_max, lambda_min, max(iterations, 1))
    ts = sorted({int(round(v)) for v in np.linspace(t_start, 0, steps + 1)[:-1]}, reverse=True)
    results = []
    for k in range(iterations):
        noise = torch.randn(x.shape, generator=generator).to(x)
        x = scheduler.add_noise(x, noise, torch.full((x.shape[0],), ts[0], device=x.device))
        for i, t in enumerate(ts):
            ab = scheduler.alphas_cumprod[t].to(x)
            eps_c = (x - ab.sqrt() * guide) / (1 - ab).sqrt()
            eps = _standardise((1 - lams[k]) * _standardise(eps_fn(x, t)) + lams[k] * _standardise(eps_c))
            x0 = (x - (1 - ab).sqrt() * eps) / ab.sqrt()
            x = scheduler.step(x0, eps, t, ts[i + 1] if i + 1 < len(ts) else -1)
        results.append(x)
        guide = eta * x + (1 - eta) * x_c
    return results[-1] if len(results) == 1 else (results[-1] + results[-2]) / 2


def sinogram_sigma(sinogram: np.ndarray, photons: float) -> float:
    """RMS post-log noise std of one noisy sinogram ``[V, D]`` under the dose model."""
    p = np.clip(np.asarray(sinogram, np.float64), 0.0, None)
    return float(np.sqrt(np.mean(postlog_variance(p, photons))))


def ipdm_spec(cfg: dict[str, Any]) -> dict[str, Any]:
    """Constructor arguments of :class:`IPDMNet` from a preset (with the data's
    ``sino_shift`` and ``sino_scale`` when known)."""
    return {"channels": list(cfg["channels"]), "res_blocks": int(cfg["res_blocks"]),
            "norm_groups": int(cfg["norm_groups"]), "sino_shift": float(cfg.get("sino_shift", 0.0)),
            "sino_scale": float(cfg.get("sino_scale", 1.0))}
