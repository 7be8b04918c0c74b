"""The tuning protocol (issue 13): development never sees the test slices.

Development scripts live in ``benchmarks/``; they must build their data with
``make_dev_data`` (validation phantoms) and never reach a test seed. The reported numbers
come from ``turndiff benchmark`` alone.
"""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest

from turndiff.benchmark.data import make_bench_data, make_dev_data
from turndiff.benchmark.splits import (
    TEST_SEED,
    TEST_SEEDS,
    TRAIN_SEEDS,
    VALIDATION_SEED,
    VALIDATION_SEEDS,
    check_development_seed,
    split_of,
)
from turndiff.errors import InputError

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
FORBIDDEN_NAMES = {"make_bench_data", "run_benchmark", "TEST_SEED", "TEST_SEEDS"}


def _violations(source: str) -> list[str]:
    """What in a development script's source reaches the test split."""
    found = []
    for node in ast.walk(ast.parse(source)):
        name = node.id if isinstance(node, ast.Name) else node.attr if isinstance(node, ast.Attribute) else None
        if isinstance(node, ast.alias):
            name = node.name
        if name in FORBIDDEN_NAMES:
            found.append(f"line {getattr(node, 'lineno', '?')}: uses {name}")
        if isinstance(node, ast.keyword) and node.arg and "seed" in node.arg:
            v = node.value
            if isinstance(v, ast.Constant) and isinstance(v.value, int) and v.value in TEST_SEEDS:
                found.append(f"line {v.lineno}: {node.arg}={v.value} is a test seed")
            if isinstance(v, ast.BinOp) and isinstance(v.right, ast.Constant) and v.right.value in TEST_SEEDS:
                found.append(f"line {v.lineno}: {node.arg}=... + {v.right.value} reaches the test seeds")
    return found



def test_splits_are_disjoint_and_named():
    assert not set(TRAIN_SEEDS) & set(TEST_SEEDS)
    assert not set(TRAIN_SEEDS) & set(VALIDATION_SEEDS)
    assert not set(TEST_SEEDS) & set(VALIDATION_SEEDS)
    assert split_of(0) == "training" and split_of(TEST_SEED) == "test" and split_of(VALIDATION_SEED) == "validation"


@pytest.mark.parametrize("script", sorted(BENCHMARKS.glob("*.py")), ids=lambda p: p.name)
def test_development_scripts_never_use_test_seeds(script):
    assert _violations(script.read_text()) == []


@pytest.mark.parametrize("source", [
    "from turndiff.benchmark.data import make_bench_data\nmake_bench_data(seed=0)",
    "from turndiff.phantoms import make_phantoms\nmake_phantoms(4, 64, seed=1000)",
    "make_phantoms(4, 64, seed=base + 1000)",
    "import turndiff.benchmark.splits as s\nx = s.TEST_SEED",
])
def test_the_check_catches_a_script_that_reaches_the_test_split(source):
    assert _violations(source)


def test_dev_data_refuses_test_seeds():
    for seed in (TEST_SEEDS.start, TEST_SEEDS.start + 17, TEST_SEEDS.stop - 1):
        with pytest.raises(InputError, match="test split"):
            make_dev_data(size=32, n_train=1, n_val=1, val_doses=(0.25,), val_seed=seed)
        with pytest.raises(InputError):
            check_development_seed(seed)


def test_dev_data_scores_validation_phantoms_not_test_phantoms():
    bench = make_bench_data(size=32, n_train=1, n_test=1, test_doses=(0.25,), progress=False)
    dev = make_dev_data(size=32, n_train=1, n_val=1, val_doses=(0.25,))
    np.testing.assert_array_equal(bench.train_sinogram, dev.train_sinogram)  # same training data
    assert np.abs(bench.test_reference_hu - dev.test_reference_hu).mean() > 10.0  # other phantoms


def test_the_benchmark_validation_split_scores_make_dev_data_phantoms():
    """`turndiff benchmark --split validation` is scored on exactly the phantoms and noise the
    development scripts see (base seed VALIDATION_SEED), so its table can be read beside theirs."""
    dev = make_dev_data(size=32, n_train=1, n_val=2, val_doses=(0.25, 0.1))
    val = make_bench_data(size=32, n_train=1, n_test=2, test_doses=(0.25, 0.1), progress=False,
                          eval_seed=VALIDATION_SEED)
    np.testing.assert_array_equal(dev.test_reference_hu, val.test_reference_hu)
    for d in (0.25, 0.1):
        np.testing.assert_array_equal(dev.test_sinograms[d], val.test_sinograms[d])


def test_a_dose_gets_the_same_noise_whatever_else_is_asked_for(tmp_path):
    """A dose's evaluation noise depends on the seed and the dose alone. It once depended on the
    dose's position in the requested list, so a development script asking for (0.5, 0.25) scored
    other 25% noise than one asking for (0.25, 0.1, 0.5), and a cache written by one order
    was read by the other."""
    from turndiff.benchmark.data import NOISE_STREAM_DOSES, noise_seed
    from turndiff.dose import photons_from_dose, simulate_scan
    from turndiff.phantoms import make_phantoms
    from turndiff.physics import default_fan_geometry

    a = make_dev_data(size=32, n_train=1, n_val=1, val_doses=(0.25, 0.1, 0.5))
    b = make_dev_data(size=32, n_train=1, n_val=1, val_doses=(0.5, 0.3, 0.25))
    for d in (0.25, 0.5):
        np.testing.assert_array_equal(a.test_sinograms[d], b.test_sinograms[d])
    assert np.abs(a.test_sinograms[0.1] - b.test_sinograms[0.3]).mean() > 0.0
    # A cache written by one order serves another the same arrays.
    cache = tmp_path / "data.npz"
    first = make_bench_data(size=32, n_train=1, n_test=1, test_doses=(0.5, 0.25), cache=cache, progress=False)
    again = make_bench_data(size=32, n_train=1, n_test=1, test_doses=(0.25, 0.5), cache=cache, progress=False)
    fresh = make_bench_data(size=32, n_train=1, n_test=1, test_doses=(0.25, 0.5), progress=False)
    for d in (0.25, 0.5):
        np.testing.assert_array_equal(first.test_sinograms[d], fresh.test_sinograms[d])
        np.testing.assert_array_equal(again.test_sinograms[d], fresh.test_sinograms[d])
    # The benchmark's own doses, in its own order, keep the streams its published numbers used.
    assert [noise_seed(3, d) for d in NOISE_STREAM_DOSES] == [3 + 7919 * (i + 1) for i in range(5)]
    g = default_fan_geometry(32)
    ref = make_phantoms(1, 32, seed=TEST_SEED)
    old_10, _ = simulate_scan(ref, g, photons=photons_from_dose(0.1), seed=7919 * 2, progress=False)
    bench = make_bench_data(size=32, n_train=1, n_test=1, test_doses=(0.25, 0.1), progress=False)
    np.testing.assert_array_equal(bench.test_sinograms[0.1], old_10)
    assert len({noise_seed(0, d) for d in (0.05, 0.1, 0.2, 0.25, 0.3, 0.5, 0.75, 1.0)}) == 8
