"""Safetensors + JSON persistence: model components and training state, no pickles.

Every model is saved the same way, as a folder (:func:`save_pretrained`)::

    DIR/config.json        sorted JSON: class, config (enough to rebuild it), turndiff version
    DIR/model.safetensors  the weights (CPU), absent for a model without weights

Composite models are folders of such folders (the pipeline: ``projection_denoiser/``
and ``latent_diffusion/{autoencoder,unet}/``) plus their own index JSON.

Training state (for resume) is a folder of safetensors files whose tensors are named,
plus a JSON file for everything that is not a tensor (optimizer hyper-parameters,
step counters). Every file is written to a temporary name in its folder and renamed,
so an interrupted write never leaves a half file under the final name.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from turndiff.errors import TurnDiffError

__all__ = [
    "CONFIG_NAME",
    "WEIGHTS_NAME",
    "CheckpointError",
    "write_json",
    "read_json",
    "save_tensors",
    "load_tensors",
    "save_pretrained",
    "load_pretrained_config",
    "load_state",
    "optimizer_state_to_tensors",
    "optimizer_state_from_tensors",
]

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"


class CheckpointError(TurnDiffError):
    """A model or checkpoint folder is missing, incomplete or does not fit the model."""


def _version() -> str:
    from turndiff import __version__

    return __version__


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as indented, key-sorted JSON (atomically). Returns the path."""
    path = Path(path)
    text = json.dumps(obj, indent=2, sort_keys=True, allow_nan=False) + "\n"
    _atomic_write_bytes(path, text.encode("utf-8"))
    return path


def read_json(path: str | os.PathLike) -> Any:
    """Read a JSON file, raising :class:`CheckpointError` if missing or malformed."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"missing file {path}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path} is not valid JSON: {exc}") from None


def save_tensors(
    path: str | os.PathLike,
    tensors: Mapping[str, torch.Tensor],
    metadata: Mapping[str, str] | None = None,
) -> Path:
    """Save named tensors as one safetensors file (atomically, CPU, contiguous copies).

    Copies are made so that tensors sharing memory (tied weights, views) can be saved.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    flat = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        save_file(flat, tmp, metadata=dict(metadata) if metadata else None)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_tensors(path: str | os.PathLike, *, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """Load a safetensors file into a ``{name: tensor}`` dict on ``device``."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"missing file {path}")
    try:
        return load_file(str(path), device=str(device))
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"cannot read {path}: {exc}") from None


def _class_path(module: torch.nn.Module) -> str:
    cls = type(module)
    return f"{cls.__module__}.{cls.__qualname__}"


def save_pretrained(
    folder: str | os.PathLike,
    config: Mapping[str, Any],
    module: torch.nn.Module | None = None,
    *,
    class_name: str | None = None,
) -> Path:
    """Save one model as ``folder/{config.json, model.safetensors}``: the one way to save.

    Stage 1, each stage-2 network, every baseline and (through them) the pipeline are
    written by this function, so every model folder reads the same way.

    Parameters
    ----------
    folder : path
        Created if missing; each file is written atomically. Callers that need the whole
        folder to appear at once write into :func:`turndiff.io.atomic_output`.
    config : dict
        JSON-serialisable description, enough to rebuild the model.
    module : torch.nn.Module, optional
        Its ``state_dict()`` goes to ``model.safetensors`` (CPU copies); none is written
        for a model without weights (e.g. a TV baseline).
    class_name : str, optional
        Stored ``class`` (default: the dotted path of ``module``'s class).

    Returns
    -------
    Path
        ``folder``.
    """
    folder = Path(folder)
    if class_name is None:
        if module is None:
            raise ValueError("save_pretrained needs a class_name when there is no module")
        class_name = _class_path(module)
    if module is not None:
        save_tensors(folder / WEIGHTS_NAME, module.state_dict(), metadata={"format": "pt"})
    write_json(folder / CONFIG_NAME, {"class": class_name, "config": dict(config), "turndiff_version": _version()})
    return folder


def load_pretrained_config(
    folder: str | os.PathLike, *, expected_class: str | None = None, weights: bool = True
) -> dict[str, Any]:
    """Read the ``config`` saved by :func:`save_pretrained`.

    Raises :class:`CheckpointError` when the folder, its config or (with ``weights``) its
    weights are missing, or when the stored class differs from ``expected_class`` (a
    dotted path or a bare class name). Load the weights with :func:`load_state`.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(f"missing model folder {folder}")
    if weights and not (folder / WEIGHTS_NAME).is_file():
        raise CheckpointError(f"missing file {folder / WEIGHTS_NAME}")
    meta = read_json(folder / CONFIG_NAME)
    if not isinstance(meta, dict) or not isinstance(meta.get("config"), dict) or "class" not in meta:
        raise CheckpointError(f"{folder / CONFIG_NAME} lacks 'class' or a 'config' object")
    if expected_class is not None:
        stored = str(meta["class"])
        if stored != expected_class and stored.rsplit(".", 1)[-1] != expected_class:
            raise CheckpointError(f"{folder} holds a {stored}, expected {expected_class}")
    return dict(meta["config"])


def load_state(
    module: torch.nn.Module,
    source: str | os.PathLike | Mapping[str, torch.Tensor],
    *,
    strict: bool = True,
) -> torch.nn.Module:
    """Load weights into ``module`` with explicit errors instead of silent fixes.

    Parameters
    ----------
    module : torch.nn.Module
        Target network (weights are copied to its device and dtype).
    source : path or dict
        A ``.safetensors`` file, a component folder holding ``model.safetensors``, or a
        ``{name: tensor}`` dict.
    strict : bool
        Require the exact same set of names (shapes must always match).

    Returns
    -------
    torch.nn.Module
        ``module`` itself.
    """
    if isinstance(source, Mapping):
        state, where = dict(source), "state dict"
    else:
        path = Path(source)
        if path.is_dir():
            path = path / WEIGHTS_NAME
        state, where = load_tensors(path), str(path)
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if strict and (missing or unexpected):
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} tensors (e.g. {missing[0]!r})")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)} tensors (e.g. {unexpected[0]!r})")
        raise CheckpointError(f"{where} does not fit {type(module).__name__}: " + "; ".join(parts))
    for key, value in state.items():
        if key in own and tuple(own[key].shape) != tuple(value.shape):
            raise CheckpointError(
                f"{where}: tensor {key!r} has shape {tuple(value.shape)}, "
                f"the model expects {tuple(own[key].shape)}"
            )
    module.load_state_dict({k: v for k, v in state.items() if k in own}, strict=strict)
    return module


def optimizer_state_to_tensors(
    optimizer: torch.optim.Optimizer,
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Flatten an optimizer ``state_dict`` into named tensors plus a JSON-able dict.

    Per-parameter tensors become ``state.<index>.<key>``; non-tensor per-parameter
    values and the parameter groups (hyper-parameters) go to the JSON part.
    """
    sd = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for idx, pstate in sd["state"].items():
        for key, value in pstate.items():
            if torch.is_tensor(value):
                tensors[f"state.{idx}.{key}"] = value
            else:
                scalars.setdefault(str(idx), {})[key] = value
    groups = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()} for g in sd["param_groups"]]
    return tensors, {"param_groups": groups, "scalars": scalars}


def optimizer_state_from_tensors(tensors: Mapping[str, torch.Tensor], meta: Mapping[str, Any]) -> dict[str, Any]:
    """Inverse of :func:`optimizer_state_to_tensors`: an optimizer ``state_dict``."""
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        _, idx, key = name.split(".", 2)
        state.setdefault(int(idx), {})[key] = value
    for idx, values in meta.get("scalars", {}).items():
        state.setdefault(int(idx), {}).update(values)
    groups = []
    for g in meta["param_groups"]:
        g = dict(g)
        if "betas" in g:
            g["betas"] = tuple(g["betas"])
        groups.append(g)
    return {"state": state, "param_groups": groups}
