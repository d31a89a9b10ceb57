"""The per-chunk task of a run (on a Dask worker: a thread or a process): read the chunk's frames,
compare every pair, and write the whole chunk to the store, status last.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from dataclasses import dataclass, field

import numpy as np

from .. import backend as _backend
from ..errors import ConfigError, GpudiffError
from ..options import CompareOptions
from ._progress import _Ticker
from ._signals import _STOP

__all__ = ["ChunkResult", "process_chunk"]


@dataclass
class ChunkResult:
    chunk: int
    done: int = 0
    failed: int = 0
    abandoned: bool = False
    failures: list = field(default_factory=list)
    seconds: float = 0.0
    #: Why the chunk could not be written (disk full...), from a Dask worker process: returned, not
    #: raised, so the worker logs no traceback; the run raises it (:func:`raise_write_error`).
    write_error: str = ""
    write_exit: int = 0


def raise_write_error(results) -> None:
    """Raise the first chunk write failure a worker returned, as the one-line error it was."""
    from ..errors import EXIT_INTERRUPTED, InputError, StorageFull  # noqa: PLC0415

    for r in results:
        if getattr(r, "write_error", ""):
            raise (StorageFull if r.write_exit == EXIT_INTERRUPTED else InputError)(r.write_error)


def _in_dask_worker() -> bool:
    try:
        from distributed import get_worker  # noqa: PLC0415

        get_worker()
        return True
    except Exception:  # noqa: BLE001 (not installed, or not in a worker)
        return False


def process_chunk(source, c: int, start: int, refs, movs, options: CompareOptions, out, save_maps=(),
                  stop: threading.Event | None = None, seq: dict | None = None, prefetch: int = 0) -> ChunkResult:
    """Compare every item of chunk ``c`` (items ``start, start+1, ...`` pairing frames ``refs[k]``
    and ``movs[k]``) and write the chunk to the store ``out`` (a path, or a remote store's
    :class:`~gpudiff.engine._store.StoreRef`), status last; ``prefetch`` frames are read
    ahead on as many threads (see :class:`_ChunkFrames`)."""
    from ..pair._compare import _compare_arrays  # noqa: PLC0415
    from ._schema import metric_columns  # noqa: PLC0415

    stop = _STOP if stop is None else stop
    t0 = time.perf_counter()
    res = ChunkResult(c)
    if stop.is_set():
        res.abandoned = True
        return res
    store = _open_store(out)
    refs = np.asarray(refs, dtype=np.int64)
    movs = np.asarray(movs, dtype=np.int64)
    n = len(refs)
    names = metric_columns(options)
    seq = seq or {}
    columns, maps = _empty_columns(store, n, names, options, save_maps, seq)
    status = np.zeros(n, dtype=np.uint8)
    errors = [""] * n

    xp = _backend.resolve_backend(options.backend)
    frames = _ChunkFrames(source, xp, refs.tolist(), movs.tolist(), prefetch=prefetch)

    from ..pair._sums_numba import serial_kernels  # noqa: PLC0415

    # On the CPU the parallelism is Dask's (a chunk per thread): each task runs the fused pass on
    # its own thread, with no lock and no second pool of threads competing for the cores.
    cpu_serial = serial_kernels() if not _backend.is_cupy(xp) else contextlib.nullcontext()
    ticker = _Ticker(c)
    try:
        with _backend.device_stream(xp), cpu_serial:  # a stream per task: tasks on other threads overlap
            for k, (r, m) in enumerate(zip(refs.tolist(), movs.tolist())):
                if stop.is_set():
                    res.abandoned = True  # nothing of this chunk is written: it stays pending
                    return res
                try:
                    _compare_item(_compare_arrays, frames, r, m, k, options, xp, names, columns, maps, seq)
                    status[k] = 1
                    res.done += 1
                except Exception as exc:  # a bug must not lose the batch: record it, continue
                    status[k] = 2
                    errors[k] = _item_error(exc)
                    res.failed += 1
                if errors[k]:
                    res.failures.append((int(start + k), errors[k]))
                ticker.item(status[k] == 1)
                frames.release(k, r, m)
    finally:
        frames.close()
    columns.update(maps)
    try:
        store.write_chunk(c, columns, status, errors)
    except GpudiffError as exc:
        if not _in_dask_worker():
            raise
        res.write_error, res.write_exit = str(exc), exc.exit_code
        res.abandoned = True  # not written: it stays pending
        return res
    res.seconds = time.perf_counter() - t0
    return res


def _empty_columns(store, n: int, names, options: CompareOptions, save_maps, seq: dict) -> tuple[dict, dict]:
    """The chunk's columns and maps (``maps/...``), NaN until their items are compared."""
    columns = {name: np.full(n, np.nan) for name in names}
    if options.align:
        columns["shift"] = np.full((n, 2), np.nan)
    maps = {}
    if "diff" in save_maps:
        h, w = _frame_hw(store)
        maps["maps/diff"] = np.full((n, h, w), np.nan, dtype=np.float32)
    if seq.get("flow"):
        columns["flow_mean"] = np.full(n, np.nan)
        columns["flow_p95"] = np.full(n, np.nan)
        if seq["flow_check"]:
            columns["flow_valid"] = np.full(n, np.nan)
        if "flow" in save_maps:
            h, w = _frame_hw(store)
            maps["maps/flow"] = np.full((n, h, w, 2), np.nan, dtype=np.float32)
            if seq["flow_check"]:
                maps["maps/flow_valid"] = np.zeros((n, h, w), dtype=bool)
    return columns, maps


class _ChunkFrames:
    """The frames of one chunk's items, on the device: each read (and moved there) once, and dropped
    (with its memoised histogram) after the last item of the chunk that uses it. A frame that cannot
    be read raises its error for every item that uses it.

    With ``prefetch`` N > 0, up to N frames are read ahead on N threads, in the order the items use
    them, so a high-latency store (an object store: tens of ms per request) has N requests in
    flight while the frames before are compared. Host memory: at most N frames beyond the ones in use.
    """

    def __init__(self, source, xp, refs: list, movs: list, prefetch: int = 0):
        from ..pair._compare import HistogramMemo  # noqa: PLC0415

        self.source = source
        self.xp = xp
        self.cache: dict[int, object] = {}
        self.memo = HistogramMemo()  # a frame shared by two pairs has its histogram counted once
        self.last_use = {}
        order = {}
        for k, (r, m) in enumerate(zip(refs, movs)):
            order.setdefault(r, None)
            order.setdefault(m, None)
            self.last_use[r] = k
            self.last_use[m] = k
        self._order = list(order)  # distinct frames, by first use
        self._next = 0
        self._ahead: dict = {}
        self._depth = max(0, int(prefetch or 0))
        self._pool = None
        if self._depth and len(self._order) > 1:
            from concurrent.futures import ThreadPoolExecutor  # noqa: PLC0415

            self._pool = ThreadPoolExecutor(min(self._depth, len(self._order)), thread_name_prefix="gpudiff-read")
            self._fill()

    def _fill(self) -> None:
        """Keep ``prefetch`` reads in flight ahead of the frame in use."""
        while self._pool is not None and self._next < len(self._order) and len(self._ahead) < self._depth:
            i = self._order[self._next]
            self._next += 1
            if i not in self.cache and i not in self._ahead:
                self._ahead[i] = self._pool.submit(self.source.read, i)

    def _read(self, i):
        fut = self._ahead.pop(i, None)
        try:
            return fut.result() if fut is not None else self.source.read(i)
        finally:
            self._fill()

    def get(self, i):
        cache = self.cache
        if i not in cache:
            try:
                cache[i] = _backend.to_device(self._read(i), self.xp)  # each frame crosses to the device once
            except GpudiffError as exc:
                cache[i] = exc
            except Exception as exc:  # a decoder's own exception: fail the items, keep going
                cache[i] = GpudiffError(f"{self.source.label(i)}: cannot read ({type(exc).__name__}: {exc})")
        v = cache[i]
        if isinstance(v, BaseException):
            raise v
        return v

    def release(self, k: int, r: int, m: int) -> None:
        """Item ``k`` (frames ``r`` and ``m``) is finished: drop frames no later item uses."""
        for i in (r, m):
            if self.last_use.get(i) == k:
                self.cache.pop(i, None)
                self.memo.forget(i)

    def close(self) -> None:
        """Stop reading ahead (a stopped chunk): queued reads are cancelled, running ones finish."""
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
        self._ahead.clear()


def _compare_item(compare, frames: _ChunkFrames, r: int, m: int, k: int, options: CompareOptions, xp, names,
                  columns: dict, maps: dict, seq: dict) -> None:
    """Compare frames ``r`` and ``m`` (item ``k`` of the chunk) and fill row ``k`` of the columns and maps."""
    a = frames.get(r)
    b = frames.get(m)
    # frames come validated from the source (as compare() validates its inputs)
    result = compare(
        a, b, options, xp, names=("reference", "moving"), diff_map="maps/diff" in maps, memo=frames.memo,
        keys=(r, m),
    )
    for name in names:
        if name.startswith("hist_"):
            v = (result.histogram or {}).get(name[5:])
        else:
            v = getattr(result, name)
        columns[name][k] = np.nan if v is None else v
    if options.align and result.shift is not None:
        columns["shift"][k] = result.shift
    if "maps/diff" in maps:
        r0, r1, c0, c1 = result.window
        dm = result.diff_map
        maps["maps/diff"][k, r0 : r0 + dm.shape[0], c0 : c0 + dm.shape[1]] = dm
    if seq.get("flow"):
        _flow_item(a, b, k, columns, maps, method=seq["flow_method"], radius=seq.get("flow_radius", 7),
                   check=seq["flow_check"])


def _item_error(exc: Exception) -> str:
    """The ``error`` entry of an item that failed with ``exc``."""
    if isinstance(exc, GpudiffError):
        return " ".join(str(exc).split())
    if isinstance(exc, MemoryError):
        return "out of memory comparing this pair: use smaller --chunk, fewer --metrics"
    return f"internal error: {type(exc).__name__}: {' '.join(str(exc).split())}"


def _flow_item(a, b, k, columns, maps, *, method, radius, check):
    """Dense flow of one pair: mean and p95 of its magnitude (over the pixels the backward flow
    confirms, with ``check``, and their share), and the field."""
    from ..sequence._flow import flow_magnitude_stats  # noqa: PLC0415
    from ..sequence._motion import flow_consistency, flow_input, optical_flow  # noqa: PLC0415

    if a.shape[:2] != b.shape[:2]:
        raise GpudiffError(f"flow needs frames of one size: {tuple(a.shape)} vs {tuple(b.shape)}")
    params = {"radius": radius} if method == "lk" else {}
    ga, gb = flow_input(a), flow_input(b)
    flow = optical_flow(ga, gb, method=method, **params)
    valid = flow_consistency(flow, optical_flow(gb, ga, method=method, **params)) if check else None
    stats = flow_magnitude_stats(flow, valid=valid)
    columns["flow_mean"][k] = stats["flow_mean"]
    columns["flow_p95"][k] = stats["flow_p95"]
    xp = _backend.get_namespace(flow)
    if check:
        columns["flow_valid"][k] = float(_backend.to_host(xp.mean(valid, dtype=xp.float64)))  # sync
    if "maps/flow" in maps:
        maps["maps/flow"][k] = _backend.to_host(xp.moveaxis(flow, 0, -1))  # sync
    if "maps/flow_valid" in maps:
        maps["maps/flow_valid"][k] = _backend.to_host(valid)  # sync


_STORES: dict = {}
_STORES_LOCK = threading.Lock()


def _open_store(out):
    """The store, opened once per process (a worker runs many chunks of the same run).

    ``out`` is a local path, or a :class:`~gpudiff.engine._store.StoreRef` (a remote store's URL
    and storage options; a bare URL takes ``GPUDIFF_STORAGE_OPTIONS``). Keyed by path (URL) and
    creation stamp, so a store that was overwritten is opened afresh.
    """
    from ..io._remote import is_remote  # noqa: PLC0415
    from ._store import ResultStore, StoreRef  # noqa: PLC0415

    if isinstance(out, str) and is_remote(out):
        out = StoreRef(out.rstrip("/"), None)
    if isinstance(out, StoreRef):
        key = out.url
        created = _created_stamp(out)
    else:
        key = os.path.abspath(out)
        created = _created_stamp(key)
    with _STORES_LOCK:
        hit = _STORES.get(key)
        if hit is not None and hit[0] == created:
            return hit[1]
        store = out.open("r+") if isinstance(out, StoreRef) else ResultStore.open(out, mode="r+")
        _STORES[key] = (created, store)
        return store


def _created_stamp(path):
    """What changes when the store is made anew: the root ``zarr.json``'s mtime, or for a remote
    store (a StoreRef) its ETag (else LastModified)."""
    if not isinstance(path, str):
        from ..io._remote import get_filesystem, object_fingerprint  # noqa: PLC0415

        try:
            fs, root = get_filesystem(path.url, path._storage_options)
            key = f"{root.rstrip('/')}/zarr.json"
            fs.invalidate_cache(key)
            return object_fingerprint(fs.info(key))
        except Exception:  # noqa: BLE001 (the open that follows says what is wrong)
            return None
    try:
        return os.stat(os.path.join(path, "zarr.json")).st_mtime_ns
    except OSError:
        return None


def _frame_hw(store) -> tuple[int, int]:
    shape = store.attrs.get("frame_shape")
    if not shape:
        raise ConfigError("--save-maps needs frames of one known shape; this source has none")
    return int(shape[0]), int(shape[1])
