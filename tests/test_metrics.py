"""Metrics against independent formulas (numpy, by hand)."""

import math

import numpy as np
import torch

from lejepa_core import metrics


def test_error_to_signal_ratio_uses_std_over_all_elements():
    target = torch.tensor([[0.0, 2.0], [4.0, 6.0]])
    prediction = target + torch.tensor([[1.0, -1.0], [1.0, -1.0]])
    expected = 1.0 / np.std([0.0, 2.0, 4.0, 6.0], ddof=1)
    assert math.isclose(
        metrics.error_to_signal_ratio(prediction, target).item(), expected, rel_tol=1e-6
    )


def test_error_to_signal_of_copying_the_mean_is_about_0_8_for_gaussians():
    g = torch.Generator().manual_seed(0)
    target = torch.randn(20000, 8, generator=g)
    # E|x| / std = sqrt(2 / pi) for a standard normal
    ratio = metrics.error_to_signal_ratio(torch.zeros_like(target), target).item()
    assert abs(ratio - math.sqrt(2 / math.pi)) < 0.01


def test_cosine_similarity_by_hand():
    a = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    b = torch.tensor([[0.0, 1.0], [2.0, 2.0]])
    assert math.isclose(metrics.cosine_similarity(a, b).item(), 0.5, rel_tol=1e-6)


def test_effective_rank_matches_numpy_and_bounds():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(500, 6)) * np.array([5, 4, 3, 2, 1, 0.5])
    zc = z - z.mean(0)
    s = np.linalg.svd(zc, compute_uv=False)
    p = s / s.sum()
    expected = math.exp(-(p * np.log(p)).sum())
    assert math.isclose(metrics.effective_rank(torch.tensor(z)).item(), expected, rel_tol=1e-5)
    line = torch.randn(100, 1) * torch.ones(1, 6)
    assert metrics.effective_rank(line).item() < 1.01
    iso = torch.randn(5000, 6, generator=torch.Generator().manual_seed(1))
    assert metrics.effective_rank(iso).item() > 5.8


def test_isotropy_and_variance():
    z = torch.randn(4000, 3, generator=torch.Generator().manual_seed(2)) * torch.tensor(
        [1.0, 1.0, 2.0]
    )
    assert abs(metrics.isotropy(z).item() - 0.25) < 0.03
    assert torch.allclose(
        metrics.per_dimension_variance(z), torch.tensor([1.0, 1.0, 4.0]), rtol=0.1
    )


def test_usage_and_perplexity_by_hand():
    counts = metrics.code_histogram(torch.tensor([0, 0, 1, 3]), codebook_size=8)
    assert counts.tolist() == [2, 1, 0, 1, 0, 0, 0, 0]
    assert metrics.codebook_usage(counts).item() == 3 / 8
    p = np.array([0.5, 0.25, 0.25])
    assert math.isclose(
        metrics.perplexity(counts).item(), math.exp(-(p * np.log(p)).sum()), rel_tol=1e-6
    )
    assert math.isclose(metrics.perplexity(torch.ones(16)).item(), 16, rel_tol=1e-6)
