"""The report's figures: a timeline and a histogram per metric, the flow figure, drawn from digests."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ._text import _axis_label, _esc, _fmt, _label
from . import _digest as rd
from . import _plots as rp

if TYPE_CHECKING:  # _columns imports this module
    from ._columns import _Run


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


def _scale_words(d: rd.ColumnDigest) -> str:
    if d.scale == "log":
        return "logarithmic scale (the values span more than three decades)"
    if d.scale == "symlog":
        return f"symmetric-log scale (linear below {_fmt(d.linthresh)}; zeros and values spanning decades)"
    return "linear scale"


def _metric_figures(b: rd.Buckets, d: rd.ColumnDigest) -> list[_Figure]:
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
