"""CT physics: scanner geometries, projectors (FP, adjoint, FBP) and filters."""

from .geometry import (
    MU_WATER,
    FanBeamGeometry,
    Geometry,
    ParallelBeamGeometry,
    default_fan_geometry,
    default_parallel_geometry,
    geometry_from_dict,
    geometry_from_json,
)

__all__ = [
    "MU_WATER",
    "FanBeamGeometry",
    "Geometry",
    "ParallelBeamGeometry",
    "default_fan_geometry",
    "default_parallel_geometry",
    "geometry_from_dict",
    "geometry_from_json",
]
