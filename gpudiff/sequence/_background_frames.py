"""Frames into the coordinates of :mod:`._background`'s model: the checks a frame must pass, the
camera's drift between frames (:func:`estimate_shift`, by phase correlation), the window of a
translated frame that a model (whole or one tile) reads (:func:`_window`, elementwise, so a tile
gets the whole frame's bits), and the way back for a mask (:func:`mask_to_frame`)."""

from __future__ import annotations

import math

import numpy as np

from ..backend import get_namespace
from ..errors import InputError
from ._background_options import BackgroundOptions

__all__ = ["estimate_shift", "mask_to_frame", "labels_to_frame"]


def _check_frame(frame):
    ndim = getattr(frame, "ndim", None)
    shape = tuple(getattr(frame, "shape", ()))
    if ndim not in (2, 3) or 0 in shape:
        raise InputError(
            f"frame has shape {shape}: give a non-empty (H, W) grey or (H, W, C) colour frame"
        )
    kind = frame.dtype.kind
    if kind not in "uif":
        raise InputError(f"frame has dtype {frame.dtype}: give an integer or floating-point frame")


def _default_range(dtype) -> float:
    return float(np.iinfo(dtype).max) if dtype.kind in "ui" else 1.0


def _check_shift(shift) -> tuple[float, float]:
    try:
        dy, dx = (float(s) for s in shift)
    except (TypeError, ValueError):
        raise InputError(f"shift={shift!r} must be a pair (dy, dx) of numbers") from None
    if not (math.isfinite(dy) and math.isfinite(dx)):
        raise InputError(f"shift={shift!r} must be finite")
    return dy, dx


def _taps(d: float) -> list[tuple[int, float]]:
    """Bilinear taps along one axis for a translation by ``d``: ``out[r] = sum w * f[r - o]``."""
    i = math.floor(d)
    f = d - i
    if f < 1e-9:
        return [(i, 1.0)]
    if f > 1 - 1e-9:
        return [(i + 1, 1.0)]
    return [(i, 1.0 - f), (i + 1, f)]


def _to_model_units(block, chans: int, out_c: int, scale: float, xp):
    """A block of the frame as float32 ``(h, w, out_c)`` divided by ``scale``: channel-last, the
    ``chans`` channels averaged to grey (a plain sum, then one division) when ``out_c`` is 1."""
    f32 = xp.float32
    if block.ndim == 2:
        block = block[:, :, None]
    block = block.astype(f32)
    if out_c == 1 and chans > 1:
        g = block[:, :, 0]
        for c in range(1, chans):
            g = g + block[:, :, c]
        block = (g / f32(chans))[:, :, None]
    return block / f32(scale)


def _bilinear(buf, have, ty, tx, h: int, w: int, xp):
    """The ``h`` x ``w`` window of the buffer translated by the taps ``ty`` x ``tx``
    (:func:`_taps`), and where every tap it sums has data (``have``)."""
    f32 = xp.float32
    oy_hi, ox_hi = ty[-1][0], tx[-1][0]
    x = None
    valid = None
    for oy, wy in ty:
        for ox, wx in tx:
            # out[r] = f[r - o]: out row Y0 + i -> buffer row (Y0 + i - oy) - sy0 = i + oy_hi - oy
            ry, rx = oy_hi - oy, ox_hi - ox
            term = buf[ry : ry + h, rx : rx + w]
            ok = have[ry : ry + h, rx : rx + w]
            wgt = wy * wx
            if wgt != 1.0:
                term = term * f32(wgt)
            x = term if x is None else x + term
            valid = ok if valid is None else valid & ok
    return x, valid


def _window(frame, outer, shift, xp, scale: float, color: str):
    """The frame translated by ``shift`` into model coordinates, over ``outer``, as float32 scaled
    by ``1 / scale`` (channel-last), and a bool mask of the pixels it covers (finite data).

    ``out[r, c] = sum_{taps} wy * wx * frame[r - oy, c - ox]`` (each product and sum a separate
    elementwise op in a fixed order, so any window of the frame gets the same bits).
    """
    H, W = frame.shape[:2]
    Y0, Y1, X0, X1 = outer
    h, w = Y1 - Y0, X1 - X0
    ty, tx = _taps(shift[0]), _taps(shift[1])
    oy_lo, oy_hi = ty[0][0], ty[-1][0]
    ox_lo, ox_hi = tx[0][0], tx[-1][0]
    # source rows/cols needed: [Y0 - oy_hi, Y1 - oy_lo)
    sy0, sy1 = Y0 - oy_hi, Y1 - oy_lo
    sx0, sx1 = X0 - ox_hi, X1 - ox_lo
    cy0, cy1 = max(sy0, 0), min(sy1, H)
    cx0, cx1 = max(sx0, 0), min(sx1, W)
    bh, bw = sy1 - sy0, sx1 - sx0
    f32 = xp.float32

    if frame.ndim == 2:
        chans = 1
    else:
        chans = frame.shape[2]
    out_c = chans if color == "channels" else 1

    if len(ty) == 1 and len(tx) == 1 and (cy0, cy1, cx0, cx1) == (sy0, sy1, sx0, sx1):
        # whole-pixel shift, source inside the frame: no padding buffer, no copy
        x = _to_model_units(xp.asarray(frame[sy0:sy1, sx0:sx1]), chans, out_c, scale, xp)
        valid = xp.ones((h, w), dtype=bool)
        if frame.dtype.kind == "f":
            fin = xp.isfinite(x)
            valid = xp.all(fin, axis=2)
            x = xp.where(fin, x, f32(0))
        return (x[:, :, 0] if out_c == 1 else x), valid

    buf = xp.zeros((bh, bw, out_c), dtype=f32)
    have = xp.zeros((bh, bw), dtype=bool)
    if cy0 < cy1 and cx0 < cx1:
        # only this window goes to the device
        block = _to_model_units(xp.asarray(frame[cy0:cy1, cx0:cx1]), chans, out_c, scale, xp)
        by, bx = cy0 - sy0, cx0 - sx0
        buf[by : by + (cy1 - cy0), bx : bx + (cx1 - cx0)] = block
        have[by : by + (cy1 - cy0), bx : bx + (cx1 - cx0)] = True
        if frame.dtype.kind == "f":
            fin = xp.isfinite(buf)
            have &= xp.all(fin, axis=2)
            buf = xp.where(fin, buf, f32(0))

    x, valid = _bilinear(buf, have, ty, tx, h, w, xp)
    return (x[:, :, 0] if out_c == 1 else x), valid


def _to_gray_f32(frame, xp):
    f = xp.asarray(frame)
    if f.ndim == 2:
        return f.astype(xp.float32)
    g = f[..., 0].astype(xp.float32)
    for c in range(1, f.shape[2]):
        g = g + f[..., c].astype(xp.float32)
    return g / xp.float32(f.shape[2])


def estimate_shift(reference, frame, *, options: BackgroundOptions | None = None) -> tuple[float, float]:
    """The translation that brings ``frame`` into ``reference``'s coordinates.

    Parameters
    ----------
    reference, frame : (H, W) or (H, W, C) array
        Whole frames (colour is averaged to grey), NumPy or CuPy.
    options : BackgroundOptions, optional
        ``upsample_factor`` sets the precision.

    Returns
    -------
    (dy, dx) : tuple of float
        ``reference[r, c]`` corresponds to ``frame[r - dy, c - dx]`` (scikit-image's
        ``phase_cross_correlation`` convention), the value ``BackgroundModel.update(frame,
        shift=...)`` takes.

    Notes
    -----
    :func:`gpudiff.pair.phase_cross_correlation` on the grey frames; (0, 0) when
    :func:`gpudiff.pair.alignment_problem` distrusts the estimate (significance below the floor, or
    past a quarter of the frame). Computed once per frame on the whole frame, then handed to every
    tile's model.
    """
    from ..pair._align import alignment_problem, phase_cross_correlation  # noqa: PLC0415

    options = options or BackgroundOptions()
    _check_frame(reference)
    _check_frame(frame)
    if tuple(reference.shape[:2]) != tuple(frame.shape[:2]):
        raise InputError(
            f"frame has shape {tuple(frame.shape)} but the reference has {tuple(reference.shape)}: "
            "all frames of a sequence must have one size"
        )
    xp = get_namespace(reference, frame)
    ref = _to_gray_f32(reference, xp)
    a = phase_cross_correlation(ref, _to_gray_f32(frame, xp), upsample_factor=options.upsample_factor)
    if alignment_problem(a, ref.shape) is not None:
        return 0.0, 0.0  # not a trustworthy registration (compare.py's floor): leave the frame as it is
    return float(a.shift[0]), float(a.shift[1])


def mask_to_frame(mask, shift):
    """Carry a mask from model coordinates back to the frame's own pixel grid.

    Parameters
    ----------
    mask : (H, W) bool array
        A whole-frame mask in model coordinates (what ``update`` reports, stitched from tiles).
    shift : (dy, dx)
        The shift the frame was given (``estimate_shift``); rounded to whole pixels.

    Returns
    -------
    (H, W) bool array
        ``out[r, c] = mask[r + dy, c + dx]``, False where that falls outside the model.

    Notes
    -----
    The inverse of the translation ``update`` applies (model ``[r, c]`` = frame ``[r - dy, c - dx]``),
    to nearest pixel. Ground truth drawn on the input frames (CDnet) is compared with this.
    """
    dy, dx = _check_shift(shift)
    if getattr(mask, "ndim", None) != 2:
        raise InputError(f"mask has shape {tuple(getattr(mask, 'shape', ()))}: give a 2-D (H, W) mask")
    xp = get_namespace(mask)
    iy, ix = int(math.floor(dy + 0.5)), int(math.floor(dx + 0.5))
    H, W = mask.shape
    out = xp.zeros((H, W), dtype=bool)
    r0, r1 = max(0, -iy), min(H, H - iy)
    c0, c1 = max(0, -ix), min(W, W - ix)
    if r0 < r1 and c0 < c1:
        out[r0:r1, c0:c1] = mask[r0 + iy : r1 + iy, c0 + ix : c1 + ix]
    return out


def labels_to_frame(labels, shift):
    """:func:`mask_to_frame` for a label map: ``out[r, c] = labels[r + dy, c + dx]``, 170
    (unknown) where that falls outside the model.

    Parameters
    ----------
    labels : (H, W) uint8 array
        A whole-frame label map in model coordinates (``update(..., labels=True)``).
    shift : (dy, dx)
        The shift the frame was given; rounded to whole pixels as :func:`mask_to_frame` does.

    Returns
    -------
    (H, W) uint8 array
    """
    from ._background_shadows import LABEL_UNKNOWN  # noqa: PLC0415

    dy, dx = _check_shift(shift)
    if getattr(labels, "ndim", None) != 2:
        raise InputError(
            f"labels has shape {tuple(getattr(labels, 'shape', ()))}: give a 2-D (H, W) label map"
        )
    xp = get_namespace(labels)
    iy, ix = int(math.floor(dy + 0.5)), int(math.floor(dx + 0.5))
    H, W = labels.shape
    out = xp.full((H, W), LABEL_UNKNOWN, dtype=xp.uint8)
    r0, r1 = max(0, -iy), min(H, H - iy)
    c0, c1 = max(0, -ix), min(W, W - ix)
    if r0 < r1 and c0 < c1:
        out[r0:r1, c0:c1] = labels[r0 + iy : r1 + iy, c0 + ix : c1 + ix]
    return out
