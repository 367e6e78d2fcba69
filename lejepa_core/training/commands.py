"""``lejepa run`` and ``lejepa eval`` (added to the CLI group by ``lejepa_core.cli``).

Domain errors are raised, never printed: the group maps them to exit codes.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from lejepa_core.errors import CheckpointError, Interrupted, UserInputError


def _summary_table(result) -> None:
    from rich.console import Console
    from rich.table import Table

    s = result.summary
    val = s.get("final_validation") or {}
    table = Table(title=f"run {result.status}: {result.run_dir}")
    table.add_column("figure")
    table.add_column("value", justify="right")
    rows = [
        ("steps", f"{s['step']} / {s['total_steps']}"),
        ("epochs completed", str(s["epochs_completed"])),
        (
            f"best validation {s['monitor']}",
            "n/a" if s["best_val"] is None else f"{s['best_val']:.4f} (epoch {s['best_epoch']})",
        ),
        ("err/signal (all k)", _fmt(val.get("err_signal"))),
        ("  copy-last baseline", _fmt(val.get("baseline/copy_last/err_signal"))),
    ]
    horizons = sorted(int(k.rsplit("/k", 1)[1]) for k in val if k.startswith("err_signal/k"))
    for h in horizons:
        rows.append(
            (
                f"err/signal k={h} (copy-last)",
                f"{_fmt(val.get(f'err_signal/k{h}'))} ({_fmt(val.get(f'baseline/copy_last/err_signal/k{h}'))})",
            )
        )
    rows += [
        (
            "effective rank target / context",
            f"{_fmt(val.get('rank/target'), 1)} / {_fmt(val.get('rank/context'), 1)}",
        ),
        ("non-finite steps skipped", str(s["nonfinite_steps"])),
        ("clip fraction", f"{s['clip_fraction']:.3f}"),
        ("samples/s", f"{s['samples_per_s']:.0f}"),
        ("wall time", f"{s['wall_seconds']:.1f} s"),
    ]
    for row in rows:
        table.add_row(*row)
    Console(stderr=False).print(table)


def _fmt(value, digits: int = 4) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


@click.command("run")
@click.argument("recipe", required=False, type=click.Path(dir_okay=False))
@click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="KEY.PATH=VALUE",
    help="Override a recipe field (repeatable), e.g. --set train.lr=3e-4.",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False),
    help="Run directory (default: <log.runs_dir>/<recipe>-<YYYYmmdd-HHMMSS>).",
)
@click.option(
    "--resume",
    "resume",
    type=click.Path(file_okay=False),
    help="Continue the run in this directory from checkpoints/last.pt.",
)
@click.option(
    "--device", help="cpu, cuda, cuda:1, ... (default: the recipe's train.device, 'auto')."
)
@click.option(
    "--nproc",
    type=int,
    default=1,
    show_default=True,
    help="Processes on this machine (launches torchrun; DDP).",
)
@click.option(
    "--nnodes",
    type=int,
    default=1,
    show_default=True,
    help="Machines of a multi-node run (run the same command on each; needs --rdzv-endpoint).",
)
@click.option("--rdzv-endpoint", help="HOST:PORT of one node, the same on every node (c10d).")
@click.option("--rdzv-id", default="lejepa", show_default=True, help="Rendezvous id of the run.")
@click.option("--node-rank", type=int, help="This node's rank (optional with c10d).")
@click.option(
    "--compile/--no-compile",
    "compile_",
    default=None,
    help="torch.compile the encoders and predictor.  [default: the recipe's train.compile, "
    "false unless set]",
)
@click.option("--report", is_flag=True, help="Write the HTML report of the run when it ends.")
@click.option(
    "--force",
    is_flag=True,
    help="Write into a non-empty --out directory that holds no run (its metrics.jsonl, "
    "summary.json and eval.json are replaced).",
)
def run_command(
    recipe,
    overrides,
    out,
    resume,
    device,
    nproc,
    nnodes,
    rdzv_endpoint,
    rdzv_id,
    node_rank,
    compile_,
    report,
    force,
) -> None:
    """Train RECIPE (a TOML file); with --resume RUN_DIR continue an interrupted run.

    Exit codes: 0 finished (or stopped early); 2 bad input (recipe, flags, data file,
    checkpoint, a run directory in use or not empty); 1 a failure while training (non-finite
    losses, a full disk); 130 / 143 interrupted by SIGINT / SIGTERM after saving last.pt.
    """
    from lejepa_core.recipe import load_recipe

    if nproc < 1:
        raise UserInputError(f"--nproc: expected >= 1, got {nproc}")
    if recipe is None and resume is None:
        raise UserInputError("give a RECIPE to train, or --resume RUN_DIR to continue a run")
    if resume is not None:
        resolved = Path(resume) / "resolved_recipe.toml"
        if not resolved.is_file():
            raise CheckpointError(f"{resume}: not a run directory (no resolved_recipe.toml)")
        loaded = load_recipe(resolved, overrides)
        if recipe is not None:
            given = load_recipe(recipe, overrides)
            if given.hash() != loaded.hash():
                raise CheckpointError(
                    f"{recipe} differs from the recipe of {resume}; omit RECIPE to resume with the run's own recipe (--set still applies)"
                )
            loaded = given
    else:
        loaded = load_recipe(recipe, overrides)

    if nnodes < 1:
        raise UserInputError(f"--nnodes: expected >= 1, got {nnodes}")
    if nnodes > 1 and resume is None and out is None:
        raise UserInputError(
            f"--nnodes {nnodes}: give --out (a path on a filesystem all nodes share): the "
            "default run directory is named by each node's clock"
        )
    if nproc > 1 or nnodes > 1 or rdzv_endpoint is not None:
        from lejepa_core.training import distributed
        from lejepa_core.training.run_dir import default_run_dir

        rendezvous = distributed.Rendezvous(
            nnodes=nnodes, endpoint=rdzv_endpoint, run_id=rdzv_id, node_rank=node_rank
        )
        rendezvous.torchrun_args()  # a missing endpoint is bad input before anything starts
        if resume is None and out is None:
            out = str(default_run_dir(loaded))  # created by rank 0
        args = ["run"] + ([recipe] if recipe else []) + [a for o in overrides for a in ("--set", o)]
        args += ["--resume", resume] if resume else ["--out", out]
        args += ["--force"] if force else []
        args += ["--device", device] if device else []
        args += [] if compile_ is None else ["--compile" if compile_ else "--no-compile"]
        code = distributed.launch(nproc, args, rendezvous)
        if code != 0:
            sys.exit(code)
        run_dir = Path(resume or out)
    else:
        from lejepa_core.training.loop import train

        result = train(loaded, out=out, resume=resume, device=device, compile=compile_, force=force)
        from lejepa_core.training.distributed import env_info

        if not env_info().is_main:
            return
        _summary_table(result)
        run_dir = result.run_dir
        if result.signal and not env_info().enabled:  # under torchrun: its launcher decides
            code = 130 if result.signal == "SIGINT" else 143
            raise Interrupted(
                f"interrupted by {result.signal} at step {result.step}; checkpoints/last.pt "
                f"saved; continue with: lejepa run --resume {run_dir}",
                exit_code=code,
            )
    if report:
        from lejepa_core.report.page import write_report

        write_report(run_dir)


@click.command("eval")
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.option(
    "--checkpoint",
    type=click.Choice(["best", "last"]),
    default="best",
    show_default=True,
    help="Which checkpoint to evaluate.",
)
@click.option("--device", help="cpu, cuda, ... (default: auto).")
@click.option(
    "--batches",
    type=int,
    default=16,
    show_default=True,
    help="Batches of samples for fitting and for evaluating the probe.",
)
@click.option(
    "--held-out",
    type=click.Path(dir_okay=False),
    default=None,
    help="Also score each episode of this data file (e.g. ARC evaluation tasks) at its last "
    "allowed target; writes RUN_DIR/eval_tasks.json (docs/training.md).",
)
def eval_command(run_dir, checkpoint, device, batches, held_out) -> None:
    """Probe a trained run: latent -> physical state R^2, decoded predictions per k against
    physics baselines; writes RUN_DIR/eval.json."""
    from lejepa_core.eval.evaluate import evaluate_run, print_eval

    result = evaluate_run(run_dir, checkpoint=checkpoint, device=device, batches=batches)
    print_eval(result)
    if held_out is not None:
        from lejepa_core.eval.load import load_run
        from lejepa_core.eval.tasks import evaluate_held_out, print_held_out

        run = load_run(run_dir, checkpoint=checkpoint, device=device)
        try:
            print_held_out(evaluate_held_out(run, held_out))
        finally:
            run.data.close()
