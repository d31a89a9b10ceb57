"""TIFF and OME-TIFF pages through tifffile: channels, CMYK, planar and palette pages to frames.

:class:`_TiffPlane` and :func:`_tiff_chain_cut` are shared with the TIFF stack source (``_tiff``).
"""

from __future__ import annotations

import os
import re
import struct

import numpy as np

from ..errors import InputError
from ._decoderlog import DecoderLog
from ._imageinfo import ImageInfo, _Source
from ._readerrors import _page_out_of_range
from ._validate import _output_dtype


# --------------------------------------------------------------------------------------------
# tifffile's log: kept off stderr, and what it says about a page's structure made an error


_TIFF_LOG = DecoderLog("tifffile")

#: Collect tifffile's log records (truncation notices, tags it could not parse) of this thread into
#: the list it yields (nothing reaches stderr); nested uses each get their own list.
_quiet_tifffile = _TIFF_LOG.collect


#: Tags that decide what the pixels are: when tifffile could not parse one of them it drops it and
#: uses the default (BitsPerSample 1, no compression...), which decodes the wrong image silently.
_STRUCTURE_TAGS = {
    256: "ImageWidth", 257: "ImageLength", 258: "BitsPerSample", 259: "Compression",
    262: "PhotometricInterpretation", 266: "FillOrder", 273: "StripOffsets", 277: "SamplesPerPixel",
    278: "RowsPerStrip", 279: "StripByteCounts", 284: "PlanarConfiguration", 317: "Predictor",
    320: "ColorMap", 322: "TileWidth", 323: "TileLength", 324: "TileOffsets", 325: "TileByteCounts",
    338: "ExtraSamples", 339: "SampleFormat", 347: "JPEGTables", 530: "YCbCrSubSampling",
}
_TAG_CODE = re.compile(r"TiffTag (\d+) @")
_COUNT_WRONG = re.compile(r"incorrect (StripOffsets|StripByteCounts|TileOffsets|TileByteCounts) count \((\d+) != (\d+)\)")


def _tiff_damage(page, messages) -> str | None:
    """Why tifffile's reading of ``page`` cannot be trusted (a short reason), or None.

    ``messages`` are tifffile's log records from parsing the page and decoding it. Refused: a
    structure tag it could not parse (a broken BitsPerSample becomes 1-bit), strip offsets and
    byte counts that do not match the image size (it reads what it can and fills the rest), data
    segments missing in the decode, and a StripByteCounts of 0 for a page of several strips (that
    strip would read as zeros; a single uncompressed strip is read by its computed size, correctly).
    """
    for text in messages:
        m = _TAG_CODE.search(text)
        if m and int(m.group(1)) in _STRUCTURE_TAGS:
            reason = text.split("> ", 2)[-1].rstrip("')")
            return f"its {_STRUCTURE_TAGS[int(m.group(1))]} tag is unreadable ({reason})"
        m = _COUNT_WRONG.search(text)
        if m:
            return f"it has {m.group(2)} {m.group(1)} where its size needs {m.group(3)}"
        if "read_segments" in text or "corrupted" in text:
            return text.split("> ", 1)[-1].replace("tifffile.read_segments: ", "")
    if "StripByteCounts" in getattr(page, "tags", {}):
        counts = [int(c) for c in page.databytecounts]
        if len(counts) > 1 and 0 in counts:
            return f"its StripByteCounts declares 0 bytes for strip {counts.index(0)} of {len(counts)}"
        dtype = getattr(page, "dtype", None)
        if int(page.compression) == 1 and dtype is not None and int(page.bitspersample) == 8 * dtype.itemsize:
            # uncompressed: tifffile reads the image's size from the first offset, past what the
            # strips declare (the bytes of whatever follows) when the size tags were edited
            need = int(np.prod([int(v) for v in page.shaped])) * dtype.itemsize
            if 0 < sum(counts) < need:
                return f"its strips hold {sum(counts)} bytes, its size needs {need}"
    return None


def _damaged(name, page_no, reason) -> InputError:
    return InputError(
        f"{name} page {page_no} is damaged ({reason}): tifffile would decode it wrongly; "
        f"re-export or copy the file again"
    )


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

        # tifffile's log records stay off stderr; those about the page read become the error
        with _quiet_tifffile() as opening:  # the header and the first page
            tif = stack.enter_context(tifffile.TiffFile(fh, name=os.path.basename(path)))
        with _quiet_tifffile():  # the chain of pages (a break after the page read is no harm)
            pages = len(tif.pages)
        if pages == 0:
            raise ValueError("no pages")
        if page >= pages:
            with _quiet_tifffile():
                cut = _tiff_chain_cut(tif)
            if cut:
                raise ValueError(f"the chain of pages breaks after page {pages - 1}")
            raise _page_out_of_range(path, pages, page)
        with _quiet_tifffile() as loading:
            p = tif.pages[page]
            if not hasattr(p, "shaped"):  # a TiffFrame: load the full page
                p = p.aspage()
        self.messages = (opening if page == 0 else []) + loading
        self.plane = _TiffPlane(p, f"{path} page {page}")
        self.path, self.page_obj, self.size, self.page = path, p, size, page
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
        reason = _tiff_damage(p, self.messages)
        if reason is None:
            with _quiet_tifffile() as decoding:
                image = p.asarray()
            reason = _tiff_damage(p, decoding)
        if reason is not None:
            raise _damaged(self.path, self.page, reason)
        return self.plane.convert(image)
