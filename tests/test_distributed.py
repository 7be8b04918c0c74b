"""Several processes through torchrun, on the CPU with gloo (docs/DISTRIBUTED.md).

The 2-process runs are checked against 1-process runs of the same command: `reconstruct`
must give the same images (the ranks share out batches and compute each slice as one
process would), and `fit` must give a model whose images differ from the 1-process
model's by a small fraction of their error (each step sees the same batch; only the
objective's noise draws differ per rank). A run interrupted under 2 processes resumes
under 1.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import h5py
import numpy as np
import pytest
import torch

from turndiff.training import _shard

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]


def _env() -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env["OMP_NUM_THREADS"] = "1"  # two processes on a 2-core machine
    env["NUMBA_NUM_THREADS"] = "1"
    return env


def _run(cmd: list[str]) -> None:
    out = subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]


def _turndiff(*args: str, ranks: int = 1) -> None:
    _run([*(TORCHRUN if ranks == 2 else [sys.executable]), "-m", "turndiff", *args])


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """Ten 48x48 slices: two batches of `reconstruct` (8 + 2), one per rank."""
    d = tmp_path_factory.mktemp("dist")
    _turndiff("simulate", "phantom:10", "--size", "48", "--out", str(d / "scan.h5"))
    return d


def _images(path) -> np.ndarray:
    with h5py.File(path) as f:
        return f["image_hu"][()]


def _rmse(a, b, ref) -> float:
    m = ref > -500
    return float(np.sqrt(np.mean((a - b)[..., m] ** 2)))


def test_two_process_fit_and_reconstruct_equal_one_process(study):
    d = study
    scan = str(d / "scan.h5")
    _turndiff("fit", scan, "--out", str(d / "m1"), "--preset", "tiny", "--device", "cpu")
    _turndiff("fit", scan, "--out", str(d / "m2"), "--preset", "tiny", "--device", "cpu", ranks=2)
    assert not (d / "m2.run").exists()  # rank 0 cleaned up; no rank left a second run folder
    _turndiff("reconstruct", str(d / "m1"), scan, "--out", str(d / "r1.h5"), "--device", "cpu")
    _turndiff("reconstruct", str(d / "m1"), scan, "--out", str(d / "r1_2.h5"), "--device", "cpu", ranks=2)
    _turndiff("reconstruct", str(d / "m2"), scan, "--out", str(d / "r2.h5"), "--device", "cpu")
    with h5py.File(scan) as f:
        ref = f["reference_hu"][()]
    one, sharded, other_model = _images(d / "r1.h5"), _images(d / "r1_2.h5"), _images(d / "r2.h5")
    assert sharded.shape == one.shape == ref.shape
    # Same model, 2 ranks: every slice as one process computes it (the second batch on rank 1).
    np.testing.assert_allclose(sharded, one, rtol=0, atol=1e-2)
    # Trained by 2 ranks: the same batches, other noise draws inside the objective.
    err = _rmse(one, ref, ref)
    assert _rmse(other_model, one, ref) < 0.05 * err, (_rmse(other_model, one, ref), err)


def test_a_run_interrupted_under_two_processes_resumes_under_one(tmp_path):
    """Checkpoints hold no per-rank state: 2 ranks stop after 2 of 4 steps (holding equal
    weights), 1 process finishes from step 2."""
    script = tmp_path / "part.py"
    script.write_text(textwrap.dedent(f"""
        import sys, torch
        from turndiff import distributed
        from turndiff.phantoms import make_phantom
        from turndiff.physics import default_fan_geometry, CTProjector
        from turndiff.dose import simulate_scan
        from turndiff.stage1 import Stage1Config, train_projection_denoiser

        distributed.setup(torch.device("cpu"))
        g = default_fan_geometry(32)
        y, _ = simulate_scan(make_phantom(32, seed=1)[None], g, photons=2e4, seed=0, progress=False)
        cfg = Stage1Config.preset("tiny", iters=4, checkpoint_every=2)
        steps = int(sys.argv[1]) if len(sys.argv) > 1 else None
        m = train_projection_denoiser(y, photons=2e4, config=cfg, run_dir=r"{tmp_path / 'run'}", device="cpu",
                                      progress=False, max_steps=steps)
        # DDP keeps the ranks' weights equal: every rank's checksum, gathered to rank 0.
        sums = distributed.gather(float(sum(p.double().sum() for p in m.network.parameters())))
        if distributed.is_main() and len(set(sums)) != 1:
            sys.exit(f"ranks hold different weights: {{sums}}")
        distributed.cleanup()
    """))
    _run([*TORCHRUN, str(script), "2"])
    ckpts = sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir() if p.name.startswith("step_"))
    assert ckpts and ckpts[-1].endswith("2"), ckpts
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=_env(), timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    ckpts = sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir() if p.name.startswith("step_"))
    assert ckpts[-1].endswith("4"), ckpts  # trained on from step 2 to the end


def test_shard_splits_the_shared_batch_and_reseeds_generators():
    g = torch.Generator().manual_seed(5)
    batch = {"x": torch.arange(5.0)[:, None], "w": torch.tensor(1.0), "step": 3, "generator": g}
    parts = [_shard(batch, r, 2) for r in range(2)]
    assert [n for _, n, _ in parts] == [2, 3] and all(total == 5 for _, _, total in parts)
    torch.testing.assert_close(torch.cat([p["x"] for p, _, _ in parts]), batch["x"])  # the whole batch, once
    assert all(p["step"] == 3 and p["w"] is batch["w"] for p, _, _ in parts)
    draws = [torch.rand(4, generator=p["generator"]) for p, _, _ in parts]
    assert not torch.equal(draws[0], draws[1])  # ranks draw their own noise
    with pytest.raises(Exception, match="smaller than the 8 processes"):
        _shard(batch, 0, 8)


def test_other_commands_refuse_to_run_under_torchrun(tmp_path):
    env = {**_env(), "WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0"}
    out = subprocess.run([sys.executable, "-m", "turndiff", "simulate", "phantom:1", "--out", str(tmp_path / "a.h5")],
                         capture_output=True, text=True, env=env)
    assert out.returncode != 0 and not (tmp_path / "a.h5").exists()
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "runs as one process" in lines[0] and "Traceback" not in out.stderr
