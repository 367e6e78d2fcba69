"""One training step as small named functions, and the module that strings them together.

Shape legend: ``B`` batch, ``W`` context frames, ``D`` latent_dim, ``*obs`` one observation.

    forward_context: masked context frames [B, W, *obs] -> latents [B, W, D] (+ quantized)
    forward_target:  target frame [B, *obs]             -> target latent [B, D]
    predict:         context latents [B, W, D], k [B]   -> prediction [B, D]
    loss_fn:         StepOutputs                        -> total, one value per [[losses]] label

``JEPAModel.forward`` calls them in that order, so that one DDP-wrapped module sees the whole
differentiable step.
"""

from __future__ import annotations

import attrs
import torch
from torch import nn

from lejepa_core.interfaces import QuantizerOutput, StepOutputs, takes_actions
from lejepa_core.training.weighting import build_weighting


@attrs.define
class ContextOutputs:
    """context, context_quantized: [B, W, D]; mask: the masker's mask (or None)."""

    context: torch.Tensor
    context_quantized: torch.Tensor
    quantizer_output: QuantizerOutput | None
    mask: torch.Tensor | None


@attrs.define
class StepLoss:
    """total: 0-d weighted sum; parts: label -> unweighted value (``quantizer`` = its aux loss,
    already weighted); metrics: ``<label>/<metric>`` -> value (floats or 0-d tensors)."""

    total: torch.Tensor
    parts: dict[str, torch.Tensor]
    metrics: dict[str, object]


def encode_frames(encoder: nn.Module, frames: torch.Tensor) -> torch.Tensor:
    """frames [B, W, *obs] -> latents [B, W, D] (frames flattened into the batch)."""
    batch, window = frames.shape[:2]
    z = encoder(frames.reshape(batch * window, *frames.shape[2:]))
    return z.reshape(batch, window, -1)


MASK_FRAMES = ("per_frame", "shared")
"""``train.mask_frames``: a mask drawn per context frame, or one mask for the W frames of a window."""


def mask_context(
    masker: nn.Module,
    context_obs: torch.Tensor,
    generator: torch.Generator | None,
    *,
    shared: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Context frames [B, W, *obs] -> (masked frames [B*W, *obs], mask broadcastable to them).

    per_frame (``shared=False``): one masker call on the flattened [B*W, *obs] frames, so each
    frame draws its own mask. shared: the masker is called once per frame on [B, *obs] with the
    generator's state restored before each call, so every frame of a window gets the same random
    draws: the same elements hidden in all W frames (for any masker whose mask depends on its
    random numbers and the batch shape, not on the values), each frame filled by the masker.
    The generator ends where one [B, *obs] call leaves it.
    """
    batch, window = context_obs.shape[:2]
    if not shared:
        return masker(context_obs.reshape(batch * window, *context_obs.shape[2:]), generator)
    if generator is None:  # the global RNG: a generator of its own, seeded from it
        seed = int(torch.randint(2**62, (), device="cpu"))
        generator = torch.Generator(device=context_obs.device).manual_seed(seed)
    start = generator.get_state()
    frames, masks = [], []
    for w in range(window):
        generator.set_state(start)
        masked, mask = masker(context_obs[:, w], generator)  # [B, *obs], mask like [B, *obs]
        frames.append(masked)
        # a mask that broadcasts over the batch: give it the batch axis before stacking frames
        size = (batch, *mask.shape[1:]) if mask.dim() == masked.dim() else masked.shape
        masks.append(mask.expand(size))
    flat = torch.stack(frames, 1).reshape(batch * window, *context_obs.shape[2:])
    mask = torch.stack(masks, 1)  # [B, W, ...]
    return flat, mask.reshape(batch * window, *mask.shape[2:])


def forward_context(
    encoder: nn.Module,
    masker: nn.Module | None,
    quantizer: nn.Module | None,
    context_obs: torch.Tensor,
    mask_generator: torch.Generator | None,
    *,
    mask_frames: str = "per_frame",
) -> ContextOutputs:
    """Mask the context frames [B, W, *obs] (``mask_context``: per frame or one mask shared by
    a window's frames), encode them to [B, W, D], and quantize the flattened [B*W, D] latents
    when a quantizer is set."""
    batch, window = context_obs.shape[:2]
    flat = context_obs.reshape(batch * window, *context_obs.shape[2:])
    mask = None
    if masker is not None:
        flat, mask = mask_context(
            masker, context_obs, mask_generator, shared=mask_frames == "shared"
        )
    z = encoder(flat)  # [B*W, D]
    context = z.reshape(batch, window, -1)
    if quantizer is None:
        return ContextOutputs(context, context, None, mask)
    q = quantizer(z)
    return ContextOutputs(context, q.z_q.reshape(batch, window, -1), q, mask)


def forward_target(
    target_encoder: nn.Module, target_obs: torch.Tensor, *, shared: bool
) -> torch.Tensor:
    """target_obs [B, *obs] -> [B, D]. An EMA target encoder runs without gradients; a shared
    one (the context encoder itself) lets them flow."""
    if shared:
        return target_encoder(target_obs)
    with torch.no_grad():
        return target_encoder(target_obs).detach()


def loss_fn(
    losses: nn.ModuleList,
    weights: list[float],
    labels: list[str],
    outputs: StepOutputs,
    weighting: nn.Module | None = None,
    shared: list[nn.Parameter] | None = None,
) -> StepLoss:
    """total = sum(weight * loss) over the recipe's losses, plus the quantizer's aux loss.

    weighting: ``train.loss_weighting``'s module (``weighting.py``; None: the fixed weights)
    turns the losses into their part of the total; shared: the parameters GradNorm balances on.
    The latents are cast to float32 first: losses run in full precision under bf16 autocast.
    """
    parts: dict[str, torch.Tensor] = {}
    metrics: dict[str, object] = {}
    total = outputs.prediction.new_zeros((), dtype=torch.float32)
    with torch.autocast(device_type=outputs.prediction.device.type, enabled=False):
        for loss, weight, label in zip(losses, weights, labels, strict=True):
            result = loss(outputs)
            value = result.value.float()
            parts[label] = value
            if weighting is None:
                total = total + weight * value
            for name, metric in result.metrics.items():
                metrics[f"{label}/{name}"] = metric
        if weighting is not None:
            total = total + weighting([parts[label] for label in labels], shared or [])
        if outputs.quantizer_output is not None:
            aux = outputs.quantizer_output.loss.float()
            parts["quantizer"] = aux
            total = total + aux
    return StepLoss(total=total, parts=parts, metrics=metrics)


def predictor_input(quantizer: nn.Module | None, ctx: ContextOutputs) -> torch.Tensor:
    """What the predictor reads, [B, W, D]: the quantized context, or the unquantized one when
    the quantizer is a side branch (``feeds_predictor`` False)."""
    if quantizer is not None and not getattr(quantizer, "feeds_predictor", True):
        return ctx.context
    return ctx.context_quantized


def _float(x: torch.Tensor | None) -> torch.Tensor | None:
    return None if x is None else x.float()


class JEPAModel(nn.Module):
    """The trainable modules of a run: context encoder, predictor, optional quantizer, the
    masker and the losses (which may hold parameters). The EMA target encoder is *not* part of
    it (it receives no gradients); it is passed to ``forward``."""

    def __init__(
        self,
        *,
        encoder: nn.Module,
        predictor: nn.Module,
        masker: nn.Module,
        losses: list[nn.Module],
        weights: list[float],
        labels: list[str],
        quantizer: nn.Module | None = None,
        shared_target: bool = False,
        mask_frames: str = "per_frame",
        loss_weighting: str = "fixed",
    ):
        super().__init__()
        self.context_encoder = encoder
        self.predictor = predictor
        self.quantizer = quantizer
        self.masker = masker
        self.losses = nn.ModuleList(losses)
        self.weights = list(weights)
        self.labels = list(labels)
        self.shared_target = shared_target
        if mask_frames not in MASK_FRAMES:
            raise ValueError(f"mask_frames: expected one of {MASK_FRAMES}, got {mask_frames!r}")
        self.mask_frames = mask_frames
        self.loss_weighting = build_weighting(loss_weighting, self.weights)  # None: fixed
        self.needs_unmasked = any("context_unmasked" in getattr(m, "requires", ()) for m in losses)
        self.takes_actions = takes_actions(predictor)

    def current_weights(self) -> list[float | torch.Tensor]:
        """Each loss's weight in the total now: the recipe's floats, or (adaptive weighting)
        0-d detached tensors, a weight of 0 kept as the float 0.0."""
        if self.loss_weighting is None:
            return list(self.weights)
        adaptive = getattr(self.loss_weighting, "used", None)  # the last forward's
        adaptive = self.loss_weighting.effective_weights() if adaptive is None else adaptive
        return [0.0 if w == 0 else adaptive[i] for i, w in enumerate(self.weights)]

    def run_predictor(
        self,
        z_context: torch.Tensor,
        k: torch.Tensor,
        actions: torch.Tensor | None = None,
        action_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The predictor on [B, W, D], k [B]; ``actions [B, K, *act]`` and ``action_mask [B, K]``
        reach it only when it takes them (``interfaces.takes_actions``)."""
        if not self.takes_actions:
            return self.predictor(z_context, k)
        return self.predictor(z_context, k, actions=actions, action_mask=action_mask)

    def predict(
        self,
        context_obs: torch.Tensor,
        k: torch.Tensor,
        actions: torch.Tensor | None = None,
        action_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Unmasked context frames [B, W, *obs], k [B] (actions [B, K, *act] and their mask
        [B, K] for an action-conditioned predictor) -> predicted target latent [B, D].

        The prediction path of evaluation, the report and loaded models: the same
        ``forward_context`` (quantizer included) and predictor as a training step, no masker.
        """
        ctx = forward_context(self.context_encoder, None, self.quantizer, context_obs, None)
        return self.run_predictor(predictor_input(self.quantizer, ctx), k, actions, action_mask)

    def forward(
        self,
        context_obs: torch.Tensor,
        target_obs: torch.Tensor,
        k: torch.Tensor,
        *,
        target_encoder: nn.Module | None,
        mask_generator: torch.Generator | None,
        loss_generator: torch.Generator | None,
        step: int,
        apply_mask: bool = True,
        actions: torch.Tensor | None = None,
        action_mask: torch.Tensor | None = None,
    ) -> tuple[StepLoss, StepOutputs]:
        """context_obs [B, W, *obs], target_obs [B, *obs], k [B] (actions [B, K, *act], mask
        [B, K]: passed to a predictor that takes them) -> (StepLoss, StepOutputs)."""
        masker = self.masker if apply_mask else None
        ctx = forward_context(
            self.context_encoder,
            masker,
            self.quantizer,
            context_obs,
            mask_generator,
            mask_frames=self.mask_frames,
        )
        encoder = (
            self.context_encoder if self.shared_target or target_encoder is None else target_encoder
        )
        target = forward_target(encoder, target_obs, shared=self.shared_target)
        prediction = self.run_predictor(
            predictor_input(self.quantizer, ctx), k, actions, action_mask
        )
        unmasked = None
        if self.needs_unmasked:
            unmasked = (
                ctx.context if masker is None else encode_frames(self.context_encoder, context_obs)
            )
        outputs = StepOutputs(
            prediction=prediction.float(),
            target=target.float(),
            context=ctx.context.float(),
            k=k,
            context_quantized=ctx.context_quantized.float(),
            context_unmasked=_float(unmasked),
            mask=ctx.mask,
            quantizer_output=ctx.quantizer_output,
            generator=loss_generator,
            step=step,
        )
        shared = None
        if self.loss_weighting is not None:  # GradNorm balances on the context encoder's
            shared = [p for p in self.context_encoder.parameters() if p.requires_grad]
        step_loss = loss_fn(
            self.losses, self.weights, self.labels, outputs, self.loss_weighting, shared
        )
        return step_loss, outputs
