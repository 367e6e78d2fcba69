"""BouncingBalls: gymnasium API, physics invariants, single/vector equivalence, rendering."""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from lejepa_envs.ball_physics import BallPhysics, BallsConfig
from lejepa_envs.bouncing_balls import BouncingBallsEnv
from lejepa_envs.bouncing_balls_vector import BouncingBallsVectorEnv

ENV_ID = "lejepa/BouncingBalls-v0"


@pytest.fixture
def registered():
    """The env id, registered with gymnasium through the plugin registry (as lejepa does)."""
    from lejepa_core.registry import ensure_envs_registered

    assert ENV_ID in ensure_envs_registered(), "lejepa_envs did not register " + ENV_ID
    return ENV_ID


def sync_env(num_envs, **kwargs):
    return gym.vector.SyncVectorEnv([lambda: BouncingBallsEnv(**kwargs) for _ in range(num_envs)])


def random_actions(rng, num_envs, num_actions, push_probability=0.05):
    """Mostly no-ops, sometimes a push: [E] int."""
    actions = rng.integers(1, num_actions, size=num_envs)
    return np.where(rng.random(num_envs) < push_probability, actions, 0)


def assert_valid(physics: BallPhysics, s: np.ndarray, eps: float = 1e-9):
    """Every ball inside the box and no two balls overlapping; s: [4, N, E]."""
    assert np.all(s[:2] >= physics.wall_low - eps)
    assert np.all(s[:2] <= physics.wall_high + eps)
    d = s[:2, physics.pair_j] - s[:2, physics.pair_i]
    distance = np.sqrt(d[0] ** 2 + d[1] ** 2)
    assert np.all(distance >= np.sqrt(physics.contact2) - eps)


# ---- gymnasium API -------------------------------------------------------------------------
@pytest.mark.parametrize("obs_mode", ["state", "pixels"])
def test_check_env_passes(obs_mode):
    check_env(BouncingBallsEnv(obs_mode=obs_mode, render_mode="rgb_array"), skip_render_check=False)


def test_spaces_metadata_and_info():
    env = BouncingBallsEnv(num_balls=4)
    obs, info = env.reset(seed=0)
    assert obs.shape == (4, 4) and obs.dtype == np.float32 and info == {}
    assert env.action_space == gym.spaces.Discrete(17)
    assert env.metadata["feature_names"] == ("x", "y", "vx", "vy")
    assert env.metadata["feature_groups"] == {"positions": ("x", "y"), "velocities": ("vx", "vy")}
    # what evaluation reads: the step length, the box, which features are positions and
    # which feature is each one's time derivative
    assert env.metadata["dt"] == 0.1 and env.metadata["box"] == (1.0, 1.0)
    assert env.metadata["positions"] == ("x", "y")
    assert env.metadata["derivatives"] == {"x": "vx", "y": "vy"}
    custom = BouncingBallsEnv(num_balls=1, dt=0.05, box_size=(2.0, 1.5))
    assert custom.metadata["dt"] == 0.05 and custom.metadata["box"] == (2.0, 1.5)
    pixels = BouncingBallsEnv(num_balls=4, obs_mode="pixels", image_size=(24, 40))
    obs, info = pixels.reset(seed=0)
    assert obs.shape == (24, 40) and obs.dtype == np.float32 and 0 <= obs.min() <= obs.max() <= 1
    assert info["state"].shape == (4, 4) and info["state"].dtype == np.float32
    assert pixels.metadata["feature_names"] == () and pixels.metadata["state_shape"] == (4, 4)
    assert pixels.metadata["state_feature_names"] == ("x", "y", "vx", "vy")
    assert pixels.metadata["derivatives"] == {"x": "vx", "y": "vy"}  # of the state features
    _, reward, terminated, truncated, info = pixels.step(0)
    assert (reward, terminated, truncated) == (0.0, False, False)
    np.testing.assert_array_equal(info["state"], pixels.state)


def test_make_and_make_vec(registered):
    env = gym.make(registered, num_balls=2)
    assert env.unwrapped.config.num_balls == 2
    vec = gym.make_vec(registered, num_envs=3, num_balls=2)
    assert isinstance(vec, BouncingBallsVectorEnv)
    obs, _ = vec.reset(seed=1)
    assert obs.shape == (3, 2, 4)
    for key in ("feature_groups", "dt", "box", "positions", "derivatives"):
        assert vec.metadata[key] == env.unwrapped.metadata[key]
    assert vec.metadata["autoreset_mode"] == gym.vector.AutoresetMode.NEXT_STEP
    limited = gym.make_vec(registered, num_envs=2, max_episode_steps=3)
    limited.reset(seed=0)
    truncations = [limited.step(np.zeros(2, dtype=np.int64))[3].tolist() for _ in range(4)]
    assert truncations == [[False, False], [False, False], [True, True], [False, False]]


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"num_balls": 0}, "num_balls"),
        ({"radius": 0.6}, "radius"),
        ({"radius": (0.1, 0.1)}, "3 positive numbers"),
        ({"mass": -1.0}, "mass"),
        ({"damping": -0.5}, "-0.5"),
        ({"obs_mode": "rgb"}, "'rgb'"),
        ({"dt": 0}, "dt"),
        ({"speed_range": (0.5, 0.1)}, "speed_range"),
        ({"num_balls": 40, "radius": 0.1}, "half the box"),
        ({"render_mode": "human"}, "render_mode"),
    ],
)
def test_invalid_arguments_raise_naming_the_value(kwargs, words):
    with pytest.raises(ValueError, match=words.replace("(", r"\(")):
        BouncingBallsEnv(**kwargs)


def test_invalid_action_raises():
    env = BouncingBallsEnv()
    env.reset(seed=0)
    with pytest.raises(ValueError, match="13"):
        env.step(13)


# ---- determinism and single/vector equivalence ---------------------------------------------
def test_same_seed_same_trajectory_other_seed_differs():
    def rollout(seed):
        env = BouncingBallsEnv()
        frames = [env.reset(seed=seed)[0]]
        frames += [env.step(0)[0] for _ in range(50)]
        return np.stack(frames)

    np.testing.assert_array_equal(rollout(3), rollout(3))
    assert not np.array_equal(rollout(3), rollout(4))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"num_balls": 5, "radius": 0.09},
        {
            "num_balls": 4,
            "radius": (0.05, 0.08, 0.1, 0.12),
            "mass": (1.0, 2.0, 0.5, 3.0),
            "gravity": 1.0,
            "damping": 0.05,
            "box_size": (1.5, 1.0),
            "max_steps": 60,
        },
    ],
    ids=["equal-balls", "gravity-damping-masses-truncation"],
)
def test_vector_env_equals_sync_vector_env(kwargs):
    num_envs, steps = 6, 300
    vec = BouncingBallsVectorEnv(num_envs=num_envs, **kwargs)
    sync = sync_env(num_envs, **kwargs)
    obs, _ = vec.reset(seed=7)
    expected, _ = sync.reset(seed=7)
    np.testing.assert_array_equal(obs, expected)
    rng = np.random.default_rng(0)
    for _ in range(steps):
        actions = random_actions(rng, num_envs, vec.config.num_actions)
        got = vec.step(actions)
        want = sync.step(actions)
        for a, b in zip(got[:4], want[:4], strict=True):
            np.testing.assert_array_equal(a, b)
        internal = np.stack([env.unwrapped._state[:, :, 0] for env in sync.envs], axis=-1)
        np.testing.assert_array_equal(vec._state, internal)  # float64, bit for bit
    assert vec.physics.pair_events > 20 and vec.physics.wall_events > 20
    if kwargs.get("max_steps"):
        assert sync.envs[0].unwrapped._steps < kwargs["max_steps"]  # went through autoresets


def test_vector_pixels_equal_sync_pixels():
    vec = BouncingBallsVectorEnv(num_envs=3, obs_mode="pixels", image_size=16)
    sync = sync_env(3, obs_mode="pixels", image_size=16)
    obs, info = vec.reset(seed=2)
    expected, expected_info = sync.reset(seed=2)
    for _ in range(20):
        np.testing.assert_array_equal(obs, expected)
        np.testing.assert_array_equal(info["state"], expected_info["state"])
        np.testing.assert_array_equal(info["_state"], expected_info["_state"])
        obs, *_, info = vec.step(np.zeros(3, dtype=np.int64))
        expected, *_, expected_info = sync.step(np.zeros(3, dtype=np.int64))
    assert obs.shape == (3, 16, 16) and info["state"].shape == (3, 3, 4)


def test_vector_partial_reset_and_seed_list():
    vec = BouncingBallsVectorEnv(num_envs=4)
    first, _ = vec.reset(seed=[10, 11, np.int64(12), 13])
    np.testing.assert_array_equal(first, vec.reset(seed=10)[0])
    vec.step(np.zeros(4, dtype=np.int64))
    moved = vec.state
    mask = np.array([True, False, False, True])
    obs, _ = vec.reset(seed=10, options={"reset_mask": mask})
    np.testing.assert_array_equal(obs[mask], first[mask])
    np.testing.assert_array_equal(obs[~mask], moved[~mask])


# ---- physics invariants --------------------------------------------------------------------
def test_energy_conserved_and_balls_stay_valid_over_1000_steps():
    vec = BouncingBallsVectorEnv(num_envs=16, num_balls=8, radius=0.07, speed_range=(0.5, 1.0))
    vec.reset(seed=0)
    physics = vec.physics
    energy = physics.kinetic_energy(vec._state)
    for _ in range(1000):
        vec.step(np.zeros(16, dtype=np.int64))
        assert_valid(physics, vec._state)
    drift = np.abs(physics.kinetic_energy(vec._state) / energy - 1)
    assert drift.max() < 1e-6
    assert physics.pair_events > 1000 and physics.wall_events > 1000 and physics.capped_steps == 0


def test_momentum_conserved_across_ball_collisions():
    """Balls converge on the centre of a huge box: many pair collisions, no wall reached."""
    num_envs, n = 8, 6
    vec = BouncingBallsVectorEnv(num_envs=num_envs, num_balls=n, radius=1.0, box_size=1000.0)
    rng = np.random.default_rng(1)
    angle = 2 * np.pi * np.arange(n) / n + rng.uniform(0, 0.3, size=(num_envs, n))
    state = np.empty((num_envs, n, 4))
    state[..., 0], state[..., 1] = 500 + 10 * np.cos(angle), 500 + 10 * np.sin(angle)
    speed = rng.uniform(0.5, 1.5, size=(num_envs, n))
    state[..., 2], state[..., 3] = -speed * np.cos(angle), -speed * np.sin(angle)
    state[..., 2:] += rng.normal(0, 0.05, size=(num_envs, n, 2))
    vec.reset(options={"state": state})
    physics = vec.physics
    momentum = physics.momentum(vec._state)  # [2, E]
    scale = np.sum(np.abs(physics.mass[:, None] * vec._state[2:]), axis=(0, 1))  # [E]
    energy = physics.kinetic_energy(vec._state)
    for _ in range(1000):
        vec.step(np.zeros(num_envs, dtype=np.int64))
    assert physics.wall_events == 0 and physics.pair_events >= 3 * num_envs
    assert np.max(np.abs(physics.momentum(vec._state) - momentum) / scale) < 1e-6
    assert np.max(np.abs(physics.kinetic_energy(vec._state) / energy - 1)) < 1e-6
    assert_valid(physics, vec._state)


def test_unequal_masses_head_on_collision_matches_formula():
    """1-D elastic collision: v1' = ((m1 - m2) v1 + 2 m2 v2) / (m1 + m2)."""
    env = BouncingBallsEnv(num_balls=2, radius=0.1, mass=(1.0, 3.0), dt=0.05, box_size=4.0)
    env.reset(options={"state": [[1.0, 2.0, 1.0, 0.0], [2.0, 2.0, -0.5, 0.0]]})
    for _ in range(20):  # contact at t = 0.8 / 1.5 < 1
        obs, *_ = env.step(0)
    m1, m2, v1, v2 = 1.0, 3.0, 1.0, -0.5
    expected = [
        ((m1 - m2) * v1 + 2 * m2 * v2) / (m1 + m2),
        ((m2 - m1) * v2 + 2 * m1 * v1) / (m1 + m2),
    ]
    np.testing.assert_allclose(obs[:, 2], expected, atol=1e-6)
    np.testing.assert_allclose(obs[:, 3], 0.0, atol=1e-7)
    assert obs[1, 0] - obs[0, 0] > 0.2  # separated again, never passed through each other


def test_fast_ball_does_not_tunnel_through_wall_or_ball():
    """A step long enough to cross the box several times: events resolve it exactly."""
    env = BouncingBallsEnv(num_balls=2, radius=0.1, dt=1.0)
    env.reset(options={"state": [[0.5, 0.2, 3.3, 0.0], [0.5, 0.8, 0.0, 0.0]]})
    obs, *_ = env.step(0)
    # x travels 3.3 within [0.1, 0.9]: 0.5 -> 0.9 -> 0.1 -> 0.9 -> 0.1 -> 0.6, moving right
    np.testing.assert_allclose(obs[0, :3], [0.6, 0.2, 3.3], atol=1e-6)
    assert env.physics.wall_events == 4
    # two balls (r = 0.1) a naive integrator would swap: contact at t = 0.2 / 0.7, bounce back
    env.reset(options={"state": [[0.3, 0.5, 0.35, 0.0], [0.7, 0.5, -0.35, 0.0]]})
    obs, *_ = env.step(0)
    np.testing.assert_allclose(obs[:, :3], [[0.15, 0.5, -0.35], [0.85, 0.5, 0.35]], atol=1e-6)


def test_event_cap_keeps_state_valid():
    vec = BouncingBallsVectorEnv(
        num_envs=8, num_balls=8, radius=0.08, max_events_per_step=1, dt=0.5
    )
    vec.reset(seed=0)
    for _ in range(100):
        vec.step(np.zeros(8, dtype=np.int64))
        assert_valid(vec.physics, vec._state)
    assert vec.physics.capped_steps > 0


def test_damping_scales_energy_exactly():
    gamma, dt, steps = 0.3, 0.1, 200
    vec = BouncingBallsVectorEnv(num_envs=4, num_balls=5, damping=gamma, dt=dt)
    vec.reset(seed=3)
    energy = vec.physics.kinetic_energy(vec._state)
    for _ in range(steps):
        vec.step(np.zeros(4, dtype=np.int64))
    ratio = vec.physics.kinetic_energy(vec._state) / energy
    np.testing.assert_allclose(ratio, math.exp(-2 * gamma * dt * steps), rtol=1e-9)
    assert vec.physics.pair_events + vec.physics.wall_events > 0


def test_gravity_accelerates_downwards():
    env = BouncingBallsEnv(num_balls=1, gravity=2.0, dt=0.01)
    obs, _ = env.reset(options={"state": [[0.5, 0.9, 0.1, 0.0]]})
    for step in range(1, 31):
        obs, *_ = env.step(0)
        assert obs[0, 3] == pytest.approx(-2.0 * 0.01 * step, abs=1e-6)
    assert obs[0, 1] < 0.9 - 0.5 * 2.0 * 0.3**2 * 0.9  # fell about g t^2 / 2
    assert obs[0, 2] == pytest.approx(0.1)  # vx untouched


def test_gravity_balls_settle_without_leaving_box():
    vec = BouncingBallsVectorEnv(num_envs=8, num_balls=6, gravity=5.0, damping=0.5)
    vec.reset(seed=4)
    for _ in range(600):
        vec.step(np.zeros(8, dtype=np.int64))
        assert_valid(vec.physics, vec._state)
    assert np.mean(vec._state[1]) < 0.35  # the balls gathered near the floor


def test_push_action_changes_one_ball_velocity():
    env = BouncingBallsEnv(num_balls=3, box_size=10.0, push_speed=0.25)
    state = [[2.0, 2.0, 0.0, 0.0], [5.0, 5.0, 0.1, 0.0], [8.0, 8.0, 0.0, 0.0]]
    env.reset(options={"state": state})
    obs, *_ = env.step(1 + 4 * 1 + 2)  # ball 1, +y
    np.testing.assert_allclose(obs[:, 2:], [[0, 0], [0.1, 0.25], [0, 0]], atol=1e-7)
    obs, *_ = env.step(1 + 4 * 2 + 1)  # ball 2, -x
    np.testing.assert_allclose(obs[2, 2:], [-0.25, 0.0], atol=1e-7)


def test_max_steps_truncates():
    env = BouncingBallsEnv(max_steps=3)
    env.reset(seed=0)
    assert [env.step(0)[3] for _ in range(3)] == [False, False, True]


# ---- rendering -----------------------------------------------------------------------------
def test_pixels_put_the_ball_where_it_is():
    env = BouncingBallsEnv(num_balls=1, radius=0.1, obs_mode="pixels", image_size=32)
    obs, _ = env.reset(options={"state": [[0.25, 0.75, 0.0, 0.0]]})  # top-left quadrant
    rows, cols = np.indices(obs.shape)
    centre = (np.sum(rows * obs) / obs.sum(), np.sum(cols * obs) / obs.sum())
    np.testing.assert_allclose(centre, (7.5, 7.5), atol=0.05)  # row 0 is the top
    assert obs.sum() == pytest.approx(math.pi * (0.1 * 32) ** 2, rel=0.03)  # disc area in pixels


def test_rgb_render_colours_each_ball():
    env = BouncingBallsEnv(num_balls=2, render_mode="rgb_array", render_size=64)
    env.reset(options={"state": [[0.25, 0.5, 0, 0], [0.75, 0.5, 0, 0]]})
    frame = env.render()
    assert frame.shape == (64, 64, 3) and frame.dtype == np.uint8
    left, right = frame[32, 16], frame[32, 48]
    assert not np.array_equal(left, right) and left.max() > 150 and right.max() > 150
    vec = BouncingBallsVectorEnv(num_envs=2, render_mode="rgb_array", render_size=64)
    vec.reset(seed=0)
    assert [f.shape for f in vec.render()] == [(64, 64, 3)] * 2


def test_config_defaults():
    config = BallsConfig()
    assert (config.num_balls, config.box, config.image_shape, config.num_actions) == (
        3,
        (1.0, 1.0),
        (32, 32),
        13,
    )


def test_windowed_gray_render_equals_full_image_render():
    from lejepa_envs.ball_render import disc_coverage, render_gray

    rng = np.random.default_rng(0)
    box, shape, radius = (1.5, 1.0), (24, 40), np.array([0.05, 0.1, 0.2])
    pos = rng.uniform(0.2, 0.8, size=(300, 3, 2)) * np.array(box)  # several render chunks
    pos[0, 0] = (0.05, 0.95)  # touching the top-left corner
    expected = disc_coverage(pos, radius, box, shape).max(axis=1).astype(np.float32)
    np.testing.assert_array_equal(render_gray(pos, radius, box, shape), expected)
