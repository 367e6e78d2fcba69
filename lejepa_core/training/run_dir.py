"""The directory of a training run: checked before anything is built, created only once the
data and the model are, and locked for the whole run.

    directory = RunDirectory(recipe, out=out, resume=resume, force=force, is_main=is_main)
    with directory.starting():               # checked (a resumed one locked) now
        data = open_data(recipe, ...)        # a failure here leaves no directory behind
        run = build_run(recipe, data, ...)
        run.run_dir = directory.create()     # new run: mkdir, lock, resolved_recipe.toml
    try:
        ...                                  # train
    finally:
        directory.release()                  # the lock

Rules (rank 0; the other ranks never write):

* ``--out DIR`` may be missing or empty. A directory holding ``checkpoints/last.pt`` is a run:
  resume it. Any other non-empty directory is refused unless ``force`` (a new run's
  ``metrics.jsonl``, ``summary.json`` and ``eval.json`` then replace the old ones).
* Without ``--out``: ``<log.runs_dir>/<recipe>-<YYYYmmdd-HHMMSS>[-N]``, created exclusively.
* The lock is ``fcntl.flock`` on ``DIR/.lock`` (the holder's pid written in it), held until the
  run ends; a second run into the same directory is a ``RunDirectoryError`` naming that pid.
  The operating system releases it when the process dies, even by SIGKILL.
* A directory created for a new run is removed again when the run fails before its first
  ``metrics.jsonl`` record.
* Resuming: checkpoint temporary files left in ``checkpoints/`` by a killed run are removed
  (the lock guarantees no other process is writing there).
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

from lejepa_core import artifacts
from lejepa_core.errors import CheckpointError, RunDirectoryError, StorageError
from lejepa_core.files import write_failure
from lejepa_core.recipe import Recipe

LOCK_FILE = ".lock"
REPLACED_BY_FORCE = (artifacts.METRICS, artifacts.SUMMARY, artifacts.EVAL)


class RunLock:
    """An exclusive, non-blocking OS lock on ``run_dir/.lock`` (``fcntl.flock``; ``msvcrt`` on
    Windows; none where neither exists), with the holder's pid in the file."""

    def __init__(self, run_dir: Path):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_FILE
        self._handle = None

    def acquire(self) -> RunLock:
        try:
            handle = open(self.path, "a+", encoding="utf-8")  # noqa: SIM115 - held for the run
        except OSError as exc:
            raise RunDirectoryError(
                f"{self.run_dir}: cannot create its lock file: {exc.strerror}"
            ) from None
        if not _try_lock(handle):
            handle.close()
            raise self._in_use()
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        self._handle = handle
        return self

    def release(self) -> None:
        if self._handle is not None:
            self._handle.close()  # closing the file releases the lock
            self._handle = None

    def check_free(self) -> None:
        """``RunDirectoryError`` naming the holder when another process holds the lock; no
        file is created (the directory may be one that is refused anyway)."""
        try:
            handle = open(self.path, encoding="utf-8")  # noqa: SIM115
        except OSError:
            return  # no lock file: nobody holds it
        with handle:
            if not _try_lock(handle):
                raise self._in_use()

    def _in_use(self) -> RunDirectoryError:
        try:
            holder = self.path.read_text(encoding="utf-8").strip() or "unknown"
        except (OSError, UnicodeDecodeError):
            holder = "unknown"
        return RunDirectoryError(
            f"{self.run_dir} is in use by another lejepa run (pid {holder}); wait for it to "
            "end, or choose another directory"
        )


def _try_lock(handle) -> bool:
    """Lock ``handle`` without waiting; False when another process holds it."""
    try:
        import fcntl
    except ImportError:  # Windows
        try:
            import msvcrt
        except ImportError:
            return True
        try:
            msvcrt.locking(handle.fileno(), msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except OSError:  # a file system without locks: run unlocked rather than not at all
        return True
    return True


def _entries(path: Path) -> list[str]:
    """What a directory holds, besides its lock file."""
    if not path.is_dir():
        return []
    return sorted(entry.name for entry in path.iterdir() if entry.name != LOCK_FILE)


def check_out_dir(path: Path, *, force: bool) -> None:
    """Refuse ``--out path`` unless it is missing, empty, or (``force``) a non-empty directory
    that holds no run; a directory holding a run is to be resumed."""
    if path.is_symlink() and not path.exists():
        raise RunDirectoryError(f"--out {path}: a symbolic link that does not resolve")
    if path.exists() and not path.is_dir():
        raise RunDirectoryError(f"--out {path}: exists and is not a directory")
    if (path / artifacts.CHECKPOINTS / artifacts.LAST_CHECKPOINT).exists():
        raise CheckpointError(f"{path} already holds a run; use --resume {path} to continue it")
    entries = _entries(path)
    if entries and not force:
        shown = ", ".join(entries[:4]) + (
            f" and {len(entries) - 4} more" if len(entries) > 4 else ""
        )
        raise RunDirectoryError(
            f"--out {path}: the directory is not empty ({shown}) and holds no run to resume; "
            "choose a new directory, or pass --force to write into it"
        )


def check_runs_dir(runs_dir: Path) -> None:
    """``log.runs_dir`` must be a directory or not exist yet."""
    if runs_dir.is_symlink() and not runs_dir.exists():
        raise RunDirectoryError(
            f"log.runs_dir: {runs_dir} is a symbolic link that does not resolve"
        )
    if runs_dir.exists() and not runs_dir.is_dir():
        raise RunDirectoryError(f"log.runs_dir: {runs_dir} exists and is not a directory")


def default_run_dir(recipe: Recipe) -> Path:
    """``<log.runs_dir>/<recipe>-<YYYYmmdd-HHMMSS>``, not created (``RunDirectory`` does that)."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path(recipe.log.runs_dir) / f"{recipe.name}-{stamp}"


class RunDirectory:
    """See the module docstring. ``path``: the run directory once known (None on ranks > 0 of
    a new run)."""

    def __init__(
        self,
        recipe: Recipe,
        *,
        out: str | Path | None,
        resume: str | Path | None,
        force: bool = False,
        is_main: bool = True,
    ):
        self.recipe, self.force, self.is_main = recipe, force, is_main
        self.out = None if out is None else Path(out)
        self.resume = None if resume is None else Path(resume)
        self.path: Path | None = self.resume
        self.created = False
        self.lock: RunLock | None = None

    @contextlib.contextmanager
    def starting(self) -> Iterator[RunDirectory]:
        """``check`` now; when the block fails (data, model, resume), remove a directory
        created for this run and release the lock."""
        self.check()
        try:
            yield self
        except BaseException:
            self.abandon()
            raise

    def check(self) -> None:
        """Check the directory before anything is built; lock a resumed one."""
        if self.resume is not None:
            last = self.resume / artifacts.CHECKPOINTS / artifacts.LAST_CHECKPOINT
            if not last.is_file():
                raise CheckpointError(f"{self.resume}: no checkpoints/last.pt to resume from")
            if self.is_main:
                self.lock = RunLock(self.resume).acquire()
                for stale in (self.resume / artifacts.CHECKPOINTS).glob(".*.tmp"):
                    stale.unlink(missing_ok=True)
        elif self.is_main and self.out is not None:
            RunLock(self.out).check_free()  # a run going on there: name it first
            check_out_dir(self.out, force=self.force)
        elif self.is_main:
            check_runs_dir(Path(self.recipe.log.runs_dir))

    def create(self) -> Path | None:
        """The run directory: a resumed one as is; on rank 0 of a new run, created (or the
        empty ``--out``), locked, checked again under the lock, with ``checkpoints/`` and
        ``resolved_recipe.toml``; None on the other ranks of a new run."""
        if self.resume is not None or not self.is_main:
            return self.path
        self.path = self._make()
        self.lock = RunLock(self.path).acquire()
        check_out_dir(self.path, force=self.force)  # a run may have finished there meanwhile
        if self.force:
            for name in REPLACED_BY_FORCE:
                (self.path / name).unlink(missing_ok=True)
        resolved = self.path / artifacts.RESOLVED_RECIPE
        try:
            (self.path / artifacts.CHECKPOINTS).mkdir(exist_ok=True)
            resolved.write_text(self.recipe.to_toml(), encoding="utf-8")
        except OSError as exc:  # a full disk
            raise StorageError(write_failure(resolved, exc)) from None
        return self.path

    def _make(self) -> Path:
        if self.out is not None:
            try:
                self.out.parent.mkdir(parents=True, exist_ok=True)
                self.out.mkdir()
                self.created = True
            except FileExistsError:
                pass  # an empty directory given as --out (check_out_dir said so)
            except OSError as exc:
                raise RunDirectoryError(
                    f"--out {self.out}: cannot create it: {exc.strerror}"
                ) from None
            return self.out
        runs_dir = Path(self.recipe.log.runs_dir)
        check_runs_dir(runs_dir)
        base = default_run_dir(self.recipe)
        try:
            runs_dir.mkdir(parents=True, exist_ok=True)
            for suffix in range(1, 10_000):
                path = base if suffix == 1 else base.with_name(f"{base.name}-{suffix}")
                try:
                    path.mkdir()
                except FileExistsError:
                    continue
                self.created = True
                return path
        except OSError as exc:
            raise RunDirectoryError(
                f"log.runs_dir: cannot create a run directory in {runs_dir}: {exc.strerror}"
            ) from None
        raise RunDirectoryError(f"log.runs_dir: {runs_dir} holds too many runs named {base.name}")

    def abandon(self) -> None:
        """After a failure: remove a directory created for this run that holds no metrics
        yet, and release the lock."""
        try:
            if self.created and self.path is not None:
                metrics = self.path / artifacts.METRICS
                if not metrics.exists() or metrics.stat().st_size == 0:
                    shutil.rmtree(self.path, ignore_errors=True)
        finally:
            self.release()

    def release(self) -> None:
        if self.lock is not None:
            self.lock.release()
            self.lock = None
