"""The example plugin's own tests: lejepa's conformance kit over every component it
registers, plus the physics of its pendulum."""

import numpy as np
import pytest

from lejepa_core.testing import check_component, component_cases
from lejepa_example_plugin.pendulum import DampedPendulumEnv

CASES = component_cases("lejepa-example-plugin")


def test_the_plugin_registers_three_components():
    assert sorted(str(c) for c in CASES) == [
        "encoder:example_linear",
        "loss:example_logcosh",
        "masker:example_dropout",
    ]


@pytest.mark.parametrize("case", CASES, ids=str)
def test_conformance(case):
    assert check_component(case.kind, case.cls, name=case.name)


def test_pendulum_passes_gymnasiums_checker():
    from gymnasium.utils.env_checker import check_env

    check_env(DampedPendulumEnv(), skip_render_check=True)


def test_undamped_pendulum_nearly_conserves_energy():
    env = DampedPendulumEnv(damping=0.0, dt=0.001)
    env.reset(seed=0)

    def energy():
        theta, omega = env.state
        return 0.5 * omega**2 + env.gravity / env.length * (1 - np.cos(theta))

    before = energy()
    for _ in range(2000):
        env.step(np.zeros(1, np.float32))
    assert abs(energy() - before) / before < 0.01


def test_metadata_names_what_lejepa_reads():
    from lejepa_core.envinfo import EnvInfo

    info = EnvInfo.from_metadata(DampedPendulumEnv(dt=0.02).metadata)
    assert info.dt == 0.02 and info.derivative_pairs() == [(0, 1)]
    assert info.group_indices() == {"angle": [0], "angular_velocity": [1]}
