"""Sequences: what changes from frame to frame.

Per-frame and per-pair measures over a sequence, built on :mod:`gpudiff.pair`, written against
``xp``; like the pair maths they know no store, scheduler or CLI (the engine drives them). One
feature per module (a long one split into parts that carry its name):

- ``_dedup``: keep/drop near-duplicate frames (time-lapse), the change score and its noise floor
  (:func:`gpudiff.engine.dedup` runs it over a whole source on Dask);
- ``_corrupt``: corrupted frames and cuts (histogram KL and the rules that beat it), the detector,
  built on ``_corrupt_features`` (per-frame histograms, per-pair block maps, on the device),
  ``_corrupt_options`` (the thresholds) and ``_corrupt_rules`` (the rules, step by step, on the host);
- ``_background``: background subtraction over a sequence, built on ``_background_options``,
  ``_background_tiles`` (tiles and their halos), ``_background_frames`` (camera drift, the
  translated window a model reads, masks and label maps back to the frame's grid),
  ``_background_shadows`` (the cast-shadow test, CDnet's label values), ``_background_model``
  (the driver and the per-pixel running mean and deviation), ``_background_mixture`` (a mixture
  of Gaussians per pixel) and ``_background_samples`` (ViBe's sample sets);
- ``_motion``: :func:`optical_flow`, one interface over the dense methods, and the
  forward-backward check (:func:`flow_consistency`) that says which pixels to trust;
- ``_tvl1``: TV-L1 optical flow (global; the default of ``gpudiff run --flow``);
- ``_dis``: dense inverse search optical flow (Kroeger et al. 2016; OpenCV's presets);
- ``_flow``: dense optical flow (pyramidal Lucas-Kanade) as a motion measure, and ``_corners``:
  Shi-Tomasi corners tracked by sparse pyramidal Lucas-Kanade (re-exported by ``_flow``), both on
  ``_pyramid`` (their input checks and the image pyramid);
- ``_score``: foreground masks scored against CDnet-labelled ground truth.
"""

from ._background import BackgroundModel, BackgroundOptions, background_subtract, labels_to_frame
from ._corrupt import EventOptions, detect_events, detect_sequence, kl_rule
from ._dedup import DedupOptions, Deduplicator, change_score
from ._flow import flow_magnitude_stats, optical_flow_lk, track_corners
from ._motion import FLOW_METHODS, flow_consistency, optical_flow
from ._tvl1 import optical_flow_tvl1
from ._dis import DIS_PRESETS, optical_flow_dis
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
    "labels_to_frame",
    "optical_flow",
    "optical_flow_lk",
    "optical_flow_tvl1",
    "optical_flow_dis",
    "DIS_PRESETS",
    "flow_consistency",
    "FLOW_METHODS",
    "flow_magnitude_stats",
    "track_corners",
    "score_foreground",
    "ForegroundScore",
]
