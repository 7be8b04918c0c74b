"""Comparison baselines: registry, fit / reconstruct, classical methods, losses, persistence."""

import json

import numpy as np
import pytest
import torch

from turndiff.baselines import BASELINES, REDCNN, FittedBaseline, bm3d_denoise, choose_tv_weight, \
    tv_reconstruct, tv_weight_for_dose
from turndiff.baselines.classical import _grad, _grad_adjoint
from turndiff.baselines.data import crop_batch_fn, fbp_noise_std, similar_images, view_split_fbp
from turndiff.baselines.objectives import (
    Blind2UnblindObjective,
    Neighbor2NeighborObjective,
    Noise2InverseObjective,
    Noise2SimObjective,
    Noisier2NoiseObjective,
    blind_spot_masks,
)
from turndiff.dose import add_noise, mu_to_hu, simulate_scan
from turndiff.errors import InputError
from turndiff.physics import CTProjector, default_fan_geometry, ellipse_image
from turndiff.phantoms import make_phantoms

PHOTONS = 2.5e4
SELF_SUPERVISED = [n for n, b in BASELINES.items() if not b.uses_clean_data]


@pytest.fixture(scope="module")
def tiny_data():
    g = default_fan_geometry(48)
    hu = make_phantoms(3, 48, seed=11)
    noisy, _ = simulate_scan(hu, g, photons=PHOTONS, seed=5)
    return g, hu, noisy


@pytest.fixture(scope="module")
def fitted(tiny_data):
    """Every baseline fitted once on tiny data (``tiny`` preset: a few steps)."""
    g, hu, noisy = tiny_data
    out = {}
    for name, b in BASELINES.items():
        kwargs = {"reference_hu": hu[:2]} if b.uses_clean_data else {}
        out[name] = b.fit(noisy[:2], g, photons=PHOTONS, preset="tiny", seed=0, progress=False, **kwargs)
    return out


@pytest.fixture(scope="module")
def ellipse_scan():
    """A piecewise-constant phantom at a dose that makes its FBP clearly noisy."""
    g = default_fan_geometry(48)
    mu = ellipse_image(g)
    clean = CTProjector(g).forward(mu)
    noisy = add_noise(np.stack([clean, clean]), 1.5e3, rng=3)
    return g, mu_to_hu(mu, g.mu_water).astype(np.float32), noisy, CTProjector(g).fbp_hu(clean[None])


def _assert_same(name, a, b):
    if name == "BM3D":  # the bm3d library's multi-threaded sums vary in the last bits
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-2)
    else:
        np.testing.assert_array_equal(a, b)


def _body_rmse(x, ref):
    m = ref > -500
    return float(np.sqrt(np.mean((x[..., m] - ref[m]) ** 2)))


# ------------------------------------------------------------------------ registry


def test_learned_presets_keep_training_settings_in_their_train_config():
    """A training setting beside the TrainConfig would be silently ignored by the loop
    (Neighbor2Neighbor's 1500 fast steps once were); every one must be inside it."""
    from turndiff.training import TRAIN_FIELDS, TrainConfig

    for name, b in BASELINES.items():
        if not b.trained:
            continue
        for preset, cfg in b.presets.items():
            assert isinstance(cfg["train"], TrainConfig), (name, preset)
            assert not set(cfg) & set(TRAIN_FIELDS), (name, preset, sorted(set(cfg) & set(TRAIN_FIELDS)))
    assert BASELINES["Neighbor2Neighbor"].presets["fast"]["train"].iters == 1500
    assert BASELINES["RED-CNN (supervised)"].presets["fast"]["train"].iters == 1500


def test_registry_names_flags_and_clean_data():
    assert list(BASELINES) == ["FBP", "TV", "BM3D", "Neighbor2Neighbor", "Blind2Unblind", "Noiser2Noise",
                               "Noise2Sim", "Noise2Inverse", "Prompt-SID", "IPDM", "RED-CNN (supervised)"]
    assert [n for n, b in BASELINES.items() if b.uses_clean_data] == ["IPDM", "RED-CNN (supervised)"]
    assert {n for n, b in BASELINES.items() if not b.trained} == {"FBP", "TV", "BM3D"}
    assert all(b.reference for b in BASELINES.values())


@pytest.mark.parametrize("name", list(BASELINES))
def test_every_baseline_fits_and_reconstructs(name, tiny_data, fitted):
    g, hu, noisy = tiny_data
    state = fitted[name]
    assert state.method == name and state.info["train_slices"] == 2
    out = BASELINES[name].reconstruct(state, noisy[2:], g, photons=1e4)
    assert out.shape == (1, 48, 48) and out.dtype == np.float32 and np.isfinite(out).all()
    # A reconstruction, not noise: inside the body it is far closer to the reference than a
    # flat water image is, and (a few tiny training steps or not) no worse than twice FBP.
    fbp = CTProjector(g).fbp_hu(noisy[2:])
    rmse = _body_rmse(out, hu[2:])
    assert rmse < 0.5 * _body_rmse(np.zeros_like(out), hu[2:]), rmse
    assert rmse < 2.0 * _body_rmse(fbp, hu[2:]), (rmse, _body_rmse(fbp, hu[2:]))
    _assert_same(name, state.reconstruct(noisy[2:], g, photons=1e4), out)


@pytest.mark.parametrize("name", SELF_SUPERVISED)
def test_self_supervised_baselines_refuse_clean_images(name, tiny_data):
    g, hu, noisy = tiny_data
    with pytest.raises(InputError, match="self-supervised"):
        BASELINES[name].fit(noisy[:1], g, photons=PHOTONS, preset="tiny", reference_hu=hu[:1], progress=False)


def test_supervised_baseline_needs_paired_clean_images(tiny_data):
    g, hu, noisy = tiny_data
    b = BASELINES["RED-CNN (supervised)"]
    with pytest.raises(InputError, match="needs reference_hu"):
        b.fit(noisy[:1], g, photons=PHOTONS, preset="tiny", progress=False)
    with pytest.raises(InputError, match="pair"):
        b.fit(noisy[:2], g, photons=PHOTONS, preset="tiny", reference_hu=hu[:1], progress=False)


def test_bad_inputs_are_one_line_errors(tiny_data, fitted):
    g, _, noisy = tiny_data
    b = BASELINES["Noise2Inverse"]
    with pytest.raises(InputError, match="preset"):
        b.fit(noisy[:1], g, photons=PHOTONS, preset="huge", progress=False)
    with pytest.raises(InputError, match="unknown option"):
        b.fit(noisy[:1], g, photons=PHOTONS, preset="tiny", options={"epochs": 3}, progress=False)
    # The training settings are the preset's TrainConfig; options name its fields directly.
    state = b.fit(noisy[:1], g, photons=PHOTONS, preset="tiny", options={"iters": 2}, progress=False)
    assert state.info["steps"] == 2 and state.params["train"]["iters"] == 2
    with pytest.raises(InputError, match="iters"):
        b.fit(noisy[:1], g, photons=PHOTONS, preset="tiny", options={"iters": 0}, progress=False)
    with pytest.raises(InputError, match="geometry"):
        b.fit(noisy[:1, :, :-1], g, photons=PHOTONS, preset="tiny", progress=False)
    with pytest.raises(InputError, match="photons"):
        b.fit(noisy[:1], g, photons=-1, preset="tiny", progress=False)
    with pytest.raises(InputError, match="fitted Noise2Inverse"):
        b.reconstruct(fitted["TV"], noisy[:1], g, photons=PHOTONS)


@pytest.mark.parametrize("name", list(BASELINES))
def test_save_then_load_gives_identical_output(name, tiny_data, fitted, tmp_path):
    g, _, noisy = tiny_data
    state = fitted[name]
    folder = state.save_pretrained(tmp_path / "model")
    cfg = json.loads((folder / "config.json").read_text())
    assert cfg["class"] == "FittedBaseline" and cfg["config"]["method"] == name and "turndiff_version" in cfg
    assert not list(folder.glob("*.pt")) and not list(folder.glob("*.pkl"))
    assert (folder / "model.safetensors").is_file() == BASELINES[name].trained
    # Loaded onto the device it was fitted on: a GPU's TF32 convolutions differ from the CPU's
    # float32 by ~0.4 HU, which is arithmetic, not a broken checkpoint.
    loaded = BASELINES[name].from_pretrained(folder, device=state.device)
    _assert_same(name, loaded.reconstruct(noisy[2:], g, photons=PHOTONS),
                 state.reconstruct(noisy[2:], g, photons=PHOTONS))
    other = "TV" if name == "FBP" else "FBP"
    with pytest.raises(InputError, match=f"not {other}"):
        BASELINES[other].from_pretrained(folder)


@pytest.mark.parametrize("name", ["Neighbor2Neighbor", "Prompt-SID"])
def test_learned_fit_is_seeded(tiny_data, name):
    """The same seed gives the same network whatever the global generator holds (what ran
    before it in a benchmark): Prompt-SID's objective owns the prompt encoder, whose
    initial weights once came from the global generator."""
    g, _, noisy = tiny_data
    b = BASELINES[name]
    torch.manual_seed(1)
    a1 = b.fit(noisy[:1], g, photons=PHOTONS, preset="tiny", seed=3, progress=False)
    torch.manual_seed(2)
    a2 = b.fit(noisy[:1], g, photons=PHOTONS, preset="tiny", seed=3, progress=False)
    for (k, v), w in zip(a1.network.state_dict().items(), a2.network.state_dict().values()):
        assert torch.equal(v, w), k


# ------------------------------------------------------------------------ classical


def test_tv_gradient_adjoint_is_exact(rng):
    x = rng.standard_normal((2, 9, 7)).astype(np.float32)
    qx, qy = rng.standard_normal((2, 2, 9, 7)).astype(np.float32)
    gx, gy = _grad(x)
    lhs = float((gx * qx).sum() + (gy * qy).sum())
    assert lhs == pytest.approx(float((x * _grad_adjoint(qx, qy)).sum()), rel=1e-5)


def test_tv_reduces_noise_on_a_piecewise_constant_phantom(ellipse_scan):
    g, ref, noisy, _ = ellipse_scan
    fbp = CTProjector(g).fbp_hu(noisy)
    tv = tv_reconstruct(noisy, g, lam=0.05, iters=40)
    assert tv.shape == fbp.shape and np.isfinite(tv).all()
    assert _body_rmse(tv, ref) < 0.7 * _body_rmse(fbp, ref)
    # Without regularisation the same iterations stay near the (noisy) FBP.
    plain = tv_reconstruct(noisy, g, lam=0.0, iters=40)
    assert _body_rmse(plain, ref) > _body_rmse(tv, ref)


def test_tv_weight_by_cross_validation_uses_noisy_data_and_helps(ellipse_scan):
    g, ref, noisy, _ = ellipse_scan
    lam, report = choose_tv_weight(noisy[:1], g, lams=[1e-4, 0.01, 0.05, 1.0], iters=30)
    # Far too weak and far too strong weights predict the held-out views worse.
    s = report["scores"]
    assert min(s[1], s[2]) < s[0] and min(s[1], s[2]) < s[3]
    assert 1e-4 < lam < 1.0
    tv = tv_reconstruct(noisy[1:], g, lam=lam, iters=30)
    assert _body_rmse(tv, ref) < 0.8 * _body_rmse(CTProjector(g).fbp_hu(noisy[1:]), ref)
    assert tv_weight_for_dose(0.02, 2.5e4, 1e4) == pytest.approx(0.05)


def test_bm3d_reduces_noise(ellipse_scan):
    g, ref, noisy, fbp_clean = ellipse_scan
    fbp = CTProjector(g).fbp_hu(noisy)
    sigma = fbp_noise_std(noisy, g, 1.5e3, seed=0, hu=fbp)
    den = bm3d_denoise(fbp, sigma_hu=sigma)
    assert den.shape == fbp.shape and den.dtype == np.float32
    # Noise is the difference from the noiseless FBP (its resolution error is not noise).
    noise_fbp = _body_rmse(fbp, fbp_clean[0])
    assert _body_rmse(den, fbp_clean[0]) < 0.6 * noise_fbp
    # The noise level estimated from the image alone also denoises.
    assert _body_rmse(bm3d_denoise(fbp[:1]), fbp_clean[0]) < 0.9 * noise_fbp


def test_predicted_fbp_noise_level_matches_the_actual_noise():
    g = default_fan_geometry(48)
    clean = CTProjector(g).forward(ellipse_image(g))[None]
    noisy = add_noise(clean, 5e3, rng=0)
    actual = CTProjector(g).fbp_hu(noisy) - CTProjector(g).fbp_hu(clean)
    body = CTProjector(g).fbp_hu(clean) > -500
    predicted = fbp_noise_std(noisy, g, 5e3, seed=1)
    assert predicted[0] == pytest.approx(float(actual[body].std()), rel=0.2)


# ---------------------------------------------------------------------- data helpers


def test_view_split_fbps_average_to_the_full_fbp(tiny_data):
    g, _, noisy = tiny_data
    subs = view_split_fbp(noisy[:1], g, 4)
    assert subs.shape == (1, 4, 48, 48)
    np.testing.assert_allclose(subs.mean(1), CTProjector(g).fbp_hu(noisy[:1]), atol=0.05)
    # Independent noise: each subset differs from the others by much more than rounding.
    assert np.abs(subs[0, 0] - subs[0, 1]).mean() > 1.0


def test_similar_images_find_exact_repeats_beyond_the_excluded_neighbourhood():
    tile = np.random.default_rng(0).normal(0, 100, (5, 5)).astype(np.float32)
    img = np.tile(tile, (8, 8))[None]  # period 5 > exclude
    sim = similar_images(img, k=4, patch=3, search=11, exclude=2)
    assert sim.shape == (1, 4, 40, 40)
    np.testing.assert_allclose(sim[0, :, 8:-8, 8:-8], np.broadcast_to(img[0, 8:-8, 8:-8], (4, 24, 24)), atol=1e-3)


def test_crop_batches_are_seeded_and_share_the_augmentation_across_channels():
    base = torch.arange(2 * 16 * 16, dtype=torch.float32).reshape(2, 1, 16, 16)
    bank = torch.cat([base, base * 2], 1)
    fn = crop_batch_fn(bank, batch_size=5, crop=9, multiple=4)
    b1 = fn(0, torch.Generator().manual_seed(1))
    b2 = fn(0, torch.Generator().manual_seed(1))
    assert b1["images"].shape == (5, 2, 8, 8)
    assert torch.equal(b1["images"], b2["images"])
    assert torch.equal(b1["images"][:, 1], 2 * b1["images"][:, 0])


# ------------------------------------------------------------------------- objectives


class _Identity(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(()))

    def forward(self, x):
        return self.w * x


def _batch(images, step=0, seed=0):
    return {"images": images, "step": step, "generator": torch.Generator().manual_seed(seed)}


def test_neighbor2neighbor_loss_with_identity_network():
    y = torch.randn(2, 1, 8, 8) * 500
    obj = Neighbor2NeighborObjective(_Identity(), gamma=2.0, iters=10)
    loss, logs = obj(_batch(y, step=5))
    # f = identity: the regulariser vanishes and the loss is the neighbour difference.
    assert logs["reg"] == pytest.approx(0.0, abs=1e-10)
    assert 0.5 < float(loss.detach()) < 4.0


def test_blind2unblind_masks_partition_and_loss_vanishes_on_flat_images():
    masks = blind_spot_masks((1, 1, 8, 12), 2)
    assert masks.shape == (4, 1, 1, 8, 12)
    assert torch.equal(masks.sum(0), torch.ones(1, 1, 8, 12))
    obj = Blind2UnblindObjective(_Identity(), width=2, iters=10)
    loss, _ = obj(_batch(torch.full((2, 1, 8, 8), 40.0)))
    assert float(loss.detach()) == pytest.approx(0.0, abs=1e-10)
    assert obj.beta_at(0) == 2.0 and obj.beta_at(10) == pytest.approx(20.0)
    loss, logs = obj(_batch(torch.randn(2, 1, 8, 8) * 500))
    assert logs["reg"] > 0.5 and loss.requires_grad


def test_noisier2noise_trains_on_noisier_inputs_and_corrects():
    y = torch.randn(3, 1, 8, 8) * 100
    noise = torch.randn(3, 2, 8, 8) * 100
    obj = Noisier2NoiseObjective(_Identity(), alpha=1.0)
    loss, _ = obj(_batch(torch.cat([y, noise], 1)))
    # Identity f: f(z) - y = +-m, one of the two draws per sample.
    per_draw = (noise / 500).pow(2).mean(dim=(2, 3))
    assert per_draw.min() * 0.99 <= float(loss.detach()) <= per_draw.max() * 1.01
    z = torch.randn(4)
    assert torch.allclose(obj.correct(z, z), z)
    assert torch.allclose(Noisier2NoiseObjective(_Identity(), alpha=0.5).correct(torch.zeros(1), torch.ones(1)),
                          torch.tensor([-4.0]))


def test_noise2sim_targets_come_from_the_similar_images():
    y = torch.randn(2, 1, 8, 8) * 100
    obj = Noise2SimObjective(_Identity())
    loss, _ = obj(_batch(torch.cat([y, y, y], 1)))
    assert float(loss.detach()) == pytest.approx(0.0, abs=1e-10)
    loss, _ = obj(_batch(torch.cat([y, y + 500, y + 500], 1)))
    assert float(loss.detach()) == pytest.approx(1.0, rel=1e-5)


def test_noise2inverse_leave_one_out_inputs_and_prediction():
    subsets = torch.randn(2, 4, 8, 8)
    inputs = Noise2InverseObjective.split_inputs(subsets)
    assert torch.allclose(inputs[:, 1], subsets[:, [0, 2, 3]].mean(1), atol=1e-6)
    obj = Noise2InverseObjective(_Identity())
    assert torch.allclose(obj.predict(subsets)[:, 0], subsets.mean(1), atol=1e-6)
    loss, _ = obj(_batch(subsets * 500))
    assert float(loss.detach()) > 0.5


def test_redcnn_keeps_the_image_size_and_starts_near_residual():
    net = REDCNN(4)
    x = torch.randn(2, 1, 23, 30) * 300
    assert net(x).shape == x.shape
    with pytest.raises(ValueError, match="larger"):
        net(torch.zeros(1, 1, 20, 20))
    state = FittedBaseline("RED-CNN (supervised)", {}, net, {"class": "REDCNN", "config": net.config})
    assert state.network_spec["config"]["channels"] == 4
