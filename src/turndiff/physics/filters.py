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

import numpy as np

__all__ = ["FILTERS", "ramp_spectrum", "filter_sinogram"]

FilterName = Literal["ram-lak", "shepp-logan", "hann"]
FILTERS: tuple[str, ...] = ("ram-lak", "shepp-logan", "hann")


def _padded_length(n: int) -> int:
    return 1 << int(math.ceil(math.log2(max(64, 2 * n))))


def ramp_spectrum(det_count: int, spacing: float, *, filter: str = "ram-lak", arc: bool = False) -> np.ndarray:
    """Real float64 spectrum (length ``P // 2 + 1`` for rfft) of the discrete ramp
    convolution.

    ``spacing`` is the bin spacing (mm, or radians for ``arc=True``). The spectrum already
    includes the ``spacing`` factor of the discrete convolution, so
    ``irfft(rfft(p) * H)`` approximates the continuous ``p * h``.
    """
    if filter not in FILTERS:
        raise ValueError(f"unknown filter {filter!r}; choose from {', '.join(FILTERS)}")
    P = _padded_length(det_count)
    n = np.arange(P, dtype=np.float64)
    n = np.where(n <= P // 2, n, n - P)  # circular indices -P/2 .. P/2
    h = np.zeros(P, dtype=np.float64)
    odd = (np.abs(n) % 2) == 1
    if arc:
        h[n == 0] = 1.0 / (8.0 * spacing**2)
        h[odd] = -0.5 / (math.pi**2 * np.sin(n[odd] * spacing) ** 2)
    else:
        h[n == 0] = 1.0 / (4.0 * spacing**2)
        h[odd] = -1.0 / (n[odd] * math.pi * spacing) ** 2
    H = np.fft.rfft(h).real * spacing
    w = np.linspace(0, math.pi, H.size)  # omega in [0, pi]
    if filter == "shepp-logan":
        H = H * np.where(w > 0, np.sin(w / 2) / np.maximum(w / 2, 1e-12), 1.0)
    elif filter == "hann":
        H = H * (0.5 + 0.5 * np.cos(w))
    return H


def filter_sinogram(sino, spacing: float, *, filter: str = "ram-lak", arc: bool = False):
    """Filter every view of ``sino`` ``[..., V, D]`` along D with the ramp (zero padded),
    in float64, returned in the input's type and dtype: a NumPy array (NumPy's FFT, as fast
    here as SciPy's and without its 0.3 s import; torch is not imported either, so
    ``turndiff fbp`` starts fast) or a torch tensor on any device."""
    D = sino.shape[-1]
    H = ramp_spectrum(D, spacing, filter=filter, arc=arc)
    P = (H.size - 1) * 2
    if isinstance(sino, np.ndarray):
        spec = np.fft.rfft(sino.astype(np.float64), n=P, axis=-1)
        return np.fft.irfft(spec * H, n=P, axis=-1)[..., :D].astype(sino.dtype)
    import torch

    spec = torch.fft.rfft(sino.to(torch.float64), n=P, dim=-1)
    out = torch.fft.irfft(spec * torch.from_numpy(H).to(sino.device), n=P, dim=-1)[..., :D]
    return out.to(sino.dtype)
