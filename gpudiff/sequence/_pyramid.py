"""What the dense and the sparse flow share: input checks, and the image pyramid they descend.

The pyramid is scikit-image's (``pyramid_reduce``: halve per level, Gaussian anti-alias) so that
:func:`gpudiff.sequence.optical_flow_lk` matches ``optical_flow_ilk`` level for level; written against
``xp`` like every flow module.
"""

from __future__ import annotations

import math
from types import ModuleType

import numpy as np

from ..backend import get_namespace, ndimage
from ..errors import ConfigError, InputError

#: The pyramid halves the image per level (skimage's ``pyramid_reduce`` default) ...
_DOWNSCALE = 2.0
#: ... with a Gaussian anti-alias of sigma = 2 * downscale / 6 (covers > 99 % of the kernel mass) ...
_PYRAMID_SIGMA = 2.0 * _DOWNSCALE / 6.0
#: ... and stops before the smaller side of a level drops to 16 pixels or below (skimage's ``min_size``).
_MIN_SIZE = 16
#: Automatic pyramid depth at most (skimage's ``nlevel``).
_MAX_LEVELS = 10

# ----------------------------------------------------------------------------------------------
# validation


def _prepare_image(image, xp: ModuleType, dtype, name: str):
    """``image`` as a 2-D float array of ``dtype`` on ``xp``; integers scaled to [0, 1] by their maximum."""
    image = xp.asarray(image)
    if image.ndim == 3 and image.shape[-1] in (3, 4):
        raise InputError(
            f"{name} has shape {tuple(image.shape)} (colour): optical flow needs a grey (H, W) image; "
            "convert it first, e.g. with gpudiff.pair.to_gray"
        )
    if image.ndim != 2:
        raise InputError(f"{name} has shape {tuple(image.shape)}: expected a grey (height, width) image")
    if min(image.shape) < 2:
        raise InputError(f"{name} has shape {tuple(image.shape)}: each side needs at least 2 pixels")
    kind = image.dtype.kind
    if kind == "b":
        return image.astype(dtype)
    if kind in "ui":
        return image.astype(dtype) / dtype.type(np.iinfo(image.dtype).max)
    if kind != "f":
        raise InputError(f"{name} has dtype {image.dtype}: give a real (integer or floating) image")
    out = image.astype(dtype, copy=False)
    if not bool(xp.isfinite(out).all()):  # sync: one scalar, before any work
        raise InputError(f"{name} holds NaN or infinite values: replace them (e.g. with xp.nan_to_num) first")
    return out


def _prepare_pair(reference, moving, xp: ModuleType, dtype):
    """Both images as grey ``dtype`` arrays of one shape (validated), or a one-line InputError."""
    ref = _prepare_image(reference, xp, dtype, "reference")
    mov = _prepare_image(moving, xp, dtype, "moving")
    if ref.shape != mov.shape:
        raise InputError(
            f"reference {tuple(ref.shape)} and moving {tuple(mov.shape)} differ in shape: "
            "crop or resize them to one shape first"
        )
    return ref, mov


def _check_int(value, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ConfigError(f"{name}={value!r} must be an integer >= {minimum}")
    if value < minimum:
        raise ConfigError(f"{name}={value} must be >= {minimum}")
    return int(value)


def _check_dtype(dtype) -> np.dtype:
    try:
        dt = np.dtype(dtype)
    except TypeError:
        dt = None
    if dt not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise ConfigError(f"dtype={dtype!r} is not supported: use float32 or float64")
    return dt


# ----------------------------------------------------------------------------------------------
# pyramid


def _resize_linear(image, shape, ndi, xp):
    """Bilinear resize with pixel centres aligned (scikit-image's ``resize(order=1)`` geometry):
    output pixel ``o`` samples input coordinate ``(o + 0.5) * in / out - 0.5``, edge values beyond."""
    scale = [i / o for i, o in zip(image.shape, shape)]
    offset = [0.5 * s - 0.5 for s in scale]
    # A 1-D matrix is the diagonal (CuPy needs it as an array).
    matrix = xp.asarray(scale, dtype=xp.float64)
    return ndi.affine_transform(
        image, matrix, offset=offset, output_shape=tuple(shape), order=1, mode="nearest"
    )


def _pyramid_shapes(shape, levels: int | None) -> list[tuple[int, int]]:
    """Fine-to-coarse level shapes: halve (rounding up) while the smaller side exceeds 2 * _MIN_SIZE."""
    limit = _MAX_LEVELS if levels is None else levels
    shapes = [tuple(shape)]
    while len(shapes) < limit and min(shapes[-1]) > _DOWNSCALE * _MIN_SIZE:
        shapes.append(tuple(math.ceil(n / _DOWNSCALE) for n in shapes[-1]))
    return shapes


def _pyramid(image, shapes, ndi, xp, sigma=None) -> list:
    """Fine-to-coarse Gaussian pyramid (blur with ``sigma``, by default 2/3, then bilinear down to the
    next shape)."""
    sigma = _PYRAMID_SIGMA if sigma is None else sigma
    out = [image]
    for shape in shapes[1:]:
        smooth = ndi.gaussian_filter(out[-1], sigma, mode="reflect")
        out.append(_resize_linear(smooth, shape, ndi, xp))
    return out


def _upsample_flow(flow, shape, xp):
    """The flow of a coarser level on a finer grid: nearest-neighbour resampling (the sample grid of
    ``scipy.ndimage.zoom(order=0)``: output index ``o`` takes input ``floor(o * (n_in - 1) / (n_out - 1)
    + 0.5)``, as scikit-image's ``optical_flow_ilk``), values scaled by the ratio of the sizes along
    each axis."""
    index = []
    for n_in, n_out in zip(flow.shape[1:], shape):
        step = (n_in - 1) / (n_out - 1) if n_out > 1 else 0.0
        index.append(xp.asarray(np.floor(np.arange(n_out) * step + 0.5).astype(np.intp)))
    out = flow[:, index[0][:, None], index[1][None, :]]
    ratio = xp.asarray([n_out / n_in for n_in, n_out in zip(flow.shape[1:], shape)], dtype=flow.dtype)
    return out * ratio[:, None, None]


def coarse_to_fine(reference, moving, *, levels, dtype, solve):
    """The dense flow from ``reference`` to ``moving`` by ``solve`` at each pyramid level, coarsest
    first: each level starts from the coarser level's flow, upsampled (:func:`_upsample_flow`).

    ``solve(reference_level, moving_level, flow, ndi=..., xp=...)`` returns the level's flow; the
    images are validated and made grey ``dtype`` first (:func:`_prepare_pair`).
    """
    xp = get_namespace(reference, moving)
    ref, mov = _prepare_pair(reference, moving, xp, dtype)
    ndi = ndimage(xp)
    shapes = _pyramid_shapes(ref.shape, levels)
    ref_pyr = _pyramid(ref, shapes, ndi, xp)
    mov_pyr = _pyramid(mov, shapes, ndi, xp)
    flow = xp.zeros((2, *shapes[-1]), dtype=dtype)
    for level in range(len(shapes) - 1, -1, -1):
        if flow.shape[1:] != shapes[level]:
            flow = _upsample_flow(flow, shapes[level], xp)
        flow = solve(ref_pyr[level], mov_pyr[level], flow, ndi=ndi, xp=xp)
    return flow
