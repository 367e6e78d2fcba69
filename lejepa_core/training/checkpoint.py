"""Atomic checkpoints and the random-number-generator states a bit-exact resume needs.

A checkpoint is a plain dict of tensors and plain Python values, saved with ``torch.save`` to
a temporary file in the same directory (``.<name>.<pid>.<random>.tmp``, see
``lejepa_core.files``), flushed to disk, then moved over the old file with ``os.replace``
(atomic on POSIX and Windows): a crash mid-save leaves the previous checkpoint intact, and a
failed write (a full disk) is a ``StorageError`` with the temporary file removed.

Integrity: the saved dict carries ``sha256``, a digest of everything else in it (every tensor's
dtype, shape and bytes, every plain value), written in the same atomic file; loading recomputes
it and checks every floating-point tensor is finite, so a file damaged after it was written is
a ``CheckpointError`` naming it instead of weights that load and are wrong. Loading uses
``torch.load(..., weights_only=True)``: nothing is unpickled.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import random
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lejepa_core.errors import CheckpointError, StorageError
from lejepa_core.files import temp_prefix, write_failure

# 2: ``scheduler`` holds torch's LambdaLR state dict (format 1: ``{"step_count", ...}``).
FORMAT_VERSION = 2
DIGEST_KEY = "sha256"  # digest of the rest of the checkpoint (``state_digest``)


def save_atomic(state: dict[str, Any], path: str | Path) -> Path:
    """Write ``state`` and its digest to ``path`` atomically (temp file + fsync +
    ``os.replace``); ``StorageError`` when writing fails (the old file is left as it was)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    signed = {**state, DIGEST_KEY: state_digest(state)}
    fd, tmp_name = tempfile.mkstemp(prefix=temp_prefix(path.name), suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(signed, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException as exc:
        failure = write_failure(path, exc) if isinstance(exc, (OSError, RuntimeError)) else None
        try:
            os.unlink(tmp_name)
        except FileNotFoundError:
            pass
        if failure:
            raise StorageError(f"{failure}; the previous {path.name}, if any, is intact") from None
        raise
    return path


def state_digest(state: dict[str, Any]) -> str:
    """SHA-256 of a checkpoint dict without its ``DIGEST_KEY``: every tensor's dtype, shape
    and bytes and every plain value, in order (lists and tuples alike: what loading gives)."""
    digest = hashlib.sha256()
    _feed(digest, {k: v for k, v in state.items() if k != DIGEST_KEY})
    return digest.hexdigest()


def _feed(digest: Any, value: Any) -> None:
    if isinstance(value, torch.Tensor):
        tensor = value.detach()
        digest.update(f"T{tensor.dtype}{list(tensor.shape)}".encode())
        if tensor.numel():
            flat = tensor.reshape(-1).contiguous().cpu()
            digest.update(flat.view(torch.uint8).numpy().data)
    elif isinstance(value, dict):
        digest.update(f"{{{len(value)}".encode())
        for key, item in value.items():
            _feed(digest, key)
            _feed(digest, item)
    elif isinstance(value, (list, tuple)):
        digest.update(f"[{len(value)}".encode())
        for item in value:
            _feed(digest, item)
    else:
        digest.update(f"{type(value).__name__}:{value!r};".encode())


def _nonfinite_tensor(value: Any, where: str = "") -> str | None:
    """The key path of the first floating-point tensor in ``value`` holding NaN or inf."""
    if isinstance(value, torch.Tensor):
        bad = value.is_floating_point() and not bool(torch.isfinite(value).all())
        return (where or "a tensor") if bad else None
    if isinstance(value, dict):
        items = value.items()
    elif isinstance(value, (list, tuple)):
        items = enumerate(value)
    else:
        return None
    for key, item in items:
        found = _nonfinite_tensor(item, f"{where}.{key}" if where else str(key))
        if found:
            return found
    return None


def _read_failure(exc: Exception) -> str:
    """One line on why ``torch.load`` could not read a file."""
    if isinstance(exc, pickle.UnpicklingError):
        return (
            "it holds Python objects, not only tensors and plain values, and weights_only "
            "loading refuses them; a lejepa checkpoint never does"
        )
    first = (str(exc).splitlines() or [""])[0].strip()
    return f"damaged or not a checkpoint ({type(exc).__name__}: {first[:200]})"


#: Formats whose model and target-encoder weights read as today's (loading a trained model
#: needs no scheduler state: format 1 differs only there).
WEIGHTS_FORMATS = (1, 2)


def load_checkpoint(
    path: str | Path,
    map_location: str | torch.device = "cpu",
    *,
    formats: tuple[int, ...] = (FORMAT_VERSION,),
) -> dict[str, Any]:
    """Load a checkpoint written by ``save_atomic``: its digest verified, its tensors finite;
    ``CheckpointError`` naming the file otherwise. ``formats``: the formats the caller reads
    (resuming: this one; loading weights for evaluation: ``WEIGHTS_FORMATS``)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling/zip failure means a bad file
        raise CheckpointError(f"{path}: cannot read checkpoint: {_read_failure(exc)}") from None
    version = state.get("format_version") if isinstance(state, dict) else None
    if isinstance(version, int) and version not in formats:
        raise CheckpointError(
            f"{path}: checkpoint format {version}, this lejepa reads format {FORMAT_VERSION} "
            f"only ({'an older' if version < FORMAT_VERSION else 'a newer'} lejepa wrote it); "
            "start a new run, or use the lejepa version that wrote it"
        )
    if version not in formats:
        raise CheckpointError(f"{path}: not a lejepa checkpoint (format {FORMAT_VERSION} expected)")
    damaged = f"{path}: damaged checkpoint"
    remedy = "use the run's other checkpoint (best.pt / last.pt) or start a new run"
    saved_digest = state.pop(DIGEST_KEY, None)  # absent in files written before digests
    if saved_digest is not None and saved_digest != state_digest(state):
        raise CheckpointError(
            f"{damaged}: its contents do not match the digest written with it (changed or "
            f"corrupted after it was saved); {remedy}"
        )
    where = _nonfinite_tensor(state)
    if where is not None:
        raise CheckpointError(f"{damaged}: {where} holds NaN or inf; {remedy}")
    return state


def mismatch(module: torch.nn.Module, saved: dict[str, Any]) -> str | None:
    """One line on how a saved state dict differs from ``module``'s (missing and unexpected
    keys, shapes), None when it fits; for "this checkpoint is of another model" errors."""
    own = module.state_dict()
    if not isinstance(saved, dict):
        return f"expected a state dict, found {type(saved).__name__}"
    missing = [k for k in own if k not in saved]
    unexpected = [k for k in saved if k not in own]
    shapes = [
        f"{k} {list(saved[k].shape)} (the recipe's model: {list(v.shape)})"
        for k, v in own.items()
        if k in saved and isinstance(saved[k], torch.Tensor) and saved[k].shape != v.shape
    ]
    parts = []
    for label, keys in (("missing", missing), ("unexpected", unexpected), ("shape of", shapes)):
        if keys:
            more = f" and {len(keys) - 3} more" if len(keys) > 3 else ""
            parts.append(f"{label} {', '.join(keys[:3])}{more}")
    return "; ".join(parts) or None


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
