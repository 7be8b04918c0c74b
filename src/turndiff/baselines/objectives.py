"""Training objectives of the learned baselines, for :func:`turndiff.training.train`.

Each objective is an ``nn.Module`` holding the network; ``forward(batch)`` returns
``(loss, logs)``. ``batch`` comes from :func:`turndiff.baselines.data.crop_batch_fn`:
``images`` ``[B, C, h, w]`` (HU; what the channels hold is stated per objective),
``step`` and ``generator`` (a CPU ``torch.Generator`` for the objective's own random
choices). Residuals are measured in units of :data:`HU_SCALE` (500 HU) so losses are
of order one whatever the noise level.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..stage1.subsample import draw_cell_positions, subsample
from .data import HU_SCALE

__all__ = [
    "Neighbor2NeighborObjective",
    "Blind2UnblindObjective",
    "Noisier2NoiseObjective",
    "Noise2SimObjective",
    "Noise2InverseObjective",
    "SupervisedObjective",
    "blind_spot_masks",
]


def _mse(diff: torch.Tensor) -> torch.Tensor:
    return (diff / HU_SCALE).pow(2).mean()


def _ramp(step: int, iters: int) -> float:
    return min(1.0, max(0.0, step / max(int(iters), 1)))


class Neighbor2NeighborObjective(nn.Module):
    """Neighbor2Neighbor (Huang et al., CVPR 2021) on images.

    ``images`` channel 0: the noisy FBP image ``y``. Per 2x2 cell two different pixels
    are drawn (``g1``, ``g2``: half-size sub-images, as in stage 1); with ``f(y)`` taken
    without gradient,

    ``L = mean((f(g1 y) - g2 y)^2) + gamma_t mean((f(g1 y) - g2 y - (g1 f(y) - g2 f(y)))^2)``

    where ``gamma_t`` ramps linearly from 0 to ``gamma`` over ``iters`` steps (the
    paper's schedule, ``gamma = 2``).
    """

    def __init__(self, network: nn.Module, *, gamma: float = 2.0, iters: int = 1000) -> None:
        super().__init__()
        self.network, self.gamma, self.iters = network, float(gamma), int(iters)

    def forward(self, batch: dict) -> tuple[torch.Tensor, dict]:
        y = batch["images"][:, :1]
        pos = draw_cell_positions(tuple(y.shape), 2, generator=batch.get("generator"), device=y.device)
        g1, g2 = subsample(y, pos)
        gamma = self.gamma * _ramp(int(batch.get("step", 0)), self.iters)
        with torch.no_grad():
            f1, f2 = subsample(self.network(y), pos)
        diff = self.network(g1) - g2
        rec = _mse(diff)
        reg = _mse(diff - (f1 - f2))
        return rec + gamma * reg, {"rec": float(rec.detach()), "reg": float(reg.detach())}


def blind_spot_masks(shape: tuple[int, ...], width: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """The ``width**2`` complementary masks of Blind2Unblind: ``[width**2, 1, 1, H, W]``.

    Mask ``i`` is 1 at position ``i`` of every ``width x width`` cell; together the
    masks cover every pixel exactly once.
    """
    h, w = shape[-2:]
    rows = torch.arange(h, device=device) % width
    cols = torch.arange(w, device=device) % width
    pos = rows[:, None] * width + cols[None, :]
    return torch.stack([(pos == i).float() for i in range(width * width)])[:, None, None]


_INTERP = torch.tensor([[0.5, 1.0, 0.5], [1.0, 0.0, 1.0], [0.5, 1.0, 0.5]]) / 6.0


class Blind2UnblindObjective(nn.Module):
    """Blind2Unblind (Wang et al., CVPR 2022): global masks with a re-visible loss.

    ``images`` channel 0: the noisy image ``y``. The ``width**2`` masked copies
    ``Omega_i(y)`` (masked pixels replaced by the mean of their 8 neighbours, weights
    1 and 1/2, as in the authors' code) go through the network; the global-aware mask
    mapper ``h`` keeps each copy's output at its own masked pixels and assembles them
    into one blind-spot image. With ``f(y)`` the visible (unmasked) output taken without
    gradient,

    ``L = eta mean((h - y)^2) + mean((h + beta_t f(y) - (beta_t + 1) y)^2)``

    ``eta = 1``; ``beta_t`` stays at ``beta_min`` until ``ramp_start`` of training, then
    rises linearly to ``beta_max`` at the end (the paper: 2 -> 20 from 80%). The
    denoised image at inference is the visible output ``f(y)``. ``width`` is 4 in the
    paper (16 masked copies); the ``fast`` preset uses 2 (4 copies) for CPU time.
    """

    def __init__(self, network: nn.Module, *, width: int = 4, eta: float = 1.0, beta_min: float = 2.0,
                 beta_max: float = 20.0, ramp_start: float = 0.8, iters: int = 1000) -> None:
        super().__init__()
        if width < 2:
            raise ValueError("width must be >= 2")
        self.network, self.width, self.eta = network, int(width), float(eta)
        self.beta_min, self.beta_max, self.ramp_start, self.iters = float(beta_min), float(beta_max), \
            float(ramp_start), int(iters)
        self.register_buffer("kernel", _INTERP[None, None].clone(), persistent=False)

    def beta_at(self, step: int) -> float:
        t = _ramp(step, self.iters)
        if t <= self.ramp_start:
            return self.beta_min
        return self.beta_min + (t - self.ramp_start) / (1 - self.ramp_start) * (self.beta_max - self.beta_min)

    def forward(self, batch: dict) -> tuple[torch.Tensor, dict]:
        y = batch["images"][:, :1]
        b, c, h, w = y.shape
        masks = blind_spot_masks(y.shape, self.width, y.device)  # [M, 1, 1, h, w]
        interp = F.conv2d(F.pad(y, (1, 1, 1, 1), mode="reflect"), self.kernel.to(y))
        masked = (y[None] * (1 - masks) + interp[None] * masks).reshape(-1, c, h, w)
        out = self.network(masked).reshape(-1, b, c, h, w)
        blind = (out * masks).sum(0)
        with torch.no_grad():
            visible = self.network(y)
        beta = self.beta_at(int(batch.get("step", 0)))
        reg = _mse(blind - y)
        rev = _mse(blind + beta * visible - (beta + 1) * y)
        return self.eta * reg + rev, {"reg": float(reg.detach()), "rev": float(rev.detach()), "beta": beta}


class Noisier2NoiseObjective(nn.Module):
    """Noisier2Noise (Moran et al., CVPR 2020): predict the noisy image from a noisier one.

    ``images`` channel 0: the noisy image ``y``; channels 1..R: draws ``m`` of its own
    reconstruction noise (FBPs of synthetic sinogram noise with the data's variance,
    :func:`turndiff.baselines.data.noise_images`). Per sample one draw and a random
    sign are picked; ``z = y + alpha m`` and ``L = mean((f(z) - y)^2)``. At inference
    ``x = ((1 + alpha^2) f(z) - z) / alpha^2`` (:meth:`correct`).
    """

    def __init__(self, network: nn.Module, *, alpha: float = 1.0) -> None:
        super().__init__()
        if alpha <= 0:
            raise ValueError("alpha must be > 0")
        self.network, self.alpha = network, float(alpha)

    def forward(self, batch: dict) -> tuple[torch.Tensor, dict]:
        imgs = batch["images"]
        y, noise = imgs[:, :1], imgs[:, 1:]
        if noise.shape[1] < 1:
            raise ValueError("Noisier2Noise batches need noise channels after the image")
        g = batch.get("generator")
        b = y.shape[0]
        pick = torch.randint(0, noise.shape[1], (b,), generator=g).to(y.device)
        sign = (torch.randint(0, 2, (b,), generator=g) * 2 - 1).to(y)
        m = noise[torch.arange(b, device=y.device), pick][:, None] * sign.view(b, 1, 1, 1)
        z = y + self.alpha * m
        loss = _mse(self.network(z) - y)
        return loss, {"mse": loss.detach()}

    def correct(self, fz: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """``E[x | z] = ((1 + alpha^2) E[y | z] - z) / alpha^2``."""
        a2 = self.alpha**2
        return ((1 + a2) * fz - z) / a2


class _NetworkObjective(nn.Module):
    """An objective whose only parameter is the network it trains."""

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network


class Noise2SimObjective(_NetworkObjective):
    """Noise2Sim (Niu et al. 2023): targets made of non-locally similar pixels.

    ``images`` channel 0: the noisy image ``y``; channels 1..k: its similar images
    (:func:`turndiff.baselines.data.similar_images`). For every pixel one of its ``k``
    similar pixels is drawn as the target; ``L = mean((f(y) - s)^2)``.
    """

    def forward(self, batch: dict) -> tuple[torch.Tensor, dict]:
        imgs = batch["images"]
        y, sim = imgs[:, :1], imgs[:, 1:]
        if sim.shape[1] < 1:
            raise ValueError("Noise2Sim batches need similar-image channels after the image")
        pick = torch.randint(0, sim.shape[1], (y.shape[0], 1, *y.shape[-2:]), generator=batch.get("generator"))
        target = sim.gather(1, pick.to(y.device))
        loss = _mse(self.network(y) - target)
        return loss, {"mse": loss.detach()}


class Noise2InverseObjective(_NetworkObjective):
    """Noise2Inverse (Hendriksen et al. 2020), the ``X:1`` strategy.

    ``images`` channels 0..K-1: FBPs of the K interleaved view subsets. Per sample one
    subset ``j`` is held out: the input is the mean of the others, the target is
    ``x_j``, ``L = mean((f(mean_{i != j} x_i) - x_j)^2)``. At inference the K
    predictions are averaged (:meth:`predict`).
    """

    @staticmethod
    def split_inputs(subsets: torch.Tensor) -> torch.Tensor:
        """``[B, K, h, w]`` sub-FBPs -> ``[B, K, h, w]`` leave-one-out means."""
        k = subsets.shape[1]
        return (subsets.sum(1, keepdim=True) - subsets) / (k - 1)

    def forward(self, batch: dict) -> tuple[torch.Tensor, dict]:
        subsets = batch["images"]
        b, k = subsets.shape[:2]
        if k < 2:
            raise ValueError("Noise2Inverse needs at least 2 view subsets")
        j = torch.randint(0, k, (b,), generator=batch.get("generator")).to(subsets.device)
        rows = torch.arange(b, device=subsets.device)
        inputs = self.split_inputs(subsets)[rows, j][:, None]
        target = subsets[rows, j][:, None]
        loss = _mse(self.network(inputs) - target)
        return loss, {"mse": loss.detach()}

    @torch.no_grad()
    def predict(self, subsets: torch.Tensor) -> torch.Tensor:
        """Mean over the K leave-one-out predictions, ``[B, 1, h, w]``."""
        inputs = self.split_inputs(subsets)
        b, k, h, w = inputs.shape
        return self.network(inputs.reshape(b * k, 1, h, w)).reshape(b, k, h, w).mean(1, keepdim=True)


class SupervisedObjective(_NetworkObjective):
    """Supervised regression on pairs: ``images`` channel 0 noisy, channel 1 clean;
    ``L = mean((f(y) - x)^2)`` (RED-CNN's loss)."""

    def forward(self, batch: dict) -> tuple[torch.Tensor, dict]:
        imgs = batch["images"]
        loss = _mse(self.network(imgs[:, :1]) - imgs[:, 1:2])
        return loss, {"mse": loss.detach()}
