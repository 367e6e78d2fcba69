"""The hook specifications of lejepa: the whole public plugin contract.

A plugin is a module (or object) with functions marked ``@lejepa_core.hookimpl`` whose names
are among the hooks below; it is published through the ``lejepa`` entry-point group::

    [project.entry-points.lejepa]
    my_plugin = "my_package.lejepa_plugin"

Every ``register_*`` hook receives a ``register(name, obj)`` callable. Components are
validated at registration (interface, attrs ``Params`` class); a duplicate name is an error
naming both plugins. Hook implementations must not declare default arguments.
"""

from __future__ import annotations

import pluggy

PROJECT_NAME = "lejepa"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


@hookspec
def register_encoders(register):
    """Register ``Encoder`` subclasses: ``register("mlp", MLPEncoder)``.

    An encoder maps ``obs: [B, *obs_shape]`` to ``z: [B, latent_dim]``.
    """


@hookspec
def register_predictors(register):
    """Register ``Predictor`` subclasses.

    A predictor maps ``z_context: [B, W, D]`` and ``k: [B]`` to ``[B, D]``, the predicted
    latent ``k`` steps after the last of the ``W`` context frames.
    """


@hookspec
def register_quantizers(register):
    """Register ``Quantizer`` subclasses: ``z: [B, D] -> QuantizerOutput``."""


@hookspec
def register_losses(register):
    """Register ``Loss`` subclasses: ``StepOutputs -> LossOutput``."""


@hookspec
def register_maskers(register):
    """Register ``Masker`` subclasses: ``(obs, generator) -> (masked_obs, mask)``."""


@hookspec
def register_envs(register):
    """Register gymnasium environments: ``register(env_id, spec)``.

    ``spec`` is an entry-point string (``"package.module:EnvClass"``) or a dict of keyword
    arguments for ``gymnasium.register`` (``entry_point``, ``vector_entry_point``,
    ``max_episode_steps``, ``kwargs``, ...). Ids should be namespaced: ``"myorg/MyEnv-v0"``.
    """


@hookspec
def register_commands(cli):
    """Add commands to the ``lejepa`` click group: ``cli.add_command(my_command)``."""


@hookspec
def register_grid_rules(register):
    """Register grid rules for the evaluation of integer-grid envs:
    ``register("arc", ArcGridRules)``.

    A rule class subclasses ``lejepa_core.eval.grid_rules.GridRules`` and is built as
    ``cls(env_info)``; an env names its rules in its metadata (``grid_rules = "arc"``). It says
    what an object is, how a blank grid looks and how the constant-velocity baseline moves
    objects (docs/envs.md#grid-rules). Envs that name none get the generic ``GridRules``.
    """
