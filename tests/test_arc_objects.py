"""ARC object latents: the object encoder's colour slots, InfoNCE's episode negatives."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from lejepa_core import ModelSpec, StepOutputs
from lejepa_core.envinfo import EnvInfo
from lejepa_plugins.losses import InfoNCELoss
from lejepa_plugins.object_encoder import ObjectEncoder, colour_slots

ARC = ModelSpec(
    obs_shape=(10, 10), latent_dim=20, obs_dtype="int8", env=EnvInfo(cell_values=11, pad_value=10)
)


def slots_encoder(**kw) -> ObjectEncoder:
    params = ObjectEncoder.Params(dim=16, depth=1, num_heads=2, max_objects=8, **kw)
    return ObjectEncoder(params, ARC)


def test_colour_slots_pick_the_first_object_of_each_colour():
    tokens = torch.arange(4.0).view(1, 4, 1).expand(1, 4, 2)  # token m has value m
    colours = F.one_hot(torch.tensor([[2, 1, 2, 0]]), 3).float()
    colours[0, 3] = 0  # padding
    slots, present = colour_slots(tokens, colours)
    assert present.tolist() == [[False, True, True]]
    assert slots[0, :, 0].tolist() == [0.0, 1.0, 0.0]  # colour 2: token 0 (the larger), not 2


def test_colour_slot_latents_follow_each_object_and_ignore_the_others():
    torch.manual_seed(0)
    encoder = slots_encoder(readout="colour_slots").eval()
    grid = torch.zeros(3, 10, 10, dtype=torch.int8)
    grid[:, 8:, :] = 10
    grid[:, 1, 1] = 3  # colour 3 stays put
    grid[0, 5, 5] = 7
    grid[1, 5, 6] = 7  # colour 7 moves one cell
    grid[2, 5, 5] = 7
    grid[2, 0, 9] = 4  # a new colour-4 object
    with torch.no_grad():
        z = encoder(grid).view(3, 10, 2)  # 10 colour slots of 2
    assert not torch.allclose(z[0, 7], z[1, 7])  # the moving object's slot changes
    assert torch.allclose(z[0, 5], encoder.absent[5])  # no colour 5: the absent vector
    assert not torch.allclose(z[2, 4], encoder.absent[4])  # colour 4 appears: a slot of its own
    assert torch.allclose(z[0, 0], encoder.absent[0])  # background is never an object


def test_colour_slots_need_a_latent_dim_multiple_of_the_colours():
    spec = ModelSpec(obs_shape=(10, 10), latent_dim=16, obs_dtype="int8", env=ARC.env)
    params = ObjectEncoder.Params(dim=16, depth=1, num_heads=2, readout="colour_slots")
    with pytest.raises(ValueError, match="multiple of 10 .* got latent_dim 16"):
        ObjectEncoder(params, spec)


def _outputs(prediction, target, context) -> StepOutputs:
    k = torch.ones(prediction.shape[0], dtype=torch.long)
    return StepOutputs(prediction=prediction, target=target, context=context, k=k)


@pytest.mark.parametrize("negatives", ["episode", "batch_and_episode"])
def test_infonce_episode_negatives_against_a_hand_formula(negatives):
    g = torch.Generator().manual_seed(0)
    b, w, d, tau = 4, 2, 5, 0.2
    prediction, target = torch.randn(b, d, generator=g), torch.randn(b, d, generator=g)
    context = torch.randn(b, w, d, generator=g)
    loss = InfoNCELoss(InfoNCELoss.Params(temperature=tau, negatives=negatives), ARC)
    out = loss(_outputs(prediction, target, context))

    def cos(x, y):
        return float((x @ y) / (x.norm() * y.norm()))

    expected = 0.0
    for i in range(b):
        positive = cos(prediction[i], target[i]) / tau
        candidates = [cos(prediction[i], context[i, v]) / tau for v in range(w)]
        if negatives == "batch_and_episode":
            candidates += [cos(prediction[i], target[j]) / tau for j in range(b)]
        else:
            candidates += [positive]
        expected += -positive + math.log(sum(math.exp(c) for c in candidates))
    assert out.value.item() == pytest.approx(expected / b, rel=1e-5)
    assert out.metrics["chance_level"] == pytest.approx(
        math.log(w + (b if "batch" in negatives else 1))
    )


def test_infonce_episode_negatives_send_gradient_to_the_context():
    g = torch.Generator().manual_seed(1)
    context = torch.randn(3, 2, 4, generator=g, requires_grad=True)
    loss = InfoNCELoss(InfoNCELoss.Params(negatives="episode"), ARC)
    loss(
        _outputs(torch.randn(3, 4, generator=g), torch.randn(3, 4, generator=g), context)
    ).value.backward()
    assert context.grad.abs().sum() > 0


def test_infonce_symmetric_needs_batch_negatives():
    with pytest.raises(ValueError, match="symmetric: expected false with negatives = 'episode'"):
        InfoNCELoss.Params(symmetric=True, negatives="episode")


def test_vicreg_on_context_delta_is_the_variance_hinge_of_the_frame_differences():
    from lejepa_plugins.losses import VICRegLoss

    g = torch.Generator().manual_seed(2)
    context = torch.randn(16, 3, 6, generator=g) * 0.1
    target = torch.randn(16, 6, generator=g)
    params = VICRegLoss.Params(on="context_delta", variance_weight=1.0, covariance_weight=0.0)
    value = VICRegLoss(params, ARC)(_outputs(target, target, context)).value
    differences = (context[:, 1:] - context[:, :-1]).reshape(32, 6)
    std = torch.sqrt(differences.var(dim=0) + 1e-4)
    assert value.item() == pytest.approx(torch.relu(1.0 - std).mean().item(), rel=1e-6)
    # its gradient does not vanish when nothing changes within the window
    still = torch.zeros(16, 2, 6, requires_grad=True)
    noise = 1e-6 * torch.randn(16, 2, 6, generator=g)
    VICRegLoss(params, ARC)(_outputs(target, target, still + noise)).value.backward()
    assert still.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="W >= 2"):
        VICRegLoss(params, ARC)(_outputs(target, target, context[:, :1]))


def test_position_features_are_sines_and_cosines_of_the_centroid():
    from lejepa_plugins.object_encoder import position_features

    position = torch.tensor([[0.1, 0.3]])  # (row, column)
    got = position_features(position, 2)[0]
    angles = [math.pi * 0.1, 2 * math.pi * 0.1, math.pi * 0.3, 2 * math.pi * 0.3]
    expected = [math.sin(a) for a in angles] + [math.cos(a) for a in angles]
    assert got.tolist() == pytest.approx(expected, abs=1e-6)
    encoder = slots_encoder(readout="colour_slots", position_frequencies=2)
    grid = torch.zeros(1, 10, 10, dtype=torch.int8)
    grid[0, 2, 3] = 5
    features, padding, _ = encoder.tokenize(grid)
    assert features.shape[-1] == encoder.embed_object.in_features
    assert (features[0, 1:] == 0).all() and padding[0, 1:].all()  # padding stays zero
