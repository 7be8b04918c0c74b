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
weights. Measured, the paper's form was slightly better at the ``fast`` length, so it is
the default (docs/METHOD.md has the numbers).
"""

from __future__ import annotations

import torch
from torch import nn

from .similarity import SimilarityConfig, noise_variance, similarity_map
from .subsample import draw_cell_positions, subsample

__all__ = ["CSSSObjective"]


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
    ) -> None:
        super().__init__()
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
        pos = draw_cell_positions(tuple(y.shape), 2, generator=batch.get("generator"), device=y.device)
        s1y, s2y = subsample(y, pos)
        alpha = self.alpha_at(int(batch.get("step", 0)))
        with torch.no_grad():
            fy = self.network(y) if alpha > 0 or self.use_similarity else None
            var = noise_variance(y, photons)
            v1, v2 = subsample(var, pos)
            w_noise = torch.rsqrt(v2) if self.normalise else torch.ones_like(v2)
            if fy is not None:
                s1f, s2f = subsample(fy, pos)
            if self.use_similarity:
                e1 = similarity_map(s1y, s2y, v1, v2, self.similarity)
                e2 = similarity_map(s1f, s2f, v1, v2, self.similarity)
            else:
                e1 = e2 = torch.zeros_like(s1y)
        out = self.network(s1y)
        diff = (out - s2y) * (1 - e1) * w_noise
        loss_rec = diff.pow(2).mean()
        loss = loss_rec
        logs = {"rec": float(loss_rec.detach()), "e1": float(e1.mean())}
        if alpha > 0:
            if self.regulariser == "paper":
                reg = diff - (s1f - s2f) * (1 - e2) * w_noise
            else:
                reg = (out - s2y - (s1f - s2f)) * (1 - e2) * w_noise
            loss_reg = reg.pow(2).mean()
            loss = loss + alpha * loss_reg
            logs["reg"] = float(loss_reg.detach())
        return loss, logs
