"""Per-pixel background subtraction: a running mean and variance per pixel, foreground where a pixel
is more than ``k`` standard deviations from its mean.

Written once against the array namespace ``xp`` (NumPy or CuPy). The model is *pointwise*: every
update is a chain of elementwise IEEE float32 operations (no reductions, no fused kernels), decided
only by the pixel itself, so

* NumPy and CuPy compute the same bits, and
* a model run on one tile of the frame holds exactly the values the whole-frame model holds there.

Only the optional morphological clean-up of the *reported* mask looks at neighbours; it reaches
``options.halo`` pixels, so a tile run with that halo and cropped (:class:`Tile`,
:func:`plan_tiles`, ``BackgroundModel(tile=...)``) reports exactly the whole frame's mask.

Typical use::

    model = BackgroundModel(options=BackgroundOptions())
    for frame in frames:                      # (H, W) or (H, W, 3), uint8/uint16/float
        mask = model.update(frame)            # bool (H, W), True = foreground

    masks, fractions = background_subtract(frames, options=BackgroundOptions(align=True))

Tiled (one model per tile carried through time; alignment needs the whole frame, so the shift is
estimated once per frame and given to every tile)::

    tiles = plan_tiles(frame_shape, (256, 256), halo=options.halo)
    models = [BackgroundModel(options=options, tile=t) for t in tiles]
    for frame in frames:
        shift = estimate_shift(first_frame, frame, options=options) if options.align else None
        for t, m in zip(tiles, models):
            out[t.core_slices] = m.update(frame, shift=shift)
        if options.align:
            out = mask_to_frame(out, shift)   # from the model's grid to the frame's own
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Iterable

import numpy as np

from ..backend import get_namespace, to_host
from ..errors import ConfigError, InputError

__all__ = [
    "BackgroundOptions",
    "BackgroundState",
    "BackgroundModel",
    "Tile",
    "plan_tiles",
    "estimate_shift",
    "mask_to_frame",
    "background_subtract",
]

_COLORS = ("gray", "channels")


# ----------------------------------------------------------------------------------------------
# options


def _is_number(v) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_))


def _is_whole(v) -> bool:
    return _is_number(v) and math.isfinite(float(v)) and float(v).is_integer()


@dataclass(frozen=True)
class BackgroundOptions:
    """How the per-pixel background model is run. Immutable; hashable; :meth:`to_dict` for a store.

    Parameters
    ----------
    k : float
        A pixel is foreground where ``|x - mean| > k * max(std, min_std)``.
    min_std : float
        Floor on the standard deviation, as a fraction of the data range (see ``data_range``):
        0.04 is about 10 grey levels of a uint8 image. It keeps perfectly still pixels (std -> 0)
        from flagging sensor noise and JPEG artefacts.
    learning_rate : float
        Weight of a new frame in the running mean and variance of a background pixel, in (0, 1]
        (an exponential moving average with a memory of about ``1 / learning_rate`` frames).
        1 makes the model the previous background frame.
    foreground_learning_rate : float
        The same for a pixel currently classified foreground, in [0, 1]. 0 (the default) is the
        classic *selective update*: the model learns only from background.
    init_frames : int
        Each pixel's mean and variance are first the plain mean and (population) variance of its
        first ``init_frames`` valid frames; it is classified (can be foreground) only after that.
    cleanup_radius : int
        Radius of the disk used to clean the reported mask: a binary opening (removes specks) then
        a closing (fills small holes). 0 reports the raw mask. The model never sees the clean-up.
    color : {'gray', 'channels'}
        ``'gray'``: a colour frame is reduced to the plain mean of its channels first (one model
        per pixel). ``'channels'``: one model per channel; a pixel is foreground when *any*
        channel is outside its ``k``-sigma band, and all its channels are updated together.
        Grey frames are the same under both.
    align : bool
        Compensate camera jitter: each frame is translated into the coordinates of the first
        frame (shift by phase correlation, :func:`estimate_shift`) before it meets the model;
        pixels the translated frame does not cover are neither updated nor reported.
    upsample_factor : int
        Precision of the alignment shift, ``1 / upsample_factor`` pixel. 1: whole-pixel shifts
        (the frame is moved by slicing, no interpolation); > 1: bilinear interpolation.
    data_range : float or None
        The intensity scale that ``min_std`` is a fraction of; None takes the dtype's maximum for
        integer frames (255 for uint8, 65535 for uint16) and 1.0 for floating-point frames.

    Notes
    -----
    Defaults chosen by measurement on the CDnet 2014 ``cameraJitter/traffic`` frames 950-1050
    (CDnet F-measure over all 101 frames; ``python benchmarks/background_eval.py --sweep`` prints
    the table, one option changed at a time). With these defaults F = 0.789 (0.844 with
    ``align``), against 0.465 for OpenCV's MOG2 and 0.362 for its KNN with their defaults.

    * ``k``, ``min_std``, ``learning_rate``: with ``align`` F stays within 0.01 for ``k`` 3-4,
      ``min_std`` 0.03-0.05 (8-13 grey levels) and ``learning_rate`` 0.02-0.2. Without it the
      optimum is sharper (the shaking camera drags edges across pixels): ``k`` 2.5 loses 0.16,
      ``min_std`` 0.02 loses 0.27, ``learning_rate`` 0.01 loses 0.11; 4 / 0.05 / 0.1 gain 0.007-0.015.
    * ``init_frames`` 3: a longer initialisation averages the cars that pass into the mean (a
      truck enters at frame 952 here): 10 frames lose 0.09-0.11, 30 frames 0.23-0.27; 1 is
      equal within 0.01 but leaves a zero variance (the floor alone) at the start.
    * ``cleanup_radius`` 2: +0.08 over 0 and +0.04 over 1 (without ``align``; +0.02 / +0.01
      with it). 3 adds 0.03 / 0.00 more but erases objects thinner than 7 pixels and needs a
      12-pixel halo.
    * ``color`` 'channels': +0.006 / +0.015 over 'gray' (a car of another hue but the same grey),
      for three times the state and about twice the elementwise work.
    * ``foreground_learning_rate`` 0: 0.005 changes F by +0.02 / -0.01; 0.02 loses 0.2 (cars
      waiting in traffic are absorbed).
    * ``upsample_factor`` 1: subpixel alignment leaves F unchanged to 3 decimals here (the
      jitter comes with motion blur wider than a pixel).
    * ``align`` off: it costs a whole-frame FFT per frame and pays off only with a moving camera
      (here +0.055, the largest single gain).
    """

    k: float = 3.5
    min_std: float = 0.04
    learning_rate: float = 0.05
    foreground_learning_rate: float = 0.0
    init_frames: int = 3
    cleanup_radius: int = 2
    color: str = "channels"
    align: bool = False
    upsample_factor: int = 1
    data_range: float | None = None

    def __post_init__(self):
        if not (_is_number(self.k) and math.isfinite(float(self.k)) and self.k > 0):
            raise ConfigError(f"k={self.k!r} must be a finite number > 0 (e.g. 3.5)")
        if not (_is_number(self.min_std) and math.isfinite(float(self.min_std)) and self.min_std >= 0):
            raise ConfigError(
                f"min_std={self.min_std!r} must be a finite number >= 0 (a fraction of the data range, "
                "e.g. 0.04)"
            )
        if not (_is_number(self.learning_rate) and 0 < self.learning_rate <= 1):
            raise ConfigError(f"learning_rate={self.learning_rate!r} must be in (0, 1] (e.g. 0.05)")
        if not (_is_number(self.foreground_learning_rate) and 0 <= self.foreground_learning_rate <= 1):
            raise ConfigError(
                f"foreground_learning_rate={self.foreground_learning_rate!r} must be in [0, 1] "
                "(0 = learn from background only)"
            )
        if not (_is_whole(self.init_frames) and self.init_frames >= 1):
            raise ConfigError(f"init_frames={self.init_frames!r} must be a whole number >= 1")
        if not (_is_whole(self.cleanup_radius) and self.cleanup_radius >= 0):
            raise ConfigError(
                f"cleanup_radius={self.cleanup_radius!r} must be a whole number >= 0 (0 = no clean-up)"
            )
        if self.color not in _COLORS:
            raise ConfigError(f"color={self.color!r} is not one of {', '.join(_COLORS)}")
        if not isinstance(self.align, (bool, np.bool_)):
            raise ConfigError(f"align={self.align!r} must be True or False")
        if not (_is_whole(self.upsample_factor) and self.upsample_factor >= 1):
            raise ConfigError(f"upsample_factor={self.upsample_factor!r} must be a whole number >= 1")
        if self.data_range is not None and not (
            _is_number(self.data_range) and math.isfinite(float(self.data_range)) and self.data_range > 0
        ):
            raise ConfigError(
                f"data_range={self.data_range!r} must be a finite number > 0, or None to take it "
                "from the dtype"
            )
        object.__setattr__(self, "init_frames", int(self.init_frames))
        object.__setattr__(self, "cleanup_radius", int(self.cleanup_radius))
        object.__setattr__(self, "upsample_factor", int(self.upsample_factor))
        object.__setattr__(self, "align", bool(self.align))

    @property
    def halo(self) -> int:
        """Pixels of context a tile needs on each side for its cleaned mask to equal the whole
        frame's: opening then closing with a radius-``r`` disk is four passes of reach ``r``."""
        return 4 * self.cleanup_radius

    def to_dict(self) -> dict:
        return asdict(self)


# ----------------------------------------------------------------------------------------------
# tiles


@dataclass(frozen=True)
class Tile:
    """A region of the frame a model covers.

    ``core`` = ``(y0, y1, x0, x1)`` is the part whose mask the tile reports; ``outer`` is the core
    grown by the halo (clipped to the frame): the model's state covers ``outer``.
    """

    core: tuple[int, int, int, int]
    outer: tuple[int, int, int, int]

    @property
    def core_slices(self) -> tuple[slice, slice]:
        """Where the tile's mask goes in the frame."""
        y0, y1, x0, x1 = self.core
        return slice(y0, y1), slice(x0, x1)

    @property
    def crop(self) -> tuple[slice, slice]:
        """The core inside the outer window."""
        (y0, y1, x0, x1), (oy, _, ox, _) = self.core, self.outer
        return slice(y0 - oy, y1 - oy), slice(x0 - ox, x1 - ox)

    @property
    def outer_shape(self) -> tuple[int, int]:
        y0, y1, x0, x1 = self.outer
        return y1 - y0, x1 - x0


def _whole(frame_shape) -> Tile:
    h, w = frame_shape[:2]
    return Tile((0, h, 0, w), (0, h, 0, w))


def plan_tiles(frame_shape, tile_shape, *, halo: int = 0) -> list[Tile]:
    """Split a frame into tiles (row-major), each with its halo clipped to the frame.

    Parameters
    ----------
    frame_shape : tuple of int
        ``(H, W)`` or ``(H, W, C)``.
    tile_shape : tuple of int
        ``(th, tw)``, the core size; the last row/column of tiles may be smaller.
    halo : int, optional
        Context on each side, usually ``options.halo``.

    Returns
    -------
    list of Tile
    """
    if len(frame_shape) not in (2, 3) or not all(_is_whole(s) and s >= 1 for s in frame_shape):
        raise InputError(f"frame_shape={tuple(frame_shape)!r} must be (H, W) or (H, W, C) of positive sizes")
    if len(tile_shape) != 2 or not all(_is_whole(s) and s >= 1 for s in tile_shape):
        raise ConfigError(f"tile_shape={tuple(tile_shape)!r} must be two whole numbers >= 1")
    if not (_is_whole(halo) and halo >= 0):
        raise ConfigError(f"halo={halo!r} must be a whole number >= 0")
    h, w = int(frame_shape[0]), int(frame_shape[1])
    th, tw, halo = int(tile_shape[0]), int(tile_shape[1]), int(halo)
    tiles = []
    for y0 in range(0, h, th):
        for x0 in range(0, w, tw):
            y1, x1 = min(y0 + th, h), min(x0 + tw, w)
            outer = (max(y0 - halo, 0), min(y1 + halo, h), max(x0 - halo, 0), min(x1 + halo, w))
            tiles.append(Tile((y0, y1, x0, x1), outer))
    return tiles


# ----------------------------------------------------------------------------------------------
# frames


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

    def prepared(block):
        if block.ndim == 2:
            block = block[:, :, None]
        block = block.astype(f32)
        if out_c == 1 and chans > 1:
            g = block[:, :, 0]
            for c in range(1, chans):
                g = g + block[:, :, c]
            block = (g / f32(chans))[:, :, None]
        return block / f32(scale)

    if len(ty) == 1 and len(tx) == 1 and (cy0, cy1, cx0, cx1) == (sy0, sy1, sx0, sx1):
        # whole-pixel shift, source inside the frame: no padding buffer, no copy
        x = prepared(xp.asarray(frame[sy0:sy1, sx0:sx1]))
        valid = xp.ones((h, w), dtype=bool)
        if frame.dtype.kind == "f":
            fin = xp.isfinite(x)
            valid = xp.all(fin, axis=2)
            x = xp.where(fin, x, f32(0))
        return (x[:, :, 0] if out_c == 1 else x), valid

    buf = xp.zeros((bh, bw, out_c), dtype=f32)
    have = xp.zeros((bh, bw), dtype=bool)
    if cy0 < cy1 and cx0 < cx1:
        block = prepared(xp.asarray(frame[cy0:cy1, cx0:cx1]))  # only this window goes to the device
        by, bx = cy0 - sy0, cx0 - sx0
        buf[by : by + (cy1 - cy0), bx : bx + (cx1 - cx0)] = block
        have[by : by + (cy1 - cy0), bx : bx + (cx1 - cx0)] = True
        if frame.dtype.kind == "f":
            fin = xp.isfinite(buf)
            have &= xp.all(fin, axis=2)
            buf = xp.where(fin, buf, f32(0))

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


# ----------------------------------------------------------------------------------------------
# the model


@dataclass
class BackgroundState:
    """The model of one window (the whole frame or a tile with its halo), as ``xp`` arrays.

    Attributes
    ----------
    mean, var : array, float32, (h, w) or (h, w, C)
        Per pixel (and channel with ``color='channels'``) running mean and variance, in units of
        the data range.
    count : array, int32, (h, w)
        Valid frames folded into the initial estimate, saturating at ``init_frames``; a pixel is
        classified once ``count == init_frames``.
    frames : int
        Frames given to ``update``.
    """

    mean: Any
    var: Any
    count: Any
    frames: int = 0


def _morph(mask, r: int, erode: bool, xp):
    """Binary erosion (``erode``) or dilation of ``mask`` by the disk ``dy**2 + dx**2 <= r**2``.

    Outside the image counts as foreground for an erosion and as background for a dilation, so
    the border neither eats nor grows objects. Built from shifted slices: first the horizontal
    runs of half-width ``w`` (AND/OR of ``2w + 1`` neighbours), then, for each row offset ``dy``,
    the run of half-width ``isqrt(r**2 - dy**2)`` from that row: ``4 r`` elementwise ops, the same
    as ``scipy.ndimage.binary_erosion(mask, disk, border_value=1)`` (``binary_dilation`` with
    ``border_value=0``) at a fraction of the cost.
    """
    H, W = mask.shape
    op = xp.logical_and if erode else xp.logical_or
    p = xp.full((H + 2 * r, W + 2 * r), erode, dtype=bool)
    p[r : r + H, r : r + W] = mask
    runs = [p[:, r : r + W]]
    for w in range(1, r + 1):
        runs.append(op(op(runs[-1], p[:, r - w : r - w + W]), p[:, r + w : r + w + W]))
    out = None
    for dy in range(-r, r + 1):
        term = runs[math.isqrt(r * r - dy * dy)][r + dy : r + dy + H]
        out = term if out is None else op(out, term)
    return out


class BackgroundModel:
    """A per-pixel running Gaussian background model, streaming one frame at a time.

    Parameters
    ----------
    options : BackgroundOptions, optional
    tile : Tile, optional
        Model only this tile of the frame (state over ``tile.outer``, masks over ``tile.core``).
        Frames are still given whole; only the tile's window is read (and copied to the device).
        None: the whole frame.
    xp : module, optional
        numpy or cupy, where the state lives; None takes the namespace of the first frame.

    Notes
    -----
    For each pixel with value :math:`x` (grey, or each channel; scaled by the data range) the
    model keeps a mean :math:`\\mu` and a variance :math:`\\sigma^2`. With :math:`d = x - \\mu`
    the pixel is foreground when

    .. math:: d^2 > k^2 \\max(\\sigma^2, \\sigma_{min}^2)

    (any channel, with ``color='channels'``), evaluated in float32 after the pixel's first
    ``init_frames`` valid frames; before that it is background. Then, with a per-pixel rate
    :math:`\\alpha`,

    .. math:: \\mu \\leftarrow \\mu + \\alpha d, \\qquad
              \\sigma^2 \\leftarrow (1 - \\alpha)(\\sigma^2 + \\alpha d^2),

    where :math:`\\alpha = 1/n` for the :math:`n`-th valid frame of the initialisation (this is
    Welford's running mean and population variance), ``learning_rate`` for a background pixel,
    ``foreground_learning_rate`` for a foreground pixel (raw mask, before clean-up) and 0 where
    the aligned frame has no data. With a constant :math:`\\alpha` it is the exponentially
    weighted mean and variance (T. Finch, "Incremental calculation of weighted mean and
    variance", 2009), i.e. the running Gaussian average of Wren et al. (Pfinder, IEEE PAMI
    19(7), 1997) with the selective update of Koller et al. (1994).

    The reported mask is the raw one cleaned by an opening then a closing with a disk of radius
    ``cleanup_radius`` (erosion treats outside the image as foreground, dilation as background,
    so the image border neither erodes nor grows objects) and set False where the frame has no
    data.
    """

    def __init__(self, *, options: BackgroundOptions | None = None, tile: Tile | None = None, xp=None):
        if options is None:
            options = BackgroundOptions()
        if not isinstance(options, BackgroundOptions):
            raise ConfigError(f"options must be a BackgroundOptions, not {type(options).__name__}")
        if tile is not None and not isinstance(tile, Tile):
            raise ConfigError(f"tile must be a Tile (see plan_tiles), not {type(tile).__name__}")
        self.options = options
        self.tile = tile
        self.xp = xp
        self.state: BackgroundState | None = None
        self.frame_shape: tuple[int, ...] | None = None
        self.frame_dtype = None
        self.scale: float | None = None
        self.reference = None  # whole first frame, for alignment without a given shift

    # ---- inspection
    @property
    def mean(self):
        """Per-pixel mean over the model's window, in the frame's intensity units."""
        return None if self.state is None else self.state.mean * self.xp.float32(self.scale)

    @property
    def std(self):
        """Per-pixel standard deviation over the model's window, in the frame's intensity units."""
        if self.state is None:
            return None
        return self.xp.sqrt(self.state.var) * self.xp.float32(self.scale)

    @property
    def initialized(self):
        """Bool (h, w) over the model's window: pixels past their initialisation."""
        return None if self.state is None else self.state.count >= self.options.init_frames

    # ---- internals
    def _start(self, frame):
        _check_frame(frame)
        if self.xp is None:
            self.xp = get_namespace(frame)
        xp = self.xp
        self.frame_shape = tuple(int(s) for s in frame.shape)
        self.frame_dtype = frame.dtype
        self.scale = float(self.options.data_range or _default_range(frame.dtype))
        if self.tile is None:
            self.tile = _whole(self.frame_shape)
        H, W = self.frame_shape[:2]
        (cy0, cy1, cx0, cx1), (oy0, oy1, ox0, ox1) = self.tile.core, self.tile.outer
        if not (0 <= oy0 <= cy0 < cy1 <= oy1 <= H and 0 <= ox0 <= cx0 < cx1 <= ox1 <= W):
            raise InputError(
                f"tile {self.tile} does not fit a frame of shape {self.frame_shape}: plan tiles "
                "with plan_tiles(frame.shape, ...)"
            )
        h, w = self.tile.outer_shape
        chans = self.frame_shape[2] if len(self.frame_shape) == 3 else 1
        chans = chans if (self.options.color == "channels" and chans > 1) else 0
        shape = (h, w, chans) if chans else (h, w)
        self.state = BackgroundState(
            mean=xp.zeros(shape, dtype=xp.float32),
            var=xp.zeros(shape, dtype=xp.float32),
            count=xp.zeros((h, w), dtype=xp.int32),
        )
        if self.options.align and self.tile.outer == (0, H, 0, W):
            self.reference = _to_gray_f32(frame, xp)  # once, on the model's device

    def _check(self, frame, shift):
        if self.state is None:
            self._start(frame)
        else:
            _check_frame(frame)
            if tuple(frame.shape) != self.frame_shape:
                raise InputError(
                    f"frame has shape {tuple(frame.shape)} but the model was started on "
                    f"{self.frame_shape}: give frames of one shape (or start a new model)"
                )
            if self.options.data_range is None and frame.dtype != self.frame_dtype:
                raise InputError(
                    f"frame has dtype {frame.dtype} but the model was started on {self.frame_dtype}: "
                    "convert the frames to one dtype or set BackgroundOptions(data_range=...)"
                )
        if shift is not None:
            return _check_shift(shift)
        if not self.options.align:
            return 0.0, 0.0
        if self.reference is None:
            raise ConfigError(
                "align=True on a tile model needs the frame's shift: compute it once per frame with "
                "estimate_shift(first_frame, frame) and pass update(frame, shift=...)"
            )
        return estimate_shift(self.reference, frame, options=self.options)

    def _raw(self, frame, shift):
        """Prepared window, valid mask, deviation d, d**2 and the raw foreground mask."""
        xp, o, st = self.xp, self.options, self.state
        f32 = xp.float32
        x, valid = _window(frame, self.tile.outer, shift, xp, self.scale, o.color)
        d = x - st.mean
        d2 = d * d
        thr = f32(o.k * o.k) * xp.maximum(st.var, f32(o.min_std * o.min_std))
        out = d2 > thr
        if out.ndim == 3:  # any channel (an OR chain: cheaper than xp.any over a short axis)
            chans = out
            out = chans[:, :, 0]
            for c in range(1, chans.shape[2]):
                out = out | chans[:, :, c]
        ready = st.count >= o.init_frames
        raw = out & ready & valid
        return x, valid, ready, d, d2, raw

    def _report(self, raw, valid):
        r = self.options.cleanup_radius
        mask = raw
        if r > 0:
            xp = self.xp
            mask = _morph(_morph(mask, r, True, xp), r, False, xp)  # opening
            mask = _morph(_morph(mask, r, False, xp), r, True, xp)  # closing
            mask = mask & valid
        return mask[self.tile.crop]

    # ---- public
    def update(self, frame, *, shift=None):
        """Classify ``frame`` against the model, then fold it into the model.

        Parameters
        ----------
        frame : (H, W) or (H, W, C) array
            The whole frame (NumPy or CuPy; uint8, uint16 or float), the same shape every call.
        shift : (dy, dx), optional
            Translation into model coordinates (``estimate_shift``); None: estimated against the
            first frame when ``options.align`` (whole-frame models only), else no translation.

        Returns
        -------
        mask : bool array (h, w)
            Foreground over the tile's core (the whole frame without a tile), on ``xp``, in model
            coordinates (with a shift: the first frame's grid; :func:`mask_to_frame` carries a
            whole mask back to the frame's own grid). False for pixels still initialising and
            where the shifted frame has no data.
        """
        shift = self._check(frame, shift)
        xp, o, st = self.xp, self.options, self.state
        f32 = xp.float32
        x, valid, ready, d, d2, raw = self._raw(frame, shift)
        n = (st.count + 1).astype(f32)
        alpha = xp.where(raw, f32(o.foreground_learning_rate), f32(o.learning_rate))
        alpha = xp.where(ready, alpha, f32(1) / n)
        alpha = xp.where(valid, alpha, f32(0))
        if d.ndim == 3:
            alpha = alpha[:, :, None]
        st.mean = st.mean + alpha * d
        st.var = (f32(1) - alpha) * (st.var + alpha * d2)
        st.count = xp.where(valid & ~ready, st.count + 1, st.count)
        st.frames += 1
        return self._report(raw, valid)

    def classify(self, frame, *, shift=None):
        """The mask ``update`` would report for ``frame``, without changing the model."""
        if self.state is None:
            raise ConfigError("the model has seen no frame yet: call update() first")
        shift = self._check(frame, shift)
        _, valid, _, _, _, raw = self._raw(frame, shift)
        return self._report(raw, valid)


# ----------------------------------------------------------------------------------------------
# convenience


def background_subtract(
    frames: Iterable, *, options: BackgroundOptions | None = None, coordinates: str = "frame", xp=None
):
    """Run a whole-frame :class:`BackgroundModel` over a sequence.

    Parameters
    ----------
    frames : iterable of (H, W) or (H, W, C) arrays
        A list, a generator, or a (N, H, W[, C]) array.
    options : BackgroundOptions, optional
    coordinates : {'frame', 'model'}
        With ``align``: report each mask on its own frame's pixel grid (:func:`mask_to_frame`;
        what ground truth drawn on the input frames expects), or on the model's (the first
        frame's). The same without ``align``.
    xp : module, optional
        numpy or cupy to compute on (None: the namespace of the first frame).

    Returns
    -------
    masks : (N, H, W) bool ndarray
        Foreground, on the host.
    fractions : (N,) float64 ndarray
        Foreground pixels / all pixels of each frame.

    Notes
    -----
    The first ``init_frames`` frames only build the model (a streaming ``update`` reports them
    as background); here they are classified afterwards against the model as it stands at the
    end of the initialisation (:meth:`BackgroundModel.classify`), so every frame gets a real
    mask. With ``align`` the shift of each frame is estimated against the first frame.
    """
    options = options or BackgroundOptions()
    if coordinates not in ("frame", "model"):
        raise ConfigError(f"coordinates={coordinates!r} is not one of frame, model")
    model = BackgroundModel(options=options, xp=xp)
    back = options.align and coordinates == "frame"

    def out(m, shift):
        return to_host(mask_to_frame(m, shift) if back else m)  # sync

    masks, held = [], []
    for i, frame in enumerate(frames):
        shift = model._check(frame, None)  # validates; estimates the shift once when aligning
        m = model.update(frame, shift=shift)
        if i < options.init_frames:
            held.append((i, frame, shift))
        masks.append(out(m, shift))
        if i == options.init_frames - 1:
            for j, f, s in held:
                masks[j] = out(model.classify(f, shift=s), s)
            held = []
    for j, f, s in held:  # fewer frames than init_frames: nothing is initialised
        masks[j] = out(model.classify(f, shift=s), s)
    if not masks:
        raise InputError("no frames were given: give at least one frame")
    out = np.stack(masks)
    fractions = out.reshape(len(out), -1).sum(axis=1, dtype=np.float64) / float(out[0].size)
    return out, fractions
