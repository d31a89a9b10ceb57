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
every plot is drawn from a bounded digest (:mod:`gpudiff.report._digest`): timelines keep the
minimum, maximum and mean of each of at most ``max_points`` buckets, distributions are
histograms. So the page's size depends on ``max_points`` and ``top``, not on the number of items,
and memory on one column at a time per worker process.
"""

from __future__ import annotations

import contextlib
import io
import os
import time
import uuid
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

from ..engine._store import ResultStore
from ..errors import ConfigError, InputError
from ._columns import (
    FOREGROUND_EXAMPLES,
    _auto_workers,
    _column_sections,
    _executor,
    _field_names,
    _job_warnings,
    _load_run,
    _metric_columns,
)
from ._figures import _flow_figure
from ._html import _page, _pairs_html
from ._thumbs import _foreground_examples, _heat_pngs, _open_source, _pair_rows, _unaligned_items
from . import _plots as rp


#: Pairs shown in each thumbnail table.
DEFAULT_TOP = 12
#: Most x positions of a timeline (buckets of items; each keeps its minimum and maximum).
DEFAULT_MAX_POINTS = 2000


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
# the entry point
# --------------------------------------------------------------------------------------------------


def build_report(store_path, *, html=None, png_dir=None, top: int = DEFAULT_TOP,
                 max_points: int = DEFAULT_MAX_POINTS, rank_by: str | None = None,
                 workers: int | None = None, storage_options=None) -> ReportSummary:
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
    storage_options : dict or str, optional
        For a store at a URL (``s3://bucket/results.zarr``): its filesystem's options (default
        ``GPUDIFF_STORAGE_OPTIONS``). The page and the PNG files are always local files.

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
    (:func:`gpudiff.report._digest.digest_column`) and is dropped, so memory is a few columns of the
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
    store, metrics = _open_store(store_path, rank_by, storage_options)
    run, cols, drift = _read_columns(store, metrics, workers, max_points=max_points, top=top, rank_by=rank_by)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", RuntimeWarning)
        extra = {"drift": drift, "flow": _flow_figure(run, cols.digests)}
        src = _from_source(store, run, cols, top)
    run.warnings += _job_warnings(caught)
    notices = _notices(run, src.note)
    figures = list(cols.figures) + [f for f in (extra["drift"], extra["flow"]) if f is not None]
    png_files = []
    if png_path is not None:
        png_files = _write_pngs(png_path, figures, src.tables, src.foreground)
    page_bytes = None
    if html_path is not None:
        page = _page(run, cols, extra, notices, src.pairs, src.foreground, src.ok, time.perf_counter() - t0)
        page_bytes = _write_text(html_path, page)
    s = run.summary
    return ReportSummary(
        store=str(store.path), html=str(html_path) if html_path else None, png_files=tuple(png_files),
        n_items=s["n_items"], done=s["done"], failed=s["failed"], pending=s["pending"],
        metrics=tuple(dict.fromkeys(f.column for f in cols.figures)), figures=tuple(f.name for f in figures),
        ranked_by=run.ranked_by, source_available=src.ok, notices=tuple(notices), page_bytes=page_bytes,
        seconds=time.perf_counter() - t0,
    )


# --------------------------------------------------------------------------------------------------
# the steps of build_report
# --------------------------------------------------------------------------------------------------


def _open_store(store_path, rank_by: str | None, storage_options=None):
    """The store and its metric columns; InputError for an empty store, ConfigError for an unknown ``rank_by``."""
    kw = {} if storage_options is None else {"storage_options": storage_options}
    store = ResultStore.open(store_path, **kw)
    if store.n_items == 0:
        raise InputError(f"{store.path} is an empty result store (0 items): nothing to report; check the run's input")
    metrics = _metric_columns(store)
    if rank_by is not None and rank_by not in metrics:
        raise ConfigError(f"--rank-by {rank_by}: the store has no such metric; it has {', '.join(metrics) or 'none'}")
    return store, metrics


def _read_columns(store, metrics, workers: int | None, *, max_points: int, top: int, rank_by: str | None):
    """(run, per-metric sections, drift figure): the store read a column per job, in ``workers`` processes."""
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
    return run, cols, drift


class _FromSource(NamedTuple):
    """What the page shows of the source itself: thumbnails of pairs and foreground masks."""

    ok: bool  # the source could be opened
    note: str | None  # why not, for the notice box
    pairs: dict  # "most" / "least" -> the HTML section of a thumbnail table
    tables: dict  # "most_changed" / "least_changed" -> the rows of those tables (for the PNG export)
    foreground: list  # foreground mask examples


def _from_source(store, run, cols, top: int) -> _FromSource:
    """Open the source (only when thumbnails or foreground examples are wanted) and make them."""
    source, src_note = None, None
    fg_items = _foreground_items(store, run, cols)
    if top > 0 or fg_items is not None:
        source, src_note = _open_source(store)
    pairs, tables = _pair_tables(run, cols, source, top)
    fg = _foreground_examples(run, fg_items, source) if fg_items is not None and len(fg_items) else []
    if source is not None:
        with contextlib.suppress(Exception):
            source.close()
    return _FromSource(source is not None, src_note, pairs, tables, fg)


def _foreground_items(store, run, cols):
    """Items whose foreground mask is shown (None when the store has no foreground maps)."""
    if "maps/foreground" not in _field_names(store):
        return None
    fg_items = cols.foreground_items
    if fg_items is None:
        d = np.flatnonzero(run.done)
        fg_items = d[np.linspace(0, d.size - 1, min(FOREGROUND_EXAMPLES, d.size)).astype(int)] if d.size \
            else np.zeros(0, np.int64)
    return fg_items


def _pair_tables(run, cols, source, top: int) -> tuple[dict, dict]:
    """(HTML sections, rows) of the most and least changed pairs; empty without ``top``."""
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
    return pairs, tables


def _notices(run, src_note: str | None) -> list[str]:
    """What the page's notice box says: items pending, source missing, unaligned items, buckets, store warnings."""
    notices: list[str] = []
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
    return notices


# --------------------------------------------------------------------------------------------------
# writing
# --------------------------------------------------------------------------------------------------


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
