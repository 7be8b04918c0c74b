"""What every baseline shares: the :class:`Baseline` interface, the fitted state it
returns, the registry, presets and persistence (safetensors + JSON, no pickles).

A baseline turns noisy post-log sinograms ``[N, V, D]`` into HU images ``[N, H, W]``::

    state = baseline.fit(train_sinograms, geometry, photons=I0, preset="fast", seed=0)
    hu = baseline.reconstruct(state, test_sinograms, geometry, photons=I0_test)
    hu = state.reconstruct(test_sinograms, geometry, photons=I0_test)   # the same

``fit`` sees the noisy training sinograms and their dose only. The exceptions declare
it in ``clean_data``: ``"paired"`` (the supervised upper bound: ``reference_hu`` pairs
with the training sinograms) and ``"unpaired"`` (IPDM: ``reference_hu`` holds normal-dose
images of other patients, any number of them). Every other baseline refuses
``reference_hu``, so clean data cannot reach a self-supervised method by mistake.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._checks import check_sinograms
from ..dose import check_photons
from ..errors import InputError
from ..physics import Geometry
from ..training import TRAIN_FIELDS

__all__ = ["Baseline", "FittedBaseline", "BASELINES", "PRESETS", "CLEAN_DATA", "CATEGORY", "register", "get_baseline",
           "check_sinograms"]

#: Preset names every baseline accepts: ``fast`` (CPU, minutes), ``paper`` (GPU),
#: ``tiny`` (tests and the tiny benchmark: a few steps on tiny images).
PRESETS: tuple[str, ...] = ("tiny", "fast", "paper")


#: What clean data a method trains on, in the order the tables list the categories.
CLEAN_DATA = ("none", "unpaired", "paired")
#: The category names the tables print for each ``clean_data``.
CATEGORY = {"none": "no clean data", "unpaired": "unpaired clean data", "paired": "paired clean data"}

#: name -> baseline, filled by :func:`register`.
BASELINES: dict[str, "Baseline"] = {}


def register(baseline: "Baseline") -> "Baseline":
    """Add ``baseline`` to :data:`BASELINES` under its ``name``."""
    if baseline.name in BASELINES:
        raise ValueError(f"a baseline named {baseline.name!r} is already registered")
    BASELINES[baseline.name] = baseline
    return baseline


def get_baseline(name: str) -> "Baseline":
    """The registered baseline ``name`` (:class:`InputError` naming the choices otherwise)."""
    try:
        return BASELINES[name]
    except KeyError:
        raise InputError(f"unknown baseline {name!r}; choose from {', '.join(BASELINES)}") from None


def resolve_preset(name: str, presets: Mapping[str, Mapping[str, Any]], overrides: Mapping[str, Any] | None,
                   method: str) -> dict[str, Any]:
    """``presets[name]`` with ``overrides`` applied; unknown names and keys raise :class:`InputError`."""
    if name not in presets:
        raise InputError(f"unknown preset {name!r} for {method}; choose {', '.join(presets)}")
    cfg = dict(presets[name])
    known = set(cfg) - {"train"} | (set(TRAIN_FIELDS) if "train" in cfg else set())
    for k, v in (overrides or {}).items():
        if k not in known:
            raise InputError(f"unknown option {k!r} for {method}; known: {', '.join(sorted(known))}")
        if k in TRAIN_FIELDS and "train" in cfg:  # a field of the held TrainConfig
            cfg["train"] = cfg["train"].replace(**{k: v})
        else:
            cfg[k] = list(v) if isinstance(v, tuple) else v
    return cfg


@dataclass
class FittedBaseline:
    """A fitted baseline: its hyper-parameters and, for learned ones, the network.

    Attributes
    ----------
    method : str
        Registry name (``"TV"``, ``"Noise2Inverse"``, ...).
    params : dict
        JSON-able settings used at reconstruction time (preset values, chosen TV weight...).
    network : torch.nn.Module or None
        The trained network (EMA weights), in eval mode.
    network_spec : dict or None
        ``{"class": ..., "config": ...}``: enough to rebuild ``network``.
    info : dict
        JSON-able facts: training dose, geometry, training seconds, losses summary.
    device : str
        Device for :meth:`reconstruct` (not saved; ``from_pretrained`` gives ``"cpu"``).
    """

    method: str
    params: dict = field(default_factory=dict)
    network: torch.nn.Module | None = None
    network_spec: dict | None = None
    info: dict = field(default_factory=dict)
    device: str = "cpu"

    def reconstruct(self, sinograms: np.ndarray, geometry: Geometry, *, photons: float,
                    progress: bool = False) -> np.ndarray:
        """HU images ``[N, H, W]`` from post-log sinograms ``[N, V, D]`` at ``I0 = photons``."""
        return get_baseline(self.method).reconstruct(self, sinograms, geometry, photons=photons,
                                                      progress=progress)

    # ------------------------------------------------------------------ persistence
    def save_pretrained(self, directory: str | Path) -> Path:
        """Write ``directory/config.json`` (and ``model.safetensors`` for learned methods)
        with :func:`turndiff.checkpoint.save_pretrained`, atomically."""
        from ..checkpoint import save_pretrained
        from ..io import atomic_output

        d = Path(directory)
        cfg = {"method": self.method, "params": self.params, "network": self.network_spec, "info": self.info}
        with atomic_output(d, directory=True) as tmp:
            save_pretrained(tmp, cfg, self.network,
                            class_name="FittedBaseline")
        return d

    @classmethod
    def from_pretrained(cls, directory: str | Path, *, device: str = "cpu") -> "FittedBaseline":
        """Load a folder written by :meth:`save_pretrained` (CPU float32 by default). Folders of the
        first format (``method`` at the top level of ``config.json``) load too."""
        from ..checkpoint import CONFIG_NAME, WEIGHTS_NAME, CheckpointError, load_state, read_json

        d = Path(directory)
        if not (d / CONFIG_NAME).is_file():
            raise InputError(f"{d}: not a baseline folder (no {CONFIG_NAME})")
        try:
            meta = read_json(d / CONFIG_NAME)
            cfg = meta["config"] if isinstance(meta, dict) and meta.get("class") == "FittedBaseline" else meta
            method = str(cfg["method"])
        except (CheckpointError, KeyError, TypeError) as e:
            raise InputError(f"{d / CONFIG_NAME}: not a baseline config ({e})") from None
        get_baseline(method)
        network, spec = None, cfg.get("network")
        if spec is not None:
            if not (d / WEIGHTS_NAME).is_file():
                raise InputError(f"{d}: {method} needs {WEIGHTS_NAME}, which is missing")
            from .nets import build_network

            network = build_network(spec)
            try:
                load_state(network, d)
            except CheckpointError as e:
                raise InputError(f"{d}: the weights do not fit the {method} network "
                                 f"({str(e).splitlines()[0]})") from None
            network = network.to(device).eval()
        return cls(method, dict(cfg.get("params", {})), network, spec, dict(cfg.get("info", {})), str(device))


class Baseline(ABC):
    """A comparison method: ``fit`` on noisy training sinograms, ``reconstruct`` test ones.

    Subclasses set ``name``, ``clean_data`` (:data:`CLEAN_DATA`), ``trained`` and
    ``reference`` (the paper it follows) and implement :meth:`_fit` and :meth:`reconstruct`.
    """

    name: str = ""
    clean_data: str = "none"
    trained: bool = False
    reference: str = ""

    @property
    def uses_clean_data(self) -> bool:
        """Whether ``fit`` needs ``reference_hu`` (paired or not)."""
        return self.clean_data != "none"

    @property
    def category(self) -> str:
        """The data category the tables print (:data:`CATEGORY`)."""
        return CATEGORY[self.clean_data]

    def fit(
        self,
        train_sinograms: np.ndarray,
        geometry: Geometry,
        *,
        photons: float,
        preset: str = "fast",
        seed: int = 0,
        device: str = "auto",
        run_dir: str | Path | None = None,
        reference_hu: np.ndarray | None = None,
        progress: bool = True,
        options: Mapping[str, Any] | None = None,
    ) -> FittedBaseline:
        """Fit on noisy training sinograms.

        Parameters
        ----------
        train_sinograms : ndarray
            Noisy post-log sinograms ``[N, V, D]``.
        geometry : Geometry
            Their scanner geometry.
        photons : float
            ``I0`` of the training data.
        preset : str
            ``"fast"`` (CPU, minutes), ``"paper"`` (GPU) or ``"tiny"`` (tests).
        seed : int
            Seeds every random choice (crops, masks, synthetic noise).
        device : str
            ``"auto"``, ``"cpu"`` or ``"cuda"``.
        run_dir : path, optional
            Training checkpoints go here; an interrupted run resumes from them.
        reference_hu : ndarray, optional
            Clean images: ``[N, H, W]`` paired with ``train_sinograms`` for a method with
            ``clean_data == "paired"`` (the supervised upper bound), ``[M, H, W]`` of other
            patients for ``"unpaired"`` (IPDM); any other method raises
            :class:`InputError` when given one.
        progress : bool
            Show progress bars.
        options : dict, optional
            Overrides of preset values (names as in ``docs/BASELINES.md``).

        Returns
        -------
        FittedBaseline
        """
        if reference_hu is not None and not self.uses_clean_data:
            raise InputError(f"{self.name} is self-supervised: it must not receive reference_hu")
        if self.uses_clean_data and reference_hu is None:
            raise InputError(f"{self.name} trains on {self.category}: fit needs reference_hu")
        y = check_sinograms(train_sinograms, geometry, "training sinograms")
        i0 = check_photons(photons)
        kwargs: dict[str, Any] = {}
        if self.uses_clean_data:
            ref = np.asarray(reference_hu, np.float32)
            ref = ref[None] if ref.ndim == 2 else ref
            if self.clean_data == "paired" and ref.shape != (y.shape[0], *geometry.image_shape):
                raise InputError(f"reference_hu of shape {ref.shape} does not pair with sinograms {y.shape}")
            if ref.ndim != 3 or ref.shape[1:] != tuple(geometry.image_shape) or ref.shape[0] < 1:
                raise InputError(f"reference_hu of shape {ref.shape} is not a stack of "
                                 f"{geometry.image_shape[0]}x{geometry.image_shape[1]} images")
            if not np.isfinite(ref).all():
                raise InputError("reference_hu holds NaN or inf")
            kwargs["reference_hu"] = ref
        state = self._fit(y, geometry, photons=i0, preset=preset, seed=int(seed), device=device,
                          run_dir=run_dir, progress=progress, options=options, **kwargs)
        state.info.setdefault("train_photons", i0)
        state.info.setdefault("geometry", json.loads(geometry.to_json()))
        state.info.setdefault("preset", preset)
        state.info.setdefault("train_slices", int(y.shape[0]))
        state.info.setdefault("uses_clean_data", self.uses_clean_data)
        state.info.setdefault("clean_data", self.clean_data)
        return state

    @abstractmethod
    def _fit(self, sinograms: np.ndarray, geometry: Geometry, *, photons: float, preset: str, seed: int,
             device: str, run_dir: str | Path | None, progress: bool, options: Mapping[str, Any] | None,
             **kwargs: Any) -> FittedBaseline:
        """Fit on validated inputs."""

    @abstractmethod
    def reconstruct(self, state: FittedBaseline, sinograms: np.ndarray, geometry: Geometry, *, photons: float,
                    progress: bool = False) -> np.ndarray:
        """HU images ``[N, H, W]`` of noisy sinograms ``[N, V, D]`` at ``I0 = photons``."""

    def from_pretrained(self, directory: str | Path, *, device: str = "cpu") -> FittedBaseline:
        """Load a state saved by :meth:`FittedBaseline.save` (must be this method's)."""
        state = FittedBaseline.from_pretrained(directory, device=device)
        if state.method != self.name:
            raise InputError(f"{directory} holds a {state.method} model, not {self.name}")
        return state

    def _check_state(self, state: FittedBaseline) -> None:
        if not isinstance(state, FittedBaseline) or state.method != self.name:
            got = getattr(state, "method", type(state).__name__)
            raise InputError(f"{self.name}.reconstruct needs a fitted {self.name} state, got {got}")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, trained={self.trained}, " \
               f"clean_data={self.clean_data!r})"
