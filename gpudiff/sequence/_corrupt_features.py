"""The features of :mod:`._corrupt`, the part that runs on the device (NumPy or CuPy, against ``xp``).

:func:`frame_features` for every frame (the 256-bin grey histogram) and :func:`pair_features` for
every consecutive pair ``(t-1, t)`` and every skip-one pair ``(t-1, t+1)`` (the block map of the
mean absolute grey difference and a few scalars), computed anywhere, in any order; only these small
results leave the device. :func:`gpudiff.sequence._corrupt.detect_events` decides from them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import backend as _backend
from ..errors import ConfigError, InputError
from ..pair._preprocess import to_gray

__all__ = ["HIST_BINS", "FrameFeatures", "frame_features", "pair_features"]

#: Bins of the grey histogram of :func:`frame_features`, over the frame dtype's whole range.
HIST_BINS = 256
_GRAY_MODES = ("gray", "luma")


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
