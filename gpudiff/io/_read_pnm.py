"""PBM/PGM/PPM: the header parsed here; maxval other than 255 decoded here, values as stored (Pillow
rescales maxval < 255 to 0..255 and reduces 16-bit PPM to 8 bits), the rest by Pillow."""

from __future__ import annotations

import numpy as np

from ._imageinfo import ImageInfo, _Source
from ._read_pillow import _PillowSource
from ._readerrors import _page_out_of_range


def _pnm_header(fh):
    """(magic, width, height, maxval, data offset) of a PBM/PGM/PPM file."""
    fh.seek(0)
    buf = fh.read(4096)
    magic = buf[:2].decode("ascii")
    n_fields = 2 if magic in ("P1", "P4") else 3
    fields, pos = [], 2
    while len(fields) < n_fields:
        while pos < len(buf) and buf[pos : pos + 1] in b" \t\r\n\x0b\x0c#":
            if buf[pos : pos + 1] == b"#":
                end = buf.find(b"\n", pos)
                if end < 0:
                    raise ValueError("header comment does not end")
                pos = end
            pos += 1
        start = pos
        while pos < len(buf) and buf[pos : pos + 1].isdigit():
            pos += 1
        if pos == start:
            raise ValueError("header is cut short or not numeric")
        fields.append(int(buf[start:pos]))
    width, height = fields[0], fields[1]
    maxval = fields[2] if n_fields == 3 else 1
    if width < 1 or height < 1 or not 1 <= maxval <= 65535:
        raise ValueError(f"header declares {width} x {height} with maxval {maxval}")
    return magic, width, height, maxval, pos + 1


class _PnmSource(_Source):
    def __init__(self, path, fh, size, page):
        magic, width, height, maxval, offset = _pnm_header(fh)
        channels = 3 if magic in ("P3", "P6") else 1
        shape = (height, width) if channels == 1 else (height, width, channels)
        if page >= 1:
            raise _page_out_of_range(path, 1, page)
        self.path, self.fh, self.size = path, fh, size
        self.magic, self.offset, self.channels = magic, offset, channels
        self.pillow = None
        if magic in ("P1", "P4") or maxval == 255:
            self.pillow = _PillowSource(path, fh, "PNM", page, shape=shape)
            self.info = ImageInfo(path, "PNM", shape, self.pillow.info.dtype, 1)
        else:
            # Values as stored: Pillow would rescale maxval < 255 to 0..255 and cut 16 bits to 8.
            dtype = np.dtype(np.uint8) if maxval < 256 else np.dtype(np.uint16)
            self.info = ImageInfo(path, "PNM", shape, dtype, 1)

    def read(self):
        if self.pillow is not None:
            return self.pillow.read()
        count = self.info.pixels * self.channels
        dtype = self.info.dtype
        self.fh.seek(self.offset)
        if self.magic in ("P5", "P6"):
            nbytes = dtype.itemsize * count
            if self.offset + nbytes > self.size:
                present = self.size - self.offset
                raise ValueError(f"{nbytes} bytes of pixel data declared, {present} present")
            values = np.fromfile(self.fh, dtype=dtype.newbyteorder(">"), count=count).astype(dtype)
        else:  # plain (ASCII) P2/P3
            values = np.array(self.fh.read().split(), dtype=np.int64)
            if values.size < count:
                raise ValueError(f"{count} values declared, {values.size} present")
            values = values[:count].astype(dtype)
        return values.reshape(self.info.shape)
