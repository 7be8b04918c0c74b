"""Image-domain data for the baselines, all derived from noisy sinograms alone.

* :func:`view_split_fbp`: FBPs of K interleaved view subsets (Noise2Inverse; the TV
  weight's cross-validation uses the same split).
* :func:`noise_images`: FBPs of synthetic post-log noise drawn from the dose model of
  the data itself (Noisier2Noise's extra noise; the noise level BM3D is given).
* :func:`similar_images`: non-local block matching inside each image (Noise2Sim).
* :func:`crop_batch_fn`: random crops with dihedral augmentation, for the training loop.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from ..masks import body_mask
from ..physics import CTProjector, Geometry

__all__ = [
    "subset_geometry",
    "view_split_fbp",
    "noise_sinograms",
    "noise_images",
    "fbp_noise_std",
    "similar_images",
    "crop_batch_fn",
]

#: Images are compared and losses computed in units of this many HU (keeps losses ~1).
HU_SCALE = 500.0


def subset_geometry(geometry: Geometry, k: int, j: int) -> Geometry:
    """The geometry of views ``j, j + k, j + 2k, ...`` (``views`` must divide by ``k``)."""
    if geometry.views % k:
        raise ValueError(f"{geometry.views} views do not split into {k} equal subsets")
    return geometry.with_(views=geometry.views // k, angle_offset=geometry.angle_offset + 2 * math.pi * j / geometry.views)


def view_split_fbp(sinograms: np.ndarray, geometry: Geometry, k: int) -> np.ndarray:
    """FBPs (HU) of the ``k`` interleaved view subsets: ``[N, k, H, W]``.

    Each sub-FBP is an unbiased reconstruction from ``V / k`` views, with about ``k``
    times the noise variance of the full FBP and noise independent of the other
    subsets' (photon noise is independent between views).
    """
    y = np.asarray(sinograms, np.float32)
    out = np.empty((y.shape[0], k, *geometry.image_shape), np.float32)
    for j in range(k):
        out[:, j] = CTProjector(subset_geometry(geometry, k, j)).fbp_hu(np.ascontiguousarray(y[:, j::k]))
    return out


def noise_sinograms(sinograms: np.ndarray, photons: float, *, rng: np.random.Generator, scale: float = 1.0,
                    repeats: int = 1) -> np.ndarray:
    """Gaussian post-log noise with the data's own variance, ``[N * repeats, V, D]``.

    The variance of bin ``i`` is the post-log Poisson + electronic model evaluated at the
    noisy value itself, ``(I + sigma_e^2) / I^2`` with ``I = I0 exp(-y_i)`` (the same
    model stage 1 uses), times ``scale ** 2``.
    """
    from ..dose import postlog_variance

    y = np.asarray(sinograms, np.float32)
    std = np.sqrt(postlog_variance(torch.from_numpy(y), float(photons)).numpy()).astype(np.float32) * np.float32(scale)
    std = np.repeat(std, repeats, axis=0)
    return (rng.standard_normal(std.shape, dtype=np.float32) * std).astype(np.float32)


def noise_images(sinograms: np.ndarray, geometry: Geometry, photons: float, *, rng: np.random.Generator,
                 scale: float = 1.0, repeats: int = 1, projector: CTProjector | None = None) -> np.ndarray:
    """FBPs (HU, zero mean) of :func:`noise_sinograms`: ``[N, repeats, H, W]``.

    FBP is linear, so ``FBP(y + n) = FBP(y) + FBP(n)``: these images are draws of the
    reconstruction noise (correlated, non-stationary) of the given data.
    """
    A = projector or CTProjector(geometry)
    n = noise_sinograms(sinograms, photons, rng=rng, scale=scale, repeats=repeats)
    img = A.fbp(n) / np.float32(geometry.mu_water) * np.float32(1000.0)
    return img.reshape(-1, repeats, *geometry.image_shape).astype(np.float32)


def fbp_noise_std(sinograms: np.ndarray, geometry: Geometry, photons: float, *, seed: int = 0,
                  hu: np.ndarray | None = None) -> np.ndarray:
    """Noise standard deviation (HU) of the FBP inside the body, per slice ``[N]``.

    One synthetic noise draw per slice (:func:`noise_images`), measured over
    :func:`body_mask` of the FBP ``hu`` (computed when not given). Uses the dose model
    and the noisy data only.
    """
    y = np.asarray(sinograms, np.float32)
    x = CTProjector(geometry).fbp_hu(y) if hu is None else np.asarray(hu, np.float32)
    noise = noise_images(y, geometry, photons, rng=np.random.default_rng(seed))[:, 0]
    mask = body_mask(x, smooth=5, largest_component=False)
    out = np.empty(y.shape[0], np.float64)
    for i in range(y.shape[0]):
        m = mask[i] if mask[i].sum() >= 16 else np.ones_like(mask[i])
        out[i] = float(noise[i][m].std())
    return out


@torch.no_grad()
def similar_images(hu: np.ndarray, *, k: int = 8, patch: int = 7, search: int = 21, exclude: int = 2,
                   device: str | torch.device = "cpu") -> np.ndarray:
    """Noise2Sim's similar images: per pixel, the centres of its ``k`` most similar patches.

    For every pixel, patches centred at offsets inside a ``search x search`` window are
    compared with its own patch (mean squared difference over ``patch x patch``); the
    ``k`` best offsets give ``k`` images whose pixel is the centre of that patch. Offsets
    with ``max(|dy|, |dx|) <= exclude`` are skipped: FBP noise is correlated between
    neighbouring pixels, and the similar pixel must carry independent noise.

    Parameters
    ----------
    hu : ndarray
        Images ``[N, H, W]`` (HU).

    Returns
    -------
    ndarray
        ``[N, k, H, W]`` float32, best match first.
    """
    if search % 2 == 0 or patch % 2 == 0:
        raise ValueError("search and patch must be odd")
    r = search // 2
    offsets = [(dy, dx) for dy in range(-r, r + 1) for dx in range(-r, r + 1) if max(abs(dy), abs(dx)) > exclude]
    if k > len(offsets):
        raise ValueError(f"k={k} is more than the {len(offsets)} candidate offsets")
    x = torch.as_tensor(np.asarray(hu, np.float32), device=device)[:, None] / HU_SCALE
    n, _, h, w = x.shape
    padded = F.pad(x, (r, r, r, r), mode="reflect")
    best_d = torch.full((n, k, h, w), float("inf"), device=x.device)
    best_v = torch.zeros((n, k, h, w), device=x.device)
    chunk = 32
    for c0 in range(0, len(offsets), chunk):
        offs = offsets[c0 : c0 + chunk]
        shifted = torch.cat([padded[..., r + dy : r + dy + h, r + dx : r + dx + w] for dy, dx in offs], 1)
        dist = F.avg_pool2d(F.pad((shifted - x) ** 2, (patch // 2,) * 4, mode="replicate"), patch, stride=1)
        d = torch.cat([best_d, dist], 1)
        v = torch.cat([best_v, shifted], 1)
        idx = d.topk(k, dim=1, largest=False).indices
        best_d, best_v = d.gather(1, idx), v.gather(1, idx)
    return (best_v * HU_SCALE).cpu().numpy().astype(np.float32)


def _dihedral(x: torch.Tensor, code: int) -> torch.Tensor:
    """One of the 8 flips / 90-degree rotations of the last two axes."""
    if code & 4:
        x = x.transpose(-1, -2)
    if code & 1:
        x = x.flip(-1)
    if code & 2:
        x = x.flip(-2)
    return x


def crop_batch_fn(bank: torch.Tensor, *, batch_size: int, crop: int, augment: bool = True,
                  multiple: int = 1) -> Callable[[int, torch.Generator], dict]:
    """``batch_fn(step, generator)`` drawing random crops of ``bank`` ``[N, C, H, W]``.

    Every channel of a sample gets the same crop and the same flip / rotation (channels
    are paired views of one slice: noisy image, targets, noise draws). Returns a dict
    with ``images`` ``[B, C, crop, crop]``, ``step`` and ``generator`` (a fresh CPU
    generator, seeded from the loop's, for the objective's own random choices).
    ``crop`` is rounded down to a multiple of ``multiple`` and to the image size.
    """
    n, c, h, w = bank.shape
    size = min(int(crop), h, w)
    size -= size % multiple
    if size < multiple or size < 1:
        raise ValueError(f"images of {h}x{w} are too small for crops in multiples of {multiple}")

    def batch_fn(step: int, generator: torch.Generator) -> dict:
        idx = torch.randint(0, n, (batch_size,), generator=generator)
        y0 = torch.randint(0, h - size + 1, (batch_size,), generator=generator)
        x0 = torch.randint(0, w - size + 1, (batch_size,), generator=generator)
        codes = torch.randint(0, 8 if augment else 1, (batch_size,), generator=generator)
        crops = [_dihedral(bank[idx[b], :, y0[b] : y0[b] + size, x0[b] : x0[b] + size], int(codes[b]))
                 for b in range(batch_size)]
        sub = torch.Generator().manual_seed(int(torch.randint(0, 2**62, (1,), generator=generator)))
        return {"images": torch.stack(crops).contiguous(), "step": step, "generator": sub}

    return batch_fn
