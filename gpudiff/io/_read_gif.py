"""GIF: the block structure walked here (frame count, canvas size, truncation); Pillow decodes."""

from __future__ import annotations

import mmap
import struct

import numpy as np

from ._imageinfo import ImageInfo, _Source
from ._read_pillow import _pillow_open
from ._readerrors import _page_out_of_range


def _skip_sub_blocks(buf, pos: int, end: int) -> int:
    while True:
        if pos >= end:
            raise EOFError("data ends inside a block")
        length = buf[pos]
        pos += 1
        if length == 0:
            return pos
        pos += length
        if pos > end:
            raise EOFError("data ends inside a block")


def _scan_gif(buf) -> tuple[int, int, list]:
    """(screen width, screen height, [(x, y, w, h) per frame]); EOFError when cut inside a block."""
    end = len(buf)
    if end < 13:
        raise EOFError("data ends inside the header")
    width, height = struct.unpack_from("<HH", buf, 6)
    flags = buf[10]
    pos = 13
    if flags & 0x80:
        pos += 3 * (2 << (flags & 7))
    frames = []
    while pos < end:
        block = buf[pos]
        if block == 0x3B:  # trailer
            break
        if block == 0x21:  # extension: label, then sub-blocks
            pos = _skip_sub_blocks(buf, pos + 2, end)
        elif block == 0x2C:  # image descriptor
            if pos + 11 > end:
                raise EOFError("data ends inside an image descriptor")
            frames.append(struct.unpack_from("<HHHH", buf, pos + 1))
            local = buf[pos + 9]
            pos += 10
            if local & 0x80:
                pos += 3 * (2 << (local & 7))
            pos = _skip_sub_blocks(buf, pos + 1, end)  # after the LZW minimum code size
        else:  # stray bytes after the last frame: stop, as decoders do
            break
    return width, height, frames


class _GifSource(_Source):
    def __init__(self, path, fh, size, page, stack):
        buf = stack.enter_context(mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ))
        screen_w, screen_h, frames = _scan_gif(buf)
        if not frames:
            raise ValueError("no image frames")
        if page >= len(frames):
            raise _page_out_of_range(path, len(frames), page)
        # Pillow grows the canvas to hold every frame seen so far.
        width = max([screen_w] + [x + w for x, _, w, _ in frames[: page + 1]])
        height = max([screen_h] + [y + h for _, y, _, h in frames[: page + 1]])
        self.path, self.fh, self.page = path, fh, page
        self.info = ImageInfo(path, "GIF", (height, width, 3), np.dtype(np.uint8), len(frames))

    def read(self):
        im = _pillow_open(self.fh, "GIF")  # the file is closed by _open_source, not by Pillow
        if self.page:
            im.seek(self.page)
        im.load()
        return np.asarray(im.convert("RGB"))
