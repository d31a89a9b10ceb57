"""TIFF and OME-TIFF pages through tifffile: channels, CMYK, planar and palette pages to frames.

:class:`_TiffPlane` and :func:`_tiff_chain_cut` are shared with the TIFF stack source (``_tiff``).
"""

from __future__ import annotations

import os
import struct

import numpy as np

from ..errors import InputError
from ._imageinfo import ImageInfo, _Source
from ._readerrors import _page_out_of_range
from ._validate import _output_dtype


def _tiff_channels(samples: int, photometric: int, path) -> int:
    """Channels out (1 or 3) for a page with ``samples`` samples per pixel, or InputError."""
    if samples == 1 and photometric == 3:  # palette
        return 3
    if samples in (1, 2):
        return 1
    if samples in (3, 4) or (samples > 4 and photometric in (2, 5, 6)):  # RGB/CMYK/YCbCr + extras
        return 3
    raise InputError(
        f"{path} has {samples} samples per pixel: gpudiff reads 1 to 4 (grey, grey+alpha, RGB, "
        f"RGBA, CMYK); split the channels into separate images"
    )


def _cmyk_to_rgb(cmyk: np.ndarray) -> np.ndarray:
    top = 1.0 if cmyk.dtype.kind == "f" else float(np.iinfo(cmyk.dtype).max)
    c, m, y, k = (cmyk[..., i].astype(np.float64) for i in range(4))
    rgb = np.stack([(top - c) * (top - k), (top - m) * (top - k), (top - y) * (top - k)], axis=-1) / top
    if cmyk.dtype.kind == "f":
        return rgb.astype(cmyk.dtype)
    return np.rint(rgb).astype(cmyk.dtype)


def _tiff_chain_cut(tif) -> bool:
    """True when the last page tifffile found points to a next page it could not read."""
    fh, spec = tif.filehandle, tif.tiff
    offset = int(tif.pages[-1].offset)
    fh.seek(offset)
    raw = fh.read(spec.tagnosize)
    if len(raw) < spec.tagnosize:
        return True
    (count,) = struct.unpack(spec.tagnoformat, raw)
    fh.seek(offset + spec.tagnosize + count * spec.tagsize)
    raw = fh.read(spec.offsetsize)
    if len(raw) < spec.offsetsize:
        return True
    (next_offset,) = struct.unpack(spec.offsetformat, raw)
    return next_offset != 0


class _TiffPlane:
    """How one page (or the keyframe of a series) turns into a frame: shapes, dtypes, colour."""

    def __init__(self, page, name):
        separate, depth, height, width, contig = (int(v) for v in page.shaped)
        samples = separate * contig
        photometric = int(page.photometric)
        if depth != 1:
            raise InputError(
                f"{name} is a volume ({depth} slices of {width} x {height}): save the slices as separate pages"
            )
        if page.dtype is None:
            raise InputError(
                f"{name} has a sample format gpudiff does not read ({page.bitspersample} bits, "
                f"sample format {int(page.sampleformat)}): save it as 8/16-bit or float"
            )
        channels = _tiff_channels(samples, photometric, name)
        dtype = _output_dtype(page.dtype, name)
        self.colormap = None
        if photometric == 3 and samples == 1:
            if page.colormap is None:
                raise InputError(f"{name} is a palette image without a colormap: re-export it")
            self.colormap = np.asarray(page.colormap)
            dtype = np.dtype(np.uint8) if np.all(self.colormap % 257 == 0) else np.dtype(np.uint16)
        self.separate, self.height, self.width, self.contig = separate, height, width, contig
        self.samples, self.photometric = samples, photometric
        self.inkset = getattr(page, "inkset", 1)
        self.dtype_in = np.dtype(page.dtype)
        self.bits = int(page.bitspersample)
        self.shape = (height, width) if channels == 1 else (height, width, 3)
        self.dtype = dtype
        self.nbytes = separate * height * width * contig * self.dtype_in.itemsize

    def convert(self, image):
        """A page's decoded array -> the frame (the same rules as ``read_image``)."""
        image = image.reshape(self.separate, self.height, self.width, self.contig)
        image = np.moveaxis(image[..., 0], 0, -1) if self.separate > 1 else image[0]
        if image.shape[2] == 1:
            image = image[:, :, 0]
        if self.colormap is not None:
            colormap = self.colormap
            if self.dtype == np.uint8:
                colormap = (colormap // 257).astype(np.uint8)
            return np.ascontiguousarray(np.moveaxis(colormap[:, image], 0, -1))
        if self.samples >= 4 and self.photometric == 5 and self.inkset in (1, None):  # CMYK
            return _cmyk_to_rgb(image[..., :4])
        if self.samples > 4:
            image = image[..., :3]
        return image


class _TiffSource(_Source):
    def __init__(self, path, fh, size, page, stack):
        import tifffile  # noqa: PLC0415

        tif = stack.enter_context(tifffile.TiffFile(fh, name=os.path.basename(path)))
        pages = len(tif.pages)
        if pages == 0:
            raise ValueError("no pages")
        if page >= pages:
            if _tiff_chain_cut(tif):
                raise ValueError(f"the chain of pages breaks after page {pages - 1}")
            raise _page_out_of_range(path, pages, page)
        p = tif.pages[page]
        if not hasattr(p, "shaped"):  # a TiffFrame: load the full page
            p = p.aspage()
        self.plane = _TiffPlane(p, f"{path} page {page}")
        self.path, self.page_obj, self.size = path, p, size
        shape, dtype = self.plane.shape, self.plane.dtype
        fmt = "OME-TIFF" if tif.is_ome else "TIFF"
        self.info = ImageInfo(path, fmt, shape, dtype, pages)

    def read(self):
        p = self.page_obj
        offsets = np.asarray(p.dataoffsets, dtype=np.int64)
        counts = np.asarray(p.databytecounts, dtype=np.int64)
        if offsets.size and int((offsets + counts).max()) > self.size:
            raise ValueError(
                f"pixel data declared up to byte {int((offsets + counts).max())}, the file has {self.size}"
            )
        return self.plane.convert(p.asarray())
