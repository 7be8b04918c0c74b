"""Procedural CT phantoms: determinism, physical scale, HU values, texture, lesions."""

import numpy as np
import pytest
from scipy import ndimage

from turndiff.errors import InputError
from turndiff.phantoms import DEFAULT_FOV_MM, Tissue, body_mask, make_phantom, make_phantoms

T = Tissue


def _core(labels, tissue, iterations=1):
    """Pixels of ``tissue`` away from its edges (no partial volume)."""
    return ndimage.binary_erosion(labels == tissue, iterations=iterations)


@pytest.fixture(scope="module")
def abdomen():
    # Two contrast phases, 192 px (2 mm pixels): enough for organ cores, still fast.
    return [make_phantom(192, seed=s, region="abdomen", contrast=c, return_labels=True)
            for s, c in ((11, False), (12, True), (13, False))]


@pytest.fixture(scope="module")
def thorax():
    return [make_phantom(192, seed=s, region="thorax", return_labels=True) for s in (21, 22)]


def test_shape_dtype_and_range():
    hu, lab = make_phantom(64, seed=0, return_labels=True)
    assert hu.shape == lab.shape == (64, 64)
    assert hu.dtype == np.float32 and lab.dtype == np.uint8
    assert hu.min() >= -1024 and hu.max() <= 3071
    assert set(np.unique(lab)) <= {int(t) for t in Tissue}
    # corners are air outside the patient
    assert np.allclose(hu[[0, 0, -1], [0, -1, 0]], -1000.0)
    assert lab[0, 0] == T.AIR


def test_same_seed_same_phantom_different_seed_differs():
    a, la = make_phantom(64, seed=7, return_labels=True)
    b, lb = make_phantom(64, seed=7, return_labels=True)
    c = make_phantom(64, seed=8)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(la, lb)
    assert np.abs(a - c).mean() > 20.0


def test_stack_slices_do_not_depend_on_n():
    big = make_phantoms(3, 48, seed=5)
    small, labels = make_phantoms(2, 48, seed=5, return_labels=True)
    assert big.shape == (3, 48, 48) and big.dtype == np.float32
    assert labels.shape == (2, 48, 48)
    np.testing.assert_array_equal(big[:2], small)
    assert np.abs(big[0] - big[1]).mean() > 20.0  # slices are different patients


def test_same_anatomy_in_mm_at_every_size():
    for seed in (1, 4):
        lo = make_phantom(96, seed=seed, psf=0)  # the system PSF is set per pixel grid
        hi = make_phantom(192, seed=seed, psf=0)
        areas = [body_mask(x).sum() * (DEFAULT_FOV_MM / x.shape[0]) ** 2 for x in (lo, hi)]
        assert areas[0] == pytest.approx(areas[1], rel=0.02)
        assert 2.5e4 < areas[0] < 1.2e5  # an adult cross-section, mm^2
        # the fine image averaged 2x2 is the coarse one, up to partial volume
        down = hi.reshape(96, 2, 96, 2).mean(axis=(1, 3))
        inside = ndimage.binary_erosion(body_mask(lo), iterations=2)
        assert np.median(np.abs(down - lo)[inside]) < 10.0


def test_pixel_spacing_sets_the_field_of_view():
    default = make_phantom(64, seed=3)
    wide = make_phantom(64, seed=3, pixel_spacing=8.0)  # 512 mm field of view
    a_default = body_mask(default).sum() * (DEFAULT_FOV_MM / 64) ** 2
    a_wide = body_mask(wide).sum() * 8.0**2
    assert a_wide == pytest.approx(a_default, rel=0.08)
    assert body_mask(wide).sum() < 0.7 * body_mask(default).sum()


def test_tissue_hu_values(abdomen, thorax):
    def med(hu, lab, t):
        m = _core(lab, t)
        assert m.sum() > 5, t.name
        return float(np.median(hu[m]))

    for hu, lab in abdomen:
        assert -125 < med(hu, lab, T.FAT) < -75
        assert 30 < med(hu, lab, T.MUSCLE) < 75
        assert 45 < med(hu, lab, T.LIVER) < 130
        assert 25 < med(hu, lab, T.BLOOD) < 260
        # cortex is 1-2 mm thick: thinner than these pixels, so look at its brightest part
        assert np.percentile(hu[lab == T.CORTICAL_BONE], 90) > 400
        assert 100 < med(hu, lab, T.TRABECULAR_BONE) < 400
    non_contrast, contrast = abdomen[0], abdomen[1]
    assert med(*contrast, T.LIVER) > med(*non_contrast, T.LIVER) + 20
    for hu, lab in thorax:
        assert -900 < med(hu, lab, T.LUNG) < -760
        assert (lab == T.LIVER).sum() == 0 or 45 < med(hu, lab, T.LIVER) < 130
        assert (lab == T.MYOCARDIUM).sum() + (lab == T.BLOOD).sum() > 0
    # no lung in the abdomen, no pancreas in the thorax
    assert all((lab == T.LUNG).sum() == 0 for _, lab in abdomen)
    assert all((lab == T.PANCREAS).sum() == 0 for _, lab in thorax)


def test_soft_tissue_is_textured_not_piecewise_constant(abdomen):
    for hu, lab in abdomen:
        for t in (T.LIVER, T.MUSCLE, T.FAT):
            m = _core(lab, t, iterations=2)
            assert hu[m].std() > 3.0, t.name
            # energy at the finest scales: the image minus a slightly blurred copy
            hf = hu - ndimage.gaussian_filter(hu, 1.0)
            assert np.abs(hf[m]).mean() > 0.5, t.name
        bone = _core(lab, T.TRABECULAR_BONE)
        assert hu[bone].std() > 25.0


def test_edges_have_partial_volume():
    hu, lab = make_phantom(128, seed=2, region="abdomen", return_labels=True)
    body = body_mask(hu)
    edge = body & ~ndimage.binary_erosion(body)
    # skin pixels straddle air and tissue: intermediate values, not a hard step
    assert np.mean((hu[edge] > -950) & (hu[edge] < -150)) > 0.3


def test_lesions_and_calcifications(abdomen):
    for hu, lab in abdomen:
        assert (lab == T.LESION).sum() > 0
    counts = [(make_phantom(128, seed=s, region="abdomen", return_labels=True)[1] == T.LESION).sum()
              for s in range(30, 36)]
    assert all(c > 0 for c in counts)
    # lesions are low contrast: their values sit near the soft-tissue range
    hu, lab = abdomen[0]
    assert -60 < np.median(hu[lab == T.LESION]) < 200
    seen = [(make_phantom(96, seed=s, return_labels=True)[1] == T.CALCIFICATION).any() for s in range(12)]
    assert any(seen)


def test_body_mask(thorax):
    hu, lab = thorax[0]
    m = body_mask(hu)
    assert m.dtype == bool and m.shape == hu.shape
    assert m[lab == T.LUNG].all()  # holes are filled
    assert not m[lab == T.TABLE].any()
    assert not m[0, 0]
    stack = np.stack([hu, hu])
    np.testing.assert_array_equal(body_mask(stack)[1], m)
    assert not body_mask(np.full((8, 8), -1000.0)).any()
    with pytest.raises(InputError):
        body_mask(np.zeros(5))


@pytest.mark.parametrize(
    "kwargs",
    [dict(size=4), dict(size=32.5), dict(size=True), dict(size=32, pixel_spacing=-1.0),
     dict(size=32, pixel_spacing=float("nan")), dict(size=32, region="pelvis")],
)
def test_bad_arguments_raise_input_error(kwargs):
    size = kwargs.pop("size")
    with pytest.raises(InputError):
        make_phantom(size, seed=0, **kwargs)


def test_bad_stack_count():
    with pytest.raises(InputError):
        make_phantoms(0, 32, seed=0)


def test_system_psf_blurs_and_is_validated():
    sharp = make_phantom(96, seed=2, psf=0)
    default = make_phantom(96, seed=2)
    blurred = make_phantom(96, seed=2, psf=1.5)
    hf = [np.abs(np.diff(x, axis=1)).mean() for x in (sharp, default, blurred)]
    assert hf[0] > hf[1] > hf[2]
    # blurring keeps the mean (no lost attenuation) away from the clipped range
    assert abs(float(sharp[30:60, 30:60].mean() - default[30:60, 30:60].mean())) < 5.0
    for bad in (-1.0, float("nan"), True, "1"):
        with pytest.raises(InputError, match="psf"):
            make_phantom(32, seed=0, psf=bad)


def _body_rms(a, b, ref):
    m = ref > -500
    return float(np.sqrt(np.mean((a - b)[m] ** 2)))


def test_volume_slices_are_continuous_one_patient():
    """Neighbouring slices of a volume differ by a few tens of HU (the anatomy moving
    smoothly, the texture changing), not by the hundreds between independent patients,
    and the volume is the anatomy of its seed."""
    from turndiff.phantoms import make_volume

    vol, labels = make_volume(9, 96, seed=3, return_labels=True)
    assert vol.shape == labels.shape == (9, 96, 96) and vol.dtype == np.float32 and labels.dtype == np.uint8
    neighbours = [_body_rms(vol[k + 1], vol[k], vol[k]) for k in range(8)]
    strangers = make_phantoms(2, 96, seed=0)
    assert max(neighbours) < 0.25 * _body_rms(strangers[1], strangers[0], strangers[0]), neighbours
    assert min(neighbours) > 2.0  # the slices are not copies of one another
    far = _body_rms(vol[8], vol[0], vol[0])
    assert far > max(neighbours)  # the anatomy drifts through the volume
    # The middle slice is make_phantom(seed) plus the through-plane texture (8 HU std).
    assert _body_rms(vol[4], make_phantom(96, seed=3), vol[4]) < 12.0
    np.testing.assert_array_equal(make_volume(9, 96, seed=3), vol)  # seeded
    assert not np.array_equal(make_volume(9, 96, seed=4), vol)


@pytest.mark.parametrize("kwargs", [{"n": 0}, {"n": 2.5}, {"slice_spacing": 0}, {"slice_spacing": float("nan")},
                                    {"size": 4}])
def test_volume_bad_arguments(kwargs):
    from turndiff.phantoms import make_volume

    args = {"n": 3, "size": 32, **kwargs}
    with pytest.raises(InputError):
        make_volume(args.pop("n"), args.pop("size"), seed=0, **args)
