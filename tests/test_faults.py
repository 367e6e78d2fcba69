"""Faults and bad input (issue 13): every case exits 2 (bad input) or 1 (failure) with one
``Error: ...`` line naming the file, key or value, no traceback, nothing left behind and
nothing existing changed; an interrupted run exits 130 / 143 after saving."""
# ruff: noqa: F811  (the shared tiny_data fixture is requested by name)

from __future__ import annotations

import errno
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import attrs
import pytest
import torch
from click.testing import CliRunner

from lejepa_core import Loss, LossOutput, hookimpl
from lejepa_core.cli import main
from lejepa_core.params import param
from lejepa_core.training import checkpoint as ckpt
from lejepa_core.training.loop import train
from lejepa_core.training.run_dir import RunLock
from tests.conftest import tiny_recipe, write_tiny_recipe

REPO = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------- helpers
def cli(*args, env=None):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False, env=env)


def error_line(result, code: int, *expected: str) -> str:
    """Assert exit ``code``, no traceback, and that stderr's last line is the one ``Error:``
    line holding every ``expected`` text (stderr has nothing else unless a warning came
    first); returns that line."""
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert lines and lines[-1].startswith("Error: "), result.output
    assert all(not line.startswith("Error") for line in lines[:-1]), result.stderr
    for text in expected:
        assert text in lines[-1], lines[-1]
    return lines[-1]


def listing(path: Path) -> dict[str, bytes | None]:
    """Every file under ``path`` (relative name -> bytes; None for directories)."""
    return {
        str(p.relative_to(path)): (p.read_bytes() if p.is_file() else None)
        for p in sorted(path.rglob("*"))
    }


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, tiny_data):
    """A finished one-epoch run (copy it before changing anything)."""
    root = tmp_path_factory.mktemp("finished")
    recipe = tiny_recipe(root, tiny_data, ("train.epochs=1",))
    train(recipe, out=root / "run")
    return root / "run"


@pytest.fixture
def run_copy(tmp_path, finished_run):
    shutil.copytree(finished_run, tmp_path / "run")
    return tmp_path / "run"


@pytest.fixture
def recipe(tmp_path, tiny_data):
    return write_tiny_recipe(tmp_path, tiny_data)


# ------------------------------------------------------------- 1. checkpoint integrity
def _damage_middle(path: Path) -> None:
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 4096] = os.urandom(min(4096, len(data) - middle))
    path.write_bytes(bytes(data))


def test_damaged_checkpoints_are_refused_by_eval_and_resume(run_copy):
    for name in ("last.pt", "best.pt"):
        _damage_middle(run_copy / "checkpoints" / name)
    before = listing(run_copy)
    line = error_line(cli("eval", run_copy, "--device", "cpu"), 2, "best.pt")
    assert "damaged" in line or "cannot read checkpoint" in line
    error_line(cli("run", "--resume", run_copy, "--device", "cpu"), 2, "last.pt")
    after = listing(run_copy)
    assert after.pop(".lock", None) is not None  # the resume locked it; nothing else changed
    before.pop(".lock", None)
    assert after == before


def test_a_changed_tensor_fails_the_digest(tmp_path):
    path = tmp_path / "last.pt"
    ckpt.save_atomic({"format_version": ckpt.FORMAT_VERSION, "w": torch.ones(4)}, path)
    state = torch.load(path, weights_only=True)
    state["w"][2] = 5.0  # a flipped value, the digest kept: what a damaged sector looks like
    torch.save(state, path)
    with pytest.raises(Exception, match="damaged checkpoint: its contents do not match"):
        ckpt.load_checkpoint(path)


def test_non_finite_tensors_in_a_checkpoint_are_refused(tmp_path):
    path = tmp_path / "last.pt"
    w = torch.tensor([1.0, float("nan")])
    ckpt.save_atomic({"format_version": ckpt.FORMAT_VERSION, "model": {"w": w}}, path)
    with pytest.raises(Exception, match=r"damaged checkpoint: model\.w holds NaN or inf"):
        ckpt.load_checkpoint(path)


class Payload:
    """Stands for a malicious pickled object (never unpickled: weights_only)."""


def test_a_pickled_object_is_one_line(run_copy):
    torch.save({"format_version": 2, "model": Payload()}, run_copy / "checkpoints" / "best.pt")
    error_line(cli("eval", run_copy, "--device", "cpu"), 2, "best.pt", "weights_only")


def test_a_checkpoint_of_another_model_is_one_line(tmp_path, run_copy, tiny_data):
    other = tiny_recipe(tmp_path, tiny_data, ("train.epochs=1", "encoder.hidden_dim=32"))
    train(other, out=tmp_path / "other")
    for name in ("last.pt", "best.pt"):
        shutil.copy(tmp_path / "other" / "checkpoints" / name, run_copy / "checkpoints" / name)
    error_line(cli("eval", run_copy, "--device", "cpu"), 2, "best.pt")
    result = cli("run", "--resume", run_copy, "--device", "cpu")
    line = error_line(result, 2, "last.pt")
    assert "another model" in line and "shape of" in line
    assert result.stderr.strip() == line  # no warning line before it


# ---------------------------------------------------------- 2. data.path links
@pytest.mark.parametrize("kind", ["dangling", "loop"])
def test_a_data_path_link_that_does_not_resolve_is_never_replaced(tmp_path, recipe, kind):
    link = tmp_path / "data.h5"
    if kind == "dangling":
        link.symlink_to(tmp_path / "unmounted" / "data.h5")
    else:
        (tmp_path / "other.h5").symlink_to(link)
        link.symlink_to(tmp_path / "other.h5")
    target = os.readlink(link)
    line = error_line(
        cli("run", recipe, "--set", f"data.path='{link.as_posix()}'", "--out", tmp_path / "r"),
        2,
        str(link),
    )
    assert "loop" in line if kind == "loop" else "does not exist" in line
    assert link.is_symlink() and os.readlink(link) == target
    assert not (tmp_path / "r").exists()
    error_line(cli("check", recipe, "--set", f"data.path='{link.as_posix()}'"), 2, str(link))
    gen = ["generate", "lejepa/BouncingBalls-v0", "--episodes", 2, "--steps", 5, "--quiet"]
    error_line(cli(*gen, "--out", link, "--force"), 2, str(link))
    assert link.is_symlink() and os.readlink(link) == target


def test_generate_through_a_valid_link_replaces_its_target_and_keeps_the_link(tmp_path):
    (tmp_path / "real.h5").write_bytes(b"old")
    link = tmp_path / "link.h5"
    link.symlink_to(tmp_path / "real.h5")
    gen = ["generate", "lejepa/BouncingBalls-v0", "--episodes", 2, "--steps", 5, "--quiet"]
    assert cli(*gen, "--out", link, "--force").exit_code == 0
    assert link.is_symlink() and (tmp_path / "real.h5").read_bytes()[:4] == b"\x89HDF"


# ---------------------------------------------------------- 3. one run per directory
def test_a_locked_run_directory_names_the_holder(tmp_path, recipe, run_copy):
    out = tmp_path / "busy"
    out.mkdir()
    lock = RunLock(out).acquire()
    try:
        error_line(cli("run", recipe, "--out", out), 2, str(out), f"pid {os.getpid()}")
        assert sorted(p.name for p in out.iterdir()) == [".lock"]
        held = RunLock(run_copy).acquire()
        try:
            before = listing(run_copy)
            line = error_line(cli("run", "--resume", run_copy), 2, f"pid {os.getpid()}")
            assert "in use by another lejepa run" in line
            assert listing(run_copy) == before
        finally:
            held.release()
    finally:
        lock.release()


@pytest.mark.slow  # two processes
def test_two_runs_into_one_directory(tmp_path, recipe):
    out = tmp_path / "shared"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "lejepa_core.cli", "run", str(recipe), "--out", str(out)]
    first = subprocess.Popen(
        [*command, "--set", "train.epochs=100000", "--device", "cpu"],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        while not (out / "metrics.jsonl").exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        second = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
        assert second.returncode == 2, second.stderr
        assert f"pid {first.pid}" in second.stderr and "Traceback" not in second.stderr
        assert second.stderr.strip().count("\n") == 0
    finally:
        first.send_signal(signal.SIGTERM)
        assert first.wait(timeout=60) == 143


# ---------------------------------------------------------- 4. --out and --force
def test_a_non_empty_out_that_is_not_a_run_is_refused_without_force(tmp_path, recipe):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    (out / "summary.json").write_text("{}")
    before = listing(out)
    error_line(cli("run", recipe, "--out", out), 2, str(out), "notes.txt", "--force")
    assert listing(out) == before
    result = cli("run", recipe, "--out", out, "--force", "--set", "train.epochs=1")
    assert result.exit_code == 0, result.output
    assert (out / "notes.txt").read_text() == "keep me"
    assert (out / "checkpoints" / "last.pt").is_file()


# ------------------------------------------------ 5. NaN validation figure, recipe values
class NaNInEvalLoss(Loss):
    """Finite (zero) in training, NaN in validation (the model is in eval mode there)."""

    @attrs.frozen(kw_only=True)
    class Params:
        unused: int = param(0, "nothing")

    def forward(self, outputs):
        value = outputs.prediction.sum() * 0.0
        return LossOutput(value=value if self.training else value + float("nan"))


class _FaultPlugin:
    @hookimpl
    def register_losses(self, register):
        register("test_nan_in_eval", NaNInEvalLoss)


@pytest.fixture
def nan_in_eval():
    from lejepa_core.registry import get_plugin_manager

    pm = get_plugin_manager()
    plugin = _FaultPlugin()
    pm.register_plugin(plugin, name="test-faults-nan-in-eval")
    yield
    pm.unregister(plugin)


def test_a_never_finite_monitored_figure_is_not_a_silent_success(tmp_path, recipe, nan_in_eval):
    recipe.write_text(recipe.read_text() + '\n[[losses]]\nname = "test_nan_in_eval"\n')
    out = tmp_path / "nan"
    result = cli("run", recipe, "--out", out, "--set", "train.monitor=loss")
    line = error_line(result, 1, "validation loss was never finite", "no best.pt")
    assert "last.pt" in line
    assert "warning: validation loss is nan at epoch 0" in result.stderr
    assert not (out / "checkpoints" / "best.pt").exists()
    assert (out / "checkpoints" / "last.pt").exists()


@pytest.mark.parametrize(
    "override, expected",
    [
        ("train.lr=inf", "train.lr: expected a finite number, got inf"),
        ("train.lr=nan", "train.lr: expected a finite number, got nan"),
        ("losses.0.weight=-1", "losses[0].weight: expected a finite number >= 0"),
        ("losses.1.weight=inf", "losses[1].weight: expected a finite number >= 0"),
        (
            "losses=[{name='l1', weight=0}, {name='sigreg', weight=0}]",
            "losses: every loss has weight 0",
        ),
        ("train.betas=[0.9, 1.0]", "train.betas: expected a value in [0, 1), got 1.0"),
        ("train.seed=1000000000000000000000", "train.seed: expected a 64-bit integer"),
        ("data.horizons=[1, 100000000000000000000]", "data.horizons: expected a 64-bit integer"),
        ("train.threads=100000", "train.threads: expected a value in [0, 4096]"),
        ("encoder.hidden_dim=4611686018427387904", "encoder (mlp): sizes too large"),
    ],
)
def test_values_that_used_to_pass_validation(recipe, override, expected):
    error_line(cli("check", recipe, "--set", override), 2, expected)


# ---------------------------------------------------------- 6. a full disk
def test_a_full_disk_during_generate_is_one_line_and_leaves_nothing(tmp_path, monkeypatch):
    import h5py

    out = tmp_path / "balls.h5"
    out.write_bytes(b"the old file")
    real = h5py.Dataset.__setitem__

    def full(self, key, value):
        if self.name == "/observations":
            raise OSError(errno.ENOSPC, "Can't synchronously write data (file write failed)")
        return real(self, key, value)

    monkeypatch.setattr(h5py.Dataset, "__setitem__", full)
    gen = ["generate", "lejepa/BouncingBalls-v0", "--episodes", 4, "--steps", 10, "--quiet"]
    line = error_line(cli(*gen, "--out", out, "--force"), 1, str(out))
    assert "No space left on device" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["balls.h5"]
    assert out.read_bytes() == b"the old file"


def test_a_full_disk_while_saving_a_checkpoint_is_one_line(run_copy, monkeypatch):
    last = run_copy / "checkpoints" / "last.pt"
    before = last.read_bytes()

    def full(obj, handle, *args, **kwargs):
        handle.write(b"partial")
        raise RuntimeError(
            "[enforce fail at inline_container.cc:672] . PytorchStreamWriter failed writing "
            "file data/0: file write failed"
        )

    monkeypatch.setattr(torch, "save", full)
    line = error_line(
        cli("run", "--resume", run_copy, "--set", "train.epochs=2", "--device", "cpu"),
        1,
        "last.pt",
        "is intact",
    )
    assert "inline_container" not in line and "enforce fail" not in line
    assert last.read_bytes() == before
    assert not [p for p in (run_copy / "checkpoints").iterdir() if p.name.endswith(".tmp")]


@pytest.fixture
def small_disk(tmp_path):
    """A 2 MiB tmpfs (root only; skipped where it cannot be mounted)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    yield mount
    subprocess.run(["umount", str(mount)], capture_output=True)


@pytest.mark.slow  # subprocesses: the failure this pins was a segfault
def test_a_really_full_disk(small_disk, recipe):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    (small_disk / "old.h5").write_bytes(b"x" * 1000)
    gen = [sys.executable, "-m", "lejepa_core.cli", "generate", "lejepa/BouncingBalls-v0"]
    for workers in ("1", "2"):
        args = ["--episodes", "3000", "--steps", "100", "--workers", workers, "--quiet"]
        done = subprocess.run(
            [*gen, *args, "--out", str(small_disk / "old.h5"), "--force"],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
        )
        assert done.returncode == 1, done.stderr[-3000:]
        assert done.stderr.startswith("Error: cannot write") and "No space left" in done.stderr
        assert done.stderr.strip().count("\n") == 0 and "Traceback" not in done.stderr
        assert sorted(p.name for p in small_disk.iterdir()) == ["old.h5"]
        assert (small_disk / "old.h5").read_bytes() == b"x" * 1000
    (small_disk / "old.h5").unlink()
    run = [sys.executable, "-m", "lejepa_core.cli", "run", str(recipe), "--device", "cpu"]
    for free_kib in (4, 8, 12, 20, 100):  # the recipe, metrics.jsonl, the events, checkpoints
        filler = small_disk / "filler"
        filler.write_bytes(b"\0" * (2 * 2**20 - free_kib * 2**10))
        done = subprocess.run(
            [*run, "--out", str(small_disk / "r")],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
        )
        assert done.returncode == 1, done.stderr[-3000:]
        *warnings, line = done.stderr.strip().splitlines()
        # tensorboardX's writer thread may hit the full disk first: one warning line for it
        assert all(w.startswith("warning: ") and "stopped:" in w for w in warnings), warnings
        assert len(warnings) <= 1 and line.startswith("Error: cannot write"), line
        assert "No space left on device" in line and "Traceback" not in done.stderr
        assert not list(small_disk.rglob("*.tmp"))
        shutil.rmtree(small_disk / "r", ignore_errors=True)
        filler.unlink()


# ---------------------------------------------------------- 7. not UTF-8
@pytest.mark.parametrize("name", ["resolved_recipe.toml", "metrics.jsonl", "summary.json"])
def test_run_files_that_are_not_utf8(tmp_path, run_copy, name):
    with open(run_copy / name, "ab") as handle:
        handle.write(b"\n\xff\xfe\x00garbage\n")
    commands = [
        ["report", run_copy, "--no-model"],
        ["compare", run_copy, "--out", tmp_path / "c.html"],
    ]
    if name == "resolved_recipe.toml":
        commands += [["eval", run_copy, "--device", "cpu"], ["run", "--resume", run_copy]]
    for args in commands:
        line = error_line(cli(*args), 2, name, "not UTF-8")
        assert "0xff" in line
    assert not (tmp_path / "c.html").exists() and not (run_copy / "eval.json").exists()


def test_a_recipe_that_is_not_utf8(tmp_path, recipe):
    recipe.write_bytes(recipe.read_bytes() + b"\n# caf\xe9\n")
    for command in ("check", "run"):
        error_line(cli(command, recipe), 2, str(recipe), "not UTF-8 text (byte 0xe9")
    assert not (tmp_path / "runs").exists()


# ---------------------------------------------------------- 8. values that escaped validation
def test_runs_dir_that_is_a_file(tmp_path, recipe):
    (tmp_path / "runs").write_text("a file")
    error_line(cli("run", recipe), 2, "log.runs_dir", "not a directory")
    assert (tmp_path / "runs").read_text() == "a file"


@pytest.mark.parametrize("path", ["a" * 300 + ".h5", "a\x00b.h5"])
def test_data_paths_the_os_cannot_take(tmp_path, recipe, monkeypatch, path):
    monkeypatch.chdir(tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    toml_path = path.replace("\x00", "\\u0000")
    for command in ("check", "run"):
        error_line(cli(command, recipe, "--set", f'data.path="{toml_path}"'), 2, "data.path")
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no stray ".a"


def test_env_kwargs_the_env_rejects_in_check(tmp_path, recipe):
    missing = (tmp_path / "missing.h5").as_posix()
    line = error_line(
        cli(
            "check",
            recipe,
            "--set",
            f"data.path='{missing}'",
            "--set",
            "data.env_kwargs={num_balls='three'}",
        ),
        2,
        "data.env_kwargs",
        "three",
    )
    assert "num_balls" in line


@pytest.mark.parametrize(
    "override", ["train.batch_size=1000000000000000", "encoder.hidden_dim=1000000000"]
)
def test_absurd_sizes_are_refused_with_the_figure(tmp_path, recipe, override):
    for args in (["check", recipe], ["run", recipe, "--out", tmp_path / "r"]):
        error_line(cli(*args, "--set", override), 2, "training needs at least", "GiB")
    assert not (tmp_path / "r").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="about a machine without CUDA")
def test_check_of_a_cuda_recipe_without_cuda_checks_the_build_only(recipe):
    assert cli("check", recipe, "--set", "train.device='cuda'").exit_code == 0
    huge = ("--set", "train.device='cuda'", "--set", "encoder.hidden_dim=1000000000")
    error_line(cli("check", recipe, *huge), 2, "building the model needs", "GiB on cpu")


# ---------------------------------------------------------- 9. Ctrl-C during start-up
def test_ctrl_c_during_start_up(tmp_path, recipe, monkeypatch):
    from lejepa_core.training import run as run_module

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(run_module, "build_run", interrupted)
    error_line(cli("run", recipe, "--out", tmp_path / "r"), 130, "interrupted (Ctrl-C)")
    assert not (tmp_path / "r").exists()


# ---------------------------------------------------------- 10. nothing left by a data failure
def test_a_run_that_fails_on_its_data_leaves_no_directory(tmp_path, recipe):
    bad = tmp_path / "bad.h5"
    bad.write_bytes(b"not hdf5 at all" * 100)
    setting = f"data.path='{bad.as_posix()}'"
    error_line(cli("run", recipe, "--set", setting, "--out", tmp_path / "r"), 2, str(bad))
    error_line(cli("run", recipe, "--set", setting), 2, str(bad))
    assert not (tmp_path / "r").exists()
    assert not (tmp_path / "runs").exists() or not list((tmp_path / "runs").iterdir())


# ---------------------------------------------------------- 11. the non-finite stop message
class NaNLoss(Loss):
    @attrs.frozen(kw_only=True)
    class Params:
        unused: int = param(0, "nothing")

    def forward(self, outputs):
        return LossOutput(value=outputs.prediction.sum() * float("nan"))


class _NaNPlugin:
    @hookimpl
    def register_losses(self, register):
        register("test_always_nan", NaNLoss)


def test_the_nonfinite_stop_names_no_checkpoint_before_one_exists(tmp_path, recipe):
    from lejepa_core.registry import get_plugin_manager

    pm = get_plugin_manager()
    plugin = _NaNPlugin()
    pm.register_plugin(plugin, name="test-faults-always-nan")
    try:
        recipe.write_text(recipe.read_text() + '\n[[losses]]\nname = "test_always_nan"\n')
        result = cli("run", recipe, "--out", tmp_path / "r", "--set", "train.max_nonfinite_steps=2")
    finally:
        pm.unregister(plugin)
    line = error_line(result, 1, "2 consecutive non-finite", "none (no epoch has ended yet)")
    assert "last.pt" not in line


# ---------------------------------------------------------- 12. one line (see 1, 8 and here)
def test_an_hdf5_directory_in_check_is_one_line(tmp_path, recipe):
    (tmp_path / "dir.h5").mkdir()
    error_line(
        cli("check", recipe, "--set", f"data.path='{(tmp_path / 'dir.h5').as_posix()}'"),
        2,
        "dir.h5",
    )


# ---------------------------------------------------------- 13. signals: save, then 130 / 143
@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_saves_then_exits_with_its_code(tmp_path, recipe, monkeypatch, sig, code):
    from lejepa_core.training import loop

    real = loop.train_step

    def step_then_signal(run, *args, **kwargs):
        if run.state.step == 2:
            os.kill(os.getpid(), sig)
        return real(run, *args, **kwargs)

    monkeypatch.setattr(loop, "train_step", step_then_signal)
    out = tmp_path / "r"
    result = cli("run", recipe, "--out", out, "--device", "cpu")
    error_line(result, code, f"interrupted by {sig.name} at step 3", f"--resume {out}")
    saved = ckpt.load_checkpoint(out / "checkpoints" / "last.pt")
    assert saved["train_state"]["step"] == 3
    assert '"status": "interrupted"' in (out / "summary.json").read_text()


def test_a_second_signal_gives_up_at_once_with_its_code(tmp_path, recipe, monkeypatch):
    from lejepa_core.training import loop

    real = loop.train_step

    def step_then_two_signals(run, *args, **kwargs):
        if run.state.step == 2:
            os.kill(os.getpid(), signal.SIGTERM)
            os.kill(os.getpid(), signal.SIGTERM)
        return real(run, *args, **kwargs)

    monkeypatch.setattr(loop, "train_step", step_then_two_signals)
    error_line(cli("run", recipe, "--out", tmp_path / "r"), 143, "terminated (SIGTERM)")


# ---------------------------------------------------------- 14. no imports through env ids
def test_check_never_imports_a_module_named_in_env_id(tmp_path, recipe, monkeypatch):
    marker = tmp_path / "imported"
    (tmp_path / "sneaky_module.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    missing = (tmp_path / "missing.h5").as_posix()
    for command in ("check", "run"):
        args = ["--set", "data.env_id='sneaky_module:Thing-v0'", "--set", f"data.path='{missing}'"]
        error_line(cli(command, recipe, *args), 2, "data.env_id", "register_envs")
    assert not marker.exists() and "sneaky_module" not in sys.modules


# ---------------------------------------------------------- 15. temp files of killed processes
def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_stale_temp_files_are_removed_at_the_next_start(tmp_path, run_copy):
    dead = _dead_pid()
    stale = tmp_path / f".balls.h5.{dead}.0123abcd.tmp"
    live = tmp_path / f".balls.h5.{os.getpid()}.0123abcd.tmp"  # a writer still at work
    stale.write_bytes(b"x" * 100)
    live.write_bytes(b"x")
    gen = ["generate", "lejepa/BouncingBalls-v0", "--episodes", 2, "--steps", 5, "--quiet"]
    assert cli(*gen, "--out", tmp_path / "balls.h5").exit_code == 0
    assert not stale.exists() and live.exists()
    checkpoints = run_copy / "checkpoints"
    left = [checkpoints / f".last.pt.{dead}.abcd1234.tmp", checkpoints / ".best.pt.x1y2z3.tmp"]
    for path in left:
        path.write_bytes(b"partial")
    result = cli("run", "--resume", run_copy, "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert not any(path.exists() for path in left)


def test_only_temp_files_of_the_same_destination_and_a_dead_process_are_removed(tmp_path):
    from lejepa_core.files import remove_stale_temp_files

    dead = _dead_pid()
    removed = tmp_path / f".data.h5.{dead}.ab12cd34.tmp"
    kept = [
        tmp_path / f".data.h5.123.h5.{dead}.ab12cd34.tmp",  # another file, "data.h5.123.h5"
        tmp_path / f".data.h5.{os.getpid()}.ab12cd34.tmp",  # a process still running
        tmp_path / f".other.h5.{dead}.ab12cd34.tmp",
        tmp_path / "data.h5",
    ]
    for path in [removed, *kept]:
        path.write_bytes(b"x")
    assert remove_stale_temp_files(tmp_path, "data.h5") == [removed]
    assert all(path.exists() for path in kept)
