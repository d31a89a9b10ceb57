"""Corrupted frames and scene cuts in a sequence, from small per-frame and per-pair features.

The work splits in two, so that it runs in parallel chunks over an archive:

1. **Features** (NumPy or CuPy, written once against ``xp``), computed anywhere, in any order:
   :func:`frame_features` for every frame (the 256-bin grey histogram) and :func:`pair_features` for
   every consecutive pair ``(t-1, t)`` and every skip-one pair ``(t-1, t+1)``: the map of the mean
   absolute grey difference over ``block_size`` x ``block_size`` tiles (1/64 of the frame for 8x8)
   and a few scalars. Only these small results leave the device.
2. **Decision** (host NumPy, sequential and cheap): :func:`detect_events` reads the features of the
   whole sequence and flags each frame ``corrupt`` (an outlier against both neighbours) or ``cut``
   (the first frame of a new shot: the change persists).

The decision rests on one identity. For a pixel with values :math:`x_{t-1}, x_t, x_{t+1}`, the
distance by which :math:`x_t` lies outside the interval spanned by its two neighbours is

.. math:: s_t = \\tfrac12 \\left(|x_t - x_{t-1}| + |x_{t+1} - x_t| - |x_{t+1} - x_{t-1}|\\right) \\ge 0,

zero when :math:`x_t` lies between them (steady motion, a scene cut) and the size of the jump when it
is brighter or darker than both (a corrupted pixel). It is the simplified rank-ordered difference
(SROD) of Kokaram's blotch detectors for film restoration with one pixel of each neighbour (A. C.
Kokaram, *Motion Picture Restoration*, Springer 1998). Being linear in the three absolute
differences, its block means come *exactly* from the three pairs' block maps:
:math:`O_t = \\tfrac12 (B_{t-1,t} + B_{t,t+1} - B_{t-1,t+1})`, so no task ever needs three frames.
See :func:`detect_events` for the rules and :class:`EventOptions` for the thresholds.
"""

from __future__ import annotations

import contextlib
import dataclasses
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import backend as _backend
from ..errors import ConfigError, InputError
from ..pair._histograms import KL_EMPTY_Q, kl_divergence
from ..pair._preprocess import to_gray

__all__ = [
    "HIST_BINS",
    "check_motion",
    "FrameFeatures",
    "EventOptions",
    "frame_features",
    "pair_features",
    "detect_events",
    "detect_sequence",
    "kl_rule",
]

#: Bins of the grey histogram of :func:`frame_features`, over the frame dtype's whole range.
HIST_BINS = 256
_GRAY_MODES = ("gray", "luma")
#: Unit-scale floor of every noise level (float frames have no quantisation step).
_MIN_LEVEL = 1e-6
_DBL_EPS = float(np.finfo(np.float64).eps)
#: Frames per piece when :func:`detect_events` works through a long sequence piecewise.
_PIECE = 1024


# ------------------------------------------------------------------------------------------ features
def _frame_scale(frame, name):
    """(unit-scale divisor, histogram upper bound, quantisation step on the unit scale) of a frame."""
    if getattr(frame, "ndim", None) not in (2, 3):
        raise InputError(
            f"{name} has shape {tuple(getattr(frame, 'shape', ()))}: expected (height, width) or "
            "(height, width, channels)"
        )
    if 0 in frame.shape:
        raise InputError(f"{name} has shape {tuple(frame.shape)}: it holds no pixels")
    dt = frame.dtype
    if dt.kind == "u" and dt.itemsize == 1:
        return 255.0, 256.0, 1.0 / 255.0
    if dt.kind == "u" and dt.itemsize == 2:
        return 65535.0, 65536.0, 1.0 / 65535.0
    if dt.kind == "f":
        xp = _backend.get_namespace(frame)
        if not bool(xp.isfinite(frame).all()):  # sync
            raise InputError(
                f"{name} holds NaN or infinite values: replace them (e.g. numpy.nan_to_num) first"
            )
        return 1.0, 1.0, 0.0
    raise InputError(f"{name} has dtype {dt}: use uint8, uint16, or float with values in [0, 1]")


def _check_color(color):
    if color not in _GRAY_MODES:
        raise ConfigError(f"color {color!r} is not one of {', '.join(_GRAY_MODES)}")


def _gray32(frame, color):
    xp = _backend.get_namespace(frame)
    return to_gray(frame, mode=color).astype(xp.float32, copy=False)


@dataclass(frozen=True)
class FrameFeatures:
    """What :func:`detect_events` needs of one frame.

    Attributes
    ----------
    histogram : ndarray, shape (256,)
        float64 probabilities (sum 1) of the grey values over the dtype's range, on the frame's
        device (NumPy or CuPy).
    shape : tuple of int
        ``(height, width)``.
    lsb : float
        The quantisation step on the unit scale: 1/255 (uint8), 1/65535 (uint16), 0 (float).
    """

    histogram: Any
    shape: tuple
    lsb: float


def frame_features(frame, *, color="gray") -> FrameFeatures:
    """The grey histogram of one frame.

    Parameters
    ----------
    frame : ndarray, shape (H, W) or (H, W, C)
        NumPy or CuPy array, uint8, uint16, or float with values in [0, 1].
    color : {'gray', 'luma'}
        How a colour frame becomes grey (:func:`gpudiff.pair.to_gray`).

    Returns
    -------
    FrameFeatures

    Notes
    -----
    256 equal bins over the dtype's range: bin :math:`\\lfloor 256\\, g / R \\rfloor` with
    :math:`R = 256` (uint8: one bin per grey level), 65536 (uint16: 256 levels per bin) or 1
    (float; 1.0 falls in the last bin), where :math:`g` is the grey value (the mean of the channels
    for ``'gray'``). This is OpenCV's ``calcHist([grey], [0], None, [256], [0, R])`` divided by the
    pixel count.
    """
    _check_color(color)
    _, hist_hi, lsb = _frame_scale(frame, "frame")
    xp = _backend.get_namespace(frame)
    g = _gray32(frame, color)
    idx = xp.clip(xp.floor(g * xp.float32(HIST_BINS / hist_hi)), 0, HIST_BINS - 1).astype(xp.int64)
    counts = xp.bincount(idx.ravel(), minlength=HIST_BINS)
    hist = counts.astype(xp.float64) / float(g.size)
    return FrameFeatures(histogram=hist, shape=(int(g.shape[0]), int(g.shape[1])), lsb=lsb)


def _block_means(x, block, xp):
    """float64 mean of ``x`` (H, W) over ``block`` x ``block`` tiles; the last row/column of tiles
    may be partial (their mean is over the pixels they hold)."""
    h, w = x.shape
    hb, wb = -(-h // block), -(-w // block)
    ph, pw = hb * block - h, wb * block - w
    if ph or pw:
        x = xp.pad(x, ((0, ph), (0, pw)))
    sums = x.reshape(hb, block, wb, block).sum(axis=(1, 3), dtype=xp.float64)
    rows = xp.full((hb, 1), float(block))
    cols = xp.full((1, wb), float(block))
    rows[-1, 0] = block - ph
    cols[0, -1] = block - pw
    return sums / (rows * cols)


def pair_features(a, b, *, block_size=8, color="gray") -> dict:
    """Pixel-level evidence for one pair of frames (consecutive or skip-one), on the full frames.

    Parameters
    ----------
    a, b : ndarray, shape (H, W) or (H, W, C)
        NumPy or CuPy arrays of the same height and width; uint8, uint16 or float in [0, 1] (the two
        may differ: each is put on the unit scale by its own dtype).
    block_size : int
        Side of the square tiles of the block map (>= 1).
    color : {'gray', 'luma'}
        How a colour frame becomes grey.

    Returns
    -------
    dict
        ``'block_mad'``: float32 host array of shape ``(ceil(H / block_size), ceil(W / block_size))``,
        the mean of :math:`|g_b - g_a|` over each tile; ``'mad'``: its mean over the frame;
        ``'max_abs'``: the largest pixel difference; ``'block_median'``, ``'block_max'``: median and
        largest tile mean; ``'lsb'``: the quantisation step (the larger of the two frames'). All
        differences are on the unit scale (grey / 255, / 65535, or as is for float frames).

    Notes
    -----
    :math:`B_{ij} = \\frac{1}{|T_{ij}|} \\sum_{p \\in T_{ij}} |g_b(p) - g_a(p)|`, accumulated in float64
    (the grey values and their differences are float32). Tiles at the bottom and right edges hold
    what is left of the frame. The map is what makes the decision exact: the block mean of the
    per-pixel outlier distance of a frame against its two neighbours is a linear combination of
    three such maps (see the module's docstring).
    """
    _check_color(color)
    if int(block_size) != block_size or block_size < 1:
        raise ConfigError(f"block_size {block_size!r} must be a whole number >= 1 (pixels)")
    block_size = int(block_size)
    ua, _, la = _frame_scale(a, "a")
    ub, _, lb = _frame_scale(b, "b")
    if tuple(a.shape[:2]) != tuple(b.shape[:2]):
        raise InputError(
            f"frames of shapes {tuple(a.shape)} and {tuple(b.shape)} differ in size: compare frames of "
            "one size (resize or crop them first)"
        )
    xp = _backend.get_namespace(a, b)
    d = xp.abs(_gray32(a, color) * xp.float32(1.0 / ua) - _gray32(b, color) * xp.float32(1.0 / ub))
    bm = _block_means(d, block_size, xp)
    scalars = xp.stack(
        [xp.mean(d, dtype=xp.float64), xp.max(d).astype(xp.float64), xp.median(bm), xp.max(bm)]
    )
    mad, max_abs, bmed, bmax = (float(v) for v in _backend.to_host(scalars))  # sync
    return {
        "mad": mad,
        "max_abs": max_abs,
        "block_median": bmed,
        "block_max": bmax,
        "lsb": max(la, lb),
        "block_mad": _backend.to_host(bm).astype(np.float32),  # sync
    }


# ------------------------------------------------------------------------------------------ decision
@dataclass(frozen=True)
class EventOptions:
    """How :func:`detect_events` decides. Immutable; the defaults were chosen by measurement
    (``benchmarks/corrupt_eval.py``, see Notes of :func:`detect_events`).

    Parameters
    ----------
    block_size : int
        Tile side of the block maps (for :func:`pair_features`; recorded here so a run says how it
        was computed). 8 measured best: 4 gives more false alarms from motion at the same recall, 16
        dilutes few-pixel damage.
    color : {'gray', 'luma'}
        How colour frames become grey.
    window : int
        Frames on each side over which the temporal references (noise level, robust baseline of
        the global statistic, typical change) are taken.
    noise_factor, min_level : float
        A tile takes part only when its evidence exceeds ``noise_factor`` times the sequence's noise
        level and ``min_level`` quantisation steps.
    spike_ratio : float
        A tile *spikes* when its outlier level :math:`O` exceeds ``spike_ratio`` times the change of
        its neighbourhood that does not involve the frame (plus the noise level).
    activity_radius : int
        That change is the largest over the tiles within this many tiles (1: 3x3), so that motion
        beside a tile (a swinging leg, a passing car) excuses it. 0: the tile's own change only.
    area_threshold : float
        Corrupt when more than this fraction of the tiles spike.
    peak_threshold : float
        ... or when one tile's outlier level exceeds ``peak_threshold`` times its neighbourhood's
        change (few-pixel damage).
    global_threshold, global_floor : float
        ... or when the frame's total outlier level, as a ratio to its neighbourhood's change, is
        more than ``global_threshold`` robust standard deviations (plus ``global_floor``) above the
        same ratio of the surrounding frames (noise-dominated frames, where no tile stands out).
    kl_threshold, hist_ratio : float
        ... or when :math:`\\min(KL(h_t\\|h_{t-1}), KL(h_t\\|h_{t+1}))` exceeds ``kl_threshold`` plus
        ``hist_ratio`` times :math:`KL(h_{t+1}\\|h_{t-1})`: the KL > 0.2 rule against *both*
        neighbours, when the neighbours agree. Also a cut rule (across vs within the boundary).
    cut_ratio, cut_area_threshold, cut_global_threshold : float
        Cut when more than ``cut_area_threshold`` of the tiles change across the boundary by more
        than ``cut_ratio`` times their change within each side, and the whole frame's change across
        is more than ``cut_global_threshold`` times its change within.
    repeat_ratio : float
        A consecutive pair whose mean difference is below ``repeat_ratio`` times the typical one is a
        repeated frame (frame-rate conversion): the cut rule looks past it for the change within.
    suppress_neighbours : bool
        Keep a flag only where its score is at least its neighbours' (a corrupted frame also
        disturbs the evidence of the frames beside it).
    motion_search, motion_match : int, float
        :func:`check_motion`: a flag raised by the one-tile peak rule alone is cleared when the
        spike's tile of frame t is found, within +-``motion_search`` px, in frame t-1 or
        t+1 at a non-zero offset with a mean absolute difference at most ``motion_match`` times
        the one in place: a fast-moving object (a limb close to the camera), not damage. Not when
        both neighbours match at the same offset (static content copied within the frame: a
        displaced or repeated block). ``motion_search`` 0 turns the check off.
    """

    block_size: int = 8
    color: str = "gray"
    window: int = 12
    noise_factor: float = 3.0
    min_level: float = 2.0
    spike_ratio: float = 2.0
    area_threshold: float = 0.01
    peak_threshold: float = 5.0
    global_threshold: float = 8.0
    global_floor: float = 0.01
    kl_threshold: float = 0.2
    hist_ratio: float = 4.0
    cut_ratio: float = 3.0
    cut_area_threshold: float = 0.2
    cut_global_threshold: float = 1.1
    repeat_ratio: float = 0.1
    activity_radius: int = 1
    suppress_neighbours: bool = True
    motion_search: int = 32
    motion_match: float = 0.65

    def __post_init__(self):
        _check_color(self.color)
        for name, least in (("block_size", 1), ("window", 2), ("activity_radius", 0), ("motion_search", 0)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float, np.number)) or v != int(v) or v < least:
                raise ConfigError(f"{name} {v!r} must be a whole number >= {least}")
            object.__setattr__(self, name, int(v))
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if f.type in ("float", float):
                number = isinstance(v, (int, float, np.number)) and not isinstance(v, bool)
                if not number or not (np.isfinite(v) and v >= 0):
                    raise ConfigError(f"{f.name} {v!r} must be a finite number >= 0")
                object.__setattr__(self, f.name, float(v))
        if not isinstance(self.suppress_neighbours, (bool, np.bool_)):
            raise ConfigError(f"suppress_neighbours {self.suppress_neighbours!r} must be True or False")
        for name in ("spike_ratio", "area_threshold", "peak_threshold", "global_threshold", "cut_ratio",
                     "cut_area_threshold", "cut_global_threshold"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} {getattr(self, name)!r} must be > 0")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> EventOptions:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(
                f"unknown event option(s) {', '.join(unknown)}: known are {', '.join(sorted(known))}"
            )
        return cls(**d)


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


def _decide(Bc, Bs, mad, hist, lsb, o: EventOptions) -> dict:
    """The rules of :func:`detect_events` on stacked arrays: ``Bc[t]`` = map of (t-1, t), ``Bs[t]`` =
    map of (t-1, t+1) (NaN where undefined), ``mad[t]`` = mean of ``Bc[t]``, ``hist`` (N, 256)."""
    n = len(Bc)
    flat = lambda a: a.reshape(n, -1)  # noqa: E731
    floor = max(lsb, _MIN_LEVEL)
    w = int(o.window)
    with _quiet():
        # --- corruption: the outlier level O of each tile and its neighbourhood's change A
        O = np.full_like(Bc, np.nan)
        O[1:n - 1] = np.maximum(0.0, 0.5 * (Bc[1:n - 1] + Bc[2:n] - Bs[1:n - 1]))
        A = np.fmax(np.fmax(Bs, _shift(Bc, 1)), _shift(Bc, -2))  # (t-1,t+1), (t-2,t-1), (t+1,t+2)
        level = np.nanmedian(flat(A), axis=1)
        if o.activity_radius > 0:  # motion beside a tile (a swinging leg) counts as its activity too
            k = 2 * o.activity_radius + 1
            spread = _ndi().maximum_filter(np.nan_to_num(A), size=(1, k, k), mode="nearest")
            A = np.where(np.isnan(A), np.nan, spread)
        nu = _window_median(level, w, 0)[0]
        nu = np.maximum(np.where(np.isfinite(nu), nu, floor), floor)
        nu3 = nu[:, None, None]
        ratio = O / (A + nu3)
        above = O > np.maximum(o.noise_factor * nu3, o.min_level * floor)
        spike_area = flat((ratio > o.spike_ratio) & above).mean(axis=1)
        peaks = flat(np.where(above, ratio, 0.0))
        spike_peak = np.max(peaks, axis=1)
        spike_at = np.argmax(np.nan_to_num(peaks), axis=1).astype(np.int64)  # the peak's tile (flat)
        g = np.nansum(flat(O), axis=1) / np.nansum(flat(A + nu3), axis=1)
        gmed, gmad = _window_median(g, w, 1)
        spike_global = (g - gmed) / (gmad + o.global_floor)
        spike_global[_window_count(g, w, 1) < _MIN_WINDOW_FRAMES] = np.nan  # too few frames to judge
        kp, kn, ks = _kl_rows(hist, 0, -1), _kl_rows(hist, 0, 1), _kl_rows(hist, 1, -1)
        hist_spike = np.fmin(kp, kn) / (o.kl_threshold + o.hist_ratio * ks)
        other_rules = np.fmax.reduce([spike_area / o.area_threshold, spike_global / o.global_threshold, hist_spike])
        corrupt_score = np.fmax(spike_peak / o.peak_threshold, other_rules)
        corrupt_score[[0, n - 1]] = np.nan

        # --- cuts: change across the boundary (t-1 | t) against the change within each side
        typical = _window_median(np.where(mad > 0, mad, np.nan), w, 0)[0]
        is_change = np.isfinite(mad) & (mad > o.repeat_ratio * np.nan_to_num(typical, nan=0.0))
        across = np.fmin(np.fmin(Bc, Bs), _shift(Bs, 1))  # (t-1,t), (t-1,t+1), (t-2,t)
        w1 = _shift(_nearest_change(Bc, is_change, -1), 1)  # last change before t-1 .. t-1
        w2 = _shift(_nearest_change(Bc, is_change, +1), -1)  # first change from t+1 on
        within = np.fmax(w1, w2)
        wlevel = np.nanmedian(flat(within), axis=1)
        nuc = _window_median(wlevel, w, 0)[0]
        nuc = np.maximum(np.where(np.isfinite(nuc), nuc, floor), floor)[:, None, None]
        valid = np.isfinite(across) & np.isfinite(within)
        big = valid & (across > np.maximum(o.noise_factor * nuc, o.min_level * floor))
        cut_area = flat(big & (across > o.cut_ratio * (within + nuc))).sum(axis=1) / np.maximum(
            flat(valid).sum(axis=1), 1
        )
        cut_global = np.nansum(flat(np.where(valid, across, np.nan)), axis=1) / np.nansum(
            flat(np.where(valid, within + nuc, np.nan)), axis=1
        )
        cut_pixels = np.minimum(cut_area / o.cut_area_threshold, cut_global / o.cut_global_threshold)
        k_across = np.fmin(np.fmin(kp, ks), _kl_rows(hist, 0, -2))  # (t|t-1), (t+1|t-1), (t|t-2)
        k_within = np.fmax(_kl_rows(hist, -1, -2), _kl_rows(hist, 1, 0))  # (t-1|t-2), (t+1|t)
        hist_cut = k_across / (o.kl_threshold + o.hist_ratio * k_within)
        cut_score = np.fmax(cut_pixels, hist_cut)
        has_valid = flat(valid).any(axis=1)
        cut_score = np.where(has_valid & (np.arange(n) >= 1), cut_score, np.nan)

    # --- first and last frames: one neighbour only. A frame 0 (N-1) that differs from its neighbour
    # as a cut would, while the neighbour agrees with the next frame, is a one-frame shot: corrupt.
    if n >= 3:
        corrupt_score[0] = cut_score[1]
        corrupt_score[n - 1] = cut_score[n - 1]
        cut_score[1] = np.nan
        cut_score[n - 1] = np.nan
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
    return {
        "corrupt": corrupt,
        "cut": cut,
        "peak_only": peak_only,
        "spike_at": spike_at,
        "corrupt_score": corrupt_score,
        "cut_score": cut_score,
        "kl_prev": kp,
        "spike_area": spike_area,
        "spike_peak": spike_peak,
        "spike_global": spike_global,
        "hist_spike": hist_spike,
        "cut_area": cut_area,
        "cut_global": cut_global,
        "hist_cut": hist_cut,
        "noise": nu,
    }


_RESULT_KEYS = ("corrupt", "cut", "peak_only", "spike_at", "corrupt_score", "cut_score", "kl_prev", "spike_area",
                "spike_peak",
                "spike_global", "hist_spike", "cut_area", "cut_global", "hist_cut", "noise")


def _as_map(p, name, t):
    if not isinstance(p, dict) or "block_mad" not in p:
        raise InputError(
            f"{name}[{t}] is {type(p).__name__}, not a pair_features dict: compute it with pair_features"
        )
    return np.asarray(_backend.to_host(p["block_mad"]), dtype=np.float64)


def detect_events(frame_feats, consecutive, skip, *, options=None) -> dict:
    """Flag corrupted frames and scene cuts from the features of a whole sequence.

    Parameters
    ----------
    frame_feats : list of FrameFeatures, length N
        :func:`frame_features` of frames 0 .. N-1.
    consecutive : list of dict, length N
        ``consecutive[t]`` = :func:`pair_features` of ``(frame t-1, frame t)``; ``consecutive[0]`` is
        ignored (None).
    skip : list of dict, length N
        ``skip[t]`` = :func:`pair_features` of ``(frame t-1, frame t+1)``; ``skip[0]`` and
        ``skip[N-1]`` are ignored (None).
    options : EventOptions, optional

    Returns
    -------
    dict of ndarray, each of length N
        ``corrupt``, ``cut`` (bool): the flags (``cut[t]``: frame t starts a new shot).
        ``corrupt_score``, ``cut_score`` (float): 1 at the threshold, larger is surer (NaN where
        undefined). ``kl_prev``: :math:`KL(h_t \\| h_{t-1})` (NaN at 0). Diagnostics: ``spike_area``,
        ``spike_peak``, ``spike_global``, ``hist_spike``, ``cut_area``, ``cut_global``,
        ``hist_cut`` (each divided by its threshold in the scores) and ``noise`` (the noise level
        :math:`\\nu`).

    Raises
    ------
    InputError
        Lists of different lengths, missing pair features, block maps of different shapes.

    Notes
    -----
    With :math:`B_{u,v}` the block map of the pair ``(u, v)`` (mean :math:`|g_v - g_u|` per tile):

    *Corrupt* (frame t, 1 <= t <= N-2). :math:`O = \\tfrac12(B_{t-1,t} + B_{t,t+1} - B_{t-1,t+1})` is
    the tile mean of the per-pixel distance of frame t outside its neighbours' range (module
    docstring); :math:`A = \\max(B_{t-1,t+1}, B_{t-2,t-1}, B_{t+1,t+2})` is the change of the
    neighbourhood that does not involve frame t (motion, noise), then its largest value within
    ``activity_radius`` tiles; :math:`\\nu` the noise level (the median over the ``window`` of the
    frames' median tile of :math:`A` before that spatial maximum, at least one quantisation step).
    A tile *spikes* when :math:`O > \\text{spike\\_ratio}\\,(A + \\nu)` and
    :math:`O > \\max(\\text{noise\\_factor}\\,\\nu, \\text{min\\_level} \\cdot \\text{lsb})`. The score is the
    largest of: the fraction of spiking tiles / ``area_threshold``; the largest :math:`O/(A+\\nu)` of
    a tile above the noise / ``peak_threshold``; the robust z-score (window median and 1.4826 MAD,
    plus ``global_floor``) of :math:`\\sum O / \\sum (A + \\nu)` / ``global_threshold``; and
    :math:`\\min(KL(h_t\\|h_{t-1}), KL(h_t\\|h_{t+1})) / (\\text{kl\\_threshold} + \\text{hist\\_ratio}
    \\cdot KL(h_{t+1}\\|h_{t-1}))`. Steady motion puts a pixel between its neighbours (:math:`O = 0`);
    a cut too (frame t equals one side); so only an outlier frame scores.

    *Cut* (frame t starts a shot, 2 <= t <= N-2). Per tile, the change across the boundary
    :math:`X = \\min(B_{t-1,t}, B_{t-1,t+1}, B_{t-2,t})` against the change within each side
    :math:`W = \\max(B_{t-2,t-1}, B_{t,t+1})` (a repeated frame, a pair whose mean difference is
    below ``repeat_ratio`` of the typical one, is looked past). Score: the larger of
    :math:`\\min(a / \\text{cut\\_area\\_threshold},\\ \\sum X / \\sum (W + \\nu_c) /
    \\text{cut\\_global\\_threshold})`, :math:`a` the fraction of tiles above the noise with
    :math:`X > \\text{cut\\_ratio}\\,(W + \\nu_c)`,
    and the same across/within test on the histograms' KL. A corrupted frame is far from both
    neighbours but its neighbours agree (:math:`B_{t-1,t+1}` small), so it never looks like a cut.

    *First and last frames* have one neighbour: frame 0 (N-1) is flagged corrupt when the cut rule
    fires at frame 1 (N-1), i.e. it differs from its neighbour while the neighbour agrees with the
    next frame: a one-frame shot is treated like the outlier frame it looks like, and no cut is
    reported at frames 1 and N-1. Few-pixel damage on those two frames is not detected.

    Neighbour suppression keeps a flag only where its score is at least its neighbours'. A frame
    flagged both corrupt and cut keeps the larger score; the frame just before a cut is never
    flagged corrupt (its next neighbour is in another shot). Fewer than 3 frames: nothing is flagged.

    The defaults of :class:`EventOptions` were set on seeded injections into 12 real clips
    (``benchmarks/corrupt_eval.py --seed 0``: the largest recall with no false alarm on any clean
    frame) and checked on seeds 1 and 2: over 1587 injected frames of 9 kinds, precision 1.00 and
    recall 0.77-0.78 (the KL > 0.2 rule: 0.55-0.57 and 0.21-0.22), 99-100 of 100 cuts, and no
    false alarm on about 5850 clean frames (the rule: 4.6-6.5 per 1000). Camera shake, fast
    close-up motion and noise-dominated frames are where it misses most (see the benchmark).
    """
    o = options if options is not None else EventOptions()
    if not isinstance(o, EventOptions):
        raise ConfigError(f"options must be an EventOptions, got {type(o).__name__}")
    n = len(frame_feats)
    if len(consecutive) != n or len(skip) != n:
        raise InputError(
            f"{n} frame features, {len(consecutive)} consecutive and {len(skip)} skip-one pair features: "
            "give one of each per frame (None where undefined)"
        )
    if n < 3:  # no frame has two neighbours: nothing can be told apart
        out = {k: np.full(n, np.nan) for k in _RESULT_KEYS}
        out.update(corrupt=np.zeros(n, bool), cut=np.zeros(n, bool), peak_only=np.zeros(n, bool),
                   spike_at=np.zeros(n, np.int64), motion=np.zeros(n, bool))
        return out
    hist = np.stack([np.asarray(_backend.to_host(f.histogram), dtype=np.float64) for f in frame_feats])
    hist = _merged_bins(hist, min(int(np.prod(f.shape[:2])) for f in frame_feats))
    lsb = max(float(f.lsb) for f in frame_feats)
    shape = _as_map(consecutive[1], "consecutive", 1).shape
    mad = np.array([np.nan] + [float(consecutive[t]["mad"]) if consecutive[t] is not None else np.nan
                               for t in range(1, n)])

    def stack(lo, hi):
        Bc = np.full((hi - lo,) + shape, np.nan)
        Bs = np.full_like(Bc, np.nan)
        for t in range(lo, hi):
            for lst, out, name, ok in ((consecutive, Bc, "consecutive", t >= 1),
                                       (skip, Bs, "skip", 1 <= t <= n - 2)):
                if ok:
                    m = _as_map(lst[t], name, t)
                    if m.shape != shape:
                        raise InputError(
                            f"{name}[{t}] has a block map of shape {m.shape}, not {shape}: compute every "
                            "pair of a sequence with one block_size on frames of one size"
                        )
                    out[t - lo] = m
        return Bc, Bs

    if n <= _PIECE:
        Bc, Bs = stack(0, n)
        return _decide(Bc, Bs, mad, hist, lsb, o)
    # long sequences: overlapping pieces (every rule looks at most window + 3 frames away)
    margin = int(o.window) + 4
    out = None
    for start in range(0, n, _PIECE):
        lo, hi = max(0, start - margin), min(n, start + _PIECE + margin)
        Bc, Bs = stack(lo, hi)
        r = _decide(Bc, Bs, mad[lo:hi].copy(), hist[lo:hi], lsb, o)
        if out is None:
            out = {k: np.empty((n,), dtype=v.dtype) for k, v in r.items()}
        keep = slice(start - lo, start - lo + min(_PIECE, n - start))
        for k, v in r.items():
            out[k][start:start + min(_PIECE, n - start)] = v[keep]
    return out


def _best_match(patch, frame, r0, c0, radius):
    """How well ``patch`` (at ``r0, c0`` of its frame) is found in ``frame`` within +-``radius``:
    (mean |patch - frame| in place, the best mean at another offset, that offset)."""
    ph, pw = patch.shape
    H, W = frame.shape
    y0, y1 = max(0, r0 - radius), min(H, r0 + ph + radius)
    x0, x1 = max(0, c0 - radius), min(W, c0 + pw + radius)
    windows = np.lib.stride_tricks.sliding_window_view(frame[y0:y1, x0:x1], (ph, pw))  # (oy, ox, ph, pw)
    err = np.abs(windows - patch).mean(axis=(2, 3))
    iy, ix = r0 - y0, c0 - x0
    here = float(err[iy, ix])
    err[iy, ix] = np.inf
    k = int(np.argmin(err))
    oy, ox = divmod(k, err.shape[1])
    return here, float(err.flat[k]), (oy + y0 - r0, ox + x0 - c0)


def check_motion(events: dict, read, *, options=None) -> dict:
    """Clear the corrupt flags that fast motion explains (see ``EventOptions.motion_search``).

    ``events`` is :func:`detect_events`' result (changed in place and returned, with ``motion``:
    True where a flag was cleared); ``read(i)`` gives frame ``i`` (host or device array). Only the
    frames flagged by the one-tile peak rule alone are re-read (three frames each), so the cost
    is a few frames per false alarm, not a pass over the sequence.
    """
    o = options if options is not None else EventOptions()
    corrupt = events["corrupt"]
    motion = np.zeros(len(corrupt), dtype=bool)
    events["motion"] = motion
    if o.motion_search <= 0:
        return events
    b = int(o.block_size)
    for t in np.flatnonzero(corrupt & events["peak_only"]):
        t = int(t)
        try:
            prev, cur, nxt = (np.asarray(_backend.to_host(_gray32(read(i), o.color)), dtype=np.float32)
                              for i in (t - 1, t, t + 1))
        except Exception:  # noqa: BLE001 - an unreadable neighbour: keep the flag
            continue
        H, W = cur.shape
        wb = -(-W // b)
        by, bx = divmod(int(events["spike_at"][t]), wb)
        r0, c0 = by * b, bx * b
        patch = cur[r0 : min(H, r0 + b), c0 : min(W, c0 + b)]  # the spike's tile: deforming limbs still match
        if patch.size == 0 or prev.shape != cur.shape or nxt.shape != cur.shape:
            continue
        found = []
        for other in (prev, nxt):
            here, best, offset = _best_match(patch, other, r0, c0, int(o.motion_search))
            found.append(offset if best <= o.motion_match * here else None)
        if found[0] is not None or found[1] is not None:
            corrupt[t] = False
            motion[t] = True
    return events


def kl_rule(histograms, threshold=0.2) -> np.ndarray:
    """The literature's rule: frame t is suspect when :math:`KL(h_t \\| h_{t-1}) > 0.2`.

    Parameters
    ----------
    histograms : sequence of array_like, each shape (bins,)
        Probability histograms of frames 0 .. N-1 (e.g. ``frame_features(f).histogram``).
    threshold : float
        The KL divergence (nats) above which a frame is flagged.

    Returns
    -------
    ndarray of bool, shape (N,)
        Frame 0 (no previous frame) is never flagged.

    Notes
    -----
    :math:`KL(h_t \\| h_{t-1}) = \\sum_i h_t(i) \\ln(h_t(i) / h_{t-1}(i))` with OpenCV's conventions
    (:func:`gpudiff.pair.kl_divergence`: bins with :math:`h_t(i) = 0` skipped, an empty
    :math:`h_{t-1}(i)` replaced by :math:`10^{-10}`), i.e. ``cv2.compareHist(h_t, h_prev,
    cv2.HISTCMP_KL_DIV)``: the new frame is the first argument.
    """
    if not (np.isfinite(threshold) and threshold >= 0):
        raise ConfigError(f"threshold {threshold!r} must be a finite number >= 0")
    h = [np.asarray(_backend.to_host(x), dtype=np.float64) for x in histograms]
    for t, x in enumerate(h):
        if x.ndim != 1 or x.shape != h[0].shape:
            raise InputError(
                f"histogram {t} has shape {x.shape}, histogram 0 {h[0].shape}: "
                "give 1-D histograms of equal length"
            )
    out = np.zeros(len(h), bool)
    for t in range(1, len(h)):
        out[t] = kl_divergence(h[t], h[t - 1]) > threshold
    return out


def detect_sequence(frames, *, options=None) -> dict:
    """Features and decision for a whole sequence in one call (serial; small sequences, tests).

    Parameters
    ----------
    frames : sequence of ndarray, or a :class:`gpudiff.io.Source`
        Anything with ``len()`` and either indexing or ``read(i)``; frames of one size.
    options : EventOptions, optional

    Returns
    -------
    dict
        As :func:`detect_events`.
    """
    o = options if options is not None else EventOptions()
    read = frames.read if hasattr(frames, "read") else frames.__getitem__
    n = len(frames)
    cache: dict = {}

    def get(i):  # each frame is read once: the last three stay in memory
        if i not in cache:
            cache[i] = read(i)
            cache.pop(i - 3, None)
        return cache[i]

    ff, cons, skip = [], [None] * n, [None] * n
    for t in range(n):
        ff.append(frame_features(get(t), color=o.color))
        if t >= 1:
            cons[t] = pair_features(get(t - 1), get(t), block_size=o.block_size, color=o.color)
        if t >= 2:
            skip[t - 1] = pair_features(get(t - 2), get(t), block_size=o.block_size, color=o.color)
    return check_motion(detect_events(ff, cons, skip, options=o), read, options=o)
