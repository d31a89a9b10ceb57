"""SSIM at 2048x2048 uint8: gpudiff (numba, reference, CuPy) vs the OpenCV formula vs scikit-image.

Run with ``python -m pytest benchmarks/test_bench_ssim.py --benchmark-enable``; by default (the
project's ``--benchmark-disable``) each case runs once as a smoke test (about 1.5 s in all, most of it
scikit-image and the xp reference path on the CPU). Nothing here asserts time: the cases record it, and
check only that every implementation gives scikit-image's value.

Data: camera.png (skimage-data) upscaled (bicubic) to 2048x2048 as the reference; moving is the
reference blurred (Gaussian, sigma 1) plus Gaussian noise (sigma 5, seed 0), clipped to uint8.

The OpenCV formula is the usual one (as in OpenCV's video-quality tutorial): ``cv2.GaussianBlur``
11x11, sigma 1.5, on float32 images and their products, the SSIM formula with NumPy, and the mean over
the interior (5 pixels in from each border, as scikit-image and gpudiff average).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from gpudiff.backend import cupy_available
from gpudiff.pair._ssim import numba_available, structural_similarity

cv2 = pytest.importorskip("cv2")
skimage_metrics = pytest.importorskip("skimage.metrics")

DATA = Path(os.environ.get("GPUDIFF_DATA", Path(__file__).resolve().parents[1].parent / "shared" / "data"))
SIZE = 2048
DATA_RANGE = 255.0

pytestmark = pytest.mark.benchmark(group="ssim-2048-uint8")


def _need_data():
    if not DATA.is_dir():
        if os.environ.get("GPUDIFF_REQUIRE_DATA") == "1":
            pytest.fail(f"real test data missing at {DATA} (GPUDIFF_REQUIRE_DATA=1)")
        pytest.skip(f"real test data not found at {DATA}")


@pytest.fixture(scope="module")
def pair():
    _need_data()
    camera = cv2.imread(str(DATA / "skimage-data" / "camera.png"), cv2.IMREAD_GRAYSCALE)
    ref = cv2.resize(camera, (SIZE, SIZE), interpolation=cv2.INTER_CUBIC)
    rng = np.random.default_rng(0)
    blurred = cv2.GaussianBlur(ref, (0, 0), 1.0).astype(np.float32)
    mov = np.clip(blurred + rng.normal(0.0, 5.0, ref.shape), 0, 255).astype(np.uint8)
    return ref, mov


@pytest.fixture(scope="module")
def expected(pair):
    return skimage_ssim(*pair)


def opencv_ssim(a, b, data_range=DATA_RANGE, k1=0.01, k2=0.03) -> float:
    """SSIM with cv2.GaussianBlur (11x11, sigma 1.5) on float32 moments; mean over the interior."""
    a = a.astype(np.float32)
    b = b.astype(np.float32)
    c1 = (k1 * data_range) ** 2
    c2 = (k2 * data_range) ** 2

    def blur(z):
        return cv2.GaussianBlur(z, (11, 11), 1.5, borderType=cv2.BORDER_REFLECT)

    mu_a = blur(a)
    mu_b = blur(b)
    mu_aa = mu_a * mu_a
    mu_bb = mu_b * mu_b
    mu_ab = mu_a * mu_b
    var_a = blur(a * a) - mu_aa
    var_b = blur(b * b) - mu_bb
    cov = blur(a * b) - mu_ab
    s = ((2 * mu_ab + c1) * (2 * cov + c2)) / ((mu_aa + mu_bb + c1) * (var_a + var_b + c2))
    return float(s[5:-5, 5:-5].mean(dtype=np.float64))


def skimage_ssim(a, b, data_range=DATA_RANGE) -> float:
    return float(
        skimage_metrics.structural_similarity(
            a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=data_range
        )
    )


@pytest.mark.skipif(not numba_available(), reason="numba not installed")
def test_gpudiff_numba(benchmark, pair, expected):
    import numba

    a, b = pair
    structural_similarity(a, b, data_range=DATA_RANGE, impl="numba")  # compile / load the cache
    benchmark.extra_info["threads"] = numba.get_num_threads()
    got = benchmark(structural_similarity, a, b, data_range=DATA_RANGE, impl="numba")
    assert got == pytest.approx(expected, abs=1e-6)


def test_gpudiff_reference_numpy(benchmark, pair, expected):
    a, b = pair
    got = benchmark.pedantic(
        structural_similarity, args=(a, b), kwargs={"data_range": DATA_RANGE, "impl": "reference"}, rounds=3
    )
    assert got == pytest.approx(expected, abs=1e-4)


@pytest.mark.gpu
def test_gpudiff_cupy(benchmark, pair, expected):
    if not cupy_available():
        pytest.skip("no CUDA device / CuPy")
    import cupy

    a, b = (cupy.asarray(x) for x in pair)
    structural_similarity(a, b, data_range=DATA_RANGE)  # warm-up: kernel compilation
    # the returned float synchronises the stream inside the timed call
    got = benchmark(structural_similarity, a, b, data_range=DATA_RANGE)
    assert got == pytest.approx(expected, abs=1e-4)


def test_opencv_formula(benchmark, pair, expected):
    benchmark.extra_info["threads"] = cv2.getNumThreads()
    got = benchmark(opencv_ssim, *pair)
    assert got == pytest.approx(expected, abs=1e-4)


def test_skimage(benchmark, pair, expected):
    got = benchmark.pedantic(skimage_ssim, args=pair, rounds=3)
    assert got == pytest.approx(expected, abs=1e-12)
