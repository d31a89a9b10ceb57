"""``gpudiff run``: a sequence or a pair manifest -> a resumable Zarr result store, on Dask.

source -> plan -> graph (one Dask task per chunk of items) -> store. Each task reads its own frames
(each frame once per chunk; consecutive pairs reuse the frame already read, on the device too),
compares every pair of its chunk, and writes its whole chunk of every array, status last. A rerun
skips done chunks; SIGTERM stops taking work, lets running chunks finish or abandons them between
items, and exits with 75 so a scheduler job can requeue.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from .. import backend as _backend
from ..errors import EXIT_FAILED_ITEMS, EXIT_INTERRUPTED, EXIT_OK, ConfigError, GpudiffError
from ..options import CompareOptions
from ._plan import Plan, Shard, make_plan, shard_from_env

if TYPE_CHECKING:  # for the annotation only; the functions import the store where they use it
    from ._store import Field

__all__ = ["RunConfig", "RunReport", "run", "process_chunk", "MAP_KINDS"]

#: Per-pixel maps a run can save (``--save-maps``).
MAP_KINDS = ("diff", "flow", "foreground")

@dataclass(frozen=True)
class RunConfig:
    """Everything about a run that is not how two images are compared."""

    source: str
    out: str
    component: str | None = None
    pairs: str = "consecutive"
    chunk: int = 64
    save_maps: tuple[str, ...] = ()
    scheduler: str | None = None  # None/'threads': local threads; 'local:N'; 'tcp://host:port'
    workers: int | None = None
    shard: Shard | None = None
    overwrite: bool = False
    log_json: bool = False
    progress: bool | None = None  # None: a bar on a terminal, plain lines otherwise
    log_every_s: float = 10.0
    #: Sequence features (each item's moving frame against its reference): dense optical flow,
    #: corrupted frames and cuts, background subtraction.
    flow: bool = False
    events: bool = False
    background: bool = False
    flow_radius: int = 7
    event_options: dict | None = None
    background_options: dict | None = None

    def __post_init__(self):
        bad = sorted(set(self.save_maps) - set(MAP_KINDS))
        if bad:
            raise ConfigError(f"--save-maps {','.join(bad)}: known maps are {', '.join(MAP_KINDS)}")
        if "flow" in self.save_maps and not self.flow:
            raise ConfigError("--save-maps flow needs --flow")
        if "foreground" in self.save_maps and not self.background:
            raise ConfigError("--save-maps foreground needs --background")
        if (self.flow or self.events or self.background) and self.pairs != "consecutive":
            raise ConfigError("--flow, --corrupt, --cuts and --background need --pairs consecutive (a sequence)")
        if self.workers is not None and self.workers < 1:
            raise ConfigError(f"--workers {self.workers} must be >= 1")


@dataclass
class RunReport:
    exit_code: int
    done: int = 0
    failed: int = 0
    pending: int = 0
    chunks_run: int = 0
    chunks_skipped: int = 0
    elapsed_s: float = 0.0
    interrupted: bool = False
    failures: list = field(default_factory=list)
    #: How the histograms were binned, for the summary (the range and where it came from).
    bins_note: str = ""
    #: Seconds from the start of the compare stage to its first finished item (kernel compilation on
    #: first use, first reads), and the items/s after it; None when nothing was compared.
    startup_s: float | None = None
    warm_rate: float | None = None


# ------------------------------------------------------------------------------------------------
# the per-chunk task (runs on a Dask worker: thread or process)

_STOP = threading.Event()


@dataclass
class ChunkResult:
    chunk: int
    done: int = 0
    failed: int = 0
    abandoned: bool = False
    failures: list = field(default_factory=list)
    seconds: float = 0.0


def process_chunk(source, c: int, start: int, refs, movs, options: CompareOptions, out: str, save_maps=(),
                  stop: threading.Event | None = None, seq: dict | None = None) -> ChunkResult:
    """Compare every item of chunk ``c`` (items ``start, start+1, ...`` pairing frames ``refs[k]``
    and ``movs[k]``) and write the chunk to the store, status last."""
    from ..pair._compare import HistogramMemo, _compare_arrays  # noqa: PLC0415
    from ._store import metric_columns  # noqa: PLC0415

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
    columns = {name: np.full(n, np.nan) for name in names}
    if options.align:
        columns["shift"] = np.full((n, 2), np.nan)
    seq = seq or {}
    maps = {}
    if "diff" in save_maps:
        h, w = _frame_hw(store)
        maps["maps/diff"] = np.full((n, h, w), np.nan, dtype=np.float32)
    if seq.get("flow"):
        columns["flow_mean"] = np.full(n, np.nan)
        columns["flow_p95"] = np.full(n, np.nan)
        if "flow" in save_maps:
            h, w = _frame_hw(store)
            maps["maps/flow"] = np.full((n, h, w, 2), np.nan, dtype=np.float32)
    status = np.zeros(n, dtype=np.uint8)
    errors = [""] * n

    xp = _backend.resolve_backend(options.backend)
    cache: dict[int, object] = {}
    memo = HistogramMemo()  # a frame shared by two pairs has its histogram counted once
    last_use = {}
    for k, (r, m) in enumerate(zip(refs.tolist(), movs.tolist())):
        last_use[r] = k
        last_use[m] = k

    def frame(i):
        if i not in cache:
            try:
                cache[i] = _backend.to_device(source.read(i), xp)  # each frame crosses to the device once
            except GpudiffError as exc:
                cache[i] = exc
            except Exception as exc:  # a decoder's own exception: fail the items, keep going
                cache[i] = GpudiffError(f"{source.label(i)}: cannot read ({type(exc).__name__}: {exc})")
        v = cache[i]
        if isinstance(v, BaseException):
            raise v
        return v

    from ..pair._sums_numba import serial_kernels  # noqa: PLC0415

    # On the CPU the parallelism is Dask's (a chunk per thread): each task runs the fused pass on
    # its own thread, with no lock and no second pool of threads competing for the cores.
    cpu_serial = serial_kernels() if not _backend.is_cupy(xp) else contextlib.nullcontext()
    ticker = _Ticker(c)
    with _backend.device_stream(xp), cpu_serial:  # a stream per task: tasks on other threads overlap
        for k, (r, m) in enumerate(zip(refs.tolist(), movs.tolist())):
            if stop.is_set():
                res.abandoned = True  # nothing of this chunk is written: it stays pending
                return res
            try:
                a = frame(r)
                b = frame(m)
                # frames come validated from the source (as compare() validates its inputs)
                result = _compare_arrays(
                    a, b, options, xp, names=("reference", "moving"), diff_map="maps/diff" in maps, memo=memo,
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
                    _flow_item(a, b, k, columns, maps, radius=seq.get("flow_radius", 7))
                status[k] = 1
                res.done += 1
            except GpudiffError as exc:
                status[k] = 2
                errors[k] = " ".join(str(exc).split())
                res.failed += 1
            except MemoryError:
                status[k] = 2
                errors[k] = "out of memory comparing this pair: use smaller --chunk, fewer --metrics"
                res.failed += 1
            except Exception as exc:  # a bug must not lose the batch: record it, continue
                status[k] = 2
                errors[k] = f"internal error: {type(exc).__name__}: {' '.join(str(exc).split())}"
                res.failed += 1
            if errors[k]:
                res.failures.append((int(start + k), errors[k]))
            ticker.item(status[k] == 1)
            for i in (r, m):  # drop frames no later item of this chunk uses
                if last_use.get(i) == k:
                    cache.pop(i, None)
                    memo.forget(i)
    columns.update(maps)
    store.write_chunk(c, columns, status, errors)
    res.seconds = time.perf_counter() - t0
    return res


def _flow_item(a, b, k, columns, maps, *, radius):
    """Dense Lucas-Kanade flow of one pair: mean and p95 of its magnitude (and the field)."""
    from ..sequence._flow import flow_magnitude_stats, optical_flow_lk  # noqa: PLC0415
    from ..pair._preprocess import to_gray  # noqa: PLC0415

    if a.shape[:2] != b.shape[:2]:
        raise GpudiffError(f"flow needs frames of one size: {tuple(a.shape)} vs {tuple(b.shape)}")
    flow = optical_flow_lk(to_gray(a), to_gray(b), radius=radius)
    stats = flow_magnitude_stats(flow)
    columns["flow_mean"][k] = stats["flow_mean"]
    columns["flow_p95"][k] = stats["flow_p95"]
    if "maps/flow" in maps:
        xp = _backend.get_namespace(flow)
        maps["maps/flow"][k] = _backend.to_host(xp.moveaxis(flow, 0, -1))  # sync


_STORES: dict = {}
_STORES_LOCK = threading.Lock()


def _open_store(out: str):
    """The store, opened once per process (a worker runs many chunks of the same run).

    Keyed by path and creation time, so a store that was overwritten is opened afresh.
    """
    from ._store import ResultStore  # noqa: PLC0415

    key = os.path.abspath(out)
    created = _created_stamp(key)
    with _STORES_LOCK:
        hit = _STORES.get(key)
        if hit is not None and hit[0] == created:
            return hit[1]
        store = ResultStore.open(out, mode="r+")
        _STORES[key] = (created, store)
        return store


def _created_stamp(path: str):
    try:
        return os.stat(os.path.join(path, "zarr.json")).st_mtime_ns
    except OSError:
        return None


def _frame_hw(store) -> tuple[int, int]:
    shape = store.attrs.get("frame_shape")
    if not shape:
        raise ConfigError("--save-maps needs frames of one known shape; this source has none")
    return int(shape[0]), int(shape[1])


# ------------------------------------------------------------------------------------------------
# the driver


def _fields(options: CompareOptions, cfg: RunConfig, source):
    from ._store import Field, map_field, result_fields  # noqa: PLC0415

    maps = {}
    shape = source.frame_shape
    if cfg.save_maps and not shape:
        raise ConfigError(f"--save-maps needs frames of one shape; {cfg.source} has mixed shapes")
    if "diff" in cfg.save_maps:
        maps["diff"] = tuple(shape[:2])
    out = result_fields(options, manifest=source.pairs() is not None, maps=maps) + _label_fields(source)
    if cfg.flow:
        out += [Field("flow_mean", "float64"), Field("flow_p95", "float64")]
        if "flow" in cfg.save_maps:
            h, w = shape[:2]
            out.append(Field("maps/flow", "float32", (h, w, 2), dims=("item", "y", "x", "component"),
                             item_chunk=1))
    if cfg.background:
        out.append(Field("foreground_fraction", "float64"))
        if "foreground" in cfg.save_maps:
            out.append(map_field("foreground", tuple(shape[:2]), dtype="bool"))
    if cfg.events:
        out += [Field("corrupt", "int8"), Field("cut", "int8"), Field("corrupt_score", "float64"),
                Field("cut_score", "float64"), Field("kl_prev", "float64")]
    return out


#: Frames read to set the automatic histogram range of a 16-bit source.
_BINS_SAMPLE = 16


def _resolve_bins_range(options: CompareOptions, source) -> tuple[CompareOptions, str]:
    """A run's histograms need one range for every item: ``bins_range='auto'`` on uint16 frames
    becomes ``0:TOP`` from a sample of frames (recorded in the store with the options)."""
    from ..pair._compare import auto_top  # noqa: PLC0415

    wants = options.wants("histogram")
    raw = options.normalize in ("none", "histogram") and options.edges == "none"
    dtype = getattr(source, "dtype", None)
    if not (wants and raw and options.bins_range == "auto" and dtype == np.dtype(np.uint16)):
        if wants and options.bins_range not in ("auto", "dtype"):
            return options, f"histograms: {options.bins} bins over {options.bins_range} (--bins-range)"
        return options, ""
    n = len(source)
    picks = sorted({int(round(i)) for i in np.linspace(0, n - 1, min(n, _BINS_SAMPLE))})
    lo = hi = None
    for i in picks:
        try:
            f = source.read(i)
        except Exception:  # noqa: BLE001 - an unreadable frame fails its items later; sample the rest
            continue
        lo = int(f.min()) if lo is None else min(lo, int(f.min()))
        hi = int(f.max()) if hi is None else max(hi, int(f.max()))
    if hi is None:
        return options, ""
    top = auto_top(hi)
    note = (f"histograms: {options.bins} bins over 0:{top:g} (--bins-range auto: uint16 values {lo}-{hi} in "
            f"{len(picks)} sampled frames; --bins-range dtype for 0:65536)")
    if options.data_range is None and (options.wants("psnr") or options.wants("ssim")):
        note += f"; PSNR and SSIM take the dtype's range 65535 (--data-range {hi - lo} for the data's)"
    return options.replace(bins_range=f"0:{top:g}"), note


def _label_fields(source) -> list[Field]:
    """Sequences: each item's frame names (file path, ``stack.tif[page 3]``, ``clip.mp4[frame 9]``)
    and, where the source has them, times (seconds from the first frame)."""
    from ._store import Field  # noqa: PLC0415

    if source.pairs() is not None:
        return []  # a manifest's items carry reference_path / moving_path / id
    out = [Field("reference_name", "str"), Field("moving_name", "str")]
    if source.frame_times() is not None:
        out += [Field("reference_time", "float64"), Field("moving_time", "float64")]
    return out


def _coordinates(fields) -> str:
    """The CF ``coordinates`` attribute: xarray.open_zarr makes these item coordinates."""
    labels = ("reference_index", "moving_index", "reference_name", "moving_name", "reference_time", "moving_time",
              "reference_path", "moving_path", "id")
    have = {f.name for f in fields}
    return " ".join(n for n in labels if n in have)


def _initial_columns(source, plan: Plan, fields=()) -> dict:
    """Columns known before any comparison: frame indices, names (and times) for sequences,
    paths/ids for manifests."""
    cols = {"reference_index": plan.reference, "moving_index": plan.moving}
    have = {f.name for f in fields}
    if "reference_name" in have:
        frames = np.unique(np.concatenate([plan.reference, plan.moving]))
        names = {int(i): source.label(int(i)) for i in frames}
        cols["reference_name"] = np.array([names[int(i)] for i in plan.reference], dtype=object)
        cols["moving_name"] = np.array([names[int(i)] for i in plan.moving], dtype=object)
    if "reference_time" in have:
        times = source.frame_times()
        cols["reference_time"] = times[np.asarray(plan.reference, dtype=np.int64)]
        cols["moving_time"] = times[np.asarray(plan.moving, dtype=np.int64)]
    if source.pairs() is not None:
        cols["reference_path"] = np.array([source.label(int(i)) for i in plan.reference], dtype=object)
        cols["moving_path"] = np.array([source.label(int(i)) for i in plan.moving], dtype=object)
        ids = source.pair_ids()
        cols["id"] = np.array(ids if ids is not None else [""] * plan.n_items, dtype=object)
    return cols


def _run_config_key(options: CompareOptions, cfg: RunConfig, source, plan: Plan, fields) -> dict:
    opts = options.to_dict()
    opts.pop("backend", None)  # where it runs does not change what is computed
    opts.pop("max_pixels", None)
    return {
        "options": opts,
        "pairs": cfg.pairs if source.pairs() is None else "manifest",
        "chunk": plan.chunk,
        "n_items": plan.n_items,
        "source": source.fingerprint(),
        "fields": [f.name for f in fields],
        "save_maps": list(cfg.save_maps),
        "sequence": {"flow": cfg.flow, "flow_radius": cfg.flow_radius, "events": cfg.events,
                     "event_options": cfg.event_options, "background": cfg.background,
                     "background_options": cfg.background_options},
    }


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


def run(cfg: RunConfig, options: CompareOptions, *, stream=None) -> RunReport:
    """Run (or resume) a batch; returns a report whose ``exit_code`` the CLI returns.

    Exit codes: 0 everything of this shard done; 1 finished but some items failed (recorded);
    75 interrupted (SIGTERM): resume later with the same command. Input and configuration errors
    found before starting raise (the CLI's exit code 2).
    """
    from ..io import open_source  # noqa: PLC0415
    from ._store import ResultStore  # noqa: PLC0415

    t0 = time.monotonic()
    stream = stream or sys.stderr
    source = open_source(cfg.source, component=cfg.component, max_pixels=options.max_pixels)
    plan = make_plan(len(source), pairs=cfg.pairs, explicit=source.pairs(), chunk=cfg.chunk)
    options, bins_note = _resolve_bins_range(options, source)
    fields = _fields(options, cfg, source)
    xp = _backend.resolve_backend(options.backend)
    attrs = {
        "coordinates": _coordinates(fields),
        "options": options.to_dict(),
        "pairs": cfg.pairs if source.pairs() is None else "manifest",
        "source": source.fingerprint(),
        "source_kind": source.kind,
        "frames": len(source),
        "frame_shape": list(source.frame_shape) if source.frame_shape else None,
        "backend": _backend.backend_name(xp),
        "device": _backend.device_name(xp),
    }
    if cfg.events:
        from ..sequence._corrupt import EventOptions  # noqa: PLC0415

        eo = EventOptions(**(cfg.event_options or {}))
        # what decided the flags (scores are 1 at their threshold), and the classic rule's line
        attrs["thresholds"] = {"corrupt_score": 1.0, "cut_score": 1.0, "kl_prev": float(eo.kl_threshold)}
    config = _run_config_key(options, cfg, source, plan, fields)
    store = ResultStore.create_or_open(cfg.out, n_items=plan.n_items, chunk=plan.chunk, fields=fields,
                                       attrs=attrs, config=config, overwrite=cfg.overwrite,
                                       initial=_initial_columns(source, plan, fields))
    shard = cfg.shard or shard_from_env()
    mine = plan.shard_chunks(shard)
    pending = store.pending_chunks(mine)
    report = RunReport(EXIT_OK, chunks_skipped=len(mine) - len(pending), bins_note=bins_note)
    progress = _Progress(sum(plan.chunk_slice(c).stop - plan.chunk_slice(c).start for c in pending),
                         len(pending), log_json=cfg.log_json, bar=cfg.progress, every_s=cfg.log_every_s,
                         stream=stream)
    _STOP.clear()
    old = _install_stop_handlers() if cfg.background else None
    global _TICK
    _TICK = progress
    try:
        results = _execute(cfg, source, plan, pending, options, progress)
        _TICK = None
        report.startup_s, report.warm_rate = progress.warm()
        bg_pending = 0
        if cfg.events and not _STOP.is_set():
            progress.stage("corrupt/cuts", len(source))
            bg_pending += events_pass(cfg, source, plan, store, mine, backend=options.backend, progress=progress)
        elif cfg.events:
            bg_pending += 1
        if cfg.background and not _STOP.is_set():
            progress.stage("background", plan.n_items + 1)
            bg_pending += background_pass(cfg, source, plan, store, mine, backend=options.backend,
                                          progress=progress)
        elif cfg.background:
            bg_pending += 1
    finally:
        _TICK = None
        progress.close()
        if old is not None:
            _restore_handlers(old)
    for r in results:
        if r.abandoned:
            continue
        report.chunks_run += 1
        report.failures.extend(r.failures)
    status = store.read(["status"])["status"]
    sel = np.concatenate([np.arange(plan.n_items)[plan.chunk_slice(c)] for c in mine]) if mine else np.arange(0)
    st = status[sel]
    report.done = int(np.count_nonzero(st == 1))
    report.failed = int(np.count_nonzero(st == 2))
    report.pending = int(np.count_nonzero(st == 0))
    if cfg.background and bg_pending and not report.pending:
        report.pending = bg_pending  # the items are done, their foreground is not yet
    report.interrupted = _STOP.is_set() and report.pending > 0
    report.elapsed_s = time.monotonic() - t0
    if report.pending:
        report.exit_code = EXIT_INTERRUPTED
    elif report.failed:
        report.exit_code = EXIT_FAILED_ITEMS
    return report


# ------------------------------------------------------------------------------------------------
# background subtraction: in time order (the model carries through time), tiled in space


def _bg_state_path(out: str) -> str:
    return os.path.join(out, "background_state.pkl")


def background_pass(cfg: RunConfig, source, plan: Plan, store, chunks, *, backend=None, progress=None) -> int:
    """Run the background model over the sequence in store-chunk order, each chunk's frames as one
    Dask task per spatial tile (each tile carries its own model), writing ``foreground_fraction``
    (and ``maps/foreground``) of each item's moving frame.

    The models are saved (atomically) after each chunk with the next chunk to do, so a killed run
    resumes where the model stood. A shard runs the pass only when it owns every chunk (the model
    needs the whole sequence in order): with several shards, the last rerun without ``--shard``
    completes it. Returns the number of items whose foreground is still missing.
    """
    import pickle  # noqa: PLC0415

    import dask  # noqa: PLC0415

    from ..sequence._background import BackgroundModel, BackgroundOptions, estimate_shift, plan_tiles  # noqa: PLC0415

    all_chunks = list(range(plan.n_chunks))
    if sorted(chunks) != all_chunks:
        return plan.n_items  # a shard cannot run the model alone
    opts = BackgroundOptions(**(cfg.background_options or {}))
    xp = _backend.resolve_backend(backend)
    state_path = _bg_state_path(cfg.out)
    state = {"next_chunk": 0, "models": None, "reference": None, "options": opts.to_dict()}
    if os.path.exists(state_path):
        with open(state_path, "rb") as f:
            saved = pickle.load(f)
        if saved.get("options") == opts.to_dict():
            state = saved
    start = int(state["next_chunk"])
    if start >= plan.n_chunks:
        return 0
    if progress is not None and start:
        progress.advance(int(plan.chunk_slice(start).start) + 1)  # done by an earlier run
    shape = source.frame_shape
    if not shape:
        raise ConfigError(f"--background needs frames of one shape; {cfg.source} has mixed shapes")
    h, w = shape[:2]
    ntiles = max(1, min(cfg.workers or os.cpu_count() or 1, h // max(8, 2 * opts.halo + 1)))
    tiles = plan_tiles(shape, (-(-h // ntiles), w), halo=opts.halo)
    models = [BackgroundModel(options=opts, tile=t, xp=xp) for t in tiles]
    if state["models"]:
        for m, saved in zip(models, state["models"]):
            _restore_model(m, saved, xp)
    reference = None if state["reference"] is None else _backend.to_device(state["reference"], xp)
    save_maps = "foreground" in cfg.save_maps

    def run_tile(model, frames, shifts):
        # an unreadable frame (None) neither teaches the model nor gets a mask
        return [None if f is None else model.update(f, shift=s) for f, s in zip(frames, shifts)], model

    for c in range(start, plan.n_chunks):
        if _STOP.is_set():
            return int(plan.n_items - plan.chunk_slice(c).start)
        sl = plan.chunk_slice(c)
        idx = [int(i) for i in plan.moving[sl]]
        if c == 0:
            idx = [int(plan.reference[0])] + idx  # the first frame only teaches the model
        frames = dask.compute(*[dask.delayed(_read_or_none)(source, i) for i in idx], scheduler="threads")
        frames = [None if f is None else _backend.to_device(f, xp) for f in frames]
        if reference is None:
            reference = next((f for f in frames if f is not None), None)
        if opts.align and reference is not None:
            shifts = dask.compute(*[dask.delayed(estimate_shift)(reference, f, options=opts) if f is not None
                                    else None for f in frames], scheduler="threads")
        else:
            shifts = [None] * len(frames)
        outs = dask.compute(*[dask.delayed(run_tile)(m, frames, shifts) for m in models], scheduler="threads")
        models = [m for _, m in outs]
        masks = xp.zeros((len(frames), h, w), dtype=bool)
        for (tile_masks, _), tile in zip(outs, tiles):
            ys, xs = tile.core_slices
            for j, mk in enumerate(tile_masks):
                if mk is not None:
                    masks[j, ys, xs] = mk
        missing = np.array([f is None for f in frames])
        if c == 0:
            masks, missing, shifts = masks[1:], missing[1:], shifts[1:]
        if opts.align:
            from ..sequence._background import mask_to_frame  # noqa: PLC0415

            masks = xp.stack([mk if s is None else mask_to_frame(mk, s) for mk, s in zip(masks, shifts)])
        fractions = _backend.to_host(masks.reshape(len(masks), -1).mean(axis=1, dtype=xp.float64))  # sync
        fractions = np.where(missing, np.nan, fractions)
        cols = {"foreground_fraction": fractions}
        if save_maps:
            cols["maps/foreground"] = _backend.to_host(masks)  # sync
        store.write_columns(c, cols)
        tmp = f"{state_path}.tmp{os.getpid()}"
        with open(tmp, "wb") as f:
            pickle.dump({"next_chunk": c + 1, "models": [_model_state(m) for m in models],
                         "reference": _backend.to_host(reference), "options": opts.to_dict()}, f)
        os.replace(tmp, state_path)
        if progress is not None:
            progress.advance(len(idx), failed=int(missing.sum()))
    return 0


# ------------------------------------------------------------------------------------------------
# corrupted frames and cuts: features in parallel, then one decision over the whole sequence


def _event_features(source, t0: int, t1: int, n: int, opts, backend, advance=None):
    """Frame features of frames [t0, t1) and the pair features each needs: (t-1, t) and (t-1, t+1)."""
    from ..sequence._corrupt import frame_features, pair_features  # noqa: PLC0415

    xp = _backend.resolve_backend(backend)
    cache: dict = {}
    unreadable: list = []

    def get(i):
        # An unreadable frame stands in as a repeat of the nearest readable one before it (or
        # after it, at the start): a repeat raises no event; its item is left undecided.
        if i not in cache:
            j, step = i, -1
            while True:
                f = _read_or_none(source, j)
                if f is not None:
                    break
                if j == i:
                    unreadable.append(i)
                j += step
                if j < 0:
                    j, step = i + 1, 1
                if j >= n:
                    raise GpudiffError("no frame of the sequence can be read")
            cache[i] = _backend.to_device(f, xp)
        return cache[i]

    ff, cons, skip = [], [], []
    for t in range(t0, t1):
        f = frame_features(get(t), color=opts.color)
        ff.append(type(f)(histogram=_backend.to_host(f.histogram), shape=f.shape, lsb=f.lsb))
        cons.append(pair_features(get(t - 1), get(t), block_size=opts.block_size, color=opts.color)
                    if t >= 1 else None)
        skip.append(pair_features(get(t - 1), get(t + 1), block_size=opts.block_size, color=opts.color)
                    if 1 <= t <= n - 2 else None)
        for k in [k for k in cache if k < t - 1]:
            del cache[k]
        if advance is not None:
            advance(1)
    return ff, cons, skip, sorted(set(unreadable))


def events_pass(cfg: RunConfig, source, plan: Plan, store, chunks, *, backend=None, progress=None) -> int:
    """Flag corrupted frames and cuts: per-frame histograms and per-pair block maps (consecutive
    and skip-one pairs) computed as Dask tasks over blocks of frames, then the decision of
    :func:`gpudiff.sequence.detect_events` over the whole sequence; written as the columns of each
    item's moving frame (item k is frame k + 1; frame 0 has no item). Idempotent: a marker file
    records completion; a killed pass is redone. Holds the block maps of the whole sequence
    (2 * H * W / 64 float32 per frame with 8x8 blocks). Returns the items still missing."""
    import json as _json  # noqa: PLC0415

    import dask  # noqa: PLC0415

    from ..sequence._corrupt import EventOptions, check_motion, detect_events  # noqa: PLC0415

    if sorted(chunks) != list(range(plan.n_chunks)):
        return plan.n_items  # the decision needs the whole sequence: a run without --shard completes it
    opts = EventOptions(**(cfg.event_options or {}))
    marker = os.path.join(cfg.out, "events_done.json")
    if os.path.exists(marker):
        if progress is not None:
            progress.advance(len(source))  # done by an earlier run
        return 0
    n = len(source)
    step = max(1, -(-n // max(1, 4 * (cfg.workers or os.cpu_count() or 1))))
    advance = progress.advance if progress is not None else None
    tasks = [dask.delayed(_event_features)(source, t0, min(n, t0 + step), n, opts, backend, advance)
             for t0 in range(0, n, step)]
    parts = dask.compute(*tasks, scheduler="threads", **({"num_workers": cfg.workers} if cfg.workers else {}))
    ff = [x for p in parts for x in p[0]]
    cons = [x for p in parts for x in p[1]]
    skip = [x for p in parts for x in p[2]]
    bad = sorted({i for p in parts for i in p[3]})
    ev = check_motion(detect_events(ff, cons, skip, options=opts), source.read, options=opts)
    if bad:  # frames that could not be read: no verdict (their items failed in the main pass)
        ev = {k: np.array(v, dtype=np.float64 if k.endswith(("score", "prev")) else np.int8) for k, v in ev.items()
              if k in ("corrupt", "cut", "corrupt_score", "cut_score", "kl_prev")}
        for k in ev:
            ev[k][bad] = np.nan if ev[k].dtype.kind == "f" else -1
    moving = np.asarray(plan.moving, dtype=np.int64)
    for c in range(plan.n_chunks):
        if _STOP.is_set():
            return plan.n_items
        fr = moving[plan.chunk_slice(c)]
        store.write_columns(c, {
            "corrupt": np.asarray(ev["corrupt"])[fr].astype(np.int8),
            "cut": np.asarray(ev["cut"])[fr].astype(np.int8),
            "corrupt_score": np.asarray(ev["corrupt_score"], dtype=np.float64)[fr],
            "cut_score": np.asarray(ev["cut_score"], dtype=np.float64)[fr],
            "kl_prev": np.asarray(ev["kl_prev"], dtype=np.float64)[fr],
        })
    tmp = f"{marker}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        _json.dump({"done": True, "frame0_corrupt": bool(np.asarray(ev["corrupt"])[0]),
                    "options": opts.to_dict() if hasattr(opts, "to_dict") else None}, f)
    os.replace(tmp, marker)
    return 0


def _read_or_none(source, i):
    """A frame, or None when it cannot be read (its item already failed in the main pass)."""
    try:
        return source.read(i)
    except Exception:  # noqa: BLE001 - recorded as the item's failure by the main pass
        return None


def _model_state(model) -> dict:
    """A background model's state on the host, without its array module (for the resume file)."""
    out = {}
    for k, v in vars(model).items():
        if k in ("xp", "options", "tile"):
            continue
        if k == "state" and v is not None:
            v = {f: _backend.to_host(getattr(v, f)) for f in ("mean", "var", "count", "frames")}
        else:
            v = _backend.to_host(v)
        out[k] = v
    return out


def _restore_model(model, saved: dict, xp) -> None:
    from ..sequence._background import BackgroundState  # noqa: PLC0415

    for k, v in saved.items():
        if k == "state" and v is not None:
            v = BackgroundState(mean=xp.asarray(v["mean"]), var=xp.asarray(v["var"]), count=xp.asarray(v["count"]),
                                frames=int(v["frames"]))
        elif isinstance(v, np.ndarray):
            v = xp.asarray(v)
        setattr(model, k, v)


def _execute(cfg: RunConfig, source, plan: Plan, chunks, options, progress) -> list[ChunkResult]:
    """Run the chunk tasks on the chosen Dask scheduler; SIGTERM/SIGINT stop taking new work."""
    import dask  # noqa: PLC0415

    if not chunks:
        return []
    # The source is one node of the graph (shipped to each worker once, not with every task); each
    # task carries only its own items.
    src = dask.delayed(source, name=f"gpudiff-source-{os.getpid()}-{id(source)}", traverse=False)
    tasks = []
    for c in chunks:
        s = plan.chunk_slice(c)
        tasks.append(dask.delayed(_task, pure=False)(src, c, s.start, plan.reference[s], plan.moving[s],
                                                     options, cfg.out, cfg.save_maps, _seq(cfg)))
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


def _seq(cfg: RunConfig) -> dict:
    return {"flow": cfg.flow, "flow_radius": cfg.flow_radius, "events": cfg.events,
            "event_options": cfg.event_options}


def _task(source, c, start, refs, movs, options, out, save_maps, seq=None):
    """The Dask task: the module-level stop event is per process (a worker's is never set)."""
    return process_chunk(source, c, start, refs, movs, options, out, save_maps, seq=seq)


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
        client = Client(sched)
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
