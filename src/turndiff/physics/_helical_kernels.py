"""Compiled kernel of the helical multi-row forward projector (Numba, parallel over rays).

Ray-driven: every ray from the (possibly shifted) source to a detector element centre is
clipped to the cylinder around the image grid and to the volume's z range, sampled at
equal in-plane steps, and the volume is trilinearly interpolated at each sample (zero
outside). It serves the synthetic helical scanner (tests, the DICOM-CT-PD simulator), not
the training hot path, so it favours plainness over the layout tricks of
``_numba_kernels``.
"""

from __future__ import annotations

import math

import numba as nb


@nb.njit(cache=True, fastmath=True, inline="always")
def _sample(mu, fi, fj, fk):
    nz, n = mu.shape[0], mu.shape[1]
    i0 = int(math.floor(fi))
    j0 = int(math.floor(fj))
    k0 = int(math.floor(fk))
    if i0 < -1 or j0 < -1 or k0 < -1 or i0 >= n or j0 >= n or k0 >= nz:
        return 0.0
    wi, wj, wk = fi - i0, fj - j0, fk - k0
    acc = 0.0
    for dk in range(2):
        k = k0 + dk
        if k < 0 or k >= nz:
            continue
        wk_ = wk if dk else 1.0 - wk
        for di in range(2):
            i = i0 + di
            if i < 0 or i >= n:
                continue
            wi_ = wi if di else 1.0 - wi
            for dj in range(2):
                j = j0 + dj
                if j < 0 or j >= n:
                    continue
                acc += mu[k, i, j] * wk_ * wi_ * (wj if dj else 1.0 - wj)
    return acc


@nb.njit(cache=True, parallel=True, fastmath=True)
def helical_fp(mu, ps, z_first, dzs, src, dx, dy, dzr, step, out):
    """mu [Z, N, N] (per mm); src [V, 3] (mm); dx, dy [V, C] detector element centres in
    plane (mm); dzr [V, R] detector row z (mm); out [V, C, R] line integrals."""
    nv, nc, nr = out.shape
    n = mu.shape[1]
    nz = mu.shape[0]
    half = (n - 1) / 2.0
    rad = (n / 2.0 + 1.0) * ps * math.sqrt(2.0)
    zlo = z_first - dzs
    zhi = z_first + nz * dzs
    h = step * ps
    for idx in nb.prange(nv * nc):
        v = idx // nc
        c = idx - v * nc
        ax, ay, az = src[v, 0], src[v, 1], src[v, 2]
        ex, ey = dx[v, c] - ax, dy[v, c] - ay
        L = math.sqrt(ex * ex + ey * ey)
        ux, uy = ex / L, ey / L
        b = ax * ux + ay * uy
        disc = b * b - (ax * ax + ay * ay - rad * rad)
        if disc <= 0.0:
            for r in range(nr):
                out[v, c, r] = 0.0
            continue
        sq = math.sqrt(disc)
        s_in, s_out = -b - sq, -b + sq
        for r in range(nr):
            sz = (dzr[v, r] - az) / L
            s0, s1 = s_in, s_out
            if abs(sz) > 1e-12:
                t0 = (zlo - az) / sz
                t1 = (zhi - az) / sz
                if t0 > t1:
                    t0, t1 = t1, t0
                s0 = max(s0, t0)
                s1 = min(s1, t1)
            elif az < zlo or az > zhi:
                s1 = s0
            if s1 <= s0:
                out[v, c, r] = 0.0
                continue
            m = int(math.ceil((s1 - s0) / h))
            hh = (s1 - s0) / m
            acc = 0.0
            for q in range(m):
                s = s0 + (q + 0.5) * hh
                x = ax + s * ux
                y = ay + s * uy
                z = az + s * sz
                acc += _sample(mu, half - y / ps, x / ps + half, (z - z_first) / dzs)
            out[v, c, r] = acc * hh * math.sqrt(1.0 + sz * sz)
    return out

