"""The grid evaluation: rules, figures, retrieval, variance share, the grid probe, the hook."""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import pytest
import torch

from lejepa_core.envinfo import EnvInfo
from lejepa_core.eval.grid import rules_for
from lejepa_core.eval.grid_metrics import (
    grid_figures,
    retrieval,
    retrieval_chance,
    within_episode_share,
)
from lejepa_core.eval.grid_probe import GridProbe
from lejepa_core.eval.grid_rules import GridRules, shift_mask
from lejepa_core.eval.probe import Probe

PAD = 10
ARC_ENV = EnvInfo(cell_values=11, pad_value=PAD, background_value=0)


def padded(inner: list[list[int]], size: int = 6) -> torch.Tensor:
    """An [size, size] grid: ``inner`` in the top-left corner, PAD elsewhere."""
    grid = torch.full((size, size), PAD, dtype=torch.long)
    inner = torch.tensor(inner)
    grid[: inner.shape[0], : inner.shape[1]] = inner
    return grid


def test_generic_rules_objects_blank_and_constant_velocity():
    rules = GridRules(ARC_ENV, 11)
    previous = padded([[0, 0, 0, 0], [3, 0, 0, 0], [0, 0, 0, 5], [0, 0, 0, 5]])
    last = padded([[0, 0, 0, 0], [0, 3, 0, 0], [0, 0, 0, 5], [0, 0, 0, 5]])
    assert int(rules.object_mask(last).sum()) == 3
    blank = rules.blank(last[None])[0]
    assert int((blank == 0).sum()) == 16 and int((blank == PAD).sum()) == 36 - 16
    context = torch.stack([previous, last])[None]  # [1, 2, H, W]
    k2 = rules.constant_velocity(context, torch.tensor([2]))[0]
    # 3 moved right by 2 (1 per step), the static 5 stays
    assert k2[1, 3] == 3 and int((k2 == 3).sum()) == 1 and k2[2, 3] == 5 and k2[3, 3] == 5
    k3 = rules.constant_velocity(context, torch.tensor([3]))[0]
    assert int((k3 == 3).sum()) == 0  # left the 4 x 4 grid: dropped, never painted on pad
    assert int((k3 == PAD).sum()) == 20
    one_frame = rules.constant_velocity(context[:, 1:], torch.tensor([1]))
    assert torch.equal(one_frame[0], last)  # one context frame: copy-last


def test_arc_rules_bounce_off_the_walls():
    from lejepa_envs.arc_rules import ArcGridRules

    rules = ArcGridRules(ARC_ENV, 11)
    previous = padded([[0, 0, 4, 0], [0] * 4, [0] * 4, [0] * 4])
    last = padded([[0, 0, 0, 4], [0] * 4, [0] * 4, [0] * 4])
    context = torch.stack([previous, last])[None]
    # k = 1: blocked by the wall, reverses without moving; k = 2: one cell back to the left
    k1 = rules.constant_velocity(context, torch.tensor([1]))[0]
    k2 = rules.constant_velocity(context, torch.tensor([2]))[0]
    assert k1[0, 3] == 4 and k2[0, 2] == 4 and int((k2 == 4).sum()) == 1
    generic = GridRules(ARC_ENV, 11).constant_velocity(context, torch.tensor([1]))[0]
    assert int((generic == 4).sum()) == 0


def test_shift_mask_moves_and_drops():
    mask = torch.zeros(1, 3, 3, dtype=torch.bool)
    mask[0, 0, 0] = mask[0, 2, 2] = True
    moved = shift_mask(mask, torch.tensor([[1, 1]]))
    assert moved[0, 1, 1] and int(moved.sum()) == 1


def test_grid_figures_against_counts():
    rules = GridRules(ARC_ENV, 11)
    truth = padded([[0, 2, 0, 0], [0, 2, 0, 0], [0] * 4, [0] * 4])[None]
    last = padded([[2, 0, 0, 0], [2, 0, 0, 0], [0] * 4, [0] * 4])[None]
    predicted = padded([[0, 2, 0, 0], [0, 0, 0, 7], [0] * 4, [0] * 4])[None]
    figures = grid_figures(rules, predicted, truth, last)
    # active cells: (0,1), (1,1) true objects, (0,0), (1,0) last objects; right: (0,0), (1,0), (0,1)
    assert figures["active_accuracy"] == pytest.approx(3 / 4)
    assert figures["object_recall"] == pytest.approx(1 / 2)
    assert figures["cell_accuracy"] == pytest.approx(34 / 36)
    assert figures["exact_match"] == 0.0
    assert grid_figures(rules, truth, truth, last)["exact_match"] == 1.0
    blank = grid_figures(rules, rules.blank(truth), truth, last)
    assert blank["object_recall"] == 0.0 and blank["active_accuracy"] == pytest.approx(2 / 4)


def test_retrieval_chance_and_variance_share():
    episodes = [torch.tensor([[0.0], [1.0], [2.0]]), torch.tensor([[10.0], [11.0]])]
    predicted = torch.tensor([[0.9], [2.4], [10.2]])
    of, true = torch.tensor([0, 0, 1]), torch.tensor([1, 1, 0])
    assert retrieval(predicted, episodes, of, true) == pytest.approx(2 / 3)
    assert retrieval_chance(episodes, of) == pytest.approx((1 / 3 + 1 / 3 + 1 / 2) / 3)
    # within: 2 + 0.5 = 2.5; total: sum of squares about 4.8 = 138.8
    every = torch.cat(episodes)
    total = float((every - every.mean()).square().sum())
    assert within_episode_share(episodes) == pytest.approx(2.5 / total)


def procedural_grids(episodes: int, seed: int, size: int = 8) -> torch.Tensor:
    """[episodes * 10, 12, 12] procedural ArcGrid frames (3 objects, pad 10 outside)."""
    from lejepa_envs.arc_procedural import sample_world, step_world

    rng = np.random.default_rng(seed)
    grids = []
    for _ in range(episodes):
        world = sample_world(
            rng, height=size, width=size, num_objects=3, max_shape_size=2, max_speed=1
        )
        for _ in range(10):
            grid = np.full((12, 12), PAD, dtype=np.int64)
            grid[:size, :size] = world.grid()
            grids.append(grid)
            step_world(world, gravity=False, recolour="none", max_speed=1)
    return torch.tensor(np.array(grids))


def in_grid_one_hot(grids: torch.Tensor, size: int = 8) -> torch.Tensor:
    """A latent that surely holds the objects: the in-grid one-hot cells [N, size^2 * 10]."""
    cells = grids[:, :size, :size].reshape(len(grids), -1)
    return torch.nn.functional.one_hot(cells.clamp(0, 9), 10).reshape(len(grids), -1).float()


def test_grid_probe_reads_objects_from_a_latent_that_holds_them():
    """A random rotation of the in-grid one-hot cells holds every object: the grid probe
    recovers them on unseen episodes; from noise it recovers none (and no plain-ridge
    advantage is needed to pass, but the balanced decode must not lose to it)."""
    rules = GridRules(ARC_ENV, 11)
    train, test = procedural_grids(60, 0, size=6), procedural_grids(10, 1, size=6)
    d = 360
    rotation = torch.linalg.qr(torch.randn(d, d, generator=torch.Generator().manual_seed(0)))[0]
    z_train = in_grid_one_hot(train, size=6) @ rotation
    z_test = in_grid_one_hot(test, size=6) @ rotation
    probe = GridProbe.fit(z_train, train, rules)
    figures = grid_figures(rules, probe.decode(z_test), test, test)
    plain = Probe.fit(z_train, train, cell_values=11)
    plain_figures = grid_figures(rules, plain.decode(z_test), test, test)
    assert figures["object_recall"] >= 0.9
    assert figures["object_recall"] >= plain_figures["object_recall"] - 0.01
    # a latent with no information: background everywhere, never a confident object
    noise = torch.randn(len(train), 16, generator=torch.Generator().manual_seed(1))
    empty = GridProbe.fit(noise, train, rules).decode(torch.randn(len(test), 16))
    assert grid_figures(rules, empty, test, test)["object_recall"] < 0.2
    # the cells that never vary decode as their constant value
    assert bool((probe.decode(z_test)[:, 6:, :] == PAD).all())


def test_constant_velocity_beats_copy_last_on_procedural_episodes():
    from lejepa_envs.arc_rules import ArcGridRules

    rules = ArcGridRules(ARC_ENV, 11)
    grids = procedural_grids(20, 2).reshape(20, 10, 12, 12)
    context, truth = grids[:, 3:5], grids[:, 5]
    k1 = torch.ones(20, dtype=torch.long)
    velocity = grid_figures(rules, rules.constant_velocity(context, k1), truth, context[:, -1])
    copy = grid_figures(rules, context[:, -1], truth, context[:, -1])
    assert velocity["active_accuracy"] > copy["active_accuracy"] + 0.2
    assert velocity["object_recall"] > 0.6


class TorusRules(GridRules):
    """A third party's rule: objects wrap around the grid's edges."""

    def offsets(self, last, shift, k):
        return shift * k[:, None, None]

    def paint(self, last, offset):
        inside = self.inside(last)
        height = int(inside.any(-1).sum(-1).max())
        width = int(inside.any(-2).sum(-1).max())
        out = self.blank(last)
        for v in self.object_values():
            cells = ((last == v) & self.object_mask(last)).nonzero()  # [n, 3]: sample, row, col
            for sample, row, col in cells.tolist():
                dr, dc = offset[sample, v].tolist()
                out[sample, (row + dr) % height, (col + dc) % width] = v
        return out


class _TorusPlugin:
    from lejepa_core import hookimpl

    @hookimpl
    def register_grid_rules(self, register):
        register("torus", TorusRules)


@pytest.fixture
def torus_plugin():
    from lejepa_core import registry as registry_module

    registry_module.reset()
    pm = registry_module.get_plugin_manager()
    name = pm.register_plugin(_TorusPlugin(), "torus", distribution="torus-dist", version="0")
    yield registry_module.get_registry()
    pm.unregister(name=name)
    registry_module.reset()


def test_a_third_party_registers_grid_rules_through_the_hook(torus_plugin):
    from lejepa_core.errors import InvalidComponentError, UnknownComponentError
    from lejepa_core.eval.grid_rules import check_rules_class

    assert "torus" in torus_plugin.names("grid_rules") and "arc" in torus_plugin.names("grid_rules")
    env = EnvInfo(cell_values=5, pad_value=4, background_value=1, grid_rules="torus")
    rules = rules_for(env, 5)
    assert isinstance(rules, TorusRules) and rules.background_value == 1
    grid = torch.full((1, 2, 3, 3), 1)
    grid[0, 0, 0, 1], grid[0, 1, 0, 2] = 2, 2  # moving right along the top row
    wrapped = rules.constant_velocity(grid, torch.tensor([1]))[0]
    assert wrapped[0, 0] == 2 and int((wrapped == 2).sum()) == 1
    with pytest.raises(UnknownComponentError, match="unknown grid_rules 'tours'.*torus"):
        rules_for(EnvInfo(cell_values=5, grid_rules="tours"), 5)
    with pytest.raises(InvalidComponentError, match="subclass of lejepa_core.eval.grid_rules"):
        check_rules_class("bad", object)


def test_envinfo_reads_the_grid_keys():
    info = EnvInfo.from_metadata({"background_value": 3, "grid_rules": "arc", "cell_values": 5})
    assert info.background_value == 3 and info.grid_rules == "arc"
    again = EnvInfo.from_metadata(info.to_metadata())
    assert again == info and math.isfinite(float(again.background_value))


TORUS_ID = "torusorg/Torus-v0"


class TorusEnv(gym.Env):
    """A third party's grid env: two single cells (values 2, 3) on a 5 x 5 background of 1,
    padded with 4 to 6 x 6, moving with constant velocity and wrapping around the edges."""

    metadata = {
        "render_modes": [],
        "cell_values": 5,
        "pad_value": 4,
        "background_value": 1,
        "grid_rules": "torus",
        "noop_action": 0,
    }

    def __init__(self):
        self.observation_space = gym.spaces.Box(0, 4, shape=(6, 6), dtype=np.int8)
        self.action_space = gym.spaces.Discrete(1)
        self.rng = np.random.default_rng(0)

    def _obs(self):
        grid = np.full((6, 6), 4, dtype=np.int8)
        grid[:5, :5] = 1
        for value, (row, col) in zip((2, 3), self.cells, strict=True):
            grid[row, col] = value
        return grid

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.rng = np.random.default_rng(seed)
        self.cells = [self.rng.integers(0, 5, 2) for _ in range(2)]
        while (self.cells[0] == self.cells[1]).all():
            self.cells[1] = self.rng.integers(0, 5, 2)
        self.velocities = [np.array([0, 1]), np.array([1, 0])]
        return self._obs(), {}

    def step(self, action):
        self.cells = [(c + v) % 5 for c, v in zip(self.cells, self.velocities, strict=True)]
        return self._obs(), 0.0, False, False, {}


class _TorusEnvPlugin(_TorusPlugin):
    from lejepa_core import hookimpl

    @hookimpl
    def register_envs(self, register):
        register(TORUS_ID, {"entry_point": TorusEnv})


@pytest.mark.slow
def test_a_third_party_grid_env_gets_the_grid_evaluation_with_its_rules(tmp_path):
    """Generated, trained and evaluated like ArcGrid: the env's metadata names its rules
    (registered by its plugin), so the constant-velocity baseline wraps around and is exact."""
    from lejepa_core import registry as registry_module
    from lejepa_core.data.generate import generate_dataset
    from tests.test_eval_envs import OBJECT_ENCODER, run_eval, train_tiny

    registry_module.reset()
    pm = registry_module.get_plugin_manager()
    name = pm.register_plugin(_TorusEnvPlugin(), "torus-env", distribution="torus", version="0")
    try:
        registry_module.ensure_envs_registered()
        data = tmp_path / "torus.h5"
        generate_dataset(TORUS_ID, episodes=12, steps=30, out=data, progress=False)
        encoder = OBJECT_ENCODER.replace("max_objects = 8", "max_objects = 4")
        run_dir = train_tiny(tmp_path, TORUS_ID, data_path=data, encoder=encoder)
        output, report = run_eval(run_dir)
    finally:
        pm.unregister(name=name)
        registry_module.reset()
        gym.registry.pop(TORUS_ID, None)
    assert report["kind"] == "grid" and report["grid_rules"] == "torus"
    for row in report["per_k"]:
        assert row["constant_velocity/exact_match"] == 1.0
        assert row["copy_last/object_recall"] == 0.0  # both cells always move
        assert row["blank/object_recall"] == 0.0
        assert 0.0 <= row["model/retrieval"] <= 1.0 and row["chance/retrieval"] > 0
    assert 0.0 <= report["within_episode_share"] <= 1.0
    assert "probe sanity" in output and "constant velocity" in output


def test_report_rows_and_the_probe_sanity_note():
    from lejepa_core.report.grid_rows import grid_notes, grid_rows

    figures = {"object_recall": 0.01, "active_accuracy": 0.2, "cell_accuracy": 0.97}
    evaluation = {
        "probe_sanity": {"grid": figures, "ridge": figures, "ok": False, "note": "cannot"},
        "within_episode_share": 0.05,
    }
    rows = grid_rows(evaluation)
    assert [row[0].split(" on ")[0] for row in rows[:2]] == ["grid probe", "plain ridge probe"]
    assert "object recall 0.0100" in rows[0][1] and rows[2][1] == "0.0500"
    assert grid_notes(evaluation) == ["probe sanity: cannot"]
    evaluation["probe_sanity"]["ok"] = True
    assert grid_notes(evaluation) == [] and grid_rows({}) == [] and grid_notes({}) == []
