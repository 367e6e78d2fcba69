"""Actions into the model: batches carry the actions after the last context frame, the
built-in action encoder, the action-conditioned residual predictor, passive predictors that
take no actions, and goal-reaching tasks from env metadata."""

import attrs
import h5py
import numpy as np
import pytest
import torch

from lejepa_core.control.tasks import ControlTask, NoControlTaskError
from lejepa_core.data.generate import generate_dataset
from lejepa_core.data.reader import TrajectoryData
from lejepa_core.data.sampler import WindowSampler
from lejepa_core.envinfo import EnvInfo
from lejepa_core.errors import UserInputError
from lejepa_core.interfaces import ModelSpec, Predictor, takes_actions
from lejepa_core.training.step import JEPAModel
from lejepa_plugins.actions import DefaultActionEncoder
from lejepa_plugins.predictors import ActionResidualPredictor, ResidualPredictor

DISCRETE = {"type": "Discrete", "dtype": "int64", "start": 0, "n": 5}


@pytest.fixture(scope="module")
def pushed_data(tmp_path_factory):
    out = tmp_path_factory.mktemp("push") / "push.h5"
    generate_dataset(
        "lejepa/BouncingBalls-v0",
        episodes=6,
        steps=25,
        out=out,
        seed=3,
        env_kwargs={"num_balls": 2},
        policy="random",
        progress=False,
    )
    return out


def spec(action_space=DISCRETE, horizons=(1, 2, 4)) -> ModelSpec:
    return ModelSpec(
        obs_shape=(2, 4),
        latent_dim=6,
        context_frames=2,
        horizons=horizons,
        env=EnvInfo(action_space=action_space),
    )


def test_batches_carry_the_actions_between_the_last_context_frame_and_the_target(pushed_data):
    data = TrajectoryData.open(pushed_data, device="cpu", normalize=False)
    with h5py.File(pushed_data) as f:
        actions = f["actions"][()]
    offsets = data.episode_offsets
    sampler = WindowSampler(data, torch.arange(6), context_frames=2, horizons=(1, 2, 4))
    batch = sampler.sample(64, torch.Generator().manual_seed(0))
    assert batch.actions.shape == (64, 4) and batch.action_mask.shape == (64, 4)
    assert batch.actions.dtype == torch.int64 and batch.actions.abs().sum() > 0
    for i in range(64):
        row = int(offsets[batch.episode[i]] + batch.t[i])
        k = int(batch.k[i])
        assert batch.action_mask[i].tolist() == [j < k for j in range(4)]
        assert batch.actions[i, :k].tolist() == actions[row : row + k].tolist()
        assert batch.actions[i, k:].abs().sum() == 0
    fixed = sampler.fixed_batches(8, 1, seed=1, k=6)[0]  # a k beyond the horizons
    assert fixed.actions.shape == (8, 6) and bool(fixed.action_mask.all())
    data.close()


def test_default_action_encoder_embeds_discrete_multidiscrete_and_box():
    enc = DefaultActionEncoder(DefaultActionEncoder.Params(dim=7), spec())
    out = enc(torch.tensor([[0, 4], [1, 1]]))
    assert out.shape == (2, 2, 7) and torch.equal(out[1, 0], out[1, 1])
    assert not torch.equal(out[0, 0], out[0, 1])
    multi = {"type": "MultiDiscrete", "dtype": "int64", "nvec": [3, 2], "start": [0, 0]}
    enc = DefaultActionEncoder(DefaultActionEncoder.Params(dim=5), spec(multi))
    out = enc(torch.tensor([[[2, 1], [0, 0]]]))
    rows = enc.table(torch.tensor([2, 3 + 1]))
    assert out.shape == (1, 2, 5) and torch.allclose(out[0, 0], rows.sum(0))
    box = {"type": "Box", "dtype": "float32", "shape": [2], "low": [-2, 0], "high": [2, 10]}
    enc = DefaultActionEncoder(DefaultActionEncoder.Params(dim=3), spec(box))
    scaled = (torch.tensor([[2.0, 0.0]]) - enc.centre) / enc.half_range
    assert scaled.tolist() == [[1.0, -1.0]]  # the bounds map to +-1
    assert enc(torch.zeros(4, 6, 2)).shape == (4, 6, 3)
    with pytest.raises(ValueError, match="Discrete, MultiDiscrete, Box"):
        DefaultActionEncoder(DefaultActionEncoder.Params(), spec({"type": "MultiBinary", "n": 2}))


def _trained_like(predictor):
    """Weights off their near-zero init so that the output depends on every input."""
    torch.manual_seed(0)
    with torch.no_grad():
        for p in predictor.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return predictor.eval()


def test_action_residual_uses_the_first_k_actions_only():
    predictor = _trained_like(ActionResidualPredictor(ActionResidualPredictor.Params(), spec()))
    assert takes_actions(predictor)
    z = torch.randn(3, 2, 6)
    k = torch.tensor([1, 2, 4])
    actions = torch.tensor([[1, 2, 3, 4], [1, 2, 3, 4], [1, 2, 3, 4]])
    base = predictor(z, k, actions=actions)
    later = actions.clone()
    later[0, 1:], later[1, 2:] = 0, 0  # actions after the k-th: ignored
    assert torch.allclose(predictor(z, k, actions=later), base)
    changed = actions.clone()
    changed[:, 0] = 4  # the first action: matters for every k
    assert not torch.allclose(predictor(z, k, actions=changed)[0], base[0])
    assert predictor(z, k).shape == (3, 6)  # without actions: the action-marginal prediction


def test_action_residual_without_an_action_space_refuses_actions():
    predictor = ActionResidualPredictor(ActionResidualPredictor.Params(), spec(None))
    z, k = torch.randn(2, 2, 6), torch.tensor([1, 2])
    assert predictor(z, k).shape == (2, 6)
    with pytest.raises(ValueError, match="no action space"):
        predictor(z, k, actions=torch.zeros(2, 4, dtype=torch.long))


class PassivePredictor(Predictor):
    """A third party's predictor written before actions existed: forward(z_context, k)."""

    def __init__(self, params, spec):
        super().__init__(params, spec)
        self.linear = torch.nn.Linear(spec.latent_dim, spec.latent_dim)

    def forward(self, z_context, k):
        return self.linear(z_context[:, -1])


def test_passive_predictors_are_called_without_actions():
    s = spec()
    passive = PassivePredictor(PassivePredictor.Params(), s)
    assert not takes_actions(passive)
    model = JEPAModel(
        encoder=torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(8, 6)),
        predictor=passive,
        masker=torch.nn.Identity(),
        losses=[],
        weights=[],
        labels=[],
    )
    obs = torch.randn(3, 2, 2, 4)
    out = model.predict(obs, torch.tensor([1, 2, 4]), torch.zeros(3, 4, dtype=torch.long))
    assert out.shape == (3, 6)

    class Flagged(PassivePredictor):
        takes_actions = False

        def forward(self, z_context, k, actions=None, action_mask=None):
            raise AssertionError("called with actions")

    assert not takes_actions(Flagged(Flagged.Params(), s))  # the class attribute wins
    assert takes_actions(ResidualPredictor) is False


CONTROL = {
    "goal_indices": [0, 1],
    "goal_low": [0.1, 0.1],
    "goal_high": [0.9, 0.9],
    "success_distance": 0.05,
    "horizon": 30,
}


def test_control_task_comes_from_metadata_and_measures_distance():
    task = ControlTask.from_metadata(CONTROL)
    goal = task.sample_goal(np.random.default_rng(0))
    assert goal.shape == (2,) and np.all((goal >= 0.1) & (goal <= 0.9))
    states = np.array([[[0.3, 0.4, 9.0, 9.0]], [[0.0, 0.0, 0.0, 0.0]]]).reshape(2, -1)
    assert np.allclose(task.distance(states, np.array([0.0, 0.0])), [0.5, 0.0])
    with pytest.raises(NoControlTaskError, match="publishes no metadata\\['control'\\]"):
        ControlTask.from_metadata(None, "my/Env-v0")
    with pytest.raises(NoControlTaskError, match="malformed.*goal_high"):
        ControlTask.from_metadata({k: v for k, v in CONTROL.items() if k != "goal_high"})
    with pytest.raises(NoControlTaskError, match="same non-zero length"):
        ControlTask.from_metadata({**CONTROL, "goal_low": [0.1]})
    assert issubclass(NoControlTaskError, UserInputError)


def test_bouncing_balls_publishes_its_task_and_the_action_space_reaches_the_spec(pushed_data):
    from lejepa_core.build import model_spec
    from tests.conftest import tiny_recipe

    recipe = tiny_recipe(pushed_data.parent, pushed_data, ("data.env_kwargs.num_balls=2",))
    s = model_spec(recipe)
    assert s.env.action_space == {"type": "Discrete", "dtype": "int64", "start": 0, "n": 9}
    task = ControlTask.from_metadata(s.env.control)
    assert task.goal_indices == (0, 1) and task.success_distance == pytest.approx(0.05)
    assert attrs.evolve(task, horizon=3).horizon == 3


@pytest.mark.slow
def test_lejepa_plan_end_to_end_on_a_tiny_action_conditioned_run(tmp_path, pushed_data):
    """Train a tiny action_residual run, plan toward 2 goals, read plan.json and the report."""
    import json

    from click.testing import CliRunner

    from lejepa_core.cli import main as cli
    from tests.conftest import write_tiny_recipe

    recipe = write_tiny_recipe(tmp_path, pushed_data)
    out = tmp_path / "run"
    sets = ["predictor.name=action_residual", "data.policy=random", "data.horizons=[1,2,4]"]
    sets += ["data.episodes=6", "data.steps=25"]
    args = ["run", str(recipe), "--out", str(out)] + [a for s in sets for a in ("--set", s)]
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    args = ["plan", str(out), "--tasks", "2", "--param", "samples=16", "--param", "iterations=1"]
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    report = json.loads((out / "plan.json").read_text())
    assert set(report["policies"]) == {"latent", "oracle", "random", "noop"}
    for name, r in report["policies"].items():
        assert 0 <= r["success_rate"] <= 1 and len(r["episodes"]) == 2, name
        assert r["final_distance"] >= 0
    assert report["policies"]["latent"]["seconds_per_action"] > 0
    assert report["task"]["success_distance"] == pytest.approx(0.05)
    assert (out / "plan.png").stat().st_size > 1000
    result = CliRunner().invoke(cli, ["report", str(out)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    page = (out / "report" / "report.html").read_text()
    assert (out / "report" / "plan.png").is_file() and "Planning toward goals" in page
    result = CliRunner().invoke(cli, ["plan", str(out), "--policies", "latent,bogus"])
    assert result.exit_code == 2 and "bogus" in result.output


@pytest.mark.slow
def test_lejepa_plan_refuses_a_passive_run(tmp_path, tiny_data):
    from click.testing import CliRunner

    from lejepa_core.cli import main as cli
    from tests.conftest import write_tiny_recipe

    out = tmp_path / "run"
    recipe = write_tiny_recipe(tmp_path, tiny_data)
    result = CliRunner().invoke(
        cli, ["run", str(recipe), "--out", str(out)], catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    result = CliRunner().invoke(cli, ["plan", str(out), "--tasks", "1"])
    assert result.exit_code == 2
    assert "takes no actions" in result.output and "Traceback" not in result.output
