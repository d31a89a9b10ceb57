"""The rules of :mod:`._corrupt` (host NumPy, sequential and cheap): from the stacked block maps and
histograms of a whole sequence (or one piece of it) to the scores and flags of every frame.

:func:`_decide` runs the steps in order: :func:`_corrupt_scores` (is frame t an outlier against both
neighbours?), :func:`_cut_scores` (does the change across t-1 | t persist, unlike the change within
each side?), :func:`_one_neighbour_frames` (the first and last frames) and :func:`_flags`
(thresholds and neighbour suppression). The formulas are in the Notes of
:func:`gpudiff.sequence._corrupt.detect_events`; the thresholds in :class:`EventOptions`.
"""

from __future__ import annotations

import contextlib
import warnings

import numpy as np

from ..pair._histograms import KL_EMPTY_Q
from ._corrupt_options import EventOptions

#: Unit-scale floor of every noise level (float frames have no quantisation step).
_MIN_LEVEL = 1e-6
_DBL_EPS = float(np.finfo(np.float64).eps)


# ------------------------------------------------------------------------------------------ helpers
def _shift(x, k):
    """``out[t] = x[t - k]`` (NaN where that falls outside)."""
    out = np.full_like(x, np.nan)
    if k > 0:
        out[k:] = x[:-k]
    elif k < 0:
        out[:k] = x[-k:]
    else:
        out[:] = x
    return out


def _window_median(x, w, exclude):
    """Per t, the median and the scaled MAD (1.4826 MAD) of the finite ``x[u]`` with
    ``exclude < |u - t| <= w``."""
    n = len(x)
    padded = np.concatenate([np.full(w, np.nan), x, np.full(w, np.nan)])
    win = np.lib.stride_tricks.sliding_window_view(padded, 2 * w + 1).copy()
    win[:, w - exclude:w + exclude + 1] = np.nan
    with _quiet():
        med = np.nanmedian(win, axis=1)
        mad = 1.4826 * np.nanmedian(np.abs(win - med[:, None]), axis=1)
    return med[:n], mad[:n]


def _window_count(x, w, exclude):
    """Per t, how many ``x[u]`` with ``exclude < |u - t| <= w`` are finite."""
    padded = np.concatenate([np.zeros(w, bool), np.isfinite(x), np.zeros(w, bool)])
    win = np.lib.stride_tricks.sliding_window_view(padded, 2 * w + 1).copy()
    win[:, w - exclude:w + exclude + 1] = False
    return win.sum(axis=1)[: len(x)]


#: A robust z-score needs this many other frames in its window (a 5-frame stack has too few).
_MIN_WINDOW_FRAMES = 6
#: Histogram rules merge neighbouring bins until the occupied ones hold this many pixels on average
#: (a 48x48 frame has 9 pixels per bin of 256: its KL divergences are sampling noise).
_MIN_PIXELS_PER_BIN = 16


def _merged_bins(hist, pixels: int):
    """Halve the bins until the occupied ones (of the mean histogram) hold ``_MIN_PIXELS_PER_BIN``
    pixels on average; data filling a few bins (16-bit frames over the dtype's range) keeps them."""
    while hist.shape[1] > 16:
        occupied = max(int(np.count_nonzero(hist.mean(axis=0))), 1)
        if pixels / occupied >= _MIN_PIXELS_PER_BIN:
            break
        hist = hist.reshape(len(hist), hist.shape[1] // 2, 2).sum(axis=2)
    return hist


def _ndi():
    import scipy.ndimage  # noqa: PLC0415  (host decision only)

    return scipy.ndimage


@contextlib.contextmanager
def _quiet():
    """No floating-point or all-NaN-slice warnings: NaN marks what is undefined and is handled."""
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        yield


def _nearest_change(Bc, is_change, direction):
    """Per t, the block map of the nearest consecutive pair at or before t (direction -1) or at or
    after t (+1) that is not a repeat (NaN where there is none)."""
    n = len(Bc)
    out = np.full_like(Bc, np.nan)
    last = None
    order = range(n) if direction < 0 else range(n - 1, -1, -1)
    for t in order:
        if is_change[t]:
            last = t
        if last is not None:
            out[t] = Bc[last]
    return out


def _kl_rows(hist, di, dj):
    """``out[t] = KL(h[t + di] || h[t + dj])`` (NaN where either falls outside), vectorised over t with
    :func:`gpudiff.pair.kl_divergence`'s conventions (OpenCV's ``HISTCMP_KL_DIV``)."""
    n = len(hist)
    out = np.full(n, np.nan)
    t = np.arange(n)
    ok = (t + di >= 0) & (t + di < n) & (t + dj >= 0) & (t + dj < n)
    p, q = hist[t[ok] + di], hist[t[ok] + dj]
    use = np.abs(p) > _DBL_EPS
    q = np.where(np.abs(q) > _DBL_EPS, q, KL_EMPTY_Q)
    out[ok] = np.where(use, p * np.log(np.where(use, p, 1.0) / q), 0.0).sum(axis=1)
    return out


def _flat(a):
    """``a`` of shape (N, ...) as (N, tiles): one row per frame."""
    return a.reshape(len(a), -1)


def _noise_level(level, w, floor):
    """Per t, the median of ``level`` over the ``w`` frames on each side, at least ``floor``
    (``floor`` where the window holds no finite value)."""
    nu = _window_median(level, w, 0)[0]
    return np.maximum(np.where(np.isfinite(nu), nu, floor), floor)


# ------------------------------------------------------------------------------------------ the rules
def _outliers_and_activity(Bc, Bs, o: EventOptions):
    """Per tile, the outlier level ``O`` of frame t and the change ``A`` of its neighbourhood that
    does not involve frame t, spread to the largest within ``activity_radius`` tiles; per frame,
    ``level``: the median tile of ``A`` before that spread (what the noise level is taken of)."""
    n = len(Bc)
    O = np.full_like(Bc, np.nan)
    O[1:n - 1] = np.maximum(0.0, 0.5 * (Bc[1:n - 1] + Bc[2:n] - Bs[1:n - 1]))
    A = np.fmax(np.fmax(Bs, _shift(Bc, 1)), _shift(Bc, -2))  # (t-1,t+1), (t-2,t-1), (t+1,t+2)
    level = np.nanmedian(_flat(A), axis=1)
    if o.activity_radius > 0:  # motion beside a tile (a swinging leg) counts as its activity too
        k = 2 * o.activity_radius + 1
        spread = _ndi().maximum_filter(np.nan_to_num(A), size=(1, k, k), mode="nearest")
        A = np.where(np.isnan(A), np.nan, spread)
    return O, A, level


def _corrupt_scores(Bc, Bs, hist, floor, o: EventOptions) -> dict:
    """Corruption: each frame's score (the largest of the area, peak, global and histogram rules,
    each divided by its threshold; NaN at the end frames), the rules' values, and the KL
    divergences the cut rules reuse (``kl_prev``: (t | t-1), ``kl_skip``: (t+1 | t-1))."""
    n = len(Bc)
    w = int(o.window)
    with _quiet():
        O, A, level = _outliers_and_activity(Bc, Bs, o)
        nu = _noise_level(level, w, floor)
        nu3 = nu[:, None, None]
        ratio = O / (A + nu3)
        above = O > np.maximum(o.noise_factor * nu3, o.min_level * floor)
        spike_area = _flat((ratio > o.spike_ratio) & above).mean(axis=1)
        peaks = _flat(np.where(above, ratio, 0.0))
        spike_peak = np.max(peaks, axis=1)
        spike_at = np.argmax(np.nan_to_num(peaks), axis=1).astype(np.int64)  # the peak's tile (flat)
        g = np.nansum(_flat(O), axis=1) / np.nansum(_flat(A + nu3), axis=1)
        gmed, gmad = _window_median(g, w, 1)
        spike_global = (g - gmed) / (gmad + o.global_floor)
        spike_global[_window_count(g, w, 1) < _MIN_WINDOW_FRAMES] = np.nan  # too few frames to judge
        kp, kn, ks = _kl_rows(hist, 0, -1), _kl_rows(hist, 0, 1), _kl_rows(hist, 1, -1)
        hist_spike = np.fmin(kp, kn) / (o.kl_threshold + o.hist_ratio * ks)
        other_rules = np.fmax.reduce([spike_area / o.area_threshold, spike_global / o.global_threshold, hist_spike])
        corrupt_score = np.fmax(spike_peak / o.peak_threshold, other_rules)
        corrupt_score[[0, n - 1]] = np.nan
    return {
        "corrupt_score": corrupt_score,
        "other_rules": other_rules,
        "spike_at": spike_at,
        "spike_area": spike_area,
        "spike_peak": spike_peak,
        "spike_global": spike_global,
        "hist_spike": hist_spike,
        "kl_prev": kp,
        "kl_skip": ks,
        "noise": nu,
    }


def _cut_scores(Bc, Bs, mad, hist, kp, ks, floor, o: EventOptions) -> dict:
    """Cuts: the change across the boundary (t-1 | t) against the change within each side, per
    frame: the score (the larger of the pixel and the histogram rule; NaN at frame 0 and where no
    tile is defined) and the rules' values. ``kp``, ``ks``: :func:`_corrupt_scores`' KL rows."""
    n = len(Bc)
    w = int(o.window)
    with _quiet():
        typical = _window_median(np.where(mad > 0, mad, np.nan), w, 0)[0]
        is_change = np.isfinite(mad) & (mad > o.repeat_ratio * np.nan_to_num(typical, nan=0.0))
        across = np.fmin(np.fmin(Bc, Bs), _shift(Bs, 1))  # (t-1,t), (t-1,t+1), (t-2,t)
        w1 = _shift(_nearest_change(Bc, is_change, -1), 1)  # last change before t-1 .. t-1
        w2 = _shift(_nearest_change(Bc, is_change, +1), -1)  # first change from t+1 on
        within = np.fmax(w1, w2)
        wlevel = np.nanmedian(_flat(within), axis=1)
        nuc = _noise_level(wlevel, w, floor)[:, None, None]
        valid = np.isfinite(across) & np.isfinite(within)
        big = valid & (across > np.maximum(o.noise_factor * nuc, o.min_level * floor))
        cut_area = _flat(big & (across > o.cut_ratio * (within + nuc))).sum(axis=1) / np.maximum(
            _flat(valid).sum(axis=1), 1
        )
        cut_global = np.nansum(_flat(np.where(valid, across, np.nan)), axis=1) / np.nansum(
            _flat(np.where(valid, within + nuc, np.nan)), axis=1
        )
        cut_pixels = np.minimum(cut_area / o.cut_area_threshold, cut_global / o.cut_global_threshold)
        k_across = np.fmin(np.fmin(kp, ks), _kl_rows(hist, 0, -2))  # (t|t-1), (t+1|t-1), (t|t-2)
        k_within = np.fmax(_kl_rows(hist, -1, -2), _kl_rows(hist, 1, 0))  # (t-1|t-2), (t+1|t)
        hist_cut = k_across / (o.kl_threshold + o.hist_ratio * k_within)
        cut_score = np.fmax(cut_pixels, hist_cut)
        has_valid = _flat(valid).any(axis=1)
        cut_score = np.where(has_valid & (np.arange(n) >= 1), cut_score, np.nan)
    return {"cut_score": cut_score, "cut_area": cut_area, "cut_global": cut_global, "hist_cut": hist_cut}


def _one_neighbour_frames(corrupt_score, cut_score) -> None:
    """First and last frames (in place): one neighbour only. A frame 0 (N-1) that differs from its
    neighbour as a cut would, while the neighbour agrees with the next frame, is a one-frame shot:
    corrupt, and no cut is reported at frames 1 and N-1."""
    n = len(corrupt_score)
    if n >= 3:
        corrupt_score[0] = cut_score[1]
        corrupt_score[n - 1] = cut_score[n - 1]
        cut_score[1] = np.nan
        cut_score[n - 1] = np.nan


def _flags(corrupt_score, cut_score, other_rules, o: EventOptions) -> tuple:
    """The flags from the scores: (corrupt, cut, peak_only), bool arrays; ``peak_only``: corrupt
    flags that only the one-tile peak rule raised (:func:`check_motion` may find fast motion)."""
    n = len(corrupt_score)
    cs = np.nan_to_num(corrupt_score, nan=0.0)
    xs = np.nan_to_num(cut_score, nan=0.0)
    corrupt = cs >= 1.0
    cut = xs >= 1.0
    if o.suppress_neighbours:
        corrupt &= cs >= np.fmax(np.nan_to_num(_shift(cs, 1)), np.nan_to_num(_shift(cs, -1)))
        cut &= xs >= np.fmax(np.nan_to_num(_shift(xs, 1)), np.nan_to_num(_shift(xs, -1)))
    both = corrupt & cut
    corrupt[both] = cs[both] >= xs[both]
    cut[both] = ~corrupt[both]
    # the frame before a cut has its next neighbour in another shot: its three-frame test is moot
    corrupt[:-1] &= ~cut[1:]
    # a flag that only the one-tile peak rule raised: check_motion may find it is fast motion
    peak_only = corrupt & ~(np.nan_to_num(other_rules, nan=0.0) >= 1.0)
    peak_only[[0, n - 1]] = False  # the end frames' scores come from the cut rule
    return corrupt, cut, peak_only


def _decide(Bc, Bs, mad, hist, lsb, o: EventOptions) -> dict:
    """The rules of :func:`detect_events` on stacked arrays: ``Bc[t]`` = map of (t-1, t), ``Bs[t]`` =
    map of (t-1, t+1) (NaN where undefined), ``mad[t]`` = mean of ``Bc[t]``, ``hist`` (N, 256)."""
    floor = max(lsb, _MIN_LEVEL)
    c = _corrupt_scores(Bc, Bs, hist, floor, o)
    x = _cut_scores(Bc, Bs, mad, hist, c["kl_prev"], c["kl_skip"], floor, o)
    _one_neighbour_frames(c["corrupt_score"], x["cut_score"])
    corrupt, cut, peak_only = _flags(c["corrupt_score"], x["cut_score"], c["other_rules"], o)
    return {
        "corrupt": corrupt,
        "cut": cut,
        "peak_only": peak_only,
        "spike_at": c["spike_at"],
        "corrupt_score": c["corrupt_score"],
        "cut_score": x["cut_score"],
        "kl_prev": c["kl_prev"],
        "spike_area": c["spike_area"],
        "spike_peak": c["spike_peak"],
        "spike_global": c["spike_global"],
        "hist_spike": c["hist_spike"],
        "cut_area": x["cut_area"],
        "cut_global": x["cut_global"],
        "hist_cut": x["hist_cut"],
        "noise": c["noise"],
    }


_RESULT_KEYS = ("corrupt", "cut", "peak_only", "spike_at", "corrupt_score", "cut_score", "kl_prev", "spike_area",
                "spike_peak", "spike_global", "hist_spike", "cut_area", "cut_global", "hist_cut", "noise")
