"""The fused pass at 4096x4096 uint8, gray and RGB: gpudiff vs OpenCV's cheapest equivalent sequence.

Run with ``python -m pytest benchmarks/test_bench_pair_sums.py --benchmark-enable``; by default (the
project's ``--benchmark-disable``) each case runs once as a smoke test (a few seconds in all, most of it
making the test images). Nothing here asserts time: the cases record it, and check that every
implementation computed OpenCV's numbers.

Groups, one per size and content:

- ``pair_sums 4096x4096 gray, norms + hists``: ``pair_sums`` (numba; cuda on a GPU) with both 256-bin
  histograms, against the shortest OpenCV sequence giving the same numbers: ``cv2.norm`` L1,
  ``cv2.countNonZero(cv2.absdiff)``, ``cv2.norm`` L2 and INF, two ``cv2.calcHist``.
- ``pair_sums 4096x4096 gray, norms``: without histograms, against the four OpenCV norm calls and
  the memory floor: ``np.copyto`` of both images (reads the same bytes the fused pass reads).
- ``pair_sums 4096x4096x3 RGB, ...``: the same per channel (OpenCV needs ``cv2.split`` for
  per-channel norms; ``calcHist`` takes the channel index).

Data: camera.png / astronaut.png (skimage-data) resized (bicubic) to 4096x4096; the moving image is
the reference blurred (Gaussian, sigma 1), shifted by (2, -1) pixels, with Gaussian noise (sigma 2),
so almost every pixel differs.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from gpudiff.pair import _sums_numba
from gpudiff.backend import cupy_available
from gpudiff.pair._sums import pair_sums

cv2 = pytest.importorskip("cv2")

DATA = Path(os.environ.get("GPUDIFF_DATA", Path(__file__).resolve().parents[1].parent / "shared" / "data"))
SIZE = 4096
HIST_RANGE = (0.0, 256.0)

needs_numba = pytest.mark.skipif(_sums_numba._numba is None, reason="numba not installed")
needs_gpu = pytest.mark.skipif(not cupy_available(), reason="needs a CUDA device and CuPy")


def _need_data():
    if not DATA.is_dir():
        if os.environ.get("GPUDIFF_REQUIRE_DATA") == "1":
            pytest.fail(f"real test data missing at {DATA} (GPUDIFF_REQUIRE_DATA=1)")
        pytest.skip(f"real test data not found at {DATA}")


def _make_pair(name, flags):
    _need_data()
    img = cv2.imread(str(DATA / "skimage-data" / name), flags)
    ref = cv2.resize(img, (SIZE, SIZE), interpolation=cv2.INTER_CUBIC)
    mov = cv2.GaussianBlur(ref, (0, 0), 1.0)
    mov = np.roll(mov, (2, -1), axis=(0, 1)).astype(np.float32)
    mov += np.random.default_rng(0).normal(0.0, 2.0, mov.shape).astype(np.float32)
    return ref, np.clip(mov, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def gray():
    return _make_pair("camera.png", cv2.IMREAD_GRAYSCALE)


@pytest.fixture(scope="module")
def rgb():
    return _make_pair("astronaut.png", cv2.IMREAD_COLOR)


def opencv_sequence(a, b, *, hist: bool):
    """Per channel: L1, zero norm, L2, L-inf and (optionally) both 256-bin histograms."""
    if a.ndim == 2:
        planes = [(a, b)]
    else:
        planes = list(zip(cv2.split(a), cv2.split(b)))
    out = []
    for c, (pa, pb) in enumerate(planes):
        row = {
            "l1": cv2.norm(pa, pb, cv2.NORM_L1),
            "l0": cv2.countNonZero(cv2.absdiff(pa, pb)),
            "l2": cv2.norm(pa, pb, cv2.NORM_L2),
            "inf": cv2.norm(pa, pb, cv2.NORM_INF),
        }
        if hist:
            row["hist_a"] = cv2.calcHist([a], [c], None, [256], [0, 256]).ravel()
            row["hist_b"] = cv2.calcHist([b], [c], None, [256], [0, 256]).ravel()
        out.append(row)
    return out


def check_against_opencv(s, want):
    for c, row in enumerate(want):
        assert s.l1[c] == row["l1"] and s.l0[c] == row["l0"] and s.max_abs[c] == row["inf"]
        assert np.isclose(np.sqrt(s.sse[c]), row["l2"], rtol=1e-12)
        if "hist_a" in row:
            np.testing.assert_array_equal(s.hist_a[c], row["hist_a"])
            np.testing.assert_array_equal(s.hist_b[c], row["hist_b"])


CASES = [
    pytest.param("gray", True, id="gray-hists"),
    pytest.param("gray", False, id="gray-norms"),
    pytest.param("rgb", True, id="rgb-hists"),
    pytest.param("rgb", False, id="rgb-norms"),
]


def _group(kind, hist):
    size = f"{SIZE}x{SIZE}" + ("x3 RGB" if kind == "rgb" else " gray")
    return f"pair_sums {size}, " + ("norms + hists" if hist else "norms")


@needs_numba
@pytest.mark.parametrize(("kind", "hist"), CASES)
def test_pair_sums_numba(benchmark, request, kind, hist):
    a, b = request.getfixturevalue(kind)
    benchmark.group = _group(kind, hist)
    run = lambda: pair_sums(a, b, hist_range=HIST_RANGE if hist else None, impl="numba")  # noqa: E731
    run()  # warm-up: loads (or compiles) the numba kernels
    s = benchmark(run)
    check_against_opencv(s, opencv_sequence(a, b, hist=hist))


@needs_gpu
@pytest.mark.gpu
@pytest.mark.parametrize(("kind", "hist"), CASES)
def test_pair_sums_cuda(benchmark, request, kind, hist):
    import cupy as cp

    a, b = request.getfixturevalue(kind)
    da, db = cp.asarray(a), cp.asarray(b)
    benchmark.group = _group(kind, hist)
    # pair_sums synchronises itself (it copies the few result numbers back), so the GPU work is timed
    run = lambda: pair_sums(da, db, hist_range=HIST_RANGE if hist else None, impl="cuda")  # noqa: E731
    run()  # warm-up: compiles the kernels, fills the memory pool
    s = benchmark(run)
    check_against_opencv(s, opencv_sequence(a, b, hist=hist))


@pytest.mark.parametrize(("kind", "hist"), CASES)
def test_opencv_sequence(benchmark, request, kind, hist):
    a, b = request.getfixturevalue(kind)
    benchmark.group = _group(kind, hist)
    got = benchmark(opencv_sequence, a, b, hist=hist)
    assert len(got) == (1 if a.ndim == 2 else 3)


@pytest.mark.parametrize("kind", ["gray", "rgb"])
def test_memory_floor_copy_both_images(benchmark, request, kind):
    """``np.copyto`` of both images: reads exactly the bytes the fused pass reads (and writes them)."""
    a, b = request.getfixturevalue(kind)
    benchmark.group = _group(kind, False)
    da, db = np.empty_like(a), np.empty_like(b)

    def copy_both():
        np.copyto(da, a)
        np.copyto(db, b)

    benchmark(copy_both)
    assert np.array_equal(da, a) and np.array_equal(db, b)
