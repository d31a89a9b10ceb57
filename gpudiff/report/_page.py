"""``gpudiff report``: plots and one self-contained HTML page from a result store.

::

    gpudiff report results.zarr --html report.html   # one file, opens offline, shareable
    gpudiff report results.zarr --png plots/         # the same figures as PNG files

The page is made from the store alone: a header (source, items, done / failed / pending, backend
and device, options, run time and throughput), a timeline and a histogram per computed metric with
kept / corrupt / cut frames, failed items and the deciding thresholds marked, the most and the
least changed pairs as thumbnails (the only thing read from the source, downscaled to about 160
pixels wide), the drift of an aligned run, foreground and optical-flow sections when those columns
exist, and the failed items with their reasons. Everything is embedded (plots as PNG data URIs,
thumbnails as JPEG data URIs, inline CSS); there is no script, and a Content-Security-Policy
forbids any network access.

Scale: the store is read one column at a time (a float64 column of a million items is 8 MB) and
every plot is drawn from a bounded digest (:mod:`gpudiff.report._plots`): timelines keep the
minimum, maximum and mean of each of at most ``max_points`` buckets, distributions are
histograms. So the page's size depends on ``max_points`` and ``top``, not on the number of items,
and memory on one column at a time per worker process.
"""

from __future__ import annotations

import base64
import contextlib
import html as _html
import io
import json
import math
import os
import time
import uuid
import warnings
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from . import _plots as rp
from ..errors import EXIT_OK, ConfigError, GpudiffError, InputError
from ..engine._store import DONE, METRIC_COLUMNS, ResultStore

__all__ = ["ReportSummary", "build_report", "register_cli", "DEFAULT_TOP", "DEFAULT_MAX_POINTS"]

#: Pairs shown in each thumbnail table.
DEFAULT_TOP = 12
#: Most x positions of a timeline (buckets of items; each keeps its minimum and maximum).
DEFAULT_MAX_POINTS = 2000
#: Failed items listed one by one on the page (all are counted).
MAX_FAILURES_LISTED = 200
#: Width of the thumbnails, pixels (frames are block-averaged down to at most this).
THUMB_WIDTH = 160
#: Frames with a foreground mask overlaid.
FOREGROUND_EXAMPLES = 4
#: Sources with at most this many frames are fingerprinted to tell whether they changed since the run.
_FINGERPRINT_LIMIT = 10_000

# Per-item 0/1 columns marked on the timelines: page name -> store column.
_FLAG_COLUMNS = {"kept": "keep", "corrupt": "corrupt", "cut": "cut"}
# Float columns that are not metrics to plot on their own.
_NOT_METRICS = {"change_threshold"}
_SEQUENCE_COLUMNS = ("change", "kl_prev", "corrupt_score", "cut_score", "foreground_fraction", "flow_mean", "flow_p95")
_ORDER = {name: k for k, name in enumerate((*METRIC_COLUMNS, *_SEQUENCE_COLUMNS))}

# name -> (what it is, unit). Intensity is in the units of the compared images after preprocessing.
_DESCRIPTIONS = {
    "manhattan": ("sum of |reference − moving|", "intensity × pixels"),
    "manhattan_per_pixel": ("mean |reference − moving|", "intensity"),
    "zero_norm": ("pixels that differ", "pixels"),
    "zero_norm_per_pixel": ("fraction of pixels that differ", "fraction"),
    "mse": ("mean squared error", "intensity²"),
    "rmse": ("root mean squared error", "intensity"),
    "psnr": ("peak signal-to-noise ratio", "dB"),
    "max_abs": ("largest |reference − moving|", "intensity"),
    "ncc": ("normalised cross-correlation", "1 = identical"),
    "ssim": ("structural similarity (SSIM)", "1 = identical"),
    "hist_kl": ("histogram Kullback–Leibler divergence", "nats"),
    "hist_js": ("histogram Jensen–Shannon divergence", "nats"),
    "hist_chi2": ("histogram χ² distance", "unitless"),
    "hist_chi2_alt": ("histogram alternative χ² distance", "unitless"),
    "hist_bhattacharyya": ("histogram Bhattacharyya distance", "0 = identical"),
    "hist_intersection": ("histogram intersection", "1 = identical"),
    "hist_correlation": ("histogram correlation", "1 = identical"),
    "confidence": ("alignment confidence", "0–1"),
    "pixels": ("pixels compared", "pixels"),
    "change": ("change since the last kept frame (dedup statistic)", "rule's unit"),
    "kl_prev": ("histogram KL divergence to the previous frame", "nats"),
    "corrupt_score": ("corruption score", "≥ 1: corrupt"),
    "cut_score": ("scene-cut score", "≥ 1: cut"),
    "foreground_fraction": ("foreground fraction", "fraction of pixels"),
    "flow_mean": ("mean optical-flow magnitude", "px"),
    "flow_p95": ("95th percentile optical-flow magnitude", "px"),
}
# Ranking of "most changed": the first of these with a finite value; +1 larger is more changed.
_RANK_PREFERENCE = (
    ("change", 1), ("mse", 1), ("manhattan_per_pixel", 1), ("rmse", 1), ("zero_norm_per_pixel", 1),
    ("max_abs", 1), ("hist_js", 1), ("hist_kl", 1), ("hist_chi2", 1), ("hist_bhattacharyya", 1),
    ("ssim", -1), ("ncc", -1), ("psnr", -1), ("hist_intersection", -1), ("hist_correlation", -1),
    ("kl_prev", 1), ("flow_mean", 1), ("flow_p95", 1), ("foreground_fraction", 1), ("manhattan", 1),
    ("zero_norm", 1),
)
_DIRECTION = dict(_RANK_PREFERENCE)
# Metrics shown under each thumbnail pair (after the ranking metric), the first few present.
_CAPTION_METRICS = ("mse", "manhattan_per_pixel", "ssim", "psnr", "hist_js", "change", "kl_prev", "flow_mean",
                    "foreground_fraction", "corrupt_score")


@dataclass(frozen=True)
class ReportSummary:
    """What :func:`build_report` made.

    Attributes
    ----------
    store : str
        The store's path.
    html : str or None
        The page written (None without ``html``).
    png_files : tuple of str
        The PNG files written (empty without ``png_dir``).
    n_items, done, failed, pending : int
        As :meth:`ResultStore.summary` reports them.
    metrics : tuple of str
        Columns with a timeline and a histogram.
    figures : tuple of str
        Every figure made, by name (``timeline_mse``, ``histogram_mse``, ``drift``...).
    ranked_by : str or None
        The metric that orders the thumbnail tables.
    source_available : bool
        The source could be opened for thumbnails.
    notices : tuple of str
        What the page says in its notice box (source missing, items pending, ...).
    page_bytes : int or None
        Size of the HTML file.
    seconds : float
        Time taken.
    """

    store: str
    html: str | None
    png_files: tuple
    n_items: int
    done: int
    failed: int
    pending: int
    metrics: tuple
    figures: tuple
    ranked_by: str | None
    source_available: bool
    notices: tuple
    page_bytes: int | None
    seconds: float


# --------------------------------------------------------------------------------------------------
# validation
# --------------------------------------------------------------------------------------------------


def _check_int(name: str, value, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ConfigError(f"{name} {value!r} must be a whole number from {lo} to {hi}")
    if not lo <= int(value) <= hi:
        raise ConfigError(f"{name} {value} is out of range: use a whole number from {lo} to {hi}")
    return int(value)


def _check_outputs(html, png_dir):
    if html is None and png_dir is None:
        raise ConfigError("nothing to write: give --html report.html and/or --png plots/")
    html_path = png_path = None
    if html is not None:
        html_path = Path(os.path.abspath(os.fspath(html)))
        if html_path.is_dir():
            raise InputError(f"--html {html}: is a directory: give a file name such as report.html")
        if not html_path.parent.is_dir():
            raise InputError(f"--html {html}: folder {html_path.parent} does not exist: create it first")
    if png_dir is not None:
        png_path = Path(os.path.abspath(os.fspath(png_dir)))
        if png_path.exists() and not png_path.is_dir():
            raise InputError(f"--png {png_dir}: is a file, not a folder: give a folder for the PNG files")
    return html_path, png_path


# --------------------------------------------------------------------------------------------------
# reading the store: jobs that each read one column and return something small
# --------------------------------------------------------------------------------------------------
#
# Reading a column costs about 0.17 ms per Zarr chunk in zarr-python's event loop (one core), so a
# million items in chunks of 64 take ~2.7 s per column whatever its dtype. The jobs below are plain
# module-level functions of picklable arguments: run in this process for small stores, or in a
# process pool (one column per job) when the store has many chunks. Each job opens the store itself
# and returns a digest, figures as PNG bytes, or a 1-byte-per-item array: never a float column.


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
        summary = ResultStore.open(path).summary(max_failures=max_failures)
    return summary, _job_warnings(caught)


def _job_flag(path: str, name: str) -> tuple[np.ndarray, list]:
    """A 0/1 (or status) column as compact uint8, with any unreadable-chunk warnings."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", RuntimeWarning)
        v = _read1(ResultStore.open(path), name)
    return np.asarray(v).astype(np.uint8, copy=False), _job_warnings(caught)


def _job_x(path: str) -> tuple[np.ndarray | None, str]:
    """The x of each item: its moving frame for a sequence, else None (the item index).

    For the pairings the plan makes (``consecutive``, ``first``) the moving frame of item ``i`` is
    ``i + 1``; that is checked on the first and last chunk, and the column is read only otherwise.
    """
    store = ResultStore.open(path)
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
    buckets: rp.Buckets
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
    digest: rp.ColumnDigest
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
        store = ResultStore.open(job.path)
        values = _read1(store, job.name)
        tv = _read1(store, "change_threshold") if job.threshold_column else None
        keep = job.flags.get("kept")
        d = rp.digest_column(job.name, values, job.buckets, done=job.done, flags=job.flags, keep=keep,
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


def _job_drift(path: str, buckets: rp.Buckets, done: np.ndarray, cumulative: bool):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", RuntimeWarning)
        shift = _read1(ResultStore.open(path), "shift")
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
    buckets: rp.Buckets
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
    path = os.fspath(store.path)
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
    buckets = rp.make_buckets(store.n_items, max_points, x=x, status=status, xlabel=xlabel)
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
    path = os.fspath(run.store.path)
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


# --------------------------------------------------------------------------------------------------
# the figures
# --------------------------------------------------------------------------------------------------


@dataclass
class _Figure:
    name: str  # file stem: timeline_mse
    kind: str  # timeline, histogram, drift, flow
    column: str | None
    png: bytes
    width: int
    height: int
    alt: str
    caption: str


def _png_size(png: bytes) -> tuple[int, int]:
    # IHDR: width and height are big-endian 32-bit at bytes 16..24
    return int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")


def _make_figure(name, kind, column, fig, alt, caption) -> _Figure:
    png = rp.figure_png(fig)
    w, h = _png_size(png)
    return _Figure(name, kind, column, png, w, h, alt, caption)


def _label(name: str) -> str:
    what, unit = _DESCRIPTIONS.get(name, (name.replace("_", " "), ""))
    return f"{name}: {what}" + (f" ({unit})" if unit else "")


def _axis_label(name: str) -> str:
    _, unit = _DESCRIPTIONS.get(name, ("", ""))
    return f"{name} ({unit})" if unit else name


def _fmt(v) -> str:
    if v is None:
        return "n/a"
    try:
        v = float(v)
    except (TypeError, ValueError):
        return str(v)
    if math.isnan(v):
        return "n/a"
    if math.isinf(v):
        return "∞" if v > 0 else "−∞"
    if v == int(v) and abs(v) < 1e15:
        return f"{int(v)}"
    return f"{v:.4g}"


def _scale_words(d: rp.ColumnDigest) -> str:
    if d.scale == "log":
        return "logarithmic scale (the values span more than three decades)"
    if d.scale == "symlog":
        return f"symmetric-log scale (linear below {_fmt(d.linthresh)}; zeros and values spanning decades)"
    return "linear scale"


def _metric_figures(b: rp.Buckets, d: rp.ColumnDigest) -> list[_Figure]:
    stats = f"{d.n_finite} of {d.n_done} done items have a value, from {_fmt(d.vmin)} to {_fmt(d.vmax)}"
    if d.n_posinf:
        stats += f"; {d.n_posinf} are +∞ (marked along the top)"
    thr = ""
    if d.threshold is not None:
        thr = f" Threshold {_fmt(d.threshold)} (dashed): {d.above} items above, {d.below} at or below."
    elif d.threshold_lo is not None:
        thr = f" Per-item threshold (dashed): {d.above} items above, {d.below} at or below."
    marks = [f"{k} ({d.flag_counts[k]})" for k in rp.FLAGS if d.flag_counts.get(k)]
    if b.n_failed:
        marks.append(f"failed ({b.n_failed}, black on the status strip)")
    if b.n_pending:
        marks.append(f"pending ({b.n_pending}, grey)")
    dec = (f" Each x position shows the minimum–maximum band of {b.size} consecutive items, so single-item "
           "spikes stay visible.") if b.decimated else ""
    cap_t = (f"<b>{_esc(_label(d.name))}</b> by {_esc(b.xlabel)}: {stats}; {_scale_words(d)}."
             f"{thr}{dec}" + (f" Marked: {', '.join(marks)}." if marks else ""))
    fig_t = rp.timeline_figure(d, b, ylabel=_axis_label(d.name), title=f"{d.name} per pair")
    groups = " (kept and dropped frames apart)" if "kept" in d.hist else ""
    cap_h = (f"Distribution of <b>{_esc(d.name)}</b>{groups}: {len(d.hist_edges) - 1} bins over the "
             f"{d.n_finite} finite values; {_scale_words(d)}.{thr}")
    fig_h = rp.histogram_figure(d, xlabel=_axis_label(d.name), title=f"distribution of {d.name}")
    return [
        _make_figure(f"timeline_{d.name}", "timeline", d.name, fig_t, f"timeline of {d.name}", cap_t),
        _make_figure(f"histogram_{d.name}", "histogram", d.name, fig_h, f"histogram of {d.name}", cap_h),
    ]


def _flow_figure(run: _Run, digests: dict) -> _Figure | None:
    series = {}
    for name, label in (("flow_mean", "mean |flow|"), ("flow_p95", "p95 |flow|")):
        d = digests.get(name)
        if d is not None and not d.empty:
            series[label] = d
    if not series:
        return None
    fig = rp.series_figure(series, run.buckets, ylabel="flow magnitude (px per pair)",
                           title="optical flow: magnitude over time")
    cap = ("Optical-flow magnitude between the frames of each pair: mean and 95th percentile over the pixels "
           "(pixels per pair).")
    return _make_figure("flow", "flow", "flow_mean", fig, "optical flow magnitude over time", cap)


# --------------------------------------------------------------------------------------------------
# thumbnails (the only reads of the source)
# --------------------------------------------------------------------------------------------------


def _open_source(store: ResultStore):
    """(source or None, notice or None)."""
    from ..io import open_source  # noqa: PLC0415

    fp = store.attrs.get("source")
    if not isinstance(fp, dict) or not fp.get("spec"):
        return None, "The store does not record its source: no thumbnails."
    spec = str(fp["spec"])
    component = fp.get("component")
    candidates = [spec]
    if not os.path.isabs(spec):
        candidates.append(os.path.join(os.fspath(store.path.parent), spec))
    opts = store.attrs.get("options") or {}
    kwargs = {}
    if isinstance(opts.get("max_pixels"), int) and opts["max_pixels"] > 0:
        kwargs["max_pixels"] = opts["max_pixels"]
    last = None
    for cand in candidates:
        try:
            src = open_source(cand, component=component, **kwargs)
        except Exception as e:  # noqa: BLE001 (any failure: the page says so and goes on)
            last = last or e  # the path as recorded says most
            continue
        note = None
        with contextlib.suppress(Exception):
            if len(src) <= _FINGERPRINT_LIMIT:
                now = src.fingerprint()
                if any(fp.get(k) is not None and now.get(k) != fp.get(k) for k in ("count", "sha256")):
                    note = (f"The source {spec} changed since the run (its files' sizes or times differ): the "
                            "thumbnails may not show the frames that were compared.")
        return src, note
    why = " ".join(str(last).split()) if last else "unknown reason"
    return None, (f"The source {spec} cannot be opened ({why}): no thumbnails. The plots come from the store "
                  "alone.")


def _downscale(a: np.ndarray, width: int = THUMB_WIDTH) -> np.ndarray:
    """Block mean of ``a`` ((H, W) or (H, W, C)) by a whole factor so the width is at most ``width``;
    float32, NaN-aware for float input."""
    h, w = a.shape[:2]
    f = max(1, math.ceil(w / width), math.ceil(h / (2 * width)))
    hh, ww = max(f, h - h % f), max(f, w - w % f)
    if hh > h or ww > w:  # smaller than one block: one pixel per axis
        hh, ww = min(h, hh), min(w, ww)
        f = 1 if min(hh, ww) < f else f
    view = a[: hh - hh % f, : ww - ww % f]
    blocks = view.reshape(view.shape[0] // f, f, view.shape[1] // f, f, *view.shape[2:])
    if np.issubdtype(a.dtype, np.floating):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            return np.nanmean(blocks, axis=(1, 3), dtype=np.float64).astype(np.float32)
    return (blocks.sum(axis=(1, 3), dtype=np.float64) / (f * f)).astype(np.float32)


def _to_u8(images: list, dtype) -> tuple[list, str]:
    """Thumbnails for display: uint8 as is, others scaled by their joint 0.5-99.5 percentiles."""
    if np.dtype(dtype) == np.uint8:
        return [np.clip(np.rint(np.nan_to_num(t)), 0, 255).astype(np.uint8) for t in images], ""
    vals = np.concatenate([t[np.isfinite(t)].ravel() for t in images]) if images else np.zeros(0)
    lo, hi = (np.percentile(vals, [0.5, 99.5]) if vals.size else (0.0, 1.0))
    hi = hi if hi > lo else lo + 1.0
    out = [np.clip(np.rint((np.nan_to_num(t, nan=lo) - lo) * (255.0 / (hi - lo))), 0, 255).astype(np.uint8)
           for t in images]
    return out, f"{np.dtype(dtype).name} frames shown scaled from {_fmt(lo)} to {_fmt(hi)}"


def _grey(frame: np.ndarray) -> np.ndarray:
    if frame.ndim == 3:
        return frame.mean(axis=2, dtype=np.float32)
    return frame.astype(np.float32, copy=False)


def _pair_difference(ref: np.ndarray, mov: np.ndarray, shift) -> tuple[np.ndarray, str]:
    """|grey(ref) - grey(mov)| at full size (NaN outside the overlap), registered by ``shift`` when given."""
    from ..pair._align import overlap_window, register_overlap  # noqa: PLC0415

    a, b = _grey(ref), _grey(mov)
    how = "|difference| of the grey frames"
    if shift is not None and np.all(np.isfinite(shift)):
        try:
            ra, rb = register_overlap(a, b, (float(shift[0]), float(shift[1])))
            r0, r1, c0, c1 = overlap_window(a.shape, b.shape, (float(shift[0]), float(shift[1])))
            out = np.full(a.shape, np.nan, dtype=np.float32)
            out[r0:r1, c0:c1] = np.abs(ra.astype(np.float32) - rb.astype(np.float32))
            return out, how + " after the stored shift"
        except GpudiffError:
            pass
    h, w = min(a.shape[0], b.shape[0]), min(a.shape[1], b.shape[1])
    if (h, w) != a.shape:
        how += " over their common top-left region"
    out = np.full(a.shape, np.nan, dtype=np.float32)
    out[:h, :w] = np.abs(a[:h, :w] - b[:h, :w])
    return out, how


#: Thumbnails narrower than this (a 48x48 clip, a 30x40 calcium frame) are enlarged by a whole factor,
#: nearest neighbour, so every pixel stays a visible square.
THUMB_MIN_WIDTH = 120


def _enlarge(img: np.ndarray, min_width: int = THUMB_MIN_WIDTH) -> np.ndarray:
    k = -(-min_width // max(1, img.shape[1]))
    if k <= 1:
        return img
    return np.repeat(np.repeat(img, k, axis=0), k, axis=1)


def _encode_thumb(img: np.ndarray) -> tuple[bytes, int, int]:
    """A thumbnail as JPEG (quality 88: photographs are ~6x smaller than as PNG), with its width and
    height; small frames enlarged (nearest neighbour) to at least THUMB_MIN_WIDTH px wide."""
    from PIL import Image  # noqa: PLC0415

    img = _enlarge(img)
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(img)).save(buf, format="JPEG", quality=88)
    return buf.getvalue(), int(img.shape[1]), int(img.shape[0])


@dataclass
class _Pair:
    item: int
    ref_label: str
    mov_label: str
    values: list  # (name, value)
    images: list = field(default_factory=list)  # [ref u8 | None, mov u8 | None, diff float | None]
    diff_how: str = ""
    notes: list = field(default_factory=list)
    pngs: list = field(default_factory=list)


def _frame_indices(run: _Run, items) -> tuple[list | None, list | None]:
    """(reference frames, moving frames) of ``items``, or None where the store has no such column."""
    names = _field_names(run.store)
    out = []
    for col in ("reference_index", "moving_index"):
        f = names.get(col)
        out.append([int(v) for v in _values_at(run.store, col, items)] if f is not None and not f.shape else None)
    return out[0], out[1]


def _caption_values(run: _Run, items, columns: list) -> dict:
    """{column: [value per item]} for the few values printed beside the thumbnails (NaN unless done)."""
    done = run.done[np.asarray(items, dtype=np.int64)] if len(items) else np.zeros(0, bool)
    out = {}
    for c in columns:
        v = np.asarray(_values_at(run.store, c, items), dtype=np.float64)
        out[c] = np.where(done, v, np.nan)
    return out


def _unaligned_items(run: _Run) -> np.ndarray:
    """Done items whose alignment was not trusted (``align_ok == 0``); empty without the column."""
    if "align_ok" not in _field_names(run.store):
        return np.zeros(0, dtype=np.int64)
    ok = np.asarray(_read1(run.store, "align_ok"), dtype=np.float64)
    status = np.asarray(_read1(run.store, "status"))
    return np.flatnonzero((ok == 0) & (status == DONE))


def _pair_rows(run: _Run, items: np.ndarray, digests: dict, source) -> list[_Pair]:
    store = run.store
    names = _field_names(store)
    items = [int(i) for i in items]
    caption_cols = [run.ranked_by] + [c for c in _CAPTION_METRICS if c in digests and c != run.ranked_by
                                      and not digests[c].empty][:4]
    values = _caption_values(run, items, caption_cols)
    refs, movs = _frame_indices(run, items)
    if run.is_manifest and "reference_path" in names and "moving_path" in names:
        ref_labels = [os.path.basename(str(s)) for s in _values_at(store, "reference_path", items)]
        mov_labels = [os.path.basename(str(s)) for s in _values_at(store, "moving_path", items)]
    else:
        ref_labels = [f"frame {r}" for r in refs] if refs is not None else ["?"] * len(items)
        mov_labels = [f"frame {m}" for m in movs] if movs is not None else ["?"] * len(items)
    if "id" in names and names["id"].dtype == "str":
        ids = [str(v) for v in _values_at(store, "id", items)]
        mov_labels = [f"{m} (id {i})" if i else m for m, i in zip(mov_labels, ids)]
    f = names.get("shift")
    shifts = _values_at(store, "shift", items) if f is not None and f.shape == (2,) else [None] * len(items)
    aligned_ok = _values_at(store, "align_ok", items) if "align_ok" in names else [None] * len(items)
    has_map = "maps/diff" in names
    rows = []
    for k, i in enumerate(items):
        vals = [(c, values[c][k]) for c in caption_cols]
        p = _Pair(int(i), ref_labels[k], mov_labels[k], vals)
        if aligned_ok[k] is not None and float(aligned_ok[k]) == 0:
            p.notes.append("alignment not trusted: compared unaligned")
        stored = None
        if has_map:
            try:
                stored = _downscale(_read1(store, "maps/diff", items=slice(int(i), int(i) + 1))[0])
                p.diff_how = "stored diff map (after the run's preprocessing)"
            except Exception as e:  # noqa: BLE001
                p.notes.append(f"diff map unreadable ({' '.join(str(e).split())})")
        ref_t = mov_t = diff_t = None
        dtype = np.uint8
        if source is not None and refs is not None and movs is not None:
            ri, mi = refs[k], movs[k]
            ref = mov = None
            try:
                ref = source.read(ri)
                ref_t, dtype = _downscale(ref), ref.dtype
            except Exception as e:  # noqa: BLE001
                p.notes.append(f"reference unreadable: {' '.join(str(e).split())}")
            try:
                mov = source.read(mi)
                mov_t, dtype = _downscale(mov), mov.dtype
            except Exception as e:  # noqa: BLE001
                p.notes.append(f"moving unreadable: {' '.join(str(e).split())}")
            if stored is None and ref is not None and mov is not None:
                d, p.diff_how = _pair_difference(ref, mov, shifts[k])
                diff_t = _downscale(d)
            del ref, mov
        if stored is not None:
            diff_t = stored
        shown = [t for t in (ref_t, mov_t) if t is not None]
        u8, how = _to_u8(shown, dtype)
        it = iter(u8)
        p.images = [next(it) if ref_t is not None else None, next(it) if mov_t is not None else None, diff_t]
        if how:
            p.notes.append(how)
        rows.append(p)
    return rows


def _heat_pngs(rows: list[_Pair]) -> float:
    """Colour every diff thumbnail of a table on one scale; returns that scale's top (99th percentile)."""
    from ..pair._diffmap import colorize  # noqa: PLC0415

    tops = [float(np.nanpercentile(p.images[2], 99)) for p in rows
            if p.images and p.images[2] is not None and np.isfinite(p.images[2]).any()]
    vmax = max(tops) if tops else 0.0
    for p in rows:
        pngs = []
        for j, img in enumerate(p.images):
            if img is None:
                pngs.append(None)
            elif j == 2:
                rgb = colorize(np.nan_to_num(img, nan=0.0), vmax=vmax if vmax > 0 else None)
                rgb[~np.isfinite(img)] = 128  # outside the overlap: mid grey
                p.images[2] = rgb
                pngs.append(_encode_thumb(rgb))
            else:
                pngs.append(_encode_thumb(img))
        p.pngs = pngs
    return vmax


def _foreground_examples(run: _Run, items, source) -> list[tuple[int, bytes, str]]:
    out = []
    orange = np.array([0xD5, 0x5E, 0x00], dtype=np.float32)  # Okabe-Ito vermillion
    items = [int(i) for i in items]
    _, movs = _frame_indices(run, items)
    for k, i in enumerate(items):
        try:
            mask = _read1(run.store, "maps/foreground", items=slice(i, i + 1))[0]
        except Exception:  # noqa: BLE001
            continue
        frac = _downscale((np.asarray(mask) > 0).astype(np.float32))
        base = None
        note = ""
        if source is not None and movs is not None:
            try:
                frame = source.read(movs[k])
                g = _downscale(_grey(frame))
                (base,), _ = _to_u8([g], frame.dtype)
            except Exception as e:  # noqa: BLE001
                note = f"frame unreadable: {' '.join(str(e).split())}"
        if base is None or base.shape != frac.shape:
            base = np.zeros(frac.shape, np.uint8)
            note = note or "mask only (frame not available)"
        a = (0.65 * np.nan_to_num(frac))[..., None]
        rgb = np.clip((1 - a) * base[..., None].astype(np.float32) + a * orange, 0, 255).astype(np.uint8)
        label = f"item {i}" + (f", frame {movs[k]}" if movs is not None else "")
        out.append((i, _encode_thumb(rgb), label + (f" ({note})" if note else "")))
    return out


# --------------------------------------------------------------------------------------------------
# the page
# --------------------------------------------------------------------------------------------------

_CSS = """
:root{color-scheme:light}
body{font-family:"DejaVu Sans",Arial,Helvetica,sans-serif;margin:0 20px 40px;color:#111;background:#fff;
font-size:14px;line-height:1.4}
header{border-bottom:6px solid #0072B2;padding:8px 0 10px}
h1{font-size:22px;margin:8px 0 6px}
h2{font-size:18px;margin:26px 0 8px;border-bottom:1px solid #ccc;padding-bottom:3px}
h3{font-size:15px;margin:14px 0 4px}
table{border-collapse:collapse}
td,th{padding:2px 8px;text-align:left;vertical-align:top}
table.facts th{color:#444;font-weight:600;white-space:nowrap}
table.list td,table.list th{border-bottom:1px solid #e4e4e4}
.badge{display:inline-block;padding:1px 8px;border-radius:3px;font-weight:600;margin-right:4px}
.b-done{background:#009E73;color:#fff}.b-failed{background:#000;color:#fff}.b-pending{background:#BBBBBB;color:#000}
.notice{background:#FFF4D6;border-left:6px solid #E69F00;padding:6px 10px;margin:6px 0}
nav#toc{position:sticky;top:0;background:#fff;border-bottom:1px solid #ccc;padding:4px 0;z-index:2}
nav a{margin-right:12px}nav .sub{font-size:12px;color:#444}nav .sub a{margin-right:8px}
.row{display:flex;flex-wrap:wrap;gap:8px;align-items:flex-start;margin:8px 0 14px}
figure{margin:0}figure img{display:block;border:0}
figcaption{font-size:12px;color:#333;margin-top:2px}
table.pairs td{padding:3px 4px;font-size:12px}table.pairs img{display:block}
.muted{color:#666}.mono{font-family:"DejaVu Sans Mono",monospace;font-size:12px}
.cell-missing{width:160px;height:60px;background:#eee;color:#666;font-size:11px;display:flex;align-items:center;
justify-content:center;text-align:center}
"""

_CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"


def _esc(s) -> str:
    return _html.escape(str(s), quote=True)


def _data_uri(data: bytes) -> str:
    mime = "image/png" if data[:8] == b"\x89PNG\r\n\x1a\n" else "image/jpeg"
    return f"data:{mime};base64," + base64.b64encode(data).decode("ascii")


def _img(thumb: tuple, alt: str) -> str:
    data, w, h = thumb
    return f'<img src="{_data_uri(data)}" width="{w}" height="{h}" alt="{_esc(alt)}">'


def _figure_html(f: _Figure) -> str:
    col = f' data-column="{_esc(f.column)}"' if f.column else ""
    return (f'<figure class="plot {f.kind}" id="fig-{_esc(f.name)}" data-plot="{_esc(f.kind)}"{col}>'
            f'<img src="{_data_uri(f.png)}" width="{f.width}" height="{f.height}" alt="{_esc(f.alt)}">'
            f'<figcaption style="max-width:{f.width}px">{f.caption}</figcaption></figure>')


def _run_time(attrs: dict, summary: dict) -> tuple[str, str]:
    """(run time text, throughput text) from recorded timings, else from creation to last write."""
    items = summary["done"] + summary["failed"]
    timings = attrs.get("timings") if isinstance(attrs.get("timings"), dict) else {}
    elapsed = None
    for key in ("elapsed_s", "run_s", "seconds"):
        v = timings.get(key, attrs.get(key))
        if isinstance(v, (int, float)) and v > 0:
            elapsed, how = float(v), "recorded"
            break
    if elapsed is None:
        try:
            t0 = datetime.fromisoformat(str(summary["created"]))
            t1 = datetime.fromisoformat(str(summary["last_write"]))
            elapsed = max((t1 - t0).total_seconds(), 1.0)
            how = "from the store's creation to its last chunk write (includes any pause between runs)"
        except (TypeError, ValueError):
            return "unknown (no timings recorded)", "unknown"
    rate = items / elapsed if elapsed > 0 else math.nan
    rate_text = f"{rate:,.0f}" if rate >= 100 else f"{rate:.3g}"
    return f"{_fmt_duration(elapsed)} ({how})", f"{rate_text} items/s ({items:,} items finished)"


def _fmt_duration(s: float) -> str:
    s = int(round(s))
    if s < 60:
        return f"{s} s"
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def _run_flags(attrs: dict) -> str:
    """The run's sequence passes and saved maps as the flags that asked for them."""
    cfg = attrs.get("config") if isinstance(attrs.get("config"), dict) else {}
    seq = cfg.get("sequence") if isinstance(cfg.get("sequence"), dict) else {}
    out = []
    if seq.get("flow"):
        out.append(f"--flow (radius {seq.get('flow_radius', '?')})")
    if seq.get("events"):
        out.append("--corrupt --cuts" + (f" {seq['event_options']}" if seq.get("event_options") else ""))
    if seq.get("background"):
        bo = seq.get("background_options") or {}
        keys = ("k", "learning_rate", "min_std", "init_frames", "cleanup_radius", "align")
        out.append("--background (" + ", ".join(f"{k} {bo[k]}" for k in keys if k in bo) + ")")
    maps = cfg.get("save_maps") or []
    if maps:
        out.append("--save-maps " + ",".join(maps))
    pairs = attrs.get("pairs")
    if pairs and pairs not in ("consecutive", "manifest"):
        out.append(f"--pairs {pairs}")
    return " ".join(out)


def _options_html(attrs: dict) -> str:
    opts = attrs.get("options")
    if not isinstance(opts, dict) or not opts:
        return '<span class="muted">not recorded</span>'
    defaults = {}
    with contextlib.suppress(Exception):
        from ..options import CompareOptions  # noqa: PLC0415

        defaults = CompareOptions().to_dict()
    parts = []
    for k, v in opts.items():
        text = f"{_esc(k)}={_esc(v if v is not None else 'none')}"
        if k in defaults and defaults[k] != v:
            parts.append(f"<b>{text}</b>")
        else:
            parts.append(text)
    return '<span class="mono">' + ", ".join(parts) + "</span> <span class=\"muted\">(bold: not the default)</span>"


def _header_html(run: _Run, source_note_ok: bool) -> str:
    s, a = run.summary, run.store.attrs
    src = a.get("source") if isinstance(a.get("source"), dict) else {}
    src_text = f"{src.get('kind', '?')} {src.get('spec', '?')}"
    if src.get("component"):
        src_text += f" (component {src['component']})"
    if src.get("count") is not None:
        src_text += f", {src['count']} files"
    rt, rate = _run_time(a, s)
    rows = [
        ("Store", f'<span class="mono">{_esc(s["path"])}</span>'),
        ("Source", _esc(src_text) + ("" if source_note_ok else ' <span class="muted">(not readable now)</span>')),
        ("Items", f"{s['n_items']} in {s['n_chunks']} chunks of {s['chunk']}; {s['chunks_finished']} chunks finished"),
        ("Status", f'<span class="badge b-done">{s["done"]} done</span><span class="badge b-failed">{s["failed"]} '
                   f'failed</span><span class="badge b-pending">{s["pending"]} pending</span>'),
        ("Pairs", _esc(a.get("pairs", "?"))),
    ]
    if a.get("frames") is not None:
        shape = a.get("frame_shape")
        rows.append(("Frames", _esc(f"{a['frames']}" + (f" of shape {tuple(shape)}" if shape else ""))))
    rows += [
        ("Backend, device", _esc(f"{a.get('backend', '?')}, {a.get('device', '?')}")),
        ("Created, last write", _esc(f"{s.get('created') or '?'}, {s.get('last_write') or '?'}")),
        ("Run time", _esc(rt)),
        ("Throughput", _esc(rate)),
    ]
    if run.flags:
        d = run.done
        parts = []
        if "kept" in run.flags:
            k = int(np.count_nonzero(run.flags["kept"] & d))
            parts.append(f"{k} kept, {int(np.count_nonzero(d)) - k} dropped")
        for flag in ("corrupt", "cut"):
            if flag in run.flags:
                parts.append(f"{int(np.count_nonzero(run.flags[flag] & d))} {flag}")
        rows.append(("Sequence", _esc(", ".join(parts) + " (among done items)")))
    if run.thresholds:
        rows.append(("Thresholds", _esc(", ".join(f"{k} {_fmt(v)}" for k, v in run.thresholds.items()))))
    rows.append(("Options", _options_html(a)))
    run_flags = _run_flags(a)
    if run_flags:
        rows.append(("Run", f'<span class="mono">{_esc(run_flags)}</span>'))
    rows.append(("gpudiff", _esc(f"{a.get('gpudiff_version', '?')} (store version {a.get('gpudiff_store_version')})")))
    body = "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in rows)
    name = Path(s["path"]).name
    return (f'<header id="header"><h1>gpudiff report: {_esc(name)}</h1>'
            f'<table class="facts" id="facts">{body}</table></header>')


def _pairs_html(title: str, anchor: str, intro: str, rows: list[_Pair], vmax: float) -> str:
    if not rows:
        return f'<section id="{anchor}"><h2>{_esc(title)}</h2><p class="muted">{_esc(intro)}</p></section>'
    head = "<tr><th>#</th><th>reference</th><th>moving</th><th>|difference|</th><th>values</th></tr>"
    body = []
    for k, p in enumerate(rows, 1):
        cells = []
        for j, png in enumerate(p.pngs):
            what = ("reference", "moving", "difference")[j]
            if png is None:
                cells.append(f'<td><div class="cell-missing">{what} not available</div></td>')
            else:
                cells.append(f"<td>{_img(png, f'{what} of item {p.item}')}</td>")
        vals = "<br>".join(f"{_esc(n)} = {_esc(_fmt(v))}" for n, v in p.values)
        notes = "".join(f'<br><span class="muted">{_esc(n)}</span>' for n in p.notes)
        if p.diff_how:
            notes += f'<br><span class="muted">heat map: {_esc(p.diff_how)}</span>'
        label = f"item {p.item}<br>{_esc(p.ref_label)} → {_esc(p.mov_label)}"
        body.append(f'<tr><td>{k}</td>{"".join(cells)}<td>{label}<br>{vals}{notes}</td></tr>')
    scale = (f" Heat maps share one viridis scale: dark 0 to bright {_fmt(vmax)} (intensity units, the 99th "
             "percentile of the table's maps).") if vmax > 0 else ""
    return (f'<section id="{anchor}"><h2>{_esc(title)}</h2><p>{_esc(intro)}{scale} Thumbnails are block means '
            f'down to at most {THUMB_WIDTH} px wide (small frames enlarged to {THUMB_MIN_WIDTH} px, pixels kept square).</p><table class="pairs list">{head}{"".join(body)}</table>'
            "</section>")


def _failures_html(run: _Run) -> str:
    s = run.summary
    if not s["failed"]:
        return '<section id="failures"><h2>Failed items</h2><p>None.</p></section>'
    fails = s["failures"]
    items = [f["item"] for f in fails]
    names = _field_names(run.store)
    if run.is_manifest and "reference_path" in names:
        refs = [str(v) for v in _values_at(run.store, "reference_path", items)]
        movs = [str(v) for v in _values_at(run.store, "moving_path", items)]
    else:
        r, m = _frame_indices(run, items)
        refs = [str(v) for v in r] if r is not None else ["?"] * len(items)
        movs = [str(v) for v in m] if m is not None else ["?"] * len(items)
    rows = "".join(
        f"<tr><td>{f['item']}</td><td>{_esc(r)}</td><td>{_esc(m)}</td><td>{_esc(f['error'])}</td></tr>"
        for f, r, m in zip(fails, refs, movs)
    )
    more = ""
    if s["failed"] > len(fails):
        more = (f'<p class="muted">The first {len(fails)} of {s["failed"]} failed items; all of them: '
                f'<span class="mono">gpudiff export {_esc(s["path"])}</span> (status column "failed").</p>')
    return (f'<section id="failures"><h2>Failed items ({s["failed"]})</h2>'
            f'<table class="list" id="failure-table"><tr><th>item</th><th>reference</th><th>moving</th>'
            f"<th>reason</th></tr>{rows}</table>{more}</section>")


def _page(run: _Run, cols: _Columns, extra: dict, notices: list, pairs: dict, fg: list, source_ok: bool,
          took: float) -> str:
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>gpudiff report: {_esc(Path(run.summary['path']).name)}</title>",
        f"<style>{_CSS}</style></head><body>",
        _header_html(run, source_ok),
    ]
    nav = [("metrics", "Metrics")]
    if extra.get("drift"):
        nav.append(("drift", "Drift"))
    if extra.get("flow"):
        nav.append(("flow", "Optical flow"))
    if fg:
        nav.append(("foreground", "Foreground"))
    if pairs:
        nav += [("most-changed", "Most changed"), ("least-changed", "Least changed")]
    nav.append(("failures", "Failed items"))
    by_col_names = list(dict.fromkeys(f.column for f in cols.figures))
    sub = "".join(f'<a href="#metric-{_esc(c)}">{_esc(c)}</a>' for c in by_col_names)
    parts.append('<nav id="toc"><b>Contents</b> ' + "".join(f'<a href="#{a}">{_esc(t)}</a>' for a, t in nav)
                 + (f'<div class="sub">Metrics: {sub}</div>' if sub else "") + "</nav>")
    if notices:
        parts.append('<section id="notices">' + "".join(f'<div class="notice">{_esc(n)}</div>' for n in notices)
                     + "</section>")
    parts.append('<section id="metrics"><h2>Metrics over time, and their distributions</h2>')
    by_col = {}
    for f in cols.figures:
        by_col.setdefault(f.column, []).append(f)
    for name, figs in by_col.items():
        parts.append(f'<div class="row" id="metric-{_esc(name)}">' + "".join(_figure_html(f) for f in figs) + "</div>")
    if cols.notes:
        parts.append("<p>Not plotted: " + "; ".join(_esc(t) for _, t in cols.notes) + ".</p>")
    parts.append("</section>")
    for key, anchor, title in (("drift", "drift", "Alignment drift"), ("flow", "flow", "Optical flow")):
        if extra.get(key):
            parts.append(f'<section id="{anchor}"><h2>{title}</h2><div class="row">{_figure_html(extra[key])}'
                         "</div></section>")
    if fg:
        cells = "".join(
            f'<figure class="mask" id="mask-{i}">{_img(png, f"foreground mask of item {i}")}'
            f"<figcaption>{_esc(label)}</figcaption></figure>" for i, png, label in fg
        )
        link = ' Its time course: <a href="#metric-foreground_fraction">foreground_fraction</a>.' \
            if "foreground_fraction" in cols.digests else ""
        parts.append(f'<section id="foreground"><h2>Foreground</h2><p>Foreground masks (vermillion) over their '
                     f"frames, for the items with the largest foreground fraction.{link}</p>"
                     f'<div class="row">{cells}</div></section>')
    parts.append(pairs.get("most", ""))
    parts.append(pairs.get("least", ""))
    parts.append(_failures_html(run))
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    parts.append(f'<footer><p class="muted">Made by gpudiff report at {now} in {took:.1f} s, from the store alone '
                 "(the source is read only for thumbnails). This page loads nothing from the network.</p></footer>")
    parts.append("</body></html>")
    return "\n".join(parts)


# --------------------------------------------------------------------------------------------------
# the entry point
# --------------------------------------------------------------------------------------------------


def build_report(store_path, *, html=None, png_dir=None, top: int = DEFAULT_TOP,
                 max_points: int = DEFAULT_MAX_POINTS, rank_by: str | None = None,
                 workers: int | None = None) -> ReportSummary:
    """Plots and one self-contained HTML page (and/or PNG files) from a result store.

    Parameters
    ----------
    store_path : str or Path
        A gpudiff result store (``results.zarr``), finished or still being written.
    html : str or Path, optional
        The HTML file to write: one file with everything embedded, no network access, no script.
    png_dir : str or Path, optional
        A folder for the same figures as PNG files (created if missing).
    top : int
        Pairs in each thumbnail table (most changed; least changed among kept frames), 0 to 500;
        0 reads nothing from the source.
    max_points : int
        Most x positions of a timeline, 100 to 1,000,000; more items are bucketed and each bucket
        drawn as its minimum-maximum range.
    rank_by : str, optional
        The metric that orders the thumbnail tables (default: the first present of change, mse,
        manhattan_per_pixel, rmse, ... with SSIM, NCC and PSNR counted as "lower is more changed").
    workers : int, optional
        Processes reading the columns, a column per job (default: this process alone, unless the
        store has enough chunks for reading to take seconds and 4 or more cores are free: then up
        to 4).

    Returns
    -------
    ReportSummary

    Raises
    ------
    InputError
        Not a gpudiff store, a store from a newer gpudiff, an empty store (no items, or no item
        finished yet), an output path that cannot be written.
    ConfigError
        Nothing to write, or ``top``/``max_points``/``rank_by`` out of range.

    Notes
    -----
    The store is read one column at a time; each column becomes a digest
    (:func:`gpudiff.report._plots.digest_column`) and is dropped, so memory is a few columns of the
    store (per worker) plus the figures. Whole numeric columns are read chunk file by chunk file
    (~25 us per chunk; zarr-python's event loop takes ~0.17 ms per chunk, 2.7 s per column for a
    million items in chunks of 64). With ``workers`` > 1 the columns are read by a spawned
    process pool: a script calling this must guard its top level with
    ``if __name__ == "__main__":``, as for any ``multiprocessing`` use (without the guard the pool
    fails and the jobs run in this process). Only items whose status is done count; a store still
    being written shows what is done, with the pending items shaded. The thumbnails are the only
    reads of the source (``2 * top`` pairs, and 4 frames for foreground masks); each frame is
    block-averaged to at most ``160`` pixels wide as soon as it is read.
    """
    t0 = time.perf_counter()
    top = _check_int("--top", top, 0, 500)
    max_points = _check_int("--max-points", max_points, 100, 1_000_000)
    html_path, png_path = _check_outputs(html, png_dir)
    store = ResultStore.open(store_path)
    if store.n_items == 0:
        raise InputError(f"{store.path} is an empty result store (0 items): nothing to report; check the run's input")
    metrics = _metric_columns(store)
    if rank_by is not None and rank_by not in metrics:
        raise ConfigError(f"--rank-by {rank_by}: the store has no such metric; it has {', '.join(metrics) or 'none'}")

    notices: list[str] = []
    if workers is None:
        workers = _auto_workers(store, len(metrics))
    else:
        workers = _check_int("workers", workers, 1, 64)
    pool = _executor(workers)
    try:
        run = _load_run(store, pool, max_points=max_points)
        cols, drift = _column_sections(run, pool, top=top, rank_by=rank_by)
    finally:
        pool.shutdown(cancel_futures=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", RuntimeWarning)
        extra = {"drift": drift, "flow": _flow_figure(run, cols.digests)}
        source, source_ok, src_note = None, False, None
        names = _field_names(store)
        fg_items = None
        if "maps/foreground" in names:
            fg_items = cols.foreground_items
            if fg_items is None:
                d = np.flatnonzero(run.done)
                fg_items = d[np.linspace(0, d.size - 1, min(FOREGROUND_EXAMPLES, d.size)).astype(int)] if d.size \
                    else np.zeros(0, np.int64)
        if top > 0 or fg_items is not None:
            source, src_note = _open_source(store)
            source_ok = source is not None
        pairs, tables = {}, {}
        if top > 0 and run.most.size:
            most = _pair_rows(run, run.most, cols.digests, source)
            least = _pair_rows(run, run.least, cols.digests, source)
            order = "highest" if run.rank_sign > 0 else "lowest"
            among = "kept frames" if run.least_among_kept else "done items"
            pairs["most"] = _pairs_html(
                f"The {len(most)} most changed pairs", "most-changed",
                f"Ranked by {run.ranked_by} ({order} first).", most, _heat_pngs(most))
            pairs["least"] = _pairs_html(
                f"The {len(least)} least changed pairs among {among}", "least-changed",
                f"Ranked by {run.ranked_by}: "
                + ("near-duplicates that slipped through dedup show up here." if run.least_among_kept
                   else "near-duplicates show up here."), least, _heat_pngs(least))
            tables = {"most_changed": most, "least_changed": least}
        elif top > 0:
            msg = "No metric with a value to rank the pairs by."
            pairs["most"] = f'<section id="most-changed"><h2>Most changed pairs</h2><p>{msg}</p></section>'
            pairs["least"] = f'<section id="least-changed"><h2>Least changed pairs</h2><p>{msg}</p></section>'
        fg = _foreground_examples(run, fg_items, source) if fg_items is not None and len(fg_items) else []
        if source is not None:
            with contextlib.suppress(Exception):
                source.close()
    run.warnings += _job_warnings(caught)
    s = run.summary
    if s["pending"]:
        notices.append(
            f"{s['pending']} of {s['n_items']} items are pending: the run has not finished (or is still running). "
            f"This report shows the {s['done'] + s['failed']} items finished so far; pending items are shaded grey."
        )
    if src_note:
        notices.append(src_note)
    unaligned = _unaligned_items(run)
    if len(unaligned):
        shown = ", ".join(str(int(i)) for i in unaligned[:20]) + (", ..." if len(unaligned) > 20 else "")
        notices.append(
            f"{len(unaligned)} of {s['done']} done items were compared unaligned: their estimated shift was not "
            f"trusted (column align_ok = 0; low confidence or past --max-shift). Items: {shown}."
        )
    if run.buckets.decimated:
        notices.append(
            f"{s['n_items']} items: each timeline shows {len(run.buckets.x)} buckets of up to {run.buckets.size} "
            "items as their minimum–maximum range (so spikes stay visible) and their mean."
        )
    for text in dict.fromkeys(run.warnings):
        notices.append(f"Store: {text}.")

    figures = list(cols.figures) + [f for f in (extra["drift"], extra["flow"]) if f is not None]
    png_files = []
    if png_path is not None:
        png_files = _write_pngs(png_path, figures, tables, fg)
    page_bytes = None
    if html_path is not None:
        page = _page(run, cols, extra, notices, pairs, fg, source_ok, time.perf_counter() - t0)
        page_bytes = _write_text(html_path, page)
    return ReportSummary(
        store=str(store.path),
        html=str(html_path) if html_path else None,
        png_files=tuple(png_files),
        n_items=s["n_items"],
        done=s["done"],
        failed=s["failed"],
        pending=s["pending"],
        metrics=tuple(dict.fromkeys(f.column for f in cols.figures)),
        figures=tuple(f.name for f in figures),
        ranked_by=run.ranked_by,
        source_available=source_ok,
        notices=tuple(notices),
        page_bytes=page_bytes,
        seconds=time.perf_counter() - t0,
    )


def _write_text(path: Path, text: str) -> int:
    data = text.encode("utf-8")
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex}")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except OSError as e:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise InputError(f"--html {path}: cannot write ({e.strerror or e}): check the path and free space") from None
    return len(data)


def _write_pngs(folder: Path, figures: list, tables: dict, fg: list) -> list[str]:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(f"--png {folder}: cannot create the folder ({e.strerror or e}): check the path") from None
    out = []

    def put(name, data):
        p = folder / f"{name}.png"
        try:
            p.write_bytes(data)
        except OSError as e:
            raise InputError(f"--png {folder}: cannot write {p.name} ({e.strerror or e}): check the path") from None
        out.append(str(p))

    for f in figures:
        put(f.name, f.png)
    for name, rows in tables.items():
        if rows:
            grid = [(f"item {p.item}\n{p.ref_label} → {p.mov_label}", p.images) for p in rows]
            fig = rp.image_grid_figure(grid, column_titles=("reference", "moving", "|difference|"),
                                       title=name.replace("_", " "))
            put(name, rp.figure_png(fig, colors=None))
    if fg:
        from PIL import Image  # noqa: PLC0415

        imgs = [np.asarray(Image.open(io.BytesIO(thumb[0])).convert("RGB")) for _, thumb, _ in fg]
        fig = rp.image_grid_figure([("", imgs)], column_titles=tuple(label for _, _, label in fg),
                                   title="foreground masks")
        put("foreground_masks", rp.figure_png(fig, colors=None))
    return out


# --------------------------------------------------------------------------------------------------
# command line
# --------------------------------------------------------------------------------------------------


def _cmd_report(args) -> int:
    import sys  # noqa: PLC0415

    r = build_report(args.store, html=args.html, png_dir=args.png, top=args.top, max_points=args.max_points,
                     rank_by=args.rank_by)
    wrote = []
    if r.html:
        wrote.append(f"{r.html} ({r.page_bytes / 1e6:.2f} MB)")
    if r.png_files:
        wrote.append(f"{len(r.png_files)} PNG files in {args.png}")
    print(f"gpudiff report: {r.n_items} items ({r.done} done, {r.failed} failed, {r.pending} pending), "
          f"{len(r.figures)} figures; wrote {' and '.join(wrote)} in {r.seconds:.1f} s", file=sys.stderr)
    for n in r.notices:
        if "cannot be opened" in n or "pending" in n:
            print(f"  note: {n}", file=sys.stderr)
    return EXIT_OK


def register_cli(subparsers):
    """Add the ``report`` subcommand to an argparse ``subparsers`` object; returns its parser.

    ``gpudiff report STORE [--html FILE] [--png DIR] [--top N] [--max-points N] [--rank-by METRIC]``;
    the handler (``func``) returns the exit code (0), and raises InputError/ConfigError (exit 2).
    """
    p = subparsers.add_parser(
        "report",
        help="plots and one self-contained HTML page from a result store",
        description="Plots from a result store: one HTML page with everything embedded (opens offline, "
        "shareable from a cluster) and/or the same figures as PNG files. Reads the store (finished or still "
        "being written); the source only for thumbnails. Exit codes: 0 written, 2 bad input (not a store, a "
        "store from a newer gpudiff, an empty store) or options.",
    )
    p.add_argument("store", help="the result store (results.zarr)")
    p.add_argument("--html", metavar="FILE", default=None, help="write the page to FILE (e.g. report.html)")
    p.add_argument("--png", metavar="DIR", default=None, help="write the figures as PNG files into DIR")
    p.add_argument("--top", type=int, default=DEFAULT_TOP, metavar="N",
                   help=f"pairs in each thumbnail table (default {DEFAULT_TOP}; 0: no thumbnails)")
    p.add_argument("--max-points", type=int, default=DEFAULT_MAX_POINTS, metavar="N",
                   help=f"most x positions per timeline; more items are drawn as min-max buckets "
                   f"(default {DEFAULT_MAX_POINTS})")
    p.add_argument("--rank-by", default=None, metavar="METRIC",
                   help="metric ordering the thumbnail tables (default: change, mse, ... whichever is present)")
    p.set_defaults(func=_cmd_report)
    return p

