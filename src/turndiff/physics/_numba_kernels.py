"""Compiled CPU kernels (Numba, parallel over threads).

* ``joseph_fp`` / ``joseph_fp_batch``: Joseph's ray-driven forward projection. For each
  ray the loop runs over the image axis the ray is most aligned with; at each column (or
  row) centre the image is linearly interpolated between the two nearest rows (columns),
  and the sum is scaled by the step length along the ray. Parallel over rays (one slice)
  or views (a batch).
* ``joseph_bp``: its exact transpose (scatter of every ray's samples with the same
  weights and clamp), used where an adjoint is required (the data-consistency step,
  iterative reconstruction, tests). Slices last, like the batch FP; parallel over blocks
  of views, each with its own accumulation images.
* ``pixel_bp`` / ``pixel_bp_batch``: pixel-driven (voxel-driven) back-projection used by
  FBP: for every pixel and view, the detector position of the ray through the pixel
  centre is found and the filtered sinogram is linearly interpolated there, with the
  fan-beam distance weight. Parallel over image rows.

Memory layout is what makes these fast (issue 20). Both single-slice kernels read a
zero-padded image so that the inner loops carry no bounds tests, and the FP reads the
image or its transpose so that the running index always walks along contiguous memory;
the back-projection computes each view's bin positions and weights for a whole image row
first (a loop without gathers, which vectorises) and interpolates after. The batch
kernels keep the slices innermost (``[..., B]``, channels last): the geometry of a ray or
a pixel is computed once for the whole batch, and its B samples are one contiguous
vector, so a batch costs less per slice than one slice does. A batch in the planar
``[B, H, W]`` layout made every ray walk B separate images and cost 1.8x a single slice.

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
def joseph_fp(padded, padded_t, src, dirs, out):
    """Forward projection of one slice. ``padded`` ``[n + 2, n + 2]``: the image with a
    border of zeros (``padded[i + 1, j + 1] = img[i, j]``), ``padded_t`` its transpose;
    src, dirs ``[V, D, 2]`` (pixel units); out ``[V, D]``."""
    n = padded.shape[0] - 2
    half = (n - 1) / 2.0
    V = src.shape[0]
    D = src.shape[1]
    hi = n - 1e-4
    for r in nb.prange(V * D):
        v = r // D
        d = r - v * D
        major_x, k0, k1, a, b, step = _ray_setup(src[v, d, 0], src[v, d, 1], dirs[v, d, 0], dirs[v, d, 1], half)
        # Along x the image is read as is, along y transposed: the running index k is the
        # last (contiguous) axis either way.
        img = padded if major_x else padded_t
        acc = 0.0
        for k in range(k0, k1 + 1):
            c = min(max(a + b * k, -1.0), hi)  # the clipped ray keeps c in (-1, n); the clamp is for rounding
            c0 = int(c + 1.0) - 1  # floor, for c >= -1
            w = c - c0
            acc += (1.0 - w) * img[c0 + 1, k + 1] + w * img[c0 + 2, k + 1]
        out[v, d] = acc * step


@nb.njit(cache=True, fastmath=True, parallel=True)
def joseph_fp_batch(padded, padded_t, src, dirs, out):
    """Forward projection of a batch, slices last: ``padded`` ``[n + 2, n + 2, B]`` (as in
    :func:`joseph_fp`, slice ``s`` at ``[..., s]``), ``padded_t`` its transpose in the first
    two axes; out ``[B, V, D]``. Parallel over views."""
    n = padded.shape[0] - 2
    B = padded.shape[2]
    half = (n - 1) / 2.0
    V = src.shape[0]
    D = src.shape[1]
    hi = n - 1e-4
    for v in nb.prange(V):
        acc = np.empty(B, np.float64)
        for d in range(D):
            major_x, k0, k1, a, b, step = _ray_setup(src[v, d, 0], src[v, d, 1], dirs[v, d, 0], dirs[v, d, 1], half)
            img = padded if major_x else padded_t
            acc[:] = 0.0
            for k in range(k0, k1 + 1):
                c = min(max(a + b * k, -1.0), hi)
                c0 = int(c + 1.0) - 1
                w = c - c0
                for s in range(B):
                    acc[s] += (1.0 - w) * img[c0 + 1, k + 1, s] + w * img[c0 + 2, k + 1, s]
            for s in range(B):
                out[s, v, d] = acc[s] * step


@nb.njit(cache=True, fastmath=True, parallel=True)
def joseph_bp(sino, src, dirs, out, out_t):
    """Exact transpose of ``joseph_fp_batch`` (of one slice too, ``B = 1``): every ray's
    value is scattered onto the two pixels the FP read, with the same weights and the same
    clamp. ``sino`` ``[V, D, B]`` (slices last); ``out``, ``out_t`` ``[n_blocks, n + 2,
    n + 2, B]`` zeroed scratch, one pair per block of views (threads never share one).
    Rays along x add into ``out`` at ``[c, k]``, rays along y into ``out_t`` at ``[c, k]``,
    the transposed position, so that the running index always walks contiguous memory, as
    in the FP. The image is ``sum_blk out[blk] + out_t[blk].T`` without its one-pixel border
    (the FP's zero padding)."""
    n_blocks = out.shape[0]
    n = out.shape[1] - 2
    B = out.shape[3]
    half = (n - 1) / 2.0
    V = src.shape[0]
    D = src.shape[1]
    hi = n - 1e-4
    for blk in nb.prange(n_blocks):
        val = np.empty(B, np.float32)
        for v in range(blk, V, n_blocks):
            for d in range(D):
                major_x, k0, k1, a, b, step = _ray_setup(src[v, d, 0], src[v, d, 1], dirs[v, d, 0], dirs[v, d, 1],
                                                         half)
                if k1 < k0:
                    continue
                nonzero = False
                for s in range(B):
                    val[s] = sino[v, d, s] * step
                    nonzero = nonzero or val[s] != 0.0
                if not nonzero:
                    continue
                tgt = out[blk] if major_x else out_t[blk]
                for k in range(k0, k1 + 1):
                    c = min(max(a + b * k, -1.0), hi)
                    c0 = int(c + 1.0) - 1
                    w = c - c0
                    for s in range(B):
                        tgt[c0 + 1, k + 1, s] += (1.0 - w) * val[s]
                        tgt[c0 + 2, k + 1, s] += w * val[s]


@nb.njit(cache=True, fastmath=True, inline="always")
def _bp_constants(n, D, R, det0, det_step):
    """float32 constants of the back-projection of an ``n x n`` image from ``D`` bins:
    the grid's half width, 1 / bin step, the padded index of bin 0 (+1: the projections
    are zero-padded at both ends), R, the last padded index and the column coordinates."""
    f32 = np.float32
    half = f32((n - 1) / 2.0)
    xs = (np.arange(n) - half).astype(np.float32)
    return half, f32(1.0 / det_step), f32(-det0 / det_step + 1.0), f32(R), f32(D + 1), xs


@nb.njit(cache=True, fastmath=True, inline="always")
def _view_weights(mode, cb, sb, y, xs, Rf, inv_step, off, hi, D, F0, W0, W1):
    """For one view and one image row (height ``y``, columns at ``xs``): the padded bin
    index ``F0[j]`` left of each pixel's ray and the weights ``W0[j]``, ``W1[j]`` of bins
    ``F0[j]`` and ``F0[j] + 1`` (interpolation times the distance weight). See
    :func:`pixel_bp` for the modes. The branch on ``mode`` is outside the pixel loop, so
    each loop is straight-line float32 code that vectorises."""
    f32 = np.float32
    n = xs.shape[0]
    ycb = y * cb
    ysb = y * sb
    if mode == 0:
        for j in range(n):
            f = min(max((ycb - xs[j] * sb) * inv_step + off, f32(0.0)), hi)
            f0 = min(int(f), D)
            w = f - f32(f0)
            F0[j] = f0
            W1[j] = w
            W0[j] = f32(1.0) - w
    else:
        for j in range(n):
            x = xs[j]
            iu = f32(1.0) / (Rf - (x * cb + ysb))
            wgt = (Rf * iu) * (Rf * iu)
            f = min(max(Rf * (ycb - x * sb) * iu * inv_step + off, f32(0.0)), hi)
            f0 = min(int(f), D)
            w = f - f32(f0)
            F0[j] = f0
            W1[j] = wgt * w
            W0[j] = wgt - wgt * w


@nb.njit(cache=True, fastmath=True, parallel=True)
def pixel_bp(q, cos_b, sin_b, mode, R, det0, det_step, out):
    """Pixel-driven weighted back-projection of one slice (the back-projection of FBP).

    q ``[V, D]`` filtered sinogram; out ``[n, n]``, added to. For each pixel (x, y) (pixel
    units) and view b:

    * mode 0 (parallel): coordinate t = x*(-sin b) + y*cos b, weight 1.
    * mode 1 (flat fan, virtual detector through the isocentre): with
      U = R - (x cos b + y sin b), t = R * (x*(-sin b) + y*cos b) / U, weight (R / U)^2.

    (Arc detectors are resampled onto a virtual flat one by the caller.) The bin index is
    (t - det0) / det_step; linear interpolation, zero outside. Threads take image rows;
    for each row the loop runs over views outside and pixels inside, so one view's
    filtered projection (a few KB) stays in L1 cache.
    """
    V = q.shape[0]
    D = q.shape[1]
    n = out.shape[0]
    f32 = np.float32
    half, inv_step, off, Rf, hi, xs = _bp_constants(n, D, R, det0, det_step)
    qp = np.zeros((V, D + 2), dtype=np.float32)
    qp[:, 1 : D + 1] = q
    for i in nb.prange(n):
        y = half - f32(i)
        acc = np.zeros(n, dtype=np.float32)
        F0 = np.empty(n, np.int64)
        W0 = np.empty(n, np.float32)
        W1 = np.empty(n, np.float32)
        for v in range(V):
            _view_weights(mode, f32(cos_b[v]), f32(sin_b[v]), y, xs, Rf, inv_step, off, hi, D, F0, W0, W1)
            row = qp[v]
            for j in range(n):
                acc[j] += W0[j] * row[F0[j]] + W1[j] * row[F0[j] + 1]
        for j in range(n):
            out[i, j] += acc[j]


@nb.njit(cache=True, fastmath=True, parallel=True)
def pixel_bp_batch(q, cos_b, sin_b, mode, R, det0, det_step, out):
    """:func:`pixel_bp` of a batch: q ``[B, V, D]``, out ``[B, n, n]``. The filtered
    projections are copied slices-last (``[V, D + 2, B]``), so each pixel's two bins are
    two contiguous B-vectors and its weights are computed once for the batch."""
    B = q.shape[0]
    V = q.shape[1]
    D = q.shape[2]
    n = out.shape[1]
    f32 = np.float32
    half, inv_step, off, Rf, hi, xs = _bp_constants(n, D, R, det0, det_step)
    qp = np.zeros((V, D + 2, B), dtype=np.float32)
    for v in nb.prange(V):
        for d in range(D):
            for s in range(B):
                qp[v, d + 1, s] = q[s, v, d]
    for i in nb.prange(n):
        y = half - f32(i)
        acc = np.zeros((n, B), dtype=np.float32)
        F0 = np.empty(n, np.int64)
        W0 = np.empty(n, np.float32)
        W1 = np.empty(n, np.float32)
        for v in range(V):
            _view_weights(mode, f32(cos_b[v]), f32(sin_b[v]), y, xs, Rf, inv_step, off, hi, D, F0, W0, W1)
            row = qp[v]
            for j in range(n):
                a = W0[j]
                b = W1[j]
                k = F0[j]
                for s in range(B):
                    acc[j, s] += a * row[k, s] + b * row[k + 1, s]
        for j in range(n):
            for s in range(B):
                out[s, i, j] += acc[j, s]
