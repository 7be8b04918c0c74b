"""Issue 16: a study reconstructed a batch of slices at a time is the study reconstructed
at once, and an interrupted run resumes where it stopped."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from turndiff.dose import simulate_scan
from turndiff.errors import InputError
from turndiff.io import write_h5
from turndiff.phantoms import make_phantoms
from turndiff.physics import default_fan_geometry
from turndiff.pipeline import fit
from turndiff.streaming import finish_h5, reconstruct_study

SIZE = 32


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """A 5-slice scan and a tiny model trained on two of its slices."""
    d = tmp_path_factory.mktemp("study")
    g = default_fan_geometry(SIZE)
    sino, _ = simulate_scan(make_phantoms(5, SIZE, seed=11), g, photons=2.5e4, seed=3)
    write_h5(d / "scan.h5", {"sinogram": sino}, geometry_json=g.to_json(), photons=2.5e4)
    pipe = fit(sino[:2], geometry=g, photons=2.5e4, preset="tiny", device="cpu", progress=False)
    return d / "scan.h5", sino, pipe


def _same_up_to_consistency(a: np.ndarray, b: np.ndarray) -> None:
    """Everything before the data-consistency step agrees across batchings to float
    summation order (about 1e-4 HU); the step's 8 circulant-preconditioned CG iterations
    amplify a perturbation of its prior only a few times (1e-3 HU in, 4e-3 HU out), so
    the images agree to 5e-4 HU on this machine. The bound leaves 100x for other CPUs'
    kernels; the 20 diagonal iterations before session 17 amplified 100x and broke it
    (docs/METHOD.md, "Batching")."""
    diff = np.abs(np.asarray(a) - np.asarray(b))
    assert float(diff.max()) < 0.05 and float(diff.mean()) < 5e-3, (float(diff.max()), float(diff.mean()))


def _image(path) -> np.ndarray:
    with h5py.File(path) as f:
        assert "done" not in f  # bookkeeping of the run folder is not part of the output
        return f["image_hu"][()]


@pytest.mark.parametrize("calibrate", [None, True])
def test_batches_give_the_one_call_result(study, tmp_path, calibrate):
    """Same dose estimate, same sampler seeds and calibration probes per slice: batches of
    2 (2 + 2 + 1) give what one call on all five slices gives."""
    scan, sino, pipe = study
    out = tmp_path / "r.h5"
    res = reconstruct_study(pipe, scan, finish_h5(out), out=out, batch=2, seed=4, calibrate=calibrate,
                            progress=False)
    assert res.slices == 5 and res.computed == 5
    whole = pipe(sino, seed=4, calibrate=calibrate, progress=False)
    assert (res.calibration is not None) == (whole.calibration is not None)
    _same_up_to_consistency(_image(out), whole.image_hu)
    assert not (tmp_path / "r.h5.run").exists()  # the run folder is gone once the output is whole


def test_an_interrupted_run_resumes_where_it_stopped(study, tmp_path, monkeypatch):
    scan, sino, pipe = study
    ref = tmp_path / "ref.h5"
    reconstruct_study(pipe, scan, finish_h5(ref), out=ref, batch=2, progress=False)
    out = tmp_path / "r.h5"
    calls = []
    original = type(pipe).__call__

    def interrupted(self, *a, **k):
        if len(calls) == 1:
            raise KeyboardInterrupt  # Ctrl-C during the second batch
        calls.append(1)
        return original(self, *a, **k)

    monkeypatch.setattr(type(pipe), "__call__", interrupted)
    with pytest.raises(KeyboardInterrupt):
        reconstruct_study(pipe, scan, finish_h5(out), out=out, batch=2, progress=False)
    monkeypatch.setattr(type(pipe), "__call__", original)
    assert not out.exists() and (tmp_path / "r.h5.run").is_dir()  # no output until it is whole
    res = reconstruct_study(pipe, scan, finish_h5(out), out=out, batch=2, progress=False)
    assert res.computed == 3  # the first batch of two was not redone
    np.testing.assert_allclose(_image(out), _image(ref), atol=1e-4)
    # Another setting into the same interrupted run folder is refused, not mixed in.
    (tmp_path / "x.h5.run").mkdir()
    from turndiff.io import SinogramReader, claim_run_dir

    with SinogramReader(scan) as r:
        claim_run_dir(tmp_path / "x.h5.run", r, {"command": "reconstruct", "seed": 99})
    with pytest.raises(InputError, match="other data or settings"):
        reconstruct_study(pipe, scan, finish_h5(tmp_path / "x.h5"), out=tmp_path / "x.h5", progress=False)


def test_reconstruct_all_mirrors_the_tree_and_reports_each_scan(study, tmp_path):
    """Issue 16: a cohort with one model. Two good scans in a tree and one bad: the good
    ones are reconstructed into the mirrored tree, the bad one is refused with its reason
    without stopping the others, summary.csv says so, and the exit is non-zero; a rerun
    skips what exists."""
    import csv
    import shutil

    from turndiff.cli import main

    scan, sino, pipe = study
    model = tmp_path / "model"
    pipe.save_pretrained(model)
    cohort = tmp_path / "cohort"
    (cohort / "a").mkdir(parents=True)
    (cohort / "b" / "c").mkdir(parents=True)
    shutil.copy(scan, cohort / "a" / "p1.h5")
    shutil.copy(scan, cohort / "b" / "c" / "p2.h5")
    g = default_fan_geometry(SIZE + 8)  # another scanner: refused by the model
    write_h5(cohort / "b" / "bad.h5", {"sinogram": np.zeros((1, *g.sinogram_shape), np.float32)},
             geometry_json=g.to_json())
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as e:
        main(["reconstruct-all", str(model), str(cohort), "--out", str(out), "--format", "nii", "--steps", "2"])
    assert e.value.code == 1
    assert (out / "a" / "p1.nii.gz").is_file() and (out / "b" / "c" / "p2.nii.gz").is_file()
    with open(out / "summary.csv") as fh:
        rows = {r["input"].split("cohort/")[1]: r for r in csv.DictReader(fh)}
    assert rows["a/p1.h5"]["status"] == rows["b/c/p2.h5"]["status"] == "done"
    assert rows["b/bad.h5"]["status"] == "refused" and "trained on" in rows["b/bad.h5"]["detail"]
    (cohort / "b" / "bad.h5").unlink()
    with pytest.raises(SystemExit) as e:
        main(["reconstruct-all", str(model), str(cohort), "--out", str(out), "--format", "nii", "--steps", "2"])
    assert e.value.code == 0
    with open(out / "summary.csv") as fh:
        assert {r["status"] for r in csv.DictReader(fh)} == {"skipped"}


@pytest.mark.parametrize("restore,consistency", [(True, True), (False, False)])
def test_intermediates_follow_the_detail_restoration(study, tmp_path, restore, consistency):
    """`--save-intermediates` stores `x_fused` (the image before the restoration) and
    `x_restored` (before the data consistency) when those steps run, and not without them."""
    scan, sino, pipe = study
    out = tmp_path / "i.h5"
    reconstruct_study(pipe, scan, finish_h5(out), out=out, batch=2, save_intermediates=True, restore=restore,
                      consistency=consistency, progress=False)
    whole = pipe(sino, restore=restore, consistency=consistency, progress=False)
    with h5py.File(out) as f:
        assert ("x_fused" in f) == restore and ("x_restored" in f) == consistency
        _same_up_to_consistency(f["image_hu"][()], whole.image_hu)
        if restore:
            np.testing.assert_allclose(f["x_fused"][()], whole.x_fused, atol=1e-3)
            np.testing.assert_allclose(f["x_restored"][()], whole.x_restored, atol=1e-3)


def test_uncertainty_map_is_written_beside_the_image(study, tmp_path):
    """`--uncertainty`: an `uncertainty_hu` dataset in an .h5 output (the map of the one-call
    output, batch by batch), a sibling OUT_uncertainty file for NIfTI; an existing sibling
    is refused before any work."""
    import subprocess
    import sys

    scan, sino, pipe = study
    out = tmp_path / "u.h5"
    reconstruct_study(pipe, scan, finish_h5(out), out=out, batch=2, uncertainty=True, progress=False)
    with h5py.File(out) as f:
        u = f["uncertainty_hu"][()]
    whole = pipe(sino, progress=False)
    # The map reads the output image, which depends on the batch only at the round-off
    # level (see _same_up_to_consistency): 1e-5 relative on this machine.
    ref_u = whole.uncertainty()
    np.testing.assert_allclose(u, ref_u, rtol=1e-3, atol=1e-3)
    assert np.median(np.abs(u - ref_u) / ref_u) < 1e-4
    assert u.shape == whole.image_hu.shape and (u > 0).all() and np.isfinite(u).all()
    model = tmp_path / "model"
    pipe.save_pretrained(model)
    cmd = [sys.executable, "-m", "turndiff", "reconstruct", str(model), str(scan), "--out", str(tmp_path / "r.nii.gz"),
           "--uncertainty", "--device", "cpu"]
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "r_uncertainty.nii.gz").is_file()
    (tmp_path / "r.nii.gz").unlink()
    r = subprocess.run(cmd, capture_output=True, text=True)  # the sibling exists: refused, nothing written
    assert r.returncode == 2 and "r_uncertainty.nii.gz" in r.stderr and not (tmp_path / "r.nii.gz").exists()


def test_uncertainty_map_tracks_the_error():
    """The map is larger where the error is: on a textured phantom its rank correlation with
    the absolute error of a noisy image is clearly positive (the noise feature alone)."""
    from scipy import stats

    from turndiff.inference.uncertainty import uncertainty_map
    from turndiff.masks import body_mask

    ref = make_phantoms(2, 64, seed=3)
    rng = np.random.default_rng(0)
    noise_level = np.where(np.arange(64)[None, :, None] < 32, 5.0, 40.0)  # quiet top, noisy bottom
    x = ref + rng.normal(0, 1, ref.shape) * noise_level
    x_ld = x + rng.normal(0, 1, ref.shape) * noise_level * 2  # the noisier input the method removed
    u = uncertainty_map(x, x_ld, x, None)
    m = body_mask(ref)
    assert stats.spearmanr(u[m], np.abs(x - ref)[m])[0] > 0.3


def test_the_output_map_uses_the_data_consistency_step():
    """With ``x_before`` (the image before the data-consistency step) the map of the output
    uses the output's own coefficients, whose weight sits on that step's posterior bound:
    where the projections pin a pixel down less, the map is larger. Without ``x_before`` the
    prior's coefficients apply and the step's features are zero."""
    from turndiff.inference.uncertainty import (PRIOR_UNCERTAINTY_COEF, UNCERTAINTY_COEF, uncertainty_features,
                                                uncertainty_map)

    ref = make_phantoms(1, 64, seed=4)
    rng = np.random.default_rng(1)
    x_ld = ref + rng.normal(0, 30, ref.shape)
    before = ref + rng.normal(0, 3, ref.shape)
    x = before.copy()
    x[:, 20:30, 20:30] += 60.0  # the step moved this block
    post = np.full(ref.shape, 5.0)
    post[:, 32:, :] = 40.0  # the data pin the bottom half down less
    f = uncertainty_features(x, x_ld, ref, None, before, post)
    assert f["consistency"][:, 25, 25].min() == pytest.approx(60.0) and f["consistency"][:, 5, 5].max() < 1e-9
    none = uncertainty_features(x, x_ld, ref, None)
    assert not none["consistency"].any() and not none["posterior"].any()
    assert UNCERTAINTY_COEF["posterior"] > 0.5  # fitted on validation: the step's bound carries the map
    assert all(PRIOR_UNCERTAINTY_COEF[k] == 0 for k in ("consistency", "consistency_mean", "posterior"))
    u = uncertainty_map(x, x_ld, ref, None, x_before=before, posterior_std=post)
    assert np.median(u[:, 40:, :]) > 2 * np.median(u[:, :12, :])
    np.testing.assert_allclose(uncertainty_map(x, x_ld, ref, None),
                               uncertainty_map(x, x_ld, ref, None, coef=PRIOR_UNCERTAINTY_COEF))
