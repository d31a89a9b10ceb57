"""The fused pass as plain array code against ``xp`` (NumPy or CuPy): row strips of about two
million pixels, so no metric allocates full-image temporaries. The reference the others equal.
"""

from __future__ import annotations

import numpy as np

from .. import backend as _backend
from ._sums_core import (
    _L1,
    _MAX,
    _SA,
    _SAA,
    _SAB,
    _SB,
    _SBB,
    _SSE,
    _finish_float,
    _finish_integer,
    _integer_tolerance,
    _value_bins,
)


#: Pixels per row strip of the reference implementation.
_STRIP_PIXELS = 1 << 21


# --------------------------------------------------------------------------------------------------
# reference: plain xp code, row strip by row strip


def _pair_sums_reference(xp, a, b, C, tolerance, center, bins, hist_range):
    """``a``, ``b``: contiguous (H, W*C). Works for NumPy and CuPy; one host transfer at the end."""
    H = a.shape[0]
    W = a.shape[1] // C
    is_int = a.dtype.kind == "u"
    acc = xp.int64 if is_int else xp.float64
    rows = max(1, _STRIP_PIXELS // W)
    totals = xp.zeros((8, C), dtype=acc)
    l0 = xp.zeros(C, dtype=xp.int64)
    l0_any = xp.zeros((), dtype=xp.int64)
    thr = _integer_tolerance(tolerance, a.dtype) if is_int else tolerance
    want_hist = hist_range is not None
    if want_hist:
        nbp = bins + 1  # the last bin collects what is out of range, and is dropped
        hist = xp.zeros((2, C * nbp), dtype=xp.int64)
        offsets = (xp.arange(C, dtype=xp.int64) * nbp)[:, None]
        lut = xp.asarray(_value_bins(a.dtype.name, *hist_range, bins)) if is_int else None

    def binned(x):  # (C, m) values -> (C, m) int64 bin indices, ``bins`` for out of range / NaN
        if is_int:
            return lut[x].astype(xp.int64)
        v = x.astype(xp.float64)
        lo, hi = hist_range
        inside = (v >= lo) & (v <= hi)
        t = xp.floor((v - lo) * bins / (hi - lo))
        return xp.where(inside, xp.minimum(t, bins - 1), bins).astype(xp.int64)

    with np.errstate(invalid="ignore", over="ignore"):
        for r0 in range(0, H, rows):
            # (C, m): each channel contiguous, so NumPy's sums along it are pairwise (accurate)
            xa = a[r0 : r0 + rows].reshape(-1, C).T
            xb = b[r0 : r0 + rows].reshape(-1, C).T
            fa = xa.astype(acc, order="C")
            fb = xb.astype(acc, order="C")
            d = fa - fb
            ad = xp.abs(d)
            totals[_L1] += ad.sum(axis=1)
            totals[_SSE] += (d * d).sum(axis=1)
            totals[_MAX] = xp.maximum(totals[_MAX], ad.max(axis=1))
            over = ad > thr
            l0 += over.sum(axis=1)
            l0_any += over.any(axis=0).sum()
            del d, ad, over
            if not is_int and center != 0.0:
                fa -= center
                fb -= center
            totals[_SA] += fa.sum(axis=1)
            totals[_SB] += fb.sum(axis=1)
            totals[_SAA] += (fa * fa).sum(axis=1)
            totals[_SBB] += (fb * fb).sum(axis=1)
            totals[_SAB] += (fa * fb).sum(axis=1)
            del fa, fb
            if want_hist:
                for k, x in enumerate((xa, xb)):
                    idx = (binned(x) + offsets).ravel()
                    hist[k] += xp.bincount(idx, minlength=C * nbp)
    totals, l0, l0_any = (_backend.to_host(x) for x in (totals, l0, l0_any))  # sync
    h = None
    if want_hist:
        h = _backend.to_host(hist).reshape(2, C, nbp)[:, :, :bins]  # sync
    n = H * W
    if is_int:
        return _finish_integer(n, C, totals, l0, l0_any, center, h, hist_range)
    return _finish_float(n, totals, l0, l0_any, center, h, hist_range)
