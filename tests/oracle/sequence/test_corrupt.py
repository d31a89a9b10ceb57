"""Corrupted-frame and scene-cut detection (gpudiff.sequence._corrupt) on real clips, against OpenCV and plain loops."""

from __future__ import annotations

import numpy as np
import pytest

from gpudiff.sequence import _corrupt as C
from gpudiff.backend import get_namespace, to_host
from gpudiff.sequence._corrupt import (
    EventOptions,
    detect_events,
    detect_sequence,
    frame_features,
    kl_rule,
    pair_features,
)
from gpudiff.errors import ConfigError, InputError
from gpudiff.io import open_source

cv2 = pytest.importorskip("cv2")
scipy_stats = pytest.importorskip("scipy.stats")


def _frames(data_dir, rel, start, stop):
    path = data_dir / rel
    if not path.exists():
        pytest.skip(f"missing {rel}")
    src = open_source(str(path))
    return [np.ascontiguousarray(src.read(i)) for i in range(start, stop)]


@pytest.fixture(scope="module")
def traffic(data_dir):
    """bgslibrary's traffic-camera folder: 51 real 320x240 colour frames."""
    return _frames(data_dir, "bgslibrary-dataset/frames", 0, 51)


@pytest.fixture(scope="module")
def highway(data_dir):
    """Another clip of the same size: a CCTV highway (bgslibrary video02.avi), frames 10-29."""
    return _frames(data_dir, "bgslibrary-dataset/video02.avi", 10, 30)


@pytest.fixture(scope="module")
def calcium(data_dir):
    """Real uint16 time-lapse (30x40)."""
    return _frames(data_dir, "imageio-standard/calcium_imaging.tif", 0, 40)


def _grey_u8(f):
    """Grey as to_gray('gray') bins it, in integers: floor(mean of the channels)."""
    return (f.astype(np.int32).sum(axis=2) // 3).astype(np.uint8) if f.ndim == 3 else f


# ------------------------------------------------------------------------------------------ features
def test_frame_histogram_equals_opencv_calcHist(xp, traffic, calcium):
    for f, rng_hi in ((traffic[0], 256), (calcium[0], 65536)):
        g = _grey_u8(f)
        counts = cv2.calcHist([g], [0], None, [256], [0, rng_hi]).ravel().astype(np.float64)
        ff = frame_features(xp.asarray(f))
        assert get_namespace(ff.histogram) is xp  # the histogram stays on the device
        np.testing.assert_array_equal(np.round(to_host(ff.histogram) * g.size), counts)
        assert float(to_host(ff.histogram).sum()) == pytest.approx(1.0, abs=1e-12)
        assert ff.shape == g.shape[:2]
    assert frame_features(xp.asarray(traffic[0])).lsb == 1 / 255
    assert frame_features(xp.asarray(calcium[0])).lsb == 1 / 65535


def test_float_frame_histogram_uses_unit_range(xp, traffic):
    g = _grey_u8(traffic[3])
    h = to_host(frame_features(xp.asarray(g.astype(np.float32) / 256.0)).histogram)  # v/256: bin v exactly
    np.testing.assert_allclose(h, np.bincount(g.ravel(), minlength=256) / g.size, atol=1e-12)
    assert to_host(frame_features(xp.ones((4, 4), dtype=xp.float32)).histogram)[255] == 1.0


def _plain_block_map(a, b, scale, block):
    """Tile means of |a - b| / scale by explicit loops over tiles (float64)."""
    d = np.abs(a.astype(np.float64) - b.astype(np.float64)) / scale
    H, W = d.shape
    out = np.empty((-(-H // block), -(-W // block)))
    for i in range(out.shape[0]):
        for j in range(out.shape[1]):
            out[i, j] = d[i * block:(i + 1) * block, j * block:(j + 1) * block].mean()
    return d, out


@pytest.mark.parametrize("block", [8, 5])
def test_pair_features_equal_a_plain_loop(xp, traffic, calcium, block):
    # a crop that is not a multiple of the tile size: partial tiles at the bottom and right
    cases = (
        (traffic[10][:61, :83], traffic[11][:61, :83], 255.0),
        (calcium[5], calcium[6], 65535.0),
    )
    for a, b, scale in cases:
        pf = pair_features(xp.asarray(a), xp.asarray(b), block_size=block)
        d, ref = _plain_block_map(_grey_exact(a), _grey_exact(b), scale, block)
        assert isinstance(pf["block_mad"], np.ndarray) and pf["block_mad"].shape == ref.shape
        np.testing.assert_allclose(pf["block_mad"], ref, rtol=1e-5, atol=1e-7)
        assert pf["mad"] == pytest.approx(d.mean(), rel=1e-5)
        assert pf["max_abs"] == pytest.approx(d.max(), rel=1e-5)
        assert pf["block_median"] == pytest.approx(np.median(ref), rel=1e-5)
        assert pf["block_max"] == pytest.approx(ref.max(), rel=1e-5)
        assert pf["lsb"] == 1.0 / scale


def _grey_exact(f):
    return f.astype(np.float64).mean(axis=2) if f.ndim == 3 else f.astype(np.float64)


def test_outlier_level_is_exactly_a_combination_of_three_pair_maps(xp, traffic):
    """SROD identity: tile mean of the distance of x_t outside [x_{t-1}, x_{t+1}] from three pair maps."""
    x0, x1, x2 = (_grey_exact(traffic[i]) / 255.0 for i in (20, 21, 22))
    x1 = x1.copy()
    x1[40:60, 100:140] = 1.0  # a damaged patch: outside both neighbours
    frames = [np.round(x * 255).astype(np.uint8) for x in (x0, x1, x2)]
    x0, x1, x2 = (f.astype(np.float64) / 255 for f in frames)
    dist = np.maximum(0, np.maximum(x1 - np.maximum(x0, x2), np.minimum(x0, x2) - x1))  # plain definition
    _, ref = _plain_block_map(dist, np.zeros_like(dist), 1.0, 8)
    b01, b12, b02 = (
        pair_features(xp.asarray(frames[i]), xp.asarray(frames[j]))["block_mad"].astype(np.float64)
        for i, j in ((0, 1), (1, 2), (0, 2))
    )
    np.testing.assert_allclose(0.5 * (b01 + b12 - b02), ref, atol=1e-6)
    assert ref[5:7, 12:17].min() > 0.2  # the patch stands out


# ------------------------------------------------------------------------------------------ KL rule
def test_kl_rule_equals_opencv_compareHist_on_real_frames(traffic):
    frames = [f.copy() for f in traffic[:12]]
    frames[5][:120] = 0  # a blacked-out half: KL jumps at 5 (and back at 6)
    hists = [to_host(frame_features(f).histogram) for f in frames]
    ev = detect_sequence(frames)
    ref = [np.nan] + [
        cv2.compareHist(hists[t].astype(np.float32), hists[t - 1].astype(np.float32), cv2.HISTCMP_KL_DIV)
        for t in range(1, len(frames))
    ]
    np.testing.assert_allclose(ev["kl_prev"], ref, rtol=1e-4, atol=1e-6)
    # scipy's relative entropy agrees where the previous frame has every value the new one has
    full = [t for t in range(1, len(frames)) if np.all(hists[t - 1][hists[t] > 0] > 0)]
    assert len(full) >= 5
    for t in full:
        assert ev["kl_prev"][t] == pytest.approx(scipy_stats.entropy(hists[t], hists[t - 1]), rel=1e-9)
    flags = kl_rule(hists)
    np.testing.assert_array_equal(flags, np.nan_to_num(np.array(ref), nan=0.0) > 0.2)
    assert flags[5] and flags[6] and flags.sum() == 2  # the rule flags the recovery too


def test_kl_rule_direction_is_new_frame_first():
    p = np.array([0.5, 0.5, 0.0])
    q = np.array([0.25, 0.25, 0.5])
    # KL(p||q) = ln 2 = 0.693 (p misses nothing q has); KL(q||p) = 0.5 ln(0.5/1e-10) - 0.5 ln 2 = 10.8
    assert kl_rule([q, p], threshold=1.0).tolist() == [False, False]  # frame 1 is p: KL(p || q) = 0.69
    assert kl_rule([p, q], threshold=1.0).tolist() == [False, True]


# ------------------------------------------------------------------------------------------ detection
@pytest.fixture(scope="module")
def joined(traffic, highway):
    """Frames 0-29 of the traffic camera, then 20 frames of another road: a cut at 30."""
    return traffic[:30] + highway[:20]


def test_detects_injected_corruption_and_the_cut_at_the_right_frames(joined):
    frames = [f.copy() for f in joined]
    rng = np.random.default_rng(0)
    frames[6][60:130, 90:200] = (200, 30, 220)  # solid rectangle
    frames[12] = np.ascontiguousarray(frames[12][:, ::-1])  # mirrored
    frames[18][100:150] = 0  # blacked-out rows
    frames[24][170:174, 26:30] = 255  # subtle: 4x4 hot pixels on a dark, still verge
    for y in (60, 61, 170, 171):  # stripes: two noise lines in the second clip
        frames[40][y] = rng.integers(0, 256, size=frames[40][y].shape, dtype=np.uint8)
    frames[45] = joined[35].copy()  # out of place: a frame from 10 frames earlier
    ev = detect_sequence(frames)
    assert np.flatnonzero(ev["corrupt"]).tolist() == [6, 12, 18, 24, 40, 45]
    assert np.flatnonzero(ev["cut"]).tolist() == [30]
    # the simple rule misses the mirrored frame (same histogram) and the few pixels, and flags recoveries
    base = kl_rule([frame_features(f).histogram for f in frames])
    assert not base[12] and not base[24]


def test_clean_clips_give_no_alarm(traffic, calcium, joined):
    for frames in (traffic, calcium):
        ev = detect_sequence(frames)
        assert not ev["corrupt"].any() and not ev["cut"].any()
        assert np.nanmax(ev["corrupt_score"]) < 0.8 and np.nanmax(ev["cut_score"]) < 0.8  # a margin
    ev = detect_sequence(joined)
    assert not ev["corrupt"].any() and np.flatnonzero(ev["cut"]).tolist() == [30]


def test_uint16_corruption_is_found(calcium):
    frames = [f.copy() for f in calcium]
    frames[10][12:30] = 0  # a blacked-out band
    frames[20][:, 5:7] = 60000  # a saturated stripe
    ev = detect_sequence(frames)
    assert np.flatnonzero(ev["corrupt"]).tolist() == [10, 20]
    assert not ev["cut"].any()


def test_first_and_last_frames_are_judged_on_one_neighbour(traffic, highway):
    frames = [highway[0]] + traffic[1:20] + [highway[5]]
    ev = detect_sequence(frames)
    assert np.flatnonzero(ev["corrupt"]).tolist() == [0, 20]
    assert not ev["cut"].any()


def test_repeated_frames_are_not_cuts(traffic):
    frames = [f for f in traffic[:24] for _ in range(3)]  # every frame three times (frame-rate conversion)
    ev = detect_sequence(frames)
    assert not ev["cut"].any() and not ev["corrupt"].any()


def test_long_sequences_are_decided_piecewise_with_the_same_result(xp, joined, monkeypatch):
    frames = [f.copy() for f in joined]
    frames[18][100:150] = 0
    opts = EventOptions()
    dev = [xp.asarray(f) for f in frames]
    ff = [frame_features(f) for f in dev]
    cons = [None] + [pair_features(dev[t - 1], dev[t]) for t in range(1, len(frames))]
    skip = [None] + [pair_features(dev[t - 1], dev[t + 1]) for t in range(1, len(frames) - 1)] + [None]
    whole = detect_events(ff, cons, skip, options=opts)
    monkeypatch.setattr(C, "_PIECE", 17)
    pieces = detect_events(ff, cons, skip, options=opts)
    for k in ("corrupt", "cut", "corrupt_score", "cut_score", "kl_prev"):
        np.testing.assert_array_equal(whole[k], pieces[k], err_msg=k)
    assert np.flatnonzero(whole["corrupt"]).tolist() == [18]


# ------------------------------------------------------------------------------------------ validation
def test_bad_inputs_and_options_are_refused(traffic):
    a, b = traffic[0], traffic[1]
    with pytest.raises(InputError, match="differ in size"):
        pair_features(a, b[:100])
    with pytest.raises(InputError, match="dtype int32"):
        frame_features(a.astype(np.int32))
    with pytest.raises(InputError, match="NaN"):
        frame_features(np.full((4, 4), np.nan, np.float32))
    with pytest.raises(InputError, match="shape"):
        frame_features(np.zeros(5, np.uint8))
    with pytest.raises(ConfigError, match="block_size"):
        pair_features(a, b, block_size=0)
    with pytest.raises(ConfigError, match="color"):
        frame_features(a, color="rgb")
    with pytest.raises(ConfigError, match="window"):
        EventOptions(window=1)
    with pytest.raises(ConfigError, match="spike_ratio"):
        EventOptions(spike_ratio=-1.0)
    with pytest.raises(ConfigError, match="unknown"):
        EventOptions.from_dict({"treshold": 1})
    opts = EventOptions(peak_threshold=6.0)
    assert EventOptions.from_dict(opts.to_dict()) == opts
    ff = [frame_features(f) for f in traffic[:3]]
    with pytest.raises(InputError, match="one of each per frame"):
        detect_events(ff, [None, None], [None, None, None])
    with pytest.raises(InputError, match="not a pair_features dict"):
        detect_events(ff, [None, {}, {}], [None, {}, None])
    short = detect_events(ff[:2], [None, pair_features(a, b)], [None, None])
    assert not short["corrupt"].any() and not short["cut"].any()
