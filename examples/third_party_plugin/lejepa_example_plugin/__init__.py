"""An example third-party lejepa plugin: an encoder, a loss, a masker and an environment.

Every component is published by one ``register_*`` hook; the distribution's only link to
lejepa is the ``lejepa`` entry point in its pyproject.toml.
"""

from lejepa_core import hookimpl
from lejepa_example_plugin.components import DropoutMasker, LinearEncoder, LogCoshLoss


@hookimpl
def register_encoders(register):
    register("example_linear", LinearEncoder)


@hookimpl
def register_losses(register):
    register("example_logcosh", LogCoshLoss)


@hookimpl
def register_maskers(register):
    register("example_dropout", DropoutMasker)


@hookimpl
def register_envs(register):
    register(
        "example/DampedPendulum-v0",
        {"entry_point": "lejepa_example_plugin.pendulum:DampedPendulumEnv"},
    )
