"""gpudiff.sequence._background against hand-computed values, an independent float64 NumPy loop, SciPy's
``ndimage.shift``, OpenCV's MOG2 and the CDnet 2014 ground truth (cameraJitter/traffic, frames
950-1050), plus the exactness of tiling (tiled == whole, bit for bit).

CDnet rules (changedetection.net): ground truth 255 = foreground, 0 and 50 (shadow) = background,
85 (outside the ROI) and 170 (unknown, motion boundaries) are not counted; pixels outside ROI.bmp
are not counted either. Here ROI.bmp is 352x240 (the frames are 320x240) and entirely 255, so every
pixel is inside; ROI.jpg is a photograph, not a mask, and is not used.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2")
scipy_ndimage = pytest.importorskip("scipy.ndimage")

from gpudiff.backend import to_host  # noqa: E402
from gpudiff.sequence import score_foreground  # noqa: E402
from gpudiff.sequence._background import (
    BackgroundModel,
    BackgroundOptions,
    Tile,
    background_subtract,
    estimate_shift,
    mask_to_frame,
    plan_tiles,
)
from gpudiff.errors import ConfigError, InputError  # noqa: E402



# ----------------------------------------------------------------------------------------------
# CDnet data and scoring


@pytest.fixture(scope="module")
def cdnet(cdnet_traffic):
    return cdnet_traffic  # (frames, gt, inside): tests/conftest.py


def cdnet_scores(masks, gt, inside):
    """Precision, recall, F-measure summed over all frames, with CDnet's labels (the package's scorer)."""
    s = score_foreground(masks, gt, roi=inside)
    return s.precision, s.recall, s.f_measure


def test_cdnet_scorer_by_hand():
    gt = np.array([[[255, 255, 0, 50, 85, 170, 255, 0]]], dtype=np.uint8)
    masks = np.array([[[1, 0, 1, 1, 1, 1, 1, 0]]], dtype=bool)
    # tp: cols 0, 6 -> 2; fn: col 1 -> 1; fp: cols 2, 3 -> 2; 85 and 170 ignored
    p, r, f = cdnet_scores(masks, gt, np.ones((1, 8), bool))
    assert (p, r) == pytest.approx((2 / 4, 2 / 3))
    assert f == pytest.approx(2 * 0.5 * (2 / 3) / (0.5 + 2 / 3))
    # outside the ROI nothing counts; parts add up to the whole
    roi = np.array([[1, 1, 1, 0, 1, 1, 0, 1]], bool)
    s = score_foreground(masks, gt, roi=roi)
    assert (s.tp, s.fp, s.fn) == (1, 1, 1)
    halves = score_foreground(masks[..., :4], gt[..., :4]) + score_foreground(masks[..., 4:], gt[..., 4:])
    assert halves == score_foreground(masks, gt)
    with pytest.raises(InputError, match="differ in shape"):
        score_foreground(masks[..., :4], gt)


# Measured with the defaults on all 101 frames (numpy, this machine): align off F = 0.789,
# align on F = 0.844; OpenCV MOG2 with its defaults F = 0.465. Floors a little below.
F_FLOOR = 0.77
F_FLOOR_ALIGNED = 0.82


def test_cdnet_f_measure_and_alignment(cdnet):
    frames, gt, inside = cdnet
    masks, fractions = background_subtract(frames, options=BackgroundOptions())
    assert masks.shape == gt.shape and masks.dtype == bool
    np.testing.assert_array_equal(fractions, masks.mean(axis=(1, 2), dtype=np.float64))
    p, r, f = cdnet_scores(masks, gt, inside)
    assert f >= F_FLOOR, (p, r, f)

    aligned, _ = background_subtract(frames, options=BackgroundOptions(align=True))
    pa, ra, fa = cdnet_scores(aligned, gt, inside)
    assert fa >= F_FLOOR_ALIGNED, (pa, ra, fa)
    assert fa > f + 0.03, (fa, f)

    mog2 = cv2.createBackgroundSubtractorMOG2()
    m2 = np.stack([mog2.apply(cv2.cvtColor(fr, cv2.COLOR_RGB2BGR)) == 255 for fr in frames])
    assert f > cdnet_scores(m2, gt, inside)[2] + 0.1  # shadows (127) count as background


def test_cdnet_tiled_equals_whole(cdnet, xp):
    frames, _, _ = cdnet
    frames = frames[:24]
    options = BackgroundOptions(init_frames=5, cleanup_radius=2, align=True, upsample_factor=2)
    shifts = [estimate_shift(frames[0], f, options=options) for f in frames]
    assert any(not float(s).is_integer() for sh in shifts for s in sh)  # bilinear path exercised
    whole = BackgroundModel(options=options, xp=xp)
    for tile_shape in [(64, 64), (240, 33), (17, 29)]:
        tiles = plan_tiles(frames[0].shape, tile_shape, halo=options.halo)
        models = [BackgroundModel(options=options, tile=t, xp=xp) for t in tiles]
        whole = BackgroundModel(options=options, xp=xp)
        seen = 0
        for f, s in zip(frames, shifts):
            ref = to_host(whole.update(f, shift=s))
            out = np.zeros_like(ref)
            for t, m in zip(tiles, models):
                out[t.core_slices] = to_host(m.update(f, shift=s))
            np.testing.assert_array_equal(out, ref)
            seen += int(ref.sum())
        assert seen > 1000  # there was foreground to clean
        for t, m in zip(tiles, models):
            for name in ("mean", "var", "count"):
                a = to_host(getattr(m.state, name))[t.crop]
                b = to_host(getattr(whole.state, name))[t.core_slices]
                np.testing.assert_array_equal(a, b)


@pytest.mark.gpu
def test_cupy_matches_numpy_bitwise(cdnet, cp):
    frames = cdnet[0][:20]
    options = BackgroundOptions(init_frames=5, align=True, upsample_factor=4, color="channels")
    shifts = [estimate_shift(frames[0], f, options=options) for f in frames]
    a, b = BackgroundModel(options=options, xp=np), BackgroundModel(options=options, xp=cp)
    for f, s in zip(frames, shifts):
        np.testing.assert_array_equal(a.update(f, shift=s), cp.asnumpy(b.update(f, shift=s)))
    for name in ("mean", "var", "count"):
        np.testing.assert_array_equal(getattr(a.state, name), cp.asnumpy(getattr(b.state, name)))


# ----------------------------------------------------------------------------------------------
# hand-computed


def _const(xp, value, shape=(2, 3), dtype=np.uint8):
    return xp.asarray(np.full(shape, value, dtype=dtype))


def test_hand_computed_mean_std_and_update(xp):
    o = BackgroundOptions(k=2, min_std=0, learning_rate=0.5, init_frames=3, cleanup_radius=0)
    m = BackgroundModel(options=o)
    for v in (10, 12, 14):  # initialisation: reported as background
        assert not to_host(m.update(_const(xp, v))).any()
    # mean 12, population variance ((-2)^2 + 0 + 2^2) / 3 = 8/3
    np.testing.assert_allclose(to_host(m.mean), 12, rtol=1e-6)
    np.testing.assert_allclose(to_host(m.std), math.sqrt(8 / 3), rtol=1e-6)
    assert to_host(m.initialized).all()
    # k * std = 3.266: 17 (|d| = 5) is foreground and leaves the model alone (selective update)
    assert to_host(m.update(_const(xp, 17))).all()
    np.testing.assert_allclose(to_host(m.mean), 12, rtol=1e-6)
    np.testing.assert_allclose(to_host(m.std), math.sqrt(8 / 3), rtol=1e-6)
    # 15 (|d| = 3) is background: mean 12 + 0.5 * 3 = 13.5, var 0.5 * (8/3 + 0.5 * 9) = 3.58333
    assert not to_host(m.update(_const(xp, 15))).any()
    np.testing.assert_allclose(to_host(m.mean), 13.5, rtol=1e-6)
    np.testing.assert_allclose(to_host(m.std) ** 2, 0.5 * (8 / 3 + 4.5), rtol=1e-5)
    assert m.state.frames == 5


def test_min_std_floor(xp):
    # a still pixel has std 0; min_std = 0.02 of 255 = 5.1 grey levels, k = 1
    o = BackgroundOptions(k=1, min_std=0.02, init_frames=4, cleanup_radius=0)
    m = BackgroundModel(options=o)
    for _ in range(4):
        m.update(_const(xp, 100))
    assert to_host(m.std).max() == 0
    assert not to_host(m.classify(_const(xp, 105))).any()  # 5 <= 5.1
    assert to_host(m.classify(_const(xp, 106))).all()  # 6 > 5.1
    assert to_host(m.classify(_const(xp, 94))).all()
    # uint16 frames: the same fraction of 65535
    m16 = BackgroundModel(options=o)
    for _ in range(4):
        m16.update(_const(xp, 30000, dtype=np.uint16))
    assert not to_host(m16.classify(_const(xp, 30000 + 1310, dtype=np.uint16))).any()  # 1310 < 1310.7
    assert to_host(m16.classify(_const(xp, 30000 + 1311, dtype=np.uint16))).all()


def test_channels_any_versus_gray(xp):
    # only red moves, by 40; min_std = 0.1 (25.5 levels), k = 1: red is out of its band, the grey
    # mean moves by 40 / 3 = 13.3 and stays in
    base = np.full((3, 4, 3), 100, np.uint8)
    red = base.copy()
    red[..., 0] += 40
    for color, expect in (("channels", True), ("gray", False)):
        o = BackgroundOptions(k=1, min_std=0.1, init_frames=2, cleanup_radius=0, color=color)
        m = BackgroundModel(options=o)
        m.update(xp.asarray(base))
        m.update(xp.asarray(base))
        assert (to_host(m.classify(xp.asarray(red))) == expect).all(), color
    # a grey frame, (H, W) or (H, W, 1), is the same under both
    g = [np.full((3, 4), v, np.uint8) for v in (10, 20, 30, 80)]
    outs = []
    for color, frames in [("channels", g), ("gray", g), ("channels", [f[:, :, None] for f in g])]:
        m = BackgroundModel(options=BackgroundOptions(init_frames=3, cleanup_radius=0, color=color))
        outs.append([to_host(m.update(xp.asarray(f))) for f in frames] + [to_host(m.mean)])
    assert outs[0][3].all()  # 80 after 10, 20, 30
    for other in outs[1:]:
        for a, b in zip(outs[0], other):
            np.testing.assert_array_equal(a, b)


def test_non_finite_pixels_are_ignored(xp):
    o = BackgroundOptions(init_frames=2, cleanup_radius=0, k=2, min_std=0.01)
    m = BackgroundModel(options=o)
    f = np.full((2, 3), 0.5, np.float32)
    bad = f.copy()
    bad[0, 0], bad[1, 2] = np.nan, np.inf
    m.update(xp.asarray(f))
    m.update(xp.asarray(bad))  # not counted at the two bad pixels
    ready = to_host(m.initialized)
    assert ready.sum() == 4 and not ready[0, 0] and not ready[1, 2]
    assert np.isfinite(to_host(m.mean)).all()
    mask = to_host(m.update(xp.asarray(bad + 0.4)))
    np.testing.assert_array_equal(mask, ready)  # foreground where a model exists and data is finite


@pytest.mark.parametrize("radius", [1, 2, 3])
def test_cleanup_matches_scipy_morphology(xp, radius):
    # a still background, then a frame whose raw mask is exactly a random pattern
    rng = np.random.default_rng(radius)
    blobs = scipy_ndimage.gaussian_filter(rng.random((41, 53)), 3) > 0.5
    pattern = blobs ^ (rng.random(blobs.shape) < 0.08)  # blobs with specks and holes
    background = np.full(pattern.shape, 30, np.uint8)
    frame = (background + 150 * pattern).astype(np.uint8)
    m = BackgroundModel(options=BackgroundOptions(init_frames=1, cleanup_radius=radius))
    m.update(xp.asarray(background))
    got = to_host(m.classify(xp.asarray(frame)))
    yy, xx = np.mgrid[-radius : radius + 1, -radius : radius + 1]
    disk = yy**2 + xx**2 <= radius**2
    erode = lambda a: scipy_ndimage.binary_erosion(a, disk, border_value=1)  # noqa: E731
    dilate = lambda a: scipy_ndimage.binary_dilation(a, disk, border_value=0)  # noqa: E731
    expect = erode(dilate(dilate(erode(pattern))))  # opening, then closing
    assert 0.05 < expect.mean() < 0.95 and (expect != pattern).any()
    np.testing.assert_array_equal(got, expect)
    m0 = BackgroundModel(options=BackgroundOptions(init_frames=1, cleanup_radius=0))
    m0.update(xp.asarray(background))
    np.testing.assert_array_equal(to_host(m0.classify(xp.asarray(frame))), pattern)


# ----------------------------------------------------------------------------------------------
# against an independent float64 loop


def _loop_oracle(frames, *, k, min_std, lr, flr, n_init):
    """Plain NumPy float64: mean/variance of the first n_init frames, then exponentially
    weighted updates where the pixel is background (or at flr where foreground)."""
    stack = np.stack([f.astype(np.float64) for f in frames])
    mean = stack[:n_init].mean(axis=0)
    var = stack[:n_init].var(axis=0)
    init_masks = [np.abs(x - mean) > k * np.maximum(np.sqrt(var), min_std) for x in stack[:n_init]]
    masks, margins = [], []
    for x in stack[n_init:]:
        band = k * np.maximum(np.sqrt(var), min_std)
        fg = np.abs(x - mean) > band
        margins.append(np.abs(np.abs(x - mean) - band) / band)
        masks.append(fg)
        rate = np.where(fg, flr, lr)
        new_mean = (1 - rate) * mean + rate * x
        var = (1 - rate) * var + rate * (1 - rate) * (x - mean) ** 2
        mean = new_mean
    return init_masks, masks, mean, var, min(float(m.min()) for m in margins)


@pytest.mark.parametrize("flr", [0.0, 0.03])
def test_against_numpy_loop(xp, flr):
    rng = np.random.default_rng(7)
    n, n_init = 40, 6
    frames = rng.normal(0.5, 0.03, size=(n, 9, 11)).astype(np.float32)
    frames[15:25, 2:5, 3:8] += 0.3  # an object passes
    frames[30:, 6:, :] += 0.05  # a lasting change: absorbed only through flr
    kw = dict(k=2.5, min_std=0.02, lr=0.1, flr=flr, n_init=n_init)
    init_masks, masks, mean, var, margin = _loop_oracle(list(frames), **kw)
    assert margin > 1e-4  # no pixel sits on the threshold, so float32 and float64 agree
    o = BackgroundOptions(k=2.5, min_std=0.02, learning_rate=0.1, foreground_learning_rate=flr,
                          init_frames=n_init, cleanup_radius=0)
    m = BackgroundModel(options=o)
    got = [to_host(m.update(xp.asarray(f))) for f in frames]
    for g in got[:n_init]:
        assert not g.any()
    np.testing.assert_array_equal(np.stack(got[n_init:]), np.stack(masks))
    assert np.stack(masks)[9:12, 2:5, 3:8].all()  # the object was found (flr > 0 absorbs it later)
    np.testing.assert_allclose(to_host(m.mean), mean, rtol=2e-5)
    np.testing.assert_allclose(to_host(m.std) ** 2, var, rtol=2e-3, atol=1e-9)
    # background_subtract classifies the initialisation frames against the initialised model
    all_masks, fractions = background_subtract([xp.asarray(f) for f in frames], options=o)
    np.testing.assert_array_equal(all_masks[:n_init], np.stack(init_masks))
    np.testing.assert_array_equal(all_masks[n_init:], np.stack(masks))
    assert fractions.dtype == np.float64 and fractions.shape == (n,)


def test_fewer_frames_than_init(xp):
    frames = [xp.asarray(np.full((4, 4), v, np.uint8)) for v in (1, 200)]
    masks, fractions = background_subtract(frames, options=BackgroundOptions(init_frames=5))
    assert masks.shape == (2, 4, 4) and not masks.any() and (fractions == 0).all()


# ----------------------------------------------------------------------------------------------
# alignment


@pytest.fixture(scope="module")
def camera(data_dir):
    im = cv2.imread(str(data_dir / "skimage-data" / "camera.png"), cv2.IMREAD_GRAYSCALE)
    return im[100:300, 100:340]


def test_align_known_shifts(camera, xp):
    H, W, B = 120, 160, 20
    offsets = [(0, 0), (3, -5), (-7, 2), (6, 8), (-2, -9), (4, 1)]
    frames = [camera[B + oy : B + oy + H, B + ox : B + ox + W] for oy, ox in offsets]
    # frame[r, c] = camera[B + oy + r, ...] = first[r + oy, ...]: first[r, c] = frame[r - oy, c - ox]
    for f, off in zip(frames, offsets):
        assert estimate_shift(xp.asarray(frames[0]), xp.asarray(f)) == off
    o = BackgroundOptions(align=True, init_frames=len(frames), cleanup_radius=1)
    m = BackgroundModel(options=o)
    for f in frames:
        assert not to_host(m.update(xp.asarray(f))).any()
    # every frame was moved onto the first: where all of them cover, the mean is the first frame
    ready = to_host(m.initialized)
    covered = np.zeros((H, W), bool)
    covered[6 : H - 7, 8 : W - 9] = True  # max(oy) <= r < H + min(oy), the same for columns
    np.testing.assert_array_equal(ready, covered)
    np.testing.assert_array_equal(to_host(m.mean)[ready], frames[0][ready].astype(np.float32))
    # an object in a shifted frame is reported at its place in the first frame's grid
    f = camera[B + 4 : B + 4 + H, B - 6 : B - 6 + W].copy()
    f[50:70, 60:90] = np.where(f[50:70, 60:90] > 127, 0, 255)  # |change| >= 128
    raw = to_host(m.classify(xp.asarray(f)))
    assert raw[54:74, 54:84].mean() > 0.9 and raw.sum() < 1.1 * 600
    back = to_host(mask_to_frame(xp.asarray(raw), (4, -6)))
    assert back[50:70, 60:90].mean() > 0.9 and back.sum() == raw.sum()


def test_subpixel_shift_matches_scipy(camera, xp):
    frame = camera[:90, :110]
    for shift in [(1.25, -2.5), (-0.5, 0.75), (3.0, 0.5)]:
        m = BackgroundModel(options=BackgroundOptions(init_frames=1, cleanup_radius=0))
        m.update(xp.asarray(frame), shift=shift)
        ref = scipy_ndimage.shift(frame.astype(np.float64), shift, order=1, mode="constant", cval=np.nan)
        ready = to_host(m.initialized)
        np.testing.assert_array_equal(ready, ~np.isnan(ref))
        np.testing.assert_allclose(to_host(m.mean)[ready], ref[ready], rtol=1e-5, atol=1e-4)


def test_mask_to_frame_by_hand(xp):
    mask = np.zeros((5, 6), bool)
    mask[1, 2] = mask[4, 5] = True
    out = to_host(mask_to_frame(xp.asarray(mask), (1, -2)))  # out[r, c] = mask[r + 1, c - 2]
    expect = np.zeros((5, 6), bool)
    expect[0, 4] = True  # mask[1, 2]; mask[4, 5] would land at (3, 7): outside
    np.testing.assert_array_equal(out, expect)


# ----------------------------------------------------------------------------------------------
# validation


@pytest.mark.parametrize(
    "kw",
    [dict(k=0), dict(k=-1), dict(k=float("nan")), dict(min_std=-0.1), dict(learning_rate=0),
     dict(learning_rate=1.5), dict(foreground_learning_rate=-0.1), dict(init_frames=0),
     dict(init_frames=2.5), dict(cleanup_radius=-1), dict(color="rgb"), dict(align="yes"),
     dict(upsample_factor=0), dict(data_range=0)],
)
def test_bad_options(kw):
    with pytest.raises(ConfigError, match=next(iter(kw))):
        BackgroundOptions(**kw)


def test_bad_frames(xp):
    m = BackgroundModel(options=BackgroundOptions(init_frames=1))
    with pytest.raises(InputError, match="shape"):
        m.update(xp.zeros((5,), dtype=xp.uint8))
    with pytest.raises(InputError, match="dtype"):
        m.update(xp.zeros((5, 5), dtype=bool))
    m.update(xp.zeros((5, 5), dtype=xp.uint8))
    with pytest.raises(InputError, match=r"\(5, 6\).*\(5, 5\)"):
        m.update(xp.zeros((5, 6), dtype=xp.uint8))
    with pytest.raises(InputError, match="uint16.*uint8"):
        m.update(xp.zeros((5, 5), dtype=xp.uint16))
    with pytest.raises(InputError, match="shift"):
        m.update(xp.zeros((5, 5), dtype=xp.uint8), shift=(1,))
    with pytest.raises(InputError, match="finite"):
        m.update(xp.zeros((5, 5), dtype=xp.uint8), shift=(np.nan, 0))
    with pytest.raises(ConfigError, match="update"):
        BackgroundModel().classify(xp.zeros((5, 5), dtype=xp.uint8))
    with pytest.raises(InputError, match="no frames"):
        background_subtract([])
    with pytest.raises(ConfigError, match="coordinates"):
        background_subtract([xp.zeros((5, 5), dtype=xp.uint8)], coordinates="screen")


def test_bad_tiles(xp):
    frame = xp.zeros((20, 30), dtype=xp.uint8)
    with pytest.raises(InputError, match="does not fit"):
        BackgroundModel(tile=Tile((0, 10, 0, 40), (0, 10, 0, 40))).update(frame)
    tile = plan_tiles(frame.shape, (8, 8), halo=4)[4]
    with pytest.raises(ConfigError, match="shift"):
        BackgroundModel(options=BackgroundOptions(align=True), tile=tile).update(frame)
    with pytest.raises(ConfigError, match="tile_shape"):
        plan_tiles((20, 30), (0, 8))
