"""Scanner geometries: pure, frozen descriptions in physical units (mm).

A geometry says where the source, the detector and the image grid are; it owns no
maths. Projectors (:mod:`turndiff.physics.projector`) are built from it.

Coordinate conventions (shared by every backend):

* Image ``[H, W]`` with ``H == W == image_size``; pixel ``(i, j)`` (row, column) has
  centre ``x = (j - (W - 1) / 2) * pixel_spacing``, ``y = ((H - 1) / 2 - i) * pixel_spacing``
  (``y`` points up, row 0 is the top of the image, as in a DICOM display).
* View ``k`` of ``V`` has angle ``beta_k = angle_offset + 2 * pi * k / V`` (360 degrees).
* Parallel beam: rays run along ``r = (cos b, sin b)``; detector coordinate ``t`` runs
  along ``u = (-sin b, cos b)``; bin ``j`` sits at ``t_j = (j - (D - 1) / 2 + det_offset) * det_spacing``.
  ``p(b, t) = integral of f(t u + s r) ds``.
* Fan beam: the source sits at ``src_radius * (cos b, sin b)``; the detector faces it
  through the isocentre at distance ``src_det_distance`` from the source. A ``flat``
  detector has bins at ``t_j`` (same formula, mm on the detector) along ``u``; an ``arc``
  detector (centred on the source) has bins at fan angles ``gamma_j = t_j / src_det_distance``
  (radians, ``det_spacing`` is the arc length per bin), positive towards ``u``.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

__all__ = [
    "MU_WATER",
    "ParallelBeamGeometry",
    "FanBeamGeometry",
    "Geometry",
    "default_fan_geometry",
    "default_parallel_geometry",
    "geometry_from_dict",
    "geometry_from_json",
]

#: Linear attenuation of water at about 70 keV, per mm.
MU_WATER: float = 0.0192


def _check_positive(name: str, value: float) -> None:
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
        raise ValueError(f"geometry: {name} must be a positive finite number, got {value!r}")


@dataclass(frozen=True)
class _BaseGeometry:
    image_size: int
    pixel_spacing: float
    views: int
    det_count: int
    det_spacing: float
    angle_offset: float = 0.0
    det_offset: float = 0.0
    mu_water: float = MU_WATER

    def __post_init__(self) -> None:
        for name in ("image_size", "views", "det_count"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 2:
                raise ValueError(f"geometry: {name} must be an integer >= 2, got {v!r}")
        for name in ("pixel_spacing", "det_spacing", "mu_water"):
            _check_positive(name, getattr(self, name))

    # -- shapes -----------------------------------------------------------------------
    @property
    def image_shape(self) -> tuple[int, int]:
        """``(H, W)`` of the image grid."""
        return (self.image_size, self.image_size)

    @property
    def sinogram_shape(self) -> tuple[int, int]:
        """``(V, D)``: views by detector bins."""
        return (self.views, self.det_count)

    @property
    def fov_radius(self) -> float:
        """Radius (mm) of the circle every view sees: where reconstructions are valid."""
        raise NotImplementedError

    # -- serialisation ------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["type"] = self.kind
        return d

    def to_json(self) -> str:
        """Sorted JSON string (the ``geometry`` attribute of turndiff HDF5 files)."""
        return json.dumps(self.to_dict(), sort_keys=True)

    def with_(self, **changes: Any) -> "Geometry":
        """A copy with some fields changed (geometries are immutable)."""
        return replace(self, **changes)  # type: ignore[return-value]


@dataclass(frozen=True)
class ParallelBeamGeometry(_BaseGeometry):
    """2D parallel-beam geometry over 360 degrees; ``det_spacing`` in mm at the isocentre."""

    kind: Literal["parallel"] = field(default="parallel", init=False)

    @property
    def fov_radius(self) -> float:
        half = (self.det_count - 1) / 2 * self.det_spacing - abs(self.det_offset) * self.det_spacing
        return half


@dataclass(frozen=True)
class FanBeamGeometry(_BaseGeometry):
    """2D fan-beam geometry over 360 degrees with a ``flat`` or ``arc`` detector.

    ``src_radius`` is source-to-isocentre, ``src_det_distance`` source-to-detector (mm).
    ``det_spacing`` is mm on the detector (arc length per bin for an ``arc`` detector).
    """

    src_radius: float = 595.0
    src_det_distance: float = 1085.6
    det_shape: Literal["flat", "arc"] = "arc"
    kind: Literal["fan"] = field(default="fan", init=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_positive("src_radius", self.src_radius)
        _check_positive("src_det_distance", self.src_det_distance)
        if self.src_det_distance <= self.src_radius:
            raise ValueError("geometry: src_det_distance must exceed src_radius")
        if self.det_shape not in ("flat", "arc"):
            raise ValueError(f"geometry: det_shape must be 'flat' or 'arc', got {self.det_shape!r}")
        if self.image_size * self.pixel_spacing * math.sqrt(2) / 2 >= self.src_radius:
            raise ValueError("geometry: the image grid reaches the source; increase src_radius")

    @property
    def magnification(self) -> float:
        return self.src_det_distance / self.src_radius

    @property
    def fov_radius(self) -> float:
        half = ((self.det_count - 1) / 2 - abs(self.det_offset)) * self.det_spacing
        if self.det_shape == "arc":
            gamma = half / self.src_det_distance
        else:
            gamma = math.atan(half / self.src_det_distance)
        return self.src_radius * math.sin(min(gamma, math.pi / 2))


Geometry = ParallelBeamGeometry | FanBeamGeometry


def _default_counts(image_size: int) -> tuple[int, int]:
    """Default views and bins (multiples of 4).

    Bins: 736 per 512 columns (one bin per pixel at the isocentre, covering the
    diagonal). Views: 1152 per rotation at 512 (a common clinical count, close to the
    angular sampling criterion ``pi / 2 * bins``), and never fewer than 720: with fewer,
    view aliasing leaves streaks that put the median FBP error of the textured phantoms
    above 10 HU (20 HU at 360 views for 256 x 256; 7 HU at 720; docs/BENCHMARKS.md).
    """
    views = max(720, int(round(1152 * image_size / 512 / 4)) * 4)
    bins = max(8, int(round(736 * image_size / 512 / 4)) * 4)
    return views, bins


def default_fan_geometry(
    image_size: int,
    pixel_spacing: float | None = None,
    *,
    views: int | None = None,
    det_count: int | None = None,
    det_shape: Literal["flat", "arc"] = "arc",
    src_radius: float = 595.0,
    src_det_distance: float = 1085.6,
) -> FanBeamGeometry:
    """A clinical-like fan-beam geometry for an ``image_size``-square grid.

    Source and detector distances follow a common third-generation scanner (595 mm and
    1085.6 mm). The detector is sampled so that one bin, seen at the isocentre, is one
    pixel wide, and has about 1.44 bins per image column so the fan covers the image
    diagonal; 1152 views per rotation at 512 columns (at least 720). ``pixel_spacing`` defaults to a 384 mm
    field of view.

    Examples
    --------
    >>> g = default_fan_geometry(512, 0.75)
    >>> g.views, g.det_count
    (1152, 736)
    """
    if pixel_spacing is None:
        pixel_spacing = 384.0 / image_size
    v, d = _default_counts(image_size)
    mag = src_det_distance / src_radius
    return FanBeamGeometry(
        image_size=image_size,
        pixel_spacing=float(pixel_spacing),
        views=views or v,
        det_count=det_count or d,
        det_spacing=float(pixel_spacing) * mag,
        src_radius=src_radius,
        src_det_distance=src_det_distance,
        det_shape=det_shape,
    )


def default_parallel_geometry(
    image_size: int,
    pixel_spacing: float | None = None,
    *,
    views: int | None = None,
    det_count: int | None = None,
) -> ParallelBeamGeometry:
    """A parallel-beam geometry with one bin per pixel and bins covering the diagonal."""
    if pixel_spacing is None:
        pixel_spacing = 384.0 / image_size
    v, d = _default_counts(image_size)
    return ParallelBeamGeometry(
        image_size=image_size,
        pixel_spacing=float(pixel_spacing),
        views=views or v,
        det_count=det_count or d,
        det_spacing=float(pixel_spacing),
    )


def geometry_from_dict(d: dict[str, Any]) -> Geometry:
    """Inverse of ``Geometry.to_dict``; raises ``ValueError`` naming what is wrong."""
    d = dict(d)
    kind = d.pop("type", d.pop("kind", None))
    d.pop("kind", None)
    cls = {"parallel": ParallelBeamGeometry, "fan": FanBeamGeometry}.get(kind)  # type: ignore[arg-type]
    if cls is None:
        raise ValueError(f"geometry: unknown type {kind!r} (expected 'parallel' or 'fan')")
    allowed = set(cls.__dataclass_fields__) - {"kind"}
    unknown = set(d) - allowed
    if unknown:
        raise ValueError(f"geometry: unknown field(s) {sorted(unknown)}")
    try:
        return cls(**d)
    except TypeError as e:
        raise ValueError(f"geometry: {e}") from None


def geometry_from_json(text: str) -> Geometry:
    """Parse the JSON written by ``Geometry.to_json``."""
    try:
        d = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"geometry: not valid JSON ({e.msg})") from None
    if not isinstance(d, dict):
        raise ValueError("geometry: JSON must be an object")
    return geometry_from_dict(d)
