"""From a validated recipe to built components: the one place the registry is asked.

``model_spec(recipe, data=None)`` describes the run's input (observation shape and dtype,
feature names, the env's metadata) from opened data, the dataset file or the environment,
without generating anything; ``build_components`` and ``build_model`` build from it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import attrs
import gymnasium
import h5py
import numpy as np
from torch import nn

from lejepa_core.data import schema
from lejepa_core.envinfo import EnvInfo
from lejepa_core.errors import DatasetError, UserInputError
from lejepa_core.interfaces import ModelSpec
from lejepa_core.recipe import Recipe
from lejepa_core.registry import ensure_envs_registered, get_registry
from lejepa_core.training.step import JEPAModel


@attrs.define(kw_only=True)
class Components:
    """The built modules of a run. ``losses`` are in recipe order (``recipe.loss_labels()``)."""

    encoder: nn.Module
    predictor: nn.Module
    masker: nn.Module
    losses: list[nn.Module]
    quantizer: nn.Module | None = None


def _describe_file(path: Path) -> dict[str, Any]:
    """Observation shape/dtype and decoded root attributes of a dataset file (nothing loaded)."""
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise DatasetError(f"{path}: not a readable HDF5 file ({exc})") from None
    with f:
        file_attrs = schema.validate(path, f, scan_values=False)
        obs = f[schema.OBSERVATIONS]
        return {
            "obs_shape": tuple(int(s) for s in obs.shape[1:]),
            "obs_dtype": str(obs.dtype),
            "attrs": file_attrs,
        }


def _describe_env(env_id: str, env_kwargs: dict[str, Any]) -> dict[str, Any]:
    """Observation shape/dtype and metadata of an env (made once, closed)."""
    ensure_envs_registered()
    try:
        env = gymnasium.make(env_id, **env_kwargs)
    except gymnasium.error.Error as exc:
        raise UserInputError(f"data.env_id: cannot make environment {env_id!r}: {exc}") from None
    except TypeError as exc:
        raise UserInputError(f"data.env_kwargs: {env_id!r} rejected its arguments: {exc}") from None
    try:
        space = env.observation_space
        metadata = dict(env.metadata)
        return {
            "obs_shape": tuple(space.shape),
            "obs_dtype": str(space.dtype),
            "attrs": {
                "feature_names": list(metadata.get("feature_names") or ()),
                "state_feature_names": list(metadata.get("state_feature_names") or ()),
                "env_metadata": metadata,
            },
        }
    finally:
        env.close()


def model_spec(recipe: Recipe, data: Any = None) -> ModelSpec:
    """The ``ModelSpec`` of a recipe's run: the one place a run's input is described.

    From ``data`` (an opened ``TrajectoryData``) when given, else from the dataset file at
    ``data.path`` when it exists, else from the recipe's env; nothing is generated.
    """
    if data is not None:
        found = {"obs_shape": data.obs_shape, "obs_dtype": data.obs_dtype, "attrs": data.attrs}
    elif Path(recipe.data.path).exists():
        found = _describe_file(Path(recipe.data.path))
    else:
        found = _describe_env(recipe.data.env_id, dict(recipe.data.env_kwargs))
    attrs_ = found["attrs"]
    metadata = dict(attrs_.get("env_metadata") or {})
    # the file's own names win over the metadata's (converted files have no env metadata)
    metadata["feature_names"] = attrs_.get("feature_names") or metadata.get("feature_names")
    metadata["state_feature_names"] = attrs_.get("state_feature_names") or metadata.get(
        "state_feature_names"
    )
    dtype = str(found["obs_dtype"]).replace("torch.", "")
    if "cell_values" not in metadata and "pad_value" in metadata and "max" in attrs_:
        # a padded grid from an env that did not publish cell_values yet (ArcGrid files
        # written before it did): values 0 .. the largest value in the file
        metadata["cell_values"] = int(np.max(np.asarray(attrs_["max"]))) + 1
    return ModelSpec(
        obs_shape=tuple(int(s) for s in found["obs_shape"]),
        obs_dtype=dtype,
        feature_names=tuple(attrs_.get("feature_names") or ()),
        latent_dim=recipe.model.latent_dim,
        context_frames=recipe.data.context_frames,
        horizons=tuple(recipe.data.horizons),
        env=EnvInfo.from_metadata(metadata),
    )


def build_components(recipe: Recipe, spec: ModelSpec, registry: Any = None) -> Components:
    """Build every component of ``recipe`` for ``spec``.

    A component whose constructor rejects its parameters (``ValueError``) becomes a
    ``UserInputError`` naming the recipe table.
    """
    if registry is None:
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


def build_model(recipe: Recipe, spec: ModelSpec) -> JEPAModel:
    """The trainable model of a run (context encoder, predictor, quantizer, masker, losses)."""
    components = build_components(recipe, spec)
    return JEPAModel(
        encoder=components.encoder,
        predictor=components.predictor,
        masker=components.masker,
        losses=components.losses,
        weights=[c.weight for c in recipe.losses],
        labels=recipe.loss_labels(),
        quantizer=components.quantizer,
        shared_target=recipe.target.mode == "shared",
        mask_frames=recipe.train.mask_frames,
    )


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
