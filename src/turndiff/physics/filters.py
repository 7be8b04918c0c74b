"""Ramp filters for filtered back-projection (one implementation for every backend).

The ramp is built from its band-limited spatial kernel (Kak & Slaney, eq. 61:
``h(0) = 1/(4 tau^2)``, ``h(n odd) = -1/(n pi tau)^2``, ``h(n even) = 0``) rather than by
sampling ``|omega|`` directly: this gets the DC term right and avoids the cupping a
sampled ramp gives. For an equiangular (arc) fan detector the kernel is the modified
``g(n) = 1/2 (n alpha / sin(n alpha))^2 h(n)``. Apodisation windows multiply the kernel's
spectrum.

References
----------
A. C. Kak and M. Slaney, *Principles of Computerized Tomographic Imaging*, IEEE Press,
1988, chapter 3.
"""

from __future__ import annotations

import math
from typing import Literal

import torch

__all__ = ["FILTERS", "ramp_spectrum", "filter_sinogram"]

FilterName = Literal["ram-lak", "shepp-logan", "hann"]
FILTERS: tuple[str, ...] = ("ram-lak", "shepp-logan", "hann")


def _padded_length(n: int) -> int:
    return 1 << int(math.ceil(math.log2(max(64, 2 * n))))


def ramp_spectrum(
    det_count: int,
    spacing: float,
    *,
    filter: str = "ram-lak",
    arc: bool = False,
    dtype: torch.dtype = torch.float64,
) -> torch.Tensor:
    """Real spectrum (length ``P // 2 + 1`` for rfft) of the discrete ramp convolution.

    ``spacing`` is the bin spacing (mm, or radians for ``arc=True``). The spectrum already
    includes the ``spacing`` factor of the discrete convolution, so
    ``irfft(rfft(p) * H)`` approximates the continuous ``p * h``.
    """
    if filter not in FILTERS:
        raise ValueError(f"unknown filter {filter!r}; choose from {', '.join(FILTERS)}")
    P = _padded_length(det_count)
    n = torch.arange(P, dtype=torch.float64)
    n = torch.where(n <= P // 2, n, n - P)  # circular indices -P/2 .. P/2
    h = torch.zeros(P, dtype=torch.float64)
    odd = (n.abs() % 2) == 1
    if arc:
        h[n == 0] = 1.0 / (8.0 * spacing**2)
        h[odd] = -0.5 / (math.pi**2 * torch.sin(n[odd] * spacing) ** 2)
    else:
        h[n == 0] = 1.0 / (4.0 * spacing**2)
        h[odd] = -1.0 / (n[odd] * math.pi * spacing) ** 2
    H = torch.fft.rfft(h).real * spacing
    w = torch.linspace(0, math.pi, H.numel(), dtype=torch.float64)  # omega in [0, pi]
    if filter == "shepp-logan":
        H = H * torch.where(w > 0, torch.sin(w / 2) / (w / 2).clamp_min(1e-12), torch.ones_like(w))
    elif filter == "hann":
        H = H * (0.5 + 0.5 * torch.cos(w))
    return H.to(dtype)


def filter_sinogram(
    sino: torch.Tensor, spacing: float, *, filter: str = "ram-lak", arc: bool = False
) -> torch.Tensor:
    """Filter every view of ``sino`` [..., V, D] along D with the ramp (zero padded)."""
    D = sino.shape[-1]
    H = ramp_spectrum(D, spacing, filter=filter, arc=arc, dtype=torch.float64).to(sino.device)
    P = (H.numel() - 1) * 2
    spec = torch.fft.rfft(sino.to(torch.float64), n=P, dim=-1)
    out = torch.fft.irfft(spec * H, n=P, dim=-1)[..., :D]
    return out.to(sino.dtype)
