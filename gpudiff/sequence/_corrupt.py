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

This module is the detector (:func:`detect_events`, :func:`check_motion`, :func:`detect_sequence`,
the KL baseline :func:`kl_rule`) and the place its public names come from; the parts live in:

- ``_corrupt_features``: :func:`frame_features`, :func:`pair_features` (on the device);
- ``_corrupt_options``: :class:`EventOptions`;
- ``_corrupt_rules``: the rules on the stacked features (host NumPy), step by step.
"""

from __future__ import annotations

import numpy as np

from .. import backend as _backend
from ..errors import ConfigError, InputError
from ..pair._histograms import kl_divergence
from ._corrupt_features import HIST_BINS, FrameFeatures, _gray32, frame_features, pair_features
from ._corrupt_options import EventOptions
from ._corrupt_rules import _RESULT_KEYS, _decide, _merged_bins

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

#: Frames per piece when :func:`detect_events` works through a long sequence piecewise.
_PIECE = 1024


def _as_map(p, name, t):
    if not isinstance(p, dict) or "block_mad" not in p:
        raise InputError(
            f"{name}[{t}] is {type(p).__name__}, not a pair_features dict: compute it with pair_features"
        )
    return np.asarray(_backend.to_host(p["block_mad"]), dtype=np.float64)


def _stacked_maps(consecutive, skip, lo, hi, shape):
    """The block maps of frames [lo, hi) stacked: ``Bc[t - lo]`` of (t-1, t), ``Bs[t - lo]`` of
    (t-1, t+1) (NaN where undefined), each checked to be a pair_features dict of ``shape``."""
    n = len(consecutive)
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

    if n <= _PIECE:
        Bc, Bs = _stacked_maps(consecutive, skip, 0, n, shape)
        return _decide(Bc, Bs, mad, hist, lsb, o)
    # long sequences: overlapping pieces (every rule looks at most window + 3 frames away)
    margin = int(o.window) + 4
    out = None
    for start in range(0, n, _PIECE):
        lo, hi = max(0, start - margin), min(n, start + _PIECE + margin)
        Bc, Bs = _stacked_maps(consecutive, skip, lo, hi, shape)
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
