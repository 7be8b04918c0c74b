"""The tuning protocol: three disjoint phantom seed ranges.

A phantom stack is drawn from one base seed (``make_phantoms(n, size, seed=s)``; slice
``i`` is ``SeedSequence(s).spawn`` key ``(i,)``), so a base seed names a whole, disjoint
set of phantoms. The benchmark uses three ranges of base seeds:

- **training** ``[0, 1000)``: the noisy sinograms every method trains on;
- **test** ``[1000, 2000)``: the benchmark's reported numbers, and nothing else;
- **validation** ``[5000, 6000)``: every design choice and hyper-parameter not made by
  SURE on the training sinograms.

A method that trains on *unpaired* clean data (IPDM) gets the clean images of other
training-range phantoms, base seed :data:`UNPAIRED_SEED` (500) + the run's seed: never the
test slices, and not the anatomy the noisy training sinograms show.

Development scripts under ``benchmarks/`` build their data with
:func:`~turndiff.benchmark.data.make_dev_data`, which refuses test seeds
(:func:`check_development_seed`); ``tests/test_protocol.py`` checks that no development
script reaches the test seeds (docs/BENCHMARKS.md, "Tuning protocol").
"""

from __future__ import annotations

from ..errors import InputError

__all__ = [
    "TRAIN_SEEDS", "TEST_SEEDS", "VALIDATION_SEEDS", "TRAIN_SEED", "TEST_SEED", "VALIDATION_SEED", "UNPAIRED_SEED",
    "check_development_seed", "split_of",
]

TRAIN_SEEDS = range(0, 1000)
TEST_SEEDS = range(1000, 2000)
VALIDATION_SEEDS = range(5000, 6000)
#: The base seed of each split that the benchmark and the development scripts use.
TRAIN_SEED, TEST_SEED, VALIDATION_SEED = TRAIN_SEEDS.start, TEST_SEEDS.start, VALIDATION_SEEDS.start
#: Base seed of the unpaired clean phantoms (training range, not the noisy training set).
UNPAIRED_SEED = TRAIN_SEED + 500


def split_of(seed: int) -> str | None:
    """``"training"``, ``"test"``, ``"validation"`` or ``None`` for a phantom base seed."""
    for name, r in (("training", TRAIN_SEEDS), ("test", TEST_SEEDS), ("validation", VALIDATION_SEEDS)):
        if int(seed) in r:
            return name
    return None


def check_development_seed(seed: int) -> int:
    """Return ``seed``; refuse a test seed (development must never see the test slices)."""
    if split_of(seed) == "test":
        raise InputError(
            f"phantom seed {seed} belongs to the test split {TEST_SEEDS.start}-{TEST_SEEDS.stop - 1}; "
            f"tune on validation seeds ({VALIDATION_SEEDS.start}-{VALIDATION_SEEDS.stop - 1}) or by SURE")
    return int(seed)
