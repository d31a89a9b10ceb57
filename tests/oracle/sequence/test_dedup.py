"""Time-lapse keep/drop on real sequences, against ground truth and the sequential definition."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from gpudiff.engine import dedup
from gpudiff.sequence._dedup import DedupOptions, Deduplicator, change_score, estimate_noise
from gpudiff.errors import ConfigError
from gpudiff.io._images import read_image
from gpudiff.io import open_source

NP = {"backend": "numpy"}


def _sequential(frames, options, load=None):
    judge = Deduplicator(options, load=load)
    return [judge.decide(i, f) for i, f in enumerate(frames)]


class _ListSource:
    """A source over frames in memory (for sequences made in the test)."""

    def __init__(self, frames):
        self.frames = frames

    def __len__(self):
        return len(self.frames)

    def read(self, i):
        return self.frames[i]

    def label(self, i):
        return f"frame {i}"


def test_tree_avi_keeps_every_distinct_frame_and_drops_every_repeat(data_dir):
    src = open_source(data_dir / "opencv-samples/video/tree.avi")
    frames = [src.read(i) for i in range(len(src))]
    distinct = [0] + [i for i in range(1, len(frames)) if not np.array_equal(frames[i], frames[i - 1])]
    with open(data_dir / "opencv-samples/ground_truth/tree_duplicates.csv") as f:
        truth_unique = len({row["source_unique_frame"] for row in csv.DictReader(f)})
    r = dedup(src, options=DedupOptions(**NP))
    assert truth_unique == 68
    assert r.kept.tolist() == distinct
    assert len(distinct) == 68
    # every dropped frame is identical to the kept frame it was compared with
    for i in np.flatnonzero(~r.keep):
        assert np.array_equal(frames[i], frames[r.reference[i]])


def test_newtons_cradle_non_adjacent_repeats_are_found(data_dir):
    src = open_source(data_dir / "imageio-standard/newtonscradle.gif")
    with open(data_dir / "imageio-standard/newtonscradle_exact_duplicates.csv") as f:
        pairs = [(int(r["frame_a"]), int(r["frame_b"])) for r in csv.DictReader(f)]
    r = dedup(src, options=DedupOptions(**NP))
    found = sorted((int(r.repeat_of[i]), int(i)) for i in np.flatnonzero(r.repeat_of >= 0))
    assert found == sorted(pairs)
    assert not r.keep[[b for _, b in pairs]].any()
    # with repeats allowed they are kept: each of them changed since the previous kept frame
    r2 = dedup(src, options=DedupOptions(drop_repeats=False, **NP))
    assert r2.keep[[b for _, b in pairs]].all()


def test_stuck_tif_noise_only_frames_are_dropped(data_dir):
    src = open_source(data_dir / "pims-testdata/stuck.tif")
    r = dedup(src, options=DedupOptions(**NP))
    assert r.kept.tolist() == [0]
    # and a real change of a few particles' size is not: paint a 12x12 bright spot into a frame
    frames = [src.read(i) for i in range(len(src))]
    frames[3] = frames[3].copy()
    frames[3][100:112, 200:212] += 60
    r = dedup(_ListSource(frames), options=DedupOptions(**NP))
    assert r.kept.tolist() == [0, 3]


def _drifting_sequence(data_dir, n=40):
    """camera.png panning 0.04 px per frame with noise, some frames exact repeats: slow drift."""
    from scipy import ndimage

    cam = read_image(data_dir / "skimage-data/camera.png").astype(np.float32)[100:228, 100:260]
    rng = np.random.default_rng(3)
    frames = []
    for t in range(n):
        if t % 7 == 3:
            frames.append(frames[-1].copy())
            continue
        f = ndimage.shift(cam, (0, 0.04 * t), order=1, mode="nearest") + rng.normal(0, 2.0, cam.shape)
        frames.append(np.clip(f, 0, 255).astype(np.uint8))
    return frames


@pytest.mark.parametrize("rule", ["pixels", "blocks"])
def test_parallel_equals_sequential_with_drift(data_dir, rule):
    frames = _drifting_sequence(data_dir)
    options = DedupOptions(rule=rule, **NP)
    seq = _sequential(frames, options, load=frames.__getitem__)
    kept = [d.index for d in seq if d.keep]
    # slow drift is caught against the last kept frame although consecutive frames barely differ
    assert 1 < len(kept) < len(frames) // 2
    for workers, block in ((1, 256), (2, 256), (3, 7), (4, 5)):
        r = dedup(_ListSource(frames), options=options, workers=workers, block=block)
        assert r.keep.tolist() == [d.keep for d in seq]
        assert r.reference.tolist() == [d.reference for d in seq]
        np.testing.assert_array_equal(r.statistic, [d.statistic for d in seq])


def test_resume_from_state_gives_the_same_decisions(data_dir):
    frames = _drifting_sequence(data_dir)
    src = _ListSource(frames)
    whole = dedup(src, options=DedupOptions(**NP))
    head = Deduplicator(DedupOptions(**NP))
    for i in range(17):
        head.decide(i, frames[i])
    tail = dedup(src, options=DedupOptions(**NP), start=17, state=head.state(), block=6, workers=2)
    assert tail.keep.tolist() == whole.keep[17:].tolist()


def test_consecutive_only_is_not_the_rule(data_dir):
    # compared only with the previous frame, the slow drift would never count: the last kept does
    frames = _drifting_sequence(data_dir)
    options = DedupOptions(**NP)
    prev_changed = [change_score(frames[i - 1], frames[i], options=options).changed for i in range(1, len(frames))]
    r = dedup(_ListSource(frames), options=options)
    assert r.keep[1:].sum() > sum(prev_changed)


# ---- light ----------------------------------------------------------------------------------------


def _exposed(frame, fn):
    top = np.iinfo(frame.dtype).max
    return np.clip(fn(frame.astype(np.float64), top), 0, top).astype(frame.dtype)


EXPOSURES = {
    "darker x0.8": lambda x, top: 0.8 * x,
    "darker x0.6": lambda x, top: 0.6 * x,
    "gamma 1.25": lambda x, top: top * (x / top) ** 1.25,
}


@pytest.mark.parametrize("light", ["gain", "histogram", "edges"])
@pytest.mark.parametrize("exposure", list(EXPOSURES))
def test_brightness_change_alone_is_not_a_change(data_dir, light, exposure):
    src = open_source(data_dir / "opencv-samples/video/vtest.avi")
    f0, f30 = src.read(0), src.read(30)  # pedestrians walked between the two
    fn = EXPOSURES[exposure]
    plain = DedupOptions(**NP)
    robust = DedupOptions(light=light, **NP)
    if exposure != "gamma 1.25" or light == "histogram":  # only a histogram match undoes a curve
        assert not change_score(f0, _exposed(f0, fn), options=robust).changed
    assert change_score(f0, _exposed(f0, fn), options=plain).changed
    assert change_score(f0, _exposed(f30, fn), options=robust).changed


def test_real_sequence_with_brightness_scaled(data_dir):
    src = open_source(data_dir / "pims-testdata/stuck.tif")
    gains = [1.0, 0.8, 1.25, 0.9, 1.1]
    frames = [_exposed(src.read(i), lambda x, top, g=g: g * x) for i, g in enumerate(gains)]
    assert dedup(_ListSource(frames), options=DedupOptions(**NP)).kept.tolist() == [0, 1, 2, 3, 4]
    for light in ("gain", "histogram", "edges"):
        assert dedup(_ListSource(frames), options=DedupOptions(light=light, **NP)).kept.tolist() == [0]


def test_leuven_pair_is_two_views_not_an_exposure_change(data_dir):
    # MANIFEST calls leuvenA/B an illumination pair; they are two views of a square (a stitching
    # pair): every mode must call them changed, however the light is compensated.
    a = read_image(data_dir / "opencv-samples/pairs/leuvenA.jpg")
    b = read_image(data_dir / "opencv-samples/pairs/leuvenB.jpg")
    for light in ("none", "gain", "histogram", "edges"):
        assert change_score(a, b, options=DedupOptions(light=light, **NP)).statistic > 0.3


# ---- the pieces ---------------------------------------------------------------------------------


@pytest.mark.parametrize("sigma", [3.0, 10.0, 25.0])
def test_noise_estimate_matches_scikit_image(data_dir, sigma):
    from skimage.restoration import estimate_sigma

    cam = read_image(data_dir / "skimage-data/camera.png").astype(np.float64)
    noisy = cam + np.random.default_rng(0).normal(0, sigma, cam.shape)
    ours = estimate_noise(noisy.astype(np.float32))
    theirs = estimate_sigma(noisy)
    # camera.png's own texture and noise read as ~1.3 to both estimators; the added noise swamps it
    assert abs(ours - theirs) / theirs < 0.05
    assert abs(ours - sigma) / sigma < (0.5 if sigma < 5 else 0.15)


def test_noise_estimate_of_stuck_is_its_sensor_noise(data_dir):
    # README: consecutive frames differ by sensor noise only, MAD of the difference ~5.4
    src = open_source(data_dir / "pims-testdata/stuck.tif")
    a, b = src.read(0).astype(np.float64), src.read(1).astype(np.float64)
    d = a - b
    sigma_from_pair = np.median(np.abs(d - np.median(d))) / 0.6745 / np.sqrt(2)
    assert abs(estimate_noise(src.read(0)) - sigma_from_pair) / sigma_from_pair < 0.25


def test_block_rule_by_hand(xp):
    a = np.full((32, 48), 100, np.uint8)
    opts = DedupOptions(rule="blocks", **NP)
    for level, changed in ((12, False), (13, True)):  # 8x8 block SAD 768 is not over hi=768; 832 is
        b = a.copy()
        b[8:16, 16:24] += level
        s = change_score(xp.asarray(a), xp.asarray(b), options=opts)
        assert s.changed is changed
        assert s.statistic == pytest.approx(64 * level / 768)
    # many blocks a little over lo: 5 levels on 9 of 24 blocks (37.5% > 33%) counts
    b = a.copy()
    b[:24, :24] += 6
    s = change_score(a, b, options=opts)
    assert s.changed and s.statistic == pytest.approx((9 / 24) / 0.33)
    # uint16 is scaled to 8 bits
    s16 = change_score(a.astype(np.uint16) * 257, b.astype(np.uint16) * 257, options=opts)
    assert s16.statistic == pytest.approx(s.statistic)


def test_pixel_rule_with_a_fixed_noise_level(xp):
    a = np.zeros((10, 10), np.uint8)
    b = a.copy()
    b[0, :3] = [31, 32, 33]
    s = change_score(xp.asarray(a), xp.asarray(b), options=DedupOptions(noise=32, min_changed=0.005, **NP))
    assert s.statistic == pytest.approx(0.01) and s.changed  # only 33 is over 32


def test_metric_rule(data_dir):
    src = open_source(data_dir / "pims-testdata/stuck.tif")
    a, b = src.read(0), src.read(1)
    from skimage.metrics import structural_similarity

    ssim = structural_similarity(a, b, data_range=65535, gaussian_weights=True, sigma=1.5,
                                 use_sample_covariance=False)
    s = change_score(a, b, options=DedupOptions(rule="metric", metric="ssim", threshold=ssim + 1e-6, **NP))
    assert s.changed and s.statistic == pytest.approx(ssim, abs=1e-6)
    s = change_score(a, b, options=DedupOptions(rule="metric", metric="ssim", threshold=ssim - 1e-6, **NP))
    assert not s.changed


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"rule": "fast"}, "--rule 'fast'"),
        ({"light": "sun"}, "--light 'sun'"),
        ({"noise": "loud"}, "--noise 'loud'"),
        ({"noise": -1}, "--noise -1"),
        ({"min_changed": 1.5}, "--min-changed 1.5"),
        ({"rule": "metric"}, "needs --metric"),
        ({"rule": "metric", "metric": "ssim"}, "needs --threshold"),
        ({"k": 0}, "--k 0"),
    ],
)
def test_options_are_checked(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        DedupOptions(**kwargs)


def test_unreadable_frame_is_failed_and_the_rest_go_on():
    frames = [np.full((16, 16), v, np.uint8) for v in (0, 0, 50, 50, 90)]

    class Broken(_ListSource):
        def read(self, i):
            if i == 2:
                from gpudiff.errors import InputError

                raise InputError("frame 2: truncated file")
            return super().read(i)

    r = dedup(Broken(frames), options=DedupOptions(**NP))
    assert r.failed.tolist() == [False, False, True, False, False]
    assert "truncated" in r.reason[2]
    assert r.kept.tolist() == [0, 3, 4]


def test_unreadable_first_frame_and_mostly_dropped_blocks():
    # frame 0 unreadable: frame 1 is the first kept; a long static stretch switches the driver to
    # windows only, and the decisions still equal the sequential walk
    base = np.add.outer(np.arange(24) * 4, np.arange(24) * 3).astype(np.uint8)
    moved = base.copy()
    moved[5:15, 5:15] = 250  # something enters
    frames = [base] * 30 + [moved] + [base] * 5
    bad = {0, 17}

    class Broken(_ListSource):
        def read(self, i):
            if i in bad:
                from gpudiff.errors import InputError

                raise InputError(f"frame {i}: corrupt")
            return super().read(i)

    options = DedupOptions(**NP)
    judge = Deduplicator(options)
    want = []
    for i, f in enumerate(frames):
        want.append(judge.fail(i, "x") if i in bad else judge.decide(i, f))
    for block in (4, 256):
        r = dedup(Broken(frames), options=options, block=block, workers=2)
        assert r.failed.tolist() == [d.failed for d in want]
        assert r.keep.tolist() == [d.keep for d in want]
    assert r.kept.tolist() == [1, 30]  # 31 repeats kept frame 1 exactly
    assert r.repeat_of[31] == 1


def test_align_ignores_a_shaking_camera(data_dir):
    # whole-pixel camera shake (crops of camera.png at jittered offsets) plus sensor noise; an
    # object appears in frame 10 only
    cam = read_image(data_dir / "skimage-data/camera.png").astype(np.float32)
    rng = np.random.default_rng(4)
    frames = []
    for t in range(16):
        dy, dx = rng.integers(-3, 4, 2)
        f = cam[100 + dy : 300 + dy, 150 + dx : 350 + dx] + rng.normal(0, 2.0, (200, 200))
        if t == 10:
            f[60:90, 60:90] = 255
        frames.append(np.clip(f, 0, 255).astype(np.uint8))
    shaken = dedup(_ListSource(frames), options=DedupOptions(**NP))
    assert shaken.keep.sum() > 8  # every shake looks like a change
    steady = dedup(_ListSource(frames), options=DedupOptions(align=True, **NP))
    assert steady.kept.tolist() == [0, 10, 11]


def test_metric_rule_with_align(data_dir):
    src = open_source(data_dir / "pims-testdata/stuck.tif")
    a = src.read(0)
    b = np.roll(src.read(1), (2, -3), axis=(0, 1))
    plain = change_score(a, b, options=DedupOptions(rule="metric", metric="ssim", threshold=0.5, **NP))
    aligned = change_score(a, b, options=DedupOptions(rule="metric", metric="ssim", threshold=0.5, align=True, **NP))
    assert aligned.statistic > plain.statistic  # registered, the frames agree better
