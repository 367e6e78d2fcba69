"""Built-in losses against independent (numpy, loop-based) formulas; gradient checks.

SIGReg has its own file, tests/test_sigreg.py.
"""

from __future__ import annotations

import math

import attrs
import numpy as np
import pytest
import scipy.special
import torch

from lejepa_core import Loss, LossOutput, ModelSpec, StepOutputs
from lejepa_core.errors import TrainingError
from lejepa_plugins import losses as losses_module
from lejepa_plugins.losses import (
    LOSSES,
    CosineLoss,
    InfoNCELoss,
    InvarianceLoss,
    L1Loss,
    MSELoss,
    RelationalLoss,
    SmoothL1Loss,
    VICRegLoss,
)

SPEC = ModelSpec(obs_shape=(4,), latent_dim=6, context_frames=3)


def build(cls, **params):
    return cls(cls.Params(**params), SPEC)


def outputs(prediction=None, target=None, context=None, context_unmasked=None, seed=0):
    g = torch.Generator().manual_seed(seed)
    batch = (prediction if prediction is not None else context).shape[0]
    d = (prediction if prediction is not None else context).shape[-1]
    if prediction is None:
        prediction = torch.randn(batch, d, generator=g)
    if target is None:
        target = torch.randn(batch, d, generator=g)
    if context is None:
        context = torch.randn(batch, 3, d, generator=g)
    generator = torch.Generator().manual_seed(seed)
    return StepOutputs(
        prediction=prediction,
        target=target,
        context=context,
        k=torch.ones(batch, dtype=torch.long),
        context_unmasked=context_unmasked,
        generator=generator,
    )


def randn(*shape, seed=0, requires_grad=False):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g).requires_grad_(requires_grad)


def assert_gradient_reaches(value: torch.Tensor, *leaves: torch.Tensor) -> None:
    assert value.ndim == 0 and torch.isfinite(value)
    value.backward()
    for leaf in leaves:
        assert leaf.grad is not None, "no gradient reached the input"
        assert torch.isfinite(leaf.grad).all()
        assert leaf.grad.abs().sum() > 0


# ----------------------------------------------------------------------------- registration


def test_register_losses_registers_every_name():
    seen = {}
    losses_module.register_losses(register=lambda name, cls: seen.setdefault(name, cls))
    assert set(seen) == {
        "l1",
        "mse",
        "smooth_l1",
        "cosine",
        "infonce",
        "sigreg",
        "vicreg",
        "relational",
        "invariance",
    }
    for cls in seen.values():
        assert issubclass(cls, Loss)
        assert attrs.has(cls.Params)
        assert cls.__doc__.strip().splitlines()[0]
        for field in attrs.fields(cls.Params):
            assert field.metadata.get("help"), f"{cls.__name__}.{field.name} has no help"


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_every_loss_smoke(name):
    cls = LOSSES[name]
    prediction = randn(8, 6, seed=1, requires_grad=True)
    context = randn(8, 3, 6, seed=2, requires_grad=True)
    out = outputs(
        prediction=prediction,
        target=randn(8, 6, seed=3),
        context=context,
        context_unmasked=randn(8, 3, 6, seed=4),
    )
    result = build(cls)(out)
    assert isinstance(result, LossOutput)
    assert result.value.ndim == 0 and torch.isfinite(result.value)
    for key, metric in result.metrics.items():
        if isinstance(metric, torch.Tensor):
            assert metric.ndim == 0 and not metric.requires_grad, key
        else:
            assert isinstance(metric, float), key
    result.value.backward()
    grads = [t.grad for t in (prediction, context) if t.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


# ----------------------------------------------------------------------------- prediction losses


def loop_l1(p, t):
    b, d = p.shape
    return sum(abs(p[i, j] - t[i, j]) for i in range(b) for j in range(d)) / (b * d)


def loop_mse(p, t):
    b, d = p.shape
    return sum((p[i, j] - t[i, j]) ** 2 for i in range(b) for j in range(d)) / (b * d)


def loop_smooth_l1(p, t, beta):
    b, d = p.shape
    total = 0.0
    for i in range(b):
        for j in range(d):
            e = abs(p[i, j] - t[i, j])
            total += 0.5 * e * e / beta if e < beta else e - 0.5 * beta
    return total / (b * d)


def loop_cosine_loss(p, t):
    b = p.shape[0]
    total = 0.0
    for i in range(b):
        cos = float(np.dot(p[i], t[i]) / (np.linalg.norm(p[i]) * np.linalg.norm(t[i])))
        total += 1.0 - cos
    return total / b


@pytest.mark.parametrize(
    ("cls", "params", "formula"),
    [
        (L1Loss, {}, loop_l1),
        (MSELoss, {}, loop_mse),
        (SmoothL1Loss, {"beta": 0.5}, lambda p, t: loop_smooth_l1(p, t, 0.5)),
        (SmoothL1Loss, {"beta": 2.0}, lambda p, t: loop_smooth_l1(p, t, 2.0)),
        (CosineLoss, {}, loop_cosine_loss),
    ],
)
def test_prediction_loss_matches_loop_formula(cls, params, formula):
    p, t = randn(7, 5, seed=10), randn(7, 5, seed=11) * 2.0
    result = build(cls, **params)(outputs(prediction=p, target=t))
    assert result.value.item() == pytest.approx(formula(p.numpy(), t.numpy()), rel=1e-5)


def test_prediction_metrics_are_error_to_signal_and_cosine():
    p, t = randn(9, 4, seed=12), randn(9, 4, seed=13) * 3.0 + 1.0
    metrics = build(L1Loss)(outputs(prediction=p, target=t)).metrics
    pn, tn = p.numpy().astype(np.float64), t.numpy().astype(np.float64)
    expected_ratio = np.abs(pn - tn).mean() / tn.std(ddof=1)
    expected_cos = np.mean(
        [pn[i] @ tn[i] / np.linalg.norm(pn[i]) / np.linalg.norm(tn[i]) for i in range(9)]
    )
    assert float(metrics["error_to_signal"]) == pytest.approx(expected_ratio, rel=1e-5)
    assert float(metrics["cosine"]) == pytest.approx(expected_cos, rel=1e-5)


@pytest.mark.parametrize(
    ("cls", "expected"),
    [
        (L1Loss, 0.3),
        (MSELoss, 0.09),
        (SmoothL1Loss, 0.5 * 0.09),  # beta = 1, |e| = 0.3 < beta
    ],
)
def test_value_does_not_shrink_with_batch_or_dim(cls, expected):
    """The loss-normalisation lesson: a fixed per-element error gives one number whatever
    B and D (nothing divided by the size of the model)."""
    for batch, dim in [(2, 3), (64, 3), (2, 512), (128, 256)]:
        target = randn(batch, dim, seed=batch + dim)
        signs = torch.where(randn(batch, dim, seed=batch * dim) > 0, 1.0, -1.0)
        result = build(cls)(outputs(prediction=target + 0.3 * signs, target=target))
        assert result.value.item() == pytest.approx(expected, rel=1e-5), (batch, dim)


def test_cosine_loss_does_not_shrink_with_batch_or_dim():
    angle = 0.4
    for batch, dim in [(2, 2), (64, 2), (3, 300)]:
        # rotate each target by `angle` inside the plane of its first two coordinates
        target = torch.zeros(batch, dim)
        target[:, 0] = 1.0
        prediction = torch.zeros(batch, dim)
        prediction[:, 0], prediction[:, 1] = math.cos(angle), math.sin(angle)
        result = build(CosineLoss)(outputs(prediction=prediction * 3.0, target=target))
        assert result.value.item() == pytest.approx(1 - math.cos(angle), rel=1e-5)


@pytest.mark.parametrize("cls", [L1Loss, MSELoss, SmoothL1Loss, CosineLoss])
def test_prediction_loss_gradient_and_stop_gradient(cls):
    prediction = randn(6, 4, seed=20, requires_grad=True)
    target = randn(6, 4, seed=21, requires_grad=True)
    value = build(cls)(outputs(prediction=prediction, target=target)).value
    assert_gradient_reaches(value, prediction)
    assert target.grad is None, "stop_gradient_target=true must detach the target"

    prediction.grad = None
    value = build(cls, stop_gradient_target=False)(outputs(prediction=prediction, target=target))
    assert_gradient_reaches(value.value, prediction, target)


def test_prediction_loss_shape_error_names_shapes():
    with pytest.raises(ValueError, match=r"\(4, 3\) and \(4, 5\)"):
        build(MSELoss)(outputs(prediction=torch.zeros(4, 3), target=torch.zeros(4, 5)))


# ----------------------------------------------------------------------------- InfoNCE


def numpy_infonce(p, t, temperature, symmetric):
    p = p / np.linalg.norm(p, axis=1, keepdims=True)
    t = t / np.linalg.norm(t, axis=1, keepdims=True)
    logits = p @ t.T / temperature
    rows = -np.mean(np.diag(scipy.special.log_softmax(logits, axis=1)))
    if not symmetric:
        return rows
    columns = -np.mean(np.diag(scipy.special.log_softmax(logits, axis=0)))
    return 0.5 * (rows + columns)


@pytest.mark.parametrize("symmetric", [False, True])
@pytest.mark.parametrize("temperature", [0.07, 0.5])
def test_infonce_matches_scipy_cross_entropy(symmetric, temperature):
    p, t = randn(10, 6, seed=30), randn(10, 6, seed=31)
    loss = build(InfoNCELoss, temperature=temperature, symmetric=symmetric, min_temperature=0.05)
    result = loss(outputs(prediction=p, target=t))
    expected = numpy_infonce(p.double().numpy(), t.double().numpy(), temperature, symmetric)
    assert result.value.item() == pytest.approx(expected, rel=1e-4)


@pytest.mark.parametrize("batch", [2, 8, 64])
def test_infonce_reads_ln_batch_when_nothing_is_learned(batch):
    """Mean over the batch, not over B x B: identical embeddings give exactly ln B."""
    ones = torch.ones(batch, 5)
    result = build(InfoNCELoss)(outputs(prediction=ones, target=ones))
    assert result.value.item() == pytest.approx(math.log(batch), rel=1e-5)
    assert result.metrics["chance_level"] == pytest.approx(math.log(batch))


def test_infonce_accuracy_and_temperature_metrics():
    t = randn(12, 8, seed=32)
    result = build(InfoNCELoss, temperature=0.2)(outputs(prediction=t * 2.0, target=t))
    assert float(result.metrics["accuracy"]) == 1.0
    assert float(result.metrics["temperature"]) == pytest.approx(0.2)
    shuffled = t[torch.roll(torch.arange(12), 1)]
    result = build(InfoNCELoss)(outputs(prediction=shuffled, target=t))
    assert float(result.metrics["accuracy"]) == 0.0


def test_infonce_gradient_and_learnable_temperature():
    prediction = randn(8, 6, seed=33, requires_grad=True)
    loss = build(InfoNCELoss, learnable_temperature=True, temperature=0.1)
    parameters = list(loss.parameters())
    assert len(parameters) == 1
    assert_gradient_reaches(loss(outputs(prediction=prediction)).value, prediction, parameters[0])
    # a fixed temperature is a buffer, not a parameter
    assert list(build(InfoNCELoss).parameters()) == []


def test_infonce_learnable_temperature_is_projected_into_its_range():
    loss = build(
        InfoNCELoss,
        learnable_temperature=True,
        temperature=0.1,
        min_temperature=0.05,
        max_temperature=0.5,
    )
    with torch.no_grad():
        loss.log_temperature.fill_(math.log(10.0))
    result = loss(outputs(prediction=randn(4, 3, seed=34)))
    assert float(result.metrics["temperature"]) == pytest.approx(0.5)
    with torch.no_grad():
        loss.log_temperature.fill_(math.log(1e-4))
    assert float(loss.temperature().detach()) == pytest.approx(0.05)


def test_infonce_rejects_temperature_outside_its_range():
    with pytest.raises(ValueError, match="temperature"):
        InfoNCELoss.Params(temperature=2.0, max_temperature=1.0)


# ----------------------------------------------------------------------------- VICReg


def numpy_vicreg_terms(z, gamma=1.0, eps=1e-4):
    """Bardes et al. 2022, eq. (1)-(4), written per dimension with numpy."""
    n, d = z.shape
    std = np.sqrt(np.var(z, axis=0, ddof=1) + eps)
    variance = np.mean([max(0.0, gamma - std[j]) for j in range(d)])
    cov = np.cov(z, rowvar=False)
    covariance = sum(cov[i, j] ** 2 for i in range(d) for j in range(d) if i != j) / d
    return variance, covariance


def test_vicreg_prediction_target_matches_paper_formulas():
    p = randn(16, 5, seed=40).double().numpy() * 0.5
    t = randn(16, 5, seed=41).double().numpy() * 2.0
    t[:, 1] = t[:, 0] * 0.8 + 0.1 * t[:, 1]  # correlated dimensions
    result = build(VICRegLoss)(
        outputs(prediction=torch.tensor(p).float(), target=torch.tensor(t).float())
    )
    invariance = np.mean((p - t) ** 2)
    var_p, cov_p = numpy_vicreg_terms(p)
    var_t, cov_t = numpy_vicreg_terms(t)
    variance, covariance = (var_p + var_t) / 2, cov_p + cov_t
    metrics = result.metrics
    assert float(metrics["invariance"]) == pytest.approx(invariance, rel=1e-5)
    assert float(metrics["variance"]) == pytest.approx(variance, rel=1e-5)
    assert float(metrics["covariance"]) == pytest.approx(covariance, rel=1e-4)
    expected = 25 * invariance + 25 * variance + 1 * covariance
    assert result.value.item() == pytest.approx(expected, rel=1e-5)


def test_vicreg_context_uses_flattened_context_alone():
    context = randn(6, 3, 4, seed=42) * 0.3
    loss = build(VICRegLoss, on="context", variance_weight=2.0, covariance_weight=3.0, gamma=0.7)
    result = loss(outputs(context=context))
    variance, covariance = numpy_vicreg_terms(context.reshape(18, 4).double().numpy(), gamma=0.7)
    assert "invariance" not in result.metrics
    assert result.value.item() == pytest.approx(2 * variance + 3 * covariance, rel=1e-5)


def test_vicreg_collapsed_batch_pays_the_full_variance_hinge():
    collapsed = torch.ones(8, 4)
    result = build(VICRegLoss)(outputs(prediction=collapsed, target=collapsed))
    assert float(result.metrics["variance"]) == pytest.approx(1.0 - math.sqrt(1e-4), rel=1e-5)
    assert float(result.metrics["covariance"]) == 0.0


def test_vicreg_gradient_reaches_inputs():
    prediction = randn(8, 4, seed=43, requires_grad=True)
    context = randn(8, 3, 4, seed=44, requires_grad=True)
    assert_gradient_reaches(build(VICRegLoss)(outputs(prediction=prediction)).value, prediction)
    value = build(VICRegLoss, on="context")(outputs(context=context)).value
    assert_gradient_reaches(value, context)


# ----------------------------------------------------------------------------- relational


def loop_relational(c, t, normalisation="mean_distance", penalty="squared", beta=0.1):
    b = c.shape[0]
    pairs = [(i, j) for i in range(b) for j in range(i + 1, b)]
    dc = np.array([np.linalg.norm(c[i] - c[j]) for i, j in pairs])
    dt = np.array([np.linalg.norm(t[i] - t[j]) for i, j in pairs])
    if normalisation == "mean_distance":
        dc, dt = dc / dc.mean(), dt / dt.mean()
    else:
        dc = dc / np.sqrt(2 * np.var(c, axis=0, ddof=1).sum())
        dt = dt / np.sqrt(2 * np.var(t, axis=0, ddof=1).sum())
    e = dc - dt
    if penalty == "squared":
        return np.mean(e**2)
    return np.mean([0.5 * x * x / beta if abs(x) < beta else abs(x) - 0.5 * beta for x in e])


def relational_inputs(scale_context=1.0, scale_target=1.0):
    context = randn(10, 3, 5, seed=50)
    target = context[:, -1] + 0.5 * randn(10, 5, seed=51)
    return context * scale_context, target * scale_target


@pytest.mark.parametrize("normalisation", ["mean_distance", "total_variance"])
@pytest.mark.parametrize("penalty", ["squared", "smooth_l1"])
def test_relational_matches_loop_formula(normalisation, penalty):
    context, target = relational_inputs()
    loss = build(RelationalLoss, normalisation=normalisation, penalty=penalty, beta=0.05)
    result = loss(outputs(context=context, target=target, prediction=target))
    expected = loop_relational(
        context[:, -1].double().numpy(), target.double().numpy(), normalisation, penalty, 0.05
    )
    assert result.value.item() == pytest.approx(expected, rel=1e-4)


@pytest.mark.parametrize("normalisation", ["mean_distance", "total_variance"])
def test_relational_is_scale_invariant_where_raw_distances_explode(normalisation):
    """The production-run lesson: as the latent space spreads, raw pairwise-distance losses
    grow with the square of the scale; the normalised loss must not move."""
    loss = build(RelationalLoss, normalisation=normalisation)
    base_context, base_target = relational_inputs()
    base = loss(outputs(context=base_context, target=base_target)).value.item()
    raw_base = np.mean(
        (
            torch.pdist(base_context[:, -1].double()).numpy()
            - torch.pdist(base_target.double()).numpy()
        )
        ** 2
    )
    for scale in (10.0, 1000.0):
        context, target = relational_inputs(scale, scale)
        value = loss(outputs(context=context, target=target)).value.item()
        assert value == pytest.approx(base, rel=1e-4)
        raw = np.mean(
            (torch.pdist(context[:, -1].double()).numpy() - torch.pdist(target.double()).numpy())
            ** 2
        )
        assert raw == pytest.approx(raw_base * scale**2, rel=1e-4)  # what we avoid
    # one encoder spreading alone (context x1000, target x1) changes nothing either
    context, target = relational_inputs(1000.0, 1.0)
    assert loss(outputs(context=context, target=target)).value.item() == pytest.approx(
        base, rel=1e-4
    )
    assert float(loss(outputs(context=context, target=target)).metrics["context_scale"]) > 100


def test_relational_gradient_reaches_inputs_and_survives_collapse():
    context = randn(6, 3, 4, seed=52, requires_grad=True)
    target = randn(6, 4, seed=53, requires_grad=True)
    value = build(RelationalLoss)(outputs(context=context, target=target)).value
    assert_gradient_reaches(value, context, target)

    collapsed = torch.zeros(6, 3, 4, requires_grad=True)
    value = build(RelationalLoss)(outputs(context=collapsed, target=randn(6, 4, seed=54))).value
    value.backward()
    assert torch.isfinite(value) and torch.isfinite(collapsed.grad).all()


def reference_pairwise_distances(z):
    """The former implementation: every pair's difference ``[B (B - 1) / 2, D]``."""
    i, j = torch.triu_indices(z.shape[0], z.shape[0], offset=1)
    return (z[i] - z[j]).square().sum(dim=-1).clamp_min(1e-24).sqrt()


def test_pairwise_distances_equal_the_pair_differences_formula_with_gradients():
    z = randn(12, 7, seed=55, requires_grad=True)
    reference_z = z.detach().clone().requires_grad_(True)
    distances = losses_module.pairwise_distances(z)
    reference = reference_pairwise_distances(reference_z)
    torch.testing.assert_close(distances, reference, rtol=1e-6, atol=1e-6)
    weights = randn(distances.shape[0], seed=56)
    (distances * weights).sum().backward()
    (reference * weights).sum().backward()
    torch.testing.assert_close(z.grad, reference_z.grad, rtol=1e-5, atol=1e-6)


def test_relational_never_builds_a_pairs_by_dimension_tensor():
    """O(B^2) memory, not O(B^2 D): no tensor of forward or backward (every aten op's
    output, recorded below the autograd level) reaches B * B * D / 4 elements."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class LargestOutput(TorchDispatchMode):
        largest = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            result = func(*args, **(kwargs or {}))
            for item in torch.utils._pytree.tree_leaves(result):
                if isinstance(item, torch.Tensor):
                    LargestOutput.largest = max(LargestOutput.largest, item.numel())
            return result

    b, d = 512, 64
    context = randn(b, 2, d, seed=57, requires_grad=True)
    target = randn(b, d, seed=58, requires_grad=True)
    with LargestOutput():
        build(RelationalLoss)(outputs(context=context, target=target)).value.backward()
    assert b * b <= LargestOutput.largest < b * b * d // 4


# ----------------------------------------------------------------------------- invariance


@pytest.mark.parametrize("distance", ["mse", "l1"])
def test_invariance_matches_loop_formula_and_detaches_unmasked(distance):
    masked = randn(4, 3, 5, seed=60, requires_grad=True)
    unmasked = randn(4, 3, 5, seed=61, requires_grad=True)
    loss = build(InvarianceLoss, distance=distance)
    result = loss(outputs(context=masked, context_unmasked=unmasked))
    m, u = masked.detach().double().numpy(), unmasked.detach().double().numpy()
    per_sample = []
    for b in range(4):
        diffs = [m[b, w, d] - u[b, w, d] for w in range(3) for d in range(5)]
        per_sample.append(np.mean([x * x if distance == "mse" else abs(x) for x in diffs]))
    assert result.value.item() == pytest.approx(np.mean(per_sample), rel=1e-5)
    assert_gradient_reaches(result.value, masked)
    assert unmasked.grad is None


def test_invariance_requires_context_unmasked_and_says_so_when_missing():
    assert "context_unmasked" in InvarianceLoss.requires
    with pytest.raises(TrainingError, match="context_unmasked"):
        build(InvarianceLoss)(outputs(context=randn(4, 3, 5), context_unmasked=None))


def test_invariance_shape_mismatch_names_shapes():
    with pytest.raises(ValueError, match=r"\(4, 3, 5\) and \(4, 2, 5\)"):
        build(InvarianceLoss)(outputs(context=randn(4, 3, 5), context_unmasked=randn(4, 2, 5)))
