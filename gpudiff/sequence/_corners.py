"""Sparse optical flow: Shi-Tomasi corners of one image tracked into the next by pyramidal
Lucas-Kanade (Bouguet), as OpenCV's ``goodFeaturesToTrack`` + ``calcOpticalFlowPyrLK`` do.

Built on the validation and the pyramid of :mod:`._flow` (the dense flow), written against the
array namespace ``xp`` like it; same flow convention: a displacement is ``(v, u)``, row then
column, with ``reference[p] ~ moving[p + displacement]``.

The steps, in the order :func:`track_corners` runs them: detect the corners (:func:`_good_features`;
given points are checked by :func:`_check_points` instead), then, from the coarsest pyramid level to
the finest (:func:`_track_pyramid`), sample each point's window (:func:`_sample_windows`), build its
2x2 gradient system (:func:`_gradient_systems`) and refine its displacement by Gauss-Newton steps
(:func:`_refine`).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from ..backend import get_namespace, ndimage
from ..errors import ConfigError, InputError
from ._pyramid import _check_dtype, _check_int, _prepare_pair, _pyramid, _pyramid_shapes

__all__ = ["track_corners"]

#: The sparse tracker's pyramid smooths more, sigma 1 (that of OpenCV's ``pyrDown`` 5-tap binomial
#: kernel): with 2/3, aliasing at coarse levels sent a few corners of thin structures tens of pixels off.
_TRACK_PYRAMID_SIGMA = 1.0
#: OpenCV's ``calcOpticalFlowPyrLK`` default ``minEigThreshold`` (1e-4) in this module's units: OpenCV
#: sums Scharr derivatives of 0..255 images (32 * 255 times the slope in [0, 1] units per pixel)
#: scaled by 2**-20, i.e. (32 * 255)**2 / 2**20 = 63.5 times the eigenvalues computed here.
_CV_MIN_EIG = 1e-4 / ((32 * 255) ** 2 / 2**20)


# ----------------------------------------------------------------------------------------------
# detection: Shi-Tomasi corners


def _min_eigenvalue(image, ndi, xp, block=3):
    """Shi-Tomasi response: the smaller eigenvalue of the structure tensor of Sobel gradients summed
    over a ``block`` x ``block`` box (OpenCV's ``cornerMinEigenVal`` up to a constant factor)."""
    grad_r = ndi.sobel(image, axis=0, mode="reflect")
    grad_c = ndi.sobel(image, axis=1, mode="reflect")
    area = float(block * block)
    a = ndi.uniform_filter(grad_r * grad_r, block, mode="reflect") * area
    b = ndi.uniform_filter(grad_r * grad_c, block, mode="reflect") * area
    c = ndi.uniform_filter(grad_c * grad_c, block, mode="reflect") * area
    half_diff = (a - c) * 0.5
    return (a + c) * 0.5 - xp.sqrt(half_diff * half_diff + b * b)


def _good_features(image, *, max_corners, quality_level, min_distance, border, ndi, xp):
    """(K, 2) (row, col) corners: local maxima of the Shi-Tomasi response over a
    ``(2 * min_distance + 1)`` square, above ``quality_level`` times the strongest, strongest first."""
    response = _min_eigenvalue(image, ndi, xp)
    peak = response.max()
    local_max = ndi.maximum_filter(response, size=2 * min_distance + 1, mode="constant", cval=-np.inf)
    keep = (response == local_max) & (response > quality_level * peak) & (response > 0)
    if border > 0:
        inner = xp.zeros(image.shape, dtype=bool)
        inner[border:-border, border:-border] = True
        keep &= inner
    rows, cols = xp.nonzero(keep)  # sync: the number of corners sizes the result
    strength = response[rows, cols]
    order = xp.argsort(-strength)[:max_corners]
    return xp.stack((rows[order], cols[order]), axis=1).astype(image.dtype)


def _check_points(points, dt, xp):
    """Given positions as a (K, 2) ``dt`` array of finite (row, col), or a one-line InputError."""
    pts = xp.asarray(points)
    if pts.ndim != 2 or pts.shape[1] != 2 or pts.dtype.kind not in "uif":
        raise InputError(
            f"points has shape {tuple(pts.shape)} ({pts.dtype}): expected (K, 2) (row, col) numbers"
        )
    pts = pts.astype(dt)
    if not bool(xp.isfinite(pts).all()):  # sync: one scalar, before any work
        raise InputError("points holds NaN or infinite values: give finite (row, col) positions")
    return pts


# ----------------------------------------------------------------------------------------------
# tracking: pyramidal Lucas-Kanade of each point's window


def _sample(image, r, c, ndi, xp):
    """``image`` at the (fractional) positions ``(r, c)``: bilinear, edge values beyond the border."""
    return ndi.map_coordinates(image, xp.stack((r, c)), order=1, mode="nearest")


def _window_offsets(radius, dt, xp):
    """Row and column offsets of the ``(2 * radius + 1)`` square window, each of shape (1, pixels)."""
    side = xp.arange(-radius, radius + 1, dtype=dt)
    off_r = xp.broadcast_to(side[:, None], (side.size, side.size)).reshape(1, -1)
    off_c = xp.broadcast_to(side[None, :], (side.size, side.size)).reshape(1, -1)
    return off_r, off_c


class _Windows(NamedTuple):
    """Each point's window at one pyramid level, all (K, pixels): its positions ``(r, c)``, the
    reference level there (the template) and the central-difference gradient ``(gr, gc)`` there."""

    r: Any
    c: Any
    template: Any
    gr: Any
    gc: Any


class _Systems(NamedTuple):
    """Each window's 2x2 gradient matrix ``G = sum grad grad^T`` (entries ``g_rr, g_rc, g_cc``, float64),
    ``inv_det = 1 / det G`` (0 where unusable) and ``good``: usable (a positive determinant and a
    smaller eigenvalue of ``G / pixels`` of at least ``min_eigenvalue``), each (K,)."""

    g_rr: Any
    g_rc: Any
    g_cc: Any
    inv_det: Any
    good: Any


def _sample_windows(reference, pos, offsets, ndi, xp) -> _Windows:
    """The windows around the level coordinates ``pos`` (K, 2), with ``offsets`` those of
    :func:`_window_offsets`."""
    off_r, off_c = offsets
    win_r = pos[:, 0:1] + off_r
    win_c = pos[:, 1:2] + off_c
    grad_r, grad_c = xp.gradient(reference)
    template = _sample(reference, win_r, win_c, ndi, xp)
    gr = _sample(grad_r, win_r, win_c, ndi, xp)
    gc = _sample(grad_c, win_r, win_c, ndi, xp)
    return _Windows(win_r, win_c, template, gr, gc)


def _gradient_systems(win: _Windows, min_eigenvalue, xp) -> _Systems:
    """The windows' gradient matrices, accumulated in float64."""
    gr, gc = win.gr, win.gc
    window_pixels = float(gr.shape[1])
    g_rr = (gr * gr).sum(axis=1, dtype=xp.float64)  # the 2x2 systems accumulate in float64
    g_rc = (gr * gc).sum(axis=1, dtype=xp.float64)
    g_cc = (gc * gc).sum(axis=1, dtype=xp.float64)
    det = g_rr * g_cc - g_rc * g_rc
    half_diff = (g_rr - g_cc) * 0.5
    lam_min = ((g_rr + g_cc) * 0.5 - xp.sqrt(half_diff * half_diff + g_rc * g_rc)) / window_pixels
    good = (lam_min >= min_eigenvalue) & (det > 0)
    inv_det = 1.0 / xp.where(good, det, 1.0)
    inv_det *= good
    return _Systems(g_rr, g_rc, g_cc, inv_det, good)


def _refine(moving, win: _Windows, systems: _Systems, guess, *, num_iter, eps2, ndi, xp):
    """The refinement ``d`` of ``guess`` at one level: up to ``num_iter`` Gauss-Newton steps
    ``d += G^{-1} sum e grad``, with ``e`` the template minus ``moving`` over the window moved by
    ``guess + d``. A point stops once its step is shorter than ``sqrt(eps2)``; one whose system is
    not ``good`` does not move."""
    g_rr, g_rc, g_cc, inv_det, good = systems
    dt = guess.dtype
    delta = xp.zeros(guess.shape, dtype=dt)
    active = good.copy()
    for _ in range(num_iter):
        moved = guess + delta
        warped = _sample(moving, win.r + moved[:, 0:1], win.c + moved[:, 1:2], ndi, xp)
        error = win.template - warped
        b_r = (error * win.gr).sum(axis=1, dtype=xp.float64)
        b_c = (error * win.gc).sum(axis=1, dtype=xp.float64)
        step = xp.stack(((g_cc * b_r - g_rc * b_c) * inv_det, (g_rr * b_c - g_rc * b_r) * inv_det), axis=1)
        step *= active[:, None]
        delta += step.astype(dt)
        active &= (step * step).sum(axis=1) >= eps2  # converged points stop moving
    return delta


def _track_pyramid(ref, mov, pts, *, radius, levels, num_iter, eps2, min_eigenvalue, dtype, ndi, xp):
    """``(displacement, status)`` of ``pts`` from ``ref`` to ``mov``, from the coarsest level to the
    finest, each level's result scaled up to be the next one's guess. ``status`` is False where the
    finest level's system was not usable (a coarser one only skips its refinement, as OpenCV), the
    point ended outside the image, or its displacement is not finite."""
    dt = dtype
    shapes = _pyramid_shapes(ref.shape, levels)
    ref_pyr = _pyramid(ref, shapes, ndi, xp, _TRACK_PYRAMID_SIGMA)
    mov_pyr = _pyramid(mov, shapes, ndi, xp, _TRACK_PYRAMID_SIGMA)
    offsets = _window_offsets(radius, dt, xp)
    status = xp.ones((pts.shape[0],), dtype=bool)
    guess = xp.zeros((pts.shape[0], 2), dtype=dt)
    for level in range(len(shapes) - 1, -1, -1):
        scale = xp.asarray([n0 / n for n0, n in zip(ref.shape, shapes[level])], dtype=dt)
        pos = (pts + dt.type(0.5)) / scale - dt.type(0.5)  # pixel-centre aligned level coordinates
        win = _sample_windows(ref_pyr[level], pos, offsets, ndi, xp)
        systems = _gradient_systems(win, min_eigenvalue, xp)
        if level == 0:
            status &= systems.good  # as OpenCV: an ill-conditioned coarse level only skips its refinement
        delta = _refine(mov_pyr[level], win, systems, guess, num_iter=num_iter, eps2=eps2, ndi=ndi, xp=xp)
        total = guess + delta
        if level > 0:
            finer = xp.asarray([a / b for a, b in zip(shapes[level], shapes[level - 1])], dtype=dt)
            guess = total / finer
        else:
            guess = total
    end = pts + guess
    inside = (end[:, 0] >= 0) & (end[:, 0] <= ref.shape[0] - 1)
    inside &= (end[:, 1] >= 0) & (end[:, 1] <= ref.shape[1] - 1)
    status &= inside & xp.isfinite(guess).all(axis=1)
    return guess, status


def track_corners(
    reference,
    moving,
    *,
    points=None,
    max_corners=500,
    quality_level=0.01,
    min_distance=7,
    radius=7,
    levels=4,
    num_iter=20,
    epsilon=0.01,
    min_eigenvalue=_CV_MIN_EIG,
    dtype=np.float32,
):
    """Sparse optical flow: Shi-Tomasi corners of ``reference`` tracked into ``moving`` by pyramidal
    Lucas-Kanade (Bouguet).

    Parameters
    ----------
    reference, moving : ndarray, shape (H, W)
        Grey images (NumPy or CuPy; any real dtype, integers scaled to [0, 1] by their maximum).
    points : ndarray, shape (K, 2), optional
        (row, col) positions to track instead of detected corners.
    max_corners : int, optional
        At most this many corners, strongest first.
    quality_level : float, optional
        Corners whose response is below ``quality_level`` times the strongest are dropped (0 < q < 1).
    min_distance : int, optional
        A corner is the maximum of the response over a ``(2 * min_distance + 1)`` square around it.
    radius : int, optional
        Tracking window ``(2 * radius + 1)`` square. Corners closer than ``radius + 1`` to the border
        are not detected.
    levels : int, optional
        Largest number of pyramid levels (OpenCV's ``maxLevel + 1``), same pyramid as
        :func:`optical_flow_lk` but smoothed with sigma 1 before each halving (OpenCV's ``pyrDown``
        kernel has sigma 1).
    num_iter : int, optional
        Largest number of Gauss-Newton iterations per level.
    epsilon : float, optional
        Iterations of a point stop when its update is shorter than this (pixels).
    min_eigenvalue : float, optional
        A point whose window's gradient matrix, divided by the window's pixel count, has its smaller
        eigenvalue below this at the finest level (intensities in [0, 1], gradients per pixel) is
        marked lost; at a coarser level such a point keeps its guess. The default, about 1.6e-6, is
        OpenCV's ``minEigThreshold=1e-4`` converted to these units.
    dtype : {float32, float64}, optional
        Working precision.

    Returns
    -------
    points : ndarray, shape (K, 2)
        (row, col) of the tracked points in ``reference``.
    displacement : ndarray, shape (K, 2)
        (v, u) for each point: ``reference[p] ~ moving[p + displacement]`` (as :func:`optical_flow_lk`).
    status : ndarray of bool, shape (K,)
        False where the point was lost: a window whose smaller gradient eigenvalue is below
        ``min_eigenvalue`` at the finest level, or tracked outside ``moving`` (as OpenCV's ``status``; a
        point that has not converged within ``num_iter`` keeps its last estimate).

    Raises
    ------
    InputError
        As :func:`optical_flow_lk`; ``points`` not of shape (K, 2) or not finite.
    ConfigError
        An option out of range.

    Notes
    -----
    Corners: the Shi-Tomasi response [3]_ is the smaller eigenvalue of the structure tensor of 3x3
    Sobel gradients summed over a 3x3 box (OpenCV's ``goodFeaturesToTrack`` defaults). OpenCV then
    keeps 3x3 local maxima greedily, strongest first, at least ``minDistance`` apart (a sequential
    rule); here a corner must be the maximum over its whole ``(2 * min_distance + 1)`` square, a rule
    that runs in parallel, keeps corners at least ``min_distance + 1`` apart (Chebyshev, up to exact
    ties) and is stricter: it keeps fewer corners (205 against OpenCV's 411 on the Middlebury
    Basketball frame with the defaults).

    Tracking, as in Bouguet's pyramidal implementation of Lucas-Kanade [4]_: at each level from coarse
    to fine, with ``g`` the guess from the coarser level (scaled by the size ratio) and ``d`` the
    refinement, ``num_iter`` times: ``e(x) = I0(p + x) - I1(p + g + d + x)`` over the window offsets
    ``x`` (bilinear sampling), ``G = sum grad I0 grad I0^T`` and ``d += G^{-1} sum e grad I0``, with
    ``grad I0`` the central-difference gradient of the reference level.

    References
    ----------
    .. [3] Shi, J., & Tomasi, C. (1994). Good features to track. IEEE CVPR, pp. 593-600.
       :DOI:`10.1109/CVPR.1994.323794`
    .. [4] Bouguet, J.-Y. (2000). Pyramidal implementation of the Lucas Kanade feature tracker:
       description of the algorithm. Intel Corporation, Microprocessor Research Labs.
    """
    dt = _check_dtype(dtype)
    radius = _check_int(radius, "radius", 1)
    levels = _check_int(levels, "levels", 1)
    num_iter = _check_int(num_iter, "num_iter", 1)
    max_corners = _check_int(max_corners, "max_corners", 1)
    min_distance = _check_int(min_distance, "min_distance", 0)
    if not 0.0 < float(quality_level) < 1.0:
        raise ConfigError(f"quality_level={quality_level!r} must be in (0, 1), e.g. 0.01")
    if not float(epsilon) >= 0.0:
        raise ConfigError(f"epsilon={epsilon!r} must be >= 0 (pixels), e.g. 0.01")
    if not float(min_eigenvalue) >= 0.0:
        raise ConfigError(
            f"min_eigenvalue={min_eigenvalue!r} must be >= 0, e.g. {_CV_MIN_EIG:.2g} (the default)"
        )
    xp = get_namespace(reference, moving, points)
    ref, mov = _prepare_pair(reference, moving, xp, dt)
    ndi = ndimage(xp)
    if points is None:
        pts = _good_features(
            ref,
            max_corners=max_corners,
            quality_level=float(quality_level),
            min_distance=min_distance,
            border=radius + 1,
            ndi=ndi,
            xp=xp,
        )
    else:
        pts = _check_points(points, dt, xp)
    if pts.shape[0] == 0:
        return pts, xp.zeros((0, 2), dtype=dt), xp.zeros((0,), dtype=bool)
    guess, status = _track_pyramid(ref, mov, pts, radius=radius, levels=levels, num_iter=num_iter,
                                   eps2=float(epsilon) ** 2, min_eigenvalue=min_eigenvalue, dtype=dt,
                                   ndi=ndi, xp=xp)
    return pts, guess, status
