"""The benchmark's one registry of methods: TurnDiff, its ablations and every baseline.

Each entry of :data:`METHODS` is run the same way by the runner, ``method.run(data, doses,
ctx)``, and returns named rows of test images (HU ``[N, H, W]`` per dose) with their
cost; every row then goes through the same evaluation (``turndiff.metrics.evaluate``
inside the body). A baseline gives one row; TurnDiff gives its output and the
intermediates the paper reports (x0, x~0); its ablations reuse the TurnDiff model that
``turndiff`` fitted (fitting it when ``turndiff`` was not chosen).

Training reads the noisy training sinograms only; the exceptions declare their clean data
(``clean_data``): IPDM trains on unpaired normal-dose data of other phantoms, the
supervised RED-CNN upper bound on the clean images of the training slices.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np

from ..baselines import BASELINES
from ..inference import global_fusion
from ..masks import body_mask
from ..pipeline import fit
from ..stage1 import Stage1Config, train_projection_denoiser
from ..stage2 import sample_spread
from .data import BenchData
from .splits import UNPAIRED_SEED

__all__ = ["METHODS", "METHOD_ORDER", "BASELINE_ORDER", "TURNDIFF_ROWS", "STAGE1_ABLATIONS", "Result",
           "RunContext", "BenchMethod"]

#: Rows of the ``turndiff`` method (its output and intermediates, one fitted model).
TURNDIFF_ROWS = ("TurnDiff", "x0 (only projection)", "x~0 (diffusion, no fusion)", "x~0 (condition x_ld)")
#: Inference ablations of the ``ablations`` method (the same fitted model).
INFERENCE_ABLATIONS = ("no tunable strategy", "global fusion 0.5", "global fusion 1", "no SURE calibration",
                       "x0, no SURE calibration", "no detail restoration", "no low band (--no-lowband)",
                       "no polish (--polish 0)", "no data consistency",
                       "fusion output (no restoration, no data consistency)", "no diffusion (x0 in place of x~0)")
#: Stage-1 ablations: stage 1 retrained with these overrides, stage 2 and fusion reused.
#: The first is the paper's stage 1 as the project shipped it before issue 13.
STAGE1_ABLATIONS = {
    "stage 1: paper CSSS (2x2 cells)": dict(objective="csss", pairs="cell", loss_weighting="none", alpha=1.0,
                                            iters=1000, sure_every=0),
    "stage 1: CSSS view pairs": dict(objective="csss", pairs="views", loss_weighting="none", alpha=2.0,
                                     iters=1000, sure_every=0),
    "stage 1: no ramp weighting": dict(loss_weighting="none"),
}
BASELINE_ORDER = ("FBP", "TV", "BM3D", "Neighbor2Neighbor", "Blind2Unblind", "Noiser2Noise", "Noise2Sim",
                  "Noise2Inverse", "Prompt-SID", "IPDM", "RED-CNN (supervised)")


class PeakRSS:
    """Peak resident memory (MB) of this process while the block runs (sampled, 20 Hz)."""

    def __enter__(self):
        self.peak = self.base = self._rss()
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._watch, daemon=True)
        self._t.start()
        return self

    @staticmethod
    def _rss() -> float:
        try:
            with open(f"/proc/{os.getpid()}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        return int(line.split()[1]) / 1024.0
        except OSError:
            pass
        return 0.0

    def _watch(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._rss())
            time.sleep(0.05)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, self._rss())

    @property
    def delta(self) -> float:
        return self.peak - self.base


@dataclass
class Result:
    """One row of the benchmark: test images per dose and what they cost."""

    images: dict  # dose -> HU [N, H, W]
    train_seconds: float
    infer_seconds_per_slice: float
    peak_mb: float
    clean_data: str = "none"  # turndiff.baselines.base.CLEAN_DATA
    notes: str = ""
    spread: dict | None = None

    @property
    def uses_clean_data(self) -> bool:
        return self.clean_data != "none"


@dataclass
class RunContext:
    """Settings of one benchmark run, and what methods share within it (``shared``)."""

    preset: str
    seed: int
    device: str
    run_dir: Path
    log: Callable[[str], None] = print
    shared: dict = field(default_factory=dict)


class BenchMethod:
    """A registered benchmark method: ``run`` fits on ``data.train_sinogram`` and returns
    named rows of test images."""

    key: str = ""

    def run(self, data: BenchData, doses, ctx: RunContext) -> dict[str, Result]:
        raise NotImplementedError


def fit_baseline(name: str, data: BenchData, *, preset: str, seed: int, device: str, runs_dir: Path):
    """Fit the registered baseline ``name`` on the benchmark's training sinograms, with its
    checkpoints in ``runs_dir / name`` (spaces as underscores), resumed when there. The one
    way the benchmark and `turndiff iq` fit a baseline.

    Clean data only for a method that declares it: the clean training images for a
    ``"paired"`` one (supervised), and for an ``"unpaired"`` one the clean images of as many
    *other* phantoms, from base seed :data:`~turndiff.benchmark.splits.UNPAIRED_SEED` + ``seed``
    (inside the training range, disjoint from the noisy training phantoms and the test set)."""
    b = BASELINES[name]
    kwargs = {}
    if b.clean_data == "paired":
        kwargs["reference_hu"] = data.train_reference_hu
    elif b.clean_data == "unpaired":
        from ..phantoms import make_phantoms

        n, size = data.train_sinogram.shape[0], data.geometry.image_shape[0]
        kwargs["reference_hu"] = make_phantoms(n, size, seed=UNPAIRED_SEED + seed)
    return b.fit(data.train_sinogram, data.geometry, photons=data.train_photons, preset=preset, seed=seed,
                 device=device, run_dir=Path(runs_dir) / name.replace(" ", "_"), progress=False, **kwargs)


class BaselineMethod(BenchMethod):
    """A registered baseline (:data:`turndiff.baselines.BASELINES`), FBP included: one row."""

    def __init__(self, name: str) -> None:
        self.key = name

    def run(self, data, doses, ctx):
        b = BASELINES[self.key]
        with PeakRSS() as mem:
            t0 = time.perf_counter()
            state = fit_baseline(self.key, data, preset=ctx.preset, seed=ctx.seed, device=ctx.device,
                                 runs_dir=ctx.run_dir)
            train_s = time.perf_counter() - t0
            imgs, infer = {}, 0.0
            for d in doses:
                t1 = time.perf_counter()
                imgs[d] = np.asarray(b.reconstruct(state, data.test_sinograms[d], data.geometry,
                                                   photons=data.photons(d)), np.float32)
                infer += time.perf_counter() - t1
        n_slices = sum(data.test_sinograms[d].shape[0] for d in doses)
        return {self.key: Result(imgs, train_s if b.trained else 0.0, infer / n_slices,
                                 mem.delta if b.trained else 0.0, b.clean_data)}


def _fitted_turndiff(data: BenchData, ctx: RunContext) -> dict:
    """The TurnDiff model of this run (fitted once, shared by ``turndiff`` and ``ablations``)."""
    if "turndiff" not in ctx.shared:
        with PeakRSS() as mem:
            t0 = time.perf_counter()
            pipe = fit(data.train_sinogram, geometry=data.geometry, photons=data.train_photons, preset=ctx.preset,
                       device=ctx.device, seed=ctx.seed, run_dir=ctx.run_dir / "turndiff")
            train_s = time.perf_counter() - t0
            pipe.save_pretrained(ctx.run_dir / "turndiff" / "model")  # the benchmarked model, for `turndiff reconstruct`
        ctx.shared["turndiff"] = {"pipe": pipe, "train_seconds": train_s, "peak_mb": mem.delta, "outputs": {}}
    return ctx.shared["turndiff"]


def _turndiff_output(fitted: dict, data: BenchData, dose: float, ctx: RunContext):
    """The default reconstruction at ``dose`` (computed once per run), its seconds, and its
    stage-1 pass (:meth:`TurnDiffPipeline.project`), which the inference ablations reuse."""
    if dose not in fitted["outputs"]:
        t1 = time.perf_counter()
        proj = fitted["pipe"].project(data.test_sinograms[dose], progress=False)
        res = fitted["pipe"](data.test_sinograms[dose], strategy="auto", fusion="pixel", seed=ctx.seed,
                             progress=False, projection=proj)
        fitted["outputs"][dose] = (res, time.perf_counter() - t1, proj)
    return fitted["outputs"][dose]


class TurnDiffMethod(BenchMethod):
    """TurnDiff with its defaults, plus x0 and x~0 from the same reconstruction, and the
    per-pixel spread of x~0 over four sampler seeds at the first dose."""

    key = "turndiff"

    def run(self, data, doses, ctx):
        fitted = _fitted_turndiff(data, ctx)
        pipe, seed = fitted["pipe"], ctx.seed
        imgs: dict[str, dict] = {k: {} for k in TURNDIFF_ROWS}
        infer, spread = 0.0, None
        for d in doses:
            res, secs, _ = _turndiff_output(fitted, data, d, ctx)
            infer += secs
            imgs["TurnDiff"][d] = res.image_hu
            imgs["x0 (only projection)"][d] = res.x0
            if res.x_diffusion is not None:
                imgs["x~0 (diffusion, no fusion)"][d] = res.x_diffusion
                # Stage 2 on the condition it was trained on (issue 4 measures x~0 this way).
                imgs["x~0 (condition x_ld)"][d] = pipe.stage2.sample(res.x_ld, seed=seed)
            if d == doses[0] and res.x_diffusion is not None:
                # Honest stochasticity (issue 4): per-pixel spread of x~0 over 4 sampler seeds.
                sp = sample_spread(pipe.stage2, res.x_prior, seeds=(seed, seed + 1, seed + 2, seed + 3),
                                   progress=False)
                spread = {"dose": d, "seeds": 4, "std_hu_mean": float(sp.std.mean()),
                          "std_hu_p95": float(np.percentile(sp.std, 95)),
                          "std_hu_mean_in_body": float(sp.std[body_mask(data.test_reference_hu)].mean())}
                ctx.log(f"  x~0 spread over 4 seeds at {d:.0%}: mean {spread['std_hu_mean']:.2f} HU per pixel")
            ctx.log(f"  TurnDiff {d if isinstance(d, str) else format(d, '.0%')}: strategy {res.strategy.strategy} "
                    f"lam {res.strategy.lam:.2f}")
        n_slices = sum(data.test_sinograms[d].shape[0] for d in doses)
        out = {k: Result(v, fitted["train_seconds"], infer / n_slices, fitted["peak_mb"]) for k, v in imgs.items()
               if v}
        out["TurnDiff"].spread = spread
        secs = pipe.info["train_seconds"]
        out["TurnDiff"].notes = f"stage 1 {secs['stage1']:.0f} s + stage 2 {secs.get('stage2', 0):.0f} s"
        return out


class TurnDiffAblations(BenchMethod):
    """The paper's ablations and ours: no tunable strategy, global fusion, no SURE
    calibration, no detail restoration, no low band from x0 in the data-consistency prior,
    no final polish, no data consistency, neither, no diffusion (x0 in place of x~0) (same model, each
    reusing the default reconstruction's stage-1 pass), and stage 1 retrained with
    :data:`STAGE1_ABLATIONS` under the same stage 2 and fusion."""

    key = "ablations"

    def run(self, data, doses, ctx):
        fitted = _fitted_turndiff(data, ctx)
        pipe, seed = fitted["pipe"], ctx.seed
        imgs: dict[str, dict] = {k: {} for k in INFERENCE_ABLATIONS}
        for d in doses:
            sino = data.test_sinograms[d]
            res, _, proj = _turndiff_output(fitted, data, d, ctx)
            imgs["no tunable strategy"][d] = pipe(sino, strategy="none", seed=seed, progress=False,
                                                  projection=proj).image_hu
            imgs["global fusion 0.5"][d] = global_fusion(res.x_diffusion, res.x0, 0.5)
            imgs["global fusion 1"][d] = global_fusion(res.x_diffusion, res.x0, 1.0)
            # These change only what follows the diffusion: its draw is reused, not sampled again.
            same_draw = dict(seed=seed, progress=False, projection=proj, x_diffusion=res.x_diffusion)
            imgs["no detail restoration"][d] = pipe(sino, restore=False, **same_draw).image_hu
            imgs["no low band (--no-lowband)"][d] = pipe(sino, lowband=False, **same_draw).image_hu
            # Stage 2 taken out: x0 in place of its output, everything after it unchanged.
            imgs["no diffusion (x0 in place of x~0)"][d] = pipe(sino, **{**same_draw, "x_diffusion": res.x0}).image_hu
            imgs["no polish (--polish 0)"][d] = res.unpolished
            imgs["no data consistency"][d] = res.x_restored
            imgs["fusion output (no restoration, no data consistency)"][d] = res.x_fused
            # Stage 1's own output, without the calibration's blend (the pass keeps it).
            # Stage 2 gets the uncalibrated x0 either way, so the diffusion's draw is the same too.
            plain_proj = replace(proj, x0=proj.x0_uncalibrated, x0_raw=None, calibration=None)
            plain = pipe(sino, **{**same_draw, "projection": plain_proj})
            imgs["no SURE calibration"][d] = plain.image_hu
            imgs["x0, no SURE calibration"][d] = plain.x0
        out = {k: Result(v, fitted["train_seconds"], float("nan"), fitted["peak_mb"]) for k, v in imgs.items()}
        for name, kw in STAGE1_ABLATIONS.items():
            if ctx.preset == "tiny":
                kw = {k: v for k, v in kw.items() if k not in ("iters", "sure_every")}
            t0 = time.perf_counter()
            s1 = train_projection_denoiser(data.train_sinogram, photons=data.train_photons,
                                           config=Stage1Config.preset(ctx.preset, seed=seed, **kw),
                                           device=ctx.device, progress=False,
                                           # resumable, as TurnDiff's fit and the baselines are
                                           run_dir=ctx.run_dir / "ablations" / name.replace(" ", "_").replace(":", ""))
            secs = time.perf_counter() - t0
            swapped = type(pipe)(s1, pipe.stage2, pipe.info, device=ctx.device)
            out[name] = Result({d: swapped(data.test_sinograms[d], seed=seed, progress=False).image_hu
                                for d in doses}, secs, float("nan"), float("nan"),
                               notes="stage 1 retrained with the ablation; stage 2 reused")
            ctx.log(f"  ablation {name}: stage 1 retrained in {secs:.0f} s")
        return out


#: Every benchmark method by its command-line name, in the order the runner runs them.
METHODS: dict[str, BenchMethod] = {
    "FBP": BaselineMethod("FBP"),
    "turndiff": TurnDiffMethod(),
    "ablations": TurnDiffAblations(),
    **{n: BaselineMethod(n) for n in BASELINE_ORDER if n != "FBP"},
}
METHOD_ORDER: tuple[str, ...] = tuple(METHODS)

