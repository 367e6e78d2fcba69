"""lejepa: JEPA-style latent forward-dynamics models.

Importing this package builds no plugin manager, imports no plugin and does not import torch
(``lejepa --version`` and ``import lejepa_core.cli`` start fast): the component interfaces
(``Encoder``, ``ModelSpec``, ...) load from ``lejepa_core.interfaces`` on first use, and the
registry is built lazily too (``lejepa_core.registry.get_registry()``). ``lejepa_core.load(run_dir)``
returns a trained run's ``WorldModel`` (``lejepa_core.model``, docs/api.md), also loaded on first use.
"""

from typing import Any

from lejepa_core.hookspecs import hookimpl, hookspec

__version__ = "0.1.0"

_INTERFACES = (
    "Encoder",
    "Loss",
    "LossOutput",
    "Masker",
    "ModelSpec",
    "NoParams",
    "Predictor",
    "Quantizer",
    "QuantizerOutput",
    "StepOutputs",
)

_MODEL = ("WorldModel", "load")

__all__ = [*_INTERFACES, *_MODEL, "__version__", "hookimpl", "hookspec"]


def __getattr__(name: str) -> Any:
    """``from lejepa_core import Encoder``: the interfaces module (and torch) on first use;
    ``lejepa_core.load``/``WorldModel`` from ``lejepa_core.model`` likewise."""
    if name in _INTERFACES:
        from lejepa_core import interfaces

        return getattr(interfaces, name)
    if name in _MODEL:
        from lejepa_core import model

        return getattr(model, name)
    raise AttributeError(f"module 'lejepa_core' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_INTERFACES, *_MODEL})
