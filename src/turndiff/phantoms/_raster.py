"""Anti-aliased rasterisation of smooth shapes and band-limited texture fields.

Everything here works in millimetres on a square pixel grid. Shapes are described by an
approximate signed distance ``d`` (mm, negative inside) evaluated only inside their
bounding box, and are painted with a partial-volume weight: the overlap of a pixel-wide
box with the shape across its edge. This gives the smooth edges of a supersampled
render at the cost of a single pass, and the same anatomy at every pixel size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import scipy.fft

__all__ = ["Canvas", "Blob", "add_wobble", "random_wobble", "polyline_distance", "line_coverage", "gaussian_fields"]

Box = tuple[slice, slice]


class Canvas:
    """A square HU image with its label map and millimetre coordinates.

    Pixel ``(i, j)`` has centre ``x = (j - (n - 1) / 2) * h`` (towards the image right,
    the patient's left) and ``y = (i - (n - 1) / 2) * h`` (towards the image bottom,
    posterior).
    """

    def __init__(self, size: int, spacing: float, background: float = -1000.0) -> None:
        self.n = int(size)
        self.h = float(spacing)
        coords = ((np.arange(self.n) - (self.n - 1) / 2.0) * self.h).astype(np.float32)
        self.x = coords
        self.y = coords
        self.hu = np.full((self.n, self.n), background, dtype=np.float32)
        self.label = np.zeros((self.n, self.n), dtype=np.uint8)
        self.full: Box = (slice(0, self.n), slice(0, self.n))

    def box(self, x0: float, x1: float, y0: float, y1: float) -> Box | None:
        """Pixel slices covering ``[x0, x1] x [y0, y1]`` mm (None when off the image)."""
        c = (self.n - 1) / 2.0
        j0 = max(int(math.floor(x0 / self.h + c)) - 1, 0)
        j1 = min(int(math.ceil(x1 / self.h + c)) + 2, self.n)
        i0 = max(int(math.floor(y0 / self.h + c)) - 1, 0)
        i1 = min(int(math.ceil(y1 / self.h + c)) + 2, self.n)
        if j0 >= j1 or i0 >= i1:
            return None
        return (slice(i0, i1), slice(j0, j1))

    def grid(self, box: Box) -> tuple[np.ndarray, np.ndarray]:
        """Broadcastable ``(X [1, w], Y [h, 1])`` mm coordinates of a box."""
        return self.x[box[1]][None, :], self.y[box[0]][:, None]

    def alpha(self, d: np.ndarray, edge: float = 0.0) -> np.ndarray:
        """Partial-volume weight of a shape from its signed distance ``d`` (mm).

        ``edge`` (mm) widens the transition beyond one pixel for soft margins.
        """
        w = max(self.h, edge)
        return np.clip(0.5 - d / w, 0.0, 1.0).astype(np.float32, copy=False)

    def paint(
        self,
        box: Box | None,
        alpha: np.ndarray,
        value: float | np.ndarray,
        label: int | None = None,
    ) -> None:
        """Composite ``value`` over the image with weight ``alpha`` inside ``box``."""
        if box is None:
            return
        hu = self.hu[box]
        hu += alpha * (value - hu)
        if label is not None:
            self.label[box][alpha >= 0.5] = label

    def point_index(self, x: float, y: float) -> tuple[int, int]:
        c = (self.n - 1) / 2.0
        i = min(max(int(round(y / self.h + c)), 0), self.n - 1)
        j = min(max(int(round(x / self.h + c)), 0), self.n - 1)
        return i, j


@dataclass
class Blob:
    """A smooth closed shape: a rotated four-quadrant superellipse with a radial wobble.

    ``ax = (left, right)`` and ``ay = (top, bottom)`` are the half-widths in mm of the
    unrotated shape, ``p`` the superellipse exponent (2 is an ellipse, larger is boxier)
    and ``wobble`` complex Fourier coefficients ``c_k`` (k = 1, 2, ...) of the relative
    boundary radius ``1 + sum Re(c_k e^{i k theta})``.
    """

    cx: float
    cy: float
    ax: tuple[float, float]
    ay: tuple[float, float]
    angle: float = 0.0
    p: float = 2.0
    wobble: np.ndarray = field(default_factory=lambda: np.zeros(0, np.complex64))

    @property
    def reach(self) -> float:
        """Radius (mm) of a disc around the centre that holds the whole shape."""
        r = max(self.ax + self.ay) * (1.0 + float(np.abs(self.wobble).sum()))
        return r * (2 ** (0.5 - 1.0 / self.p) if self.p > 2 else 1.0)

    def bbox(self, canvas: Canvas, margin: float = 0.0) -> Box | None:
        r = self.reach + margin + 2 * canvas.h
        return canvas.box(self.cx - r, self.cx + r, self.cy - r, self.cy + r)

    def sdf(self, canvas: Canvas, box: Box | None = None, *, want_phase: bool = False):
        """Approximate signed distance (mm) inside ``box`` (default: the shape's bbox).

        Returns ``(box, d)``, or ``(box, d, z)`` with ``z = e^{i theta}`` in the shape's
        normalised frame when ``want_phase`` (used to vary layer thickness with angle).
        """
        if box is None:
            box = self.bbox(canvas)
        if box is None:
            return (None, None, None) if want_phase else (None, None)
        X, Y = canvas.grid(box)
        X = X - np.float32(self.cx)
        Y = Y - np.float32(self.cy)
        c, s = np.float32(math.cos(self.angle)), np.float32(math.sin(self.angle))
        xr = c * X + s * Y
        yr = -s * X + c * Y
        a = np.where(xr < 0, np.float32(self.ax[0]), np.float32(self.ax[1]))
        b = np.where(yr < 0, np.float32(self.ay[0]), np.float32(self.ay[1]))
        u = xr / a
        v = yr / b
        eps = np.float32(1e-6)
        if self.p == 2.0:
            rho = np.sqrt(u * u + v * v)
            grad = np.sqrt((u / a) ** 2 + (v / b) ** 2) / np.maximum(rho, eps)
        else:
            p = np.float32(self.p)
            au, av = np.abs(u) + eps, np.abs(v) + eps
            rho = (au**p + av**p) ** (1 / p)
            grad = rho ** (1 - p) * np.sqrt(au ** (2 * p - 2) / a**2 + av ** (2 * p - 2) / b**2)
        grad = np.maximum(grad, np.float32(1.0 / max(self.ax + self.ay)))
        radius = 1.0
        z = None
        if len(self.wobble) or want_phase:
            inv = 1.0 / np.maximum(rho, eps)
            z = (u * inv + 1j * (v * inv)).astype(np.complex64)
            if len(self.wobble):
                zk = z
                radius = np.ones_like(rho)
                for ck in self.wobble:
                    radius += (ck * zk).real
                    zk = zk * z
        d = ((rho - radius) / grad).astype(np.float32, copy=False)
        if want_phase:
            return box, d, z
        return box, d

    def boundary_point(self, theta: float, inset: float = 0.0) -> tuple[float, float]:
        """Point at polar angle ``theta`` (image frame, radians from +x towards +y)
        on the boundary, moved ``inset`` mm towards the centre along the ray."""
        dx, dy = math.cos(theta), math.sin(theta)
        c, s = math.cos(self.angle), math.sin(self.angle)
        xr, yr = c * dx + s * dy, -s * dx + c * dy
        a = self.ax[0] if xr < 0 else self.ax[1]
        b = self.ay[0] if yr < 0 else self.ay[1]
        u, v = xr / a, yr / b
        rho = (abs(u) ** self.p + abs(v) ** self.p) ** (1 / self.p)
        t = math.atan2(v, u)
        radius = 1.0 + sum(
            (ck * complex(math.cos((k + 1) * t), math.sin((k + 1) * t))).real
            for k, ck in enumerate(self.wobble)
        )
        r = radius / rho - inset
        return self.cx + r * dx, self.cy + r * dy


def random_wobble(rng: np.random.Generator, amp: float, kmax: int = 6, kmin: int = 2) -> np.ndarray:
    """Fourier coefficients for a smooth random boundary, decaying as 1/k."""
    out = np.zeros(kmax, np.complex64)
    for k in range(kmin, kmax + 1):
        out[k - 1] = amp / (k - kmin + 1) * rng.normal() * np.exp(1j * rng.uniform(0, 2 * np.pi))
    return out


def add_wobble(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Sum of two wobble coefficient vectors of any lengths."""
    out = np.zeros(max(len(a), len(b)), np.complex64)
    out[: len(a)] += a
    out[: len(b)] += b
    return out


def polyline_distance(
    canvas: Canvas, pts: np.ndarray, radii: np.ndarray, pad: float = 0.0
) -> tuple[Box | None, np.ndarray | None, np.ndarray | None]:
    """Distance (mm) to a tapered polyline and the local radius at the nearest point.

    ``pts`` is ``[K, 2]`` (x, y) mm and ``radii`` ``[K]`` mm. Returns ``(box, dist, r)``.
    """
    rmax = float(radii.max()) + pad + 2 * canvas.h
    box = canvas.box(
        float(pts[:, 0].min()) - rmax,
        float(pts[:, 0].max()) + rmax,
        float(pts[:, 1].min()) - rmax,
        float(pts[:, 1].max()) + rmax,
    )
    if box is None:
        return None, None, None
    X, Y = canvas.grid(box)
    best = None
    best_r = None
    best_key = None
    for k in range(len(pts) - 1):
        ax, ay = pts[k]
        bx, by = pts[k + 1]
        ex, ey = bx - ax, by - ay
        ll = ex * ex + ey * ey
        if ll < 1e-12:
            t = np.zeros((1, 1), np.float32)
        else:
            t = np.clip(((X - ax) * ex + (Y - ay) * ey) / ll, 0.0, 1.0)
        dx = X - (ax + t * ex)
        dy = Y - (ay + t * ey)
        dist = np.sqrt(dx * dx + dy * dy)
        r = radii[k] + t * (radii[k + 1] - radii[k])
        key = dist - r
        if best is None:
            best, best_r, best_key = dist, np.broadcast_to(r, dist.shape), key
        else:
            closer = key < best_key
            best = np.where(closer, dist, best)
            best_r = np.where(closer, r, best_r)
            best_key = np.where(closer, key, best_key)
    return box, best.astype(np.float32), np.asarray(best_r, np.float32)


def line_coverage(dist: np.ndarray, r: np.ndarray, h: float) -> np.ndarray:
    """Fraction of a pixel-wide box, ``dist`` mm from a line's centre, inside a strip of
    half-width ``r``: exact partial volume across a thin vessel of any width."""
    half = 0.5 * h
    cov = np.minimum(dist + half, r) - np.maximum(dist - half, -r)
    return np.clip(cov / h, 0.0, 1.0).astype(np.float32, copy=False)


def _lattice_sum(sigma: float, fov: float) -> float:
    """sum over integer k of exp(-4 pi^2 sigma^2 k^2 / fov^2), squared (2D lattice)."""
    kmax = int(fov / max(sigma, 1e-3)) + 2
    k = np.arange(-kmax, kmax + 1, dtype=np.float64)
    s1 = float(np.exp(-4.0 * np.pi**2 * sigma**2 * k**2 / fov**2).sum())
    return s1 * s1


def _white_spectrum(seq: np.random.SeedSequence, index: int, n: int) -> np.ndarray:
    """Unit complex Gaussian coefficients in ``rfft2`` layout for an ``n``-grid.

    Coefficients are drawn ring by ring in integer frequency (``max(|ky|, kx)`` in
    ``(2^(L-1), 2^L]``) from generators keyed by ``(index, L)``, so a frequency gets the
    same coefficient on every grid: a field is one continuous random function, sampled
    more or less finely.
    """
    ky = np.rint(np.fft.fftfreq(n) * n).astype(np.int64)
    kx = np.arange(n // 2 + 1, dtype=np.int64)
    m = np.maximum(np.abs(ky)[:, None], kx[None, :])
    out = np.empty((n, n // 2 + 1), np.complex64)
    top = int(m.max())
    L = 5
    while True:
        hi = 1 << L
        lo = -1 if L == 5 else hi >> 1
        sel = (m > lo) & (m <= hi)
        if sel.any():
            ring_seq = np.random.SeedSequence(seq.entropy, spawn_key=tuple(seq.spawn_key) + (index, L))
            rng = np.random.default_rng(ring_seq)
            block = rng.standard_normal((2, 2 * hi + 1, hi + 1), dtype=np.float32)
            iy, ix = np.nonzero(sel)
            by = ky[iy] + hi
            bx = kx[ix]
            out[iy, ix] = (block[0, by, bx] + 1j * block[1, by, bx]) * np.float32(np.sqrt(0.5))
        if hi >= top:
            return out
        L += 1


def gaussian_fields(
    seq: np.random.SeedSequence, n: int, spacing: float, sigmas_mm: list[float]
) -> np.ndarray:
    """Independent stationary Gaussian random fields, ``[len(sigmas), n, n]`` float32.

    Field ``i`` is white noise smoothed by a Gaussian of ``sigmas_mm[i]`` mm, periodic
    over the field of view ``n * spacing``, scaled to unit variance as a continuous
    function and then averaged over each pixel (``sinc`` transfer). Textures finer than
    a pixel thus fade at coarse sampling instead of turning into pixel noise, and for a
    fixed field of view the same seed gives the same texture at every ``n``.
    """
    fov = n * spacing
    k = len(sigmas_mm)
    fy = (np.fft.fftfreq(n) * n).astype(np.float32)[:, None]
    fx = (np.fft.rfftfreq(n) * n).astype(np.float32)[None, :]
    k2 = fy * fy + fx * fx  # integer frequency index squared
    box = np.sinc(fy / n) * np.sinc(fx / n)
    # irfft2 counts interior columns twice (Hermitian pairs)
    spec = np.empty((k, n, n // 2 + 1), np.complex64)
    for i, sigma in enumerate(sigmas_mm):
        tf = np.exp(-2.0 * np.pi**2 * sigma**2 * k2 / fov**2) * box
        scale = float(n * n) / math.sqrt(_lattice_sum(sigma, fov))
        spec[i] = _white_spectrum(seq, i, n) * (tf * np.float32(scale)).astype(np.float32)
    return scipy.fft.irfft2(spec, s=(n, n), workers=-1).astype(np.float32, copy=False)
