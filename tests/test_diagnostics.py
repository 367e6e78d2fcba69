"""Values of ``validation_report``: the figures that pick ``best.pt`` and stop training early.

Each expected number is computed independently here, in float64 numpy/scipy, from the
definitions in docs/metrics.md: error-to-signal = mean |prediction - target| / std(target),
the std over all elements of all validation targets (sample std, ddof = 1), also for the
per-k values; cosine = mean over samples of the row cosine; baselines on the same samples.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.spatial.distance import cosine as cosine_distance

from lejepa_core.training.diagnostics import validation_report

HORIZONS = (1, 2, 4, 8)  # k = 8 has no sample: no /k8 keys


def as_tensor(values) -> torch.Tensor:
    return torch.tensor(np.asarray(values), dtype=torch.float32)


def report(prediction, target, last_context, k, copy_last=None):
    """``copy_last`` (target space) defaults to ``last_context``, as with a shared encoder."""
    return validation_report(
        prediction=as_tensor(prediction),
        target=as_tensor(target),
        copy_last=as_tensor(last_context if copy_last is None else copy_last),
        last_context=as_tensor(last_context),
        k=torch.tensor(k),
        horizons=HORIZONS,
    )


def expected_figures(prediction, target, k, prefix=""):
    """err_signal and cosine overall and per k, from the definitions (float64)."""
    prediction, target, k = np.asarray(prediction, float), np.asarray(target, float), np.array(k)
    sigma = np.std(target, ddof=1)
    abs_err = np.abs(prediction - target)
    cosines = np.array([1 - cosine_distance(p, t) for p, t in zip(prediction, target, strict=True)])
    out = {f"{prefix}err_signal": abs_err.mean() / sigma, f"{prefix}cosine": cosines.mean()}
    for h in HORIZONS:
        if (k == h).any():
            out[f"{prefix}err_signal/k{h}"] = abs_err[k == h].mean() / sigma
            out[f"{prefix}cosine/k{h}"] = cosines[k == h].mean()
    return out


@pytest.fixture
def samples():
    """N = 7 hand-made samples, D = 3; k = 1, 2 and 4 (unevenly), never 8."""
    target = [
        [1.0, -2.0, 0.5],
        [0.0, 1.5, -1.0],
        [2.0, 0.5, 0.0],
        [-1.0, -0.5, 3.0],
        [0.5, 2.5, -2.0],
        [-3.0, 1.0, 1.0],
        [1.5, -1.0, -0.5],
    ]
    prediction = [
        [0.8, -1.5, 0.0],
        [0.5, 1.0, -1.5],
        [1.0, 1.0, 0.5],
        [-0.5, 0.5, 2.0],
        [0.0, 2.0, -1.0],
        [-2.0, 0.0, 0.5],
        [2.0, -2.0, 0.0],
    ]
    last_context = [
        [0.5, -1.0, 1.0],
        [-0.5, 2.0, -0.5],
        [1.5, -0.5, 0.5],
        [-2.0, 0.0, 1.5],
        [1.0, 1.0, -1.0],
        [-1.0, 2.0, 0.0],
        [0.0, -0.5, -1.5],
    ]
    k = [1, 2, 1, 4, 2, 1, 4]
    return prediction, target, last_context, k


def test_worked_example_by_hand():
    """target rows ±e1, ±e2: elements 1, 0, 0, 1, -1, 0, 0, -1, mean 0, sample variance 4/7;
    half the target as prediction: mean |error| = 0.5 * 4/8 = 0.25, every cosine 1."""
    target = [[1, 0], [0, 1], [-1, 0], [0, -1]]
    prediction = [[0.5, 0], [0, 0.5], [-0.5, 0], [0, -0.5]]
    out = report(prediction, target, prediction, [1, 1, 2, 4])
    assert out["target_std"] == pytest.approx(math.sqrt(4 / 7))
    assert out["err_signal"] == pytest.approx(0.25 / math.sqrt(4 / 7))
    assert out["cosine"] == pytest.approx(1.0)
    # per k, over the same denominator: k=1 rows 0-1, k=2 row 2, k=4 row 3, each 0.5 * 1/2
    for h in (1, 2, 4):
        assert out[f"err_signal/k{h}"] == pytest.approx(0.25 / math.sqrt(4 / 7))
    # the mean target is 0: predicting it costs mean |target| / std, cosine 0 by convention
    assert out["baseline/mean/err_signal"] == pytest.approx(0.5 / math.sqrt(4 / 7))
    assert out["baseline/mean/cosine"] == pytest.approx(0.0)


def test_model_figures_match_the_definitions(samples):
    prediction, target, last_context, k = samples
    out = report(prediction, target, last_context, k)
    for key, value in expected_figures(prediction, target, k).items():
        assert out[key] == pytest.approx(value, rel=1e-5), key
    assert out["target_std"] == pytest.approx(np.std(np.asarray(target), ddof=1), rel=1e-6)
    assert not any(key.endswith("/k8") for key in out)


def test_copy_last_baselines_in_the_target_and_the_context_space(samples):
    """``baseline/copy_last`` predicts the target encoder's latent of the last context frame,
    ``baseline/copy_last_context`` the context encoder's; both against the same targets."""
    prediction, target, last_context, k = samples
    in_target_space = np.asarray(last_context) * 0.7 + 0.3  # another encoder's view
    out = report(prediction, target, last_context, k, copy_last=in_target_space)
    expected = expected_figures(in_target_space, target, k, "baseline/copy_last/")
    expected |= expected_figures(last_context, target, k, "baseline/copy_last_context/")
    for key, value in expected.items():
        assert out[key] == pytest.approx(value, rel=1e-5), key
    assert out["baseline/copy_last/err_signal"] != pytest.approx(
        out["baseline/copy_last_context/err_signal"]
    )


def test_mean_baseline_predicts_the_mean_of_all_validation_targets(samples):
    prediction, target, last_context, k = samples
    out = report(prediction, target, last_context, k)
    mean = np.broadcast_to(np.asarray(target).mean(axis=0), np.shape(target))
    for key, value in expected_figures(mean, target, k, "baseline/mean/").items():
        assert out[key] == pytest.approx(value, rel=1e-5), key


def test_per_k_figures_share_the_denominator(samples):
    """Per-k err_signal weighted by sample counts gives back the overall figure."""
    prediction, target, last_context, k = samples
    out = report(prediction, target, last_context, k)
    counts = {h: k.count(h) for h in (1, 2, 4)}
    for prefix in ("", "baseline/copy_last/", "baseline/copy_last_context/", "baseline/mean/"):
        pooled = sum(out[f"{prefix}err_signal/k{h}"] * n for h, n in counts.items()) / len(k)
        assert pooled == pytest.approx(out[f"{prefix}err_signal"], rel=1e-5)


def test_err_signal_is_scale_free_and_zero_for_a_perfect_prediction(samples):
    prediction, target, last_context, k = samples
    out = report(prediction, target, last_context, k)
    scaled = report(*(np.asarray(a) * 7.5 for a in (prediction, target, last_context)), k)
    for key in ("err_signal", "err_signal/k2", "baseline/copy_last/err_signal"):
        assert scaled[key] == pytest.approx(out[key], rel=1e-5)
    assert scaled["target_std"] == pytest.approx(7.5 * out["target_std"], rel=1e-5)
    perfect = report(target, target, last_context, k)
    assert perfect["err_signal"] == 0.0 and perfect["cosine"] == pytest.approx(1.0)


def test_latent_figures_of_context_and_target(samples):
    """Effective rank exp(H(s / sum s)), per-dimension variance and (s_min / s_max)^2 of the
    centred latents, from numpy's SVD."""
    prediction, target, last_context, k = samples
    out = report(prediction, target, last_context, k)
    for name, z in (("context", last_context), ("target", target)):
        z = np.asarray(z, float)
        s = np.linalg.svd(z - z.mean(axis=0), compute_uv=False)
        p = s / s.sum()
        assert out[f"rank/{name}"] == pytest.approx(np.exp(-(p * np.log(p)).sum()), rel=1e-5)
        variance = z.var(axis=0, ddof=1)
        assert out[f"variance/{name}/min"] == pytest.approx(variance.min(), rel=1e-5)
        assert out[f"variance/{name}/mean"] == pytest.approx(variance.mean(), rel=1e-5)
        assert out[f"isotropy/{name}"] == pytest.approx((s[-1] / s[0]) ** 2, rel=1e-4)


def test_mean_baseline_of_gaussian_latents_reads_about_0_8():
    """Predicting the mean of Gaussian latents reads E|x - μ| / σ = sqrt(2/π) ≈ 0.80, not 1.0:
    the "learned nothing" level is ``baseline/mean``, not a fixed 1.0."""
    target = torch.randn(20000, 8, generator=torch.Generator().manual_seed(0))
    out = validation_report(
        prediction=target,
        target=target,
        copy_last=target,
        last_context=target,
        k=torch.ones(20000, dtype=torch.int64),
        horizons=(1,),
    )
    assert out["baseline/mean/err_signal"] == pytest.approx(math.sqrt(2 / math.pi), abs=0.01)


# ----------------------------------------------------------------------------- validate
def test_validate_copies_the_last_frame_through_the_target_encoder(tmp_path, tiny_data):
    """With an EMA target encoder that differs from the context encoder, copy-last is the
    *target* encoder on the unmasked last context frame (issue 10, item 1); the context
    encoder's version is kept under ``baseline/copy_last_context``."""
    from lejepa_core.data.reader import TrajectoryData
    from lejepa_core.training import distributed
    from lejepa_core.training.diagnostics import prediction_report
    from lejepa_core.training.run import build_run, build_samplers
    from lejepa_core.training.validate import validate
    from tests.conftest import tiny_recipe

    recipe = tiny_recipe(tmp_path, tiny_data)
    data = TrajectoryData.open(tiny_data, device="cpu", normalize=recipe.data.normalize)
    _, val_batches = build_samplers(recipe, data, torch.device("cpu"))
    run = build_run(recipe, data, torch.device("cpu"), distributed.DistInfo())
    with torch.no_grad():  # the EMA copy drifts away from the context encoder
        for p in run.target_encoder.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=torch.Generator().manual_seed(1)))
    out = validate(run, val_batches)

    with torch.no_grad():
        last = torch.cat([b.context_obs[:, -1] for b in val_batches])
        target = torch.cat([run.target_encoder(b.target_obs) for b in val_batches])
        k = torch.cat([b.k for b in val_batches])
        sigma = target.std()
        horizons = tuple(recipe.data.horizons)
        expected = prediction_report(
            run.target_encoder(last), target, k, horizons, "baseline/copy_last/", sigma=sigma
        )
        expected |= prediction_report(
            run.model.context_encoder(last),
            target,
            k,
            horizons,
            "baseline/copy_last_context/",
            sigma=sigma,
        )
    for key, value in expected.items():
        assert out[key] == pytest.approx(value, rel=1e-5), key
    assert out["baseline/copy_last/err_signal"] < 0.9 * out["baseline/copy_last_context/err_signal"]
