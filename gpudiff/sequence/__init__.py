"""Sequences: what changes from frame to frame.

Per-frame and per-pair measures over a sequence, built on :mod:`gpudiff.pair`, written against
``xp``; like the pair maths they know no store, scheduler or CLI (the engine drives them). One
feature per module:

- ``_dedup``: keep/drop near-duplicate frames (time-lapse), the change score and its noise floor
  (:func:`gpudiff.engine.dedup` runs it over a whole source on Dask);
- ``_corrupt``: corrupted frames and cuts (histogram KL and the rules that beat it);
- ``_background``: background subtraction (per-pixel running mean and deviation, tiles, drift);
- ``_flow``: optical flow (pyramidal Lucas-Kanade) and corner tracking, as a motion measure;
- ``_score``: foreground masks scored against CDnet-labelled ground truth.
"""

from ._background import BackgroundModel, BackgroundOptions, background_subtract
from ._corrupt import EventOptions, detect_events, detect_sequence, kl_rule
from ._dedup import DedupOptions, Deduplicator, change_score
from ._flow import flow_magnitude_stats, optical_flow_lk, track_corners
from ._score import ForegroundScore, score_foreground

__all__ = [
    "Deduplicator",
    "DedupOptions",
    "change_score",
    "detect_events",
    "detect_sequence",
    "EventOptions",
    "kl_rule",
    "BackgroundModel",
    "BackgroundOptions",
    "background_subtract",
    "optical_flow_lk",
    "flow_magnitude_stats",
    "track_corners",
    "score_foreground",
    "ForegroundScore",
]
