"""``gpudiff run``: a sequence or a pair manifest -> a resumable Zarr result store, on Dask.

source -> plan -> graph (one Dask task per chunk of items) -> store. Each task reads its own frames
(each frame once per chunk; consecutive pairs reuse the frame already read, on the device too),
compares every pair of its chunk, and writes its whole chunk of every array, status last. A rerun
skips done chunks; SIGTERM stops taking work, lets running chunks finish or abandons them between
items, and exits with 75 so a scheduler job can requeue.

Here: the run's configuration and report, the store's fields and attributes for a run, and
:func:`run`. The pieces it drives: ``_chunk`` (the per-chunk task), ``_execute`` (the Dask
schedulers), ``_passes`` (the sequence passes: corrupt/cuts, background), ``_progress`` (the bar and
log lines) and ``_signals`` (the stop event SIGTERM sets).
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import numpy as np

from .. import backend as _backend
from ..errors import EXIT_FAILED_ITEMS, EXIT_INTERRUPTED, EXIT_OK, ConfigError
from ..options import CompareOptions
from ..sequence._motion import DEFAULT_FLOW_METHOD, FLOW_METHODS
from ._chunk import raise_write_error
from ._config import normal_source_key
from ._execute import _execute
from ._passes import background_pass, events_pass
from ._verify import clean_after_run, clean_before_run
from ._plan import Plan, Shard, make_plan, shard_from_env
from ._progress import _Progress, _ticking_into
from ._signals import _STOP, _install_stop_handlers, _restore_handlers

if TYPE_CHECKING:  # for the annotation only; the functions import the schema where they use it
    from ._schema import Field

__all__ = ["RunConfig", "RunReport", "run", "MAP_KINDS"]

#: Per-pixel maps a run can save (``--save-maps``).
MAP_KINDS = ("diff", "flow", "foreground", "labels")
#: The largest ``--chunk``: items per task and per store chunk (beyond it, a chunk's arrays alone
#: would not fit any machine's memory).
MAX_CHUNK = 1 << 31


def store_chunk(chunk: int, n_items: int, per_item_bytes: int = 0, parallel: int = 1, available=None, *,
                serial_item_bytes: int = 0, share: float = 0.5) -> int:
    """The store's (and the plan's) items per chunk: ``chunk``, but no more than there are items
    (at least 1), so memory follows the work, not the flag (``--chunk 100000000`` on 9 items).

    And no more than fits in ``share`` of the ``available`` bytes (None: no bound), at least 1:
    each of the ``parallel`` chunk tasks that run at once holds ``per_item_bytes`` per item of its
    chunk (its ``--save-maps`` maps), and one pass over the chunks in turn (the background model)
    ``serial_item_bytes`` per item. Pure: the caller reads the memory and says what it lowered.
    """
    chunk = max(1, min(int(chunk), int(n_items)))
    per_item = max(int(per_item_bytes) * max(1, int(parallel)), int(serial_item_bytes))
    if available is None or per_item <= 0:
        return chunk
    room = int(int(available) * share)
    return max(1, min(chunk, room // per_item))


def _whole_in(value, lo: int, hi: int) -> bool:
    """True for a whole number from ``lo`` to ``hi`` (not a bool, not nan/inf)."""
    try:
        return not isinstance(value, bool) and int(value) == value and lo <= value <= hi
    except (TypeError, ValueError, OverflowError):
        return False


def check_chunk(chunk) -> int:
    """``--chunk`` as a whole number from 1 to :data:`MAX_CHUNK`, or a one-line ConfigError."""
    if not _whole_in(chunk, 1, MAX_CHUNK):
        raise ConfigError(f"--chunk {chunk}: give a whole number of items from 1 to {MAX_CHUNK} (default 64)")
    return int(chunk)


def check_scheduler(sched: str | None) -> None:
    """Refuse a ``--scheduler`` that cannot work before anything starts: ``local:N`` needs N >= 1."""
    text = (sched or "threads").strip()
    if text in ("threads", "sync", "cuda") or "://" in text:
        return
    if text.startswith("local:"):
        try:
            n = int(text.split(":", 1)[1])
        except ValueError:
            raise ConfigError(f"--scheduler {text}: write local:N with N worker processes, e.g. local:4") from None
        if n < 1:
            raise ConfigError(f"--scheduler local:N needs N >= 1 worker processes (got {text}): e.g. --scheduler local:4")
        return
    raise ConfigError(f"--scheduler {text!r}: use threads, local:N, cuda or tcp://host:port")

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
    #: Dense flow method (:data:`gpudiff.sequence.FLOW_METHODS`); ``flow_radius`` is ``lk``'s window.
    flow_method: str = DEFAULT_FLOW_METHOD
    #: Trust only the pixels a backward flow confirms (:func:`gpudiff.sequence.flow_consistency`):
    #: ``flow_mean``/``flow_p95`` over them, their share in ``flow_valid``.
    flow_check: bool = True
    event_options: dict | None = None
    background_options: dict | None = None
    #: Options of the filesystem of a URL source or store (``--storage-options``: endpoint,
    #: credentials...); None: ``GPUDIFF_STORAGE_OPTIONS``, then the client's own configuration. Never
    #: part of the store's key or attributes, never shown (``repr`` leaves it out).
    storage_options: dict | None = field(default=None, repr=False, compare=False)
    #: Frames each chunk task reads ahead on as many threads (None: 8 for a URL source, else 0).
    prefetch: int | None = None
    #: Redo the failed items too, accepting a source whose changed files are inputs of failed items
    #: only (``--retry-failed``; see :mod:`gpudiff.engine._retry`).
    retry_failed: bool = False
    #: Verify this shard's finished chunks before resuming and re-mark damaged ones pending
    #: (``--verify-on-start``): True; None: only on a filesystem that cannot rename atomically
    #: (:func:`gpudiff.engine._verify.non_atomic_rename_fs`); False: never.
    verify_on_start: bool | None = None

    def __post_init__(self):
        bad = sorted(set(self.save_maps) - set(MAP_KINDS))
        if bad:
            raise ConfigError(f"--save-maps {','.join(bad)}: known maps are {', '.join(MAP_KINDS)}")
        if "flow" in self.save_maps and not self.flow:
            raise ConfigError("--save-maps flow needs --flow")
        if "foreground" in self.save_maps and not self.background:
            raise ConfigError("--save-maps foreground needs --background")
        if "labels" in self.save_maps and not self.background:
            raise ConfigError("--save-maps labels needs --background")
        if (self.flow or self.events or self.background) and self.pairs != "consecutive":
            raise ConfigError("--flow, --corrupt, --cuts and --background need --pairs consecutive (a sequence)")
        if self.flow:
            if self.flow_method not in FLOW_METHODS:
                raise ConfigError(f"--flow {self.flow_method}: known methods are {', '.join(FLOW_METHODS)}")
        if self.prefetch is not None and (isinstance(self.prefetch, bool) or not isinstance(self.prefetch, int)
                                          or not 0 <= self.prefetch <= 256):
            raise ConfigError(f"--prefetch {self.prefetch}: give a whole number of frames from 0 to 256")
        if self.retry_failed and self.overwrite:
            raise ConfigError("--retry-failed redoes the failed items of a store and --overwrite deletes it: give one")
        if self.workers is not None and self.workers < 1:
            raise ConfigError(f"--workers {self.workers} must be >= 1")
        object.__setattr__(self, "chunk", check_chunk(self.chunk))
        check_scheduler(self.scheduler)
        if self.flow and not _whole_in(self.flow_radius, 1, 1024):
            raise ConfigError(f"--flow-radius {self.flow_radius}: give lk's window radius in pixels, "
                              "a whole number from 1 to 1024 (default 7)")


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
# the driver


def _fields(options: CompareOptions, cfg: RunConfig, source):
    from ._schema import Field, map_field, result_fields  # noqa: PLC0415

    maps = {}
    shape = source.frame_shape
    if cfg.save_maps and not shape:
        raise ConfigError(f"--save-maps needs frames of one shape; {cfg.source} has mixed shapes")
    if "diff" in cfg.save_maps:
        maps["diff"] = tuple(shape[:2])
    out = result_fields(options, manifest=source.pairs() is not None, maps=maps) + _label_fields(source)
    if cfg.flow:
        out += [Field("flow_mean", "float64"), Field("flow_p95", "float64")]
        if cfg.flow_check:
            out.append(Field("flow_valid", "float64"))
        if "flow" in cfg.save_maps:
            h, w = shape[:2]
            out.append(Field("maps/flow", "float32", (h, w, 2), dims=("item", "y", "x", "component"),
                             item_chunk=1))
            if cfg.flow_check:
                out.append(map_field("flow_valid", (h, w), dtype="bool"))
    if cfg.background:
        out.append(Field("foreground_fraction", "float64"))
        if "foreground" in cfg.save_maps:
            out.append(map_field("foreground", tuple(shape[:2]), dtype="bool"))
        if "labels" in cfg.save_maps:  # CDnet's values: 0 background, 50 shadow, 170 unknown, 255 foreground
            out.append(map_field("foreground_labels", tuple(shape[:2]), dtype="uint8"))
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
    from ._schema import Field  # noqa: PLC0415

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
        "source": normal_source_key({"source": source.fingerprint()})["source"],
        "fields": [f.name for f in fields],
        "save_maps": list(cfg.save_maps),
        "sequence": {"flow": cfg.flow, "flow_radius": cfg.flow_radius, "events": cfg.events,
                     "event_options": cfg.event_options, "background": cfg.background,
                     "background_options": cfg.background_options,
                     # only with flow, so that the stores of runs without it keep their key
                     **({"flow_method": cfg.flow_method, "flow_check": cfg.flow_check} if cfg.flow else {})},
    }


def run(cfg: RunConfig, options: CompareOptions, *, stream=None) -> RunReport:
    """Run (or resume) a batch; returns a report whose ``exit_code`` the CLI returns.

    Exit codes: 0 everything of this shard done; 1 finished but some items failed (recorded);
    75 interrupted (SIGTERM): resume later with the same command. Input and configuration errors
    found before starting raise (the CLI's exit code 2).

    SIGTERM/SIGINT stop the run from its first line to its last (opening the source, the
    comparisons, the sequence passes): each sets the stop event the stages read.
    """
    _STOP.clear()
    old = _install_stop_handlers()
    try:
        return _run(cfg, options, stream=stream)
    finally:
        _restore_handlers(old)


def _run(cfg: RunConfig, options: CompareOptions, *, stream=None) -> RunReport:
    from ..io import open_source  # noqa: PLC0415

    t0 = time.monotonic()
    stream = stream or sys.stderr
    # the driver's handle of the source (a TIFF's file, a video's decoder) closed however it ends
    with open_source(cfg.source, component=cfg.component, max_pixels=options.max_pixels,
                     **_source_storage_options(cfg, open_source)) as source:
        return _run_source(cfg, options, source, t0, stream)


def _run_source(cfg: RunConfig, options: CompareOptions, source, t0: float, stream) -> RunReport:
    from ..io._remote import is_remote  # noqa: PLC0415
    from ._store import ResultStore  # noqa: PLC0415

    _check_sequence_length(cfg, len(source))
    plan = make_plan(len(source), pairs=cfg.pairs, explicit=source.pairs(), chunk=cfg.chunk)
    plan = replace(plan, chunk=_memory_bounded_chunk(cfg, source, plan, stream))
    options, bins_note = _resolve_bins_range(options, source)
    fields = _fields(options, cfg, source)
    attrs = _store_attrs(options, cfg, source, fields)

    def open_store(plan):
        return ResultStore.create_or_open(
            cfg.out, n_items=plan.n_items, chunk=plan.chunk, fields=fields, attrs=attrs,
            config=_run_config_key(options, cfg, source, plan, fields), overwrite=cfg.overwrite,
            initial=lambda: _initial_columns(source, plan, fields),
            **({"storage_options": cfg.storage_options} if is_remote(cfg.out) else {}))

    try:
        try:
            store = open_store(plan)
        except ConfigError as exc:
            if plan.chunk == cfg.chunk:
                raise
            # a store made before --chunk was clamped to the item count records the chunk as given
            try:
                plan = replace(plan, chunk=int(cfg.chunk))
                store = open_store(plan)
            except ConfigError:
                raise exc from None
    except ConfigError as exc:
        if not cfg.retry_failed:
            _raise_with_retry_hint(cfg, exc, _run_config_key(options, cfg, source, plan, fields))
        plan, store = _accept_retry(cfg, options, source, plan, fields, open_store, exc, stream)
    else:
        _record_stamps(store, source)
    shard = cfg.shard or shard_from_env()
    mine = plan.shard_chunks(shard)
    _verify_on_start(cfg, store, mine, stream)
    started = clean_before_run(store)  # temporaries killed writers left (older than an hour)
    pending = store.pending_chunks(mine, retry_failed=cfg.retry_failed)
    if cfg.retry_failed and pending and (cfg.events or cfg.background):
        from ._retry import reset_passes  # noqa: PLC0415

        reset_passes(store)  # they saw the failed items' frames as missing: run them again
    report = RunReport(EXIT_OK, chunks_skipped=len(mine) - len(pending), bins_note=bins_note)
    progress = _Progress(sum(plan.chunk_slice(c).stop - plan.chunk_slice(c).start for c in pending),
                         len(pending), log_json=cfg.log_json, bar=cfg.progress, every_s=cfg.log_every_s,
                         stream=stream)
    try:
        with _ticking_into(progress):
            results = _execute(cfg, source, plan, pending, options, progress)
        report.startup_s, report.warm_rate = progress.warm()
        bg_pending = _sequence_passes(cfg, source, plan, store, mine, options, progress)
    finally:
        progress.close()
    _tally(report, cfg, plan, store, mine, results, bg_pending)
    clean_after_run(store, mine, started, finished=not report.pending and not report.interrupted)
    report.elapsed_s = time.monotonic() - t0
    return report


def _memory_bounded_chunk(cfg: RunConfig, source, plan: Plan, stream) -> int:
    """The chunk of this run's store: ``--chunk`` clamped to the items and, for a new store, lowered
    to what fits half the memory available (said in one line on ``stream``).

    A chunk task holds its ``--save-maps`` maps for every item of its chunk, as many tasks at once
    as Dask runs (the background pass its masks one chunk at a time). A resume keeps the chunk its
    store was made with.
    """
    from ..io._remote import is_remote  # noqa: PLC0415
    from ._store import ResultStore  # noqa: PLC0415

    chunk = store_chunk(cfg.chunk, plan.n_items)
    px = int(np.prod((source.frame_shape or (0, 0))[:2]))
    flow_maps = bool(cfg.flow) and "flow" in cfg.save_maps
    maps = {"maps/diff": 4 * px * ("diff" in cfg.save_maps), "maps/flow": 8 * px * flow_maps,  # float32
            "maps/flow_valid": px * (flow_maps and bool(cfg.flow_check))}  # bool
    serial = {"maps/foreground": px * (bool(cfg.background) and "foreground" in cfg.save_maps),  # bool
              "maps/foreground_labels": px * (bool(cfg.background) and "labels" in cfg.save_maps)}  # uint8
    sched = (cfg.scheduler or "threads").strip()
    if (any(maps.values()) or any(serial.values())) and "://" not in sched:  # tcp://: memory of other hosts
        existing = None
        if not cfg.overwrite:
            try:
                existing = ResultStore.open(cfg.out, **({"storage_options": cfg.storage_options}
                                                        if is_remote(cfg.out) else {}))
            except Exception:  # noqa: BLE001 (none there, or something else: creating it says what)
                existing = None
        if existing is not None:
            if existing.n_items == plan.n_items and existing.chunk < chunk:
                chunk = existing.chunk  # made with a chunk lowered to the memory of its first run
        else:
            import os  # noqa: PLC0415

            from ..io._memory import _human, available_memory  # noqa: PLC0415

            avail, where = available_memory()
            parallel = (1 if sched == "sync" else int(sched.split(":", 1)[1]) if sched.startswith("local:")
                        else cfg.workers or os.cpu_count() or 1)
            per, ser = sum(maps.values()), sum(serial.values())
            bounded = store_chunk(cfg.chunk, plan.n_items, per, parallel, avail, serial_item_bytes=ser)
            if bounded < chunk:
                at_once = parallel if per * parallel >= ser else 1
                names = ", ".join(n for n, b in {**maps, **serial}.items() if b)
                h, w = source.frame_shape[:2]
                print(f"gpudiff run: --chunk {cfg.chunk} lowered to {bounded}: {chunk} items of {names} "
                      f"({w} x {h}) x {at_once} chunk{'s' if at_once != 1 else ''} at once need "
                      f"{_human(chunk * max(per * parallel, ser))}, over half of the {_human(avail)} of memory "
                      f"available ({where}); pass a smaller --chunk to choose it, or give the job more memory",
                      file=stream)
            chunk = bounded
    return chunk


def _verify_on_start(cfg: RunConfig, store, mine, stream) -> None:
    """Before resuming, read this shard's finished chunks back and re-mark damaged ones pending
    (as ``gpudiff status --verify`` does), with ``--verify-on-start`` or on a filesystem whose
    rename is not atomic, where a killed writer can leave a short chunk file under a done status."""
    from ._verify import non_atomic_rename_fs  # noqa: PLC0415

    if cfg.verify_on_start is False or getattr(store, "created_here", False) or not mine:
        return
    why = "--verify-on-start"
    if cfg.verify_on_start is None:
        fs = None if store.is_remote else non_atomic_rename_fs(store.path)
        if fs is None:
            return
        why = f"the store is on {fs}, which cannot rename atomically"
    report = store.verify(chunks=mine)
    if report["findings"]:
        reset = report["passes_reset"]
        print(f"gpudiff run: verified {_n(len(mine), 'chunk')} first ({why}): {len(report['remarked'])} damaged "
              f"re-marked pending{'; passes reset: ' + ', '.join(reset) if reset else ''}"
              f"{'; damaged at creation (--overwrite to remake): ' + str(len(report['unrecoverable'])) if report['unrecoverable'] else ''}",
              file=stream)


def _n(k: int, word: str) -> str:
    return f"{k} {word}{'s' if k != 1 else ''}"


def _record_stamps(store, source) -> None:
    """The per-file stamps ``--retry-failed`` needs, kept once by the first run that finds the source
    as the store records it (housekeeping: a failure to keep them never fails the run)."""
    from ._retry import record_stamps  # noqa: PLC0415

    try:
        record_stamps(store, source)
    except Exception:  # noqa: BLE001 (a read-only or full store: --retry-failed will say what it lacks)
        pass


def _raise_with_retry_hint(cfg: RunConfig, exc: ConfigError, config: dict):
    """Raise ``exc``; when the store has failed items and only its recorded source differs from
    ``config``, say that ``--retry-failed`` exists (someone who fixed the broken files in place wants it)."""
    from ..io._remote import is_remote  # noqa: PLC0415
    from ._retry import only_source_differs  # noqa: PLC0415
    from ._store import ResultStore  # noqa: PLC0415

    hint = None
    try:
        existing = ResultStore.open(cfg.out, **({"storage_options": cfg.storage_options}
                                                if is_remote(cfg.out) else {}))
        if only_source_differs(existing, config) and np.any(existing.read(["status"])["status"] == 2):
            hint = ConfigError(f"{exc} (if you fixed the inputs of its failed items in place: --retry-failed)")
    except Exception:  # noqa: BLE001 (the hint is a courtesy: the refusal stands as it was)
        hint = None
    if hint is not None:
        raise hint from None
    raise exc


def _accept_retry(cfg: RunConfig, options, source, plan: Plan, fields, open_store, exc, stream):
    """``--retry-failed`` on a store that refused this run: accept the changed source if only
    failed items' inputs changed (else a one-line ConfigError), then open the store again."""
    from ..io._remote import is_remote  # noqa: PLC0415
    from ._retry import accept_changed_source  # noqa: PLC0415
    from ._store import ResultStore  # noqa: PLC0415

    try:
        existing = ResultStore.open(cfg.out, mode="r+",
                                    **({"storage_options": cfg.storage_options} if is_remote(cfg.out) else {}))
    except Exception:  # noqa: BLE001 (no store to retry: the refusal as it was)
        raise exc from None
    if existing.n_items != plan.n_items or existing.chunk not in (plan.chunk, int(cfg.chunk)):
        raise exc
    plan = replace(plan, chunk=existing.chunk)
    changed = accept_changed_source(existing, source, plan, _run_config_key(options, cfg, source, plan, fields))
    if changed:
        shown = ", ".join(changed[:3]) + (f" and {len(changed) - 3} more" if len(changed) > 3 else "")
        print(f"gpudiff run: --retry-failed: {len(changed)} changed input file{'s' if len(changed) != 1 else ''} "
              f"of failed items accepted ({shown}); their items run again", file=stream)
    return plan, open_store(plan)


def _source_storage_options(cfg: RunConfig, open_source) -> dict:
    """``storage_options=`` for open_source when there are any and it takes them (it reads
    ``GPUDIFF_STORAGE_OPTIONS`` itself otherwise)."""
    if cfg.storage_options is None:
        return {}
    import inspect  # noqa: PLC0415

    try:
        takes = "storage_options" in inspect.signature(open_source).parameters
    except (TypeError, ValueError):
        takes = False
    return {"storage_options": cfg.storage_options} if takes else {}


def _check_sequence_length(cfg: RunConfig, n_frames: int) -> None:
    """The sequence features compare frames with the frames before: refuse a source with one frame."""
    wanted = [flag for flag, on in (("--flow", cfg.flow), ("--corrupt/--cuts", cfg.events),
                                    ("--background", cfg.background)) if on]
    if wanted and n_frames < 2:
        raise ConfigError(
            f"{cfg.source} has {n_frames} frame{'s' if n_frames != 1 else ''}: {' and '.join(wanted)} "
            "need a sequence of at least 2 frames (point at the folder, stack or video of the sequence)"
        )


def _store_attrs(options: CompareOptions, cfg: RunConfig, source, fields) -> dict:
    """The store's group attributes: what was run, on what, where (and the event thresholds)."""
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
    return attrs


def _sequence_passes(cfg: RunConfig, source, plan: Plan, store, mine, options: CompareOptions, progress) -> int:
    """The corrupt/cuts and background passes after the comparisons (each a stage of the progress),
    unless the run was stopped; returns how many of their items are still missing."""
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
    return bg_pending


def _tally(report: RunReport, cfg: RunConfig, plan: Plan, store, mine, results, bg_pending: int) -> None:
    """Fill the report from the chunk results and the store's status of this shard's chunks, and
    set its exit code."""
    raise_write_error(results)  # a chunk a worker process could not write (disk full...): one line
    for r in results:
        if r.abandoned:
            continue
        report.chunks_run += 1
        report.failures.extend(r.failures)
    status = store.read(["status"])["status"]
    st = status[plan.items_of(mine)]
    report.done = int(np.count_nonzero(st == 1))
    report.failed = int(np.count_nonzero(st == 2))
    report.pending = int(np.count_nonzero(st == 0))
    if (cfg.background or cfg.events) and bg_pending and not report.pending:
        report.pending = bg_pending  # the items are done, their flags or foreground are not yet
    report.interrupted = _STOP.is_set() and report.pending > 0
    if report.pending or _STOP.is_set():  # a SIGTERM even as the work finished: 75, a rerun confirms
        report.exit_code = EXIT_INTERRUPTED
    elif report.failed:
        report.exit_code = EXIT_FAILED_ITEMS
