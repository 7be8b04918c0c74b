"""Classical baselines as plain functions: FBP, TV-regularised reconstruction, BM3D.

* :func:`tv_reconstruct`: penalised weighted least squares with isotropic total
  variation, solved by the preconditioned primal-dual algorithm of Chambolle & Pock
  on the exact adjoint of the projector.
* :func:`choose_tv_weight`: the TV weight by view-split cross-validation on noisy
  training data (no clean image involved).
* :func:`bm3d_denoise`: BM3D (``bm3d`` package) on FBP images.

The registered :class:`Baseline` wrappers (``"FBP"``, ``"TV"``, ``"BM3D"``) follow.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence

import numpy as np

from .._checks import as_stack
from ..errors import InputError
from ..physics import CTProjector, Geometry
from .base import Baseline, FittedBaseline, check_photons, check_sinograms, register, resolve_preset
from .data import fbp_noise_std, subset_geometry

__all__ = [
    "fbp_reconstruct",
    "tv_reconstruct",
    "tv_weight_for_dose",
    "choose_tv_weight",
    "bm3d_denoise",
    "FBPBaseline",
    "TVBaseline",
    "BM3DBaseline",
]


def fbp_reconstruct(sinograms: np.ndarray, geometry: Geometry, *, filter: str = "ram-lak") -> np.ndarray:
    """Filtered back-projection of post-log sinograms ``[N, V, D]`` -> HU ``[N, H, W]``.

    Examples
    --------
    >>> import numpy as np
    >>> from turndiff.physics import default_fan_geometry
    >>> g = default_fan_geometry(32)
    >>> fbp_reconstruct(np.zeros((1, *g.sinogram_shape), np.float32), g).shape
    (1, 32, 32)
    """
    return CTProjector(geometry).fbp_hu(check_sinograms(sinograms, geometry), filter=filter)


# ----------------------------------------------------------------------------------- TV


def _grad(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Forward differences with a zero last row / column (Neumann boundary)."""
    gx = np.zeros_like(x)
    gy = np.zeros_like(x)
    gx[..., :, :-1] = x[..., :, 1:] - x[..., :, :-1]
    gy[..., :-1, :] = x[..., 1:, :] - x[..., :-1, :]
    return gx, gy


def _grad_adjoint(gx: np.ndarray, gy: np.ndarray) -> np.ndarray:
    """Exact transpose of :func:`_grad` (minus the discrete divergence)."""
    out = np.zeros_like(gx)
    out[..., :, :-1] -= gx[..., :, :-1]
    out[..., :, 1:] += gx[..., :, :-1]
    out[..., :-1, :] -= gy[..., :-1, :]
    out[..., 1:, :] += gy[..., :-1, :]
    return out


def tv_reconstruct(
    sinograms: np.ndarray,
    geometry: Geometry,
    *,
    lam: float,
    iters: int = 50,
    weighted: bool = True,
    step_balance: float = 0.1,
    nonneg: bool = True,
    x0: np.ndarray | None = None,
    progress: bool = False,
) -> np.ndarray:
    """TV-regularised weighted least-squares reconstruction, HU ``[N, H, W]``.

    Solves, for each slice, with ``x = mu / mu_water`` (water is 1) and ``A`` the
    projector,

    ``min_x  1/2 sum_i w_i ((A mu_water x)_i - y_i)^2 + lam * TV(x)``   subject to ``x >= 0``

    where ``TV`` is the isotropic total variation (forward differences, pixel units)
    and ``w_i = exp(-y_i)`` (``weighted=True``) are the statistical weights: the
    post-log variance of bin ``i`` is about ``1 / (I0 exp(-y_i))``, so ``w_i / I0`` is
    its inverse variance and ``lam`` is measured against a likelihood scaled by
    ``1 / I0``. ``weighted=False`` gives plain least squares.

    The solver is the primal-dual hybrid gradient method (Chambolle & Pock 2011) with
    the diagonal preconditioning of Pock & Chambolle (2011, alpha = 1): per-pixel
    primal steps ``1 / (b * sum_i |A_ij| + 4)`` and per-ray dual steps
    ``1 / (b * sum_j |A_ij|)`` (scaled by ``b**2`` back to the unscaled operator), where
    ``b = step_balance`` balances the data and TV blocks; every ``b > 0`` converges and
    the default (0.1) reached the lowest objective in a few dozen iterations on
    256 x 256 fan-beam data. Iterations start from the FBP (clipped at 0), so
    ``iters`` of a few dozen give a usable image; ``iters`` is part of the method's
    definition (the TV weight is cross-validated at the same ``iters``).

    Parameters
    ----------
    sinograms : ndarray
        Post-log sinograms ``[N, V, D]`` (or ``[V, D]``).
    geometry : Geometry
        Scanner geometry.
    lam : float
        TV weight (>= 0).
    iters : int
        PDHG iterations.
    weighted : bool
        Statistical weights ``exp(-y)``.
    step_balance : float
        ``b`` above (convergence speed only, not the solution).
    nonneg : bool
        Constrain ``mu >= 0``.
    x0 : ndarray, optional
        Start image in HU ``[N, H, W]`` (default: the FBP).
    progress : bool
        Show a progress bar over iterations.

    Returns
    -------
    ndarray
        float32 HU images ``[N, H, W]`` (``[H, W]`` for a ``[V, D]`` input).

    References
    ----------
    A. Chambolle and T. Pock, "A first-order primal-dual algorithm for convex problems
    with applications to imaging," J. Math. Imaging Vis. 40, 2011.
    T. Pock and A. Chambolle, "Diagonal preconditioning for first order primal-dual
    algorithms in convex optimization," ICCV 2011.
    E. Y. Sidky, J. H. Jorgensen and X. Pan, "Convex optimization problem prototyping
    for image reconstruction in computed tomography with the Chambolle-Pock
    algorithm," Phys. Med. Biol. 57, 2012.

    Examples
    --------
    >>> import numpy as np
    >>> from turndiff.physics import CTProjector, default_fan_geometry
    >>> g = default_fan_geometry(32)
    >>> mu = np.full((1, 32, 32), g.mu_water, np.float32)
    >>> y = CTProjector(g).forward(mu)
    >>> tv_reconstruct(y, g, lam=1e-3, iters=5).shape
    (1, 32, 32)
    """
    from tqdm.auto import tqdm

    squeeze = np.asarray(sinograms).ndim == 2
    y = check_sinograms(sinograms, geometry)
    if not (math.isfinite(lam) and lam >= 0):
        raise InputError(f"TV weight lam must be >= 0, got {lam}")
    if int(iters) < 1:
        raise InputError(f"iters must be >= 1, got {iters}")
    if not step_balance > 0:
        raise InputError(f"step_balance must be > 0, got {step_balance}")
    A = CTProjector(geometry)
    mw = np.float32(geometry.mu_water)
    b = np.float32(step_balance)
    w = np.exp(-y) if weighted else np.ones_like(y)
    w = np.maximum(w, np.float32(1e-8))
    rows = A.forward(np.full((1, *geometry.image_shape), mw, np.float32))[0]
    cols = A.adjoint(np.ones((1, *geometry.sinogram_shape), np.float32))[0] * mw
    # Rays that miss the image have empty rows: their dual variable stays 0.
    sigma = np.where(rows > 1e-6, 1.0 / (b * np.maximum(rows, 1e-6)), 0.0).astype(np.float32) * b * b
    tau = (1.0 / (b * cols + 4.0)).astype(np.float32)
    if x0 is None:
        x = A.fbp(y) / mw
    else:
        x = np.asarray(x0, np.float32).reshape(y.shape[0], *geometry.image_shape) / np.float32(1000.0) + 1
    x = np.maximum(x, 0).astype(np.float32) if nonneg else x.astype(np.float32)
    x_bar = x.copy()
    p = np.zeros_like(y)
    qx = np.zeros_like(x)
    qy = np.zeros_like(x)
    lam32 = np.float32(lam)
    for _ in tqdm(range(int(iters)), desc="TV (PDHG)", disable=not progress, leave=False):
        # Dual ascent on the data term: prox of the conjugate of 1/2 sum w (z - y)^2.
        p = (p + sigma * (A.forward(x_bar * mw) - y)) / (1.0 + sigma / w)
        # Dual ascent on TV: projection onto the lam-ball, pixel-wise.
        gx, gy = _grad(x_bar)
        qx += np.float32(0.5) * gx
        qy += np.float32(0.5) * gy
        if lam32 > 0:
            shrink = np.maximum(np.float32(1.0), np.sqrt(qx * qx + qy * qy) / lam32)
            qx /= shrink
            qy /= shrink
        else:
            qx[:] = 0
            qy[:] = 0
        x_new = x - tau * (A.adjoint(p) * mw + _grad_adjoint(qx, qy))
        if nonneg:
            x_new = np.maximum(x_new, 0)
        x_bar = 2 * x_new - x
        x = x_new
    hu = ((x - 1.0) * 1000.0).astype(np.float32)
    return hu[0] if squeeze else hu


def tv_weight_for_dose(lam_ref: float, photons_ref: float, photons: float) -> float:
    """Transfer a TV weight to another dose: ``lam_ref * photons_ref / photons``.

    The data term of :func:`tv_reconstruct` is the negative log-likelihood divided by
    ``I0`` (weights ``exp(-y)`` instead of the inverse variances ``I0 exp(-y)``), so a
    fixed prior strength ``beta`` (the MAP view: ``beta * TV`` against the full
    likelihood) is ``lam = beta / I0``. On development phantoms (not the benchmark's)
    the weight with the lowest error grew by about 2.1x from 25% to 10% dose, between
    this rule (2.5x) and a noise-standard-deviation rule (1.6x).
    """
    return float(lam_ref) * float(photons_ref) / float(photons)


def choose_tv_weight(
    sinograms: np.ndarray,
    geometry: Geometry,
    *,
    lams: Sequence[float],
    iters: int = 50,
    weighted: bool = True,
    step_balance: float = 0.1,
    progress: bool = False,
) -> tuple[float, dict[str, list[float]]]:
    """The TV weight by view-split cross-validation in the image domain, on noisy data.

    The views are split into even and odd ones. Each candidate weight reconstructs the
    slice from the even views; the score is the mean squared difference, inside the
    body, between that image and the FBP of the odd views. The odd views' noise is
    independent of the even views', so the score is the image-domain error of the TV
    image plus a constant (the odd FBP's noise), as in Noise2Inverse; it is minimised
    over the grid and refined by a parabola through the best point and its neighbours
    in ``log lam``. (Scoring in the sinogram domain instead, by predicting the odd
    views, mostly weighs low spatial frequencies and picks weights too weak to remove
    image noise.)

    The weight found for the half data is used for the full data unchanged: the data
    term of :func:`tv_reconstruct` is the unnormalised log-likelihood (over ``I0``), so
    at a fixed prior strength the weight does not depend on how many views there are
    (the same MAP reading as :func:`tv_weight_for_dose`).

    Returns
    -------
    (lam, report)
        The weight and ``{"lams": [...], "scores": [...]}`` (scores in HU^2).
    """
    from tqdm.auto import tqdm

    from ..masks import body_mask

    y = check_sinograms(sinograms, geometry)
    if geometry.views % 2:
        raise InputError("view-split cross-validation needs an even number of views")
    lams = sorted(float(v) for v in lams)
    if len(lams) < 1 or lams[0] <= 0:
        raise InputError("lams must hold positive TV weights")
    g_even, g_odd = subset_geometry(geometry, 2, 0), subset_geometry(geometry, 2, 1)
    y_even, y_odd = np.ascontiguousarray(y[:, 0::2]), np.ascontiguousarray(y[:, 1::2])
    target = CTProjector(g_odd).fbp_hu(y_odd)
    mask = body_mask(CTProjector(geometry).fbp_hu(y), smooth=5, largest_component=False)
    if mask.sum() < 16:
        mask = np.ones_like(mask)
    scores = []
    for lam in tqdm(lams, desc="TV: cross-validate the weight", disable=not progress):
        hu = tv_reconstruct(y_even, g_even, lam=lam, iters=iters, weighted=weighted, step_balance=step_balance)
        scores.append(float(np.mean((hu - target)[mask] ** 2)))
    i = int(np.argmin(scores))
    log_lam = math.log(lams[i])
    if 0 < i < len(lams) - 1:
        xs = np.log(lams[i - 1 : i + 2])
        c2, c1, _ = np.polyfit(xs, scores[i - 1 : i + 2], 2)
        if c2 > 0:
            log_lam = float(np.clip(-c1 / (2 * c2), xs[0], xs[-1]))
    return math.exp(log_lam), {"lams": lams, "scores": scores}


# --------------------------------------------------------------------------------- BM3D


def bm3d_denoise(hu: np.ndarray, *, sigma_hu: float | Sequence[float] | None = None,
                 progress: bool = False) -> np.ndarray:
    """BM3D denoising of HU images ``[N, H, W]`` (or ``[H, W]``), slice by slice.

    Parameters
    ----------
    hu : ndarray
        Noisy images (HU).
    sigma_hu : float or sequence of float, optional
        Noise standard deviation in HU (one value, or one per slice). When not given it
        is estimated from each image by the wavelet median absolute deviation
        (``skimage.restoration.estimate_sigma``), which assumes white noise and
        underestimates the correlated noise of FBP images; the ``"BM3D"`` baseline
        passes the noise level predicted from the sinogram instead
        (:func:`turndiff.baselines.data.fbp_noise_std`).
    progress : bool
        Show a progress bar over slices.

    Returns
    -------
    ndarray
        float32, the shape of ``hu``.

    References
    ----------
    K. Dabov, A. Foi, V. Katkovnik and K. Egiazarian, "Image denoising by sparse 3-D
    transform-domain collaborative filtering," IEEE Trans. Image Process. 16(8), 2007.
    Y. Makinen, L. Azzari and A. Foi, "Collaborative filtering of correlated noise,"
    IEEE Trans. Image Process. 29, 2020 (the ``bm3d`` package).

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> noisy = (rng.normal(0, 20, (32, 32))).astype(np.float32)
    >>> bool(bm3d_denoise(noisy, sigma_hu=20).std() < noisy.std())
    True
    """
    import bm3d
    from skimage.restoration import estimate_sigma
    from tqdm.auto import tqdm

    x, squeeze = as_stack(hu, "images", "H, W")
    if sigma_hu is None:
        sig = [float(estimate_sigma(s)) for s in x]
    else:
        sig = list(np.broadcast_to(np.asarray(sigma_hu, np.float64), (x.shape[0],)))
    if any(not (math.isfinite(s) and s >= 0) for s in sig):
        raise InputError(f"sigma_hu must be >= 0, got {sigma_hu}")
    out = np.empty_like(x)
    for i in tqdm(range(x.shape[0]), desc="BM3D", unit="slice", disable=not progress):
        out[i] = x[i] if sig[i] == 0 else np.asarray(bm3d.bm3d(x[i], sigma_psd=float(sig[i])), np.float32)
    return out[0] if squeeze else out


# ---------------------------------------------------------------------------- baselines


class FBPBaseline(Baseline):
    """Filtered back-projection (ram-lak), nothing fitted."""

    name = "FBP"
    reference = "Kak & Slaney, Principles of Computerized Tomographic Imaging, 1988"

    def _fit(self, sinograms, geometry, *, photons, preset, seed, device, run_dir, progress, options, **kwargs):
        resolve_preset(preset, {p: {} for p in ("tiny", "fast", "paper")}, options, self.name)
        return FittedBaseline(self.name, {"filter": "ram-lak"}, info={"train_seconds": 0.0})

    def reconstruct(self, state, sinograms, geometry, *, photons, progress=False):
        self._check_state(state)
        check_photons(photons)
        return fbp_reconstruct(sinograms, geometry, filter=state.params.get("filter", "ram-lak"))


class TVBaseline(Baseline):
    """TV-regularised PWLS by preconditioned PDHG; weight by view-split cross-validation."""

    name = "TV"
    reference = "Chambolle & Pock 2011; Sidky, Jorgensen & Pan 2012"
    #: ``lams``: candidate weights for the cross-validation at the training dose;
    #: ``cv_slices``: training slices it uses (the first ones).
    presets = {
        "tiny": {"iters": 5, "lams": [0.003, 0.03], "cv_slices": 1, "step_balance": 0.1, "weighted": True},
        "fast": {"iters": 40, "lams": [0.002, 0.004, 0.008, 0.016, 0.032], "cv_slices": 1, "step_balance": 0.1,
                 "weighted": True},
        "paper": {"iters": 150, "lams": [0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064], "cv_slices": 2,
                  "step_balance": 0.1, "weighted": True},
    }

    def _fit(self, sinograms, geometry, *, photons, preset, seed, device, run_dir, progress, options, **kwargs):
        cfg = resolve_preset(preset, self.presets, options, self.name)
        t0 = time.perf_counter()
        cv = sinograms[: max(1, int(cfg["cv_slices"]))]
        lam, report = choose_tv_weight(cv, geometry, lams=cfg["lams"], iters=cfg["iters"],
                                       weighted=cfg["weighted"], step_balance=cfg["step_balance"],
                                       progress=progress)
        params = {**cfg, "lam": lam, "lam_photons": photons}
        return FittedBaseline(self.name, params, info={"train_seconds": time.perf_counter() - t0,
                                                        "cross_validation": report})

    def reconstruct(self, state, sinograms, geometry, *, photons, progress=False):
        self._check_state(state)
        p = state.params
        lam = tv_weight_for_dose(p["lam"], p["lam_photons"], check_photons(photons))
        return tv_reconstruct(sinograms, geometry, lam=lam, iters=int(p["iters"]), weighted=bool(p["weighted"]),
                              step_balance=float(p["step_balance"]), progress=progress)


class BM3DBaseline(Baseline):
    """BM3D on the FBP image, with the noise level predicted from the sinogram."""

    name = "BM3D"
    reference = "Dabov et al. 2007; Makinen, Azzari & Foi 2020"
    presets = {p: {"noise_seed": 0} for p in ("tiny", "fast", "paper")}

    def _fit(self, sinograms, geometry, *, photons, preset, seed, device, run_dir, progress, options, **kwargs):
        cfg = resolve_preset(preset, self.presets, options, self.name)
        return FittedBaseline(self.name, cfg, info={"train_seconds": 0.0})

    def reconstruct(self, state, sinograms, geometry, *, photons, progress=False):
        self._check_state(state)
        y = check_sinograms(sinograms, geometry)
        hu = CTProjector(geometry).fbp_hu(y)
        sigma = fbp_noise_std(y, geometry, check_photons(photons), seed=int(state.params.get("noise_seed", 0)), hu=hu)
        return bm3d_denoise(hu, sigma_hu=sigma, progress=progress)


FBP = register(FBPBaseline())
TV = register(TVBaseline())
BM3D = register(BM3DBaseline())
