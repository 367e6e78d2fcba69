"""``torch.compile`` with one compiled instance per mode of a module.

A step calls the same encoder code in several modes: the context encoder with gradients, the
EMA target encoder without (its parameters frozen), and both again under ``no_grad`` in eval
mode for validation. Dynamo keeps its compiled graphs on the code object it starts tracing
from; with one ``torch.compile`` per module (or per class: the context and target encoders are
one class) every new mode fails the guards of the graphs before it and *recompiles* (logged as
such, counted against ``torch._dynamo.config.recompile_limit``, 8 per code object, after which
the function falls back to eager), and every call checks the guards of the other modes' graphs.

``compile_per_mode`` gives each mode, ``(phase, grad enabled, module.training)``, its own
entry function with its own code object, hence its own cache: each mode compiles once, on its
first call, and no mode's graph is ever invalidated by another's. The phase is ``"train"``, or
what ``phase(...)`` sets around a block (``validate``: ``"validation"``, whose batch sizes differ
from training's). The module itself is not wrapped (``nn.Module.compile`` style:
``_compiled_call_impl``), so state-dict keys do not change.
"""

from __future__ import annotations

import contextlib
import contextvars
import types
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn

_PHASE = contextvars.ContextVar("lejepa_compile_phase", default="train")


@contextlib.contextmanager
def phase(name: str) -> Iterator[None]:
    """Calls inside the block use the compiled entries of phase ``name`` (their own graphs)."""
    token = _PHASE.set(name)
    try:
        yield
    finally:
        _PHASE.reset(token)


def _entry(module: nn.Module, *args: Any, **kwargs: Any) -> Any:
    return module._call_impl(*args, **kwargs)


def _fresh_entry(name: str) -> Callable[..., Any]:
    """A copy of ``_entry`` with a code object of its own (dynamo's cache lives on it)."""
    code = _entry.__code__.replace(co_name=name, co_qualname=name)
    return types.FunctionType(code, _entry.__globals__, name)


MAX_STATIC_ENTRIES = 8
"""Per module: entries with static shapes, one per mode and batch size; later modes and batch
sizes share one dynamic-shape entry per mode (evaluation with many batch sizes stays bounded)."""


def mode_name(module: nn.Module, phase_name: str, grad: bool, training: bool, rows: Any) -> str:
    """``<Class>_<phase>_<grad|nograd>_<train|eval>_b<rows>``: a mode's entry (dynamo's logs)."""
    mode = f"{'grad' if grad else 'nograd'}_{'train' if training else 'eval'}"
    return f"{type(module).__name__}_{phase_name}_{mode}_b{rows}"


def compile_per_mode(module: nn.Module, *, backend: str = "inductor") -> dict[str, Callable]:
    """Compile ``module`` with ``backend``: one compiled entry, with static shapes, per mode
    ``(phase, grad enabled, training)`` and leading size of the first tensor argument (the
    batch: a shared target encoder sees B target frames and B*W context frames), made on its
    first call; after ``MAX_STATIC_ENTRIES`` one dynamic-shape entry per mode. Returns the
    (live) dict of entries by ``mode_name``."""
    compiled: dict[tuple, Callable[..., Any]] = {}
    by_name: dict[str, Callable[..., Any]] = {}

    @torch.compiler.disable(recursive=False)
    def dispatch(*args: Any, **kwargs: Any) -> Any:
        first = next((a for a in args if isinstance(a, torch.Tensor)), None)
        mode = (_PHASE.get(), torch.is_grad_enabled(), module.training)
        key = (*mode, None if first is None or first.dim() == 0 else first.shape[0])
        entry = compiled.get(key)
        if entry is None and len(compiled) >= MAX_STATIC_ENTRIES:
            key = (*mode, "dynamic")
            entry = compiled.get(key)
        if entry is None:
            name = mode_name(module, *key)
            entry = compiled[key] = by_name[name] = torch.compile(
                _fresh_entry(name), backend=backend, dynamic=key[-1] == "dynamic"
            )
        return entry(module, *args, **kwargs)

    module._compiled_call_impl = dispatch
    return by_name
