"""turndiff HDF5 files: one stack of slices per file (layout in SURFACE.md).

Datasets (all float32, ``N`` slices first):

* ``sinogram``       ``[N, V, D]`` noisy post-log projections
* ``clean_sinogram`` ``[N, V, D]`` noiseless projections (simulation only)
* ``reference_hu``   ``[N, H, W]`` ground-truth image in HU (simulation only)
* ``image_hu``       ``[N, H, W]`` a reconstruction in HU (plus optional intermediates
  ``x_ld``, ``x_prior``, ``x_diffusion``, ``fusion_weight``)

Attributes: ``geometry`` (JSON string, mm), ``photons`` (I0, float), ``source`` (str).

Training code reads through :func:`read_sinogram_h5`, which opens ``sinogram`` and the
attributes only, so it cannot see ``clean_sinogram`` or ``reference_hu`` by accident.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from turndiff._checks import PLAUSIBLE_LINE_INTEGRAL
from turndiff.errors import InputError
from turndiff.io.atomic import atomic_output

__all__ = ["H5Data", "SinogramReader", "read_h5", "read_h5_dataset", "read_sinogram_h5", "spread_slices",
           "write_h5"]

SINOGRAM_KEYS = ("sinogram", "clean_sinogram")
IMAGE_KEYS = ("reference_hu", "image_hu", "x_ld", "x_prior", "x_diffusion", "fusion_weight", "x_fused")


@dataclass(eq=False, repr=False)
class H5Data:
    """The datasets and attributes read from one turndiff HDF5 file.

    Attributes
    ----------
    datasets : dict[str, numpy.ndarray]
        The datasets that were asked for (float data as float32).
    attrs : dict[str, Any]
        File attributes as plain Python values (``geometry`` stays a JSON string).
    available : tuple[str, ...]
        Names of every dataset in the file, read or not.
    """

    datasets: dict[str, np.ndarray]
    attrs: dict[str, Any] = field(default_factory=dict)
    available: tuple[str, ...] = ()

    def __getitem__(self, name: str) -> np.ndarray:
        return self.datasets[name]

    def __contains__(self, name: object) -> bool:
        return name in self.datasets

    @property
    def geometry_json(self) -> str | None:
        return self.attrs.get("geometry")

    @property
    def photons(self) -> float | None:
        p = self.attrs.get("photons")
        return None if p is None else float(p)

    @property
    def source(self) -> str | None:
        return self.attrs.get("source")

    def __repr__(self) -> str:
        shapes = ", ".join(f"{k}={tuple(v.shape)}" for k, v in self.datasets.items())
        return f"H5Data({shapes}; attrs={sorted(self.attrs)})"


def _open(path: str | os.PathLike[str]):  # -> h5py.File
    import h5py

    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: no such file")
    if p.is_dir():
        raise InputError(f"{p}: is a folder, expected an HDF5 file")
    try:
        ok = h5py.is_hdf5(p)
    except OSError as e:
        raise InputError(f"{p}: cannot read ({e})") from None
    if not ok:
        raise InputError(f"{p}: not an HDF5 file")
    try:
        return h5py.File(p, "r")
    except OSError as e:
        raise InputError(f"{p}: cannot open HDF5 file ({e})") from None


def _plain(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        if value.dtype.kind in "SO":
            return [_plain(v) for v in value.tolist()]
        return value.tolist()
    return value


def _read_attrs(f: Any) -> dict[str, Any]:
    return {k: _plain(v) for k, v in f.attrs.items()}


def _check_rank(arr: np.ndarray, name: str, where: str) -> np.ndarray:
    """Known datasets are stacks ``[N, ., .]``; a single 2-D slice becomes ``[1, ., .]``."""
    if name in SINOGRAM_KEYS or name in IMAGE_KEYS:
        if arr.ndim == 2:
            arr = arr[None]
        if arr.ndim != 3:
            layout = "[N, V, D]" if name in SINOGRAM_KEYS else "[N, H, W]"
            raise InputError(
                f"{where}: dataset '{name}' must be 3-D {layout}, got shape {tuple(arr.shape)}"
            )
        if 0 in arr.shape:
            raise InputError(f"{where}: dataset '{name}' is empty, shape {tuple(arr.shape)}")
    return arr


def _check_values(arr: np.ndarray, name: str, where: str) -> np.ndarray:
    if arr.dtype.kind == "f":
        arr = arr.astype(np.float32, copy=False)
        if not np.isfinite(arr).all():
            bad = int(arr.size - np.count_nonzero(np.isfinite(arr)))
            raise InputError(f"{where}: dataset '{name}' has {bad} NaN/inf value(s)")
    elif arr.dtype.kind not in "iub":
        raise InputError(f"{where}: dataset '{name}' is not numeric (dtype {arr.dtype})")
    return arr


def _read_dataset(f: Any, name: str, where: str) -> np.ndarray:
    import h5py

    if name not in f:
        have = ", ".join(sorted(k for k in f.keys())) or "none"
        raise InputError(f"{where}: no dataset '{name}' (datasets: {have})")
    obj = f[name]
    if not isinstance(obj, h5py.Dataset):
        raise InputError(f"{where}: '{name}' is a group, not a dataset")
    try:
        arr = np.asarray(obj[()])
    except (OSError, ValueError, TypeError) as e:
        raise InputError(f"{where}: cannot read dataset '{name}' ({e})") from None
    return _check_values(_check_rank(arr, name, where), name, where)


def _check_geometry(sino: np.ndarray, attrs: Mapping[str, Any], where: str) -> None:
    text = attrs.get("geometry")
    if text is None:
        return
    from turndiff.physics.geometry import geometry_from_json

    try:
        geom = geometry_from_json(str(text))
    except ValueError as e:
        raise InputError(f"{where}: bad 'geometry' attribute ({e})") from None
    if tuple(sino.shape[1:]) != tuple(geom.sinogram_shape):
        raise InputError(
            f"{where}: sinogram is [V, D] = {list(sino.shape[1:])} but the geometry "
            f"says {list(geom.sinogram_shape)}"
        )


def read_h5(path: str | os.PathLike[str], keys: Iterable[str] | None = None) -> H5Data:
    """Read datasets and attributes from a turndiff HDF5 file.

    Parameters
    ----------
    path : path-like
        The ``.h5`` file.
    keys : iterable of str, optional
        Datasets to read; default all. Pass ``[]`` for the attributes only.
        Training code should use :func:`read_sinogram_h5` instead.

    Returns
    -------
    H5Data
        Float datasets as float32; known stacks (``sinogram``, ``image_hu``, ...) as
        3-D ``[N, ., .]`` (a stored 2-D slice is promoted to ``[1, ., .]``).

    Raises
    ------
    InputError
        Missing file, not HDF5, a missing dataset, wrong rank, NaN/inf values.
    """
    where = str(path)
    with _open(path) as f:
        available = tuple(sorted(f.keys()))
        names = available if keys is None else tuple(keys)
        datasets = {name: _read_dataset(f, name, where) for name in names}
        attrs = _read_attrs(f)
    return H5Data(datasets=datasets, attrs=attrs, available=available)


def read_h5_dataset(path: str | os.PathLike[str], name: str) -> np.ndarray:
    """Read one dataset (float data as float32; known stacks as 3-D), validated.

    Raises ``InputError`` naming the file when it is missing, not HDF5, lacks ``name``,
    or the data has the wrong rank or NaN/inf values.
    """
    with _open(path) as f:
        return _read_dataset(f, name, str(path))


def spread_slices(n: int, k: int) -> np.ndarray:
    """``min(k, n)`` increasing slice indices spread evenly over ``0 .. n - 1`` (first and
    last included): which slices of a study to train on or to estimate its dose from."""
    if k >= n:
        return np.arange(n)
    return np.unique(np.round(np.linspace(0, n - 1, k)).astype(np.int64))


class SinogramReader:
    """The noisy ``sinogram`` of a turndiff ``.h5`` file, read a batch of slices at a time,
    so a whole study never has to fit in memory.

    Opening checks what can be checked without reading the data: the file, the dataset,
    its rank, the ``geometry`` attribute against ``(V, D)`` and the ``photons`` attribute.
    Each :meth:`read` checks the values it returns (finite, post-log line integrals).
    Nothing else in the file (``clean_sinogram``, ``reference_hu``) is ever read.

    Examples
    --------
    >>> with SinogramReader("scan.h5") as r:  # doctest: +SKIP
    ...     for a in range(0, len(r), 8):
    ...         batch = r.read(slice(a, a + 8))  # float32 [<= 8, V, D]
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        import h5py

        self.path = Path(path)
        self._where = str(path)
        self._file = _open(path)
        try:
            if "sinogram" not in self._file:
                have = ", ".join(sorted(self._file.keys())) or "none"
                raise InputError(f"{self._where}: no dataset 'sinogram' (datasets: {have})")
            ds = self._file["sinogram"]
            if not isinstance(ds, h5py.Dataset):
                raise InputError(f"{self._where}: 'sinogram' is a group, not a dataset")
            if ds.dtype.kind not in "fiub":
                raise InputError(f"{self._where}: dataset 'sinogram' is not numeric (dtype {ds.dtype})")
            shape = (1, *ds.shape) if ds.ndim == 2 else tuple(ds.shape)
            _check_rank(np.broadcast_to(np.float32(0), shape), "sinogram", self._where)  # shape only
            self._ds, self._flat = ds, ds.ndim == 2
            self.shape: tuple[int, int, int] = shape
            self.attrs: dict[str, Any] = _read_attrs(self._file)
            _check_geometry(np.broadcast_to(np.float32(0), shape), self.attrs, self._where)
            _check_photons(self.attrs, self._where)
        except BaseException:
            self._file.close()
            raise

    def __len__(self) -> int:
        return self.shape[0]

    def read(self, index: slice | Sequence[int] | np.ndarray = slice(None)) -> np.ndarray:
        """Slices ``index`` (a slice, or increasing indices) as float32 ``[k, V, D]``,
        validated."""
        try:
            arr = np.asarray(self._ds[()])[None][index] if self._flat else np.asarray(self._ds[index])
        except (OSError, ValueError, TypeError) as e:
            raise InputError(f"{self._where}: cannot read dataset 'sinogram' ({e})") from None
        arr = _check_values(arr, "sinogram", self._where)
        lo, hi = PLAUSIBLE_LINE_INTEGRAL
        if arr.size and (arr.min() < lo or arr.max() > hi):
            raise InputError(f"{self._where}: sinogram values from {arr.min():.3g} to {arr.max():.3g} are not "
                             f"post-log line integrals (expected within [{lo:g}, {hi:g}]; raw counts need "
                             "-log(I / I0))")
        return arr

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> "SinogramReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def read_sinogram_h5(
    path: str | os.PathLike[str], slices: slice | Sequence[int] | np.ndarray | None = None
) -> tuple[np.ndarray, dict[str, Any]]:
    """Read the noisy ``sinogram`` and the file attributes, nothing else.

    Parameters
    ----------
    path : path-like
        A turndiff ``.h5`` file.
    slices : slice or increasing indices, optional
        Read only these slices (e.g. ``fit --train-slices``); default all. For a study
        too large for memory, read it in batches with :class:`SinogramReader`.

    Returns
    -------
    sinogram : numpy.ndarray
        float32 ``[N, V, D]`` post-log projections (a stored ``[V, D]`` becomes
        ``[1, V, D]``).
    attrs : dict
        ``geometry`` (JSON string), ``photons``, ``source``, ... where present.

    Raises
    ------
    InputError
        Missing file, not HDF5, no ``sinogram``, wrong rank, NaN/inf values, a
        ``geometry`` attribute whose ``(views, det_count)`` disagrees with the data, or a
        ``photons`` attribute that is not a positive number.
    """
    with SinogramReader(path) as r:
        return r.read(slice(None) if slices is None else slices), r.attrs


def _check_photons(attrs: dict[str, Any], where: str) -> None:
    """The ``photons`` attribute, when present, must be a positive finite number: it sets
    the noise model of training and of the dose strategy (checked before any work)."""
    if "photons" not in attrs:
        return
    from turndiff.dose import check_photons  # here, not at the top: dose imports torch, io stays light

    attrs["photons"] = check_photons(attrs["photons"], f"{where}: attribute 'photons'")


def h5_attrs(where: str, *, geometry_json: Any = None, photons: float | None = None, source: str | None = None,
             extra_attrs: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The checked attributes of a turndiff HDF5 file (arguments as :func:`write_h5`'s)."""
    attrs: dict[str, Any] = {k: v for k, v in (extra_attrs or {}).items() if v is not None}
    if geometry_json is not None:
        text = geometry_json.to_json() if hasattr(geometry_json, "to_json") else str(geometry_json)
        try:
            json.loads(text)
        except json.JSONDecodeError as e:
            raise InputError(f"{where}: geometry is not valid JSON ({e.msg})") from None
        attrs["geometry"] = text
    if photons is not None:
        from turndiff.dose import check_photons  # dose imports torch; io stays light

        attrs["photons"] = check_photons(photons, f"{where}: photons (I0)")
    if source is not None:
        attrs["source"] = str(source)
    return attrs


def write_h5(
    path: str | os.PathLike[str],
    datasets: Mapping[str, Any],
    *,
    geometry_json: Any = None,
    photons: float | None = None,
    source: str | None = None,
    extra_attrs: Mapping[str, Any] | None = None,
) -> Path:
    """Write datasets and attributes to a new HDF5 file (atomically).

    Parameters
    ----------
    path : path-like
        Output ``.h5`` file; replaced if it exists.
    datasets : mapping of str to array
        E.g. ``{"sinogram": [N, V, D], "reference_hu": [N, H, W]}``. Float data is
        stored as float32; known stacks given as 2-D are stored as ``[1, ., .]``.
    geometry_json : str or Geometry, optional
        The scanner geometry (a JSON string, or any object with ``to_json()``).
    photons : float, optional
        I0, photons per detector bin before the object.
    source : str, optional
        What the data came from (a path, ``"phantom:4"``, ...).
    extra_attrs : mapping, optional
        More attributes (str, numbers or small numeric lists).

    Returns
    -------
    pathlib.Path
        ``path``.

    Raises
    ------
    InputError
        No datasets, wrong rank, NaN/inf values, invalid geometry JSON or photons.
    """
    import h5py

    where = str(path)
    if not datasets:
        raise InputError(f"{where}: nothing to write (no datasets)")
    arrays: dict[str, np.ndarray] = {}
    for name, value in datasets.items():
        arr = np.asarray(value)
        arrays[name] = _check_values(_check_rank(arr, name, where), name, where)

    attrs = h5_attrs(where, geometry_json=geometry_json, photons=photons, source=source, extra_attrs=extra_attrs)

    with atomic_output(path) as tmp:
        with h5py.File(tmp, "w") as f:
            for name, arr in arrays.items():
                # One chunk per slice: readers that take a few slices stay cheap.
                chunks = (1, *arr.shape[1:]) if arr.ndim == 3 and arr.shape[0] > 1 else None
                f.create_dataset(name, data=arr, chunks=chunks)
            for key, value in attrs.items():
                f.attrs[key] = value
    return Path(path)
