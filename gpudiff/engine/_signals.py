"""Stopping a run: SIGTERM or SIGINT sets one process-wide event, :data:`_STOP`, that the chunk tasks
(between items), the schedulers (between chunks) and the sequence passes (between chunks) read.

``_STOP`` is one object, defined here only: every reader imports it from this module. A Dask
worker process has its own, never set: a distributed run stops by cancelling the chunks not yet done.
"""

from __future__ import annotations

import signal
import threading

_STOP = threading.Event()


def _install_stop_handlers():
    if threading.current_thread() is not threading.main_thread():
        return None

    def _stop(signum, frame):
        _STOP.set()

    old = {}
    for sig in (signal.SIGTERM, signal.SIGINT):
        old[sig] = signal.signal(sig, _stop)
    return old


def _restore_handlers(old):
    if not old:
        return
    for sig, h in old.items():
        signal.signal(sig, h)
