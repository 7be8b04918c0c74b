"""Data consistency: the image the measured projections support most, given TurnDiff's output.

TurnDiff's output ``p`` comes with a per-pixel estimate of its error, the uncertainty map
``u`` (:mod:`turndiff.inference.uncertainty`). Read as a Gaussian prior, ``x ~ N(p,
diag((s u)^2))``, and combined with the post-log noise model of the measured sinogram
``y ~ N(A mu, Sigma)`` (``Sigma`` diagonal, :func:`turndiff.dose.postlog_variance`), the
maximum a posteriori image minimises the penalised weighted least squares

``1/2 (A mu_w x - y)^T Sigma^-1 (A mu_w x - y) + 1/2 sum_j (x_j - p_j)^2 / (s u_j)^2``

(``x`` in water units, ``mu = mu_w x``). Where the prior is unsure (edges, where the
denoisers blur; low-contrast structure they flatten) the data decide; where it is sure
the prior does. Nothing here is tuned to a dose: ``Sigma`` comes from the scan's own
counts, so a cleaner scan pulls harder toward its data, which is what a denoiser trained
at a lower dose needs (it over-smooths there). The system is solved by conjugate
gradients started at ``p``, a fixed number of iterations, preconditioned by a diagonally
weighted circulant approximation of the system (Fessler and Booth 1999; the separable
quadratic surrogate's diagonal is kept as an option); ``s``, the preconditioner and the count
were chosen on validation phantoms (docs/METHOD.md "Data consistency"). No clean data are
used. Beyond the paper.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
from tqdm.auto import tqdm

from ..dose import estimate_photons, postlog_variance
from ..errors import InputError

__all__ = ["CONSISTENCY_ITERS", "CONSISTENCY_PRIOR_SCALE", "PRECONDITIONERS", "data_consistency"]

#: Conjugate-gradient iterations and the prior's scale ``s`` (standard deviation ``s u``),
#: chosen on validation phantoms (docs/METHOD.md, "Data consistency"): with the circulant
#: preconditioner, 8 iterations come closer to the converged MAP image than 20 with the
#: diagonal one did, at 10 projection pairs per slice instead of 22.
CONSISTENCY_ITERS: int = 8
#: ``"circulant"`` (default): diagonal scaling around the Fourier filter of ``A^T A``;
#: ``"diagonal"``: the separable quadratic surrogate's curvature alone (what sessions 12-16 ran,
#: with 20 iterations, ``iters=20``).
PRECONDITIONERS: tuple[str, ...] = ("circulant", "diagonal")
#: ``s``: the prior's standard deviation is ``s`` times its uncertainty map. 3^-0.5 until
#: session 17; 0.7 since stage 1's calibration got view bands (session 18: chosen on the
#: validation phantoms among 0.4-0.85, docs/METHOD.md).
CONSISTENCY_PRIOR_SCALE: float = 0.7
#: Floor of the prior's standard deviation (HU): no pixel is held by an infinitely sure prior.
MIN_PRIOR_STD_HU: float = 1.0


def data_consistency(
    image_hu: np.ndarray,
    sinogram: np.ndarray,
    projector,
    *,
    prior_std_hu: np.ndarray,
    photons: float | None = None,
    denoised: np.ndarray | None = None,
    iters: int = CONSISTENCY_ITERS,
    prior_scale: float = CONSISTENCY_PRIOR_SCALE,
    preconditioner: str = "circulant",
    device=None,
    progress: bool = False,
    return_std: bool = False,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """The penalised weighted least-squares image with ``image_hu`` as a Gaussian prior.

    Parameters
    ----------
    image_hu : array [N, H, W] or [H, W]
        The prior mean (TurnDiff's output), HU.
    sinogram : array [N, V, D] or [V, D]
        The measured post-log sinogram the image was reconstructed from.
    projector : CTProjector
        Its ``forward`` (attenuation per mm -> line integrals) and ``adjoint``.
    prior_std_hu : array, shape of ``image_hu``
        Per-pixel error estimate of the prior (HU), e.g. the uncertainty map; floored at
        ``MIN_PRIOR_STD_HU``.
    photons : float, optional
        ``I0`` of the scan (estimated from the sinogram when None).
    denoised : array, shape of ``sinogram``, optional
        Denoised line integrals for the noise variances (a noisy bin's own value overstates
        the variance of starved bins); default: the sinogram itself.
    iters : int
        Conjugate-gradient iterations (0 returns the prior).
    prior_scale : float
        ``s``: the prior's standard deviation is ``s * prior_std_hu``.
    preconditioner : {"circulant", "diagonal"}
        How CG is preconditioned (both converge to the same image; the circulant one in
        fewer iterations, see :data:`CONSISTENCY_ITERS`).
    device : str or torch.device, optional
        A GPU runs the iterations there with the torch projectors; default (or ``"cpu"``):
        the projector as given (the numba kernels; a ``backend="torch"`` projector runs
        the same iterations in torch on the CPU).
    return_std : bool
        Also return ``1000 / sqrt(d)`` (HU), ``d`` the separable quadratic surrogate's
        curvature of the objective (the preconditioner): a lower bound of the posterior
        standard deviation of each pixel under the model (``d`` bounds the Hessian's
        diagonal from above, and ``(H^-1)_jj >= 1 / H_jj``). A loose bound (the projections
        constrain sums along rays, not single pixels: 0.1-0.25 of the exact value on a
        16 x 16 test problem) that ranks the pixels as the exact one does (Spearman 0.9
        there). Small where the data pin a pixel down, ``s u`` where only the prior does.
        A feature of the output's uncertainty map.

    Returns
    -------
    float32 HU, the shape of ``image_hu``; with ``return_std``, ``(image, std)``.
    """
    p = np.asarray(image_hu, np.float32)
    y = np.asarray(sinogram, np.float32)
    squeeze = p.ndim == 2
    p, y = (p[None], y[None]) if squeeze else (p, y)
    std = np.asarray(prior_std_hu, np.float32).reshape(p.shape)
    if y.shape[0] != p.shape[0] or tuple(y.shape[1:]) != tuple(projector.geometry.sinogram_shape):
        raise InputError(f"sinogram shape {tuple(y.shape)} does not match {p.shape[0]} images of "
                         f"geometry {tuple(projector.geometry.sinogram_shape)}")
    if int(iters) < 0:
        raise InputError(f"iters must be >= 0, got {iters}")
    if not prior_scale > 0:
        raise InputError(f"prior_scale must be > 0, got {prior_scale}")
    if preconditioner not in PRECONDITIONERS:
        raise InputError(f"preconditioner must be one of {', '.join(PRECONDITIONERS)}, got {preconditioner!r}")
    if int(iters) == 0 and not return_std:
        return (p[0] if squeeze else p).copy()
    i0 = float(photons) if photons is not None else estimate_photons(y)
    lines = y if denoised is None else np.asarray(denoised, np.float32).reshape(y.shape)
    w = (1.0 / postlog_variance(lines, i0)).astype(np.float32)
    # Water units (x = mu / mu_w = HU / 1000 + 1); HU standard deviations become / 1000.
    beta = (1e6 / (prior_scale * np.maximum(std, MIN_PRIOR_STD_HU)) ** 2).astype(np.float32)
    prior = p / np.float32(1000.0) + np.float32(1.0)
    # iters == 0 (only the std wanted): no CG, so neither the filter nor a residual.
    circ = _ata_filter(projector) if preconditioner == "circulant" and int(iters) > 0 else None
    on_gpu = device is not None and str(device) != "cpu"
    if on_gpu or getattr(projector, "backend", "numba") == "torch":
        import torch

        from ..physics import CTProjector

        dev = torch.device(device if on_gpu else "cpu")
        proj = projector if projector.backend == "torch" else CTProjector(projector.geometry, backend="torch",
                                                                          view_chunk=90)
        t = [torch.from_numpy(np.ascontiguousarray(a)).to(dev) for a in (prior, y, w, beta)]
        if circ is not None:
            circ = (torch.from_numpy(circ[0]).to(dev), torch.from_numpy(circ[1]).to(dev), float(circ[2]))
        x, m_inv = (a.cpu().numpy() for a in _pcg(proj, *t, float(projector.geometry.mu_water), int(iters),
                                                   progress, circ))
    else:
        x, m_inv = _pcg(projector, prior, y, w, beta, float(projector.geometry.mu_water), int(iters), progress,
                        circ)
    hu = ((x - np.float32(1.0)) * np.float32(1000.0)).astype(np.float32)
    if not return_std:
        return hu[0] if squeeze else hu
    std = (np.float32(1000.0) * np.sqrt(m_inv)).astype(np.float32)
    return (hu[0], std[0]) if squeeze else (hu, std)


#: Fourier filters of ``A^T A`` by geometry (a few geometries per process at most).
_FILTERS: OrderedDict[str, tuple[np.ndarray, np.ndarray, np.float32]] = OrderedDict()


def _ata_filter(projector) -> tuple[np.ndarray, np.ndarray, np.float32]:
    """``(T, a, a0)`` of the projector's geometry, float32: ``T`` ``[H, W // 2 + 1]`` the real
    Fourier transfer function of ``A^T A`` (its response to a pixel at the centre, divided
    by that response's centre value ``a0``, so ``T`` has mean 1), ``a`` ``[H, W]`` =
    ``A^T A 1``.
    Geometry only, computed once (two projection pairs) with the numba projectors."""
    from ..physics import CTProjector

    g = projector.geometry
    key = g.to_json()
    if key not in _FILTERS:
        A = CTProjector(g)
        h, w = g.image_shape
        delta = np.zeros((1, h, w), np.float32)
        delta[0, h // 2, w // 2] = 1.0
        psf = A.adjoint(A.forward(delta))[0].astype(np.float64)
        centre = psf[h // 2, w // 2]
        # A^T A is even about the centre, so its transfer function is real; the floor keeps
        # the wrapped, discretised filter positive (an SPD preconditioner).
        t = np.fft.rfft2(np.fft.ifftshift(psf / centre)).real
        t = np.maximum(t, 1e-4 * t.max()).astype(np.float32)
        ones = A.adjoint(A.forward(np.ones((1, h, w), np.float32)))[0].astype(np.float32)
        _FILTERS[key] = (t, np.maximum(ones, np.float32(1e-12)), np.float32(centre))
        while len(_FILTERS) > 4:
            _FILTERS.popitem(last=False)
    return _FILTERS[key]


def _pcg(A, prior, y, w, beta, mu_water: float, iters: int, progress: bool, circ=None):
    """Preconditioned CG on ``(mw^2 A^T W A + beta) x = mw A^T W y + beta prior`` from
    ``prior``, per slice; NumPy arrays or torch tensors alike. ``circ``: the circulant
    preconditioner's :func:`_ata_filter` (None: the diagonal one). Returns ``(x, 1 / d)``,
    ``d`` the separable quadratic surrogate's curvature."""
    is_np = isinstance(prior, np.ndarray)
    mw = np.float32(mu_water) if is_np else float(mu_water)
    if is_np:
        fft, ifft = np.fft.rfft2, np.fft.irfft2
    else:
        import torch

        fft, ifft = torch.fft.rfft2, torch.fft.irfft2

    def normal(x):
        return A.adjoint(w * A.forward(x * mw)) * mw + beta * x

    def dot(a, b):
        return (a * b).sum(axis=(1, 2), keepdims=True) if is_np else (a * b).sum(dim=(1, 2), keepdim=True)

    def ratio(num, den):  # 0 where a slice has converged (0 / 0)
        if is_np:
            return np.where(den > 0, num / np.maximum(den, 1e-30), 0.0).astype(np.float32)
        return (num / den.clamp_min(1e-30)) * (den > 0)

    def median_in_body(f, inside):  # per slice; all pixels where a slice has no body
        if is_np:
            return np.stack([np.median(fi[mi]) if mi.any() else np.median(fi) for fi, mi in zip(f, inside)]
                            ).astype(np.float32)[:, None, None]
        return torch.stack([fi[mi].median() if bool(mi.any()) else fi.median() for fi, mi in zip(f, inside)]
                           )[:, None, None]

    # The separable quadratic surrogate's curvature A^T W A 1 + beta (Erdogan and Fessler 1999),
    # an upper bound of the diagonal: the diagonal preconditioner, and the posterior bound.
    # The air rays' weights are orders of magnitude above the body's, which slows plain CG.
    data_curv = A.adjoint(w * A.forward(prior * 0 + mw)) * mw
    m_inv = 1.0 / (data_curv + beta)
    if iters == 0:
        return (prior.clone() if not is_np else prior.copy()), m_inv
    if circ is None:
        def precondition(r):
            return m_inv * r
    else:
        # Fessler and Booth (1999): A^T W A ~ K A^T A K, K = diag(kappa), kappa^2 the data
        # weight per pixel, and A^T A shift-invariant (its filter T). With D = mw^2 kappa^2 a0
        # + beta (a0 the centre of A^T A's response), H ~ D^1/2 C D^1/2, C the circulant
        # f T + (1 - f), f the data's share of D (its median in the body: one filter per
        # slice). Where the prior rules, C -> 1 and this is the diagonal preconditioner.
        t, ata1, a0 = circ
        d_data = data_curv / ata1 * a0
        d = d_data + beta
        f = median_in_body(d_data / d, prior > 0.5)
        e = 1.0 / d ** 0.5
        c_inv = 1.0 / (f * t + (1.0 - f))
        shape = tuple(prior.shape[-2:])

        def precondition(r):
            z = ifft(fft(e * r) * c_inv, s=shape)
            return e * (z.astype(np.float32, copy=False) if is_np else z)

    x = prior.clone() if not is_np else prior.copy()
    # x starts at the prior, so the prior term of the residual is 0.
    r = A.adjoint(w * (y - A.forward(x * mw))) * mw
    z = precondition(r)
    d = z * 1
    rz = dot(r, z)
    for _ in tqdm(range(iters), desc="data consistency (CG)", disable=not progress, leave=False):
        q = normal(d)
        a = ratio(rz, dot(d, q))
        x += a * d
        r -= a * q
        z = precondition(r)
        rz_new = dot(r, z)
        d = z + ratio(rz_new, rz) * d
        rz = rz_new
    return x, m_inv
