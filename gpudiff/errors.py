"""Typed errors. The CLI turns each into one line on stderr and an exit code; a traceback is a bug.

Every message names what was wrong (the file, the shapes, the value) and says the fix.
"""

from __future__ import annotations

__all__ = [
    "GpudiffError",
    "InputError",
    "ConfigError",
    "BackendUnavailable",
    "StorageFull",
    "EXIT_OK",
    "EXIT_FAILED_ITEMS",
    "EXIT_USAGE",
    "EXIT_INTERRUPTED",
]

#: Everything done.
EXIT_OK = 0
#: Finished, but some items failed (recorded, with reasons).
EXIT_FAILED_ITEMS = 1
#: Usage, configuration or input errors found before starting.
EXIT_USAGE = 2
#: Interrupted (SIGTERM, time limit): resume later.
EXIT_INTERRUPTED = 75


class GpudiffError(Exception):
    """Base class of every error gpudiff raises on purpose."""

    exit_code = EXIT_USAGE


class InputError(GpudiffError, ValueError):
    """An input (file or array) cannot be used as given."""


class ConfigError(GpudiffError, ValueError):
    """Options that contradict each other or are out of range."""


class StorageFull(InputError):
    """The disk (or a quota) filled up while writing: what was finished is kept; free space and
    rerun the same command to resume. Exit code 75, as an interruption (the run is resumable)."""

    exit_code = EXIT_INTERRUPTED


class BackendUnavailable(GpudiffError, RuntimeError):
    """The requested array backend (CuPy, a CUDA device) is not there."""
