"""Structural similarity (SSIM), Gaussian-weighted as in Wang et al. 2004.

Two implementations compute the same numbers:

- ``'reference'``: written once against the array namespace ``xp`` (NumPy or CuPy): the five local
  moments by separable Gaussian correlation (``ndimage.correlate1d``) in float32, then the SSIM formula.
  It also gives the full per-pixel map (:func:`ssim_map`).
- ``'numba'`` (CPU, when numba imports): one fused, parallel pass. Each band of rows keeps a ring of the
  last ``2r + 1`` horizontally filtered rows of the five moments; every new input row is filtered
  horizontally into the ring, the ring is filtered vertically into one output row, the SSIM formula is
  applied and the row summed, all in float64 and without a full-size temporary. Only the interior
  (the pixels whose window lies inside the image, the only ones averaged) is ever computed, so no
  border handling is needed.
"""

from __future__ import annotations

import math
import threading

import numpy as np

from .. import backend as _backend
from ..errors import ConfigError, InputError

from .._numba_cache import cached_njit, prepare_cache_dir

prepare_cache_dir()
try:  # optional: the fused CPU path
    import numba
except ImportError:  # pragma: no cover - exercised where numba is absent
    numba = None

__all__ = ["structural_similarity", "ssim_map", "gaussian_window", "IMPLS", "numba_available"]

#: Implementations of :func:`structural_similarity`.
IMPLS = ("auto", "reference", "numba")

#: The Gaussian window is truncated at this many sigmas (scikit-image's choice: 11 taps for sigma 1.5).
TRUNCATE = 3.5


def numba_available() -> bool:
    """True when the fused numba CPU path can be used."""
    return numba is not None


def gaussian_window(sigma: float) -> np.ndarray:
    """The normalised 1-D Gaussian window of SSIM, float64, ``2 r + 1`` taps.

    Notes
    -----
    :math:`r = \\lfloor 3.5\\sigma + \\tfrac12 \\rfloor` and :math:`w_k \\propto \\exp(-k^2 / 2\\sigma^2)`
    for :math:`|k| \\le r`, normalised to sum 1: the kernel of ``scipy.ndimage.gaussian_filter`` with
    ``truncate=3.5``, as scikit-image's SSIM uses (11 taps for :math:`\\sigma = 1.5`).
    """
    radius = int(TRUNCATE * float(sigma) + 0.5)
    k = np.arange(-radius, radius + 1, dtype=np.float64)
    w = np.exp(-0.5 * (k / float(sigma)) ** 2)
    return w / w.sum()


# --------------------------------------------------------------------------------------------------
# numba: fused CPU path

if numba is not None:
    # reassociation lets the row sums and the 11-tap dot products vectorise; float64 keeps them exact
    # to ~1e-15, far below the 1e-6 agreement asked of the two paths.
    _FASTMATH = {"reassoc", "contract", "nsz"}

    @cached_njit(fastmath=_FASTMATH, inline="always")
    def _hpass(src, out, w, r):  # pragma: no cover - compiled
        """out[j] = sum_k w[k] src[j + k]: the valid part of the correlation of a row."""
        n = out.shape[0]
        if r == 5:  # the SSIM window (sigma 1.5): unrolled, symmetric taps
            w0, w1, w2, w3, w4, w5 = w[0], w[1], w[2], w[3], w[4], w[5]
            for j in range(n):
                out[j] = (
                    w5 * src[j + 5]
                    + w0 * (src[j] + src[j + 10])
                    + w1 * (src[j + 1] + src[j + 9])
                    + w2 * (src[j + 2] + src[j + 8])
                    + w3 * (src[j + 3] + src[j + 7])
                    + w4 * (src[j + 4] + src[j + 6])
                )
            return
        c = w[r]
        for j in range(n):
            out[j] = c * src[j + r]
        for k in range(r):
            wk = w[k]
            for j in range(n):
                out[j] += wk * (src[j + k] + src[j + 2 * r - k])

    @cached_njit(fastmath=_FASTMATH, inline="always")
    def _vpass(ring, slots, m, out, w, r):  # pragma: no cover - compiled
        """out[j] = sum_k w[k] ring[slots[k], m, j]: the vertical correlation of moment m."""
        n = out.shape[0]
        if r == 5:
            a0 = ring[slots[0], m]
            a1 = ring[slots[1], m]
            a2 = ring[slots[2], m]
            a3 = ring[slots[3], m]
            a4 = ring[slots[4], m]
            a5 = ring[slots[5], m]
            a6 = ring[slots[6], m]
            a7 = ring[slots[7], m]
            a8 = ring[slots[8], m]
            a9 = ring[slots[9], m]
            a10 = ring[slots[10], m]
            w0, w1, w2, w3, w4, w5 = w[0], w[1], w[2], w[3], w[4], w[5]
            for j in range(n):
                out[j] = (
                    w5 * a5[j]
                    + w0 * (a0[j] + a10[j])
                    + w1 * (a1[j] + a9[j])
                    + w2 * (a2[j] + a8[j])
                    + w3 * (a3[j] + a7[j])
                    + w4 * (a4[j] + a6[j])
                )
            return
        c = w[r]
        mid = ring[slots[r], m]
        for j in range(n):
            out[j] = c * mid[j]
        for k in range(r):
            wk = w[k]
            lo = ring[slots[k], m]
            hi = ring[slots[2 * r - k], m]
            for j in range(n):
                out[j] += wk * (lo[j] + hi[j])

    @cached_njit(fastmath=_FASTMATH, inline="always")
    def _ssim_row_sum(v, offset, c1, c2):  # pragma: no cover - compiled
        """Sum over one output row of the SSIM formula from the five filtered (centred) moments."""
        acc = 0.0
        for j in range(v.shape[1]):
            mx = v[0, j]
            my = v[1, j]
            sxx = v[2, j] - mx * mx
            syy = v[3, j] - my * my
            sxy = v[4, j] - mx * my
            ux = mx + offset
            uy = my + offset
            acc += ((2.0 * ux * uy + c1) * (2.0 * sxy + c2)) / ((ux * ux + uy * uy + c1) * (sxx + syy + c2))
        return acc

    @cached_njit(fastmath=_FASTMATH, nogil=True)
    def _ssim_band(x, y, w, offset, c1, c2, row_sums, i0, i1):  # pragma: no cover - compiled
        """row_sums[i] for output rows i0 <= i < i1, with a ring of horizontally filtered rows."""
        height, width = x.shape
        win = w.shape[0]
        r = win // 2
        out_w = width - 2 * r
        if i0 >= i1:
            return
        ring = np.empty((win, 5, out_w), dtype=np.float64)
        src = np.empty((5, width), dtype=np.float64)
        v = np.empty((5, out_w), dtype=np.float64)
        slots = np.empty(win, dtype=np.int64)
        for row in range(i0, i1 + 2 * r):
            for j in range(width):
                p = np.float64(x[row, j]) - offset
                q = np.float64(y[row, j]) - offset
                src[0, j] = p
                src[1, j] = q
                src[2, j] = p * p
                src[3, j] = q * q
                src[4, j] = p * q
            slot = row % win
            for m in range(5):
                _hpass(src[m], ring[slot, m], w, r)
            if row >= i0 + 2 * r:
                i = row - 2 * r  # output row, centred on input row i + r
                for k in range(win):
                    slots[k] = (i + k) % win
                for m in range(5):
                    _vpass(ring, slots, m, v[m], w, r)
                row_sums[i] = _ssim_row_sum(v, offset, c1, c2)

    @cached_njit(parallel=True, fastmath=_FASTMATH)
    def _ssim_row_sums(x, y, w, offset, c1, c2, row_sums, nbands):  # pragma: no cover - compiled
        """row_sums[i] = sum of SSIM over interior output row i; bands of rows run in parallel."""
        out_h = x.shape[0] - 2 * (w.shape[0] // 2)
        per = (out_h + nbands - 1) // nbands
        for band in numba.prange(nbands):
            _ssim_band(x, y, w, offset, c1, c2, row_sums, band * per, min(out_h, band * per + per))


# numba's default 'workqueue' threading layer must not be entered from two threads at once (Dask runs
# tasks on threads); each call already uses every core, so calls are serialised.
_NUMBA_LOCK = threading.Lock()


def _offset(x, xp):
    """A value near the image's mean (from a subsample), subtracted before forming the moments."""
    step_h = max(1, x.shape[0] // 64)
    step_w = max(1, x.shape[1] // 64)
    return xp.mean(x[::step_h, ::step_w], dtype=xp.float64)


def _interior_mean_numba(x, y, w, c1, c2) -> float:
    if x.dtype == np.bool_:
        x = x.view(np.uint8)
    if y.dtype == np.bool_:
        y = y.view(np.uint8)
    r = w.shape[0] // 2
    out_h = x.shape[0] - 2 * r
    out_w = x.shape[1] - 2 * r
    row_sums = np.zeros(out_h, dtype=np.float64)
    nbands = max(1, min(numba.get_num_threads() * 2, out_h // 32))
    offset = float(_offset(x, np))
    from ._sums_numba import running_serial  # noqa: PLC0415

    if running_serial():  # an already-parallel caller (a Dask thread): this thread only, no lock
        _ssim_band(x, y, w, offset, float(c1), float(c2), row_sums, 0, out_h)
    else:
        with _NUMBA_LOCK:
            _ssim_row_sums(x, y, w, offset, float(c1), float(c2), row_sums, nbands)
    # the row sums, added in order, do not depend on the number of bands or threads
    return float(row_sums.sum()) / (out_h * out_w)


# --------------------------------------------------------------------------------------------------
# reference: xp-generic


def _ssim_map_2d(x, y, w, c1, c2, xp):
    """The full SSIM map of 2-D ``x``, ``y`` (float32, border reflected as scikit-image does)."""
    ndi = _backend.ndimage(xp)
    f32 = xp.float32
    weights = xp.asarray(w, dtype=xp.float64)
    # Each image gets its own offset (variances and the covariance do not change under separate
    # shifts), so float32 keeps its digits when the two means are far apart.
    off_x = _offset(x, xp).astype(f32)  # stays on the device
    off_y = _offset(y, xp).astype(f32)

    def filt(z):
        z = ndi.correlate1d(z, weights, axis=0, mode="reflect", output=f32)
        return ndi.correlate1d(z, weights, axis=1, mode="reflect", output=f32)

    a = x.astype(f32) - off_x
    b = y.astype(f32) - off_y
    mx = filt(a)
    my = filt(b)
    sxx = filt(a * a) - mx * mx
    syy = filt(b * b) - my * my
    sxy = filt(a * b) - mx * my
    del a, b
    ux = mx + off_x
    uy = my + off_y
    c1 = f32(c1)
    c2 = f32(c2)
    return ((2 * ux * uy + c1) * (2 * sxy + c2)) / ((ux * ux + uy * uy + c1) * (sxx + syy + c2))


def _interior_mean_reference(x, y, w, c1, c2, xp):
    r = w.shape[0] // 2
    s = _ssim_map_2d(x, y, w, c1, c2, xp)
    return xp.mean(s[r : x.shape[0] - r, r : x.shape[1] - r], dtype=xp.float64)


def _global_ssim(x, y, c1, c2, xp):
    """SSIM of one window covering the whole of 2-D ``x``, ``y`` (uniform weights, float64)."""
    a = x.astype(xp.float64)
    b = y.astype(xp.float64)
    mx = a.mean()
    my = b.mean()
    vx = xp.mean((a - mx) ** 2)
    vy = xp.mean((b - my) ** 2)
    cxy = xp.mean((a - mx) * (b - my))
    return ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))


# --------------------------------------------------------------------------------------------------
# public API


def _validate(reference, moving, data_range, sigma, k1, k2):
    if tuple(reference.shape) != tuple(moving.shape):
        raise InputError(
            f"SSIM needs images of one shape: {tuple(reference.shape)} vs {tuple(moving.shape)}: "
            "use --shape crop or --shape resize"
        )
    if reference.ndim not in (2, 3):
        raise InputError(
            "SSIM takes (height, width) or (height, width, channels) images, "
            f"not shape {tuple(reference.shape)}"
        )
    if 0 in reference.shape:
        raise InputError(f"SSIM of empty images (shape {tuple(reference.shape)}) is undefined")
    if data_range is None or not (float(data_range) > 0) or not math.isfinite(float(data_range)):
        raise ConfigError(f"SSIM data_range {data_range} must be a finite number > 0 (255 for uint8 images)")
    if not (float(sigma) > 0):
        raise ConfigError(f"SSIM sigma {sigma} must be > 0")
    if not (float(k1) >= 0 and float(k2) >= 0):
        raise ConfigError(f"SSIM constants k1={k1}, k2={k2} must be >= 0")


def _planes(image):
    if image.ndim == 2:
        return [image]
    return [image[..., c] for c in range(image.shape[-1])]


def structural_similarity(
    reference, moving, *, data_range, sigma=1.5, k1=0.01, k2=0.03, impl="auto"
) -> float:
    """Mean structural similarity (SSIM) of two images, Gaussian-weighted.

    Parameters
    ----------
    reference, moving : ndarray, shape (H, W) or (H, W, C)
        NumPy or CuPy arrays of the same shape (any real dtype; they may differ).
    data_range : float
        The dynamic range :math:`L` of the values (255 for uint8, 65535 for uint16, 1 for floats in
        [0, 1]).
    sigma : float
        Standard deviation of the Gaussian window, in pixels.
    k1, k2 : float
        Stabilising constants.
    impl : {'auto', 'reference', 'numba'}
        ``'auto'``: the fused numba path for NumPy arrays when numba imports, else the xp-generic
        reference (always for CuPy arrays).

    Returns
    -------
    float
        Mean SSIM over the interior pixels; for (H, W, C) images the mean over channels of the
        per-channel means. 1.0 for identical images.

    Raises
    ------
    InputError
        Shapes differ, or are not 2-D/3-D, or hold no pixel.
    ConfigError
        ``data_range``, ``sigma``, ``k1``, ``k2`` or ``impl`` out of range; ``impl='numba'`` without
        numba or on CuPy arrays.

    Notes
    -----
    With the local weighted means :math:`\\mu_x, \\mu_y`, variances :math:`\\sigma_x^2, \\sigma_y^2` and
    covariance :math:`\\sigma_{xy}` (population moments, Gaussian weights :math:`w`):

    .. math::

        \\mathrm{SSIM}(x, y) = \\frac{(2\\mu_x\\mu_y + C_1)(2\\sigma_{xy} + C_2)}
                                   {(\\mu_x^2 + \\mu_y^2 + C_1)(\\sigma_x^2 + \\sigma_y^2 + C_2)},
        \\quad C_1 = (k_1 L)^2,\\ C_2 = (k_2 L)^2,

    with :math:`\\mu_x = w * x`, :math:`\\sigma_x^2 = w * x^2 - \\mu_x^2`, :math:`\\sigma_{xy} = w * (xy) -
    \\mu_x\\mu_y`. The window is the separable Gaussian of :func:`gaussian_window` (11 x 11 for
    :math:`\\sigma = 1.5`). As in scikit-image, the mean is taken over the interior only, the pixels at
    least :math:`r` from every border, whose windows lie inside the image; so the result equals
    ``skimage.metrics.structural_similarity(reference, moving, gaussian_weights=True, sigma=sigma,
    use_sample_covariance=False, data_range=data_range)`` (with ``channel_axis=-1`` for colour). The
    moments are formed on values minus a common offset near the image mean (variances are
    shift-invariant), which keeps the float32 reference path accurate for 16-bit data; the mean
    accumulates in float64.

    Images smaller than the window (height or width :math:`< 2r + 1`, where scikit-image raises) have no
    interior: their SSIM is the formula above over a single window covering the whole image with
    uniform weights (the global SSIM). A 1 x 1 image then reduces to the luminance term.

    Reference: Z. Wang, A. C. Bovik, H. R. Sheikh, E. P. Simoncelli, "Image quality assessment: from
    error visibility to structural similarity", IEEE Trans. Image Processing 13(4), 600-612, 2004,
    :doi:`10.1109/TIP.2003.819861`.
    """
    if impl not in IMPLS:
        raise ConfigError(f"SSIM impl {impl!r} is not one of {', '.join(IMPLS)}")
    _validate(reference, moving, data_range, sigma, k1, k2)
    xp = _backend.get_namespace(reference, moving)
    if xp is not np:
        reference = _backend.asarray(reference, xp)
        moving = _backend.asarray(moving, xp)
    if impl == "numba":
        if numba is None:
            raise ConfigError(
                "SSIM impl 'numba' needs numba installed: pip install numba, or use impl='reference'"
            )
        if xp is not np:
            raise ConfigError("SSIM impl 'numba' runs on NumPy arrays: use impl='reference' for CuPy arrays")
    use_numba = xp is np and numba is not None and impl in ("auto", "numba")

    L = float(data_range)
    c1 = (float(k1) * L) ** 2
    c2 = (float(k2) * L) ** 2
    w = gaussian_window(sigma)
    win = w.shape[0]
    height, width = int(reference.shape[0]), int(reference.shape[1])
    values = []
    for x, y in zip(_planes(reference), _planes(moving), strict=True):
        if height < win or width < win:
            values.append(_global_ssim(x, y, c1, c2, xp))
        elif use_numba:
            values.append(_interior_mean_numba(x, y, w, c1, c2))
        else:
            values.append(_interior_mean_reference(x, y, w, c1, c2, xp))
    total = values[0]
    for v in values[1:]:
        total = total + v
    return float(total / len(values))  # sync


def ssim_map(reference, moving, *, data_range, sigma=1.5, k1=0.01, k2=0.03):
    """The per-pixel SSIM map (for heat maps), same shape as the inputs, float32.

    Parameters
    ----------
    reference, moving : ndarray, shape (H, W) or (H, W, C)
        NumPy or CuPy arrays of the same shape.
    data_range, sigma, k1, k2
        As in :func:`structural_similarity`.

    Returns
    -------
    ndarray
        float32 on the inputs' device; channel c of a colour input is the map of channel c.

    Notes
    -----
    The formula of :func:`structural_similarity` at every pixel, with the border reflected
    (``d c b a | a b c d``) as scikit-image's ``full=True`` map. Its interior mean is the
    ``structural_similarity`` value for images at least as large as the window; the border strip of
    width :math:`r` is included here for display but excluded from that mean.
    """
    _validate(reference, moving, data_range, sigma, k1, k2)
    xp = _backend.get_namespace(reference, moving)
    reference = _backend.asarray(reference, xp)
    moving = _backend.asarray(moving, xp)
    L = float(data_range)
    c1 = (float(k1) * L) ** 2
    c2 = (float(k2) * L) ** 2
    w = gaussian_window(sigma)
    maps = [
        _ssim_map_2d(x, y, w, c1, c2, xp) for x, y in zip(_planes(reference), _planes(moving), strict=True)
    ]
    return maps[0] if reference.ndim == 2 else xp.stack(maps, axis=-1)
