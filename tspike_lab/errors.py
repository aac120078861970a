"""The project's error types: one per failure kind, each rendered as one line by the CLI and notebooks.

Every error a user can cause derives from :class:`TspikeError`; its message names the
parameter or file, what was found and what to do. ``tspike`` prints ``str(error)`` and
exits 2 (3 for a diverged run); notebooks show the same line. Ctrl-C ends ``tspike train``
in one line with exit status 130 (:data:`EXIT_INTERRUPTED`, the shell's 128 + SIGINT); the
run folder keeps its last checkpoint and resumes.

    TspikeError
    ├── ConfigError          a bad parameter or environment variable (also a ValueError)
    ├── DataError            data that cannot be used
    │   ├── DataUnavailableError   not on disk and not downloadable
    │   │   └── MissingPackageError   an optional package the data set needs is not installed
    │   └── DataIntegrityError     on disk but wrong: checksum, truncated, unsafe, too large, other data
    ├── RunFolderError       an out_dir or run folder that cannot be used (another run's, a file, locked)
    ├── CheckpointError      a checkpoint that cannot be read or does not fit the run
    ├── RecordError          a results record (``metrics.json``) that cannot be read or is inconsistent
    ├── ResourceError        a run that does not fit in this machine's memory (also a MemoryError)
    └── TrainingDiverged     NaN or inf in the loss, gradients, weights or evaluation
"""

from __future__ import annotations

__all__ = [
    "TspikeError",
    "ConfigError",
    "DataError",
    "DataUnavailableError",
    "MissingPackageError",
    "DataIntegrityError",
    "RunFolderError",
    "CheckpointError",
    "RecordError",
    "ResourceError",
    "TrainingDiverged",
    "EXIT_CODES",
    "EXIT_INTERRUPTED",
    "exit_code",
]


class TspikeError(Exception):
    """Base of every error a user of tspike_lab can cause; ``str(e)`` is the one-line message."""


class ConfigError(TspikeError, ValueError):
    """A parameter outside what is allowed (names the parameter, the value and what is allowed).

    ``field``, ``value`` and ``allowed`` keep the parts, so a front end can name the parameter
    its own way (``--num-steps`` on the command line, ``num_steps`` in a notebook).
    """

    def __init__(self, message: str, *, field: str | None = None, value=None, allowed: str | None = None):
        super().__init__(message)
        self.field, self.value, self.allowed = field, value, allowed

    @classmethod
    def bad(cls, owner: str, field: str, value, allowed: str) -> ConfigError:
        """``"{owner}.{field} must be {allowed}, got {value!r}"`` (owner e.g. "TrainConfig")."""
        prefix = f"{owner}.{field}" if owner else field
        return cls(f"{prefix} must be {allowed}, got {value!r}", field=field, value=value, allowed=allowed)


class DataError(TspikeError):
    """Data that cannot be used."""


class DataUnavailableError(DataError, RuntimeError):
    """A data set is neither on disk nor downloadable; the message says what to fetch and where."""


class MissingPackageError(DataUnavailableError, ImportError):
    """A data set needs an optional package that is not installed; the message says what to install."""


class DataIntegrityError(DataError, ValueError):
    """Data on disk that is not what it claims: a checksum mismatch, a truncated or unsafe file, other data."""


class RunFolderError(TspikeError, ValueError):
    """An output or run folder that cannot be used (another run's folder, a file, in use by another process)."""


class CheckpointError(TspikeError, ValueError):
    """A checkpoint that is missing, truncated, not a tspike_lab checkpoint, or not one of this run's model."""


class RecordError(TspikeError, ValueError):
    """A results record that cannot be read (missing, malformed, a special file) or holds impossible values."""


class ResourceError(TspikeError, MemoryError):
    """A run that cannot fit in this machine's memory: refused before it starts, or stopped when allocation fails."""


class TrainingDiverged(TspikeError, FloatingPointError):
    """The loss, gradients, weights or evaluation became NaN or infinite; no checkpoint was written after it."""


EXIT_CODES = {TrainingDiverged: 3, TspikeError: 2}
EXIT_INTERRUPTED = 130  # Ctrl-C (SIGINT): 128 + 2, as shells report it


def exit_code(error: BaseException) -> int:
    """The process exit status for ``error``: 3 diverged, 2 any other TspikeError, 1 otherwise."""
    for kind, code in EXIT_CODES.items():
        if isinstance(error, kind):
            return code
    return 1
