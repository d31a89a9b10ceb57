"""Preprocessing against SciPy, OpenCV and scikit-image on real images."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from gpudiff.backend import to_host
from gpudiff.errors import ConfigError, InputError
from gpudiff.options import CompareOptions
from gpudiff.pair._preprocess import (
    edge_magnitude,
    gaussian_blur,
    match_shapes,
    normalize,
    normalize_pair,
    prepare_pair,
    to_gray,
)

cv2 = pytest.importorskip("cv2")
exposure = pytest.importorskip("skimage.exposure")


def _rgb(path):
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    return np.ascontiguousarray(img[..., ::-1])


def _grey(path):
    return cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)


@pytest.fixture(scope="module")
def camera(data_dir):
    return _grey(data_dir / "skimage-data" / "camera.png")


@pytest.fixture(scope="module")
def astronaut(data_dir):
    return _rgb(data_dir / "skimage-data" / "astronaut.png")


@pytest.fixture(scope="module")
def coffee(data_dir):
    return _rgb(data_dir / "skimage-data" / "coffee.png")


@pytest.fixture(scope="module")
def leuven(data_dir):
    pairs = data_dir / "opencv-samples" / "pairs"
    return _rgb(pairs / "leuvenA.jpg"), _rgb(pairs / "leuvenB.jpg")


def _h(a):
    return np.asarray(to_host(a))


# --------------------------------------------------------------------------------------------------
# grey


def test_gray_is_the_mean_of_channels(xp, astronaut):
    got = to_gray(xp.asarray(astronaut), mode="gray")
    assert got.dtype == xp.float32 and got.shape == astronaut.shape[:2]
    np.testing.assert_allclose(_h(got), astronaut.astype(np.float64).mean(axis=-1), atol=1e-4)


def test_luma_is_bt601(xp, coffee):
    got = _h(to_gray(xp.asarray(coffee), mode="luma"))
    c = coffee.astype(np.float64)
    hand = 0.299 * c[..., 0] + 0.587 * c[..., 1] + 0.114 * c[..., 2]
    np.testing.assert_allclose(got, hand, atol=1e-3)
    # OpenCV's RGB2GRAY is BT.601 too (float input: no fixed-point rounding)
    ocv = cv2.cvtColor(coffee.astype(np.float32), cv2.COLOR_RGB2GRAY)
    np.testing.assert_allclose(got, ocv, atol=1e-3)
    assert got.max() <= 255.0 + 1e-3


def test_luma_differs_from_skimage_rec709(coffee):
    from skimage.color import rgb2gray

    rec709 = rgb2gray(coffee) * 255.0
    assert np.abs(_h(to_gray(coffee, mode="luma")) - rec709).max() > 1.0


def test_gray_passes_grey_images_through(xp, camera):
    img = xp.asarray(camera)
    assert to_gray(img) is img
    assert to_gray(img, mode="luma") is img
    one = to_gray(img[..., None], mode="luma")
    assert one.dtype == xp.uint8 and one.shape == camera.shape
    np.testing.assert_array_equal(_h(one), camera)


def test_luma_needs_three_channels(xp, astronaut):
    with pytest.raises(InputError, match="--color gray"):
        to_gray(xp.asarray(astronaut[..., :2]), mode="luma")
    with pytest.raises(ConfigError):
        to_gray(xp.asarray(astronaut), mode="rec709")


# --------------------------------------------------------------------------------------------------
# shapes


def test_shape_error_names_both_shapes_and_the_fix(xp, camera):
    a = xp.asarray(camera[:480, :500])
    b = xp.asarray(camera[:479, :500])
    with pytest.raises(InputError) as err:
        match_shapes(a, b, names=("left.png", "right.png"))
    msg = str(err.value)
    assert "left.png" in msg and "right.png" in msg
    assert "(480, 500) vs (479, 500)" in msg
    assert "use --shape crop or --shape resize" in msg


def test_same_shapes_pass_through(xp, camera):
    a = xp.asarray(camera)
    b = xp.asarray(camera[::-1])
    ra, rb = match_shapes(a, b, policy="error")
    assert ra is a and rb is b


def test_crop_keeps_the_common_top_left_region(xp, camera, astronaut):
    a = xp.asarray(camera[:400, :300])
    b = xp.asarray(camera[:350, :320])
    ra, rb = match_shapes(a, b, policy="crop")
    assert ra.shape == rb.shape == (350, 300)
    assert ra.dtype == rb.dtype == xp.uint8
    np.testing.assert_array_equal(_h(ra), camera[:350, :300])
    np.testing.assert_array_equal(_h(rb), camera[:350, :300])
    ra, rb = match_shapes(xp.asarray(astronaut[:200]), xp.asarray(astronaut[:, :100]), policy="crop")
    assert ra.shape == rb.shape == (200, 100, 3)


@pytest.mark.parametrize("out_hw", [(512, 512), (300, 700), (1000, 257), (17, 33)])
def test_resize_is_bilinear_with_pixel_centres(xp, camera, out_hw):
    moving = camera[:400, :450]
    ref = np.zeros(out_hw, np.uint8)
    ra, rb = match_shapes(xp.asarray(ref), xp.asarray(moving), policy="resize")
    assert _h(ra).dtype == np.uint8 and rb.dtype == xp.float32 and rb.shape == out_hw
    got = _h(rb)
    ocv = cv2.resize(moving.astype(np.float32), (out_hw[1], out_hw[0]), interpolation=cv2.INTER_LINEAR)
    np.testing.assert_allclose(got, ocv, atol=2e-3)
    zoomed = ndi.zoom(
        moving.astype(np.float64),
        (out_hw[0] / moving.shape[0], out_hw[1] / moving.shape[1]),
        order=1,
        mode="nearest",
        grid_mode=True,
    )
    np.testing.assert_allclose(got, zoomed, atol=2e-3)


def test_resize_keeps_channels(xp, astronaut):
    ref = xp.zeros((256, 300, 3), xp.uint8)
    _, rb = match_shapes(ref, xp.asarray(astronaut), policy="resize")
    assert rb.shape == (256, 300, 3)
    ocv = cv2.resize(astronaut.astype(np.float32), (300, 256), interpolation=cv2.INTER_LINEAR)
    np.testing.assert_allclose(_h(rb), ocv, atol=2e-3)


def test_unknown_shape_policy(xp, camera):
    with pytest.raises(ConfigError):
        match_shapes(xp.asarray(camera), xp.asarray(camera[1:]), policy="pad")


# --------------------------------------------------------------------------------------------------
# normalisation


def test_minmax_stretches_to_0_255(xp, data_dir):
    moon = _grey(data_dir / "skimage-data" / "moon.png")  # a low-contrast image
    got = _h(normalize(xp.asarray(moon), method="minmax"))
    m = moon.astype(np.float64)
    hand = (m - m.min()) / (m.max() - m.min()) * 255.0
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, hand, atol=1e-3)
    assert got.min() == 0.0 and abs(got.max() - 255.0) < 1e-3


def test_zscore(xp, astronaut):
    got = _h(normalize(xp.asarray(astronaut), method="zscore"))
    a = astronaut.astype(np.float64)
    np.testing.assert_allclose(got, (a - a.mean()) / a.std(), atol=1e-5)
    assert abs(got.astype(np.float64).mean()) < 1e-5
    assert abs(got.astype(np.float64).std() - 1.0) < 1e-5


@pytest.mark.parametrize("method", ["minmax", "zscore"])
@pytest.mark.parametrize("value", [0, 37, 255])
def test_constant_image_normalises_to_zeros(xp, method, value):
    img = xp.full((20, 30), value, dtype=xp.uint8)
    got = _h(normalize(img, method=method))
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, np.zeros((20, 30), np.float32))


def test_normalize_none_and_errors(xp, camera):
    img = xp.asarray(camera)
    assert normalize(img, method="none") is img
    with pytest.raises(ConfigError, match="normalize_pair"):
        normalize(img, method="histogram")
    with pytest.raises(ConfigError):
        normalize(img, method="equalize")


def test_histogram_matching_as_skimage_on_the_leuven_pair(xp, leuven):
    a, b = (cv2.cvtColor(im, cv2.COLOR_RGB2GRAY) for im in leuven)
    ra, rb = normalize_pair(xp.asarray(a), xp.asarray(b), method="histogram")
    np.testing.assert_array_equal(_h(ra), a)
    expected = exposure.match_histograms(b, a)
    np.testing.assert_allclose(_h(rb), expected, atol=1e-4)
    # the moving image now has the reference's histogram
    assert np.abs(_h(rb).mean() - a.mean()) < 0.5


def test_histogram_matching_float_and_rgb(xp, leuven):
    a, b = leuven
    af = a.astype(np.float32) / 255.0
    bf = np.sqrt(b.astype(np.float32) / 255.0)
    _, rb = normalize_pair(xp.asarray(af[..., 1]), xp.asarray(bf[..., 1]), method="histogram")
    np.testing.assert_allclose(_h(rb), exposure.match_histograms(bf[..., 1], af[..., 1]), atol=1e-6)
    _, rb = normalize_pair(xp.asarray(a), xp.asarray(b), method="histogram")
    # per channel (skimage's channel_axis=-1 casts the result back to uint8, truncating)
    for c in range(3):
        expected = exposure.match_histograms(b[..., c], a[..., c])
        np.testing.assert_allclose(_h(rb)[..., c], expected, atol=1e-4)


def test_normalize_pair_applies_to_both(xp, leuven):
    a, b = (cv2.cvtColor(im, cv2.COLOR_RGB2GRAY) for im in leuven)
    ra, rb = normalize_pair(xp.asarray(a), xp.asarray(b), method="minmax")
    np.testing.assert_allclose(_h(ra), _h(normalize(a, method="minmax")))
    np.testing.assert_allclose(_h(rb), _h(normalize(b, method="minmax")))


# --------------------------------------------------------------------------------------------------
# blur and edges


@pytest.mark.parametrize("sigma", [0.7, 1.5, 3.0])
def test_blur_is_scipy_gaussian_filter(xp, camera, sigma):
    got = _h(gaussian_blur(xp.asarray(camera), sigma=sigma))
    assert got.dtype == np.float32
    expected = ndi.gaussian_filter(camera.astype(np.float64), sigma, mode="reflect", truncate=4.0)
    np.testing.assert_allclose(got, expected, atol=1e-3)
    # OpenCV with the same kernel size (radius int(4 sigma + 0.5)) and a reflected border
    r = int(4.0 * sigma + 0.5)
    ocv = cv2.GaussianBlur(
        camera.astype(np.float32), (2 * r + 1, 2 * r + 1), sigma, borderType=cv2.BORDER_REFLECT
    )
    np.testing.assert_allclose(got[r:-r, r:-r], ocv[r:-r, r:-r], atol=1e-2)


def test_blur_each_channel_on_its_own(xp, astronaut):
    got = _h(gaussian_blur(xp.asarray(astronaut), sigma=2.0))
    for c in range(3):
        expected = ndi.gaussian_filter(astronaut[..., c].astype(np.float64), 2.0, mode="reflect")
        np.testing.assert_allclose(got[..., c], expected, atol=1e-3)
    np.testing.assert_array_equal(
        _h(gaussian_blur(xp.asarray(astronaut), sigma=0)), astronaut.astype(np.float32)
    )


@pytest.mark.parametrize("method", ["sobel", "prewitt"])
def test_edges_are_scipy_gradient_magnitudes(xp, camera, method):
    f = camera.astype(np.float64)
    op = getattr(ndi, method)
    expected = np.hypot(op(f, axis=0, mode="reflect"), op(f, axis=1, mode="reflect"))
    got = _h(edge_magnitude(xp.asarray(camera), method=method))
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-3)


def test_sobel_agrees_with_opencv(xp, coffee):
    grey = cv2.cvtColor(coffee, cv2.COLOR_RGB2GRAY).astype(np.float32)
    gx = cv2.Sobel(grey, cv2.CV_32F, 1, 0, ksize=3, borderType=cv2.BORDER_REFLECT)
    gy = cv2.Sobel(grey, cv2.CV_32F, 0, 1, ksize=3, borderType=cv2.BORDER_REFLECT)
    got = _h(edge_magnitude(xp.asarray(grey), method="sobel"))
    np.testing.assert_allclose(got, np.hypot(gx, gy), rtol=1e-5, atol=1e-3)  # borders included


def test_edges_per_channel_and_threshold(xp, astronaut):
    got = _h(edge_magnitude(xp.asarray(astronaut), method="sobel"))
    for c in range(3):
        f = astronaut[..., c].astype(np.float64)
        expected = np.hypot(ndi.sobel(f, 0, mode="reflect"), ndi.sobel(f, 1, mode="reflect"))
        np.testing.assert_allclose(got[..., c], expected, rtol=1e-5, atol=1e-3)
    binary = _h(edge_magnitude(xp.asarray(astronaut), method="sobel", threshold=100.0))
    assert binary.dtype == np.float32
    np.testing.assert_array_equal(binary, (got > 100.0).astype(np.float32))


# --------------------------------------------------------------------------------------------------
# prepare_pair


def _prep(xp, a, b, **opts):
    return prepare_pair(xp.asarray(a), xp.asarray(b), CompareOptions(**opts))


def test_uint8_grey_pair_is_left_alone(xp, camera):
    p = _prep(xp, camera, camera[::-1])
    assert p.reference.dtype == p.moving.dtype == xp.uint8
    assert p.value_range == (0.0, 256.0) and p.data_range == 255.0
    assert p.channels == 1 and p.steps == ()


@pytest.mark.parametrize("color", ["gray", "luma"])
def test_rgb_to_grey_keeps_the_uint8_scale(xp, leuven, color):
    a, b = leuven
    p = _prep(xp, a, b, color=color)
    assert p.reference.dtype == p.moving.dtype == xp.float32
    assert p.reference.shape == a.shape[:2]
    assert p.value_range == (0.0, 256.0) and p.data_range == 255.0
    assert p.channels == 1 and p.steps == (color,)
    np.testing.assert_allclose(_h(p.moving), _h(to_gray(b, mode=color)))


def test_uint16_scale(xp, camera):
    a = camera.astype(np.uint16) * 257
    p = _prep(xp, a, a[::-1])
    assert p.reference.dtype == xp.uint16
    assert p.value_range == (0.0, 65536.0) and p.data_range == 65535.0
    rgb = np.stack([a, a, a[::-1]], axis=-1)
    p = _prep(xp, rgb, rgb)
    assert p.reference.dtype == xp.float32
    assert p.value_range == (0.0, 65536.0) and p.data_range == 65535.0


def test_float_scales(xp, camera):
    unit = camera.astype(np.float32) / 255.0
    p = _prep(xp, unit, unit[::-1])
    assert p.reference.dtype == xp.float32 and p.steps == ()
    assert p.value_range == (0.0, 1.0) and p.data_range == 1.0
    wide = camera.astype(np.float64) * 3.0 - 100.0
    p = _prep(xp, wide, wide[::-1] * 0.5)
    assert p.reference.dtype == xp.float64
    lo = min(wide.min(), wide.min() * 0.5)
    hi = max(wide.max(), wide.max() * 0.5)
    assert p.value_range == pytest.approx((lo, hi)) and p.data_range == pytest.approx(hi - lo)


def test_minmax_zscore_and_override(xp, leuven):
    a, b = (cv2.cvtColor(im, cv2.COLOR_RGB2GRAY) for im in leuven)
    p = _prep(xp, a, b, normalize="minmax")
    assert p.value_range == (0.0, 256.0) and p.data_range == 255.0 and p.steps == ("minmax",)
    p = _prep(xp, a, b, normalize="zscore")
    za, zb = _h(p.reference), _h(p.moving)
    lo, hi = min(za.min(), zb.min()), max(za.max(), zb.max())
    assert p.value_range == pytest.approx((lo, hi)) and p.data_range == pytest.approx(hi - lo)
    p = _prep(xp, a, b, normalize="zscore", data_range=8.0)
    assert p.data_range == 8.0 and p.value_range == pytest.approx((lo, hi))
    p = _prep(xp, a, b, normalize="histogram")
    assert p.value_range == (0.0, 256.0) and p.data_range == 255.0
    assert p.reference.dtype == p.moving.dtype == xp.float32


def test_constant_pair_after_zscore(xp):
    a = np.full((16, 16), 9, np.uint8)
    p = _prep(xp, a, a, normalize="zscore")
    assert p.value_range == (0.0, 1.0) and p.data_range == 1.0
    assert float(_h(p.reference).max()) == 0.0


def test_edges_scales(xp, camera):
    p = _prep(xp, camera, camera[::-1], edges="sobel", edge_threshold=50.0)
    assert p.value_range == (0.0, 1.0) and p.data_range == 1.0
    assert set(np.unique(_h(p.reference))) <= {0.0, 1.0}
    assert p.steps == ("sobel", "threshold(50)")
    p = _prep(xp, camera, camera[::-1], edges="prewitt", blur=1.0)
    assert p.steps == ("blur(1)", "prewitt")
    hi = max(_h(p.reference).max(), _h(p.moving).max())
    lo = min(_h(p.reference).min(), _h(p.moving).min())
    assert p.data_range == pytest.approx(hi - lo) and p.value_range == pytest.approx((lo, hi))


def test_blur_keeps_the_scale(xp, camera):
    p = _prep(xp, camera, camera, blur=1.5)
    assert p.reference.dtype == xp.float32 and p.steps == ("blur(1.5)",)
    assert p.value_range == (0.0, 256.0) and p.data_range == 255.0
    np.testing.assert_allclose(_h(p.reference), _h(gaussian_blur(camera, sigma=1.5)))


def test_rgb_mode_needs_matching_channels(xp, camera, astronaut):
    with pytest.raises(InputError) as err:
        _prep(xp, camera, astronaut, color="rgb")
    assert str(err.value) == "reference has 1 channel(s), moving has 3: use --color gray or --color luma"
    p = _prep(xp, astronaut, astronaut[::-1], color="rgb")
    assert p.channels == 3 and p.reference.dtype == xp.uint8 and p.reference.shape == astronaut.shape
    p = _prep(xp, camera, camera[..., None], color="rgb")
    assert p.channels == 1 and p.reference.shape == p.moving.shape == camera.shape
    assert p.reference.dtype == xp.uint8


def test_prepare_shape_policies(xp, camera, astronaut):
    with pytest.raises(InputError) as err:
        prepare_pair(
            xp.asarray(camera[:480]), xp.asarray(camera[:479]), CompareOptions(), names=("a.png", "b.png")
        )
    assert (
        "a.png and b.png differ in shape (480, 512) vs (479, 512): use --shape crop or --shape resize"
        in str(err.value)
    )
    p = _prep(xp, camera[:480], camera[:479, :500], shape="crop")
    assert p.reference.shape == p.moving.shape == (479, 500) and p.reference.dtype == xp.uint8
    assert p.steps == ("crop(479,500)",)
    p = _prep(xp, astronaut, astronaut[:300, :400], shape="resize", color="rgb")
    assert p.moving.shape == astronaut.shape and p.reference.dtype == xp.float32
    assert p.value_range == (0.0, 256.0) and p.data_range == 255.0 and p.steps == ("resize(512,512)",)


def test_mixed_dtypes_become_float32(xp, camera):
    p = _prep(xp, camera, camera.astype(np.uint16))
    assert p.reference.dtype == p.moving.dtype == xp.float32
    assert p.data_range == 65535.0
    p = _prep(xp, camera, camera.astype(np.float32))
    assert p.reference.dtype == xp.float32 and p.data_range == 255.0


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32, np.float64])
@pytest.mark.parametrize("channels", [2, 3, 4])
def test_gray_equals_numpys_float32_mean_bit_for_bit(dtype, channels):
    rng = np.random.default_rng(channels)
    top = {np.uint8: 255, np.uint16: 65535}.get(dtype, 1.0)
    a = (rng.random((37, 53, channels)) * top).astype(dtype)
    np.testing.assert_array_equal(to_gray(a), np.mean(a, axis=-1, dtype=np.float32))
