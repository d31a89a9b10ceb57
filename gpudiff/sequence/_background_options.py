"""The options of :mod:`._background`: :class:`BackgroundOptions`, how the per-pixel model is run
and how its defaults were measured."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from ..errors import ConfigError

__all__ = ["BackgroundOptions"]

_COLORS = ("gray", "channels")


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
