"""The options of :mod:`._corrupt`: :class:`EventOptions`, the thresholds of the rules and how they were set."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError
from ._corrupt_features import _check_color

__all__ = ["EventOptions"]


@dataclass(frozen=True)
class EventOptions:
    """How :func:`detect_events` decides. Immutable; the defaults were chosen by measurement
    (``benchmarks/corrupt_eval.py``, see Notes of :func:`detect_events`).

    Parameters
    ----------
    block_size : int
        Tile side of the block maps (for :func:`pair_features`; recorded here so a run says how it
        was computed). 8 measured best: 4 gives more false alarms from motion at the same recall, 16
        dilutes few-pixel damage.
    color : {'gray', 'luma'}
        How colour frames become grey.
    window : int
        Frames on each side over which the temporal references (noise level, robust baseline of
        the global statistic, typical change) are taken.
    noise_factor, min_level : float
        A tile takes part only when its evidence exceeds ``noise_factor`` times the sequence's noise
        level and ``min_level`` quantisation steps.
    spike_ratio : float
        A tile *spikes* when its outlier level :math:`O` exceeds ``spike_ratio`` times the change of
        its neighbourhood that does not involve the frame (plus the noise level).
    activity_radius : int
        That change is the largest over the tiles within this many tiles (1: 3x3), so that motion
        beside a tile (a swinging leg, a passing car) excuses it. 0: the tile's own change only.
    area_threshold : float
        Corrupt when more than this fraction of the tiles spike.
    peak_threshold : float
        ... or when one tile's outlier level exceeds ``peak_threshold`` times its neighbourhood's
        change (few-pixel damage).
    global_threshold, global_floor : float
        ... or when the frame's total outlier level, as a ratio to its neighbourhood's change, is
        more than ``global_threshold`` robust standard deviations (plus ``global_floor``) above the
        same ratio of the surrounding frames (noise-dominated frames, where no tile stands out).
    kl_threshold, hist_ratio : float
        ... or when :math:`\\min(KL(h_t\\|h_{t-1}), KL(h_t\\|h_{t+1}))` exceeds ``kl_threshold`` plus
        ``hist_ratio`` times :math:`KL(h_{t+1}\\|h_{t-1})`: the KL > 0.2 rule against *both*
        neighbours, when the neighbours agree. Also a cut rule (across vs within the boundary).
    cut_ratio, cut_area_threshold, cut_global_threshold : float
        Cut when more than ``cut_area_threshold`` of the tiles change across the boundary by more
        than ``cut_ratio`` times their change within each side, and the whole frame's change across
        is more than ``cut_global_threshold`` times its change within.
    repeat_ratio : float
        A consecutive pair whose mean difference is below ``repeat_ratio`` times the typical one is a
        repeated frame (frame-rate conversion): the cut rule looks past it for the change within.
    suppress_neighbours : bool
        Keep a flag only where its score is at least its neighbours' (a corrupted frame also
        disturbs the evidence of the frames beside it).
    motion_search, motion_match : int, float
        :func:`check_motion`: a flag raised by the one-tile peak rule alone is cleared when the
        spike's tile of frame t is found, within +-``motion_search`` px, in frame t-1 or
        t+1 at a non-zero offset with a mean absolute difference at most ``motion_match`` times
        the one in place: a fast-moving object (a limb close to the camera), not damage. Not when
        both neighbours match at the same offset (static content copied within the frame: a
        displaced or repeated block). ``motion_search`` 0 turns the check off.
    """

    block_size: int = 8
    color: str = "gray"
    window: int = 12
    noise_factor: float = 3.0
    min_level: float = 2.0
    spike_ratio: float = 2.0
    area_threshold: float = 0.01
    peak_threshold: float = 5.0
    global_threshold: float = 8.0
    global_floor: float = 0.01
    kl_threshold: float = 0.2
    hist_ratio: float = 4.0
    cut_ratio: float = 3.0
    cut_area_threshold: float = 0.2
    cut_global_threshold: float = 1.1
    repeat_ratio: float = 0.1
    activity_radius: int = 1
    suppress_neighbours: bool = True
    motion_search: int = 32
    motion_match: float = 0.65

    def __post_init__(self):
        _check_color(self.color)
        for name, least in (("block_size", 1), ("window", 2), ("activity_radius", 0), ("motion_search", 0)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float, np.number)) or v != int(v) or v < least:
                raise ConfigError(f"{name} {v!r} must be a whole number >= {least}")
            object.__setattr__(self, name, int(v))
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if f.type in ("float", float):
                number = isinstance(v, (int, float, np.number)) and not isinstance(v, bool)
                if not number or not (np.isfinite(v) and v >= 0):
                    raise ConfigError(f"{f.name} {v!r} must be a finite number >= 0")
                object.__setattr__(self, f.name, float(v))
        if not isinstance(self.suppress_neighbours, (bool, np.bool_)):
            raise ConfigError(f"suppress_neighbours {self.suppress_neighbours!r} must be True or False")
        for name in ("spike_ratio", "area_threshold", "peak_threshold", "global_threshold", "cut_ratio",
                     "cut_area_threshold", "cut_global_threshold"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} {getattr(self, name)!r} must be > 0")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> EventOptions:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(
                f"unknown event option(s) {', '.join(unknown)}: known are {', '.join(sorted(known))}"
            )
        return cls(**d)
