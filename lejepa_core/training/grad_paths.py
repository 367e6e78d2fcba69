"""Which losses shape the model: a check before training, and the gradient shares logged in it.

    gradient_path_warnings(recipe, spec) -> list[str]
        builds the model as training would (a throwaway copy; the global RNG is left as it
        was), runs one forward on a tiny synthetic batch and asks autograd, for every
        loss with a non-zero weight, whether its value reaches a trainable parameter. A loss
        that reaches none (SIGReg ``on = "target"`` beside an EMA target encoder: the target
        latents carry no gradient) is logged every step but shapes nothing: one warning line
        naming it. ``lejepa check`` prints them; ``train`` writes them to stderr at the start.

    gradient_shares(step_loss, model) -> {"grad_share/<label>": 0-d tensor}
        on the context encoder's parameters (the ones every loss may reach): the norm of each
        loss's *weighted* gradient divided by the sum of those norms (they sum to 1), computed
        with ``torch.autograd.grad`` on the step's own graph before its backward. ``train_step``
        calls it on log steps only (``log.every``), so the other steps pay nothing.

Labels are ``recipe.loss_labels()`` plus ``quantizer`` (its auxiliary loss, weight 1) when
the run has one.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

import attrs
import torch
from torch import nn

from lejepa_core.build import build_model, model_spec
from lejepa_core.interfaces import ModelSpec
from lejepa_core.recipe import Recipe
from lejepa_core.testing import observations
from lejepa_core.training.step import JEPAModel, StepLoss
from lejepa_core.training.target import has_target_copy, make_ema_copy

GRAD_SHARE_PREFIX = "grad_share/"
"""``grad_share/<label>`` in the ``train`` records of metrics.jsonl (log steps only)."""

QUANTIZER_LABEL = "quantizer"  # StepLoss.parts' key of the quantizer's auxiliary loss


def _reaches(value: torch.Tensor, params: Sequence[torch.Tensor]) -> bool:
    """Whether the 0-d ``value`` has a gradient path to any of ``params`` (graph kept)."""
    if not value.requires_grad or not params:
        return False
    grads = torch.autograd.grad(value, list(params), retain_graph=True, allow_unused=True)
    return any(g is not None for g in grads)


def _trainable(module: nn.Module) -> list[nn.Parameter]:
    return [p for p in module.parameters() if p.requires_grad]


# ----------------------------------------------------------------------------- the check
def gradient_path_warnings(
    recipe: Recipe, spec: ModelSpec, *, device: str | torch.device = "cpu", batch: int = 8
) -> list[str]:
    """One line per weighted loss whose value reaches no trainable parameter of the model
    (the masker's, the encoder's, the predictor's, the quantizer's or another loss's), or
    only its own. Builds and runs a throwaway model on ``device`` under
    ``torch.random.fork_rng`` (the global RNG is left as it was).

    The synthetic batch: context [batch, W, *obs], target [batch, *obs] from
    ``lejepa_core.testing.observations``, k cycling through ``spec.horizons``. Under
    torch.distributed every rank must call it (losses such as SIGReg all-reduce; the ranks run
    the same synthetic step, so their collectives match).
    """
    try:
        return _check(recipe, spec, torch.device(device), batch)
    except Exception as exc:  # a diagnostic: a forward that fails on synthetic data says so
        return [f"gradient paths not checked: one forward on a synthetic batch failed ({exc!r})"]


def _check(recipe: Recipe, spec: ModelSpec, device: torch.device, batch: int) -> list[str]:
    cuda = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):
        torch.manual_seed(recipe.train.seed)
        model = build_model(recipe, spec).to(device).train()
        target = (
            make_ema_copy(model.context_encoder) if has_target_copy(recipe.target.mode) else None
        )
        g = torch.Generator().manual_seed(0)
        window = spec.context_frames
        context = observations(spec, g, batch * window).reshape(batch, window, *spec.obs_shape)
        target_obs = observations(spec, g, batch)
        k = torch.tensor([spec.horizons[i % len(spec.horizons)] for i in range(batch)])
        step_loss, outputs = model(
            context.to(device),
            target_obs.to(device),
            k.to(device),
            target_encoder=target,
            mask_generator=torch.Generator(device=device).manual_seed(1),
            loss_generator=torch.Generator(device=device).manual_seed(2),
            step=0,
        )
        return _warnings(recipe, model, step_loss, outputs)


def _warnings(recipe: Recipe, model: JEPAModel, step_loss: StepLoss, outputs: Any) -> list[str]:
    lines = []
    for i, (config, loss, label) in enumerate(
        zip(recipe.losses, model.losses, model.labels, strict=True)
    ):
        if config.weight == 0:
            continue  # a weight of 0 asks for a figure, not for training
        own = {id(p) for p in loss.parameters()}
        others = [p for p in _trainable(model) if id(p) not in own]
        value = step_loss.parts[label]
        if _reaches(value, others):
            continue
        name = f"losses[{i}] ({label}, weight {config.weight:g})"
        if _reaches(value, _trainable(loss)):
            lines.append(
                f"{name}: its gradient reaches only the loss's own parameters{_why(config, loss, outputs, recipe)}; "
                "it trains itself and shapes nothing else"
            )
        else:
            lines.append(
                f"{name}: no gradient reaches any trainable parameter{_why(config, loss, outputs, recipe)}; "
                "it is logged but shapes nothing"
            )
    return lines


def _why(config: Any, loss: nn.Module, outputs: Any, recipe: Recipe) -> str:
    """`` (reason)`` when the loss reads the target latents that an EMA target encoder
    computes without gradients (found by running it again on target latents that require
    them), else ``""``."""
    if not has_target_copy(recipe.target.mode):
        return ""
    probe = outputs.target.detach().requires_grad_(True)
    value = loss(attrs.evolve(outputs, target=probe)).value
    if not _reaches(value, [probe]):
        return ""
    on = getattr(config.params, "on", None)
    if isinstance(on, str):
        return f' (on = "{on}" with an EMA target encoder)'
    return " (it reads the target latents, which the EMA target encoder computes without gradients)"


def warn_gradient_paths(
    recipe: Recipe, data: Any = None, *, device: str | torch.device = "cpu", show: bool = True
) -> list[str]:
    """``gradient_path_warnings`` for ``recipe`` (``data``: an opened ``TrajectoryData``, or
    None for the recipe's file or env) on ``device``, each line written to stderr as
    ``warning: ...`` when ``show`` (rank 0; every rank must call it under torch.distributed)."""
    lines = gradient_path_warnings(recipe, model_spec(recipe, data), device=device)
    if not show:
        return lines
    for line in lines:
        print(f"warning: {line}", file=sys.stderr)
    return lines


# ----------------------------------------------------------------------------- the shares
def gradient_shares(step_loss: StepLoss, model: JEPAModel) -> dict[str, torch.Tensor]:
    """``{"grad_share/<label>": share}`` over the parts of ``step_loss.total``: the L2 norm of
    ``weight * loss`` 's gradient on the context encoder's parameters, divided by the sum of
    those norms over the parts (all 0 when no part reaches them). 0-d tensors, no host sync.

    Call before ``step_loss.total.backward()``: each ``torch.autograd.grad`` keeps the graph.
    """
    params = _trainable(model.context_encoder)
    if not params:  # an encoder without parameters (identity): nothing to share out
        return {}
    weights = dict(zip(model.labels, model.current_weights(), strict=True))
    norms: dict[str, torch.Tensor] = {}
    zero = step_loss.total.new_zeros(())
    for label, value in step_loss.parts.items():
        weight = weights.get(label, 1.0)  # the quantizer's aux loss enters the total as is
        if weight == 0 or not value.requires_grad:
            norms[label] = zero
            continue
        grads = torch.autograd.grad(weight * value, params, retain_graph=True, allow_unused=True)
        found = [g.detach().float().norm() for g in grads if g is not None]
        norms[label] = torch.stack(found).norm() if found else zero
    total = torch.stack(list(norms.values())).sum() if norms else zero
    scale = torch.where(total > 0, 1.0 / total.clamp_min(torch.finfo(total.dtype).tiny), zero)
    return {f"{GRAD_SHARE_PREFIX}{label}": norm * scale for label, norm in norms.items()}
