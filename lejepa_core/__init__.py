"""lejepa: JEPA-style latent forward-dynamics models.

Importing this package builds no plugin manager and imports no plugin; the registry is
built lazily on first use (``lejepa_core.registry.get_registry()``).
"""

from lejepa_core.hookspecs import hookimpl, hookspec
from lejepa_core.interfaces import (
    Encoder,
    Loss,
    LossOutput,
    Masker,
    ModelSpec,
    NoParams,
    Predictor,
    Quantizer,
    QuantizerOutput,
    StepOutputs,
)

__version__ = "0.1.0"

__all__ = [
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
    "__version__",
    "hookimpl",
    "hookspec",
]
