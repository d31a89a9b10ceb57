"""Running a plan's chunks on Dask: one task per chunk on the chosen scheduler (threads, sync,
``local:N`` processes, ``cuda`` or a ``tcp://`` cluster), progress from the tasks, and SIGTERM/SIGINT
to stop taking new work.
"""

from __future__ import annotations

import contextlib
import os
from typing import TYPE_CHECKING

from ..errors import ConfigError
from ._chunk import ChunkResult, process_chunk
from ._plan import Plan
from ._progress import _TICK_TOPIC
from ._signals import _STOP, _install_stop_handlers, _restore_handlers

if TYPE_CHECKING:  # for the annotations only
    from ._runner import RunConfig


def _execute(cfg: RunConfig, source, plan: Plan, chunks, options, progress) -> list[ChunkResult]:
    """Run the chunk tasks on the chosen Dask scheduler; SIGTERM/SIGINT stop taking new work."""
    import dask  # noqa: PLC0415

    if not chunks:
        return []
    # The source is one node of the graph (shipped to each worker once, not with every task); each
    # task carries only its own items.
    src = dask.delayed(source, name=f"gpudiff-source-{os.getpid()}-{id(source)}", traverse=False)
    out = _store_out(cfg)
    tasks = []
    for c in chunks:
        s = plan.chunk_slice(c)
        tasks.append(dask.delayed(_task, pure=False)(src, c, s.start, plan.reference[s], plan.moving[s],
                                                     options, out, cfg.save_maps, _seq(cfg),
                                                     _prefetch(cfg)))
    old = _install_stop_handlers()
    try:
        sched = (cfg.scheduler or "threads").strip()
        if sched in ("threads", "sync"):
            from dask.callbacks import Callback  # noqa: PLC0415

            class _CB(Callback):
                def _posttask(self, key, result, dsk, state, worker_id):
                    if isinstance(result, ChunkResult):
                        progress.update(result)

            with _CB():
                kw = {"num_workers": cfg.workers} if (sched == "threads" and cfg.workers) else {}
                return list(dask.compute(*tasks, scheduler=sched, **kw))
        return _execute_distributed(sched, cfg, tasks, progress)
    finally:
        _restore_handlers(old)


def _store_out(cfg: RunConfig):
    """The store as the tasks get it: its path, or for a URL a StoreRef carrying the storage options
    (in memory, pickled to workers: never printed)."""
    from ..io._remote import is_remote, resolve_storage_options  # noqa: PLC0415

    if not is_remote(cfg.out):
        return cfg.out
    from ._store import StoreRef  # noqa: PLC0415

    return StoreRef(cfg.out.rstrip("/"), resolve_storage_options(getattr(cfg, "storage_options", None)))


def _seq(cfg: RunConfig) -> dict:
    return {"flow": cfg.flow, "flow_radius": cfg.flow_radius, "flow_method": cfg.flow_method,
            "flow_check": cfg.flow_check, "events": cfg.events, "event_options": cfg.event_options}


#: Frames read ahead per chunk task from an object store or web server (``--prefetch``'s default
#: there): enough requests in flight to hide tens of ms of latency per request.
REMOTE_PREFETCH = 8


def _prefetch(cfg: RunConfig) -> int:
    """``--prefetch``, or its default: REMOTE_PREFETCH for a URL source, 0 (read in turn) for local
    files, whose reads are not latency-bound and whose threads would compete with Dask's."""
    if cfg.prefetch is not None:
        return cfg.prefetch
    from ..io._remote import is_remote  # noqa: PLC0415

    return REMOTE_PREFETCH if is_remote(cfg.source) else 0


def _task(source, c, start, refs, movs, options, out, save_maps, seq=None, prefetch=0):
    """The Dask task: the module-level stop event is per process (a worker's is never set)."""
    return process_chunk(source, c, start, refs, movs, options, out, save_maps, seq=seq, prefetch=prefetch)


#: Seconds to wait for a ``--scheduler tcp://...`` to answer before giving up with a one-line error.
CONNECT_TIMEOUT_S = 10


def _connect(Client, address: str):
    """A client of the running scheduler at ``address``, or a one-line ConfigError naming it and the
    fix when none answers within CONNECT_TIMEOUT_S."""
    try:
        return Client(address, timeout=CONNECT_TIMEOUT_S)
    except (OSError, TimeoutError, ValueError) as exc:
        why = " ".join(str(exc).split()) or type(exc).__name__
        if len(why) > 160:
            why = why[:157] + "..."
        raise ConfigError(
            f"--scheduler {address}: no Dask scheduler answered there within {CONNECT_TIMEOUT_S} s ({why}): "
            "start one (`dask scheduler`, then `dask worker ADDRESS`), fix the address, or drop --scheduler "
            "to run on local threads"
        ) from None


def _execute_distributed(sched: str, cfg: RunConfig, tasks, progress) -> list[ChunkResult]:
    try:
        from dask.distributed import Client, LocalCluster, as_completed  # noqa: PLC0415
    except ImportError:
        raise ConfigError(f"--scheduler {sched}: install dask[distributed] for distributed runs") from None
    cluster = None
    if sched.startswith("local:"):
        try:
            n = int(sched.split(":", 1)[1])
        except ValueError:
            raise ConfigError(f"--scheduler {sched}: write local:N with N worker processes") from None
        cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=None)
        client = Client(cluster)
    elif sched == "cuda":
        try:
            from dask_cuda import LocalCUDACluster  # noqa: PLC0415
        except ImportError:
            raise ConfigError("--scheduler cuda needs dask-cuda (one worker per GPU): pip install dask-cuda") from None
        cluster = LocalCUDACluster()
        client = Client(cluster)
    elif "://" in sched:
        client = _connect(Client, sched)
    else:
        raise ConfigError(f"--scheduler {sched!r}: use threads, local:N, cuda or tcp://host:port")
    results = []

    def on_tick(event):  # a worker's per-item progress (see _Ticker)
        msg = event[1] if isinstance(event, tuple) else event
        with contextlib.suppress(Exception):
            progress.tick(int(msg["chunk"]), int(msg["done"]), int(msg["failed"]))

    try:
        with contextlib.suppress(Exception):  # older distributed: chunk-level progress only
            client.subscribe_topic(_TICK_TOPIC, on_tick)
        futures = client.compute(tasks)
        for fut in as_completed(futures):
            if _STOP.is_set():
                client.cancel([f for f in futures if not f.done()])
                break
            try:
                r = fut.result()
            except Exception:  # noqa: BLE001 - a chunk whose worker kept dying: left pending
                continue
            results.append(r)
            progress.update(r)
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
    return results
