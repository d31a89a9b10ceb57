"""Corrupt-frame false alarms on clean real video, and the motion check that removes them.

vtest.avi's pedestrians walk close to the camera: a white shoe or a sheet of paper swinging through
an 8x8 tile in one frame looked like a one-frame blotch to the peak rule (frames 516, 521, 530, 541,
668 of the full clip). The motion check finds that content within +-32 px in a neighbouring frame.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from gpudiff.sequence._corrupt import EventOptions, detect_sequence
from gpudiff.io import open_source


@pytest.fixture(scope="module")
def walkers(data_dir):
    """vtest frames 505-555 (the walkers close to the camera), native 768x576."""
    pytest.importorskip("av")
    src = open_source(str(data_dir / "opencv-samples/video/vtest.avi"), max_pixels=1 << 30)
    frames = np.stack([src.read(i) for i in range(505, 556)])
    src.close()
    return frames


def test_walkers_raise_no_flag_and_the_motion_check_is_why(walkers):
    without = detect_sequence(walkers, options=dataclasses.replace(EventOptions(), motion_search=0))
    flagged = set((np.flatnonzero(without["corrupt"]) + 505).tolist())
    assert flagged & {516, 521, 530, 541}, flagged  # the old false alarms (what the check must explain)
    ev = detect_sequence(walkers)
    assert not ev["corrupt"].any(), np.flatnonzero(ev["corrupt"]) + 505
    assert set((np.flatnonzero(ev["motion"]) + 505).tolist()) == flagged
    assert not ev["cut"].any()


@pytest.mark.parametrize("kind", ["solid", "stripe", "blackout"])
def test_real_damage_among_the_walkers_is_still_found(walkers, kind):
    """The same frames with damage in them: the motion check must not explain it away."""
    frames = walkers.copy()
    t = 530 - 505  # a frame the walkers made a false alarm of
    f = frames[t]
    if kind == "solid":
        f[200:260, 300:380] = (200, 40, 180)
    elif kind == "stripe":
        f[300:302, :] = 255
    else:
        f[400:, :] = 0  # a truncated frame
    ev = detect_sequence(frames)
    assert np.flatnonzero(ev["corrupt"]).tolist() == [t]
    assert not ev["motion"][t]


def test_a_five_frame_noise_stack_raises_nothing(data_dir):
    """pims' stuck.tif: 5 uint16 frames that differ only by noise. A robust z-score over 3 other
    frames said frame 2 was an outlier; too few frames now give no verdict from that rule."""
    src = open_source(str(data_dir / "pims-testdata/stuck.tif"), max_pixels=1 << 30)
    ev = detect_sequence(src)
    assert not ev["corrupt"].any() and not ev["cut"].any()
    assert np.isnan(ev["spike_global"]).all()


def test_tiny_frames_merge_histogram_bins(data_dir):
    """bgslibrary's 48x48 demo clip (cars on a road): 9 pixels per bin of 256 made the histogram
    rules fire on sampling noise (2 corrupt flags, 2 cuts); merged bins give none of those."""
    pytest.importorskip("av")
    src = open_source(str(data_dir / "bgslibrary-dataset/demo.avi"), max_pixels=1 << 30)
    ev = detect_sequence(src)
    assert not ev["cut"].any()
    assert np.nanmax(ev["hist_spike"]) < 1.0 and np.nanmax(ev["hist_cut"]) < 1.0
