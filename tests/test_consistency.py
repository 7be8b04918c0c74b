"""Data consistency (turndiff.inference.consistency): the MAP image with a Gaussian prior
around a denoised image moves toward what the projections support, not toward their noise."""

import numpy as np
import pytest
from scipy import stats
from scipy.ndimage import binary_erosion, gaussian_filter

from turndiff.dose import add_noise, postlog_variance
from turndiff.errors import InputError
from turndiff.inference.consistency import CONSISTENCY_PRIOR_SCALE, data_consistency
from turndiff.physics import CTProjector, default_fan_geometry
from turndiff.physics.units import hu_to_mu


N = 64
YY, XX = np.mgrid[:N, :N] - (N - 1) / 2
LESION = np.hypot(YY + 8, XX - 6) < 4  # a faint lesion, +30 HU
LESION_CORE = np.hypot(YY + 8, XX - 6) < 2.5
LESION_RING = (np.hypot(YY + 8, XX - 6) > 6) & (np.hypot(YY + 8, XX - 6) < 9)


@pytest.fixture(scope="module")
def scan():
    g = default_fan_geometry(N)
    ref = np.full((N, N), -1000.0, np.float32)
    ref[np.hypot(YY, XX * 1.2) < 26] = 40.0  # soft-tissue body
    ref[np.hypot(YY - 6, XX + 8) < 6] = 400.0  # a bone
    ref[LESION] = 70.0
    A = CTProjector(g)
    clean = A.forward(hu_to_mu(ref))
    # What an over-smoothing denoiser gives: the lesion flattened, edges blurred, a smooth bias.
    prior = ref.copy()
    prior[LESION] = 40.0
    prior = gaussian_filter(prior, 1.0) + 25.0 * np.exp(-((YY - 5) ** 2 + (XX - 5) ** 2) / (2 * 8.0**2))
    return A, ref, clean, prior.astype(np.float32), binary_erosion(ref > -500, iterations=3)


def _rmse(x, ref, inner):
    return float(np.sqrt(np.mean((x - ref)[inner] ** 2)))


def _contrast(x):
    return float(x[LESION_CORE].mean() - x[LESION_RING].mean())


def test_the_data_give_back_what_the_prior_flattened(scan):
    A, ref, clean, prior, inner = scan
    photons = 2e4  # FBP's error about that of the prior
    y = add_noise(clean, photons, rng=0)
    fbp = A.fbp_hu(y)
    out = data_consistency(prior, y, A, prior_std_hu=np.full_like(prior, 30.0), photons=photons, denoised=clean)
    assert _contrast(prior) < 1.0 and _contrast(out) > 15.0  # of the lesion's 30 HU
    assert _rmse(out, ref, inner) < 0.9 * min(_rmse(prior, ref, inner), _rmse(fbp, ref, inner))
    # Not by copying the data's noise: its fine-grained noise stays far below the FBP's.
    flat = binary_erosion((np.abs(ref - 40.0) < 1) & ~LESION, iterations=5)  # soft tissue, away from edges
    grain = lambda x: float(np.std((x - gaussian_filter(x, 2.0))[flat]))  # noqa: E731
    assert grain(out) < 0.5 * grain(fbp)


def test_the_circulant_preconditioner_reaches_the_same_map_image_sooner(scan):
    """Both preconditioners solve the same system (their converged images agree), and the
    circulant one (the default) is much closer to it after the same number of iterations:
    what lets the default run 8 iterations instead of 20 (docs/METHOD.md)."""
    A, ref, clean, prior, inner = scan
    y = add_noise(clean, 2e4, rng=0)
    kw = dict(prior_std_hu=np.full_like(prior, 30.0), photons=2e4, denoised=clean)
    exact = data_consistency(prior, y, A, **kw, preconditioner="diagonal", iters=300)
    np.testing.assert_allclose(data_consistency(prior, y, A, **kw, iters=100), exact, atol=0.1)
    rms = lambda x: float(np.sqrt(np.mean((x - exact) ** 2)))  # noqa: E731
    for k in (8, 12):
        circ = rms(data_consistency(prior, y, A, **kw, iters=k))
        diag = rms(data_consistency(prior, y, A, **kw, preconditioner="diagonal", iters=k))
        assert circ < 0.7 * diag
    with pytest.raises(InputError, match="preconditioner"):
        data_consistency(prior, y, A, **kw, preconditioner="jacobi")


def test_a_sure_prior_holds_against_noisy_data(scan):
    A, ref, clean, prior, inner = scan
    y = add_noise(clean, 5e3, rng=1)  # a noisy scan
    fbp_err = _rmse(A.fbp_hu(y), ref, inner)
    tight = data_consistency(ref, y, A, prior_std_hu=np.full_like(ref, 5.0), photons=5e3, denoised=clean)
    assert _rmse(tight, ref, inner) < 0.1 * fbp_err
    # The prior's scale sets how much of the data's noise comes in.
    loose = data_consistency(ref, y, A, prior_std_hu=np.full_like(ref, 5.0), photons=5e3, denoised=clean,
                             prior_scale=20.0)
    assert _rmse(loose, ref, inner) > 2.0 * _rmse(tight, ref, inner)


def test_a_cleaner_scan_pulls_harder(scan):
    # The noise model sets the data's weight: the same prior moves further toward the
    # truth when the scan has more photons (no dose is tuned in).
    A, ref, clean, prior, inner = scan
    std = np.full_like(prior, 30.0)
    contrast = [_contrast(data_consistency(prior, add_noise(clean, i0, rng=2), A, prior_std_hu=std, photons=i0,
                                           denoised=clean)) for i0 in (5e3, 1e5)]
    assert contrast[1] > contrast[0] + 5.0


def test_batches_shapes_and_errors(scan):
    A, ref, clean, prior, inner = scan
    std = np.full_like(prior, 20.0)
    one = data_consistency(prior, clean, A, prior_std_hu=std, photons=1e5)
    two = data_consistency(np.stack([prior, prior]), np.stack([clean, clean]), A,
                           prior_std_hu=np.stack([std, std]), photons=1e5)
    assert one.shape == prior.shape and one.dtype == np.float32 and two.shape == (2, *prior.shape)
    np.testing.assert_allclose(two[1], one, atol=1e-3)  # each slice is its own problem
    np.testing.assert_array_equal(data_consistency(prior, clean, A, prior_std_hu=std, iters=0), prior)
    # iters=0 with the std: the prior back, and the same bound as after the iterations.
    same, std0 = data_consistency(prior, clean, A, prior_std_hu=std, photons=1e5, iters=0, return_std=True)
    _, std8 = data_consistency(prior, clean, A, prior_std_hu=std, photons=1e5, return_std=True)
    np.testing.assert_allclose(same, prior, atol=1e-3)  # through water units and back
    np.testing.assert_allclose(std0, std8, rtol=1e-6)
    with pytest.raises(InputError, match="sinogram shape"):
        data_consistency(prior, clean[:, :-1], A, prior_std_hu=std, photons=1e5)
    with pytest.raises(InputError, match="prior_scale"):
        data_consistency(prior, clean, A, prior_std_hu=std, photons=1e5, prior_scale=0.0)


def test_torch_iterations_match_the_numba_ones(scan):
    # The GPU runs the same iterations with the torch projectors; checked here on the CPU.
    A, ref, clean, prior, inner = scan
    y = add_noise(clean, 2e4, rng=3)
    std = np.full_like(prior, 30.0)
    cpu = data_consistency(prior, y, A, prior_std_hu=std, photons=2e4, denoised=clean)
    torch_path = data_consistency(prior, y, CTProjector(A.geometry, backend="torch"), prior_std_hu=std, photons=2e4,
                                  denoised=clean)
    # HU; the operators agree to 2e-6, CG in float32 amplifies the round-off (the prior is 30 HU off).
    diff = np.abs(torch_path - cpu)[inner]
    assert float(diff.mean()) < 1.0 and float(diff.max()) < 3.0


def test_the_posterior_bound_is_a_lower_bound_of_the_exact_posterior_std():
    """``return_std``: ``1000 / sqrt(d)`` never exceeds the exact posterior standard deviation
    ``sqrt((H^-1)_jj)`` (H built column by column on a 16 x 16 problem), ranks the pixels as
    that does, never exceeds the prior's ``s u``, and shrinks as the dose (the data's weight)
    grows."""
    n = 16
    g = default_fan_geometry(n)
    A = CTProjector(g)
    mw = float(g.mu_water)
    yy, xx = np.mgrid[:n, :n] - (n - 1) / 2
    ref = np.where(np.hypot(yy, xx) < 6, 40.0, -1000.0).astype(np.float32)
    clean = A.forward(hu_to_mu(ref))
    prior_std = np.full((n, n), 20.0, np.float32)
    stds = {}
    for photons in (1e3, 1e5):
        _, std = data_consistency(ref, clean, A, prior_std_hu=prior_std, photons=photons, denoised=clean,
                                  return_std=True, iters=2)
        stds[photons] = std
        w = (1.0 / postlog_variance(clean, photons)).astype(np.float64)
        beta = 1e6 / (CONSISTENCY_PRIOR_SCALE * prior_std.astype(np.float64)) ** 2
        H = np.empty((n * n, n * n))
        for j in range(n * n):
            e = np.zeros((n, n), np.float32)
            e.flat[j] = 1.0
            H[:, j] = (A.adjoint((w * A.forward(e * mw)).astype(np.float32)) * mw).ravel()
        H = 0.5 * (H + H.T) + np.diag(beta.ravel())
        exact = 1000.0 * np.sqrt(np.diag(np.linalg.inv(H))).reshape(n, n)
        assert (std <= exact * 1.01).all()
        # Loose (the projections constrain sums along rays, not single pixels), but it ranks
        # the pixels as the exact posterior does.
        assert stats.spearmanr(std.ravel(), exact.ravel())[0] > 0.5
    assert (stds[1e5] < stds[1e3]).all()
    assert (stds[1e3] <= 20.0 * CONSISTENCY_PRIOR_SCALE + 1e-3).all()  # never above the prior's own s u


def test_lowband_fusion_gives_back_the_priors_lesion_and_keeps_the_fine_texture(scan):
    """The data-consistency prior's low band from x0 (``lowband_fusion``): a diffusion-like
    image that flattened a faint lesion x0 kept gets the lesion back, while its own
    pixel-scale texture (what the band above the Gaussian carries) stays."""
    from turndiff.inference import LOWBAND_PX, lowband_fusion

    _, ref, _, _, _ = scan
    rng = np.random.default_rng(0)
    x0 = gaussian_filter(ref, 0.7)  # the prior: lesion kept, a little blurred
    flat = x0.copy()
    flat[LESION] = gaussian_filter(np.where(LESION, 40.0, ref), 0.7)[LESION]  # the lesion flattened
    texture = rng.normal(0, 8.0, ref.shape).astype(np.float32)
    texture -= gaussian_filter(texture, 3.0)  # fine-grained only
    x = (flat + texture).astype(np.float32)
    out = lowband_fusion(x, x0, LOWBAND_PX)
    assert _contrast(x) < 0.3 * _contrast(x0) and _contrast(out) > 0.85 * _contrast(x0)
    # What it adds to x0 is x's finest band, mostly the texture (above a 1 px Gaussian).
    assert np.corrcoef((out - x0).ravel(), texture.ravel())[0, 1] > 0.7
    # Shapes and edge cases: a stack equals its slices; 0 px is x itself; shapes must agree.
    np.testing.assert_allclose(lowband_fusion(np.stack([x, x0]), np.stack([x0, x]))[0], out, atol=1e-4)
    np.testing.assert_array_equal(lowband_fusion(x, x0, 0.0), x)
    with pytest.raises(ValueError, match="shape"):
        lowband_fusion(x, x0[:-1])
    with pytest.raises(ValueError, match="sigma_px"):
        lowband_fusion(x, x0, -1.0)


def test_the_consistent_teacher_repairs_a_poor_stage_1_from_the_data_alone() -> None:
    """Stage 2's ``"consistent"`` teacher (``Stage2Config.unet.teacher``, an option) takes no
    clean image: from the noisy sinogram, a crude "stage 1" (a detector-direction box
    filter, which blurs every edge) and I0, it must land far closer to the truth than both
    that stage 1's FBP and the plain low-dose FBP."""
    from scipy.ndimage import uniform_filter1d

    from turndiff.dose import add_noise, mu_to_hu
    from turndiff.physics import CTProjector, default_fan_geometry, ellipse_image
    from turndiff.pipeline import consistent_teacher, fbp_hu_on

    g = default_fan_geometry(64)
    A = CTProjector(g)
    mu = ellipse_image(g)
    truth = mu_to_hu(mu, g.mu_water)
    y = np.stack([add_noise(A.forward(mu), 2e4, rng=s) for s in range(2)]).astype(np.float32)
    f = uniform_filter1d(y, 5, axis=-1)
    rmse = lambda x: float(np.sqrt(np.mean((x - truth) ** 2)))
    import torch

    cpu = torch.device("cpu")
    teacher = consistent_teacher(y, f, A, photons=2e4)
    assert teacher.shape == (2, 64, 64)
    assert rmse(teacher) < 0.5 * min(rmse(fbp_hu_on(A, y, cpu)), rmse(fbp_hu_on(A, f, cpu)))
