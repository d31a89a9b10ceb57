"""The numbers behind the report's plots: bounded digests of store columns (NumPy, host).

So that the plots cost the same for 100 items and for 1,000,000: :func:`make_buckets` splits the
items into at most ``max_points`` consecutive buckets; :func:`digest_column` reduces one column to
per-bucket minimum and maximum (a spike of one item in a million stays visible: it is the maximum of
its bucket), the buckets holding flagged items (kept, corrupt, cut), a histogram, and the values of a
few chosen items. A digest is a few kilobytes whatever the store's size. :mod:`._plots` draws them.

Nothing here reads the store: :mod:`gpudiff.report` does, one column at a time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "Buckets",
    "ColumnDigest",
    "make_buckets",
    "minmax_per_bucket",
    "choose_scale",
    "histogram_edges",
    "digest_column",
]

#: Values spanning at least this many decades get a logarithmic axis.
LOG_DECADES = 3.0


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
    vmin = float(fin_vals.min()) if n_finite else math.nan
    vmax = float(fin_vals.max()) if n_finite else math.nan
    scale, linthresh = choose_scale(fin_vals)
    lo, hi = minmax_per_bucket(vd, buckets)
    return ColumnDigest(
        name=name,
        n_done=int(np.count_nonzero(done)),
        n_finite=n_finite,
        n_posinf=n_posinf,
        n_neginf=int(np.count_nonzero(vd == -np.inf)),
        vmin=vmin,
        vmax=vmax,
        scale=scale,
        linthresh=linthresh,
        lo=lo,
        hi=hi,
        mean=_bucket_means(vd, finite, buckets),
        **_flag_marks(flags, done, vd, buckets),
        posinf=_posinf_buckets(vd, n_posinf, buckets),
        **_histogram(vd, finite, n_finite, keep, bins, vmin, vmax, scale, linthresh),
        **_threshold_counts(threshold, threshold_values, done, vd, finite, fin_vals, buckets),
    )


def _bucket_means(vd, finite, buckets: Buckets) -> np.ndarray:
    """Mean of each bucket's finite values (NaN where a bucket has none)."""
    starts = buckets.starts
    counts_b = np.add.reduceat(finite, starts, dtype=np.int64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.add.reduceat(np.where(finite, vd, 0.0), starts) / counts_b


def _flag_marks(flags: dict | None, done, vd, buckets: Buckets) -> dict:
    """:class:`ColumnDigest`'s ``marks``, ``bands`` and ``flag_counts``: where each flag's done items are."""
    starts = buckets.starts
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
    return {"marks": marks, "bands": bands, "flag_counts": counts}


def _posinf_buckets(vd, n_posinf: int, buckets: Buckets) -> np.ndarray:
    """Indices of the buckets holding a +inf value (``n_posinf`` of them in all)."""
    if not n_posinf:
        return np.zeros(0, np.int64)
    return np.flatnonzero(np.maximum.reduceat((vd == np.inf).view(np.uint8), buckets.starts))


def _histogram(vd, finite, n_finite: int, keep, bins: int | None, vmin: float, vmax: float, scale: str,
               linthresh: float | None) -> dict:
    """:class:`ColumnDigest`'s ``hist_edges`` and ``hist`` (kept and dropped apart when ``keep`` is given)."""
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
    return {"hist_edges": hist_edges, "hist": hist}


def _threshold_counts(threshold: float | None, threshold_values, done, vd, finite, fin_vals,
                      buckets: Buckets) -> dict:
    """:class:`ColumnDigest`'s ``threshold``, ``above``, ``below``, ``threshold_lo`` and ``threshold_hi``.

    A per-item threshold that is the same for every done item becomes a fixed one.
    """
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
    return {"threshold": threshold, "above": above, "below": below, "threshold_lo": thr_lo, "threshold_hi": thr_hi}
