"""Named HU windows ``(lo, hi)``: the one table for metrics, figures and image export.

``full`` and ``soft`` are the metric windows (SURFACE.md); ``abdomen`` and ``lung`` are
display windows for figures and PNG / DICOM export.
"""

from __future__ import annotations

__all__ = ["WINDOWS"]

WINDOWS: dict[str, tuple[float, float]] = {
    "full": (-1024.0, 3072.0),
    "soft": (-160.0, 240.0),
    "abdomen": (-100.0, 200.0),
    "lung": (-1350.0, 200.0),
}
