"""Comparison methods for the benchmark, each through the same data path.

Classical methods are plain functions (:func:`fbp_reconstruct`, :func:`tv_reconstruct`,
:func:`bm3d_denoise`); learned ones are objectives for the shared training loop
(:mod:`turndiff.baselines.objectives`). All are registered in :data:`BASELINES` behind
one interface::

    from turndiff.baselines import BASELINES
    b = BASELINES["Noise2Inverse"]
    state = b.fit(train_sinograms, geometry, photons=2.5e4, preset="fast", seed=0)
    hu = b.reconstruct(state, test_sinograms, geometry, photons=2.5e4)
    state.save_pretrained("models/n2i"); state = b.from_pretrained("models/n2i")

Self-supervised methods get the noisy sinograms and their dose only; ``fit`` refuses
``reference_hu`` for every method but the supervised upper bound
(``BASELINES["RED-CNN (supervised)"].uses_clean_data is True``). Methods, losses,
hyper-parameters and simplifications: ``docs/BASELINES.md``.

Examples
--------
>>> import numpy as np
>>> from turndiff.baselines import BASELINES
>>> from turndiff.physics import default_fan_geometry
>>> g = default_fan_geometry(32)
>>> y = np.zeros((1, *g.sinogram_shape), np.float32)
>>> b = BASELINES["FBP"]
>>> b.reconstruct(b.fit(y, g, photons=2.5e4), y, g, photons=2.5e4).shape
(1, 32, 32)
"""

from .base import BASELINES, PRESETS, Baseline, FittedBaseline, get_baseline, register
from .classical import (
    BM3DBaseline,
    FBPBaseline,
    TVBaseline,
    bm3d_denoise,
    choose_tv_weight,
    fbp_reconstruct,
    tv_reconstruct,
    tv_weight_for_dose,
)
from .learned import (
    Blind2UnblindBaseline,
    LearnedBaseline,
    Neighbor2NeighborBaseline,
    Noise2InverseBaseline,
    Noise2SimBaseline,
    Noisier2NoiseBaseline,
    REDCNNBaseline,
    PromptSIDBaseline,
    IPDMBaseline,
)
from .nets import REDCNN

__all__ = [
    "BASELINES",
    "PRESETS",
    "Baseline",
    "FittedBaseline",
    "get_baseline",
    "register",
    "fbp_reconstruct",
    "tv_reconstruct",
    "tv_weight_for_dose",
    "choose_tv_weight",
    "bm3d_denoise",
    "FBPBaseline",
    "TVBaseline",
    "BM3DBaseline",
    "LearnedBaseline",
    "Neighbor2NeighborBaseline",
    "Blind2UnblindBaseline",
    "Noisier2NoiseBaseline",
    "Noise2SimBaseline",
    "Noise2InverseBaseline",
    "REDCNNBaseline",
    "PromptSIDBaseline",
    "IPDMBaseline",
    "REDCNN",
]
