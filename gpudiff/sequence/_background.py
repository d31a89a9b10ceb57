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

This module runs a model over a whole sequence (:func:`background_subtract`) and is the place the
public names come from; the parts live in ``_background_options`` (:class:`BackgroundOptions`),
``_background_tiles`` (:class:`Tile`, :func:`plan_tiles`), ``_background_frames`` (frame checks,
:func:`estimate_shift`, the translated window a model reads, :func:`mask_to_frame`) and
``_background_model`` (:class:`BackgroundModel`, :class:`BackgroundState`).
"""

from __future__ import annotations

from typing import Iterable

import numpy as np

from ..backend import to_host
from ..errors import ConfigError, InputError
from ._background_frames import estimate_shift, mask_to_frame
from ._background_model import BackgroundModel, BackgroundState
from ._background_options import BackgroundOptions
from ._background_tiles import Tile, plan_tiles

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
