"""Compiled CPU kernels (Numba, parallel over threads).

* ``joseph_fp``: Joseph's ray-driven forward projection. For each ray the loop runs
  over the image axis the ray is most aligned with; at each column (or row) centre the
  image is linearly interpolated between the two nearest rows (columns), and the sum is
  scaled by the step length along the ray. Parallel over rays.
* ``joseph_bp``: its exact transpose (scatter of every ray's samples with the same
  weights), used where an adjoint is required (iterative reconstruction, tests).
  Parallel over blocks of views, each with its own accumulation image.
* ``pixel_bp``: pixel-driven (voxel-driven) back-projection used by FBP: for every
  pixel and view, the detector position of the ray through the pixel centre is found
  and the filtered sinogram is linearly interpolated there, with the fan-beam distance
  weight. Parallel over image rows.

Rays are given as a source point and a unit direction per (view, bin), so one FP kernel
serves parallel, flat-fan and arc-fan geometries. All geometry is in pixel units here
(the caller divides mm by the pixel spacing), with the image centred at the origin.
"""

from __future__ import annotations

import numba as nb
import numpy as np

_EPS = 1e-9


@nb.njit(cache=True, fastmath=True, inline="always")
def _clip_interval(o: float, d: float, lo: float, hi: float, t0: float, t1: float):
    """Clip the ray parameter interval [t0, t1] to lo <= o + t d <= hi."""
    if abs(d) < _EPS:
        if o < lo or o > hi:
            return 1.0, 0.0
        return t0, t1
    ta = (lo - o) / d
    tb = (hi - o) / d
    if ta > tb:
        ta, tb = tb, ta
    return max(t0, ta), min(t1, tb)


@nb.njit(cache=True, fastmath=True, inline="always")
def _ray_setup(ox: float, oy: float, dx: float, dy: float, half: float):
    """Range of the running index k (pixel centres along the main axis) for one ray.

    Returns (major_is_x, k_start, k_stop, a, b, step) so that along the ray, at main-axis
    index k the minor coordinate (in index units) is ``a + b * k``; ``step`` is the
    ray length per unit of k. ``half`` = (n - 1) / 2.
    """
    t0, t1 = -1e30, 1e30
    lim = half + 0.5
    t0, t1 = _clip_interval(ox, dx, -lim, lim, t0, t1)
    t0, t1 = _clip_interval(oy, dy, -lim, lim, t0, t1)
    if t1 <= t0:
        return True, 0, -1, 0.0, 0.0, 0.0
    if abs(dx) >= abs(dy):
        # x = j - half (column index j); y = half - i (row i) -> i = half - y
        xa = ox + t0 * dx
        xb = ox + t1 * dx
        if xa > xb:
            xa, xb = xb, xa
        k0 = int(np.ceil(xa + half - 1e-6))
        k1 = int(np.floor(xb + half + 1e-6))
        k0 = max(k0, 0)
        k1 = min(k1, int(2 * half + 0.5))
        # y at x = k - half: y = oy + (x - ox) dy / dx ; row coordinate i = half - y
        slope = dy / dx
        a = half - (oy + (-half - ox) * slope)
        b = -slope
        step = np.sqrt(1.0 + slope * slope)
        return True, k0, k1, a, b, step
    else:
        ya = oy + t0 * dy
        yb = oy + t1 * dy
        if ya > yb:
            ya, yb = yb, ya
        # row i has y = half - i; i from half - yb to half - ya
        k0 = int(np.ceil(half - yb - 1e-6))
        k1 = int(np.floor(half - ya + 1e-6))
        k0 = max(k0, 0)
        k1 = min(k1, int(2 * half + 0.5))
        slope = dx / dy
        # x at y = half - k: x = ox + (half - k - oy) * slope ; column j = x + half
        a = ox + (half - oy) * slope + half
        b = -slope
        step = np.sqrt(1.0 + slope * slope)
        return False, k0, k1, a, b, step


@nb.njit(cache=True, fastmath=True, parallel=True)
def joseph_fp(img, src, dirs, out):
    """Forward projection. img [B, n, n]; src, dirs [V, D, 2] (pixel units); out [B, V, D]."""
    nb_ = img.shape[0]
    n = img.shape[1]
    half = (n - 1) / 2.0
    V = src.shape[0]
    D = src.shape[1]
    for r in nb.prange(V * D):
        v = r // D
        d = r - v * D
        major_x, k0, k1, a, b, step = _ray_setup(src[v, d, 0], src[v, d, 1], dirs[v, d, 0], dirs[v, d, 1], half)
        for s in range(nb_):
            acc = 0.0
            for k in range(k0, k1 + 1):
                c = a + b * k
                if c <= -1.0 or c >= n:
                    continue
                c0 = int(np.floor(c))
                w = c - c0
                if major_x:
                    if c0 >= 0:
                        acc += (1.0 - w) * img[s, c0, k]
                    if c0 + 1 < n:
                        acc += w * img[s, c0 + 1, k]
                else:
                    if c0 >= 0:
                        acc += (1.0 - w) * img[s, k, c0]
                    if c0 + 1 < n:
                        acc += w * img[s, k, c0 + 1]
            out[s, v, d] = acc * step


@nb.njit(cache=True, fastmath=True, parallel=True)
def joseph_bp(sino, src, dirs, out, n_blocks):
    """Exact transpose of ``joseph_fp``. sino [B, V, D]; out [n_blocks, B, n, n] scratch."""
    nb_ = sino.shape[0]
    n = out.shape[2]
    half = (n - 1) / 2.0
    V = src.shape[0]
    D = src.shape[1]
    for blk in nb.prange(n_blocks):
        for v in range(blk, V, n_blocks):
            for d in range(D):
                major_x, k0, k1, a, b, step = _ray_setup(
                    src[v, d, 0], src[v, d, 1], dirs[v, d, 0], dirs[v, d, 1], half
                )
                for s in range(nb_):
                    val = sino[s, v, d] * step
                    if val == 0.0:
                        continue
                    for k in range(k0, k1 + 1):
                        c = a + b * k
                        if c <= -1.0 or c >= n:
                            continue
                        c0 = int(np.floor(c))
                        w = c - c0
                        if major_x:
                            if c0 >= 0:
                                out[blk, s, c0, k] += (1.0 - w) * val
                            if c0 + 1 < n:
                                out[blk, s, c0 + 1, k] += w * val
                        else:
                            if c0 >= 0:
                                out[blk, s, k, c0] += (1.0 - w) * val
                            if c0 + 1 < n:
                                out[blk, s, k, c0 + 1] += w * val


@nb.njit(cache=True, fastmath=True, inline="always")
def _atan(z: float) -> float:
    """arctan to ~2e-8 rad: range reduction to |z| <= tan(pi/8), then its Taylor series.

    About five times faster than ``np.arctan2`` in the back-projection's inner loop.
    """
    sign = 1.0
    if z < 0.0:
        z = -z
        sign = -1.0
    off = 0.0
    if z > 2.414213562373095:  # tan(3 pi / 8)
        z = -1.0 / z
        off = 1.5707963267948966
    elif z > 0.4142135623730951:  # tan(pi / 8)
        z = (z - 1.0) / (z + 1.0)
        off = 0.7853981633974483
    z2 = z * z
    p = -1.0 / 15.0
    p = p * z2 + 1.0 / 13.0
    p = p * z2 - 1.0 / 11.0
    p = p * z2 + 1.0 / 9.0
    p = p * z2 - 1.0 / 7.0
    p = p * z2 + 1.0 / 5.0
    p = p * z2 - 1.0 / 3.0
    p = p * z2 + 1.0
    return sign * (off + z * p)


@nb.njit(cache=True, fastmath=True, inline="always")
def _atan_small(z):
    """arctan without branches for |z| <= 1 (any |z| works, accuracy degrades past 1).

    The half-angle identity ``atan(z) = 2 atan(z / (1 + sqrt(1 + z^2)))`` brings the
    argument below tan(pi/8), where eight Taylor terms give ~2e-8; no branches, so the
    back-projection's inner loop vectorises.
    """
    h = z / (1.0 + np.sqrt(1.0 + z * z))
    h2 = h * h
    p = np.float32(-1.0 / 15.0)
    p = p * h2 + np.float32(1.0 / 13.0)
    p = p * h2 - np.float32(1.0 / 11.0)
    p = p * h2 + np.float32(1.0 / 9.0)
    p = p * h2 - np.float32(1.0 / 7.0)
    p = p * h2 + np.float32(1.0 / 5.0)
    p = p * h2 - np.float32(1.0 / 3.0)
    p = p * h2 + np.float32(1.0)
    return np.float32(2.0) * h * p


@nb.njit(cache=True, fastmath=True, parallel=True)
def pixel_bp(q, cos_b, sin_b, mode, R, det0, det_step, out):
    """Pixel-driven weighted back-projection (the back-projection step of FBP).

    q [B, V, D] filtered sinogram. For each pixel (x, y) (pixel units) and view b:
    * mode 0 (parallel): coordinate t = x*(-sin b) + y*cos b, weight 1.
    * mode 1 (flat fan, virtual detector through the isocentre): with U = R - (x cos b + y sin b),
      t = R * (x*(-sin b) + y*cos b) / U, weight (R / U)^2.
    * mode 2 (arc fan): gamma = atan(t' / U) with t' = x*(-sin b) + y*cos b, weight 1 / L^2,
      L^2 = U^2 + t'^2 (pixel units; the caller rescales).
    The bin index is (t - det0) / det_step; linear interpolation, zero outside.

    Threads take image rows; for each row the loop runs over views outside and pixels
    inside, so one view's filtered projection (a few KB) stays in L1 cache. The inner
    loop is branch-free float32 (projections are zero-padded at both ends and the bin
    position clamped into the padding), so LLVM vectorises it.
    """
    nb_ = q.shape[0]
    V = q.shape[1]
    D = q.shape[2]
    n = out.shape[1]
    f32 = np.float32
    half = f32((n - 1) / 2.0)
    inv_step = f32(1.0 / det_step)
    off = f32(-det0 / det_step + 1.0)  # +1: index into the zero-padded projection
    Rf = f32(R)
    hi = f32(D + 1)
    qp = np.zeros((nb_, V, D + 2), dtype=np.float32)
    qp[:, :, 1 : D + 1] = q
    xs = (np.arange(n) - half).astype(np.float32)
    for i in nb.prange(n):
        y = half - f32(i)
        acc = np.zeros((nb_, n), dtype=np.float32)
        for v in range(V):
            cb = f32(cos_b[v])
            sb = f32(sin_b[v])
            for s in range(nb_):
                row = qp[s, v]
                for j in range(n):
                    x = xs[j]
                    tp = -x * sb + y * cb
                    if mode == 0:
                        t = tp
                        wgt = f32(1.0)
                    elif mode == 1:
                        iu = f32(1.0) / (Rf - (x * cb + y * sb))
                        t = Rf * tp * iu
                        wgt = (Rf * iu) * (Rf * iu)
                    else:
                        U = Rf - (x * cb + y * sb)
                        t = _atan_small(tp / U)  # U > 0: the grid lies inside the source circle
                        wgt = f32(1.0) / (U * U + tp * tp)
                    f = min(max(t * inv_step + off, f32(0.0)), hi)
                    f0 = min(int(f), D)
                    w = f - f32(f0)
                    acc[s, j] += wgt * ((f32(1.0) - w) * row[f0] + w * row[f0 + 1])
        for s in range(nb_):
            for j in range(n):
                out[s, i, j] += acc[s, j]
