"""Task-based image quality (turndiff.iq) against analytic cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage, special

from turndiff.errors import InputError
from turndiff.iq import cho_detectability, disc_rois, insert_accuracy, laguerre_gauss_channels, nps, ttf


def test_nps_of_white_noise_is_flat_at_its_known_level(rng):
    sigma, dx = 12.0, 0.5
    result = nps(rng.normal(0, sigma, (64, 64, 64)), dx)
    assert result.variance == pytest.approx(sigma**2, rel=0.03)  # the NPS integrates to the variance
    level = sigma**2 * dx**2  # HU^2 mm^2
    inner = result.radial[(result.frequencies > 0.05) & (result.frequencies < 0.9)]
    assert np.abs(inner / level - 1).max() < 0.1  # flat
    assert result.nps_2d.shape == (64, 64)


def test_nps_of_blurred_noise_follows_the_filter(rng):
    """Gaussian-filtered white noise: NPS = sigma^2 dx^2 |H(f)|^2, H = exp(-2 pi^2 s^2 f^2)."""
    sigma, dx, s_px = 10.0, 1.0, 1.5
    noise = ndimage.gaussian_filter(rng.normal(0, sigma, (48, 128, 128)), (0, s_px, s_px), mode="wrap")
    result = nps(noise, dx)
    expect = sigma**2 * dx**2 * np.exp(-4 * np.pi**2 * (s_px * dx) ** 2 * result.frequencies**2)
    sel = result.frequencies < 0.2
    np.testing.assert_allclose(result.radial[sel], expect[sel], rtol=0.12)
    assert result.peak_frequency < 0.05  # low-pass noise peaks at the lowest frequencies
    white = nps(rng.normal(0, sigma, (48, 128, 128)), dx)
    assert result.mean_frequency < 0.5 * white.mean_frequency


def test_ttf_of_a_gaussian_blur(rng):
    """A disc blurred by a Gaussian of s pixels: TTF = exp(-2 pi^2 (s dx)^2 f^2), so f50 =
    sqrt(ln 2 / (2 pi^2)) / (s dx)."""
    dx, s_px, radius = 0.6, 1.2, 25.0
    yy, xx = np.mgrid[:128, :128]
    r = np.hypot(yy - 63.7, xx - 64.2)
    up = 8  # render the disc's partial volume finely, then blur
    yy8, xx8 = np.mgrid[: 128 * up, : 128 * up] / up + (0.5 / up - 0.5)
    disc = (np.hypot(yy8 - 63.7, xx8 - 64.2) <= radius).reshape(128, up, 128, up).mean((1, 3))
    img = ndimage.gaussian_filter(40.0 * disc, s_px)
    res = ttf(img, (63.7, 64.2), radius, dx)
    f50 = math.sqrt(math.log(2) / (2 * math.pi**2)) / (s_px * dx)
    f10 = math.sqrt(math.log(10) / (2 * math.pi**2)) / (s_px * dx)
    assert res.f50 == pytest.approx(f50, rel=0.05)
    assert res.f10 == pytest.approx(f10, rel=0.05)
    assert res.contrast == pytest.approx(40.0, rel=0.02)
    sharper = ttf(ndimage.gaussian_filter(40.0 * disc, 0.6), (63.7, 64.2), radius, dx)
    assert sharper.f50 > 1.5 * res.f50
    assert r.shape == img.shape


def _gaussian_task(size: int, w: float, amp: float, sigma: float, count: int):
    """A Gaussian signal of width ``w`` px and peak ``amp`` HU, the ideal observer's d' in
    white noise of std ``sigma`` (``||s|| / sigma``), and ``count`` Laguerre-Gauss channels
    whose first spans it (``a = w sqrt(2 pi)``)."""
    c = (size - 1) / 2
    yy, xx = np.mgrid[:size, :size]
    signal = amp * np.exp(-((yy - c) ** 2 + (xx - c) ** 2) / (2 * w**2))
    return signal, float(np.linalg.norm(signal) / sigma), laguerre_gauss_channels(size, w * math.sqrt(2 * math.pi),
                                                                                  count)


def test_cho_reaches_the_ideal_observer_for_a_gaussian_signal_in_white_noise(rng):
    """In white noise of std sigma the ideal observer's d' is ||s|| / sigma; a Gaussian
    signal lies in the first Laguerre-Gauss channel's span (a = w sqrt(2 pi)), so the CHO
    reaches it (within the sampling error of 300 + 300 ROIs)."""
    size, sigma = 31, 20.0
    signal, ideal, channels = _gaussian_task(size, 2.5, 6.0, sigma, 5)
    absent = rng.normal(0, sigma, (300, size, size))
    present = rng.normal(0, sigma, (300, size, size)) + signal
    det = cho_detectability(present, absent, channels)
    assert det.d_prime == pytest.approx(ideal, rel=0.12)
    assert det.auc == pytest.approx(special.ndtr(ideal / math.sqrt(2)), abs=0.04)
    weaker = cho_detectability(rng.normal(0, sigma, (300, size, size)) + signal / 2, absent, channels)
    assert weaker.d_prime == pytest.approx(ideal / 2, rel=0.2)  # d' is linear in the contrast
    none = cho_detectability(rng.normal(0, sigma, (300, size, size)), absent, channels)
    assert abs(none.d_prime) < 0.3 and none.auc == pytest.approx(0.5, abs=0.06)
    with pytest.raises(InputError):
        cho_detectability(present[:5], absent[:5], channels)


def test_cho_bootstrap_interval_covers_the_ideal_observer(rng):
    """With few ROIs (as in `turndiff iq`) the 95% bootstrap interval of d' must cover the
    ideal observer's d' in about 95% of repeated experiments, miss on both sides rather
    than one, widen as the ROIs get fewer, and leave d' itself unchanged."""
    size, sigma = 21, 20.0
    signal, ideal, channels = _gaussian_task(size, 2.0, 5.0, sigma, 4)
    above = below = 0
    widths: dict[int, list] = {}
    for trial in range(40):
        n = 48 if trial % 2 else 192
        absent = rng.normal(0, sigma, (n, size, size))
        present = rng.normal(0, sigma, (n, size, size)) + signal
        det = cho_detectability(present, absent, channels, bootstrap=300, seed=trial)
        lo, hi = det.d_prime_ci
        assert lo < det.d_prime < hi
        assert det.d_prime == cho_detectability(present, absent, channels, seed=trial).d_prime
        above += ideal > hi
        below += ideal < lo
        widths.setdefault(n, []).append(hi - lo)
    # 38 of 40 expected (and found). Bootstrapping only the test statistics (templates held
    # fixed) covered 32-37 with most misses below the ideal: the templates' error was left out
    # and the finite-sample CHO's low bias not corrected. Other seeds: 37-39 of 40.
    assert above + below <= 5, (above, below)
    assert above <= 3, (above, below)
    assert np.mean(widths[48]) > 1.5 * np.mean(widths[192])  # about 2x: 1/sqrt(n)
    assert cho_detectability(present, absent, channels).d_prime_ci is None
    one_fold = cho_detectability(present, absent, channels, folds=1, bootstrap=200)
    assert one_fold.d_prime_ci[0] < one_fold.d_prime < one_fold.d_prime_ci[1]


def test_disc_rois_and_insert_accuracy(rng):
    imgs = rng.normal(0, 5, (4, 40, 40))
    imgs[:, 10:20, 10:20] += 100
    rois = disc_rois(imgs, [(15, 15), (30, 30)], 5)
    assert rois.shape == (8, 5, 5) and rois[:4].mean() == pytest.approx(100, abs=3)
    m = np.zeros((40, 40), bool)
    m[12:18, 12:18] = True
    acc = insert_accuracy(imgs, {"a": m}, {"a": 90.0})
    assert acc["a"]["bias"] == pytest.approx(10, abs=2) and acc["a"]["noise"] == pytest.approx(5, rel=0.2)
    with pytest.raises(InputError):
        disc_rois(imgs, [(1, 1)], 5)


def test_qa_phantoms_hold_their_nominal_values_and_the_system_psf():
    from turndiff.phantoms import SYSTEM_PSF_PX
    from turndiff.phantoms.qa import CTP404_INSERTS, LCD_RODS, make_ctp404_phantom, make_lcd_phantom

    lcd = make_lcd_phantom(256)
    assert len(lcd.inserts) == 4 * len(LCD_RODS) and len(lcd.background) == 4 * len(LCD_RODS)
    big = [i for i in lcd.inserts if i.name.startswith("10 mm")]
    for ins in big:  # a 10 mm rod keeps its +3 HU in its middle
        assert lcd.hu[lcd.mask(ins, 0.5)].mean() == pytest.approx(3.0, abs=0.2)
    for r, c in lcd.background:
        assert abs(lcd.hu[int(round(r)), int(round(c))]) < 0.1
    ctp = make_ctp404_phantom(256)
    acc = insert_accuracy(ctp.hu, {i.name: ctp.mask(i, 0.5) for i in ctp.inserts}, CTP404_INSERTS)
    assert max(abs(v["bias"]) for v in acc.values()) < 3.0
    teflon = next(i for i in ctp.inserts if i.name == "Teflon")
    res = ttf(ctp.hu, teflon.centre, teflon.radius, ctp.pixel_spacing, half_width=0.8 * teflon.radius)
    expect = math.sqrt(math.log(2) / (2 * math.pi**2)) / (SYSTEM_PSF_PX * ctp.pixel_spacing)
    assert res.f50 == pytest.approx(expect, rel=0.06)  # the phantom's own PSF, measured back


def test_cho_on_fbp_of_the_lcd_phantom_grows_as_the_square_root_of_the_dose():
    """Quantum-limited FBP: d' is proportional to the square root of the dose, so 4x the
    dose doubles it (within the sampling error of 12 realisations)."""
    from turndiff.benchmark.iq import lcd_detectability
    from turndiff.dose import photons_from_dose, simulate_scan
    from turndiff.phantoms.qa import make_lcd_phantom
    from turndiff.physics import CTProjector, default_fan_geometry

    g = default_fan_geometry(256)
    lcd = make_lcd_phantom(256)
    stack = np.repeat(lcd.hu[None], 12, 0)
    d = {}
    for dose in (1.0, 0.25):
        sino, _ = simulate_scan(stack, g, photons=photons_from_dose(dose), seed=int(dose * 100))
        d[dose] = lcd_detectability(CTProjector(g).fbp_hu(sino), lcd)
    full, quarter = (np.mean([v["d_prime"] for v in d[k].values()]) for k in (1.0, 0.25))
    assert 1.4 < full / quarter < 3.5, (full, quarter)  # 2 in expectation; a finite-sample CHO is biased low
    auc = {k: [v["auc"] for v in d[k].values()] for k in d}
    assert np.mean(auc[1.0]) > np.mean(auc[0.25]) and min(auc[0.25]) > 0.5


def test_signal_absent_scans_keep_a_fixed_pattern_out_of_d_prime(rng):
    """A reconstruction whose mean is not the same everywhere (here an angular pattern, +5 HU
    at the rods' angles and -5 HU half-way between them, the same in every scan) must not
    be credited with detecting rods it erased. Read against the background positions, the
    pattern alone gives a large d'; against scans of the phantom without its rods, read at
    the rods' own positions, d' is about 0, and real rods are still detected."""
    from turndiff.benchmark.iq import lcd_detectability
    from turndiff.phantoms.qa import make_lcd_phantom

    lcd, free = make_lcd_phantom(256), make_lcd_phantom(256, signal=False)
    assert [i.centre for i in free.inserts] == [i.centre for i in lcd.inserts]
    assert np.abs(free.hu[np.hypot(*np.mgrid[-128:128, -128:128]) < 60]).max() < 0.01  # no rods left
    yy, xx = np.mgrid[:256, :256] - 127.5
    pattern = np.zeros((256, 256))
    for ring in range(2):  # the second ring of rods is turned by pi / 8 (make_lcd_phantom)
        near = np.abs(np.hypot(yy, xx) - np.hypot(*(np.subtract(lcd.inserts[8 * ring].centre, 127.5)))) < 12
        pattern[near] = 5.0 * np.cos(8 * (np.arctan2(yy, xx)[near] - ring * np.pi / 8))
    r = 16
    erased = pattern + rng.normal(0, 10, (r, 256, 256))  # rods gone, pattern left
    erased_free = pattern + rng.normal(0, 10, (r, 256, 256))
    old = lcd_detectability(erased, lcd)
    new = lcd_detectability(erased, lcd, erased_free)
    assert all(v["absent"] == "signal-free scans" for v in new.values())
    assert max(v["d_prime"] for v in old.values()) > 3  # the pattern read as signal
    assert max(abs(v["d_prime"]) for v in new.values()) < 0.8, {k: v["d_prime"] for k, v in new.items()}
    kept = lcd_detectability(lcd.hu + pattern + rng.normal(0, 10, (r, 256, 256)), lcd, erased_free)
    kept_d = [v["d_prime"] for v in kept.values()]
    assert min(kept_d) > 0.3 and np.mean(kept_d) > 1.0, kept_d  # 1.0-2.0 each over four other seeds
    with pytest.raises(InputError):
        lcd_detectability(erased, lcd, erased_free[:, :128])


def test_inserted_lesions_add_exactly_their_projection():
    from turndiff.dose import Lesion, hu_to_mu, insert_lesions
    from turndiff.phantoms import make_phantoms
    from turndiff.physics import CTProjector, default_fan_geometry

    g = default_fan_geometry(64)
    hu = make_phantoms(2, 64, seed=1)
    A = CTProjector(g, det_subsamples=3)
    clean = A.forward(hu_to_mu(hu, g.mu_water))
    lesions = [Lesion((30.0, 34.0), 3.0, 25.0, slice=1)]
    out, change = insert_lesions(clean, g, lesions, photons=1e15)  # no noise to speak of
    np.testing.assert_array_equal(out[0], clean[0])  # the slice without a lesion is untouched
    direct = A.forward(hu_to_mu(hu + change, g.mu_water))
    np.testing.assert_allclose(out[1], direct[1], rtol=0, atol=1e-4 * float(np.abs(direct).max()))
    assert change[1].max() == pytest.approx(25.0) and change[1].sum() == pytest.approx(25.0 * math.pi * 9, rel=0.03)
    noisy, _ = insert_lesions(clean, g, lesions, photons=2.5e4, seed=1)
    assert np.std(noisy[1] - out[1]) > 0  # the extra quantum noise of the added attenuation
    with pytest.raises(InputError):
        insert_lesions(clean, g, [Lesion((30.0, 34.0), 3.0, 25.0, slice=5)], photons=1e5)


def test_lesion_scores_measure_the_kept_fraction_and_the_cnr(rng):
    """Half of a lesion kept reads 0.5 whatever the noise (the same noise cancels in
    ``plus - base``); a smoothed-away lesion reads 0; the CNR is contrast over ring noise."""
    from turndiff.benchmark.iq import lesion_positions, lesion_scores
    from turndiff.dose import Lesion

    ref = np.zeros((2, 64, 64), np.float32)
    lesions = [Lesion((20.0, 20.0), 4.0, 30.0, 0), Lesion((40.0, 44.0), 3.0, 20.0, 1)]
    yy, xx = np.mgrid[:64, :64]
    discs = np.zeros_like(ref)
    for les in lesions:
        discs[les.slice][np.hypot(yy - les.centre[0], xx - les.centre[1]) <= les.radius] = les.contrast
    sigma = 5.0
    base = ref + rng.normal(0, sigma, ref.shape).astype(np.float32)
    half = lesion_scores(base, base + 0.5 * discs, ref, lesions)
    assert half["contrast_recovery"] == pytest.approx(0.5, abs=1e-6)
    assert half["contrast_recovery_min"] == pytest.approx(0.5, abs=1e-6)
    assert half["cnr"] == pytest.approx(np.mean([0.5 * 30 / sigma, 0.5 * 20 / sigma]), rel=0.35)
    assert lesion_scores(base, base, ref, lesions)["contrast_recovery"] == pytest.approx(0.0, abs=1e-6)
    # Placed lesions lie in soft tissue, apart from each other, in every slice that has room.
    tissue = np.full((3, 96, 96), 40.0, np.float32)
    placed = lesion_positions(tissue, np.random.default_rng(0), per_slice=2)
    assert [les.slice for les in placed] == [0, 0, 1, 1, 2, 2]
    a, b = placed[0], placed[1]
    assert math.hypot(a.centre[0] - b.centre[0], a.centre[1] - b.centre[1]) > a.radius + b.radius
    assert lesion_positions(np.full((1, 96, 96), 1000.0, np.float32), np.random.default_rng(0), per_slice=2) == []


def test_iq_command_end_to_end(tmp_path):
    """`turndiff iq` on a tiny 256 x 256 model with a baseline: every table and figure is
    written, FBP's detectability grows with the dose (the observer study is wired to the
    right images), and the baseline's images are its own."""
    import json
    import subprocess
    import sys

    def run(*args):
        r = subprocess.run([sys.executable, "-m", "turndiff", *args], capture_output=True, text=True, cwd=tmp_path)
        assert r.returncode == 0, r.stderr[-2000:]

    run("simulate", "phantom:2", "--size", "256", "--out", "scan.h5")
    run("fit", "scan.h5", "--out", "model", "--preset", "tiny", "--device", "cpu")
    run("iq", "model", "--out", "iq", "--doses", "0.25", "--realizations", "12", "--lesion-slices", "1",
        "--device", "cpu", "--baselines", "TV", "--preset", "tiny")
    for f in ("iq.json", "iq.md", "iq_detectability.png", "iq_nps_ttf.png"):
        assert (tmp_path / "iq" / f).is_file(), f
    r = json.loads((tmp_path / "iq" / "iq.json").read_text())
    full = np.mean([v["d_prime"] for v in r["detectability"]["FBP"]["1"].values()])
    quarter = np.mean([v["d_prime"] for v in r["detectability"]["FBP"]["0.25"].values()])
    assert full > quarter > 0
    assert set(r["lesions"]) == {"FBP", "x0 (stage 1)", "TurnDiff", "TV"} and 0.5 < r["lesions"]["FBP"]["contrast_recovery"] < 1.5
    # TV (a baseline, through the benchmark's fit / reconstruct) smooths: less noise than FBP.
    assert r["nps"]["TV"]["0.25"]["noise_std_hu"] < 0.8 * r["nps"]["FBP"]["0.25"]["noise_std_hu"]
    assert -1 <= r["uncertainty"]["spearman"] <= 1 and 0 <= r["uncertainty"]["coverage_2u"] <= 1
    bad = subprocess.run([sys.executable, "-m", "turndiff", "iq", "model", "--out", "x", "--doses", "2"],
                         capture_output=True, text=True, cwd=tmp_path)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "--doses" in bad.stderr
