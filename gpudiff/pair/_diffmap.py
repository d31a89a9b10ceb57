"""Heat maps of |difference|: the per-pixel picture behind the numbers."""

from __future__ import annotations

import contextlib
import errno
import os

import numpy as np

from .. import backend as _backend
from ..errors import InputError

__all__ = ["absolute_difference", "colorize", "write_heatmap"]

# Viridis (perceptually uniform, colour-blind safe) sampled at 9 evenly spaced points; the LUT
# interpolates linearly between them.
_VIRIDIS_ANCHORS = np.array(
    [
        [0x44, 0x01, 0x54],
        [0x47, 0x2C, 0x7A],
        [0x3B, 0x51, 0x8B],
        [0x2C, 0x71, 0x8E],
        [0x21, 0x90, 0x8C],
        [0x27, 0xAD, 0x81],
        [0x5C, 0xC8, 0x63],
        [0xAA, 0xDC, 0x32],
        [0xFD, 0xE7, 0x25],
    ],
    dtype=np.float64,
)


def _lut() -> np.ndarray:
    x = np.linspace(0.0, 1.0, len(_VIRIDIS_ANCHORS))
    t = np.linspace(0.0, 1.0, 256)
    return np.stack([np.interp(t, x, _VIRIDIS_ANCHORS[:, c]) for c in range(3)], axis=1).round().astype(np.uint8)


VIRIDIS_LUT = _lut()


def absolute_difference(reference, moving):
    """|reference - moving| as float32, (H, W); for (H, W, C) the max over channels."""
    xp = _backend.get_namespace(reference, moving)
    d = xp.abs(reference.astype(xp.float32) - moving.astype(xp.float32))
    if d.ndim == 3:
        d = d.max(axis=-1)
    return d


def colorize(diff, *, vmax: float | None = None) -> np.ndarray:
    """(H, W) non-negative map -> (H, W, 3) uint8 viridis image; 0 is dark, ``vmax`` (default max) bright."""
    d = np.asarray(_backend.to_host(diff), dtype=np.float32)
    top = float(d.max()) if vmax is None and d.size else float(vmax or 0.0)
    if top <= 0:
        idx = np.zeros(d.shape, dtype=np.uint8)
    else:
        idx = np.clip(d * (255.0 / top), 0, 255).astype(np.uint8)
    return VIRIDIS_LUT[idx]


def write_heatmap(path, diff, *, vmax: float | None = None) -> None:
    """Write ``colorize(diff)`` as a PNG at ``path``."""
    from PIL import Image  # noqa: PLC0415

    rgb = colorize(diff, vmax=vmax)
    parent = os.path.dirname(os.path.abspath(os.fspath(path)))
    if not os.path.isdir(parent):
        raise InputError(f"--diff-map {path}: folder {parent} does not exist: create it or choose another path")
    # a temporary beside it, renamed into place: a failure (disk full) never leaves a 0-byte PNG
    tmp = os.path.join(parent, f".{os.path.basename(os.fspath(path))}.tmp{os.getpid()}")
    try:
        Image.fromarray(rgb).save(tmp, format="PNG")
        os.replace(tmp, os.fspath(path))
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if exc.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
            raise InputError(f"--diff-map {path}: disk full: free space (or choose another path) and rerun") from None
        raise InputError(f"--diff-map {path}: cannot write ({exc.strerror or exc}): check the path and permissions") from None
