"""End to end: fit on noisy sinograms only, save/load, reconstruct, CLI, benchmark (tiny)."""

import json

import h5py
import numpy as np
import pytest
import torch

from turndiff.benchmark.data import make_bench_data
from turndiff.pipeline import TurnDiffPipeline, fit


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    data = make_bench_data(size=64, n_train=2, n_test=2, test_doses=(0.25, 0.1), progress=False)
    pipe = fit(data.train_sinogram, geometry=data.geometry, photons=data.train_photons, preset="tiny",
               device="cpu", progress=False)
    d = tmp_path_factory.mktemp("model") / "model"
    pipe.save_pretrained(d)
    return data, pipe, d


def test_model_folder_is_safetensors_and_json(tiny_model):
    _, _, d = tiny_model
    files = {p.relative_to(d).as_posix() for p in d.rglob("*") if p.is_file()}
    assert "turndiff.json" in files and "projection_denoiser/model.safetensors" in files
    assert any(f.startswith("latent_diffusion/") and f.endswith(".safetensors") for f in files)
    assert all(f.endswith((".json", ".safetensors")) for f in files), files
    info = json.loads((d / "turndiff.json").read_text())
    assert info["photons_train"] == 2.5e4 and "geometry" in info


def test_reconstruct_is_seeded_and_reloadable(tiny_model):
    data, pipe, d = tiny_model
    sino = data.test_sinograms[0.1]
    a = pipe(sino, seed=1, progress=False)
    assert a.image_hu.shape == (2, 64, 64) and np.isfinite(a.image_hu).all()
    # 10% < 25%: auto leans on x0 (w = 0.2 / r < 0.5: the down-dose form)
    assert a.strategy.strategy == "down" and 0.5 < a.strategy.lam < 1
    assert a.fusion_weight.min() >= 0 and a.fusion_weight.max() <= 1
    b = TurnDiffPipeline.from_pretrained(d, device="cpu")(sino, seed=1, progress=False)
    np.testing.assert_allclose(a.image_hu, b.image_hu, atol=1e-3)
    g = pipe(sino, fusion="global", fusion_lam=1.0, progress=False, seed=1)
    np.testing.assert_allclose(g.x_fused, a.x_diffusion, atol=1e-4)
    # Without the detail restoration and the data consistency the output is the fused image
    # itself; without the data consistency alone, the restored image.
    plain = pipe(sino, seed=1, restore=False, consistency=False, progress=False)
    np.testing.assert_allclose(plain.image_hu, a.x_fused, atol=1e-4)
    restored = pipe(sino, seed=1, consistency=False, progress=False)
    np.testing.assert_allclose(restored.image_hu, a.x_restored, atol=1e-4)
    assert restored.x_restored is None and not np.allclose(a.image_hu, a.x_restored, atol=1.0)
    # The data-consistency prior's low band from x0 (on by default since session 33) acts in
    # that step only: the restored image is the same without it, the output is not. (This
    # tiny model's fusion keeps x0 almost everywhere, so the band moves the output little;
    # tests/test_consistency.py checks what the band does to a flattened lesion.)
    no_band = pipe(sino, seed=1, lowband=False, progress=False)
    np.testing.assert_allclose(no_band.x_restored, a.x_restored, atol=1e-4)
    assert np.abs(no_band.image_hu - a.image_hu).max() > 1e-2
    np.testing.assert_array_equal(pipe(sino, seed=1, lowband=True, progress=False).image_hu, a.image_hu)


def test_a_reused_projection_pass_gives_the_reconstruction_of_a_fresh_call(tiny_model):
    """``project`` then ``__call__(projection=...)`` is the one call split in two: the same
    image for every downstream setting, and stage 1 is not run again (its denoiser is
    broken for the second part, which would change x0 if it ran)."""
    from turndiff.errors import InputError

    data, pipe, _ = tiny_model
    sino = data.test_sinograms[0.25]
    fresh = {kw: pipe(sino, seed=2, progress=False, **dict(kw)) for kw in
             ((), (("strategy", "none"),), (("restore", False),))}
    proj = pipe.project(sino, progress=False)
    denoise = pipe.stage1.denoise
    try:
        pipe.stage1.denoise = lambda *a, **k: (_ for _ in ()).throw(AssertionError("stage 1 ran again"))
        for kw, ref in fresh.items():
            out = pipe(sino, seed=2, progress=False, projection=proj, **dict(kw))
            np.testing.assert_allclose(out.x0, ref.x0, atol=1e-4)
            np.testing.assert_allclose(out.image_hu, ref.image_hu, atol=0.05)
        # The diffusion's draw reused: what follows it is the fresh call's, and stage 2 does not run.
        sample = pipe.stage2.sample
        pipe.stage2.sample = lambda *a, **k: (_ for _ in ()).throw(AssertionError("stage 2 ran again"))
        out = pipe(sino, seed=2, progress=False, projection=proj, restore=False,
                   x_diffusion=fresh[()].x_diffusion)
        np.testing.assert_allclose(out.image_hu, fresh[(("restore", False),)].image_hu, atol=0.05)
        with pytest.raises(InputError, match="x_diffusion is"):
            pipe(sino, progress=False, projection=proj, x_diffusion=fresh[()].x_diffusion[:1])
    finally:
        pipe.stage1.denoise = denoise
        pipe.stage2.sample = sample
    with pytest.raises(InputError, match="projection pass has 2 slices"):
        pipe(sino[:1], progress=False, projection=proj)


def test_reconstruct_refuses_a_mismatched_sinogram(tiny_model):
    from turndiff.errors import InputError

    _, pipe, _ = tiny_model
    with pytest.raises(InputError, match="trained on"):
        pipe(np.zeros((1, 10, 10), np.float32))


def test_cli_reconstruct_with_intermediates(tiny_model, tmp_path):
    from turndiff.cli import main
    from turndiff.io import write_h5

    data, _, d = tiny_model
    scan = tmp_path / "scan.h5"
    write_h5(scan, {"sinogram": data.test_sinograms[0.25]}, geometry_json=data.geometry.to_json(), photons=2.5e4)
    with pytest.raises(SystemExit) as e:
        main(["reconstruct", str(d), str(scan), "--out", str(tmp_path / "r.h5"), "--save-intermediates"])
    assert e.value.code == 0
    with h5py.File(tmp_path / "r.h5") as f:
        for k in ("image_hu", "x_ld", "x_prior", "x_diffusion", "fusion_weight", "x_unpolished"):
            assert f[k].shape == (2, 64, 64), k
        polished, unpolished = f["image_hu"][()], f["x_unpolished"][()]
    # --polish 0: the unpolished image is the output; a negative weight is refused, no file left.
    with pytest.raises(SystemExit) as e:
        main(["reconstruct", str(d), str(scan), "--out", str(tmp_path / "p0.h5"), "--polish", "0"])
    assert e.value.code == 0
    with h5py.File(tmp_path / "p0.h5") as f:
        np.testing.assert_allclose(f["image_hu"][()], unpolished, atol=1e-3)
        assert np.abs(f["image_hu"][()] - polished).max() > 1.0
    with pytest.raises(SystemExit) as e:
        main(["reconstruct", str(d), str(scan), "--out", str(tmp_path / "bad.h5"), "--polish", "-1"])
    assert e.value.code == 2 and not (tmp_path / "bad.h5").exists()
    other = tmp_path / "other.h5"
    from turndiff.physics import default_fan_geometry

    g = default_fan_geometry(64, det_shape="flat")
    write_h5(other, {"sinogram": data.test_sinograms[0.25]}, geometry_json=g.to_json())
    with pytest.raises(SystemExit) as e:
        main(["reconstruct", str(d), str(other), "--out", str(tmp_path / "x.h5")])
    assert e.value.code == 2 and not (tmp_path / "x.h5").exists()


def test_benchmark_end_to_end_tiny(tmp_path):
    from turndiff.benchmark.runner import run_benchmark

    summary = run_benchmark(tmp_path / "bench", preset="tiny", methods=["FBP", "ablations"], device="cpu",
                            log=lambda m: None)
    q = summary["quality"]
    assert {"FBP", "TurnDiff", "x0 (only projection)", "x~0 (condition x_ld)"} <= set(q)
    # The inference ablations (on the default reconstruction's stage-1 pass) and the retrained stage 1s.
    assert {"no tunable strategy", "no detail restoration", "no SURE calibration", "x0, no SURE calibration",
            "no low band (--no-lowband)", "no polish (--polish 0)", "no data consistency",
            "stage 1: paper CSSS (2x2 cells)"} <= set(q)
    assert {"stage 1: no ramp weighting", "stage 1: CSSS view pairs", "no diffusion (x0 in place of x~0)"} <= set(q)
    psnr = {n: q[n]["0.25"]["soft"]["psnr"]["mean"] for n in q}
    assert psnr["no data consistency"] != psnr["TurnDiff"] and psnr["no low band (--no-lowband)"] != psnr["TurnDiff"]
    assert psnr["no polish (--polish 0)"] != psnr["TurnDiff"]
    soft = {n: {d: q[n][d]["soft"]["psnr"]["mean"] for d in ("0.25", "0.1")} for n in q}
    # More photons, less noise: FBP at 25% beats FBP at 10% (a broken dose model would not).
    assert soft["FBP"]["0.25"] > soft["FBP"]["0.1"] + 1.0
    # The tiny model's diffusion has had 3 steps of training and is far off; the
    # self-correcting fusion must reject it and stay with the prior, not average it in.
    assert soft["x~0 (diffusion, no fusion)"]["0.25"] < soft["x0 (only projection)"]["0.25"] - 3.0
    assert soft["TurnDiff"]["0.25"] > soft["x0 (only projection)"]["0.25"] - 0.2
    g = q["FBP"]["gradient_ratios"]
    assert g["flat"] > 1.0 and g["all"] == q["FBP"]["gradient_ratio"]  # FBP keeps its noise
    for f in ("report.html", "results.json", "tables.md", "fig6_methods_abdomen.png"):
        assert (tmp_path / "bench" / f).is_file(), f
    html = (tmp_path / "bench" / "report.html").read_text()
    assert "data:image/png;base64," in html and "TurnDiff" in html
    tables = (tmp_path / "bench" / "tables.md").read_text()
    assert "strongest 10% edges" in tables
    # TurnDiff against the best method without clean data, slice by slice (here FBP, the only one run).
    assert "| 25% | PSNR | FBP |" in tables and "slices won" in html
    # The machine-speed reference that makes wall times of two runs comparable is recorded.
    assert 0 < summary["machine_speed_s"] < 60
    assert "s a fast stage-1 forward at 720x368" in (tmp_path / "bench" / "tables.md").read_text()

    # Resumable: a rerun reuses each finished method's images (no refit, same scores)...
    import turndiff.benchmark.runner as runner

    lines = []
    again = run_benchmark(tmp_path / "bench", preset="tiny", methods=["FBP", "turndiff"], device="cpu",
                          log=lines.append)
    assert again["resumed_methods"] == ["FBP", "turndiff"] and not any("fit and reconstruct" in m for m in lines)
    for name in ("FBP", "TurnDiff", "x0 (only projection)"):
        assert again["quality"][name] == q[name], name
    assert again["cost"]["TurnDiff"]["train_seconds"] == summary["cost"]["TurnDiff"]["train_seconds"]
    # ...but never rows of other code or settings, and --restart starts again.
    runner_fp = runner.code_fingerprint
    try:
        runner.code_fingerprint = lambda: "other code"
        other = run_benchmark(tmp_path / "bench", preset="tiny", methods=["FBP"], device="cpu", log=lambda m: None)
    finally:
        runner.code_fingerprint = runner_fp
    assert other["resumed_methods"] == [] and other["quality"]["FBP"] == q["FBP"]
    fresh = run_benchmark(tmp_path / "bench", preset="tiny", methods=["FBP"], device="cpu", seed=0, restart=True,
                          log=lambda m: None)
    assert fresh["resumed_methods"] == [] and not (tmp_path / "bench" / "runs" / "turndiff").exists()

    # Another training seed on the same data (the spread over retraining): FBP, which
    # trains nothing, to the digit; TurnDiff trained again, from other initial weights.
    reseeded = run_benchmark(tmp_path / "bench7", preset="tiny", methods=["FBP", "turndiff"], device="cpu",
                             train_seed=7, log=lambda m: None)
    assert reseeded["seed"] == 0 and reseeded["train_seed"] == 7 and summary["train_seed"] == 0
    assert reseeded["quality"]["FBP"] == q["FBP"]
    assert reseeded["quality"]["x0 (only projection)"] != q["x0 (only projection)"]
    assert "training seed 7" in (tmp_path / "bench7" / "tables.md").read_text()

    # The validation split: the same trainings and noise on the validation phantoms, never
    # the test rows, and a report that says it is not a reported result.
    val = run_benchmark(tmp_path / "bench", preset="tiny", methods=["FBP"], device="cpu", split="validation",
                        log=lambda m: None)
    assert val["resumed_methods"] == [] and val["split"] == "validation" and fresh["split"] == "test"
    assert val["quality"]["FBP"]["0.25"] != q["FBP"]["0.25"]
    assert "Scored on **validation** phantoms" in (tmp_path / "bench" / "tables.md").read_text()
    with pytest.raises(ValueError, match="unknown split"):
        run_benchmark(tmp_path / "bench", preset="tiny", methods=["FBP"], split="train", log=lambda m: None)


def test_demo_command_tiny(tmp_path):
    from turndiff.cli import main

    with pytest.raises(SystemExit) as e:
        main(["demo", "--out", str(tmp_path / "demo"), "--size", "64", "--train-slices", "2", "--test-slices", "1",
              "--preset", "tiny"])
    assert e.value.code == 0
    for f in ("metrics.md", "metrics.json", "comparison_25pct.png", "comparison_10pct.png", "dose_generalisation.png",
              "volume_reformat.png"):
        assert (tmp_path / "demo" / f).is_file(), f
    table = json.loads((tmp_path / "demo" / "metrics.json").read_text())
    assert set(table) == {"25%", "10%", "50%", "volume"} and "TurnDiff" in table["10%"]
    assert set(table["volume"]["TurnDiff"]["through_plane"]) == {"dz_rmse", "dz_ratio", "banding"}


def test_auto_strategy_sets_the_condition_noise_to_a_fraction_of_training():
    from turndiff.inference import AUTO_NOISE_FRACTION, choose_strategy

    # same dose: w = kappa; 4x fewer photons: noise x2, w = kappa / 2; far more photons: w capped at 1
    same = choose_strategy("auto", None, photons_input=2.5e4, photons_train=2.5e4)
    assert same.weight_ld == pytest.approx(AUTO_NOISE_FRACTION) and same.strategy == "down"
    low = choose_strategy("auto", None, photons_input=2.5e4 / 4, photons_train=2.5e4)
    assert low.weight_ld == pytest.approx(AUTO_NOISE_FRACTION / 2) and low.noise_ratio == pytest.approx(2.0)
    high = choose_strategy("auto", None, photons_input=2.5e4 * 100, photons_train=2.5e4, kappa=0.5)
    assert high.strategy == "none" and high.weight_ld == 1.0
    mid = choose_strategy("auto", None, photons_input=2.5e4 * 4, photons_train=2.5e4, kappa=0.4)
    assert mid.strategy == "up" and mid.lam == pytest.approx(0.8)
    with pytest.raises(ValueError, match="kappa"):
        choose_strategy("auto", None, photons_input=1e4, photons_train=2.5e4, kappa=0.0)


def test_stage1_calibration_follows_the_input_dose(tiny_model):
    """SURE calibration runs on scans at least as clean as training (``calibrate=None``),
    not on much noisier ones, and ``calibrate=False`` gives the plain stage-1 prior."""
    data, pipe, _ = tiny_model
    same = pipe(data.test_sinograms[0.25], progress=False)
    low = pipe(data.test_sinograms[0.1], progress=False)
    off = pipe(data.test_sinograms[0.25], calibrate=False, progress=False)
    from turndiff.stage1.sure import CALIBRATION_BANDS, CALIBRATION_VIEW_BANDS

    assert same.calibration is not None and same.calibration.shape == (2, CALIBRATION_BANDS * CALIBRATION_VIEW_BANDS)
    assert ((same.calibration >= 0) & (same.calibration <= 1)).all()
    assert low.calibration is None and off.calibration is None
    assert not np.allclose(same.x0, off.x0)
    forced = pipe(data.test_sinograms[0.1], calibrate=True, progress=False)
    assert forced.calibration is not None
    # Stage 2 gets the uncalibrated stage-1 image it was trained on; the calibrated x0 is the output's.
    from turndiff.inference import blend
    from turndiff.pipeline import fbp_hu_on

    raw_x0 = fbp_hu_on(pipe.projector, pipe.project(data.test_sinograms[0.25], progress=False).denoised, pipe.device)
    np.testing.assert_allclose(same.x_prior, blend(same.x_ld, raw_x0, same.strategy), atol=1e-3)
    assert not np.allclose(same.x0, raw_x0, atol=1e-2)
    # The earlier layout on request: detector frequency alone, 8 weights, another x0.
    old_layout = pipe(data.test_sinograms[0.25], calibration_bands=(8, 1), progress=False)
    assert old_layout.calibration.shape == (2, 8) and not np.allclose(old_layout.x0, same.x0)
    # The low band from the uncalibrated x0 on request (session 35's rejected candidate):
    # exactly that band changes, so where the calibration did not run nothing changes.
    from turndiff.inference import LOWBAND_PX, lowband_fusion
    from turndiff.inference.consistency import data_consistency
    from turndiff.inference.uncertainty import PRIOR_UNCERTAINTY_COEF, uncertainty_map

    proj = pipe.project(data.test_sinograms[0.25], progress=False)
    kw = dict(seed=0, progress=False, projection=proj)
    cal = pipe(data.test_sinograms[0.25], **kw)
    uncal = pipe(data.test_sinograms[0.25], lowband_x0="uncalibrated", **kw)
    np.testing.assert_allclose(uncal.x_restored, cal.x_restored, atol=1e-4)
    mean = lowband_fusion(uncal.x_restored, raw_x0, LOWBAND_PX)
    std = uncertainty_map(mean, uncal.x_ld, uncal.x0, uncal.x_diffusion, coef=PRIOR_UNCERTAINTY_COEF)
    redo = data_consistency(mean, data.test_sinograms[0.25], pipe.projector, prior_std_hu=std,
                            photons=uncal.photons_estimated, denoised=proj.denoised)
    np.testing.assert_allclose(uncal.x_unpolished, redo, atol=1e-2)
    assert np.abs(uncal.image_hu - cal.image_hu).max() > 1e-2
    np.testing.assert_array_equal(pipe(data.test_sinograms[0.1], seed=0, progress=False, lowband_x0="uncalibrated")
                                  .image_hu, pipe(data.test_sinograms[0.1], seed=0, progress=False).image_hu)
    with pytest.raises(ValueError, match="lowband_x0"):
        pipe(data.test_sinograms[0.25], lowband_x0="raw", **kw)


def test_damaged_model_folders_give_one_line_errors(tiny_model, tmp_path):
    """Issue 15, defects 4 and 5: a damaged stage-1 weights file, a config of the wrong
    type, a missing stage-2 folder that the index lists, and a stage 1 trained on another
    geometry are refused with an InputError, never a traceback or a silent stage-1 result."""
    import shutil

    from turndiff.errors import InputError

    _, _, d = tiny_model
    cases = {
        "truncated weights": lambda m: (m / "projection_denoiser" / "model.safetensors").write_bytes(b"\x00" * 7),
        "pickle weights": lambda m: (m / "projection_denoiser" / "model.safetensors").write_bytes(b"\x80\x04K\x01."),
        "config is a list": lambda m: (m / "projection_denoiser" / "config.json").write_text("[1, 2]"),
        "stage 2 deleted": lambda m: shutil.rmtree(m / "latent_diffusion"),
        "index geometry changed": lambda m: (m / "turndiff.json").write_text(json.dumps(
            {**json.loads((m / "turndiff.json").read_text()),
             "geometry": json.dumps({**json.loads(json.loads((m / "turndiff.json").read_text())["geometry"]),
                                     "views": 7})})),
    }
    for name, damage in cases.items():
        m = tmp_path / name.replace(" ", "_")
        shutil.copytree(d, m)
        damage(m)
        with pytest.raises(InputError):
            TurnDiffPipeline.from_pretrained(m, device="cpu")


def test_bad_settings_fail_before_the_work(tiny_model, tmp_path):
    """Issue 15, defect 12: a sampler setting the model cannot take, an output name with
    no known format and an unreadable DICOM template are refused before stage 1 runs."""
    from turndiff.cli import main
    from turndiff.errors import InputError
    from turndiff.io import write_h5

    data, pipe, d = tiny_model
    sino = data.test_sinograms[0.25]
    calls = []
    original = pipe.stage1.denoise
    pipe.stage1.denoise = lambda *a, **k: calls.append(1) or original(*a, **k)
    try:
        with pytest.raises(InputError):
            pipe(sino, steps=10_000, progress=False)
        assert calls == []  # refused before stage 1
    finally:
        pipe.stage1.denoise = original
    scan = tmp_path / "scan.h5"
    write_h5(scan, {"sinogram": sino}, geometry_json=data.geometry.to_json(), photons=2.5e4)
    for args in (["--out", str(tmp_path / "recon.xyz")],
                 ["--out", str(tmp_path / "r.h5"), "--template", str(scan)]):
        with pytest.raises(SystemExit) as e:
            main(["reconstruct", str(d), str(scan), *args])
        assert e.value.code == 2 and not list(tmp_path.glob("r*"))


def test_fit_distils_stage_2_onto_the_consistent_teacher_by_default(tiny_model, monkeypatch):
    """With ``teacher="consistent"`` (the ``fast`` and ``tiny`` presets' default since session
    33) stage 2 learns from recorrupted copies whose teacher is the data-consistent image of
    each copy, its condition blended from the copy's x0 (four stacks, with the recorrupted
    loss off); the paper's teacher x0 with the recorrupted loss hands the usual triples, and
    without that loss no copies at all."""
    import turndiff.pipeline as pl
    from turndiff.stage2 import Stage2Config

    data, pipe, _ = tiny_model
    unet = pipe.stage2.config.unet
    assert unet.teacher == "consistent" and unet.r2r_weight == 0
    assert Stage2Config.preset("fast").unet.teacher == "consistent"
    assert Stage2Config.preset("paper").unet.teacher == "x0"  # the paper's distillation
    seen = {}
    monkeypatch.setattr(pl, "train_stage2", lambda x_ld, x0, cfg, **kw: seen.update(x0=x0, **kw))
    y = data.train_sinogram
    pl.fit_stage2(y, pipe.stage1, data.geometry, preset="tiny", device="cpu", progress=False)
    cond, x0_plus, _, teacher = seen["recorrupted"]
    assert cond.shape == teacher.shape == (2 * y.shape[0], 64, 64)
    assert np.abs(teacher - x0_plus).mean() > 1.0  # the data moved the teacher away from x0+
    x0_r2r = Stage2Config.preset("tiny").replace(unet={"teacher": "x0", "r2r_weight": 100.0})
    pl.fit_stage2(y, pipe.stage1, data.geometry, config=x0_r2r, device="cpu", progress=False)
    assert len(seen["recorrupted"]) == 3
    paper = Stage2Config.preset("tiny").replace(unet={"teacher": "x0", "r2r_weight": 0.0})
    pl.fit_stage2(y, pipe.stage1, data.geometry, config=paper, device="cpu", progress=False)
    assert seen["recorrupted"] is None


def test_machine_speed_leaves_the_seeded_random_stream_alone():
    from turndiff.benchmark.machine import machine_speed

    torch.manual_seed(3)
    expected = torch.rand(4)
    torch.manual_seed(3)
    assert machine_speed("cpu", repeats=1) > 0
    assert torch.equal(torch.rand(4), expected)  # the benchmark's trainings draw the same numbers


def test_the_final_polish_is_the_last_step(tiny_model):
    """``polish=w``: the output is :func:`~turndiff.inference.polish.bregman_tv` of the image
    the pipeline makes without it (kept as ``x_unpolished``), on the same draw; the
    uncertainty map is that of the unpolished image, the one its coefficients were fitted to."""
    from turndiff.inference.polish import POLISH_TV_HU, bregman_tv

    data, pipe, _ = tiny_model
    sino = data.test_sinograms[0.25]
    proj = pipe.project(sino, progress=False)
    off = pipe(sino, seed=0, progress=False, projection=proj, polish=0.0)
    on = pipe(sino, seed=0, progress=False, projection=proj, polish=28.0)
    assert off.x_unpolished is None and "x_unpolished" not in off.intermediates()
    np.testing.assert_array_equal(on.x_unpolished, off.image_hu)
    np.testing.assert_array_equal(on.unpolished, off.unpolished)  # the property reads either form
    np.testing.assert_allclose(on.image_hu, bregman_tv(off.image_hu, 28.0), atol=1e-3)
    assert np.abs(on.image_hu - off.image_hu).max() > 1.0 and "polish" in on.seconds
    np.testing.assert_array_equal(on.uncertainty(), off.uncertainty())
    default = pipe(sino, seed=0, progress=False, projection=proj)
    np.testing.assert_allclose(default.image_hu, bregman_tv(off.image_hu, POLISH_TV_HU), atol=1e-3)
    with pytest.raises(ValueError, match="polish"):
        pipe(sino, seed=0, progress=False, projection=proj, polish=-1.0)
