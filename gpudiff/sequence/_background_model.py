"""The model of :mod:`._background`: :class:`BackgroundModel`, a per-pixel running Gaussian fed one
frame at a time (its state, :class:`BackgroundState`, and the morphological clean-up of the mask it
reports). Every update is elementwise float32, so a tile's model holds the whole frame's values."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from ..backend import get_namespace
from ..errors import ConfigError, InputError
from ._background_frames import (
    _check_frame,
    _check_shift,
    _default_range,
    _to_gray_f32,
    _window,
    estimate_shift,
)
from ._background_options import BackgroundOptions
from ._background_tiles import Tile, _whole

__all__ = ["BackgroundState", "BackgroundModel"]


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
