"""Export a lejepa trajectory file as a Minari dataset: ``lejepa export --minari SRC --out DIR``.

Writes minari 0.5's HDF5 layout (the one ``convert.py`` reads) directly, so exporting needs no
minari; ``minari.load_dataset(ID)`` opens the result when ``DIR`` is
``$MINARI_DATASETS_PATH/ID`` (default root ``~/.minari/datasets``), and
``minari.MinariDataset(DIR / "data")`` opens it anywhere::

    DIR/data/metadata.json    dataset_id, minari_version "0.5.4", data_format "hdf5",
                              observation_space / action_space (serialised spaces), env_spec,
                              total_episodes, total_steps, jpeg_encoding false (arrays as is)
    DIR/data/main_data.hdf5   /episode_{i}: observations [L, ...] (the episode's L observations),
                              actions, rewards (float64), terminations, truncations [L - 1];
                              infos/state [L, ...] when the file has /states; attrs id, seed,
                              total_steps

Each of our episodes (L observations, L - 1 actions plus a padding row) becomes one Minari
episode of L - 1 steps. Its last step carries ``/episode_ends``: terminated -> terminations,
truncated -> truncations, both when both; an episode cut at ``steps`` (or a file without
``/episode_ends``) is marked truncated, which is what a time limit is in Minari's terms (so a
round trip turns "cut" into "truncated"). Episode seeds are written where they reset that
episode alone (not for ``seeding = "per-block"`` files, not -1). Actions are cast to the
action space's dtype (int64 for Discrete); rewards are written as float64.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import secrets
import shutil
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from lejepa_core import __version__
from lejepa_core.data import schema
from lejepa_core.errors import DatasetError, UserInputError
from lejepa_core.progress import progress_bar

MINARI_VERSION = "0.5.4"  # the layout written: minari 0.5's HDF5 storage
BLOCK_BYTES = 32 * 2**20  # observations read per block of episodes
_ID = re.compile(r"^(?:[-_\w][-_\w/]*[-_\w]+/)?[-_\w]+?-v\d+$")  # minari's dataset id form


def default_dataset_id(out: Path) -> str:
    """``DIR`` relative to the Minari root when it lies under it (``namespace/name-vN``),
    else ``lejepa/<DIR name>`` (``-v0`` appended when it has no version)."""
    root = Path(os.environ.get("MINARI_DATASETS_PATH") or Path.home() / ".minari" / "datasets")
    try:
        return out.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        name = out.name if re.search(r"-v\d+$", out.name) else f"{out.name}-v0"
        return f"lejepa/{name}"


def source_file(source: str | Path) -> Path:
    """The trajectory file of ``source``: a file, or a run directory's data file (its recipe's
    ``data.path``, else the path its ``model_input.json`` recorded)."""
    source = Path(source)
    if source.is_file():
        return source
    if not source.is_dir():
        raise UserInputError(f"{source}: no such file or run directory")
    from lejepa_core.model_input import ModelInput
    from lejepa_core.recipe import load_recipe

    resolved = source / "resolved_recipe.toml"
    if not resolved.is_file():
        raise UserInputError(f"{source}: not a run directory (no resolved_recipe.toml)")
    candidates = [Path(load_recipe(resolved).data.path)]
    stored = ModelInput.read(source)
    if stored is not None and stored.data.get("path"):
        candidates.append(Path(stored.data["path"]))
    found = next((p for p in candidates if p.is_file()), None)
    if found is None:
        raise DatasetError(f"{candidates[0]}: no such file (the data file of run {source})")
    return found


def _spaces(f: h5py.File, attrs: dict[str, Any]) -> dict[str, dict]:
    """Observation and action space (``schema.space_to_json`` form): the file's, else inferred
    from the arrays (Box without bounds; integer actions: Discrete/MultiDiscrete of the values)."""
    out = {}
    for key, name in (("observation_space", schema.OBSERVATIONS), ("action_space", schema.ACTIONS)):
        if isinstance(attrs.get(key), dict):
            out[key] = attrs[key]
            continue
        ds = f[name]
        if ds.dtype.kind in "iu" and name == schema.ACTIONS:
            values = schema.read_all(f.filename, ds)
            low = values.min(axis=0) if len(values) else np.zeros(ds.shape[1:], np.int64)
            high = values.max(axis=0) if len(values) else low
            if ds.ndim == 1:
                out[key] = {
                    "type": "Discrete",
                    "dtype": "int64",
                    "start": int(low),
                    "n": int(high - low + 1),
                }
            else:
                nvec = (high - low + 1).tolist()
                out[key] = {
                    "type": "MultiDiscrete",
                    "dtype": "int64",
                    "nvec": nvec,
                    "start": low.tolist(),
                }
            continue
        info = np.finfo(ds.dtype) if ds.dtype.kind == "f" else np.iinfo(ds.dtype)
        low = -np.inf if ds.dtype.kind == "f" else info.min
        high = np.inf if ds.dtype.kind == "f" else info.max
        shape = list(ds.shape[1:])
        out[key] = {
            "type": "Box",
            "dtype": str(ds.dtype),
            "shape": shape,
            "low": np.full(shape, low).tolist(),
            "high": np.full(shape, high).tolist(),
        }
    return out


def _env_spec(env_id: str, env_kwargs: dict) -> str | None:
    """The gymnasium EnvSpec JSON of the file's env (with its kwargs), None when unknown."""
    import gymnasium

    from lejepa_core.registry import ensure_envs_registered

    ensure_envs_registered()
    try:
        spec = gymnasium.spec(env_id)
        return dataclasses.replace(spec, kwargs={**spec.kwargs, **env_kwargs}).to_json()
    except Exception:  # noqa: BLE001 - an unknown id or a callable entry point: no env_spec
        return None


def export_minari(
    source: str | Path, *, out: str | Path, dataset_id: str | None = None, progress: bool = True
) -> Path:
    """Write the trajectory file of ``source`` (a file or a run directory) as a Minari dataset
    in ``out`` (a new directory, created atomically); returns ``out``."""
    path, out = source_file(source), Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserInputError(f"{out} already exists; choose a new directory")
    dataset_id = dataset_id or default_dataset_id(out)
    if not _ID.match(dataset_id):
        raise UserInputError(
            f"dataset id {dataset_id!r} is not of Minari's form (namespace/)name-vN"
        )
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise schema.fail(
            path, f"not a readable HDF5 file (truncated or corrupt?): {exc}"
        ) from None
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    try:
        with f:
            attrs = schema.validate(path, f, scan_values=False)
            (tmp / "data").mkdir(parents=True)
            metadata = _write_episodes(f, attrs, tmp / "data" / "main_data.hdf5", progress)
        metadata.update(
            dataset_id=dataset_id,
            minari_version=MINARI_VERSION,
            data_format="hdf5",
            jpeg_encoding=False,
            algorithm_name=f"lejepa generate --policy {attrs['policy']}"
            if "policy" in attrs
            else "",
            description=f"exported by lejepa {__version__} from {path.name} "
            f"({attrs.get('env_id') or 'unknown env'}, {attrs.get('num_episodes')} episodes)",
        )
        env_spec = _env_spec(str(attrs.get("env_id", "")), dict(attrs.get("env_kwargs") or {}))
        if env_spec is not None:
            metadata["env_spec"] = env_spec
        metadata["dataset_size"] = round(sum(p.stat().st_size for p in tmp.rglob("*")) / 1e6, 1)
        (tmp / "data" / "metadata.json").write_text(json.dumps(metadata), encoding="utf-8")
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _write_episodes(f: h5py.File, attrs: dict, main: Path, progress: bool) -> dict[str, Any]:
    """The ``episode_{i}`` groups of ``main``; returns the metadata that describes them."""
    spaces = _spaces(f, attrs)
    action_dtype = np.dtype(spaces["action_space"].get("dtype", f[schema.ACTIONS].dtype))
    offsets = f[schema.EPISODE_OFFSETS][...].astype(np.int64)
    seeds = f[schema.EPISODE_SEEDS][...].astype(np.int64)
    if attrs.get("seeding") == "per-block":
        seeds[:] = -1  # one reset seeded the whole block: no seed of this episode alone
    ends = f[schema.EPISODE_ENDS][...] if schema.EPISODE_ENDS in f else None
    names = [
        n for n in (schema.OBSERVATIONS, schema.ACTIONS, schema.REWARDS, schema.STATES) if n in f
    ]
    row_bytes = max(1, sum(f[n].dtype.itemsize * int(np.prod(f[n].shape[1:])) for n in names))
    total_steps, episodes = 0, len(offsets) - 1
    with (
        h5py.File(main, "w", track_order=True) as out,
        progress_bar(progress, episodes, label="exporting episodes") as advance,
    ):
        first = 0
        while first < episodes:  # whole episodes, about BLOCK_BYTES at a time
            last = (
                int(np.searchsorted(offsets, offsets[first] + BLOCK_BYTES // row_bytes, "right"))
                - 1
            )
            last = min(max(last, first + 1), episodes)
            lo, hi = offsets[first], offsets[last]
            block = {n: _rows(f, n, lo, hi) for n in names}
            for e in range(first, last):
                a, b = offsets[e] - lo, offsets[e + 1] - lo
                steps = int(b - a - 1)
                flags = schema.END_CUT if ends is None else int(ends[e])
                g = out.create_group(f"episode_{e}")
                g.attrs["id"] = e
                g.attrs["total_steps"] = steps
                if seeds[e] >= 0:
                    g.attrs["seed"] = int(seeds[e])
                g["observations"] = block[schema.OBSERVATIONS][a:b]
                g["actions"] = block[schema.ACTIONS][a : b - 1].astype(action_dtype)
                rewards = (
                    block[schema.REWARDS][a : b - 1] if schema.REWARDS in block else np.zeros(steps)
                )
                g["rewards"] = rewards.astype(np.float64)
                terminations = np.zeros(steps, bool)
                truncations = np.zeros(steps, bool)
                if steps:
                    terminations[-1] = bool(flags & schema.END_TERMINATED)
                    truncations[-1] = bool(flags & schema.END_TRUNCATED) or flags == schema.END_CUT
                g["terminations"], g["truncations"] = terminations, truncations
                if schema.STATES in block:
                    g.create_group("infos")["state"] = block[schema.STATES][a:b]
                total_steps += steps
            advance(advance=last - first)
            first = last
    return {
        "total_episodes": episodes,
        "total_steps": total_steps,
        "observation_space": json.dumps(spaces["observation_space"]),
        "action_space": json.dumps(spaces["action_space"]),
    }


def _rows(f: h5py.File, name: str, lo: int, hi: int) -> np.ndarray:
    """Rows ``lo:hi`` of dataset ``name``, read failures as ``DatasetError``."""
    try:
        return f[name][lo:hi]
    except (OSError, RuntimeError, ValueError) as exc:
        raise schema.fail(
            f.filename, f"cannot read /{name} (truncated or corrupt file?): {exc}"
        ) from None
