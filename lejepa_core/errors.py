"""Domain exceptions: the library raises these; only the CLI turns them into exit codes.

Exit codes (see ``lejepa_core.cli``): a ``UserInputError`` (bad recipe, bad file, unknown
name) exits 2 with one line on stderr; any other ``LejepaError`` exits 1; ``Interrupted``
exits 130 (SIGINT) or 143 (SIGTERM).
"""

from __future__ import annotations


class LejepaError(Exception):
    """Base class of every lejepa error."""


class UserInputError(LejepaError):
    """Something the user supplied is wrong (recipe, flag, file): exit code 2."""


class RecipeError(UserInputError):
    """A recipe failed validation. ``errors`` holds one ``path: message`` line per problem."""

    def __init__(self, errors: list[str] | str, *, source: str | None = None):
        self.errors = [errors] if isinstance(errors, str) else list(errors)
        self.source = source
        prefix = f"{source}: " if source else ""
        super().__init__(prefix + "; ".join(self.errors))


class UnknownComponentError(UserInputError):
    """A recipe names a component that no plugin registered."""


class DuplicateComponentError(LejepaError):
    """Two plugins registered the same kind and name."""


class InvalidComponentError(LejepaError):
    """A plugin registered an object that does not satisfy its interface."""


class PluginLoadError(LejepaError):
    """A plugin failed to import or to run its hooks (fatal only in strict mode)."""


class DatasetError(UserInputError):
    """A dataset file is missing, truncated, corrupt, foreign or of an unknown schema."""


class CheckpointError(UserInputError):
    """A checkpoint or run directory cannot be used (missing, corrupt, incompatible)."""


class TrainingError(LejepaError):
    """Training cannot continue (for example: non-finite losses keep happening)."""


class RunDirectoryError(UserInputError):
    """A run directory cannot be used: another run holds it, it is a non-empty directory that
    is not a run, or ``log.runs_dir`` is not a directory."""


class StorageError(LejepaError):
    """Writing failed (disk full, quota, read-only file system); the destination is intact."""


class Interrupted(LejepaError):
    """The run stopped on SIGINT/SIGTERM after saving; the CLI exits ``128 + signal``
    (130 for SIGINT, 143 for SIGTERM), the shell's convention."""

    def __init__(self, message: str, *, exit_code: int):
        self.exit_code = exit_code
        super().__init__(message)
