"""Metrics: windows, known values, agreement with scikit-image, masks, validation."""

import json
import math

import numpy as np
import pytest
from scipy import ndimage
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from turndiff.errors import InputError
from turndiff.metrics import (
    WINDOWS,
    apply_window,
    evaluate,
    gradient_ratios,
    mean_gradient_magnitude,
    psnr,
    rmse,
    ssim,
)


@pytest.fixture
def pair(rng):
    ref = ndimage.gaussian_filter(rng.normal(0, 300, (3, 40, 40)), 2) + 20.0
    x = ref + rng.normal(0, 25, ref.shape)
    return x, ref


def test_windows_match_the_surface_contract():
    assert WINDOWS["full"] == (-1024.0, 3072.0) and WINDOWS["soft"] == (-160.0, 240.0)
    w = apply_window(np.array([-2000.0, -160.0, 40.0, 240.0, 5000.0]), "soft")
    np.testing.assert_allclose(w, [0.0, 0.0, 0.5, 1.0, 1.0])


@pytest.mark.parametrize("window", ["full", "soft"])
def test_identical_images(pair, window):
    _, ref = pair
    assert np.all(np.isinf(psnr(ref, ref, window=window)))
    np.testing.assert_allclose(ssim(ref, ref, window=window), 1.0)
    np.testing.assert_array_equal(rmse(ref, ref, window=window), 0.0)


def test_constant_offset_known_values(rng):
    ref = rng.uniform(-100, 100, (32, 32))
    x = ref + 40.0  # stays inside both windows
    assert psnr(x, ref, window="soft") == pytest.approx(20 * math.log10(400 / 40))
    assert psnr(x, ref, window="full") == pytest.approx(20 * math.log10(4096 / 40))
    assert rmse(x, ref, window="soft") == pytest.approx(40.0)
    assert rmse(x, ref, window="full") == pytest.approx(40.0)
    assert rmse(x, ref, window=None) == pytest.approx(40.0)


def test_window_clipping():
    ref = np.zeros((16, 16))
    x = np.full((16, 16), 1000.0)
    assert rmse(x, ref, window="soft") == pytest.approx(240.0)  # 1000 clipped to 240
    assert rmse(x, ref, window="full") == pytest.approx(1000.0)
    assert psnr(x, ref, window="soft") == pytest.approx(20 * math.log10(400 / 240))
    # differences entirely outside a window vanish in it
    a, b = np.full((16, 16), -2000.0), np.full((16, 16), -1500.0)
    assert rmse(a, b, window="full") == 0.0 and math.isinf(psnr(a, b, window="full"))
    assert rmse(a, b, window=None) == pytest.approx(500.0)
    # psnr and rmse describe the same error
    rng = np.random.default_rng(0)
    y = rng.normal(0, 200, (16, 16))
    lo, hi = WINDOWS["soft"]
    assert psnr(y, ref) == pytest.approx(20 * math.log10((hi - lo) / rmse(y, ref)))


@pytest.mark.parametrize("window", ["full", "soft"])
def test_agrees_with_scikit_image(pair, window):
    x, ref = pair
    lo, hi = WINDOWS[window]
    xw = (np.clip(x, lo, hi) - lo) / (hi - lo)
    rw = (np.clip(ref, lo, hi) - lo) / (hi - lo)
    p, s = psnr(x, ref, window=window), ssim(x, ref, window=window)
    assert p.shape == s.shape == (3,)
    for i in range(3):
        assert p[i] == pytest.approx(peak_signal_noise_ratio(rw[i], xw[i], data_range=1.0))
        assert s[i] == pytest.approx(structural_similarity(rw[i], xw[i], data_range=1.0))
    # one image gives a float equal to the stack's entry
    assert isinstance(psnr(x[1], ref[1], window=window), float)
    assert ssim(x[1], ref[1], window=window) == pytest.approx(s[1])


def test_custom_window_range(pair):
    x, ref = pair
    assert psnr(x, ref, window=(-160, 240)) == pytest.approx(psnr(x, ref, window="soft"))


def test_mask_restricts_the_comparison(rng):
    ref = rng.normal(0, 50, (2, 24, 24))
    x = ref.copy()
    mask = np.zeros((24, 24), bool)
    mask[6:18, 6:18] = True
    x[:, ~mask] += 100.0  # errors only outside the mask
    assert np.all(rmse(x, ref, mask=mask) == 0.0)
    assert np.all(np.isinf(psnr(x, ref, mask=mask)))
    assert np.all(rmse(x, ref) > 0.0)
    x2 = ref.copy()
    x2[:, mask] += 10.0
    np.testing.assert_allclose(rmse(x2, ref, mask=mask), 10.0)
    np.testing.assert_allclose(psnr(x2, ref, mask=mask), 20 * math.log10(400 / 10))
    # a full mask gives the unmasked SSIM; a per-slice mask [N, H, W] is accepted
    full = np.ones((2, 24, 24), bool)
    np.testing.assert_allclose(ssim(x2, ref, mask=full), ssim(x2, ref))
    assert ssim(x, ref, mask=mask)[0] > ssim(x, ref)[0]


def test_body_mask_option():
    from turndiff.phantoms import make_phantom

    ref = make_phantom(64, seed=1)
    x = ref.copy()
    x[:3, :3] += 300.0  # a corner outside the body
    assert rmse(x, ref, mask="body", window=None) == 0.0
    assert rmse(x, ref, window=None) > 0.0


@pytest.mark.parametrize(
    "x, ref",
    [
        (np.zeros((8, 8)), np.zeros((8, 9))),
        (np.zeros((2, 8, 8)), np.zeros((8, 8))),
        (np.zeros(8), np.zeros(8)),
        (np.zeros((1, 1, 8, 8)), np.zeros((1, 1, 8, 8))),
        (np.full((8, 8), np.nan), np.zeros((8, 8))),
        (np.zeros((8, 8)), np.full((8, 8), np.inf)),
        (np.zeros((8, 8), bool), np.zeros((8, 8))),
    ],
)
def test_bad_inputs_raise_input_error(x, ref):
    for f in (psnr, ssim, rmse, evaluate):
        with pytest.raises(InputError):
            f(x, ref)


def test_bad_options_raise_input_error():
    a = np.zeros((2, 16, 16))
    with pytest.raises(InputError):
        psnr(a, a, window="bone")
    with pytest.raises(InputError):
        rmse(a, a, window=(100, -100))
    with pytest.raises(InputError):
        rmse(a, a, mask=np.ones((8, 8), bool))
    with pytest.raises(InputError):
        rmse(a, a, mask=np.ones((16, 16)))  # not boolean
    empty = np.ones((2, 16, 16), bool)
    empty[1] = False
    with pytest.raises(InputError, match="slice 1"):
        rmse(a, a, mask=empty)
    with pytest.raises(InputError):
        ssim(np.zeros((5, 5)), np.zeros((5, 5)))
    with pytest.raises(InputError):
        mean_gradient_magnitude(a, pixel_spacing=0.0)


def test_evaluate_summary(pair):
    x, ref = pair
    r = evaluate(x, ref)
    assert set(r) == {"full", "soft"}
    for w in r:
        assert set(r[w]) == {"psnr", "ssim", "rmse"}
        for name, f in (("psnr", psnr), ("ssim", ssim), ("rmse", rmse)):
            vals = f(x, ref, window=w)
            assert r[w][name]["per_slice"] == pytest.approx(list(vals))
            assert r[w][name]["mean"] == pytest.approx(vals.mean())
            assert r[w][name]["std"] == pytest.approx(vals.std())
    json.dumps(r)  # plain Python types
    one = evaluate(x[0], ref[0], windows=("soft", (-1000, 400)))
    assert set(one) == {"soft", "-1000,400"} and len(one["soft"]["psnr"]["per_slice"]) == 1
    same = evaluate(ref, ref)
    assert math.isinf(same["soft"]["psnr"]["mean"]) and same["soft"]["rmse"]["mean"] == 0.0


def test_mean_gradient_magnitude(rng):
    assert mean_gradient_magnitude(np.full((16, 16), 40.0)) == 0.0
    ramp = np.tile(np.arange(24.0) * 5.0, (24, 1))
    inner = np.zeros((24, 24), bool)
    inner[2:-2, 2:-2] = True
    assert mean_gradient_magnitude(ramp, mask=inner) == pytest.approx(5.0)
    assert mean_gradient_magnitude(ramp, mask=inner, pixel_spacing=0.5) == pytest.approx(10.0)
    noisy = rng.normal(0, 30, (2, 32, 32))
    g = mean_gradient_magnitude(noisy)
    assert g.shape == (2,)
    smooth = np.stack([ndimage.gaussian_filter(s, 2) for s in noisy])
    assert np.all(mean_gradient_magnitude(smooth) < 0.3 * g)


def test_gradient_ratios_separate_blur_from_noise(rng):
    # Disc phantom: a sharp edge and a flat inside and outside.
    yy, xx = np.mgrid[:48, :48]
    disc = np.where((yy - 24) ** 2 + (xx - 24) ** 2 < 15**2, 100.0, 0.0)
    assert math.isnan(gradient_ratios(disc, disc, mask=None)["flat"])  # no gradient there at all
    ref = disc + np.stack([ndimage.gaussian_filter(rng.normal(0, 20, disc.shape), 3) for _ in range(2)])
    same = gradient_ratios(ref, ref, mask=None)
    assert same == pytest.approx({"all": 1.0, "edges": 1.0, "flat": 1.0})
    blurred = np.stack([ndimage.gaussian_filter(s, 1.5) for s in ref])
    noisy = ref + rng.normal(0, 10, ref.shape)
    b, n = gradient_ratios(blurred, ref, mask=None), gradient_ratios(noisy, ref, mask=None)
    assert b["edges"] < 0.8  # blur lowers the edge gradient
    assert n["flat"] > 1.5  # noise adds gradient where the reference is flat
    assert n["edges"] > b["edges"]
    # The overall ratio of a noisy, blurred image can look "right": the split shows why.
    nb = gradient_ratios(blurred + rng.normal(0, 10, ref.shape), ref, mask=None)
    assert nb["edges"] < 0.8 and nb["all"] > b["all"]
    with pytest.raises(InputError, match="quantile"):
        gradient_ratios(ref, ref, edge_quantile=0.3, flat_quantile=0.5)


def test_through_plane_known_values(rng):
    from turndiff.metrics import through_plane

    ref = np.cumsum(rng.normal(0, 20, (6, 32, 32)), axis=0)  # a stack that changes slice to slice
    same = through_plane(ref, ref, mask=None)
    assert same["dz_rmse"] == 0 and same["banding"] == 0 and same["dz_ratio"] == pytest.approx(1.0)
    offsets = np.array([0.0, 5.0, -5.0, 5.0, -5.0, 0.0])
    banded = through_plane(ref + offsets[:, None, None], ref, mask=None)
    assert banded["banding"] == pytest.approx(offsets.std())
    assert banded["dz_rmse"] == pytest.approx(np.sqrt(np.mean(np.diff(offsets) ** 2)))
    shifted = through_plane(ref + 30.0, ref, mask=None)  # one offset for the whole stack: no banding
    assert shifted["banding"] == pytest.approx(0, abs=1e-9) and shifted["dz_rmse"] == pytest.approx(0, abs=1e-9)
    noisy = through_plane(ref + rng.normal(0, 10, ref.shape), ref, mask=None)
    assert noisy["dz_rmse"] == pytest.approx(10 * np.sqrt(2), rel=0.1) and noisy["dz_ratio"] > 1
    smooth = through_plane(ndimage.uniform_filter1d(ref, 3, axis=0), ref, mask=None)
    assert smooth["dz_ratio"] < 1  # smoothed through the plane
    with pytest.raises(InputError):
        through_plane(ref[0], ref[0])
