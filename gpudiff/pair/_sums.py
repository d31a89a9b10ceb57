"""The fused pass over an image pair: every norm, the NCC sums and both histograms from one read.

Comparing two images is memory-bound: computing the Manhattan norm, the zero norm, the squared
error, the maximum difference, the sums behind the normalised cross-correlation and both intensity
histograms as a chain of library calls reads the pair once per call. :func:`pair_sums` reads it
once and returns a :class:`PairSums`, a handful of additive numbers from which
:func:`gpudiff.compare.metrics_from_sums` derives every metric.

Three implementations compute the same numbers:

``reference``
    Plain array code against the namespace ``xp`` (NumPy or CuPy). It works through row strips
    of about two million pixels, so no metric allocates full-image temporaries.
``numba``
    One compiled pass on the CPU: a ``numba.njit(parallel=True)`` driver whose ``prange`` over
    thread slots calls a cached serial loop over row blocks; SIMD sums per row and channel, then
    thread-private sub-histograms over the same row while it is in the L1 cache. Numba is
    optional: without it ``auto`` falls back to ``reference``.
``cuda``
    The kernel family of ``kernels/pair_stats.cu`` (grid-stride loop, warp-shuffle block
    reductions, one atomic per block and quantity, shared-memory histograms where they fit).

Integer images (uint8, uint16) are summed exactly in integers, so every implementation returns
the same numbers bit for bit, on the whole image and on its tiles summed. Float images are
summed in float64; the implementations then agree to rounding (about 1e-15 relative).
"""

from __future__ import annotations

import math

import numpy as np

from .. import backend as _backend
from ..errors import BackendUnavailable, ConfigError, InputError
from ._sums_core import PairSums, SUPPORTED_DTYPES, _MAX_BINS, _MAX_CHANNELS, _check_known_histogram
from ._sums_cuda import _pair_sums_cuda
from . import _sums_numba
from ._sums_reference import _pair_sums_reference

__all__ = ["PairSums", "pair_sums", "IMPLEMENTATIONS", "SUPPORTED_DTYPES"]

#: Values of the ``impl`` argument of :func:`pair_sums`.
IMPLEMENTATIONS = ("auto", "reference", "numba", "cuda")


def pair_sums(
    a, b, *, tolerance=0.0, center=0.0, bins=256, hist_range=None, hist_a=None, impl="auto"
) -> PairSums:
    """Every additive statistic of an image pair, from one read of the two images.

    Parameters
    ----------
    a, b : ndarray, shape (H, W) or (H, W, C)
        NumPy or CuPy arrays (both the same), same shape and dtype; ``C`` from 1 to 4 channels,
        last; dtype uint8, uint16, float32 or float64. Any memory layout (a non-contiguous array is
        copied once).
    tolerance : float, optional
        The zero norm counts differences with :math:`|a - b| >` ``tolerance`` (>= 0).
    center : float, optional
        Subtracted from ``a`` and ``b`` before the NCC sums (``sa``, ``saa``, ...). A value near
        the data's mean avoids cancellation for float data; for integer data the sums are exact
        and centred afterwards, then rounded once.
    bins : int, optional
        Histogram bins (1 to 65536), used with ``hist_range``.
    hist_range : (float, float) or None, optional
        ``(lo, hi)`` with ``hi > lo``, both finite: compute the histograms of ``a`` and ``b``
        per channel. None skips them.
    hist_a : ndarray of int64, shape (C, bins), optional
        The histogram of ``a`` over the same ``hist_range`` and ``bins``, already known (a frame
        of a sequence is ``b`` of one pair and ``a`` of the next): returned as ``hist_a``
        without being recomputed. The CPU pass then counts ``b`` only.
    impl : {'auto', 'reference', 'numba', 'cuda'}, optional
        'auto' takes 'cuda' for CuPy arrays, 'numba' for NumPy arrays when Numba imports, and
        'reference' otherwise.

    Returns
    -------
    PairSums
        Host (NumPy) values: sums in float64, counts in int64.

    Raises
    ------
    InputError
        When the arrays cannot be compared (shapes, dtypes, namespaces, channels, empty).
    ConfigError
        For an invalid option value.
    BackendUnavailable
        When ``impl`` names an implementation that is not installed or does not fit the arrays.

    Notes
    -----
    With :math:`d = a - b` per sample: ``l1`` :math:`=\\sum |d|`, ``sse`` :math:`=\\sum d^2`,
    ``max_abs`` :math:`=\\max |d|`, ``l0`` :math:`=\\#\\{|d| > t\\}`; the NCC of
    :func:`gpudiff.compare.metrics_from_sums` is
    :math:`(S_{ab} - S_a S_b / n) / \\sqrt{(S_{aa} - S_a^2/n)(S_{bb} - S_b^2/n)}`
    (Lewis, "Fast normalized cross-correlation", 1995).

    A value ``v`` with :math:`lo \\le v \\le hi` goes to bin
    :math:`\\min(\\lfloor (v - lo) \\cdot bins / (hi - lo) \\rfloor, bins - 1)`, computed in
    float64; values outside the range, and NaN, are not counted. For uint8 with range (0, 256)
    and 256 bins, ``v`` goes to bin ``v``, as OpenCV's ``calcHist(..., [256], [0, 256])``.

    NaN in float images is the caller's business: it propagates into the sums (``l1``, ``sse``,
    the NCC sums become NaN; ``max_abs`` is then undefined), is never counted in ``l0`` and never
    in a histogram. :func:`gpudiff.compare.compare` rejects NaN before calling this.

    Integer images are accumulated exactly in int64 (``l1`` and the sums are exact while below
    :math:`2^{53}`), so every implementation gives the same numbers bit for bit. Float images
    accumulate in float64: with 'numba' in row blocks of fixed size (the result does not depend on
    the number of threads), with 'cuda' block totals are added atomically in any order, so the
    last bits may differ from run to run.
    """
    xp = _check_namespace(a, b)
    _check_arrays(a, b)
    tolerance, center, bins, hist_range = _check_options(tolerance, center, bins, hist_range)
    impl = _choose_impl(impl, xp)

    H, W = int(a.shape[0]), int(a.shape[1])
    C = 1 if a.ndim == 2 else int(a.shape[2])
    if hist_a is not None:
        hist_a = _check_known_histogram(hist_a, C, bins, hist_range)
    a = xp.ascontiguousarray(a).reshape(H, W * C)
    b = xp.ascontiguousarray(b).reshape(H, W * C)
    if impl == "numba":
        out = _sums_numba._pair_sums_numba(a, b, C, tolerance, center, bins, hist_range, both=hist_a is None)
    elif impl == "cuda":
        out = _pair_sums_cuda(xp, a, b, C, tolerance, center, bins, hist_range)
    else:
        out = _pair_sums_reference(xp, a, b, C, tolerance, center, bins, hist_range)
    if hist_a is not None:
        out.hist_a = hist_a
    return out


# --------------------------------------------------------------------------------------------------
# validation


def _check_namespace(a, b):
    names = []
    for name, x in (("a", a), ("b", b)):
        if isinstance(x, np.ndarray):
            names.append("numpy")
        elif _backend.is_device_array(x) and hasattr(x, "shape") and hasattr(x, "dtype"):
            names.append("cupy")
        else:
            raise InputError(
                f"pair_sums: {name} is a {type(x).__name__}, not an array: pass a NumPy or CuPy array "
                "(e.g. numpy.asarray(image))"
            )
    if names[0] != names[1]:
        raise InputError(
            f"pair_sums: a is a {names[0]} array and b a {names[1]} array: move both to one device "
            "first (gpudiff.backend.asarray(x, xp))"
        )
    return _backend.get_namespace(a, b)


def _check_arrays(a, b):
    if a.shape != b.shape:
        raise InputError(
            f"pair_sums: a has shape {tuple(a.shape)} and b has shape {tuple(b.shape)}: the images must "
            "have the same shape (crop or resize first, e.g. CompareOptions(shape='crop'))"
        )
    if a.ndim not in (2, 3) or (a.ndim == 3 and not 1 <= a.shape[2] <= _MAX_CHANNELS):
        raise InputError(
            f"pair_sums: images of shape {tuple(a.shape)} are not (H, W) or (H, W, C) with 1 to "
            f"{_MAX_CHANNELS} channels last: convert to grey or move the channel axis last "
            "(numpy.moveaxis(x, 0, -1))"
        )
    if a.shape[0] == 0 or a.shape[1] == 0:
        raise InputError(f"pair_sums: the images of shape {tuple(a.shape)} are empty: nothing to compare")
    if a.dtype != b.dtype:
        raise InputError(
            f"pair_sums: a is {a.dtype} and b is {b.dtype}: convert both to one dtype first "
            f"(e.g. b.astype(a.dtype), or both to float32)"
        )
    if a.dtype not in SUPPORTED_DTYPES:
        raise InputError(
            f"pair_sums: dtype {a.dtype} is not supported: use one of uint8, uint16, float32, float64 "
            "(e.g. x.astype(numpy.float32); native byte order)"
        )


def _check_options(tolerance, center, bins, hist_range):
    try:
        tolerance = float(tolerance)
        center = float(center)
    except (TypeError, ValueError):
        raise ConfigError(
            f"pair_sums: tolerance={tolerance!r} and center={center!r} must be numbers"
        ) from None
    if not tolerance >= 0:  # also refuses NaN
        raise ConfigError(f"pair_sums: tolerance={tolerance} must be >= 0")
    if not math.isfinite(center):
        raise ConfigError(f"pair_sums: center={center} must be finite")
    if hist_range is None:
        return tolerance, center, None, None
    try:
        whole = not isinstance(bins, bool) and int(bins) == bins
    except (TypeError, ValueError, OverflowError):
        whole = False
    if not whole or not 1 <= bins <= _MAX_BINS:
        raise ConfigError(f"pair_sums: bins={bins!r} must be a whole number from 1 to {_MAX_BINS}")
    bins = int(bins)
    try:
        lo, hi = (float(v) for v in hist_range)
    except (TypeError, ValueError):
        raise ConfigError(
            f"pair_sums: hist_range={hist_range!r} must be a pair of numbers (lo, hi)"
        ) from None
    if not (math.isfinite(lo) and math.isfinite(hi) and hi > lo and math.isfinite((hi - lo) * bins)):
        raise ConfigError(f"pair_sums: hist_range=({lo}, {hi}) must be finite with hi > lo")
    return tolerance, center, bins, (lo, hi)


def _choose_impl(impl, xp):
    if impl not in IMPLEMENTATIONS:
        raise ConfigError(f"pair_sums: impl={impl!r} is not one of {', '.join(IMPLEMENTATIONS)}")
    on_gpu = _backend.is_cupy(xp)
    if impl == "auto":
        if on_gpu:
            return "cuda"
        return "numba" if _sums_numba._numba is not None else "reference"
    if impl == "cuda" and not on_gpu:
        raise BackendUnavailable(
            "pair_sums: impl='cuda' needs CuPy arrays; move them with cupy.asarray or use impl='auto'"
        )
    if impl == "numba":
        if on_gpu:
            raise BackendUnavailable(
                "pair_sums: impl='numba' runs on the CPU: pass NumPy arrays or use impl='cuda'"
            )
        if _sums_numba._numba is None:  # read here, so a test can take numba away
            raise BackendUnavailable(
                "pair_sums: impl='numba' needs Numba: pip install numba, or use impl='reference'"
            )
    return impl
