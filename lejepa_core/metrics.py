"""Diagnostics with one meaning everywhere (see docs/metrics.md).

Shape legend: ``N`` samples, ``D`` latent_dim.
"""

from __future__ import annotations

import torch


def error_to_signal_ratio(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """mean |prediction - target| / std(target), std over *all* elements of ``target``.

    prediction, target: [N, D]. 0-d tensor. Learned nothing: the mean-target baseline's figure
    (``baseline/mean``; sqrt(2/pi) ~ 0.80 for Gaussian latents, not 1.0); <= 0.1: excellent.
    """
    prediction, target = prediction.detach().float(), target.detach().float()
    mae = (prediction - target).abs().mean()
    return mae / target.std().clamp_min(1e-12)


def cosine_similarity(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean over samples of the cosine between prediction and target rows. [N, D] -> 0-d."""
    prediction, target = prediction.detach().float(), target.detach().float()
    return torch.nn.functional.cosine_similarity(prediction, target, dim=-1, eps=1e-8).mean()


def singular_values(z: torch.Tensor) -> torch.Tensor:
    """Singular values of the centred latent matrix ``z: [N, D]`` -> [min(N, D)]."""
    z = z.detach().float()
    z = z - z.mean(dim=0, keepdim=True)
    return torch.linalg.svdvals(z)


def exp_entropy(weights: torch.Tensor, empty: float) -> torch.Tensor:
    """exp(entropy) of the distribution ``weights / weights.sum()`` ([K] -> 0-d); ``empty`` if all 0."""
    total = weights.sum()
    p = weights / total.clamp_min(torch.finfo(weights.dtype).tiny)
    entropy = -torch.special.xlogy(p, p).sum()  # 0 log 0 = 0; fixed shapes, no host sync
    return torch.where(total > 0, torch.exp(entropy), torch.full_like(entropy, empty))


def effective_rank(z: torch.Tensor) -> torch.Tensor:
    """exp(entropy of sigma_i / sum sigma) of the centred ``z: [N, D]`` (Roy & Vetterli 2007).

    Ranges from 1 (collapsed to a line) to min(N, D) (all directions equal). 0-d tensor.
    """
    return exp_entropy(singular_values(z), empty=1.0)


def isotropy(z: torch.Tensor) -> torch.Tensor:
    """Smallest over largest eigenvalue of the covariance of ``z: [N, D]`` (1 = isotropic)."""
    s = singular_values(z)
    if s.numel() == 0 or s[0] <= 0:
        return torch.tensor(0.0)
    return (s[-1] / s[0]) ** 2


def per_dimension_variance(z: torch.Tensor) -> torch.Tensor:
    """Variance of each latent dimension over samples: [N, D] -> [D]."""
    return z.detach().float().var(dim=0)


def code_histogram(codes: torch.Tensor, codebook_size: int) -> torch.Tensor:
    """Counts of each code: codes [N] int (any shape, flattened) -> [codebook_size] float."""
    flat = codes.reshape(-1).long()
    counts = torch.zeros(codebook_size, device=codes.device)
    return counts.scatter_add_(0, flat, torch.ones_like(flat, dtype=counts.dtype))  # no sync


def codebook_usage(counts: torch.Tensor) -> torch.Tensor:
    """Distinct codes used / codebook size, from a histogram [K] -> 0-d."""
    return (counts > 0).float().mean()


def perplexity(counts: torch.Tensor) -> torch.Tensor:
    """exp(entropy of the code histogram) [K] -> 0-d; K when uniform, 1 when one code."""
    return exp_entropy(counts.float(), empty=0.0)
