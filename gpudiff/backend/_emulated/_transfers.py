"""Host <-> device transfers: the log a test reads to hold the engine to one upload per frame."""

from __future__ import annotations

import contextlib
import threading


class TransferLog:
    """Host <-> device copies seen while active: counts and bytes per direction, with call tags."""

    def __init__(self):
        self.h2d_count = self.h2d_bytes = self.d2h_count = self.d2h_bytes = 0
        self.events: list[tuple[str, int, str]] = []

    def add(self, direction: str, nbytes: int, tag: str):
        if direction == "h2d":
            self.h2d_count += 1
            self.h2d_bytes += nbytes
        else:
            self.d2h_count += 1
            self.d2h_bytes += nbytes
        if len(self.events) < 100_000:
            self.events.append((direction, nbytes, tag))


_logs: list[TransferLog] = []
_log_lock = threading.Lock()


def _record(direction: str, nbytes: int, tag: str) -> None:
    if _logs:
        with _log_lock:
            for log in _logs:
                log.add(direction, int(nbytes), tag)


@contextlib.contextmanager
def transfers():
    """``with transfers() as log:`` counts every host <-> device copy made inside (all threads)."""
    log = TransferLog()
    with _log_lock:
        _logs.append(log)
    try:
        yield log
    finally:
        with _log_lock:
            _logs.remove(log)
