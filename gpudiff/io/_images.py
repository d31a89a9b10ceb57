"""Single images from files (PNG, JPEG, BMP, PGM/PPM/PBM, TIFF/OME-TIFF, GIF) and arrays from Python.

Every file is checked cheaply before it is decoded: that it exists and is a readable regular file,
that its magic bytes name a format gpudiff reads (the extension is ignored), and that the size its
header declares fits the pixel budget and, decoded, the memory available (``_memory``: the decoded
bytes times the working copies against MemAvailable, the cgroup limit or ``GPUDIFF_MEMORY_LIMIT``),
so a decompression bomb is refused before any pixel buffer is allocated. Whatever goes wrong is
raised as one :class:`~gpudiff.errors.InputError` whose one-line message names the file and says
the fix.

Decoders: tifffile for TIFF (with imagecodecs for compressed TIFF), imagecodecs for 16-bit PNG
(Pillow reduces 16-bit colour PNGs to 8 bits), a few lines of NumPy for PGM/PPM whose maxval is
not 255 (Pillow rescales or cuts those) and for 4/8-bit BMPs with a grey palette (which Pillow
unpacks wrongly), and Pillow for the rest.

This module opens the file, tells its format by the magic bytes and hands it to that format's
reader: ``_read_pillow`` (JPEG, BMP, and PNG/PNM up to 8 bits), ``_read_png``, ``_read_pnm``,
``_read_gif``, ``_read_tiff``; each describes the page in an :class:`ImageInfo` (``_imageinfo``)
from the header before anything is decoded. The checks and conversion of arrays and options are in
``_validate``, the one-line errors in ``_readerrors``, Pillow's process-wide limits in
``_pillow_limits``.

What comes out (see :func:`validate_array` for arrays given directly):

- ``(H, W)`` for grey, ``(H, W, 3)`` for colour; channels last.
- dtype uint8, uint16, float32 or float64. 16-bit data stays uint16. bool and 1-bit images become
  uint8 0/255 (so that a dtype-derived data range of 255 fits them); float16 becomes float32;
  every other integer type (int8/16/32/64, uint32/64) becomes float64 with its values kept
  (exactly up to 2**53). Complex, object, string and date types are refused.
- Alpha is dropped (RGBA -> RGB, grey+alpha -> grey); palette images are expanded to RGB; CMYK,
  YCbCr and the other colour modes are converted to RGB. TIFF pages with 2 or 4 samples drop the
  last (alpha) one, except CMYK (4 samples, photometric 'separated'), which is converted to RGB;
  planar TIFF pages (samples first) are moved to channels last; palette TIFF pages are expanded to
  RGB (uint8 when the colormap holds 8-bit values scaled by 257, otherwise uint16).
- Values are returned as stored: a TIFF 'min-is-white' page is not inverted (as tifffile and
  scikit-image read it), a PGM/PPM with maxval 1000 gives uint16 values 0..1000 and one with
  maxval 15 gives uint8 values 0..15 (as OpenCV reads them), and a JPEG's EXIF orientation is
  not applied.
"""

from __future__ import annotations

import contextlib
import io
import os
import struct

from ..errors import InputError
from ..options import DEFAULT_MAX_PIXELS
from ._imageinfo import ImageInfo
from ._memory import _check_memory
from ._pillow_limits import _pillow_guard, _raise_pillow_bomb
from ._readerrors import _cannot_read, _corrupt, _open_file
from ._validate import _check_budget, _check_max_pixels, _check_page, validate_array

__all__ = ["probe_image", "read_image"]

_FORMATS_TEXT = "PNG, JPEG, BMP, PGM/PPM, TIFF, GIF"
_HEAD_BYTES = 64


# --------------------------------------------------------------------------------------------
# public functions


def probe_image(path, *, page=0, max_pixels=None) -> ImageInfo:
    """Describe one page of an image file from its header, without decoding pixels.

    Parameters
    ----------
    path : str or os.PathLike
        The image file. Its format is chosen by its magic bytes, not its extension.
    page : int, optional
        Page of a multi-page TIFF, frame of a GIF or animated PNG (0 = first).
    max_pixels : int or None, optional
        When given, also refuse a page whose declared height x width is over this budget.

    Returns
    -------
    ImageInfo
        The path, format, shape and dtype :func:`read_image` would return, and the page count.

    Raises
    ------
    gpudiff.errors.InputError
        Missing, unreadable, empty, unknown or corrupt file; page out of range; unsupported
        dtype or channel layout; over the budget (only when ``max_pixels`` is given).

    Notes
    -----
    Reads the header only (Pillow's lazy open, tifffile's page tags, the PNG IHDR chunk, the PNM
    header). Counting the pages of a GIF walks its block structure and a TIFF's page chain; no
    pixel data is decoded.
    """
    page = _check_page(page)
    if max_pixels is not None:
        max_pixels = _check_max_pixels(max_pixels)
    with _open_source(path, page) as src:
        if max_pixels is not None:
            _check_budget(src.info, max_pixels)
        return src.info


def read_image(path, *, page=0, max_pixels=DEFAULT_MAX_PIXELS):
    """Read one page of an image file into a NumPy array.

    Parameters
    ----------
    path : str or os.PathLike
        The image file: PNG, JPEG, BMP, PGM/PPM/PBM, TIFF (OME-TIFF included) or GIF, chosen by
        its magic bytes, not its extension.
    page : int, optional
        Page of a multi-page TIFF, frame of a GIF or animated PNG (0 = first).
    max_pixels : int, optional
        Pixel budget (height x width). A page that declares more is refused before anything is
        decoded or allocated. Default :data:`gpudiff.options.DEFAULT_MAX_PIXELS` (2**30).

    Returns
    -------
    numpy.ndarray
        ``(H, W)`` grey or ``(H, W, 3)`` colour, dtype uint8, uint16, float32 or float64 (the
        conversions are listed in this module's docstring), checked by :func:`validate_array`.

    Raises
    ------
    gpudiff.errors.InputError
        With a one-line message naming the file and the fix: missing file, a directory, permission
        denied, empty file, not an image, truncated or corrupt data, page out of range, declared
        size over the budget, unsupported dtype, NaN or Inf values.

    Notes
    -----
    Pillow's globals ``Image.MAX_IMAGE_PIXELS`` and ``ImageFile.LOAD_TRUNCATED_IMAGES`` are set
    while a read is in flight (to the largest budget in flight, and to False, so a truncated file
    is an error and never a grey-filled image) and put back when the last read in flight ends.
    """
    page = _check_page(page)
    max_pixels = _check_max_pixels(max_pixels)
    return _read_opened(_open_source(path, page), max_pixels)


def _read_image_bytes(data: bytes, name: str, *, page=0, max_pixels=DEFAULT_MAX_PIXELS):
    """:func:`read_image` of an image held in memory (an object fetched from a URL); ``name`` (the
    URL) is what the messages name. The same checks, budget first, and the same readers."""
    page = _check_page(page)
    max_pixels = _check_max_pixels(max_pixels)
    return _read_opened(_open_source(name, page, data=data), max_pixels)


def _probe_image_bytes(data: bytes, name: str, *, page=0) -> ImageInfo:
    """:func:`probe_image` of an image held in memory, named ``name`` in messages."""
    with _open_source(name, _check_page(page), data=data) as src:
        return src.info


def _read_opened(opened, max_pixels):
    with opened as src:
        _check_budget(src.info, max_pixels)
        _check_memory(src.info)
        with _pillow_guard(max_pixels):
            try:
                image = src.read()
            except InputError:
                raise
            except MemoryError:
                raise
            except Exception as exc:
                _raise_pillow_bomb(exc, src.info, max_pixels)
                raise _corrupt(src.info.path, src.info.format, exc) from None
    return validate_array(image, name=src.info.path)


# --------------------------------------------------------------------------------------------
# the file: magic bytes, then the reader of its format


def _sniff(head: bytes) -> str | None:
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if head.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "GIF"
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "TIFF"
    if head.startswith(b"BM") and len(head) >= 18:
        (dib_size,) = struct.unpack_from("<I", head, 14)
        if dib_size in (12, 16, 40, 52, 56, 64, 108, 124):
            return "BMP"
    if len(head) >= 3 and head[0:1] == b"P" and head[1:2] in b"123456" and head[2:3] in b" \t\r\n#":
        return "PNM"
    return None


def _in_memory_file(data: bytes, fmt: str, stack):
    """A file object over ``data``: BytesIO, or an anonymous temporary file for the readers that
    need a real file descriptor (the GIF block walker maps the file; raw PNM samples use fromfile)."""
    if fmt not in ("GIF", "PNM"):
        return io.BytesIO(data)
    import tempfile  # noqa: PLC0415

    fh = stack.enter_context(tempfile.TemporaryFile())
    fh.write(data)
    fh.seek(0)
    return fh


@contextlib.contextmanager
def _open_source(path, page: int, data: bytes | None = None):
    path = os.fspath(path)
    if isinstance(path, bytes):
        path = os.fsdecode(path)
    with contextlib.ExitStack() as stack:
        if data is None:
            fh, size = _open_file(path)
            stack.enter_context(fh)
            try:
                head = fh.read(_HEAD_BYTES)
            except OSError as exc:
                raise _cannot_read(path, exc, "check the file") from None
        else:
            size = len(data)
            if size == 0:
                raise InputError(
                    f"{path} is empty (0 bytes): the object was not written completely; upload it again"
                )
            head = bytes(data[:_HEAD_BYTES])
        fmt = _sniff(head)
        if fmt is None:
            raise InputError(f"{path} is not an image gpudiff can read ({_FORMATS_TEXT})")
        if data is None:
            fh.seek(0)
        else:
            fh = _in_memory_file(data, fmt, stack)
        # each format's reader is imported with its first file, so `import gpudiff` does not pay for it
        try:
            if fmt == "TIFF":
                from ._read_tiff import _TiffSource  # noqa: PLC0415

                src = _TiffSource(path, fh, size, page, stack)
            elif fmt == "GIF":
                from ._read_gif import _GifSource  # noqa: PLC0415

                src = _GifSource(path, fh, size, page, stack)
            elif fmt == "PNM":
                from ._read_pnm import _PnmSource  # noqa: PLC0415

                src = _PnmSource(path, fh, size, page)
            elif fmt == "PNG":
                from ._read_png import _PngSource  # noqa: PLC0415

                src = _PngSource(path, fh, size, page, head)
            else:
                from ._read_pillow import _PillowSource  # noqa: PLC0415

                src = _PillowSource(path, fh, fmt, page)
        except (InputError, MemoryError):
            raise
        except Exception as exc:
            raise _corrupt(path, fmt, exc) from None
        yield src
