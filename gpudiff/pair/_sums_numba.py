"""The fused pass compiled for the CPU with numba: a parallel driver over thread slots calling a
cached serial loop over row blocks; SIMD sums per row, thread-private sub-histograms in L1.
Numba is optional: without it ``_numba`` is None and ``auto`` takes the reference.
"""

from __future__ import annotations

import math
import threading

import numpy as np

from ._sums_core import _MAX, _finish_float, _finish_integer, _integer_tolerance, _value_bins


from .._numba_cache import cached_njit, prepare_cache_dir

prepare_cache_dir()
try:  # optional: the package imports and works without it
    import numba as _numba
    from numba import prange as _prange
except ImportError:  # pragma: no cover - exercised by monkeypatching _numba in the tests
    _numba = None
    _prange = range
#: Pixels per row block of the numba implementation. Float partial sums are kept per block, so
#: the result does not depend on the number of threads.
_BLOCK_PIXELS = 1 << 16
#: Bytes of thread-private sub-histograms the numba loop aims to keep in the L1 cache.
_SUBHIST_BYTES = 32 * 1024


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
    _serial = cached_njit(fastmath=False, nogil=True)
    _parallel = cached_njit(parallel=True, fastmath=False, nogil=True)

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
    def _add_channel(sums, counts, blk, c, C, t):
        """Add one channel's row sums ``t`` (l1, sse, max, l0, sa, sb, saa, sbb, sab) to block ``blk``.
        A NaN maximum is not taken (``mx > s[2]`` is False), as in the row loop."""
        s = sums[blk, c]
        s[0] += t[0]
        s[1] += t[1]
        if t[2] > s[2]:
            s[2] = t[2]
        s[3] += t[4]
        s[4] += t[5]
        s[5] += t[6]
        s[6] += t[7]
        s[7] += t[8]
        counts[blk, c] += t[3]
        if C == 1:
            counts[blk, 1] += t[3]

    @_inline
    def _int_row(ra, rb, W, C, itol, sums, counts, blk):
        for c in range(C):
            _add_channel(sums, counts, blk, c, C, _int_channel(ra, rb, c, W, C, itol))
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
            _add_channel(sums, counts, blk, c, C, _float_channel(ra, rb, c, W, C, tol, center))
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
