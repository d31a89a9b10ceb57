"""The fused pass (``pair_sums``): every field against plain NumPy float64 and OpenCV, the numba
loop against the reference, and the invariants (tiles add up, a pair with itself, symmetry)."""

from __future__ import annotations

import math
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gpudiff.pair import _sums as metrics

from gpudiff.pair import _sums_core, _sums_cuda, _sums_numba, _sums_reference
from gpudiff.errors import BackendUnavailable, ConfigError, InputError
from gpudiff.pair._sums import PairSums, pair_sums

cv2 = pytest.importorskip("cv2")

needs_numba = pytest.mark.skipif(_sums_numba._numba is None, reason="numba not installed")
CPU_IMPLS = [
    pytest.param("reference", id="reference"),
    pytest.param("numba", id="numba", marks=needs_numba),
]
DTYPES = [np.uint8, np.uint16, np.float32, np.float64]
SUM_FIELDS = ("l1", "sse", "max_abs", "sa", "sb", "saa", "sbb", "sab")
COUNT_FIELDS = ("l0",)


# --------------------------------------------------------------------------------------------------
# the oracle: plain NumPy in float64, written out here, independent of gpudiff


def _fsum(x) -> np.ndarray:
    """Correctly rounded sums over (H, W) per channel."""
    return np.array([math.fsum(x[..., c].ravel().tolist()) for c in range(x.shape[-1])])


def oracle(a, b, *, tolerance=0.0, center=0.0, bins=256, hist_range=None) -> dict:
    A = np.asarray(a, dtype=np.float64)
    B = np.asarray(b, dtype=np.float64)
    if A.ndim == 2:
        A, B = A[..., None], B[..., None]
    d = A - B
    ad = np.abs(d)
    over = ad > tolerance
    out = {
        "n": A.shape[0] * A.shape[1],
        "l1": _fsum(ad),
        "l0": over.sum(axis=(0, 1)),
        "l0_any": int(over.any(axis=-1).sum()),
        "sse": _fsum(d * d),
        "max_abs": ad.max(axis=(0, 1)),
        "sa": _fsum(A - center),
        "sb": _fsum(B - center),
        "saa": _fsum((A - center) ** 2),
        "sbb": _fsum((B - center) ** 2),
        "sab": _fsum((A - center) * (B - center)),
        "hist_a": None,
        "hist_b": None,
    }
    if hist_range is not None:
        edges = np.linspace(hist_range[0], hist_range[1], bins + 1)
        for key, X in (("hist_a", A), ("hist_b", B)):
            planes = []
            for c in range(X.shape[-1]):
                v = X[..., c].ravel()
                planes.append(np.histogram(v[~np.isnan(v)], bins=edges)[0])
            out[key] = np.stack(planes)
    return out


def _scale(s: PairSums, field: str) -> np.ndarray:
    """A bound on the sum of the magnitudes of the terms summed into ``field``, for a tolerance
    where terms cancel: sum |a - c| <= sqrt(n * sum (a - c)^2), |ab| <= (a^2 + b^2) / 2."""
    n = s.n
    if field == "sa":
        return np.sqrt(n * np.abs(s.saa)) + np.abs(s.sa) + 1.0
    if field == "sb":
        return np.sqrt(n * np.abs(s.sbb)) + np.abs(s.sb) + 1.0
    if field == "sab":
        return np.abs(s.saa) + np.abs(s.sbb) + 1.0
    return np.abs(getattr(s, field)) + 1.0


def assert_matches_oracle(s: PairSums, want: dict, *, rtol=1e-12):
    assert s.n == want["n"]
    for f in SUM_FIELDS:
        got = np.asarray(getattr(s, f))
        assert got.dtype == np.float64, f
        np.testing.assert_allclose(got, want[f], rtol=rtol, atol=rtol * _scale(s, f).max(), err_msg=f)
    assert s.l0.dtype == np.int64
    np.testing.assert_array_equal(s.l0, want["l0"])
    assert s.l0_any == want["l0_any"]
    if want["hist_a"] is None:
        assert s.hist_a is None and s.hist_b is None
    else:
        assert s.hist_a.dtype == np.int64 and s.hist_b.dtype == np.int64
        np.testing.assert_array_equal(s.hist_a, want["hist_a"])
        np.testing.assert_array_equal(s.hist_b, want["hist_b"])


def assert_same_sums(x: PairSums, y: PairSums, *, exact: bool, rtol=1e-12):
    """Equal field by field: bit for bit, or to ``rtol`` of the summed magnitudes."""
    assert x.n == y.n and x.center == y.center and x.hist_range == y.hist_range
    for f in SUM_FIELDS:
        if exact:
            np.testing.assert_array_equal(getattr(x, f), getattr(y, f), err_msg=f)
        else:
            np.testing.assert_allclose(
                getattr(x, f), getattr(y, f), rtol=rtol, atol=rtol * _scale(x, f).max(), err_msg=f
            )
    np.testing.assert_array_equal(x.l0, y.l0)
    assert x.l0_any == y.l0_any
    if x.hist_a is None:
        assert y.hist_a is None
    else:
        np.testing.assert_array_equal(x.hist_a, y.hist_a)
        np.testing.assert_array_equal(x.hist_b, y.hist_b)


def random_pair(rng, shape, dtype, *, similar=True):
    dtype = np.dtype(dtype)
    if dtype.kind == "u":
        top = np.iinfo(dtype).max
        a = rng.integers(0, top + 1, size=shape).astype(dtype)
        if similar:
            noise = rng.integers(-3, 4, size=shape)
            b = np.clip(a.astype(np.int64) + noise, 0, top).astype(dtype)
        else:
            b = rng.integers(0, top + 1, size=shape).astype(dtype)
        return a, b
    a = rng.normal(0.5, 0.3, size=shape).astype(dtype)
    if similar:
        return a, (a + rng.normal(0, 0.05, size=shape)).astype(dtype)
    b = rng.normal(size=shape).astype(dtype)
    return a, b


def full_range(dtype):
    dtype = np.dtype(dtype)
    return (0.0, float(np.iinfo(dtype).max + 1)) if dtype.kind == "u" else (-0.5, 1.5)


# --------------------------------------------------------------------------------------------------
# against the oracle, on every backend (xp) and implementation


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(31, 47), (31, 47, 3), (8, 5, 2), (6, 9, 4), (1, 1), (1, 1, 3)])
def test_every_field_matches_plain_numpy(xp, dtype, shape):
    rng = np.random.default_rng(100 * len(shape) + shape[0] + np.dtype(dtype).itemsize)
    a, b = random_pair(rng, shape, dtype)
    kw = dict(tolerance=1.0, center=0.25, bins=32, hist_range=full_range(dtype))
    want = oracle(a, b, **kw)
    for impl in ("auto", "reference"):
        s = pair_sums(xp.asarray(a), xp.asarray(b), impl=impl, **kw)
        assert_matches_oracle(s, want)


@pytest.mark.parametrize("impl", CPU_IMPLS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_without_histograms(impl, dtype):
    a, b = random_pair(np.random.default_rng(3), (20, 33, 3), dtype)
    s = pair_sums(a, b, impl=impl)
    assert s.hist_a is None and s.hist_b is None and s.hist_range is None
    assert_matches_oracle(s, oracle(a, b))
    assert s.channels == 3 and s.center == 0.0


# --------------------------------------------------------------------------------------------------
# real images against OpenCV


def _imread(data_dir, name, flags):
    path = data_dir / "skimage-data" / name
    if not path.is_file():
        pytest.skip(f"{path} missing")
    img = cv2.imread(str(path), flags)
    assert img is not None, path
    return img


@pytest.mark.parametrize("impl", CPU_IMPLS)
def test_camera_against_opencv(data_dir, impl):
    a = _imread(data_dir, "camera.png", cv2.IMREAD_GRAYSCALE)
    b = cv2.GaussianBlur(a, (5, 5), 1.5)
    s = pair_sums(a, b, hist_range=(0, 256), impl=impl)
    assert s.l1[0] == cv2.norm(a, b, cv2.NORM_L1)
    assert s.l0[0] == s.l0_any == cv2.countNonZero(cv2.absdiff(a, b))
    assert math.isclose(math.sqrt(s.sse[0]), cv2.norm(a, b, cv2.NORM_L2), rel_tol=1e-12)
    assert s.max_abs[0] == cv2.norm(a, b, cv2.NORM_INF)
    np.testing.assert_array_equal(s.hist_a[0], cv2.calcHist([a], [0], None, [256], [0, 256]).ravel())
    np.testing.assert_array_equal(s.hist_b[0], cv2.calcHist([b], [0], None, [256], [0, 256]).ravel())
    assert_matches_oracle(s, oracle(a, b, hist_range=(0, 256)))


@pytest.mark.parametrize("impl", CPU_IMPLS)
def test_astronaut_rgb_against_opencv(data_dir, impl):
    a = _imread(data_dir, "astronaut.png", cv2.IMREAD_COLOR)
    b = np.ascontiguousarray(np.roll(a, (3, -5), axis=(0, 1)))
    s = pair_sums(a, b, tolerance=10, center=127.5, hist_range=(0, 256), impl=impl)
    assert s.channels == 3
    assert s.l1.sum() == cv2.norm(a, b, cv2.NORM_L1)
    assert math.isclose(math.sqrt(s.sse.sum()), cv2.norm(a, b, cv2.NORM_L2), rel_tol=1e-12)
    assert s.max_abs.max() == cv2.norm(a, b, cv2.NORM_INF)
    diff = cv2.absdiff(a, b)
    for c, (pa, pb, pd) in enumerate(zip(cv2.split(a), cv2.split(b), cv2.split(diff))):
        assert s.l1[c] == cv2.norm(pa, pb, cv2.NORM_L1)
        assert s.max_abs[c] == cv2.norm(pa, pb, cv2.NORM_INF)
        assert s.l0[c] == cv2.countNonZero((pd > 10).astype(np.uint8))
        np.testing.assert_array_equal(s.hist_a[c], cv2.calcHist([a], [c], None, [256], [0, 256]).ravel())
        np.testing.assert_array_equal(s.hist_b[c], cv2.calcHist([b], [c], None, [256], [0, 256]).ravel())
    assert s.l0_any == cv2.countNonZero((diff.max(axis=-1) > 10).astype(np.uint8))
    assert_matches_oracle(s, oracle(a, b, tolerance=10, center=127.5, hist_range=(0, 256)))


@needs_numba
@pytest.mark.parametrize("dtype", DTYPES)
def test_numba_matches_reference_on_a_real_image(data_dir, dtype):
    a8 = _imread(data_dir, "astronaut.png", cv2.IMREAD_COLOR)
    b8 = cv2.GaussianBlur(a8, (3, 3), 1.0)
    if dtype == np.uint8:
        a, b = a8, b8
    elif dtype == np.uint16:
        a, b = a8.astype(np.uint16) * 257, b8.astype(np.uint16) * 257
    else:
        a, b = (a8 / 255.0).astype(dtype), (b8 / 255.0).astype(dtype)
    tolerance = 0.01 if a.dtype.kind == "f" else 2
    kw = dict(tolerance=tolerance, center=0.4, bins=100, hist_range=full_range(dtype))
    for x, y in ((a, b), (a[..., 1], b[..., 1])):
        ref = pair_sums(x, y, impl="reference", **kw)
        fast = pair_sums(x, y, impl="numba", **kw)
        assert_same_sums(ref, fast, exact=a.dtype.kind == "u")


# --------------------------------------------------------------------------------------------------
# numba against the reference; independence from threads, strips and layout


@needs_numba
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("channels", [1, 2, 3, 4])
def test_numba_agrees_with_reference(dtype, channels):
    rng = np.random.default_rng(channels)
    shape = (45, 67) if channels == 1 else (45, 67, channels)
    a, b = random_pair(rng, shape, dtype, similar=False)
    for kw in (
        dict(),
        dict(tolerance=0.5, center=0.3, bins=256, hist_range=full_range(dtype)),
        dict(tolerance=7, center=-2.0, bins=13, hist_range=(0.25, 200.5)),
    ):
        ref = pair_sums(a, b, impl="reference", **kw)
        fast = pair_sums(a, b, impl="numba", **kw)
        assert_same_sums(ref, fast, exact=np.dtype(dtype).kind == "u")


@needs_numba
@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
def test_numba_result_does_not_depend_on_thread_count(dtype):
    import numba

    a, b = random_pair(np.random.default_rng(5), (300, 257, 3), dtype)
    kw = dict(center=0.5, hist_range=full_range(dtype))
    before = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = pair_sums(a, b, impl="numba", **kw)
        numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
        many = pair_sums(a, b, impl="numba", **kw)
    finally:
        numba.set_num_threads(before)
    assert_same_sums(one, many, exact=True)  # bit for bit, floats included


@needs_numba
def test_numba_blocks_and_reference_strips_do_not_change_integer_sums(monkeypatch):
    a, b = random_pair(np.random.default_rng(6), (97, 41, 3), np.uint16, similar=False)
    kw = dict(center=1000.5, hist_range=(0, 65536), bins=300)
    whole = pair_sums(a, b, impl="reference", **kw)
    monkeypatch.setattr(_sums_reference, "_STRIP_PIXELS", 100)
    monkeypatch.setattr(_sums_numba, "_BLOCK_PIXELS", 50)
    assert_same_sums(whole, pair_sums(a, b, impl="reference", **kw), exact=True)
    assert_same_sums(whole, pair_sums(a, b, impl="numba", **kw), exact=True)


@pytest.mark.parametrize("impl", CPU_IMPLS)
def test_non_contiguous_inputs(impl):
    a, b = random_pair(np.random.default_rng(7), (40, 60, 3), np.uint8)
    want = pair_sums(np.ascontiguousarray(a[::2, 1::3]), np.ascontiguousarray(b[::2, 1::3]), impl=impl)
    assert_same_sums(want, pair_sums(a[::2, 1::3], b[::2, 1::3], impl=impl), exact=True)
    fa, fb = np.asfortranarray(a[..., 0]), np.asfortranarray(b[..., 0])
    assert_same_sums(
        pair_sums(a[..., 0].copy(), b[..., 0].copy(), impl=impl, hist_range=(0, 256)),
        pair_sums(fa, fb, impl=impl, hist_range=(0, 256)),
        exact=True,
    )


@pytest.mark.parametrize("impl", CPU_IMPLS)
def test_read_only_inputs(impl):
    a, b = random_pair(np.random.default_rng(8), (10, 12), np.float32)
    want = pair_sums(a, b, impl=impl, hist_range=(0, 1))
    a.flags.writeable = False
    b.flags.writeable = False
    assert_same_sums(want, pair_sums(a, b, impl=impl, hist_range=(0, 1)), exact=True)


# --------------------------------------------------------------------------------------------------
# properties


_dtype_st = st.sampled_from(DTYPES)


@st.composite
def image_pairs(draw):
    dtype = np.dtype(draw(_dtype_st))
    h = draw(st.integers(1, 24))
    w = draw(st.integers(1, 24))
    c = draw(st.sampled_from([0, 1, 3]))  # 0: a 2-D image
    shape = (h, w) if c == 0 else (h, w, c)
    seed = draw(st.integers(0, 2**32 - 1))
    similar = draw(st.booleans())
    a, b = random_pair(np.random.default_rng(seed), shape, dtype, similar=similar)
    return a, b


_prop = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.mark.parametrize("impl", CPU_IMPLS)
@_prop
@given(pair=image_pairs(), data=st.data())
def test_tiles_add_up_to_the_whole(impl, pair, data):
    a, b = pair
    H, W = a.shape[:2]
    rows = sorted(set(data.draw(st.lists(st.integers(1, H - 1), max_size=3)) if H > 1 else []))
    cols = sorted(set(data.draw(st.lists(st.integers(1, W - 1), max_size=3)) if W > 1 else []))
    kw = dict(tolerance=1.0, center=0.5, bins=17, hist_range=full_range(a.dtype))
    whole = pair_sums(a, b, impl=impl, **kw)
    tiles = []
    for r0, r1 in zip([0, *rows], [*rows, H]):
        for c0, c1 in zip([0, *cols], [*cols, W]):
            tiles.append(pair_sums(a[r0:r1, c0:c1], b[r0:r1, c0:c1], impl=impl, **kw))
    total = sum(tiles)
    assert isinstance(total, PairSums)
    assert_same_sums(whole, total, exact=a.dtype.kind == "u")


@pytest.mark.parametrize("impl", CPU_IMPLS)
@_prop
@given(pair=image_pairs())
def test_a_pair_with_itself(impl, pair):
    a, _ = pair
    s = pair_sums(a, a.copy(), impl=impl, center=0.25, hist_range=full_range(a.dtype), bins=9)
    for f in ("l1", "sse", "max_abs"):
        assert np.all(getattr(s, f) == 0), f
    assert np.all(s.l0 == 0) and s.l0_any == 0
    np.testing.assert_array_equal(s.hist_a, s.hist_b)
    np.testing.assert_array_equal(s.sa, s.sb)
    np.testing.assert_array_equal(s.saa, s.sbb)
    np.testing.assert_array_equal(s.saa, s.sab)


@pytest.mark.parametrize("impl", CPU_IMPLS)
@_prop
@given(pair=image_pairs(), tolerance=st.sampled_from([0.0, 0.5, 2.0, 100.0]))
def test_swapping_a_and_b(impl, pair, tolerance):
    a, b = pair
    kw = dict(tolerance=tolerance, center=-0.75, hist_range=full_range(a.dtype), bins=31)
    ab = pair_sums(a, b, impl=impl, **kw)
    ba = pair_sums(b, a, impl=impl, **kw)
    for f in ("l1", "sse", "max_abs", "l0"):
        np.testing.assert_array_equal(getattr(ab, f), getattr(ba, f), err_msg=f)
    assert ab.l0_any == ba.l0_any
    np.testing.assert_array_equal(ab.hist_a, ba.hist_b)
    np.testing.assert_array_equal(ab.hist_b, ba.hist_a)
    np.testing.assert_array_equal(ab.sa, ba.sb)
    np.testing.assert_array_equal(ab.saa, ba.sbb)
    np.testing.assert_allclose(ab.sab, ba.sab, rtol=1e-14, atol=1e-14 * _scale(ab, "sab").max())


# --------------------------------------------------------------------------------------------------
# edge cases


@pytest.mark.parametrize("impl", CPU_IMPLS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_one_pixel(impl, dtype):
    a = np.array([[7]], dtype=dtype)
    b = np.array([[3]], dtype=dtype)
    s = pair_sums(a, b, center=1.0, hist_range=(0, 8), bins=8, impl=impl)
    assert s.n == 1 and s.l1.tolist() == [4.0] and s.sse.tolist() == [16.0] and s.max_abs.tolist() == [4.0]
    assert s.l0.tolist() == [1] and s.l0_any == 1
    assert (s.sa.tolist(), s.sb.tolist(), s.saa.tolist(), s.sbb.tolist(), s.sab.tolist()) == (
        [6.0], [2.0], [36.0], [4.0], [12.0])  # fmt: skip
    assert s.hist_a[0].tolist() == [0, 0, 0, 0, 0, 0, 0, 1]
    assert s.hist_b[0].tolist() == [0, 0, 0, 1, 0, 0, 0, 0]


@pytest.mark.parametrize("impl", CPU_IMPLS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_constant_images(impl, dtype):
    a = np.full((13, 11, 3), 5, dtype=dtype)
    b = np.full((13, 11, 3), 9, dtype=dtype)
    s = pair_sums(a, b, center=5.0, hist_range=(0, 10), bins=10, impl=impl)
    n = 13 * 11
    assert s.l1.tolist() == [4.0 * n] * 3 and s.sse.tolist() == [16.0 * n] * 3
    assert s.max_abs.tolist() == [4.0] * 3 and s.l0.tolist() == [n] * 3 and s.l0_any == n
    assert s.sa.tolist() == [0.0] * 3 and s.saa.tolist() == [0.0] * 3 and s.sab.tolist() == [0.0] * 3
    assert s.sb.tolist() == [4.0 * n] * 3 and s.sbb.tolist() == [16.0 * n] * 3
    assert (s.hist_a[:, 5] == n).all() and s.hist_a.sum() == 3 * n
    assert (s.hist_b[:, 9] == n).all() and s.hist_b.sum() == 3 * n


@pytest.mark.parametrize("impl", CPU_IMPLS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_tolerance_counts_strictly_greater(impl, dtype):
    a = np.array([[0, 1, 2, 3, 4, 5]], dtype=dtype)
    b = np.zeros_like(a)
    tolerances = (0, 0.5, 1, 2.5, 3, 4.999, 5, 1e9, math.inf)
    got = [pair_sums(a, b, tolerance=t, impl=impl).l0[0] for t in tolerances]
    assert got == [5, 5, 4, 3, 2, 1, 0, 0, 0]


@pytest.mark.parametrize("impl", CPU_IMPLS)
def test_zero_norm_any_channel(impl):
    a = np.zeros((2, 2, 3), np.uint8)
    b = a.copy()
    b[0, 0, 0] = 5
    b[0, 0, 2] = 9
    b[1, 1, 1] = 2
    s = pair_sums(a, b, tolerance=1, impl=impl)
    assert s.l0.tolist() == [1, 1, 1] and s.l0_any == 2
    s = pair_sums(a, b, tolerance=6, impl=impl)
    assert s.l0.tolist() == [0, 0, 1] and s.l0_any == 1


@pytest.mark.parametrize("impl", CPU_IMPLS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_histogram_range_edges(impl, dtype):
    # lo and hi are counted (hi in the last bin); just outside is not
    a = np.array([[2, 3, 4, 5, 6, 7, 8, 9, 10, 11]], dtype=dtype)
    s = pair_sums(a, a, hist_range=(3, 10), bins=7, impl=impl)
    assert s.hist_a[0].tolist() == [1, 1, 1, 1, 1, 1, 2]
    s = pair_sums(a, a, hist_range=(3, 10), bins=1, impl=impl)
    assert s.hist_a[0].tolist() == [8]
    if np.dtype(dtype).kind == "f":
        x = np.array([[2.999999, 3.0, 9.999999, 10.0, 10.000001, -np.inf, np.inf]], dtype=dtype)
        s = pair_sums(x, x, hist_range=(3, 10), bins=7, impl=impl)
        assert s.hist_a[0].tolist() == [1, 0, 0, 0, 0, 0, 2]


def test_histogram_bin_formula_for_every_uint8_value():
    # bin = min(floor((v - lo) * bins / (hi - lo)), bins - 1) in float64, for lo <= v <= hi
    lo, hi, bins = 10.5, 200.25, 17
    v = np.arange(256, dtype=np.uint8).reshape(16, 16)
    want = np.zeros(bins, np.int64)
    for x in range(256):
        if lo <= x <= hi:
            want[min(math.floor((x - lo) * bins / (hi - lo)), bins - 1)] += 1
    for impl in ("reference", "numba") if _sums_numba._numba is not None else ("reference",):
        s = pair_sums(v, v, hist_range=(lo, hi), bins=bins, impl=impl)
        np.testing.assert_array_equal(s.hist_a[0], want)


@pytest.mark.parametrize("impl", CPU_IMPLS)
@pytest.mark.parametrize("bins", [1, 2, 7, 100, 255, 256, 257, 1000])
def test_bins_other_than_256(impl, bins):
    a, b = random_pair(np.random.default_rng(bins), (33, 29), np.uint8, similar=False)
    s = pair_sums(a, b, bins=bins, hist_range=(0, 256), impl=impl)
    want = oracle(a, b, bins=bins, hist_range=(0, 256))
    np.testing.assert_array_equal(s.hist_a, want["hist_a"])
    np.testing.assert_array_equal(s.hist_b, want["hist_b"])
    assert s.hist_a.shape == (1, bins)


@pytest.mark.parametrize("impl", CPU_IMPLS)
@pytest.mark.parametrize("bins", [256, 1000, 65536])
def test_uint16_full_range(impl, bins):
    a, b = random_pair(np.random.default_rng(11), (50, 40, 3), np.uint16, similar=False)
    a[0, 0] = 65535
    b[0, 0] = 0
    s = pair_sums(a, b, bins=bins, hist_range=(0, 65536), impl=impl)
    assert_matches_oracle(s, oracle(a, b, bins=bins, hist_range=(0, 65536)))
    if bins == 65536:  # one bin per value
        for c in range(3):
            np.testing.assert_array_equal(s.hist_a[c], np.bincount(a[..., c].ravel(), minlength=65536))


@pytest.mark.parametrize("impl", CPU_IMPLS)
@pytest.mark.parametrize(
    "hist_range, bins",
    [((0, 4096), 256), ((1024, 3072), 128), ((100, 356), 256), ((0, 65536), 64), ((0, 4095), 256), ((7, 5000), 99)],
)
def test_uint16_ranges_binned_by_shift_or_table(impl, hist_range, bins):
    # Power-of-two bin widths with an integer start take the shift path in the numba kernel, the
    # others the table: both must put values on the edges, at hi and past it where the oracle does.
    rng = np.random.default_rng(bins + hist_range[0])
    a = rng.integers(0, 6000, (40, 37)).astype(np.uint16)
    b = rng.integers(0, 6000, (40, 37)).astype(np.uint16)
    lo, hi = hist_range
    a[0, :6] = np.clip([lo, hi, hi - 1, hi + 1, max(lo - 1, 0), 65535], 0, 65535)
    b[0, :6] = np.clip([lo + 1, hi, lo, 0, hi - 1, 65535], 0, 65535)
    s = pair_sums(a, b, bins=bins, hist_range=hist_range, impl=impl)
    want = oracle(a, b, bins=bins, hist_range=hist_range)
    np.testing.assert_array_equal(s.hist_a, want["hist_a"])
    np.testing.assert_array_equal(s.hist_b, want["hist_b"])


@pytest.mark.parametrize("impl", CPU_IMPLS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_nan_is_not_counted_and_poisons_the_sums(impl, dtype):
    # The caller rejects NaN (compare does); documented behaviour: histograms and l0 skip it,
    # l1/sse/NCC sums become NaN, max_abs is undefined.
    a = np.array([[0.1, 0.2, np.nan, 0.4]], dtype=dtype)
    b = np.array([[0.1, np.nan, 0.3, 0.9]], dtype=dtype)
    s = pair_sums(a, b, hist_range=(0, 1), bins=10, impl=impl)
    assert s.hist_a.sum() == 3 and s.hist_b.sum() == 3
    assert s.l0[0] == 1 and s.l0_any == 1  # only 0.4 vs 0.9 counts
    assert np.isnan(s.l1[0]) and np.isnan(s.sse[0]) and np.isnan(s.sa[0]) and np.isnan(s.sab[0])


@pytest.mark.parametrize("impl", CPU_IMPLS)
def test_integer_centering_is_exact(impl):
    # sums of squares of ~2e9 per pixel: the centred sums are exact integers rounded once
    a = np.full((300, 300), 65535, np.uint16)
    b = a.copy()
    b[0, 0] = 65534
    s = pair_sums(a, b, center=65535.0, impl=impl)
    assert s.sa.tolist() == [0.0] and s.saa.tolist() == [0.0]
    assert s.sb.tolist() == [-1.0] and s.sbb.tolist() == [1.0] and s.sab.tolist() == [0.0]
    s = pair_sums(a, b, center=0.5, impl=impl)
    n = 300 * 300
    assert s.sa[0] == float(n * 65534.5) and s.saa[0] == float(n * 65534.5**2)


# --------------------------------------------------------------------------------------------------
# PairSums arithmetic


def test_adding_incompatible_sums_is_refused():
    a, b = random_pair(np.random.default_rng(12), (6, 6, 3), np.uint8)
    base = pair_sums(a, b, hist_range=(0, 256))
    with pytest.raises(ValueError, match="center"):
        base + pair_sums(a, b, center=1.0, hist_range=(0, 256))
    with pytest.raises(ValueError, match="bins"):
        base + pair_sums(a, b, hist_range=(0, 256), bins=10)
    with pytest.raises(ValueError, match="bins"):
        base + pair_sums(a, b, hist_range=(0, 128))
    with pytest.raises(ValueError, match="histograms"):
        base + pair_sums(a, b)
    with pytest.raises(ValueError, match="channels"):
        base + pair_sums(a[..., 0], b[..., 0], hist_range=(0, 256))
    with pytest.raises(TypeError):
        base + 1
    assert sum([base]) is base


def test_adding_merges_max_and_counts():
    a = np.array([[1, 2]], np.uint8)
    b = np.array([[4, 2]], np.uint8)
    left = pair_sums(a[:, :1], b[:, :1], hist_range=(0, 4), bins=4)
    right = pair_sums(a[:, 1:], b[:, 1:], hist_range=(0, 4), bins=4)
    s = left + right
    assert s.n == 2 and s.max_abs.tolist() == [3.0] and s.l0_any == 1
    assert s.hist_a[0].tolist() == [0, 1, 1, 0] and s.hist_b[0].tolist() == [0, 0, 1, 1]


# --------------------------------------------------------------------------------------------------
# validation


@pytest.mark.parametrize(
    ("a", "b", "match"),
    [
        (np.zeros((3, 4), np.uint8), np.zeros((3, 5), np.uint8), r"shape \(3, 4\).*\(3, 5\)"),
        (np.zeros((3, 4), np.uint8), np.zeros((3, 4), np.uint16), "uint8.*uint16"),
        (np.zeros((3, 4), np.int32), np.zeros((3, 4), np.int32), "int32 is not supported"),
        (np.zeros((3, 4), bool), np.zeros((3, 4), bool), "bool is not supported"),
        (np.zeros((3, 4), ">u2"), np.zeros((3, 4), ">u2"), "not supported"),
        (np.zeros((3, 4, 5), np.uint8), np.zeros((3, 4, 5), np.uint8), "1 to 4 channels"),
        (np.zeros((2, 3, 4, 1), np.uint8), np.zeros((2, 3, 4, 1), np.uint8), "channels"),
        (np.zeros(5, np.uint8), np.zeros(5, np.uint8), "channels"),
        (np.zeros((0, 4), np.uint8), np.zeros((0, 4), np.uint8), "empty"),
        ([[1, 2]], np.zeros((1, 2), np.uint8), "not an array"),
    ],
)
def test_bad_arrays_are_input_errors(a, b, match):
    with pytest.raises(InputError, match=match):
        pair_sums(a, b)


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        (dict(tolerance=-1), "tolerance"),
        (dict(tolerance=math.nan), "tolerance"),
        (dict(tolerance="x"), "numbers"),
        (dict(center=math.inf), "center"),
        (dict(hist_range=(0, 256), bins=0), "bins"),
        (dict(hist_range=(0, 256), bins=65537), "bins"),
        (dict(hist_range=(0, 256), bins=2.5), "bins"),
        (dict(hist_range=(5, 5)), "hi > lo"),
        (dict(hist_range=(10, 0)), "hi > lo"),
        (dict(hist_range=(0, math.inf)), "finite"),
        (dict(hist_range=(0,)), "pair"),
        (dict(impl="fast"), "impl"),
    ],
)
def test_bad_options_are_config_errors(kw, match):
    a = np.zeros((2, 2), np.uint8)
    with pytest.raises(ConfigError, match=match):
        pair_sums(a, a, **kw)


def test_cuda_needs_cupy_arrays():
    a = np.zeros((2, 2), np.uint8)
    with pytest.raises(BackendUnavailable, match="CuPy"):
        pair_sums(a, a, impl="cuda")


def test_works_without_numba(monkeypatch):
    a, b = random_pair(np.random.default_rng(13), (9, 7, 3), np.uint8)
    want = pair_sums(a, b, impl="reference", hist_range=(0, 256))
    monkeypatch.setattr(_sums_numba, "_numba", None)
    assert_same_sums(want, pair_sums(a, b, hist_range=(0, 256)), exact=True)  # auto -> reference
    with pytest.raises(BackendUnavailable, match="numba"):
        pair_sums(a, b, impl="numba")


# --------------------------------------------------------------------------------------------------
# the CUDA side, as far as it can be checked without a device


def _kernel_buffer(a, b, *, tolerance, center, bins, hist_range):
    """What kernels/pair_stats.cu writes, emulated with NumPy (the layout its header documents)."""
    is_int = a.dtype.kind == "u"
    A = a.reshape(a.shape[0], a.shape[1], -1)
    B = b.reshape(A.shape)
    C = A.shape[-1]
    if is_int:
        A64, B64 = A.astype(np.int64), B.astype(np.int64)
        d = np.abs(A64 - B64)
        itol = _sums_core._integer_tolerance(tolerance, a.dtype)
        over = d > itol
        per = [d, d * d, A64, B64, A64 * A64, B64 * B64, A64 * B64]
        sums = np.stack([x.sum(axis=(0, 1)) for x in per], axis=1).astype(np.uint64).ravel()
        mx = d.max(axis=(0, 1)).astype(np.uint64)
    else:
        A64, B64 = A.astype(np.float64), B.astype(np.float64)
        d = np.abs(A64 - B64)
        over = d > tolerance
        ca, cb = A64 - center, B64 - center
        per = [d, d * d, ca, cb, ca * ca, cb * cb, ca * cb]
        sums = np.stack([x.sum(axis=(0, 1)) for x in per], axis=1).ravel().view(np.uint64)
        mx = d.max(axis=(0, 1)).view(np.uint64)
    counts = np.concatenate([mx, over.sum(axis=(0, 1)).astype(np.uint64), [np.uint64(over.any(-1).sum())]])
    parts = [sums, counts]
    if hist_range is not None:
        o = oracle(a, b, bins=bins, hist_range=hist_range)
        parts.append(np.concatenate([o["hist_a"].ravel(), o["hist_b"].ravel()]).astype(np.uint64))
    return np.concatenate(parts).astype(np.uint64)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(9, 11), (9, 11, 3)])
def test_cuda_buffer_decodes_to_the_reference(dtype, shape):
    a, b = random_pair(np.random.default_rng(14), shape, dtype, similar=False)
    kw = dict(tolerance=0.5, center=0.75, bins=20, hist_range=full_range(dtype))
    host = _kernel_buffer(a, b, **kw)
    C = 1 if a.ndim == 2 else a.shape[2]
    got = _sums_cuda._decode_cuda_buffer(
        host, C=C, nbins=20, npix=a.shape[0] * a.shape[1], is_int=a.dtype.kind == "u",
        center=0.75, hist_range=kw["hist_range"],
    )  # fmt: skip
    assert_same_sums(pair_sums(a, b, impl="reference", **kw), got, exact=False, rtol=1e-13)


def test_cuda_kernel_names_exist_in_the_source():
    from gpudiff.backend import _kernels

    assert "pair_stats.cu" in [p.name for p in _kernels.kernel_source_paths()]
    src = _kernels.kernel_source("pair_stats")
    families = set(re.findall(r"PS_FAMILY\((\w+), ", src))
    prefixes = set(re.findall(r"PS_KERNEL\((\w+)##SUFFIX", src))
    assert prefixes == {
        "pair_stats_", "pair_stats_global_hist_", "pair_stats_c1_", "pair_stats_global_hist_c1_"
    }  # fmt: skip
    defined = {p + f for p in prefixes for f in families}
    for dtype in DTYPES:
        for C in (1, 3):
            for n, bins in ((100, 0), (100, 256), (100, 65536), (2**31, 256)):
                name, shared = _sums_cuda._cuda_kernel_name(dtype, C, n * C, bins)
                assert name in defined, name
                assert shared == (2 * C * bins * 4 if 2 * C * bins * 4 <= 48 * 1024 else 0)
                assert ("global_hist" in name) == (2 * C * bins * 4 > 48 * 1024)
                assert ("_c1_" in name) == (C == 1)
                assert name.endswith("_i64") == (n * C > 2**30)


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc not installed")
def test_cuda_source_compiles_without_warnings(tmp_path):
    from gpudiff.backend import _kernels

    src = _kernels.kernel_source_paths()[0]
    out = subprocess.run(
        ["nvcc", "-std=c++17", "-arch=sm_80", "-ptx", "--Werror", "all-warnings", str(src), "-o",
         str(tmp_path / "pair_stats.ptx")],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    ptx = (tmp_path / "pair_stats.ptx").read_text()
    assert ".entry pair_stats_c1_u8_i32" in ptx and ".entry pair_stats_global_hist_f64_i64" in ptx


@pytest.mark.parametrize("blocked", ["cupy", "numba"])
def test_imports_and_runs_without_optional_packages(blocked):
    code = (
        f"import sys; sys.modules[{blocked!r}] = None\n"
        "import numpy as np\n"
        "from gpudiff.backend import _kernels\n"
        "from gpudiff.pair import _sums as metrics\n"
        "assert _kernels.kernel_source_paths()\n"
        "a = np.arange(12, dtype=np.uint8).reshape(3, 4)\n"
        "s = metrics.pair_sums(a, a[::-1].copy(), hist_range=(0, 256))\n"
        "print(int(s.l1[0]), int(s.hist_a.sum()))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600,
                         cwd=Path(metrics.__file__).parents[2])  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["64", "12"]


# --------------------------------------------------------------------------------------------------
# a histogram already known (consecutive frames)


@pytest.mark.parametrize("impl", CPU_IMPLS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("C", [1, 3])
def test_known_hist_a_gives_the_same_sums(impl, dtype, C):
    # Frame b of pair (x, a) is frame a of pair (a, b): its counts are passed on, not recounted.
    rng = np.random.default_rng(C + 17)
    shape = (45, 38, C) if C > 1 else (45, 38)
    x, a = random_pair(rng, shape, dtype, similar=False)
    _, b = random_pair(rng, shape, dtype, similar=True)
    rng_ = (0, 256) if dtype == np.uint8 else (0, 65536) if dtype == np.uint16 else (0, 1)
    first = pair_sums(x, a, bins=64, hist_range=rng_, impl=impl)
    known = pair_sums(a, b, bins=64, hist_range=rng_, hist_a=first.hist_b, impl=impl)
    assert_matches_oracle(known, oracle(a, b, bins=64, hist_range=rng_))


def test_known_hist_a_is_checked():
    a, b = random_pair(np.random.default_rng(3), (20, 20), np.uint8)
    with pytest.raises(ConfigError, match="without hist_range"):
        pair_sums(a, b, hist_a=np.zeros((1, 256), np.int64))
    with pytest.raises(ConfigError, match=r"shape \(1, 256\)"):
        pair_sums(a, b, hist_range=(0, 256), hist_a=np.zeros((3, 256), np.int64))
    with pytest.raises(ConfigError, match="integer counts"):
        pair_sums(a, b, hist_range=(0, 256), hist_a=np.zeros((1, 256), np.float64))
