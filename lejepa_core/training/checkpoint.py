"""Atomic checkpoints and the random-number-generator states a bit-exact resume needs.

A checkpoint is a plain dict of tensors and plain Python values, saved with ``torch.save`` to
a temporary file in the same directory, flushed to disk, then moved over the old file with
``os.replace`` (atomic on POSIX and Windows): a crash mid-save leaves the previous checkpoint
intact. Loading uses ``torch.load(..., weights_only=True)``: nothing is unpickled.
"""

from __future__ import annotations

import os
import random
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lejepa_core.errors import CheckpointError

# 2: ``scheduler`` holds torch's LambdaLR state dict (format 1: ``{"step_count", ...}``).
FORMAT_VERSION = 2


def save_atomic(state: dict[str, Any], path: str | Path) -> Path:
    """Write ``state`` to ``path`` atomically (temp file + fsync + ``os.replace``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(state, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        try:
            os.unlink(tmp_name)
        except FileNotFoundError:
            pass
        raise
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint written by ``save_atomic``; ``CheckpointError`` naming the file otherwise."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling/zip failure means a bad file
        raise CheckpointError(
            f"{path}: cannot read checkpoint ({type(exc).__name__}: {exc})"
        ) from None
    version = state.get("format_version") if isinstance(state, dict) else None
    if isinstance(version, int) and version != FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format {version}, this lejepa reads format {FORMAT_VERSION} "
            f"only ({'an older' if version < FORMAT_VERSION else 'a newer'} lejepa wrote it); "
            "start a new run, or use the lejepa version that wrote it"
        )
    if version != FORMAT_VERSION:
        raise CheckpointError(f"{path}: not a lejepa checkpoint (format {FORMAT_VERSION} expected)")
    return state


def capture_rng_state(generators: dict[str, torch.Generator]) -> dict[str, Any]:
    """Every RNG state as tensors and plain types: torch CPU (and CUDA), Python, NumPy and the
    named ``torch.Generator`` objects of the run (sampler, masker)."""
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": [
            str(np_state[0]),
            torch.from_numpy(np_state[1].astype(np.int64)),
            int(np_state[2]),
            int(np_state[3]),
            float(np_state[4]),
        ],
        "generators": {name: g.get_state() for name, g in generators.items()},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any], generators: dict[str, torch.Generator]) -> None:
    """Inverse of ``capture_rng_state``."""
    torch.set_rng_state(state["torch"].cpu())
    version, keys, pos, has_gauss, cached = state["numpy"]
    random.setstate(_to_tuple(state["python"]))
    np.random.set_state((version, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
    for name, g in generators.items():
        if name not in state["generators"]:
            raise CheckpointError(f"checkpoint has no state for the {name!r} generator")
        g.set_state(state["generators"][name].cpu())


def _to_tuple(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_to_tuple(v) for v in value)
    if isinstance(value, tuple):
        return tuple(_to_tuple(v) for v in value)
    return value


def all_finite(modules: dict[str, torch.nn.Module | None]) -> bool:
    """True when every parameter and floating buffer of the modules is finite."""
    for module in modules.values():
        if module is None:
            continue
        for tensor in [*module.parameters(), *module.buffers()]:
            if tensor.is_floating_point() and not torch.isfinite(tensor).all():
                return False
    return True
