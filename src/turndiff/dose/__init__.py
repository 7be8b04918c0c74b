"""Low-dose CT simulation: HU -> attenuation -> photon counts with quantum and electronic
noise -> safe log -> post-log sinogram.

Dose convention (SURFACE.md): ``photons`` is ``I0``, the photons per detector bin before
the object; a dose fraction ``F`` means ``I0 = F * 1e5``.

Noise model, per bin with clean line integral ``p``:

``N = Poisson(I0 * exp(-p)) + Normal(0, sigma_e^2)``, ``y = -log(max(N, eps) / I0)``

``sigma_e`` (electronic noise, photons) defaults to ``sqrt(10)``, a common value for
clinical detectors in low-dose simulation studies. Counts at or below ``eps`` (photon
starvation) are clamped to ``eps = 0.5`` photons before the log, so the sinogram never
holds ``inf`` or ``NaN``. For high counts the post-log variance is ``1 / (I0 exp(-p))``.
"""

from __future__ import annotations

import numpy as np

from ..errors import InputError
from ..physics.units import hu_to_mu, mu_to_hu
from .noise_model import ELECTRONIC_NOISE_STD, estimate_photons, postlog_variance

__all__ = [
    "FULL_DOSE_PHOTONS",
    "ELECTRONIC_NOISE_STD",
    "photons_from_dose",
    "dose_from_photons",
    "hu_to_mu",
    "mu_to_hu",
    "add_noise",
    "check_photons",
    "PHOTONS_RANGE",
    "postlog_variance",
    "estimate_photons",
]

#: ``I0`` of a full-dose scan (dose fraction 1).
FULL_DOSE_PHOTONS: float = 1e5
_MIN_COUNT = 0.5


def photons_from_dose(fraction: float) -> float:
    """``I0`` for a dose fraction (``0.25 -> 2.5e4``)."""
    if not (np.isfinite(fraction) and fraction > 0):
        raise InputError(f"dose fraction must be positive, got {fraction}")
    return float(fraction) * FULL_DOSE_PHOTONS


def dose_from_photons(photons: float) -> float:
    """Dose fraction for an ``I0`` (``2.5e4 -> 0.25``)."""
    return float(photons) / FULL_DOSE_PHOTONS


#: Simulated ``I0`` must lie in this range: below one photon per bin there is no scan
#: (every ray is starved), above it NumPy's Poisson sampler overflows.
PHOTONS_RANGE: tuple[float, float] = (1.0, 1e15)


def check_photons(photons: float, name: str = "photons (I0)") -> float:
    """``photons`` as a float, or :class:`InputError` unless it is finite and in
    :data:`PHOTONS_RANGE` (photons per detector bin before the object)."""
    try:
        value = float(photons)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be a number, got {photons!r}") from None
    lo, hi = PHOTONS_RANGE
    if not (np.isfinite(value) and lo <= value <= hi):
        raise InputError(f"{name} must be between {lo:g} and {hi:g} photons per bin, got {photons!r}")
    return value


def add_noise(
    clean_sinogram: np.ndarray,
    photons: float,
    *,
    rng: np.random.Generator | int | None,
    electronic_std: float = ELECTRONIC_NOISE_STD,
) -> np.ndarray:
    """Simulate a low-dose post-log sinogram from clean line integrals.

    Parameters
    ----------
    clean_sinogram
        Noiseless post-log line integrals, any shape (``[N, V, D]`` typically).
    photons
        ``I0``, photons per bin before the object.
    rng
        A ``numpy.random.Generator`` or a seed (runs are reproducible).
    electronic_std
        Standard deviation of the additive Gaussian noise, photons.

    Returns
    -------
    float32 array of the same shape, finite everywhere.

    Examples
    --------
    >>> y = add_noise(np.full((2, 4, 4), 2.0, np.float32), 2.5e4, rng=0)
    >>> bool(np.isfinite(y).all()) and y.shape == (2, 4, 4)
    True
    """
    check_photons(photons)
    if not (np.isfinite(electronic_std) and electronic_std >= 0):
        raise InputError(f"electronic noise std must be a finite number >= 0 photons, got {electronic_std}")
    p = np.asarray(clean_sinogram, np.float64)
    if not np.isfinite(p).all():
        raise InputError("clean sinogram holds NaN or inf")
    gen = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    expected = photons * np.exp(-p)
    counts = gen.poisson(expected).astype(np.float64)
    if electronic_std > 0:
        counts += gen.normal(0.0, electronic_std, size=counts.shape)
    counts = np.maximum(counts, _MIN_COUNT)
    return (-np.log(counts / photons)).astype(np.float32)


def simulate_scan(
    hu: np.ndarray,
    geometry,
    *,
    photons: float,
    seed: int | None = 0,
    electronic_std: float = ELECTRONIC_NOISE_STD,
    progress: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Project HU images and add low-dose noise.

    Parameters
    ----------
    hu
        ``[N, H, W]`` (or ``[H, W]``) images in HU on the geometry's grid.
    geometry
        A :mod:`turndiff.physics` geometry (its ``mu_water`` converts HU to mu).
    photons
        ``I0`` per bin.
    seed
        Seed of the noise (slice ``i`` of a stack gets an independent stream).

    Returns
    -------
    (noisy, clean): float32 ``[N, V, D]`` post-log sinograms.
    """
    from tqdm.auto import tqdm

    from ..physics import CTProjector
    from ..physics.projector import BATCH

    hu = np.asarray(hu, np.float32)
    if hu.ndim == 2:
        hu = hu[None]
    if hu.ndim != 3:
        raise InputError(f"images must be [N, H, W], got shape {hu.shape}")
    if not np.isfinite(hu).all():
        raise InputError("images hold NaN or inf")
    # Three rays per bin: the detector's finite width (see CTProjector.det_subsamples).
    A = CTProjector(geometry, det_subsamples=3)
    clean = np.empty((hu.shape[0], *geometry.sinogram_shape), np.float32)
    noisy = np.empty_like(clean)
    streams = np.random.SeedSequence(seed).spawn(hu.shape[0])
    with tqdm(total=hu.shape[0], desc="simulate", unit="slice", disable=not progress) as bar:
        for a in range(0, hu.shape[0], BATCH):  # batches: cheaper per slice than one at a time
            clean[a : a + BATCH] = A.forward(hu_to_mu(hu[a : a + BATCH], geometry.mu_water))
            for i in range(a, min(a + BATCH, hu.shape[0])):  # one noise stream per slice, as before
                noisy[i] = add_noise(clean[i], photons, rng=np.random.default_rng(streams[i]),
                                     electronic_std=electronic_std)
            bar.update(min(BATCH, hu.shape[0] - a))
    return noisy, clean


__all__ += ["simulate_scan"]

from .lesions import Lesion, insert_lesions, lesion_image  # noqa: E402  (uses the noise model above)

__all__ += ["Lesion", "insert_lesions", "lesion_image"]
