"""Translation registration at 2048x2048: gpudiff vs cv2.phaseCorrelate vs scikit-image.

Run with ``python -m pytest benchmarks/test_bench_align.py --benchmark-enable``; by default (the
project's ``--benchmark-disable``) each case runs once as a smoke test. Nothing here asserts time:
the cases record it, and check only that every implementation found the known shift.

Data: camera.png (skimage-data) upscaled (bicubic) to 2112x2112; reference is the top-left
2048x2048 window and moving the window moved by (13, 29) pixels, so the true registering shift is
(13, 29). The masked case uses the 485x587 TransformedX130Y130 pair with zero (invalid) borders.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
import pytest

from gpudiff.backend import cupy_available
from gpudiff.pair._align import phase_cross_correlation

cv2 = pytest.importorskip("cv2")
skimage_registration = pytest.importorskip("skimage.registration")

DATA = Path(os.environ.get("GPUDIFF_DATA", Path(__file__).resolve().parents[1].parent / "shared" / "data"))
SIZE = 2048
SHIFT = (13, 29)


def _need_data():
    if not DATA.is_dir():
        if os.environ.get("GPUDIFF_REQUIRE_DATA") == "1":
            pytest.fail(f"real test data missing at {DATA} (GPUDIFF_REQUIRE_DATA=1)")
        pytest.skip(f"real test data not found at {DATA}")


@pytest.fixture(scope="module")
def pair_2048():
    _need_data()
    camera = cv2.imread(str(DATA / "skimage-data" / "camera.png"), cv2.IMREAD_GRAYSCALE)
    big = cv2.resize(camera, (SIZE + 64, SIZE + 64), interpolation=cv2.INTER_CUBIC)
    sy, sx = SHIFT
    ref = np.ascontiguousarray(big[:SIZE, :SIZE])
    mov = np.ascontiguousarray(big[sy : sy + SIZE, sx : sx + SIZE])
    return {
        "uint8": (ref, mov),
        "float32": (ref.astype(np.float32), mov.astype(np.float32)),
    }


@pytest.fixture(scope="module")
def masked_pair():
    _need_data()
    folder = DATA / "skimage-registration-shifts"
    with open(folder / "shifts.csv", newline="") as fh:
        row = next(r for r in csv.DictReader(fh) if r["reference_image"] == "OriginalX130Y130.png")
    ref = cv2.imread(str(folder / row["reference_image"]), cv2.IMREAD_GRAYSCALE)
    mov = cv2.imread(str(folder / row["moving_image"]), cv2.IMREAD_GRAYSCALE)
    return ref, mov, (float(row["expected_shift_row"]), float(row["expected_shift_col"]))


BACKENDS = [
    pytest.param("numpy", id="gpudiff-numpy"),
    pytest.param("cupy", id="gpudiff-cupy", marks=pytest.mark.gpu),
]


def _on(backend, *arrays):
    """The arrays on the backend's device (outside the timed call), and a stream sync."""
    if backend == "numpy":
        return arrays, lambda: None
    if not cupy_available():
        pytest.skip("no CUDA device / CuPy")
    import cupy  # noqa: PLC0415

    return tuple(cupy.asarray(a) for a in arrays), cupy.cuda.get_current_stream().synchronize


def _gpudiff(benchmark, backend, ref, mov, **kwargs):
    (ref, mov), sync = _on(backend, ref, mov)
    masks = {k: _on(backend, v)[0][0] for k, v in kwargs.items() if k.endswith("_mask")}
    kwargs.update(masks)

    def run():
        out = phase_cross_correlation(ref, mov, **kwargs)
        sync()
        return out

    run()  # warm-up: plans, kernels
    return benchmark(run).shift


def _cv2_shift(benchmark, ref, mov):
    """cv2.phaseCorrelate needs float input; a uint8 pair pays its conversion, as a caller would."""

    def run():
        a = ref if ref.dtype.kind == "f" else ref.astype(np.float32)
        b = mov if mov.dtype.kind == "f" else mov.astype(np.float32)
        return cv2.phaseCorrelate(a, b)

    (x, y), _response = benchmark(run)
    return -y, -x  # OpenCV gives the displacement of moving, as (x, y)


def _skimage(benchmark, ref, mov, **kwargs):
    shift, _error, _phase = benchmark(skimage_registration.phase_cross_correlation, ref, mov, **kwargs)
    return tuple(float(v) for v in shift)


# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["float32", "uint8"])
@pytest.mark.parametrize("impl", [*BACKENDS, "cv2", "skimage"])
def test_integer_2048(benchmark, pair_2048, impl, dtype):
    benchmark.group = f"align integer {SIZE}x{SIZE} {dtype}"
    ref, mov = pair_2048[dtype]
    if impl in ("numpy", "cupy"):
        shift = _gpudiff(benchmark, impl, ref, mov)
        assert shift == SHIFT
    elif impl == "cv2":
        shift = _cv2_shift(benchmark, ref, mov)
        np.testing.assert_allclose(shift, SHIFT, atol=0.5)  # OpenCV always refines (centroid)
    else:
        shift = _skimage(benchmark, ref, mov)
        assert shift == SHIFT


@pytest.mark.parametrize(
    "impl", [*BACKENDS, "skimage-upsample20", "skimage-integer", "cv2"]
)
def test_upsample20_2048(benchmark, pair_2048, impl):
    benchmark.group = f"align subpixel (upsample 20) {SIZE}x{SIZE} float32"
    ref, mov = pair_2048["float32"]
    if impl in ("numpy", "cupy"):
        shift = _gpudiff(benchmark, impl, ref, mov, upsample_factor=20)
    elif impl == "cv2":
        shift = _cv2_shift(benchmark, ref, mov)
    elif impl == "skimage-upsample20":
        shift = _skimage(benchmark, ref, mov, upsample_factor=20)
    else:
        shift = _skimage(benchmark, ref, mov)
    np.testing.assert_allclose(shift, SHIFT, atol=0.5)


@pytest.mark.parametrize("impl", [*BACKENDS, "skimage"])
def test_masked_485x587(benchmark, masked_pair, impl):
    benchmark.group = "align masked NCC 485x587 uint8 (zero borders)"
    ref, mov, expected = masked_pair
    kwargs = {"reference_mask": ref != 0, "moving_mask": mov != 0, "overlap_ratio": 0.1}
    if impl in ("numpy", "cupy"):
        shift = _gpudiff(benchmark, impl, ref, mov, **kwargs)
    else:
        shift = _skimage(benchmark, ref, mov, **kwargs)
    assert shift == expected
