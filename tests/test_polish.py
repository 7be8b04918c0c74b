"""The final polish (:func:`turndiff.inference.polish.bregman_tv`): TV with one Bregman step
removes fine-grained noise and keeps more of a faint compact lesion than plain TV does."""

import numpy as np
import pytest

from turndiff.errors import InputError
from turndiff.inference.polish import _tv, bregman_tv


def _scene(seed=0, n=96, noise_hu=10.0):
    """Soft tissue (40 HU) with a +25 HU disc of radius 4 px and a bright block, plus white
    noise (a one-pixel grain, the texture the polish is for)."""
    yy, xx = np.mgrid[:n, :n]
    clean = np.full((n, n), 40.0)
    disc = np.hypot(yy - n / 2, xx - n / 3) <= 4
    clean[disc] += 25.0
    clean[10:30, 60:85] = 300.0
    noisy = clean + np.random.default_rng(seed).normal(0.0, noise_hu, clean.shape)
    return clean, noisy, disc


def test_polish_removes_the_grain_and_keeps_the_lesion():
    clean, noisy, disc = _scene()
    yy, xx = np.mgrid[:96, :96]
    flat = (np.hypot(yy - 48, xx - 32) > 10) & ~((yy < 36) & (xx > 54))
    ring = (np.hypot(yy - 48, xx - 32) > 6) & (np.hypot(yy - 48, xx - 32) <= 12)
    w = 28.0
    polished = bregman_tv(noisy, w)
    plain = _tv(noisy[None], w)[0]

    def contrast(x):
        return float(x[disc].mean() - x[ring].mean())

    # The grain goes: the error in flat tissue falls by more than half.
    assert (polished - clean)[flat].std() < 0.5 * (noisy - clean)[flat].std()
    # Plain TV at the same weight flattens the disc; the Bregman step gives its contrast back.
    assert contrast(plain) < 0.8 * 25.0
    assert contrast(polished) > 0.9 * 25.0
    assert contrast(polished) > contrast(plain) + 3.0
    # Edges are kept: the block's level stays within 2% of its height.
    assert abs(float(polished[15:25, 65:80].mean()) - 300.0) < 5.0
    # And the whole image is closer to the truth than the input.
    assert np.sqrt(np.mean((polished - clean) ** 2)) < 0.4 * np.sqrt(np.mean((noisy - clean) ** 2))


def test_polish_is_per_slice_and_off_at_zero():
    _, a, _ = _scene(seed=1)
    _, b, _ = _scene(seed=2)
    stack = bregman_tv(np.stack([a, b]), 28.0)
    assert stack.dtype == np.float32 and stack.shape == (2, 96, 96)
    # A slice's polish does not depend on its neighbours (no TV across slices).
    np.testing.assert_allclose(stack[0], bregman_tv(a, 28.0), atol=1e-3)
    np.testing.assert_allclose(stack[1], bregman_tv(b, 28.0), atol=1e-3)
    np.testing.assert_array_equal(bregman_tv(a, 0.0), a.astype(np.float32))


@pytest.mark.parametrize("weight", [-1.0, float("nan"), float("inf")])
def test_polish_refuses_a_bad_weight(weight):
    with pytest.raises(InputError, match="TV weight"):
        bregman_tv(np.zeros((8, 8)), weight)


def test_polish_refuses_a_bad_shape():
    with pytest.raises(InputError, match="shape"):
        bregman_tv(np.zeros(8), 4.0)
