"""The benchmark runs every method from one registry (issue 14)."""

from turndiff.baselines import BASELINES
from turndiff.benchmark.methods import METHODS, BenchMethod, TurnDiffAblations, TurnDiffMethod
from turndiff.benchmark.runner import ALL_METHODS


def test_one_registry_holds_turndiff_its_ablations_and_every_baseline() -> None:
    assert tuple(METHODS) == ALL_METHODS
    assert set(BASELINES) | {"turndiff", "ablations"} == set(METHODS)
    assert all(isinstance(m, BenchMethod) and m.key == k for k, m in METHODS.items())
    assert isinstance(METHODS["turndiff"], TurnDiffMethod) and isinstance(METHODS["ablations"], TurnDiffAblations)
    # FBP is the registered baseline, not a path of its own.
    assert METHODS["FBP"].run.__func__ is METHODS["TV"].run.__func__


def _summary(train_seed, psnr, *, seed=0):
    q = {"TurnDiff": {"0.25": {"soft": {"psnr": {"mean": psnr}, "ssim": {"mean": psnr / 100}}}}}
    return {"preset": "fast", "seed": seed, "train_seed": train_seed, "data": {"doses": [0.25]}, "quality": q}


def test_seed_spread_table_summarises_runs_that_differ_only_in_their_training_seed() -> None:
    import pytest

    from turndiff.benchmark.report import seed_spread_table

    table = seed_spread_table([_summary(0, 25.0), _summary(1, 26.0), _summary(2, 27.0)])
    row = table.splitlines()[2]
    # mean, sample std (ddof 1) and range of the per-run means
    assert row.startswith("| TurnDiff | 3 | 26.00 +- 1.00 (25.00 - 27.00) | 0.2600 +- 0.0100")
    with pytest.raises(ValueError, match="training seed"):
        seed_spread_table([_summary(1, 25.0), _summary(1, 26.0)])
    with pytest.raises(ValueError, match="differ in seed"):
        seed_spread_table([_summary(0, 25.0), _summary(1, 26.0, seed=5)])
    with pytest.raises(ValueError, match="two or more"):
        seed_spread_table([_summary(0, 25.0)])
    with pytest.raises(ValueError, match="not in every run"):
        seed_spread_table([_summary(0, 25.0), _summary(1, 26.0)], methods=["TV"])
    with pytest.raises(ValueError, match="dose 0.3"):
        seed_spread_table([_summary(0, 25.0), _summary(1, 26.0)], doses=[0.3])


def test_paired_comparison_pairs_slices_against_the_best_method_without_clean_data() -> None:
    """The slice-by-slice table: TurnDiff against the best *other* method that uses no clean
    data (not its own ablation rows, not a supervised or unpaired method), per-slice
    differences, a bootstrap interval that brackets their mean, and the slices won."""
    import numpy as np
    import pytest

    from turndiff.benchmark.report import paired_comparison, paired_table

    def entry(psnr, ssim):
        return {"0.25": {"soft": {m: {"mean": float(np.mean(v)), "per_slice": list(v)}
                                  for m, v in (("psnr", psnr), ("ssim", ssim))}}}

    q = {"TurnDiff": entry([26.0, 25.0, 27.0, 26.0], [0.80, 0.70, 0.90, 0.80]),
         "TV": entry([24.0, 24.0, 25.0, 24.0], [0.81, 0.71, 0.91, 0.81]),  # SSIM 0.01 better on every slice
         "Noiser2Noise": entry([25.0, 24.5, 25.5, 25.0], [0.60, 0.60, 0.60, 0.60]),
         "no low band (--no-lowband)": entry([30.0] * 4, [0.99] * 4),  # TurnDiff's own row: never the competitor
         "RED-CNN (supervised)": entry([31.0] * 4, [0.99] * 4)}  # clean data: never the competitor
    clean = {"RED-CNN (supervised)": "paired"}
    rows = {r["metric"]: r for r in paired_comparison(q, doses=[0.25], clean_data=clean)}
    p, s = rows["psnr"], rows["ssim"]
    assert p["competitor"] == "Noiser2Noise" and s["competitor"] == "TV"
    assert p["diff"] == pytest.approx(1.0) and p["wins"] == 4 and p["slices"] == 4
    assert p["low"] <= p["diff"] <= p["high"] and p["low"] > 0  # wins on every slice: the interval excludes 0
    assert s["diff"] == pytest.approx(-0.01) and s["wins"] == 0
    assert s["low"] == pytest.approx(-0.01) and s["high"] == pytest.approx(-0.01)  # a constant difference
    assert paired_comparison(q, doses=[0.25], clean_data=clean) == paired_comparison(q, doses=[0.25], clean_data=clean)
    table = paired_table(q, doses=[0.25], clean_data=clean)
    assert "| 25% | SSIM | TV | 0.8000 | 0.8100 | -0.0100 (-0.0100 to -0.0100) | 0 / 4 |" in table
    assert paired_table({"TV": q["TV"]}, doses=[0.25], clean_data={}) == ""
