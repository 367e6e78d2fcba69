"""What a trained model needs to know about its input, stored with every run.

``lejepa run`` writes it to ``RUN_DIR/model_input.json`` and into every checkpoint (entry
``model_input``), so a run builds, encodes and predicts without its data file
(``lejepa_core.load``), and evaluation opens the data with exactly the normalisation
statistics training used (never regenerating anything). Plain JSON data::

    {"format": 1, "env_id": "lejepa/BouncingBalls-v0", "env_kwargs": {"num_balls": 3},
     "obs_shape": [3, 4], "obs_dtype": "float32", "feature_names": ["x", "y", "vx", "vy"],
     "env": {... EnvInfo.to_metadata(): feature groups, dt, derivatives, cell_values ...},
     "normalization": {"mean": [...], "std": [...]} or null (observations used raw),
     "data": {"path": "/abs/data/balls.h5", "episodes": 200, "steps": 20000, "created": "..."}}
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import attrs

from lejepa_core.envinfo import EnvInfo
from lejepa_core.errors import CheckpointError, DatasetError, StorageError
from lejepa_core.files import write_failure
from lejepa_core.interfaces import ModelSpec

FILE = "model_input.json"
FORMAT = 1


def _plain(value: Any) -> Any:
    """JSON data only (tuples as lists): the same in the JSON file and the checkpoint."""
    return json.loads(json.dumps(value))


@attrs.frozen(kw_only=True)
class ModelInput:
    """A run's input: observation shape/dtype, names, env metadata, normalisation, data file.

    normalization: ``{"mean", "std"}`` (a list over the last observation axis, or one value
    for all elements) that raw observations are standardised with: those of the run's
    training episodes (``data.open_data``); None when they are used raw (integer
    observations, ``data.normalize = false``).
    data: the file the run trained on (absolute path, episodes, steps, creation time).
    """

    env_id: str
    env_kwargs: dict[str, Any] = attrs.field(factory=dict, converter=_plain)
    obs_shape: tuple[int, ...] = attrs.field(converter=lambda s: tuple(int(d) for d in s))
    obs_dtype: str
    feature_names: tuple[str, ...] = attrs.field(default=(), converter=lambda n: tuple(n or ()))
    env: dict[str, Any] = attrs.field(factory=dict, converter=_plain)
    normalization: dict[str, Any] | None = attrs.field(
        default=None, converter=lambda n: None if n is None else _plain(n)
    )
    data: dict[str, Any] = attrs.field(factory=dict, converter=_plain)

    @classmethod
    def from_data(cls, data: Any, spec: ModelSpec) -> ModelInput:
        """The input of a run on ``data`` (an open ``TrajectoryData``) built for ``spec``."""
        path = getattr(data, "path", None)
        return cls(
            env_id=str(getattr(data, "env_id", "")),
            env_kwargs=dict(getattr(data, "env_kwargs", {}) or {}),
            obs_shape=spec.obs_shape,
            obs_dtype=spec.obs_dtype,
            feature_names=spec.feature_names,
            env=spec.env.to_metadata(),
            normalization=getattr(data, "normalization", None),
            data={
                "path": "" if path is None else str(Path(path).resolve()),
                "episodes": int(getattr(data, "num_episodes", 0)),
                "steps": int(getattr(data, "num_steps", 0)),
                "created": str((getattr(data, "attrs", None) or {}).get("created", "")),
            },
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (also what the checkpoint holds: ``torch.load(weights_only=True)`` reads it)."""
        return {"format": FORMAT, **_plain(attrs.asdict(self))}

    @classmethod
    def from_dict(cls, value: dict[str, Any], *, where: str = "model_input") -> ModelInput:
        if value.get("format") != FORMAT:
            raise CheckpointError(
                f"{where}: model input format {value.get('format')!r}, this lejepa reads {FORMAT}"
            )
        names = {f.name for f in attrs.fields(cls)}
        try:
            return cls(**{k: v for k, v in value.items() if k in names})
        except (TypeError, ValueError) as exc:
            raise CheckpointError(f"{where}: not a valid model input ({exc})") from None

    def model_spec(self, recipe: Any) -> ModelSpec:
        """The ``ModelSpec`` the run's components were built for (``build.model_spec`` of the
        run's data, as it was when the run started)."""
        return ModelSpec(
            obs_shape=self.obs_shape,
            obs_dtype=self.obs_dtype,
            feature_names=self.feature_names,
            latent_dim=recipe.model.latent_dim,
            context_frames=recipe.data.context_frames,
            horizons=tuple(recipe.data.horizons),
            env=EnvInfo.from_metadata(self.env),
            latent_grid=tuple(recipe.model.latent_grid),
            latent_patch=recipe.model.latent_patch,
        )

    def check_data(self, data: Any) -> None:
        """``DatasetError`` unless ``data`` has the episodes and steps the run trained on."""
        want = (self.data.get("episodes"), self.data.get("steps"))
        found = (data.num_episodes, data.num_steps)
        if want[0] and want != found:
            raise DatasetError(
                f"{data.path}: holds {found[0]} episodes ({found[1]} steps), the run was trained "
                f"on {want[0]} ({want[1]} steps, {self.data.get('path') or 'another file'}): not "
                "the run's data file"
            )

    def write(self, run_dir: str | Path) -> Path:
        path = Path(run_dir) / FILE
        try:
            path.write_text(json.dumps(self.to_dict(), indent=2), encoding="utf-8")
        except OSError as exc:  # a full disk: one line naming the file
            raise StorageError(write_failure(path, exc)) from None
        return path

    @classmethod
    def read(cls, run_dir: str | Path) -> ModelInput | None:
        """``RUN_DIR/model_input.json``, or None when the run has none (written before it)."""
        path = Path(run_dir) / FILE
        if not path.is_file():
            return None
        try:
            value = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise CheckpointError(f"{path}: cannot read ({exc})") from None
        return cls.from_dict(value, where=str(path))
