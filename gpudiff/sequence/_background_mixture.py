"""The mixture model of :mod:`._background` (``BackgroundOptions(model='mixture')``): per pixel a
weighted mixture of a few Gaussians, the heaviest of which are the background (Stauffer and
Grimson, CVPR 1999; the update of Zivkovic, ICPR 2004). Every step is elementwise float32 over
the components (a short Python loop over ``K``, never over pixels), so NumPy and CuPy compute
the same bits and a tile's model holds the whole frame's values."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ._background_shadows import channel_sum

__all__ = ["MixtureState"]

_VAR_MAX = 9.0  # variance cap, in units of min_std**2 (measured: 2 -> F -0.03, 4 -> -0.005, none -> -0.002)


@dataclass
class MixtureState:
    """The mixture of one window, as ``xp`` arrays.

    Attributes
    ----------
    weight : float32 (K, h, w)
        Component weights; they add up to 1 at a pixel once it has seen a valid frame (0 before).
    mean : float32 (K, h, w) or (K, h, w, C)
        Component means, in units of the data range.
    var : float32 (K, h, w)
        Component variances (one per component, shared by the channels: mean over channels).
    count : int32 (h, w)
        Valid frames seen, saturating at ``init_frames``.
    frames : int
        Frames given to ``update``.
    """

    weight: Any
    mean: Any
    var: Any
    count: Any
    frames: int = 0


def start(shape, chans: int, options, xp) -> MixtureState:
    h, w = shape
    K = options.components
    mshape = (K, h, w, chans) if chans else (K, h, w)
    return MixtureState(
        weight=xp.zeros((K, h, w), dtype=xp.float32),
        mean=xp.zeros(mshape, dtype=xp.float32),
        var=xp.zeros((K, h, w), dtype=xp.float32),
        count=xp.zeros((h, w), dtype=xp.int32),
    )


def _match(st: MixtureState, x, options, xp):
    """Per component: deviation ``d``, its mean square over channels ``d2``, and whether it matches;
    which components are background; the chosen (heaviest matching) component, -1 for none."""
    f32 = xp.float32
    K = st.weight.shape[0]
    kk = f32(options.k * options.k)
    floor = f32(options.min_std * options.min_std)
    d, d2, match = [], [], []
    for c in range(K):
        dc = x - st.mean[c]
        sq = dc * dc
        if sq.ndim == 3:
            sq = channel_sum(sq) / f32(sq.shape[2])
        d.append(dc)
        d2.append(sq)
        match.append((st.weight[c] > f32(0)) & (sq <= kk * xp.maximum(st.var[c], floor)))
    # a component is background when the components ahead of it (heavier; ties: lower index)
    # weigh less than background_ratio of the total
    ratio = f32(options.background_ratio)
    bg = []
    for c in range(K):
        ahead = xp.zeros_like(st.weight[c])
        for j in range(K):
            if j == c:
                continue
            first = st.weight[j] >= st.weight[c] if j < c else st.weight[j] > st.weight[c]
            ahead = ahead + xp.where(first, st.weight[j], f32(0))
        bg.append(ahead < ratio)
    best = xp.full(st.count.shape, -1, dtype=xp.int32)
    best_w = xp.full(st.count.shape, -1, dtype=xp.float32)
    for c in range(K):
        take = match[c] & (st.weight[c] > best_w)
        best = xp.where(take, xp.int32(c), best)
        best_w = xp.where(take, st.weight[c], best_w)
    return d, d2, bg, best


def classify(st: MixtureState, x, options, xp):
    """Raw foreground (no matching background component), the pixels past initialisation, and
    what :func:`fold` reuses (the deviations and the chosen component)."""
    d, d2, bg, best = _match(st, x, options, xp)
    is_bg = None
    for c, b in enumerate(bg):
        t = (best == c) & b
        is_bg = t if is_bg is None else is_bg | t
    ready = st.count >= options.init_frames
    return ~is_bg, ready, (d, d2, best)


def reference(st: MixtureState, xp):
    """The heaviest component's mean and variance (ties: the lower index)."""
    K = st.weight.shape[0]
    mean, var, w = st.mean[0], st.var[0], st.weight[0]
    for c in range(1, K):
        take = st.weight[c] > w
        w = xp.where(take, st.weight[c], w)
        var = xp.where(take, st.var[c], var)
        mean = xp.where(take[..., None] if mean.ndim == 3 else take, st.mean[c], mean)
    return mean, var


def fold(st: MixtureState, x, valid, matched, options, xp):
    """Fold a frame in (Zivkovic's update, every valid pixel, foreground included).

    With :math:`\\alpha = \\max(\\text{learning\\_rate}, 1/n)` at the pixel's :math:`n`-th valid
    frame and :math:`o_c` = 1 for the chosen component (the heaviest that matches), 0 otherwise:
    :math:`w_c \\leftarrow w_c + \\alpha (o_c - w_c)`; the chosen one moves by
    :math:`\\rho = \\alpha / w_c`: :math:`\\mu \\leftarrow \\mu + \\rho d`,
    :math:`\\sigma^2 \\leftarrow \\sigma^2 + \\rho (d^2 - \\sigma^2)`. Where nothing matches, the
    lightest component (ties: the higher index) restarts at the pixel's value with variance
    ``min_std**2`` and weight :math:`\\alpha`. Weights are then renormalised to sum 1.
    ``matched`` is :func:`classify`'s third result for this frame.
    """
    f32 = xp.float32
    K = st.weight.shape[0]
    d, d2, best = matched  # what classify found for this frame
    n = (st.count + 1).astype(f32)
    init = st.count < options.init_frames
    alpha = xp.where(init, f32(1) / n, f32(options.weight_learning_rate))
    alpha = xp.where(valid, alpha, f32(0))
    beta = xp.where(init, f32(1) / n, f32(options.learning_rate))
    # the lightest component: replaced where nothing matches
    low, low_w = xp.zeros(st.count.shape, dtype=xp.int32), st.weight[0]
    for c in range(1, K):
        take = st.weight[c] <= low_w
        low = xp.where(take, xp.int32(c), low)
        low_w = xp.where(take, st.weight[c], low_w)
    none = valid & (best < 0)
    var0 = f32(options.min_std * options.min_std)
    vmax = f32(_VAR_MAX * options.min_std * options.min_std)
    weights, means, variances = [], [], []
    for c in range(K):
        chosen = valid & (best == c)
        w = st.weight[c]
        w_new = w + alpha * (xp.where(chosen, f32(1), f32(0)) - w)
        rho = xp.where(chosen, xp.minimum(beta / xp.where(chosen, w_new, f32(1)), f32(1)), f32(0))
        rho_m = rho[..., None] if d[c].ndim == 3 else rho
        m = st.mean[c] + rho_m * d[c]
        v = st.var[c] + rho * (d2[c] - st.var[c])
        v = xp.minimum(xp.maximum(v, var0), vmax)
        fresh = none & (low == c)
        w_new = xp.where(fresh, alpha, w_new)
        m = xp.where(fresh[..., None] if m.ndim == 3 else fresh, x, m)
        v = xp.where(fresh, var0, v)
        weights.append(w_new)
        means.append(m)
        variances.append(v)
    total = weights[0]
    for c in range(1, K):
        total = total + weights[c]
    total = xp.where(total > f32(0), total, f32(1))
    st.weight = xp.stack([w / total for w in weights])
    st.mean = xp.stack(means)
    st.var = xp.stack(variances)
    st.count = xp.where(valid, xp.minimum(st.count + 1, xp.int32(options.init_frames)), st.count)
    st.frames += 1
