"""Histograms as feature vectors: distances between two (probability-normalised) histograms.

Each distance is defined exactly as OpenCV's ``compareHist`` method of the same name, so a user can
check one against the other; Jensen-Shannon is added (base e). The histograms themselves come from
the fused pass (:func:`gpudiff.pair.pair_sums`), so no extra read of the images is needed.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "HISTOGRAM_DISTANCES",
    "normalize_histogram",
    "kl_divergence",
    "js_divergence",
    "chi_square",
    "chi_square_alt",
    "bhattacharyya_distance",
    "intersection",
    "correlation",
    "histogram_distances",
]

from ..options import HISTOGRAM_DISTANCES

_DBL_EPS = np.finfo(np.float64).eps
_FLT_EPS = float(np.finfo(np.float32).eps)
#: OpenCV's substitute for an empty bin of the second histogram in KL.
KL_EMPTY_Q = 1e-10


def normalize_histogram(h) -> np.ndarray:
    """Counts -> probabilities (sum 1) in float64; an empty histogram stays all zeros."""
    h = np.asarray(h, dtype=np.float64)
    s = h.sum(axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(s > 0, h / np.where(s > 0, s, 1.0), 0.0)


def kl_divergence(p, q) -> float:
    r"""Kullback-Leibler divergence :math:`\sum_i p_i \ln(p_i / q_i)`.

    Notes
    -----
    As OpenCV's ``HISTCMP_KL_DIV``: bins with :math:`p_i = 0` are skipped, an empty :math:`q_i` is
    replaced by :math:`10^{-10}` (so the value is finite but large when ``q`` misses mass that ``p``
    has). Not symmetric.
    """
    p = np.asarray(p, dtype=np.float64)
    q = np.asarray(q, dtype=np.float64)
    use = np.abs(p) > _DBL_EPS
    qq = np.where(np.abs(q) > _DBL_EPS, q, KL_EMPTY_Q)
    return float(np.sum(p[use] * np.log(p[use] / qq[use])))


def js_divergence(p, q) -> float:
    r"""Jensen-Shannon divergence, base e: :math:`\tfrac12 KL(p\|m) + \tfrac12 KL(q\|m)`, :math:`m=(p+q)/2`.

    Symmetric, finite, in :math:`[0, \ln 2]` for probability vectors.
    """
    p = np.asarray(p, dtype=np.float64)
    q = np.asarray(q, dtype=np.float64)
    m = 0.5 * (p + q)

    def _kl(x):
        use = x > 0
        return float(np.sum(x[use] * np.log(x[use] / m[use])))

    return 0.5 * _kl(p) + 0.5 * _kl(q)


def chi_square(p, q) -> float:
    r""":math:`\sum_i (p_i - q_i)^2 / p_i` over bins with :math:`p_i \ne 0` (OpenCV ``HISTCMP_CHISQR``)."""
    p = np.asarray(p, dtype=np.float64)
    q = np.asarray(q, dtype=np.float64)
    use = np.abs(p) > _DBL_EPS
    return float(np.sum((p[use] - q[use]) ** 2 / p[use]))


def chi_square_alt(p, q) -> float:
    r""":math:`2 \sum_i (p_i - q_i)^2 / (p_i + q_i)` (OpenCV ``HISTCMP_CHISQR_ALT``), symmetric."""
    p = np.asarray(p, dtype=np.float64)
    q = np.asarray(q, dtype=np.float64)
    s = p + q
    use = np.abs(s) > _DBL_EPS
    return float(2.0 * np.sum((p[use] - q[use]) ** 2 / s[use]))


def bhattacharyya_distance(p, q) -> float:
    r""":math:`\sqrt{1 - \sum_i \sqrt{p_i q_i} / \sqrt{\sum p \sum q}}` (OpenCV ``HISTCMP_BHATTACHARYYA``).

    0 for identical histograms, 1 for disjoint ones (the Hellinger distance).
    """
    p = np.asarray(p, dtype=np.float64)
    q = np.asarray(q, dtype=np.float64)
    s = float(p.sum() * q.sum())
    scale = 1.0 / np.sqrt(s) if abs(s) > _FLT_EPS else 1.0
    bc = float(np.sum(np.sqrt(p * q)))
    return float(np.sqrt(max(1.0 - bc * scale, 0.0)))


def intersection(p, q) -> float:
    r""":math:`\sum_i \min(p_i, q_i)` (OpenCV ``HISTCMP_INTERSECT``): 1 for identical probability vectors."""
    return float(np.sum(np.minimum(np.asarray(p, np.float64), np.asarray(q, np.float64))))


def correlation(p, q) -> float:
    r"""Pearson correlation of the bin values (OpenCV ``HISTCMP_CORREL``): 1 identical, 0 unrelated.

    Notes
    -----
    :math:`\sum (p_i-\bar p)(q_i-\bar q) / \sqrt{\sum (p_i-\bar p)^2 \sum (q_i-\bar q)^2}`. When one
    histogram is flat (zero variance) OpenCV returns 1 if the numerator's denominator vanishes; we
    follow it exactly: a zero denominator gives 1.0.
    """
    p = np.asarray(p, dtype=np.float64)
    q = np.asarray(q, dtype=np.float64)
    dp = p - p.mean()
    dq = q - q.mean()
    num = float(np.sum(dp * dq))
    den = float(np.sum(dp * dp) * np.sum(dq * dq))
    return num / np.sqrt(den) if abs(den) > _DBL_EPS else 1.0


_FUNCS = {
    "kl": kl_divergence,
    "js": js_divergence,
    "chi2": chi_square,
    "chi2_alt": chi_square_alt,
    "bhattacharyya": bhattacharyya_distance,
    "intersection": intersection,
    "correlation": correlation,
}


from .._numba_cache import cached_njit, prepare_cache_dir

prepare_cache_dir()
try:
    import numba as _numba
except ImportError:  # pragma: no cover
    _numba = None

if _numba is not None:

    @cached_njit(nogil=True)
    def _all_distances(ha, hb, normalize):  # pragma: no cover - compiled; tested through histogram_distances
        """The seven distances of HISTOGRAM_DISTANCES in one compiled pass (same definitions as the
        NumPy functions above; sums run in bin order instead of NumPy's pairwise order)."""
        n = ha.shape[0]
        sa = 0.0
        sb = 0.0
        for i in range(n):
            sa += ha[i]
            sb += hb[i]
        p = np.empty(n)
        q = np.empty(n)
        for i in range(n):
            p[i] = ha[i] / sa if (normalize and sa > 0) else (0.0 if normalize else ha[i])
            q[i] = hb[i] / sb if (normalize and sb > 0) else (0.0 if normalize else hb[i])
        mp = 0.0
        mq = 0.0
        sp = 0.0
        sq = 0.0
        for i in range(n):
            sp += p[i]
            sq += q[i]
        mp = sp / n
        mq = sq / n
        kl = js_p = js_q = chi2 = chi2_alt = bc = inter = num = vp = vq = 0.0
        for i in range(n):
            pi = p[i]
            qi = q[i]
            if abs(pi) > _DBL_EPS:
                qq = qi if abs(qi) > _DBL_EPS else KL_EMPTY_Q
                kl += pi * np.log(pi / qq)
                chi2 += (pi - qi) ** 2 / pi
            m = 0.5 * (pi + qi)
            if pi > 0:
                js_p += pi * np.log(pi / m)
            if qi > 0:
                js_q += qi * np.log(qi / m)
            s = pi + qi
            if abs(s) > _DBL_EPS:
                chi2_alt += (pi - qi) ** 2 / s
            bc += np.sqrt(pi * qi)
            inter += min(pi, qi)
            dp = pi - mp
            dq = qi - mq
            num += dp * dq
            vp += dp * dp
            vq += dq * dq
        ss = sp * sq
        scale = 1.0 / np.sqrt(ss) if abs(ss) > _FLT_EPS else 1.0
        den = vp * vq
        out = np.empty(7)
        out[0] = kl
        out[1] = 0.5 * js_p + 0.5 * js_q
        out[2] = chi2
        out[3] = 2.0 * chi2_alt
        out[4] = np.sqrt(max(1.0 - bc * scale, 0.0))
        out[5] = inter
        out[6] = num / np.sqrt(den) if abs(den) > _DBL_EPS else 1.0
        return out


def histogram_distances(hist_a, hist_b, *, normalize=True) -> dict[str, float]:
    """Every distance of :data:`HISTOGRAM_DISTANCES` between two histograms of equal length.

    Parameters
    ----------
    hist_a, hist_b : array_like, shape (bins,)
        Counts (or probabilities with ``normalize=False``). ``hist_a`` plays OpenCV's ``H1``.
    normalize : bool
        Divide each histogram by its sum first (probability vectors), as gpudiff reports them.

    Returns
    -------
    dict
        ``{name: value}`` in the order of :data:`HISTOGRAM_DISTANCES`.
    """
    ha = np.asarray(hist_a, np.float64)
    hb = np.asarray(hist_b, np.float64)
    if ha.shape != hb.shape or ha.ndim != 1:
        raise ValueError(f"histograms must be 1-D of equal length, got {ha.shape} and {hb.shape}")
    if _numba is not None and ha.size:
        values = _all_distances(np.ascontiguousarray(ha), np.ascontiguousarray(hb), bool(normalize))
        return {name: float(v) for name, v in zip(HISTOGRAM_DISTANCES, values)}
    p = normalize_histogram(ha) if normalize else ha
    q = normalize_histogram(hb) if normalize else hb
    return {name: _FUNCS[name](p, q) for name in HISTOGRAM_DISTANCES}
