"""torchrun / DDP helpers. Everything degrades to a single process without ``torchrun``.

``torchrun`` sets ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``; we initialise the default
process group with NCCL on CUDA and gloo on CPU. Only rank 0 writes logs and checkpoints.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import attrs
import torch
import torch.distributed as dist

from lejepa_core.errors import UserInputError


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


_barriers = itertools.count()


def barrier() -> None:
    """Wait until every rank has reached this point (no-op without a process group).

    A count in the process group's store, not a collective: gloo's worker thread frees a
    barrier's work only after ``wait`` returns, and it needs the GIL for that; a rank that
    exits right after a ``dist.barrier()`` can abort in interpreter shutdown ("terminate
    called without an active exception", SIGABRT). No tensor, no worker thread here.
    """
    if not (dist.is_available() and dist.is_initialized()):
        return
    store = dist.distributed_c10d._get_default_store()
    key = f"lejepa/barrier/{next(_barriers)}"
    if store.add(key, 1) == dist.get_world_size():
        store.set(f"{key}/open", "1")
    store.wait([f"{key}/open"])


def any_flag(flags: torch.Tensor) -> torch.Tensor:
    """Element-wise logical OR of a small float tensor of 0/1 flags over ranks (max-reduce)."""
    if dist.is_available() and dist.is_initialized():
        flags = flags.clone()
        dist.all_reduce(flags, op=dist.ReduceOp.MAX)
    return flags


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum of ``tensor`` over ranks, not differentiable (a copy; identity without a group)."""
    if dist.is_available() and dist.is_initialized():
        tensor = tensor.clone()
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def all_gather_rows(tensor: torch.Tensor) -> list[torch.Tensor]:
    """Every rank's ``tensor: [n_rank, ...]`` (``n_rank`` may differ between ranks), in rank
    order, not differentiable; ``[tensor]`` without a process group."""
    if not (dist.is_available() and dist.is_initialized()):
        return [tensor]
    world_size = dist.get_world_size()
    count = torch.tensor([tensor.shape[0]], device=tensor.device)
    counts = [torch.zeros_like(count) for _ in range(world_size)]
    dist.all_gather(counts, count)
    sizes = [int(c) for c in counts]
    padded = tensor.new_zeros((max(sizes), *tensor.shape[1:]))
    padded[: tensor.shape[0]] = tensor
    parts = [torch.empty_like(padded) for _ in range(world_size)]
    dist.all_gather(parts, padded.contiguous())
    return [part[:size] for part, size in zip(parts, sizes, strict=True)]


def shard_batches(batches: list[Any], info: DistInfo, what: str) -> list[Any]:
    """This rank's ``shard_rows`` of every batch; a batch with fewer rows than ranks is a
    ``UserInputError`` naming ``what`` (a rank would have nothing to feed a collective)."""
    smallest = min(batch.k.shape[0] for batch in batches)
    if smallest < info.world_size:
        raise UserInputError(
            f"{what}: a batch of {smallest} windows cannot be sharded over {info.world_size} "
            f"ranks; leave at least {info.world_size} windows in the last batch (or none)"
        )
    return [shard_rows(batch, info.rank, info.world_size) for batch in batches]


def shard_all(batch: Any, parts: int) -> list[Any]:
    """``batch`` as ``parts`` contiguous ``shard_rows`` (gradient accumulation)."""
    return [batch] if parts == 1 else [shard_rows(batch, i, parts) for i in range(parts)]


def no_sync(module: Any, skip: bool) -> Any:
    """``module.no_sync()`` (a DDP wrapper: no gradient all-reduce in this backward) unless
    ``skip``; a null context for a plain module."""
    if skip or not hasattr(module, "no_sync"):
        return contextlib.nullcontext()
    return module.no_sync()


def shard_rows(batch: Any, rank: int, world_size: int) -> Any:
    """The ``rank``-th of ``world_size`` contiguous, near-equal parts of an attrs batch whose
    fields are ``[N, ...]`` tensors or None (``torch.tensor_split``: the first
    ``N % world_size`` parts have one row more)."""

    def part(value: torch.Tensor | None) -> torch.Tensor | None:
        return None if value is None else torch.tensor_split(value, world_size)[rank]

    fields = attrs.asdict(batch, recurse=False)
    return type(batch)(**{name: part(value) for name, value in fields.items()})


def broadcast_object(obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank (identity without a process group)."""
    if dist.is_available() and dist.is_initialized():
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]
    return obj


@attrs.frozen(kw_only=True)
class Rendezvous:
    """How the nodes of a multi-node run find each other (torchrun's c10d rendezvous).

    ``nnodes = 1`` without an endpoint: ``--standalone`` (one machine, a free local port).
    Otherwise every node runs the same command with the same ``endpoint`` (``host:port`` of
    one node, reachable from all) and ``run_id``; ``node_rank`` is passed on when given
    (c10d assigns ranks itself; it fixes which node is node 0 in torchrun's logs only)."""

    nnodes: int = 1
    endpoint: str | None = None
    run_id: str = "lejepa"
    node_rank: int | None = None

    def torchrun_args(self) -> list[str]:
        if self.nnodes == 1 and self.endpoint is None:
            return ["--standalone"]
        if self.endpoint is None:
            raise UserInputError(
                f"--nnodes {self.nnodes}: give --rdzv-endpoint HOST:PORT (one node's address, "
                "the same on every node)"
            )
        args = [
            f"--nnodes={self.nnodes}",
            "--rdzv-backend=c10d",
            f"--rdzv-endpoint={self.endpoint}",
            f"--rdzv-id={self.run_id}",
        ]
        return args + ([] if self.node_rank is None else [f"--node-rank={self.node_rank}"])


def torchrun_command(
    nproc: int, cli_args: list[str], rendezvous: Rendezvous | None = None
) -> list[str]:
    """``python -m torch.distributed.run <rendezvous> --nproc-per-node nproc -m
    lejepa_core.cli <cli_args>``: what ``launch`` runs (the plain torchrun invocation)."""
    rendezvous = rendezvous or Rendezvous()
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        *rendezvous.torchrun_args(),
        f"--nproc-per-node={nproc}",
        "-m",
        "lejepa_core.cli",
        *cli_args,
    ]


def launch(nproc: int, cli_args: list[str], rendezvous: Rendezvous | None = None) -> int:
    """Run ``lejepa <cli_args>`` under torchrun (``torchrun_command``) with ``nproc``
    processes on this node; returns the exit code of the launcher."""
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    return subprocess.call(torchrun_command(nproc, cli_args, rendezvous), env=env)
