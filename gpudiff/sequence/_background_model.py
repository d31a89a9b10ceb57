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
from . import _background_mixture as _mixture
from . import _background_samples as _samples
from ._background_options import BackgroundOptions
from ._background_shadows import (
    LABEL_BACKGROUND,
    LABEL_FOREGROUND,
    LABEL_SHADOW,
    LABEL_UNKNOWN,
    shadow_mask,
)
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
    """A per-pixel background model (by default a running Gaussian), streaming one frame at a time.

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

    ``options.model`` ``'mixture'`` and ``'samples'`` replace this Gaussian by
    :mod:`._background_mixture` and :mod:`._background_samples` (their state in ``state``; the
    rest below is shared). With ``options.shadows``, a raw foreground pixel that passes
    :func:`._background_shadows.shadow_mask` against the background (the Gaussian's mean, the
    heaviest component's, the samples' mean) is shadow: background in the mask, 50 in the label
    map, and folded into the model as background.

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
        if tile is not None and not options.tileable:
            raise ConfigError(
                "model='samples' cannot run on tiles (its neighbour propagation crosses tile borders): "
                "run it on whole frames, or use model='gaussian' or 'mixture'"
            )
        self.options = options
        self.tile = tile
        self.xp = xp
        self.state: BackgroundState | None = None
        self.frame_shape: tuple[int, ...] | None = None
        self.frame_dtype = None
        self.scale: float | None = None
        self.reference = None  # whole first frame, for alignment without a given shift

    # ---- inspection
    def _reference(self, var: bool = True):
        """The background's mean and variance (data-range units; the variance None unless ``var``):
        the Gaussian's own; the mixture's heaviest component; the samples' mean and spread."""
        if self.options.model == "mixture":
            return _mixture.reference(self.state, self.xp)
        if self.options.model == "samples":
            return _samples.reference(self.state, self.xp, var=var)
        return self.state.mean, self.state.var

    @property
    def mean(self):
        """Per-pixel mean over the model's window, in the frame's intensity units (``'mixture'``:
        of the heaviest component; ``'samples'``: of the samples)."""
        return None if self.state is None else self._reference()[0] * self.xp.float32(self.scale)

    @property
    def std(self):
        """Per-pixel standard deviation over the model's window, in the frame's intensity units
        (as ``mean``; one per pixel, over the channels, for ``'mixture'`` and ``'samples'``)."""
        if self.state is None:
            return None
        return self.xp.sqrt(self._reference()[1]) * self.xp.float32(self.scale)

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
        if self.options.model == "mixture":
            self.state = _mixture.start((h, w), chans, self.options, xp)
        elif self.options.model == "samples":
            self.state = _samples.start((h, w), chans, W, (oy0, ox0), self.options, xp)
        else:
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
        """Prepared window, valid mask, pixels past initialisation, deviation d and d**2 (the
        Gaussian's; for the other models d is what their fold reuses, d2 None), the raw
        foreground mask (shadows taken out) and the shadow mask (None without ``shadows``)."""
        xp, o, st = self.xp, self.options, self.state
        x, valid = _window(frame, self.tile.outer, shift, xp, self.scale, o.color)
        if o.model == "gaussian":
            x, valid, ready, d, d2, raw = self._raw_gaussian(x, valid)
        else:  # d carries what the model's fold reuses
            core = _mixture if o.model == "mixture" else _samples
            out, ready, d = core.classify(st, x, o, xp)
            d2 = None
            raw = out & ready & valid
        shadow = None
        if o.shadows:
            shadow = raw & shadow_mask(x, self._reference(var=False)[0], o, xp)
            raw = raw & ~shadow
        return x, valid, ready, d, d2, raw, shadow

    def _raw_gaussian(self, x, valid):
        xp, o, st = self.xp, self.options, self.state
        f32 = xp.float32
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

    def _report(self, raw, valid, ready, shadow, labels: bool):
        r = self.options.cleanup_radius
        mask = raw
        if r > 0:
            xp = self.xp
            mask = _morph(_morph(mask, r, True, xp), r, False, xp)  # opening
            mask = _morph(_morph(mask, r, False, xp), r, True, xp)  # closing
            mask = mask & valid
        mask = mask[self.tile.crop]
        if not labels:
            return mask
        return mask, self._labels(mask, valid, ready, shadow)

    def _labels(self, mask, valid, ready, shadow):
        """CDnet values over the core: 255 foreground (the reported mask), 50 shadow (raw shadow
        not inside a reported object), 170 unknown (initialising or no data), 0 background."""
        xp, crop = self.xp, self.tile.crop
        u8 = xp.uint8
        out = xp.where(mask, u8(LABEL_FOREGROUND), u8(LABEL_BACKGROUND))
        if shadow is not None:
            out = xp.where(shadow[crop] & ~mask, u8(LABEL_SHADOW), out)
        known = (valid & ready)[crop]
        return xp.where(known, out, u8(LABEL_UNKNOWN))

    # ---- public
    def update(self, frame, *, shift=None, labels: bool = False):
        """Classify ``frame`` against the model, then fold it into the model.

        Parameters
        ----------
        frame : (H, W) or (H, W, C) array
            The whole frame (NumPy or CuPy; uint8, uint16 or float), the same shape every call.
        shift : (dy, dx), optional
            Translation into model coordinates (``estimate_shift``); None: estimated against the
            first frame when ``options.align`` (whole-frame models only), else no translation.
        labels : bool
            Also return the label map.

        Returns
        -------
        mask : bool array (h, w)
            Foreground over the tile's core (the whole frame without a tile), on ``xp``, in model
            coordinates (with a shift: the first frame's grid; :func:`mask_to_frame` carries a
            whole mask back to the frame's own grid). False for pixels still initialising, where
            the shifted frame has no data, and for shadows (``options.shadows``).
        labels : uint8 array (h, w), only with ``labels=True``
            CDnet's values: 255 foreground (= ``mask``), 50 shadow, 170 unknown (still
            initialising, or not covered by the shifted frame), 0 background
            (:func:`labels_to_frame` carries it to the frame's grid).
        """
        shift = self._check(frame, shift)
        xp, o, st = self.xp, self.options, self.state
        f32 = xp.float32
        x, valid, ready, d, d2, raw, shadow = self._raw(frame, shift)
        if o.model == "mixture":
            _mixture.fold(st, x, valid, d, o, xp)
            return self._report(raw, valid, ready, shadow, labels)
        if o.model == "samples":
            _samples.fold(st, x, valid, raw, o, xp)
            return self._report(raw, valid, ready, shadow, labels)
        n = (st.count + 1).astype(f32)
        alpha = xp.where(raw, f32(o.foreground_learning_rate), f32(o.learning_rate))  # shadow: as background
        alpha = xp.where(ready, alpha, f32(1) / n)
        alpha = xp.where(valid, alpha, f32(0))
        if d.ndim == 3:
            alpha = alpha[:, :, None]
        st.mean = st.mean + alpha * d
        st.var = (f32(1) - alpha) * (st.var + alpha * d2)
        st.count = xp.where(valid & ~ready, st.count + 1, st.count)
        st.frames += 1
        return self._report(raw, valid, ready, shadow, labels)

    def classify(self, frame, *, shift=None, labels: bool = False):
        """The mask (and with ``labels``, the label map) ``update`` would report for ``frame``,
        without changing the model."""
        if self.state is None:
            raise ConfigError("the model has seen no frame yet: call update() first")
        shift = self._check(frame, shift)
        _, valid, ready, _, _, raw, shadow = self._raw(frame, shift)
        return self._report(raw, valid, ready, shadow, labels)
