"""Stage 1 (CSSS): sub-sampling, similarity maps, objective, training and use."""

import numpy as np
import pytest
import torch

from turndiff.dose import add_noise, estimate_photons, postlog_variance
from turndiff.physics import CTProjector, default_fan_geometry, ellipse_image
from turndiff.stage1 import (
    CSSSObjective,
    SimilarityConfig,
    draw_cell_positions,
    similarity_map,
    subsample,
)
from turndiff.errors import InputError
from turndiff.nets import ResidualDenoiser


def test_each_cell_gives_one_distinct_sample_to_each_subsinogram():
    y = torch.arange(2 * 1 * 8 * 6, dtype=torch.float32).reshape(2, 1, 8, 6)
    g = torch.Generator().manual_seed(0)
    pos = draw_cell_positions(tuple(y.shape), 3, generator=g)
    assert pos.shape == (3, 2, 4, 3)
    assert (pos[0] != pos[1]).all() and (pos[1] != pos[2]).all() and (pos[0] != pos[2]).all()
    subs = subsample(y, pos)
    for s in subs:
        assert s.shape == (2, 1, 4, 3)
    # Every value of a sub-sinogram comes from its own 2x2 cell.
    for s in subs:
        for b in range(2):
            for i in range(4):
                for j in range(3):
                    cell = y[b, 0, 2 * i : 2 * i + 2, 2 * j : 2 * j + 2].flatten().tolist()
                    assert float(s[b, 0, i, j]) in cell
    # Samples are distinct values (y has distinct entries) so positions differ in every cell.
    assert not (subs[0] == subs[1]).any()


def test_subsampling_is_seeded_and_varies_per_step():
    shape = (1, 1, 16, 16)
    a = draw_cell_positions(shape, 2, generator=torch.Generator().manual_seed(5))
    b = draw_cell_positions(shape, 2, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a, b)
    g = torch.Generator().manual_seed(5)
    first, second = draw_cell_positions(shape, 2, generator=g), draw_cell_positions(shape, 2, generator=g)
    assert not torch.equal(first, second)
    with pytest.raises(ValueError):
        draw_cell_positions((1, 1, 15, 16), 2)


def _noisy_sino(photons=2.5e4, n=64, seed=0):
    g = default_fan_geometry(n)
    clean = CTProjector(g).forward(ellipse_image(g))
    return clean, add_noise(clean, photons, rng=seed)


def test_similarity_map_is_low_for_noise_and_high_at_edges():
    clean, noisy = _noisy_sino(n=128)
    y = torch.from_numpy(noisy)[None, None]
    pos = draw_cell_positions(tuple(y.shape), 2, generator=torch.Generator().manual_seed(0))
    s1, s2 = subsample(y, pos)
    var = postlog_variance(y, 2.5e4)
    v1, v2 = subsample(var, pos)
    e = similarity_map(s1, s2, v1, v2)
    assert 0 <= float(e.min()) and float(e.max()) <= SimilarityConfig().e_max
    # Where the clean sub-samples differ by much less than the noise, e stays near 0;
    # where they differ by much more (edges), e is high.
    c1, c2 = subsample(torch.from_numpy(clean)[None, None], pos)
    box = torch.nn.functional.avg_pool2d
    struct = box((c1 - c2) ** 2, 5, 1, 2) / box(v1 + v2, 5, 1, 2)
    noise_only, edges = struct < 0.02, struct > 10
    assert noise_only.sum() > 100 and edges.sum() > 20
    assert float(e[noise_only].mean()) < 0.05
    assert float(e[edges].mean()) > 0.5


def test_estimate_photons_from_the_sinogram_alone():
    for i0 in (1e4, 5e4):
        _, noisy = _noisy_sino(photons=i0, n=256, seed=1)
        assert estimate_photons(noisy) == pytest.approx(i0, rel=0.15)


def test_objective_terms_and_ablations():
    _, noisy = _noisy_sino()
    y = torch.from_numpy(noisy[:64, :64].copy())[None, None]
    net = ResidualDenoiser(1, features=(4, 4, 8, 8, 16, 4), shift=float(y.mean()), scale=1.0)
    batch = {"sinogram": y, "photons": torch.tensor([2.5e4]), "step": 1000,
             "generator": torch.Generator().manual_seed(0)}
    loss, logs = CSSSObjective(net, alpha=1.0)(batch)
    assert loss.requires_grad and "reg" in logs and logs["e1"] >= 0
    loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters())
    batch["generator"] = torch.Generator().manual_seed(0)
    _, logs0 = CSSSObjective(net, alpha=0.0)(batch)
    assert "reg" not in logs0
    batch["generator"] = torch.Generator().manual_seed(0)
    _, logs_ns = CSSSObjective(net, use_similarity=False)(batch)
    assert logs_ns["e1"] == 0.0
    assert CSSSObjective(net, alpha=2.0, alpha_warmup=100).alpha_at(50) == pytest.approx(1.0)


def test_training_resumes_after_interruption_bit_exact(tmp_path):
    """A run stopped half-way and resumed from its checkpoint equals an uninterrupted run."""
    from turndiff.stage1 import Stage1Config, train_projection_denoiser

    noisy = np.stack([_noisy_sino(seed=s)[1] for s in range(2)])
    cfg = Stage1Config.preset("tiny", iters=4, checkpoint_every=2)
    full = train_projection_denoiser(noisy, photons=2.5e4, config=cfg, run_dir=tmp_path / "a", progress=False,
                                     device="cpu")
    train_projection_denoiser(noisy, photons=2.5e4, config=cfg, run_dir=tmp_path / "b", progress=False,
                              device="cpu", max_steps=2)
    assert any((tmp_path / "b").rglob("*.safetensors"))
    assert not any((tmp_path / "b").rglob("*.pt")) and not any((tmp_path / "b").rglob("*.pkl"))
    resumed = train_projection_denoiser(noisy, photons=2.5e4, config=cfg, run_dir=tmp_path / "b", progress=False,
                                        device="cpu")
    for (k, a), (_, b) in zip(full.network.state_dict().items(), resumed.network.state_dict().items()):
        assert torch.equal(a, b), k


def test_save_load_and_denoise(tmp_path):
    from turndiff.stage1 import ProjectionDenoiser, Stage1Config, train_projection_denoiser

    noisy = _noisy_sino()[1][None]
    m = train_projection_denoiser(noisy, photons=None, config=Stage1Config.preset("tiny"), progress=False,
                                  device="cpu")
    assert m.info["photons_estimated"] and m.photons > 0
    out = m.denoise(noisy)
    assert out.shape == noisy.shape and np.isfinite(out).all()
    m.save_pretrained(tmp_path / "m")
    np.testing.assert_array_equal(ProjectionDenoiser.from_pretrained(tmp_path / "m").denoise(noisy), out)
    from turndiff.errors import InputError

    with pytest.raises(InputError):
        ProjectionDenoiser.from_pretrained(tmp_path / "nothing")
    with pytest.raises(InputError, match="NaN"):
        m.denoise(np.full_like(noisy, np.nan))


def test_fast_preset_trains_in_bf16_on_a_native_cpu_and_records_it():
    """The ``fast`` preset autocasts training's forward to bf16 on a CPU with native bf16
    (inference stays float32); the model says which arithmetic trained it."""
    from turndiff.stage1 import Stage1Config, train_projection_denoiser
    from turndiff.training import cpu_bf16_native

    assert Stage1Config.preset("fast").train.amp_cpu and not Stage1Config.preset("tiny").train.amp_cpu
    assert not Stage1Config().train.amp_cpu
    noisy = _noisy_sino()[1][None]
    for amp_cpu in (False, True):
        cfg = Stage1Config.preset("tiny", amp_cpu=amp_cpu)
        assert Stage1Config.from_dict(cfg.to_dict()).train.amp_cpu is amp_cpu
        m = train_projection_denoiser(noisy, config=cfg, progress=False, device="cpu")
        assert m.info["train_autocast_bf16"] is (amp_cpu and cpu_bf16_native())
        assert all(p.dtype == torch.float32 for p in m.network.parameters())


class _Double(torch.nn.Module):
    def forward(self, x):
        return 2.0 * x


@pytest.mark.parametrize("form", ["paper", "consistent"])
def test_regulariser_forms_match_their_formulas(form):
    _, noisy = _noisy_sino()
    y = torch.from_numpy(noisy[:32, :32].copy())[None, None]
    photons = torch.tensor([2.5e4])
    batch = {"sinogram": y, "photons": photons, "step": 10, "generator": torch.Generator().manual_seed(3)}
    obj = CSSSObjective(_Double(), alpha=1.0, alpha_warmup=0, regulariser=form)
    _, logs = obj(batch)
    pos = draw_cell_positions(tuple(y.shape), 2, generator=torch.Generator().manual_seed(3))
    s1y, s2y = subsample(y, pos)
    v1, v2 = subsample(postlog_variance(y, photons), pos)
    s1f, s2f = subsample(2.0 * y, pos)
    e1 = similarity_map(s1y, s2y, v1, v2)
    e2 = similarity_map(s1f, s2f, v1, v2)
    out = 2.0 * s1y
    if form == "paper":
        want = ((out - s2y) * (1 - e1) - (s1f - s2f) * (1 - e2)).pow(2).mean()
    else:
        want = ((out - s2y - (s1f - s2f)) * (1 - e2)).pow(2).mean()
    assert logs["reg"] == pytest.approx(float(want), rel=1e-5)
    with pytest.raises(ValueError, match="regulariser"):
        CSSSObjective(_Double(), regulariser="other")


def test_sure_tracks_the_true_error_without_the_clean_sinogram():
    """SURE needs only the noisy sinogram and the noise model, and matches the true MSE."""
    from scipy import ndimage

    from turndiff.errors import InputError
    from turndiff.stage1 import sure_mse

    photons = 1e4
    pairs = [_noisy_sino(photons=photons, seed=s) for s in range(2)]
    clean = np.stack([p[0] for p in pairs]).astype(np.float64)
    noisy = np.stack([p[1] for p in pairs])
    noise_var = float(np.mean((noisy - clean) ** 2))

    def smoother(k):
        return lambda s: np.stack([ndimage.uniform_filter(x, k) for x in s]) if k > 1 else s

    est, true = [], []
    for k in (1, 3, 9):
        f = smoother(k)
        est.append(sure_mse(f, noisy, photons))  # add_noise and SURE share the noise model
        true.append(float(np.mean((f(noisy) - clean) ** 2)))
    np.testing.assert_allclose(est, true, rtol=0.05, atol=0.05 * noise_var)
    assert np.argsort(est).tolist() == np.argsort(true).tolist()  # same choice as the truth
    assert true[2] > true[1]  # a 9-bin box blurs structure: the ranking is not just "smoother wins"
    with pytest.raises(InputError, match="photons"):
        sure_mse(smoother(3), noisy, 0.0)
    with pytest.raises(InputError, match="shape"):
        sure_mse(lambda s: s[:, ::2], noisy, photons)


def test_training_selects_the_checkpoint_with_the_lowest_sure():
    from turndiff.stage1 import Stage1Config, train_projection_denoiser

    noisy = np.stack([_noisy_sino(seed=s)[1] for s in range(2)])  # noisy data only
    cfg = Stage1Config.preset("tiny", iters=4, sure_every=2, sure_slices=1)
    m = train_projection_denoiser(noisy, photons=2.5e4, config=cfg, progress=False, device="cpu")
    sel = m.info["sure_selection"]
    assert [(h["step"], h["weights"]) for h in sel["history"]] == [(2, "raw"), (4, "raw"), (4, "ema")]
    values = [h["sure_mse"] for h in sel["history"]]
    assert sel["selected_sure_mse"] == min(values) and np.isfinite(values).all()
    assert sel["selected_step"] == sel["history"][int(np.argmin(values))]["step"]
    assert "sure_selection" not in train_projection_denoiser(
        noisy, photons=2.5e4, config=Stage1Config.preset("tiny"), progress=False, device="cpu").info


def test_view_pairs_take_two_views_of_one_bin():
    y = torch.arange(1 * 1 * 8 * 5, dtype=torch.float32).reshape(1, 1, 8, 5)
    pos = draw_cell_positions(tuple(y.shape), 2, generator=torch.Generator().manual_seed(0), cell=(2, 1))
    s1, s2 = subsample(y, pos, cell=(2, 1))
    assert s1.shape == (1, 1, 4, 5)
    # Same bin, the two views of the pair: the values differ by exactly one view (5 bins).
    assert torch.equal((s1 - s2).abs(), torch.full_like(s1, 5.0))
    with pytest.raises(ValueError):
        draw_cell_positions(tuple(y.shape), 3, cell=(2, 1))


def test_ramp_weighting_weighs_what_fbp_amplifies():
    from turndiff.stage1.objective import ramp_weighted_mean_square

    g = torch.Generator().manual_seed(0)
    white = torch.randn(256, 128, generator=g) * 2.0
    assert float(ramp_weighted_mean_square(white, 0.1)) == pytest.approx(4.0, rel=0.05)  # white: plain MSE
    assert float(ramp_weighted_mean_square(white, 1.0)) == pytest.approx(float(white.pow(2).mean()), rel=1e-5)
    t = torch.arange(128, dtype=torch.float32)
    slow, fast = torch.cos(2 * np.pi * 2 * t / 128), torch.cos(2 * np.pi * 50 * t / 128)
    # Equal energy, but the high detector frequency costs far more, as it does after the ramp filter.
    assert float(ramp_weighted_mean_square(fast[None], 0.1)) > 5 * float(ramp_weighted_mean_square(slow[None], 0.1))


class _Box(torch.nn.Module):
    def __init__(self, k):
        super().__init__()
        self.k = k

    def forward(self, x):
        return torch.nn.functional.avg_pool2d(x, (1, self.k), 1, (0, self.k // 2), count_include_pad=False)


def test_recorrupted_loss_is_the_clean_error_plus_a_constant():
    """R2R's loss ranks fixed denoisers by their true error to the clean sinogram, with no clean data."""
    from turndiff.stage1 import RecorruptedObjective

    clean, noisy = _noisy_sino(photons=1e4, n=64)
    y = torch.from_numpy(noisy)[None, None]
    p = torch.from_numpy(clean)[None, None]
    photons = torch.tensor([1e4])
    sigma2 = float(postlog_variance(y, photons).mean())
    a = 0.5
    losses, trues = [], []
    for k in (1, 3, 9):
        obj = RecorruptedObjective(_Box(k), recorrupt=a, loss_weighting="none")
        lo, tr = [], []
        for s in range(12):
            g = torch.Generator().manual_seed(s)
            lo.append(float(obj({"sinogram": y, "photons": photons, "generator": g})[0]))
            z = torch.randn(y.shape, generator=torch.Generator().manual_seed(s)) * postlog_variance(y, photons).sqrt()
            tr.append(float((_Box(k)(y + a * z) - p).pow(2).mean()))
        losses.append(np.mean(lo))
        trues.append(np.mean(tr))
    offset = np.array(losses) - np.array(trues)
    # The constant is the target noise, (1 + 1/a^2) sigma^2 (plus the input's own noise: y - z/a - p).
    np.testing.assert_allclose(offset, sigma2 * (1 + 1 / a**2), rtol=0.1)
    assert np.argsort(losses).tolist() == np.argsort(trues).tolist()



@pytest.mark.parametrize("weighting", ["none", "ramp"])
def test_sure_loss_estimates_the_clean_error(weighting):
    """The SURE objective is, on average over probes, the true (weighted) error to the clean
    sinogram, and ranks fixed denoisers as the truth does, with no clean data."""
    from turndiff.stage1 import SureObjective
    from turndiff.stage1.objective import _mean_square

    clean, noisy = _noisy_sino(photons=1e4, n=64)
    y = torch.from_numpy(noisy)[None, None]
    p = torch.from_numpy(clean)[None, None]
    photons = torch.tensor([1e4])
    losses, trues = [], []
    for k in (1, 3, 9):
        obj = SureObjective(_Box(k), loss_weighting=weighting)
        lo = [float(obj({"sinogram": y, "photons": photons, "generator": torch.Generator().manual_seed(s)})[0])
              for s in range(8)]
        losses.append(np.mean(lo))
        trues.append(float(_mean_square(_Box(k)(y) - p, weighting, 0.1)))
    # k = 1 is the identity: its error is all noise; the box filters remove most of it.
    np.testing.assert_allclose(losses, trues, rtol=0.15)
    assert np.argsort(losses).tolist() == np.argsort(trues).tolist()


def test_sure_band_weights_give_back_what_an_oversmoothing_denoiser_took():
    """A heavy smoother's correction is kept where the data are noise (high detector
    frequencies) and undone where it blurs signal (low ones); the blend beats both the
    smoother and the data, and on a cleaner scan more of the data is given back."""
    from scipy.ndimage import uniform_filter1d

    from turndiff.stage1.sure import apply_band_weights, sure_band_weights

    g = default_fan_geometry(64)
    clean = CTProjector(g).forward(ellipse_image(g))
    smooth = lambda s: uniform_filter1d(s, 9, axis=-1)
    err = lambda x: float(np.mean((x - clean) ** 2))
    mean_weight = {}
    for photons in (1e4, 1e5):
        noisy = add_noise(clean, photons, rng=0)
        var = postlog_variance(torch.from_numpy(smooth(noisy).astype(np.float64)), photons).numpy()
        u = np.random.default_rng(0).standard_normal(noisy.shape) * np.sqrt(var)
        f, fp = smooth(noisy), smooth(noisy + 0.01 * u)
        w = sure_band_weights(noisy.astype(np.float64), f.astype(np.float64), fp.astype(np.float64), u, 0.01, 8)
        blend = apply_band_weights(noisy, f, w)
        if photons == 1e4:
            assert w[-1] > w[0] + 0.3
        assert err(blend) < min(err(f), err(noisy))
        mean_weight[photons] = float(w.mean())
    assert err(blend) < 0.95 * err(noisy)
    assert mean_weight[1e5] < 0.5 * mean_weight[1e4]
    np.testing.assert_allclose(apply_band_weights(noisy, f, np.ones(8)), f, atol=1e-5)
    np.testing.assert_allclose(apply_band_weights(noisy, f, np.zeros(8)), noisy, atol=1e-5)


def test_view_bands_give_back_what_a_smoother_along_the_views_took():
    """A smoother along the views blurs the sinogram's low view frequencies (its signal) and
    rightly removes the high ones (noise): one weight per detector band cannot tell them
    apart, a grid of view x detector bands can, and SURE then gives the low view band its data
    back and beats the detector-only blend."""
    from scipy.ndimage import uniform_filter1d

    from turndiff.stage1.sure import apply_band_weights, sure_band_weights

    g = default_fan_geometry(64)
    clean = CTProjector(g).forward(ellipse_image(g))
    smooth = lambda s: uniform_filter1d(s, 31, axis=-2, mode="wrap")
    err = lambda x: float(np.mean((x - clean) ** 2))
    for photons in (1e4, 1e5):
        noisy = add_noise(clean, photons, rng=0)
        var = postlog_variance(torch.from_numpy(smooth(noisy).astype(np.float64)), photons).numpy()
        u = np.random.default_rng(0).standard_normal(noisy.shape) * np.sqrt(var)
        y, f, fp = (a.astype(np.float64) for a in (noisy, smooth(noisy), smooth(noisy + 0.01 * u)))
        w1, w4 = sure_band_weights(y, f, fp, u, 0.01, 8), sure_band_weights(y, f, fp, u, 0.01, 8, 4)
        assert w1.shape == (8,) and w4.shape == (32,)
        by_view = w4.reshape(4, 8).mean(axis=1)
        assert by_view[0] < by_view[1:].min() - 0.1  # the lowest view band gets its data back
        one, grid = err(apply_band_weights(noisy, f, w1)), err(apply_band_weights(noisy, f, w4, 4))
        assert grid < (0.95 if photons == 1e4 else 0.6) * one
    with pytest.raises(InputError, match="view bands"):
        apply_band_weights(noisy, f, np.ones(10), 4)


def test_denoise_calibrated_gives_the_data_back_where_the_network_blurred_it(monkeypatch):
    """`ProjectionDenoiser.denoise_calibrated` (what `denoise-proj` and the pipeline run): on a
    scan at the training dose it calibrates, and the FBP of the result beats both the network's
    image and plain FBP (the short run's gain: docs/BENCHMARKS.md); a much noisier scan is left
    uncalibrated in auto mode; a model without a record of its training I0 refuses `on`."""
    from scipy.ndimage import uniform_filter1d

    from turndiff.metrics import psnr
    from turndiff.stage1 import ProjectionDenoiser
    from turndiff.stage1.sure import CALIBRATION_BANDS, CALIBRATION_VIEW_BANDS

    g = default_fan_geometry(64)
    A = CTProjector(g)
    clean = A.forward(ellipse_image(g))
    photons = 2.5e4
    noisy = np.stack([add_noise(clean, photons, rng=k) for k in range(2)]).astype(np.float32)
    den = ProjectionDenoiser(ResidualDenoiser(1, features=(4, 4, 8, 8, 16, 4)),
                             {"photons": photons, "photons_estimated": False,
                              "photons_train_estimated": estimate_photons(noisy)})
    # An over-smoother along the views stands in for a network: it removes the noise at high
    # view frequencies and blurs the signal at low ones.
    monkeypatch.setattr(den, "denoise", lambda s, **kw: uniform_filter1d(np.asarray(s), 41, axis=-2, mode="wrap"))
    res = den.denoise_calibrated(noisy)
    assert res.weights is not None and res.weights.shape == (2, CALIBRATION_BANDS * CALIBRATION_VIEW_BANDS)
    np.testing.assert_array_equal(res.raw, den.denoise(noisy))
    ref = A.fbp_hu(np.stack([clean] * 2))  # the best a sinogram denoiser can give FBP
    score = lambda s: float(np.mean(psnr(A.fbp_hu(s), ref, window="soft")))
    assert score(res.denoised) > max(score(res.raw), score(noisy)) + 0.8
    # Auto leaves a scan 2x noisier than training alone; `calibrate=False` never calibrates.
    noisier = np.stack([add_noise(clean, photons / 4, rng=k) for k in range(2)]).astype(np.float32)
    assert den.denoise_calibrated(noisier).weights is None
    assert den.denoise_calibrated(noisier, calibrate=True).weights is not None
    off = den.denoise_calibrated(noisy, calibrate=False)
    assert off.weights is None and np.array_equal(off.denoised, off.raw)
    # A model saved before the record: auto is off, `on` is refused in one line.
    old = ProjectionDenoiser(den.network, {"photons": photons, "photons_estimated": False})
    monkeypatch.setattr(old, "denoise", den.denoise)
    assert old.photons_train_estimated is None and old.denoise_calibrated(noisy).weights is None
    with pytest.raises(InputError, match="training data's estimated I0"):
        old.denoise_calibrated(noisy, calibrate=True)


def test_sure_selection_survives_a_resume(tmp_path):
    """Issue 15, defect 7: the SURE scores and best weights seen before an interruption are
    kept in the run folder, so the resumed run selects among all of them."""
    from turndiff.stage1 import Stage1Config, train_projection_denoiser

    noisy = np.stack([_noisy_sino(seed=s)[1] for s in range(2)])
    cfg = Stage1Config.preset("tiny", iters=4, sure_every=2, sure_slices=1, checkpoint_every=2)
    run = tmp_path / "run"
    train_projection_denoiser(noisy, photons=2.5e4, config=cfg, progress=False, device="cpu", run_dir=run,
                              max_steps=2)  # "interrupted" after the first score and checkpoint
    assert (run / "sure_selection" / "history.json").is_file()
    resumed = train_projection_denoiser(noisy, photons=2.5e4, config=cfg, progress=False, device="cpu", run_dir=run)
    whole = train_projection_denoiser(noisy, photons=2.5e4, config=cfg, progress=False, device="cpu")
    steps = [(h["step"], h["weights"]) for h in resumed.info["sure_selection"]["history"]]
    assert steps == [(2, "raw"), (4, "raw"), (4, "ema")]
    np.testing.assert_allclose([h["sure_mse"] for h in resumed.info["sure_selection"]["history"]],
                               [h["sure_mse"] for h in whole.info["sure_selection"]["history"]], rtol=1e-4)


def test_augment_flips_are_the_named_symmetries() -> None:
    """``mirror`` reverses the views and flips the detector (the mirrored object's full-scan
    sinogram); ``detector`` flips the detector only; ``none`` leaves crops alone."""
    from turndiff.errors import InputError
    from turndiff.stage1 import Stage1Config
    from turndiff.stage1.model import _make_batch_fn

    sino = torch.arange(2 * 8 * 6, dtype=torch.float32).reshape(2, 8, 6)
    crops = {}
    for aug in ("none", "detector", "mirror"):
        cfg = Stage1Config.preset("tiny", augment=aug, crop=(8, 6), batch_size=16)
        crops[aug] = _make_batch_fn(sino, 1e4, cfg, torch.device("cpu"))(0, torch.Generator().manual_seed(0))
    plain, det, mir = (crops[k]["sinogram"][:, 0] for k in ("none", "detector", "mirror"))
    flipped = [b for b in range(16) if not torch.equal(det[b], plain[b])]
    assert 0 < len(flipped) < 16  # about half the crops, the same ones for each kind
    for b in range(16):
        if b in flipped:
            assert torch.equal(det[b], plain[b].flip(-1)) and torch.equal(mir[b], plain[b].flip(-2, -1))
        else:
            assert torch.equal(det[b], plain[b]) and torch.equal(mir[b], plain[b])
    with pytest.raises(InputError, match="augment"):
        Stage1Config.preset("tiny", augment="rotate")


def test_test_time_flips_average_the_flipped_passes() -> None:
    """``symmetries`` averages the network over flips of [views, detector], each flipped back."""
    import torch

    from turndiff.errors import InputError
    from turndiff.nets import ResidualDenoiser
    from turndiff.stage1 import ProjectionDenoiser

    torch.manual_seed(0)
    net = ResidualDenoiser(1, features=(4, 4, 8, 8, 16, 4), shift=1.0, scale=0.5, circular_rows=True)
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0, 0.1)
    den = ProjectionDenoiser(net, {"photons": 1e4})
    y = np.random.default_rng(0).normal(1.0, 0.3, (2, 16, 12)).astype(np.float32)
    one = den.denoise(y, symmetries="none", device="cpu")
    with torch.no_grad():
        t = torch.from_numpy(y[:, None])
        def manual(dims):
            return np.mean([net(t.flip(d)).flip(d).numpy() if d else net(t).numpy() for d in dims], 0)[:, 0]
        four, mirror = manual(((), (-1,), (-2,), (-2, -1))), manual(((), (-2, -1)))
    np.testing.assert_allclose(den.denoise(y, symmetries="flips", device="cpu"), four, atol=1e-5)
    np.testing.assert_allclose(den.denoise(y, device="cpu"), mirror, atol=1e-5)  # default: the exact mirror
    assert np.abs(four - one).max() > 1e-4  # the flips do change a non-symmetric network's output
    assert np.abs(four - mirror).max() > 1e-4
    with pytest.raises(InputError, match="symmetries"):
        den.denoise(y, symmetries="rotate")


def test_scoring_the_ema_leaves_training_as_it_was():
    """The selector puts the EMA weights in the network to score them and must put the raw
    ones back: a run with SURE checks ends on the same EMA weights as a run without (its
    last check scores them; rescoring the plain run's final weights gives the same SURE)."""
    from turndiff.stage1 import Stage1Config, sure_mse, train_projection_denoiser

    noisy = np.stack([_noisy_sino(seed=s)[1] for s in range(2)])
    plain = train_projection_denoiser(noisy, photons=2.5e4, config=Stage1Config.preset("tiny", iters=6),
                                      progress=False, device="cpu")
    checked = train_projection_denoiser(noisy, photons=2.5e4, progress=False, device="cpu",
                                        config=Stage1Config.preset("tiny", iters=6, sure_every=2, sure_slices=1,
                                                                   sure_ema=True))
    history = checked.info["sure_selection"]["history"]
    assert [h["weights"] for h in history] == ["raw", "ema"] * 3
    assert (history[-1]["step"], history[-1]["weights"]) == (6, "ema")
    again = sure_mse(lambda x: plain.denoise(x), noisy[:1], 2.5e4, seed=0)
    assert again == pytest.approx(history[-1]["sure_mse"], rel=1e-5)
    assert again != pytest.approx(history[-2]["sure_mse"], rel=1e-5)  # the raw weights score otherwise


def test_sure_patience_stops_training_and_a_resume_does_not_train_again(tmp_path, monkeypatch):
    """``sure_patience``: training stops once that many checks in a row found nothing better,
    keeps the best weights, and a resumed run that SURE had stopped trains no further."""
    import turndiff.stage1.sure as sure_module
    from turndiff.stage1 import Stage1Config, train_projection_denoiser

    calls = []

    def rising(denoise, y, photons, seed=0):  # every later score is worse: the first check wins
        calls.append(1)
        return 1.0 + len(calls)

    monkeypatch.setattr(sure_module, "sure_mse", rising)
    noisy = np.stack([_noisy_sino(seed=s)[1] for s in range(2)])
    cfg = Stage1Config.preset("tiny", iters=20, sure_every=2, sure_patience=2, sure_slices=1, checkpoint_every=2)
    run = tmp_path / "run"
    m = train_projection_denoiser(noisy, photons=2.5e4, config=cfg, progress=False, device="cpu", run_dir=run)
    sel = m.info["sure_selection"]
    assert (sel["selected_step"], sel["selected_weights"]) == (2, "raw")
    assert max(h["step"] for h in sel["history"]) == 6  # checks at 2, 4, 6: two without a better score
    assert sel["stopped_at"] == 6
    n_calls = len(calls)
    again = train_projection_denoiser(noisy, photons=2.5e4, config=cfg, progress=False, device="cpu", run_dir=run)
    assert len(calls) == n_calls  # nothing trained or scored again
    assert again.info["sure_selection"]["selected_step"] == 2
    for a, b in zip(m.network.state_dict().values(), again.network.state_dict().values()):
        torch.testing.assert_close(a, b)
