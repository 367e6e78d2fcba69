"""Built-in quantizers: ``vq`` (EMA codebook), ``gumbel`` (Gumbel-softmax), ``fsq`` (finite scalar).

Shape legend: ``N`` vectors (``B``, or ``B*W`` when the trainer flattens frames), ``D``
latent_dim, ``K`` codebook size, ``L`` number of FSQ levels (``len(levels)``).

Every quantizer takes ``z: [..., D]`` (usually ``[B, D]``), flattens the leading axes and returns
``z_q`` with the shape and dtype of ``z`` and ``codes`` (int64) with the leading shape. The
arithmetic runs in float32 even under bf16 autocast. Metrics (0-d tensors, no host sync):

- ``usage``: distinct codes in this batch / K (``lejepa_core.metrics.codebook_usage``); a
  batch of N vectors uses at most N codes, so it is capped at N / K (0.5 for 128 vectors and
  K = 256) and reads half-dead when every vector has its own code.
- ``usage_relative``: ``usage / min(1, N / K)``, the usage relative to what the batch can reach
  (1: every vector its own code, or every code used).
- ``usage_window``: the same over the last ``window_batches`` *training* batches (a ring
  buffer of code counts, summed over ranks under DDP; not updated in eval mode).
- ``perplexity``: exp(entropy of this batch's code histogram) (``metrics.perplexity``).
- ``codebook_size``: K, so readers of ``metrics.jsonl`` (the report) need no quantizer params.
- ``vq`` only: ``dead_codes`` (codes chosen fewer than ``dead_code_threshold`` times over the
  window, among codes at least one window old) and ``replaced_codes`` (re-initialised this step).
"""

from __future__ import annotations

import math
from typing import Literal

import attrs
import torch
import torch.nn.functional as F
from torch import nn

from lejepa_core import Quantizer, QuantizerOutput, hookimpl
from lejepa_core.metrics import code_histogram, codebook_usage, perplexity
from lejepa_core.params import each, in_range, non_empty, non_negative, one_of, param, positive
from lejepa_plugins.grid_latents import from_windows, latent_windows, window_dim


def _distributed() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def _at_least_two(instance, attribute, value) -> None:
    if value < 2:
        raise ValueError(f"{attribute.name}: expected every level >= 2, got {value!r}")


def window_param():
    """The ``window`` parameter every built-in quantizer has (``grid_latents.latent_windows``)."""
    return param(
        0,
        "0: code the whole latent as one vector; w > 0: code every w x w block of a grid "
        "latent's locations (model.latent_grid) as its own vector, one shared codebook "
        "(codes [..., G], G = blocks)",
        non_negative,
    )


def path_param():
    """The ``path`` parameter every built-in quantizer has; the trainer reads the quantizer's
    ``feeds_predictor`` (``path == "predictor"``)."""
    return param(
        "predictor",
        "predictor: the predictor reads the quantized context; side: a side branch (codes, "
        "auxiliary loss and usage metrics from the context latents, which the predictor reads "
        "unquantized)",
        one_of(("predictor", "side")),
    )


class UsageWindow(nn.Module):
    """Code counts of the last ``window`` training batches: a ring buffer ``[window, K]``."""

    def __init__(self, codebook_size: int, window: int):
        super().__init__()
        self.window = window
        self.register_buffer("counts", torch.zeros(window, codebook_size))
        self.register_buffer("batches_seen", torch.zeros((), dtype=torch.long))

    def push(self, counts: torch.Tensor) -> None:
        """counts: [K] code histogram of one batch (already summed over ranks). The slot is a
        ``[1]`` index tensor (``index_copy_``): indexing with the 0-d ``batches_seen`` would read
        it on the host (a device sync per step)."""
        slot = (self.batches_seen % self.window).view(1)  # [1]
        self.counts.index_copy_(0, slot, counts.to(self.counts).view(1, -1))
        self.batches_seen += 1

    def total(self) -> torch.Tensor:
        """[K] counts summed over the window."""
        return self.counts.sum(dim=0)


def _all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    if _distributed():
        torch.distributed.all_reduce(tensor, op=torch.distributed.ReduceOp.SUM)
    return tensor


class _CodeMetrics(Quantizer):
    """Shared bookkeeping: batch histogram, running usage window, the standard metrics."""

    codebook_size: int

    def _init_window(self, codebook_size: int, window_batches: int) -> None:
        self.codebook_size = codebook_size
        self.usage_window = UsageWindow(codebook_size, window_batches)

    def _vector_dim(self, name: str) -> int:
        """Length of one coded vector (``latent_dim``, or one block of a grid latent)."""
        return window_dim(self.spec, self.params.window, f"{name} quantizer")

    def _vectors(self, z: torch.Tensor) -> torch.Tensor:
        """[..., D] -> the coded vectors: [..., D] (window 0) or [..., G, w*w*C]."""
        window = self.params.window
        return z if window == 0 else latent_windows(z, self.spec, window)

    def _latent(self, z_q: torch.Tensor) -> torch.Tensor:
        """The inverse of ``_vectors``."""
        window = self.params.window
        return z_q if window == 0 else from_windows(z_q, self.spec, window)

    def _usage_metrics(
        self, codes: torch.Tensor, global_counts: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, dict]:
        """codes: [N] -> (local counts [K], metrics). Training mode pushes to the window.

        ``global_counts`` (counts summed over ranks) is reused when the caller already has it;
        otherwise it is all-reduced here in training mode under DDP.
        """
        counts = code_histogram(codes, self.codebook_size)
        if self.training:
            if global_counts is None:
                global_counts = _all_reduce_sum(counts.clone())
            self.usage_window.push(global_counts)
        usage = codebook_usage(counts)
        reachable = min(1.0, codes.numel() / self.codebook_size)  # N codes reach at most N/K
        metrics = {
            "usage": usage,
            "usage_relative": usage / reachable,
            "usage_window": codebook_usage(self.usage_window.total()),
            "perplexity": perplexity(counts),
            "codebook_size": torch.full((), float(self.codebook_size), device=codes.device),
        }
        return counts, metrics


def _straight_through(z: torch.Tensor, z_q: torch.Tensor) -> torch.Tensor:
    """Value ``z_q``, gradient identity w.r.t. ``z``. [N, D] -> [N, D]."""
    return z + (z_q - z).detach()


def rotation_trick(z: torch.Tensor, z_q: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Value ``z_q``, gradient through ``λ R`` with R rotating z/|z| onto z_q/|z_q|, λ = |z_q|/|z|.

    Fifty et al. 2024, "Restructuring Vector Quantization with the Rotation Trick": the output
    is ``sg(λ R) z`` with ``R = I - 2 w wᵀ + 2 q̂ ẑᵀ``, ``w = (ẑ + q̂)/|ẑ + q̂|``, so the gradient
    reaching ``z`` is ``λ Rᵀ g``. z, z_q: [N, D] -> [N, D].
    """
    z_norm = z.norm(dim=-1, keepdim=True).clamp_min(eps)
    q_norm = z_q.norm(dim=-1, keepdim=True).clamp_min(eps)
    z_hat = (z / z_norm).detach()
    q_hat = (z_q / q_norm).detach()
    w = F.normalize(z_hat + q_hat, dim=-1, eps=eps)
    rotated = (
        z - 2 * (z * w).sum(-1, keepdim=True) * w + 2 * (z * z_hat).sum(-1, keepdim=True) * q_hat
    )
    scaled = rotated * (q_norm / z_norm).detach()
    return scaled + (z_q - scaled).detach()  # exact forward value, rotation's gradient


class VectorQuantizer(_CodeMetrics):
    """Codebook with EMA updates, commitment loss and usage-driven dead-code replacement. z [B, D] -> z_q [B, D]."""

    @attrs.frozen(kw_only=True)
    class Params:
        codebook_size: int = param(512, "number of codes K", positive)
        decay: float = param(
            0.99,
            "EMA decay of cluster sizes and sums (higher: slower codebook)",
            in_range(0.0, 1.0),
        )
        epsilon: float = param(1e-5, "Laplace smoothing of the EMA cluster sizes", positive)
        commitment_cost: float = param(
            0.25, "weight of F.mse_loss(z, sg(z_q)): mean over batch and dimensions", non_negative
        )
        gradient: Literal["straight_through", "rotation"] = param(
            "straight_through",
            "'straight_through': z + sg(z_q - z); 'rotation': the rotation trick (Fifty et al. 2024)",
            one_of(("straight_through", "rotation")),
        )
        l2_normalize: bool = param(False, "unit-normalise z and codes (cosine codebook)")
        window_batches: int = param(100, "training batches in the running usage window", positive)
        replace_dead_codes: bool = param(
            True,
            "re-initialise dead codes (measured usage, never on a schedule) to recent encoder outputs",
        )
        dead_code_threshold: float = param(
            1.0,
            "a code chosen fewer times than this over the window (all ranks) is dead",
            non_negative,
        )
        replacement_noise: float = param(
            0.01,
            "std of the noise added to a replacement, relative to the batch's per-dimension std",
            non_negative,
        )
        max_replaced_fraction: float = param(
            0.1,
            "at most this fraction of the K codes is re-initialised in one step (at least one "
            "code; the dead codes beyond it wait for later steps, chosen at random): no step "
            "resets most of the codebook at once",
            in_range(0.0, 1.0),
        )
        init: Literal["random", "data"] = param(
            "random",
            "random: codes drawn from N(0, 1); data: the first training batch's encoder outputs "
            "(random rows plus replacement_noise), so every code starts where latents are",
            one_of(("random", "data")),
        )
        path: Literal["predictor", "side"] = path_param()
        window: int = window_param()
        code_dim: int = param(
            0,
            "0: codes live in the latent's space; d > 0: factorised codes (Yu et al. 2022, "
            "ViT-VQGAN): Linear -> d dimensions, the lookup there (with l2_normalize: cosine), "
            "Linear back; a low-dimensional lookup keeps high-dimensional, mostly constant "
            "vectors (8 x 8 blocks of a grid latent) from all choosing the one code nearest "
            "their mean",
            non_negative,
        )

    def __init__(self, params: Params, spec):
        super().__init__(params, spec)
        self.feeds_predictor = params.path == "predictor"
        K, D = params.codebook_size, self._vector_dim("vq")
        self.project_in = self.project_out = None
        if params.code_dim:
            self.project_in = nn.Linear(D, params.code_dim)
            self.project_out = nn.Linear(params.code_dim, D)
            D = params.code_dim
        self._init_window(K, params.window_batches)
        codebook = torch.randn(K, D)
        if params.l2_normalize:
            codebook = F.normalize(codebook, dim=-1)
        self.register_buffer("codebook", codebook)  # [K, D], float32
        # EMA state starts as if every code had been chosen once at its initial position.
        self.register_buffer("ema_cluster_size", torch.ones(K))  # [K]
        self.register_buffer("ema_embed_sum", codebook.clone())  # [K, D]
        # training batches since each code was (re)initialised: only codes one window old can be dead
        self.register_buffer("code_age", torch.zeros(K, dtype=torch.long))  # [K]
        # False until the first training batch has set a data-initialised codebook
        self.register_buffer("initialised", torch.tensor(params.init == "random"))
        self._initialised_seen = params.init == "random"

    # -- pieces ---------------------------------------------------------------------------
    def nearest_codes(self, z: torch.Tensor) -> torch.Tensor:
        """Index of the nearest code (squared Euclidean). z: [N, D] float32 -> [N] int64."""
        codebook = self.codebook.float()
        distances = (
            z.pow(2).sum(1, keepdim=True) - 2 * z @ codebook.t() + codebook.pow(2).sum(1)[None, :]
        )  # [N, K]
        return distances.argmin(dim=1)

    @torch.no_grad()
    def ema_update(self, z: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        """Move codes toward the mean of their assigned z; returns the counts summed over ranks [K].

        n_k ← γ n_k + (1-γ) c_k;  s_k ← γ s_k + (1-γ) Σ_{i: code i = k} z_i;
        ñ_k = (n_k + ε) / (Σn + K ε) · Σn  (Laplace smoothing);  e_k = s_k / ñ_k.
        Counts and sums are all-reduced first under DDP, so every rank keeps the same codebook.
        """
        K, D = self.codebook.shape
        stats = torch.zeros(K, D + 1, device=z.device, dtype=torch.float32)
        stats[:, 0].index_add_(0, codes, torch.ones_like(codes, dtype=torch.float32))
        stats[:, 1:].index_add_(0, codes, z)
        _all_reduce_sum(stats)
        counts, sums = stats[:, 0], stats[:, 1:]
        gamma = self.params.decay
        self.ema_cluster_size.mul_(gamma).add_(counts, alpha=1 - gamma)
        self.ema_embed_sum.mul_(gamma).add_(sums, alpha=1 - gamma)
        n = self.ema_cluster_size.sum()
        eps = self.params.epsilon
        smoothed = (self.ema_cluster_size + eps) / (n + K * eps) * n
        codebook = self.ema_embed_sum / smoothed[:, None]
        if self.params.l2_normalize:
            codebook = F.normalize(codebook, dim=-1)
        self.codebook.copy_(codebook)
        return counts

    @torch.no_grad()
    def init_from_data(self, z: torch.Tensor) -> None:
        """``init = "data"``: every code set to a random row of ``z: [N, D]`` plus
        ``replacement_noise`` x the batch's per-dimension std (once, on the first training
        batch; rank 0's choice broadcast under DDP)."""
        K = self.codebook.shape[0]
        new_codes = self._candidates(z, K)
        self.codebook.copy_(new_codes)
        self.ema_embed_sum.copy_(new_codes)
        self.ema_cluster_size.fill_(1.0)
        self.initialised.fill_(True)

    def _candidates(self, z: torch.Tensor, count: int) -> torch.Tensor:
        """``count`` random rows of ``z: [N, D]`` plus noise (unit-normalised with
        ``l2_normalize``), identical on every rank: ``[count, D]``."""
        rows = torch.randint(z.shape[0], (count,), device=z.device)
        scale = z.std(dim=0, keepdim=True) if z.shape[0] > 1 else torch.ones_like(z[:1])
        noise = torch.randn(count, z.shape[1], device=z.device) * scale
        new_codes = z[rows] + noise * self.params.replacement_noise
        if self.params.l2_normalize:
            new_codes = F.normalize(new_codes, dim=-1)
        if _distributed():
            torch.distributed.broadcast(new_codes, src=0)
        return new_codes

    def dead_code_mask(self) -> torch.Tensor:
        """[K] bool: codes at least one window old chosen < dead_code_threshold times in the window."""
        old_enough = self.code_age >= self.usage_window.window
        return old_enough & (self.usage_window.total() < self.params.dead_code_threshold)

    @torch.no_grad()
    def replace_dead(self, z: torch.Tensor) -> torch.Tensor:
        """Re-initialise dead codes to random rows of ``z: [N, D]`` plus a little noise.

        The choice is drawn on every rank (same RNG consumption) and rank 0's is broadcast, so
        the codebooks stay identical. Returns the number replaced (0-d tensor).
        """
        dead = self.dead_code_mask()  # [K]
        K = self.codebook.shape[0]
        # at most max_replaced_fraction of K per step: a random order of the dead codes
        cap = max(1, int(self.params.max_replaced_fraction * K))
        priority = torch.where(dead, torch.rand(K, device=dead.device), 2.0)  # dead first
        if _distributed():
            torch.distributed.broadcast(priority, src=0)
        position = torch.empty_like(priority).scatter_(
            0, priority.argsort(), torch.arange(K, device=dead.device, dtype=priority.dtype)
        )
        dead = dead & (position < cap)
        # a candidate for every code, kept where the code is dead: fixed shapes, no host sync
        new_codes = self._candidates(z, K)  # [K, D]
        column = dead[:, None]  # [K, 1]
        self.codebook.copy_(torch.where(column, new_codes, self.codebook))
        self.ema_embed_sum.copy_(torch.where(column, new_codes, self.ema_embed_sum))
        self.ema_cluster_size.masked_fill_(dead, 1.0)
        self.code_age.masked_fill_(dead, 0)
        self.usage_window.counts.masked_fill_(dead[None, :], 0.0)
        return dead.sum().float()

    # -- forward --------------------------------------------------------------------------
    def forward(self, z: torch.Tensor) -> QuantizerOutput:
        """z: [B, D] (or [..., D]) -> z_q like z, codes [B] int64, loss = commitment term."""
        z = self._vectors(z)
        leading, in_dtype = z.shape[:-1], z.dtype
        with torch.autocast(device_type=z.device.type, enabled=False):
            flat = z.reshape(-1, z.shape[-1]).float()  # [N, D]
            if self.project_in is not None:
                flat = self.project_in(flat)  # [N, code_dim]
            if self.params.l2_normalize:
                flat = F.normalize(flat, dim=-1)
            if self.training and not self._initialised_seen:
                if not bool(self.initialised):  # one host sync, until the codebook is set
                    self.init_from_data(flat.detach())
                self._initialised_seen = True
            codes = self.nearest_codes(flat.detach())  # [N]
            z_q = F.embedding(codes, self.codebook.float())  # [N, D], no gradient to the codebook
            loss = self.params.commitment_cost * F.mse_loss(flat, z_q.detach())
            if self.params.gradient == "rotation":
                out = rotation_trick(flat, z_q)
            else:
                out = _straight_through(flat, z_q)
            if self.project_out is not None:
                out = self.project_out(out)  # [N, D]

            global_counts, replaced = None, torch.zeros((), device=z.device)
            if self.training:
                global_counts = self.ema_update(flat.detach(), codes)
                self.code_age += 1
            counts, metrics = self._usage_metrics(codes, global_counts)
            if self.training and self.params.replace_dead_codes:
                replaced = self.replace_dead(flat.detach())
            metrics["dead_codes"] = self.dead_code_mask().sum().float()
            metrics["replaced_codes"] = replaced
        return QuantizerOutput(
            z_q=self._latent(out.reshape(*leading, -1).to(in_dtype)),
            codes=codes.reshape(leading),
            loss=loss,
            metrics=metrics,
        )


def annealed_temperature(
    start: float, final: float, steps: int, calls: torch.Tensor, schedule: str
) -> torch.Tensor:
    """τ after ``calls`` training forwards (0-d long tensor, on the device): ``start`` at 0,
    ``final`` from ``steps`` on. With ``u = min(calls, steps) / steps``:
    exponential ``τ = start · (final / start)^u``; cosine ``τ = final + (start - final) ·
    (1 + cos(π u)) / 2``. Returns a 0-d float32 tensor on ``calls``' device (no host read)."""
    u = calls.clamp(max=steps).float() / steps
    if schedule == "cosine":
        return final + (start - final) * 0.5 * (1.0 + torch.cos(math.pi * u))
    return start * torch.exp(u * math.log(final / start))  # no host -> device copy


class GumbelQuantizer(_CodeMetrics):
    """Gumbel-softmax over K codes, logits from a linear layer or from negative squared
    distances to the codebook; constant or annealed temperature; optional hard
    straight-through. z [B, D] -> z_q [B, D]."""

    @attrs.frozen(kw_only=True)
    class Params:
        codebook_size: int = param(512, "number of codes K", positive)
        temperature: float = param(
            1.0,
            "Gumbel-softmax temperature τ (lower: closer to one-hot); with anneal_steps > 0 the "
            "start of the schedule",
            positive,
        )
        hard: bool = param(
            True, "one-hot sample in the forward pass, soft gradient (straight-through)"
        )
        diversity_weight: float = param(
            0.0,
            "weight of KL(mean over batch of softmax(logits) || uniform), in nats",
            non_negative,
        )
        window_batches: int = param(100, "training batches in the running usage window", positive)
        path: Literal["predictor", "side"] = path_param()
        window: int = window_param()
        logits: Literal["linear", "distance"] = param(
            "linear",
            "linear: logits = Linear(z); distance: logits = -||z - e_k||² / scale, e_k the "
            "codebook, scale from distance_scale",
            one_of(("linear", "distance")),
        )
        distance_scale: Literal["sqrt_dimension", "dimension"] = param(
            "sqrt_dimension",
            "distance logits' scale: sqrt_dimension: sqrt(D), differences between codes' logits "
            "O(1) whatever D (as attention's 1/sqrt(d)); dimension: D, the mean squared "
            "difference per dimension (O(1) values, but differences shrink as 1/sqrt(D))",
            one_of(("sqrt_dimension", "dimension")),
        )
        temperature_final: float = param(
            0.5, "τ at the end of the annealing (used only when anneal_steps > 0)", positive
        )
        anneal_steps: int = param(
            0,
            "training forward calls over which τ goes from temperature to temperature_final "
            "(counted in a buffer saved with the checkpoint); 0: constant τ",
            non_negative,
        )
        anneal: Literal["exponential", "cosine"] = param(
            "exponential",
            "the annealing curve: exponential (geometric) or cosine",
            one_of(("exponential", "cosine")),
        )
        reconstruction_weight: float = param(
            0.0,
            "weight of mse(z_q, z), mean over vectors and D, gradients to both sides: the codes "
            "learn to summarise the latent (a side branch's training signal besides the "
            "diversity term; 0: none)",
            non_negative,
        )

    def __init__(self, params: Params, spec):
        super().__init__(params, spec)
        self.feeds_predictor = params.path == "predictor"
        K, D = params.codebook_size, self._vector_dim("gumbel")
        self._init_window(K, params.window_batches)
        if params.logits == "linear":
            self.to_logits = nn.Linear(D, K)
        self.codebook = nn.Embedding(K, D)
        if params.anneal_steps > 0:  # a buffer only then: default state dicts are unchanged
            self.register_buffer("forward_calls", torch.zeros((), dtype=torch.long))

    def current_temperature(self) -> torch.Tensor | float:
        """τ of the next training forward: ``temperature`` (a Python float, today's exact
        arithmetic) when constant, else a 0-d float32 tensor (``annealed_temperature``)."""
        p = self.params
        if p.anneal_steps == 0:
            return p.temperature
        return annealed_temperature(
            p.temperature, p.temperature_final, p.anneal_steps, self.forward_calls, p.anneal
        )

    def compute_logits(self, z: torch.Tensor) -> torch.Tensor:
        """z: [N, D] float32 -> logits [N, K]: ``Linear(z)`` or ``-||z - e_k||² / scale``
        (``scale`` sqrt(D) or D, ``distance_scale``)."""
        if self.params.logits == "linear":
            return self.to_logits(z)
        codebook = self.codebook.weight.float()  # [K, D]
        squared = (
            z.pow(2).sum(1, keepdim=True) - 2 * z @ codebook.t() + codebook.pow(2).sum(1)[None, :]
        )  # [N, K]
        dim = z.shape[-1]
        scale = math.sqrt(dim) if self.params.distance_scale == "sqrt_dimension" else dim
        return -squared / scale

    def assignments(
        self, z: torch.Tensor, temperature: torch.Tensor | float | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """z: [N, D] float32 -> (weights [N, K], logits [N, K]).

        Training: a Gumbel-softmax sample at ``temperature`` (default: the current τ), one-hot
        with straight-through gradients when ``hard``; eval: the one-hot argmax, no noise.
        """
        logits = self.compute_logits(z)
        if self.training:
            tau = self.current_temperature() if temperature is None else temperature
            weights = F.gumbel_softmax(logits, tau=tau, hard=self.params.hard)
        else:
            weights = F.one_hot(logits.argmax(dim=-1), self.codebook_size).to(logits.dtype)
        return weights, logits

    def forward(self, z: torch.Tensor) -> QuantizerOutput:
        """z: [B, D] -> z_q [B, D] = weights @ codebook, codes [B] = argmax of the weights."""
        z = self._vectors(z)
        leading, in_dtype = z.shape[:-1], z.dtype
        with torch.autocast(device_type=z.device.type, enabled=False):
            flat = z.reshape(-1, z.shape[-1]).float()
            temperature = self.current_temperature()
            weights, logits = self.assignments(flat, temperature)
            if self.training and self.params.anneal_steps > 0:
                self.forward_calls += 1
            z_q = weights @ self.codebook.weight.float()  # [N, D]
            codes = weights.detach().argmax(dim=-1)
            mean_probs = logits.softmax(dim=-1).mean(dim=0)  # [K]
            kl_to_uniform = (
                mean_probs * (mean_probs.clamp_min(1e-12) * self.codebook_size).log()
            ).sum()
            loss = self.params.diversity_weight * kl_to_uniform
            _, metrics = self._usage_metrics(codes)
            metrics["kl_to_uniform"] = kl_to_uniform.detach()
            metrics["temperature"] = torch.as_tensor(temperature, device=z.device).detach()
            if self.params.reconstruction_weight > 0:
                reconstruction = F.mse_loss(z_q, flat)  # gradients to both sides
                loss = loss + self.params.reconstruction_weight * reconstruction
                metrics["reconstruction"] = reconstruction.detach()
        return QuantizerOutput(
            z_q=self._latent(z_q.reshape(*leading, -1).to(in_dtype)),
            codes=codes.reshape(leading),
            loss=loss,
            metrics=metrics,
        )


class FiniteScalarQuantizer(_CodeMetrics):
    """Finite scalar quantization (Mentzer et al. 2023): project, bound, round per level, project back. z [B, D] -> z_q [B, D]."""

    @attrs.frozen(kw_only=True)
    class Params:
        levels: tuple[int, ...] = param(
            (8, 5, 5, 5),
            "quantization levels per projected dimension; K = product",
            non_empty,
            each(_at_least_two),
        )
        window_batches: int = param(100, "training batches in the running usage window", positive)
        path: Literal["predictor", "side"] = path_param()
        window: int = window_param()
        standardize: bool = param(
            False,
            "standardise each projected dimension to std 2 (batch statistics in training, "
            "running ones in eval; no affine) before bounding: tanh then spreads the vectors "
            "over the levels from the first step instead of rounding all to the mean's code",
        )
        reconstruction_weight: float = param(
            0.0,
            "weight of mse(z_q, z), mean over batch and D, gradients to both sides: the codes "
            "learn to summarise the latent (a side branch's only training signal; 0: none)",
            non_negative,
        )

    def __init__(self, params: Params, spec):
        super().__init__(params, spec)
        self.feeds_predictor = params.path == "predictor"
        levels = torch.tensor(params.levels, dtype=torch.long)
        self._init_window(int(math.prod(params.levels)), params.window_batches)
        self.register_buffer("levels", levels, persistent=False)  # [L]
        basis = torch.cumprod(torch.cat([torch.ones(1, dtype=torch.long), levels[:-1]]), dim=0)
        self.register_buffer("basis", basis, persistent=False)  # [L] mixed-radix place values
        dim = self._vector_dim("fsq")
        self.project_in = nn.Linear(dim, len(params.levels))
        self.standardize = (
            nn.BatchNorm1d(len(params.levels), affine=False) if params.standardize else None
        )
        self.project_out = nn.Linear(len(params.levels), dim)

    @property
    def half_width(self) -> torch.Tensor:
        """[L] float: levels // 2; grid values are integers in [-half_width, levels - 1 - half_width]."""
        return (self.levels // 2).float()

    def bound(self, h: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
        """h: [N, L] -> values in (-levels/2, levels/2) that round to ``levels`` integers.

        tanh scaled to (L-1)/2 per level; for even L the range is shifted down by one half (the
        paper's offset). Unlike the paper's listing (``(1 - eps)`` and ``tan``) the scale is
        ``(L-1)(1 + eps)/2`` and the inner shift ``atanh(offset / half_l)``: bound(0) = 0 and
        L = 2 is well defined; rounding still yields exactly L integers for L < 1/eps.
        """
        levels = self.levels.float()
        half_l = (levels - 1) * (1 + eps) / 2
        offset = torch.where(self.levels % 2 == 1, 0.0, 0.5)
        shift = torch.atanh(offset / half_l)
        return torch.tanh(h + shift) * half_l - offset

    def quantize(self, h: torch.Tensor) -> torch.Tensor:
        """h: [N, L] -> grid values [N, L] in [-1, 1] (integers / half_width), straight-through."""
        bounded = self.bound(h)
        rounded = bounded + (bounded.round() - bounded).detach()
        return rounded / self.half_width

    def grid_to_codes(self, grid: torch.Tensor) -> torch.Tensor:
        """grid: [N, L] normalised grid values -> [N] int64 codes in [0, prod(levels))."""
        digits = (grid * self.half_width + self.half_width).round().long()  # [N, L] in [0, levels)
        return (digits * self.basis).sum(dim=-1)

    def codes_to_grid(self, codes: torch.Tensor) -> torch.Tensor:
        """codes: [N] int -> [N, L] normalised grid values (the inverse of ``grid_to_codes``)."""
        digits = (codes[:, None] // self.basis) % self.levels
        return (digits.float() - self.half_width) / self.half_width

    def forward(self, z: torch.Tensor) -> QuantizerOutput:
        """z: [B, D] -> z_q [B, D], codes [B] (mixed-radix index of the level tuple), loss:
        ``reconstruction_weight x mse(z_q, z)`` (mean over batch and D; 0 by default)."""
        z = self._vectors(z)
        leading, in_dtype = z.shape[:-1], z.dtype
        with torch.autocast(device_type=z.device.type, enabled=False):
            flat = z.reshape(-1, z.shape[-1]).float()
            h = self.project_in(flat)  # [N, L]
            if self.standardize is not None:
                h = 2.0 * self.standardize(h)
            grid = self.quantize(h)  # [N, L]
            codes = self.grid_to_codes(grid.detach())
            z_q = self.project_out(grid)
            _, metrics = self._usage_metrics(codes)
            loss = torch.zeros((), device=z.device)
            if self.params.reconstruction_weight > 0:
                reconstruction = F.mse_loss(z_q, flat)  # gradients to both sides
                loss = self.params.reconstruction_weight * reconstruction
                metrics["reconstruction"] = reconstruction.detach()
        return QuantizerOutput(
            z_q=self._latent(z_q.reshape(*leading, -1).to(in_dtype)),
            codes=codes.reshape(leading),
            loss=loss,
            metrics=metrics,
        )


@hookimpl
def register_quantizers(register):
    register("vq", VectorQuantizer)
    register("gumbel", GumbelQuantizer)
    register("fsq", FiniteScalarQuantizer)
