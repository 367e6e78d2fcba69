"""Embedding datasets: a trajectory file whose observations are vectors ``[T, D]`` computed by
a user's own encoder (a frozen V-JEPA 2, a CLIP, ...) from another trajectory file's frames.

Everything but ``/observations`` is copied: actions, rewards, the true ``/states``, the episode
offsets and seeds, the env's metadata (so probes, baselines and pictures still know the feature
groups, ``dt``, ``box``), and the env id (for provenance: ``data.path`` must exist, a recipe
never regenerates an embedding file). A recipe trains on it with the ``identity`` encoder and
``target.mode = "frozen"`` (docs/embeddings.md)::

    embed_file("data/frames.h5", "data/frames_emb.h5", my_encoder, batch=1024)

Shape legend: ``R`` rows read at a time, ``*obs`` one source observation, ``D`` embedding size.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np

from lejepa_core.data import schema
from lejepa_core.data.writer import TrajectoryWriter, make_parent_dir
from lejepa_core.errors import UserInputError

COPIED_ATTRS = (
    "env_id",
    "env_kwargs",
    "state_feature_names",
    "action_space",
    "policy",
    "seed",
    "steps",
    "env_metadata",
)
"""Root attributes of the source file that an embedding file keeps."""


class EmbeddingError(UserInputError):
    """The encoder's output does not fit an embedding file (shape or values)."""


def _metadata(source_attrs: dict) -> str:
    """The source's env metadata with the observation described as an embedding."""
    metadata = source_attrs.get("env_metadata") or {}
    metadata = dict(json.loads(metadata) if isinstance(metadata, str) else metadata)
    metadata.update(feature_names=[], feature_groups={}, observation_axes=["embedding"])
    return json.dumps(metadata)


def embed_file(
    source: str | Path,
    out: str | Path,
    encode: Callable[[np.ndarray], np.ndarray],
    *,
    batch: int = 1024,
    description: str = "",
) -> Path:
    """Write ``out``: ``source`` with every observation replaced by ``encode(obs)``.

    encode: ``[R, *obs]`` raw observations (the file's dtype) -> ``[R, D]`` float embeddings,
    called on whole episodes, about ``batch`` rows at a time. ``description`` is stored as the
    root attribute ``embedding`` (say which encoder made the vectors). Atomic, like every writer.
    """
    source = Path(source)
    with h5py.File(source, "r") as f:
        attrs = schema.validate(source, f, scan_values=False)
        offsets = f[schema.EPISODE_OFFSETS][...].astype(np.int64)
        seeds = f[schema.EPISODE_SEEDS][...]
        has_states, has_rewards = schema.STATES in f, schema.REWARDS in f
        first = np.asarray(encode(f[schema.OBSERVATIONS][:1]))
        if first.ndim != 2 or first.shape[0] != 1 or first.dtype.kind != "f":
            raise EmbeddingError(
                f"{source}: encode must map [R, *obs] to float [R, D]; got {first.dtype} "
                f"{list(first.shape)} for one row"
            )
        dim = int(first.shape[1])
        root = {key: attrs[key] for key in COPIED_ATTRS if key in attrs}
        root.update(
            env_metadata=_metadata(attrs),
            feature_names=[],
            embedding=description,
            embedded_from=str(source),
        )
        make_parent_dir(out)
        writer = TrajectoryWriter(
            out,
            obs_shape=(dim,),
            obs_dtype="float32",
            action_shape=f[schema.ACTIONS].shape[1:],
            action_dtype=str(f[schema.ACTIONS].dtype),
            state_shape=f[schema.STATES].shape[1:] if has_states else None,
            state_dtype=str(f[schema.STATES].dtype) if has_states else None,
            rewards=has_rewards,
            reward_dtype=str(f[schema.REWARDS].dtype) if has_rewards else "float32",
            attrs=root,
        )
        with writer:
            episode = 0
            while episode < len(seeds):
                stop = episode + 1  # whole episodes, about `batch` rows
                while stop < len(seeds) and offsets[stop + 1] - offsets[episode] <= batch:
                    stop += 1
                rows = slice(int(offsets[episode]), int(offsets[stop]))
                z = np.asarray(encode(f[schema.OBSERVATIONS][rows]), dtype=np.float32)
                if z.shape != (rows.stop - rows.start, dim):
                    raise EmbeddingError(
                        f"{source}: encode returned {list(z.shape)} for "
                        f"{rows.stop - rows.start} rows, expected [{rows.stop - rows.start}, {dim}]"
                    )
                writer.append(
                    z,
                    f[schema.ACTIONS][rows],
                    lengths=np.diff(offsets[episode : stop + 1]),
                    seeds=seeds[episode:stop],
                    rewards=f[schema.REWARDS][rows] if has_rewards else None,
                    states=f[schema.STATES][rows] if has_states else None,
                )
                episode = stop
    return Path(out)
