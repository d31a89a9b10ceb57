"""Reading one source from several threads at once (a Dask worker's threads share its source)."""

from __future__ import annotations

import threading


def read_from_threads(src, indices, threads=4) -> dict:
    """``{index: [array, ...]}``: ``indices`` read by ``threads`` threads started together, each in
    its own interleaving (its share forwards, then its share of the reversed list); the first
    exception of any thread fails the caller's test."""
    indices = list(indices)
    out, errors = {}, []
    barrier = threading.Barrier(threads)

    def work(k):
        try:
            barrier.wait()
            for i in indices[k::threads] + indices[::-1][k::threads]:
                out.setdefault(i, []).append(src.read(i))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    pool = [threading.Thread(target=work, args=(k,)) for k in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    assert not errors, errors
    return out
