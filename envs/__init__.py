"""lejepa's gymnasium environments, registered through the ``register_envs`` hook.

Importing this package registers nothing; the plugin manager calls ``register_envs``.
"""

from lejepa_core.hookspecs import hookimpl


@hookimpl
def register_envs(register):
    register(
        "lejepa/BouncingBalls-v0",
        {
            "entry_point": "lejepa_envs.bouncing_balls:BouncingBallsEnv",
            "vector_entry_point": "lejepa_envs.bouncing_balls_vector:BouncingBallsVectorEnv",
        },
    )
    register("lejepa/ArcGrid-v0", {"entry_point": "lejepa_envs.arc_grid:ArcGridEnv"})
