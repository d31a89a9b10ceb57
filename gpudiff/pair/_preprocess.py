"""Preparing a pair of images for comparison: grey, shape policy, normalisation, blur, edges.

Every function is written once against the array namespace ``xp`` of its inputs (NumPy or CuPy), with
SciPy-like calls going through :func:`gpudiff.backend.ndimage`, so the CPU tests run the GPU's code.

:func:`prepare_pair` chains the steps in the order a :class:`~gpudiff.options.CompareOptions` asks for and
records, beside the two prepared arrays, the value range for histograms and the data range for PSNR/SSIM.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .. import backend as _backend
from ..errors import ConfigError, InputError

__all__ = [
    "to_gray",
    "match_shapes",
    "normalize",
    "normalize_pair",
    "gaussian_blur",
    "edge_magnitude",
    "PreparedPair",
    "prepare_pair",
    "LUMA_BT601",
]

#: ITU-R BT.601 luma weights for R, G, B (as in OpenCV's ``COLOR_RGB2GRAY`` and PIL's ``convert('L')``).
LUMA_BT601 = (0.299, 0.587, 0.114)

_GRAY_MODES = ("gray", "luma")
_SHAPE_POLICIES = ("error", "crop", "resize")
_NORMALIZE_METHODS = ("none", "minmax", "zscore")
_PAIR_NORMALIZE_METHODS = (*_NORMALIZE_METHODS, "histogram")
_EDGE_METHODS = ("sobel", "prewitt")
# Smoothing kernel across the derivative of each edge operator (derivative kernel: [-1, 0, 1]).
_EDGE_SMOOTHING = {"sobel": (1.0, 2.0, 1.0), "prewitt": (1.0, 1.0, 1.0)}

# Integer value scales: (histogram range, data range).
_INT_SCALES = {"uint8": ((0.0, 256.0), 255.0), "uint16": ((0.0, 65536.0), 65535.0)}


def _check_image(image, name="image"):
    if image.ndim not in (2, 3):
        raise InputError(
            f"{name} has shape {tuple(image.shape)}: expected (height, width) or (height, width, channels)"
        )
    if 0 in image.shape:
        raise InputError(f"{name} has shape {tuple(image.shape)}: it holds no pixels")


def to_gray(image, *, mode="gray"):
    """Turn a colour image into a grey one.

    Parameters
    ----------
    image : ndarray, shape (H, W) or (H, W, C)
        NumPy or CuPy array.
    mode : {'gray', 'luma'}
        ``'gray'``: the plain mean of the channels. ``'luma'``: BT.601 luma of the first three channels
        (R, G, B).

    Returns
    -------
    ndarray, shape (H, W)
        ``float32`` for a (H, W, C) input with C > 1. A 2-D input is returned unchanged (dtype kept), and
        so is the single plane of a (H, W, 1) input (a view, dtype kept).

    Raises
    ------
    InputError
        ``mode='luma'`` on an image with 2 channels (luma needs R, G and B).
    ConfigError
        Unknown ``mode``.

    Notes
    -----
    ``'gray'`` is :math:`Y = \\frac{1}{C} \\sum_c I_c`, computed in float32.

    ``'luma'`` is the ITU-R BT.601 luma :math:`Y' = 0.299 R + 0.587 G + 0.114 B` (ITU-R Recommendation
    BT.601-7, 2011), the weights OpenCV's ``cvtColor(..., COLOR_RGB2GRAY)`` and PIL use. scikit-image's
    ``rgb2gray`` uses the Rec. 709 weights (0.2125, 0.7154, 0.0721) instead. A fourth (alpha) channel is
    ignored; readers strip it before this point.

    Both are convex combinations of the channels, so a uint8 image stays within [0, 255].
    """
    if mode not in _GRAY_MODES:
        raise ConfigError(f"grey mode {mode!r} is not one of {', '.join(_GRAY_MODES)}")
    _check_image(image)
    if image.ndim == 2:
        return image
    channels = image.shape[-1]
    if channels == 1:
        return image[..., 0]
    xp = _backend.get_namespace(image)
    if mode == "gray":
        # Channel by channel, in order, then one division: the same float32 operations as
        # ``mean(axis=-1, dtype=float32)``, without its slow reduction over a 3-long strided axis.
        acc = image[..., 0].astype(xp.float32)
        for c in range(1, channels):
            xp.add(acc, image[..., c], out=acc, dtype=xp.float32)  # the float32 loop, as mean(dtype=)
        acc /= xp.float32(channels)
        return acc
    if channels < 3:
        raise InputError(
            f"luma needs red, green and blue channels, the image has {channels}: use --color gray"
        )
    wr, wg, wb = (xp.float32(w) for w in LUMA_BT601)
    f32 = xp.float32
    return wr * image[..., 0].astype(f32) + wg * image[..., 1].astype(f32) + wb * image[..., 2].astype(f32)


def _resize_axis(a, out_len: int, axis: int, xp):
    """Linear interpolation of float32 ``a`` along ``axis`` to ``out_len`` samples (pixel centres)."""
    n = a.shape[axis]
    if n == out_len:
        return a
    src = (xp.arange(out_len, dtype=xp.float64) + 0.5) * (n / out_len) - 0.5
    src = xp.clip(src, 0.0, n - 1.0)
    i0 = xp.floor(src).astype(xp.int64)
    i1 = xp.minimum(i0 + 1, n - 1)
    frac = (src - i0).astype(xp.float32)
    shape = [1] * a.ndim
    shape[axis] = out_len
    frac = frac.reshape(shape)
    lo = xp.take(a, i0, axis=axis)
    hi = xp.take(a, i1, axis=axis)
    return lo + (hi - lo) * frac


def _resize_bilinear(image, out_hw: tuple[int, int]):
    xp = _backend.get_namespace(image)
    a = image.astype(xp.float32, copy=False)
    a = _resize_axis(a, int(out_hw[0]), 0, xp)
    a = _resize_axis(a, int(out_hw[1]), 1, xp)
    return a if a is not image else a.copy()


def match_shapes(reference, moving, *, policy="error", names=("reference", "moving")):
    """Bring two images to the same height and width.

    Parameters
    ----------
    reference, moving : ndarray, shape (H, W) or (H, W, C)
        NumPy or CuPy arrays. Only the first two axes (height, width) are matched; channels are kept.
    policy : {'error', 'crop', 'resize'}
        ``'error'``: refuse differing shapes. ``'crop'``: crop both to the common top-left region
        (``min`` of the heights and of the widths); dtypes are kept. ``'resize'``: resize ``moving`` to
        ``reference``'s height and width by bilinear interpolation (float32 result); ``reference`` is
        returned as is.
    names : tuple of str
        How the two images are called in error messages (file names, for instance).

    Returns
    -------
    reference, moving : ndarray
        The same arrays when their heights and widths already agree.

    Raises
    ------
    InputError
        ``policy='error'`` and the shapes differ; the message names both shapes and the fix.
    ConfigError
        Unknown ``policy``.

    Notes
    -----
    The resize maps output pixel centres onto input pixel centres: output index :math:`i` samples input
    coordinate :math:`s = (i + \\tfrac12)\\, n_{in} / n_{out} - \\tfrac12`, clipped to
    :math:`[0, n_{in} - 1]`, and interpolates linearly between the two nearest input pixels (separably
    along rows, then columns). That is OpenCV's ``resize(..., INTER_LINEAR)`` and SciPy's
    ``ndimage.zoom(order=1, grid_mode=True, mode='nearest')``, with no anti-aliasing when shrinking. The
    result is a convex combination of input pixels, so it stays within the input's value range.
    """
    if policy not in _SHAPE_POLICIES:
        raise ConfigError(f"shape policy {policy!r} is not one of {', '.join(_SHAPE_POLICIES)}")
    _check_image(reference, names[0])
    _check_image(moving, names[1])
    ref_hw = tuple(int(s) for s in reference.shape[:2])
    mov_hw = tuple(int(s) for s in moving.shape[:2])
    if ref_hw == mov_hw:
        return reference, moving
    if policy == "error":
        raise InputError(
            f"{names[0]} and {names[1]} differ in shape {tuple(reference.shape)} vs {tuple(moving.shape)}: "
            "use --shape crop or --shape resize"
        )
    if policy == "crop":
        h = min(ref_hw[0], mov_hw[0])
        w = min(ref_hw[1], mov_hw[1])
        return reference[:h, :w], moving[:h, :w]
    return reference, _resize_bilinear(moving, ref_hw)


def normalize(image, *, method):
    """Normalise the exposure of one image.

    Parameters
    ----------
    image : ndarray, shape (H, W) or (H, W, C)
        NumPy or CuPy array.
    method : {'none', 'minmax', 'zscore'}
        ``'none'`` returns ``image`` unchanged. ``'minmax'`` rescales linearly to [0, 255]. ``'zscore'``
        subtracts the mean and divides by the standard deviation. (``'histogram'`` needs a second image:
        see :func:`normalize_pair`.)

    Returns
    -------
    ndarray
        float32, same shape (``image`` itself for ``'none'``).

    Notes
    -----
    Statistics are taken over the whole image, all channels together (a colour cast is kept).

    ``'minmax'``: :math:`255\\,(x - \\min x) / (\\max x - \\min x)`. ``'zscore'``:
    :math:`(x - \\mu) / \\sigma` with the population standard deviation; mean and variance accumulate in
    float64. A constant image (:math:`\\max x = \\min x`, or :math:`\\sigma = 0`) has no contrast to
    stretch and becomes all zeros under both methods, so two constant images compare as identical.
    No host synchronisation: the guard is an ``xp.where`` on device scalars.
    """
    if method == "histogram":
        raise ConfigError("normalize 'histogram' matches one image onto another: use normalize_pair")
    if method not in _NORMALIZE_METHODS:
        raise ConfigError(f"normalize method {method!r} is not one of {', '.join(_PAIR_NORMALIZE_METHODS)}")
    _check_image(image)
    if method == "none":
        return image
    xp = _backend.get_namespace(image)
    x = image.astype(xp.float32, copy=False)
    if method == "minmax":
        lo = xp.min(image).astype(xp.float64)
        span = xp.max(image).astype(xp.float64) - lo
        scale = xp.where(span > 0, 255.0 / xp.where(span > 0, span, 1.0), 0.0)
        return (x - lo.astype(xp.float32)) * scale.astype(xp.float32)
    mean = xp.mean(image, dtype=xp.float64)
    std = xp.std(image, dtype=xp.float64)  # two-pass in float64: no cancellation
    scale = xp.where(std > 0, 1.0 / xp.where(std > 0, std, 1.0), 0.0)
    return (x - mean.astype(xp.float32)) * scale.astype(xp.float32)


def _match_cumulative_cdf(source, template, xp):
    """``source`` (one channel) with its values mapped so its CDF matches ``template``'s; float32."""
    src = source.reshape(-1)
    tmpl = template.reshape(-1)
    small_uint = source.dtype.kind == "u" and source.dtype.itemsize <= 2
    if small_uint and template.dtype.kind == "u" and template.dtype.itemsize <= 2:
        # counting instead of sorting: every integer value up to the maximum gets a quantile
        src_counts = xp.bincount(src)
        tmpl_counts = xp.bincount(tmpl)
        tmpl_values = xp.nonzero(tmpl_counts)[0]
        tmpl_counts = tmpl_counts[tmpl_values]
        src_lookup = src
    else:
        _, src_lookup, src_counts = xp.unique(src, return_inverse=True, return_counts=True)
        tmpl_values, tmpl_counts = xp.unique(tmpl, return_counts=True)
        src_lookup = src_lookup.reshape(-1)
    src_quantiles = xp.cumsum(src_counts).astype(xp.float64) / src.size
    tmpl_quantiles = xp.cumsum(tmpl_counts).astype(xp.float64) / tmpl.size
    mapped = xp.interp(src_quantiles, tmpl_quantiles, tmpl_values.astype(xp.float64))
    return mapped.astype(xp.float32)[src_lookup].reshape(source.shape)


def match_histograms(image, reference):
    """``image`` with its histogram matched to ``reference``'s (per channel for (H, W, C)); float32.

    Notes
    -----
    Exact CDF matching as scikit-image's ``exposure.match_histograms``: each distinct value :math:`v` of
    ``image``, at empirical quantile :math:`F_{image}(v)` (fraction of pixels :math:`\\le v`), maps to
    the linear interpolation of the reference's distinct values at that quantile on the reference's
    empirical CDF. Values become reference values or lie between two of them, so the result stays within
    the reference's range. Integer images up to 16 bits count values (``bincount``) instead of sorting.
    """
    xp = _backend.get_namespace(image, reference)
    if image.ndim != reference.ndim or (image.ndim == 3 and image.shape[-1] != reference.shape[-1]):
        raise InputError(
            f"histogram matching needs the same channels: shapes {tuple(image.shape)} vs "
            f"{tuple(reference.shape)}: use --color gray"
        )
    if image.ndim == 2:
        return _match_cumulative_cdf(image, reference, xp)
    planes = [_match_cumulative_cdf(image[..., c], reference[..., c], xp) for c in range(image.shape[-1])]
    return xp.stack(planes, axis=-1)


def normalize_pair(reference, moving, *, method):
    """Normalise the exposure of both images of a pair.

    Parameters
    ----------
    reference, moving : ndarray
        NumPy or CuPy arrays of the same height and width.
    method : {'none', 'minmax', 'zscore', 'histogram'}
        ``'none'``, ``'minmax'``, ``'zscore'``: :func:`normalize` applied to each image on its own.
        ``'histogram'``: ``moving``'s histogram is matched onto ``reference``'s, which is returned as is.

    Returns
    -------
    reference, moving : ndarray
        float32 results (the inputs themselves where nothing was applied).

    Notes
    -----
    Histogram matching is exact CDF matching (the single-channel algorithm of scikit-image's
    ``exposure.match_histograms``, applied per channel for (H, W, C) images); see
    :func:`match_histograms`. Reference: R. C. Gonzalez, R. E. Woods, *Digital Image Processing*,
    histogram specification.
    """
    if method not in _PAIR_NORMALIZE_METHODS:
        raise ConfigError(f"normalize method {method!r} is not one of {', '.join(_PAIR_NORMALIZE_METHODS)}")
    if method == "histogram":
        _check_image(reference, "reference")
        _check_image(moving, "moving")
        return reference, match_histograms(moving, reference)
    return normalize(reference, method=method), normalize(moving, method=method)


def gaussian_blur(image, *, sigma):
    """Gaussian blur of the height and width axes (each channel on its own).

    Parameters
    ----------
    image : ndarray, shape (H, W) or (H, W, C)
        NumPy or CuPy array.
    sigma : float
        Standard deviation in pixels, >= 0. 0 returns a float32 copy.

    Returns
    -------
    ndarray
        float32, same shape.

    Notes
    -----
    ``ndimage.gaussian_filter(image, sigma=(sigma, sigma[, 0]), mode='reflect', truncate=4.0)``: a
    separable kernel :math:`w_k \\propto \\exp(-k^2 / 2\\sigma^2)` for :math:`|k| \\le \\lfloor 4\\sigma +
    \\tfrac12 \\rfloor`, normalised to sum 1, with the border reflected (``d c b a | a b c d``, OpenCV's
    ``BORDER_REFLECT``). The weights are positive and sum to 1, so the result stays within the input's
    value range.
    """
    if not (sigma >= 0):
        raise ConfigError(f"blur sigma {sigma} must be >= 0 (pixels)")
    _check_image(image)
    xp = _backend.get_namespace(image)
    if sigma == 0:
        return image.astype(xp.float32, copy=True)
    sig = (float(sigma), float(sigma)) + ((0.0,) if image.ndim == 3 else ())
    ndi = _backend.ndimage(xp)
    return ndi.gaussian_filter(image, sigma=sig, mode="reflect", truncate=4.0, output=xp.float32)


def edge_magnitude(image, *, method="sobel", threshold=None):
    """Gradient magnitude (Sobel or Prewitt) of the height and width axes, each channel on its own.

    Parameters
    ----------
    image : ndarray, shape (H, W) or (H, W, C)
        NumPy or CuPy array.
    method : {'sobel', 'prewitt'}
    threshold : float or None
        When given, return a binary edge map: 1.0 where the magnitude > ``threshold``, else 0.0.

    Returns
    -------
    ndarray
        float32, same shape.

    Notes
    -----
    :math:`G = \\sqrt{G_y^2 + G_x^2}` (``hypot``), where :math:`G_y` correlates the rows with the
    derivative :math:`[-1, 0, 1]` and the columns with the smoothing :math:`[1, 2, 1]` (Sobel) or
    :math:`[1, 1, 1]` (Prewitt), and :math:`G_x` the other way round: ``ndimage.sobel`` /
    ``ndimage.prewitt`` along axes 0 and 1 with ``mode='reflect'`` (OpenCV ``Sobel(ksize=3)`` with
    ``BORDER_REFLECT``). The channel axis is never smoothed across (``ndimage.sobel`` on a 3-D array
    would). Unnormalised kernels: a unit step gives a Sobel magnitude of 4. Sobel, I. and Feldman, G.,
    "A 3x3 isotropic gradient operator for image processing" (1968); Prewitt, J. M. S., "Object
    enhancement and extraction" (1970).
    """
    if method not in _EDGE_METHODS:
        raise ConfigError(f"edge method {method!r} is not one of {', '.join(_EDGE_METHODS)}")
    _check_image(image)
    xp = _backend.get_namespace(image)
    ndi = _backend.ndimage(xp)
    x = image.astype(xp.float32, copy=False)
    deriv = xp.asarray([-1.0, 0.0, 1.0], dtype=xp.float64)
    smooth = xp.asarray(_EDGE_SMOOTHING[method], dtype=xp.float64)
    grads = []
    for axis in (0, 1):
        g = ndi.correlate1d(x, deriv, axis=axis, mode="reflect", output=xp.float32)
        g = ndi.correlate1d(g, smooth, axis=1 - axis, mode="reflect", output=xp.float32)
        grads.append(g)
    mag = xp.hypot(grads[0], grads[1])
    if threshold is None:
        return mag
    return (mag > xp.float32(threshold)).astype(xp.float32)


@dataclass(frozen=True)
class PreparedPair:
    """Two images made ready for comparison, and how to read their values.

    Attributes
    ----------
    reference, moving : ndarray, shape (H, W) or (H, W, C)
        Same shape and dtype. The native dtype is kept when no step changed the values (a uint8 grey
        pair stays uint8, which the fused integer kernels rely on); otherwise both are float32.
    value_range : tuple of float
        Histogram range ``[lo, hi]``: (0, 256) for uint8-scale data (uint8 input, possibly averaged,
        resized or blurred, and after ``minmax``), (0, 65536) for uint16-scale data, (0, 1) for float
        input within [0, 1] and for binary edge maps, otherwise the joint (min, max) of both prepared
        images (``(lo, lo + 1)`` when constant).
    data_range : float
        For PSNR and SSIM: 255 (uint8 scale, ``minmax``), 65535 (uint16 scale), 1 (float within [0, 1],
        binary edges), otherwise the joint max - min (1 when that is 0). ``options.data_range``
        overrides it.
    channels : int
        1 for grey, else the C of (H, W, C).
    steps : tuple of str
        What was applied, in order (for the record).
    """

    reference: Any
    moving: Any
    value_range: tuple[float, float]
    data_range: float
    channels: int
    steps: tuple[str, ...]


def _initial_scale(reference, moving, xp) -> str | None:
    """The value scale of the raw pair: 'uint8', 'uint16', 'unit' (floats in [0, 1]) or None."""
    kinds = {reference.dtype.kind, moving.dtype.kind}
    if kinds <= {"u"}:
        bits = max(reference.dtype.itemsize, moving.dtype.itemsize)
        return {1: "uint8", 2: "uint16"}.get(bits)
    if kinds <= {"f"}:
        lo = min(float(xp.min(reference)), float(xp.min(moving)))  # sync
        hi = max(float(xp.max(reference)), float(xp.max(moving)))  # sync
        if 0.0 <= lo and hi <= 1.0:
            return "unit"
    return None


def _match_channels(a, b, color, names):
    """The channel step of :func:`prepare_pair`: ``(a, b, channels, converted)``.

    A (H, W, 1) image is grey. The grey modes turn a colour image (either one) into grey
    (``converted``); ``'rgb'`` keeps the channels, and both images must have the same count.
    """
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    if b.ndim == 3 and b.shape[-1] == 1:
        b = b[..., 0]
    if color in _GRAY_MODES:
        if a.ndim == 3 or b.ndim == 3:
            return to_gray(a, mode=color), to_gray(b, mode=color), 1, True
        return a, b, 1, False
    ca = 1 if a.ndim == 2 else int(a.shape[-1])
    cb = 1 if b.ndim == 2 else int(b.shape[-1])
    if ca != cb:
        raise InputError(
            f"{names[0]} has {ca} channel(s), {names[1]} has {cb}: use --color gray or --color luma"
        )
    return a, b, ca, False


def _value_and_data_range(a, b, scale, xp) -> tuple[tuple[float, float], float]:
    """``(value_range, data_range)`` of the prepared pair on ``scale`` (see :class:`PreparedPair`).

    Without a known scale, the joint min and max of both images (one host sync).
    """
    if scale in _INT_SCALES:
        return _INT_SCALES[scale]
    if scale == "minmax":
        return (0.0, 256.0), 255.0
    if scale in ("unit", "binary"):
        return (0.0, 1.0), 1.0
    lo = min(float(xp.min(a)), float(xp.min(b)))  # sync
    hi = max(float(xp.max(a)), float(xp.max(b)))  # sync
    data_range = hi - lo if hi > lo else 1.0
    value_range = (lo, hi) if hi > lo else (lo, lo + 1.0)
    return value_range, data_range


def prepare_pair(
    reference, moving, options, *, names=("reference", "moving"), register=None
) -> PreparedPair:
    """Prepare two images for comparison as ``options`` describes.

    Parameters
    ----------
    reference, moving : ndarray, shape (H, W) or (H, W, C)
        NumPy or CuPy arrays of dtype uint8, uint16, float32 or float64 (alpha already stripped).
    options : CompareOptions
        Uses ``color``, ``shape``, ``normalize``, ``blur``, ``edges``, ``edge_threshold`` and
        ``data_range``.
    names : tuple of str
        How the two images are called in error messages.
    register : callable, optional
        ``register(a, b) -> (a, b, step)``: called after the exposure step and before blur and edges
        (alignment: phase correlation whitens the spectrum, so it gains nothing from a blur, while
        the filters' border effects bias a subpixel peak). It returns the registered overlap and a
        label for ``steps``.

    Returns
    -------
    PreparedPair

    Raises
    ------
    InputError
        Differing channel counts with ``color='rgb'``; differing shapes with ``shape='error'``.

    Notes
    -----
    The order is fixed: channels (``gray``: mean of channels, ``luma``: BT.601, ``rgb``: kept, and both
    must have the same count; a 2-D image or a (H, W, 1) one is one channel) -> shape policy
    (:func:`match_shapes`) -> exposure (:func:`normalize_pair`) -> blur (:func:`gaussian_blur`) -> edges
    (:func:`edge_magnitude`).

    The value scale is followed through the steps to give ``value_range`` and ``data_range``: channel
    means, luma, bilinear resizing, blurring and histogram matching onto the reference all stay within
    the input's range, so uint8 input stays on the uint8 scale; ``minmax`` sets the [0, 255] scale;
    thresholded edges are binary; ``zscore``, edge magnitudes and mixed inputs (one integer, one float,
    or floats outside [0, 1]) use the joint min and max of the prepared images (one host sync). A uint8
    image compared with a uint16 one uses the uint16 scale.
    """
    _check_image(reference, names[0])
    _check_image(moving, names[1])
    xp = _backend.get_namespace(reference, moving)
    scale = _initial_scale(reference, moving, xp)
    steps: list[str] = []

    # channels: (H, W, 1) is grey
    a, b, channels, transformed = _match_channels(reference, moving, options.color, names)
    if transformed:
        steps.append(options.color)

    # shape policy
    if tuple(a.shape[:2]) != tuple(b.shape[:2]):
        a, b = match_shapes(a, b, policy=options.shape, names=names)
        if options.shape == "resize":
            transformed = True
        steps.append(f"{options.shape}({a.shape[0]},{a.shape[1]})")

    # exposure
    if options.normalize != "none":
        a, b = normalize_pair(a, b, method=options.normalize)
        steps.append(options.normalize)
        transformed = True
        if options.normalize == "minmax":
            scale = "minmax"
        elif options.normalize == "zscore":
            scale = None
        # 'histogram': moving takes reference's values, the scale is the reference's

    if register is not None:
        a, b, step = register(a, b)
        steps.append(step)
        # an interpolated (fractional) shift makes moving float; the scale is unchanged

    if options.blur > 0:
        a = gaussian_blur(a, sigma=options.blur)
        b = gaussian_blur(b, sigma=options.blur)
        steps.append(f"blur({options.blur:g})")
        transformed = True

    if options.edges != "none":
        a = edge_magnitude(a, method=options.edges, threshold=options.edge_threshold)
        b = edge_magnitude(b, method=options.edges, threshold=options.edge_threshold)
        steps.append(options.edges)
        transformed = True
        if options.edge_threshold is not None:
            steps.append(f"threshold({options.edge_threshold:g})")
            scale = "binary"
        else:
            scale = None

    if transformed or a.dtype != b.dtype:
        a = a.astype(xp.float32, copy=False)
        b = b.astype(xp.float32, copy=False)

    value_range, data_range = _value_and_data_range(a, b, scale, xp)
    if options.data_range is not None:
        data_range = float(options.data_range)
    return PreparedPair(
        reference=a,
        moving=b,
        value_range=(float(value_range[0]), float(value_range[1])),
        data_range=float(data_range),
        channels=channels,
        steps=tuple(steps),
    )
