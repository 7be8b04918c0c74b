import numpy as np
import pytest

from turndiff.dose import add_noise, dose_from_photons, hu_to_mu, mu_to_hu, photons_from_dose, postlog_variance
from turndiff.errors import InputError


def test_dose_units():
    assert photons_from_dose(0.25) == 2.5e4
    assert dose_from_photons(1e4) == pytest.approx(0.1)
    with pytest.raises(InputError):
        photons_from_dose(0)


def test_hu_mu_roundtrip():
    hu = np.array([-1000.0, 0.0, 1000.0, 40.0], np.float32)
    np.testing.assert_allclose(mu_to_hu(hu_to_mu(hu)), hu, atol=1e-3)
    assert hu_to_mu(np.array([-2000.0]))[0] == 0.0


@pytest.mark.parametrize("photons", [1e4, 2.5e4, 1e5])
def test_postlog_variance_matches_poisson_prediction(photons):
    p = np.linspace(0.5, 3.0, 6, dtype=np.float32)[:, None].repeat(20000, 1)
    y = add_noise(p, photons, rng=0, electronic_std=0.0)
    measured = (y - p).var(1)
    predicted = 1.0 / (photons * np.exp(-p[:, 0]))
    np.testing.assert_allclose(measured, predicted, rtol=0.10)


def test_electronic_noise_adds_variance():
    p = np.full((50000,), 6.0, np.float32)  # ~60 photons at 2.5e4: low counts
    v0 = add_noise(p, 2.5e4, rng=1, electronic_std=0.0).var()
    v1 = add_noise(p, 2.5e4, rng=1, electronic_std=5.0).var()
    assert v1 > v0
    assert postlog_variance(p[:1], 2.5e4, electronic_std=5.0)[0] > postlog_variance(p[:1], 2.5e4)[0]


def test_photon_starvation_is_finite_and_seeded():
    p = np.full((4, 8, 8), 30.0, np.float32)  # exp(-30) * I0 << 1 photon
    y1 = add_noise(p, 1e4, rng=7)
    assert np.isfinite(y1).all()
    np.testing.assert_array_equal(y1, add_noise(p, 1e4, rng=7))
    assert not np.array_equal(y1, add_noise(p, 1e4, rng=8))


def test_bad_inputs():
    with pytest.raises(InputError, match="NaN"):
        add_noise(np.array([np.nan]), 1e4, rng=0)
    with pytest.raises(InputError):
        add_noise(np.zeros(3), -1, rng=0)
