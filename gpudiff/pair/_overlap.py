"""The parts of two images that cover one another after a translation (a shift of :mod:`._align`).

Written against ``xp`` like the registration itself. A whole-number shift gives views (no copy); a
fractional one resamples the moving image bilinearly onto the reference's grid.
"""

from __future__ import annotations

import math

from ..backend import get_namespace
from ..errors import InputError
from ._align import Alignment

__all__ = ["overlap_window", "register_overlap"]

#: A shift closer than this to a whole number is treated as that whole number.
_INTEGER_SNAP = 1e-6


def _axis_overlap(n_ref: int, n_mov: int, d: float, axis: str, shapes: str):
    """Rows ``[r0, r1)`` of the reference whose ``r - d`` lies inside ``[0, n_mov - 1]``.

    Returns ``(r0, r1, i, frac)`` with ``d = i + frac``, ``0 <= frac < 1``; with ``frac > 0`` the
    value at ``r`` interpolates moving rows ``r - i - 1`` (weight ``frac``) and ``r - i``.
    """
    i = math.floor(d)
    frac = d - i
    if frac < _INTEGER_SNAP:
        frac = 0.0
    elif frac > 1.0 - _INTEGER_SNAP:
        i, frac = i + 1, 0.0
    r0 = max(0, i + 1 if frac else i)
    r1 = min(n_ref, n_mov + i)
    if r1 <= r0:
        raise InputError(
            f"shift {d:g} along {axis} leaves no overlap between {shapes}: "
            f"a shift must be within ({-(n_mov - 1) - (1 if frac else 0)}, {n_ref - 1}) pixels "
            "along each axis; check the alignment (its confidence) or skip the pair"
        )
    return r0, r1, i, frac


def overlap_window(reference_shape, moving_shape, shift) -> tuple[int, int, int, int]:
    """Where the overlap of :func:`register_overlap` lies in the reference: ``(r0, r1, c0, c1)``.

    ``reference[r0:r1, c0:c1]`` is the part compared after registration (e.g. to place a map of
    the overlap back into the reference frame).
    """
    dy, dx = (float(v) for v in (shift.shift if isinstance(shift, Alignment) else shift))
    shapes = f"reference {tuple(reference_shape[:2])} and moving {tuple(moving_shape[:2])}"
    r0, r1, _, _ = _axis_overlap(reference_shape[0], moving_shape[0], dy, "rows (dy)", shapes)
    c0, c1, _, _ = _axis_overlap(reference_shape[1], moving_shape[1], dx, "columns (dx)", shapes)
    return r0, r1, c0, c1


def register_overlap(reference, moving, shift):
    """The parts of ``reference`` and ``moving`` that cover one another after registration.

    Parameters
    ----------
    reference : (H, W) or (H, W, C) array
    moving : (H', W') or (H', W', C) array
        Trailing (channel) dimensions must equal ``reference``'s; height and width may differ
        (both are anchored at their top-left pixel).
    shift : (dy, dx) or Alignment
        The shift of :func:`phase_cross_correlation`: ``reference[r, c]`` corresponds to
        ``moving[r - dy, c - dx]``.

    Returns
    -------
    ref_part, mov_part : arrays of one shape (h, w[, C])
        ``ref_part`` is always a view (slice) of ``reference``. For a whole-number shift
        ``mov_part`` is a view of ``moving`` too (no copy, dtype kept). For a fractional shift
        ``mov_part`` is a new float array (float64 for float64 input, float32 otherwise) holding
        ``moving`` linearly interpolated at ``(r - dy, c - dx)``.

    Raises
    ------
    InputError
        Fewer than 2 dimensions, different trailing dimensions, a shift that is not two finite
        numbers, or a shift that leaves no overlap.

    Notes
    -----
    With :math:`d = i + \\phi`, :math:`i = \\lfloor d \\rfloor`, :math:`0 \\le \\phi < 1` per axis,
    the reference rows kept are :math:`\\lceil d \\rceil \\le r < \\min(H, H' + i)` (and
    :math:`\\max(0, d) \\le r` for integer :math:`d`), so every value used comes from inside
    ``moving`` and nothing is extrapolated: a fractional part shrinks the overlap by one pixel.
    The interpolation is separable linear,
    :math:`m'(r) = (1 - \\phi)\\,m(r - i) + \\phi\\,m(r - i - 1)` along each axis, which equals
    ``scipy.ndimage.shift(moving, (dy, dx), order=1)`` on the overlap. Components within
    1e-6 of a whole number are treated as whole.
    """
    if isinstance(shift, Alignment):
        shift = shift.shift
    try:
        dy, dx = (float(v) for v in shift)
    except (TypeError, ValueError):
        raise InputError(f"shift {shift!r} must be two numbers (dy, dx) or an Alignment") from None
    if not (math.isfinite(dy) and math.isfinite(dx)):
        raise InputError(f"shift ({dy}, {dx}) must be finite")
    xp = get_namespace(reference, moving)
    reference = xp.asarray(reference)
    moving = xp.asarray(moving)
    if reference.ndim < 2 or moving.ndim < 2:
        raise InputError(
            f"register_overlap needs images of shape (H, W) or (H, W, C); got {tuple(reference.shape)} "
            f"and {tuple(moving.shape)}"
        )
    if reference.shape[2:] != moving.shape[2:]:
        raise InputError(
            f"reference {tuple(reference.shape)} and moving {tuple(moving.shape)} differ beyond "
            "height and width: convert both to the same channels (grey or RGB) first"
        )
    shapes = f"reference {tuple(reference.shape[:2])} and moving {tuple(moving.shape[:2])}"
    r0, r1, iy, fy = _axis_overlap(reference.shape[0], moving.shape[0], dy, "rows (dy)", shapes)
    c0, c1, ix, fx = _axis_overlap(reference.shape[1], moving.shape[1], dx, "columns (dx)", shapes)
    ref_part = reference[r0:r1, c0:c1]
    if not fy and not fx:
        return ref_part, moving[r0 - iy : r1 - iy, c0 - ix : c1 - ix]

    work = xp.float64 if moving.dtype == xp.float64 else xp.float32
    # Moving rows/columns needed: r - i (and r - i - 1 when interpolating).
    m = moving[r0 - iy - (1 if fy else 0) : r1 - iy, c0 - ix - (1 if fx else 0) : c1 - ix]
    m = m.astype(work, copy=False)
    if fy:
        m = (1.0 - fy) * m[1:] + fy * m[:-1]
    if fx:
        m = (1.0 - fx) * m[:, 1:] + fx * m[:, :-1]
    return ref_part, m.astype(work, copy=False)
