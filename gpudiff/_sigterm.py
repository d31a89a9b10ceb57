"""SIGTERM around ``gpudiff run`` as a process: exit 75 (resumable), never the default 143.

:func:`gpudiff.run` stops on SIGTERM itself (:mod:`gpudiff.engine._signals`) while it runs. Around
it, a scheduler's SIGTERM would otherwise kill the process with 143, which a job system reads as a
failure, not as "requeue me". This guard covers the rest of the process's life, in three phases:

- ``starting`` (from ``import gpudiff`` when the process is ``python -m gpudiff run`` or the
  ``gpudiff run`` script, through argument parsing): nothing is written yet, so the process ends
  at once with 75 and one line, ``gpudiff run: interrupted before starting: rerun to resume``;
- ``running`` (``run`` called; its own handlers stand in for this one while it runs, this one
  records a signal before and after them): the command line then ends with 75;
- ``exiting`` (``main`` returned; the interpreter is shutting down): flush and end with 75.

Standard library only: ``gpudiff/__init__`` imports it first thing, and importing it installs the
guard when the process is ``gpudiff run`` (:func:`launched_as_run`).
"""

from __future__ import annotations

import os
import signal
import sys
import threading

__all__ = ["START_MESSAGE", "launched_as_run", "install", "uninstall", "set_phase", "received"]

#: The line printed when SIGTERM arrives before the run started.
START_MESSAGE = "interrupted before starting: rerun to resume"
#: Exit code of an interrupted run (gpudiff.errors.EXIT_INTERRUPTED; not imported: stdlib only).
_EXIT_INTERRUPTED = 75

_state = {"phase": None, "received": False}


def launched_as_run(orig_argv=None, argv=None) -> bool:
    """True when this process is ``python [...] -m gpudiff run ...`` or the ``gpudiff run`` script."""
    orig = list(getattr(sys, "orig_argv", []) if orig_argv is None else orig_argv)
    if "-m" in orig:
        i = orig.index("-m")
        if orig[i + 1:i + 3] == ["gpudiff", "run"]:
            return True
    argv = list(sys.argv if argv is None else argv)
    return bool(argv) and os.path.basename(argv[0]) == "gpudiff" and argv[1:2] == ["run"]


def install() -> bool:
    """Install the guard (phase ``starting``) unless it is installed; main thread only."""
    if threading.current_thread() is not threading.main_thread():
        return False
    if _state["phase"] is None:
        signal.signal(signal.SIGTERM, _on_sigterm)
        _state["phase"] = "starting"
        _state["received"] = False
    return True


def uninstall() -> None:
    """Back to the default SIGTERM action (a command other than run)."""
    if _state["phase"] is not None and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
    _state["phase"] = None


def set_phase(phase: str) -> None:
    """``running`` or ``exiting``; nothing when the guard is not installed (``main(argv)`` in tests)."""
    if _state["phase"] is not None:
        _state["phase"] = phase


def received() -> bool:
    """True when SIGTERM arrived while the guard was in phase ``running``."""
    return bool(_state["received"])


def _on_sigterm(signum, frame):
    phase = _state["phase"]
    if phase == "starting":
        _write(f"gpudiff run: {START_MESSAGE}\n")
        os._exit(_EXIT_INTERRUPTED)
    _state["received"] = True
    if phase == "exiting":
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:  # noqa: BLE001, S110 - a closed stream at exit: nothing to flush
                pass
        _write("gpudiff run: interrupted while exiting: rerun the same command to resume\n")
        os._exit(_EXIT_INTERRUPTED)


def _write(text: str) -> None:
    try:
        os.write(2, text.encode())
    except OSError:
        pass


if launched_as_run():
    install()
