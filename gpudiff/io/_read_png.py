"""PNG: the IHDR chunk parsed here (the size before Pillow sees it); 16 bits decoded by imagecodecs
(Pillow reduces 16-bit colour to 8 bits), 8 bits by Pillow."""

from __future__ import annotations

import struct

import numpy as np

from ..errors import InputError
from ._decoderlog import DecoderLog
from ._imageinfo import ImageInfo, _Source
from ._read_pillow import _PillowSource, _pillow_open
from ._readerrors import _page_out_of_range


# libpng's warnings (imagecodecs logs them on its logger, which without a handler prints them on
# stderr) are kept off the terminal: those that say the file contradicts itself make the read an
# error, the rest (an sRGB profile libpng knows to be slightly wrong...) are dropped.
_DAMAGE = ("too much image data", "not enough image data", "unknown interlace", "crc error",
           "extra compressed data", "invalid", "bad ")


_IMAGECODECS_LOG = DecoderLog("imagecodecs")

#: Collect imagecodecs' (libpng's) log records of this thread into the list it yields.
_libpng_warnings = _IMAGECODECS_LOG.collect


class _PngSource(_Source):
    def __init__(self, path, fh, size, page, head):
        if len(head) < 33 or head[12:16] != b"IHDR":
            raise ValueError("no IHDR chunk after the signature")
        width, height, depth, color = struct.unpack_from(">IIBB", head, 16)
        if width == 0 or height == 0:
            raise ValueError(f"IHDR declares {width} x {height} pixels")
        grey = color in (0, 4)
        shape = (height, width) if grey else (height, width, 3)
        self.path, self.fh, self.page, self.depth = path, fh, page, depth
        self.pillow = None
        if depth == 16:
            # Pillow would reduce 16-bit colour to 8 bits; its lazy open still counts APNG frames.
            im = _pillow_open(fh, "PNG")
            pages = int(getattr(im, "n_frames", 1) or 1)
            if page >= pages:
                raise _page_out_of_range(path, pages, page)
            if page > 0:
                raise InputError(
                    f"{path} is a 16-bit animated PNG: gpudiff reads only its first frame; "
                    f"save the frames as a multi-page TIFF"
                )
            self.info = ImageInfo(path, "PNG", shape, np.dtype(np.uint16), pages)
        else:
            self.pillow = _PillowSource(path, fh, "PNG", page, im=_pillow_open(fh, "PNG"), shape=shape)
            self.info = self.pillow.info

    def read(self):
        if self.pillow is not None:
            return self.pillow.read()
        import imagecodecs  # noqa: PLC0415

        self.fh.seek(0)
        with _libpng_warnings() as said:
            image = imagecodecs.png_decode(self.fh.read())
        for line in "\n".join(said).splitlines():
            if any(word in line.lower() for word in _DAMAGE):
                raise InputError(
                    f"{self.path} is damaged ({line.strip()}): its header and data disagree; "
                    f"re-export or copy the file again"
                )
        if image.ndim == 3 and image.shape[2] in (2, 4):
            image = image[..., :-1]
        return image
