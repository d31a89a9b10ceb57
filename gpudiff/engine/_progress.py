"""Progress of a run: a bar on a terminal, plain lines or JSON lines in logs (:class:`_Progress`), fed
per item from inside the chunk tasks (:class:`_Ticker`) and per chunk by the scheduler.
"""

from __future__ import annotations

import contextlib
import json
import math
import sys
import threading
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # for the annotation only
    from ._chunk import ChunkResult


class _Progress:
    """Progress of a run, stage by stage (``compare`` items, then the ``corrupt/cuts`` and
    ``background`` passes' frames): a bar on a terminal, plain lines (or JSON lines) in logs.

    Counts arrive per item from inside the tasks (:class:`_Ticker`), and chunk results reconcile
    them; a timer thread writes a log line every ``every_s`` seconds whatever the chunk length
    (and redraws the bar twice a second), so a slow first chunk is never a silent one.
    """

    def __init__(self, total_items: int, total_chunks: int, *, log_json: bool, bar: bool | None,
                 every_s: float, stream=None):
        self.stream = stream or sys.stderr
        self.total_chunks = total_chunks
        self.log_json = log_json
        self.bar = (self.stream.isatty() if bar is None else bar) and not log_json
        self.every_s = every_s
        self.lock = threading.Lock()
        self.ticked: dict[int, list[int]] = {}  # chunk -> [items, failed] reported by its task so far
        self.chunks = 0
        self.first = None  # (time, items) when the first compared item finished
        self.samples: list[tuple[float, int]] = []  # (time, items) of the compare stage, every >= 20 ms
        self._stage("compare", total_items, "items")
        self.compare_t0 = self.t0
        self.compare_end = None
        self._closed = threading.Event()
        self._timer = threading.Thread(target=self._tick_loop, name="gpudiff-progress", daemon=True)
        self._timer.start()

    def _stage(self, name: str, total: int, unit: str) -> None:
        self.stage_name, self.total_items, self.unit = name, int(total), unit
        self.items = self.failed = 0
        self.t0 = time.monotonic()
        self.last = self.t0
        self.emitted = -1  # the count of the last line written (log mode: no repeats of a still count)

    def warm(self) -> tuple[float | None, float | None]:
        """(start-up seconds, items/s after the first item) of the compare stage."""
        if self.first is None:
            return None, None
        end = self.compare_end if self.compare_end is not None else time.monotonic()
        t1 = self.first[0]
        done = self.compare_items if self.compare_end is not None else self.items
        # the rate over the second half of the time after the first item: items that waited on the
        # first compilation finish in a burst right after it and would inflate a rate from t1
        mid = t1 + 0.5 * (end - t1)
        tm, nm = next(((t, n) for t, n in self.samples if t >= mid), (end, done))
        rate = (done - nm) / (end - tm) if end - tm > 0.05 and done > nm else None
        return t1 - self.compare_t0, rate

    def stage(self, name: str, total: int, unit: str = "frames") -> None:
        """Start the next stage (its own count, rate and ETA); the previous one gets a last line."""
        with self.lock:
            if self.stage_name == "compare":
                self.compare_end, self.compare_items = time.monotonic(), self.items
            self._emit(time.monotonic(), final=True)
            if self.bar:
                print(file=self.stream)
            self._stage(name, total, unit)
            self._emit(self.t0)

    def tick(self, chunk: int, done: int, failed: int) -> None:
        """Items a task has finished (reported from inside it, before its chunk is written)."""
        with self.lock:
            if self.stage_name == "compare":
                now = time.monotonic()
                if self.first is None:
                    self.first = (now, self.items + done + failed)
                if now - self.samples[-1][0] >= 0.02 if self.samples else True:
                    self.samples.append((now, self.items + done + failed))
            t = self.ticked.setdefault(chunk, [0, 0])
            t[0] += done + failed
            t[1] += failed
            self.items += done + failed
            self.failed += failed

    def advance(self, n: int = 1, failed: int = 0) -> None:
        """Frames a sequence pass has finished."""
        with self.lock:
            self.items += n
            self.failed += failed

    def update(self, r: ChunkResult) -> None:
        """A chunk finished (written) or was abandoned: its counts replace what its task ticked."""
        with self.lock:
            t_items, t_failed = self.ticked.pop(r.chunk, (0, 0))
            self.items -= t_items
            self.failed -= t_failed
            if not r.abandoned:
                self.chunks += 1
                self.items += r.done + r.failed
                self.failed += r.failed
            if self.chunks == self.total_chunks:
                self._emit(time.monotonic())

    def _tick_loop(self) -> None:
        period = 0.5 if self.bar else max(0.05, min(self.every_s, 1.0))
        while not self._closed.wait(period):
            with self.lock:
                now = time.monotonic()
                if self.bar or now - self.last >= self.every_s:
                    self._emit(now)

    def _emit(self, now, final=False):
        if not self.bar and self.items == self.emitted and (final and not self.log_json or
                                                            not final and now - self.last < 6 * self.every_s):
            return  # nothing moved: no repeated line (but one at least every minute or so)
        self.last = now
        self.emitted = self.items
        el = max(now - self.t0, 1e-9)
        rate = self.items / el
        left = self.total_items - self.items
        eta = left / rate if rate > 0 else float("nan")
        where = "" if self.stage_name == "compare" else f"{self.stage_name}: "
        if self.log_json:
            print(json.dumps({"event": "stage_done" if final else "progress", "stage": self.stage_name,
                              "items": self.items, "total": self.total_items, "unit": self.unit,
                              "failed": self.failed, "items_per_s": round(rate, 3),
                              "eta_s": None if math.isnan(eta) else round(eta, 1),
                              "elapsed_s": round(el, 1)}), file=self.stream, flush=True)
        elif self.bar:
            frac = self.items / self.total_items if self.total_items else 1.0
            filled = int(30 * frac)
            print(f"\r{where}[{'#' * filled}{'.' * (30 - filled)}] {self.items}/{self.total_items} {self.unit}, "
                  f"{rate:.1f}/s, ETA {_fmt_s(eta)}, {self.failed} failed ", end="", file=self.stream,
                  flush=True)
        else:
            print(f"gpudiff run: {where}{self.items}/{self.total_items} {self.unit}, {rate:.1f} {self.unit}/s, "
                  f"ETA {_fmt_s(eta)}, {self.failed} failed", file=self.stream, flush=True)

    def close(self):
        self._closed.set()
        self._timer.join()
        with self.lock:
            self._emit(time.monotonic(), final=True)
        if self.bar:
            print(file=self.stream)


#: The run's progress in this process (threads/sync schedulers), or None; see :class:`_Ticker`.
_TICK = None
_TICK_TOPIC = "gpudiff-progress"


@contextlib.contextmanager
def _ticking_into(progress):
    """While the chunk tasks run in this process, their :class:`_Ticker` report to ``progress``."""
    global _TICK
    _TICK = progress
    try:
        yield
    finally:
        _TICK = None


class _Ticker:
    """Reports a task's finished items: straight to the run's progress in this process, or, on a
    Dask distributed worker, as worker events (topic ``gpudiff-progress``, batched to one per
    0.25 s) that the client subscribes to."""

    def __init__(self, chunk: int):
        self.chunk = chunk
        self.done = self.failed = 0
        self.sent = (0, 0)
        self.last = time.monotonic()
        self.every = 0.0
        self.sink = None
        progress = _TICK
        if progress is not None:
            self.sink = progress.tick
        else:
            try:
                from distributed import get_worker  # noqa: PLC0415

                worker = get_worker()
            except Exception:  # noqa: BLE001 - not on a distributed worker: nobody to tell
                return
            self.every = 0.25

            def send(c, d, f, _w=worker):
                _w.log_event(_TICK_TOPIC, {"chunk": c, "done": d, "failed": f})

            self.sink = send

    def item(self, ok: bool) -> None:
        if ok:
            self.done += 1
        else:
            self.failed += 1
        if self.sink is None:
            return
        now = time.monotonic()
        if now - self.last >= self.every:
            self.last = now
            d, f = self.done - self.sent[0], self.failed - self.sent[1]
            self.sent = (self.done, self.failed)
            try:
                self.sink(self.chunk, d, f)
            except Exception:  # noqa: BLE001 - progress must never fail an item
                self.sink = None


def _fmt_s(s: float) -> str:
    if not math.isfinite(s):
        return "?"
    s = int(round(s))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"
