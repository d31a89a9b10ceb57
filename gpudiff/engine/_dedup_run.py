"""``dedup`` over a whole source, in parallel: the same decisions as :class:`Deduplicator`, on Dask.

The consecutive scores and frame checksums of a block of frames run as Dask tasks, then a cheap
walk decides; where the last kept frame is not the previous one, the scores against it are computed
for a window of the next frames at once (speculatively, the window growing while nothing is kept).
The maths (:func:`change_score`, the rules, :class:`Deduplicator`) lives in
:mod:`gpudiff.sequence._dedup`; this module only schedules it.
"""

from __future__ import annotations

import math
import os
import threading
import time

import numpy as np

from .. import backend as _backend
from ..errors import GpudiffError
from ..sequence._dedup import (
    Decision,
    DedupOptions,
    DedupResult,
    Deduplicator,
    _identical_score,
    _same_frame,
    change_score,
    estimate_noise,
    frame_checksum,
)

__all__ = ["dedup"]

class _FrameCache:
    """Decoded frames shared by the tasks of one run (threads), up to a byte budget, least
    recently used out first: a speculative window re-reads the frames the round before decoded,
    and a video would otherwise seek and decode them again."""

    def __init__(self, source, budget_bytes: int = 512 << 20):
        self.source = source
        self.budget = budget_bytes
        self._d: dict = {}
        self._sums: dict = {}
        self._bytes = 0
        self._lock = threading.Lock()

    def read(self, i):
        with self._lock:
            hit = self._d.pop(i, None)
            if hit is not None:
                self._d[i] = hit  # most recent last
                return hit
        frame = self.source.read(i)
        with self._lock:
            if i not in self._d:
                self._d[i] = frame
                self._bytes += frame.nbytes
                while self._bytes > self.budget and len(self._d) > 1:
                    old = next(iter(self._d))
                    self._bytes -= self._d.pop(old).nbytes
        return frame

    def label(self, i):
        return self.source.label(i)

    def checksum(self, i, frame) -> int:
        with self._lock:
            c = self._sums.get(i)
        if c is None:
            c = frame_checksum(frame)
            with self._lock:
                self._sums[i] = c
        return c


def _scores_task(source, pairs, options: DedupOptions, backend: str):
    """Scores of (reference, moving) index pairs and checksums of the moving frames, in one task.

    Returns a list of (ref, mov, ChangeScore | None, checksum | None, error | None)."""
    xp = _backend.resolve_backend(backend)
    frames: dict = {}
    noise: dict = {}
    checksum = source.checksum if hasattr(source, "checksum") else (lambda i, f: frame_checksum(f))

    def get(i):
        if i not in frames:
            try:
                host = source.read(i)
                frames[i] = (host, _backend.to_device(host, xp), None)
            except GpudiffError as exc:
                frames[i] = (None, None, str(exc))
            except Exception as exc:  # a decoder's own error
                frames[i] = (None, None, f"{source.label(i)}: cannot read ({type(exc).__name__}: {exc})")
        return frames[i]

    out = []
    for r, m in pairs:
        hm, dm, em = get(m)
        if em is not None:
            out.append((r, m, None, None, em))
            continue
        csum = checksum(m, hm)
        if r < 0:
            out.append((r, m, None, csum, None))
            continue
        hr, dr, er = get(r)
        if er is not None:
            out.append((r, m, None, csum, er))
            continue
        try:
            if options.rule != "metric" and csum == checksum(r, hr) and _same_frame(hr, hm):
                out.append((r, m, _identical_score(options), csum, None))
                continue
            if r not in noise and options.rule == "pixels" and options.noise == "auto":
                noise[r] = estimate_noise(dr)
            s = change_score(dr, dm, options=options, noise=noise.get(r))
            out.append((r, m, s, csum, None))
        except GpudiffError as exc:
            out.append((r, m, None, csum, str(exc)))
    return out


def _run_tasks(source, pair_lists, options, backend, scheduler):
    """Score the pair lists, one Dask task each; a single list runs here (no scheduling)."""
    import dask  # noqa: PLC0415  (only when there is more than one task)

    lists = [np.asarray(pl, dtype=np.int64).reshape(-1, 2) for pl in pair_lists if len(pl)]
    if not lists:
        return []
    if len(lists) == 1:
        return _scores_task(source, lists[0].tolist(), options, backend)
    src = dask.delayed(source, traverse=False)
    tasks = [dask.delayed(_scores_task, pure=False)(src, pl, options, backend) for pl in lists]
    results = dask.compute(*tasks, scheduler=scheduler)
    return [x for r in results for x in r]


class _Pacer:
    """How many tasks a round of pairs deserves: one per ~20 ms of work, at most ``workers``
    (a Dask round costs a few milliseconds; cheap pairs, exact repeats above all, run here)."""

    def __init__(self, workers: int):
        self.workers = workers
        self.per_pair = None

    def parts(self, n_pairs: int) -> int:
        if self.per_pair is None:
            return self.workers
        return int(max(1, min(self.workers, round(n_pairs * self.per_pair / 0.02))))

    def measured(self, n_pairs: int, seconds: float, parts: int) -> None:
        if n_pairs:
            est = seconds * parts / n_pairs  # the CPU seconds of one pair, roughly
            self.per_pair = est if self.per_pair is None else 0.5 * (self.per_pair + est)


def _split(pairs, parts):
    """``pairs`` in at most ``parts`` consecutive lists of (nearly) equal length."""
    size = max(1, math.ceil(len(pairs) / parts))
    return [pairs[i : i + size] for i in range(0, len(pairs), size)]


class _Scorer:
    """Scores (reference, moving) pairs in one round of Dask tasks, as many as the pacer says."""

    def __init__(self, source, options: DedupOptions, backend: str, scheduler, pacer: _Pacer):
        self.source = source
        self.options = options
        self.backend = backend
        self.scheduler = scheduler
        self.pacer = pacer

    def __call__(self, pairs) -> list:
        """(ref, mov, ChangeScore | None, checksum | None, error | None) of each pair."""
        parts = self.pacer.parts(len(pairs))
        t_round = time.perf_counter()
        res = _run_tasks(self.source, _split(pairs, parts), self.options, self.backend, self.scheduler)
        self.pacer.measured(len(pairs), time.perf_counter() - t_round, parts)
        return res


def _walk_sequential(judge: Deduplicator, source, start: int, stop: int, emit) -> None:
    """One core: read and decide each frame in turn (the least work); a frame that cannot be read
    or scored is failed and the walk goes on."""
    for i in range(start, stop):
        try:
            frame = source.read(i)
        except GpudiffError as exc:
            emit(judge.fail(i, str(exc)))
            continue
        except Exception as exc:  # a decoder's own error
            emit(judge.fail(i, f"{source.label(i)}: cannot read ({type(exc).__name__}: {exc})"))
            continue
        try:
            emit(judge.decide(i, frame, checksum=source.checksum(i, frame)))
        except GpudiffError as exc:
            emit(judge.fail(i, str(exc)))


class _ParallelWalk:
    """Decisions of the frames in blocks of ``block``: the consecutive scores of a block in one
    parallel round, then a walk in frame order. A frame whose predecessor is the last kept frame
    takes its consecutive score; otherwise (the last kept frame is further back) it and the next
    frames of a window are scored against the last kept frame at once, speculatively."""

    def __init__(self, judge: Deduplicator, source, score: _Scorer, emit, *, workers: int, block: int):
        self.judge = judge
        self.source = source
        self.score = score
        self.emit = emit
        self.workers = workers
        self.block = block

    def run(self, start: int, stop: int) -> None:
        """Decide frames ``start`` .. ``stop - 1``. The consecutive round is skipped while most
        frames of the block before were dropped: then only the windows against the last kept frame
        are useful."""
        t = start
        keep_rate = 1.0
        while t < stop:
            t1 = min(stop, t + self.block)
            got: dict = {}
            if keep_rate > 0.5 or self.judge.last_index < 0:
                got = self._consecutive(t, t1)
            kept = self._decide_block(t, t1, got)
            keep_rate = kept / max(1, t1 - t)
            t = t1

    def _consecutive(self, t: int, t1: int) -> dict:
        """Frames ``t`` .. ``t1 - 1`` each against its predecessor (the reference whenever the
        previous frame is kept; frame 0: only its checksum), with its checksum, in parallel:
        frame -> (reference, score, checksum, error)."""
        pairs = [(i - 1 if i > 0 else -1, i) for i in range(t, t1)]
        return {m: (r, s, c, e) for r, m, s, c, e in self.score(pairs)}

    def _window_against(self, k: int, i: int, hi: int, got: dict) -> None:
        """Frames ``i`` .. ``hi - 1`` against the last kept frame ``k``, at once, into ``got``."""
        for rr, mm, ss, cc, ee in self.score([(k, j) for j in range(i, hi)]):
            got[mm] = (rr, ss, cc, ee)

    def _decide_block(self, t: int, t1: int, got: dict) -> int:
        """Decide frames ``t`` .. ``t1 - 1`` in order; returns how many were kept. The speculative
        window doubles (up to ``4 * block`` frames) while nothing is kept and falls back to
        ``max(2, workers)`` on a keep."""
        i = t
        kept = 0
        window = max(2, self.workers)
        while i < t1:
            k = self.judge.last_index
            entry = got.get(i)
            if entry is None or (k >= 0 and entry[0] != k):
                self._window_against(k, i, min(t1, i + window), got)
                window = min(4 * self.block, window * 2)
                entry = got[i]
            d = self._decide(i, k, entry)
            if d.keep:
                kept += 1
                window = max(2, self.workers)
            self.emit(d)
            i += 1
        return kept

    def _decide(self, i: int, k: int, entry) -> Decision:
        """Frame ``i``'s decision from its ``entry`` (reference, score, checksum, error) against the
        last kept frame ``k`` (-1: none yet)."""
        _, s, c, e = entry
        if e is not None and (c is None or k >= 0):  # the frame, or its reference, is unreadable
            return self.judge.fail(i, e)
        if k < 0:  # the first readable frame: kept, whatever its predecessor was
            return self.judge.decide(i, self.source.read(i), checksum=c)
        frame = self.source.read(i) if s.changed else None
        return self.judge.decide(i, frame, score=s, checksum=c)


def dedup(
    source,
    *,
    options: DedupOptions | None = None,
    start: int = 0,
    stop: int | None = None,
    state: dict | None = None,
    scheduler="threads",
    workers: int | None = None,
    block: int = 256,
    on_decision=None,
) -> DedupResult:
    """Keep/drop every frame of ``source`` (anything with ``len`` and ``read(i)``), in parallel.

    Parameters
    ----------
    source : gpudiff.io.Source
    options : DedupOptions, optional
    start, stop : int
        Decide frames ``start`` .. ``stop - 1`` (a resumed run starts after its last decided frame,
        with ``state``).
    state : dict, optional
        :meth:`Deduplicator.state` of the frames before ``start``.
    scheduler : str
        A Dask scheduler for the score tasks ('threads', 'sync', or a distributed Client).
    workers : int, optional
        Parallel tasks per round (default: the CPU count).
    block : int
        Frames whose consecutive scores are computed per round.
    on_decision : callable, optional
        Called with each :class:`Decision`, in frame order, as soon as it is final (for a store
        or a keep folder written while the run goes on).

    Returns
    -------
    DedupResult
        Decisions of frames ``start`` .. ``stop - 1``; equal to :class:`Deduplicator` fed the same
        frames one by one.
    """
    options = options or DedupOptions()
    n = len(source)
    stop = n if stop is None else min(int(stop), n)
    workers = int(workers or os.cpu_count() or 1)
    backend = _backend.backend_name(_backend.resolve_backend(options.backend))
    source = _FrameCache(source) if not isinstance(source, _FrameCache) else source
    judge = Deduplicator(options, load=source.read)
    if state:
        judge.restore(state)
    decisions: list[Decision] = []

    def emit(d: Decision):
        decisions.append(d)
        if on_decision is not None:
            on_decision(d)

    if workers == 1:  # one core: the sequential walk is the least work
        _walk_sequential(judge, source, start, stop, emit)
    else:
        score = _Scorer(source, options, backend, scheduler, _Pacer(workers))
        _ParallelWalk(judge, source, score, emit, workers=workers, block=block).run(start, stop)
    return DedupResult.from_decisions(decisions)
