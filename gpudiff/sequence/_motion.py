"""One interface over the dense flow methods, and the forward-backward check that says which
pixels of a flow field to trust.

:func:`optical_flow` runs one of :data:`FLOW_METHODS` (``lk``: pyramidal iterative Lucas-Kanade,
:mod:`._flow`; ``tvl1``: TV-L1, :mod:`._tvl1`; ``dis``: dense inverse search, :mod:`._dis`), all
with scikit-image's convention ``flow = (v, u)``, ``reference[r, c] ~ moving[r + v, c + u]``.

:func:`flow_consistency` is the forward-backward test of Sundaram, Brox and Keutzer (2010): a pixel
``x`` is trusted when its match ``x + w(x)`` lies inside the frame and the backward flow there
brings it back, ``|w(x) + w_b(x + w(x))|^2 < alpha (|w(x)|^2 + |w_b(x + w(x))|^2) + beta``.
Occluded pixels (covered in the moving frame), pixels that leave the frame and gross errors fail
it. Written against ``xp`` like the methods; only the scalar statistics come back to the host.
"""

from __future__ import annotations

import inspect
from importlib import import_module

import numpy as np

from ..backend import get_namespace, ndimage
from ..errors import ConfigError, InputError

__all__ = ["FLOW_METHODS", "DEFAULT_FLOW_METHOD", "optical_flow", "flow_consistency", "flow_input"]

#: The dense flow methods, and the module and function of each.
_METHODS = {
    "lk": ("._flow", "optical_flow_lk"),
    "tvl1": ("._tvl1", "optical_flow_tvl1"),
    "dis": ("._dis", "optical_flow_dis"),
}
FLOW_METHODS = tuple(_METHODS)
#: What ``gpudiff run --flow`` uses when no method is named: TV-L1 had the lowest mean endpoint error
#: of the methods over the 17 cases of ``benchmarks/flow_eval.py`` (4.25 px; dis 4.89, lk 6.46; the
#: lowest on 11 cases; 0.10-0.33 px on large zooms, rotations and a textureless band, where lk
#: reaches 13 px) at 2.4 times lk's time (benchmarks/RESULTS.md, 2026-12-07).
DEFAULT_FLOW_METHOD = "tvl1"

#: Sundaram et al.'s constants: the tolerance grows with the motion (alpha), plus half a pixel
#: squared of slack for interpolation and sub-pixel error (beta, pixels**2).
_FB_ALPHA = 0.01
_FB_BETA = 0.5


def _method(method: str):
    if method not in _METHODS:
        raise ConfigError(f"flow method {method!r} is unknown: choose one of {', '.join(FLOW_METHODS)}")
    module, name = _METHODS[method]
    return getattr(import_module(module, __package__), name)


def flow_input(frame):
    """A frame (grey or colour, any real dtype) as the flow methods' grey input.

    Colour is the plain mean of the channels (:func:`gpudiff.pair.to_gray`). Integer frames are scaled
    to [0, 1] by their dtype's maximum, the units every method's constants are set in (TV-L1's
    ``attachment``, Lucas-Kanade's determinant guard); a grey integer frame is left as it is, since
    the methods scale it themselves, so a grey and a colour copy of one frame get the same input.
    """
    from ..pair._preprocess import to_gray  # noqa: PLC0415

    grey = to_gray(frame)
    if frame.dtype.kind in "ui" and grey.dtype.kind == "f":
        grey = grey / grey.dtype.type(np.iinfo(frame.dtype).max)
    return grey


def optical_flow(reference, moving, *, method: str = DEFAULT_FLOW_METHOD, **params):
    """Dense optical flow from ``reference`` to ``moving`` by ``method``.

    Parameters
    ----------
    reference, moving : ndarray, shape (H, W)
        Grey images of one shape (NumPy or CuPy; integers are scaled to [0, 1] by their dtype's
        maximum).
    method : {'tvl1', 'lk', 'dis'}
        ``tvl1`` (the default): :func:`gpudiff.sequence.optical_flow_tvl1` (global: fills
        textureless regions, follows large smooth motion); ``lk``:
        :func:`gpudiff.sequence.optical_flow_lk` (local; fails in textureless regions and beyond
        about a window radius of motion per pyramid level); ``dis``:
        :func:`gpudiff.sequence.optical_flow_dis` (patch search coarse to fine, densification and
        a variational refinement; OpenCV's presets).
    **params
        Passed to the method (e.g. ``radius=7`` for ``lk``, ``attachment=15`` for ``tvl1``,
        ``preset='fast'`` for ``dis``).

    Returns
    -------
    flow : ndarray, shape (2, H, W)
        ``(v, u)`` on the input's namespace: ``reference[r, c] ~ moving[r + v, c + u]``.
    """
    fn = _method(method)
    unknown = sorted(set(params) - set(inspect.signature(fn).parameters))
    if unknown:
        raise ConfigError(
            f"flow method {method!r} does not take {', '.join(unknown)}: see help(gpudiff.sequence.{fn.__name__})"
        )
    return fn(reference, moving, **params)


def flow_consistency(forward, backward, *, alpha: float = _FB_ALPHA, beta: float = _FB_BETA):
    """Pixels of ``forward`` confirmed by ``backward`` (the flow from moving back to reference).

    Parameters
    ----------
    forward : ndarray, shape (2, H, W)
        Flow from reference to moving, ``(v, u)``.
    backward : ndarray, shape (2, H, W)
        Flow from moving to reference, same convention.
    alpha, beta : float
        The test's tolerance ``alpha * (|w|^2 + |w_b|^2) + beta`` (pixels squared); Sundaram et al.'s
        0.01 and 0.5 by default.

    Returns
    -------
    valid : ndarray of bool, shape (H, W)
        True where the match lies inside the frame and the round trip closes within the tolerance.

    Notes
    -----
    The backward flow is sampled at the match ``x + w(x)`` bilinearly. Reference: N. Sundaram,
    T. Brox, K. Keutzer, "Dense point trajectories by GPU-accelerated large displacement optical
    flow", ECCV 2010, eq. (5).
    """
    xp = get_namespace(forward, backward)
    forward = xp.asarray(forward)
    backward = xp.asarray(backward)
    for name, f in (("forward", forward), ("backward", backward)):
        if f.ndim != 3 or f.shape[0] != 2 or f.dtype.kind != "f":
            raise InputError(f"{name} flow has shape {tuple(f.shape)} and dtype {f.dtype}: expected a float (2, H, W) field")
    if forward.shape != backward.shape:
        raise InputError(
            f"forward flow {tuple(forward.shape)} and backward flow {tuple(backward.shape)} differ: "
            "give both flows of one frame pair"
        )
    if not (alpha >= 0 and beta >= 0):
        raise ConfigError(f"alpha {alpha} and beta {beta} must be >= 0")
    h, w = forward.shape[1:]
    dt = forward.dtype
    rows = xp.arange(h, dtype=dt)[:, None] + forward[0]
    cols = xp.arange(w, dtype=dt)[None, :] + forward[1]
    inside = (rows >= 0) & (rows <= h - 1) & (cols >= 0) & (cols <= w - 1)
    ndi = ndimage(xp)
    coords = xp.stack([rows, cols])
    back = xp.stack([ndi.map_coordinates(backward[c], coords, order=1, mode="nearest") for c in range(2)])
    dv = forward[0] + back[0]
    du = forward[1] + back[1]
    mismatch = dv * dv + du * du
    tolerance = alpha * (forward[0] ** 2 + forward[1] ** 2 + back[0] ** 2 + back[1] ** 2) + beta
    return inside & (mismatch < tolerance)
