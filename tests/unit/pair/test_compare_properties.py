"""Invariants of compare (hypothesis): identity, symmetry where the metric is symmetric, tiles."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import gpudiff

SYMMETRIC = ["manhattan", "zero_norm", "mse", "max_abs", "ncc", "ssim", "psnr"]
SYMMETRIC_HIST = ["js", "chi2_alt", "bhattacharyya", "intersection", "correlation"]

shapes = st.tuples(st.integers(1, 40), st.integers(1, 40))
pairs_u8 = shapes.flatmap(
    lambda s: st.tuples(arrays(np.uint8, s), arrays(np.uint8, s))
)


@settings(max_examples=40, deadline=None)
@given(pairs_u8)
def test_metric_of_an_image_with_itself(pair):
    a, _ = pair
    r = gpudiff.compare(a, a, backend="numpy")
    assert r.manhattan == 0 and r.zero_norm == 0 and r.mse == 0 and r.max_abs == 0
    assert r.psnr == float("inf")
    assert r.ncc == 1.0
    assert r.ssim == pytest.approx(1.0)
    assert r.histogram["kl"] == 0 and r.histogram["js"] == 0 and r.histogram["chi2"] == 0
    assert r.histogram["intersection"] == pytest.approx(1.0)


@settings(max_examples=40, deadline=None)
@given(pairs_u8)
def test_symmetric_metrics_are_symmetric(pair):
    a, b = pair
    ab = gpudiff.compare(a, b, backend="numpy")
    ba = gpudiff.compare(b, a, backend="numpy")
    for k in SYMMETRIC:
        assert getattr(ab, k) == pytest.approx(getattr(ba, k), rel=1e-9, abs=1e-12), k
    for k in SYMMETRIC_HIST:
        assert ab.histogram[k] == pytest.approx(ba.histogram[k], rel=1e-9, abs=1e-12), k


@settings(max_examples=30, deadline=None)
@given(pairs_u8, st.data())
def test_norms_of_tiles_add_up_to_the_whole(pair, data):
    a, b = pair
    h, w = a.shape
    r0 = data.draw(st.integers(0, h))
    c0 = data.draw(st.integers(0, w))
    whole = gpudiff.compare(a, b, backend="numpy", metrics="manhattan,zero_norm,mse,max_abs")
    tiles = [(slice(0, r0), slice(0, c0)), (slice(0, r0), slice(c0, w)),
             (slice(r0, h), slice(0, c0)), (slice(r0, h), slice(c0, w))]
    l1 = l0 = sse = 0.0
    mx = 0.0
    for rs, cs in tiles:
        ta, tb = a[rs, cs], b[rs, cs]
        if ta.size == 0:
            continue
        t = gpudiff.compare(ta, tb, backend="numpy", metrics="manhattan,zero_norm,mse,max_abs")
        l1 += t.manhattan
        l0 += t.zero_norm
        sse += t.mse * ta.size
        mx = max(mx, t.max_abs)
    assert whole.manhattan == l1 and whole.zero_norm == l0 and whole.max_abs == mx
    assert whole.mse * a.size == pytest.approx(sse, rel=1e-12)
