"""Single images from files (PNG, JPEG, BMP, PGM/PPM/PBM, TIFF/OME-TIFF, GIF) and arrays from Python.

Every file is checked cheaply before it is decoded: that it exists and is a readable regular file,
that its magic bytes name a format gpudiff reads (the extension is ignored), and that the size its
header declares fits the pixel budget, so a decompression bomb is refused before any pixel buffer
is allocated. Whatever goes wrong is raised as one :class:`~gpudiff.errors.InputError` whose
one-line message names the file and says the fix.

Decoders: tifffile for TIFF (with imagecodecs for compressed TIFF), imagecodecs for 16-bit PNG
(Pillow reduces 16-bit colour PNGs to 8 bits), a few lines of NumPy for PGM/PPM whose maxval is
not 255 (Pillow rescales or cuts those) and for 4/8-bit BMPs with a grey palette (which Pillow
unpacks wrongly), and Pillow for the rest.

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
import mmap
import operator
import os
import stat
import struct
import threading
from dataclasses import dataclass

import numpy as np

from ..backend import get_namespace
from ..errors import ConfigError, InputError
from ..options import DEFAULT_MAX_PIXELS

__all__ = ["ImageInfo", "probe_image", "read_image", "validate_array", "FORMATS"]

#: The formats read, as named in :attr:`ImageInfo.format` ('OME-TIFF' is reported for OME-TIFF).
FORMATS = ("PNG", "JPEG", "BMP", "PNM", "TIFF", "GIF")
_FORMATS_TEXT = "PNG, JPEG, BMP, PGM/PPM, TIFF, GIF"
_KEPT_DTYPES = (np.dtype(np.uint8), np.dtype(np.uint16), np.dtype(np.float32), np.dtype(np.float64))
_HEAD_BYTES = 64


@dataclass(frozen=True)
class ImageInfo:
    """What a file's header says about one of its pages, without decoding pixels.

    Attributes
    ----------
    path : str
        The file.
    format : str
        'PNG', 'JPEG', 'BMP', 'PNM', 'TIFF', 'OME-TIFF' or 'GIF' (from the magic bytes).
    shape : tuple of int
        Shape of the array :func:`read_image` returns for this page: ``(H, W)`` or ``(H, W, 3)``.
    dtype : numpy.dtype
        dtype of that array (uint8, uint16, float32 or float64).
    pages : int
        Number of pages (TIFF) or frames (GIF, animated PNG) in the file; 1 for the others.
    """

    path: str
    format: str
    shape: tuple
    dtype: np.dtype
    pages: int

    @property
    def pixels(self) -> int:
        """Height x width declared for the page: what the pixel budget is checked against."""
        return int(self.shape[0]) * int(self.shape[1])


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
    with _open_source(path, page) as src:
        _check_budget(src.info, max_pixels)
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
    if not (hasattr(image, "dtype") and hasattr(image, "shape") and hasattr(image, "ndim")):
        try:
            image = np.asarray(image)
        except Exception:
            raise InputError(
                f"{name} is not an array ({type(image).__name__}): give a NumPy or CuPy array"
            ) from None
    xp = get_namespace(image)
    dtype = np.dtype(image.dtype)
    shape = tuple(int(s) for s in image.shape)
    if dtype.kind == "c":
        raise InputError(
            f"{name} has dtype {dtype}: gpudiff compares real-valued images; take np.abs or .real first"
        )
    if dtype.kind not in "biuf":
        raise InputError(
            f"{name} has dtype {dtype}: gpudiff compares numeric images; "
            f"convert it first, e.g. np.asarray(image, dtype=np.float64)"
        )
    if image.ndim not in (2, 3):
        raise InputError(
            f"{name} has shape {shape}: gpudiff takes (H, W) grey or (H, W, C) colour with C = 1..4; "
            f"for a stack, pass one frame at a time"
        )
    if 0 in shape:
        raise InputError(f"{name} is empty (shape {shape}): give an image with at least one pixel")
    if image.ndim == 3:
        channels = shape[2]
        if not 1 <= channels <= 4:
            raise InputError(
                f"{name} has shape {shape}: the last axis must hold 1 to 4 channels; "
                f"if channels come first, pass np.moveaxis(image, 0, -1)"
            )
        if channels in (1, 2):
            image = xp.ascontiguousarray(image[:, :, 0])
        elif channels == 4:
            image = xp.ascontiguousarray(image[:, :, :3])
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
    if image.dtype.kind == "f":
        _check_finite(image, xp, name)
    return image


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


def _sci(n) -> str:
    """2500000000 -> '2.5e9', 1073741824 -> '1.07e9', 12345 -> '12345'."""
    n = int(n)
    if n < 1_000_000:
        return str(n)
    mantissa, exponent = f"{n:.3g}".split("e")
    return f"{mantissa}e{int(exponent)}"


def _check_budget(info: ImageInfo, max_pixels: int) -> None:
    height, width = int(info.shape[0]), int(info.shape[1])
    pixels = height * width
    if pixels > max_pixels:
        raise InputError(
            f"{info.path} declares {width} x {height} = {_sci(pixels)} pixels, over the budget of "
            f"{_sci(max_pixels)}: raise --max-pixels if you trust it"
        )


def _check_finite(image, xp, name) -> None:
    with np.errstate(invalid="ignore"):
        lo, hi = image.min(), image.max()
        finite = bool(xp.isfinite(lo)) and bool(xp.isfinite(hi))  # sync
    if finite:
        return
    n_nan = int(xp.count_nonzero(xp.isnan(image)))  # sync
    n_inf = int(xp.count_nonzero(xp.isinf(image)))  # sync
    raise InputError(
        f"{name} has {n_nan} NaN and {n_inf} Inf values: replace them (np.nan_to_num) or mask them first"
    )


def _output_dtype(dtype, name) -> np.dtype:
    """The dtype validate_array turns ``dtype`` into (for probe_image), or InputError."""
    dtype = np.dtype(dtype)
    if dtype.kind == "c":
        raise InputError(
            f"{name} has dtype {dtype}: gpudiff compares real-valued images; take np.abs or .real first"
        )
    if dtype.kind not in "biuf":
        raise InputError(
            f"{name} has dtype {dtype}, which gpudiff does not read: save it as integers or floats"
        )
    dtype = dtype.newbyteorder("=")
    if dtype.kind == "b":
        return np.dtype(np.uint8)
    if dtype in _KEPT_DTYPES:
        return dtype
    if dtype.kind == "f" and dtype.itemsize < 4:
        return np.dtype(np.float32)
    return np.dtype(np.float64)


def _first_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 160 else text[:157] + "..."


def _corrupt(path, fmt, exc) -> InputError:
    reason = _first_line(exc) if not isinstance(exc, str) else exc
    return InputError(
        f"{path} is truncated or corrupt ({fmt}: {reason}): re-export or copy the file again"
    )


def _raise_pillow_bomb(exc, info: ImageInfo, max_pixels: int) -> None:
    try:
        from PIL import Image  # noqa: PLC0415
    except ImportError:  # pragma: no cover
        return
    if isinstance(exc, Image.DecompressionBombError):
        raise InputError(
            f"{info.path} declares more than {_sci(max_pixels)} pixels in one of its frames "
            f"(over the budget): raise --max-pixels if you trust it"
        ) from None


# --------------------------------------------------------------------------------------------
# Pillow's process-wide limits, set while reads are in flight

_PIL_LOCK = threading.Lock()
_PIL_BUDGETS: list[int] = []
_PIL_SAVED: tuple | None = None


@contextlib.contextmanager
def _pillow_guard(max_pixels: int):
    """Pillow refuses nothing our budget allows, and never fills truncated files with grey.

    Pillow keeps these settings in module globals; they are set on entry of the first read in
    flight (MAX_IMAGE_PIXELS to the largest budget in flight: Pillow raises above twice that),
    and the saved values come back when the last read in flight exits.
    """
    global _PIL_SAVED
    from PIL import Image, ImageFile  # noqa: PLC0415

    with _PIL_LOCK:
        if not _PIL_BUDGETS:
            _PIL_SAVED = (Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES)
        _PIL_BUDGETS.append(max_pixels)
        Image.MAX_IMAGE_PIXELS = max(_PIL_BUDGETS)
        ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        yield
    finally:
        with _PIL_LOCK:
            _PIL_BUDGETS.remove(max_pixels)
            if _PIL_BUDGETS:
                Image.MAX_IMAGE_PIXELS = max(_PIL_BUDGETS)
            else:
                Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES = _PIL_SAVED
                _PIL_SAVED = None


# --------------------------------------------------------------------------------------------
# the file: exists, readable, magic bytes


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


def _cannot_read(path: str, exc: OSError, fix: str = "check the path") -> InputError:
    """The one-line error for a file the OS will not let us stat, open or read."""
    if isinstance(exc, PermissionError):
        return InputError(
            f"{path} cannot be read (permission denied): check the permissions of the file and its folders"
        )
    return InputError(f"{path} cannot be read ({_first_line(exc)}): {fix}")


def _stat_file(path: str):
    """os.stat of a path the user named, or the InputError that says what is wrong."""
    try:
        return os.stat(path)
    except FileNotFoundError:
        raise InputError(f"{path} not found: check the path") from None
    except NotADirectoryError:
        raise InputError(f"{path} not found (a parent is a file, not a folder): check the path") from None
    except OSError as exc:
        raise _cannot_read(path, exc) from None


def _open_file(path: str):
    """Open ``path`` for reading after the cheap checks; returns (file object, size in bytes)."""
    st = _stat_file(path)
    if stat.S_ISDIR(st.st_mode):
        raise InputError(f"{path} is a directory: give an image file (gpudiff run takes folders)")
    if not stat.S_ISREG(st.st_mode):
        raise InputError(f"{path} is not a regular file: give an image file")
    if st.st_size == 0:
        raise InputError(f"{path} is empty (0 bytes): the file was not written completely; export it again")
    try:
        fh = open(path, "rb")  # noqa: SIM115 - closed by the caller's ExitStack
    except OSError as exc:
        raise _cannot_read(path, exc) from None
    return fh, st.st_size


class _Source:
    """One page of an opened file: ``info`` (from the header) and ``read()`` (decodes)."""

    info: ImageInfo

    def read(self) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError


@contextlib.contextmanager
def _open_source(path, page: int):
    path = os.fspath(path)
    if isinstance(path, bytes):
        path = os.fsdecode(path)
    with contextlib.ExitStack() as stack:
        fh, size = _open_file(path)
        stack.enter_context(fh)
        try:
            head = fh.read(_HEAD_BYTES)
        except OSError as exc:
            raise _cannot_read(path, exc, "check the file") from None
        fmt = _sniff(head)
        if fmt is None:
            raise InputError(f"{path} is not an image gpudiff can read ({_FORMATS_TEXT})")
        fh.seek(0)
        try:
            if fmt == "TIFF":
                src = _TiffSource(path, fh, size, page, stack)
            elif fmt == "GIF":
                src = _GifSource(path, fh, size, page, stack)
            elif fmt == "PNM":
                src = _PnmSource(path, fh, size, page)
            elif fmt == "PNG":
                src = _PngSource(path, fh, size, page, head)
            else:
                src = _PillowSource(path, fh, fmt, page)
        except (InputError, MemoryError):
            raise
        except Exception as exc:
            raise _corrupt(path, fmt, exc) from None
        yield src


def _page_out_of_range(path, pages, page) -> InputError:
    plural = "page" if pages == 1 else "pages"
    return InputError(
        f"{path} has {pages} {plural}; --page {page} is out of range (use 0 to {pages - 1})"
    )


# --------------------------------------------------------------------------------------------
# Pillow (PNG, JPEG, BMP, PNM up to 8 bits, GIF)

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


# --------------------------------------------------------------------------------------------
# PNG: IHDR parsed here (size before Pillow sees it; 16 bits go to imagecodecs)


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
        image = imagecodecs.png_decode(self.fh.read())
        if image.ndim == 3 and image.shape[2] in (2, 4):
            image = image[..., :-1]
        return image


# --------------------------------------------------------------------------------------------
# PNM: header parsed here; maxval > 255 decoded here (Pillow reduces 16-bit PPM to 8 bits)


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


# --------------------------------------------------------------------------------------------
# GIF: the block structure walked here (frame count, canvas size, truncation), Pillow decodes


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


# --------------------------------------------------------------------------------------------
# TIFF (and OME-TIFF): tifffile


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
