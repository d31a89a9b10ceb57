"""The figures of ``gpudiff report``: matplotlib plots of the digests made by :mod:`._digest`.

Figures are matplotlib ``Figure`` objects with the Agg canvas, no pyplot state: a timeline and a
histogram per metric, the drift of an aligned run, several series on one axis (optical flow), a grid
of thumbnails for the PNG export. Colours are Okabe and Ito's colour-blind safe palette, and every
class of mark has its own shape as well as its own colour.

Nothing here reads the store: :mod:`gpudiff.report` does, one column at a time.
"""

from __future__ import annotations

import io
import math

import numpy as np

from ._digest import LOG_DECADES, Buckets, ColumnDigest, choose_scale, minmax_per_bucket

__all__ = [
    "OKABE_ITO",
    "timeline_figure",
    "histogram_figure",
    "drift_figure",
    "series_figure",
    "image_grid_figure",
    "figure_png",
]

#: Okabe & Ito (2008), "Color Universal Design": distinguishable with every common colour-vision deficiency.
OKABE_ITO = {
    "black": "#000000",
    "orange": "#E69F00",
    "sky_blue": "#56B4E9",
    "bluish_green": "#009E73",
    "yellow": "#F0E442",
    "blue": "#0072B2",
    "vermillion": "#D55E00",
    "reddish_purple": "#CC79A7",
}

#: How each class of mark is drawn: colour and marker (shape carries the meaning too).
STYLE = {
    "value": {"color": OKABE_ITO["blue"]},
    "kept": {"color": OKABE_ITO["bluish_green"], "marker": "o"},
    "corrupt": {"color": OKABE_ITO["vermillion"], "marker": "X"},
    "cut": {"color": OKABE_ITO["reddish_purple"], "marker": "v"},
    "failed": {"color": OKABE_ITO["black"]},
    "pending": {"color": "#BBBBBB"},
    "infinite": {"color": OKABE_ITO["orange"], "marker": "^"},
    "threshold": {"color": OKABE_ITO["orange"], "linestyle": "--"},
    "dropped": {"color": OKABE_ITO["sky_blue"]},
}

#: Flags marked on timelines, in drawing order (per item, 0/1 columns of the store).
FLAGS = ("kept", "corrupt", "cut")

#: Figure sizes in inches at :data:`DPI` (pixels = inches x DPI); the page lays them out at that size.
DPI = 100
TIMELINE_SIZE = (8.3, 2.7)
HISTOGRAM_SIZE = (3.8, 2.7)


_RC = {
    "font.size": 8.5,
    "axes.titlesize": 9.5,
    "axes.labelsize": 8.5,
    "legend.fontsize": 7.5,
    "xtick.labelsize": 8,
    "ytick.labelsize": 8,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "grid.linewidth": 0.5,
}


# Margins in inches (left, right, bottom, top): fixed, so every timeline's axes sit at the same place
# (the legend goes in the right margin) and no layout engine has to measure text on each draw.
_TIMELINE_MARGINS = (0.75, 1.95, 0.48, 0.3)
_HISTOGRAM_MARGINS = (0.62, 0.15, 0.48, 0.3)


def _figure(size, margins=_TIMELINE_MARGINS, rows: int = 1, hspace: float = 0.35, height_ratios=None):
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: PLC0415
    from matplotlib.figure import Figure  # noqa: PLC0415

    w, h = size
    left, right, bottom, top = margins
    fig = Figure(figsize=size, dpi=DPI)
    FigureCanvasAgg(fig)
    fig.subplots_adjust(left=left / w, right=1 - right / w, bottom=bottom / h, top=1 - top / h, hspace=hspace)
    kw = {"height_ratios": list(height_ratios)} if height_ratios else None
    axes = fig.subplots(rows, 1, sharex=True, squeeze=False, gridspec_kw=kw)[:, 0]
    return fig, (axes[0] if rows == 1 else axes)


def _rc():
    """matplotlib reads most rc values when artists are made: make them inside this context."""
    import matplotlib  # noqa: PLC0415

    return matplotlib.rc_context(_RC)


def _set_scale(ax, axis: str, scale: str, linthresh: float | None, *, vmax: float | None = None):
    """Log or symlog on one axis, with plain tick labels (``1e3``; mathtext costs a parser run per
    tick) and at most about six major ticks; a symlog axis starts at 0."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, LogLocator, NullFormatter, NullLocator  # noqa: PLC0415

    a = ax.yaxis if axis == "y" else ax.xaxis
    if scale == "symlog":
        (ax.set_yscale if axis == "y" else ax.set_xscale)("symlog", linthresh=linthresh, linscale=0.5)
        top = vmax if vmax and vmax > linthresh else linthresh * 10
        k0, k1 = math.ceil(math.log10(linthresh)), math.floor(math.log10(top))
        step = max(1, math.ceil((k1 - k0 + 1) / 5))
        a.set_major_locator(FixedLocator([0.0] + [10.0**k for k in range(k0, k1 + 1, step)]))
        a.set_minor_locator(NullLocator())
        (ax.set_ylim if axis == "y" else ax.set_xlim)(0, None)
    elif scale == "log":
        (ax.set_yscale if axis == "y" else ax.set_xscale)("log")
        a.set_major_locator(LogLocator(base=10, numticks=6))
    else:
        return
    a.set_major_formatter(FuncFormatter(_tick_label))
    a.set_minor_formatter(NullFormatter())


def _tick_label(v, _pos=None) -> str:
    if v == 0:
        return "0"
    text = f"{v:.0e}" if abs(v) >= 1e4 or abs(v) < 1e-3 else f"{v:g}"
    return text.replace("e+0", "e").replace("e-0", "e-").replace("e+", "e").replace("-", "−")


def _fmt(v: float) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    if math.isinf(v):
        return "∞" if v > 0 else "-∞"
    return f"{v:.4g}"


def timeline_figure(d: ColumnDigest, buckets: Buckets, *, ylabel: str, title: str | None = None):
    """The value of one metric over the items: line (or per-bucket min-max band), marks and thresholds.

    Parameters
    ----------
    d : ColumnDigest
    buckets : Buckets
        The buckets ``d`` was made with.
    ylabel : str
        Metric name and unit.
    title : str, optional

    Returns
    -------
    matplotlib.figure.Figure
        The metric's axes (``fig.axes[0]``) and, when items failed or are pending, a status strip
        below it (``fig.axes[1]``). Artists carry a ``gid`` for tests: ``'values'`` (line or band),
        ``'kept'`` (markers, or a band when decimated), ``'corrupt'`` and ``'cut'`` markers,
        ``'infinite'`` markers along the top, ``'threshold'``, ``'pending'`` (grey background)
        and, on the strip, ``'failed'`` and ``'pending-strip'``.

    Notes
    -----
    Decimated (more items than buckets): a light band between each bucket's minimum and maximum
    (step-wise), so no spike is lost, and the bucket means as a line (``gid='mean'``); kept
    frames are then a band of their own minimum and maximum. The strip's bar height is
    ``0.2 + 0.8 f`` for a bucket whose fraction ``f > 0`` of items failed, so a single failure
    among hundreds still shows. The y scale follows
    :func:`choose_scale`.
    """
    with _rc():
        fig, ax, sax = _timeline_axes(buckets)
        _draw_values(ax, d, buckets)
        _draw_flags(ax, d, buckets)
        if d.posinf.size:
            _draw_infinite(ax, d, buckets)
        if buckets.n_pending:
            _pending_spans(ax, buckets)
        _threshold_lines(ax, d, buckets, axis="y")
        if d.scale != "linear" and d.n_finite:
            _set_scale(ax, "y", d.scale, d.linthresh, vmax=d.vmax)
        ax.set_ylabel(ylabel)
        if title:
            ax.set_title(title, loc="left")
        if d.empty:
            ax.text(0.5, 0.5, "no finite value among the done items", transform=ax.transAxes, ha="center")
        _timeline_legend_and_x(ax, sax, buckets)
    return fig


def _timeline_axes(buckets: Buckets):
    """(figure, the metric's axes, the status strip below them or None when no item failed or is pending)."""
    if buckets.n_failed > 0 or buckets.n_pending > 0:
        fig, (ax, sax) = _figure((TIMELINE_SIZE[0], TIMELINE_SIZE[1] + 0.3), rows=2, hspace=0.08,
                                 height_ratios=(1.0, 0.11))
        return fig, ax, sax
    fig, ax = _figure(TIMELINE_SIZE)
    return fig, ax, None


def _draw_values(ax, d: ColumnDigest, buckets: Buckets):
    """The metric: a line through every item, or per-bucket min-max band and mean line when decimated."""
    x = buckets.x
    st = STYLE["value"]
    if buckets.decimated:
        band = ax.fill_between(x, d.lo, d.hi, step="mid", color=st["color"], alpha=0.35, linewidth=0.5,
                               label=f"min–max per {buckets.size} items")
        band.set_gid("values")
        (line,) = ax.plot(x, d.mean, color=st["color"], linewidth=0.8, drawstyle="steps-mid", label="mean",
                          zorder=4)
        line.set_gid("mean")
    else:
        (line,) = ax.plot(x, d.hi, color=st["color"], linewidth=1.0,
                          marker="." if len(x) <= 300 else None, markersize=3, label=d.name)
        line.set_gid("values")


def _draw_flags(ax, d: ColumnDigest, buckets: Buckets):
    """Kept, corrupt and cut items: markers (kept: a band when decimated); a rug when they have no value."""
    x = buckets.x
    for flag in FLAGS:
        if flag not in d.marks:
            continue
        fs = STYLE[flag]
        label = f"{flag} ({d.flag_counts[flag]})"
        if flag == "kept" and buckets.decimated:
            lo, hi = d.bands[flag]
            art = ax.fill_between(x, lo, hi, step="mid", color=fs["color"], alpha=0.45, linewidth=0.4,
                                  label=label + ", min–max")
        else:
            idx, y = d.marks[flag]
            on = np.isfinite(y)
            art = ax.scatter(x[idx[on]], y[on], s=12 if flag == "kept" else 28, marker=fs["marker"],
                             color=fs["color"], zorder=3, linewidths=0, label=label)
            if (~on).any():
                r = ax.vlines(x[idx[~on]], 0.0, 0.06, transform=ax.get_xaxis_transform(), color=fs["color"],
                              linewidth=1.0)
                r.set_gid(f"{flag}-rug")
        art.set_gid(flag)


def _draw_infinite(ax, d: ColumnDigest, buckets: Buckets):
    """Buckets holding +inf (e.g. PSNR of identical frames): markers along the top of the axes."""
    x = buckets.x
    sc = ax.scatter(x[d.posinf], np.full(d.posinf.size, 0.97), transform=ax.get_xaxis_transform(),
                    s=18, marker=STYLE["infinite"]["marker"], color=STYLE["infinite"]["color"], zorder=3,
                    clip_on=False, linewidths=0, label=f"+∞ ({d.n_posinf}, e.g. identical)")
    sc.set_gid("infinite")


def _timeline_legend_and_x(ax, sax, buckets: Buckets):
    """The status strip drawn, one legend for both in the right margin, the x axis labelled and limited."""
    x = buckets.x
    handles, labels = ax.get_legend_handles_labels()
    if sax is not None:
        _status_strip(sax, buckets)
        h2, l2 = sax.get_legend_handles_labels()
        handles, labels = handles + h2, labels + l2
        ax.tick_params(labelbottom=False)
    (sax or ax).set_xlabel(buckets.xlabel)
    _index_ticks(sax or ax)
    ax.legend(handles, labels, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False, borderaxespad=0.0)
    if len(x):
        pad = max(0.5, 0.01 * (x[-1] - x[0]))
        ax.set_xlim(x[0] - pad, x[-1] + pad)


def _index_ticks(ax):
    """Frame / item numbers in full (``250,000``), not as a multiple of an offset (``0.25 1e6``)."""
    from matplotlib.ticker import FuncFormatter, MaxNLocator  # noqa: PLC0415

    ax.xaxis.set_major_locator(MaxNLocator(nbins=8, integer=True))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _pos=None: f"{v:,.0f}"))


def _status_strip(sax, buckets: Buckets):
    """Failed (black) and pending (grey) items per bucket, under the timeline."""
    x = buckets.x

    def height(f):
        return np.where(f > 0, 0.2 + 0.8 * f, 0.0)

    hf = height(buckets.failed_fraction)
    if buckets.n_failed:
        a = sax.fill_between(x, 0, hf, step="mid", color=STYLE["failed"]["color"], linewidth=0.8,
                             label=f"failed ({buckets.n_failed})")
        a.set_gid("failed")
    if buckets.n_pending:
        hp = height(buckets.pending_fraction)
        a = sax.fill_between(x, hf, np.minimum(1.0, hf + hp), step="mid", color=STYLE["pending"]["color"],
                             linewidth=0.8, label=f"pending ({buckets.n_pending})")
        a.set_gid("pending-strip")
    sax.set_ylim(0, 1)
    sax.set_yticks([])
    sax.grid(False)
    sax.set_ylabel("status", rotation=0, ha="right", va="center", fontsize=7)


def _pending_spans(ax, buckets: Buckets):
    """Grey background over runs of buckets holding pending items (one artist)."""
    p = buckets.pending.astype(np.int8)
    change = np.diff(np.concatenate([[0], p, [0]]))
    begin, end = np.flatnonzero(change == 1), np.flatnonzero(change == -1) - 1
    x = buckets.x
    half = 0.5 * (x[1] - x[0]) if len(x) > 1 else 0.5
    spans = [(x[b] - half, (x[e] - x[b]) + 2 * half) for b, e in zip(begin, end)]
    coll = ax.broken_barh(spans, (0, 1), transform=ax.get_xaxis_transform(), facecolor=STYLE["pending"]["color"],
                          alpha=0.35, linewidth=0, zorder=0)
    coll.set_gid("pending")


#: A threshold this many times beyond the data's extent is not drawn inside the axes (it would squash
#: the data into a sliver: vtest's kl_prev reaches 0.002 against the rule's 0.2); the legend says so.
OFF_SCALE = 4.0


def _threshold_off_scale(d: ColumnDigest) -> bool:
    lo, hi = d.vmin, d.vmax
    if d.threshold is None or lo is None or hi is None or not (math.isfinite(lo) and math.isfinite(hi)):
        return False
    span = hi - lo if hi > lo else abs(hi) or 1.0
    if d.scale == "linear":
        return d.threshold > hi + OFF_SCALE * span or d.threshold < lo - OFF_SCALE * span
    return hi > 0 and (d.threshold > hi * 10.0 ** OFF_SCALE or 0 < d.threshold < (lo or hi) / 10.0 ** OFF_SCALE)


def _threshold_lines(ax, d: ColumnDigest, buckets: Buckets, *, axis: str):
    if d.threshold is not None and _threshold_off_scale(d):
        side = "above" if d.threshold > d.vmax else "below"
        # an empty line: the legend entry, not a stretched axis
        (line,) = ax.plot([], [], linewidth=1.3, label=f"threshold {_fmt(d.threshold)}, off the scale {side} "
                          f"({d.above} above)", **STYLE["threshold"])
        line.set_gid("threshold")
    elif d.threshold is not None and (d.scale == "linear" or d.threshold > 0 or d.scale == "symlog"):
        label = f"threshold {_fmt(d.threshold)} ({d.above} above)"
        line = (ax.axhline if axis == "y" else ax.axvline)(d.threshold, linewidth=1.3, label=label,
                                                          **STYLE["threshold"])
        line.set_gid("threshold")
    elif d.threshold_lo is not None and axis == "y":
        st = STYLE["threshold"]
        (line,) = ax.plot(buckets.x, d.threshold_hi, color=st["color"], linestyle=st["linestyle"], linewidth=1.2,
                          drawstyle="steps-mid", label=f"threshold per item ({d.above} above)")
        line.set_gid("threshold")


def histogram_figure(d: ColumnDigest, *, xlabel: str, title: str | None = None):
    """The distribution of one metric over the done items (kept and dropped apart when known).

    Returns
    -------
    matplotlib.figure.Figure
        Histogram bars as ``stairs`` (``gid`` = group: ``'all'``, ``'kept'``, ``'dropped'``) and
        the ``'threshold'`` line. The x scale is the timeline's y scale; the count axis is
        logarithmic when counts span three decades or more, so rare tails stay visible.
    """
    with _rc():
        fig, ax = _figure(HISTOGRAM_SIZE, _HISTOGRAM_MARGINS)
        if d.hist:
            colours = {"all": STYLE["value"]["color"], "kept": STYLE["kept"]["color"],
                       "dropped": STYLE["dropped"]["color"]}
            for g, counts in d.hist.items():
                label = {"all": f"{d.n_finite} items", "kept": f"kept ({int(counts.sum())})",
                         "dropped": f"dropped ({int(counts.sum())})"}[g]
                s = ax.stairs(counts, d.hist_edges, fill=(g != "dropped"), alpha=0.75 if g != "dropped" else 1.0,
                              color=colours[g], linewidth=1.2, label=label)
                s.set_gid(g)
            allc = np.sum(list(d.hist.values()), axis=0)
            nz = allc[allc > 0]
            if nz.size and nz.max() / nz.min() >= 10.0**LOG_DECADES:
                ax.set_yscale("log")
            if d.scale != "linear":
                _set_scale(ax, "x", d.scale, d.linthresh, vmax=d.vmax)
            _threshold_lines(ax, d, None, axis="x")
            ax.legend(loc="upper right", frameon=False)
        else:
            ax.text(0.5, 0.5, "no finite value", transform=ax.transAxes, ha="center")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("items")
        if title:
            ax.set_title(title, loc="left")
    return fig


def drift_figure(shift, buckets: Buckets, *, done, cumulative: bool, title: str | None = None):
    """The estimated shift (dy, dx) over the items; with ``cumulative`` a second panel sums it.

    Parameters
    ----------
    shift : array (n, 2)
        Per-item (dy, dx) in pixels (scikit-image's ``phase_cross_correlation`` convention).
    buckets : Buckets
    done : array of bool (n,)
    cumulative : bool
        Consecutive pairs: also plot the running sum (the drift relative to the first frame;
        items without a shift count as 0).

    Returns
    -------
    matplotlib.figure.Figure
        Per-bucket min-max bands (or lines) with ``gid`` ``'dy'``/``'dx'`` (and ``'dy-cum'``/``'dx-cum'``).
    """
    s = np.where(np.asarray(done, bool)[:, None], np.asarray(shift, dtype=np.float64), np.nan)
    with _rc():
        rows = 2 if cumulative else 1
        fig, axes = _figure((TIMELINE_SIZE[0], 2.0 * rows + 0.6), rows=rows, hspace=0.2)
        axes = np.atleast_1d(axes)
        panels = [("", s, "shift per pair (px)")]
        if cumulative:
            panels.append(("-cum", np.nancumsum(s, axis=0), "drift since the first frame (px)"))
        for ax, (suffix, values, ylabel) in zip(axes, panels):
            for k, (comp, colour) in enumerate((("dy", OKABE_ITO["blue"]), ("dx", OKABE_ITO["orange"]))):
                _series(ax, values[:, k], buckets, colour, f"{comp} (rows)" if comp == "dy" else f"{comp} (columns)",
                        gid=comp + suffix, linestyle="-" if comp == "dy" else "--")
            ax.set_ylabel(ylabel)
            ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False, borderaxespad=0.0)
        axes[-1].set_xlabel(buckets.xlabel)
        _index_ticks(axes[-1])
        if title:
            axes[0].set_title(title, loc="left")
    return fig


def _series(ax, values, buckets: Buckets, colour, label, *, gid, linestyle="-"):
    lo, hi = minmax_per_bucket(values, buckets)
    if buckets.decimated:
        art = ax.fill_between(buckets.x, lo, hi, step="mid", color=colour, alpha=0.6, linewidth=0.6, label=label)
    else:
        (art,) = ax.plot(buckets.x, hi, color=colour, linewidth=1.0, linestyle=linestyle, label=label)
    art.set_gid(gid)
    return art


def series_figure(series: dict, buckets: Buckets, *, ylabel: str, title: str | None = None):
    """Several digested columns on one axis (e.g. optical-flow mean and 95th percentile magnitude).

    Parameters
    ----------
    series : dict of label -> ColumnDigest
        Made with ``buckets``; each is drawn as a line (or its per-bucket min-max band when
        decimated) with ``gid`` = its label.
    buckets : Buckets
    ylabel : str
    title : str, optional

    Notes
    -----
    The y scale follows :func:`choose_scale` over every series' per-bucket minima and maxima
    (which hold each series' extremes).
    """
    colours = [OKABE_ITO["blue"], OKABE_ITO["orange"], OKABE_ITO["bluish_green"], OKABE_ITO["reddish_purple"]]
    styles = ["-", "--", "-.", ":"]
    with _rc():
        fig, ax = _figure(TIMELINE_SIZE)
        allv = []
        for k, (label, d) in enumerate(series.items()):
            colour, style = colours[k % 4], styles[k % 4]
            if buckets.decimated:
                art = ax.fill_between(buckets.x, d.lo, d.hi, step="mid", color=colour, alpha=0.6, linewidth=0.6,
                                      label=label)
            else:
                (art,) = ax.plot(buckets.x, d.hi, color=colour, linewidth=1.0, linestyle=style, label=label)
            art.set_gid(label)
            allv += [d.lo, d.hi]
        scale, linthresh = choose_scale(np.concatenate(allv) if allv else np.zeros(0))
        vmax = float(np.nanmax(np.concatenate(allv))) if allv and np.isfinite(np.concatenate(allv)).any() else None
        _set_scale(ax, "y", scale, linthresh, vmax=vmax)
        ax.set_xlabel(buckets.xlabel)
        _index_ticks(ax)
        ax.set_ylabel(ylabel)
        if title:
            ax.set_title(title, loc="left")
        ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False, borderaxespad=0.0)
    return fig


def image_grid_figure(rows: list, *, column_titles: tuple, title: str | None = None):
    """Thumbnails in a grid (one row per pair), for the PNG export of the page's thumbnail tables.

    ``rows`` holds ``(row_label, [image or None, ...])``; an image is an (h, w) or (h, w, 3)
    uint8 array; None draws an empty cell.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: PLC0415
    from matplotlib.figure import Figure  # noqa: PLC0415

    ncol = len(column_titles)
    with _rc():
        fig = Figure(figsize=(1.9 * ncol + 1.2, 1.45 * max(1, len(rows)) + 0.4), dpi=DPI, layout="constrained")
        FigureCanvasAgg(fig)
        axes = fig.subplots(max(1, len(rows)), ncol, squeeze=False)
        for r, (label, images) in enumerate(rows):
            for c in range(ncol):
                ax = axes[r, c]
                ax.set_axis_off()
                img = images[c] if c < len(images) else None
                if img is not None:
                    ax.imshow(img, cmap="gray" if img.ndim == 2 else None, vmin=0, vmax=255, interpolation="nearest")
                if r == 0:
                    ax.set_title(column_titles[c], fontsize=8)
            axes[r, 0].text(-0.05, 0.5, label, transform=axes[r, 0].transAxes, ha="right", va="center", fontsize=7)
        if title:
            fig.suptitle(title, fontsize=9.5)
    return fig


def figure_png(fig, *, colors: int | None = 64) -> bytes:
    """The figure as PNG bytes at its own dpi, as a ``colors``-colour palette image (None: full RGB);
    no metadata, so the same data give the same bytes. Clears the figure."""
    from PIL import Image  # noqa: PLC0415

    canvas = fig.canvas
    canvas.draw()
    rgba = np.asarray(canvas.buffer_rgba())
    img = Image.fromarray(rgba[..., :3])
    if colors:
        # Line art has few colours: a 64-colour palette PNG is a third of the size and looks the same.
        img = img.quantize(colors=colors, method=Image.Quantize.FASTOCTREE)
        pal = np.asarray(img.getpalette()[: 3 * colors], dtype=np.uint8).reshape(-1, 3)
        pal[(pal >= 245).all(axis=1)] = 255  # the background stays pure white
        img.putpalette(pal.ravel().tolist())
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    fig.clear()
    return buf.getvalue()
