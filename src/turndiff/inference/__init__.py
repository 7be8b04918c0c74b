"""Inference: tunable dose strategy (incl. ``auto``) and pixel-level fusion."""

from .fusion import FusionConfig, edge_confidence, fusion_weight, global_fusion, noise_map, pixel_fusion
from .strategy import Strategy, StrategyChoice, blend, choose_strategy

__all__ = [
    "FusionConfig",
    "Strategy",
    "StrategyChoice",
    "blend",
    "choose_strategy",
    "edge_confidence",
    "fusion_weight",
    "global_fusion",
    "noise_map",
    "pixel_fusion",
]
