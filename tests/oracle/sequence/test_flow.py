"""gpudiff.sequence._flow against scikit-image's optical_flow_ilk, OpenCV's pyramidal Lucas-Kanade and corner
response, and ground truth: known subpixel translations of a real image and the Middlebury 2014
"Motorcycle" stereo pair (horizontal motion = disparity).

Conventions: gpudiff and scikit-image return ``(v, u)`` with ``reference[r, c] ~ moving[r + v, c + u]``.
OpenCV's ``calcOpticalFlowPyrLK`` takes and returns ``(x, y)`` points: gpudiff's displacement
``(v, u) = (next_y - y, next_x - x)``. Motorcycle: ``right_x = left_x - disp``, so with
``reference = left`` and ``moving = right`` the true flow is ``(0, -disp)``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2")
skimage_registration = pytest.importorskip("skimage.registration")
scipy_ndimage = pytest.importorskip("scipy.ndimage")

from gpudiff.backend import to_host  # noqa: E402
from gpudiff.errors import ConfigError, InputError  # noqa: E402
from gpudiff.sequence._flow import flow_magnitude_stats, optical_flow_lk, track_corners  # noqa: E402

sk_ilk = skimage_registration.optical_flow_ilk


def _grey(path) -> np.ndarray:
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert img is not None, path
    return img.astype(np.float32).mean(axis=2)


def _blocks(a: np.ndarray, s: int) -> np.ndarray:
    """Mean over s x s blocks (cropped to a multiple of s); an inf in a block gives inf."""
    h, w = (a.shape[0] // s) * s, (a.shape[1] // s) * s
    return a[:h, :w].reshape(h // s, s, w // s, s).mean(axis=(1, 3))


@pytest.fixture(scope="module")
def pairs(data_dir):
    """Real consecutive frames, grey float32 in [0, 1], downscaled by 2 (block mean) for speed."""
    p = data_dir / "opencv-samples" / "pairs"
    out = {}
    for name, (a, b) in {
        "rubberwhale": ("rubberwhale1.png", "rubberwhale2.png"),
        "basketball": ("basketball1.png", "basketball2.png"),
    }.items():
        out[name] = tuple(
            np.ascontiguousarray(_blocks(_grey(p / f), 2) / 255.0, dtype=np.float32) for f in (a, b)
        )
    return out


@pytest.fixture(scope="module")
def camera(data_dir) -> np.ndarray:
    return cv2.imread(str(data_dir / "skimage-data" / "camera.png"), cv2.IMREAD_GRAYSCALE)


@pytest.fixture(scope="module")
def motorcycle(motorcycle_quarter):
    """(left, right, true_u, valid) at 1/4 scale: 185x125 grey in [0, 255], disparity / 4."""
    left, right, disp = motorcycle_quarter
    valid = np.isfinite(disp)
    return left, right, np.where(valid, -disp, 0.0), valid


def _epe(flow, true_u, valid) -> float:
    flow = np.asarray(to_host(flow), dtype=np.float64)
    return float(np.hypot(flow[0][valid], flow[1][valid] - true_u[valid]).mean())


# ----------------------------------------------------------------------------------------------
# dense: against scikit-image's optical_flow_ilk (same algorithm and pyramid)


@pytest.mark.parametrize("name", ["rubberwhale", "basketball"])
@pytest.mark.parametrize(
    "options",
    [{}, {"gaussian": True}, {"prefilter": True, "num_warp": 3}, {"radius": 3, "num_warp": 5}],
    ids=["default", "gaussian", "prefilter", "r3"],
)
def test_matches_skimage_ilk_on_real_pairs(xp, pairs, name, options):
    ref, mov = pairs[name]
    ours = to_host(optical_flow_lk(xp.asarray(ref), xp.asarray(mov), **options))
    theirs = sk_ilk(ref, mov, **options)
    assert ours.shape == theirs.shape == (2, *ref.shape)
    assert ours.dtype == np.float32
    # Measured (float32, NumPy): mean |diff| 1e-6 to 6e-5, 99.9th percentile <= 0.0055 px, max 0.04 px
    # (rounding: a 2x2 closed form here, LAPACK's solve there); mean |flow| 0.35-1.3 px.
    diff = np.abs(ours - theirs)
    assert diff.mean() < 5e-4
    assert np.percentile(diff, 99.9) < 0.02
    assert np.abs(theirs).mean() > 0.1  # a real motion was compared, not two zero fields


def test_matches_skimage_ilk_float64(xp, pairs):
    ref, mov = pairs["basketball"]
    ref64, mov64 = ref.astype(np.float64), mov.astype(np.float64)
    ours = to_host(optical_flow_lk(xp.asarray(ref64), xp.asarray(mov64), dtype=np.float64))
    theirs = sk_ilk(ref64, mov64, dtype=np.float64)
    assert ours.dtype == np.float64
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-6)  # measured: 3e-8


def test_integer_input_scaled_like_skimage(xp, camera):
    """uint8 images are scaled to [0, 1] (as scikit-image's img_as_float) before the solve."""
    ref = camera[::4, ::4]
    mov = np.roll(ref, (1, -2), axis=(0, 1))
    ours = to_host(optical_flow_lk(xp.asarray(ref), xp.asarray(mov), num_warp=3))
    theirs = sk_ilk(ref, mov, num_warp=3)
    assert np.abs(ours - theirs).mean() < 1e-4


# ----------------------------------------------------------------------------------------------
# dense: known motion


@pytest.mark.parametrize(
    "shift, mean_tol",
    # Measured mean errors: 0.07/0.12 px, 0.10/0.09 px (subpixel: bilinear warping of a sharp image
    # biases iterative LK; scikit-image's optical_flow_ilk gives the same numbers), 0 for a whole shift.
    [((1.3, -2.6), 0.15), ((-0.4, 0.7), 0.15), ((1.0, -2.0), 1e-3)],
)
def test_recovers_translation(xp, camera, shift, mean_tol):
    """moving(r, c) = camera(r - dy, c - dx)  =>  reference(r, c) = moving(r + dy, c + dx): flow = shift."""
    base = camera[128:384, 128:384].astype(np.float64)  # the textured middle (the man, the tripod)
    moving = scipy_ndimage.shift(base, shift, order=3, mode="nearest")
    ref32, mov32 = base.astype(np.float32), moving.astype(np.float32)
    flow = to_host(optical_flow_lk(xp.asarray(ref32), xp.asarray(mov32)))
    inner = flow[:, 16:-16, 16:-16]
    for axis in range(2):
        err = np.abs(inner[axis] - shift[axis])
        assert abs(np.median(inner[axis]) - shift[axis]) < 0.03  # measured <= 0.02
        assert err.mean() < mean_tol


def test_identical_images_give_zero_flow(xp, pairs):
    ref, _ = pairs["rubberwhale"]
    flow = to_host(optical_flow_lk(xp.asarray(ref), xp.asarray(ref.copy())))
    assert np.abs(flow).max() < 1e-5


def test_returns_on_the_inputs_namespace(xp, pairs):
    ref, mov = pairs["rubberwhale"]
    flow = optical_flow_lk(xp.asarray(ref), xp.asarray(mov), num_warp=1)
    assert type(flow).__module__.split(".")[0] == xp.__name__.split(".")[0]
    assert flow.shape == (2, *ref.shape)


# ----------------------------------------------------------------------------------------------
# dense: Motorcycle stereo (horizontal motion = disparity), 1/4 scale


def test_motorcycle_endpoint_error(xp, motorcycle):
    left, right, true_u, valid = motorcycle
    ours = optical_flow_lk(xp.asarray(left), xp.asarray(right))
    epe = _epe(ours, true_u, valid)
    epe_sk = _epe(sk_ilk(left, right), true_u, valid)
    # Measured: gpudiff 1.434 px, scikit-image 1.431 px (disparities 4-15 px; the errors are in
    # occlusions and textureless areas, the >3 px share is 16 %).
    assert epe < 1.6
    assert epe < 1.05 * epe_sk
    # Without the pyramid, motion beyond the window is not found (measured 6.6 px).
    epe_flat = _epe(optical_flow_lk(xp.asarray(left), xp.asarray(right), levels=1), true_u, valid)
    assert epe_flat > 3 * epe


# ----------------------------------------------------------------------------------------------
# magnitude statistics (hand-computed)


def test_flow_magnitude_stats_hand_computed(xp):
    v = np.array([[3.0, 0.0], [0.0, 0.0]])
    u = np.array([[4.0, 0.0], [1.0, 0.0]])
    flow = xp.asarray(np.stack((v, u)).astype(np.float32))
    # magnitudes 5, 0, 1, 0: mean 1.5; sorted (0, 0, 1, 5), rank 0.95 * 3 = 2.85 -> 1 + 0.85 * 4 = 4.4
    stats = flow_magnitude_stats(flow)
    assert stats == pytest.approx({"flow_mean": 1.5, "flow_p95": 4.4}, abs=1e-12)
    assert all(isinstance(x, float) for x in stats.values())
    # valid excludes the top-right 0: magnitudes (5, 1, 0): mean 2, rank 1.9 -> 1 + 0.9 * 4 = 4.6
    valid = xp.asarray(np.array([[True, False], [True, True]]))
    stats = flow_magnitude_stats(flow, valid=valid)
    assert stats == pytest.approx({"flow_mean": 2.0, "flow_p95": 4.6}, abs=1e-12)
    empty = flow_magnitude_stats(flow, valid=xp.zeros((2, 2), dtype=bool))
    assert math.isnan(empty["flow_mean"]) and math.isnan(empty["flow_p95"])


def test_flow_magnitude_stats_of_a_translation(xp, camera):
    flow = np.empty((2, 64, 80), dtype=np.float32)
    flow[0], flow[1] = 3.0, -4.0
    stats = flow_magnitude_stats(xp.asarray(flow))
    assert stats["flow_mean"] == pytest.approx(5.0, abs=1e-6)
    assert stats["flow_p95"] == pytest.approx(5.0, abs=1e-6)


def test_flow_magnitude_stats_rejects_bad_shapes(xp):
    with pytest.raises(InputError, match=r"\(2, height, width\)"):
        flow_magnitude_stats(xp.zeros((3, 4, 4)))
    with pytest.raises(InputError, match="valid has shape"):
        flow_magnitude_stats(xp.zeros((2, 4, 4)), valid=xp.ones((4, 5), dtype=bool))


# ----------------------------------------------------------------------------------------------
# sparse: Shi-Tomasi corners + pyramidal LK, against OpenCV


def test_corner_response_is_opencv_min_eigenvalue(camera):
    from gpudiff.backend import ndimage
    from gpudiff.sequence._corners import _min_eigenvalue

    ours = _min_eigenvalue(camera.astype(np.float32) / 255.0, ndimage(np), np)
    theirs = cv2.cornerMinEigenVal(camera, blockSize=3, ksize=3)
    # OpenCV scales its Sobel derivatives of 0..255 images by 1 / (4 * 3 * 255) for block 3, ksize 3:
    # its eigenvalues are (255 / (12 * 255))**2 = 1/144 of ours, in [0, 1] units.
    inner = (slice(4, -4), slice(4, -4))
    strong = ours[inner] > 1e-3 * ours.max()
    np.testing.assert_allclose(theirs[inner][strong], ours[inner][strong] / 144.0, rtol=2e-3)


def test_track_corners_matches_opencv_pyrlk(xp, data_dir):
    p = data_dir / "opencv-samples" / "pairs"
    ref = cv2.imread(str(p / "rubberwhale1.png"), cv2.IMREAD_GRAYSCALE)
    mov = cv2.imread(str(p / "rubberwhale2.png"), cv2.IMREAD_GRAYSCALE)
    points, disp, status = (to_host(a) for a in track_corners(xp.asarray(ref), xp.asarray(mov)))
    assert points.shape[0] == disp.shape[0] == status.shape[0] > 100
    xy = np.ascontiguousarray(points[:, ::-1], dtype=np.float32).reshape(-1, 1, 2)
    nxt, cv_status, _ = cv2.calcOpticalFlowPyrLK(
        ref, mov, xy, None, winSize=(15, 15), maxLevel=3,
        criteria=(cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 20, 0.01),
    )  # fmt: skip
    cv_disp = (nxt.reshape(-1, 2) - xy.reshape(-1, 2))[:, ::-1]
    both = status & (cv_status.ravel() == 1)
    assert both.mean() > 0.9
    err = np.hypot(*(disp[both] - cv_disp[both]).T)
    # Measured: median 0.004 px, 90th percentile 0.02 px, 0.2 % beyond 0.5 px; motion ~0.75 px.
    assert np.median(err) < 0.02
    assert np.percentile(err, 90) < 0.1
    assert (err > 0.5).mean() < 0.02


def test_track_corners_recovers_translation(xp, camera):
    shift = (1.3, -2.6)
    moving = scipy_ndimage.shift(camera.astype(np.float64), shift, order=3, mode="nearest")
    moving = np.clip(np.round(moving), 0, 255).astype(np.uint8)
    points, disp, status = (to_host(a) for a in track_corners(xp.asarray(camera), xp.asarray(moving)))
    assert status.sum() > 300
    err = np.abs(disp[status] - np.array(shift))
    # Measured: medians (0.026, 0.016) px, 99th percentiles (0.13, 0.08) px, max 0.31 px (OpenCV on the
    # same points: 0.026, 0.016 / 0.09, 0.07).
    assert np.all(np.median(err, axis=0) < 0.05)
    assert err.max() < 1.0
    # Corners lie inside the border margin and are local maxima at least min_distance + 1 apart.
    assert points[:, 0].min() >= 8 and points[:, 1].max() <= camera.shape[1] - 9
    gaps = np.abs(points[:, None, :] - points[None, :, :]).max(axis=2) + np.eye(len(points)) * 1e9
    assert gaps.min() >= 8


def test_track_corners_given_points(xp, camera):
    moving = np.roll(camera, (2, -3), axis=(0, 1))  # reference(r, c) = moving(r + 2, c - 3)
    corners, _, _ = track_corners(xp.asarray(camera), xp.asarray(camera), max_corners=5)
    tracked = track_corners(xp.asarray(camera), xp.asarray(moving), points=corners)
    _, disp, status = (to_host(a) for a in tracked)
    assert status.all() and disp.shape == (5, 2)
    np.testing.assert_allclose(disp, np.tile([2.0, -3.0], (5, 1)), atol=0.02)


# ----------------------------------------------------------------------------------------------
# validation


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"radius": 0}, ConfigError, "radius=0"),
        ({"radius": 2.5}, ConfigError, "radius=2.5"),
        ({"num_warp": 0}, ConfigError, "num_warp=0"),
        ({"levels": 0}, ConfigError, "levels=0"),
        ({"dtype": np.int32}, ConfigError, "float32 or float64"),
    ],
)
def test_rejects_bad_options(xp, kwargs, error, match):
    a = xp.zeros((8, 8), dtype=xp.float32)
    with pytest.raises(error, match=match):
        optical_flow_lk(a, a, **kwargs)


def test_rejects_bad_images(xp):
    a = xp.zeros((8, 8), dtype=xp.float32)
    with pytest.raises(InputError, match=r"differ in shape"):
        optical_flow_lk(a, xp.zeros((8, 9), dtype=xp.float32))
    with pytest.raises(InputError, match="to_gray"):
        optical_flow_lk(xp.zeros((8, 8, 3)), xp.zeros((8, 8, 3)))
    with pytest.raises(InputError, match=r"\(height, width\)"):
        optical_flow_lk(xp.zeros(8), xp.zeros(8))
    with pytest.raises(InputError, match="at least 2 pixels"):
        optical_flow_lk(xp.zeros((1, 8)), xp.zeros((1, 8)))
    bad = np.zeros((8, 8), dtype=np.float32)
    bad[3, 3] = np.nan
    with pytest.raises(InputError, match="NaN or infinite"):
        optical_flow_lk(a, xp.asarray(bad))
    with pytest.raises(InputError, match="complex"):
        optical_flow_lk(xp.zeros((8, 8), dtype=xp.complex64), a)


def test_track_corners_rejects_bad_options(xp):
    a = xp.zeros((32, 32), dtype=xp.float32)
    with pytest.raises(ConfigError, match="quality_level"):
        track_corners(a, a, quality_level=1.5)
    with pytest.raises(InputError, match=r"\(K, 2\)"):
        track_corners(a, a, points=xp.zeros((4, 3)))
