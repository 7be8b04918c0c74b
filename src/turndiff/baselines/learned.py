"""Learned baselines: each is an objective (:mod:`.objectives`) plus the image-domain
data it trains on (:mod:`.data`), trained by the one training loop
(:func:`turndiff.training.train`) on random crops.

Every method starts from the same data path: the noisy training sinograms, their FBP
(:meth:`turndiff.physics.CTProjector.fbp_hu`) and the dose ``I0``. Only the supervised
RED-CNN also sees ``reference_hu``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from ..nets import ResidualDenoiser
from ..physics import CTProjector, Geometry
from ..training import TRAIN_FIELDS, TrainConfig
from .base import Baseline, FittedBaseline, check_photons, check_sinograms, register, resolve_preset
from .data import HU_SCALE, crop_batch_fn, noise_images, similar_images, view_split_fbp
from .nets import REDCNN, network_spec
from .ipdm import IPDMNet, IPDMObjective, ipdm_spec, iterative_partial_diffusion, matched_timestep, sinogram_sigma
from .promptsid import PromptSIDNet, PromptSIDObjective, prompt_sid_spec
from .objectives import (
    Blind2UnblindObjective,
    Neighbor2NeighborObjective,
    Noise2InverseObjective,
    Noise2SimObjective,
    Noisier2NoiseObjective,
    SupervisedObjective,
)

__all__ = [
    "LearnedBaseline",
    "Neighbor2NeighborBaseline",
    "Blind2UnblindBaseline",
    "Noisier2NoiseBaseline",
    "Noise2SimBaseline",
    "Noise2InverseBaseline",
    "REDCNNBaseline",
    "PromptSIDBaseline",
    "IPDMBaseline",
    "COMMON_PRESETS",
]

#: Training settings shared by the learned baselines (methods add their own keys).
#: ``fast``: CPU, about 2-3 minutes per method for 8 slices of 256 x 256 on 2 idle
#: cores; ``paper``: GPU. ``features`` are the residual U-Net's (MONAI BasicUNet).
#: Crops of 128 (rather than more, smaller ones) keep the instance-norm statistics
#: close to those of whole 256 x 256 images at inference: on development phantoms
#: they generalised better to an unseen dose at equal training time.
#: Each holds the shared loop's own :class:`~turndiff.training.TrainConfig` as ``train``;
#: options name its fields directly (``options={"iters": 300}``, see ``resolve_preset``).
COMMON_PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(features=[4, 4, 8, 8, 16, 4], batch_size=2, crop=32,
                 train=TrainConfig(iters=3, lr=1e-3, warmup=0, weight_decay=0.0, grad_clip=1.0, ema_decay=None,
                                   checkpoint_every=0)),
    "fast": dict(features=[16, 16, 32, 64, 128, 16], batch_size=4, crop=128,
                 train=TrainConfig(iters=1200, lr=1e-3, warmup=50, weight_decay=1e-4, grad_clip=1.0, ema_decay=0.995,
                                   checkpoint_every=400)),
    "paper": dict(features=[32, 32, 64, 128, 256, 32], batch_size=16, crop=128,
                  train=TrainConfig(iters=20000, lr=5e-4, warmup=500, weight_decay=1e-4, grad_clip=1.0,
                                    ema_decay=0.999, checkpoint_every=2000)),
}


def _presets(**specific: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The common presets with each method's own keys. Training settings, given by their
    :class:`TrainConfig` names (``iters``, ``lr``, ...) or as a ``train`` dict, change the
    common :class:`TrainConfig`, never sit beside it."""
    out = {}
    for p, common in COMMON_PRESETS.items():
        own = dict(specific.get(p, {}))
        changes = {**own.pop("train", {}), **{k: own.pop(k) for k in TRAIN_FIELDS if k in own}}
        out[p] = {**common, **own, "train": common["train"].replace(**changes)}
    return out


class LearnedBaseline(Baseline):
    """Shared fit / reconstruct of the learned baselines.

    Subclasses define ``presets`` and implement :meth:`prepare` (the training bank
    ``[N, C, H, W]`` from noisy data), :meth:`objective` and :meth:`infer`.
    """

    trained = True
    presets: dict[str, dict[str, Any]] = {}
    #: Crops are a multiple of this (sub-sampling cells, mask cells).
    crop_multiple = 1

    # ------------------------------------------------------------------ hooks
    def network(self, cfg: Mapping[str, Any]) -> nn.Module:
        """A residual U-Net on HU images normalised by ``HU_SCALE``."""
        return ResidualDenoiser(1, features=cfg["features"], shift=0.0, scale=HU_SCALE)

    def prepare(self, sinograms: np.ndarray, hu: np.ndarray, geometry: Geometry, *, photons: float,
                cfg: Mapping[str, Any], rng: np.random.Generator, **kwargs: Any) -> np.ndarray:
        """The training bank ``[N, C, H, W]``; default: the FBP images alone."""
        return hu[:, None]

    def configure(self, cfg: dict[str, Any], bank: Any) -> dict[str, Any]:
        """Settings that follow from the training bank (default: none)."""
        return cfg

    def batches(self, bank: Any, cfg: Mapping[str, Any]):
        """``batch_fn(step, generator)`` for the training loop; default: crops of the bank."""
        return crop_batch_fn(bank, batch_size=int(cfg["batch_size"]), crop=int(cfg["crop"]),
                             multiple=self.crop_multiple)

    def objective(self, network: nn.Module, cfg: Mapping[str, Any]) -> nn.Module:
        raise NotImplementedError

    def infer(self, state: FittedBaseline, sinograms: np.ndarray, hu: np.ndarray, geometry: Geometry, *,
              photons: float) -> np.ndarray:
        """HU ``[N, H, W]`` for noisy sinograms and their FBP; default: the network on the FBP."""
        return _apply(state.network, hu[:, None], state.device)[:, 0]

    # ------------------------------------------------------------------ API
    def _fit(self, sinograms, geometry, *, photons, preset, seed, device, run_dir, progress, options, **kwargs):
        from ..training import resolve_device, train

        cfg = resolve_preset(preset, self.presets, options, self.name)
        dev = resolve_device(device)
        t0 = time.perf_counter()
        rng = np.random.default_rng(seed)
        hu = CTProjector(geometry).fbp_hu(sinograms)
        raw = self.prepare(sinograms, hu, geometry, photons=photons, cfg=cfg, rng=rng, **kwargs)

        def tensor(a: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))

        bank = {k: tensor(v) for k, v in raw.items()} if isinstance(raw, dict) else tensor(raw)
        cfg = self.configure(cfg, bank)
        prep_seconds = time.perf_counter() - t0
        # The objective can own weights too (Prompt-SID's prompt encoder): both are
        # initialised from the seed, not from whatever the global generator holds.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            net = self.network(cfg)
            objective = self.objective(net, cfg)
        tcfg = cfg["train"].replace(amp=dev.type == "cuda", seed=seed, device=str(dev))
        batch_fn = self.batches(bank, cfg)
        result = train(objective, batch_fn, tcfg, run_dir=run_dir, progress=progress, desc=self.name)
        tail = result.losses[-max(1, len(result.losses) // 10):]
        info = {
            "train_seconds": time.perf_counter() - t0,
            "prepare_seconds": prep_seconds,
            "final_loss": float(np.mean(tail)) if tail else float("nan"),
            "steps": result.steps,
            "seed": seed,
            "reference": self.reference,
        }
        params = {**cfg, "train": cfg["train"].to_dict()}
        return FittedBaseline(self.name, params, net.eval(), network_spec(net), info, str(dev))

    @torch.no_grad()
    def reconstruct(self, state, sinograms, geometry, *, photons, progress=False):
        self._check_state(state)
        y = check_sinograms(sinograms, geometry)
        i0 = check_photons(photons)
        if state.network is None:
            raise ValueError(f"{self.name}: the fitted state holds no network")
        state.network.eval()
        hu = CTProjector(geometry).fbp_hu(y)
        return np.asarray(self.infer(state, y, hu, geometry, photons=i0), np.float32)


@torch.no_grad()
def _apply(network: nn.Module, images: np.ndarray | torch.Tensor, device: str, chunk: int = 2) -> np.ndarray:
    """Run ``network`` on ``[N, C, H, W]`` HU images, ``chunk`` at a time; returns ``[N, C', H, W]``."""
    dev = torch.device(device)
    network = network.to(dev).eval()
    x = torch.as_tensor(images, dtype=torch.float32)
    outs = []
    for i in range(0, x.shape[0], chunk):
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda"):
            out = network(x[i : i + chunk].to(dev))
        outs.append(out.float().cpu())
    return torch.cat(outs).numpy()


# --------------------------------------------------------------------------- methods


class Neighbor2NeighborBaseline(LearnedBaseline):
    name = "Neighbor2Neighbor"
    reference = "T. Huang et al., Neighbor2Neighbor: self-supervised denoising from single noisy images, CVPR 2021"
    # The loss runs the network on half-size sub-images: cheaper steps, more of them.
    presets = _presets(tiny={"gamma": 2.0}, fast={"gamma": 2.0, "iters": 1500}, paper={"gamma": 2.0})
    crop_multiple = 2

    def objective(self, network, cfg):
        return Neighbor2NeighborObjective(network, gamma=cfg["gamma"], iters=cfg["train"].iters)


class Blind2UnblindBaseline(LearnedBaseline):
    name = "Blind2Unblind"
    reference = "Z. Wang et al., Blind2Unblind: self-supervised image denoising with visible blind spots, CVPR 2022"
    # Each step runs width**2 masked copies of the batch: smaller batches keep the
    # step cost of the fast preset near the other methods'.
    presets = _presets(
        tiny={"width": 2, "beta_min": 2.0, "beta_max": 20.0, "ramp_start": 0.8, "batch_size": 1},
        fast={"width": 2, "beta_min": 2.0, "beta_max": 20.0, "ramp_start": 0.8, "batch_size": 1},
        paper={"width": 4, "beta_min": 2.0, "beta_max": 20.0, "ramp_start": 0.8, "batch_size": 4},
    )

    @property
    def crop_multiple(self) -> int:  # type: ignore[override]
        return 4

    def objective(self, network, cfg):
        return Blind2UnblindObjective(network, width=cfg["width"], beta_min=cfg["beta_min"],
                                      beta_max=cfg["beta_max"], ramp_start=cfg["ramp_start"], iters=cfg["train"].iters)


class Noisier2NoiseBaseline(LearnedBaseline):
    """Registered as ``"Noiser2Noise"`` (the benchmark's spelling); the paper is Noisier2Noise."""

    name = "Noiser2Noise"
    reference = "N. Moran et al., Noisier2Noise: learning to denoise from unpaired noisy data, CVPR 2020"
    presets = _presets(
        tiny={"alpha": 1.0, "noise_draws": 1, "infer_draws": 1},
        fast={"alpha": 1.0, "noise_draws": 2, "infer_draws": 1},
        paper={"alpha": 1.0, "noise_draws": 8, "infer_draws": 4},
    )

    def prepare(self, sinograms, hu, geometry, *, photons, cfg, rng, **kwargs):
        noise = noise_images(sinograms, geometry, photons, rng=rng, repeats=int(cfg["noise_draws"]))
        return np.concatenate([hu[:, None], noise], 1)

    def objective(self, network, cfg):
        return Noisier2NoiseObjective(network, alpha=cfg["alpha"])

    def infer(self, state, sinograms, hu, geometry, *, photons):
        alpha = float(state.params["alpha"])
        draws = int(state.params["infer_draws"])
        rng = np.random.default_rng(int(state.info.get("seed", 0)) + 1)
        noise = noise_images(sinograms, geometry, photons, rng=rng, repeats=draws)
        obj = Noisier2NoiseObjective(state.network, alpha=alpha)
        acc = np.zeros_like(hu)
        # Antithetic pairs (m, -m): both are valid draws and their errors partly cancel.
        for r in range(draws):
            for s in (1.0, -1.0):
                z = hu + np.float32(s * alpha) * noise[:, r]
                fz = _apply(state.network, z[:, None], state.device)[:, 0]
                acc += obj.correct(torch.from_numpy(fz), torch.from_numpy(z)).numpy()
        return acc / (2 * draws)


class Noise2SimBaseline(LearnedBaseline):
    name = "Noise2Sim"
    reference = ("C. Niu et al., Noise entangled nonlocal self-similarity (Noise2Sim), "
                 "IEEE Trans. Med. Imaging 2023 / arXiv:2011.03384")
    presets = _presets(
        tiny={"k": 4, "patch": 3, "search": 9, "exclude": 2},
        fast={"k": 8, "patch": 7, "search": 21, "exclude": 2},
        paper={"k": 8, "patch": 7, "search": 31, "exclude": 2},
    )

    def prepare(self, sinograms, hu, geometry, *, photons, cfg, rng, **kwargs):
        sim = similar_images(hu, k=int(cfg["k"]), patch=int(cfg["patch"]), search=int(cfg["search"]),
                             exclude=int(cfg["exclude"]))
        return np.concatenate([hu[:, None], sim], 1)

    def objective(self, network, cfg):
        return Noise2SimObjective(network)


class Noise2InverseBaseline(LearnedBaseline):
    name = "Noise2Inverse"
    reference = ("A. A. Hendriksen, D. M. Pelt and K. J. Batenburg, Noise2Inverse: self-supervised deep "
                 "convolutional denoising for tomography, IEEE Trans. Comput. Imaging 6, 2020")
    presets = _presets(tiny={"splits": 2}, fast={"splits": 4}, paper={"splits": 4})

    def prepare(self, sinograms, hu, geometry, *, photons, cfg, rng, **kwargs):
        k = int(cfg["splits"])
        if k < 2 or geometry.views % k:
            from ..errors import InputError

            raise InputError(f"Noise2Inverse: {geometry.views} views do not split into {k} subsets")
        return view_split_fbp(sinograms, geometry, k)

    def objective(self, network, cfg):
        return Noise2InverseObjective(network)

    def infer(self, state, sinograms, hu, geometry, *, photons):
        subsets = view_split_fbp(sinograms, geometry, int(state.params["splits"]))
        inputs = Noise2InverseObjective.split_inputs(torch.from_numpy(subsets)).numpy()
        n, k, h, w = inputs.shape
        out = _apply(state.network, inputs.reshape(n * k, 1, h, w), state.device)
        return out.reshape(n, k, h, w).mean(1)


class PromptSIDBaseline(LearnedBaseline):
    """Prompt-SID (:mod:`turndiff.baselines.promptsid`): sub-image pairs, a structural prompt
    generated by a small diffusion model, a prompt-modulated transformer, scale replay."""

    name = "Prompt-SID"
    reference = ("H. Li, W. Zhang, X. Hu, T. Jiang, Z. Chen and H. Wang, Prompt-SID: learning structural "
                 "representation prompt via latent diffusion for single image denoising, AAAI 2025 "
                 "(arXiv:2502.06432)")
    # 2x2 cells, and even sub-images for the transformer's one down-sampling.
    crop_multiple = 4
    presets = _presets(
        tiny={"features": None, "channels": 4, "blocks": [1, 1], "heads": [1, 1], "prompt_dim": 8,
              "encoder_width": 4, "diffusion_steps": 2, "gamma": 1.5, "prompt_phase": 0.5, "replay": 0.1},
        fast={"features": None, "channels": 16, "blocks": [1, 1, 1], "heads": [1, 2, 4], "prompt_dim": 48,
              "encoder_width": 24, "diffusion_steps": 4, "gamma": 1.5, "prompt_phase": 0.5, "replay": 0.1,
              "iters": 1000},
        paper={"features": None, "channels": 48, "blocks": [2, 2, 4], "heads": [1, 2, 4], "prompt_dim": 64,
               "encoder_width": 64, "diffusion_steps": 4, "gamma": 1.5, "prompt_phase": 0.5, "replay": 0.1},
    )

    def network(self, cfg):
        return PromptSIDNet(**prompt_sid_spec(cfg))

    def objective(self, network, cfg):
        return PromptSIDObjective(network, gamma=cfg["gamma"], prompt_phase=cfg["prompt_phase"],
                                  replay=cfg["replay"], iters=cfg["train"].iters)


class IPDMBaseline(LearnedBaseline):
    """IPDM (:mod:`turndiff.baselines.ipdm`): diffusion models of normal-dose projections and
    images, applied to low-dose data by guided, iterated partial diffusion. Trains on
    unpaired clean data only: it never sees a low-dose scan before inference."""

    name = "IPDM"
    clean_data = "unpaired"
    reference = ("F. Liao et al., Domain progressive low-dose CT imaging using iterative partial diffusion model "
                 "(code: github.com/LFY1998/IPDM-PyTorch)")
    # Iterations and DDIM steps per iteration, per domain. The fast preset gives the
    # projection model one guided step (its pass over a 720 x 368 sinogram is 8x the image
    # model's on the 2-core CPU, and its matched timestep is a few steps only).
    _SAMPLING = {"iterations": 3, "steps": 3, "proj_iterations": 3, "proj_steps": 3, "lambda_max": 0.5,
                 "lambda_min": 0.25, "eta": 0.5}
    presets = _presets(
        tiny={"features": None, "channels": [8, 8], "res_blocks": 1, "norm_groups": 4, "crop": 16,
              "train_t_max": 200, **_SAMPLING, "iterations": 2, "steps": 2, "proj_iterations": 1, "proj_steps": 1},
        fast={"features": None, "channels": [16, 32, 32, 32], "res_blocks": 1, "norm_groups": 8, "crop": 64,
              "batch_size": 4, "train_t_max": 200, **_SAMPLING, "proj_iterations": 1, "proj_steps": 1,
              "iters": 800},
        paper={"features": None, "channels": [64, 128, 128, 256], "res_blocks": 2, "norm_groups": 32, "crop": 128,
               "batch_size": 8, "train_t_max": 1000, **_SAMPLING},
    )

    def prepare(self, sinograms, hu, geometry, *, photons, cfg, rng, reference_hu=None, **kwargs):
        if reference_hu is None:  # guarded by Baseline.fit; kept for direct calls
            raise ValueError("IPDM needs normal-dose images (reference_hu)")
        from ..physics.units import hu_to_mu

        ref = np.asarray(reference_hu, np.float32)
        # Normal-dose projections of the same unpaired images (the clean line integrals).
        sino = np.asarray(CTProjector(geometry).forward(hu_to_mu(ref, geometry.mu_water)), np.float32)
        return {"images": ref[:, None], "sinograms": sino[:, None]}

    def configure(self, cfg, bank):
        s = bank["sinograms"]
        return {**cfg, "sino_shift": float(s.mean()), "sino_scale": float(s.std())}

    def batches(self, bank, cfg):
        n, c = int(cfg["batch_size"]), int(cfg["crop"])
        images = crop_batch_fn(bank["images"], batch_size=n, crop=c)
        # A transposed or rotated sinogram is no sinogram: crops only.
        sinos = crop_batch_fn(bank["sinograms"], batch_size=n, crop=c, augment=False)

        def batch_fn(step, generator):
            a, b = images(step, generator), sinos(step, generator)
            return {"images": a["images"], "sinograms": b["images"], "step": step, "generator": a["generator"]}

        return batch_fn

    def network(self, cfg):
        return IPDMNet(**ipdm_spec(cfg))

    def objective(self, network, cfg):
        return IPDMObjective(network, t_max=int(cfg["train_t_max"]))

    def infer(self, state, sinograms, hu, geometry, *, photons):
        from skimage.restoration import estimate_sigma

        net: IPDMNet = state.network.to(state.device).eval()
        p = state.params
        t_max = int(p["train_t_max"])
        kw = {k: p[k] for k in ("lambda_max", "lambda_min", "eta")}
        A = CTProjector(geometry)
        out = np.empty_like(hu)
        for i in range(sinograms.shape[0]):
            gen = torch.Generator().manual_seed(int(state.info.get("seed", 0)) + 7 * i + 1)
            for domain in ("proj", "image"):
                if domain == "proj":
                    x = sinograms[i]
                    sigma = sinogram_sigma(x, photons) / net.config["sino_scale"]
                    runs = {"iterations": int(p["proj_iterations"]), "steps": int(p["proj_steps"])}
                else:
                    runs = {"iterations": int(p["iterations"]), "steps": int(p["steps"])}
                    x = np.asarray(A.fbp_hu(x), np.float32)
                    sigma = float(estimate_sigma(x)) / net.config["image_scale"]
                cond = net.to_unit(domain, torch.from_numpy(np.ascontiguousarray(x, np.float32))[None, None])
                t = matched_timestep(net.scheduler, sigma, t_max)
                res = iterative_partial_diffusion(lambda z, tt, d=domain: net(z, tt, d), net.scheduler,
                                                  cond.to(state.device), t, generator=gen, **kw, **runs)
                x = net.from_unit(domain, res.float().cpu())[0, 0].numpy()
            out[i] = x
        return out


class REDCNNBaseline(LearnedBaseline):
    name = "RED-CNN (supervised)"
    clean_data = "paired"
    reference = "H. Chen et al., Low-dose CT with a residual encoder-decoder CNN (RED-CNN), IEEE TMI 36(12), 2017"
    presets = _presets(
        tiny={"features": None, "channels": 4},
        fast={"features": None, "channels": 32, "crop": 55, "batch_size": 8, "train": {"lr": 5e-4, "iters": 1500}},
        paper={"features": None, "channels": 96, "crop": 55, "batch_size": 32, "train": {"lr": 1e-4}},
    )

    def network(self, cfg):
        return REDCNN(int(cfg["channels"]))

    def prepare(self, sinograms, hu, geometry, *, photons, cfg, rng, reference_hu=None, **kwargs):
        if reference_hu is None:  # guarded by Baseline.fit; kept for direct calls
            raise ValueError("RED-CNN needs reference_hu")
        return np.stack([hu, np.asarray(reference_hu, np.float32)], 1)

    def objective(self, network, cfg):
        return SupervisedObjective(network)


N2N = register(Neighbor2NeighborBaseline())
B2U = register(Blind2UnblindBaseline())
NR2N = register(Noisier2NoiseBaseline())
N2SIM = register(Noise2SimBaseline())
N2INV = register(Noise2InverseBaseline())
PROMPT_SID = register(PromptSIDBaseline())
IPDM = register(IPDMBaseline())
REDCNN_BASELINE = register(REDCNNBaseline())
