"""Invariants of gpudiff.pair._align: shifts recovered exactly on real textured crops, the overlap of a
registered pair is identical, defined results on degenerate input, and clear errors."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gpudiff.backend import to_host
from gpudiff.pair._align import Alignment, phase_cross_correlation
from gpudiff.pair._overlap import register_overlap
from gpudiff.errors import ConfigError, InputError

# the xp fixture is a module (immutable): safe to share across hypothesis examples
SETTINGS = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def _read_grey(path) -> np.ndarray:
    from PIL import Image  # noqa: PLC0415 - Pillow is a dependency of the package

    return np.asarray(Image.open(path).convert("L"))


@pytest.fixture(scope="module")
def brick(data_dir):
    return _read_grey(data_dir / "skimage-data" / "brick.png")


@pytest.fixture(scope="module")
def camera(data_dir):
    return _read_grey(data_dir / "skimage-data" / "camera.png")


def _lost(d: float) -> int:
    """Pixels of overlap lost to a shift d: |d| if whole (within 1e-6, as register_overlap), else ceil(|d|)."""
    i = np.floor(d)
    f = d - i
    if f < 1e-6:
        f = 0.0
    elif f > 1 - 1e-6:
        i, f = i + 1, 0.0
    return int(abs(i)) if f == 0 else int(i + 1 if i >= 0 else -i)


def _wrapped(d: int, n: int) -> int:
    d %= n
    return d - n if d > n // 2 else d


# ----------------------------------------------------------------------------------------------
# shift recovery


@SETTINGS
@given(
    h=st.integers(48, 160),
    w=st.integers(48, 160),
    y0=st.integers(0, 300),
    x0=st.integers(0, 300),
    fy=st.floats(-0.25, 0.25),
    fx=st.floats(-0.25, 0.25),
    which=st.sampled_from(["camera", "brick"]),
)
def test_circular_roll_recovered_exactly(xp, camera, brick, h, w, y0, x0, fy, fx, which):
    im = {"camera": camera, "brick": brick}[which]
    crop = im[y0 : y0 + h, x0 : x0 + w]
    if crop.std() < 5:  # a flat patch of sky has nothing to correlate
        return
    sy, sx = int(fy * h), int(fx * w)
    moving = np.roll(crop, (sy, sx), axis=(0, 1))
    got = phase_cross_correlation(xp.asarray(crop), xp.asarray(moving))
    assert got.shift == (_wrapped(-sy, h), _wrapped(-sx, w))
    assert got.confidence > 0.99
    ref_part, mov_part = register_overlap(xp.asarray(crop), xp.asarray(moving), got.shift)
    np.testing.assert_array_equal(to_host(ref_part), to_host(mov_part))


@SETTINGS
@given(
    h=st.integers(96, 200),
    w=st.integers(96, 200),
    fy=st.floats(-0.25, 0.25),
    fx=st.floats(-0.25, 0.25),
    upsample=st.sampled_from([1, 1, 10]),
)
def test_crop_window_shift_recovered_exactly(xp, brick, h, w, fy, fx, upsample):
    """A window moved by (sy, sx) inside a real textured image: overlap >= 56%, no wrap-around."""
    sy, sx = int(fy * h), int(fx * w)
    y0, x0 = 60, 60
    ref = brick[y0 : y0 + h, x0 : x0 + w]
    mov = brick[y0 + sy : y0 + sy + h, x0 + sx : x0 + sx + w]
    got = phase_cross_correlation(xp.asarray(ref), xp.asarray(mov), upsample_factor=upsample)
    if upsample == 1:
        assert got.shift == (sy, sx)
    else:
        # the crop edges (no wrap-around) pull the interpolated peak towards 0: by up to 0.2 px when
        # a quarter of the window is not shared (scikit-image gives the same, e.g. 0.8 for 1 at
        # 96x96 with sx=24); the integer estimate is exact (above)
        np.testing.assert_allclose(got.shift, (sy, sx), atol=0.25)
    # the peak height falls with the overlap fraction (about 0.5 to 0.9 of it on brick.png); the
    # noise floor here is about 3 / sqrt(h * w) < 0.03
    overlap = (1 - abs(sy) / h) * (1 - abs(sx) / w)
    assert got.confidence > 0.35 * overlap
    ref_part, mov_part = register_overlap(xp.asarray(ref), xp.asarray(mov), (sy, sx))
    assert ref_part.shape == (h - abs(sy), w - abs(sx))
    np.testing.assert_array_equal(to_host(ref_part), to_host(mov_part))


@SETTINGS
@given(sy=st.integers(-40, 40), sx=st.integers(-40, 40), hide=st.integers(0, 60))
def test_masked_crop_shift_recovered_exactly(xp, brick, sy, sx, hide):
    """Masked NCC with a zero (invalid) band in the moving image, as in a registered mosaic."""
    ref = brick[100:260, 100:260].astype(np.float32)
    mov = brick[100 + sy : 260 + sy, 100 + sx : 260 + sx].astype(np.float32).copy()
    mov[:hide] = 0
    got = phase_cross_correlation(
        xp.asarray(ref), xp.asarray(mov), reference_mask=xp.asarray(ref != 0), moving_mask=xp.asarray(mov != 0)
    )
    assert got.shift == (sy, sx)
    assert got.confidence > 0.99


def test_noise_has_low_confidence_and_a_match_high(xp):
    rng = np.random.default_rng(0)
    a = rng.random((256, 256), dtype=np.float32)
    b = rng.random((256, 256), dtype=np.float32)
    assert phase_cross_correlation(xp.asarray(a), xp.asarray(b)).confidence < 0.05
    assert phase_cross_correlation(xp.asarray(a), xp.asarray(np.roll(a, 9, axis=1))).confidence > 0.99
    masked = phase_cross_correlation(xp.asarray(a), xp.asarray(b), reference_mask=xp.ones(a.shape, bool))
    assert masked.confidence < 0.1


def test_confidence_independent_of_upsample(xp, camera):
    a = camera.astype(np.float64)
    b = np.fft.ifft2(np.fft.fft2(a) * np.exp(-2j * np.pi * 0.5 * np.fft.fftfreq(512))[None, :]).real
    one = phase_cross_correlation(xp.asarray(a), xp.asarray(b))
    ten = phase_cross_correlation(xp.asarray(a), xp.asarray(b), upsample_factor=10)
    assert one.confidence == ten.confidence
    assert 0.85 < ten.confidence <= 1.0
    assert ten.shift == (0.0, -0.5)


def test_skimage_convention_documented_example(xp, camera):
    b = np.roll(camera, (3, -5), axis=(0, 1))
    assert phase_cross_correlation(xp.asarray(camera), xp.asarray(b)).shift == (-3, 5)


# ----------------------------------------------------------------------------------------------
# register_overlap


@SETTINGS
@given(
    dy=st.floats(-12, 12, allow_nan=False),
    dx=st.floats(-12, 12, allow_nan=False),
    channels=st.sampled_from([None, 3]),
)
def test_register_overlap_exact_for_linear_images(xp, dy, dx, channels):
    """Linear interpolation is exact on a linear ramp: a registered fractional shift gives equal parts."""
    h, w = 40, 53
    rr, cc = np.mgrid[0:h, 0:w].astype(np.float64)
    ref = 3.0 * rr - 2.0 * cc + 7.0
    mov = 3.0 * (rr + dy) - 2.0 * (cc + dx) + 7.0  # mov[r, c] = ref at (r + dy, c + dx)
    if channels:
        ref = np.stack([ref, 2 * ref, -ref], axis=-1)
        mov = np.stack([mov, 2 * mov, -mov], axis=-1)
    ref_part, mov_part = register_overlap(xp.asarray(ref), xp.asarray(mov), (dy, dx))
    assert ref_part.shape == mov_part.shape
    # no extrapolation: the overlap shrinks by ceil(|d|) (|d| for a whole shift)
    assert ref_part.shape[:2] == (h - _lost(dy), w - _lost(dx))
    # (a shift snapped to a whole number leaves up to 1e-6 px * slope 6 of difference)
    np.testing.assert_allclose(to_host(mov_part), to_host(ref_part), atol=1e-4)


@SETTINGS
@given(dy=st.floats(-10, 10, allow_nan=False), dx=st.floats(-10, 10, allow_nan=False))
def test_register_overlap_equals_ndimage_shift_order1(xp, camera, dy, dx):
    from scipy import ndimage  # noqa: PLC0415

    ref = camera[100:164, 200:290].astype(np.float32)
    mov = camera[50:114, 30:120].astype(np.float32)
    ref_part, mov_part = register_overlap(xp.asarray(ref), xp.asarray(mov), (dy, dx))
    # register_overlap treats components within 1e-6 of a whole number as whole
    snapped = tuple(float(round(d)) if abs(d - round(d)) < 1e-6 else d for d in (dy, dx))
    expected = ndimage.shift(mov.astype(np.float64), snapped, order=1, mode="constant", cval=np.nan)
    r0 = max(0, _lost(dy) if dy > 0 else 0)
    c0 = max(0, _lost(dx) if dx > 0 else 0)
    window = expected[r0 : r0 + ref_part.shape[0], c0 : c0 + ref_part.shape[1]]
    assert np.isfinite(window).all()  # nothing from outside moving was used
    np.testing.assert_allclose(to_host(mov_part), window, rtol=1e-5, atol=1e-3)
    np.testing.assert_array_equal(to_host(ref_part), ref[r0 : r0 + ref_part.shape[0], c0 : c0 + ref_part.shape[1]])


def test_register_overlap_integer_is_views(xp):
    ref = xp.arange(12 * 9, dtype=xp.uint16).reshape(12, 9)
    mov = xp.arange(12 * 9, dtype=xp.uint16).reshape(12, 9) + 1
    rp, mp = register_overlap(ref, mov, (2, -3))
    assert xp.shares_memory(rp, ref) and xp.shares_memory(mp, mov)
    assert rp.dtype == mp.dtype == xp.uint16
    assert rp.shape == mp.shape == (10, 6)
    np.testing.assert_array_equal(to_host(rp), to_host(ref[2:, 0:6]))
    np.testing.assert_array_equal(to_host(mp), to_host(mov[0:10, 3:9]))


def test_register_overlap_fraction_dtype_and_alignment_input(xp):
    ref = xp.zeros((10, 10), dtype=xp.uint8)
    rp, mp = register_overlap(ref, ref, Alignment((0.5, 0.0), 1.0))
    assert mp.dtype == xp.float32 and rp.shape == mp.shape == (9, 10)
    rp, mp = register_overlap(ref.astype(xp.float64), ref.astype(xp.float64), (0.0, -2.25))
    assert mp.dtype == xp.float64 and rp.shape == (10, 7)
    # within 1e-6 of a whole number counts as whole: a view, no shrinking
    rp, mp = register_overlap(ref, ref, (2.9999999999, 0.0))
    assert mp.dtype == xp.uint8 and rp.shape == (7, 10)


def test_register_overlap_different_sizes(xp):
    ref = xp.arange(20 * 30).reshape(20, 30)
    mov = ref[5:15, 8:28]  # mov[r, c] = ref[r + 5, c + 8] -> ref[r, c] = mov[r - 5, c - 8]
    rp, mp = register_overlap(ref, mov, (5, 8))
    assert rp.shape == (10, 20)
    np.testing.assert_array_equal(to_host(rp), to_host(mp))


@pytest.mark.parametrize(
    "shift", [(10, 0), (-10, 0), (0, 7), (0, -7), (9.5, 0), (-9.2, 0), (100, 100)]
)
def test_register_overlap_no_overlap_raises(xp, shift):
    ref = xp.zeros((10, 7))
    with pytest.raises(InputError, match="no overlap"):
        register_overlap(ref, ref, shift)


@pytest.mark.parametrize("shift", [(9, 6), (-9, -6), (8.5, 5.5), (-8.5, -5.5)])
def test_register_overlap_one_pixel_left(xp, shift):
    ref = xp.ones((10, 7))
    rp, mp = register_overlap(ref, ref, shift)
    assert rp.shape == mp.shape == (1, 1)


@pytest.mark.parametrize("bad", [(np.nan, 0), (0, np.inf), (1,), "ab", None])
def test_register_overlap_bad_shift(xp, bad):
    ref = xp.zeros((4, 4))
    with pytest.raises(InputError):
        register_overlap(ref, ref, bad)


def test_register_overlap_bad_shapes(xp):
    with pytest.raises(InputError, match="beyond"):
        register_overlap(xp.zeros((4, 4, 3)), xp.zeros((4, 4)), (0, 0))
    with pytest.raises(InputError):
        register_overlap(xp.zeros(4), xp.zeros(4), (0, 0))


# ----------------------------------------------------------------------------------------------
# edge cases of phase_cross_correlation


def _quiet(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with np.errstate(all="raise"):
            return fn(*args, **kwargs)


@pytest.mark.parametrize("upsample", [1, 20])
@pytest.mark.parametrize("shape", [(1, 1), (1, 7), (7, 1), (5, 5), (64, 33)])
@pytest.mark.parametrize("values", [(0, 0), (3, 3), (0, 255), (-1.5, 7.25)])
def test_constant_images(xp, shape, values, upsample):
    a = xp.full(shape, values[0], dtype=xp.float32)
    b = xp.full(shape, values[1], dtype=xp.float32)
    got = _quiet(phase_cross_correlation, a, b, upsample_factor=upsample)
    assert got == Alignment((0.0, 0.0), 0.0, "phase", upsample, 0.0)  # nothing to match: significance 0
    masked = _quiet(phase_cross_correlation, a, b, reference_mask=xp.ones(shape, bool))
    assert masked == Alignment((0.0, 0.0), 0.0, "masked_ncc", 1)


def test_one_by_one(xp):
    for a, b in [(1.0, 2.0), (5, 5)]:
        got = _quiet(phase_cross_correlation, xp.full((1, 1), a), xp.full((1, 1), b))
        assert got.shift == (0.0, 0.0) and got.confidence == 0.0


def test_empty_or_disjoint_masks(xp):
    rng = np.random.default_rng(1)
    a = xp.asarray(rng.random((32, 32)))
    none = xp.zeros((32, 32), bool)
    got = _quiet(phase_cross_correlation, a, a, reference_mask=none)
    assert got == Alignment((0.0, 0.0), 0.0, "masked_ncc", 1)


@pytest.mark.parametrize("upsample", [1, 4])
@pytest.mark.parametrize("shape", [(1, 64), (64, 1), (1, 63), (63, 1)])
def test_single_row_or_column(xp, shape, upsample):
    rng = np.random.default_rng(2)
    a = rng.random(shape)
    b = np.roll(a, 5).reshape(shape)
    got = _quiet(phase_cross_correlation, xp.asarray(a), xp.asarray(b), upsample_factor=upsample)
    expected = (-5.0, 0.0) if shape[1] == 1 else (0.0, -5.0)
    assert got.shift == expected
    assert got.confidence > 0.99


@pytest.mark.parametrize("shape", [(33, 47), (47, 33), (64, 96), (31, 31), (50, 51)])
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int32, np.float32, np.float64, bool])
def test_shapes_and_dtypes(xp, camera, shape, dtype):
    crop = camera[150 : 150 + shape[0], 200 : 200 + shape[1]]
    if dtype is bool:
        crop = crop > np.median(crop)
    elif dtype == np.uint16:
        crop = crop.astype(np.uint16) * 257
    else:
        crop = crop.astype(dtype)
    mov = np.roll(crop, (4, -6), axis=(0, 1))
    got = _quiet(phase_cross_correlation, xp.asarray(crop), xp.asarray(mov))
    assert got.shift == (-4.0, 6.0)
    sub = _quiet(phase_cross_correlation, xp.asarray(crop), xp.asarray(mov), upsample_factor=8)
    assert sub.shift == (-4.0, 6.0)
    masked = _quiet(phase_cross_correlation, xp.asarray(crop), xp.asarray(mov), reference_mask=xp.ones(shape, bool))
    # the circular roll's seam is just data to NCC: the window overlap still finds the shift
    assert masked.shift == (-4.0, 6.0)


def test_nyquist_shift_even_size_wraps_like_skimage(xp):
    rng = np.random.default_rng(3)
    a = rng.random((16, 16))
    got = phase_cross_correlation(xp.asarray(a), xp.asarray(np.roll(a, 8, axis=0)))
    assert got.shift == (8.0, 0.0)  # index n/2 stays positive (scikit-image's midpoint rule)


def test_shift_values_are_python_floats(xp, camera):
    got = phase_cross_correlation(xp.asarray(camera), xp.asarray(camera), upsample_factor=5)
    assert all(type(v) is float for v in got.shift) and type(got.confidence) is float
    assert got.is_integer and got.to_dict()["method"] == "phase"


# ----------------------------------------------------------------------------------------------
# errors


def test_errors(xp):
    a = xp.zeros((8, 8))
    with pytest.raises(InputError, match="2-D"):
        phase_cross_correlation(xp.zeros((8, 8, 3)), xp.zeros((8, 8, 3)))
    with pytest.raises(InputError, match="shape"):
        phase_cross_correlation(a, xp.zeros((8, 9)))
    with pytest.raises(InputError, match="empty"):
        phase_cross_correlation(xp.zeros((0, 8)), xp.zeros((0, 8)))
    with pytest.raises(InputError, match="dtype"):
        phase_cross_correlation(a.astype(xp.complex64), a.astype(xp.complex64))
    with pytest.raises(InputError, match="mask"):
        phase_cross_correlation(a, a, reference_mask=xp.ones((4, 4), bool))
    for bad in (0, 1.5, -2, "x"):
        with pytest.raises(ConfigError, match="upsample_factor"):
            phase_cross_correlation(a, a, upsample_factor=bad)
    for bad in (-0.1, 1.5, "x"):
        with pytest.raises(ConfigError, match="overlap_ratio"):
            phase_cross_correlation(a, a, reference_mask=xp.ones((8, 8), bool), overlap_ratio=bad)


def test_nan_needs_a_mask(xp):
    rng = np.random.default_rng(4)
    a = rng.random((32, 32))
    b = np.roll(a, (2, 3), axis=(0, 1))
    b[0, 0] = np.nan
    with pytest.raises(InputError, match="NaN"):
        phase_cross_correlation(xp.asarray(a), xp.asarray(b))
    with pytest.raises(InputError, match="NaN"):
        phase_cross_correlation(xp.asarray(a), xp.asarray(b), reference_mask=xp.ones(a.shape, bool))
    got = _quiet(
        phase_cross_correlation,
        xp.asarray(a),
        xp.asarray(b),
        reference_mask=xp.ones(a.shape, bool),
        moving_mask=xp.asarray(np.isfinite(b)),
    )
    assert got.shift == (-2.0, -3.0)
