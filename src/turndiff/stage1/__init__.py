"""Stage 1 of TurnDiff: the self-supervised projection-domain denoiser (recorrupted pairs
by default; the paper's CSSS sub-sampled pairs as an option)."""

from .model import AUGMENTS, SYMMETRIES, CalibratedDenoising, ProjectionDenoiser, Stage1Config, train_projection_denoiser
from .objective import CSSSObjective, RecorruptedObjective, SureObjective, ramp_weighted_mean_square
from .similarity import SimilarityConfig, similarity_map
from .subsample import draw_cell_positions, subsample
from .sure import sure_calibrate, sure_mse

__all__ = [
    "AUGMENTS",
    "CalibratedDenoising",
    "SYMMETRIES",
    "CSSSObjective",
    "ProjectionDenoiser",
    "RecorruptedObjective",
    "SureObjective",
    "SimilarityConfig",
    "Stage1Config",
    "draw_cell_positions",
    "ramp_weighted_mean_square",
    "similarity_map",
    "subsample",
    "sure_calibrate",
    "sure_mse",
    "train_projection_denoiser",
]
