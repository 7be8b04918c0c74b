"""What machine ran a benchmark, and how fast it was that day (recorded in every report)."""

from __future__ import annotations

import os
import platform
import time

import torch

from ..nets import ResidualDenoiser
from ..stage1.model import STAGE1_PRESETS
from ..training import resolve_device

__all__ = ["SPEED_SHAPE", "describe_machine", "machine_speed", "speed_text"]


def describe_machine() -> str:
    """Architecture, CPU cores, GPU and torch version, for a report's header."""
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{platform.machine()}, {os.cpu_count()} CPU cores, {gpu}, torch {torch.__version__}"


#: The sinogram shape of :func:`machine_speed`'s reference forward: the ``fast`` benchmark's.
SPEED_SHAPE = (720, 368)


def machine_speed(device: str | torch.device = "auto", repeats: int = 3) -> float:
    """Seconds (min of ``repeats``, after a warm-up) of one forward of the ``fast`` stage-1
    network (its architecture, fixed random weights) on a ``SPEED_SHAPE`` sinogram.

    Recorded with every benchmark because the same machine type runs this 1.9x faster on
    one day than another (docs/BENCHMARKS.md, "Session 29"): wall times of two runs compare
    only through it. No data is read.
    """
    dev = resolve_device(device)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = ResidualDenoiser(1, features=STAGE1_PRESETS["fast"]["features"], shift=1.0, scale=0.3,
                               circular_rows=True).to(dev).eval()
        x = (torch.randn(1, 1, *SPEED_SHAPE) * 0.3 + 1.0).to(dev)
    times = []
    with torch.inference_mode():
        for i in range(repeats + 1):
            t0 = time.perf_counter()
            net(x)
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            if i:  # the first call warms the allocator and the primitive caches
                times.append(time.perf_counter() - t0)
    return min(times)


def speed_text(seconds: float) -> str:
    """The report's wording of :func:`machine_speed`'s result."""
    return f"speed: {seconds:.3f} s a fast stage-1 forward at {SPEED_SHAPE[0]}x{SPEED_SHAPE[1]}"
