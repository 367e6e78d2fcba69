"""torchrun / DDP helpers. Everything degrades to a single process without ``torchrun``.

``torchrun`` sets ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``; we initialise the default
process group with NCCL on CUDA and gloo on CPU. Only rank 0 writes logs and checkpoints.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import attrs
import torch
import torch.distributed as dist


@attrs.frozen
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def env_info() -> DistInfo:
    """Rank information from torchrun's environment variables (single process by default)."""
    return DistInfo(
        rank=int(os.environ.get("RANK", 0)),
        world_size=int(os.environ.get("WORLD_SIZE", 1)),
        local_rank=int(os.environ.get("LOCAL_RANK", 0)),
    )


def setup(device: torch.device) -> DistInfo:
    """Initialise the process group when launched by torchrun (idempotent)."""
    info = env_info()
    if info.enabled and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend=backend)
    return info


def teardown() -> None:
    """Destroy the default process group (if any)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


@contextlib.contextmanager
def process_group(device: torch.device) -> Iterator[DistInfo]:
    """``setup`` for the duration of the block, then ``teardown``, also on errors, when this
    call created the group (a group that existed before is left to its owner)."""
    created = env_info().enabled and not (dist.is_available() and dist.is_initialized())
    info = setup(device)
    try:
        yield info
    finally:
        if created:
            teardown()


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def any_flag(flags: torch.Tensor) -> torch.Tensor:
    """Element-wise logical OR of a small float tensor of 0/1 flags over ranks (max-reduce)."""
    if dist.is_available() and dist.is_initialized():
        flags = flags.clone()
        dist.all_reduce(flags, op=dist.ReduceOp.MAX)
    return flags


def broadcast_object(obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank (identity without a process group)."""
    if dist.is_available() and dist.is_initialized():
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]
    return obj


def launch(nproc: int, cli_args: list[str]) -> int:
    """Run ``lejepa <cli_args>`` under ``torchrun --standalone --nproc_per_node nproc``;
    returns the exit code of the launcher."""
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={nproc}",
        "-m",
        "lejepa_core.cli",
        *cli_args,
    ]
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    return subprocess.call(command, env=env)
