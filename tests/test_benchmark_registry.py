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
