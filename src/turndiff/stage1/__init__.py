"""Stage 1 of TurnDiff: CSSS, the self-supervised projection-domain denoiser."""

from .model import ProjectionDenoiser, Stage1Config, train_projection_denoiser
from .objective import CSSSObjective
from .similarity import SimilarityConfig, estimate_photons, noise_variance, similarity_map
from .subsample import draw_cell_positions, subsample
from .sure import sure_mse

__all__ = [
    "CSSSObjective",
    "ProjectionDenoiser",
    "SimilarityConfig",
    "Stage1Config",
    "draw_cell_positions",
    "estimate_photons",
    "noise_variance",
    "similarity_map",
    "subsample",
    "sure_mse",
    "train_projection_denoiser",
]
