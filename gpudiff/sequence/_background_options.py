"""The options of :mod:`._background`: :class:`BackgroundOptions`, how the per-pixel model is run
and how its defaults were measured."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from ..errors import ConfigError

__all__ = ["BackgroundOptions", "MODELS"]

_COLORS = ("gray", "channels")
MODELS = ("gaussian", "mixture", "samples")


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
    model : {'gaussian', 'mixture', 'samples'}
        The per-pixel model. ``'gaussian'``: one running Gaussian (above). ``'mixture'``: a
        weighted mixture of ``components`` Gaussians per pixel (Stauffer-Grimson / Zivkovic,
        :mod:`._background_mixture`), for backgrounds with several looks (leaves, water,
        flicker). ``'samples'``: a set of ``samples`` past values per pixel with random
        neighbour propagation (ViBe, :mod:`._background_samples`); it cannot run on tiles.
        The mixture matches a component when the mean (over channels) squared deviation is at
        most ``k**2 * max(var, min_std**2)``, moves it at ``learning_rate`` and its weights at
        ``weight_learning_rate``, and learns from every pixel (Zivkovic's update: no
        ``foreground_learning_rate``). The samples use ``sample_radius``, ``min_matches`` and
        ``subsampling`` instead of ``k``, ``min_std`` and the learning rates. ``init_frames``,
        ``cleanup_radius``, ``color``, ``align`` and the shadow test apply to all three.
    shadows : bool
        Suppress cast shadows: a pixel the model calls foreground is *shadow* (reported as
        background in the mask, 50 in the label map) where it is darker than the background by
        a brightness ratio inside ``shadow_ratio`` and, on colour frames, of the same
        chromaticity (within ``shadow_chroma``). On grey frames (or ``color='gray'``) only the
        brightness test applies. Shadow pixels update the model as background does.
    shadow_ratio : (float, float)
        ``(lo, hi)``, ``0 < lo < hi <= 1``: the bounds of the brightness ratio ``a`` (frame over
        background, the least-squares ``a`` with ``x ~ a * mean``).
    shadow_chroma : float
        Bound on the colour distortion ``|x - a * mean| / (a * |mean|)`` (the angle, in radians
        for small values, between the pixel's colour and the background's).
    components : int
        ``model='mixture'``: Gaussians per pixel, 2 to 8.
    background_ratio : float
        ``model='mixture'``: the heaviest components whose weights add up to this share of the
        pixel's total are its background, in (0, 1].
    weight_learning_rate : float
        ``model='mixture'``: the rate at which component weights follow what the pixel shows, in
        (0, 1] (``learning_rate`` moves the matched component's mean and variance). An object
        that stops becomes background after about ``log(background_ratio) / log(1 - rate)``
        frames (0.005: 21 frames).
    samples : int
        ``model='samples'``: values kept per pixel, 2 to 64.
    sample_radius : float
        ``model='samples'``: a sample matches when the root-mean-square (over channels)
        difference is at most this fraction of the data range.
    min_matches : int
        ``model='samples'``: background needs at least this many matching samples (1 to
        ``samples``).
    subsampling : int
        ``model='samples'``: a background pixel replaces one of its samples with a chance of
        ``1 / subsampling`` per frame, and takes a background neighbour's value with the same
        chance (ViBe's time subsampling factor).
    seed : int
        ``model='samples'``: the seed of its (counter-based, hence reproducible on any device)
        random choices.

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

    Shadows and the other models, the same frames (``--sweep``'s second table; shadow FP = the
    share of CDnet's 116,521 shadow pixels, label 50, called foreground; ms/frame: median of 3
    runs, NumPy on 2 AMD EPYC cores)::

        options                        F      shadow FP  F align  shadow FP align  ms/frame (align)
        defaults (gaussian)            0.789  0.962      0.844    0.973            1.8 (2.9)
        shadows=True                   0.794  0.913      0.835    0.924            2.4 (3.7)
          shadow_ratio (0.4, 0.95)     0.790  0.869      0.828    0.881
          shadow_ratio (0.6, 0.95)     0.796  0.943      0.840    0.954
          shadow_ratio (0.5, 1.0)      0.794  0.913      0.835    0.924
          shadow_chroma 0.05           0.790  0.901      0.826    0.914
          shadow_chroma 0.2            0.768  0.896      0.802    0.908
          shadows not learnt           0.790  0.918      0.838    0.926
        model='mixture'                0.796  0.929      0.827    0.951            7.9 (8.8)
          components 2 / 5             0.794 / 0.796     0.827 / 0.827
          k 2.5 / 4                    0.748 / 0.787     0.830 / 0.813
          weight_learning_rate 0.002   0.794  0.930      0.827    0.951
          weight_learning_rate 0.01    0.771  0.795      0.795    0.824
          background_ratio 0.8 / 0.95  0.794 / 0.753     0.827 / 0.775
          + shadows                    0.792  0.885      0.819    0.904
        model='samples'                0.819  0.939      0.833    0.929            17.2 (18.4)
          sample_radius 0.08 / 0.2     0.816 / 0.732     0.845 / 0.733
          min_matches 2 / 3            0.779 / 0.736     0.841 / 0.841
          subsampling 2 / 16           0.821 / 0.778     0.827 / 0.839
          samples 10                   0.817  0.947      0.835    0.937
          + shadows                    0.808  0.874      0.817    0.866
        OpenCV MOG2 (detectShadows)    0.465  0.555                                2.2
        OpenCV MOG2 (no shadows)       0.421  0.655                                2.0
        OpenCV KNN (detectShadows)     0.362  0.872                                5.1
        OpenCV KNN (no shadows)        0.326  0.951                                4.2

    * ``shadows`` off by default: on this sequence it changes F by +0.005 (-0.009 with
      ``align``) and calls 5 % fewer shadow pixels foreground. CDnet's shadows here are the dark
      contact shadows under the cars (median brightness ratio 0.17 to the background, as dark
      as the cars themselves, median 0.21), out of reach of any pointwise colour rule; the rule
      is for soft cast shadows (0.5-0.95 of the background's brightness, its colour), which it
      removes (a real frame with such a shadow laid on it: 79 % of the shadow called foreground
      without the test, 0.2 % with it). ``shadow_ratio`` (0.5, 0.95) is MOG2's lower bound;
      ``shadow_chroma`` 0.03 is the tightest bound before F drops (a looser one takes dark car
      pixels for shadow). Shadow pixels are folded into the model as background (not learning
      them: F -0.004, shadow FP +0.005).
    * ``model`` stays ``'gaussian'``: ``'samples'`` gains 0.03 in F (with ``align`` it loses
      0.011) at nine times the time per frame; ``'mixture'`` is equal within 0.01 (-0.017 with
      ``align``) at four times. They are for dynamic backgrounds (a region flickering between
      two real textures: the Gaussian calls 40 % of it foreground, the mixture 0 %, the samples
      5 %, ``tests/oracle/sequence/test_background_models.py``).
    * ``'mixture'``: ``weight_learning_rate`` 0.005 (a car that waits 21 frames becomes
      background: 0.01 absorbs waiting cars, -0.025), ``background_ratio`` 0.9 (MOG2's), 3
      components (2 and 5 within 0.002). The matched component's mean and variance learn at
      ``learning_rate`` and the variance is capped at 9 ``min_std**2`` (4: -0.005, none: -0.002).
    * ``'samples'``: ViBe's 20 samples; ``min_matches`` 1 (ViBe's 2: -0.04) and
      ``subsampling`` 4 (ViBe's 16: -0.04; the shaking camera needs a faster update),
      ``sample_radius`` 0.1 (26 grey levels; ViBe's is 20 in L1).
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
    model: str = "gaussian"
    shadows: bool = False
    shadow_ratio: tuple = (0.5, 0.95)
    shadow_chroma: float = 0.03
    components: int = 3
    background_ratio: float = 0.9
    weight_learning_rate: float = 0.005
    samples: int = 20
    sample_radius: float = 0.1
    min_matches: int = 1
    subsampling: int = 4
    seed: int = 0

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
        if self.model not in MODELS:
            raise ConfigError(f"model={self.model!r} is not one of {', '.join(MODELS)}")
        if not isinstance(self.shadows, (bool, np.bool_)):
            raise ConfigError(f"shadows={self.shadows!r} must be True or False")
        try:
            lo, hi = (float(v) for v in self.shadow_ratio)
        except (TypeError, ValueError):
            lo = hi = float("nan")
        if not (0 < lo < hi <= 1):
            raise ConfigError(
                f"shadow_ratio={self.shadow_ratio!r} must be a pair (lo, hi) with 0 < lo < hi <= 1 "
                "(e.g. (0.5, 0.95))"
            )
        if not (_is_number(self.shadow_chroma) and math.isfinite(float(self.shadow_chroma))
                and self.shadow_chroma >= 0):
            raise ConfigError(f"shadow_chroma={self.shadow_chroma!r} must be a finite number >= 0 (e.g. 0.1)")
        if not (_is_whole(self.components) and 2 <= self.components <= 8):
            raise ConfigError(f"components={self.components!r} must be a whole number in 2..8 (e.g. 3)")
        if not (_is_number(self.background_ratio) and 0 < self.background_ratio <= 1):
            raise ConfigError(f"background_ratio={self.background_ratio!r} must be in (0, 1] (e.g. 0.9)")
        if not (_is_number(self.weight_learning_rate) and 0 < self.weight_learning_rate <= 1):
            raise ConfigError(
                f"weight_learning_rate={self.weight_learning_rate!r} must be in (0, 1] (e.g. 0.005)"
            )
        if not (_is_whole(self.samples) and 2 <= self.samples <= 64):
            raise ConfigError(f"samples={self.samples!r} must be a whole number in 2..64 (e.g. 20)")
        if not (_is_number(self.sample_radius) and math.isfinite(float(self.sample_radius))
                and self.sample_radius > 0):
            raise ConfigError(
                f"sample_radius={self.sample_radius!r} must be a finite number > 0 (a fraction of the "
                "data range, e.g. 0.08)"
            )
        if not (_is_whole(self.min_matches) and 1 <= self.min_matches <= self.samples):
            raise ConfigError(
                f"min_matches={self.min_matches!r} must be a whole number in 1..samples ({self.samples})"
            )
        if not (_is_whole(self.subsampling) and self.subsampling >= 1):
            raise ConfigError(f"subsampling={self.subsampling!r} must be a whole number >= 1 (e.g. 16)")
        if not (_is_whole(self.seed) and 0 <= self.seed < 2**32):
            raise ConfigError(f"seed={self.seed!r} must be a whole number in [0, 2**32)")
        for name in ("components", "samples", "min_matches", "subsampling", "seed"):
            object.__setattr__(self, name, int(getattr(self, name)))
        object.__setattr__(self, "shadows", bool(self.shadows))
        object.__setattr__(self, "shadow_ratio", (lo, hi))
        object.__setattr__(self, "init_frames", int(self.init_frames))
        object.__setattr__(self, "cleanup_radius", int(self.cleanup_radius))
        object.__setattr__(self, "upsample_factor", int(self.upsample_factor))
        object.__setattr__(self, "align", bool(self.align))

    @property
    def halo(self) -> int:
        """Pixels of context a tile needs on each side for its cleaned mask to equal the whole
        frame's: opening then closing with a radius-``r`` disk is four passes of reach ``r``."""
        return 4 * self.cleanup_radius

    @property
    def tileable(self) -> bool:
        """Whether a model on a tile (with its halo) reports exactly the whole frame's mask there:
        not for ``'samples'``, whose neighbour propagation crosses tile borders."""
        return self.model != "samples"

    def to_dict(self) -> dict:
        return asdict(self)
