"""The diffusion noise schedule and the partial-DDIM step, apart from the networks.

As diffusers keeps its schedulers apart from its models: :class:`PartialDDIMScheduler`
owns the cumulative signal rates ``alphas_cumprod`` (MONAI's schedule, so the numbers
match the library's), the forward process, the regression target of each prediction
type, the inversion of a network output into ``(z0_hat, eps_hat)`` and the DDIM update.
:class:`~turndiff.stage2.model.LatentDiffusion` holds one and owns only its networks.

Why not MONAI's ``DDIMScheduler.step``: it derives the previous timestep as
``t - T // K``, which cannot express a chain that starts part-way (partial diffusion,
SDEdit-like) and drifts from its own ``linspace`` timesteps. :meth:`step` takes both
timesteps explicitly (Song et al. 2021, eq. 12).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from turndiff.errors import InputError
from turndiff.stage2.config import PREDICTION_TYPES

__all__ = ["PartialDDIMScheduler", "sampling_timesteps"]


def _monai_alphas_cumprod(num_train_timesteps: int, schedule: str, beta_start: float, beta_end: float
                          ) -> torch.Tensor:
    from monai.networks.schedulers import DDIMScheduler

    scheduler = DDIMScheduler(num_train_timesteps=num_train_timesteps, schedule=schedule, beta_start=beta_start,
                              beta_end=beta_end, prediction_type="sample", clip_sample=False)
    return scheduler.alphas_cumprod.detach().to(torch.float64).clone()


class PartialDDIMScheduler(torch.nn.Module):
    """Noise schedule, prediction parametrisations and the DDIM step with explicit timesteps.

    A module only so that ``model.to(device)`` carries its (non-persistent) schedule
    buffer along; it has no parameters and nothing of it is saved but :meth:`to_dict`.

    Parameters
    ----------
    num_train_timesteps : int
        Chain length ``T``.
    schedule : str
        MONAI schedule name (``"scaled_linear_beta"``, ``"linear_beta"``, ...).
    beta_start, beta_end : float
        Its beta range, ``0 < beta_start < beta_end < 1``.
    prediction_type : {"epsilon", "v_prediction", "sample", "residual"}
        What the network predicts; ``"residual"`` is the clean latent minus the
        condition's latent.

    Examples
    --------
    >>> import torch
    >>> s = PartialDDIMScheduler(100, "scaled_linear_beta", 0.0015, 0.0195, "sample")
    >>> z0, eps, t = torch.ones(1, 2, 4, 4), torch.zeros(1, 2, 4, 4), torch.tensor([10])
    >>> z_t = s.add_noise(z0, eps, t)
    >>> bool(torch.allclose(s.split_prediction(z_t, t, s.target(z0, eps, t))[0], z0))
    True
    """

    def __init__(self, num_train_timesteps: int = 1000, schedule: str = "scaled_linear_beta",
                 beta_start: float = 0.0015, beta_end: float = 0.0195, prediction_type: str = "residual") -> None:
        super().__init__()
        if prediction_type not in PREDICTION_TYPES:
            raise InputError(f"prediction_type must be one of {PREDICTION_TYPES}, got {prediction_type!r}")
        if int(num_train_timesteps) < 2 or not 0 < beta_start < beta_end < 1:
            raise InputError("the schedule needs T >= 2 and 0 < beta_start < beta_end < 1")
        self.num_train_timesteps, self.schedule = int(num_train_timesteps), str(schedule)
        self.beta_start, self.beta_end = float(beta_start), float(beta_end)
        self.prediction_type = prediction_type
        ab = _monai_alphas_cumprod(self.num_train_timesteps, self.schedule, self.beta_start, self.beta_end)
        self.register_buffer("alphas_cumprod", ab.float(), persistent=False)

    @classmethod
    def from_config(cls, config) -> "PartialDDIMScheduler":
        """The scheduler a :class:`~turndiff.stage2.Stage2Config` describes."""
        sc = config.schedule
        return cls(sc.num_train_timesteps, sc.schedule, sc.beta_start, sc.beta_end, config.unet.prediction_type)

    def to_dict(self) -> dict:
        """JSON description (written into ``stage2.json``)."""
        return {"class": "PartialDDIMScheduler", "alphas_cumprod_from": "monai.networks.schedulers.DDIMScheduler",
                "num_train_timesteps": self.num_train_timesteps, "schedule": self.schedule,
                "beta_start": self.beta_start, "beta_end": self.beta_end, "prediction_type": self.prediction_type}

    def _ab(self, timesteps: torch.Tensor, ndim: int) -> torch.Tensor:
        return self.alphas_cumprod[timesteps].reshape(-1, *([1] * (ndim - 1)))

    def add_noise(self, latent: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """Forward diffusion ``sqrt(ab) z + sqrt(1 - ab) noise``."""
        ab = self._ab(timesteps, latent.ndim).to(latent.dtype)
        return ab.sqrt() * latent + (1 - ab).sqrt() * noise

    def target(self, latent: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor,
               condition_latent: torch.Tensor | None = None) -> torch.Tensor:
        """Regression target of the network; ``"residual"`` needs ``condition_latent``
        (the target is ``latent - condition_latent``)."""
        kind = self.prediction_type
        if kind == "epsilon":
            return noise
        if kind == "sample":
            return latent
        if kind == "residual":
            if condition_latent is None:
                raise ValueError("prediction_type 'residual' needs condition_latent")
            return latent - condition_latent
        ab = self._ab(timesteps, latent.ndim).to(latent.dtype)
        return ab.sqrt() * noise - (1 - ab).sqrt() * latent

    def split_prediction(self, noisy_latent: torch.Tensor, timesteps: torch.Tensor, output: torch.Tensor,
                         condition_latent: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(z0_hat, eps_hat)`` from the network output at ``timesteps``."""
        ab = self._ab(timesteps, noisy_latent.ndim).to(noisy_latent.dtype)
        a, b = ab.sqrt(), (1 - ab).sqrt()
        kind = self.prediction_type
        if kind == "epsilon":
            return (noisy_latent - b * output) / a, output
        if kind in ("sample", "residual"):
            if kind == "residual":
                if condition_latent is None:
                    raise ValueError("prediction_type 'residual' needs condition_latent")
                output = condition_latent + output
            return output, self.noise_of(noisy_latent, timesteps, output)
        return a * noisy_latent - b * output, a * output + b * noisy_latent

    def noise_of(self, noisy_latent: torch.Tensor, timesteps: torch.Tensor, z0: torch.Tensor) -> torch.Tensor:
        """The noise ``eps`` with ``add_noise(z0, eps, timesteps) == noisy_latent``: what a
        step goes on with when its clean-latent estimate ``z0`` was replaced (guidance)."""
        ab = self._ab(timesteps, noisy_latent.ndim).to(noisy_latent.dtype)
        return (noisy_latent - ab.sqrt() * z0) / (1 - ab).sqrt().clamp_min(1e-8)

    def step(self, z0: torch.Tensor, eps: torch.Tensor, t: int, t_prev: int, eta: float = 0.0,
             generators: Sequence[torch.Generator] = ()) -> torch.Tensor:
        """One DDIM update from ``t`` to ``t_prev`` (``t_prev < 0``: the end, returns ``z0``).

        With ``eta > 0`` fresh noise is drawn per sample from ``generators`` (one each).
        """
        if t_prev < 0:
            return z0
        ab_t, ab_prev = self.alphas_cumprod[t], self.alphas_cumprod[t_prev]
        sigma = eta * torch.sqrt((1 - ab_prev) / (1 - ab_t) * (1 - ab_t / ab_prev))
        z = ab_prev.sqrt() * z0 + torch.sqrt((1 - ab_prev - sigma**2).clamp_min(0)) * eps
        if eta > 0:
            if len(generators) != z.shape[0]:
                raise ValueError("eta > 0 needs one generator per sample")
            noise = torch.stack([torch.randn(z.shape[1:], generator=g) for g in generators]).to(z.device)
            z = z + sigma * noise
        return z


def sampling_timesteps(
    config, steps: int, *, strength: float | None = None, start_step: int | None = None
) -> torch.Tensor:
    """Decreasing DDIM timesteps from the start step down to 0.

    Parameters
    ----------
    config : Stage2Config
        Gives the chain length T, the default strength and the largest trained strength.
    steps : int
        Number of denoising steps (network evaluations), >= 1.
    strength : float, optional
        Start at ``round(strength * (T - 1))``; 1 starts from pure noise.
    start_step : int, optional
        Start at this timestep instead (0 <= start_step < T). Not with ``strength``.

    Returns
    -------
    torch.Tensor
        int64 ``[steps]``, strictly decreasing, first = start step, last = 0.
    """
    T = config.schedule.num_train_timesteps
    if strength is not None and start_step is not None:
        raise InputError("give strength or start_step, not both")
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1:
        raise InputError(f"steps must be an integer >= 1, got {steps!r}")
    if start_step is None:
        strength = config.sampler.strength if strength is None else float(strength)
        if not 0 < strength <= 1:
            raise InputError(f"strength must be in (0, 1], got {strength}")
        start_step = int(round(strength * (T - 1)))
    elif not 0 <= int(start_step) < T:
        raise InputError(f"start_step must be in [0, {T - 1}], got {start_step}")
    start_step = int(start_step)
    max_start = int(math.ceil(config.unet.max_train_strength * T)) - 1
    if start_step > max_start:
        raise InputError(
            f"start step {start_step} is beyond the trained range (max_train_strength="
            f"{config.unet.max_train_strength} -> {max_start})"
        )
    if steps > start_step + 1:
        raise InputError(f"{steps} steps do not fit between timestep {start_step} and 0 (at most {start_step + 1})")
    return torch.linspace(start_step, 0, steps, dtype=torch.float64).round().long()
