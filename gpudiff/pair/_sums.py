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

import functools
import math
import threading
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from .. import backend as _backend
from ..errors import BackendUnavailable, ConfigError, InputError

try:  # optional: the package imports and works without it
    import numba as _numba
    from numba import prange as _prange
except ImportError:  # pragma: no cover - exercised by monkeypatching _numba in the tests
    _numba = None
    _prange = range

__all__ = ["PairSums", "pair_sums", "serial_kernels", "IMPLEMENTATIONS", "SUPPORTED_DTYPES"]

#: Values of the ``impl`` argument of :func:`pair_sums`.
IMPLEMENTATIONS = ("auto", "reference", "numba", "cuda")
#: Element types :func:`pair_sums` accepts.
SUPPORTED_DTYPES = (np.dtype(np.uint8), np.dtype(np.uint16), np.dtype(np.float32), np.dtype(np.float64))
_MAX_CHANNELS = 4
_MAX_BINS = 65536
#: Pixels per row strip of the reference implementation.
_STRIP_PIXELS = 1 << 21
#: Pixels per row block of the numba implementation. Float partial sums are kept per block, so
#: the result does not depend on the number of threads.
_BLOCK_PIXELS = 1 << 16
#: Bytes of thread-private sub-histograms the numba loop aims to keep in the L1 cache.
_SUBHIST_BYTES = 32 * 1024
#: Order of the per-channel sums in the compiled kernels' output.
_L1, _SSE, _MAX, _SA, _SB, _SAA, _SBB, _SAB = range(8)


@dataclass(eq=False)  # fields are arrays: compare them field by field
class PairSums:
    """Additive statistics of an image pair ``(a, b)``, one entry per channel.

    The sums of two tiles are the sums of their union (``tile1 + tile2``; ``sum(tiles)`` works
    too), so a large image can be measured in pieces. All values are on the host.

    Attributes
    ----------
    n : int
        Pixels (``H * W``; a pixel has ``C`` samples).
    l1 : ndarray of float64, shape (C,)
        :math:`\\sum |a - b|` per channel.
    l0 : ndarray of int64, shape (C,)
        Samples with :math:`|a - b| >` ``tolerance``, per channel.
    l0_any : int
        Pixels where any channel has :math:`|a - b| >` ``tolerance``.
    sse : ndarray of float64, shape (C,)
        :math:`\\sum (a - b)^2` per channel.
    max_abs : ndarray of float64, shape (C,)
        :math:`\\max |a - b|` per channel.
    sa, sb, saa, sbb, sab : ndarray of float64, shape (C,)
        :math:`\\sum (a-c)`, :math:`\\sum (b-c)`, :math:`\\sum (a-c)^2`, :math:`\\sum (b-c)^2`
        and :math:`\\sum (a-c)(b-c)` with ``c = center``: the sums behind the normalised
        cross-correlation.
    center : float
        The value ``c`` subtracted before the NCC sums.
    hist_a, hist_b : ndarray of int64, shape (C, bins), or None
        Histograms of ``a`` and ``b`` over ``hist_range`` (None when not asked for).
    hist_range : tuple of float, or None
        ``(lo, hi)`` of the histograms.
    """

    n: int
    l1: np.ndarray
    l0: np.ndarray
    l0_any: int
    sse: np.ndarray
    max_abs: np.ndarray
    sa: np.ndarray
    sb: np.ndarray
    saa: np.ndarray
    sbb: np.ndarray
    sab: np.ndarray
    center: float
    hist_a: np.ndarray | None = None
    hist_b: np.ndarray | None = None
    hist_range: tuple[float, float] | None = None

    @property
    def channels(self) -> int:
        """The number of channels ``C``."""
        return int(len(self.l1))

    def __add__(self, other: PairSums) -> PairSums:
        """Merge the sums of two disjoint tiles measured with the same options."""
        if not isinstance(other, PairSums):
            return NotImplemented
        if self.channels != other.channels:
            raise ValueError(f"cannot add PairSums with {self.channels} and {other.channels} channels")
        if float(self.center) != float(other.center):
            raise ValueError(
                f"cannot add PairSums with center {self.center} and {other.center}: "
                "measure every tile with the same center"
            )
        if (self.hist_a is None) != (other.hist_a is None):
            raise ValueError("cannot add PairSums with and without histograms: pass hist_range to every tile")
        if self.hist_a is not None:
            if self.hist_range != other.hist_range or self.hist_a.shape != other.hist_a.shape:
                raise ValueError(
                    f"cannot add histograms over {self.hist_range} with {self.hist_a.shape[-1]} bins and "
                    f"over {other.hist_range} with {other.hist_a.shape[-1]} bins: use one bins/hist_range"
                )
            hist_a, hist_b = self.hist_a + other.hist_a, self.hist_b + other.hist_b
        else:
            hist_a = hist_b = None
        return PairSums(
            n=self.n + other.n,
            l1=self.l1 + other.l1,
            l0=self.l0 + other.l0,
            l0_any=self.l0_any + other.l0_any,
            sse=self.sse + other.sse,
            max_abs=np.maximum(self.max_abs, other.max_abs),
            sa=self.sa + other.sa,
            sb=self.sb + other.sb,
            saa=self.saa + other.saa,
            sbb=self.sbb + other.sbb,
            sab=self.sab + other.sab,
            center=self.center,
            hist_a=hist_a,
            hist_b=hist_b,
            hist_range=self.hist_range,
        )

    def __radd__(self, other):
        if isinstance(other, int) and other == 0:  # sum(tiles) starts from 0
            return self
        return NotImplemented


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
        out = _pair_sums_numba(a, b, C, tolerance, center, bins, hist_range, both=hist_a is None)
    elif impl == "cuda":
        out = _pair_sums_cuda(xp, a, b, C, tolerance, center, bins, hist_range)
    else:
        out = _pair_sums_reference(xp, a, b, C, tolerance, center, bins, hist_range)
    if hist_a is not None:
        out.hist_a = hist_a
    return out


def _check_known_histogram(hist_a, C: int, bins: int, hist_range) -> np.ndarray:
    if hist_range is None:
        raise ConfigError("hist_a was given without hist_range: pass the range it was counted over")
    h = np.asarray(hist_a)
    if h.shape != (C, bins) or h.dtype.kind not in "ui":
        raise ConfigError(
            f"hist_a has shape {h.shape} and dtype {h.dtype}: expected integer counts of shape ({C}, {bins}) "
            "as PairSums.hist_b of an earlier pair"
        )
    return h.astype(np.int64, copy=True)


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
        return "numba" if _numba is not None else "reference"
    if impl == "cuda" and not on_gpu:
        raise BackendUnavailable(
            "pair_sums: impl='cuda' needs CuPy arrays; move them with cupy.asarray or use impl='auto'"
        )
    if impl == "numba":
        if on_gpu:
            raise BackendUnavailable(
                "pair_sums: impl='numba' runs on the CPU: pass NumPy arrays or use impl='cuda'"
            )
        if _numba is None:
            raise BackendUnavailable(
                "pair_sums: impl='numba' needs Numba: pip install numba, or use impl='reference'"
            )
    return impl


# --------------------------------------------------------------------------------------------------
# shared by the implementations


@functools.lru_cache(maxsize=32)
def _value_bins(dtype_name: str, lo: float, hi: float, bins: int) -> np.ndarray:
    """Bin of every value of an integer dtype (``bins`` = out of range); read-only uint32."""
    v = np.arange(np.iinfo(np.dtype(dtype_name)).max + 1, dtype=np.float64)
    inside = (v >= lo) & (v <= hi)
    t = np.floor((v - lo) * bins / (hi - lo))
    out = np.where(inside, np.minimum(t, bins - 1), bins).astype(np.uint32)
    out.flags.writeable = False
    return out


def _integer_tolerance(tolerance: float, dtype) -> int:
    """|d| > tolerance  <=>  |d| > floor(tolerance) for integer d (capped to the dtype's range)."""
    top = int(np.iinfo(dtype).max)
    return top if tolerance >= top else int(math.floor(tolerance))


def _as_float(values) -> np.ndarray:
    """int64 sums -> float64, each correctly rounded."""
    return np.array([float(int(v)) for v in values], dtype=np.float64)


def _finish_integer(n, C, ints, l0, l0_any, center, hist, hist_range):
    """PairSums from exact integer sums ``ints`` (8, C): l1, sse, max, sa, sb, saa, sbb, sab.

    The centred NCC sums are computed exactly (integers and the exact rational value of
    ``center``) and rounded once.
    """
    ints = np.asarray(ints, dtype=np.int64)
    sa, sb, saa, sbb, sab = (ints[k] for k in (_SA, _SB, _SAA, _SBB, _SAB))
    if center == 0.0:
        centred = [_as_float(x) for x in (sa, sb, saa, sbb, sab)]
    else:
        c = Fraction(center)
        nc, ncc = n * c, n * c * c
        centred = [np.empty(C) for _ in range(5)]
        for ch in range(C):
            Sa, Sb = int(sa[ch]), int(sb[ch])
            centred[0][ch] = float(Sa - nc)
            centred[1][ch] = float(Sb - nc)
            centred[2][ch] = float(int(saa[ch]) - 2 * c * Sa + ncc)
            centred[3][ch] = float(int(sbb[ch]) - 2 * c * Sb + ncc)
            centred[4][ch] = float(int(sab[ch]) - c * (Sa + Sb) + ncc)
    return PairSums(
        n=int(n),
        l1=_as_float(ints[_L1]),
        l0=np.asarray(l0, dtype=np.int64).copy(),
        l0_any=int(l0_any),
        sse=_as_float(ints[_SSE]),
        max_abs=ints[_MAX].astype(np.float64),
        sa=centred[0],
        sb=centred[1],
        saa=centred[2],
        sbb=centred[3],
        sab=centred[4],
        center=float(center),
        hist_a=None if hist is None else np.ascontiguousarray(hist[0], dtype=np.int64),
        hist_b=None if hist is None else np.ascontiguousarray(hist[1], dtype=np.int64),
        hist_range=hist_range,
    )


def _finish_float(n, floats, l0, l0_any, center, hist, hist_range):
    """PairSums from float64 sums ``floats`` (8, C) in the order l1, sse, max, sa, sb, saa, sbb, sab."""
    f = np.asarray(floats, dtype=np.float64)
    return PairSums(
        n=int(n),
        l1=f[_L1].copy(),
        l0=np.asarray(l0, dtype=np.int64).copy(),
        l0_any=int(l0_any),
        sse=f[_SSE].copy(),
        max_abs=f[_MAX].copy(),
        sa=f[_SA].copy(),
        sb=f[_SB].copy(),
        saa=f[_SAA].copy(),
        sbb=f[_SBB].copy(),
        sab=f[_SAB].copy(),
        center=float(center),
        hist_a=None if hist is None else np.ascontiguousarray(hist[0], dtype=np.int64),
        hist_b=None if hist is None else np.ascontiguousarray(hist[1], dtype=np.int64),
        hist_range=hist_range,
    )


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


# --------------------------------------------------------------------------------------------------
# numba: one compiled pass over the pair
#
# Layout: a, b are C-contiguous (H, W*C). Rows are grouped in blocks of about _BLOCK_PIXELS pixels;
# each of ``nslots`` parallel slots takes a contiguous range of blocks. Sums are written per block,
# so float results do not depend on the number of threads. Each row is summed (SIMD for integers),
# then, while it is still in the L1 cache, histogrammed: thread-private uint32 sub-histograms
# (four per slot where they fit, so runs of equal values do not wait on each other's stores),
# flushed to int64 per slot. uint16 and float rows are first turned into bin indices in a
# scratch row (a table look-up, or the float64 bin formula, vectorised), then scattered.
#
# The channel count is a runtime argument; the row helpers are inlined once per literal C in 1..4
# so LLVM sees constant strides and vectorises the strided sums. Each dtype compiles once: uint8
# and uint16 (integer kernel), float32 and float64 (float kernel).

_numba_lock = threading.Lock()  # one fused pass at a time: each already uses every core
#: Stands for "no value -> bin table" where the integer kernel takes one, so its type (and the
#: compiled specialisation) stays the same with and without histograms.
_NO_LUT = np.zeros(1, dtype=np.uint32)
_NO_LUT.flags.writeable = False
#: Flush the uint32 sub-histograms to int64 after this many pixels, before a count can overflow.
_FLUSH_PIXELS = 1 << 31

if _numba is not None:
    _inline = _numba.njit(inline="always")
    _serial = _numba.njit(fastmath=False, cache=True, nogil=True)
    _parallel = _numba.njit(parallel=True, fastmath=False, cache=True, nogil=True)

    @_inline
    def _int_channel(ra, rb, start, n, stride, itol):
        l1 = 0
        sse = 0
        mx = 0
        l0 = 0
        sa = 0
        sb = 0
        saa = 0
        sbb = 0
        sab = 0
        for x in range(n):
            va = np.int64(ra[start + x * stride])
            vb = np.int64(rb[start + x * stride])
            d = va - vb
            ad = abs(d)
            l1 += ad
            sse += d * d
            mx = max(mx, ad)
            l0 += np.int64(ad > itol)
            sa += va
            sb += vb
            saa += va * va
            sbb += vb * vb
            sab += va * vb
        return l1, sse, mx, l0, sa, sb, saa, sbb, sab

    @_inline
    def _int_any(ra, rb, n, stride, itol):
        count = 0
        for x in range(n):
            hit = 0
            for c in range(stride):
                d = np.int64(ra[x * stride + c]) - np.int64(rb[x * stride + c])
                hit |= np.int64(abs(d) > itol)
            count += hit
        return count

    @_inline
    def _int_row(ra, rb, W, C, itol, sums, counts, blk):
        for c in range(C):
            l1, sse, mx, l0, sa, sb, saa, sbb, sab = _int_channel(ra, rb, c, W, C, itol)
            s = sums[blk, c]
            s[0] += l1
            s[1] += sse
            s[2] = max(s[2], mx)
            s[3] += sa
            s[4] += sb
            s[5] += saa
            s[6] += sbb
            s[7] += sab
            counts[blk, c] += l0
            if C == 1:
                counts[blk, 1] += l0
        if C > 1:
            counts[blk, C] += _int_any(ra, rb, W, C, itol)

    @_inline
    def _float_channel(ra, rb, start, n, stride, tol, center):
        l1 = 0.0
        sse = 0.0
        mx = 0.0
        l0 = 0
        sa = 0.0
        sb = 0.0
        saa = 0.0
        sbb = 0.0
        sab = 0.0
        for x in range(n):
            fa = np.float64(ra[start + x * stride])
            fb = np.float64(rb[start + x * stride])
            d = fa - fb
            ad = abs(d)
            l1 += ad
            sse += d * d
            if ad > mx:
                mx = ad
            l0 += np.int64(ad > tol)
            ca = fa - center
            cb = fb - center
            sa += ca
            sb += cb
            saa += ca * ca
            sbb += cb * cb
            sab += ca * cb
        return l1, sse, mx, l0, sa, sb, saa, sbb, sab

    @_inline
    def _float_any(ra, rb, n, stride, tol):
        count = 0
        for x in range(n):
            hit = 0
            for c in range(stride):
                d = np.float64(ra[x * stride + c]) - np.float64(rb[x * stride + c])
                hit |= np.int64(abs(d) > tol)
            count += hit
        return count

    @_inline
    def _float_row(ra, rb, W, C, tol, center, sums, counts, blk):
        for c in range(C):
            l1, sse, mx, l0, sa, sb, saa, sbb, sab = _float_channel(ra, rb, c, W, C, tol, center)
            s = sums[blk, c]
            s[0] += l1
            s[1] += sse
            if mx > s[2]:
                s[2] = mx
            s[3] += sa
            s[4] += sb
            s[5] += saa
            s[6] += sbb
            s[7] += sab
            counts[blk, c] += l0
            if C == 1:
                counts[blk, 1] += l0
        if C > 1:
            counts[blk, C] += _float_any(ra, rb, W, C, tol)

    @_inline
    def _scatter_row(ra, rb, W, C, h, nbp, sub_mask, sub_stride, both, sh):
        """Count the bins ``v >> sh`` of one row of a and b (``sh`` = 0: the values are the bins:
        uint8 values, or bin indices from a table or the float formula).

        ``h`` is flat: sub-histogram k at k*sub_stride (sub_stride = 0 folds the four onto one),
        then image (a, b), then channel, then ``nbp`` bins; four consecutive pixels go to four
        sub-histograms, so increments of equal bins do not wait on one another. Index arithmetic
        stays unsigned, so no negative-index wraparound is emitted. With ``sh`` > 0 every value of
        the dtype lies inside the range (lo = 0, hi past the dtype's top): no range check and no
        second pass over a scratch row are needed."""
        nbp = np.uintp(nbp)
        sub_stride = np.uintp(sub_stride)
        uc = np.uintp(C)
        ush = np.uintp(sh)
        x = 0
        while x + 4 <= W:
            for k in range(4):
                base = np.uintp(k & sub_mask) * sub_stride
                p = (x + k) * C
                for c in range(C):
                    if both:
                        h[base + np.uintp(c) * nbp + (np.uintp(ra[p + c]) >> ush)] += np.uint32(1)
                    h[base + (uc + np.uintp(c)) * nbp + (np.uintp(rb[p + c]) >> ush)] += np.uint32(1)
            x += 4
        while x < W:
            p = x * C
            for c in range(C):
                if both:
                    h[np.uintp(c) * nbp + (np.uintp(ra[p + c]) >> ush)] += np.uint32(1)
                h[(uc + np.uintp(c)) * nbp + (np.uintp(rb[p + c]) >> ush)] += np.uint32(1)
            x += 1

    @_inline
    def _scatter(ra, rb, W, C, h, nbp, sub_mask, sub_stride, both, sh):
        if C == 1:
            _scatter_row(ra, rb, W, 1, h, nbp, sub_mask, sub_stride, both, sh)
        elif C == 2:
            _scatter_row(ra, rb, W, 2, h, nbp, sub_mask, sub_stride, both, sh)
        elif C == 3:
            _scatter_row(ra, rb, W, 3, h, nbp, sub_mask, sub_stride, both, sh)
        else:
            _scatter_row(ra, rb, W, 4, h, nbp, sub_mask, sub_stride, both, sh)

    @_inline
    def _lookup_row(x, lut, out):
        for i in range(x.shape[0]):
            out[i] = lut[x[i]]

    @_inline
    def _shift_row(x, binning, out):
        """``out[i]``: the bin of integer ``x[i]`` as ``(x - lo) >> shift`` (clamped to the last bin;
        ``nbins`` outside [lo, hi]). ``binning`` = (lo, hi, shift, nbins), all int64.

        Equal to the float64 formula whenever the bin width is ``2**shift`` and ``lo`` an integer
        (the division by a power of two is exact), and a shift vectorises where a 64k-entry table
        lookup (256 KiB, outside L1) does not.
        """
        lo = binning[0]
        hi = binning[1]
        sh = binning[2]
        nb = binning[3]
        last = nb - 1
        for i in range(x.shape[0]):
            v = np.int64(x[i])
            t = (v - lo) >> sh
            t = t if t < last else last
            t = t if (v >= lo) & (v <= hi) else nb
            out[i] = np.uint32(t)

    @_inline
    def _bin_row(x, lo, hi, nbins, out):
        """``out[i]``: the bin of ``x[i]`` by the float64 formula; ``nbins`` outside [lo, hi] or NaN.

        Branch-free so it vectorises; every value converted to an integer is within [0, nbins].
        """
        fbins = np.float64(nbins)
        last = fbins - 1.0
        width = hi - lo
        for i in range(x.shape[0]):
            v = np.float64(x[i])
            t = math.floor((v - lo) * fbins / width)
            t = t if t < last else last
            t = t if (v >= lo) & (v <= hi) else fbins
            out[i] = np.uint32(t)

    @_inline
    def _flush(h, hist_out, hsize, nsub):
        for i in range(hsize):
            total = 0
            for k in range(nsub):
                total += h[k * hsize + i]
                h[k * hsize + i] = 0
            hist_out[i] += total

    @_serial
    def _integer_slot(
        a, b, C, itol, lut, binning, nbp, nsub, block_rows, blk0, blk1, sums, counts, hist_out, both
    ):
        """Blocks [blk0, blk1) of the pair: sums and counts per block, histograms into hist_out."""
        H = a.shape[0]
        L = a.shape[1]
        W = L // C
        hsize = 2 * C * nbp
        sub_mask = nsub - 1
        sub_stride = hsize if nsub > 1 else 0
        h = np.zeros(nsub * hsize, np.uint32)
        scratch = 0 if lut is None or hsize == 0 else L
        xa = np.empty(scratch, np.uint32)
        xb = np.empty(scratch, np.uint32)
        since = 0
        for blk in range(blk0, blk1):
            r1 = min(H, (blk + 1) * block_rows)
            for r in range(blk * block_rows, r1):
                ra = a[r]
                rb = b[r]
                if C == 1:
                    _int_row(ra, rb, W, 1, itol, sums, counts, blk)
                elif C == 2:
                    _int_row(ra, rb, W, 2, itol, sums, counts, blk)
                elif C == 3:
                    _int_row(ra, rb, W, 3, itol, sums, counts, blk)
                else:
                    _int_row(ra, rb, W, 4, itol, sums, counts, blk)
                if hsize > 0:
                    if lut is None:
                        _scatter(ra, rb, W, C, h, nbp, sub_mask, sub_stride, both, 0)
                    elif binning[2] >= 0 and binning[0] == 0 and binning[1] > 65535:
                        if both:  # literal flags: each call site compiles without the test inside
                            _scatter(ra, rb, W, C, h, nbp, sub_mask, sub_stride, True, binning[2])
                        else:
                            _scatter(ra, rb, W, C, h, nbp, sub_mask, sub_stride, False, binning[2])
                    elif binning[2] >= 0:
                        if both:
                            _shift_row(ra, binning, xa)
                        _shift_row(rb, binning, xb)
                        _scatter(xa, xb, W, C, h, nbp, sub_mask, sub_stride, both, 0)
                    else:
                        if both:
                            _lookup_row(ra, lut, xa)
                        _lookup_row(rb, lut, xb)
                        _scatter(xa, xb, W, C, h, nbp, sub_mask, sub_stride, both, 0)
            since += (r1 - blk * block_rows) * W
            if hsize > 0 and since >= _FLUSH_PIXELS:
                _flush(h, hist_out, hsize, nsub)
                since = 0
        if hsize > 0:
            _flush(h, hist_out, hsize, nsub)

    @_serial
    def _float_slot(
        a, b, C, tol, center, lo, hi, nbins, nsub, block_rows, blk0, blk1, sums, counts, hist_out, both
    ):
        """Blocks [blk0, blk1) of the pair: sums and counts per block, histograms into hist_out."""
        H = a.shape[0]
        L = a.shape[1]
        W = L // C
        nbp = nbins + 1 if nbins > 0 else 0
        hsize = 2 * C * nbp
        sub_mask = nsub - 1
        sub_stride = hsize if nsub > 1 else 0
        h = np.zeros(nsub * hsize, np.uint32)
        scratch = L if hsize > 0 else 0
        xa = np.empty(scratch, np.uint32)
        xb = np.empty(scratch, np.uint32)
        since = 0
        for blk in range(blk0, blk1):
            r1 = min(H, (blk + 1) * block_rows)
            for r in range(blk * block_rows, r1):
                ra = a[r]
                rb = b[r]
                if C == 1:
                    _float_row(ra, rb, W, 1, tol, center, sums, counts, blk)
                elif C == 2:
                    _float_row(ra, rb, W, 2, tol, center, sums, counts, blk)
                elif C == 3:
                    _float_row(ra, rb, W, 3, tol, center, sums, counts, blk)
                else:
                    _float_row(ra, rb, W, 4, tol, center, sums, counts, blk)
                if hsize > 0:
                    if both:
                        _bin_row(ra, lo, hi, nbins, xa)
                    _bin_row(rb, lo, hi, nbins, xb)
                    _scatter(xa, xb, W, C, h, nbp, sub_mask, sub_stride, both, 0)
            since += (r1 - blk * block_rows) * W
            if hsize > 0 and since >= _FLUSH_PIXELS:
                _flush(h, hist_out, hsize, nsub)
                since = 0
        if hsize > 0:
            _flush(h, hist_out, hsize, nsub)

    # The parallel drivers stay tiny: numba's parfor passes cost compile time in proportion to
    # the code inside prange, so the work lives in the serial (separately cached) slot functions.

    @_parallel
    def _numba_integer(a, b, C, itol, lut, binning, nbp, nsub, nslots, block_rows, both):
        """Sums (nblocks, C, 8) int64, counts (nblocks, C+1) int64, histograms (nslots, 2*C*nbp).

        ``nbp`` = 0: no histograms. ``lut`` None (uint8): the value is the bin, nbp = 256; else
        the table maps each value to its bin (nbp - 1 for out of range).
        """
        nblocks = (a.shape[0] + block_rows - 1) // block_rows
        sums = np.zeros((nblocks, C, 8), np.int64)
        counts = np.zeros((nblocks, C + 1), np.int64)
        hist = np.zeros((nslots, 2 * C * nbp), np.int64)
        for s in _prange(nslots):
            _integer_slot(
                a, b, C, itol, lut, binning, nbp, nsub, block_rows,
                s * nblocks // nslots, (s + 1) * nblocks // nslots, sums, counts, hist[s], both,
            )  # fmt: skip
        return sums, counts, hist

    @_parallel
    def _numba_float(a, b, C, tol, center, lo, hi, nbins, nsub, nslots, block_rows, both):
        """Sums (nblocks, C, 8) float64, counts (nblocks, C+1), histograms (nslots, 2*C*(nbins+1)).

        ``nbins`` = 0: no histograms. Bin ``nbins`` collects values outside [lo, hi] and NaN.
        """
        nblocks = (a.shape[0] + block_rows - 1) // block_rows
        sums = np.zeros((nblocks, C, 8), np.float64)
        counts = np.zeros((nblocks, C + 1), np.int64)
        hist = np.zeros((nslots, 2 * C * (nbins + 1) if nbins > 0 else 0), np.int64)
        for s in _prange(nslots):
            _float_slot(
                a, b, C, tol, center, lo, hi, nbins, nsub, block_rows,
                s * nblocks // nslots, (s + 1) * nblocks // nslots, sums, counts, hist[s], both,
            )  # fmt: skip
        return sums, counts, hist


    # Serial drivers: the same work on the calling thread only, with no threading layer, so many
    # threads (Dask tasks) may run them at once; see serial_kernels().

    @_serial
    def _numba_integer_serial(a, b, C, itol, lut, binning, nbp, nsub, block_rows, both):
        nblocks = (a.shape[0] + block_rows - 1) // block_rows
        sums = np.zeros((nblocks, C, 8), np.int64)
        counts = np.zeros((nblocks, C + 1), np.int64)
        hist = np.zeros((1, 2 * C * nbp), np.int64)
        _integer_slot(
            a, b, C, itol, lut, binning, nbp, nsub, block_rows, 0, nblocks, sums, counts, hist[0], both
        )
        return sums, counts, hist

    @_serial
    def _numba_float_serial(a, b, C, tol, center, lo, hi, nbins, nsub, block_rows, both):
        nblocks = (a.shape[0] + block_rows - 1) // block_rows
        sums = np.zeros((nblocks, C, 8), np.float64)
        counts = np.zeros((nblocks, C + 1), np.int64)
        hist = np.zeros((1, 2 * C * (nbins + 1) if nbins > 0 else 0), np.int64)
        _float_slot(
            a, b, C, tol, center, lo, hi, nbins, nsub, block_rows, 0, nblocks, sums, counts, hist[0], both
        )
        return sums, counts, hist


_SERIAL = threading.local()


class serial_kernels:  # noqa: N801 - used as a context manager, like numpy.errstate
    """Within this context (on this thread), the CPU fused pass and SSIM run on the calling thread alone.

    For callers that are already parallel (Dask's threads, one chunk each): each thread runs its
    own serial pass, with no lock and no second pool of threads competing for the same cores.
    The numbers are identical to the parallel pass (fixed row blocks, summed in order).
    """

    def __enter__(self):
        self._old = getattr(_SERIAL, "on", False)
        _SERIAL.on = True
        return self

    def __exit__(self, *exc):
        _SERIAL.on = self._old
        return False


def running_serial() -> bool:
    """True inside :class:`serial_kernels` on this thread (SSIM follows it too)."""
    return getattr(_SERIAL, "on", False)


def _sub_histograms(hsize: int) -> int:
    """Sub-histograms per thread (1, 2 or 4) that fit the L1 budget."""
    for nsub in (4, 2):
        if nsub * hsize * 4 <= _SUBHIST_BYTES:
            return nsub
    return 1


class _ReadView:
    """Exposes a read-only array's memory as writeable for the numba kernels, which only read it.

    Numba compiles a separate specialisation for read-only arrays (memory maps, frombuffer);
    handing it the same memory as an ordinary array keeps one specialisation per dtype.
    """

    def __init__(self, x: np.ndarray):
        iface = dict(x.__array_interface__)
        iface["data"] = (iface["data"][0], False)
        self.__array_interface__ = iface
        self._keep = x


def _readable(x: np.ndarray) -> np.ndarray:
    return x if x.flags.writeable else np.asarray(_ReadView(x))


def _pair_sums_numba(a, b, C, tolerance, center, bins, hist_range, both=True):
    a, b = _readable(a), _readable(b)
    H = a.shape[0]
    W = a.shape[1] // C
    block_rows = max(1, _BLOCK_PIXELS // W)
    nslots = max(1, int(_numba.get_num_threads()))
    want_hist = hist_range is not None
    if a.dtype.kind == "u":
        itol = _integer_tolerance(tolerance, a.dtype)
        # uint8 counts values (rebinned below, 256 of them) and never passes a table; uint16
        # always passes one, so each dtype compiles once.
        lut = None if a.dtype == np.uint8 else _NO_LUT
        binning = _NO_SHIFT
        nbp = 0
        if want_hist:
            if lut is None:
                nbp = 256
            else:
                binning = _shift_binning(*hist_range, bins)
                if binning[2] < 0:
                    lut = _value_bins(a.dtype.name, *hist_range, bins)
                nbp = bins + 1
        nsub = _sub_histograms(2 * C * nbp)
        if getattr(_SERIAL, "on", False):
            sums, counts, hist = _numba_integer_serial(a, b, C, itol, lut, binning, nbp, nsub, block_rows, both)
        else:
            with _numba_lock:
                sums, counts, hist = _numba_integer(a, b, C, itol, lut, binning, nbp, nsub, nslots, block_rows, both)
        ints = np.empty((8, C), np.int64)
        for k in range(8):
            ints[k] = sums[:, :, k].max(axis=0) if k == _MAX else sums[:, :, k].sum(axis=0)
        counts = counts.sum(axis=0)
        h = None
        if want_hist:
            h = hist.sum(axis=0).reshape(2, C, nbp)
            if lut is None:
                h = _rebin_values(h, _value_bins(a.dtype.name, *hist_range, bins), bins)
            else:
                h = h[:, :, :bins]
        return _finish_integer(H * W, C, ints, counts[:C], counts[C], center, h, hist_range)

    lo, hi = hist_range if want_hist else (0.0, 1.0)
    nbins = bins if want_hist else 0
    nsub = _sub_histograms(2 * C * (nbins + 1)) if want_hist else 1
    if getattr(_SERIAL, "on", False):
        sums, counts, hist = _numba_float_serial(
            a, b, C, float(tolerance), float(center), float(lo), float(hi), nbins, nsub, block_rows, both
        )
    else:
        with _numba_lock:
            sums, counts, hist = _numba_float(
                a, b, C, float(tolerance), float(center), float(lo), float(hi), nbins, nsub, nslots, block_rows,
                both,
            )
    floats = np.empty((8, C), np.float64)
    for k in range(8):
        floats[k] = sums[:, :, k].max(axis=0) if k == _MAX else sums[:, :, k].sum(axis=0)
    counts = counts.sum(axis=0)
    h = None
    if want_hist:
        h = hist.sum(axis=0).reshape(2, C, nbins + 1)[:, :, :bins]
    return _finish_float(H * W, floats, counts[:C], counts[C], center, h, hist_range)


_NO_SHIFT = np.array([0, 0, -1, 0], dtype=np.int64)
_NO_SHIFT.flags.writeable = False


def _shift_binning(lo: float, hi: float, bins: int) -> np.ndarray:
    """(lo, hi, shift, bins) when the integer bins are ``(v - lo) >> shift`` exactly (integer ``lo``
    and ``hi``, bin width a power of two); shift -1 (use the table) otherwise."""
    out = np.array([0, 0, -1, bins], dtype=np.int64)
    width = (hi - lo) / bins
    if lo == int(lo) and hi == int(hi) and lo >= 0 and width >= 1 and width == int(width):
        w = int(width)
        if w & (w - 1) == 0:
            out[:3] = (int(lo), int(hi), w.bit_length() - 1)
    out.flags.writeable = False
    return out


def _rebin_values(h, lut, bins):
    """(2, C, 256) value counts -> (2, C, bins) via the value -> bin table (exact, int64)."""
    out = np.zeros(h.shape[:2] + (bins + 1,), np.int64)
    for i in range(h.shape[0]):
        for c in range(h.shape[1]):
            np.add.at(out[i, c], lut, h[i, c])
    return out[:, :, :bins]


# --------------------------------------------------------------------------------------------------
# cuda: kernels/pair_stats.cu


_CUDA_KIND = {"uint8": "u8", "uint16": "u16", "float32": "f32", "float64": "f64"}
_CUDA_BLOCK = 256
_SHARED_HIST_BYTES = 48 * 1024


def _cuda_kernel_name(dtype, C, n_samples, bins):
    """The kernel of ``kernels/pair_stats.cu`` for a launch, and its dynamic shared memory (bytes).

    ``pair_stats_[global_hist_][c1_]<dtype>_<index>``: histograms in shared memory when both fit
    (else global atomics), the lean single-channel variant for C == 1, and 32-bit indexing when
    the sample count allows it.
    """
    index = "i32" if n_samples <= (1 << 30) else "i64"
    hist_bytes = 2 * C * bins * 4 if bins else 0
    shared = hist_bytes <= _SHARED_HIST_BYTES
    name = "pair_stats_" + ("" if shared else "global_hist_") + ("c1_" if C == 1 else "")
    return f"{name}{_CUDA_KIND[np.dtype(dtype).name]}_{index}", (hist_bytes if shared else 0)


@functools.lru_cache(maxsize=32)
def _device_value_bins(xp, device_id, dtype_name, lo, hi, bins):
    """:func:`_value_bins` on a device, uploaded once."""
    with xp.cuda.Device(device_id):
        return xp.asarray(_value_bins(dtype_name, lo, hi, bins))


def _pair_sums_cuda(xp, a, b, C, tolerance, center, bins, hist_range):
    """``a``, ``b``: contiguous CuPy (H, W*C). One kernel launch, one transfer back."""
    from ..backend import _kernels  # noqa: PLC0415

    H = a.shape[0]
    W = a.shape[1] // C
    npix = H * W
    is_int = a.dtype.kind == "u"
    want_hist = hist_range is not None
    nbins = bins if want_hist else 0
    lo, hi = hist_range if want_hist else (0.0, 1.0)
    itol = _integer_tolerance(tolerance, a.dtype) if is_int else 0
    name, shared_bytes = _cuda_kernel_name(a.dtype, C, npix * C, nbins)
    index_t = np.int32 if name.endswith("_i32") else np.int64
    device_id = int(a.device.id)
    kernel = _kernels.get_function("pair_stats", name, device_id=device_id, xp=xp)

    with xp.cuda.Device(device_id):
        # One buffer: 7*C sums (uint64, or float64 bits), max bits (C), l0 (C), l0_any (1),
        # then the histograms (2*C*nbins).
        n_sums = 7 * C
        n_counts = 2 * C + 1
        buf = xp.zeros(n_sums + n_counts + 2 * C * nbins, dtype=xp.uint64)
        sums = buf[:n_sums] if is_int else buf[:n_sums].view(xp.float64)
        counts = buf[n_sums : n_sums + n_counts]
        hist = buf[n_sums + n_counts :] if nbins else buf[:1]
        if want_hist and is_int:
            lut = _device_value_bins(xp, device_id, a.dtype.name, lo, hi, bins)
        else:
            lut = xp.zeros(1, dtype=xp.uint32)
        per_sm = 4 if nbins else 8
        grid = max(1, min(-(-npix // _CUDA_BLOCK), _sm_count(xp, device_id) * per_sm))
        kernel(
            (grid,),
            (_CUDA_BLOCK,),
            (
                a,
                b,
                index_t(npix),
                np.int32(C),
                np.float64(tolerance),
                np.uint64(itol),
                np.float64(center),
                np.int32(nbins),
                np.float64(lo),
                np.float64(hi),
                lut,
                sums,
                counts,
                hist,
            ),
            shared_mem=shared_bytes,
        )
        host = _backend.to_host(buf)  # sync: the only transfer
    return _decode_cuda_buffer(
        host, C=C, nbins=nbins, npix=npix, is_int=is_int, center=center, hist_range=hist_range
    )


def _decode_cuda_buffer(host, *, C, nbins, npix, is_int, center, hist_range):
    """PairSums from the uint64 buffer the kernel filled (layout in kernels/pair_stats.cu)."""
    n_sums = 7 * C
    n_counts = 2 * C + 1
    raw_sums = host[:n_sums]
    raw_counts = host[n_sums : n_sums + n_counts]
    h = host[n_sums + n_counts :].astype(np.int64).reshape(2, C, nbins) if nbins else None
    mx_bits = raw_counts[:C]
    l0 = raw_counts[C : 2 * C].astype(np.int64)
    l0_any = int(raw_counts[2 * C])
    order = (_L1, _SSE, _SA, _SB, _SAA, _SBB, _SAB)  # the kernel's order of the 7 sums
    if is_int:
        s = raw_sums.astype(np.int64).reshape(C, 7)  # exact: every sum < 2**63
        ints = np.empty((8, C), np.int64)
        for q, k in enumerate(order):
            ints[k] = s[:, q]
        ints[_MAX] = mx_bits.astype(np.int64)
        return _finish_integer(npix, C, ints, l0, l0_any, center, h, hist_range)
    s = np.ascontiguousarray(raw_sums).view(np.float64).reshape(C, 7)
    floats = np.empty((8, C), np.float64)
    for q, k in enumerate(order):
        floats[k] = s[:, q]
    floats[_MAX] = np.ascontiguousarray(mx_bits).view(np.float64)
    return _finish_float(npix, floats, l0, l0_any, center, h, hist_range)


@functools.lru_cache(maxsize=None)
def _sm_count(xp, device_id: int) -> int:
    return int(xp.cuda.Device(device_id).attributes["MultiProcessorCount"])
