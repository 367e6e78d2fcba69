"""Quantizers against independent formulas: assignment, EMA, gradients, dead codes, FSQ grid, DDP."""

from __future__ import annotations

import itertools
import math
import tempfile
from pathlib import Path

import attrs
import pytest
import torch
import torch.nn.functional as F

from lejepa_core import ModelSpec, Quantizer
from lejepa_core.metrics import code_histogram, codebook_usage, perplexity
from lejepa_plugins import quantizers as q

D = 4


def spec(latent_dim: int = D) -> ModelSpec:
    return ModelSpec(obs_shape=(4,), latent_dim=latent_dim)


def vq(**kw) -> q.VectorQuantizer:
    kw.setdefault("codebook_size", 8)
    return q.VectorQuantizer(q.VectorQuantizer.Params(**kw), spec())


def test_registration_names_and_params_have_help():
    registered = {}
    q.register_quantizers(lambda name, cls: registered.setdefault(name, cls))
    assert registered == {
        "vq": q.VectorQuantizer,
        "gumbel": q.GumbelQuantizer,
        "fsq": q.FiniteScalarQuantizer,
    }
    for cls in registered.values():
        assert issubclass(cls, Quantizer)
        for field in attrs.fields(cls.Params):
            assert field.default is not attrs.NOTHING and field.metadata["help"], field.name


@pytest.mark.parametrize("name", ["vq", "gumbel", "fsq"])
def test_smoke_forward_backward_shapes_and_metrics(name):
    registered = {}
    q.register_quantizers(lambda n, cls: registered.setdefault(n, cls))
    cls = registered[name]
    torch.manual_seed(0)
    model = cls(cls.Params(), spec(6))
    z = torch.randn(3, 5, 6, requires_grad=True)  # [B, W, D] also accepted
    out = model(z)
    assert out.z_q.shape == z.shape and out.z_q.dtype == z.dtype
    assert out.codes.shape == (3, 5) and out.codes.dtype == torch.int64
    assert out.loss.dim() == 0
    (out.z_q.square().mean() + out.loss).backward()
    assert z.grad is not None and torch.isfinite(z.grad).all()
    expected = {"usage", "usage_relative", "usage_window", "perplexity"}
    if name == "vq":
        expected |= {"dead_codes", "replaced_codes"}
    assert expected <= set(out.metrics)


def test_validation_names_values():
    with pytest.raises(ValueError, match="codebook_size"):
        q.VectorQuantizer.Params(codebook_size=0)
    with pytest.raises(ValueError, match="gradient.*'rotation'.*\"sideways\""):
        q.VectorQuantizer.Params(gradient="sideways")
    with pytest.raises(ValueError, match="levels: expected every level >= 2, got 1"):
        q.FiniteScalarQuantizer.Params(levels=(8, 1))
    with pytest.raises(ValueError, match="temperature"):
        q.GumbelQuantizer.Params(temperature=0.0)


# -- vq ------------------------------------------------------------------------------------


def test_vq_nearest_code_matches_brute_force():
    torch.manual_seed(1)
    model = vq(codebook_size=16).eval()
    z = torch.randn(64, D)
    brute = torch.cdist(z, model.codebook).argmin(dim=1)
    out = model(z)
    assert torch.equal(out.codes, brute)
    torch.testing.assert_close(out.z_q, model.codebook[brute])  # z + sg(z_q - z): within an ulp


def test_vq_ema_update_matches_hand_computation():
    model = q.VectorQuantizer(
        q.VectorQuantizer.Params(codebook_size=2, decay=0.5, epsilon=0.1, replace_dead_codes=False),
        spec(2),
    )
    model.codebook.copy_(torch.tensor([[0.0, 0.0], [10.0, 10.0]]))
    model.ema_embed_sum.copy_(model.codebook)
    z = torch.tensor([[1.0, 0.0], [0.0, 1.0], [9.0, 10.0]])
    out = model(z)  # training mode
    assert out.codes.tolist() == [0, 0, 1]
    # by hand: n = 0.5*1 + 0.5*count; s = 0.5*e0 + 0.5*sum(z assigned)
    n0, n1 = 0.5 + 0.5 * 2, 0.5 + 0.5 * 1  # 1.5, 1.0
    s0 = [0.5 * 0 + 0.5 * 1.0, 0.5 * 0 + 0.5 * 1.0]  # [0.5, 0.5]
    s1 = [0.5 * 10 + 0.5 * 9.0, 0.5 * 10 + 0.5 * 10.0]  # [9.5, 10.0]
    total, eps, K = n0 + n1, 0.1, 2
    sm0, sm1 = (n0 + eps) / (total + K * eps) * total, (n1 + eps) / (total + K * eps) * total
    expected = torch.tensor([[s0[0] / sm0, s0[1] / sm0], [s1[0] / sm1, s1[1] / sm1]])
    torch.testing.assert_close(model.ema_cluster_size, torch.tensor([n0, n1]))
    torch.testing.assert_close(model.ema_embed_sum, torch.tensor([s0, s1]))
    torch.testing.assert_close(model.codebook, expected)
    # eval mode leaves every buffer alone
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.eval()
    model(z)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_vq_commitment_loss_is_mse_mean_over_batch_and_dims():
    torch.manual_seed(2)
    model = vq(commitment_cost=0.7).eval()
    z = torch.randn(10, D)
    out = model(z)
    by_hand = 0.7 * ((z - model.codebook[out.codes]) ** 2).sum(1).mean() / D
    torch.testing.assert_close(out.loss, by_hand)


def test_vq_straight_through_gradient_is_identity():
    torch.manual_seed(3)
    model = vq()
    z = torch.randn(12, D, requires_grad=True)
    v = torch.randn(12, D)
    (model(z).z_q * v).sum().backward()  # reconstruction term only
    torch.testing.assert_close(z.grad, v)


def test_vq_rotation_trick_value_and_gradient():
    torch.manual_seed(4)
    model = vq(gradient="rotation", codebook_size=16).eval()
    z = torch.randn(6, D, requires_grad=True)
    v = torch.randn(6, D)
    out = model(z)
    torch.testing.assert_close(out.z_q, model.codebook[out.codes])
    (out.z_q * v).sum().backward()
    for i in range(6):  # independent: the explicit matrix lambda * R, R e_hat = q_hat
        e, qv = z[i].detach().double(), model.codebook[out.codes[i]].double()
        e_hat, q_hat = e / e.norm(), qv / qv.norm()
        w = (e_hat + q_hat) / (e_hat + q_hat).norm()
        R = (
            torch.eye(D, dtype=torch.float64)
            - 2 * torch.outer(w, w)
            + 2 * torch.outer(q_hat, e_hat)
        )
        torch.testing.assert_close(R @ e_hat, q_hat)
        expected = (qv.norm() / e.norm()) * R.T @ v[i].double()
        torch.testing.assert_close(z.grad[i].double(), expected, rtol=1e-4, atol=1e-5)


def test_vq_float32_under_bf16_autocast():
    torch.manual_seed(5)
    model = vq(codebook_size=16).eval()
    z = torch.randn(32, D)
    reference = model(z)
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        out32 = model(z)
        out16 = model(z.bfloat16())
    assert out32.z_q.dtype == torch.float32 and torch.equal(out32.codes, reference.codes)
    assert torch.equal(out32.z_q, reference.z_q)
    assert out16.z_q.dtype == torch.bfloat16
    assert torch.equal(out16.codes, model.nearest_codes(z.bfloat16().float()))
    assert model.codebook.dtype == torch.float32
    for cls in (q.GumbelQuantizer, q.FiniteScalarQuantizer):
        other = cls(cls.Params(), spec()).eval()
        plain = other(z)
        with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
            auto = other(z)
        assert auto.z_q.dtype == torch.float32 and torch.equal(auto.z_q, plain.z_q)


def _clustered(n: int, centres: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """n points, cycling through ``centres`` [C, D], with tiny noise."""
    idx = torch.arange(n) % centres.shape[0]
    return centres[idx] + 0.01 * torch.randn(n, centres.shape[1], generator=generator)


def test_vq_dead_codes_replaced_when_usage_low_never_when_full():
    g = torch.Generator().manual_seed(6)
    torch.manual_seed(6)
    model = vq(codebook_size=8, window_batches=3, decay=0.9, max_replaced_fraction=1.0)
    centres = model.codebook.clone()
    # full usage: every code chosen in every batch -> nothing is ever replaced, whatever the step
    for _ in range(10):
        out = model(_clustered(32, centres, g))
        assert out.metrics["usage"] == 1.0
        assert out.metrics["replaced_codes"] == 0 and out.metrics["dead_codes"] == 0
    # usage collapses onto codes 0 and 1: the others die once the window holds no use of them
    far = centres[:2]
    replaced_at = []
    for _ in range(5):
        out = model(_clustered(32, far, g))
        replaced_at.append(int(out.metrics["replaced_codes"]))
    assert replaced_at[:2] == [0, 0]  # codes 2..7 still appear in the window of 3 batches
    assert replaced_at[2] == 6  # window now free of them: replaced, driven by usage
    assert replaced_at[3:] == [0, 0]  # replaced codes get a fresh window before being judged
    # replacements sit on recent encoder outputs (near the two live centres)
    distances = torch.cdist(model.codebook[2:], far).min(dim=1).values
    assert (distances < 0.5).all()
    model.eval()
    assert model(_clustered(64, far, g)).metrics["usage"] > 2 / 8


def test_vq_replaces_at_most_its_fraction_of_the_codebook_per_step():
    g = torch.Generator().manual_seed(6)
    torch.manual_seed(6)
    model = vq(codebook_size=20, window_batches=2, decay=0.9, max_replaced_fraction=0.1)
    far = model.codebook[:2].clone()
    replaced = []
    for _ in range(12):
        out = model(_clustered(32, far, g))
        replaced.append(int(out.metrics["replaced_codes"]))
        assert out.metrics["dead_codes"] <= 18
    # 18 codes die at once; 2 (10 % of 20) are replaced per step, the rest wait
    assert replaced[0] == 0  # the window still holds their use
    assert replaced[1:10] == [2] * 9 and max(replaced) == 2  # never more than 2 in one step


def test_vq_data_init_puts_every_code_on_a_training_latent():
    torch.manual_seed(3)
    model = vq(codebook_size=16, init="data", replacement_noise=0.0)
    z = torch.randn(8, model.codebook.shape[1]) * 5 + 3
    model.eval()
    before = model.codebook.clone()
    model(z)  # eval mode: no initialisation
    assert torch.equal(model.codebook, before)
    model.train()
    model(z)
    # every code sits on one of the 8 rows (rows of spread 5; the EMA's Laplace smoothing moves
    # the unchosen duplicates by a few hundredths), none where N(0, 1) would put it
    distances = torch.cdist(model.codebook, z).min(dim=1).values
    assert (distances < 0.2).all()
    assert bool(model.initialised)
    state = model.state_dict()
    fresh = vq(codebook_size=16, init="data")
    fresh.load_state_dict(state)
    fresh.train()
    kept = fresh.codebook.clone()
    fresh(z)  # an initialised codebook (from a checkpoint) is never drawn again
    assert torch.cdist(fresh.codebook, kept).diagonal().max() < 0.2  # EMA steps only


@pytest.mark.parametrize("name", ["vq", "fsq", "gumbel"])
def test_a_side_branch_quantizer_does_not_feed_the_predictor(name):
    from lejepa_core.training.step import ContextOutputs, predictor_input

    cls = {"vq": q.VectorQuantizer, "fsq": q.FiniteScalarQuantizer, "gumbel": q.GumbelQuantizer}
    spec = ModelSpec(obs_shape=(4,), latent_dim=8)
    on_path = cls[name](cls[name].Params(), spec)
    side = cls[name](cls[name].Params(path="side"), spec)
    assert on_path.feeds_predictor and not side.feeds_predictor
    context, quantized = torch.zeros(2, 3, 8), torch.ones(2, 3, 8)
    ctx = ContextOutputs(context, quantized, None, None)
    assert predictor_input(on_path, ctx) is quantized
    assert predictor_input(side, ctx) is context
    assert predictor_input(None, ContextOutputs(context, context, None, None)) is context


def test_vq_replacement_disabled_still_reports_dead_codes():
    g = torch.Generator().manual_seed(7)
    torch.manual_seed(7)
    model = vq(codebook_size=8, window_batches=2, replace_dead_codes=False)
    centres = model.codebook[:1].clone()
    for _ in range(3):
        out = model(_clustered(16, centres, g))
    assert out.metrics["replaced_codes"] == 0 and out.metrics["dead_codes"] == 7


def test_usage_and_perplexity_equal_metrics_module():
    torch.manual_seed(8)
    for model in (
        vq(codebook_size=32),
        q.GumbelQuantizer(q.GumbelQuantizer.Params(codebook_size=32), spec()),
    ):
        z = torch.randn(40, D)
        out = model(z)
        counts = code_histogram(out.codes, 32)
        torch.testing.assert_close(out.metrics["usage"], codebook_usage(counts))
        torch.testing.assert_close(out.metrics["perplexity"], perplexity(counts))
        torch.testing.assert_close(
            out.metrics["usage_window"], codebook_usage(counts)
        )  # one batch seen
    model = q.FiniteScalarQuantizer(q.FiniteScalarQuantizer.Params(levels=(3, 4)), spec())
    codes = []
    for _ in range(3):
        out = model(torch.randn(5, D) * 3)
        codes.append(out.codes)
    window_counts = code_histogram(torch.cat(codes), 12)
    torch.testing.assert_close(out.metrics["usage_window"], codebook_usage(window_counts))
    torch.testing.assert_close(out.metrics["perplexity"], perplexity(code_histogram(codes[-1], 12)))


def test_usage_relative_is_usage_over_what_the_batch_can_reach():
    """A batch of N vectors uses at most N of K codes: usage is capped at N / K, usage_relative
    = usage / min(1, N / K) reads 1 when every vector has its own code."""
    model = vq(codebook_size=8).eval()  # eval: the codebook stays as it is
    with torch.no_grad():
        model.codebook.copy_(torch.randn(8, D, generator=torch.Generator().manual_seed(0)) * 10)
    z = model.codebook[:4].clone()  # N = 4 vectors, each on its own code
    out = model(z)
    assert float(out.metrics["usage"]) == 4 / 8  # capped at N / K
    assert float(out.metrics["usage_relative"]) == 1.0
    z = model.codebook[[0, 0, 1, 1]].clone()  # two codes for four vectors
    assert float(model(z).metrics["usage_relative"]) == 0.5
    z = model.codebook[[i % 8 for i in range(16)]].clone()  # N > K: plain usage
    out = model(z)
    assert float(out.metrics["usage_relative"]) == float(out.metrics["usage"]) == 1.0


@pytest.mark.parametrize("name", ["vq", "gumbel", "fsq"])
def test_determinism_under_seed(name):
    cls = {"vq": q.VectorQuantizer, "gumbel": q.GumbelQuantizer, "fsq": q.FiniteScalarQuantizer}[
        name
    ]
    params = (
        cls.Params(window_batches=1)
        if name != "vq"
        else cls.Params(codebook_size=64, window_batches=1)
    )

    def run():
        torch.manual_seed(9)
        model = cls(params, spec())
        outs = [model(torch.randn(16, D) * 0.1) for _ in range(3)]
        return torch.stack([o.z_q for o in outs]), torch.stack([o.codes for o in outs])

    (a, ca), (b, cb) = run(), run()
    assert torch.equal(a, b) and torch.equal(ca, cb)


# -- gumbel --------------------------------------------------------------------------------


def test_gumbel_hard_is_one_hot_and_differentiable():
    torch.manual_seed(10)
    model = q.GumbelQuantizer(q.GumbelQuantizer.Params(codebook_size=8, temperature=0.5), spec())
    z = torch.randn(20, D, requires_grad=True)
    weights, _ = model.assignments(z)
    assert torch.equal(weights.detach(), F.one_hot(weights.detach().argmax(-1), 8).float())
    out = model(z)
    torch.testing.assert_close(out.z_q, model.codebook.weight[out.codes])
    (out.z_q * torch.randn(20, D)).sum().backward()
    assert z.grad.abs().sum() > 0
    assert (
        model.to_logits.weight.grad.abs().sum() > 0 and model.codebook.weight.grad.abs().sum() > 0
    )


def test_gumbel_eval_is_argmax_and_diversity_is_kl_to_uniform():
    torch.manual_seed(11)
    model = q.GumbelQuantizer(
        q.GumbelQuantizer.Params(codebook_size=8, diversity_weight=2.0), spec()
    )
    z = torch.randn(30, D)
    model.eval()
    out = model(z)
    logits = model.to_logits(z)
    assert torch.equal(out.codes, logits.argmax(-1))
    p = logits.softmax(-1).mean(0)
    kl = sum(pi * math.log(pi * 8) for pi in p.tolist())
    torch.testing.assert_close(out.loss, torch.tensor(2.0 * kl), rtol=1e-5, atol=1e-6)


# -- fsq -----------------------------------------------------------------------------------

LEVEL_GRID = [(2,), (3,), (2, 2), (4, 3), (5, 2, 3), (8, 5, 5, 5), (7, 6)]


@pytest.mark.parametrize("levels", LEVEL_GRID)
def test_fsq_codes_bijective_with_level_tuples(levels):
    model = q.FiniteScalarQuantizer(q.FiniteScalarQuantizer.Params(levels=levels), spec())
    K = math.prod(levels)
    codes = torch.arange(K)
    grid = model.codes_to_grid(codes)  # [K, L]
    assert torch.equal(model.grid_to_codes(grid), codes)
    half = [n // 2 for n in levels]
    seen = {}
    for code, row in zip(codes.tolist(), grid.tolist(), strict=True):
        digits = tuple(round(v * h + h) for v, h in zip(row, half, strict=True))
        assert all(0 <= d < n for d, n in zip(digits, levels, strict=True))
        # independent mixed-radix formula, first level varying fastest
        assert code == sum(d * math.prod(levels[:i]) for i, d in enumerate(digits))
        seen[digits] = code
    assert set(seen) == set(itertools.product(*(range(n) for n in levels)))  # every tuple once


@pytest.mark.parametrize("levels", LEVEL_GRID)
def test_fsq_values_on_grid_and_codes_in_range(levels):
    torch.manual_seed(12)
    model = q.FiniteScalarQuantizer(q.FiniteScalarQuantizer.Params(levels=levels), spec())
    h = torch.randn(4000, len(levels)) * 4  # wide: reaches every level
    grid = model.quantize(h)
    half = torch.tensor([n // 2 for n in levels], dtype=torch.float32)
    integers = grid * half
    torch.testing.assert_close(integers, integers.round())
    for i, n in enumerate(levels):
        values = set(integers[:, i].round().long().tolist())
        assert values == set(range(-(n // 2), n - n // 2)), (n, values)  # exactly n levels
    assert torch.equal(model.bound(torch.zeros(1, len(levels))), torch.zeros(1, len(levels)))
    x = torch.randn(256, D) * 5
    out = model(x)
    assert out.codes.min() >= 0 and out.codes.max() < math.prod(levels)
    assert float(out.loss) == 0.0
    assert torch.equal(out.codes, model.grid_to_codes(model.quantize(model.project_in(x))))


def test_fsq_round_is_straight_through():
    model = q.FiniteScalarQuantizer(q.FiniteScalarQuantizer.Params(levels=(5, 5)), spec())
    h = torch.randn(7, 2, requires_grad=True)
    model.quantize(h).sum().backward()
    bounded_grad = torch.autograd.functional.jacobian(lambda x: model.bound(x).sum(), h.detach())
    torch.testing.assert_close(h.grad, bounded_grad / 2)  # / half_width


# -- DDP -----------------------------------------------------------------------------------


def _ddp_worker(rank: int, world_size: int, init_file: str, out_dir: str) -> None:
    torch.distributed.init_process_group(
        "gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size
    )
    try:
        torch.set_num_threads(1)
        torch.manual_seed(0)  # same initial codebook on every rank
        model = vq(codebook_size=8, window_batches=2, decay=0.8, replace_dead_codes=False)
        data = torch.Generator().manual_seed(100 + rank)  # different data per rank
        for _ in range(3):
            model(torch.randn(16, D, generator=data) + rank)
        ema_only = model.codebook.clone()
        model.params = attrs.evolve(model.params, replace_dead_codes=True)
        # now only two codes are used (per rank, different points): dead codes get replaced
        replaced = 0
        for _ in range(4):
            centres = ema_only[:2]
            replaced += int(
                model(_clustered(16, centres, data) + 0.05 * rank).metrics["replaced_codes"]
            )
        torch.save(
            {"ema_only": ema_only, "final": model.state_dict(), "replaced": replaced},
            Path(out_dir) / f"rank{rank}.pt",
        )
    finally:
        torch.distributed.destroy_process_group()


@pytest.mark.slow  # two spawned processes each import torch: ~5 s idle, far more on a busy machine
def test_ddp_codebooks_identical_across_ranks():
    with tempfile.TemporaryDirectory() as tmp:
        init_file = str(Path(tmp) / "init")
        torch.multiprocessing.spawn(_ddp_worker, args=(2, init_file, tmp), nprocs=2, join=True)
        r0, r1 = (torch.load(Path(tmp) / f"rank{r}.pt") for r in (0, 1))
    assert torch.equal(r0["ema_only"], r1["ema_only"])
    for key in r0["final"]:
        assert torch.equal(r0["final"][key], r1["final"][key]), key
    assert r0["replaced"] == r1["replaced"] > 0
    # the all-reduced EMA equals one process seeing both ranks' batches
    torch.manual_seed(0)
    single = vq(codebook_size=8, window_batches=2, decay=0.8, replace_dead_codes=False)
    gens = [torch.Generator().manual_seed(100 + r) for r in (0, 1)]
    for _ in range(3):
        single(torch.cat([torch.randn(16, D, generator=gens[r]) + r for r in (0, 1)]))
    torch.testing.assert_close(single.codebook, r0["ema_only"])


@pytest.mark.parametrize("name", ["vq", "gumbel", "fsq"])
def test_registered_through_entry_points_and_recipe_round_trip(name):
    from lejepa_core.registry import get_registry
    from lejepa_core.structure import structure_attrs, unstructure

    cls = get_registry().get("quantizer", name)
    errors: list[str] = []
    params = structure_attrs(unstructure(cls.Params()), cls.Params, "quantizer", errors)
    assert errors == [] and params == cls.Params()
    errors = []
    structure_attrs({"window_batches": 0}, cls.Params, "quantizer", errors)
    assert errors == ["quantizer.window_batches: expected a positive value, got 0"]
