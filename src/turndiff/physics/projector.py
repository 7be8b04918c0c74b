"""The CT operator: forward projection, its adjoint and filtered back-projection.

``CTProjector(geometry)`` owns the maths for one geometry, on two backends:

* ``"numba"`` (CPU, NumPy in and out): compiled Joseph forward projector, its exact
  transpose, and a pixel-driven weighted back-projection for FBP. This is the fast path
  on a CPU.
* ``"torch"`` (any torch device, CUDA in particular): the same Joseph ray sampling and
  pixel-driven back-projection written with ``grid_sample``; its adjoint is the exact
  autograd transpose of its forward.

Units: images are linear attenuation ``mu`` (per mm), sinograms are line integrals
(dimensionless). Use :func:`turndiff.dose.hu_to_mu` / ``mu_to_hu`` to move from HU.
Both backends accept ``[H, W]`` or ``[N, H, W]`` (and ``[V, D]`` or ``[N, V, D]``) and
return the same rank they were given.

Examples
--------
>>> import numpy as np
>>> from turndiff.physics import CTProjector, default_fan_geometry
>>> A = CTProjector(default_fan_geometry(64))
>>> img = np.zeros((64, 64), np.float32); img[28:36, 28:36] = 0.02
>>> sino = A.forward(img)
>>> sino.shape
(720, 92)
>>> rec = A.fbp(sino)
>>> bool(abs(rec[32, 32] - 0.02) < 2e-3)
True
"""

from __future__ import annotations

import os
import sys
from functools import cached_property
from typing import TYPE_CHECKING, Literal, TypeVar, Union

import numpy as np

from ..errors import InputError
from .filters import FILTERS, filter_sinogram
from .geometry import FanBeamGeometry, Geometry, ParallelBeamGeometry
from .units import mu_to_hu

__all__ = ["CTProjector", "Backend"]

#: Slices the CPU kernels take at once: a batch costs less per slice than one slice, and
#: its slices-last working copies (``[n + 2, n + 2, B]`` images, ``[V, D + 2, B]`` filtered
#: projections: about 70 MB at 512 x 512) bound the memory of a stack of any length.
BATCH = 16
#: Bound of the adjoint's per-thread accumulation images (bytes); see :meth:`CTProjector.adjoint`.
ADJOINT_SCRATCH_BYTES = 256 * 2**20

Backend = Literal["auto", "numba", "torch"]
if TYPE_CHECKING:
    import torch

# torch is imported only when a tensor arrives or the torch backend is asked for, so that
# the NumPy path (`turndiff fbp`, `simulate`) starts without its second of import time.
ArrayLike = TypeVar("ArrayLike", np.ndarray, "torch.Tensor")


def _is_tensor(x) -> bool:
    torch = sys.modules.get("torch")  # a tensor exists only if torch was imported
    return torch is not None and isinstance(x, torch.Tensor)


class CTProjector:
    """Forward projector, adjoint and FBP for one 2D geometry.

    Parameters
    ----------
    geometry
        A :class:`ParallelBeamGeometry` or :class:`FanBeamGeometry`.
    backend
        ``"auto"`` (NumPy input -> ``numba``, torch input -> ``torch``), ``"numba"`` or
        ``"torch"``.
    view_chunk
        Views processed at once by the torch backend (memory vs. speed).
    det_subsamples
        Rays per detector bin, spread evenly over the bin and averaged: models the
        bin's finite width (detector blur, anti-aliasing). 1 (one ray through the bin
        centre, like ASTRA's line projectors) is the fast default of the operator; the
        low-dose simulation uses 3 so that simulated data are not made with the exact
        operator that reconstructs them.
    """

    def __init__(
        self, geometry: Geometry, *, backend: Backend = "auto", view_chunk: int = 16, det_subsamples: int = 1
    ) -> None:
        if not isinstance(geometry, (ParallelBeamGeometry, FanBeamGeometry)):
            raise TypeError(f"expected a geometry, got {type(geometry).__name__}")
        if backend not in ("auto", "numba", "torch"):
            raise ValueError(f"unknown backend {backend!r}")
        self.geometry = geometry
        self.backend = backend
        self.view_chunk = int(view_chunk)
        if int(det_subsamples) < 1:
            raise ValueError("det_subsamples must be >= 1")
        self.det_subsamples = int(det_subsamples)
        self._joseph_cache: dict = {}  # _joseph_rays as tensors, per device
        self.use_triton = True  # False: the grid_sample form on CUDA too (benchmarks compare them)

    # ------------------------------------------------------------------ geometry
    @cached_property
    def angles(self) -> np.ndarray:
        g = self.geometry
        return (g.angle_offset + 2 * np.pi * np.arange(g.views) / g.views).astype(np.float64)

    @cached_property
    def _bins(self) -> np.ndarray:
        g = self.geometry
        return (np.arange(g.det_count) - (g.det_count - 1) / 2 + g.det_offset) * g.det_spacing

    @cached_property
    def rays(self) -> tuple[np.ndarray, np.ndarray]:
        """Ray origins and unit directions, ``[V, D * det_subsamples, 2]`` each, in pixel units."""
        g = self.geometry
        b = self.angles[:, None]
        cb, sb = np.cos(b), np.sin(b)
        k = self.det_subsamples
        sub = (np.arange(k) - (k - 1) / 2) / k * g.det_spacing
        t = (self._bins[:, None] + sub[None, :]).reshape(1, -1)
        shape = (g.views, g.det_count * k)
        if isinstance(g, ParallelBeamGeometry):
            ox, oy = -t * sb, t * cb
            dx, dy = np.broadcast_to(cb, ox.shape), np.broadcast_to(sb, ox.shape)
        else:
            R, SDD = g.src_radius, g.src_det_distance
            ox, oy = np.broadcast_to(R * cb, shape), np.broadcast_to(R * sb, shape)
            if g.det_shape == "flat":
                px = -(SDD - R) * cb - t * sb
                py = -(SDD - R) * sb + t * cb
                dx, dy = px - ox, py - oy
            else:
                ang = b + np.pi - t / SDD
                dx, dy = np.cos(ang), np.sin(ang)
            nrm = np.hypot(dx, dy)
            dx, dy = dx / nrm, dy / nrm
        ps = g.pixel_spacing
        src = np.stack([ox / ps, oy / ps], -1).astype(np.float64)
        dirs = np.stack([dx, dy], -1).astype(np.float64)
        return np.ascontiguousarray(src), np.ascontiguousarray(dirs)

    @cached_property
    def _joseph_rays(self) -> tuple[np.ndarray, ...]:
        """Joseph's method per ray, ``[V * D * det_subsamples]`` each: the minor index
        ``a + b k`` at main-axis index ``k`` (a row when the main axis is x, a column when
        it is y), the step length along the ray times the pixel spacing, whether the main
        axis is x, and the first and last ``k`` inside the image square (``k0 > k1``: the
        ray misses it). The range is the numba kernel's own clipping, in float64, so the
        torch forms include exactly its samples. The torch backend's two FP forms read these."""
        n = self.geometry.image_size
        half, lim = (n - 1) / 2, n / 2
        src, dirs = (r.reshape(-1, 2) for r in self.rays)
        ox, oy, dx, dy = src[:, 0], src[:, 1], dirs[:, 0], dirs[:, 1]
        major = np.abs(dx) >= np.abs(dy)
        with np.errstate(divide="ignore", invalid="ignore"):
            sx, sy = dy / dx, dx / dy
            # along x: row = half - (oy + (k - half - ox) dy/dx); along y: col = ox + (half - k - oy) dx/dy + half
            a = np.where(major, half - oy + (half + ox) * sx, ox + (half - oy) * sy + half)
            b = np.where(major, -sx, -sy)
            # The ray parameter interval inside [-lim, lim]^2 (as _numba_kernels._ray_setup).
            t0, t1 = np.full_like(ox, -1e30), np.full_like(ox, 1e30)
            for o, d in ((ox, dx), (oy, dy)):
                flat = np.abs(d) < 1e-9
                ta, tb = (-lim - o) / d, (lim - o) / d
                lo, hi = np.minimum(ta, tb), np.maximum(ta, tb)
                t0 = np.where(flat, np.where(np.abs(o) > lim, 1.0, t0), np.maximum(t0, lo))
                t1 = np.where(flat, np.where(np.abs(o) > lim, 0.0, t1), np.minimum(t1, hi))
            ua, ub = np.where(major, ox + t0 * dx, oy + t0 * dy), np.where(major, ox + t1 * dx, oy + t1 * dy)
        ua, ub = np.minimum(ua, ub), np.maximum(ua, ub)
        k0 = np.where(major, np.ceil(ua + half - 1e-6), np.ceil(half - ub - 1e-6))
        k1 = np.where(major, np.floor(ub + half + 1e-6), np.floor(half - ua + 1e-6))
        k0, k1 = np.maximum(k0, 0), np.minimum(k1, n - 1)
        k0, k1 = np.where(t1 > t0, k0, 0), np.where(t1 > t0, k1, -1)
        step = self.geometry.pixel_spacing / np.maximum(np.abs(dx), np.abs(dy))
        return (a.astype(np.float32), b.astype(np.float32), step.astype(np.float32), major,
                k0.astype(np.int32), k1.astype(np.int32))

    def _joseph_rays_on(self, device) -> tuple:
        """:attr:`_joseph_rays` as tensors on ``device`` (kept, so a GPU gets them once)."""
        import torch

        if device not in self._joseph_cache:
            self._joseph_cache[device] = tuple(torch.as_tensor(v, device=device) for v in self._joseph_rays)
        return self._joseph_cache[device]

    @cached_property
    def _bp_params(self) -> tuple[int, float, float, float, float, float]:
        """(mode, R_px, det0, det_step, filter spacing, final scale) for FBP."""
        g = self.geometry
        ps = g.pixel_spacing
        dbeta = 2 * np.pi / g.views
        if isinstance(g, ParallelBeamGeometry):
            # 360-degree data counts every line twice: weight dbeta / 2.
            return 0, 0.0, self._bins[0] / ps, g.det_spacing / ps, g.det_spacing, dbeta / 2
        R = g.src_radius
        if g.det_shape == "flat":
            a = g.det_spacing * R / g.src_det_distance  # bin spacing on the virtual detector
            return 1, R / ps, self._bins[0] * R / g.src_det_distance / ps, a / ps, a, dbeta / 2
        alpha = g.det_spacing / g.src_det_distance
        # Kak & Slaney's g already holds the factor 1/2; 1/L^2 is in pixel units -> / ps^2.
        return 2, R / ps, self._bins[0] / g.src_det_distance, alpha, alpha, dbeta / ps**2

    def _preweight(self) -> np.ndarray | None:
        """Cosine pre-weighting of fan-beam projections, ``[D]`` (None for parallel)."""
        g = self.geometry
        if isinstance(g, ParallelBeamGeometry):
            return None
        R = g.src_radius
        if g.det_shape == "flat":
            s = self._bins * R / g.src_det_distance
            return R / np.sqrt(R**2 + s**2)
        return R * np.cos(self._bins / g.src_det_distance)

    # ------------------------------------------------------------------ dispatch
    def _use_torch(self, x: Union[np.ndarray, "torch.Tensor"]) -> bool:
        if self.backend == "torch":
            return True
        if self.backend == "numba":
            return False
        return _is_tensor(x)

    def _check(self, x: Union[np.ndarray, "torch.Tensor"], shape: tuple[int, int], what: str) -> None:
        if x.ndim not in (2, 3) or tuple(x.shape[-2:]) != tuple(shape):
            raise InputError(
                f"{what} of shape {tuple(x.shape)} does not match the geometry (expected [..., {shape[0]}, {shape[1]}])"
            )

    # ------------------------------------------------------------------ public API
    def forward(self, image: ArrayLike) -> ArrayLike:
        """Line integrals of ``image`` (mu per mm, ``[N, H, W]`` or ``[H, W]``) -> ``[N, V, D]``."""
        self._check(image, self.geometry.image_shape, "image")
        if self._use_torch(image):
            import torch

            return self._torch_fp(torch.as_tensor(image))
        img, squeeze = _as_batch(image)
        from ._numba_kernels import joseph_fp, joseph_fp_batch

        src, dirs = self.rays
        V, D = self.geometry.sinogram_shape
        n = self.geometry.image_size
        out = np.empty((img.shape[0], V, D * self.det_subsamples), np.float32)
        for a in range(0, img.shape[0], BATCH):
            part = img[a : a + BATCH]
            if len(part) == 1:
                padded = np.zeros((n + 2, n + 2), np.float32)
                padded[1:-1, 1:-1] = part[0]
                joseph_fp(padded, np.ascontiguousarray(padded.T), src, dirs, out[a])
            else:
                padded = np.zeros((n + 2, n + 2, len(part)), np.float32)
                padded[1:-1, 1:-1] = part.transpose(1, 2, 0)
                joseph_fp_batch(padded, np.ascontiguousarray(padded.transpose(1, 0, 2)), src, dirs,
                                out[a : a + BATCH])
        out = out.reshape(img.shape[0], V, D, self.det_subsamples).mean(-1) if self.det_subsamples > 1 else out
        out *= np.float32(self.geometry.pixel_spacing)
        return out[0] if squeeze else out

    __call__ = forward

    def adjoint(self, sinogram: ArrayLike) -> ArrayLike:
        """Exact transpose of :meth:`forward` (``[N, V, D]`` -> ``[N, H, W]``)."""
        self._check(sinogram, self.geometry.sinogram_shape, "sinogram")
        if self._use_torch(sinogram):
            import torch

            y = torch.as_tensor(sinogram)
            x0 = torch.zeros((*y.shape[:-2], *self.geometry.image_shape), dtype=y.dtype, device=y.device)
            with torch.enable_grad():
                x0.requires_grad_(True)
                (out,) = torch.autograd.grad(self._torch_fp(x0), x0, grad_outputs=y)
            return out.detach()
        sino, squeeze = _as_batch(sinogram)
        from ._numba_kernels import joseph_bp

        if self.det_subsamples > 1:  # transpose of the mean over sub-rays
            sino = np.ascontiguousarray(np.repeat(sino, self.det_subsamples, -1) / np.float32(self.det_subsamples))
        src, dirs = self.rays
        blocks = max(1, min(_num_threads(), self.geometry.views))
        n = self.geometry.image_size
        # Two scratch images per block of views and slice; the batch is bounded so that the
        # scratch stays under ADJOINT_SCRATCH_BYTES however many threads there are.
        per_slice = 2 * blocks * (n + 2) ** 2 * 4
        chunk = int(max(1, min(BATCH, ADJOINT_SCRATCH_BYTES // per_slice)))
        out = np.empty((sino.shape[0], n, n), np.float32)
        for a in range(0, sino.shape[0], chunk):
            part = np.ascontiguousarray(sino[a : a + chunk].transpose(1, 2, 0))  # [V, D, B]: slices last
            acc = np.zeros((blocks, n + 2, n + 2, part.shape[2]), np.float32)
            acc_t = np.zeros_like(acc)
            joseph_bp(part, src, dirs, acc, acc_t)
            img = acc.sum(0) + acc_t.sum(0).transpose(1, 0, 2)
            out[a : a + chunk] = img[1:-1, 1:-1].transpose(2, 0, 1)
        out *= np.float32(self.geometry.pixel_spacing)
        return out[0] if squeeze else out

    def fbp_hu(self, sinogram: ArrayLike, *, filter: str = "ram-lak") -> ArrayLike:
        """Filtered back-projection in HU: ``[N, V, D]`` (or ``[V, D]``) line integrals ->
        float32 ``[N, H, W]`` HU, with the geometry's ``mu_water``. The one FBP-to-image
        step of the pipeline (``x_ld``, ``x0``), the baselines and the benchmark's FBP row."""
        if isinstance(sinogram, np.ndarray) and sinogram.dtype != np.float32:
            sinogram = sinogram.astype(np.float32)
        hu = mu_to_hu(self.fbp(sinogram, filter=filter), self.geometry.mu_water)
        return hu.float() if _is_tensor(hu) else np.asarray(hu, np.float32)

    def fbp(self, sinogram: ArrayLike, *, filter: str = "ram-lak") -> ArrayLike:
        """Filtered back-projection of ``[N, V, D]`` line integrals -> ``mu`` ``[N, H, W]``.

        Fan-beam data get the cosine pre-weighting and the distance weighting of the
        exact fan-beam formula (flat: ``(R / U)^2``; arc: ``1 / L^2``); ``filter`` is one
        of ``ram-lak``, ``shepp-logan``, ``hann``.
        """
        if filter not in FILTERS:
            raise ValueError(f"unknown filter {filter!r}; choose from {', '.join(FILTERS)}")
        self._check(sinogram, self.geometry.sinogram_shape, "sinogram")
        mode, R, det0, det_step, spacing, scale = self._bp_params
        pre = self._preweight()
        if self._use_torch(sinogram):
            import torch

            y = torch.as_tensor(sinogram)
            if pre is not None:
                y = y * torch.as_tensor(pre, dtype=y.dtype, device=y.device)
            q = filter_sinogram(y, spacing, filter=filter, arc=mode == 2)
            if mode == 2:  # the same virtual flat detector as the numba path
                i0, w, sc, d0, step = self._arc_to_flat_map(q.shape[-1], R, det0, det_step)
                i0, w, sc = (torch.as_tensor(a, device=q.device) for a in (i0, w, sc))
                q = ((q[..., i0] * (1 - w) + q[..., i0 + 1] * w) * sc).to(torch.float32)
                return self._torch_bp(q, (1, R, d0, step)) * scale
            return self._torch_bp(q) * scale
        sino, squeeze = _as_batch(sinogram)
        from ._numba_kernels import pixel_bp, pixel_bp_batch

        out = np.zeros((sino.shape[0], *self.geometry.image_shape), np.float32)
        cos_b, sin_b = np.cos(self.angles), np.sin(self.angles)
        for a in range(0, sino.shape[0], BATCH):  # filtered copies for one batch at a time
            y = sino[a : a + BATCH]
            if pre is not None:
                y = y * pre.astype(np.float32)
            q = np.ascontiguousarray(filter_sinogram(y, spacing, filter=filter, arc=mode == 2))
            m, d0, step = mode, det0, det_step
            if mode == 2:
                q, d0, step = self._arc_to_flat(q, R, det0, det_step)
                m = 1
            if len(q) == 1:
                pixel_bp(q[0], cos_b, sin_b, m, R, d0, step, out[a])
            else:
                pixel_bp_batch(q, cos_b, sin_b, m, R, d0, step, out[a : a + BATCH])
        out *= np.float32(scale)
        return out[0] if squeeze else out

    @staticmethod
    def _arc_to_flat_map(D: int, R: float, gamma0: float, dgamma: float, oversample: int = 2):
        """How filtered arc projections map onto a virtual flat detector (pixel units).

        The arc back-projection ``q(gamma) / L^2`` equals the flat one
        ``q_flat(t) (R / U)^2`` with ``t = R tan(gamma)`` and
        ``q_flat(t) = q(gamma) cos^2(gamma) / R^2`` (``L = U / cos(gamma)``). Sampling
        ``q_flat`` on an equispaced ``t`` grid ``oversample`` times finer than the bins
        lets the faster flat kernel (no arctan per pixel and view) do the work. Returns
        ``(i0, w, scale, t0, dt)``: ``q_flat = (q[..., i0] (1 - w) + q[..., i0 + 1] w) scale``
        on the grid ``t0 + k dt``. Both backends use it, so they back-project alike.
        """
        g_lo, g_hi = gamma0, gamma0 + (D - 1) * dgamma
        n = oversample * D
        t = np.linspace(R * np.tan(g_lo), R * np.tan(g_hi), n)
        gamma = np.arctan(t / R)
        f = np.clip((gamma - gamma0) / dgamma, 0.0, D - 1.0)
        i0 = np.minimum(f.astype(np.int64), D - 2)
        w = (f - i0).astype(np.float32)
        scale = (np.cos(gamma) ** 2 / R**2).astype(np.float32)
        return i0, w, scale, float(t[0]), float(t[1] - t[0])

    @classmethod
    def _arc_to_flat(cls, q: np.ndarray, R: float, gamma0: float, dgamma: float):
        """:meth:`_arc_to_flat_map` applied to NumPy ``q [..., D]``."""
        i0, w, scale, t0, dt = cls._arc_to_flat_map(q.shape[-1], R, gamma0, dgamma)
        qf = (q[..., i0] * (1.0 - w) + q[..., i0 + 1] * w) * scale
        return np.ascontiguousarray(qf, dtype=np.float32), t0, dt

    # ------------------------------------------------------------------ torch backend
    def _torch_fp(self, image: "torch.Tensor") -> "torch.Tensor":
        """Joseph's method, as the numba kernel: each ray is sampled at the centres of the
        columns (or rows) it runs along, linearly interpolated across the other axis, and the
        sum scaled by the step length. The slices of a batch are ``grid_sample``'s channels,
        so a ray's sample positions and weights are computed once for the whole batch; a ray
        is n samples long, not the ~2.8 n that half-pixel steps over the image's disc need."""
        import torch

        squeeze = image.ndim == 2
        x = (image[None] if squeeze else image).to(torch.float32)
        g = self.geometry
        n, dev = g.image_size, x.device
        a, b, step, major, k0, k1 = self._joseph_rays_on(dev)
        if (dev.type == "cuda" and self.use_triton and not (x.requires_grad and torch.is_grad_enabled())
                and _triton() is not None):
            # The same sums in one kernel, without the samples' round trip through memory
            # (docs/BENCHMARKS.md, "The GPU path"); autograd (the adjoint) takes the form below.
            sino = _triton().joseph_fp(x, (a, b, step, major, k0, k1))
        else:
            k = torch.arange(n, device=dev, dtype=torch.float32)
            img = x[None]  # [1, N, H, W]: the batch as channels
            half = (n - 1) / 2
            parts = []
            for r0 in range(0, a.numel(), self.view_chunk * g.det_count * self.det_subsamples):
                sl = slice(r0, r0 + self.view_chunk * g.det_count * self.det_subsamples)
                minor = a[sl, None] + b[sl, None] * k  # [rays, n]
                major_x = major[sl, None]
                col = torch.where(major_x, k.expand_as(minor), minor)
                row = torch.where(major_x, minor, k.expand_as(minor))
                # Only the samples inside the image square count; a point moved far outside
                # samples grid_sample's zero padding.
                inside = (k >= k0[sl, None]) & (k <= k1[sl, None])
                far = torch.full_like(minor, 4.0)
                grid = torch.stack([torch.where(inside, col / half - 1, far),
                                    torch.where(inside, row / half - 1, far)], -1)[None]  # [1, rays, n, 2]
                vals = torch.nn.functional.grid_sample(img, grid, mode="bilinear", padding_mode="zeros",
                                                       align_corners=True)
                parts.append(vals[0].sum(-1) * step[sl])
            sino = torch.cat(parts, 1)
        sino = sino.reshape(x.shape[0], g.views, g.det_count, self.det_subsamples).mean(-1)
        return sino[0] if squeeze else sino

    def _torch_bp(self, q: "torch.Tensor", params: tuple | None = None) -> "torch.Tensor":
        """Pixel-driven back-projection; ``params = (mode, R, det0, det_step)`` of the rows of
        ``q`` (default: the geometry's own detector)."""
        import torch

        squeeze = q.ndim == 2
        q = (q[None] if squeeze else q).to(torch.float32)
        mode, R, det0, det_step = params or self._bp_params[:4]
        g = self.geometry
        n, D, dev = g.image_size, q.shape[-1], q.device
        half = (n - 1) / 2
        coords = torch.arange(n, device=dev, dtype=torch.float32) - half
        X = coords[None, :].expand(n, n)
        Y = -coords[:, None].expand(n, n)
        ang = torch.as_tensor(self.angles, dtype=torch.float32, device=dev)
        out = torch.zeros((q.shape[0], n, n), device=dev, dtype=torch.float32)
        for v0 in range(0, g.views, self.view_chunk):
            cb, sb = torch.cos(ang[v0 : v0 + self.view_chunk]), torch.sin(ang[v0 : v0 + self.view_chunk])
            tp = -X[None] * sb[:, None, None] + Y[None] * cb[:, None, None]
            if mode == 0:
                t, w = tp, torch.ones_like(tp)
            else:
                U = R - (X[None] * cb[:, None, None] + Y[None] * sb[:, None, None])
                if mode == 1:
                    t, w = R * tp / U, (R / U) ** 2
                else:
                    t, w = torch.atan2(tp, U), 1.0 / (U * U + tp * tp)
            f = (t - det0) / det_step  # fractional bin index
            c = cb.numel()
            gx = (2 * f / (D - 1) - 1).reshape(c, 1, n * n)
            grid = torch.stack([gx, torch.zeros_like(gx)], -1)  # [c, 1, n*n, 2]
            rows = q[:, v0 : v0 + c].permute(1, 0, 2)[:, :, None, :]  # [c, N, 1, D]
            vals = torch.nn.functional.grid_sample(rows, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
            out += (vals[:, :, 0, :].reshape(c, q.shape[0], n, n) * w[:, None]).sum(0)
        return out[0] if squeeze else out


def _triton():
    """The Triton kernels module, or None where Triton is not installed (CPU builds of
    PyTorch): the ``grid_sample`` form then serves CUDA tensors too."""
    try:
        from . import _triton_kernels
    except Exception:  # not installed, or a build that does not import: the other form serves
        return None
    return _triton_kernels


def _as_batch(x: Union[np.ndarray, "torch.Tensor"]) -> tuple[np.ndarray, bool]:
    a = x.detach().cpu().numpy() if _is_tensor(x) else np.asarray(x)
    squeeze = a.ndim == 2
    a = a[None] if squeeze else a
    return np.ascontiguousarray(a, dtype=np.float32), squeeze


def _num_threads() -> int:
    try:
        import numba

        return int(numba.get_num_threads())
    except Exception:  # pragma: no cover
        return os.cpu_count() or 1
