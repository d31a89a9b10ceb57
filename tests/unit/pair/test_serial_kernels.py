"""The serial fused pass (for already-parallel callers) gives the parallel pass's numbers exactly."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from gpudiff.pair._sums import pair_sums
from gpudiff.pair._sums_numba import serial_kernels

pytest.importorskip("numba")


def _fields(p):
    return [p.n, *p.l1, *p.l0, p.l0_any, *p.sse, *p.max_abs, *p.sa, *p.sb, *p.saa, *p.sbb, *p.sab,
            *(p.hist_a.ravel() if p.hist_a is not None else []), *(p.hist_b.ravel() if p.hist_b is not None else [])]


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32, np.float64])
@pytest.mark.parametrize("channels", [1, 3])
def test_serial_equals_parallel(dtype, channels):
    rng = np.random.default_rng(7)
    shape = (301, 257) if channels == 1 else (301, 257, channels)
    hi = {np.uint8: 256, np.uint16: 65536}.get(dtype, 1.0)
    a = (rng.random(shape) * (hi - 1)).astype(dtype)
    b = (rng.random(shape) * (hi - 1)).astype(dtype)
    kw = dict(tolerance=2, center=0.0 if hi != 1.0 else 0.5, bins=64, hist_range=(0, hi), impl="numba")
    par = pair_sums(a, b, **kw)
    with serial_kernels():
        ser = pair_sums(a, b, **kw)
    assert _fields(ser) == _fields(par)


def test_many_threads_at_once_without_the_lock():
    rng = np.random.default_rng(3)
    pairs = [((rng.random((512, 512)) * 255).astype(np.uint8), (rng.random((512, 512)) * 255).astype(np.uint8))
             for _ in range(8)]
    expect = [pair_sums(a, b, hist_range=(0, 256), impl="numba") for a, b in pairs]
    got = [None] * len(pairs)

    def work(i):
        with serial_kernels():
            got[i] = pair_sums(*pairs[i], hist_range=(0, 256), impl="numba")

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(pairs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for e, g in zip(expect, got):
        assert _fields(e) == _fields(g)


def test_serial_ssim_equals_parallel():
    from gpudiff.pair._ssim import structural_similarity

    rng = np.random.default_rng(11)
    a = (rng.random((203, 177)) * 255).astype(np.uint8)
    b = np.clip(a.astype(int) + rng.integers(-9, 10, a.shape), 0, 255).astype(np.uint8)
    par = structural_similarity(a, b, data_range=255, impl="numba")
    with serial_kernels():
        ser = structural_similarity(a, b, data_range=255, impl="numba")
    assert ser == par
