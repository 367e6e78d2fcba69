"""Array core of the BouncingBalls environments: configuration and event-driven physics.

Shape legend: ``E`` environments, ``N`` balls, ``P = N (N - 1) / 2`` ball pairs.
The state is one float64 array ``s: [4, N, E]`` with rows (x, y, vx, vy): the env axis is
last and contiguous, so every operation runs on long contiguous rows.
The single environment is the case ``E = 1`` of the same code, so single and vectorised
trajectories agree bit for bit (only element-wise IEEE operations, no reductions across envs).

One step of length ``dt``:
1. kick: the action's push, then gravity (``vy -= gravity * dt``), then damping
   (``v *= exp(-damping * dt)``);
2. drift: free flight with exact elastic collisions, event-driven: advance to the earliest
   ball-wall or ball-ball contact, resolve it, repeat until ``dt`` is used up. Balls never
   tunnel or overlap. At most ``max_events_per_step`` events per env and step; an env that
   reaches the cap keeps its (valid, non-overlapping) state for the rest of that step, i.e.
   loses that remainder of time. ``BallPhysics.capped_steps`` counts such steps.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import attrs
import numpy as np

STATE_FEATURE_NAMES = ("x", "y", "vx", "vy")
STATE_FEATURE_GROUPS = {"positions": ("x", "y"), "velocities": ("vx", "vy")}
STATE_POSITIONS = ("x", "y")
STATE_DERIVATIVES = {"x": "vx", "y": "vy"}
OBS_MODES = ("state", "pixels", "ball_channels")
# Push directions of the actions 1 + 4 * ball + direction: +x, -x, +y, -y.
PUSH_DIRECTIONS = np.array([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]])


def _positive_pair(name: str, value, *, integer: bool = False) -> tuple:
    """A positive scalar or pair, returned as a pair; ValueError naming ``name`` otherwise."""
    kind = "int" if integer else "number"
    items = (value, value) if np.isscalar(value) else tuple(value)
    ok = len(items) == 2 and all(
        isinstance(v, (int, np.integer)) if integer else isinstance(v, (int, float, np.number))
        for v in items
    )
    if not ok or not all(v > 0 for v in items):
        raise ValueError(f"{name} must be a positive {kind} or a pair of them, got {value!r}")
    return tuple(int(v) if integer else float(v) for v in items)


def _per_ball(name: str, value, num_balls: int) -> np.ndarray:
    """A positive scalar or one value per ball, as float64 ``[N]``."""
    shape_ok = np.ndim(value) == 0 or np.shape(value) == (num_balls,)
    array = (
        np.broadcast_to(np.asarray(value, dtype=np.float64), (num_balls,)).copy()
        if (shape_ok)
        else None
    )
    if array is None or not np.all(np.isfinite(array)) or not np.all(array > 0):
        raise ValueError(
            f"{name} must be a positive number or {num_balls} positive numbers (one per ball), "
            f"got {value!r}"
        )
    return array


@attrs.frozen(kw_only=True)
class BallsConfig:
    """Parameters of BouncingBalls, validated on construction (ValueError naming the value).

    num_balls: N. box_size: box ``[0, w] x [0, h]``, a number or ``(w, h)``.
    radius, mass: a number or one per ball. dt: step length. gravity: downward acceleration
    (``vy`` decreases by ``gravity * dt`` per step). damping: rate ``γ >= 0``, velocities are
    multiplied by ``exp(-γ dt)`` per step. speed_range: ``(low, high)`` of the initial speeds
    (uniform), directions uniform. push_speed: velocity change of a push action.
    max_events_per_step: cap on collision events per env and step. obs_mode: ``"state"``,
    ``"pixels"`` or ``"ball_channels"``. image_size: pixels observation ``(H, W)`` or one int. render_size: side of
    the ``rgb_array`` frame. max_steps: truncate after this many steps (None: never).
    """

    num_balls: int = 3
    box_size: float | tuple[float, float] = 1.0
    radius: float | Sequence[float] = 0.08
    mass: float | Sequence[float] = 1.0
    dt: float = 0.1
    gravity: float = 0.0
    damping: float = 0.0
    speed_range: tuple[float, float] = (0.2, 0.5)
    push_speed: float = 0.1
    max_events_per_step: int = 64
    obs_mode: str = "state"
    image_size: int | tuple[int, int] = 32
    render_size: int = 128
    max_steps: int | None = None

    def __attrs_post_init__(self):
        if not isinstance(self.num_balls, (int, np.integer)) or self.num_balls < 1:
            raise ValueError(f"num_balls must be an int >= 1, got {self.num_balls!r}")
        box = _positive_pair("box_size", self.box_size)
        radius = _per_ball("radius", self.radius, self.num_balls)
        _per_ball("mass", self.mass, self.num_balls)
        if 2 * radius.max() >= min(box):
            raise ValueError(
                f"radius must be below half the box side: radius={self.radius!r}, box_size={box}"
            )
        if np.pi * np.sum(radius**2) > 0.5 * box[0] * box[1]:
            raise ValueError(
                f"balls cover more than half the box (radius={self.radius!r}, "
                f"num_balls={self.num_balls}, box_size={box}); random placement would stall"
            )
        for name in ("dt", "push_speed"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive finite number, got {value!r}")
        for name in ("gravity", "damping"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value)):
                raise ValueError(f"{name} must be a finite number, got {value!r}")
        if self.damping < 0:
            raise ValueError(f"damping must be >= 0, got {self.damping!r}")
        speeds = tuple(self.speed_range) if not np.isscalar(self.speed_range) else ()
        if len(speeds) != 2 or not 0 <= speeds[0] <= speeds[1] or not math.isfinite(speeds[1]):
            raise ValueError(
                f"speed_range must be (low, high) with 0 <= low <= high, got {self.speed_range!r}"
            )
        if not isinstance(self.max_events_per_step, (int, np.integer)) or (
            self.max_events_per_step < 1
        ):
            raise ValueError(
                f"max_events_per_step must be an int >= 1, got {self.max_events_per_step!r}"
            )
        if self.obs_mode not in OBS_MODES:
            raise ValueError(f"obs_mode must be one of {OBS_MODES}, got {self.obs_mode!r}")
        _positive_pair("image_size", self.image_size, integer=True)
        if not isinstance(self.render_size, (int, np.integer)) or self.render_size < 8:
            raise ValueError(f"render_size must be an int >= 8, got {self.render_size!r}")
        if self.max_steps is not None and (
            not isinstance(self.max_steps, (int, np.integer)) or self.max_steps < 1
        ):
            raise ValueError(f"max_steps must be None or an int >= 1, got {self.max_steps!r}")

    @property
    def box(self) -> tuple[float, float]:
        """(w, h) of the box ``[0, w] x [0, h]``."""
        return _positive_pair("box_size", self.box_size)

    @property
    def image_shape(self) -> tuple[int, int]:
        """(H, W) of the pixels observation."""
        return _positive_pair("image_size", self.image_size, integer=True)

    @property
    def num_actions(self) -> int:
        """``1 + 4 N``: no-op, then a push in +x, -x, +y, -y for each ball."""
        return 1 + 4 * self.num_balls


class BallPhysics:
    """Event-driven elastic collisions of N balls in a box, batched over E environments.

    State layout (structure of arrays, env axis last and contiguous): ``s: [4, N, E]``
    float64 with rows (x, y, vx, vy); ``s[:2]`` are positions, ``s[2:]`` velocities.
    """

    def __init__(self, config: BallsConfig):
        self.config = config
        n = config.num_balls
        self.num_balls = n
        self.radius = _per_ball("radius", config.radius, n)  # [N]
        self.mass = _per_ball("mass", config.mass, n)  # [N]
        box = np.array(config.box, dtype=np.float64)
        # lowest / highest centre coordinate per axis and ball: [2, N, 1]
        self.wall_low = np.stack([self.radius, self.radius])[:, :, None]
        self.wall_high = box[:, None, None] - self.radius[None, :, None]
        self.pair_i, self.pair_j = (a.astype(np.intp) for a in np.triu_indices(n, k=1))  # [P]
        contact = self.radius[self.pair_i] + self.radius[self.pair_j]
        self.contact2 = (contact**2)[:, None]  # [P, 1] squared contact distance
        total = self.mass[self.pair_i] + self.mass[self.pair_j]
        self.coef_i = 2.0 * self.mass[self.pair_j] / total  # [P] impulse share of ball i
        self.coef_j = 2.0 * self.mass[self.pair_i] / total  # [P]
        self.dt = float(config.dt)
        self.gravity_kick = float(config.gravity) * self.dt
        self.damping_factor = math.exp(-float(config.damping) * self.dt)
        self.push = PUSH_DIRECTIONS * float(config.push_speed)  # [4 directions, 2]
        self.num_walls = 2 * n  # wall candidates ``axis * N + ball``: the wall ahead
        self.capped_steps = 0  # env-steps that hit max_events_per_step
        self.wall_events = 0
        self.pair_events = 0

    # ---- state -------------------------------------------------------------------------
    def sample_state(self, rng: np.random.Generator) -> np.ndarray:
        """Random non-overlapping state of one env from ``rng``: float64 [4, N].

        Positions uniform in the box (ball by ball, rejecting overlaps; restart when stuck),
        speeds uniform in ``speed_range``, directions uniform.
        """
        n = self.num_balls
        low, high = self.wall_low[:, :, 0].T, self.wall_high[:, :, 0].T  # [N, 2]
        for _restart in range(1000):
            pos = np.empty((n, 2))
            placed = 0
            for _attempt in range(200 * n):
                candidate = rng.uniform(low[placed], high[placed])
                gap2 = np.sum((pos[:placed] - candidate) ** 2, axis=1)
                if np.all(gap2 >= (self.radius[:placed] + self.radius[placed]) ** 2):
                    pos[placed] = candidate
                    placed += 1
                    if placed == n:
                        speed = rng.uniform(*self.config.speed_range, size=n)
                        angle = rng.uniform(0.0, 2.0 * np.pi, size=n)
                        return np.stack(
                            [pos[:, 0], pos[:, 1], speed * np.cos(angle), speed * np.sin(angle)]
                        )
            # too crowded: start over
        raise RuntimeError(f"could not place {n} non-overlapping balls; lower num_balls/radius")

    def check_state(self, state) -> np.ndarray:
        """Validate user states ``[E, N, 4]`` (x, y, vx, vy): inside the box, no overlap.

        Returns a float64 copy in the physics layout ``[4, N, E]``.
        """
        state = np.asarray(state, dtype=np.float64)
        n = self.num_balls
        if state.ndim != 3 or state.shape[1:] != (n, 4) or not np.all(np.isfinite(state)):
            raise ValueError(f"state must be a finite array [E, {n}, 4], got shape {state.shape}")
        s = np.ascontiguousarray(state.transpose(2, 1, 0))
        if np.any(s[:2] < self.wall_low) or np.any(s[:2] > self.wall_high):
            raise ValueError("state puts a ball (partly) outside the box")
        d = s[:2, self.pair_j] - s[:2, self.pair_i]  # [2, P, E]
        if np.any(d[0] ** 2 + d[1] ** 2 < self.contact2):
            raise ValueError("state has overlapping balls")
        return s

    # ---- dynamics ----------------------------------------------------------------------
    def step(self, s: np.ndarray, actions: np.ndarray | None = None) -> None:
        """Advance every env by ``dt`` in place. s: [4, N, E] float64; actions: [E] int."""
        if actions is not None and actions.any():
            envs = np.flatnonzero(actions)
            ball, direction = np.divmod(actions[envs] - 1, 4)
            s[2, ball, envs] += self.push[direction, 0]
            s[3, ball, envs] += self.push[direction, 1]
        if self.gravity_kick != 0.0:
            s[3] -= self.gravity_kick
        if self.damping_factor != 1.0:
            s[2:] *= self.damping_factor
        self._drift(s)

    def _drift(self, s: np.ndarray) -> None:
        """Free flight for ``dt`` with exact collisions (see module docstring)."""
        dt = self.dt
        moved = s[2:] * dt
        moved += s[:2]  # [2, N, E] positions after a collision-free step
        idx = np.flatnonzero(self._may_collide(s, moved))  # envs with a possible event
        sub = s[:, :, idx]  # [4, N, S] copy
        s[:2] = moved
        if idx.size == 0:
            return
        t_left = np.full(idx.size, dt)
        for event in range(self.config.max_events_per_step + 1):
            t_event, k_event = self.next_event(sub)
            done = t_event >= t_left
            if done.any():
                final = sub[:, :, done]
                final[:2] += final[2:] * t_left[done]
                s[:, :, idx[done]] = final
                if done.all():
                    return
                keep = ~done
                idx, sub, t_left = idx[keep], sub[:, :, keep], t_left[keep]
                t_event, k_event = t_event[keep], k_event[keep]
            if event == self.config.max_events_per_step:
                break
            sub[:2] += sub[2:] * t_event
            t_left -= t_event
            self._resolve(sub, k_event)
        # cap reached: keep the valid state reached so far, drop the rest of this step
        s[:, :, idx] = sub
        self.capped_steps += idx.size

    def _may_collide(self, s: np.ndarray, moved: np.ndarray) -> np.ndarray:
        """[E] bool: could a contact happen within ``dt``? Never misses one (up to round-off).

        Walls: the collision-free end position ``moved [2, N, E]`` leaves the box. Pairs: the
        minimum over ``t in [0, dt]`` of ``|d + u t|^2 - contact^2 = c + 2 b t + uu t^2`` is < 0.
        """
        out = (moved < self.wall_low) | (moved > self.wall_high)  # [2, N, E]
        hit = out.reshape(-1, out.shape[-1]).any(axis=0)
        if self.pair_i.size:
            dt = self.dt
            d = s[:2, self.pair_j] - s[:2, self.pair_i]  # [2, P, E]
            u = s[2:, self.pair_j] - s[2:, self.pair_i]
            b = d[0] * u[0] + d[1] * u[1]  # [P, E], < 0 when approaching
            uu = u[0] * u[0] + u[1] * u[1]
            c = d[0] * d[0] + d[1] * d[1] - self.contact2
            end = c + dt * (2.0 * b + uu * dt)  # value at t = dt
            vertex_inside = -b < uu * dt  # minimum of the parabola before dt
            pair_hit = (b < 0) & ((end < 0) | (vertex_inside & (c * uu < b * b)))
            hit |= pair_hit.any(axis=0)
        return hit

    def next_event(self, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Earliest contact per env of ``s [4, N, S]``: time ``[S] >= 0`` (inf when none) and
        candidate ``[S]``: ``axis * N + ball`` for walls (the wall ahead), ``2N + pair`` for pairs.
        """
        count = s.shape[-1]
        pos, vel = s[:2], s[2:]
        times = np.full((self.num_walls + self.pair_i.size, count), np.inf)  # [2N + P, S]
        ahead = np.where(vel > 0, self.wall_high, self.wall_low)  # [2, N, S]
        ahead -= pos
        np.divide(ahead, vel, out=times[: self.num_walls].reshape(pos.shape), where=vel != 0)
        if self.pair_i.size:
            d = pos[:, self.pair_j] - pos[:, self.pair_i]  # [2, P, S]
            u = vel[:, self.pair_j] - vel[:, self.pair_i]
            b = d[0] * u[0] + d[1] * u[1]  # < 0 when approaching
            uu = u[0] * u[0] + u[1] * u[1]
            c = d[0] * d[0] + d[1] * d[1] - self.contact2  # >= 0 when not overlapping
            disc = b * b - uu * c
            approaching = (b < 0) & (disc >= 0)
            root = np.sqrt(np.maximum(disc, 0.0))
            root -= b  # > 0 where approaching; c / root is the stable form of the first root
            np.divide(c, root, out=times[self.num_walls :], where=approaching)
        k = times.argmin(axis=0)
        t = times[k, np.arange(count)]
        np.maximum(t, 0.0, out=t)  # round-off may put a contact slightly in the past
        return t, k

    def _resolve(self, s: np.ndarray, k: np.ndarray) -> None:
        """Apply the contact ``k [S]`` of each env to ``s [4, N, S]`` in place."""
        wall = k < self.num_walls
        if wall.any():
            envs = np.flatnonzero(wall)
            axis, ball = np.divmod(k[envs], self.num_balls)
            before = s[2 + axis, ball, envs]
            s[2 + axis, ball, envs] = -before
            s[axis, ball, envs] = np.where(
                before > 0, self.wall_high[axis, ball, 0], self.wall_low[axis, ball, 0]
            )  # exactly on the wall it hit
            self.wall_events += envs.size
        if not wall.all():
            envs = np.flatnonzero(~wall)
            pair = k[envs] - self.num_walls
            i, j = self.pair_i[pair], self.pair_j[pair]
            pos_i, pos_j = s[:2, i, envs], s[:2, j, envs]  # [2, Q]
            vel_i, vel_j = s[2:, i, envs], s[2:, j, envs]
            d = pos_j - pos_i  # from i to j
            u = vel_j - vel_i
            scale = (d[0] * u[0] + d[1] * u[1]) / (d[0] * d[0] + d[1] * d[1])  # (u.d)/|d|^2 < 0
            vel_i += (self.coef_i[pair] * scale) * d
            vel_j -= (self.coef_j[pair] * scale) * d
            s[2:, i, envs], s[2:, j, envs] = vel_i, vel_j
            self.pair_events += envs.size

    # ---- observables -------------------------------------------------------------------
    def kinetic_energy(self, s: np.ndarray) -> np.ndarray:
        """s [4, N, E] -> [E] total kinetic energy."""
        return 0.5 * np.sum(self.mass[:, None] * (s[2] ** 2 + s[3] ** 2), axis=0)

    def momentum(self, s: np.ndarray) -> np.ndarray:
        """s [4, N, E] -> [2, E] total momentum."""
        return np.sum(self.mass[:, None] * s[2:], axis=1)


def state_array(s: np.ndarray) -> np.ndarray:
    """Physics layout ``s [4, N, E]`` -> float32 observations ``[E, N, 4]`` of (x, y, vx, vy)."""
    return np.ascontiguousarray(s.transpose(2, 1, 0), dtype=np.float32)
