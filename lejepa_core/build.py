"""From a validated recipe to built components: the one place the registry is asked.

``model_spec_for(recipe)`` reads what the components need to know about the data (observation
shape and dtype, feature names) from the dataset file when it exists, else from the
environment's observation space, without generating anything.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import attrs
from torch import nn

from lejepa_core.errors import DatasetError, UserInputError
from lejepa_core.interfaces import ModelSpec
from lejepa_core.recipe import Recipe


@attrs.define(kw_only=True)
class Components:
    """The built modules of a run. ``losses`` are in recipe order (``recipe.loss_labels()``)."""

    encoder: nn.Module
    predictor: nn.Module
    masker: nn.Module
    losses: list[nn.Module]
    quantizer: nn.Module | None = None


def _spec_from_file(path: Path) -> dict[str, Any]:
    import h5py

    try:
        with h5py.File(path, "r") as f:
            attrs_ = dict(f.attrs)
            obs = f["observations"]
            return {
                "obs_shape": tuple(int(s) for s in obs.shape[1:]),
                "obs_dtype": str(obs.dtype),
                "feature_names": tuple(json.loads(attrs_.get("feature_names", "[]"))),
            }
    except (OSError, KeyError, ValueError) as exc:
        raise DatasetError(f"{path}: cannot read the dataset's observation shape ({exc})") from None


def _spec_from_env(env_id: str, env_kwargs: dict[str, Any]) -> dict[str, Any]:
    import gymnasium

    from lejepa_core.registry import ensure_envs_registered

    ensure_envs_registered()
    try:
        env = gymnasium.make(env_id, **env_kwargs)
    except gymnasium.error.Error as exc:
        raise UserInputError(f"data.env_id: cannot make environment {env_id!r}: {exc}") from None
    except TypeError as exc:
        raise UserInputError(f"data.env_kwargs: {env_id!r} rejected its arguments: {exc}") from None
    try:
        space = env.observation_space
        names = env.metadata.get("feature_names", ()) or ()
        return {
            "obs_shape": tuple(space.shape),
            "obs_dtype": str(space.dtype),
            "feature_names": tuple(names),
        }
    finally:
        env.close()


def model_spec_for(recipe: Recipe) -> ModelSpec:
    """The ``ModelSpec`` of a recipe's run (from the dataset file, else from its env)."""
    path = Path(recipe.data.path)
    found = (
        _spec_from_file(path)
        if path.exists()
        else _spec_from_env(recipe.data.env_id, recipe.data.env_kwargs)
    )
    return ModelSpec(
        latent_dim=recipe.model.latent_dim,
        context_frames=recipe.data.context_frames,
        horizons=tuple(recipe.data.horizons),
        **found,
    )


def build_components(recipe: Recipe, spec: ModelSpec, registry: Any = None) -> Components:
    """Build every component of ``recipe`` for ``spec``.

    A component whose constructor rejects its parameters (``ValueError``) becomes a
    ``UserInputError`` naming the recipe table.
    """
    if registry is None:
        from lejepa_core.registry import get_registry

        registry = get_registry()

    def build(kind: str, table: str, config: Any) -> nn.Module:
        try:
            return registry.build(kind, config, spec)
        except ValueError as exc:
            raise UserInputError(
                f"{recipe.source or 'recipe'}: {table} ({config.name}): {exc}"
            ) from None

    return Components(
        encoder=build("encoder", "encoder", recipe.encoder),
        predictor=build("predictor", "predictor", recipe.predictor),
        quantizer=build("quantizer", "quantizer", recipe.quantizer) if recipe.quantizer else None,
        masker=build("masker", "masker", recipe.masker),
        losses=[build("loss", f"losses[{i}]", c) for i, c in enumerate(recipe.losses)],
    )


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
