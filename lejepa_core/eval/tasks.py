"""Held-out episodes scored one by one: ``lejepa eval RUN --held-out FILE`` (``eval_tasks.json``).

For data whose episodes are tasks (ARC: demonstrations then a test pair), each episode of
``FILE`` (another file of the run's env, e.g. ARC's evaluation tasks) gives one query: the last
window whose target the data allows (``/target_allowed``; the test output), at the run's
smallest horizon. Per query and in total, for grid observations (``cell_values``):

* ``model_probe``: the run's grid probe (fitted on the run's training targets) decodes the
  predicted latent; ``exact`` = the whole observation (pad included, so the size too) matches.
* ``probe_floor``: the probe on the true target latent (what decoding alone can reach).
* ``copy_input``: the last context frame (the query input) as the answer.
* ``nearest_train_output``: the target of the run's data window whose last context frame is
  nearest (fewest differing cells) to the query input: a retrieval baseline with no model.
* ``err_signal``: mean |latent - target latent| / std of the target latents (all elements),
  for the prediction (``model``) and the query input's latent (``copy_input``).
* decoder-free retrieval among the held-out queries' target latents (``retrieval_top1``): the
  nearest target latent to the prediction, correct when its grid equals the true one;
  ``copy_input`` retrieves with the query input's latent; ``chance`` is the expected top-1 of
  a random pick (identical grids count).

Rows carry the file's episode keys (``/episode_keys``, e.g. ``task_id``, ``pair_index``), so
every figure can be traced to a task. Shape legend: ``N`` queries, ``D`` latent_dim.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from lejepa_core.data.masked_windows import last_windows
from lejepa_core.data.reader import TrajectoryData
from lejepa_core.errors import DatasetError

EVAL_TASKS = "eval_tasks.json"
BATCH = 256


def query_windows(data: TrajectoryData, context_frames: int, k: int) -> dict[str, torch.Tensor]:
    """Every episode's last allowed window: ``episode`` [N], ``context_rows`` [N, W],
    ``target_rows`` [N] (rows of ``data``)."""
    episodes = torch.arange(data.num_episodes)
    local, t = last_windows(data.episode_offsets, data.target_allowed, episodes, context_frames, k)
    row_t = data.episode_offsets[local] + t  # [N] last context row
    context_rows = row_t[:, None] + torch.arange(-context_frames + 1, 1)[None, :]  # [N, W]
    return {"episode": local, "context_rows": context_rows, "target_rows": row_t + k}


@torch.no_grad()
def encode_queries(run, data: TrajectoryData, windows: dict, k: int) -> dict[str, torch.Tensor]:
    """Latents of the queries: ``z_hat`` (prediction), ``z_target``, ``z_input`` (target
    encoder on the query input) [N, D]; raw ``target`` and ``input`` observations [N, *obs]."""
    out: dict[str, list] = {"z_hat": [], "z_target": [], "z_input": [], "target": [], "input": []}
    rows_c, rows_t = windows["context_rows"], windows["target_rows"]
    for start in range(0, len(rows_t), BATCH):
        c, tr = rows_c[start : start + BATCH], rows_t[start : start + BATCH]
        context, _ = data.rows(c.reshape(-1))
        context = context.reshape(*c.shape, *context.shape[1:]).to(run.device)
        target, _ = data.rows(tr)
        target = target.to(run.device)
        ks = torch.full((len(tr),), k, dtype=torch.int64, device=run.device)
        out["z_hat"].append(run.model.predict(context, ks).float())
        out["z_target"].append(run.target_encoder(target).float())
        out["z_input"].append(run.target_encoder(context[:, -1]).float())
        raw_c = data.raw_observations(c[:, -1].numpy())
        out["input"].append(torch.as_tensor(raw_c))
        out["target"].append(torch.as_tensor(data.raw_observations(tr.numpy())))
    return {key: torch.cat(parts).cpu() for key, parts in out.items()}


def same_grid(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """[N] bool: row i of ``a`` equals row i of ``b`` in every element ([N, *obs] each)."""
    return (a.reshape(len(a), -1) == b.reshape(len(b), -1)).all(1)


def retrieval_correct(
    z: torch.Tensor, candidates: torch.Tensor, grids: torch.Tensor
) -> torch.Tensor:
    """[N] bool: the candidate latent nearest (L2) to ``z[i]`` ([N, D]; candidates [N, D]) has
    the grid of query i (``grids`` [N, *obs]; identical grids count as the same answer)."""
    nearest = torch.cdist(z.double(), candidates.double()).argmin(1)  # [N]
    return same_grid(grids[nearest], grids)


def chance_top1(grids: torch.Tensor) -> float:
    """Expected top-1 retrieval of a uniform random pick among ``grids`` [N, *obs]."""
    flat = grids.reshape(len(grids), -1)
    equal = (flat[:, None, :] == flat[None, :, :]).all(-1)  # [N, N]
    return float(equal.float().mean())


def nearest_input_targets(
    queries: torch.Tensor, inputs: torch.Tensor, targets: torch.Tensor
) -> torch.Tensor:
    """For each query input [N, *obs], the target of the reference window whose input
    (``inputs`` [M, *obs]) differs in the fewest cells; ``targets`` [M, *obs] -> [N, *obs]."""
    flat = inputs.reshape(len(inputs), -1)
    picks = [int((flat != q.reshape(1, -1)).sum(1).argmin()) for q in queries]
    return targets[torch.tensor(picks, dtype=torch.int64)]


def _reference(run, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs [M, *obs], targets [M, *obs]) of every allowed window of the run's data."""
    from lejepa_core.data.masked_windows import allowed_windows

    data, w = run.data, run.recipe.data.context_frames
    allowed = data.target_allowed
    if allowed is None:
        allowed = torch.ones(data.num_steps, dtype=torch.bool)
    episodes = torch.arange(data.num_episodes)
    local, t = allowed_windows(data.episode_offsets, allowed, episodes, w, k)
    row_t = (data.episode_offsets[local] + t).numpy()
    inputs = torch.as_tensor(data.raw_observations(row_t))
    return inputs, torch.as_tensor(data.raw_observations(row_t + k))


def score(run, encoded: dict, probe, reference) -> tuple[dict[str, float], dict[str, torch.Tensor]]:
    """Totals and [N] per-query flags of every figure (module docstring)."""
    target, query_input = encoded["target"], encoded["input"]
    flags = {
        "copy_input/exact": same_grid(query_input, target),
        "retrieval_top1/model": retrieval_correct(encoded["z_hat"], encoded["z_target"], target),
        "retrieval_top1/copy_input": retrieval_correct(
            encoded["z_input"], encoded["z_target"], target
        ),
    }
    if reference is not None:
        guess = nearest_input_targets(query_input, *reference)
        flags["nearest_train_output/exact"] = same_grid(guess, target)
    figures: dict[str, float] = {}
    if probe is not None:
        decoded = probe.decode(encoded["z_hat"].to(probe.weight.device)).cpu()
        floor = probe.decode(encoded["z_target"].to(probe.weight.device)).cpu()
        flags["model_probe/exact"] = same_grid(decoded, target)
        flags["probe_floor/exact"] = same_grid(floor, target)
        figures["model_probe/cell_accuracy"] = float((decoded == target.long()).float().mean())
        figures["probe_floor/cell_accuracy"] = float((floor == target.long()).float().mean())
    figures.update({name: float(flag.float().mean()) for name, flag in flags.items()})
    figures["retrieval_top1/chance"] = chance_top1(target)
    sigma = float(encoded["z_target"].std()) or 1.0  # over all elements of the query targets
    for name, z in (("model", encoded["z_hat"]), ("copy_input", encoded["z_input"])):
        figures[f"err_signal/{name}"] = float((z - encoded["z_target"]).abs().mean()) / sigma
    return dict(sorted(figures.items())), flags


def evaluate_held_out(run, path: str | Path) -> dict[str, Any]:
    """Score every episode of ``path`` (module docstring); writes ``RUN/eval_tasks.json``."""
    path = Path(path)
    d = run.recipe.data
    k = min(d.horizons)
    data = TrajectoryData.open(
        path,
        device=str(run.device),
        on_device=d.on_device,
        normalize=d.normalize,
        stats=run.model_input.normalization,
    )
    try:
        if data.env_id != run.data.env_id or data.obs_shape != run.data.obs_shape:
            raise DatasetError(
                f"{path}: holds {data.env_id} observations {list(data.obs_shape)}; the run "
                f"trained on {run.data.env_id} {list(run.data.obs_shape)}"
            )
        windows = query_windows(data, d.context_frames, k)
        if len(windows["episode"]) == 0:
            raise DatasetError(
                f"{path}: no episode has a window of context_frames={d.context_frames} and "
                f"k={k} whose target the data allows"
            )
        encoded = encode_queries(run, data, windows, k)
        keys = {
            name: values[windows["episode"].numpy()] for name, values in data.episode_keys.items()
        }
        env_kwargs = data.env_kwargs
    finally:
        data.close()
    probe = run.fit_probe() if run.cell_values() is not None else None
    figures, flags = score(run, encoded, probe, _reference(run, k))
    episodes = []
    for i, episode in enumerate(windows["episode"].tolist()):
        row = {"episode": episode}
        row.update({name: _plain(values[i]) for name, values in keys.items()})
        row.update({name: bool(flag[i]) for name, flag in flags.items()})
        episodes.append(row)
    result = {
        "held_out": str(path),
        "env_kwargs": env_kwargs,
        "k": k,
        "context_frames": d.context_frames,
        "queries": len(episodes),
        "figures": figures,
        "episodes": episodes,
    }
    (run.path / EVAL_TASKS).write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    return result


def _plain(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value


def print_held_out(result: dict[str, Any]) -> None:
    """The figures of ``evaluate_held_out`` as lines (the command's output)."""
    import click

    click.echo(
        f"held-out episodes {result['held_out']}: {result['queries']} queries "
        f"(k={result['k']}, context_frames={result['context_frames']})"
    )
    for name, value in result["figures"].items():
        click.echo(f"  {name:<32} {value:.4f}")
