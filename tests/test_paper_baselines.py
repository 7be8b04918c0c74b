"""The paper's remaining comparison methods: Prompt-SID (self-supervised) and IPDM (unpaired
clean data). The shared fit / reconstruct / persistence checks of every baseline are in
test_baselines.py; these test what is particular to each."""

import numpy as np
import pytest
import torch

from turndiff.baselines import BASELINES
from turndiff.baselines.base import resolve_preset
from turndiff.baselines.ipdm import IPDMNet, iterative_partial_diffusion, matched_timestep, sinogram_sigma
from turndiff.baselines.promptsid import PromptSIDNet, PromptSIDObjective
from turndiff.benchmark.splits import TRAIN_SEED, UNPAIRED_SEED, split_of
from turndiff.dose import postlog_variance, simulate_scan
from turndiff.errors import InputError
from turndiff.physics import default_fan_geometry
from turndiff.phantoms import make_phantoms

PHOTONS = 2.5e4


@pytest.fixture(scope="module")
def scan():
    g = default_fan_geometry(48)
    hu = make_phantoms(3, 48, seed=11)
    noisy, _ = simulate_scan(hu, g, photons=PHOTONS, seed=5)
    return g, hu, noisy


# ------------------------------------------------------------------------ categories


def test_data_categories_are_declared():
    cats = {n: b.clean_data for n, b in BASELINES.items()}
    assert cats["Prompt-SID"] == "none" and cats["IPDM"] == "unpaired" and cats["RED-CNN (supervised)"] == "paired"
    assert BASELINES["IPDM"].category == "unpaired clean data"
    # The unpaired phantoms are training-range phantoms, never the noisy training set's.
    assert split_of(UNPAIRED_SEED) == "training" and UNPAIRED_SEED != TRAIN_SEED


def test_ipdm_takes_unpaired_clean_images_and_never_reads_the_noisy_scans(scan):
    g, hu, noisy = scan
    b = BASELINES["IPDM"]
    with pytest.raises(InputError, match="unpaired clean data"):
        b.fit(noisy[:2], g, photons=PHOTONS, preset="tiny", progress=False)
    other = make_phantoms(3, 48, seed=UNPAIRED_SEED)  # three clean images for two noisy scans: fine
    a = b.fit(noisy[:2], g, photons=PHOTONS, preset="tiny", reference_hu=other, progress=False)
    # Other noisy sinograms, same clean data: the very same model (the low-dose scans
    # reach IPDM at inference only).
    c = b.fit(noisy[1:3] * 0 + 1, g, photons=PHOTONS, preset="tiny", reference_hu=other, progress=False)
    for (k, v), (_, w) in zip(a.network.state_dict().items(), c.network.state_dict().items()):
        torch.testing.assert_close(v, w, msg=k)
    assert a.info["clean_data"] == "unpaired"
    with pytest.raises(InputError, match="not a stack"):
        b.fit(noisy[:2], g, photons=PHOTONS, preset="tiny", reference_hu=other[:, :40], progress=False)


# ------------------------------------------------------------------------ IPDM sampler


def test_matched_timestep_has_the_noise_to_signal_ratio_of_the_input():
    net = IPDMNet(channels=(8, 8), norm_groups=4)
    ab = net.scheduler.alphas_cumprod.double()
    for sigma in (0.02, 0.05, 0.1):
        t = matched_timestep(net.scheduler, sigma, 1000)
        ratio = float((1 - ab[t]) / ab[t])
        assert abs(np.sqrt(ratio) - sigma) < 0.1 * sigma, (sigma, t, ratio)
    assert matched_timestep(net.scheduler, 10.0, 200) == 199  # clipped to the trained range


def test_sinogram_sigma_follows_the_dose_model():
    p = np.full((8, 8), 3.0)
    assert sinogram_sigma(p, PHOTONS) == pytest.approx(float(np.sqrt(postlog_variance(3.0, PHOTONS))))
    assert sinogram_sigma(p, PHOTONS / 4) == pytest.approx(2 * sinogram_sigma(p, PHOTONS), rel=0.05)


def test_partial_diffusion_with_an_oracle_recovers_the_clean_image_and_guidance_keeps_the_data():
    """With the exact noise estimate of a known clean image and no guidance the reverse
    process lands on that image; with full guidance it stays at the measured data."""
    net = IPDMNet(channels=(8, 8), norm_groups=4)
    s = net.scheduler
    g = torch.Generator().manual_seed(0)
    clean = torch.zeros(1, 1, 32, 32)
    clean[..., 8:24, 8:24] = 0.5
    noisy = clean + 0.05 * torch.randn(clean.shape, generator=g)
    t = matched_timestep(s, 0.05, 1000)

    def oracle(x, tt):
        ab = s.alphas_cumprod[tt]
        return (x - ab.sqrt() * clean) / (1 - ab).sqrt()

    def rms(x):
        return float(x.pow(2).mean().sqrt())

    # (Not exact: the noise estimates are standardised over the finite image.)
    out = iterative_partial_diffusion(oracle, s, noisy, t, lambda_max=0.0, lambda_min=0.0, generator=g)
    assert rms(out - clean) < 0.1 * rms(noisy - clean), (rms(out - clean), rms(noisy - clean))
    kept = iterative_partial_diffusion(oracle, s, noisy, t, lambda_max=1.0, lambda_min=1.0, eta=0.0, generator=g)
    assert rms(kept - noisy) < 0.1 * rms(noisy - clean), (rms(kept - noisy), rms(noisy - clean))


# ------------------------------------------------------------------------ Prompt-SID


def test_prompt_sid_phases_prompt_and_scale_replay():
    b = BASELINES["Prompt-SID"]
    cfg = resolve_preset("tiny", b.presets, None, b.name)
    net = b.network(cfg)
    obj = PromptSIDObjective(net, gamma=1.5, prompt_phase=0.5, replay=1.0, iters=10)
    y = 100 * torch.randn(2, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    _, logs1 = obj({"images": y, "step": 0, "generator": torch.Generator().manual_seed(1)})
    assert set(logs1) == {"rec", "reg"}
    loss, logs2 = obj({"images": y, "step": 5, "generator": torch.Generator().manual_seed(1)})
    assert {"prompt", "replay", "rec", "reg"} <= set(logs2)
    loss.backward()
    # The second phase trains the prompt generator (E2 and RG-Diff) through its losses.
    assert net.encoder2.mlp[0].weight.grad is not None and net.diffusion.net[0].weight.grad.abs().sum() > 0


def test_prompt_sid_denoiser_uses_its_prompt(scan):
    """A trained prompt modulates the denoiser: two prompts, two outputs; and inference
    is reproducible (its prompt draw is seeded)."""
    g, hu, noisy = scan
    b = BASELINES["Prompt-SID"]
    state = b.fit(noisy[:2], g, photons=PHOTONS, preset="tiny", seed=0, progress=False, options={"iters": 6})
    net: PromptSIDNet = state.network
    x = torch.from_numpy(hu[:1, None])
    with torch.no_grad():
        z = net.generate_prompt(x, generator=torch.Generator().manual_seed(0))
        # The prompt's scale/shift maps start at zero and only six steps train them, so
        # their weights are small and how small depends on the machine's float round-off
        # (the CI machine's change for z + 1 was 30x smaller than this one's). A large
        # change of prompt keeps the effect well above the output's round-off (one float32
        # step at 1000 HU is 6e-5) everywhere.
        films = [m.film1.weight for m in net.modules() if hasattr(m, "film1")]
        assert films and max(float(w.abs().max()) for w in films) > 0  # the prompt path trained
        a, c = net.denoise(x, z), net.denoise(x, z + 10.0)
        assert float((a - c).abs().max()) > 1e-3
        torch.testing.assert_close(net(x), net(x))
