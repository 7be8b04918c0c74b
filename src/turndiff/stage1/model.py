"""The projection denoiser ``f``: configuration, training on noisy sinograms alone, and use.

Training reads nothing but the noisy post-log sinograms ``y`` (and their ``I0``, stated
in the file or estimated from ``y``): it never sees ``clean_sinogram`` or
``reference_hu``.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._checks import as_stack
from ..errors import InputError
from ..nets import ResidualDenoiser
from ..training import TRAIN_FIELDS, TrainConfig, TrainResult, autocast_enabled, resolve_device, train
from .objective import CSSSObjective, RecorruptedObjective, SureObjective
from ..dose import estimate_photons
from .similarity import SimilarityConfig
from .subsample import CELLS, pad_even
from .sure import CALIBRATION_BANDS, CALIBRATION_VIEW_BANDS, calibration_applies, sure_calibrate

__all__ = ["Stage1Config", "ProjectionDenoiser", "CalibratedDenoising", "train_projection_denoiser", "AUGMENTS",
           "SYMMETRIES", "STAGE1_PRESETS"]

# Training flips of a sinogram crop [views, detector] (dims to flip). A full-scan fan
# sinogram of the mirrored object is the original with the views reversed *and* the
# detector flipped, so "mirror" is a physical symmetry; "detector" alone (the first
# default) is the mirrored object scanned with the opposite rotation. Rotations of the
# object are the crops' wrap-around view offsets.
AUGMENTS: dict[str, tuple[int, ...]] = {"none": (), "detector": (-1,), "mirror": (-2, -1)}

#: Test-time flips of stage 1 (dims of ``[views, detector]`` flipped before the network and
#: back after it; the outputs are averaged): ``mirror`` is the exact full-scan symmetry
#: (views reversed and detector flipped), ``flips`` all four flips. SURE on the training
#: sinograms prefers ``flips``, but on validation phantoms ``mirror`` scores within 0.01 dB of
#: it through the whole pipeline at half the stage-1 passes, so ``mirror`` is the default
#: (session 26, docs/METHOD.md).
SYMMETRIES: dict[str, tuple[tuple[int, ...], ...]] = {
    "none": ((),), "mirror": ((), (-2, -1)), "flips": ((), (-1,), (-2,), (-2, -1))}
DEFAULT_SYMMETRIES = "mirror"

#: The preset registry: changes to the :class:`Stage1Config` defaults (training fields by
#: their own names). ``tiny``: seconds, for the tiny benchmark and the tests.
STAGE1_PRESETS: dict[str, dict[str, Any]] = {
    # Features 24-192 rather than the default 16-128: +0.18 / +0.00 / +0.26 dB on the
    # validation phantoms at 25 / 10 / 50% for about twice the training time (docs/METHOD.md,
    # "Capacity"); the 2-core fit budget has room for it.
    # SURE on the raw weights every 500 steps. Scoring their EMA too, every 250 steps with
    # early stopping (sure_ema, sure_patience), gained 0.49 dB for FBP(f(y)) on validation
    # but lost 0.19 dB for TurnDiff at 10% (docs/METHOD.md, "Length, EMA and early stopping").
    # bf16 autocast in training on a CPU with native bf16 (amp_cpu; inference stays float32):
    # a training step takes 0.21 s against 0.34 s, and on validation TurnDiff's output was
    # +0.05 / +0.10 / +0.03 dB at 25 / 10 / 50% against the float32 training, x0 within
    # 0.06 dB: one training each, within the spread of retraining (docs/METHOD.md, session 27).
    "fast": dict(features=(24, 24, 48, 96, 192, 24), iters=2000, sure_every=500, amp_cpu=True),
    "paper": dict(features=(32, 32, 64, 128, 256, 32), iters=20000, batch_size=16, crop=(256, 256),
                  lr=5e-4, warmup=500, alpha_warmup=2000, checkpoint_every=1000, ema_decay=0.999, sure_every=1000),
    "tiny": dict(features=(4, 4, 8, 8, 16, 4), iters=4, batch_size=2, crop=(32, 32), warmup=1, alpha_warmup=2,
                 checkpoint_every=2),
}


COMPONENT = "projection_denoiser"

#: Arithmetic of stage 1 on a GPU (on a CPU inference is float32, and training too unless
#: ``amp_cpu``: the forward pass of training only, where the weights stay float32). ``float32`` is the default
#: because bf16's step near a post-log value of 2.0 (1/64) is a third of the noise std at
#: 25% dose; ``bf16`` (autocast) is offered where docs/BENCHMARKS.md measured it harmless.
PRECISIONS = ("float32", "bf16")


@dataclass(frozen=True)
class Stage1Config:
    """Hyper-parameters of stage 1 (JSON-serialisable). Presets: ``fast`` (CPU, minutes)
    and ``paper`` (GPU).

    ``objective``: ``"r2r"`` (default) trains on recorrupted pairs drawn from the known
    post-log noise model (:class:`~turndiff.stage1.objective.RecorruptedObjective`,
    ``recorrupt`` = its ``a``); ``"csss"`` is the paper's sub-sampled pairs with the
    similarity maps (``pairs``: ``"cell"``, the paper's 2x2 cells, or ``"views"``;
    ``targets=2`` adds ``s3``; ``alpha``, ``use_similarity``, ``regulariser``,
    ``normalise``, ``similarity`` apply to it only); ``"sure"`` minimises Stein's estimate
    of the sinogram error itself (:class:`~turndiff.stage1.objective.SureObjective`; two
    passes per step). ``loss_weighting="ramp"`` weighs
    residuals by the detector ramp FBP applies (``ramp_floor`` at zero frequency). The
    choices and their measurements are in docs/METHOD.md.

    ``sure_every > 0`` turns on checkpoint selection without clean data: every
    ``sure_every`` steps (and for the final EMA weights) the sinogram MSE of the raw
    weights (``sure_ema=True``: and of their EMA) is estimated by
    :func:`~turndiff.stage1.sure.sure_mse` on ``sure_slices`` training slices, and the
    weights with the lowest estimate are kept. The self-supervised loss
    keeps falling while the image degrades, so it cannot choose the length; SURE can
    (docs/METHOD.md). ``sure_patience > 0`` stops training once that many checks in a
    row found no better weights (0: train all ``iters`` steps).
    """

    features: tuple[int, ...] = (16, 16, 32, 64, 128, 16)
    batch_size: int = 6
    crop: tuple[int, int] = (128, 128)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(
        iters=1000, lr=1e-3, weight_decay=1e-4, warmup=50, grad_clip=1.0, ema_decay=0.995, checkpoint_every=250))
    alpha: float = 2.0
    alpha_warmup: int = 200
    use_similarity: bool = True
    regulariser: str = "paper"
    normalise: bool = False
    similarity: dict = field(default_factory=lambda: SimilarityConfig().to_dict())
    sure_every: int = 0
    sure_slices: int = 4
    sure_patience: int = 0
    sure_ema: bool = False
    objective: str = "r2r"
    pairs: str = "cell"
    targets: int = 1
    loss_weighting: str = "ramp"
    ramp_floor: float = 0.1
    recorrupt: float = 0.5
    augment: str = "detector"
    precision: str = "float32"

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> "Stage1Config":
        if name not in STAGE1_PRESETS:
            raise InputError(f"unknown preset {name!r}; choose {', '.join(STAGE1_PRESETS)}")
        values = dict(STAGE1_PRESETS[name])
        for k, v in overrides.items():
            if v is not None:
                values[k] = v
        return cls.from_dict(values)

    def __post_init__(self) -> None:
        object.__setattr__(self, "features", tuple(int(f) for f in self.features))
        object.__setattr__(self, "crop", tuple(int(c) for c in self.crop))
        checks = [
            (len(self.features) == 6, f"features must hold 6 numbers, got {list(self.features)}"),
            (len(self.crop) == 2 and min(self.crop) >= 2, f"crop must be two sizes >= 2, got {list(self.crop)}"),
            (isinstance(self.train, TrainConfig), "train must be a TrainConfig"),
            (self.train.checkpoint_every >= 1, f"checkpoint_every must be >= 1, got {self.train.checkpoint_every}"),
            (self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}"),
            (self.alpha_warmup >= 0, "alpha_warmup must be >= 0"),
            (self.alpha >= 0, f"alpha must be >= 0, got {self.alpha}"),
            (self.sure_every >= 0 and self.sure_slices >= 1, "sure_every must be >= 0 and sure_slices >= 1"),
            (self.sure_patience >= 0, f"sure_patience must be >= 0, got {self.sure_patience}"),
            (self.objective in ("r2r", "csss", "sure"),
             f"objective must be 'r2r', 'csss' or 'sure', got {self.objective!r}"),
            (self.pairs in CELLS, f"pairs must be one of {', '.join(CELLS)}, got {self.pairs!r}"),
            (self.targets in (1, 2), f"targets must be 1 or 2, got {self.targets}"),
            (self.loss_weighting in ("none", "ramp"), f"loss_weighting must be 'none' or 'ramp', got {self.loss_weighting!r}"),
            (0 <= self.ramp_floor <= 1, f"ramp_floor must be in [0, 1], got {self.ramp_floor}"),
            (self.recorrupt > 0, f"recorrupt must be > 0, got {self.recorrupt}"),
            (self.augment in AUGMENTS, f"augment must be one of {', '.join(AUGMENTS)}, got {self.augment!r}"),
            (self.precision in PRECISIONS, f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}"),
        ]
        for ok, message in checks:
            if not ok:
                raise InputError(f"stage-1 config: {message}")

    def replace(self, **changes: Any) -> "Stage1Config":
        """A validated copy with ``changes`` applied (unknown names raise)."""
        return self.from_dict({**self.to_dict(), **changes})

    def to_dict(self) -> dict:
        d = asdict(self)
        d["features"], d["crop"], d["train"] = list(self.features), list(self.crop), self.train.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Stage1Config":
        """Rebuild from :meth:`to_dict`; unknown keys raise :class:`InputError` (a typo
        must not silently fall back to a default)."""
        d = dict(d)
        train = d.pop("train", None)
        train = train.to_dict() if isinstance(train, TrainConfig) else dict(train or {})
        flat = {k: d.pop(k) for k in TRAIN_FIELDS if k in d}
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise InputError(f"unknown stage-1 option(s) {', '.join(map(repr, unknown))}; "
                             f"known: {', '.join(sorted(known | set(TRAIN_FIELDS)))}")
        try:
            d["train"] = TrainConfig.from_dict({**cls().train.to_dict(), **train, **flat})
        except InputError as e:
            raise InputError(f"stage-1 config: {e}") from None
        return cls(**d)


@dataclass
class CalibratedDenoising:
    """What :meth:`ProjectionDenoiser.denoise_calibrated` returns (line integrals ``[N, V, D]``)."""

    raw: np.ndarray  # the network's output
    denoised: np.ndarray  # SURE-calibrated (``raw`` itself when not calibrated)
    weights: np.ndarray | None  # SURE weights [N, view bands * detector bands], view-major; None: not calibrated
    photons_input: float | None  # the input's estimated I0 (None when nothing needed it)


class ProjectionDenoiser:
    """A trained stage-1 network with what it needs to be used: ``denoise(sinogram)``.

    ``info`` holds the training dose (``photons``), the geometry JSON and the stage-1
    configuration; :meth:`save_pretrained` writes ``config.json`` + ``model.safetensors``.
    """

    def __init__(self, network: ResidualDenoiser, info: dict) -> None:
        self.network = network.eval()
        self.info = info

    @property
    def photons(self) -> float:
        """``I0`` of the training data."""
        return float(self.info["photons"])

    @torch.no_grad()
    def denoise(
        self, sinogram: np.ndarray, *, device: str | torch.device = "auto", progress: bool = False,
        symmetries: str = DEFAULT_SYMMETRIES, batch: int | None = None, precision: str | None = None,
    ) -> np.ndarray:
        """Denoise post-log sinograms ``[N, V, D]`` (or ``[V, D]``); returns the same shape.

        ``symmetries`` averages the network over test-time flips (:data:`SYMMETRIES`;
        ``"none"``: one pass). ``batch``: slices per network call (default 1 on the CPU,
        where a larger batch gains nothing, and 8 on a GPU). ``precision``: on a GPU,
        ``float32`` or ``bf16`` autocast (default: the training config's ``precision``)."""
        from tqdm.auto import tqdm

        if symmetries not in SYMMETRIES:
            raise InputError(f"symmetries must be one of {', '.join(SYMMETRIES)}, got {symmetries!r}")
        flips = SYMMETRIES[symmetries]
        y, squeeze = as_stack(sinogram, "sinogram", "V, D")
        dev = resolve_device(device)
        net = self.network.to(dev)
        out = np.empty_like(y)
        precision = precision or self.info.get("stage1", {}).get("precision", "float32")
        if precision not in PRECISIONS:
            raise InputError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        amp = dev.type == "cuda" and precision == "bf16"
        step = max(1, int(batch)) if batch else (1 if dev.type == "cpu" else 8)
        with tqdm(total=y.shape[0], desc="stage 1: denoise projections", unit="slice", disable=not progress) as bar:
            for i in range(0, y.shape[0], step):
                t = torch.from_numpy(y[i : i + step, None]).to(dev)
                acc = torch.zeros_like(t)
                for dims in flips:
                    with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp):
                        f = net(t.flip(dims) if dims else t).float()
                    acc += f.flip(dims) if dims else f
                out[i : i + step] = (acc / len(flips))[:, 0].cpu().numpy()
                bar.update(len(t))
        return out[0] if squeeze else out

    @property
    def photons_train_estimated(self) -> float | None:
        """``I0`` of the training data as :func:`~turndiff.dose.estimate_photons` finds it
        (None for a model saved before it was recorded, unless its ``I0`` was estimated)."""
        v = self.info.get("photons_train_estimated")
        if v is None and self.info.get("photons_estimated"):
            v = self.info.get("photons")
        return None if v is None else float(v)

    def denoise_calibrated(
        self, sinogram: np.ndarray, *, calibrate: bool | None = None, photons_input: float | None = None,
        photons_train_estimated: float | None = None, need_photons: bool = False,
        device: str | torch.device = "auto", progress: bool = False, symmetries: str = DEFAULT_SYMMETRIES,
        probe_rng: np.random.Generator | None = None, bands: tuple[int, int] | None = None,
    ) -> CalibratedDenoising:
        """Denoise, then blend the network's correction with the measured data per frequency band
        with the weights SURE finds best for this scan (:func:`~turndiff.stage1.sure_calibrate`;
        no clean data; one more network pass).

        ``calibrate``: True / False forces it; None (auto) calibrates an input up to
        :data:`~turndiff.stage1.sure.CALIBRATE_MAX_NOISE_RATIO` times noisier than the training
        data. The input's ``I0`` is ``photons_input`` or estimated from it; the calibration's
        noise model is the training ``I0`` scaled by the ratio of the two estimates (the
        estimator's bias cancels). ``photons_train_estimated`` overrides the model's record of
        its training data's estimate. ``bands``: (detector, view) bands of the grid.
        """
        y, squeeze = as_stack(sinogram, "sinogram", "V, D")
        i0_train = photons_train_estimated or self.photons_train_estimated
        if calibrate and not i0_train:  # before the network runs: fail fast
            raise InputError("this stage-1 model does not record its training data's estimated I0 "
                             "(saved before it was); retrain it or turn the calibration off")
        raw = self.denoise(y, device=device, progress=progress, symmetries=symmetries)
        i0_in = None
        if need_photons or calibrate is not False:
            i0_in = float(photons_input) if photons_input is not None else estimate_photons(y)
        out, weights = raw, None
        if calibration_applies(i0_in, i0_train, calibrate):
            d, v = bands or (CALIBRATION_BANDS, CALIBRATION_VIEW_BANDS)
            out, weights = sure_calibrate(lambda s: self.denoise(s, device=device, symmetries=symmetries), y,
                                          self.photons * i0_in / i0_train, denoised=raw, rng=probe_rng, bands=d,
                                          view_bands=v)
        if squeeze:
            raw, out = raw[0], out[0]
        return CalibratedDenoising(raw, out, weights, i0_in)

    # -------------------------------------------------------------- persistence
    def save_pretrained(self, directory: str | Path) -> Path:
        """Write ``directory/{config.json, model.safetensors}`` (:func:`turndiff.checkpoint.save_pretrained`),
        atomically: the folder appears whole or not at all."""
        from ..checkpoint import save_pretrained
        from ..io import atomic_output

        d = Path(directory)
        with atomic_output(d, directory=True) as tmp:
            save_pretrained(tmp, {"network": self.network.config, **self.info}, self.network,
                            class_name="ProjectionDenoiser")
        return d

    @classmethod
    def from_pretrained(cls, directory: str | Path, *, device: str | torch.device = "cpu") -> "ProjectionDenoiser":
        """Load a folder written by :meth:`save_pretrained` (CPU float32 by default).

        Folders of the first format (up to commit 4f8af67: the config's keys at the top
        level of ``config.json``, next to ``"class"``) load too."""
        from ..checkpoint import CONFIG_NAME, WEIGHTS_NAME, CheckpointError, load_state, read_json

        d = Path(directory)
        if not (d / CONFIG_NAME).is_file() or not (d / WEIGHTS_NAME).is_file():
            raise InputError(f"{d}: not a stage-1 model folder (needs {CONFIG_NAME} and {WEIGHTS_NAME})")
        try:
            meta = read_json(d / CONFIG_NAME)
            if not isinstance(meta, dict) or meta.get("class", "ProjectionDenoiser") != "ProjectionDenoiser":
                raise TypeError(f"{CONFIG_NAME} does not describe a ProjectionDenoiser")
            cfg = dict(meta["config"]) if isinstance(meta.get("config"), dict) else \
                {k: v for k, v in meta.items() if k != "class"}
            if not isinstance(cfg.get("network"), dict):
                raise TypeError(f"{CONFIG_NAME} has no 'network' object")
            net = ResidualDenoiser(**cfg.pop("network"))
            load_state(net, d)
        except (UnicodeDecodeError, KeyError, RuntimeError, TypeError, ValueError, AttributeError,
                CheckpointError) as e:
            raise InputError(f"{d}: cannot load the stage-1 model ({str(e).splitlines()[0]})") from None
        return cls(net.to(device), cfg)


def _make_objective(net: ResidualDenoiser, cfg: Stage1Config) -> torch.nn.Module:
    if cfg.objective == "r2r":
        return RecorruptedObjective(net, recorrupt=cfg.recorrupt, loss_weighting=cfg.loss_weighting,
                                    ramp_floor=cfg.ramp_floor)
    if cfg.objective == "sure":
        return SureObjective(net, loss_weighting=cfg.loss_weighting, ramp_floor=cfg.ramp_floor)
    # "csss" (Stage1Config has validated objective and pairs)
    return CSSSObjective(
        net,
        alpha=cfg.alpha,
        alpha_warmup=cfg.alpha_warmup,
        use_similarity=cfg.use_similarity,
        normalise=cfg.normalise,
        similarity=SimilarityConfig(**cfg.similarity),
        regulariser=cfg.regulariser,
        cell=CELLS[cfg.pairs],
        targets=cfg.targets,
        loss_weighting=cfg.loss_weighting,
        ramp_floor=cfg.ramp_floor,
    )


def _make_batch_fn(sino: torch.Tensor, photons: float, cfg: Stage1Config, device: torch.device):
    """Random even-aligned crops (wrapping around in views, i.e. rotations of the object),
    and with probability 1/2 the flip that ``cfg.augment`` names (see :data:`AUGMENTS`)."""
    n, V, D = sino.shape
    cv = min(cfg.crop[0], V - V % 2)
    cd = min(cfg.crop[1], D - D % 2)
    cv, cd = cv - cv % 2, cd - cd % 2

    def batch_fn(step: int, generator: torch.Generator) -> dict:
        idx = torch.randint(0, n, (cfg.batch_size,), generator=generator)
        v0 = torch.randint(0, V // 2, (cfg.batch_size,), generator=generator) * 2
        d0 = torch.randint(0, (D - cd) // 2 + 1, (cfg.batch_size,), generator=generator) * 2
        flip = torch.rand(cfg.batch_size, generator=generator) < 0.5
        crops = []
        for b in range(cfg.batch_size):
            rows = (v0[b] + torch.arange(cv)) % V  # 360-degree data wrap around
            c = sino[idx[b]][rows][:, d0[b] : d0[b] + cd]
            crops.append(c.flip(AUGMENTS[cfg.augment]) if flip[b] and AUGMENTS[cfg.augment] else c)
        y = torch.stack(crops)[:, None].to(device)
        sub_gen = torch.Generator().manual_seed(int(torch.randint(0, 2**62, (1,), generator=generator)))
        return {
            "sinogram": y,
            "photons": torch.full((cfg.batch_size,), photons, device=device),
            "step": step,
            "generator": sub_gen,
        }

    return batch_fn


def train_projection_denoiser(
    sinogram: np.ndarray,
    *,
    photons: float | None = None,
    geometry_json: str | None = None,
    config: Stage1Config | None = None,
    run_dir: str | Path | None = None,
    resume: bool = True,
    device: str | torch.device = "auto",
    progress: bool = True,
    max_steps: int | None = None,
) -> ProjectionDenoiser:
    """Train the CSSS projection denoiser on noisy sinograms ``[N, V, D]`` alone.

    Parameters
    ----------
    sinogram
        Noisy post-log sinograms, the only data training sees.
    photons
        ``I0`` of the data; estimated from ``sinogram`` when ``None``.
    geometry_json
        Stored with the model so later inputs can be checked against it.
    config
        :class:`Stage1Config` (default: the ``fast`` preset).
    run_dir
        Folder for periodic checkpoints; an interrupted run resumes from it.
    max_steps
        Stop after this many steps in total (the schedule still spans ``config.train.iters``);
        with ``run_dir``, a later call resumes where this one stopped.
    """

    cfg = config or Stage1Config.preset("fast")
    y, _ = as_stack(sinogram, "sinogram", "V, D")
    dev = resolve_device(device)
    i0 = float(photons) if photons else estimate_photons(y)
    with torch.random.fork_rng(devices=[]):  # seed the initialisation without touching the caller's RNG
        torch.manual_seed(cfg.train.seed)
        net = ResidualDenoiser(
            1, features=cfg.features, shift=float(y.mean()), scale=float(max(y.std(), 1e-3)), circular_rows=True
        )
    objective = _make_objective(net, cfg).to(dev)
    data = pad_even(torch.from_numpy(y)[:, None])[:, 0]
    tcfg = cfg.train.replace(amp=dev.type == "cuda" and cfg.precision == "bf16", device=str(dev))
    autocast = autocast_enabled(tcfg, dev)
    t0 = time.time()
    selector = _SureSelector(net, y, i0, cfg, dev, run_dir=run_dir) if cfg.sure_every > 0 else None
    if selector is not None and resume and selector.stopped:
        # A resumed run that SURE had already stopped: nothing is left to train (the best
        # weights are in run_dir/sure_selection and finish() loads them).
        result = TrainResult(steps=selector.history[-1]["step"], start_step=selector.history[-1]["step"],
                             iters=tcfg.iters)
    else:
        result = train(objective, _make_batch_fn(data, i0, cfg, dev), tcfg, run_dir=run_dir, resume=resume,
                       progress=progress, desc=f"stage 1: {cfg.objective.upper()}", max_steps=max_steps,
                       callback=selector)
    info = {
        "photons": i0,
        "photons_estimated": photons is None,
        # The calibration compares it with an input's estimate, so that the estimator's bias cancels.
        "photons_train_estimated": i0 if photons is None else float(estimate_photons(y)),
        "geometry": geometry_json,
        "stage1": cfg.to_dict(),
        "train_seconds": float(getattr(result, "seconds", time.time() - t0)),
        "train_autocast_bf16": bool(autocast),
        "train_slices": int(y.shape[0]),
    }
    if selector is not None:
        info["sure_selection"] = selector.finish(final_step=result.steps, ema=result.ema_applied)
    return ProjectionDenoiser(net.cpu().eval(), info)


class _SureSelector:
    """Training callback: SURE of the sinogram MSE every ``sure_every`` steps; keeps the best weights.

    With a ``run_dir`` the scores and the best weights so far are kept in
    ``run_dir/sure_selection/`` (JSON + safetensors), so a resumed run still knows the best
    checkpoint it saw before the interruption.
    """

    def __init__(self, net: ResidualDenoiser, y: np.ndarray, photons: float, cfg: Stage1Config,
                 device: torch.device, run_dir: str | Path | None = None) -> None:
        n = min(max(cfg.sure_slices, 1), y.shape[0])
        self.net, self.photons, self.every, self.device = net, photons, cfg.sure_every, device
        self.y = y[np.linspace(0, y.shape[0] - 1, n).round().astype(int)]
        self.seed = cfg.train.seed
        self.patience, self.score_ema, self.iters = cfg.sure_patience, cfg.sure_ema, cfg.train.iters
        self.swapped_ema = None  # set by the training loop (bind_ema) when it keeps an EMA
        self.history: list[dict] = []
        self.best: tuple[float, dict, dict] | None = None  # (SURE, history entry, weights)
        self.folder = Path(run_dir) / "sure_selection" if run_dir is not None else None
        self._load()

    def _load(self) -> None:
        from ..checkpoint import CheckpointError, load_tensors

        if self.folder is None or not (self.folder / "history.json").is_file():
            return
        try:
            record = json.loads((self.folder / "history.json").read_text())
            state = load_tensors(self.folder / "best.safetensors", device=self.device)
        except (json.JSONDecodeError, CheckpointError) as e:
            raise InputError(f"{self.folder}: cannot resume the SURE selection ({e})") from None
        self.history = list(record["history"])
        self.best = (float(record["best"]["sure_mse"]), record["best"], state)

    def _save(self) -> None:
        import os

        from .. import distributed
        from ..checkpoint import save_tensors

        if self.folder is None or self.best is None or not distributed.is_main():
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        save_tensors(self.folder / "best.safetensors", self.best[2])
        tmp = self.folder / ".history.json.tmp"
        tmp.write_text(json.dumps({"history": self.history, "best": self.best[1]}))
        os.replace(tmp, self.folder / "history.json")

    def _score(self, step: int, weights: str) -> None:
        from .sure import sure_mse

        was_training = self.net.training
        # The network as it is now, used exactly as at inference (ProjectionDenoiser sets eval mode).
        current = ProjectionDenoiser(self.net, {})
        try:
            value = sure_mse(lambda s: current.denoise(s, device=self.device), self.y, self.photons, seed=self.seed)
        finally:
            self.net.train(was_training)
        # A resumed run may score a step again: keep the newest score of each (step, weights).
        self.history = [h for h in self.history if (h["step"], h["weights"]) != (step, weights)]
        entry = {"step": step, "weights": weights, "sure_mse": value}
        self.history.append(entry)
        if self.best is None or value < self.best[0]:
            state = {k: v.detach().clone() for k, v in self.net.state_dict().items()}
            self.best = (value, entry, state)
        self._save()

    @property
    def stopped(self) -> bool:
        """Whether the checks so far already stop training (``patience`` of them without a new best)."""
        return (self.patience > 0 and self.best is not None and bool(self.history)
                and self.history[-1]["step"] - self.best[1]["step"] >= self.patience * self.every)

    def bind_ema(self, swapped) -> None:
        """Called by :func:`turndiff.training.train`: ``with swapped():`` the network holds
        the EMA weights."""
        self.swapped_ema = swapped

    def __call__(self, step: int, loss: float) -> bool:
        if step % self.every != 0:
            return False
        self._score(step, "raw")
        if self.score_ema and self.swapped_ema is not None:
            with self.swapped_ema():
                self._score(step, "ema")
        return self.stopped  # `patience` checks in a row (each `every` steps) without a new best

    def finish(self, *, final_step: int, ema: bool) -> dict:
        """Score the final weights (unless scored at the last check), load the best ones
        into the network, return the record."""
        weights = "ema" if ema else "raw"
        if not any(h["step"] == final_step and h["weights"] == weights for h in self.history):
            self._score(final_step, weights)
        value, chosen, state = self.best
        self.net.load_state_dict(state)
        record = {"history": self.history, "selected_step": chosen["step"], "selected_weights": chosen["weights"],
                  "selected_sure_mse": value}
        if self.stopped and final_step < self.iters:  # a stop at the last step is no early stop
            record["stopped_at"] = final_step
        return record
