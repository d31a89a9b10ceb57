"""Scoring foreground masks against ground truth labelled the CDnet way (changedetection.net, 2014).

CDnet's ground-truth images label each pixel: 255 foreground, 0 static background, 50 hard shadow
(counts as background), 85 outside the region of interest and 170 unknown (motion boundaries); the
last two are not counted, nor are pixels outside the sequence's ROI mask. One scorer, used by the
tests and the benchmarks alike, so a number in ``benchmarks/RESULTS.md`` and a test's floor mean the
same thing.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import InputError

CDNET_FOREGROUND = 255
CDNET_BACKGROUND = (0, 50)  # static and shadow
CDNET_IGNORED = (85, 170)  # outside the ROI, unknown


@dataclass(frozen=True)
class ForegroundScore:
    """Pixel counts and the measures made from them (0.0 where a ratio has no denominator)."""

    tp: int
    fp: int
    fn: int

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 0.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 0.0

    @property
    def f_measure(self) -> float:
        """2PR / (P + R), equal to 2 TP / (2 TP + FP + FN)."""
        d = 2 * self.tp + self.fp + self.fn
        return 2 * self.tp / d if d else 0.0

    def __add__(self, other: ForegroundScore) -> ForegroundScore:
        return ForegroundScore(self.tp + other.tp, self.fp + other.fp, self.fn + other.fn)

    def as_dict(self) -> dict:
        return {"precision": self.precision, "recall": self.recall, "f_measure": self.f_measure,
                "tp": self.tp, "fp": self.fp, "fn": self.fn}


def score_foreground(masks, groundtruth, *, roi=None) -> ForegroundScore:
    """Count true/false positives and false negatives of foreground masks, CDnet's way.

    Parameters
    ----------
    masks : array_like of bool, shape (..., H, W)
        Foreground masks (one frame or a stack).
    groundtruth : array_like of uint8, same shape as `masks`
        CDnet labels: 255 foreground; 0 and 50 (shadow) background; every other value is not counted.
    roi : array_like of bool, shape (H, W), optional
        Pixels to count (CDnet's ROI.bmp > 0); all pixels when omitted.

    Returns
    -------
    ForegroundScore
        ``tp``, ``fp``, ``fn`` summed over all frames, with ``precision``, ``recall`` and
        ``f_measure``; scores of parts add up (``a + b``) to the score of the whole.
    """
    masks = np.asarray(masks, dtype=bool)
    gt = np.asarray(groundtruth)
    if masks.shape != gt.shape:
        raise InputError(f"masks {masks.shape} and ground truth {gt.shape} differ in shape; "
                         "pass one ground-truth frame per mask frame")
    fg = gt == CDNET_FOREGROUND
    bg = np.isin(gt, CDNET_BACKGROUND)
    if roi is not None:
        roi = np.asarray(roi, dtype=bool)
        if roi.shape != gt.shape[-2:]:
            raise InputError(f"ROI {roi.shape} does not match the frames {gt.shape[-2:]}; "
                             "pass the ROI of this sequence (H, W)")
        fg &= roi
        bg &= roi
    return ForegroundScore(
        tp=int(np.count_nonzero(masks & fg)),
        fp=int(np.count_nonzero(masks & bg)),
        fn=int(np.count_nonzero(~masks & fg)),
    )
