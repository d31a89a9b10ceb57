"""The fused pass on the GPU: the host side of ``kernels/pair_stats.cu`` (which kernel, its launch
shape, the output buffer and its decoding). Only reached with CuPy arrays.
"""

from __future__ import annotations

import functools

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
