"""Stage-2 training objectives for :func:`turndiff.training.train` (``forward(batch) -> loss``)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from turndiff.stage2.config import SOFT_TISSUE_HU, Stage2Config, hu_to_unit
from turndiff.stage2.model import LatentDiffusion
from turndiff.training import set_requires_grad

__all__ = ["AutoencoderObjective", "DiffusionObjective", "gradient_l1", "soft_tissue_weights"]


def soft_tissue_weights(target: torch.Tensor, config: Stage2Config) -> torch.Tensor | None:
    """Per-pixel loss weights: ``soft_tissue_weight`` where ``target`` (normalised units)
    lies in ``SOFT_TISSUE_HU``, 1 elsewhere; None when the weight is 1 (no emphasis)."""
    if config.soft_tissue_weight == 1.0:
        return None
    lo, hi = (hu_to_unit(v, config.hu_offset, config.hu_scale) for v in SOFT_TISSUE_HU)
    inside = (target >= lo) & (target <= hi)
    return 1.0 + (config.soft_tissue_weight - 1.0) * inside.to(target.dtype)


def _weighted_l1(a: torch.Tensor, b: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
    diff = (a - b).abs()
    return diff.mean() if weights is None else (diff * weights).sum() / weights.sum()


def gradient_l1(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference of the horizontal and vertical finite differences."""
    dh = (a[..., 1:, :] - a[..., :-1, :]) - (b[..., 1:, :] - b[..., :-1, :])
    dw = (a[..., :, 1:] - a[..., :, :-1]) - (b[..., :, 1:] - b[..., :, :-1])
    return 0.5 * (dh.abs().mean() + dw.abs().mean())


class AutoencoderObjective(torch.nn.Module):
    """(Soft-tissue weighted) L1 + gradient-L1 reconstruction + KL of MONAI's ``AutoencoderKL``.

    Batch: float tensor ``[B, 1, h, w]`` in normalised units. The KL term (summed over
    latent elements, averaged over the batch) only keeps the latent well scaled; its
    weight is tiny as in latent diffusion. No adversarial or perceptual term: those
    would need pretrained networks downloaded at run time.
    """

    def __init__(self, autoencoder: torch.nn.Module, config: Stage2Config) -> None:
        super().__init__()
        self.autoencoder = autoencoder
        self.config = config
        self.kl_weight = float(config.autoencoder.kl_weight)
        self.grad_weight = float(config.autoencoder.grad_weight)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        recon, z_mu, z_sigma = self.autoencoder(images)
        recon = recon.float()
        l1 = _weighted_l1(recon, images, soft_tissue_weights(images, self.config))
        kl = 0.5 * (z_mu.float().square() + z_sigma.float().square()
                    - torch.log(z_sigma.float().square() + 1e-12) - 1).sum(dim=(1, 2, 3)).mean()
        loss = l1 + self.kl_weight * kl
        logs = {"l1": l1.detach(), "kl": kl.detach()}
        if self.grad_weight > 0:
            grad = gradient_l1(recon, images)
            loss = loss + self.grad_weight * grad
            logs["grad"] = grad.detach()
        return loss, logs


class DiffusionObjective(torch.nn.Module):
    """Conditional latent diffusion loss plus knowledge distillation ``L_image``.

    Batch: dict with ``x_ld`` and ``x0`` ``[B, 1, h, w]`` (normalised units), ``t`` int64
    ``[B]``, ``noise`` ``[B, C, h/d, w/d]`` and ``cond_scale`` ``[B]``, optionally ``prior``
    (``[B, 1, h, w]``, default ``x0``). The condition is ``prior + cond_scale * (x_ld -
    prior)`` (``x_ld`` itself at scale 1): the blend the tunable strategy sends, made of the
    image the pipeline gives stage 2 even when the teacher is a better one. The loss is

        mean((unet(z_t, cond, t) - target)^2) + image_loss_weight * mean|D(z0_hat) - x0|

    where ``z_t`` noises the latent of the teacher ``x0`` and ``z0_hat`` is the clean
    latent implied by the U-Net output. The autoencoder is frozen; gradients of
    ``L_image`` flow through the decoder into the U-Net only.
    """

    def __init__(self, model: LatentDiffusion, *, image_loss_weight: float | None = None) -> None:
        super().__init__()
        self.model = model
        set_requires_grad(model.autoencoder, False)
        self.image_loss_weight = float(
            model.config.unet.image_loss_weight if image_loss_weight is None else image_loss_weight
        )
        self.r2r_weight = float(model.config.unet.r2r_weight)

    def forward(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        model = self.model
        x_ld, x0, t, noise = batch["x_ld"], batch["x0"], batch["t"], batch["noise"]
        scale = batch["cond_scale"].reshape(-1, 1, 1, 1).to(x0.dtype)
        prior = batch.get("prior", x0)
        condition = prior + scale * (x_ld - prior)
        with torch.no_grad():
            z0 = model.encode(x0).float()
            z_cond = model.encode(condition).float() if model.needs_condition_latent else None
        features = model.condition_features(condition, z_cond)
        z_t = model.scheduler.add_noise(z0, noise, t)
        output = model.denoise(z_t, t, features).float()
        l_diff = F.mse_loss(output, model.scheduler.target(z0, noise, t, z_cond))
        loss, logs = l_diff, {"diffusion": l_diff.detach()}
        use_r2r = self.r2r_weight > 0 and "target" in batch
        if self.image_loss_weight > 0 or use_r2r:
            z0_hat, _ = model.scheduler.split_prediction(z_t, t, output, z_cond)
            image = model.decode(z0_hat).float()
            weights = soft_tissue_weights(x0, model.config)
        if self.image_loss_weight > 0:
            l_image = _weighted_l1(image, x0, weights)
            loss = loss + self.image_loss_weight * l_image
            logs["image"] = l_image.detach()
        if use_r2r:
            sq = (image - batch["target"]).square()
            l_r2r = sq.mean() if weights is None else (sq * weights).sum() / weights.sum()
            loss = loss + self.r2r_weight * l_r2r
            logs["r2r"] = l_r2r.detach()
        return loss, logs
