"""The CUDA fused pass (kernels/pair_stats.cu) against the reference implementation on NumPy.

On a GPU through CuPy; elsewhere on the emulated GPU, where the same .cu runs under the CPU CUDA
emulator with the same host-side launch code (gpudiff.pair._sums._pair_sums_cuda).

Every kernel of the family is exercised: each dtype, 32- and 64-bit indexing, the single-channel
(c1) and the general kernels, shared-memory and global-memory histograms. Integer images must
agree bit for bit; float images to rounding (the GPU adds block totals in any order).
"""

from __future__ import annotations

import numpy as np
import pytest

from gpudiff.backend import _kernels
from gpudiff.pair import _sums_cuda
from gpudiff.backend import cupy_available, resolve_backend
from gpudiff.pair._sums import pair_sums

pytestmark = pytest.mark.gpu

cp = resolve_backend("cupy" if cupy_available() else "emulated-gpu")

DTYPES = [np.uint8, np.uint16, np.float32, np.float64]
SUM_FIELDS = ("l1", "sse", "max_abs", "sa", "sb", "saa", "sbb", "sab")


def random_pair(rng, shape, dtype):
    dtype = np.dtype(dtype)
    if dtype.kind == "u":
        top = np.iinfo(dtype).max
        a = rng.integers(0, top + 1, size=shape).astype(dtype)
        b = np.clip(a.astype(np.int64) + rng.integers(-5, 6, size=shape), 0, top).astype(dtype)
        b[rng.random(shape) < 0.05] = top  # some large differences
        return a, b
    a = rng.normal(0.5, 0.3, size=shape).astype(dtype)
    b = (a + rng.normal(0, 0.05, size=shape)).astype(dtype)
    return a, b


def full_range(dtype):
    dtype = np.dtype(dtype)
    return (0.0, float(np.iinfo(dtype).max + 1)) if dtype.kind == "u" else (-0.5, 1.5)


def _scale(s, field):
    n = s.n
    if field == "sa":
        return np.sqrt(n * np.abs(s.saa)) + np.abs(s.sa) + 1.0
    if field == "sb":
        return np.sqrt(n * np.abs(s.sbb)) + np.abs(s.sb) + 1.0
    if field == "sab":
        return np.abs(s.saa) + np.abs(s.sbb) + 1.0
    return np.abs(getattr(s, field)) + 1.0


def assert_same_sums(want, got, *, exact, rtol=1e-12):
    assert want.n == got.n and want.center == got.center and want.hist_range == got.hist_range
    for f in SUM_FIELDS:
        x, y = getattr(want, f), getattr(got, f)
        assert isinstance(y, np.ndarray) and y.dtype == np.float64, f
        if exact or f == "max_abs":
            np.testing.assert_array_equal(x, y, err_msg=f)
        else:
            np.testing.assert_allclose(x, y, rtol=rtol, atol=rtol * _scale(want, f).max(), err_msg=f)
    np.testing.assert_array_equal(want.l0, got.l0)
    assert want.l0_any == got.l0_any
    if want.hist_a is None:
        assert got.hist_a is None and got.hist_b is None
    else:
        assert got.hist_a.dtype == np.int64
        np.testing.assert_array_equal(want.hist_a, got.hist_a)
        np.testing.assert_array_equal(want.hist_b, got.hist_b)


def check(a, b, **kw):
    """impl='cuda' on CuPy copies of a, b against impl='reference' on NumPy."""
    want = pair_sums(a, b, impl="reference", **kw)
    got = pair_sums(cp.asarray(a), cp.asarray(b), impl="cuda", **kw)
    assert_same_sums(want, got, exact=np.dtype(a.dtype).kind == "u")
    return got


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("channels", [1, 2, 3, 4])
@pytest.mark.parametrize("bins", [None, 256, 65536], ids=["nohist", "shared", "global"])
def test_cuda_matches_reference(dtype, channels, bins):
    rng = np.random.default_rng(channels * 10 + (bins or 0) % 7)
    shape = (301, 257) if channels == 1 else (301, 257, channels)
    a, b = random_pair(rng, shape, dtype)
    kw = dict(tolerance=2.0 if np.dtype(dtype).kind == "u" else 0.05, center=0.4)
    if bins is not None:
        kw.update(bins=bins, hist_range=full_range(dtype))
    check(a, b, **kw)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "shape", [(1, 1), (1, 1, 3), (7, 13), (7, 13, 3), (4097, 3), (3, 4097, 3), (1, 100003)]
)
def test_odd_sizes(dtype, shape):
    a, b = random_pair(np.random.default_rng(len(shape) + shape[0]), shape, dtype)
    check(a, b, tolerance=0.5, center=1.5, bins=100, hist_range=full_range(dtype))


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("extra", [0, 1], ids=["shared", "global"])
def test_shared_memory_limit(channels, extra):
    # 2 * C * bins * 4 bytes <= 48 KiB uses shared memory; one bin more goes global
    bins = 6144 // channels + extra
    name, shared = _sums_cuda._cuda_kernel_name(np.uint16, channels, 1000, bins)
    assert ("global_hist" in name) == bool(extra) and (shared > 0) == (not extra)
    a, b = random_pair(np.random.default_rng(bins), (200, 300, channels), np.uint16)
    check(a, b, bins=bins, hist_range=(0, 65536))
    check(a.astype(np.float32) / 65535, b.astype(np.float32) / 65535, bins=bins, hist_range=(0, 1))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "variant", ["i64", "general-for-c1", "global-hist", "global-hist-i64-general"]
)  # fmt: skip
def test_every_kernel_variant(force_kernel_flavour, dtype, variant):
    """Small inputs through the kernels the size rules would not pick (64-bit index etc.)."""

    force_kernel_flavour(variant)
    rng = np.random.default_rng(3)
    for shape in [(123, 77), (123, 77, 3)]:
        a, b = random_pair(rng, shape, dtype)
        check(a, b, tolerance=1.0, center=0.5, bins=64, hist_range=full_range(dtype))
        check(a, b, tolerance=1.0, center=0.5)


@pytest.mark.parametrize("dtype", DTYPES)
def test_tiles_add_up_on_the_gpu(dtype):
    a, b = random_pair(np.random.default_rng(4), (211, 190, 3), dtype)
    da, db = cp.asarray(a), cp.asarray(b)
    kw = dict(tolerance=1.0, center=0.3, bins=40, hist_range=full_range(dtype))
    whole = pair_sums(da, db, impl="cuda", **kw)
    tiles = [
        pair_sums(da[r0:r1, c0:c1], db[r0:r1, c0:c1], impl="cuda", **kw)
        for r0, r1 in ((0, 1), (1, 100), (100, 211))
        for c0, c1 in ((0, 64), (64, 65), (65, 190))
    ]
    total = sum(tiles)
    # Integer tiles: the raw sums are exact, but each tile's centred NCC sums (sa..sab, centred on
    # the host in float64) round once per tile, so their total may differ from the whole in the
    # last bit; the norms and counts stay exact.
    assert_same_sums(whole, total, exact=False, rtol=1e-14)
    if np.dtype(dtype).kind == "u":
        for f in ("l1", "sse", "max_abs", "l0", "hist_a", "hist_b"):
            np.testing.assert_array_equal(getattr(whole, f), getattr(total, f), err_msg=f)


def test_camera_against_opencv_on_the_gpu(data_dir):
    cv2 = pytest.importorskip("cv2")
    a = cv2.imread(str(data_dir / "skimage-data" / "camera.png"), cv2.IMREAD_GRAYSCALE)
    b = cv2.GaussianBlur(a, (5, 5), 1.5)
    s = pair_sums(cp.asarray(a), cp.asarray(b), hist_range=(0, 256))  # auto -> cuda
    assert s.l1[0] == cv2.norm(a, b, cv2.NORM_L1)
    assert s.l0[0] == s.l0_any == cv2.countNonZero(cv2.absdiff(a, b))
    assert s.sse[0] == cv2.norm(a, b, cv2.NORM_L2SQR)
    assert s.max_abs[0] == cv2.norm(a, b, cv2.NORM_INF)
    np.testing.assert_array_equal(s.hist_a[0], cv2.calcHist([a], [0], None, [256], [0, 256]).ravel())
    np.testing.assert_array_equal(s.hist_b[0], cv2.calcHist([b], [0], None, [256], [0, 256]).ravel())


def test_non_contiguous_cupy_input():
    a, b = random_pair(np.random.default_rng(5), (64, 90, 3), np.uint8)
    da, db = cp.asarray(a), cp.asarray(b)
    want = pair_sums(a[::2, ::3], b[::2, ::3], impl="reference", hist_range=(0, 256))
    got = pair_sums(da[::2, ::3], db[::2, ::3], impl="cuda", hist_range=(0, 256))
    assert_same_sums(want, got, exact=True)


def test_nan_is_not_counted_on_the_gpu():
    a = np.array([[0.1, 0.2, np.nan, 0.4]], np.float32)
    b = np.array([[0.1, np.nan, 0.3, 0.9]], np.float32)
    s = pair_sums(cp.asarray(a), cp.asarray(b), hist_range=(0, 1), bins=10, impl="cuda")
    assert s.hist_a.sum() == 3 and s.hist_b.sum() == 3
    assert s.l0[0] == 1 and s.l0_any == 1
    assert np.isnan(s.l1[0]) and np.isnan(s.sse[0])


def test_kernels_are_memoized_per_device():
    name, _ = _sums_cuda._cuda_kernel_name(np.uint8, 1, 100, 256)
    assert _kernels.get_function("pair_stats", name, xp=cp) is _kernels.get_function("pair_stats", name, xp=cp)
    dev = cp.cuda.Device().id
    same = _kernels.get_function("pair_stats", name, device_id=dev, xp=cp)
    assert same is _kernels.get_function("pair_stats", name, xp=cp)


def test_numba_name_is_refused_for_cupy_arrays():
    from gpudiff.errors import BackendUnavailable

    a = cp.zeros((2, 2), cp.uint8)
    with pytest.raises(BackendUnavailable, match="CPU"):
        pair_sums(a, a, impl="numba")
