"""Pillow (JPEG, BMP; PNG and PNM up to 8 bits; GIF frames): mode to array, and 4/8-bit BMPs with a
grey palette, whose indices are read here (Pillow unpacks them wrongly)."""

from __future__ import annotations

import struct

import numpy as np

from ._imageinfo import ImageInfo, _Source
from ._readerrors import _page_out_of_range


# Pillow mode -> (grey?, dtype) of what _pillow_to_array returns.
_GREY_MODES = {"1", "L", "LA", "La", "I;16", "I;16L", "I;16B", "I;16N", "I", "F"}


def _pillow_mode_out(mode: str) -> tuple[bool, np.dtype]:
    if mode.startswith("I;16"):
        return True, np.dtype(np.uint16)
    if mode == "I":
        return True, np.dtype(np.float64)
    if mode == "F":
        return True, np.dtype(np.float32)
    return mode in _GREY_MODES, np.dtype(np.uint8)


def _pillow_to_array(im) -> np.ndarray:
    mode = im.mode
    if mode == "1" or mode in ("LA", "La"):
        return np.asarray(im.convert("L"))
    if mode in ("L", "RGB", "F"):
        return np.asarray(im)
    if mode.startswith("I;16"):
        return np.asarray(im).astype(np.uint16)
    if mode == "I":
        return np.asarray(im).astype(np.float64)
    return np.asarray(im.convert("RGB"))  # P, PA, RGBA, RGBX, RGBa, CMYK, YCbCr, LAB, HSV


def _pillow_open(fh, fmt: str):
    """Pillow's lazy open with the plugin the magic bytes chose (header only, no bomb check)."""
    from PIL import (  # noqa: PLC0415
        BmpImagePlugin,
        GifImagePlugin,
        JpegImagePlugin,
        PngImagePlugin,
        PpmImagePlugin,
    )

    cls = {
        "PNG": PngImagePlugin.PngImageFile,
        "JPEG": JpegImagePlugin.JpegImageFile,
        "BMP": BmpImagePlugin.BmpImageFile,
        "PNM": PpmImagePlugin.PpmImageFile,
        "GIF": GifImagePlugin.GifImageFile,
    }[fmt]
    fh.seek(0)
    return cls(fh)


class _PillowSource(_Source):
    def __init__(self, path, fh, fmt, page, *, im=None, shape=None):
        self.im = im if im is not None else _pillow_open(fh, fmt)
        pages = int(getattr(self.im, "n_frames", 1) or 1)
        if page >= pages:
            raise _page_out_of_range(path, pages, page)
        self.page = page
        grey, dtype = _pillow_mode_out(self.im.mode)
        width, height = self.im.size
        if shape is None:
            shape = (height, width) if grey else (height, width, 3)
        self.info = ImageInfo(path, fmt, tuple(shape), dtype, pages)

    def read(self):
        im = self.im
        if self.info.format == "BMP":
            fixed = _bmp_grey_palette(im)
            if fixed is not None:
                return fixed
        if self.page:
            im.seek(self.page)
        im.load()
        return _pillow_to_array(im)


def _bmp_grey_palette(im):
    """Pixels of a 4/8-bit BMP whose palette is black/white or a grey ramp, or None for others.

    Pillow (up to 13 at least) gives such files mode '1' or 'L' but then unpacks the 4/8-bit
    indices as 1-bit or 8-bit pixels (an 8-bit ROI mask with a black/white palette comes out as
    stripes). The indices are read here instead; Pillow's palette check has made sure that
    index i means grey i (ramp) or, with two colours, black and white.
    """
    fp = im.fp
    fp.seek(14)
    (dib_size,) = struct.unpack("<I", fp.read(4))
    fp.seek(14 + (10 if dib_size == 12 else 14))
    (bits,) = struct.unpack("<H", fp.read(2))
    if (im.mode, bits) not in (("1", 4), ("1", 8), ("L", 4)):
        return None
    (tile,) = im.tile
    width, height = im.size
    if tile[0] != "raw":
        raise ValueError(
            f"run-length-encoded {bits}-bit BMP with a grey palette, which Pillow decodes wrongly; "
            "save it as PNG"
        )
    offset, (_, stride, direction) = tile[2], tile[3]
    fp.seek(offset)
    data = fp.read(stride * height)
    if len(data) < stride * height:
        raise OSError("image file is truncated")
    rows = np.frombuffer(data, dtype=np.uint8).reshape(height, stride)
    if bits == 8:
        index = rows[:, :width]
    else:
        index = np.stack([rows >> 4, rows & 15], axis=-1).reshape(height, 2 * stride)[:, :width]
    if direction < 0:
        index = index[::-1]
    if im.mode == "1":
        return np.where(index > 0, np.uint8(255), np.uint8(0))
    return np.ascontiguousarray(index)
