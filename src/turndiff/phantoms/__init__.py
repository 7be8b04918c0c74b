"""Procedural CT phantoms: the embedded default data of turndiff.

Axial slices of the upper abdomen or lower thorax with realistic HU values, organ
shapes, vessel trees, trabecular bone, band-limited tissue texture, small low-contrast
lesions and partial-volume edges (see docs/PHANTOMS.md). Benchmarks run on these, so
they are built to not favour piecewise-constant (TV-like) priors.

Examples
--------
>>> from turndiff.phantoms import make_phantoms, body_mask
>>> hu = make_phantoms(2, 64, seed=0)
>>> hu.shape, body_mask(hu).shape
((2, 64, 64), (2, 64, 64))
"""

from ._anatomy import Tissue
from .generator import (DEFAULT_FOV_MM, DEFAULT_SLICE_SPACING_MM, HU_RANGE, SYSTEM_PSF_PX, body_mask, make_phantom,
                        make_phantoms, make_volume)

__all__ = ["DEFAULT_FOV_MM", "DEFAULT_SLICE_SPACING_MM", "HU_RANGE", "SYSTEM_PSF_PX", "Tissue", "body_mask",
           "make_phantom", "make_phantoms", "make_volume"]
