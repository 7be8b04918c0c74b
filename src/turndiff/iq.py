"""Task-based image quality: what a CT physicist measures on a nonlinear reconstruction.

PSNR and SSIM reward smooth images; a denoiser that erases a faint lesion can still score
well. These are the measures of AAPM TG-233 and the FDA's LCD-CT toolbox, as plain
functions on HU arrays (shapes and units in each docstring):

- :func:`nps` -- the noise power spectrum from repeated noise realisations (or flat ROIs),
  its radial average, peak and mean frequency;
- :func:`ttf` -- the task transfer function (contrast-dependent resolution) from the
  circular edge of an insert: its 50% and 10% frequencies;
- :func:`cho_detectability` -- a channelized Hotelling observer with Laguerre-Gauss
  channels (:func:`laguerre_gauss_channels`) for signal-known-exactly detection: d' and
  AUC, from signal-present and signal-absent ROIs;
- :func:`insert_accuracy` -- CT-number accuracy: mean, bias and noise of each insert.

Each is checked against an analytic case in ``tests/test_iq.py`` (white noise: flat NPS of
known level; a Gaussian blur: TTF ``exp(-2 pi^2 s^2 f^2)``; a Gaussian signal in white
noise: the ideal observer's ``d' = ||s|| / sigma``). Frequencies are in cycles/mm.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import special

from .errors import InputError

__all__ = ["NPSResult", "TTFResult", "Detectability", "nps", "ttf", "laguerre_gauss_channels", "cho_detectability",
           "insert_accuracy", "disc_rois"]


def _stack(x, name: str) -> np.ndarray:
    a = np.asarray(x, np.float64)
    if a.ndim == 2:
        a = a[None]
    if a.ndim != 3 or not np.isfinite(a).all():
        raise InputError(f"{name} must be finite [N, H, W] (or [H, W]), got shape {np.shape(x)}")
    return a


def _radial_average(values: np.ndarray, freq: np.ndarray, bin_width: float, f_max: float):
    edges = np.arange(0.0, f_max + bin_width, bin_width)
    idx = np.digitize(freq.ravel(), edges) - 1
    ok = (idx >= 0) & (idx < len(edges) - 1)
    sums = np.bincount(idx[ok], values.ravel()[ok], minlength=len(edges) - 1)
    counts = np.bincount(idx[ok], minlength=len(edges) - 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        avg = sums / counts
    centres = 0.5 * (edges[:-1] + edges[1:])
    keep = counts > 0
    return centres[keep], avg[keep]


# ------------------------------------------------------------------------------ NPS


@dataclass
class NPSResult:
    """``nps_2d`` (HU^2 mm^2, ``[H, W]``, zero frequency at the centre), the radial profile
    ``frequencies`` (cycles/mm) / ``radial`` (HU^2 mm^2), ``peak_frequency`` and
    ``mean_frequency`` (cycles/mm), and ``variance`` (HU^2, the NPS integrated)."""

    nps_2d: np.ndarray
    frequencies: np.ndarray
    radial: np.ndarray
    peak_frequency: float
    mean_frequency: float
    variance: float


def nps(noise: np.ndarray, pixel_spacing: float, *, detrend: str = "mean") -> NPSResult:
    """Noise power spectrum of noise-only ROIs ``[N, H, W]`` (HU; e.g. a realisation minus
    the mean of all realisations, times ``sqrt(N / (N - 1))``, or a flat region).

    ``NPS(fx, fy) = dx dy / (H W) <|DFT(n - mean)|^2>`` over the N ROIs (``detrend="mean"``
    removes each ROI's mean; ``"plane"`` a fitted plane; ``"none"`` nothing), so that its
    integral over frequency is the pixel variance. ``pixel_spacing`` in mm.
    """
    n = _stack(noise, "noise")
    if not (isinstance(pixel_spacing, (int, float)) and pixel_spacing > 0):
        raise InputError(f"pixel_spacing must be a positive number of mm, got {pixel_spacing!r}")
    if detrend == "mean":
        n = n - n.mean(axis=(1, 2), keepdims=True)
    elif detrend == "plane":
        h, w = n.shape[1:]
        yy, xx = np.mgrid[:h, :w]
        design = np.stack([np.ones(h * w), yy.ravel(), xx.ravel()], 1)
        coef, *_ = np.linalg.lstsq(design, n.reshape(len(n), -1).T, rcond=None)
        n = n - (design @ coef).T.reshape(n.shape)
    elif detrend != "none":
        raise InputError(f"detrend must be 'mean', 'plane' or 'none', got {detrend!r}")
    _, h, w = n.shape
    power = np.mean(np.abs(np.fft.fft2(n)) ** 2, axis=0) * pixel_spacing**2 / (h * w)
    power = np.fft.fftshift(power)
    fy = np.fft.fftshift(np.fft.fftfreq(h, pixel_spacing))
    fx = np.fft.fftshift(np.fft.fftfreq(w, pixel_spacing))
    fr = np.hypot(*np.meshgrid(fy, fx, indexing="ij"))
    nyquist = 0.5 / pixel_spacing
    ac = fr > 0  # the zero frequency is the ROIs' means, which detrending removes
    f, radial = _radial_average(power[ac], fr[ac], 1.0 / (pixel_spacing * max(h, w)), nyquist)
    df_area = 1.0 / (pixel_spacing * h) / (pixel_spacing * w)
    variance = float(power.sum() * df_area)
    weight = radial * f  # a ring's area grows with f
    mean_f = float((f * weight).sum() / weight.sum()) if weight.sum() > 0 else math.nan
    return NPSResult(power, f, radial, float(f[np.argmax(radial)]), mean_f, variance)


# ------------------------------------------------------------------------------ TTF


@dataclass
class TTFResult:
    """``frequencies`` (cycles/mm) and ``ttf`` (1 at zero frequency); ``f50`` and ``f10``
    (cycles/mm) where it falls to 50% and 10%; ``contrast`` (HU) of the insert measured
    from the edge spread function; ``esf_r`` / ``esf`` (mm, HU) the oversampled edge."""

    frequencies: np.ndarray
    ttf: np.ndarray
    f50: float
    f10: float
    contrast: float
    esf_r: np.ndarray
    esf: np.ndarray


def _crossing(f: np.ndarray, y: np.ndarray, level: float) -> float:
    below = np.flatnonzero(y < level)
    if below.size == 0:
        return math.nan
    i = int(below[0])
    if i == 0:
        return float(f[0])
    return float(f[i - 1] + (level - y[i - 1]) * (f[i] - f[i - 1]) / (y[i] - y[i - 1]))


def ttf(image: np.ndarray, centre: tuple[float, float], radius: float, pixel_spacing: float, *,
        bin_fraction: float = 0.1, half_width: float | None = None) -> TTFResult:
    """Task transfer function from the circular edge of an insert (the TG-233 method).

    ``image``: ``[H, W]`` HU, or ``[N, H, W]`` realisations averaged first (averaging many
    noisy images is what makes a low-contrast TTF measurable). ``centre`` ``(row, col)``
    and ``radius`` in pixels; ``pixel_spacing`` in mm. The pixels within ``half_width``
    (default: the radius) of the edge are binned by their distance to the centre in bins of
    ``bin_fraction`` pixels (the edge spread function, oversampled), the ESF is
    differentiated into the line spread function, Hann-windowed, and its Fourier magnitude
    normalised at zero frequency is the TTF.
    """
    img = _stack(image, "image").mean(axis=0)
    h, w = img.shape
    hw = float(radius if half_width is None else half_width)
    if radius <= 0 or hw <= 0:
        raise InputError("radius and half_width must be > 0 pixels")
    yy, xx = np.mgrid[:h, :w]
    r = np.hypot(yy - centre[0], xx - centre[1])
    sel = np.abs(r - radius) <= hw
    if sel.sum() < 50:
        raise InputError("too few pixels around the edge; check centre and radius")
    step = bin_fraction
    edges = np.arange(radius - hw, radius + hw + step, step)
    idx = np.digitize(r[sel], edges) - 1
    ok = (idx >= 0) & (idx < len(edges) - 1)
    sums = np.bincount(idx[ok], img[sel][ok], minlength=len(edges) - 1)
    counts = np.bincount(idx[ok], minlength=len(edges) - 1)
    centres = 0.5 * (edges[:-1] + edges[1:])
    have = counts > 0
    esf = np.interp(centres, centres[have], sums[have] / counts[have])
    contrast = float(np.mean(esf[: len(esf) // 5]) - np.mean(esf[-len(esf) // 5:]))  # inside minus outside
    if abs(contrast) < 1e-9:
        raise InputError("the insert has no contrast against its background")
    lsf = -np.gradient(esf, step) / contrast
    lsf *= np.hanning(len(lsf))
    n_fft = 1 << int(math.ceil(math.log2(len(lsf) * 8)))
    spec = np.abs(np.fft.rfft(lsf, n_fft))
    spec /= spec[0]
    freq = np.fft.rfftfreq(n_fft, step * pixel_spacing)
    nyquist = 0.5 / pixel_spacing
    keep = freq <= nyquist
    f, t = freq[keep], spec[keep]
    return TTFResult(f, t, _crossing(f, t, 0.5), _crossing(f, t, 0.1), contrast, centres * pixel_spacing, esf)


# ------------------------------------------------------------------------------ CHO


def laguerre_gauss_channels(size: int, width: float, count: int = 6) -> np.ndarray:
    """Rotationally symmetric Laguerre-Gauss channels ``[count, size, size]`` centred on
    the ROI: ``u_j(r) = sqrt(2) / a exp(-pi r^2 / a^2) L_j(2 pi r^2 / a^2)`` with ``a`` =
    ``width`` pixels (Barrett & Myers). A Gaussian signal ``exp(-r^2 / (2 w^2))`` lies in
    the first channel's span when ``a = w sqrt(2 pi)``; for a disc of radius R a width of
    about 1.5 R to 2 R suits."""
    if size < 3 or width <= 0 or count < 1:
        raise InputError("laguerre_gauss_channels needs size >= 3, width > 0, count >= 1")
    c = (size - 1) / 2
    yy, xx = np.mgrid[:size, :size]
    g = 2 * np.pi * ((yy - c) ** 2 + (xx - c) ** 2) / width**2
    return np.stack([math.sqrt(2) / width * np.exp(-g / 2) * special.eval_laguerre(j, g) for j in range(count)])


@dataclass
class Detectability:
    """``d_prime`` (detectability index), ``auc`` (area under the ROC curve, empirical,
    from the observer's test statistics), ``auc_gaussian`` (``Phi(d' / sqrt 2)``), the
    numbers of signal-present / absent ROIs, and ``d_prime_ci``: a 95% bootstrap interval
    of ``d_prime`` (``None`` unless asked for)."""

    d_prime: float
    auc: float
    auc_gaussian: float
    n_present: int
    n_absent: int
    d_prime_ci: tuple[float, float] | None = None


def _mann_whitney_auc(t1: np.ndarray, t0: np.ndarray) -> float:
    allv = np.concatenate([t1, t0])
    order = allv.argsort(kind="mergesort")
    r = np.empty(len(allv))
    r[order] = np.arange(1, len(allv) + 1)
    _, inv, cnt = np.unique(allv, return_inverse=True, return_counts=True)
    if (cnt > 1).any():
        sums = np.bincount(inv, r)
        r = (sums / cnt)[inv]
    u = r[: len(t1)].sum() - len(t1) * (len(t1) + 1) / 2
    return float(u / (len(t1) * len(t0)))


def _d_index(t1: np.ndarray, t0: np.ndarray) -> np.ndarray:
    """d' of test statistics ``[..., n1]`` / ``[..., n0]`` (over the last axis)."""
    return (t1.mean(-1) - t0.mean(-1)) / np.sqrt(0.5 * (t1.var(-1, ddof=1) + t0.var(-1, ddof=1)))


def _template(a1: np.ndarray, a0: np.ndarray, *, robust: bool = False) -> np.ndarray:
    """Hotelling template ``S^-1 (<v1> - <v0>)`` ``[..., J]`` of channel outputs ``[..., n, J]``,
    ``S`` the mean of the two classes' covariances. ``robust``: pseudo-inverse, for a
    bootstrap resample whose repeated ROIs can leave ``S`` singular."""
    def cov(a):
        c = a - a.mean(-2, keepdims=True)
        return np.einsum("...ni,...nj->...ij", c, c) / (a.shape[-2] - 1)

    s, diff = 0.5 * (cov(a1) + cov(a0)), a1.mean(-2) - a0.mean(-2)
    if robust:
        return np.einsum("...ij,...j->...i", np.linalg.pinv(s, hermitian=True), diff)
    return np.linalg.solve(s, diff[..., None])[..., 0]


def _bootstrap_d_index(a1: np.ndarray, a0: np.ndarray, b1: np.ndarray, b0: np.ndarray, reps: int,
                       rng: np.random.Generator, *, same: bool = False, chunk: int = 256) -> np.ndarray:
    """d' of ``reps`` bootstrap replicates of one fold: channel outputs of the training
    (``a1``, ``a0``) and test (``b1``, ``b0``) ROIs ``[n, J]`` resampled with replacement
    within each set, the Hotelling template trained on each resampled training set and
    applied to its resampled test set (``same``: the test set is the training set, and
    so is its resample). Vectorised over replicates, ``chunk`` at a time."""
    def pick(a, n):
        return a[rng.integers(0, len(a), (n, len(a)))]

    out = []
    for start in range(0, reps, chunk):
        n = min(chunk, reps - start)
        r1, r0 = pick(a1, n), pick(a0, n)
        q1, q0 = (r1, r0) if same else (pick(b1, n), pick(b0, n))
        w = _template(r1, r0, robust=True)
        out.append(_d_index(np.einsum("bnj,bj->bn", q1, w), np.einsum("bnj,bj->bn", q0, w)))
    return np.concatenate(out)


def cho_detectability(present: np.ndarray, absent: np.ndarray, channels: np.ndarray, *, folds: int = 2,
                      seed: int = 0, bootstrap: int = 0) -> Detectability:
    """Channelized Hotelling observer for a signal known exactly (location and profile).

    ``present`` / ``absent``: ROIs ``[N1, h, w]`` / ``[N0, h, w]`` (HU) centred on where the
    signal is / would be; ``channels`` ``[J, h, w]`` (e.g. :func:`laguerre_gauss_channels`).
    Channel outputs ``v = U^T g``; the template ``w = S^-1 (<v1> - <v0>)`` with ``S`` the
    mean of the two classes' channel covariances; the test statistic ``t = w^T v``.
    ``d' = (<t1> - <t0>) / sqrt((var t1 + var t0) / 2)``. With ``folds >= 2`` the template
    is trained and tested on different ROIs (k-fold, shuffled with ``seed``; d' and AUC
    are averaged over folds), which removes the optimism of testing on the training set.
    With ``bootstrap = B > 0``, ``d_prime_ci`` is a 95% interval of d' from ``B`` bootstrap
    replicates, each of which resamples the ROIs with replacement within each class and
    fold, *trains the templates again* on the resampled training ROIs and tests them on the
    resampled test ROIs, so it holds the templates' estimation error as well as the test
    statistics' (the folds stay disjoint: no ROI trains and tests one template). It is the
    basic (reverse-percentile) interval ``[2 d' - q97.5, 2 d' - q2.5]``: a template trained on
    a resample with repeated ROIs is worse, so the replicates sit below d' much as d' sits
    below the observer's d' with unlimited training ROIs, and the reversal corrects for it
    (white noise, 48-192 ROIs per class: 37-39 of 40 intervals cover the ideal observer's
    d', against 29-37 for the plain percentile interval and 32-37 for resampling the test
    statistics alone; docs/METHOD.md, tests/test_iq.py).
    """
    g1, g0 = _stack(present, "present"), _stack(absent, "absent")
    u = np.asarray(channels, np.float64)
    if u.ndim != 3 or u.shape[1:] != g1.shape[1:] or g0.shape[1:] != g1.shape[1:]:
        raise InputError(f"ROIs {g1.shape[1:]} / {g0.shape[1:]} and channels {u.shape[1:]} must match")
    j = u.shape[0]
    v1 = g1.reshape(len(g1), -1) @ u.reshape(j, -1).T
    v0 = g0.reshape(len(g0), -1) @ u.reshape(j, -1).T
    if min(len(v1), len(v0)) < 2 * (j + 1) * max(folds, 1):
        raise InputError(f"need at least {2 * (j + 1) * max(folds, 1)} ROIs per class for {j} channels and "
                         f"{folds} folds, got {len(v1)} / {len(v0)}")

    rng = np.random.default_rng(seed)
    if folds < 2:
        splits = [(v1, v0, v1, v0)]
    else:
        k1, k0 = rng.permutation(len(v1)) % folds, rng.permutation(len(v0)) % folds
        splits = [(v1[k1 != k], v0[k0 != k], v1[k1 == k], v0[k0 == k]) for k in range(folds)]
    stats = []
    for a1, a0, b1, b0 in splits:
        wt = _template(a1, a0)
        stats.append((b1 @ wt, b0 @ wt))
    dp = float(np.mean([_d_index(t1, t0) for t1, t0 in stats]))
    auc = float(np.mean([_mann_whitney_auc(t1, t0) for t1, t0 in stats]))
    ci = None
    if bootstrap > 0:
        boot = np.zeros(bootstrap)
        for a1, a0, b1, b0 in splits:
            boot += _bootstrap_d_index(a1, a0, b1, b0, bootstrap, rng, same=folds < 2) / len(splits)
        ci = (float(2 * dp - np.percentile(boot, 97.5)), float(2 * dp - np.percentile(boot, 2.5)))
    return Detectability(dp, auc, float(special.ndtr(dp / math.sqrt(2))), len(v1), len(v0), ci)


def disc_rois(images: np.ndarray, centres, size: int) -> np.ndarray:
    """Square ROIs ``[N * len(centres), size, size]`` of ``images`` ``[N, H, W]`` centred on
    each ``(row, col)`` of ``centres`` (integer pixel centres; odd ``size`` is centred)."""
    imgs = _stack(images, "images")
    out = []
    half = size // 2
    for r, c in centres:
        r, c = int(round(r)), int(round(c))
        if r - half < 0 or c - half < 0 or r - half + size > imgs.shape[1] or c - half + size > imgs.shape[2]:
            raise InputError(f"ROI of {size} px at ({r}, {c}) leaves the image")
        out.append(imgs[:, r - half : r - half + size, c - half : c - half + size])
    return np.concatenate(out)


# ------------------------------------------------------------------------------ CT numbers


def insert_accuracy(images: np.ndarray, masks: dict[str, np.ndarray], nominal: dict[str, float]) -> dict[str, dict]:
    """CT-number accuracy per insert: ``{name: {"nominal", "mean", "bias", "noise"}}`` (HU),
    from ``images`` ``[N, H, W]`` (realisations, averaged for the mean) and a boolean
    ``[H, W]`` mask per insert (inset from its edge). ``noise`` is the pixel standard
    deviation inside the insert, averaged over realisations."""
    imgs = _stack(images, "images")
    out = {}
    for name, m in masks.items():
        m = np.asarray(m, bool)
        if m.shape != imgs.shape[1:] or not m.any():
            raise InputError(f"mask of insert {name!r} must be a non-empty [H, W] boolean array")
        vals = imgs[:, m]
        mean = float(vals.mean())
        out[name] = {"nominal": float(nominal[name]), "mean": mean, "bias": mean - float(nominal[name]),
                     "noise": float(vals.std(axis=1, ddof=1).mean())}
    return out
