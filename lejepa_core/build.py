"""From a validated recipe to built components: the one place the registry is asked.

``model_spec(recipe, data=None)`` describes the run's input (observation shape and dtype,
feature names, the env's metadata) from opened data, the dataset file or the environment,
without generating anything; ``build_components`` and ``build_model`` build from it.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import attrs
import gymnasium
import h5py
import numpy as np
import torch
from torch import nn

from lejepa_core.data import schema
from lejepa_core.envinfo import EnvInfo
from lejepa_core.errors import DatasetError, UserInputError
from lejepa_core.files import destination
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
    if not path.is_file():
        raise DatasetError(f"{path}: not a file (data.path names an HDF5 trajectory file)")
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        reason = str(exc).split("(")[0].strip().rstrip(",") or type(exc).__name__
        raise DatasetError(f"{path}: not a readable HDF5 file ({reason})") from None
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
    except Exception as exc:  # noqa: BLE001 - whatever the env's constructor raises
        first = (str(exc).splitlines() or [""])[0]
        raise UserInputError(
            f"data.env_kwargs: {env_id!r} rejected its arguments {env_kwargs}: {first}"
        ) from None
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
                "action_space": _space_json(env.action_space),
            },
        }
    finally:
        env.close()


def _space_json(space: Any) -> dict[str, Any] | None:
    try:
        return schema.space_to_json(space)
    except ValueError:
        return None


def model_spec(recipe: Recipe, data: Any = None) -> ModelSpec:
    """The ``ModelSpec`` of a recipe's run: the one place a run's input is described.

    From ``data`` (an opened ``TrajectoryData``) when given, else from the dataset file at
    ``data.path`` when it exists, else from the recipe's env; nothing is generated.
    """
    if data is not None:
        found = {"obs_shape": data.obs_shape, "obs_dtype": data.obs_dtype, "attrs": data.attrs}
    elif destination(recipe.data.path).exists():  # a link that does not resolve: an error
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
    if isinstance(attrs_.get("action_space"), dict):  # the file's (or env's) action space
        metadata["action_space"] = attrs_["action_space"]
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
        latent_grid=tuple(recipe.model.latent_grid),
        latent_patch=recipe.model.latent_patch,
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
        except RuntimeError as exc:  # sizes no tensor can have (torch's overflow check)
            if "overflow" not in str(exc).lower():
                raise
            first = str(exc).splitlines()[0]
            raise UserInputError(
                f"{recipe.source or 'recipe'}: {table} ({config.name}): sizes too large ({first})"
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
        loss_weighting=recipe.train.loss_weighting,
    )


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def training_memory(recipe: Recipe, spec: ModelSpec) -> tuple[int, int]:
    """(parameters, bytes) training ``recipe`` needs at the least: weights, gradients and the
    two AdamW moments of every parameter, the EMA copy of the encoder, and the float32 windows
    of one training batch and of the fixed validation batches. Components are built on the
    meta device (nothing allocated); one that cannot be built there counts no parameters."""
    registry = get_registry()
    kinds = [("encoder", recipe.encoder), ("predictor", recipe.predictor)]
    kinds += [("quantizer", recipe.quantizer), ("masker", recipe.masker)]
    kinds += [("loss", config) for config in recipe.losses]
    counts = {}
    for kind, config in kinds:
        if config is None:
            continue
        try:
            with torch.device("meta"):
                module = registry.build(kind, config, spec)
        except Exception:  # noqa: BLE001 - needs real tensors to build (or is invalid: built later)
            continue
        counts[kind] = counts.get(kind, 0) + count_parameters(module)
    parameters = sum(counts.values())
    ema = counts.get("encoder", 0) if recipe.target.mode in ("ema", "frozen") else 0
    window = (spec.context_frames + 1) * (math.prod(spec.obs_shape) + spec.latent_dim)
    samples = recipe.train.batch_size + recipe.train.val_windows  # a batch + the val windows
    return parameters, 4 * (4 * parameters + ema) + 4 * window * samples


def check_memory(recipe: Recipe, spec: ModelSpec, device: torch.device | str) -> None:
    """``UserInputError`` with the figures when ``training_memory`` exceeds the memory
    available on ``device`` (an absurd ``hidden_dim`` or ``batch_size``, refused before any
    allocation fails). ``device`` may be a name (``train.device``); one this machine lacks
    (``check`` of a CUDA recipe on a laptop) is not checked, but the weights, built on the
    CPU, must fit there."""
    from lejepa_core.data.reader import available_memory
    from lejepa_core.training.runtime import resolve_device

    parameters, need = training_memory(recipe, spec)
    what = "training needs at least"
    if isinstance(device, str):
        try:
            device = resolve_device(device)
        except UserInputError:
            device, need, what = torch.device("cpu"), 4 * parameters, "building the model needs"
    available = available_memory(device)
    if need <= available:
        return
    gib = 2**30
    raise UserInputError(
        f"{recipe.source or 'recipe'}: {what} {need / gib:,.1f} GiB on {device} "
        f"({parameters:,} parameters; train.batch_size {recipe.train.batch_size:,}), "
        f"{available / gib:,.1f} GiB is available; lower the model's sizes or train.batch_size"
    )
