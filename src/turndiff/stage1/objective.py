"""The CSSS training objective (Neighbor2Neighbor loss and regulariser, weighted by the
self-enhancing similarity maps).

With ``f`` the network, ``y`` the noisy sinogram, ``s1, s2`` the sub-sampler of one step
and ``f(y)`` computed without gradient:

``L = mean(((f(s1 y) - s2 y) (1 - e1))^2)
    + alpha * mean(((f(s1 y) - s2 y) (1 - e1) - (s1 f(y) - s2 f(y)) (1 - e2))^2)``

``normalise=True`` divides each bin's residual by its predicted noise standard deviation
(a weighted least squares: noise in ``s2(y)`` grows with attenuation). It is off by
default: the most attenuated rays are also the noisiest, FBP turns their noise into
streaks, and down-weighting them cost 0.4 dB in the image (docs/METHOD.md). ``alpha`` ramps up linearly over ``alpha_warmup`` steps: the
regulariser compares against ``f(y)``, which is meaningless before ``f`` has learnt
anything. ``use_similarity=False`` gives plain Neighbor2Neighbor (``e1 = e2 = 0``).

``regulariser="paper"`` is the formula above. ``regulariser="consistent"`` weights the
regulariser's whole difference by one map,

``alpha * mean(((f(s1 y) - s2 y) - (s1 f(y) - s2 f(y)))^2 (1 - e2)^2)``,

because with two different weights the paper's form has its minimum at
``f(s1 y) = s2 y + (s1 f(y) - s2 f(y)) (1 - e2) / (1 - e1)``: where ``e1 > e2`` (an edge
seen in the noisy pair more strongly than in the denoised one) it asks the network to
*amplify* the structural gap, by up to 20x at ``e_max = 0.95``, and the next ``f(y)``
feeds that back. The consistent form keeps Neighbor2Neighbor's fixed point for any
weights. Measured, the paper's form was slightly better at the ``fast`` length (docs/METHOD.md).

Options beyond the paper (docs/METHOD.md, "Stage 1: what was measured"):

- ``cell=(2, 1)`` pairs two views of one detector bin instead of the 2x2 cell, whose bin
  and diagonal pairs break Neighbor2Neighbor's small-gap assumption in sinograms.
- ``targets=2`` uses the third sub-sinogram ``s3`` of fig. 3 as a second target,
  ``(s2 + s3) / 2`` (half the target noise, 2x2 cells only).
- ``loss_weighting="ramp"`` measures every residual through a detector-direction ramp
  (:func:`ramp_weighted_mean_square`): the error that FBP will amplify is the error
  the loss weighs.

:class:`RecorruptedObjective` replaces the sub-sampled pairs by recorrupted pairs built
from the known post-log noise model (Pang et al., CVPR 2021): no structural gap at all.
"""

from __future__ import annotations

import torch
from torch import nn

from ..dose import postlog_variance
from .similarity import SimilarityConfig, similarity_map
from .subsample import draw_cell_positions, subsample

__all__ = ["CSSSObjective", "RecorruptedObjective", "SureObjective", "ramp_weighted_mean_square"]


def ramp_weighted_mean_square(e: torch.Tensor, floor: float = 0.1) -> torch.Tensor:
    """Mean square of ``e`` ``[..., D]`` weighted along the last (detector) axis by
    ``floor + (1 - floor) |omega| / omega_max``.

    FBP's image error is, by the Fourier-slice theorem, the sinogram error weighted by
    ``|omega|`` (parallel beam): low detector frequencies barely matter and the highest
    matter most. ``floor`` keeps a little weight at ``omega = 0`` (the DC level sets the
    CT number). Normalised so that white noise of variance ``s^2`` gives ``s^2`` for any
    ``floor`` (``floor = 1`` is the plain mean square). The signal is zero-padded to
    ``2 D`` so the filter does not wrap around.
    """
    d = e.shape[-1]
    n = 2 * d
    spec = torch.fft.rfft(e.float(), n=n, dim=-1)
    freq = torch.fft.rfftfreq(n, device=e.device)
    w = floor + (1.0 - floor) * 2.0 * freq
    mult = torch.full_like(freq, 2.0)  # rfft keeps one of each +-omega pair
    mult[0] = 1.0
    mult[-1] = 1.0
    wm = w * mult
    return (spec.real.pow(2) + spec.imag.pow(2)).mul(wm).sum(-1).mean() / (d * wm.sum())


def _check_weighting(loss_weighting: str) -> str:
    if loss_weighting not in ("none", "ramp"):
        raise ValueError(f"loss_weighting must be 'none' or 'ramp', got {loss_weighting!r}")
    return loss_weighting


def _mean_square(e: torch.Tensor, weighting: str, floor: float) -> torch.Tensor:
    return ramp_weighted_mean_square(e, floor) if weighting == "ramp" else e.pow(2).mean()


class CSSSObjective(nn.Module):
    """``forward(batch) -> (loss, logs)`` for the shared training loop.

    ``batch`` is a dict with ``sinogram`` ``[B, 1, V, D]`` (even V, D), ``photons`` ``[B]``
    (I0 of each sample), ``step`` (int) and ``generator`` (torch.Generator for the
    sub-sampling positions).
    """

    def __init__(
        self,
        network: nn.Module,
        *,
        alpha: float = 1.0,
        alpha_warmup: int = 200,
        use_similarity: bool = True,
        normalise: bool = False,
        similarity: SimilarityConfig | None = None,
        regulariser: str = "paper",
        cell: tuple[int, int] = (2, 2),
        targets: int = 1,
        loss_weighting: str = "none",
        ramp_floor: float = 0.1,
    ) -> None:
        super().__init__()
        if tuple(cell) not in ((2, 2), (2, 1)):
            raise ValueError(f"cell must be (2, 2) or (2, 1), got {cell!r}")
        if targets not in (1, 2) or (targets == 2 and tuple(cell) != (2, 2)):
            raise ValueError("targets must be 1, or 2 with 2x2 cells (s3 needs a third position)")
        self.cell, self.targets = tuple(cell), int(targets)
        self.loss_weighting, self.ramp_floor = _check_weighting(loss_weighting), float(ramp_floor)
        if regulariser not in ("paper", "consistent"):
            raise ValueError(f"regulariser must be 'paper' or 'consistent', got {regulariser!r}")
        self.regulariser = regulariser
        if alpha < 0:
            raise ValueError("alpha must be >= 0")
        self.network = network
        self.alpha = float(alpha)
        self.alpha_warmup = int(alpha_warmup)
        self.use_similarity = bool(use_similarity)
        self.normalise = bool(normalise)
        self.similarity = similarity or SimilarityConfig()

    def alpha_at(self, step: int) -> float:
        if self.alpha_warmup <= 0:
            return self.alpha
        return self.alpha * min(1.0, step / self.alpha_warmup)

    def forward(self, batch: dict) -> tuple[torch.Tensor, dict]:
        y = batch["sinogram"]
        photons = batch["photons"].to(y)
        pos = draw_cell_positions(tuple(y.shape), 1 + self.targets, generator=batch.get("generator"),
                                  device=y.device, cell=self.cell)
        s1y, s2y = self._pair(y, pos)
        alpha = self.alpha_at(int(batch.get("step", 0)))
        with torch.no_grad():
            fy = self.network(y) if alpha > 0 or self.use_similarity else None
            var = postlog_variance(y, photons)
            v1, v2 = self._pair(var, pos, variance=True)
            w_noise = torch.rsqrt(v2) if self.normalise else torch.ones_like(v2)
            if fy is not None:
                s1f, s2f = self._pair(fy, pos)
            if self.use_similarity:
                e1 = similarity_map(s1y, s2y, v1, v2, self.similarity)
                e2 = similarity_map(s1f, s2f, v1, v2, self.similarity)
            else:
                e1 = e2 = torch.zeros_like(s1y)
        out = self.network(s1y)
        diff = (out - s2y) * (1 - e1) * w_noise
        loss_rec = _mean_square(diff, self.loss_weighting, self.ramp_floor)
        loss = loss_rec
        logs = {"rec": loss_rec.detach(), "e1": e1.mean()}
        if alpha > 0:
            if self.regulariser == "paper":
                reg = diff - (s1f - s2f) * (1 - e2) * w_noise
            else:
                reg = (out - s2y - (s1f - s2f)) * (1 - e2) * w_noise
            loss_reg = _mean_square(reg, self.loss_weighting, self.ramp_floor)
            loss = loss + alpha * loss_reg
            logs["reg"] = loss_reg.detach()
        return loss, logs

    def _pair(self, x: torch.Tensor, pos: torch.Tensor, variance: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """``(s1, target)``: the target is ``s2``, or ``(s2 + s3) / 2`` with two targets."""
        subs = subsample(x, pos, self.cell)
        if self.targets == 1:
            return subs[0], subs[1]
        return subs[0], (subs[1] + subs[2]) / (4.0 if variance else 2.0)


class _NoiseModelObjective(nn.Module):
    """A loss built on the known post-log noise model: draws ``z ~ N(0, sigma^2)`` with
    :func:`turndiff.dose.postlog_variance` of each bin, and weighs residuals as
    ``loss_weighting`` says."""

    def __init__(self, network: nn.Module, loss_weighting: str, ramp_floor: float) -> None:
        super().__init__()
        self.network = network
        self.loss_weighting, self.ramp_floor = _check_weighting(loss_weighting), float(ramp_floor)

    @staticmethod
    def _noise_draw(batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """``(y, z)``: the batch's sinograms and one draw of their noise (no gradient)."""
        y = batch["sinogram"]
        with torch.no_grad():
            sigma = postlog_variance(y, batch["photons"].to(y)).sqrt()
            z = torch.randn(y.shape, generator=batch.get("generator"), dtype=y.dtype).to(y.device) * sigma
        return y, z


class RecorruptedObjective(_NoiseModelObjective):
    """Recorrupted-to-recorrupted training on the known post-log noise model.

    With ``sigma^2`` the predicted variance of every bin (:func:`turndiff.dose.postlog_variance`) and
    ``z ~ N(0, sigma^2)`` drawn afresh each step, the input is ``y + a z`` and the target
    ``y - z / a``. For Gaussian noise the two noises are independent, so
    ``E ||f(y + a z) - (y - z / a)||^2 = E ||f(y + a z) - p||^2 + const`` (Pang et al.,
    CVPR 2021): an unbiased clean-data-free MSE with no structural gap between input and
    target, unlike any sub-sampled pair. The price: the network sees noise of variance
    ``(1 + a^2) sigma^2`` in training (a slightly lower dose than the data), and the
    target is noisier, ``(1 + 1 / a^2) sigma^2``. ``loss_weighting="ramp"`` is as in
    :class:`CSSSObjective`; the cross term still vanishes because the filter is linear.
    """

    def __init__(self, network: nn.Module, *, recorrupt: float = 0.5, loss_weighting: str = "none",
                 ramp_floor: float = 0.1) -> None:
        if not recorrupt > 0:
            raise ValueError(f"recorrupt must be > 0, got {recorrupt!r}")
        super().__init__(network, loss_weighting, ramp_floor)
        self.recorrupt = float(recorrupt)

    def forward(self, batch: dict) -> tuple[torch.Tensor, dict]:
        y, z = self._noise_draw(batch)
        a = self.recorrupt
        out = self.network(y + a * z)
        loss = _mean_square(out - (y - z / a), self.loss_weighting, self.ramp_floor)
        return loss, {"rec": loss.detach()}


class SureObjective(_NoiseModelObjective):
    """Stein's unbiased risk estimate of the (ramp-weighted) sinogram MSE as the loss.

    With ``Q`` the loss's quadratic form (plain or ramp-weighted mean square), noise
    ``n ~ N(0, Sigma)`` of the predicted post-log variance and ``J`` the Jacobian of ``f``,

    ``E Q(f(y) - p) = E Q(f(y) - y) + 2 tr(M J Sigma) - tr(M Sigma)``

    (``Q(e) = e^T M e``). The trace is estimated with one probe ``u ~ N(0, Sigma)`` per
    step, ``u^T M (f(y + eps u) - f(y)) / eps``, written by polarisation through ``Q`` so
    that any weighting works, and ``tr(M Sigma)`` by ``Q(u)`` (constant in ``f``; kept so
    the loss reads as an MSE). Unlike sub-sampled or recorrupted pairs, the network sees
    the data's own noise level and the target carries no extra noise, so the gradient is
    far less noisy; the price is a second forward pass (Soltanayev and Chun, NeurIPS 2018;
    Metzler et al., 2018).
    """

    def __init__(self, network: nn.Module, *, eps: float = 0.01, loss_weighting: str = "none",
                 ramp_floor: float = 0.1) -> None:
        if not eps > 0:
            raise ValueError(f"eps must be > 0, got {eps!r}")
        super().__init__(network, loss_weighting, ramp_floor)
        self.eps = float(eps)

    def forward(self, batch: dict) -> tuple[torch.Tensor, dict]:
        y, u = self._noise_draw(batch)
        out = self.network(torch.cat([y, y + self.eps * u]))
        f, f_probe = out.chunk(2)
        d = (f_probe - f) / self.eps
        fit = _mean_square(f - y, self.loss_weighting, self.ramp_floor)
        # u^T M d = (Q(u + d) - Q(u - d)) / 4 for the quadratic form Q(e) = e^T M e.
        div = 0.25 * (_mean_square(u + d, self.loss_weighting, self.ramp_floor)
                      - _mean_square(u - d, self.loss_weighting, self.ramp_floor))
        noise = _mean_square(u, self.loss_weighting, self.ramp_floor).detach()
        loss = fit + 2.0 * div - noise
        return loss, {"fit": fit.detach(), "div": div.detach()}
