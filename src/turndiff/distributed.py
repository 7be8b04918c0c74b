"""Several processes, on one machine or many: PyTorch's own ``torch.distributed``, started by
``torchrun`` (as MONAI and every PyTorch trainer do), not a scheduler of our own.

``torchrun --nproc_per_node K -m turndiff fit ...`` starts K copies of the command; each
reads its rank from the environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, set by
torchrun) and :func:`setup` joins them into one process group: NCCL between GPUs, gloo on
CPUs. What each command does with them:

- ``fit`` (the one training loop, :func:`turndiff.training.train`): every rank draws the
  same global batch from the same seeded generator and trains on its share of it, with
  gradients averaged by :class:`~torch.nn.parallel.DistributedDataParallel`. A step
  therefore sees the batch the one-process run sees, checkpoints (written by rank 0 alone)
  hold no per-rank state, and a run resumes with any number of processes.
- ``reconstruct`` shards the study's batches of slices across ranks; rank 0 alone writes
  the work file and the output, so the output is one file, the same as a one-process run's.

Without torchrun (``WORLD_SIZE`` unset or 1) every function here is a no-op and the
commands behave exactly as before.
"""

from __future__ import annotations

import os
from typing import Any

import torch

__all__ = ["setup", "rank", "world_size", "is_main", "barrier", "broadcast", "gather", "all_mean", "cleanup",
           "launched"]


def launched() -> bool:
    """Whether this process was started as one of several (``WORLD_SIZE > 1``)."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1")) > 1
    except ValueError:
        return False


def _active() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def setup(device: torch.device) -> None:
    """Join the process group torchrun describes, once; a no-op without torchrun.

    On CUDA each process takes the GPU ``LOCAL_RANK`` (so ``"cuda"`` means its own GPU)
    and the NCCL backend; on the CPU, gloo. ``TURNDIFF_DIST_BACKEND`` overrides the choice.
    """
    if not launched() or _active():
        return
    from .errors import InputError

    missing = [k for k in ("RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
    if missing:
        raise InputError(f"WORLD_SIZE > 1 but {', '.join(missing)} unset: start several processes with torchrun")
    backend = os.environ.get("TURNDIFF_DIST_BACKEND") or ("nccl" if device.type == "cuda" else "gloo")
    if device.type == "cuda":
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    torch.distributed.init_process_group(backend=backend)


def rank() -> int:
    return torch.distributed.get_rank() if _active() else 0


def world_size() -> int:
    return torch.distributed.get_world_size() if _active() else 1


def is_main() -> bool:
    """Rank 0, the one that writes files (true when not distributed)."""
    return rank() == 0


def barrier() -> None:
    if _active():
        torch.distributed.barrier()


def broadcast(obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank (picklable objects)."""
    if not _active():
        return obj
    box = [obj]
    torch.distributed.broadcast_object_list(box, src=0)
    return box[0]


def gather(obj: Any) -> list[Any] | None:
    """Every rank's ``obj``, in rank order, on rank 0 (None on the others)."""
    if not _active():
        return [obj]
    out = [None] * world_size() if is_main() else None
    torch.distributed.gather_object(obj, out, dst=0)
    return out


def all_mean(value: torch.Tensor) -> torch.Tensor:
    """The mean of a tensor over ranks (itself when not distributed)."""
    if not _active():
        return value
    v = value.detach().clone()
    torch.distributed.all_reduce(v)
    return v / world_size()


def cleanup() -> None:
    """Leave the process group (at the end of a command).

    The ranks meet at a barrier first: a rank that tears gloo down while another still has
    a collective in flight (rank 0 receiving a ``gather``) can abort the other with
    "terminate called without an active exception".
    """
    if _active():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
