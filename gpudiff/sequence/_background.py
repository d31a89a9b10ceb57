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

Options beyond the Gaussian: ``shadows=True`` takes cast shadows out of the foreground (a pointwise
test against the model's background, :func:`shadow_mask`), and ``labels=True`` (``update``,
``classify``, :func:`background_subtract`) also reports CDnet's label values per pixel (0
background, 50 shadow, 170 unknown, 255 foreground), so the output scores against CDnet ground
truth as it is. ``model='mixture'`` (a few weighted Gaussians per pixel) and ``model='samples'``
(ViBe's sample sets) hold backgrounds with several looks; the mixture is pointwise and tiles like
the Gaussian, the samples spread into their neighbours and refuse tiles.

This module runs a model over a whole sequence (:func:`background_subtract`) and is the place the
public names come from; the parts live in ``_background_options`` (:class:`BackgroundOptions`),
``_background_tiles`` (:class:`Tile`, :func:`plan_tiles`), ``_background_frames`` (frame checks,
:func:`estimate_shift`, the translated window a model reads, :func:`mask_to_frame`,
:func:`labels_to_frame`), ``_background_shadows`` (:func:`shadow_mask`, the label values),
``_background_model`` (:class:`BackgroundModel`, :class:`BackgroundState`: the driver and the
Gaussian), ``_background_mixture`` (:class:`MixtureState`) and ``_background_samples``
(:class:`SampleState`).
"""

from __future__ import annotations

from typing import Iterable

import numpy as np

from ..backend import to_host
from ..errors import ConfigError, InputError
from ._background_frames import estimate_shift, labels_to_frame, mask_to_frame
from ._background_mixture import MixtureState
from ._background_model import BackgroundModel, BackgroundState
from ._background_options import MODELS, BackgroundOptions
from ._background_samples import SampleState
from ._background_shadows import (
    LABEL_BACKGROUND,
    LABEL_FOREGROUND,
    LABEL_SHADOW,
    LABEL_UNKNOWN,
    shadow_mask,
)
from ._background_tiles import Tile, plan_tiles

__all__ = [
    "BackgroundOptions",
    "BackgroundState",
    "BackgroundModel",
    "Tile",
    "plan_tiles",
    "estimate_shift",
    "mask_to_frame",
    "labels_to_frame",
    "background_subtract",
    "shadow_mask",
    "MixtureState",
    "SampleState",
    "MODELS",
    "LABEL_BACKGROUND",
    "LABEL_SHADOW",
    "LABEL_UNKNOWN",
    "LABEL_FOREGROUND",
]


def background_subtract(
    frames: Iterable,
    *,
    options: BackgroundOptions | None = None,
    coordinates: str = "frame",
    labels: bool = False,
    xp=None,
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
    labels : bool
        Also return the CDnet label maps.
    xp : module, optional
        numpy or cupy to compute on (None: the namespace of the first frame).

    Returns
    -------
    masks : (N, H, W) bool ndarray
        Foreground, on the host.
    fractions : (N,) float64 ndarray
        Foreground pixels / all pixels of each frame.
    label_maps : (N, H, W) uint8 ndarray, only with ``labels=True``
        0 background, 50 shadow, 170 unknown (no model yet, or outside the aligned frame), 255
        foreground (= ``masks``), on the host, in the same coordinates as ``masks``.

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
        if not labels:
            return to_host(mask_to_frame(m, shift) if back else m)  # sync
        m, lab = m
        if back:
            m, lab = mask_to_frame(m, shift), labels_to_frame(lab, shift)
        return to_host(m), to_host(lab)  # sync

    masks, held = [], []
    for i, frame in enumerate(frames):
        shift = model._check(frame, None)  # validates; estimates the shift once when aligning
        m = model.update(frame, shift=shift, labels=labels)
        if i < options.init_frames:
            held.append((i, frame, shift))
        masks.append(out(m, shift))
        if i == options.init_frames - 1:
            for j, f, s in held:
                masks[j] = out(model.classify(f, shift=s, labels=labels), s)
            held = []
    for j, f, s in held:  # fewer frames than init_frames: nothing is initialised
        masks[j] = out(model.classify(f, shift=s, labels=labels), s)
    if not masks:
        raise InputError("no frames were given: give at least one frame")
    label_maps = None
    if labels:
        label_maps = np.stack([lab for _, lab in masks])
        masks = [m for m, _ in masks]
    out = np.stack(masks)
    fractions = out.reshape(len(out), -1).sum(axis=1, dtype=np.float64) / float(out[0].size)
    if labels:
        return out, fractions, label_maps
    return out, fractions
