"""Translation registration: phase correlation, subpixel refinement, masked correlation.

What a found shift leaves in common of the two images is :mod:`._overlap`'s.

Written once against the array namespace ``xp`` (NumPy or CuPy): the arrays given decide where the
work runs, FFTs go through :func:`gpudiff.backend.fft` and only a few scalars come back to the host.

Shift convention (scikit-image's ``phase_cross_correlation``): the returned ``(dy, dx)`` registers
``moving`` onto ``reference``, i.e. ``reference[r, c]`` corresponds to ``moving[r - dy, c - dx]``.
If ``moving = np.roll(reference, (3, -5), axis=(0, 1))`` the shift is ``(-3, 5)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..backend import fft, fft_kwargs, get_namespace, to_host
from ..errors import ConfigError, InputError

__all__ = ["AUTO_SIGNIFICANCE", "Alignment", "alignment_problem", "phase_cross_correlation"]

#: Guard of the cross-power normalisation |F G*| (float32 eps times 100, as scikit-image uses).
_PHASE_EPS = 100 * float(np.finfo(np.float32).eps)

#: Default floor of ``Alignment.significance`` for phase correlation (``--min-confidence auto``).
#: Measured 2026-12-06 (tests/oracle/pair/test_align_confidence.py re-measures it) on real images from
#: ../shared/data: 136 registrable pairs (crops of 18 scikit-image photographs shifted by 3 to 141 px,
#: with and without sigma-10 noise; consecutive cdnet and trackpy frames; rubberwhale, basketball,
#: Suzanne, aloe and motorcycle stereo; the scikit-image registration pairs) gave significance
#: 6.6 to 321 (5th percentile 11.7); 69 unregistrable pairs (leuven's illumination change, graf's
#: homography, box / box_in_scene, 66 pairs of unrelated photographs) gave 1.5 to 4.6. The floor
#: sits at the geometric middle of that gap. It is a guard, not a proof: unrelated images with large
#: flat areas (sky, a white or black surround) can pass; of 120 unrelated full-size photograph pairs
#: 5 did (4 of them at shift (0, 0), which is harmless), of 120 crops of 160 px 6 did.
AUTO_SIGNIFICANCE = 5.5


@dataclass(frozen=True)
class Alignment:
    """The translation that registers ``moving`` onto ``reference``.

    Attributes
    ----------
    shift : tuple of float
        ``(dy, dx)`` in pixels: ``reference[r, c]`` corresponds to ``moving[r - dy, c - dx]``
        (scikit-image's ``phase_cross_correlation`` convention). Whole numbers unless subpixel
        refinement was asked for.
    confidence : float
        Strength of the match in [0, 1]: near 1 for a real match, near 0 for unrelated images.
        For ``method='phase'`` it is the root of the energy of the normalised phase-correlation
        surface within +-1 pixel (3x3, circular) of the integer peak,
        ``sqrt(sum |r(p + e)|**2, e in {-1,0,1}**2)``. By Parseval this is at most 1; it is exactly 1
        for a circular integer shift, about 0.85 for a circular half-pixel shift in both axes (so
        it does not depend on ``upsample_factor``), typically 0.7-0.95 for crops of natural
        images shifted by a few percent, and about ``3 / sqrt(H * W)`` for independent noise
        (so it says little for images smaller than about 16x16, where 3x3 is most of the surface).
        For ``method='masked_ncc'`` it is the masked normalised cross-correlation (Pearson
        coefficient over the overlap of valid pixels) at the chosen shift, clipped to [0, 1].
        0 when nothing can be matched (constant images, 1x1 images, empty masks).
    method : {'phase', 'masked_ncc'}
        Phase correlation, or Padfield's masked normalised cross-correlation (masks given).
    upsample_factor : int
        The precision of ``shift`` is ``1 / upsample_factor`` pixel (1: integer shift; the masked
        method is always 1).
    significance : float
        ``method='phase'``: the confidence in units of its expected value for unrelated images,
        ``confidence * sqrt(H * W) / 3``: about 1-3 for images that do not match, whatever their
        size, and above :data:`AUTO_SIGNIFICANCE` (5.5) for real matches (the measured
        distributions are under that constant). NaN for ``masked_ncc`` (its best correlation over
        many overlaps has no such scale: unrelated images reach r = 0.77 on small overlaps).
    """

    shift: tuple[float, float]
    confidence: float
    method: str = "phase"
    upsample_factor: int = 1
    significance: float = math.nan

    @property
    def is_integer(self) -> bool:
        """True when both components of ``shift`` are whole numbers."""
        return all(float(s).is_integer() for s in self.shift)

    def to_dict(self) -> dict:
        return {
            "shift_y": float(self.shift[0]),
            "shift_x": float(self.shift[1]),
            "confidence": float(self.confidence),
            "method": self.method,
            "upsample_factor": int(self.upsample_factor),
            "significance": float(self.significance),
        }


def alignment_problem(alignment: Alignment, shape, *, min_confidence="auto", max_shift: float = 0.25) -> str | None:
    """Why ``alignment`` is not to be trusted, or None when it is plausible.

    ``min_confidence``: ``'auto'`` (phase correlation: ``significance >= AUTO_SIGNIFICANCE``;
    masked NCC: no floor) or a number in [0, 1] that ``confidence`` must reach. ``max_shift``: the
    largest plausible ``|dy|``, ``|dx|``, as a fraction of the height / width when below 1, else in
    pixels. ``shape`` is the (H, W) the shift was estimated on.
    """
    H, W = int(shape[0]), int(shape[1])
    dy, dx = (float(v) for v in alignment.shift)
    if min_confidence == "auto":
        z = alignment.significance
        if alignment.method == "phase" and not (z >= AUTO_SIGNIFICANCE):
            return (
                f"confidence {alignment.confidence:.3g} is what unrelated images give at {H}x{W} "
                f"(significance {z:.2g} < {AUTO_SIGNIFICANCE:g})"
            )
    elif not (alignment.confidence >= float(min_confidence)):
        return f"confidence {alignment.confidence:.3g} < --min-confidence {float(min_confidence):g}"
    lim_y, lim_x = (max_shift * H, max_shift * W) if max_shift < 1 else (max_shift, max_shift)
    if abs(dy) > lim_y or abs(dx) > lim_x:
        return f"shift ({dy:g}, {dx:g}) px is past --max-shift {max_shift:g} ({lim_y:g}, {lim_x:g} px)"
    return None


# ----------------------------------------------------------------------------------------------
# validation


def _check_image(name: str, a, xp):
    a = xp.asarray(a)
    if a.ndim != 2:
        raise InputError(
            f"{name} has shape {tuple(a.shape)}: phase_cross_correlation needs a 2-D (grey) image; "
            "convert colour images to grey first (e.g. gpudiff.pair)"
        )
    if a.size == 0:
        raise InputError(f"{name} is empty (shape {tuple(a.shape)}): give an image with at least one pixel")
    if a.dtype.kind not in "biuf":
        raise InputError(
            f"{name} has dtype {a.dtype}: give a real image (bool, integer or floating point)"
        )
    return a


def _check_mask(name: str, mask, shape, xp):
    mask = xp.asarray(mask)
    if tuple(mask.shape) != tuple(shape):
        raise InputError(
            f"{name} has shape {tuple(mask.shape)} but its image has shape {tuple(shape)}: "
            "a mask must have its image's shape (True = valid pixel)"
        )
    return mask if mask.dtype == bool else mask.astype(bool)


def _check_upsample(upsample_factor) -> int:
    try:
        ok = int(upsample_factor) == upsample_factor and upsample_factor >= 1
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ConfigError(f"upsample_factor={upsample_factor!r} must be a whole number >= 1")
    return int(upsample_factor)


def _check_overlap_ratio(overlap_ratio) -> float:
    try:
        ok = 0.0 <= float(overlap_ratio) <= 1.0
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ConfigError(f"overlap_ratio={overlap_ratio!r} must be a number from 0 to 1")
    return float(overlap_ratio)


def _not_finite(name: str) -> InputError:
    return InputError(
        f"{name} contains NaN or infinite values: mark them invalid with "
        "reference_mask/moving_mask (True = valid) or replace them"
    )


# ----------------------------------------------------------------------------------------------
# phase correlation


def phase_cross_correlation(
    reference,
    moving,
    *,
    upsample_factor: int = 1,
    reference_mask=None,
    moving_mask=None,
    overlap_ratio: float = 0.3,
) -> Alignment:
    """Estimate the translation that registers ``moving`` onto ``reference``.

    Parameters
    ----------
    reference : (H, W) array
        Reference image (NumPy or CuPy; any real dtype).
    moving : (H, W) array
        Image to register, same shape as ``reference``.
    upsample_factor : int, optional
        Refine the shift to ``1 / upsample_factor`` pixel (1: integer shift). Ignored (the result
        says ``upsample_factor=1``) when masks are given.
    reference_mask, moving_mask : (H, W) bool array, optional
        True on valid pixels. Giving either selects masked normalised cross-correlation; a mask
        left out is taken equal to the other one (as scikit-image does).
    overlap_ratio : float, optional
        Masked mode only: shifts whose number of overlapping valid pixels is below
        ``overlap_ratio`` times the largest such number are discarded.

    Returns
    -------
    Alignment
        ``shift`` ``(dy, dx)``: ``reference[r, c]`` corresponds to ``moving[r - dy, c - dx]``;
        ``confidence`` in [0, 1] (see :class:`Alignment`); ``method``; ``upsample_factor``.

    Raises
    ------
    InputError
        Images not 2-D, of different shapes, complex, or with NaN/inf on valid pixels; a mask
        whose shape differs from its image's.
    ConfigError
        ``upsample_factor`` not a whole number >= 1, ``overlap_ratio`` outside [0, 1].

    Notes
    -----
    **Integer shift** (phase correlation, Kuglin & Hines 1975). With :math:`F`, :math:`G` the 2-D
    real FFTs of the reference and moving images (computed in float32/complex64),

    .. math:: R = \\frac{F\\,G^*}{\\max(|F\\,G^*|, \\epsilon)}, \\qquad r = \\mathcal{F}^{-1}[R],

    and the shift is the position of :math:`\\max |r|`, with positions past half the size wrapped
    to negative shifts (as scikit-image). :math:`\\epsilon = 100\\,\\epsilon_{float32}`. Along an
    axis of length 1 the shift is 0.

    **Subpixel** (``upsample_factor = u > 1``): the matrix-multiply DFT of Guizar-Sicairos,
    Thurman & Fienup evaluates the band-limited interpolant of :math:`r`,

    .. math:: r(y, x) = \\frac{1}{HW} \\sum_{k_y, k_x} R[k_y, k_x]\\,
              e^{2\\pi i (k_y y / H + k_x x / W)},

    only on a :math:`\\lceil 1.5u \\rceil^2` grid of step :math:`1/u` centred on the integer peak,
    as :math:`K_y R K_x^T` with :math:`K_y` (:math:`\\lceil 1.5u \\rceil \\times H`) and
    :math:`K_x` (:math:`\\lceil 1.5u \\rceil \\times (W/2+1)`) complex exponentials; the half
    spectrum of the real FFT is used with the Hermitian weights (1 for the zero and Nyquist
    columns, 2 otherwise) and the real part taken. The Nyquist bins are split evenly between
    :math:`\\pm N/2` (a cosine), which makes the interpolant exactly real; at whole-pixel positions it
    equals :math:`r`. Cost :math:`O(u\\,HW)`, no upsampled array is formed.

    **Masked** (Padfield 2012): with :math:`f, g` the images set to 0 outside their masks
    :math:`m_f, m_g`, and for each shift :math:`d` the correlations over the overlap
    (:math:`\\star` denotes :math:`(a \\star b)(d) = \\sum_x a(x)\\,b(x-d)`, computed by zero-padded
    float64 real FFTs),

    .. math:: n = m_f \\star m_g,\\; S_f = f \\star m_g,\\; S_g = m_f \\star g,\\;
              \\mathrm{NCC} = \\frac{f \\star g - S_f S_g / n}
              {\\sqrt{(f^2 \\star m_g - S_f^2/n)(m_f \\star g^2 - S_g^2/n)}},

    set to 0 where the denominator is below :math:`10^3\\,\\epsilon` times its maximum or where
    :math:`n < \\mathrm{overlap\\_ratio} \\cdot \\max n`; the shift maximises NCC (the first maximum
    when several are equal; integer only). Each image's mean over its valid pixels is removed first
    (NCC is unchanged; the sums are better conditioned). Images of different shapes are not
    supported (scikit-image centres them; :func:`register_overlap` anchors at the top-left).

    Constant images and 1x1 images give shift (0, 0) and confidence 0.

    References
    ----------
    .. [1] C. D. Kuglin, D. C. Hines, "The phase correlation image alignment method", Proc. IEEE
           Int. Conf. on Cybernetics and Society, pp. 163-165, 1975.
    .. [2] M. Guizar-Sicairos, S. T. Thurman, J. R. Fienup, "Efficient subpixel image registration
           algorithms", Optics Letters 33(2), 156-158, 2008. :DOI:`10.1364/OL.33.000156`
    .. [3] D. Padfield, "Masked object registration in the Fourier domain", IEEE Transactions on
           Image Processing 21(5), 2706-2718, 2012. :DOI:`10.1109/TIP.2011.2181402`
    """
    xp = get_namespace(reference, moving, reference_mask, moving_mask)
    reference = _check_image("reference", reference, xp)
    moving = _check_image("moving", moving, xp)
    if reference.shape != moving.shape:
        raise InputError(
            f"reference has shape {tuple(reference.shape)} but moving has shape "
            f"{tuple(moving.shape)}: crop or resize them to one shape first"
        )
    upsample_factor = _check_upsample(upsample_factor)
    overlap_ratio = _check_overlap_ratio(overlap_ratio)

    if reference_mask is not None or moving_mask is not None:
        if reference_mask is None:
            reference_mask = moving_mask
        if moving_mask is None:
            moving_mask = reference_mask
        reference_mask = _check_mask("reference_mask", reference_mask, reference.shape, xp)
        moving_mask = _check_mask("moving_mask", moving_mask, moving.shape, xp)
        return _masked_ncc(xp, reference, moving, reference_mask, moving_mask, overlap_ratio)
    return _phase(xp, reference, moving, upsample_factor)


def _phase(xp, reference, moving, upsample_factor: int) -> Alignment:
    H, W = reference.shape
    none = Alignment((0.0, 0.0), 0.0, "phase", upsample_factor, 0.0)

    # Range of both images in one transfer: constant images (incl. 1x1) have nothing to match,
    # and NaN/inf propagate into min/max, so this also finds non-finite input.
    lo_hi = xp.stack([reference.min(), reference.max(), moving.min(), moving.max()])
    lo_hi = [float(v) for v in to_host(lo_hi)]  # sync
    for name, (lo, hi) in (("reference", lo_hi[:2]), ("moving", lo_hi[2:])):
        if not (math.isfinite(lo) and math.isfinite(hi)):
            raise _not_finite(name)
    if lo_hi[0] == lo_hi[1] or lo_hi[2] == lo_hi[3]:
        return none

    f = fft(xp)
    kw = fft_kwargs(xp)
    # rfft2 of float32 input stays complex64; integer input would otherwise become float64.
    F = f.rfft2(reference.astype(xp.float32, copy=False), **kw)
    G = f.rfft2(moving.astype(xp.float32, copy=False), **kw)
    # Normalised cross-power spectrum R = F G* / max(|F G*|, eps), in place in F.
    xp.conjugate(G, out=G)
    F *= G
    del G
    scale = xp.abs(F)
    xp.maximum(scale, _PHASE_EPS, out=scale)
    xp.reciprocal(scale, out=scale)
    F *= scale  # complex times real: cheaper than a complex division
    del scale
    R = F

    cc = f.irfft2(R, s=(H, W), **kw)
    xp.abs(cc, out=cc)
    peak = int(xp.argmax(cc))  # sync
    py, px = divmod(peak, W)

    # Confidence: root energy of |r| on the 3x3 (circular, deduplicated) neighbourhood of the peak.
    rows = sorted({(py + e) % H for e in (-1, 0, 1)})
    cols = sorted({(px + e) % W for e in (-1, 0, 1)})
    hood = cc[xp.asarray(rows)[:, None], xp.asarray(cols)[None, :]]
    confidence = min(1.0, math.sqrt(float((hood.astype(xp.float64) ** 2).sum())))  # sync
    del cc

    dy = float(py - H if py > H // 2 else py)
    dx = float(px - W if px > W // 2 else px)

    if upsample_factor > 1:
        dy, dx = _refine(xp, R, (H, W), (dy, dx), upsample_factor)

    # Along an axis of length 1 a shift has no meaning.
    if H == 1:
        dy = 0.0
    if W == 1:
        dx = 0.0
    significance = confidence * math.sqrt(H * W) / 3.0
    return Alignment((dy + 0.0, dx + 0.0), confidence, "phase", upsample_factor, significance)


def _dft_kernel(n: int, positions: np.ndarray, half: bool) -> np.ndarray:
    """``exp(2 pi i k p / n)`` for the output positions ``p`` and the FFT frequencies ``k``.

    ``half``: the frequencies of a real FFT (0 .. n//2) with the Hermitian weights (2 for the
    columns that stand for a conjugate pair). The Nyquist bin (even ``n``) becomes ``cos(pi p)``,
    the even split between +n/2 and -n/2. Built in float64 on the host (phases reduced modulo 1
    before the exponential), returned as complex64.
    """
    if half:
        k = np.arange(n // 2 + 1, dtype=np.float64)
    else:
        k = np.fft.fftfreq(n, 1.0 / n)
    phase = np.outer(positions, k) / n
    phase -= np.floor(phase)
    kernel = np.exp(2j * np.pi * phase)
    if n % 2 == 0 and n > 1:
        nyq = n // 2
        kernel[:, nyq] = np.cos(np.pi * positions)
    if half:
        weights = np.full(k.shape, 2.0)
        weights[0] = 1.0
        if n % 2 == 0:
            weights[-1] = 1.0
        kernel *= weights
    return kernel.astype(np.complex64)


def _refine(xp, R, shape, shift, upsample_factor: int) -> tuple[float, float]:
    """Matrix-multiply DFT of the cross-power spectrum on a 1.5-pixel grid around ``shift``."""
    H, W = shape
    size = math.ceil(1.5 * upsample_factor)
    centre = size // 2
    offsets = (np.arange(size, dtype=np.float64) - centre) / upsample_factor
    ky = xp.asarray(_dft_kernel(H, shift[0] + offsets, half=False))  # (size, H)
    kx = xp.asarray(_dft_kernel(W, shift[1] + offsets, half=True))  # (size, W//2+1)
    region = xp.abs((ky @ (R @ kx.T)).real)  # (size, size); 1/(HW) omitted (argmax only)
    peak = int(xp.argmax(region))  # sync
    iy, ix = divmod(peak, size)
    return (
        shift[0] + (iy - centre) / upsample_factor,
        shift[1] + (ix - centre) / upsample_factor,
    )


# ----------------------------------------------------------------------------------------------
# masked normalised cross-correlation


def _masked_ncc(xp, reference, moving, reference_mask, moving_mask, overlap_ratio) -> Alignment:
    """The whole-pixel shift at the highest masked NCC (:func:`_masked_ncc_map`), when it is > 0."""
    H, W = reference.shape
    none = Alignment((0.0, 0.0), 0.0, "masked_ncc", 1)
    counts = xp.stack([reference_mask.sum(), moving_mask.sum()])
    n_ref, n_mov = (int(v) for v in to_host(counts))  # sync
    if n_ref == 0 or n_mov == 0:
        return none

    ncc = _masked_ncc_map(xp, reference, moving, reference_mask, moving_mask, (n_ref, n_mov), overlap_ratio)
    s = ncc.shape  # the zero-padded FFT shape: lag d sits at d mod s
    peak = int(xp.argmax(ncc))  # sync
    py, px = divmod(peak, s[1])
    best = float(ncc[py, px])  # sync
    if not best > 0.0:
        return none
    dy = py - s[0] if py > s[0] // 2 else py
    dx = px - s[1] if px > s[1] // 2 else px
    if H == 1:
        dy = 0
    if W == 1:
        dx = 0
    return Alignment((float(dy), float(dx)), min(1.0, best), "masked_ncc", 1)


def _masked_ncc_map(xp, reference, moving, reference_mask, moving_mask, counts, overlap_ratio):
    """Masked NCC of the pair at every lag, float64 of the zero-padded FFT shape (lag d at d mod shape).

    Padfield's formula: over the overlap of the two masks at each lag, from six FFT correlations (the
    overlap's size, both images' sums and sums of squares, the cross sum), with the images centred on
    their masked means; 0 where the overlap is smaller than ``overlap_ratio`` of the largest or either
    side is flat there. D. Padfield, "Masked object registration in the Fourier domain", IEEE Trans.
    Image Process. 21(5), 2012.
    """
    H, W = reference.shape
    n_ref, n_mov = counts
    f = fft(xp)
    kw = fft_kwargs(xp)
    next_fast_len = getattr(f, "next_fast_len", None)
    if next_fast_len is None:  # pragma: no cover - older cupyx
        from scipy.fft import next_fast_len  # noqa: PLC0415
    # Zero-padded to at least 2n - 1 per axis, so no shift in (-n, n) wraps onto another.
    s = (next_fast_len(2 * H - 1), next_fast_len(2 * W - 1, real=True))

    fimg = _centred_in_mask(xp, reference, reference_mask, n_ref, "reference")
    gimg = _centred_in_mask(xp, moving, moving_mask, n_mov, "moving")

    def rfft(a):
        return f.rfft2(a, s=s, **kw)

    def corr(A, Bc):
        """(a * b)(d) = sum_x a(x) b(x - d) from A = FFT(a), Bc = conj(FFT(b)); lag d at d mod s."""
        return f.irfft2(A * Bc, s=s, **kw)

    # reference side: spectra; moving side: conjugated spectra
    Fm = rfft(reference_mask.astype(xp.float64))
    Ff = rfft(fimg)
    Gm = xp.conjugate(rfft(moving_mask.astype(xp.float64)))
    Gg = xp.conjugate(rfft(gimg))

    n = xp.rint(corr(Fm, Gm))
    Sf = corr(Ff, Gm)
    Sg = corr(Fm, Gg)
    num = corr(Ff, Gg)
    del Ff, Gg
    fimg *= fimg
    gimg *= gimg
    Sff = corr(rfft(fimg), Gm)
    Sgg = corr(Fm, xp.conjugate(rfft(gimg)))
    del Fm, Gm, fimg, gimg

    eps = float(np.finfo(np.float64).eps)
    n_safe = xp.maximum(n, eps)
    num -= Sf * Sg / n_safe
    Sff -= Sf * Sf / n_safe
    Sgg -= Sg * Sg / n_safe
    del Sf, Sg
    xp.maximum(Sff, 0.0, out=Sff)
    xp.maximum(Sgg, 0.0, out=Sgg)
    den = xp.sqrt(Sff * Sgg)
    del Sff, Sgg

    tol = 1e3 * eps * den.max()
    valid = (den > tol) & (n >= xp.maximum(overlap_ratio * n.max(), 1.0))
    ncc = xp.where(valid, num / xp.where(valid, den, 1.0), 0.0)
    xp.clip(ncc, -1.0, 1.0, out=ncc)
    return ncc


def _centred_in_mask(xp, img, mask, count, name):
    """``img`` in float64 minus its mean over ``mask`` (``count`` pixels), zero outside the mask."""
    img = xp.where(mask, img.astype(xp.float64), 0.0)
    mean = img.sum() / count
    if not bool(xp.isfinite(mean)):  # sync
        raise _not_finite(name)
    img -= mean
    img *= mask
    return img
