"""The one training loop of turndiff: an objective in, a trained objective out.

An *objective* is a :class:`torch.nn.Module` whose ``forward(batch)`` returns the loss
(a scalar tensor) or ``(loss, logs)`` with ``logs`` a dict of scalars. The networks it
trains are its sub-modules; frozen parts (a teacher, a fixed autoencoder) simply have
``requires_grad=False``. Data come from ``batch_fn(step, generator) -> batch``; every
random choice in it (crops, slices, timesteps, noise) is drawn with the given
``torch.Generator``, which is seeded from the config and checkpointed, so a resumed
run sees exactly the batches an uninterrupted run would have seen.

:func:`train` wraps the objective with AdamW, a linear warm-up + cosine learning-rate
schedule, gradient clipping, bf16 autocast on CUDA, an exponential moving average
(EMA) of the trainable parameters, a tqdm progress bar and periodic checkpoints
(safetensors + JSON, no pickles) from which it resumes.

Stage 1, stage 2 and every learned baseline train through this function; a new
method is a new objective, not a new loop.

Examples
--------
>>> import torch
>>> from turndiff.training import TrainConfig, train
>>> class Fit(torch.nn.Module):
...     def __init__(self):
...         super().__init__()
...         self.w = torch.nn.Parameter(torch.zeros(1))
...     def forward(self, batch):
...         return ((self.w - batch) ** 2).mean()
>>> cfg = TrainConfig(iters=200, lr=0.1, warmup=0, grad_clip=None)
>>> result = train(Fit(), lambda step, g: torch.full((4,), 3.0), cfg, progress=False)
>>> result.losses[-1] < 1e-2
True
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import shutil
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from turndiff import distributed
from turndiff.checkpoint import (
    CheckpointError,
    load_state,
    load_tensors,
    optimizer_state_from_tensors,
    optimizer_state_to_tensors,
    read_json,
    save_tensors,
    write_json,
)
from turndiff.errors import InputError, TurnDiffError

__all__ = [
    "TrainConfig",
    "TrainResult",
    "train",
    "lr_factor",
    "resolve_device",
    "autocast_enabled",
    "cpu_bf16_native",
    "latest_checkpoint",
    "set_requires_grad",
]

BatchFn = Callable[[int, torch.Generator], Any]
Callback = Callable[[int, float], Any]

CHECKPOINT_DIR = "checkpoints"
LATEST_NAME = "latest.json"
# Config fields that may change between a run and its resumption: they do not
# alter the optimisation trajectory up to the checkpoint (``iters`` extends or
# shortens the cosine schedule from then on, which the caller asked for).
#: The fields of :class:`TrainConfig` that configs built on it accept by their own names
#: (``Stage1Config.preset("fast", iters=300)``, a baseline's ``options={"lr": 1e-4}``).
TRAIN_FIELDS: tuple[str, ...] = ("iters", "lr", "weight_decay", "warmup", "grad_clip", "ema_decay",
                                 "checkpoint_every", "seed", "amp_cpu")

_RESUME_MUTABLE = {"iters", "checkpoint_every", "keep_checkpoints", "log_every", "device", "amp"}


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of :func:`train` (JSON-serialisable).

    Attributes
    ----------
    iters : int
        Total optimizer steps.
    lr : float
        Peak learning rate of AdamW.
    weight_decay : float
        AdamW decoupled weight decay.
    warmup : int
        Steps of linear warm-up from ``lr / warmup`` to ``lr``; then cosine decay.
    min_lr_ratio : float
        Final learning rate as a fraction of ``lr`` at the end of the cosine.
    betas : tuple of float
        AdamW betas.
    grad_clip : float or None
        Clip the global gradient norm to this value (None: no clipping).
    ema_decay : float or None
        Decay of the exponential moving average of the trainable parameters, in (0, 1).
        The effective decay warms up as ``min(ema_decay, (1 + k) / (10 + k))``. With an
        EMA, the objective holds the EMA weights when :func:`train` returns.
    amp : bool
        bf16 autocast on CUDA. Ignored on CPU (see ``amp_cpu``).
    amp_cpu : bool
        bf16 autocast on a CPU too, where oneDNN has native bf16 (:func:`cpu_bf16_native`;
        elsewhere float32, since emulated bf16 is slower than float32). The weights, the
        optimiser and the loss stay float32. Off by default because it changes the
        numbers; a model turns it on where validation measured it harmless (stage 1's
        ``fast`` preset, docs/METHOD.md).
    checkpoint_every : int
        Save a checkpoint every this many steps (0: only at the end). Needs ``run_dir``.
    keep_checkpoints : int
        How many of the most recent checkpoints to keep.
    seed : int
        Seeds the batch generator and, inside the call only, torch's and numpy's
        global generators (restored afterwards).
    device : str
        ``"cpu"``, ``"cuda"``, ``"cuda:K"`` or ``"auto"``.
    log_every : int
        Refresh the progress bar and check the loss for NaN every this many steps.
    """

    iters: int = 1000
    lr: float = 1e-3
    weight_decay: float = 0.0
    warmup: int = 0
    min_lr_ratio: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    grad_clip: float | None = 1.0
    ema_decay: float | None = None
    amp: bool = True
    amp_cpu: bool = False
    checkpoint_every: int = 0
    keep_checkpoints: int = 2
    seed: int = 0
    device: str = "cpu"
    log_every: int = 10

    def __post_init__(self) -> None:
        object.__setattr__(self, "betas", (float(self.betas[0]), float(self.betas[1])))
        checks = [
            (self.iters >= 1, f"iters must be >= 1, got {self.iters}"),
            (self.lr > 0 and math.isfinite(self.lr), f"lr must be > 0, got {self.lr}"),
            (self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay}"),
            (self.warmup >= 0, f"warmup must be >= 0, got {self.warmup}"),
            (0 <= self.min_lr_ratio <= 1, f"min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}"),
            (all(0 <= b < 1 for b in self.betas), f"betas must be in [0, 1), got {self.betas}"),
            (self.grad_clip is None or self.grad_clip > 0, f"grad_clip must be > 0 or None, got {self.grad_clip}"),
            (
                self.ema_decay is None or 0 < self.ema_decay < 1,
                f"ema_decay must be in (0, 1) or None, got {self.ema_decay}",
            ),
            (self.checkpoint_every >= 0, f"checkpoint_every must be >= 0, got {self.checkpoint_every}"),
            (self.keep_checkpoints >= 1, f"keep_checkpoints must be >= 1, got {self.keep_checkpoints}"),
            (self.log_every >= 1, f"log_every must be >= 1, got {self.log_every}"),
        ]
        for ok, message in checks:
            if not ok:
                raise InputError(message)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict of all fields."""
        d = dataclasses.asdict(self)
        d["betas"] = list(self.betas)
        return d

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainConfig:
        """Build from :meth:`to_dict` output; unknown keys raise :class:`InputError`."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise InputError(f"unknown TrainConfig fields: {', '.join(unknown)}")
        return cls(**dict(data))

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with some fields changed (validated)."""
        return dataclasses.replace(self, **changes)


@dataclass
class TrainResult:
    """What :func:`train` did.

    Attributes
    ----------
    losses : list of float
        Loss of every step from step 0 (including steps done before a resume).
    logs : dict of str to list of float
        Every scalar the objective logged, per step.
    seconds : float
        Wall time of this call.
    steps : int
        Steps completed in total (== ``config.iters`` when finished).
    start_step : int
        Step this call started from (> 0 after a resume).
    iters : int
        Steps the configuration asks for.
    ema_applied : bool
        Whether the objective now holds the EMA weights (only once training is complete).
    """

    losses: list[float] = field(default_factory=list)
    logs: dict[str, list[float]] = field(default_factory=dict)
    seconds: float = 0.0
    steps: int = 0
    start_step: int = 0
    iters: int = 0
    ema_applied: bool = False

    @property
    def completed(self) -> bool:
        """Whether training reached ``iters`` (not stopped early by ``max_steps`` or a callback)."""
        return self.steps >= self.iters


def resolve_device(device: str | torch.device) -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; other names are checked.

    Raises :class:`InputError` for CUDA requested on a machine without it.
    """
    if isinstance(device, torch.device):
        dev = device
    elif device == "auto":
        dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        try:
            dev = torch.device(device)
        except RuntimeError:
            raise InputError(f"unknown device {device!r} (use auto, cpu or cuda)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device {device!r} requested but CUDA is not available")
    if dev.type not in {"cpu", "cuda"}:
        raise InputError(f"unsupported device {device!r} (use auto, cpu or cuda)")
    return dev


@functools.lru_cache(maxsize=1)
def cpu_bf16_native() -> bool:
    """Whether this CPU has bf16 arithmetic in hardware (x86: AVX512-BF16 or AMX; Arm: BF16)
    and oneDNN uses it. oneDNN's own check also accepts AVX-512 CPUs that only emulate bf16,
    where it is no faster than float32, so on Linux the CPU's flags decide."""
    try:
        if not (torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()):
            return False
    except (AttributeError, RuntimeError):  # a build without the query
        return False
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:  # not Linux: trust oneDNN's check
        return True
    flags = set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            flags.update(value.split())
    return bool(flags & {"avx512_bf16", "amx_bf16", "bf16"})


def autocast_enabled(config: TrainConfig, device: str | torch.device) -> bool:
    """Whether :func:`train` runs the forward pass under bf16 autocast on ``device``."""
    kind = torch.device(device).type
    return (config.amp and kind == "cuda") or (config.amp_cpu and kind == "cpu" and cpu_bf16_native())


def lr_factor(step: int, config: TrainConfig) -> float:
    """Learning-rate multiplier for the 0-based ``step``: linear warm-up, then cosine."""
    if config.warmup > 0 and step < config.warmup:
        return (step + 1) / config.warmup
    span = max(config.iters - config.warmup, 1)
    progress = min(max(step - config.warmup, 0) / span, 1.0)
    cosine = 0.5 * (1.0 + math.cos(math.pi * progress))
    return config.min_lr_ratio + (1.0 - config.min_lr_ratio) * cosine


def set_requires_grad(module: torch.nn.Module, flag: bool) -> torch.nn.Module:
    """Freeze (``False``) or unfreeze all parameters of ``module``; returns it."""
    for p in module.parameters():
        p.requires_grad_(flag)
    return module


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The newest complete checkpoint folder in ``run_dir``, or None."""
    root = Path(run_dir) / CHECKPOINT_DIR
    pointer = root / LATEST_NAME
    if not pointer.is_file():
        return None
    info = read_json(pointer)
    folder = root / str(info.get("folder", ""))
    if not (folder / "state.json").is_file():
        raise CheckpointError(f"{pointer} points to {folder}, which is missing or incomplete")
    return folder


# ----------------------------------------------------------------------------- helpers


def _map_batch(fn: Callable[[Any], Any], batch: Any) -> Any:
    """``fn`` applied to every leaf of a batch (tensor, or dict / tuple / list / namedtuple
    of them, nested), the containers rebuilt: the one walk of a batch's structure."""
    if isinstance(batch, Mapping):
        return {k: _map_batch(fn, v) for k, v in batch.items()}
    if isinstance(batch, tuple) and hasattr(batch, "_fields"):  # namedtuple
        return type(batch)(*(_map_batch(fn, v) for v in batch))
    if isinstance(batch, (list, tuple)):
        return type(batch)(_map_batch(fn, v) for v in batch)
    return fn(batch)


def _to_device(batch: Any, device: torch.device) -> Any:
    return _map_batch(lambda b: b.to(device, non_blocking=True) if torch.is_tensor(b) else b, batch)


def _shard(batch: Any, rank: int, world: int) -> tuple[Any, int, int]:
    """This rank's share of a batch drawn identically on every rank: tensors whose leading
    dimension is the batch's (that of its first tensor) are split as ``np.array_split``
    does; a ``torch.Generator`` in the batch (an objective's own randomness) is re-seeded
    per rank, so ranks do not draw the same noise for different samples. Returns
    ``(shard, its size, the global batch size)``."""
    leaves: list[torch.Tensor] = []
    _map_batch(lambda b: leaves.append(b) if torch.is_tensor(b) and b.ndim >= 1 else None, batch)
    if not leaves:
        raise TurnDiffError("a distributed run needs a batch with a leading batch dimension")
    n = int(leaves[0].shape[0])
    if n < world:
        raise InputError(f"the batch of {n} is smaller than the {world} processes; use fewer processes")
    lo, hi = rank * n // world, (rank + 1) * n // world

    def cut(b: Any) -> Any:
        if torch.is_tensor(b):
            return b[lo:hi] if b.ndim >= 1 and b.shape[0] == n else b
        if isinstance(b, torch.Generator):
            return torch.Generator(device=b.device).manual_seed((b.initial_seed() + 0x9E3779B9 * rank) % 2**63)
        return b

    return _map_batch(cut, batch), hi - lo, n


def _split_output(out: Any) -> tuple[torch.Tensor, Mapping[str, Any]]:
    if isinstance(out, tuple):
        if len(out) != 2 or not isinstance(out[1], Mapping):
            raise TurnDiffError("an objective must return a loss or (loss, logs_dict)")
        loss, logs = out
    else:
        loss, logs = out, {}
    if not torch.is_tensor(loss) or loss.numel() != 1:
        raise TurnDiffError("an objective's loss must be a scalar tensor")
    return loss.reshape(()), logs


@contextlib.contextmanager
def _rng_scope(seed: int, device: torch.device) -> Iterator[None]:
    """Seed torch and numpy for the duration of training, then restore the caller's state."""
    cuda_devices = [device.index if device.index is not None else torch.cuda.current_device()] if (
        device.type == "cuda"
    ) else []
    np_state = np.random.get_state()
    with torch.random.fork_rng(devices=cuda_devices):
        torch.manual_seed(seed)
        np.random.seed(seed % 2**32)
        try:
            yield
        finally:
            np.random.set_state(np_state)


def _rng_tensors(generator: torch.Generator, device: torch.device) -> tuple[dict[str, torch.Tensor], dict]:
    tensors = {"batch_generator": generator.get_state(), "torch_cpu": torch.get_rng_state()}
    if device.type == "cuda":
        tensors["torch_cuda"] = torch.cuda.get_rng_state(device)
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    tensors["numpy_keys"] = torch.from_numpy(np.asarray(keys, dtype=np.int64))
    return tensors, {"numpy": {"kind": kind, "pos": int(pos), "has_gauss": int(has_gauss), "cached": float(cached)}}


def _restore_rng(tensors: Mapping[str, torch.Tensor], meta: Mapping, generator: torch.Generator,
                 device: torch.device) -> None:
    generator.set_state(tensors["batch_generator"])
    torch.set_rng_state(tensors["torch_cpu"])
    if device.type == "cuda" and "torch_cuda" in tensors:
        torch.cuda.set_rng_state(tensors["torch_cuda"], device)
    npm = meta["numpy"]
    keys = tensors["numpy_keys"].numpy().astype(np.uint32)
    np.random.set_state((npm["kind"], keys, npm["pos"], npm["has_gauss"], npm["cached"]))


class _EMA:
    """Float32 shadow copies of the trainable parameters."""

    def __init__(self, named: Sequence[tuple[str, torch.nn.Parameter]], decay: float) -> None:
        self.decay = decay
        self.names = [n for n, _ in named]
        self.params = [p for _, p in named]
        self.shadow = [p.detach().float().clone() for p in self.params]

    @torch.no_grad()
    def update(self, step: int) -> None:
        decay = min(self.decay, (1 + step) / (10 + step))
        torch._foreach_lerp_(self.shadow, [p.detach().float() for p in self.params], 1.0 - decay)

    def state(self) -> dict[str, torch.Tensor]:
        return dict(zip(self.names, self.shadow))

    def load(self, tensors: Mapping[str, torch.Tensor]) -> None:
        if set(tensors) != set(self.names):
            raise CheckpointError("EMA checkpoint does not match the trainable parameters")
        for i, n in enumerate(self.names):
            self.shadow[i].copy_(tensors[n])

    @torch.no_grad()
    def apply(self) -> None:
        for p, s in zip(self.params, self.shadow):
            p.copy_(s.to(p.dtype))

    @contextlib.contextmanager
    def swapped(self):
        """The EMA weights in the parameters for the block, the raw ones back after it
        (what a callback scores; training goes on from the raw weights)."""
        raw = [p.detach().clone() for p in self.params]
        self.apply()
        try:
            yield
        finally:
            with torch.no_grad():
                for p, r in zip(self.params, raw):
                    p.copy_(r)


def _save_checkpoint(run_dir: Path, step: int, objective: torch.nn.Module, optimizer: torch.optim.Optimizer,
                     ema: _EMA | None, generator: torch.Generator, device: torch.device, config: TrainConfig,
                     losses: list[float], logs: Mapping[str, list[float]]) -> Path:
    root = run_dir / CHECKPOINT_DIR
    name = f"step_{step:08d}"
    final = root / name
    tmp = root / f".{name}.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    save_tensors(tmp / "model.safetensors", objective.state_dict())
    opt_tensors, opt_meta = optimizer_state_to_tensors(optimizer)
    save_tensors(tmp / "optimizer.safetensors", opt_tensors)
    if ema is not None:
        save_tensors(tmp / "ema.safetensors", ema.state())
    rng_tensors, rng_meta = _rng_tensors(generator, device)
    save_tensors(tmp / "rng.safetensors", rng_tensors)
    history = {"loss": torch.tensor(losses, dtype=torch.float64)}
    history.update({f"log.{k}": torch.tensor(v, dtype=torch.float64) for k, v in logs.items()})
    save_tensors(tmp / "history.safetensors", history)
    write_json(tmp / "state.json", {
        "step": step,
        "config": config.to_dict(),
        "objective": type(objective).__qualname__,
        "optimizer": opt_meta,
        "rng": rng_meta,
        "scheduler": {"kind": "warmup_cosine", "step": step},
    })
    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)
    write_json(root / LATEST_NAME, {"folder": name, "step": step})
    old = sorted(p for p in root.glob("step_*") if p.is_dir() and p != final)
    for stale in old[: max(len(old) - (config.keep_checkpoints - 1), 0)]:
        shutil.rmtree(stale, ignore_errors=True)
    return final


def _load_checkpoint(folder: Path, objective: torch.nn.Module, optimizer: torch.optim.Optimizer,
                     ema: _EMA | None, generator: torch.Generator, device: torch.device,
                     config: TrainConfig) -> tuple[int, list[float], dict[str, list[float]]]:
    state = read_json(folder / "state.json")
    stored = dict(state["config"])
    current = config.to_dict()
    diffs = [k for k in current if k not in _RESUME_MUTABLE and stored.get(k) != current[k]]
    if diffs:
        k = diffs[0]
        raise CheckpointError(
            f"{folder} was trained with {k}={stored.get(k)!r}, now {k}={current[k]!r}; "
            "use a fresh run folder or resume=False"
        )
    if state.get("objective") != type(objective).__qualname__:
        raise CheckpointError(f"{folder} holds a {state.get('objective')}, not a {type(objective).__qualname__}")
    load_state(objective, folder / "model.safetensors")
    opt_sd = optimizer_state_from_tensors(load_tensors(folder / "optimizer.safetensors"), state["optimizer"])
    try:
        optimizer.load_state_dict(opt_sd)
    except (ValueError, KeyError) as exc:
        raise CheckpointError(f"{folder}: optimizer state does not fit: {exc}") from None
    if ema is not None:
        if not (folder / "ema.safetensors").is_file():
            raise CheckpointError(f"{folder} has no EMA weights but ema_decay is set")
        ema.load(load_tensors(folder / "ema.safetensors", device=str(device)))
    _restore_rng(load_tensors(folder / "rng.safetensors"), state["rng"], generator, device)
    hist = load_tensors(folder / "history.safetensors")
    losses = hist.pop("loss").tolist()
    logs = {k[len("log."):]: v.tolist() for k, v in hist.items()}
    return int(state["step"]), losses, logs


# -------------------------------------------------------------------------------- train


def train(
    objective: torch.nn.Module,
    batch_fn: BatchFn,
    config: TrainConfig,
    *,
    run_dir: str | Path | None = None,
    resume: bool = True,
    progress: bool = True,
    callback: Callback | None = None,
    max_steps: int | None = None,
    desc: str = "training",
) -> TrainResult:
    """Optimise ``objective`` on batches from ``batch_fn``.

    Parameters
    ----------
    objective : torch.nn.Module
        ``forward(batch)`` returns a scalar loss tensor or ``(loss, logs)``. Its
        parameters with ``requires_grad`` are trained; it is moved to the device.
    batch_fn : callable
        ``batch_fn(step, generator) -> batch`` (tensor, or dict/tuple/list of them). It
        must draw all its randomness from ``generator`` (a CPU ``torch.Generator``).
        Tensors are moved to the device by the loop.
    config : TrainConfig
        Hyper-parameters.
    run_dir : path, optional
        Folder for checkpoints (``run_dir/checkpoints/step_XXXXXXXX``). Without it,
        nothing is written.
    resume : bool
        Continue from the latest checkpoint in ``run_dir`` when there is one. A
        finished run is not trained again; its weights are loaded.
    progress : bool
        Show a tqdm progress bar with the running loss.
    callback : callable, optional
        ``callback(step, loss)`` after every step (``step`` counts completed steps);
        returning ``True`` stops training (a checkpoint is written when ``run_dir`` is
        set). An exception raised in it propagates (the last periodic checkpoint stays).
        With ``config.ema_decay``, a callback that has a ``bind_ema`` method is given,
        before the first step, a context-manager factory: inside ``with swapped():`` the
        objective's parameters hold the EMA weights (so the callback can score them), and
        the raw weights come back after the block.
    max_steps : int, optional
        Stop once this many steps are completed in total, without changing the
        learning-rate schedule (which always spans ``config.iters``).
    desc : str
        Progress-bar label.

    Returns
    -------
    TrainResult
        Loss history and timing. With ``config.ema_decay`` the objective holds the EMA
        weights on return once training is complete (raw weights after an early stop).
    """
    from tqdm.auto import tqdm

    if not isinstance(objective, torch.nn.Module):
        raise InputError("objective must be a torch.nn.Module")
    if max_steps is not None and max_steps < 0:
        raise InputError(f"max_steps must be >= 0, got {max_steps}")
    device = resolve_device(config.device)
    run_path = Path(run_dir) if run_dir is not None else None
    stop = config.iters if max_steps is None else min(config.iters, max_steps)
    t0 = time.perf_counter()

    objective.to(device)
    named = [(n, p) for n, p in objective.named_parameters() if p.requires_grad]
    if not named:
        raise InputError("the objective has no trainable parameters")
    params = [p for _, p in named]
    optimizer = torch.optim.AdamW(params, lr=config.lr, betas=config.betas, weight_decay=config.weight_decay)
    ema = _EMA(named, config.ema_decay) if config.ema_decay is not None else None
    if ema is not None and callback is not None and hasattr(callback, "bind_ema"):
        callback.bind_ema(ema.swapped)
    generator = torch.Generator(device="cpu")
    generator.manual_seed(config.seed)
    use_amp = autocast_enabled(config, device)

    rank, world = distributed.rank(), distributed.world_size()
    result = TrainResult(iters=config.iters)
    # Ranks draw the same batches (the shared generator) but their own noise inside the
    # objective; one process keeps exactly the seeding it always had.
    with _rng_scope(config.seed + 7919 * rank, device):
        start = 0
        losses: list[float] = []
        logs: dict[str, list[float]] = {}
        if run_path is not None and resume:
            distributed.barrier()  # rank 0 may still be writing the checkpoint another rank would read
            folder = distributed.broadcast(latest_checkpoint(run_path))
            if folder is not None:
                start, losses, logs = _load_checkpoint(folder, objective, optimizer, ema, generator, device, config)
        result.start_step = start
        objective.train()
        model: torch.nn.Module = objective
        if world > 1:
            from torch.nn.parallel import DistributedDataParallel

            model = DistributedDataParallel(objective, device_ids=[device.index if device.index is not None else torch.cuda.current_device()]
                if device.type == "cuda" else None)
        pending: list[torch.Tensor] = []
        pending_logs: list[dict[str, Any]] = []

        def flush() -> None:
            if not pending:
                return
            values = torch.stack(pending).float().cpu().tolist()
            bad = [i for i, v in enumerate(values) if not math.isfinite(v)]
            if bad:
                raise TurnDiffError(
                    f"{desc}: the loss became {values[bad[0]]} at step {step_done - len(values) + bad[0] + 1}; "
                    "lower the learning rate or check the data"
                )
            losses.extend(values)
            for entry in pending_logs:
                for k, v in entry.items():
                    logs.setdefault(k, []).append(float(v))
            bar.set_postfix(loss=f"{sum(values) / len(values):.4g}", refresh=False)
            pending.clear()
            pending_logs.clear()

        step_done = start
        bar = tqdm(total=config.iters, initial=start, desc=desc, disable=not progress or rank > 0,
                   dynamic_ncols=True)
        try:
            for step in range(start, stop):
                batch = batch_fn(step, generator)
                share = 1.0
                if world > 1:  # this rank's part; DDP's mean of the scaled losses is the batch's mean
                    batch, n_rank, n_all = _shard(batch, rank, world)
                    share = n_rank * world / n_all
                batch = _to_device(batch, device)
                lr = config.lr * lr_factor(step, config)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_amp):
                    loss, step_logs = _split_output(model(batch))
                optimizer.zero_grad(set_to_none=True)
                (loss.float() * share).backward()
                if world > 1:
                    loss = distributed.all_mean(loss.float() * share)
                if config.grad_clip is not None:
                    torch.nn.utils.clip_grad_norm_(params, config.grad_clip)
                optimizer.step()
                if ema is not None:
                    ema.update(step)
                step_done = step + 1
                pending.append(loss.detach())
                pending_logs.append({k: (v.detach() if torch.is_tensor(v) else v) for k, v in step_logs.items()})
                bar.update(1)
                stop_now = False
                if callback is not None:
                    stop_now = callback(step_done, float(loss.detach())) is True
                    if world > 1:  # one decision for all ranks, or they part ways at the next collective
                        stop_now = distributed.broadcast(stop_now)
                if step_done % config.log_every == 0:
                    flush()
                periodic = config.checkpoint_every > 0 and step_done % config.checkpoint_every == 0
                if run_path is not None and (periodic or step_done == stop or stop_now):
                    flush()
                    if rank == 0:  # every rank holds the same state; one writes it
                        _save_checkpoint(run_path, step_done, objective, optimizer, ema, generator, device,
                                         config, losses, logs)
                    distributed.barrier()
                if stop_now:
                    break
            flush()
        finally:
            bar.close()

    if ema is not None and step_done >= config.iters:
        ema.apply()
        result.ema_applied = True
    objective.eval()
    result.losses = losses
    result.logs = logs
    result.steps = step_done
    result.seconds = time.perf_counter() - t0
    return result
