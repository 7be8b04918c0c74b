"""Inference: tunable dose strategy (incl. ``auto``) and pixel-level fusion."""

from .fusion import (LOWBAND_PX, FusionConfig, edge_confidence, fusion_weight, global_fusion, lowband_fusion, noise_map,
                     pixel_fusion)
from .strategy import AUTO_NOISE_FRACTION, Strategy, StrategyChoice, blend, choose_strategy

__all__ = [
    "AUTO_NOISE_FRACTION",
    "FusionConfig",
    "LOWBAND_PX",
    "Strategy",
    "StrategyChoice",
    "blend",
    "choose_strategy",
    "edge_confidence",
    "fusion_weight",
    "global_fusion",
    "lowband_fusion",
    "noise_map",
    "pixel_fusion",
]
