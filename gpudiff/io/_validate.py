"""Arrays brought to the form the comparisons take (:func:`validate_array`), and the checks of the
options of :func:`~gpudiff.io.read_image` and :func:`~gpudiff.io.probe_image` (page, pixel budget).
"""

from __future__ import annotations

import operator

import numpy as np

from ..backend import get_namespace
from ..errors import ConfigError, InputError
from ._imageinfo import ImageInfo
from ._readerrors import _sci

__all__ = ["validate_array"]

_KEPT_DTYPES = (np.dtype(np.uint8), np.dtype(np.uint16), np.dtype(np.float32), np.dtype(np.float64))


def validate_array(image, *, name="image"):
    """Check an array given directly and bring it to the form the comparisons take.

    Parameters
    ----------
    image : array_like
        A NumPy or CuPy array, ``(H, W)`` or ``(H, W, C)`` with ``C`` in 1..4 (channels last).
        Anything without ``dtype``/``shape`` is passed through ``numpy.asarray`` first.
    name : str, optional
        How messages name the array (a file path when called by :func:`read_image`).

    Returns
    -------
    array
        On the same device as ``image``: ``(H, W)`` or ``(H, W, 3)``, dtype uint8, uint16,
        float32 or float64. ``image`` itself when nothing needs changing.

    Raises
    ------
    gpudiff.errors.InputError
        Wrong number of dimensions or channels, no pixels, a non-real dtype (complex, object,
        string, date), NaN or Inf values.

    Notes
    -----
    Channels: C=1 is squeezed, C=2 drops alpha (grey), C=4 drops alpha (RGB). dtypes: uint8,
    uint16, float32 and float64 are kept; bool becomes uint8 0/255; float16 becomes float32; other
    integers become float64 (values kept exactly up to 2**53). Floating-point images are checked
    for NaN and Inf with two reductions (min and max) and counted only when there are some.
    """
    image = _as_array(image, name)
    xp = get_namespace(image)
    shape = tuple(int(s) for s in image.shape)
    _check_real(np.dtype(image.dtype), name)
    _check_layout(image.ndim, shape, name)
    image = _grey_or_rgb(image, xp)
    image = _kept_dtype(image, xp)
    if image.dtype.kind == "f":
        _check_finite(image, xp, name)
    return image


def _as_array(image, name):
    """``image`` itself when it has ``dtype``, ``shape`` and ``ndim``, else ``numpy.asarray(image)``."""
    if not (hasattr(image, "dtype") and hasattr(image, "shape") and hasattr(image, "ndim")):
        try:
            image = np.asarray(image)
        except Exception:
            raise InputError(
                f"{name} is not an array ({type(image).__name__}): give a NumPy or CuPy array"
            ) from None
    return image


#: How the message for a dtype that is not a number goes on after "<name> has dtype <dtype>": for an
#: array given directly (:func:`validate_array`) and for the dtype a file stores (:func:`_output_dtype`).
_NOT_NUMERIC_ARRAY = (
    ": gpudiff compares numeric images; convert it first, e.g. np.asarray(image, dtype=np.float64)"
)
_NOT_NUMERIC_FILE = ", which gpudiff does not read: save it as integers or floats"


def _check_real(dtype: np.dtype, name, *, not_numeric: str = _NOT_NUMERIC_ARRAY) -> None:
    """InputError unless ``dtype`` is bool, integer or floating-point.

    ``not_numeric`` ends the message for a dtype that is neither of those nor complex (object,
    string, date...): :data:`_NOT_NUMERIC_ARRAY` or :data:`_NOT_NUMERIC_FILE`.
    """
    if dtype.kind == "c":
        raise InputError(
            f"{name} has dtype {dtype}: gpudiff compares real-valued images; take np.abs or .real first"
        )
    if dtype.kind not in "biuf":
        raise InputError(f"{name} has dtype {dtype}{not_numeric}")


def _check_layout(ndim: int, shape: tuple, name) -> None:
    """InputError unless the array is ``(H, W)`` or ``(H, W, C)`` with ``C`` in 1..4 and has pixels."""
    if ndim not in (2, 3):
        raise InputError(
            f"{name} has shape {shape}: gpudiff takes (H, W) grey or (H, W, C) colour with C = 1..4; "
            f"for a stack, pass one frame at a time"
        )
    if 0 in shape:
        raise InputError(f"{name} is empty (shape {shape}): give an image with at least one pixel")
    if ndim == 3 and not 1 <= shape[2] <= 4:
        raise InputError(
            f"{name} has shape {shape}: the last axis must hold 1 to 4 channels; "
            f"if channels come first, pass np.moveaxis(image, 0, -1)"
        )


def _grey_or_rgb(image, xp):
    """``(H, W, 1)`` and grey+alpha to ``(H, W)``, RGBA to ``(H, W, 3)``; other layouts as they are."""
    if image.ndim == 3:
        channels = int(image.shape[2])
        if channels in (1, 2):
            image = xp.ascontiguousarray(image[:, :, 0])
        elif channels == 4:
            image = xp.ascontiguousarray(image[:, :, :3])
    return image


def _kept_dtype(image, xp):
    """Native byte order, then one of uint8, uint16, float32, float64 (see :func:`validate_array`)."""
    dtype = np.dtype(image.dtype)
    if not dtype.isnative:
        image = image.astype(dtype.newbyteorder("="))
        dtype = np.dtype(image.dtype)
    if dtype.kind == "b":
        image = image.astype(xp.uint8)
        image *= 255
    elif dtype not in _KEPT_DTYPES:
        if dtype.kind == "f" and dtype.itemsize < 4:
            image = image.astype(xp.float32)
        else:
            image = image.astype(xp.float64)
    return image

_FLOAT32_MAX = float(np.finfo(np.float32).max)


def _check_finite(image, xp, name) -> None:
    with np.errstate(invalid="ignore"):
        lo, hi = image.min(), image.max()
        finite = bool(xp.isfinite(lo)) and bool(xp.isfinite(hi))  # sync
    if finite:
        big = max(abs(float(lo)), abs(float(hi)))
        if big > _FLOAT32_MAX:  # float64 only: the comparisons run in float32 and would give inf
            raise InputError(
                f"{name} has values up to {big:.3g}, beyond float32's range ({_FLOAT32_MAX:.3g}) in which "
                "gpudiff compares: rescale the image (e.g. divide by its maximum) first"
            )
        return
    n_nan = int(xp.count_nonzero(xp.isnan(image)))  # sync
    n_inf = int(xp.count_nonzero(xp.isinf(image)))  # sync
    raise InputError(
        f"{name} has {n_nan} NaN and {n_inf} Inf values: replace them (np.nan_to_num) or mask them first"
    )


def _output_dtype(dtype, name) -> np.dtype:
    """The dtype validate_array turns ``dtype`` into (for probe_image), or InputError."""
    dtype = np.dtype(dtype)
    _check_real(dtype, name, not_numeric=_NOT_NUMERIC_FILE)
    dtype = dtype.newbyteorder("=")
    if dtype.kind == "b":
        return np.dtype(np.uint8)
    if dtype in _KEPT_DTYPES:
        return dtype
    if dtype.kind == "f" and dtype.itemsize < 4:
        return np.dtype(np.float32)
    return np.dtype(np.float64)


# --------------------------------------------------------------------------------------------
# checks shared by probe_image and read_image


def _whole_number(value, what: str, minimum: int, *, allow_float: bool = False) -> int:
    """``value`` as an int >= ``minimum``, else a one-line ConfigError naming ``what`` (``--page``).

    ``allow_float``: a float with no fractional part (``1e9`` from a config file) is taken as its int.
    """
    try:
        n = operator.index(value)
    except TypeError:
        if not (allow_float and isinstance(value, float) and value.is_integer()):
            raise ConfigError(f"{what} {value!r} must be a whole number >= {minimum}") from None
        n = int(value)
    if n < minimum:
        raise ConfigError(f"{what} {n} must be a whole number >= {minimum}")
    return n


def _check_page(page) -> int:
    return _whole_number(page, "--page", 0)


def _check_max_pixels(max_pixels) -> int:
    return _whole_number(max_pixels, "--max-pixels", 1, allow_float=True)


def _check_budget(info: ImageInfo, max_pixels: int) -> None:
    height, width = int(info.shape[0]), int(info.shape[1])
    pixels = height * width
    if pixels > max_pixels:
        raise InputError(
            f"{info.path} declares {width} x {height} = {_sci(pixels)} pixels, over the budget of "
            f"{_sci(max_pixels)}: raise --max-pixels if you trust it"
        )
