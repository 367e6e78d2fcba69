"""What a run needs from its machine: the device, derived seeds, autocast, a stop flag.

Shared by training, evaluation and loading; nothing here knows about models or data.
"""

from __future__ import annotations

import contextlib
import hashlib
import signal
import threading
from typing import Any

import torch

from lejepa_core.errors import UserInputError


def resolve_device(name: str = "auto") -> torch.device:
    """'auto' -> cuda when available, else cpu; anything else as given (validated). On CUDA
    TF32 matmuls are switched on (``enable_tf32``)."""
    device = _parse_device(name)
    enable_tf32(device)
    return device


def _parse_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserInputError(
            f"--device: unknown device {name!r} (cpu, cuda, cuda:1, ...)"
        ) from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserInputError(f"--device {name}: CUDA is not available on this machine")
    return device


def enable_tf32(device: torch.device) -> None:
    """TF32 matmuls on CUDA (``set_float32_matmul_precision("high")``): the fp32 parts of a
    step (losses, fp32 runs) on tensor cores; nothing changes on CPU."""
    if device.type == "cuda":
        torch.set_float32_matmul_precision("high")


def derive_seed(*parts: object) -> int:
    """A 63-bit seed from any parts (stable across processes and Python versions)."""
    digest = hashlib.sha256(repr(parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def autocast_dtype(device: torch.device, precision: str) -> torch.dtype | None:
    """The autocast dtype of ``train.precision`` on ``device`` (None: plain fp32).

    ``auto``: bf16 on a CUDA device that supports it (``torch.cuda.is_bf16_supported()``),
    fp16 (with a GradScaler: ``grad_scaler``) on one that does not, fp32 on other devices;
    ``bf16``: bf16, a ``UserInputError`` on a CUDA device without bf16; ``fp16``: fp16 with a
    GradScaler on any device (CPU too: the path is tested there); ``fp32``: None.
    """
    if precision == "fp32" or (precision == "auto" and device.type != "cuda"):
        return None
    if precision == "fp16":
        return torch.float16
    supported = device.type != "cuda" or torch.cuda.is_bf16_supported()
    if precision == "bf16" and not supported:
        raise UserInputError(
            "train.precision = 'bf16': this CUDA device does not support bf16; use 'auto' "
            "(fp16 with a GradScaler there), 'fp16' or 'fp32'"
        )
    return torch.bfloat16 if supported else torch.float16


def grad_scaler(device: torch.device, precision: str) -> torch.amp.GradScaler | None:
    """A ``torch.amp.GradScaler`` when ``precision`` autocasts to fp16 on ``device`` (fp16
    gradients underflow without loss scaling), else None. Its steps with inf/NaN gradients are
    skipped like any non-finite step (``guard.py``) and its state travels with the checkpoint."""
    if autocast_dtype(device, precision) != torch.float16:
        return None
    return torch.amp.GradScaler(device.type)


def autocast(device: torch.device, precision: str):
    """``torch.autocast`` with ``autocast_dtype(device, precision)``, or a null context."""
    dtype = autocast_dtype(device, precision)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


class StopFlag:
    """Set by SIGINT / SIGTERM; the loop checks it once per step, saves and exits."""

    def __init__(self) -> None:
        self.requested = False
        self.signal_name = ""
        self._previous: dict[int, Any] = {}

    def _handle(self, signum, frame) -> None:  # noqa: ARG002
        if self.requested:  # second Ctrl-C: give up at once (lejepa_core.cli: 130 / 143)
            raise KeyboardInterrupt(signal.Signals(signum).name)
        self.requested = True
        self.signal_name = signal.Signals(signum).name

    def __enter__(self) -> StopFlag:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
