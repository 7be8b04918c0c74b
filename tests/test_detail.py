"""Detail restoration (turndiff.inference.detail): the noise map it thresholds against is
the FBP's real noise level, and the step puts back blurred structure without noise."""

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from turndiff.dose import add_noise
from turndiff.inference.detail import input_noise_std, restore_detail
from turndiff.physics import CTProjector, default_fan_geometry
from turndiff.physics.units import hu_to_mu


@pytest.fixture(scope="module")
def scan():
    n = 64
    g = default_fan_geometry(n)
    yy, xx = np.mgrid[:n, :n] - (n - 1) / 2
    ref = np.full((n, n), -1000.0, np.float32)
    ref[np.hypot(yy, xx * 1.2) < 26] = 40.0  # soft-tissue body
    ref[np.hypot(yy - 6, xx + 8) < 6] = 900.0  # a bone
    A = CTProjector(g)
    clean = A.forward(hu_to_mu(ref))
    photons = 5e3
    noisy = np.stack([add_noise(clean, photons, rng=k) for k in range(12)])
    return A, ref, clean, noisy, photons


def test_noise_map_is_the_fbp_noise_level(scan):
    A, ref, clean, noisy, photons = scan
    errors = A.fbp_hu(noisy) - A.fbp_hu(clean)[None]
    measured = errors.std(0)  # per pixel, over 12 noise realisations
    sigma = input_noise_std(noisy[0], A.fbp_hu, photons=photons)
    body = ref > -500
    ratio = float(sigma[body].mean() / measured[body].mean())
    assert 0.85 < ratio < 1.15, ratio
    # Per pixel it follows the real level (higher behind the bone, lower at the edge).
    assert np.corrcoef(gaussian_filter(measured, 3)[body], sigma[body])[0, 1] > 0.5
    # A 1-pixel blur lowers it; the map is that of the blurred noise.
    blurred = np.stack([gaussian_filter(e, 1.0) for e in errors]).std(0)
    sigma_b = input_noise_std(noisy[0], A.fbp_hu, photons=photons, blur_px=1.0)
    assert 0.8 < sigma_b[body].mean() / blurred[body].mean() < 1.2


def test_noise_map_does_not_depend_on_the_batch(scan):
    A, _, _, noisy, photons = scan
    both = input_noise_std(noisy[:2], A.fbp_hu, photons=photons)
    np.testing.assert_allclose(both[1], input_noise_std(noisy[1], A.fbp_hu, photons=photons), rtol=1e-5)


@pytest.mark.parametrize("shrink", ["garrote", "soft"])
def test_restoration_puts_back_blurred_edges_not_noise(scan, shrink):
    A, ref, clean, noisy, photons = scan
    truth = A.fbp_hu(clean)  # what the scan shows without noise
    x_ld = A.fbp_hu(noisy[0])
    sigma = input_noise_std(noisy[0], A.fbp_hu, photons=photons, blur_px=1.0)
    body = ref > -500

    def rmse(x):
        return float(np.sqrt(np.mean((x - truth)[body] ** 2)))

    # An over-smoothed denoiser: the noiseless image blurred by 1.5 px (its bone edge is gone).
    smooth = gaussian_filter(truth, 1.5)
    out = restore_detail(smooth, x_ld, sigma, blur_px=1.0, shrink=shrink)
    assert rmse(out) < 0.85 * rmse(smooth)  # the bone's edge comes back
    assert rmse(out) < 0.9 * rmse(x_ld)  # and the noise does not
    # A denoiser that is already right gets (almost) nothing added. What leaks is the
    # shrunk blurred noise: at 1.5 sigma, RMS 0.21 sigma_b (soft) or 0.34 sigma_b (garrote).
    exact = restore_detail(truth, x_ld, sigma, blur_px=1.0, shrink=shrink)
    assert rmse(exact) < {"soft": 0.3, "garrote": 0.4}[shrink] * rmse(x_ld)
    # A threshold of zero gives the input back plus all of the residual: x_ld itself.
    np.testing.assert_allclose(restore_detail(smooth, x_ld, sigma, k=0.0, shrink=shrink), x_ld, atol=1e-3)
    with pytest.raises(ValueError):
        restore_detail(smooth, x_ld, sigma, k=-1.0, shrink=shrink)


def test_garrote_returns_large_residuals_almost_whole():
    # Soft thresholding takes t off every residual; the garrote only t^2 / r.
    x = np.zeros((1, 8, 8), np.float32)
    x_ld = np.zeros_like(x)
    x_ld[0, 4, 4] = 300.0  # a 300 HU edge the denoiser flattened
    sigma = np.full_like(x, 10.0)  # threshold 15 HU at k = 1.5
    soft = restore_detail(x, x_ld, sigma, shrink="soft")[0, 4, 4]
    garrote = restore_detail(x, x_ld, sigma)[0, 4, 4]
    assert soft == pytest.approx(285.0) and garrote == pytest.approx(300.0 - 15.0**2 / 300.0)
    x_ld[0, 4, 4] = 12.0  # within the threshold: nothing comes back under either rule
    assert restore_detail(x, x_ld, sigma)[0, 4, 4] == 0.0
    assert restore_detail(x, x_ld, sigma, shrink="soft")[0, 4, 4] == 0.0
    with pytest.raises(ValueError, match="shrink"):
        restore_detail(x, x_ld, sigma, shrink="hard")
