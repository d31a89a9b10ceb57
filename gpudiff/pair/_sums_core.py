"""What every implementation of the fused pass returns: :class:`PairSums`, and how raw per-channel
sums and histograms become one (exact integers for integer images, float64 otherwise).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from ..errors import ConfigError


#: Element types :func:`pair_sums` accepts.
SUPPORTED_DTYPES = (np.dtype(np.uint8), np.dtype(np.uint16), np.dtype(np.float32), np.dtype(np.float64))
_MAX_CHANNELS = 4
_MAX_BINS = 65536
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
