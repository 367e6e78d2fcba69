"""Temporary files of atomic writes, the stale ones a killed process leaves, write failures.

Every file lejepa writes atomically (datasets, checkpoints) is first written to
``.<name>.<pid>.<random>.tmp`` next to its destination, then moved over it with
``os.replace``. A process killed with SIGKILL cannot remove its temporary file; the next
writer of the same destination does, once the process named in it is gone
(``remove_stale_temp_files``). ``write_failure`` words a failed write (a full disk) as one
line; ``destination`` resolves the file to replace (a symbolic link is written through, one
that does not resolve is an error). Nothing here imports torch or h5py.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import sys
from pathlib import Path

from lejepa_core.errors import UserInputError


def temp_prefix(name: str) -> str:
    """``.<name>.<pid>.``: the start of this process's temporary files for ``name`` (a long
    name is shortened so that the temporary name stays within 255 bytes)."""
    return f".{name[:200]}.{os.getpid()}."


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this machine (True when it cannot be told: another
    user's process, or Windows, where ``os.kill(pid, 0)`` would signal it)."""
    if pid == os.getpid():
        return True
    if sys.platform == "win32" or pid <= 0:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: alive, owned by someone else
        return True
    return True


def remove_stale_temp_files(directory: str | Path, name: str) -> list[Path]:
    """Remove the temporary files of ``directory/name`` whose writing process is gone (pid in
    the name; see the module docstring); returns what was removed."""
    directory = Path(directory)
    pattern = re.compile(re.escape(f".{name[:200]}.") + r"(\d+)\.[0-9a-z_]+\.tmp\Z")
    removed = []
    try:
        entries = list(directory.iterdir())
    except OSError:
        return removed
    for entry in entries:
        match = pattern.match(entry.name)
        if match is None or process_alive(int(match.group(1))):
            continue
        try:
            entry.unlink()
            removed.append(entry)
        except OSError:
            pass
    return removed


def free_bytes(directory: str | Path) -> int | None:
    """Bytes free on the file system of ``directory`` (None when it cannot be told)."""
    try:
        return shutil.disk_usage(directory).free
    except OSError:
        return None


def free_space(directory: str | Path) -> str:
    """Free space on the file system of ``directory``, for messages (``"1.5 MiB"``)."""
    free = free_bytes(directory)
    if free is None:
        return "unknown"
    for unit in ("B", "KiB", "MiB"):
        if free < 1024:
            return f"{free:.0f} {unit}" if unit == "B" else f"{free:.1f} {unit}"
        free /= 1024
    return f"{free:.1f} GiB"


def write_failure(path: str | Path, exc: BaseException) -> str:
    """One line on why writing ``path`` failed: the OS's reason and the free space left
    (libraries that lose the errno, like torch's zip writer, on a full disk: "No space left
    on device" with their own words in parentheses)."""
    directory = Path(path) if Path(path).is_dir() else Path(path).parent
    if isinstance(exc, OSError) and exc.errno:
        reason = os.strerror(exc.errno)  # h5py's own strerror is a paragraph
    elif isinstance(exc, OSError) and exc.strerror:
        reason = exc.strerror
    else:
        text = (str(exc).splitlines() or [""])[0]
        reason = text.split("] ", 1)[-1].strip(" .") or type(exc).__name__
        free = free_bytes(directory)
        if free is not None and free < 64 * 1024:
            reason = f"{os.strerror(errno.ENOSPC)} ({reason})"
    return f"cannot write {path}: {reason} ({free_space(directory)} free there)"


def destination(out: str | Path) -> Path:
    """The file to replace for ``out``: ``out`` itself, or the file a symbolic link points to
    (the link is kept). ``UserInputError`` for a path with a NUL byte, a directory, or a link
    that does not resolve (dangling: an unmounted volume?; or a loop): never replaced."""
    text = os.fspath(out)
    if "\x00" in text:
        raise UserInputError(f"{text!r}: a path cannot contain a NUL byte")
    path = Path(text)
    if path.is_symlink():
        try:
            path = path.resolve(strict=True)
        except (OSError, RuntimeError) as exc:
            loop = isinstance(exc, RuntimeError) or getattr(exc, "errno", None) == errno.ELOOP
            what = (
                "a symbolic link loop"
                if loop
                else f"a link to {os.readlink(text)}, which does not exist"
            )
            raise UserInputError(f"{text}: {what}; refusing to replace the link") from None
    if path.is_dir():
        raise UserInputError(f"{text}: is a directory, not a file")
    if len(path.name.encode("utf-8", "surrogateescape")) > 255:
        raise UserInputError(f"{text}: the file name is longer than 255 bytes")
    return path
