import os
import socket
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

from lejepa_core.data.writer import TrajectoryWriter

# Test tensors are tiny: one thread avoids oversubscribing the CPU (subprocess tests included).
torch.set_num_threads(1)


@pytest.fixture
def generator():
    g = torch.Generator()
    g.manual_seed(0)
    return g


# ----------------------------------------------------------------- data tests (test_data_*.py)
TINY_ENV_ID = "lejepa_test/TinyPixels-v0"


class TinyPixelsEnv(gym.Env):
    """A point on a line, seen as a uint8 [4, width] image; ``info["state"]`` is (x, v).

    Terminates when x leaves [0, width - 1] (ragged episodes); action 0/1/2 pushes v by
    -1/0/+1 (1, the published no-op, leaves it).
    """

    metadata = {"render_modes": [], "state_feature_names": ["x", "v"], "noop_action": 1}

    def __init__(self, width: int = 6):
        self.width = width
        self.observation_space = gym.spaces.Box(0, 255, (4, width), np.uint8)
        self.action_space = gym.spaces.Discrete(3)

    def _obs(self):
        image = np.zeros((4, self.width), np.uint8)
        image[:, int(np.clip(round(self.x), 0, self.width - 1))] = 255
        return image, {"state": np.array([self.x, self.v], np.float32)}

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.x = float(self.np_random.uniform(1, self.width - 2))
        self.v = float(self.np_random.uniform(-0.5, 0.5))
        return self._obs()

    def step(self, action):
        self.v += 0.25 * (int(action) - 1)
        self.x += self.v
        terminated = not 0 <= self.x <= self.width - 1
        obs, info = self._obs()
        return obs, float(self.x), terminated, False, info


@pytest.fixture
def tiny_env_id() -> str:
    """The id of ``TinyPixelsEnv``, registered with gymnasium (a single env, no vector one)."""
    if TINY_ENV_ID not in gym.registry:
        gym.register(id=TINY_ENV_ID, entry_point=TinyPixelsEnv)
    return TINY_ENV_ID


def _write_trajectory_file(
    path: Path,
    lengths=(5, 7, 3, 9),
    *,
    obs_shape=(2, 3),
    feature_names=("a", "b", "c"),
    states=False,
    seed=0,
) -> dict[str, np.ndarray]:
    """See ``write_trajectory_file``."""
    rng = np.random.default_rng(seed)
    lengths = np.asarray(lengths)
    total = int(lengths.sum())
    episode = np.repeat(np.arange(len(lengths)), lengths)
    step = np.concatenate([np.arange(n) for n in lengths])
    obs = (1000.0 * episode + step)[:, None, None] + np.zeros((total, *obs_shape))
    obs = (obs + np.arange(obs_shape[-1]) / 10).astype(np.float32)
    arrays = {
        "observations": obs,
        "actions": rng.integers(0, 3, total),
        "rewards": rng.normal(size=total).astype(np.float32),
    }
    if states:
        arrays["states"] = (2.0 * obs[..., :2]).astype(np.float32)
    with TrajectoryWriter(
        path,
        obs_shape=obs_shape,
        obs_dtype="float32",
        action_shape=(),
        action_dtype="int64",
        state_shape=(obs_shape[0], 2) if states else None,
        attrs={
            "env_id": "test/Fake-v0",
            "env_kwargs": {"n": 2},
            "feature_names": list(feature_names),
        },
    ) as writer:
        writer.append(
            arrays["observations"],
            arrays["actions"],
            rewards=arrays["rewards"],
            states=arrays.get("states"),
            lengths=lengths,
            seeds=np.arange(len(lengths)),
        )
    arrays["lengths"] = lengths
    return arrays


@pytest.fixture
def write_trajectory_file():
    """``write_trajectory_file(path, lengths=(5, 7, 3, 9), *, obs_shape=(2, 3), states=False)``
    writes a small valid file whose observation row r of episode e equals ``1000 * e + r``
    (+ the feature index / 10), easy to check windows against, and returns the arrays written
    (plus ``lengths``). With ``states``, ``/states`` is twice the first two features."""
    return _write_trajectory_file


# --- Training, evaluation and report tests: a tiny dataset and a tiny recipe -------------------
# (formerly tests/test_training_helpers.py). ``tiny_data`` is a fixture; ``write_tiny_recipe``
# and ``tiny_recipe`` are plain functions: ``from tests.conftest import tiny_recipe``.
TINY_RECIPE = """
[model]
latent_dim = 8

[encoder]
name = "mlp"
hidden_dim = 16
depth = 1

[predictor]
name = "residual"
hidden_dim = 16
depth = 1
prior_hidden = 8
time_dim = 4

[masker]
name = "feature"
p_coordinates = 0.2
p_velocities = 0.2

[[losses]]
name = "l1"

[[losses]]
name = "sigreg"
weight = 0.01
num_directions = 8

[target]
mode = "ema"
momentum = 0.9
momentum_final = 0.99

[data]
path = "{data_path}"
env_id = "lejepa/BouncingBalls-v0"
env_kwargs = {{ num_balls = 2 }}
episodes = 12
steps = 30
context_frames = 2
horizons = [1, 2, 4]
val_fraction = 0.25

[train]
seed = 0
epochs = 2
steps_per_epoch = 5
batch_size = 16
lr = 3e-3
warmup_steps = 2
val_windows = 32
patience = 0
threads = 1

[log]
every = 2
progress = false
tensorboard = true
runs_dir = "{runs_dir}"
"""


def write_tiny_recipe(directory: Path, data_path: Path, name: str = "tiny") -> Path:
    path = directory / f"{name}.toml"
    path.write_text(
        TINY_RECIPE.format(data_path=data_path.as_posix(), runs_dir=(directory / "runs").as_posix())
    )
    return path


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    """A 12-episode, 30-step, 2-ball BouncingBalls file (generated once per session)."""
    from lejepa_core.data.generate import generate_dataset

    out = tmp_path_factory.mktemp("tiny-data") / "balls.h5"
    generate_dataset(
        "lejepa/BouncingBalls-v0",
        episodes=12,
        steps=30,
        out=out,
        seed=0,
        env_kwargs={"num_balls": 2},
        progress=False,
    )
    return out


def tiny_recipe(tmp_path: Path, data_path: Path, overrides: tuple[str, ...] = ()):
    from lejepa_core.recipe import load_recipe

    return load_recipe(write_tiny_recipe(tmp_path, data_path), list(overrides))


# --- DDP tests: one rank of a torchrun-like launch on this machine (gloo) -------------------
def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def become_rank(rank: int, world_size: int, port: int) -> None:
    """The environment torchrun gives rank ``rank`` of ``world_size`` (one thread each)."""
    os.environ.update(
        RANK=str(rank),
        WORLD_SIZE=str(world_size),
        LOCAL_RANK=str(rank),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    torch.set_num_threads(1)


def finish_rank() -> None:
    """End a spawned rank once its results are written, skipping the interpreter's teardown:
    there gloo can abort a finished process ("terminate called without an active exception",
    SIGABRT) about once in ten runs. The tests check the written results, which this keeps."""
    os._exit(0)
