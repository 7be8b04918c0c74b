"""Joseph's forward projection as one Triton kernel, for CUDA tensors.

The ``grid_sample`` form of the torch backend writes every sample of every ray to memory
before summing along the ray (32 x 720 x 736 x 512 floats for a batch of 32 slices of
512 x 512), a round trip the sum does not need. Here one program sums a block of rays of
one slice in registers: it walks the column (or row) centres the rays run along and
interpolates linearly across, exactly as ``_numba_kernels.joseph_fp`` and the
``grid_sample`` form do. The image size is a compile-time constant (one compilation per
size). The geometry of a ray is reduced to four numbers (see
:func:`ray_params`), computed once per projector and device.

Imported only when a CUDA tensor is projected and Triton is installed (it comes with
CUDA builds of PyTorch). ``TRITON_INTERPRET=1`` runs the same kernel on the CPU, which is
how the tests check it without a GPU.
"""

from __future__ import annotations

import numpy as np
import torch
import triton
import triton.language as tl

BLOCK = 128


@triton.jit
def _joseph_fp_kernel(img_ptr, out_ptr, a_ptr, b_ptr, scale_ptr, major_ptr, n_rays, n: tl.constexpr,
                      BLOCK: tl.constexpr):
    pid = tl.program_id(0)
    s = tl.program_id(1)  # slice of the batch
    rays = pid * BLOCK + tl.arange(0, BLOCK)
    rmask = rays < n_rays
    a = tl.load(a_ptr + rays, mask=rmask, other=0.0)
    b = tl.load(b_ptr + rays, mask=rmask, other=0.0)
    scale = tl.load(scale_ptr + rays, mask=rmask, other=0.0)
    major = tl.load(major_ptr + rays, mask=rmask, other=0)
    # Along x the minor index is a row (stride n) and k a column; along y the reverse.
    stride = tl.where(major == 1, n, 1)
    kstride = tl.where(major == 1, 1, n)
    base = img_ptr + s.to(tl.int64) * n * n
    lo = -0.5 - 1e-6
    hi = n - 0.5 + 1e-6
    acc = tl.zeros([BLOCK], dtype=tl.float32)
    for k in range(0, n):
        c = a + b * k
        inside = rmask & (c >= lo) & (c <= hi)  # the numba kernel clips the ray to the image square
        cf = tl.floor(c)
        w = c - cf
        c0 = cf.to(tl.int32)
        i0 = c0 * stride + k * kstride
        v0 = tl.load(base + i0, mask=inside & (c0 >= 0), other=0.0)
        v1 = tl.load(base + i0 + stride, mask=inside & (c0 + 1 <= n - 1), other=0.0)
        acc += (1.0 - w) * v0 + w * v1
    tl.store(out_ptr + s.to(tl.int64) * n_rays + rays, acc * scale, mask=rmask)


def ray_params(src: np.ndarray, dirs: np.ndarray, n: int, pixel_spacing: float, device) -> tuple:
    """Per ray: the minor index ``a + b k`` at main-axis index ``k``, the step length times
    the pixel spacing, and whether the main axis is x. ``src``, ``dirs``: ``[R, 2]`` (pixel
    units, the image centred at the origin)."""
    half = (n - 1) / 2
    ox, oy = src[:, 0].astype(np.float64), src[:, 1].astype(np.float64)
    dx, dy = dirs[:, 0].astype(np.float64), dirs[:, 1].astype(np.float64)
    major = np.abs(dx) >= np.abs(dy)
    with np.errstate(divide="ignore", invalid="ignore"):
        sx, sy = dy / dx, dx / dy
        # along x: row = half - (oy + (k - half - ox) dy/dx); along y: col = ox + (half - k - oy) dx/dy + half
        a = np.where(major, half - oy + (half + ox) * sx, ox + (half - oy) * sy + half)
        b = np.where(major, -sx, -sy)
    scale = pixel_spacing / np.maximum(np.abs(dx), np.abs(dy))

    def t(v, dtype=torch.float32):
        return torch.as_tensor(np.ascontiguousarray(v), dtype=dtype, device=device)

    return t(a), t(b), t(scale), t(major.astype(np.int32), torch.int32)


def joseph_fp(image: torch.Tensor, params: tuple) -> torch.Tensor:
    """``[N, n, n]`` float32 images -> ``[N, R]`` line integrals of the rays of ``params``."""
    a, b, scale, major = params
    x = image.contiguous()
    N, n = x.shape[0], x.shape[-1]
    R = a.numel()
    out = torch.empty((N, R), dtype=torch.float32, device=x.device)
    _joseph_fp_kernel[(triton.cdiv(R, BLOCK), N)](x, out, a, b, scale, major, R, n=n, BLOCK=BLOCK)
    return out
