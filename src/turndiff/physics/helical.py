"""Helical multi-row CT: the scan's geometry, a forward projector over a voxel volume, and
single-slice rebinning of the helical projections onto 2D fan-beam sinograms.

This is what lets turndiff train on and reconstruct *real* scanner projections (DICOM-CT-PD,
:mod:`turndiff.io.ctpd`): a third-generation helical scan with a cylindrical multi-row
detector and, often, a flying focal spot, rebinned to the arc-detector fan geometry of
:class:`~turndiff.physics.FanBeamGeometry` that the rest of turndiff works in.

Coordinates (DICOM-CT-PD's, docs/FORMATS.md): view ``p`` has its *detector focal centre* at
cylindrical ``(rho_p, phi_p, z_p)``; the x-ray source sits at
``(rho_p + drho_p, phi_p + dphi_p, z_p + dz_p)`` (the flying-focal-spot shifts). A cylindrical
coordinate ``(rho, phi)`` is the point ``(-rho sin phi, rho cos phi)``, so turndiff's view angle
(:mod:`turndiff.physics.geometry`: source at ``R (cos b, sin b)``) is ``b = phi + pi / 2``.
The detector is a cylinder of radius ``det_radius`` (DICOM-CT-PD's *constant radial
distance*) centred on the focal centre; column ``c`` sits at fan angle
``gamma_c = (c - c0) * du / det_radius`` (positive towards ``u = (-sin b, cos b)``, as an
``arc`` detector of turndiff), row ``r`` at ``z_p + (r - r0) * dv``. Projections are post-log
line integrals ``[views, columns, rows]``.

Rebinning (:func:`rebin_to_fan`) is single-slice rebinning with row interpolation: every
measured ray is mapped to the 2D fan ray it is closest to (its in-plane line, written as the
view angle and fan angle of an ideal source on a circle), and its height is taken where it
passes nearest the rotation axis. For a slice at ``z0`` and a wanted fan ray, each turn of
the helix whose detector straddles ``z0`` there gives one estimate (linear interpolation
between views and between the two rows around ``z0``); the estimates are averaged with
weights that fall linearly from the central row to the edge rows (smaller cone angle, smaller
error). ``interp=180`` adds the complementary rays (the same line seen from the opposite
side, ``(b + pi - 2 gamma, -gamma)``), which doubles the estimates and fills the gaps a
pitch above 1 leaves; ``interp=360`` uses direct rays only. In-plane flying-focal-spot
positions are rebinned apart (each is a regular helix of its own) and merged in fan angle,
where their samples interleave. Known error: a ray is not in the plane ``z0`` but crosses it
at the axis; away from the axis it is off by ``distance * tan(cone angle)`` (at most half
the detector's height at the isocentre, times the object's radius over the source radius),
which blurs sharp structures along z near the edge of the field of view. A target ray that
no turn reaches (a pitch far above 1, the fan's edge) takes the nearest edge row.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Literal

import numpy as np

from .geometry import FanBeamGeometry

__all__ = ["HelicalScan", "make_helical_scan", "helical_project", "rebin_to_fan", "rebin_noise_gain",
           "fan_geometry_for"]


@dataclass(frozen=True)
class HelicalScan:
    """The geometry of a helical multi-row scan, one entry per view for what moves.

    Lengths in mm, angles in radians. Per-view arrays are float64 ``[P]``: ``phi``, ``z``,
    ``rho`` locate the detector focal centre, ``dphi``, ``dz``, ``drho`` the source's shift
    from it (flying focal spot; zeros without). ``central`` is the detector element through
    which the focal centre sees the rotation axis, ``(column, row)``, 0-based (DICOM-CT-PD
    stores it 1-based). ``views_per_turn`` counts every projection of one rotation
    (both focal spots of an in-plane flying focal spot).
    """

    rows: int
    cols: int
    du: float
    dv: float
    det_radius: float
    central: tuple[float, float]
    phi: np.ndarray
    z: np.ndarray
    rho: np.ndarray
    dphi: np.ndarray
    dz: np.ndarray
    drho: np.ndarray
    views_per_turn: int
    ffs_mode: str = "FFSNONE"
    mu_water: float | None = None
    photons: float | None = None
    extra: dict = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        p = len(self.phi)
        for name in ("z", "rho", "dphi", "dz", "drho"):
            if len(getattr(self, name)) != p:
                raise ValueError(f"helical scan: {name} has {len(getattr(self, name))} views, phi has {p}")
        if self.rows < 1 or self.cols < 2 or p < 2:
            raise ValueError("helical scan: needs at least 1 row, 2 columns and 2 views")
        for name in ("du", "dv", "det_radius"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v > 0):
                raise ValueError(f"helical scan: {name} must be positive, got {v}")
        if not np.all(self.det_radius > self.rho):
            raise ValueError("helical scan: the detector radius must exceed the source radius")

    @property
    def n_views(self) -> int:
        return len(self.phi)

    @property
    def source_radius(self) -> float:
        """Median focal-centre radius (constant on every scanner we know)."""
        return float(np.median(self.rho))

    @property
    def feed_per_turn(self) -> float:
        """Table feed per rotation (mm), from the first and last views."""
        turns = (np.unwrap(self.phi)[-1] - np.unwrap(self.phi)[0]) / (2 * np.pi)
        return float((self.z[-1] - self.z[0]) / turns) if turns else 0.0

    @property
    def pitch(self) -> float:
        """Feed per turn over the detector's height at the isocentre."""
        return abs(self.feed_per_turn) / (self.rows * self.dv * self.source_radius / self.det_radius)

    def subsets(self) -> list[np.ndarray]:
        """View indices of each focal-spot position: views whose source shifts are equal."""
        key = np.stack([np.round(self.dphi, 9), np.round(self.dz, 6), np.round(self.drho, 6)], 1)
        _, inverse = np.unique(key, axis=0, return_inverse=True)
        return [np.flatnonzero(inverse.ravel() == k) for k in range(inverse.max() + 1)]


def make_helical_scan(
    *,
    views_per_turn: int,
    turns: float,
    rows: int = 64,
    cols: int = 736,
    du: float = 1.2858,
    dv: float = 1.0947,
    source_radius: float = 595.0,
    det_radius: float = 1085.6,
    pitch: float = 1.0,
    z_start: float = 0.0,
    phi_start: float = 0.0,
    ffs: Literal["none", "phi", "z", "phiz"] = "none",
    central: tuple[float, float] | None = None,
) -> HelicalScan:
    """A helical scan like a third-generation scanner's (defaults: 64 x 736 elements).

    ``pitch`` is table feed per turn over the detector height at the isocentre. A flying
    focal spot alternates the source between two positions (four for ``phiz``): in plane by
    ``+-du / (4 (det_radius - source_radius))`` rad, which moves the rays through the
    isocentre by a quarter of a column either way (so the two positions interleave), and in
    z by ``+-dv * source_radius / (4 (det_radius - source_radius))`` mm (a quarter row at the
    isocentre). ``central`` defaults to the detector's centre with the usual quarter-column
    offset.
    """
    if ffs not in ("none", "phi", "z", "phiz"):
        raise ValueError(f"ffs must be none, phi, z or phiz, got {ffs!r}")
    n = int(round(views_per_turn * turns))
    k = np.arange(n, dtype=np.float64)
    phi = phi_start + 2 * np.pi * k / views_per_turn
    feed = pitch * rows * dv * source_radius / det_radius
    z = z_start + feed * k / views_per_turn
    dphi, dz = np.zeros(n), np.zeros(n)
    a_phi = du / (4 * (det_radius - source_radius))
    a_z = dv * source_radius / (4 * (det_radius - source_radius))
    idx = np.arange(n)
    if ffs == "phi":
        dphi = np.where(idx % 2 == 0, -a_phi, a_phi)
    elif ffs == "z":
        dz = np.where(idx % 2 == 0, -a_z, a_z)
    elif ffs == "phiz":
        dphi = np.where(idx % 2 == 0, -a_phi, a_phi)
        dz = np.where((idx // 2) % 2 == 0, -a_z, a_z)
    mode = {"none": "FFSNONE", "phi": "FFSXY", "z": "FFSZ", "phiz": "FFSXYZ"}[ffs]
    if central is None:
        central = ((cols - 1) / 2 + 0.25, (rows - 1) / 2)
    return HelicalScan(rows=rows, cols=cols, du=du, dv=dv, det_radius=det_radius, central=central,
                       phi=phi, z=z, rho=np.full(n, float(source_radius)), dphi=dphi, dz=dz, drho=np.zeros(n),
                       views_per_turn=views_per_turn, ffs_mode=mode)


# --------------------------------------------------------------------------- projector
def _ray_ends(scan: HelicalScan, views: np.ndarray):
    """Source ``[k, 3]`` and detector element centres ``[k, C, R, 3]`` (mm) of ``views``."""
    b = scan.phi[views] + np.pi / 2
    rs = scan.rho[views] + scan.drho[views]
    bs = b + scan.dphi[views]
    src = np.stack([rs * np.cos(bs), rs * np.sin(bs), scan.z[views] + scan.dz[views]], -1)
    fx, fy = scan.rho[views] * np.cos(b), scan.rho[views] * np.sin(b)
    gamma = (np.arange(scan.cols) - scan.central[0]) * scan.du / scan.det_radius
    ang = b[:, None] + np.pi - gamma[None, :]
    dx = fx[:, None] + scan.det_radius * np.cos(ang)
    dy = fy[:, None] + scan.det_radius * np.sin(ang)
    dzr = (np.arange(scan.rows) - scan.central[1]) * scan.dv
    return src, dx, dy, scan.z[views][:, None] + dzr[None, :]


def helical_project(
    mu: np.ndarray,
    scan: HelicalScan,
    *,
    pixel_spacing: float,
    slice_positions: np.ndarray,
    views: np.ndarray | None = None,
    step: float = 0.5,
    progress: bool = False,
) -> np.ndarray:
    """Line integrals of a voxel volume along every ray of a helical scan.

    Parameters
    ----------
    mu : float array ``[Z, H, W]``
        Attenuation per mm; slice ``k`` is the plane ``z = slice_positions[k]``, the grid
        as turndiff's images (:mod:`turndiff.physics.geometry`), ``H == W``.
    scan : HelicalScan
    pixel_spacing : float
        mm per pixel in plane.
    slice_positions : float array ``[Z]``
        Increasing, evenly spaced z of the slices (mm).
    views : int array, optional
        Which views (default all).
    step : float
        Sampling step along a ray, in pixels (trilinear interpolation).

    Returns
    -------
    float32 ``[len(views), cols, rows]``, post-log. Outside the volume's z range the object
    is taken as empty (air): simulate a volume that covers the helix's reach.
    """
    from ._helical_kernels import helical_fp

    mu = np.ascontiguousarray(mu, np.float32)
    if mu.ndim != 3 or mu.shape[1] != mu.shape[2]:
        raise ValueError(f"volume must be [Z, N, N], got {mu.shape}")
    zs = np.asarray(slice_positions, np.float64)
    if len(zs) != mu.shape[0]:
        raise ValueError("one slice position per slice")
    dzs = float(zs[1] - zs[0]) if len(zs) > 1 else 1.0
    if len(zs) > 1 and not np.allclose(np.diff(zs), dzs, rtol=1e-4, atol=1e-6):
        raise ValueError("slice positions must be evenly spaced and increasing")
    views = np.arange(scan.n_views) if views is None else np.asarray(views)
    out = np.empty((len(views), scan.cols, scan.rows), np.float32)
    chunk = 64
    it = range(0, len(views), chunk)
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(it, desc="helical projection", unit="chunk", total=len(range(0, len(views), chunk)))
    for s in it:
        v = views[s:s + chunk]
        src, dx, dy, dzr = _ray_ends(scan, v)
        helical_fp(mu, float(pixel_spacing), float(zs[0]), dzs, src, dx, dy, dzr, float(step), out[s:s + chunk])
    return out


# --------------------------------------------------------------------------- rebinning
def fan_geometry_for(scan: HelicalScan, image_size: int, pixel_spacing: float) -> FanBeamGeometry:
    """The 2D fan geometry that :func:`rebin_to_fan` writes: the scan's source radius,
    detector radius and column pitch (arc detector), symmetric columns, and the views of one
    focal-spot position per turn."""
    n_inplane = len({round(float(d), 9) for d in scan.dphi})
    kw = {"mu_water": scan.mu_water} if scan.mu_water else {}
    return FanBeamGeometry(
        image_size=int(image_size), pixel_spacing=float(pixel_spacing),
        views=int(round(scan.views_per_turn / n_inplane)), det_count=scan.cols, det_spacing=scan.du,
        src_radius=scan.source_radius, src_det_distance=scan.det_radius, det_shape="arc", **kw)


@dataclass
class _Pseudo:
    """One regular helix to rebin: a focal-spot position's views, direct or complementary."""

    views: np.ndarray      # [P'] view indices into the scan, in increasing angle
    beta: np.ndarray       # [P'] turndiff angle of the focal centre, unwrapped, increasing
    zf: np.ndarray         # [P'] focal-centre z
    gamma: np.ndarray      # [C] the fan angle of each column's ray for an ideal source
    delta: np.ndarray      # [C] its view angle minus the focal centre's
    kappa: np.ndarray      # [C] in-plane distance source -> nearest point to the axis, over source -> detector
    dz: float              # source z shift
    order: np.ndarray      # [C] columns sorted by gamma


def _pseudo_helices(scan: HelicalScan, R: float, complementary: bool) -> list[_Pseudo]:
    out = []
    g0 = (np.arange(scan.cols) - scan.central[0]) * scan.du / scan.det_radius
    for idx in scan.subsets():
        b = np.unwrap(scan.phi[idx]) + np.pi / 2
        if b[-1] < b[0]:  # a gantry turning the other way: the same rays, taken in increasing angle
            idx, b = idx[::-1], b[::-1]
        dphi, drho, dz = float(scan.dphi[idx[0]]), float(scan.drho[idx[0]]), float(scan.dz[idx[0]])
        rho = float(np.median(scan.rho[idx]))
        # One view at angle 0 is enough: every quantity below turns with the gantry.
        a = np.array([(rho + drho) * math.cos(dphi), (rho + drho) * math.sin(dphi)])
        ang = np.pi - g0
        det = np.stack([rho + scan.det_radius * np.cos(ang), scan.det_radius * np.sin(ang)], -1)
        d = det - a
        L = np.hypot(d[:, 0], d[:, 1])
        d = d / L[:, None]
        psi = np.arctan2(d[:, 1], d[:, 0])           # direction angle = b' + pi - gamma'
        b_line = psi - np.pi                         # parallel angle b = b' - gamma'
        t = a[0] * -np.sin(b_line) + a[1] * np.cos(b_line)
        gamma = np.arcsin(np.clip(t / R, -1, 1))
        delta = np.angle(np.exp(1j * (b_line + gamma)))
        kappa = (-(a @ d.T)) / L
        sets = [(gamma, delta)]
        if complementary:
            sets.append((-gamma, delta + np.pi - 2 * gamma))
        for gm, de in sets:
            out.append(_Pseudo(views=idx, beta=b, zf=scan.z[idx], gamma=gm, delta=de, kappa=kappa, dz=dz,
                               order=np.argsort(gm)))
    return out


def _rebin_one(ps: _Pseudo, proj: Callable[[np.ndarray], np.ndarray], scan: HelicalScan, z0: float,
               beta_out: np.ndarray, reach: float):
    """Weighted sum and weight ``[V, C]`` of one pseudo-helix's estimates for slice z0."""
    V, C, R_ = len(beta_out), scan.cols, scan.rows
    near = np.flatnonzero(np.abs(ps.zf - z0) <= reach)
    S = np.zeros((V, C))
    W = np.zeros((V, C))
    if len(near) < 2:
        return S, W
    lo, hi = near[0], near[-1]
    bsub, zsub = ps.beta[lo:hi + 1], ps.zf[lo:hi + 1]
    data = proj(ps.views[lo:hi + 1])                        # [k, C, R]
    rc = scan.central[1]
    half = max(R_ / 2.0, 1.0)
    best_d = np.full((V, C), np.inf)
    best_v = np.zeros((V, C))
    # The measured ray (view p, column c) is the ideal fan ray (beta_p + delta_c, gamma_c).
    target = beta_out[:, None] - ps.delta[None, :]          # wanted focal-centre angle, mod 2 pi
    k_lo = math.floor((bsub[0] - (beta_out.max() - ps.delta.min())) / (2 * np.pi)) - 1
    k_hi = math.ceil((bsub[-1] - (beta_out.min() - ps.delta.max())) / (2 * np.pi)) + 1
    cols = np.broadcast_to(np.arange(C)[None, :], (V, C))
    for k in range(k_lo, k_hi + 1):
        bt = target + 2 * np.pi * k
        ok = (bt >= bsub[0]) & (bt <= bsub[-1])
        if not ok.any():
            continue
        q = np.interp(bt, bsub, np.arange(len(bsub), dtype=np.float64))
        zf = np.interp(bt, bsub, zsub)
        za = zf + ps.dz
        r = rc + ((z0 - za) / ps.kappa[None, :] + ps.dz) / scan.dv
        q0 = np.clip(np.floor(q).astype(np.int64), 0, len(bsub) - 2)
        fq = q - q0
        rr = np.clip(r, 0, R_ - 1)
        r0 = np.clip(np.floor(rr).astype(np.int64), 0, max(R_ - 2, 0))
        fr = rr - r0
        r1 = np.minimum(r0 + 1, R_ - 1)
        val = ((1 - fq) * ((1 - fr) * data[q0, cols, r0] + fr * data[q0, cols, r1])
               + fq * ((1 - fr) * data[q0 + 1, cols, r0] + fr * data[q0 + 1, cols, r1]))
        inside = ok & (r >= 0) & (r <= R_ - 1)
        w = np.where(inside, np.maximum(1.0 - np.abs(r - rc) / half, 0.05), 0.0)
        S += w * val
        W += w
        dist = np.where(ok & ~inside, np.maximum(-r, r - (R_ - 1)), np.inf)
        better = dist < best_d
        best_d = np.where(better, dist, best_d)
        best_v = np.where(better, val, best_v)
    # Nothing reached z0 here: take the nearest edge row, with a weight too small to matter
    # wherever another estimate exists.
    miss = (W == 0) & np.isfinite(best_d)
    S += np.where(miss, 1e-6 * best_v, 0.0)
    W += np.where(miss, 1e-6, 0.0)
    return S, W


def _to_columns(values: np.ndarray, gamma_src: np.ndarray, gamma_out: np.ndarray) -> np.ndarray:
    """Linear interpolation along the last axis from sorted ``gamma_src`` onto
    ``gamma_out``; zero outside (no extrapolation)."""
    pos = np.interp(gamma_out, gamma_src, np.arange(len(gamma_src), dtype=np.float64))
    i0 = np.clip(np.floor(pos).astype(np.int64), 0, len(gamma_src) - 2)
    f = pos - i0
    out = (1 - f) * values[..., i0] + f * values[..., i0 + 1]
    out[..., (gamma_out < gamma_src[0]) | (gamma_out > gamma_src[-1])] = 0.0
    return out


def rebin_to_fan(
    scan: HelicalScan,
    projections: np.ndarray | Callable[[np.ndarray], np.ndarray],
    z_positions,
    geometry: FanBeamGeometry,
    *,
    interp: Literal[180, 360] = 180,
    progress: bool = False,
    out=None,
) -> np.ndarray:
    """Rebin helical projections onto 2D fan-beam sinograms at the slice positions ``z``.

    Parameters
    ----------
    scan : HelicalScan
    projections : float array ``[P, cols, rows]`` or callable
        Post-log projections, or a function that returns those of a sorted array of view
        indices (a reader streams them from disk; only about two turns around each slice
        are asked for).
    z_positions : floats
        Slice positions (mm, the scan's z axis).
    geometry : FanBeamGeometry
        The output geometry, normally :func:`fan_geometry_for` (``arc`` detector; its
        ``src_radius`` is the ideal source circle the rays are mapped to).
    interp : 180 or 360
        180: direct and complementary rays; 360: direct rays only (see the module's text).
    out : array-like ``[N, views, det_count]``, optional
        Where to put each slice as it is done (e.g. an HDF5 dataset, so a long scan is
        never whole in memory); returned.

    Returns
    -------
    float32 ``[N, geometry.views, geometry.det_count]`` (or ``out``).
    """
    if interp not in (180, 360):
        raise ValueError(f"interp must be 180 or 360, got {interp!r}")
    if geometry.det_shape != "arc":
        raise ValueError("rebin_to_fan writes an arc-detector geometry")
    if callable(projections):
        get = projections
    else:
        arr = np.asarray(projections)
        if arr.shape != (scan.n_views, scan.cols, scan.rows):
            raise ValueError(f"projections must be [views, cols, rows] = {(scan.n_views, scan.cols, scan.rows)}, "
                             f"got {arr.shape}")

        def get(v: np.ndarray) -> np.ndarray:
            return arr[v]

    R = geometry.src_radius
    z_positions = np.atleast_1d(np.asarray(z_positions, np.float64))
    pseudo = _pseudo_helices(scan, R, complementary=interp == 180)
    beta_out = geometry.angle_offset + 2 * np.pi * np.arange(geometry.views) / geometry.views
    gamma_out = (np.arange(geometry.det_count) - (geometry.det_count - 1) / 2 + geometry.det_offset) \
        * geometry.det_spacing / geometry.src_det_distance
    # Views whose rays can cross z0 near the axis: half the detector's height there, plus
    # the focal spot's z shift, plus a margin for the view interpolation and the edge rows.
    kappa = max(float(ps.kappa.max()) for ps in pseudo)
    reach = (scan.rows / 2 + 1) * scan.dv * kappa + float(np.max(np.abs(scan.dz))) + 0.25 * abs(scan.feed_per_turn)
    cache: dict[int, np.ndarray] = {}

    def cached(v: np.ndarray) -> np.ndarray:
        missing = [int(i) for i in v if int(i) not in cache]
        if missing:
            got = get(np.asarray(missing))
            for i, a in zip(missing, got):
                cache[i] = np.asarray(a, np.float32)
        return np.stack([cache[int(i)] for i in v])

    if out is None:
        out = np.empty((len(z_positions), geometry.views, geometry.det_count), np.float32)
    order = np.argsort(z_positions)
    it = order
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(order, desc="rebinning", unit="slice")
    for n in it:
        z0 = float(z_positions[n])
        S = np.zeros((geometry.views, geometry.det_count))
        W = np.zeros_like(S)
        # A focal spot's direct and complementary rays read the same views: stack them once.
        windows: dict[tuple[int, int, int], np.ndarray] = {}

        def window(v: np.ndarray) -> np.ndarray:
            key = (int(v[0]), int(v[-1]), len(v))
            if key not in windows:
                windows[key] = cached(v)
            return windows[key]

        for ps in pseudo:
            s, w = _rebin_one(ps, window, scan, z0, beta_out, reach)
            S += _to_columns(s[:, ps.order], ps.gamma[ps.order], gamma_out)
            W += _to_columns(w[:, ps.order], ps.gamma[ps.order], gamma_out)
        out[n] = np.where(W > 0, S / np.maximum(W, 1e-12), 0.0).astype(np.float32)
        # Views far below the next slice are not needed again (slices go up in z).
        keep_from = z0 - reach
        for i in [i for i in cache if scan.z[i] < keep_from]:
            del cache[i]
    return out


def rebin_noise_gain(scan: HelicalScan, geometry: FanBeamGeometry, z: float, *, interp: Literal[180, 360] = 180,
                     seed: int = 0) -> float:
    """How much rebinning lowers the variance of independent per-element noise: the
    variance of white unit noise over the variance of its rebinned slice at ``z``.

    Rebinning averages several interpolated measurements per output bin, so a rebinned
    sinogram is as noisy as one of ``I0 * gain`` photons per bin (its noise is also
    correlated between neighbouring bins, which this number leaves out)."""
    def noise(views: np.ndarray) -> np.ndarray:
        return np.stack([np.random.default_rng([seed, int(v)]).standard_normal((scan.cols, scan.rows))
                         for v in views]).astype(np.float32)

    s = rebin_to_fan(scan, noise, [z], geometry, interp=interp)[0]
    edge = max(1, geometry.det_count // 16)  # the outer columns have fewer estimates
    return float(1.0 / np.var(s[:, edge:-edge]))

