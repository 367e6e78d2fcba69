"""``lejepa generate``, ``lejepa convert`` and ``lejepa inspect`` (added to the group by cli.py).

The commands raise ``UserInputError``/``DatasetError`` (exit code 2) and ``StorageError`` (a
full disk: exit code 1); the ``lejepa`` group turns them into one ``Error: ...`` line. An
existing ``--out`` is replaced only with ``--force`` (``--overwrite``).
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from lejepa_core.errors import UserInputError
from lejepa_core.files import destination

FORCE_HELP = "Replace --out when it exists (by default an existing file is never replaced)."


def _check_out(out: Path, force: bool) -> None:
    """``--out`` may be replaced only with ``--force``; a link that does not resolve never."""
    if destination(out).exists() and not force:
        raise UserInputError(f"--out {out}: the file exists; pass --force to replace it")


def _parse_kwargs(value: str | None) -> dict:
    if not value:
        return {}
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError as exc:
        raise UserInputError(f"--env-kwargs is not valid JSON: {exc}") from None
    if not isinstance(parsed, dict):
        raise UserInputError(f"--env-kwargs must be a JSON object, got {value!r}")
    return parsed


@click.command("generate")
@click.argument("env_id")
@click.option(
    "--episodes",
    type=click.IntRange(min=1),
    default=None,
    help="Number of episodes (required, except with --order sweep: default every episode).",
)
@click.option(
    "--steps",
    type=click.IntRange(min=1),
    required=True,
    help="Observations per episode (fewer when the env ends an episode first).",
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="HDF5 file to write (atomically); its directory is created when missing.",
)
@click.option(
    "--seed",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Run seed; episode i is seeded from (seed, i).",
)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Processes; the data does not depend on it.",
)
@click.option(
    "--env-kwargs",
    default=None,
    help="JSON object of env keyword arguments, e.g. '{\"num_balls\": 3}'.",
)
@click.option(
    "--policy",
    type=click.Choice(["auto", "random", "noop"]),
    default="auto",
    show_default=True,
    help="Random actions (seeded), the env's no-op action, or auto: the no-op where the env "
    "publishes one (metadata['noop_action']: passive dynamics), else random.",
)
@click.option(
    "--compression",
    type=click.Choice(["auto", "lzf", "gzip", "none"]),
    default="auto",
    show_default=True,
    help="Lossless compression; auto: lzf except for float observations/states (raw, for speed).",
)
@click.option(
    "--order",
    type=click.Choice(["seeded", "sweep"]),
    default="seeded",
    show_default=True,
    help="seeded: each episode reset with its seed; sweep: episode i reset with "
    "options={'episode': i}, every episode the env enumerates (metadata['episode_count']) once.",
)
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.option("--force", "--overwrite", "force", is_flag=True, help=FORCE_HELP)
def generate_command(
    env_id,
    episodes,
    steps,
    out,
    seed,
    workers,
    env_kwargs,
    policy,
    compression,
    order,
    quiet,
    force,
):
    """Roll out ENV_ID (any registered gymnasium id) and write a trajectory file."""
    from lejepa_core.data.generate import generate_dataset

    _check_out(out, force)
    path = generate_dataset(
        env_id,
        episodes=episodes,
        steps=steps,
        out=out,
        seed=seed,
        workers=workers,
        env_kwargs=_parse_kwargs(env_kwargs),
        policy=policy,
        compression=compression,
        progress=not quiet,
        order=order,
    )
    click.echo(f"wrote {path}")


@click.command("convert")
@click.argument("minari_dir", type=click.Path(path_type=Path))
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="HDF5 file to write (atomically); its directory is created when missing.",
)
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.option("--force", "--overwrite", "force", is_flag=True, help=FORCE_HELP)
def convert_command(minari_dir, out, quiet, force):
    """Import a Minari dataset directory (HDF5 storage) into lejepa's format."""
    from lejepa_core.data.convert import convert_minari

    _check_out(out, force)
    path = convert_minari(minari_dir, out=out, progress=not quiet)
    click.echo(f"wrote {path}")


@click.command("inspect")
@click.argument("file", type=click.Path(path_type=Path))
@click.option(
    "--val-fraction",
    type=click.FloatRange(0, 1, max_open=True),
    default=0.1,
    show_default=True,
    help="Fraction of episodes held out for validation (a recipe's data.val_fraction).",
)
@click.option(
    "--split-seed",
    type=int,
    default=0,
    show_default=True,
    help="Seed of the train/validation episode split (a recipe's data.split_seed).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the information as JSON.")
def inspect_command(file, val_fraction, split_seed, as_json):
    """Validate FILE and print its env, sizes, statistics and train/validation split."""
    from lejepa_core.data.reader import inspect_dataset

    info = inspect_dataset(file, val_fraction=val_fraction, split_seed=split_seed)
    if as_json:
        click.echo(json.dumps(info, indent=2, default=str))
        return
    _print_info(info)


def _print_info(info: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(highlight=False)
    lengths = info["episode_length"]
    split = info["split"]
    console.print(f"[bold]{info['path']}[/bold]  ({info['file_bytes'] / 2**20:.1f} MiB)")
    console.print(f"env          {info['env_id'] or '?'}")
    console.print(f"env kwargs   {json.dumps(info['env_kwargs'])}")
    console.print(
        f"episodes     {info['episodes']}  (length min {lengths['min']}, mean {lengths['mean']:.1f}, max {lengths['max']})"
    )
    console.print(f"total steps  {info['total_steps']}")
    console.print(
        f"split        train {split['train_episodes']} episodes ({split['train_steps']} steps), "
        f"val {split['val_episodes']} episodes ({split['val_steps']} steps)  "
        f"[val_fraction {split['val_fraction']}, seed {split['seed']}]"
    )
    if info.get("episode_keys"):
        keys = ", ".join(f"{name} ({n} distinct)" for name, n in info["episode_keys"].items())
        console.print(f"episode keys {keys}")
    arrays = Table(title="arrays")
    for column in ("dataset", "shape", "dtype", "compression"):
        arrays.add_column(column)
    for name, d in info["datasets"].items():
        arrays.add_row("/" + name, str(d["shape"]), d["dtype"], str(d["compression"] or "-"))
    console.print(arrays)
    stats = info["stats"]
    table = Table(
        title="observation statistics"
        + (" (per feature)" if isinstance(stats["mean"], list) else " (all elements)")
    )
    for column in ("feature", "mean", "std", "min", "max"):
        table.add_column(column, justify="right" if column != "feature" else "left")
    if isinstance(stats["mean"], list):
        names = info["feature_names"] or [str(i) for i in range(len(stats["mean"]))]
        for i, name in enumerate(names):
            table.add_row(name, *(f"{stats[key][i]:.4g}" for key in ("mean", "std", "min", "max")))
    else:
        table.add_row("(all)", *(f"{stats[key]:.4g}" for key in ("mean", "std", "min", "max")))
    console.print(table)


@click.command("export")
@click.argument("source", metavar="RUN_OR_H5", type=click.Path(path_type=Path))
@click.option(
    "--minari",
    "minari_format",
    is_flag=True,
    help="Write a Minari dataset (the one export format; required).",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="New dataset directory; minari.load_dataset(ID) finds it at $MINARI_DATASETS_PATH/ID.",
)
@click.option(
    "--dataset-id",
    default=None,
    help="Minari id (namespace/)name-vN; default: --out relative to the Minari root, "
    "else lejepa/<--out name>-v0.",
)
@click.option("--quiet", is_flag=True, help="No progress bar.")
def export_command(source, minari_format, out, dataset_id, quiet):
    """Export a trajectory file (or a run directory's data file) as a Minari dataset."""
    if not minari_format:
        raise UserInputError("say which format to export: --minari (the only one)")
    from lejepa_core.data.export import export_minari

    path = export_minari(source, out=out, dataset_id=dataset_id, progress=not quiet)
    click.echo(f"wrote {path}")
