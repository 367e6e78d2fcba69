"""DDP on CPU (gloo): validation sharded over ranks gives the one-process figures.

The multi-process tests are ``slow`` (two spawned processes each import torch and lejepa).
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

import pytest
import torch

from lejepa_core.data.prepare import open_data
from lejepa_core.recipe import load_recipe
from lejepa_core.training import distributed
from lejepa_core.training.run import build_run, build_samplers, split_batch
from lejepa_core.training.validate import validate
from tests.conftest import become_rank, finish_rank, free_port, write_tiny_recipe

# 23 windows in batches of 8: 8, 8, 7 -> shards of 4/4, 4/4, 4/3 (uneven on purpose)
VALIDATION_OVERRIDES = ["train.batch_size=8", "train.val_windows=23"]


def _validation_figures(recipe_path: str, info: distributed.DistInfo) -> dict[str, float]:
    recipe = load_recipe(recipe_path, VALIDATION_OVERRIDES)
    device = torch.device("cpu")
    data = open_data(recipe, device, is_main=info.is_main, progress=False)
    _, batches = build_samplers(recipe, data, device, info)
    run = build_run(recipe, data, device, info)
    return validate(run, batches)


def _validation_worker(rank: int, world_size: int, port: int, recipe_path: str, out: str):
    become_rank(rank, world_size, port)
    with distributed.process_group(torch.device("cpu")) as info:
        figures = _validation_figures(recipe_path, info)
        distributed.barrier()  # no rank tears the group down while another still uses it
    (Path(out) / f"rank{rank}.json").write_text(json.dumps(figures))
    finish_rank()


def _spawn(worker, nprocs: int, *args, timeout: float = 120) -> None:
    context = torch.multiprocessing.start_processes(
        worker, args=(nprocs, free_port(), *args), nprocs=nprocs, join=False, start_method="spawn"
    )
    deadline = time.monotonic() + timeout
    while not context.join(timeout=1):
        if time.monotonic() > deadline:
            for process in context.processes:
                process.kill()
                process.join()
            pytest.fail("the ranks did not finish (a DDP hang)")


def test_shards_of_a_batch_are_contiguous_and_cover_it(tiny_data, tmp_path):
    recipe = load_recipe(write_tiny_recipe(tmp_path, tiny_data), VALIDATION_OVERRIDES)
    data = open_data(recipe, torch.device("cpu"), is_main=True, progress=False)
    _, batches = build_samplers(recipe, data, torch.device("cpu"))
    assert [b.k.shape[0] for b in batches] == [8, 8, 7]
    for batch in batches:
        shards = [distributed.shard_rows(batch, rank, 2) for rank in (0, 1)]
        assert torch.equal(torch.cat([s.context_obs for s in shards]), batch.context_obs)
        assert torch.equal(torch.cat([s.k for s in shards]), batch.k)
    (whole,) = split_batch(batches[0], 8)
    assert torch.equal(whole.k, batches[0].k)


def test_a_last_batch_smaller_than_the_world_size_is_refused(tiny_data, tmp_path):
    from lejepa_core.errors import UserInputError

    recipe = load_recipe(
        write_tiny_recipe(tmp_path, tiny_data), ["train.batch_size=8", "train.val_windows=17"]
    )
    data = open_data(recipe, torch.device("cpu"), is_main=True, progress=False)
    info = distributed.DistInfo(rank=0, world_size=2, local_rank=0)
    with pytest.raises(UserInputError, match="val_windows 17"):
        build_samplers(recipe, data, torch.device("cpu"), info)


@pytest.mark.slow
def test_validation_figures_of_two_ranks_equal_one_process(tiny_data, tmp_path):
    """SIGReg is in the tiny recipe: before sharding, 2 ranks fed the same batches and its
    all-reduce counted them twice (16.4 with 1 process, 32.9 with 2)."""
    recipe_path = str(write_tiny_recipe(tmp_path, tiny_data))
    single = _validation_figures(recipe_path, distributed.DistInfo())
    _spawn(_validation_worker, 2, recipe_path, str(tmp_path))
    for rank in (0, 1):
        figures = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert figures.keys() == single.keys()
        for key, value in single.items():
            assert figures[key] == pytest.approx(value, rel=1e-4, abs=1e-6), key
    assert "loss/sigreg" in single


def _barrier_worker(rank: int, world_size: int, port: int, out: str):
    become_rank(rank, world_size, port)

    def refuse(*args, **kwargs):
        raise AssertionError("distributed.barrier called torch.distributed.barrier")

    torch.distributed.barrier = refuse  # a gloo barrier's work can abort a rank at exit
    with distributed.process_group(torch.device("cpu")):
        for round_ in range(3):
            if rank == 0:
                time.sleep(0.3)
                (Path(out) / f"round{round_}").write_text("written")
            distributed.barrier()
            seen = (Path(out) / f"round{round_}").is_file()
            (Path(out) / f"rank{rank}-round{round_}.json").write_text(json.dumps(seen))
    finish_rank()


def test_barrier_holds_every_rank_until_the_slowest_arrives(tmp_path):
    """Three barriers in a row (a key count each, in the group's store): rank 1 passes
    none of them before rank 0, 0.3 s late each time, has written its file."""
    _spawn(_barrier_worker, 2, str(tmp_path))
    for round_ in range(3):
        for rank in (0, 1):
            assert json.loads((tmp_path / f"rank{rank}-round{round_}.json").read_text())


# ----------------------------------------------------------------------------- launching
def test_torchrun_command_is_standalone_on_one_node_and_c10d_across_nodes():
    command = distributed.torchrun_command(2, ["run", "r.toml"])
    assert command[1:] == [
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node=2",
        "-m",
        "lejepa_core.cli",
        "run",
        "r.toml",
    ]
    rendezvous = distributed.Rendezvous(nnodes=2, endpoint="node0:29400", run_id="x", node_rank=1)
    command = distributed.torchrun_command(4, ["run"], rendezvous)
    assert command[3:9] == [
        "--nnodes=2",
        "--rdzv-backend=c10d",
        "--rdzv-endpoint=node0:29400",
        "--rdzv-id=x",
        "--node-rank=1",
        "--nproc-per-node=4",
    ]


def test_multi_node_runs_need_an_endpoint_and_an_out_directory(tiny_data, tmp_path):
    from click.testing import CliRunner

    from lejepa_core.cli import main

    recipe = str(write_tiny_recipe(tmp_path, tiny_data))
    no_out = CliRunner().invoke(main, ["run", recipe, "--nnodes", "2", "--rdzv-endpoint", "h:1"])
    assert no_out.exit_code == 2 and "--out" in no_out.output
    out = str(tmp_path / "run")
    no_endpoint = CliRunner().invoke(main, ["run", recipe, "--nnodes", "2", "--out", out])
    assert no_endpoint.exit_code == 2 and "--rdzv-endpoint" in no_endpoint.output


@pytest.mark.parametrize(
    ("rank", "local_rank", "generates"), [(0, 0, True), (2, 0, True), (1, 1, False)]
)
def test_missing_data_is_generated_on_every_nodes_local_rank_0(
    monkeypatch, tmp_path, tiny_data, rank, local_rank, generates
):
    from lejepa_core.data import prepare

    class Generated(Exception):
        pass

    def fake_generate(*args, **kwargs):
        raise Generated

    recipe = load_recipe(
        write_tiny_recipe(tmp_path, tiny_data), [f"data.path={tmp_path / 'missing.h5'}"]
    )
    monkeypatch.setenv("RANK", str(rank))
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", str(local_rank))
    monkeypatch.setattr(prepare, "generate_dataset", fake_generate)
    monkeypatch.setattr(distributed, "barrier", lambda: None)
    expected = Generated if generates else Exception  # not generated: opening fails
    with pytest.raises(expected) as caught:
        prepare.open_data(recipe, torch.device("cpu"), is_main=rank == 0, progress=False)
    assert isinstance(caught.value, Generated) == generates


# ----------------------------------------------------------------------------- InfoNCE gather
def _infonce(gather: bool, symmetric: bool):
    from lejepa_plugins.losses import InfoNCELoss
    from tests.test_losses import build

    return build(InfoNCELoss, gather=gather, symmetric=symmetric)


def _outputs(prediction, target):
    from tests.test_losses import outputs

    return outputs(prediction=prediction, target=target)


def _infonce_inputs():
    generator = torch.Generator().manual_seed(70)
    prediction = torch.randn(8, 5, generator=generator)
    return prediction, prediction + 0.3 * torch.randn(8, 5, generator=generator)


def _infonce_worker(rank: int, world_size: int, port: int, out: str):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world_size)
    prediction, target = (z.chunk(world_size)[rank] for z in _infonce_inputs())
    prediction.requires_grad_(True)
    figures = {}
    for symmetric in (False, True):
        loss = _infonce(True, symmetric)
        result = loss(_outputs(prediction, target))
        result.value.backward()
        figures[str(symmetric)] = [result.value.item(), float(result.metrics["chance_level"])]
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()
    (Path(out) / f"infonce{rank}.json").write_text(json.dumps(figures))
    finish_rank()


@pytest.mark.slow
def test_gathered_infonce_on_two_ranks_averages_to_the_whole_batch_loss(tmp_path):
    prediction, target = _infonce_inputs()
    _spawn(_infonce_worker, 2, str(tmp_path))
    ranks = [json.loads((tmp_path / f"infonce{r}.json").read_text()) for r in (0, 1)]
    for symmetric in (False, True):
        whole = _infonce(False, symmetric)(_outputs(prediction, target))
        values = [rank[str(symmetric)][0] for rank in ranks]
        assert sum(values) / 2 == pytest.approx(whole.value.item(), rel=1e-5)
        assert all(rank[str(symmetric)][1] == pytest.approx(math.log(8)) for rank in ranks)


def test_gather_without_a_process_group_changes_nothing():
    prediction, target = _infonce_inputs()
    for symmetric in (False, True):
        outputs = _outputs(prediction, target)
        plain = _infonce(False, symmetric)(outputs)
        gathered = _infonce(True, symmetric)(outputs)
        assert gathered.value.item() == plain.value.item()


@pytest.mark.slow  # torchrun, two processes
def test_accumulation_under_ddp_trains_to_the_end(tmp_path, tiny_data):
    """train.accumulate = 2 with --nproc 2: no_sync on the first micro-batch, the all-reduce on
    the second; every rank finishes (no collective left waiting)."""
    import subprocess
    import sys

    recipe = write_tiny_recipe(tmp_path, tiny_data)
    out = tmp_path / "run"
    command = [sys.executable, "-m", "lejepa_core.cli", "run", str(recipe), "--nproc", "2"]
    command += ["--out", str(out), "--device", "cpu", "--set", "train.epochs=1"]
    command += ["--set", "train.accumulate=2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["status"] == "finished"


@pytest.mark.slow  # two launchers, one process each, meeting at a c10d rendezvous
def test_two_nodes_on_one_machine_rendezvous_and_finish(tmp_path, tiny_data):
    """``--nnodes 2 --rdzv-endpoint``: two "nodes" (two launchers on this machine) train one
    run together; rank 0 writes the run directory."""
    import subprocess
    import sys

    recipe = write_tiny_recipe(tmp_path, tiny_data)
    out = tmp_path / "run"
    command = [sys.executable, "-m", "lejepa_core.cli", "run", str(recipe), "--nproc", "1"]
    command += ["--nnodes", "2", "--rdzv-endpoint", f"127.0.0.1:{free_port()}"]
    command += ["--rdzv-id", "test", "--out", str(out), "--device", "cpu"]
    command += ["--set", "train.epochs=1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    nodes = [
        subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        for _ in range(2)
    ]
    try:
        outputs = [node.communicate(timeout=120)[0].decode() for node in nodes]
    finally:
        for node in nodes:
            node.kill()
    assert [node.returncode for node in nodes] == [0, 0], "\n".join(o[-3000:] for o in outputs)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["status"] == "finished"
