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

from .filters import FILTERS, filter_sinogram, ramp_spectrum
from .projector import Backend, CTProjector
from .analytic import TEST_ELLIPSES, ellipse_image, ellipse_sinogram

__all__ += ["FILTERS", "filter_sinogram", "ramp_spectrum", "Backend", "CTProjector", "TEST_ELLIPSES", "ellipse_image", "ellipse_sinogram"]
