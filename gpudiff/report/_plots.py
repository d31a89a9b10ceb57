"""The figures of ``gpudiff report``: bounded digests of store columns, and matplotlib plots of them.

Two steps, so that the plots cost the same for 100 items and for 1,000,000:

1. **Digest** (NumPy, host): :func:`make_buckets` splits the items into at most ``max_points``
   consecutive buckets; :func:`digest_column` reduces one column to per-bucket minimum and maximum
   (a spike of one item in a million stays visible: it is the maximum of its bucket), the buckets
   holding flagged items (kept, corrupt, cut), a histogram, and the values of a few chosen items.
   A digest is a few kilobytes whatever the store's size.
2. **Figures** (matplotlib ``Figure`` objects with the Agg canvas, no pyplot state): a timeline
   and a histogram per metric, the drift of an aligned run, several series on one axis (optical
   flow). Colours are Okabe and Ito's colour-blind safe palette, and every class of mark has its
   own shape as well as its own colour.

Nothing here reads the store: :mod:`gpudiff.report` does, one column at a time.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "OKABE_ITO",
    "Buckets",
    "ColumnDigest",
    "make_buckets",
    "minmax_per_bucket",
    "choose_scale",
    "histogram_edges",
    "digest_column",
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
#: Values spanning at least this many decades get a logarithmic axis.
LOG_DECADES = 3.0


# --------------------------------------------------------------------------------------------------
# digests
# --------------------------------------------------------------------------------------------------


@dataclass
class Buckets:
    """Consecutive runs of items, one plotted x position each.

    Attributes
    ----------
    edges : ndarray of int64, (nb + 1,)
        Bucket ``k`` holds items ``edges[k]`` to ``edges[k + 1] - 1``; at most one item per bucket
        when the store has no more items than buckets.
    x : ndarray of float64, (nb,)
        Where each bucket is drawn: the middle of the x values (frame or item) of its first and last item.
    xlabel : str
        What x is (``'frame (moving)'`` or ``'item'``).
    failed_fraction, pending_fraction : ndarray of float64, (nb,)
        Fraction of each bucket's items that failed / are pending.
    n_failed, n_pending : int
    """

    edges: np.ndarray
    x: np.ndarray
    xlabel: str
    failed_fraction: np.ndarray
    pending_fraction: np.ndarray
    n_failed: int = 0
    n_pending: int = 0

    @property
    def failed(self) -> np.ndarray:
        """Buckets holding at least one failed item."""
        return self.failed_fraction > 0

    @property
    def pending(self) -> np.ndarray:
        """Buckets holding at least one pending item."""
        return self.pending_fraction > 0

    @property
    def starts(self) -> np.ndarray:
        return self.edges[:-1]

    @property
    def n(self) -> int:
        return int(self.edges[-1])

    @property
    def size(self) -> int:
        """Most items in one bucket (1: every item is drawn)."""
        return int(np.max(np.diff(self.edges))) if len(self.edges) > 1 else 1

    @property
    def decimated(self) -> bool:
        return self.size > 1


def make_buckets(n: int, max_points: int, *, x=None, status=None, xlabel: str = "item") -> Buckets:
    """Split ``n`` items into ``min(n, max_points)`` consecutive buckets of near-equal size.

    Parameters
    ----------
    n : int
        Items (>= 1).
    max_points : int
        Most buckets (>= 1).
    x : array of shape (n,), optional
        The x value of each item (e.g. the moving frame), non-decreasing; default the item index.
    status : array of uint8, (n,), optional
        0 pending, 1 done, 2 failed: the fraction of failed and pending items per bucket.
    xlabel : str
        Axis label of ``x``.

    Notes
    -----
    Bucket ``k`` of ``nb`` holds items ``floor(k n / nb)`` to ``floor((k + 1) n / nb) - 1``, so
    sizes differ by at most one and no bucket is empty.
    """
    n, max_points = int(n), int(max_points)
    if n < 1 or max_points < 1:
        raise ValueError(f"make_buckets: need n >= 1 and max_points >= 1, got {n}, {max_points}")
    nb = min(n, max_points)
    edges = (np.arange(nb + 1, dtype=np.int64) * n) // nb
    if x is None:
        xs = np.arange(n, dtype=np.float64)
    else:
        xs = np.asarray(x, dtype=np.float64)
    first, last = xs[edges[:-1]], xs[edges[1:] - 1]
    centre = 0.5 * (first + last)
    sizes = np.diff(edges).astype(np.float64)
    if status is None:
        failed = np.zeros(nb)
        pending = np.zeros(nb)
        n_failed = n_pending = 0
    else:
        status = np.asarray(status)
        f = status == 2
        p = status == 0
        failed = np.add.reduceat(f, edges[:-1], dtype=np.int64) / sizes
        pending = np.add.reduceat(p, edges[:-1], dtype=np.int64) / sizes
        n_failed, n_pending = int(np.count_nonzero(f)), int(np.count_nonzero(p))
    return Buckets(edges, centre, xlabel, failed, pending, n_failed, n_pending)


def minmax_per_bucket(values, buckets: Buckets) -> tuple[np.ndarray, np.ndarray]:
    """(minimum, maximum) of the finite values of each bucket; NaN where a bucket has none."""
    v = np.asarray(values, dtype=np.float64)
    v = np.where(np.isfinite(v), v, np.nan)
    starts = buckets.starts
    with np.errstate(invalid="ignore"):
        lo = np.fmin.reduceat(v, starts)
        hi = np.fmax.reduceat(v, starts)
    return lo, hi


def choose_scale(values) -> tuple[str, float | None]:
    """The y (or x) scale for values: ``('linear', None)``, ``('log', None)`` or ``('symlog', linthresh)``.

    Notes
    -----
    Logarithmic when no finite value is negative and the positive ones span at least
    :data:`LOG_DECADES` decades (``max / min >= 10**3``); ``symlog`` (linear below the smallest
    positive value, ``linthresh``) when zeros are among them, so exact repeats (a distance of 0)
    stay on the plot.
    """
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0 or v.min() < 0:
        return "linear", None
    pos = v[v > 0]
    if pos.size < 2:
        return "linear", None
    lo, hi = float(pos.min()), float(pos.max())
    if hi / lo < 10.0**LOG_DECADES:
        return "linear", None
    if pos.size < v.size:
        return "symlog", lo
    return "log", None


def histogram_edges(vmin: float, vmax: float, scale: str, linthresh: float | None, bins: int) -> np.ndarray:
    """Bin edges for ``bins`` bins over [vmin, vmax]: linear, geometric (log), or a zero bin then
    geometric (symlog: ``[0, linthresh)`` holds the zeros)."""
    if not (math.isfinite(vmin) and math.isfinite(vmax)):
        raise ValueError(f"histogram_edges: range [{vmin}, {vmax}] is not finite")
    if vmax <= vmin:  # one value: one bin around it
        half = 0.5 if vmin == 0 else 0.01 * abs(vmin)
        return np.array([vmin - half, vmin + half])
    if scale == "log":
        return np.geomspace(vmin, vmax, bins + 1)
    if scale == "symlog":
        return np.concatenate([[0.0], np.geomspace(linthresh, vmax, bins)])
    return np.linspace(vmin, vmax, bins + 1)


@dataclass
class ColumnDigest:
    """One column reduced to what its plots need (a few kilobytes whatever the store's size).

    Attributes
    ----------
    name : str
    n_done, n_finite, n_posinf, n_neginf : int
        Done items; done items with a finite value, +inf, -inf (the rest of the done are NaN:
        not computed for that item).
    vmin, vmax : float
        Range of the finite values (NaN when none).
    scale, linthresh
        See :func:`choose_scale`.
    lo, hi, mean : ndarray (nb,)
        Per-bucket minimum, maximum and mean of the finite values of done items (NaN where none).
    marks : dict of flag -> (bucket indices, y)
        Buckets holding a flagged done item, and the largest finite value among them (NaN: the
        flagged items there have no finite value; drawn on the bottom rug).
    bands : dict of flag -> (lo, hi)
        Per-bucket minimum and maximum of the flagged items' finite values (NaN where none).
    flag_counts : dict of flag -> int
    posinf : ndarray of int
        Buckets holding a +inf value (e.g. PSNR of identical frames).
    hist_edges : ndarray
    hist : dict of group -> counts
        ``{'all': counts}``, or ``{'kept': ..., 'dropped': ...}`` when a keep flag is given.
    threshold : float or None
    above, below : int
        Done items with a finite value ``> threshold`` / ``<= threshold``.
    threshold_lo, threshold_hi : ndarray or None
        Per-bucket range of a per-item threshold column, when the threshold varies.
    """

    name: str
    n_done: int
    n_finite: int
    n_posinf: int
    n_neginf: int
    vmin: float
    vmax: float
    scale: str
    linthresh: float | None
    lo: np.ndarray
    hi: np.ndarray
    mean: np.ndarray
    marks: dict = field(default_factory=dict)
    bands: dict = field(default_factory=dict)
    flag_counts: dict = field(default_factory=dict)
    posinf: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    hist_edges: np.ndarray = field(default_factory=lambda: np.zeros(0))
    hist: dict = field(default_factory=dict)
    threshold: float | None = None
    above: int = 0
    below: int = 0
    threshold_lo: np.ndarray | None = None
    threshold_hi: np.ndarray | None = None

    @property
    def constant(self) -> bool:
        """Every finite value is the same (nothing to plot but that value)."""
        return self.n_finite > 0 and self.vmin == self.vmax

    @property
    def empty(self) -> bool:
        return self.n_finite == 0


def digest_column(
    name: str,
    values,
    buckets: Buckets,
    *,
    done,
    flags: dict | None = None,
    keep=None,
    threshold: float | None = None,
    threshold_values=None,
    bins: int | None = None,
) -> ColumnDigest:
    """Reduce one per-item column to a :class:`ColumnDigest`.

    Parameters
    ----------
    name : str
        Column name.
    values : array of float, (n,)
        The column (NaN for items without a value).
    buckets : Buckets
        From :func:`make_buckets` for the same ``n``.
    done : array of bool, (n,)
        Items whose value counts (status done); the others are ignored.
    flags : dict of str -> array of bool, optional
        Per-item flags to mark (``'kept'``, ``'corrupt'``, ``'cut'``).
    keep : array of bool, optional
        Splits the histogram into kept and dropped items.
    threshold : float, optional
        A fixed decision threshold on this column (a line on both plots).
    threshold_values : array of float, (n,), optional
        A per-item threshold (e.g. ``change_threshold``): a fixed line when constant, else its
        per-bucket range.
    bins : int, optional
        Histogram bins; default ``clip(2 n^(1/3), 10, 60)`` for ``n`` finite values (Terrell-Scott).

    Returns
    -------
    ColumnDigest

    Notes
    -----
    Reductions run in float64. Per bucket ``B``: ``lo = min_{i in B} v_i``, ``hi = max_{i in B} v_i``
    over finite values of done items (``numpy.fmin.reduceat`` / ``fmax.reduceat``), so a single-item
    spike is the ``hi`` of its bucket and remains visible after decimation.
    """
    v = np.asarray(values, dtype=np.float64)
    done = np.asarray(done, dtype=bool)
    if v.shape != done.shape or v.shape[0] != buckets.n:
        raise ValueError(f"digest_column {name}: values {v.shape}, done {done.shape}, buckets of {buckets.n} items")
    vd = np.where(done, v, np.nan)
    finite = np.isfinite(vd)
    fin_vals = vd[finite]
    n_finite = int(fin_vals.size)
    n_posinf = int(np.count_nonzero(vd == np.inf))
    n_neginf = int(np.count_nonzero(vd == -np.inf))
    vmin = float(fin_vals.min()) if n_finite else math.nan
    vmax = float(fin_vals.max()) if n_finite else math.nan
    scale, linthresh = choose_scale(fin_vals)
    lo, hi = minmax_per_bucket(vd, buckets)
    starts = buckets.starts
    counts_b = np.add.reduceat(finite, starts, dtype=np.int64)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.add.reduceat(np.where(finite, vd, 0.0), starts) / counts_b

    marks, bands, counts = {}, {}, {}
    for flag, f in (flags or {}).items():
        f = np.asarray(f, dtype=bool) & done
        counts[flag] = int(np.count_nonzero(f))
        if not counts[flag]:
            continue
        present = np.maximum.reduceat(f.view(np.uint8), starts).astype(bool)
        flo, fhi = minmax_per_bucket(np.where(f, vd, np.nan), buckets)
        idx = np.flatnonzero(present)
        marks[flag] = (idx, fhi[idx])
        bands[flag] = (flo, fhi)
    posinf = np.zeros(0, np.int64)
    if n_posinf:
        posinf = np.flatnonzero(np.maximum.reduceat((vd == np.inf).view(np.uint8), starts))

    hist_edges, hist = np.zeros(0), {}
    if n_finite:
        if bins is None:
            bins = int(np.clip(round(2.0 * n_finite ** (1.0 / 3.0)), 10, 60))
        hist_edges = histogram_edges(vmin, vmax, scale, linthresh, bins)
        if keep is not None:
            keep = np.asarray(keep, dtype=bool)
            groups = {"kept": finite & keep, "dropped": finite & ~keep}
        else:
            groups = {"all": finite}
        for g, m in groups.items():
            hist[g] = np.histogram(vd[m], bins=hist_edges)[0].astype(np.int64)

    thr_lo = thr_hi = None
    above = below = 0
    if threshold is None and threshold_values is not None:
        t = np.where(done, np.asarray(threshold_values, dtype=np.float64), np.nan)
        tf = t[np.isfinite(t)]
        if tf.size and tf.min() == tf.max():
            threshold = float(tf[0])  # one value for every item: a plain line
        elif tf.size:
            thr_lo, thr_hi = minmax_per_bucket(t, buckets)
            with np.errstate(invalid="ignore"):
                above = int(np.count_nonzero(finite & (vd > t)))
                below = int(np.count_nonzero(finite & (vd <= t)))
    if threshold is not None:
        threshold = float(threshold)
        above = int(np.count_nonzero(fin_vals > threshold))
        below = int(fin_vals.size - above)

    return ColumnDigest(
        name=name,
        n_done=int(np.count_nonzero(done)),
        n_finite=n_finite,
        n_posinf=n_posinf,
        n_neginf=n_neginf,
        vmin=vmin,
        vmax=vmax,
        scale=scale,
        linthresh=linthresh,
        lo=lo,
        hi=hi,
        mean=mean,
        marks=marks,
        bands=bands,
        flag_counts=counts,
        posinf=posinf,
        hist_edges=hist_edges,
        hist=hist,
        threshold=threshold,
        above=above,
        below=below,
        threshold_lo=thr_lo,
        threshold_hi=thr_hi,
    )


# --------------------------------------------------------------------------------------------------
# figures
# --------------------------------------------------------------------------------------------------

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
    strip = buckets.n_failed > 0 or buckets.n_pending > 0
    with _rc():
        if strip:
            fig, (ax, sax) = _figure((TIMELINE_SIZE[0], TIMELINE_SIZE[1] + 0.3), rows=2, hspace=0.08,
                                     height_ratios=(1.0, 0.11))
        else:
            fig, ax = _figure(TIMELINE_SIZE)
            sax = None
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
        if d.posinf.size:
            sc = ax.scatter(x[d.posinf], np.full(d.posinf.size, 0.97), transform=ax.get_xaxis_transform(),
                            s=18, marker=STYLE["infinite"]["marker"], color=STYLE["infinite"]["color"], zorder=3,
                            clip_on=False, linewidths=0, label=f"+∞ ({d.n_posinf}, e.g. identical)")
            sc.set_gid("infinite")
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
    return fig


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
