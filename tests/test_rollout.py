"""The autoregressive rollout (``lejepa_core.eval.rollout``) against a hand-written loop on a
toy model, with and without a quantizer; err/σ against its formula; and ``lejepa eval``'s
``latent`` section on tiny runs trained with and without k = 1."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from lejepa_core.eval.rollout import latent_figures, rollout, rollout_horizon, rollout_note
from lejepa_core.eval.samples import Samples
from lejepa_core.interfaces import QuantizerOutput
from lejepa_core.training.step import JEPAModel
from tests.conftest import tiny_recipe

D, W, OBS = 4, 3, 5


class ToyPredictor(nn.Module):
    """A predictor whose output depends on every context latent, their order and k."""

    def __init__(self):
        super().__init__()
        self.mix = nn.Linear(W * D, D)

    def forward(self, z_context, k):  # [B, W, D], [B] -> [B, D]
        return torch.tanh(self.mix(z_context.flatten(1))) + 0.1 * k.float().unsqueeze(1)


class HalfStepQuantizer(nn.Module):
    """Rounds to multiples of 0.5 (a quantizer that visibly changes its input)."""

    def forward(self, z):
        z_q = torch.round(2 * z) / 2
        return QuantizerOutput(z_q=z_q, codes=z_q.long(), loss=z.new_zeros(()))


def toy_model(quantized: bool) -> JEPAModel:
    torch.manual_seed(0)
    model = JEPAModel(
        encoder=nn.Linear(OBS, D),
        predictor=ToyPredictor(),
        masker=nn.Identity(),
        losses=[],
        weights=[],
        labels=[],
        quantizer=HalfStepQuantizer() if quantized else None,
    )
    return model.eval()


def by_hand(model: JEPAModel, context_obs, steps: int, step: int, *, quantize_appended=True):
    """The rollout written out: encode, quantize, predict, shift, append, repeat."""
    quantize = model.quantizer or (lambda z: QuantizerOutput(z_q=z, codes=z, loss=z.sum()))
    window = [quantize(model.context_encoder(context_obs[:, i])).z_q for i in range(W)]
    k = torch.full((context_obs.shape[0],), step)
    for _ in range(steps):
        prediction = model.predictor(torch.stack(window, dim=1), k)
        appended = quantize(prediction).z_q if quantize_appended else prediction
        window = window[1:] + [appended]
    return prediction


class ActionSumPredictor(nn.Module):
    """Last latent + the sum of the first k actions ([B, K, D] Box actions): an exact model of
    a world where each action is added to the state."""

    def forward(self, z_context, k, actions=None, action_mask=None):
        if actions is None:
            return z_context[:, -1]
        steps = torch.arange(actions.shape[1]).unsqueeze(0) < k.unsqueeze(1)  # [B, K]
        return z_context[:, -1] + (actions * steps.unsqueeze(-1)).sum(1)


@torch.no_grad()
def test_rollout_gives_each_step_the_actions_that_lead_to_its_target():
    model = JEPAModel(
        encoder=nn.Identity(),
        predictor=ActionSumPredictor(),
        masker=nn.Identity(),
        losses=[],
        weights=[],
        labels=[],
    ).eval()
    g = torch.Generator().manual_seed(2)
    context, actions = torch.randn(5, W, D, generator=g), torch.randn(5, 6, D, generator=g)
    mask = torch.ones(5, 6, dtype=torch.bool)
    for k, step in ((1, 1), (4, 1), (6, 2), (6, 3)):
        kk = torch.full((5,), k)
        expected = context[:, -1] + actions[:, :k].sum(1)
        torch.testing.assert_close(model.predict(context, kk, actions, mask), expected)
        got = rollout(model, context, kk, step=step, actions=actions, action_mask=mask)
        torch.testing.assert_close(got, expected)


@pytest.mark.parametrize("quantized", [False, True], ids=["plain", "quantizer"])
@torch.no_grad()
def test_rollout_is_the_one_step_model_applied_repeatedly(quantized):
    model = toy_model(quantized)
    context = torch.randn(6, W, OBS, generator=torch.Generator().manual_seed(1))
    # one step is the direct prediction, through JEPAModel.predict's path
    torch.testing.assert_close(
        rollout(model, context, torch.full((6,), 1)), model.predict(context, torch.full((6,), 1))
    )
    for k in (2, 3, 5):
        torch.testing.assert_close(
            rollout(model, context, torch.full((6,), k)), by_hand(model, context, k, 1)
        )
    # a batch of mixed k: each sample stops at its own k
    mixed = torch.tensor([1, 2, 3, 1, 5, 2])
    expected = torch.stack([by_hand(model, context, int(k), 1)[i] for i, k in enumerate(mixed)])
    torch.testing.assert_close(rollout(model, context, mixed), expected)
    # with a smaller trained step: k / step applications of the predictor at horizon step
    torch.testing.assert_close(
        rollout(model, context, torch.full((6,), 6), step=2), by_hand(model, context, 3, 2)
    )


@torch.no_grad()
def test_rollout_quantizes_what_it_appends():
    model = toy_model(quantized=True)
    context = torch.randn(6, W, OBS, generator=torch.Generator().manual_seed(2))
    k = torch.full((6,), 3)
    unquantized = by_hand(model, context, 3, 1, quantize_appended=False)
    assert not torch.allclose(unquantized, by_hand(model, context, 3, 1))
    torch.testing.assert_close(rollout(model, context, k), by_hand(model, context, 3, 1))


def test_rollout_step_without_k1_and_its_note():
    assert rollout_horizon([1, 2, 4]) == 1 and rollout_note([1, 2, 4]) is None
    assert rollout_horizon([4, 2, 6]) == 2
    note = rollout_note([2, 4])
    assert "without k = 1" in note and "k = 2" in note
    with pytest.raises(ValueError, match="multiple of step=2"):
        rollout(toy_model(False), torch.zeros(2, W, OBS), torch.tensor([2, 3]), step=2)


def test_latent_figures_against_their_formula():
    g = torch.Generator().manual_seed(3)

    def samples(k, n, rolled):
        target = torch.randn(n, D, generator=g) * (1 + k)
        return Samples(
            z_target=target,
            z_hat=target + 0.1,
            z_rollout=target - 0.3 if rolled else None,
            z_copy_last=torch.zeros(n, D),
            k=torch.full((n,), k),
            target_state=torch.zeros(n, 2),
            last_state=torch.zeros(n, 2),
        )

    per_k = {2: samples(2, 10, True), 3: samples(3, 7, False)}
    figures = latent_figures(per_k, [2, 3])
    sigma = torch.cat([per_k[2].z_target, per_k[3].z_target]).std()  # all elements, every k
    assert figures["target_std"] == pytest.approx(float(sigma))
    assert figures["rollout_horizon"] == 2 and "without k = 1" in figures["rollout_note"]
    assert figures["model/err_signal/k2"] == pytest.approx(0.1 / float(sigma), rel=1e-5)
    assert figures["rollout/err_signal/k2"] == pytest.approx(0.3 / float(sigma), rel=1e-5)
    assert "rollout/err_signal/k3" not in figures  # 3 is no multiple of 2
    copy_last = float(per_k[3].z_target.abs().mean() / sigma)
    assert figures["copy_last/err_signal/k3"] == pytest.approx(copy_last, rel=1e-5)


def test_eval_of_a_predictor_trained_without_k1(tmp_path, tiny_data):
    """Horizons [2, 3, 4]: the rollout steps by 2, says so, and k = 3 has none."""
    from lejepa_core.eval.evaluate import evaluate_run
    from lejepa_core.training.loop import train

    recipe = tiny_recipe(
        tmp_path, tiny_data, ("train.epochs=1", "train.steps_per_epoch=2", "data.horizons=[2,3,4]")
    )
    run_dir = train(recipe, out=tmp_path / "run").run_dir
    evaluate_run(run_dir, device="cpu", batches=2)
    result = json.loads((run_dir / "eval.json").read_text())
    latent = result["latent"]
    assert latent["rollout_horizon"] == 2 and "without k = 1" in latent["rollout_note"]
    assert latent["rollout/err_signal/k2"] == latent["model/err_signal/k2"]  # one step
    assert "rollout/err_signal/k3" not in latent and "rollout/err_signal/k4" in latent
    rows = {row["k"]: row for row in result["per_k"]}
    assert rows[2]["rollout/mae"] == rows[2]["model/mae"]
    assert "rollout/mae" not in rows[3] and "rollout/mae_positions" in rows[4]
    assert "rollout" in result["estimators"]
