"""Reading a result store for the report: one column at a time, in parallel jobs, into digests and
per-metric sections; chunks a crashed run left unlisted are read directly.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import warnings
from dataclasses import dataclass, field

import numpy as np

from ..engine._schema import DONE, METRIC_COLUMNS
from ..engine._store import ResultStore, StoreRef
from ..errors import GpudiffError, InputError
from ._figures import _Figure, _make_figure, _metric_figures
from ._text import _fmt
from . import _digest as rd
from . import _plots as rp


#: Failed items listed one by one on the page (all are counted).
MAX_FAILURES_LISTED = 200
#: Frames with a foreground mask overlaid.
FOREGROUND_EXAMPLES = 4
#: Sources with at most this many frames are fingerprinted to tell whether they changed since the run.
_FINGERPRINT_LIMIT = 10_000

# Per-item 0/1 columns marked on the timelines: page name -> store column.
_FLAG_COLUMNS = {"kept": "keep", "corrupt": "corrupt", "cut": "cut"}
# Float columns that are not metrics to plot on their own.
_NOT_METRICS = {"change_threshold"}
_SEQUENCE_COLUMNS = ("change", "kl_prev", "corrupt_score", "cut_score", "foreground_fraction", "flow_mean", "flow_p95",
                     "flow_valid")
_ORDER = {name: k for k, name in enumerate((*METRIC_COLUMNS, *_SEQUENCE_COLUMNS))}
# Ranking of "most changed": the first of these with a finite value; +1 larger is more changed.
_RANK_PREFERENCE = (
    ("change", 1), ("mse", 1), ("manhattan_per_pixel", 1), ("rmse", 1), ("zero_norm_per_pixel", 1),
    ("max_abs", 1), ("hist_js", 1), ("hist_kl", 1), ("hist_chi2", 1), ("hist_bhattacharyya", 1),
    ("ssim", -1), ("ncc", -1), ("psnr", -1), ("hist_intersection", -1), ("hist_correlation", -1),
    ("kl_prev", 1), ("flow_mean", 1), ("flow_p95", 1), ("flow_valid", -1), ("foreground_fraction", 1), ("manhattan", 1),
    ("zero_norm", 1),
)
_DIRECTION = dict(_RANK_PREFERENCE)


# --------------------------------------------------------------------------------------------------
# reading the store: jobs that each read one column and return something small
# --------------------------------------------------------------------------------------------------
#
# Reading a column costs about 0.17 ms per Zarr chunk in zarr-python's event loop (one core), so a
# million items in chunks of 64 take ~2.7 s per column whatever its dtype. The jobs below are plain
# module-level functions of picklable arguments: run in this process for small stores, or in a
# process pool (one column per job) when the store has many chunks. Each job opens the store itself
# and returns a digest, figures as PNG bytes, or a 1-byte-per-item array: never a float column.


def _open(ref) -> ResultStore:
    """The store of a job: ``ref`` is its path, or a remote store's StoreRef (URL and storage options)."""
    if isinstance(ref, StoreRef):
        return ref.open("r")
    return ResultStore.open(ref)


def _field_names(store) -> dict:
    return {f.name: f for f in store.fields}


def _metric_columns(store) -> list[str]:
    out = []
    for f in store.fields:
        if f.name.startswith("maps/") or f.shape or f.name in _NOT_METRICS or f.dtype == "str":
            continue
        if np.dtype(f.dtype).kind != "f":
            continue
        out.append(f.name)
    return sorted(out, key=lambda n: (_ORDER.get(n, len(_ORDER)), n))


def _thresholds(attrs) -> dict:
    raw = attrs.get("thresholds")
    out = {}
    if isinstance(raw, dict):
        for k, v in raw.items():
            with contextlib.suppress(TypeError, ValueError):
                v = float(v)
                if math.isfinite(v):
                    out[str(k)] = v
    return out


def _read1(store, name, items=None) -> np.ndarray:
    """Column ``name`` (whole, or ``items``): the direct chunk reader for whole numeric columns,
    zarr-python (``ResultStore.read``) for anything else."""
    if items is None:
        fast = _read_chunks_directly(store, name)
        if fast is not None:
            return fast
    return store.read([name], items=items)[name]


def _plain_layout(meta: dict, n_items: int, chunk: int):
    """(dtype, trailing shape, fill) when an array's ``zarr.json`` is the layout ResultStore writes
    (Zarr v3, regular chunks of ``chunk`` items and whole trailing axes, default chunk keys with
    "/", codecs ``bytes`` then ``zstd``, numeric dtype); None otherwise."""
    try:
        if meta.get("zarr_format") != 3 or meta.get("node_type") != "array" or meta.get("storage_transformers"):
            return None
        shape = [int(v) for v in meta["shape"]]
        grid = meta["chunk_grid"]
        chunks = [int(v) for v in grid["configuration"]["chunk_shape"]]
        key = meta["chunk_key_encoding"]
        separator = (key.get("configuration") or {}).get("separator")
        if grid["name"] != "regular" or key["name"] != "default" or separator != "/":
            return None
        if not shape or shape[0] != n_items or chunks[0] != chunk or chunks[1:] != shape[1:]:
            return None
        codecs = meta["codecs"]
        if len(codecs) != 2 or codecs[0]["name"] != "bytes" or codecs[1]["name"] != "zstd":
            return None
        dtype = np.dtype(meta["data_type"])
        if dtype.kind not in "biuf":
            return None
        endian = (codecs[0].get("configuration") or {}).get("endian", "little")
        dtype = dtype.newbyteorder("<" if endian == "little" else ">")
        fill = meta["fill_value"]
        fill = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}.get(fill, fill)
        return dtype, tuple(shape[1:]), fill
    except (KeyError, TypeError, ValueError, IndexError, AttributeError):
        return None


def _read_chunks_directly(store, name: str) -> np.ndarray | None:
    """A whole column read chunk file by chunk file (zstd-decoded in this thread), or None when the
    array's layout is not the plain one (then zarr-python reads it).

    zarr-python spends about 0.17 ms of its event loop per chunk, so a million items in chunks of 64
    take ~2.7 s per column; opening and decoding the 15,625 small files here takes ~0.3 s. Same
    results as ``ResultStore.read``: a chunk never written (or left out by zarr for holding only
    fill values) reads as the fill value, and an unreadable one too, with the same warning.
    """
    if getattr(store, "is_remote", False):
        return None  # an object store: zarr-python reads it (its requests run concurrently)
    try:
        import numcodecs  # noqa: PLC0415

        meta = json.loads((store.path / name / "zarr.json").read_text(encoding="utf-8"))
    except (ImportError, OSError, ValueError):
        return None
    layout = _plain_layout(meta, store.n_items, store.chunk)
    if layout is None:
        return None
    dtype, trailing, fill = layout
    n, ch = store.n_items, store.chunk
    n_chunks = -(-n // ch)
    per_item = int(np.prod(trailing, dtype=np.int64)) if trailing else 1
    nbytes = ch * per_item * dtype.itemsize
    out = np.full((n_chunks * ch, *trailing), fill, dtype=dtype.newbyteorder("="))
    flat = out.reshape(n_chunks, ch * per_item)
    suffix = "/0" * len(trailing)
    base = os.fspath(store.path / name / "c") + "/"
    zstd = numcodecs.Zstd()
    bad = []
    for c in range(n_chunks):
        try:
            with open(f"{base}{c}{suffix}", "rb", buffering=0) as f:
                data = f.readall()
        except FileNotFoundError:
            continue
        except OSError:
            bad.append(c)
            continue
        try:
            raw = zstd.decode(data)
        except Exception:  # noqa: BLE001 (a damaged chunk: like ResultStore.read, fill and warn)
            raw = b""
        if len(raw) != nbytes:
            bad.append(c)
            continue
        flat[c] = np.frombuffer(raw, dtype=dtype)
    if bad:
        warnings.warn(f"{name}: chunk(s) {bad[:10]} unreadable, read as fill values", RuntimeWarning, stacklevel=3)
    return out[:n]


def _values_at(store, name: str, items) -> list:
    """``store[name][i]`` for each item, reading each chunk touched once."""
    items = [int(i) for i in items]
    out = {}
    for c in sorted({i // store.chunk for i in items}):
        sl = store.chunk_slice(c)
        v = _read1(store, name, items=sl)
        for i in items:
            if sl.start <= i < sl.stop:
                out[i] = v[i - sl.start]
    return [out[i] for i in items]


def _extreme(score: np.ndarray, ok: np.ndarray, k: int, *, largest: bool) -> np.ndarray:
    """Indices of the ``k`` largest (smallest) ``score`` among ``ok`` items, most extreme first
    (ties: the lower item first)."""
    idx = np.flatnonzero(ok)
    if idx.size == 0 or k < 1:
        return np.zeros(0, np.int64)
    s = score[idx].astype(np.float64)
    s = np.where(np.isnan(s), -np.inf if largest else np.inf, s)
    key = -s if largest else s
    k = min(k, idx.size)
    part = np.argpartition(key, k - 1)[:k] if k < idx.size else np.arange(idx.size)
    part = part[np.lexsort((idx[part], key[part]))]
    return idx[part].astype(np.int64)


def _job_warnings(caught) -> list[str]:
    out = []
    for w in caught:
        text = " ".join(str(w.message).split())
        if issubclass(w.category, RuntimeWarning) and "unreadable" in text and text not in out:
            out.append(text)
    return out


def _job_summary(path: str, max_failures: int) -> tuple[dict, list]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", RuntimeWarning)
        summary = _open(path).summary(max_failures=max_failures)
    return summary, _job_warnings(caught)


def _job_flag(path: str, name: str) -> tuple[np.ndarray, list]:
    """A 0/1 (or status) column as compact uint8, with any unreadable-chunk warnings."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", RuntimeWarning)
        v = _read1(_open(path), name)
    return np.asarray(v).astype(np.uint8, copy=False), _job_warnings(caught)


def _job_x(path: str) -> tuple[np.ndarray | None, str]:
    """The x of each item: its moving frame for a sequence, else None (the item index).

    For the pairings the plan makes (``consecutive``, ``first``) the moving frame of item ``i`` is
    ``i + 1``; that is checked on the first and last chunk, and the column is read only otherwise.
    """
    store = _open(path)
    names = _field_names(store)
    f = names.get("moving_index")
    if f is None or f.shape or "moving_path" in names or "reference_path" in names:
        return None, "item"
    n = store.n_items
    if store.attrs.get("pairs") in ("consecutive", "first"):
        ok = True
        for c in {0, store.n_chunks - 1}:
            sl = store.chunk_slice(c)
            ok &= bool(np.array_equal(_read1(store, "moving_index", items=sl), np.arange(sl.start + 1, sl.stop + 1)))
        if ok:
            return np.arange(1, n + 1, dtype=np.int64), "moving frame"
    mov = _read1(store, "moving_index").astype(np.int64)
    if mov.size and mov.min() >= 0 and np.all(np.diff(mov) >= 0):
        return mov, "moving frame"
    return None, "item"


@dataclass
class _ColumnJob:
    """Everything a column job needs (picklable; the 1-byte arrays travel, never float columns)."""

    path: str
    name: str
    buckets: rd.Buckets
    done: np.ndarray
    flags: dict
    threshold: float | None
    threshold_column: bool
    top: int
    sign: int
    draw: bool


@dataclass
class _ColumnOut:
    name: str
    digest: rd.ColumnDigest
    figures: list
    note: str | None
    most: np.ndarray
    least: np.ndarray
    foreground_items: np.ndarray | None
    warnings: list


def _job_column(job: _ColumnJob) -> _ColumnOut:
    """Read one metric column, digest it, pick its most/least changed items, draw its two figures."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", RuntimeWarning)
        store = _open(job.path)
        values = _read1(store, job.name)
        tv = _read1(store, "change_threshold") if job.threshold_column else None
        keep = job.flags.get("kept")
        d = rd.digest_column(job.name, values, job.buckets, done=job.done, flags=job.flags, keep=keep,
                             threshold=job.threshold, threshold_values=tv)
        del tv
        ok = job.done & ~np.isnan(values)
        most = least = np.zeros(0, np.int64)
        if job.top:
            score = job.sign * values.astype(np.float64, copy=False)
            most = _extreme(score, ok, job.top, largest=True)
            least = _extreme(score, ok if keep is None else ok & keep, job.top, largest=False)
            del score
        fg = None
        if job.name == "foreground_fraction":
            fg = np.sort(_extreme(values, ok & np.isfinite(values), FOREGROUND_EXAMPLES, largest=True))
        del values, ok
    note, figures = None, []
    if d.empty:
        note = f"{d.name}: no value among the {d.n_done} done items (not computed for them)"
    elif d.constant and d.n_posinf == 0:
        note = f"{d.name} = {_fmt(d.vmin)} for all {d.n_finite} done items with a value"
    elif job.draw:
        figures = _metric_figures(job.buckets, d)
    return _ColumnOut(job.name, d, figures, note, most, least, fg, _job_warnings(caught))


def _job_drift(path: str, buckets: rd.Buckets, done: np.ndarray, cumulative: bool):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", RuntimeWarning)
        shift = _read1(_open(path), "shift")
        ok = done & np.isfinite(shift).all(axis=1)
        if not ok.any():
            return None, _job_warnings(caught)
        a = np.abs(shift[ok])
        top = a.max(axis=0)
        fig = rp.drift_figure(shift, buckets, done=ok, cumulative=cumulative, title="alignment: shift over time")
        n_ok = int(ok.sum())
        del shift, a, ok
    cap = (f"Shift (dy rows, dx columns; pixels) that registers each moving frame onto its reference "
           f"(scikit-image convention), {n_ok} aligned items; largest |dy| {_fmt(top[0])}, |dx| {_fmt(top[1])} px.")
    if cumulative:
        cap += (" Lower panel: the running sum over consecutive pairs, i.e. the drift since the first frame "
                "(items without a shift count as 0).")
    return _make_figure("drift", "drift", "shift", fig, "shift over time", cap), _job_warnings(caught)


class _Now:
    """A finished 'future' for the in-process executor."""

    def __init__(self, fn, args):
        self._value = self._error = None
        try:
            self._value = fn(*args)
        except BaseException as e:  # noqa: BLE001 (re-raised by result(), like a real future)
            self._error = e

    def result(self):
        if self._error is not None:
            raise self._error
        return self._value


class _InProcess:
    def submit(self, fn, *args):
        return _Now(fn, args)

    def shutdown(self, **_kw):
        pass


def _executor(workers: int):
    """A process pool of ``workers`` (spawned: safe with zarr's event-loop thread), or in-process."""
    if workers <= 1:
        return _InProcess()
    import concurrent.futures  # noqa: PLC0415
    import multiprocessing  # noqa: PLC0415

    try:
        return concurrent.futures.ProcessPoolExecutor(max_workers=workers,
                                                      mp_context=multiprocessing.get_context("spawn"))
    except (OSError, ValueError, NotImplementedError):
        return _InProcess()


def _auto_workers(store: ResultStore, n_columns: int) -> int:
    """Processes for the jobs: 1 (this one) unless reading the store is worth seconds and there are
    cores to spare.

    Estimated reading time: ``store.summary()`` through zarr-python (~0.17 ms per chunk of the
    status array), every other column by the direct reader (~25 us per chunk), the digests
    (~20 ns per value). A pool takes ~2 s to start (a fresh interpreter per worker importing NumPy,
    zarr and matplotlib) and holds a copy of those imports per worker (~130 MB); on 2 cores it
    measured no faster than one process (``benchmarks/report_bench.py``), so it needs 4 or more.
    """
    seconds = store.n_chunks * (1.7e-4 + (n_columns + 5) * 2.5e-5) + store.n_items * n_columns * 2e-8
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    if seconds < 4.0 or cores < 4:
        return 1
    return min(4, cores)


def _run_jobs(pool, jobs: list):
    """Submit ``(fn, args)`` jobs; results in order. A broken pool reruns the rest in this process."""
    try:
        futures = [pool.submit(fn, *args) for fn, args in jobs]
    except Exception:  # noqa: BLE001 (no pool here: a daemon process, no spawn; do the work in this one)
        futures = [_Now(fn, args) for fn, args in jobs]
    out = []
    for (fn, args), fut in zip(jobs, futures):
        try:
            out.append(fut.result())
        except GpudiffError:
            raise
        except Exception as e:  # noqa: BLE001
            from concurrent.futures.process import BrokenProcessPool  # noqa: PLC0415

            if not isinstance(e, (BrokenProcessPool, OSError, EOFError)):
                raise
            out.append(fn(*args))  # the pool died (killed worker, no /dev/shm...): do it here
    return out


@dataclass
class _Run:
    """What every section needs: the summary, 1-byte-per-item arrays and the buckets."""

    store: ResultStore
    summary: dict
    status: np.ndarray
    done: np.ndarray
    buckets: rd.Buckets
    flags: dict
    thresholds: dict
    metrics: list
    is_manifest: bool
    warnings: list = field(default_factory=list)
    ranked_by: str | None = None
    rank_sign: int = 1
    most: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    least: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    least_among_kept: bool = False

    @property
    def keep(self):
        return self.flags.get("kept")


def _load_run(store: ResultStore, pool, *, max_points: int) -> _Run:
    """Phase 1: summary, status, flags and x, as parallel jobs."""
    path = store.ref()  # the path (a StoreRef for a remote store: the jobs reopen it with its options)
    names = _field_names(store)
    flag_cols = [(flag, col) for flag, col in _FLAG_COLUMNS.items()
                 if col in names and not names[col].shape and names[col].dtype != "str"]
    jobs = [(_job_summary, (path, MAX_FAILURES_LISTED)), (_job_flag, (path, "status")), (_job_x, (path,))]
    jobs += [(_job_flag, (path, col)) for _, col in flag_cols]
    (summary, ws), (status, w0), (x, xlabel), *flag_values = _run_jobs(pool, jobs)
    if summary["done"] + summary["failed"] == 0:
        raise InputError(
            f"{store.path} has no finished item yet ({summary['pending']} pending): nothing to report; "
            "wait for the run to write its first chunk, or resume it"
        )
    warns = [*ws, *w0]
    flags = {}
    for (flag, _), (v, w) in zip(flag_cols, flag_values):
        flags[flag] = v == 1
        warns += w
    buckets = rd.make_buckets(store.n_items, max_points, x=x, status=status, xlabel=xlabel)
    is_manifest = "reference_path" in names or "moving_path" in names
    return _Run(store, summary, status, status == DONE, buckets, flags, _thresholds(store.attrs),
                _metric_columns(store), is_manifest, warns)


def _rank_order(run: _Run, rank_by: str | None) -> list[tuple[str, int]]:
    if rank_by is not None:  # checked against the store's metrics before anything is read
        return [(rank_by, _DIRECTION.get(rank_by, 1))]
    return [(n, s) for n, s in _RANK_PREFERENCE if n in run.metrics]


@dataclass
class _Columns:
    figures: list = field(default_factory=list)
    digests: dict = field(default_factory=dict)
    notes: list = field(default_factory=list)
    foreground_items: np.ndarray | None = None


def _column_sections(run: _Run, pool, *, top: int, rank_by: str | None) -> tuple[_Columns, _Figure | None]:
    """Phase 2: one job per metric column (digest, figures, extremes), and the drift figure."""
    path = run.store.ref()
    names = _field_names(run.store)
    order = _rank_order(run, rank_by)
    sign = dict(order)
    jobs = []
    for name in run.metrics:
        job = _ColumnJob(path, name, run.buckets, run.done, run.flags, run.thresholds.get(name),
                         name == "change" and "change_threshold" in names, top, sign.get(name, _DIRECTION.get(name, 1)),
                         True)
        jobs.append((_job_column, (job,)))
    has_shift = "shift" in names and names["shift"].shape == (2,)
    if has_shift:
        jobs.append((_job_drift, (path, run.buckets, run.done, run.store.attrs.get("pairs") == "consecutive")))
    results = _run_jobs(pool, jobs)
    drift = None
    if has_shift:
        drift, w = results.pop()
        run.warnings += w
    cols = _Columns()
    by_name = {}
    for r in results:
        by_name[r.name] = r
        cols.digests[r.name] = r.digest
        cols.figures.extend(r.figures)
        if r.note:
            cols.notes.append((r.name, r.note))
        if r.foreground_items is not None:
            cols.foreground_items = r.foreground_items
        run.warnings += r.warnings
    for name, s in order:
        r = by_name[name]
        if r.most.size:
            run.ranked_by, run.rank_sign, run.most, run.least = name, s, r.most, r.least
            run.least_among_kept = run.keep is not None
            break
    else:
        if order:
            run.ranked_by, run.rank_sign = order[0]
    return cols, drift
