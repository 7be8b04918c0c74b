import os

import numpy as np
import pytest

# Keep numba/torch from oversubscribing the 2-core CI machine.
os.environ.setdefault("OMP_NUM_THREADS", "2")


@pytest.fixture
def rng():
    return np.random.default_rng(1234)
