"""Joseph's forward projection as one Triton kernel, for CUDA tensors.

The ``grid_sample`` form of the torch backend writes every sample of every ray to memory
before summing along the ray (32 x 720 x 736 x 512 floats for a batch of 32 slices of
512 x 512), a round trip the sum does not need. Here one program sums a block of rays of
one slice in registers: it walks the column (or row) centres the rays run along and
interpolates linearly across, exactly as ``_numba_kernels.joseph_fp`` and the
``grid_sample`` form do, from the same per-ray numbers
(``CTProjector._joseph_rays``). The image size is a compile-time constant (one compilation
per size).

Imported only when a CUDA tensor is projected and Triton is installed (it comes with
CUDA builds of PyTorch). ``TRITON_INTERPRET=1`` runs the same kernel on the CPU, which is
how the tests check it without a GPU.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

BLOCK = 128


@triton.jit
def _joseph_fp_kernel(img_ptr, out_ptr, a_ptr, b_ptr, scale_ptr, major_ptr, k0_ptr, k1_ptr, n_rays,
                      n: tl.constexpr, BLOCK: tl.constexpr):
    pid = tl.program_id(0)
    s = tl.program_id(1)  # slice of the batch
    rays = pid * BLOCK + tl.arange(0, BLOCK)
    rmask = rays < n_rays
    a = tl.load(a_ptr + rays, mask=rmask, other=0.0)
    b = tl.load(b_ptr + rays, mask=rmask, other=0.0)
    scale = tl.load(scale_ptr + rays, mask=rmask, other=0.0)
    major = tl.load(major_ptr + rays, mask=rmask, other=0)
    k0 = tl.load(k0_ptr + rays, mask=rmask, other=0)
    k1 = tl.load(k1_ptr + rays, mask=rmask, other=-1)
    # Along x the minor index is a row (stride n) and k a column; along y the reverse.
    stride = tl.where(major == 1, n, 1)
    kstride = tl.where(major == 1, 1, n)
    base = img_ptr + s.to(tl.int64) * n * n
    acc = tl.zeros([BLOCK], dtype=tl.float32)
    for k in range(0, n):
        c = a + b * k
        inside = rmask & (k >= k0) & (k <= k1)  # the numba kernel's clipping to the image square
        cf = tl.floor(c)
        w = c - cf
        c0 = cf.to(tl.int32)
        i0 = c0 * stride + k * kstride
        v0 = tl.load(base + i0, mask=inside & (c0 >= 0), other=0.0)
        v1 = tl.load(base + i0 + stride, mask=inside & (c0 + 1 <= n - 1), other=0.0)
        acc += (1.0 - w) * v0 + w * v1
    tl.store(out_ptr + s.to(tl.int64) * n_rays + rays, acc * scale, mask=rmask)


def joseph_fp(image: torch.Tensor, rays: tuple) -> torch.Tensor:
    """``[N, n, n]`` float32 images -> ``[N, R]`` line integrals of the ``R`` rays given as
    ``CTProjector._joseph_rays`` gives them (``a``, ``b``, step, main axis x, ``k`` range), on the device."""
    a, b, scale, major, k0, k1 = rays
    major = major.to(torch.int32)
    x = image.contiguous()
    N, n = x.shape[0], x.shape[-1]
    R = a.numel()
    out = torch.empty((N, R), dtype=torch.float32, device=x.device)
    _joseph_fp_kernel[(triton.cdiv(R, BLOCK), N)](x, out, a, b, scale, major, k0, k1, R, n=n, BLOCK=BLOCK)
    return out
