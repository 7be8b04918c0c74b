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
