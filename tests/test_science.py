"""Slow end-to-end science checks: what would be wrong if the method broke.

Run with ``make test-slow`` (``pytest -m slow``); the default suite skips them.
"""

import numpy as np
import pytest

from turndiff.benchmark.data import make_bench_data
from turndiff.metrics import evaluate
from turndiff.pipeline import fit
from turndiff.stage2 import Stage2Config


@pytest.mark.slow
def test_turndiff_beats_fbp_on_its_own_test_data():
    """A short real fit (4 noisy 128 x 128 slices, no clean data) reconstructs unseen test
    slices at the training dose better than FBP in the soft window, and stage 1 alone
    already does. (The full window is not asserted: there this short fit is below FBP,
    39.77 against 40.03 dB, the open issue-13 defect of blurred high-contrast edges.)"""
    data = make_bench_data(size=128, n_train=4, n_test=2, test_doses=(0.25,), progress=False)
    cfg2 = Stage2Config.preset("fast").replace(autoencoder={"train": {"iters": 300}}, unet={"train": {"iters": 300}})
    pipe = fit(data.train_sinogram, geometry=data.geometry, photons=data.train_photons, preset="fast",
               device="cpu", progress=False, stage1_overrides={"iters": 800, "sure_every": 400},
               stage2_config=cfg2)
    sino, ref = data.test_sinograms[0.25], data.test_reference_hu
    out = pipe(sino, progress=False)
    fbp = pipe.projector.fbp_hu(sino)

    def psnr(x, window):
        return evaluate(x, ref, mask="body")[window]["psnr"]["mean"]

    assert psnr(out.x0, "soft") > psnr(fbp, "soft") + 1.0
    assert psnr(out.image_hu, "soft") > psnr(fbp, "soft") + 1.0
    assert np.isfinite(out.image_hu).all()
