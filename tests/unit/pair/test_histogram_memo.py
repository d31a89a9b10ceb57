"""A frame shared by consecutive pairs has its histogram counted once, with the same results."""

from __future__ import annotations

import numpy as np
import pytest

from gpudiff.pair._compare import HistogramMemo, _compare_arrays, compare
from gpudiff.options import CompareOptions


def _frames(dtype):
    rng = np.random.default_rng(5)
    base = rng.integers(0, 200, (64, 80)).astype(np.float64)
    frames = [base + rng.normal(0, 3, base.shape) + 5 * t for t in range(4)]
    if dtype == np.float32:
        return [(f / 256).astype(np.float32) for f in frames]
    scale = 1 if dtype == np.uint8 else 257
    return [np.clip(f * scale, 0, np.iinfo(dtype).max).astype(dtype) for f in frames]


def _as_dict(c):
    d = c.to_dict()
    d.pop("steps", None)
    return d


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
@pytest.mark.parametrize("extra", [{}, {"align": True}, {"blur": 1.0}, {"normalize": "zscore"}])
def test_memo_gives_the_same_comparisons(dtype, extra):
    options = CompareOptions(backend="numpy", **extra)
    frames = _frames(dtype)
    memo = HistogramMemo()
    for t in range(1, len(frames)):
        got = _compare_arrays(frames[t - 1], frames[t], options, np, names=("r", "m"), memo=memo, keys=(t - 1, t))
        want = compare(frames[t - 1], frames[t], options=options)
        assert _as_dict(got) == _as_dict(want)


def test_memo_holds_only_unchanged_frames():
    frames = _frames(np.uint16)
    memo = HistogramMemo()
    _compare_arrays(frames[0], frames[1], CompareOptions(backend="numpy"), np, names=("r", "m"), memo=memo, keys=(0, 1))
    h = memo.get(1, (0.0, 65536.0), 256)
    assert h is not None and h.sum() == frames[1].size
    np.testing.assert_array_equal(h[0], np.histogram(frames[1], bins=256, range=(0, 65536))[0])
    memo.forget(1)
    assert memo.get(1, (0.0, 65536.0), 256) is None
    # a blurred frame is not the frame: nothing is remembered
    memo2 = HistogramMemo()
    opts = CompareOptions(backend="numpy", blur=1.0)
    _compare_arrays(frames[0], frames[1], opts, np, names=("r", "m"), memo=memo2, keys=(0, 1))
    assert memo2._h == {}
