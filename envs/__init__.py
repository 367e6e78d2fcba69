"""lejepa's gymnasium environments.

``import lejepa_envs`` registers them with gymnasium, so a plain script can
``gym.make("lejepa/BouncingBalls-v0")`` (or, without the import,
``gym.make("lejepa_envs:lejepa/BouncingBalls-v0")``: gymnasium imports the module named before
the colon). gymnasium 1.x has no entry-point group for third-party envs (0.26-0.29's
``gymnasium.envs`` plugin loading was removed), so importing is the way. lejepa's plugin
manager registers the same ids through the ``register_envs`` hook, like a third party's
envs; both paths are idempotent and register the same specs.
"""

from lejepa_core.hookspecs import hookimpl

ENVS: dict[str, dict[str, str]] = {
    "lejepa/BouncingBalls-v0": {
        "entry_point": "lejepa_envs.bouncing_balls:BouncingBallsEnv",
        "vector_entry_point": "lejepa_envs.bouncing_balls_vector:BouncingBallsVectorEnv",
    },
    "lejepa/ArcGrid-v0": {"entry_point": "lejepa_envs.arc_grid:ArcGridEnv"},
}


def register_with_gymnasium() -> list[str]:
    """Register every id of ``ENVS`` not registered yet; returns the ids."""
    import gymnasium

    for env_id, spec in ENVS.items():
        if env_id not in gymnasium.registry:
            gymnasium.register(id=env_id, **spec)
    return list(ENVS)


@hookimpl
def register_envs(register):
    for env_id, spec in ENVS.items():
        register(env_id, dict(spec))


@hookimpl
def register_grid_rules(register):
    from lejepa_envs.arc_rules import ArcGridRules

    register("arc", ArcGridRules)


register_with_gymnasium()
