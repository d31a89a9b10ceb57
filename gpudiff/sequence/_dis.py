"""Dense optical flow by DIS, dense inverse search (Kroeger et al., ECCV 2016), with OpenCV's presets.

Coarse to fine, at each pyramid level: a patch grid searches the moving image by inverse-compositional
Gauss-Newton (every patch at once: the grid is a batch of ``(p * p, n_patches)`` arrays and each patch's
Hessian is computed once per level), the patch vectors are densified by averaging the overlapping
patches weighted by their photometric fit, and a variational refinement (data, gradient-constancy and
smoothness terms, red-black SOR) polishes the dense field. Written once against the array namespace
``xp`` (NumPy or CuPy) like :mod:`._flow`; filters and interpolation through
:func:`gpudiff.backend.ndimage`, no host synchronisation inside the levels.

Flow convention (scikit-image's, as :func:`gpudiff.sequence.optical_flow_lk`): ``flow = (v, u)``, row
then column component, with ``reference[r, c] ~ moving[r + v, c + u]``. OpenCV's
``DISOpticalFlow.calc`` returns ``(dx, dy) = (u, v)`` in an ``(H, W, 2)`` array: gpudiff's flow is
``np.moveaxis(cv_flow[..., ::-1], -1, 0)``.
"""

from __future__ import annotations

import math

import numpy as np

from ..backend import get_namespace, ndimage
from ..errors import ConfigError, InputError
from ._pyramid import _check_dtype, _check_int, _prepare_pair, _pyramid, _resize_linear

__all__ = ["optical_flow_dis", "DIS_PRESETS"]

#: OpenCV's ``DISOpticalFlow::create`` presets (video/src/dis_flow.cpp; the same in OpenCV 4.x and 5.x):
#: patch size, patch stride, gradient-descent iterations per level, finest scale (0: full size; the flow
#: of level ``s`` is upsampled by ``2 ** s``) and variational refinement (fixed-point) iterations.
DIS_PRESETS = {
    "ultrafast": {"patch_size": 8, "patch_stride": 4, "gd_iterations": 12, "finest_scale": 2,
                  "variational_iterations": 0},
    "fast": {"patch_size": 8, "patch_stride": 4, "gd_iterations": 16, "finest_scale": 2,
             "variational_iterations": 5},
    "medium": {"patch_size": 8, "patch_stride": 3, "gd_iterations": 25, "finest_scale": 1,
               "variational_iterations": 5},
}  # fmt: skip

#: The intensity unit of every constant below (OpenCV's DIS runs on uint8 images): images in [0, 1]
#: are multiplied by this before the search.
_GREY_LEVELS = 255.0
#: Red-black SOR sweeps per fixed-point iteration, and the over-relaxation (OpenCV's values).
_SOR_ITERATIONS = 5
_OMEGA = 1.6
#: Normalisation of the data terms, ``1 / (|grad I|^2 + zeta^2)``, and the regulariser of the robust
#: penalty ``sqrt(s^2 + epsilon^2)`` (OpenCV's values, grey levels).
_ZETA = 0.1
_EPSILON = 1e-3
#: Search passes per level: the gradient-descent iterations are split over them (OpenCV makes two
#: scans, forward and backward); before every pass but the first each patch also tries its four
#: neighbours' vectors (spatial propagation, here in parallel: a Jacobi form of OpenCV's scan).
_PASSES = 2
#: Levenberg damping of each patch's 2x2 Hessian, relative to its trace: keeps patches on an edge
#: (near-singular Hessian) from stepping along it. Measured on 14 cases of benchmarks/flow_eval.py
#: (mean EPE of ultrafast / fast / medium): 1e-4 3.19 / 2.89 / 2.24, 1e-2 3.09 / 2.73 / 2.22,
#: 1e-1 2.99 / 2.60 / 2.30 (better on the stereo pairs, worse on the warped photographs).
_DAMPING = 1e-2


def _resolve(preset, patch_size, patch_stride, gd_iterations, finest_scale, variational_iterations):
    if not isinstance(preset, str) or preset not in DIS_PRESETS:
        raise ConfigError(f"preset={preset!r} is unknown: use one of {', '.join(map(repr, DIS_PRESETS))}")
    given = {"patch_size": patch_size, "patch_stride": patch_stride, "gd_iterations": gd_iterations,
             "finest_scale": finest_scale, "variational_iterations": variational_iterations}  # fmt: skip
    minimum = {"patch_size": 2, "patch_stride": 1, "gd_iterations": 1, "finest_scale": 0,
               "variational_iterations": 0}  # fmt: skip
    out = {}
    for name, value in given.items():
        value = DIS_PRESETS[preset][name] if value is None else value
        out[name] = _check_int(value, name, minimum[name])
    if out["patch_stride"] > out["patch_size"]:
        raise ConfigError(
            f"patch_stride={out['patch_stride']} exceeds patch_size={out['patch_size']}: pixels between "
            "patches would get no flow; use a stride <= the patch size"
        )
    return out


def _check_weight(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ConfigError(f"{name}={value!r} must be a real number >= 0")
    if not math.isfinite(float(value)) or value < 0:
        raise ConfigError(f"{name}={value} must be a finite number >= 0")
    return float(value)


def _dis_shapes(shape, patch_size: int, finest_scale: int) -> list[tuple[int, int]]:
    """Fine-to-coarse level shapes down to the coarsest scale: halve (rounding up) per level. The
    coarsest scale is OpenCV's: ``min(round(log2(max side / (4 p))), floor(log2(min side / p)))``
    (a motion of a quarter of the image fits the search), at least ``finest_scale``."""
    big, small = max(shape), min(shape)
    coarsest = min(int(math.log2(big / (4.0 * patch_size)) + 0.5), int(math.log2(small / patch_size)))
    coarsest = max(coarsest, finest_scale)
    shapes = [tuple(shape)]
    for _ in range(coarsest):
        nxt = tuple(math.ceil(n / 2) for n in shapes[-1])
        if min(nxt) < patch_size and len(shapes) > finest_scale:
            break
        shapes.append(nxt)
    return shapes


def _resize_flow(flow, shape, ndi, xp):
    """``flow`` bilinearly resampled to ``shape`` (pixel centres aligned), each component scaled by the
    ratio of the sizes along its axis."""
    out = xp.stack([_resize_linear(flow[k], shape, ndi, xp) for k in range(2)])
    ratio = xp.asarray([n_out / n_in for n_in, n_out in zip(flow.shape[1:], shape)], dtype=flow.dtype)
    return out * ratio[:, None, None]


# ----------------------------------------------------------------------------------------------
# patch search


class _PatchGrid:
    """The patches of one level: ``p x p`` patches at a stride from the top-left corner, plus a last row
    and column of patches flush with the bottom and right edges where the stride does not end there, so
    every pixel is covered by a patch that lies inside the image."""

    def __init__(self, reference, moving, p: int, stride: int, ndi, xp):
        h, w = reference.shape
        dt = reference.dtype
        self.xp, self.p, self.stride, self.shape = xp, p, stride, (h, w)
        rows, cols = (_origins(n, p, stride) for n in (h, w))
        self.hs, self.ws = len(rows), len(cols)
        self.rows = xp.asarray(np.asarray(rows, dtype=np.intp))
        self.cols = xp.asarray(np.asarray(cols, dtype=np.intp))
        # image gradient: Sobel normalised to the derivative (its kernel sums to 8 times it)
        grad_r = ndi.sobel(reference, axis=0, mode="nearest") / dt.type(8)
        grad_c = ndi.sobel(reference, axis=1, mode="nearest") / dt.type(8)
        a = xp.arange(p)
        self.origin_r = xp.repeat(self.rows, self.ws).astype(dt)
        self.origin_c = xp.tile(self.cols, self.hs).astype(dt)
        # the patch batch is laid out (p * p, n): the pixel of a patch first, the patch last, so every
        # operation on it runs along the long, contiguous patch axis
        base = self.rows[:, None] * w + self.cols[None, :]
        index = (a[:, None] * w + a[None, :]).reshape(-1, 1) + base.reshape(1, -1)
        self.patches = reference.ravel()[index]
        gr = grad_r.ravel()[index]
        gc = grad_c.ravel()[index]
        # mean-normalised patches (OpenCV's default): the cost and the steps ignore a change of
        # brightness of the whole patch, so the gradients enter with their patch mean removed
        gr -= gr.mean(axis=0)
        gc -= gc.mean(axis=0)
        self.grad_r, self.grad_c = gr, gc
        h_rr = (gr * gr).sum(axis=0)
        h_rc = (gr * gc).sum(axis=0)
        h_cc = (gc * gc).sum(axis=0)
        damp = dt.type(_DAMPING) * (h_rr + h_cc) + dt.type(1e-6)
        h_rr += damp
        h_cc += damp
        inv_det = dt.type(1) / (h_rr * h_cc - h_rc * h_rc)
        self.inv = (h_cc * inv_det, -h_rc * inv_det, h_rr * inv_det)  # (rr, rc, cc) of H^-1
        # the moving image with a border wide enough for any clamped patch position (+1 for bilinear)
        self.border = p + 1
        self.moving = xp.pad(moving, self.border, mode="edge")
        self.mw = self.moving.shape[1]
        a1 = xp.arange(p + 1)
        self.offsets = (a1[:, None] * self.mw + a1[None, :]).reshape(-1, 1)
        self.lo = dt.type(-(p - 1))
        self.hi_r, self.hi_c = dt.type(h - 1), dt.type(w - 1)

    def clamp(self, vec):
        """Patch vectors ``(2, n)`` limited so each patch keeps at least one pixel inside the image."""
        xp = self.xp
        v = xp.minimum(xp.maximum(vec[0], self.lo - self.origin_r), self.hi_r - self.origin_r)
        u = xp.minimum(xp.maximum(vec[1], self.lo - self.origin_c), self.hi_c - self.origin_c)
        return xp.stack((v, u))

    def residual(self, vec):
        """``moving(x + vec) - reference(x)`` over every patch's pixels, ``(p * p, n)``: bilinear, one
        weight per patch, so one gather of a ``(p + 1) x (p + 1)`` block and two interpolations."""
        xp = self.xp
        p = self.p
        pos_r = self.origin_r + vec[0]
        pos_c = self.origin_c + vec[1]
        fr, fc = xp.floor(pos_r), xp.floor(pos_c)
        wr, wc = pos_r - fr, pos_c - fc
        base = (fr.astype(xp.intp) + self.border) * self.mw + (fc.astype(xp.intp) + self.border)
        block = self.moving.ravel()[self.offsets + base[None, :]].reshape(p + 1, p + 1, -1)
        across = block[:, :p] + (block[:, 1:] - block[:, :p]) * wc
        out = across[:p] + (across[1:] - across[:p]) * wr
        out = out.reshape(p * p, -1)
        out -= self.patches
        return out

    def cost(self, diff):
        """Mean-normalised SSD per patch: ``sum((d - mean d)^2)``."""
        centred = diff - diff.mean(axis=0)
        return (centred * centred).sum(axis=0)

    def descend(self, vec, iterations: int):
        """``iterations`` inverse-compositional Gauss-Newton steps of every patch; a patch stops when its
        cost stops decreasing and keeps the best vector seen; a result further than the patch size
        from the start is rejected (OpenCV's robustness rule)."""
        xp = self.xp
        start = vec
        best = vec
        best_cost = xp.full(vec.shape[1], xp.inf, dtype=vec.dtype)
        active = xp.ones(vec.shape[1], dtype=bool)
        inv_rr, inv_rc, inv_cc = self.inv
        for t in range(iterations + 1):
            diff = self.residual(vec)
            cost = self.cost(diff)
            better = active & (cost < best_cost)
            best = xp.where(better[None, :], vec, best)
            best_cost = xp.where(better, cost, best_cost)
            active = better
            if t == iterations:
                break
            b_r = (self.grad_r * diff).sum(axis=0)
            b_c = (self.grad_c * diff).sum(axis=0)
            step = xp.stack((inv_rr * b_r + inv_rc * b_c, inv_rc * b_r + inv_cc * b_c))
            vec = self.clamp(xp.where(active[None, :], vec - step, vec))
        moved = (best[0] - start[0]) ** 2 + (best[1] - start[1]) ** 2
        keep = moved <= vec.dtype.type(self.p * self.p)
        return xp.where(keep[None, :], best, start)

    def propagate(self, vec):
        """Each patch takes, of its own vector and its four grid neighbours', the one of lowest cost."""
        xp = self.xp
        grid = vec.reshape(2, self.hs, self.ws)
        padded = xp.pad(grid, ((0, 0), (1, 1), (1, 1)), mode="edge")
        best = vec
        best_cost = self.cost(self.residual(vec))
        for dr, dc in ((0, -1), (0, 1), (-1, 0), (1, 0)):
            cand = padded[:, 1 + dr : 1 + dr + self.hs, 1 + dc : 1 + dc + self.ws].reshape(2, -1)
            cand = self.clamp(cand)
            cost = self.cost(self.residual(cand))
            better = cost < best_cost
            best = xp.where(better[None, :], cand, best)
            best_cost = xp.where(better, cost, best_cost)
        return best

    def densify(self, vec):
        """The dense flow ``(2, H, W)``: at each pixel the mean of the vectors of the patches covering it,
        weighted by ``1 / max(1, |moving(x + vec) - reference(x)|)`` (grey levels). For each of the
        ``p * p`` offsets inside a patch the patches write to distinct pixels (their origins differ), so
        the scatter is ``p * p`` plain indexed additions, without atomics or ``add.at``."""
        xp = self.xp
        p = self.p
        weight = 1 / xp.maximum(xp.abs(self.residual(vec)), vec.dtype.type(1))
        weight = weight.reshape(p, p, self.hs, self.ws)
        grid = vec.reshape(2, self.hs, self.ws)
        num = xp.zeros((2, *self.shape), dtype=vec.dtype)
        den = xp.zeros(self.shape, dtype=vec.dtype)
        for a in range(p):
            rows = (self.rows + a)[:, None]
            for b in range(p):
                cols = (self.cols + b)[None, :]
                w_ab = weight[a, b]
                den[rows, cols] += w_ab
                num[:, rows, cols] += w_ab * grid
        return num / den


def _origins(n: int, p: int, stride: int) -> list[int]:
    """Patch origins along a side of ``n`` pixels: every ``stride`` from 0, and ``n - p`` last."""
    out = list(range(0, n - p + 1, stride))
    if out[-1] != n - p:
        out.append(n - p)
    return out


def _patch_start(flow, grid: _PatchGrid, xp):
    """Each patch's starting vector: the dense flow at the patch centre."""
    half = grid.p // 2
    return flow[:, (grid.rows + half)[:, None], (grid.cols + half)[None, :]].reshape(2, -1)


# ----------------------------------------------------------------------------------------------
# variational refinement


def _ddx(a, xp):
    """Central difference along columns (edge repeated), the derivative itself."""
    p = xp.pad(a, ((0, 0), (1, 1)), mode="edge")
    return (p[:, 2:] - p[:, :-2]) * a.dtype.type(0.5)


def _ddy(a, xp):
    """Central difference along rows (edge repeated)."""
    p = xp.pad(a, ((1, 1), (0, 0)), mode="edge")
    return (p[2:, :] - p[:-2, :]) * a.dtype.type(0.5)


def _forward_differences(a, xp):
    """``a[:, j + 1] - a[:, j]`` and ``a[i + 1] - a[i]``, 0 on the last column / row (edge repeated)."""
    right = xp.zeros_like(a)
    down = xp.zeros_like(a)
    right[:, :-1] = a[:, 1:] - a[:, :-1]
    down[:-1] = a[1:] - a[:-1]
    return right, down


def _edge_sum(w_right, w_down, a, xp):
    """``sum over the 4 neighbours n of x: w(x, n) * a(n)`` with ``w_right[x]`` the weight of the edge from
    ``x`` to its right neighbour and ``w_down[x]`` to the one below (0 past the border)."""
    out = w_right * xp.concatenate((a[:, 1:], a[:, -1:]), axis=1)
    out += w_down * xp.concatenate((a[1:], a[-1:]), axis=0)
    out[:, 1:] += w_right[:, :-1] * a[:, :-1]
    out[1:] += w_down[:-1] * a[:-1]
    return out


def _variational(reference, moving, flow, *, iterations, alpha, gamma, delta, ndi, xp):
    """OpenCV's / the paper's variational refinement of ``flow`` at one level: minimise
    ``delta * Psi(data) + gamma * Psi(gradient constancy) + alpha * Psi(|grad v|^2 + |grad u|^2)``
    linearised around ``flow``, ``iterations`` fixed-point updates of the robust weights, each followed
    by ``_SOR_ITERATIONS`` red-black SOR sweeps on the increment."""
    dt = reference.dtype
    one = dt.type
    h, w = reference.shape
    coords = xp.stack(
        (xp.arange(h, dtype=dt)[:, None] + flow[0], xp.arange(w, dtype=dt)[None, :] + flow[1])
    )
    warped = ndi.map_coordinates(moving, coords, order=1, mode="nearest")
    mean = (reference + warped) * one(0.5)
    i_t = warped - reference
    i_c, i_r = _ddx(mean, xp), _ddy(mean, xp)
    i_tc, i_tr = _ddx(i_t, xp), _ddy(i_t, xp)
    i_cc, i_cr, i_rr = _ddx(i_c, xp), _ddy(i_c, xp), _ddy(i_r, xp)
    zeta2, eps2 = one(_ZETA * _ZETA), one(_EPSILON * _EPSILON)
    norm = i_c * i_c + i_r * i_r + zeta2
    norm_c = i_cc * i_cc + i_cr * i_cr + zeta2  # of the column derivative's gradient
    norm_r = i_rr * i_rr + i_cr * i_cr + zeta2
    # the gradient-constancy system's fixed parts
    g11 = i_cc * i_cc / norm_c + i_cr * i_cr / norm_r
    g12 = i_cc * i_cr / norm_c + i_cr * i_rr / norm_r
    g22 = i_cr * i_cr / norm_c + i_rr * i_rr / norm_r
    gb1 = i_cc * i_tc / norm_c + i_cr * i_tr / norm_r
    gb2 = i_cr * i_tc / norm_c + i_rr * i_tr / norm_r
    red = (xp.arange(h)[:, None] + xp.arange(w)[None, :]) % 2 == 0
    colours = (red, ~red)
    base_u, base_v = flow[1], flow[0]
    du = xp.zeros_like(base_u)
    dv = xp.zeros_like(base_v)
    not_last_col = (xp.arange(w) < w - 1)[None, :]
    not_last_row = (xp.arange(h) < h - 1)[:, None]
    half_a, half_g, half_d = one(alpha / 2), one(gamma / 2), one(delta / 2)
    omega = one(_OMEGA)
    for _ in range(iterations):
        # data term (brightness constancy), normalised by the gradient magnitude
        e = i_t + i_c * du + i_r * dv
        wd = half_d / xp.sqrt(e * e / norm + eps2) / norm
        a11 = wd * i_c * i_c + zeta2
        a12 = wd * i_c * i_r
        a22 = wd * i_r * i_r + zeta2
        b1 = -wd * i_t * i_c
        b2 = -wd * i_t * i_r
        # gradient constancy
        e_c = i_tc + i_cc * du + i_cr * dv
        e_r = i_tr + i_cr * du + i_rr * dv
        wg = half_g / xp.sqrt(e_c * e_c / norm_c + e_r * e_r / norm_r + eps2)
        a11 += wg * g11
        a12 += wg * g12
        a22 += wg * g22
        b1 -= wg * gb1
        b2 -= wg * gb2
        # smoothness: robust weight of each pixel's forward differences, on its right and lower edge
        u_c, u_r = _forward_differences(base_u + du, xp)
        v_c, v_r = _forward_differences(base_v + dv, xp)
        ws = half_a / xp.sqrt(u_c * u_c + v_c * v_c + u_r * u_r + v_r * v_r + eps2)
        w_right = ws * not_last_col
        w_down = ws * not_last_row
        w_sum = w_right + w_down
        w_sum[:, 1:] += w_right[:, :-1]
        w_sum[1:] += w_down[:-1]
        a11 += w_sum
        a22 += w_sum
        # the smoothness of the base flow: sum of w * (neighbour - pixel)
        b1 += _edge_sum(w_right, w_down, base_u, xp) - w_sum * base_u
        b2 += _edge_sum(w_right, w_down, base_v, xp) - w_sum * base_v
        for _ in range(_SOR_ITERATIONS):
            for colour in colours:
                sigma = _edge_sum(w_right, w_down, du, xp)
                du = xp.where(colour, du + omega * ((sigma + b1 - a12 * dv) / a11 - du), du)
                sigma = _edge_sum(w_right, w_down, dv, xp)
                dv = xp.where(colour, dv + omega * ((sigma + b2 - a12 * du) / a22 - dv), dv)
    return xp.stack((base_v + dv, base_u + du))


# ----------------------------------------------------------------------------------------------
# the method


def optical_flow_dis(
    reference,
    moving,
    *,
    preset="medium",
    patch_size=None,
    patch_stride=None,
    gd_iterations=None,
    finest_scale=None,
    variational_iterations=None,
    alpha=20.0,
    gamma=10.0,
    delta=5.0,
    dtype=np.float32,
):
    """Dense optical flow by DIS, dense inverse search (Kroeger et al. 2016), OpenCV's presets.

    Parameters
    ----------
    reference : ndarray, shape (H, W)
        The first grey image (NumPy or CuPy; any real dtype). Integer images are scaled to [0, 1] by
        their dtype's maximum; floating images are taken as they are and should lie in [0, 1] (the
        photometric constants are in grey levels of 1/255).
    moving : ndarray, shape (H, W)
        The second grey image, same shape.
    preset : {'ultrafast', 'fast', 'medium'}, optional
        OpenCV's ``DISOpticalFlow`` presets (:data:`DIS_PRESETS`): patch size 8 for all; stride 4, 4, 3;
        gradient-descent iterations 12, 16, 25; finest scale 2, 2, 1; variational iterations 0, 5, 5.
        The options below, when given, override the preset's value.
    patch_size : int, optional
        Side of the square patches (>= 2).
    patch_stride : int, optional
        Distance between neighbouring patches (1 to ``patch_size``).
    gd_iterations : int, optional
        Gauss-Newton iterations of each patch per level (>= 1).
    finest_scale : int, optional
        Finest pyramid level computed (0: full size); the flow is then upsampled bilinearly by
        ``2 ** finest_scale``.
    variational_iterations : int, optional
        Fixed-point iterations of the variational refinement per level (0: none).
    alpha, gamma, delta : float, optional
        Weights of the smoothness, gradient-constancy and brightness-constancy terms of the
        refinement (OpenCV's defaults 20, 10, 5).
    dtype : {float32, float64}, optional
        The working and output precision.

    Returns
    -------
    flow : ndarray, shape (2, H, W)
        ``(v, u)``: row and column components, on the input's namespace, such that
        ``reference[r, c] ~ moving[r + v, c + u]``.

    Raises
    ------
    InputError
        Images that are not 2-D grey, of different shapes, complex, holding NaN/inf, or too small for
        one patch at the finest scale.
    ConfigError
        An unknown preset, an option out of range (``patch_stride > patch_size``...), a bad dtype.

    Notes
    -----
    The pyramid (Gaussian anti-alias of sigma 2/3, bilinear halving, as :func:`optical_flow_lk`'s)
    runs from OpenCV's coarsest scale, ``min(round(log2(max(H, W) / (4 p))), floor(log2(min(H, W) /
    p)))``, to ``finest_scale``; the flow of a level starts the next, bilinearly upsampled. At each
    level, with intensities in grey levels (x 255):

    1. *Inverse search.* Patches ``P`` of ``p x p`` pixels at a stride ``s`` (plus a last row and column
       flush with the bottom and right edges, so every pixel is covered) each seek the vector ``w``
       minimising the
       mean-normalised SSD ``sum_x (d(x) - mean d)^2``, ``d(x) = I1(x + w) - I0(x)`` (bilinear),
       by inverse-compositional Gauss-Newton: with ``g`` the Sobel gradient of ``I0`` (scaled to the
       derivative) less its patch mean and ``H = sum g g^T`` (per patch, once per level, damped by
       1e-2 of its trace), ``w <- w - H^{-1} sum_x g(x) d(x)``. A patch stops when its cost stops
       decreasing and keeps its best vector; one that ends further than ``p`` from its start keeps
       the start. The iterations run in two passes; before the second each patch also tries its four
       neighbours' vectors and keeps the cheapest (spatial propagation, in parallel; OpenCV scans
       the grid sequentially forward then backward).
    2. *Densification.* ``U(x) = sum_P lambda_P(x) w_P / sum_P lambda_P(x)`` over the patches covering
       ``x``, ``lambda_P(x) = 1 / max(1, |I1(x + w_P) - I0(x)|)``.
    3. *Variational refinement* (``variational_iterations`` > 0), OpenCV's: warp ``I1`` by ``U``; with
       ``I_t = I1(x + U) - I0`` and derivatives taken on the mean of ``I0`` and the warped ``I1``,
       minimise over the increment ``dU``

       .. math::

           E = \\sum_x \\delta\\,\\Psi\\Big(
                 \\frac{(I_t + \\nabla I \\cdot dU)^2}{|\\nabla I|^2 + \\zeta^2}\\Big)
             + \\gamma\\,\\Psi\\Big(\\sum_{k \\in \\{r, c\\}}
                 \\frac{(\\partial_k I_t + \\nabla \\partial_k I \\cdot dU)^2}
                      {|\\nabla \\partial_k I|^2 + \\zeta^2}\\Big)
             + \\alpha\\,\\Psi\\big(|\\nabla (U + dU)|^2\\big) + \\zeta^2 |dU|^2

       with ``Psi(s^2) = sqrt(s^2 + eps^2)``, zeta = 0.1, eps = 0.001 (grey levels): the robust weights
       ``Psi'`` are fixed ``variational_iterations`` times from the current ``dU``, each time followed
       by 5 red-black SOR sweeps (omega 1.6) on the linear system.

    Differences from OpenCV's implementation, chosen for accuracy or for the batch: exact image
    derivatives (OpenCV's unnormalised Sobel kernels scale its Gauss-Newton step by 1/8 and its
    refinement's linearisation by 1/2), the mean-normalised Hessian, the parallel propagation, the
    anti-aliased pyramid, Levenberg damping. On the 17 default cases of ``benchmarks/flow_eval.py``
    (stereo pairs, a homography, warped photographs) the mean endpoint error, gpudiff / OpenCV 5.1 on
    the same preset, is 6.04 / 6.95 px for ultrafast (lower or equal on 11 cases of 17), 5.68 / 6.05
    for fast (13) and 4.89 / 5.83 for medium (15); ultrafast, which has no refinement, trails by
    0.1-0.2 px on the 50x50 FlyingChairs crop and the larger warps of coffee and astronaut.

    References
    ----------
    .. [1] Kroeger, T., Timofte, R., Dai, D., & Van Gool, L. (2016). Fast optical flow using dense
       inverse search. ECCV 2016, pp. 471-488. :DOI:`10.1007/978-3-319-46493-0_29`
    .. [2] OpenCV, ``cv::DISOpticalFlow`` and ``cv::VariationalRefinement`` (modules/video).
    """
    opts = _resolve(preset, patch_size, patch_stride, gd_iterations, finest_scale, variational_iterations)
    alpha = _check_weight(alpha, "alpha")
    gamma = _check_weight(gamma, "gamma")
    delta = _check_weight(delta, "delta")
    dt = _check_dtype(dtype)
    xp = get_namespace(reference, moving)
    ref, mov = _prepare_pair(reference, moving, xp, dt)
    p, finest = opts["patch_size"], opts["finest_scale"]
    shapes = _dis_shapes(ref.shape, p, finest)
    if len(shapes) <= finest or min(shapes[finest]) < p:
        level = shapes[min(finest, len(shapes) - 1)]
        raise InputError(
            f"images of shape {tuple(ref.shape)} are too small for patch_size={p} at finest_scale={finest} "
            f"(level {tuple(level)}): each side needs >= {(p - 1) * 2 ** finest + 1} px; lower finest_scale "
            "or patch_size"
        )
    ndi = ndimage(xp)
    scale = dt.type(_GREY_LEVELS)
    ref_pyr = _pyramid(ref * scale, shapes, ndi, xp)
    mov_pyr = _pyramid(mov * scale, shapes, ndi, xp)
    coarsest = len(shapes) - 1
    flow = xp.zeros((2, *shapes[coarsest]), dtype=dt)
    per_pass = [opts["gd_iterations"] // _PASSES] * _PASSES
    per_pass[-1] += opts["gd_iterations"] - sum(per_pass)
    for level in range(coarsest, finest - 1, -1):
        if flow.shape[1:] != shapes[level]:
            flow = _resize_flow(flow, shapes[level], ndi, xp)
        grid = _PatchGrid(ref_pyr[level], mov_pyr[level], p, opts["patch_stride"], ndi, xp)
        vec = grid.clamp(_patch_start(flow, grid, xp))
        for k, iterations in enumerate(per_pass):
            if k > 0:
                vec = grid.propagate(vec)
            if iterations > 0:
                vec = grid.descend(vec, iterations)
        flow = grid.densify(vec)
        if opts["variational_iterations"] > 0:
            flow = _variational(
                ref_pyr[level], mov_pyr[level], flow, iterations=opts["variational_iterations"],
                alpha=alpha, gamma=gamma, delta=delta, ndi=ndi, xp=xp,
            )  # fmt: skip
    if finest > 0:
        flow = _resize_flow(flow, shapes[0], ndi, xp)
    return flow
