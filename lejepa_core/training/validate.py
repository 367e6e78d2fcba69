"""Validation: ``train.val_windows`` fixed held-out windows (in batches of at most
``train.batch_size``), unmasked context, fixed loss seeds.

Shape legend: ``B`` batch, ``D`` latent_dim; ``N`` = ``train.val_windows``, all batches.
Losses and quantizer metrics are means over batches weighted by their windows; a loss of the
whole batch (SIGReg, InfoNCE) still depends on the batch size, the figures of
``validation_report`` (err/σ, baselines, ranks) do not: they are computed on all N windows.

Under DDP each rank holds its shard of every batch (``run.build_samplers``): the weighted sums
are all-reduced and the latents all-gathered (in the one-process order), so the figures are
those of one process; SIGReg's own all-reduce sees the whole batch, as with one process.
Losses of the local batch alone (InfoNCE without ``gather``, VICReg, relational) still see the
shard only.
"""

from __future__ import annotations

from typing import Any

import torch

from lejepa_core import artifacts
from lejepa_core.training import compiled, distributed
from lejepa_core.training.diagnostics import MetricsLog, RunningMeans, validation_report
from lejepa_core.training.run import Run
from lejepa_core.training.runtime import autocast, derive_seed


@torch.no_grad()
def validate(run: Run, batches: list[Any]) -> dict[str, float]:
    """Validation loss (unmasked context, fixed loss seeds) and the diagnostics of
    ``validation_report`` on the fixed held-out batches; quantizer metrics averaged.

    The global RNG state is left untouched (``fork_rng``), so validating does not change the
    training that follows.
    """
    model, recipe = run.model, run.recipe
    target_encoder = run.target_encoder if run.target_encoder is not None else model.context_encoder
    was_training = model.training
    model.eval()
    losses = RunningMeans()
    quant = RunningMeans()
    collected: dict[str, list[torch.Tensor]] = {
        "prediction": [],  # [B, D] each
        "target": [],  # [B, D]
        "copy_last": [],  # [B, D]: target encoder on the last (unmasked) context frame
        "last_context": [],  # [B, D]: context encoder on the same frame
        "k": [],  # [B]
    }
    loss_generator = torch.Generator(device=run.device)
    with (
        torch.random.fork_rng(devices=[run.device.index] if run.device.type == "cuda" else []),
        autocast(run.device, recipe.train.precision),
        compiled.phase("validation"),  # compiled modules: validation's own graphs
    ):
        for i, batch in enumerate(batches):
            loss_generator.manual_seed(derive_seed(recipe.train.seed, "validation-loss", i))
            step_loss, out = model(
                batch.context_obs,
                batch.target_obs,
                batch.k,
                target_encoder=target_encoder,
                mask_generator=None,
                loss_generator=loss_generator,
                step=run.state.step,
                apply_mask=False,
                actions=batch.actions,
                action_mask=batch.action_mask,
            )
            windows = batch.k.shape[0]  # the last batch may be shorter: weight by windows
            losses.add(
                {
                    artifacts.LOSS_TOTAL: step_loss.total,
                    **{f"{artifacts.LOSS_PREFIX}{k}": v for k, v in step_loss.parts.items()},
                },
                weight=windows,
            )
            if out.quantizer_output is not None:
                quant.add(
                    {
                        f"{artifacts.QUANTIZER_PREFIX}{k}": v
                        for k, v in out.quantizer_output.metrics.items()
                    },
                    weight=windows,
                )
            # contiguous: the frame a target encoder sees in training (a compiled one would
            # recompile for the slice's strides)
            last_frame = batch.context_obs[:, -1].contiguous()
            collected["copy_last"].append(target_encoder(last_frame).float())
            collected["last_context"].append(out.context[:, -1])
            collected["prediction"].append(out.prediction)
            collected["target"].append(out.target)
            collected["k"].append(batch.k)
    model.train(was_training)
    cat = {key: gather_batches(values) for key, values in collected.items()}  # [N, D] / [N]
    report = reduced_means(losses)
    report.update(reduced_means(quant))
    report.update(validation_report(horizons=tuple(recipe.data.horizons), **cat))
    return report


def reduced_means(means: RunningMeans) -> dict[str, float]:
    """``means.pop()`` with the weighted sums and weights summed over ranks first (one
    all-reduce; the same as ``pop`` without a process group)."""
    keys = sorted(means.sums)
    if not keys:
        return {}
    sums = torch.stack([torch.as_tensor(means.sums[key]).float().reshape(()) for key in keys])
    counts = torch.tensor([means.counts[key] for key in keys], device=sums.device)
    totals = distributed.all_reduce_sum(torch.cat([sums, counts]))
    means.pop()
    values = (totals[: len(keys)] / totals[len(keys) :]).tolist()
    return dict(zip(keys, values, strict=True))


def gather_batches(parts: list[torch.Tensor]) -> torch.Tensor:
    """This rank's shards of the validation batches (``parts[b]: [n_b, ...]``) -> all ranks'
    windows ``[N, ...]`` in the one-process order (batch by batch, rank by rank)."""
    local = torch.cat(parts)
    sizes = torch.tensor([part.shape[0] for part in parts], device=local.device)
    rank_sizes = [s.tolist() for s in distributed.all_gather_rows(sizes)]  # [rank][batch]
    gathered = distributed.all_gather_rows(local)
    rank_rows = [rows.split(s) for rows, s in zip(gathered, rank_sizes, strict=True)]
    return torch.cat([rows[b] for b in range(len(parts)) for rows in rank_rows])


def log_validation(run: Run, batches: list[Any], epoch: int, log: MetricsLog) -> dict[str, Any]:
    """Diagnostics between epoch ends (``log.diagnostics_every``): ``validate`` and write the
    ``val`` record, without ``best``: best.pt and early stopping stay per epoch. Returns it."""
    record = {
        artifacts.STEP: run.state.step,
        artifacts.EPOCH: epoch,
        artifacts.SPLIT: "val",
        **validate(run, batches),
    }
    log.write(record)
    return record
