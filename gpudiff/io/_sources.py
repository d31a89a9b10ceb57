"""Sequences of frames: what ``gpudiff run`` is pointed at, opened lazily.

:func:`open_source` looks at what it is given and returns a :class:`Source`, which knows how many
frames there are and reads one frame at a time; nothing reads a whole archive into memory.

======== ===================================================================================
kind     what it is, and what a frame is
======== ===================================================================================
folder   a directory of image files (by extension, or by magic bytes for other names; hidden
         files and subfolders skipped) or a glob pattern; natural sort (``img2`` before
         ``img10``); a frame is one file, read by :func:`~gpudiff.io.read_image`.
tiff     a multi-page TIFF, OME-TIFF or ImageJ hyperstack (tifffile); frames are the planes of
         its first series, the product of its non-YXS axes in file order (``TZCYX`` -> T*Z*C
         grey frames); pages are read on demand, by page or by offset for contiguous data.
zarr     a Zarr v2/v3 array (``store.zarr``, ``store.zarr/inner/path``, or ``component=``);
         frames along axis 0 of ``(T, H, W)`` or ``(T, H, W, C)``; OME-Zarr: the full-resolution
         level, its ``t``/``z`` axes (and ``c`` unless it has 1 or 3 channels) are frame axes.
video    a video file read with PyAV (optional: ``gpudiff[video]``); frames decoded to RGB (grey
         for grey formats), uint8, uint16 above 8 bits.
gif      an animated GIF (Pillow); frames composited as browsers show them, RGB uint8.
manifest a CSV with the header ``reference,moving[,id]``; frames are the distinct image paths
         in order of first appearance; :meth:`Source.pairs` gives the pairs as frame indices.
======== ===================================================================================

Every frame comes out as :func:`~gpudiff.io.validate_array` returns it: ``(H, W)`` or
``(H, W, 3)``, channels last, alpha dropped, dtype uint8/uint16/float32/float64. Everything that goes
wrong is one :class:`~gpudiff.errors.InputError` whose one-line message names the file (and the
frame) and says the fix. Reading is thread-safe.

Truncated files are reported, never silently shortened: a TIFF whose metadata (ImageJ ``images=``,
OME-XML, tifffile's shape) declares more pages than the file holds, or whose chain of pages breaks,
keeps its declared length (one more than the readable pages for a broken chain without metadata),
and reading a missing page raises an InputError that says the file is truncated. A video whose
container declares more frames than it holds does the same.

A :class:`Source` pickles to its parameters (and the listing it froze at open: a folder's files, a
manifest's paths) and reopens its files lazily in the other process, for Dask distributed workers.
"""

from __future__ import annotations

import contextlib
import csv
import glob
import hashlib
import logging
import math
import operator
import os
import re
import stat
import threading
import time
from collections import OrderedDict
from fractions import Fraction

import numpy as np

from ..errors import ConfigError, InputError
from ..options import DEFAULT_MAX_PIXELS
from ._images import (
    _check_max_pixels,
    _first_line,
    _output_dtype,
    _pillow_guard,
    _sci,
    _sniff,
    _stat_file,
    _tiff_chain_cut,
    _TiffPlane,
    _whole_number,
    probe_image,
    read_image,
    validate_array,
)

__all__ = [
    "Source",
    "FolderSource",
    "TiffSource",
    "ZarrSource",
    "VideoSource",
    "GifSource",
    "ManifestSource",
    "SOURCE_KINDS",
    "IMAGE_EXTENSIONS",
    "VIDEO_EXTENSIONS",
    "natural_key",
    "open_source",
]

#: The kinds of :class:`Source`, as in :attr:`Source.kind`.
SOURCE_KINDS = ("folder", "tiff", "zarr", "video", "gif", "manifest")
#: File names a folder or glob takes as images without looking inside (others: by magic bytes).
IMAGE_EXTENSIONS = frozenset(
    {".png", ".jpg", ".jpeg", ".jpe", ".bmp", ".pgm", ".ppm", ".pnm", ".pbm", ".tif", ".tiff", ".gif"}
)
#: Containers opened as videos (also recognised by their magic bytes).
VIDEO_EXTENSIONS = frozenset(
    {".avi", ".mp4", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".ogv", ".wmv", ".flv", ".ts", ".mts"}
    | {".m2ts", ".3gp"}
)
_SEQUENCES_TEXT = (
    "a folder or glob of images, a multi-page TIFF, a Zarr array, a video, an animated GIF or a CSV pair manifest"
)
_GLOB_CHARS = re.compile(r"[*?\[]")
_DIGITS = re.compile(r"([0-9]+)")
#: A fingerprint lists its files one by one up to this many (always: count and sha256).
_FINGERPRINT_LISTED = 64
#: A video's packet table travels with a pickled source up to this many frames (else rebuilt).
_VIDEO_INDEX_PICKLED = 200_000
#: Zarr blocks along the frame axis cached per source (bytes), so a chunk of 64 frames is decoded once.
_ZARR_CACHE_BYTES = 256 << 20
_ZARR_BLOCK_BYTES = 64 << 20


def natural_key(text: str):
    """Sort key that orders digit runs by value: ``img2.png`` before ``img10.png``.

    Text runs compare case-insensitively; the text itself breaks ties (``img01`` vs ``img1``).
    """
    parts = _DIGITS.split(text)
    return tuple(int(p) if i % 2 else p.casefold() for i, p in enumerate(parts)), text


# --------------------------------------------------------------------------------------------
# the base class


class Source:
    """A sequence of frames opened lazily. Use :func:`open_source` to make one.

    Attributes
    ----------
    kind : str
        'folder', 'tiff', 'zarr', 'video', 'gif' or 'manifest'.
    spec : str
        What the user gave (a path or glob; for Zarr with a component, ``path`` and
        :attr:`component` separately).
    max_pixels : int
        Pixel budget each frame is checked against before it is decoded.
    """

    kind = "source"
    #: Attributes that hold open handles or locks: dropped when pickled, remade on first use.
    _TRANSIENT: tuple = ("_lock",)

    def __init__(self, spec: str, *, max_pixels: int):
        self.spec = spec
        self.max_pixels = max_pixels
        self._init_transient()

    # -- the interface --------------------------------------------------------------------

    def __len__(self) -> int:
        return self._length()

    @property
    def frame_shape(self) -> tuple | None:
        """Shape of frame 0 as :meth:`read` returns it, ``(H, W)`` or ``(H, W, 3)``; None if unknown."""
        return None

    @property
    def dtype(self) -> np.dtype | None:
        """dtype of frame 0 as :meth:`read` returns it; None if unknown."""
        return None

    def read(self, index: int) -> np.ndarray:
        """Frame ``index`` (0-based; negative counts from the end), validated like ``read_image``.

        Raises
        ------
        IndexError
            ``index`` outside ``-len .. len-1``.
        gpudiff.errors.InputError
            The frame cannot be read (missing, truncated or corrupt data, over the pixel budget);
            the one-line message names the file and the frame.
        """
        return self._read(self._index(index))

    def label(self, index: int) -> str:
        """Human name of a frame for messages and exports: a file path, ``stack.tif[page 12]``..."""
        return self._label(self._index(index))

    def fingerprint(self) -> dict:
        """JSON-able identity of the input: kind, spec and the files' sizes and mtimes.

        Files are summarised as ``count`` and a ``sha256`` over the sorted (name, size,
        mtime_ns) list; up to 64 files are also listed one by one.
        """
        raise NotImplementedError

    def pairs(self) -> list[tuple[int, int]] | None:
        """Explicit (reference, moving) frame-index pairs (a manifest); None for sequences."""
        return None

    def frame_times(self) -> np.ndarray | None:
        """Seconds from the first frame, one per frame (float64; NaN where unknown), for sources
        whose frames have a time (videos); None for the others."""
        return None

    def pair_ids(self) -> list[str] | None:
        """The manifest's ``id`` column, one per pair; None without one (and for sequences)."""
        return None

    def close(self) -> None:
        """Close open files; a later read reopens them."""
        self._close()

    # -- plumbing -------------------------------------------------------------------------

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self) -> str:
        try:
            n = len(self)
        except Exception:  # pragma: no cover - repr must not raise
            n = "?"
        return f"<{type(self).__name__} {self.spec!r}: {n} frames>"

    def __getstate__(self):
        state = self.__dict__.copy()
        for name in self._TRANSIENT:
            state.pop(name, None)
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._init_transient()

    def _init_transient(self) -> None:
        for name in self._TRANSIENT:
            setattr(self, name, None)
        self._lock = threading.RLock()

    def _close(self) -> None:
        pass

    def _index(self, index) -> int:
        try:
            i = operator.index(index)
        except TypeError:
            raise TypeError(f"frame index must be an integer, not {type(index).__name__}") from None
        n = len(self)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"frame {index} out of range for {self.spec} ({n} frames)")
        return i

    def _length(self) -> int:  # pragma: no cover - abstract
        raise NotImplementedError

    def _read(self, i: int) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def _label(self, i: int) -> str:  # pragma: no cover - abstract
        raise NotImplementedError


# --------------------------------------------------------------------------------------------
# shared helpers


def _check_budget(name, height, width, max_pixels) -> None:
    pixels = int(height) * int(width)
    if pixels > max_pixels:
        raise InputError(
            f"{name} declares {int(width)} x {int(height)} = {_sci(pixels)} pixels, over the budget of "
            f"{_sci(max_pixels)}: raise --max-pixels if you trust it"
        )


def _check_frame_budget(name, n, page_budget) -> None:
    if page_budget is not None and n > page_budget:
        raise InputError(
            f"{name} has {n} frames, over the page budget of {page_budget}: "
            f"raise the page budget if you trust it"
        )


def _stat_entry(path: str, name: str | None = None) -> tuple:
    """(name, size, mtime_ns) of a file; size and mtime None when it cannot be stat'ed."""
    try:
        st = os.stat(path)
        return (name or path, int(st.st_size), int(st.st_mtime_ns))
    except OSError:
        return (name or path, None, None)


def _files_fingerprint(entries) -> dict:
    entries = sorted(entries, key=lambda e: e[0])
    digest = hashlib.sha256()
    for name, size, mtime in entries:
        digest.update(f"{name}\0{size}\0{mtime}\n".encode("utf-8", "surrogateescape"))
    out = {"count": len(entries), "sha256": digest.hexdigest()}
    if len(entries) <= _FINGERPRINT_LISTED:
        out["files"] = [{"path": n, "size": s, "mtime_ns": m} for n, s, m in entries]
    return out


def _read_head(path: str, n: int = 64) -> bytes:
    try:
        with open(path, "rb") as fh:
            return fh.read(n)
    except PermissionError:
        raise InputError(
            f"{path} cannot be read (permission denied): check the permissions of the file and its folders"
        ) from None
    except OSError as exc:
        raise InputError(f"{path} cannot be read ({_first_line(exc)}): check the file") from None


def _single_image(path: str) -> InputError:
    return InputError(
        f"{path} is a single image: gpudiff run takes a sequence (folder, glob, multi-page TIFF, "
        f"Zarr, video) or a pair manifest; use gpudiff compare for two images"
    )


# --------------------------------------------------------------------------------------------
# folder / glob


def _is_image_file(path: str, name: str) -> bool:
    if os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS:
        return True
    try:
        with open(path, "rb") as fh:
            head = fh.read(64)
    except OSError:
        return False
    return _sniff(head) is not None


class _ImageFilesMixin:
    """Shape and dtype of a source made of image files, probed (headers only) from its first file."""

    _probe = None

    def _first_info(self):
        if self._probe is None:
            try:
                self._probe = probe_image(self._first_file())
            except InputError:
                self._probe = False
        return self._probe or None

    @property
    def frame_shape(self):
        info = self._first_info()
        return None if info is None else tuple(info.shape)

    @property
    def dtype(self):
        info = self._first_info()
        return None if info is None else info.dtype


class FolderSource(_ImageFilesMixin, Source):
    """Image files of one folder, or the files a glob pattern matches, in natural order."""

    kind = "folder"
    _TRANSIENT = ("_lock", "_probe")

    def __init__(self, spec: str, *, max_pixels: int, page_budget=None):
        super().__init__(spec, max_pixels=max_pixels)
        if os.path.isdir(spec):
            self._dir = spec
            names = []
            try:
                entries = list(os.scandir(spec))
            except PermissionError:
                raise InputError(
                    f"{spec} cannot be listed (permission denied): check the permissions of the folder"
                ) from None
            except OSError as exc:
                raise InputError(f"{spec} cannot be listed ({_first_line(exc)}): check the folder") from None
            for entry in entries:
                if entry.name.startswith("."):
                    continue
                try:
                    if not entry.is_file():
                        continue
                except OSError:
                    continue
                if _is_image_file(entry.path, entry.name):
                    names.append(entry.name)
            names.sort(key=natural_key)
            self._names = names
            if not names:
                raise InputError(
                    f"{spec} contains no images: put PNG, JPEG, BMP, PGM/PPM, TIFF or GIF files in it, "
                    f"or give a glob such as '{os.path.join(spec, '*.png')}'"
                )
        else:
            self._dir = None
            paths = []
            for path in glob.glob(spec, recursive="**" in spec):
                name = os.path.basename(path)
                if name.startswith(".") or not os.path.isfile(path):
                    continue
                if _is_image_file(path, name):
                    paths.append(path)
            paths.sort(key=natural_key)
            self._names = paths
            if not paths:
                raise InputError(
                    f"{spec} contains no images (the pattern matches no image files): check the pattern"
                )
        _check_frame_budget(spec, len(self._names), page_budget)

    def _path(self, i: int) -> str:
        name = self._names[i]
        return os.path.join(self._dir, name) if self._dir is not None else name

    def _length(self) -> int:
        return len(self._names)

    def _first_file(self) -> str:
        return self._path(0)

    def _read(self, i):
        return read_image(self._path(i), max_pixels=self.max_pixels)

    def _label(self, i):
        return self._path(i)

    def fingerprint(self):
        if self._dir is not None:
            entries = [_stat_entry(os.path.join(self._dir, n), n) for n in self._names]
        else:
            entries = [_stat_entry(p) for p in self._names]
        return {"kind": self.kind, "spec": self.spec, **_files_fingerprint(entries)}


# --------------------------------------------------------------------------------------------
# TIFF (multi-page, OME-TIFF, ImageJ hyperstacks)


class _QuietTifffile(logging.Filter):
    """Keeps tifffile's log records (truncation notices) for the thread that asked, off stderr."""

    def __init__(self):
        super().__init__()
        self.local = threading.local()

    def filter(self, record):
        messages = getattr(self.local, "messages", None)
        if messages is None:
            return True
        messages.append(record.getMessage())
        return False


_TIFF_LOG = _QuietTifffile()
logging.getLogger("tifffile").addFilter(_TIFF_LOG)


@contextlib.contextmanager
def _quiet_tifffile():
    saved = getattr(_TIFF_LOG.local, "messages", None)
    _TIFF_LOG.local.messages = messages = []
    try:
        yield messages
    finally:
        _TIFF_LOG.local.messages = saved


def _page_data_end(page) -> int:
    offsets = np.asarray(page.dataoffsets, dtype=np.int64)
    counts = np.asarray(page.databytecounts, dtype=np.int64)
    return int((offsets + counts).max()) if offsets.size else 0


def _contiguous_offset(page, plane: _TiffPlane):
    """File offset of an uncompressed page whose strips are back to back, else None."""
    if int(page.compression) != 1 or int(getattr(page, "fillorder", 1)) != 1:
        return None
    if plane.bits != 8 * plane.dtype_in.itemsize:
        return None
    offsets = [int(v) for v in page.dataoffsets]
    counts = [int(v) for v in page.databytecounts]
    if not offsets or any(offsets[k] + counts[k] != offsets[k + 1] for k in range(len(offsets) - 1)):
        return None
    if sum(counts) < plane.nbytes:
        return None
    return offsets[0]


class TiffSource(Source):
    """Planes of a multi-page TIFF / OME-TIFF / ImageJ hyperstack, read on demand."""

    kind = "tiff"
    _TRANSIENT = ("_lock", "_tif", "_fd")

    def __init__(self, path: str, *, max_pixels: int, page_budget=None):
        super().__init__(path, max_pixels=max_pixels)
        self.path = path
        self._size = os.stat(path).st_size
        with self._lock:
            tif = self._open()
            with _quiet_tifffile():
                self._layout(tif, page_budget)
        if self._n == 1 and not self._truncated:
            self.close()
            raise _single_image(path)
        _check_budget(self.path, self._plane.height, self._plane.width, max_pixels)

    # -- opening --------------------------------------------------------------------------

    def _open(self):
        if self._tif is None:
            import tifffile  # noqa: PLC0415

            try:
                with _quiet_tifffile():
                    self._tif = tifffile.TiffFile(self.path)
            except Exception as exc:
                raise InputError(
                    f"{self.path} is truncated or corrupt (TIFF: {_first_line(exc)}): re-export or copy the file again"
                ) from None
        return self._tif

    def _layout(self, tif, page_budget) -> None:
        """Choose how frames map to pages: a series of pages, contiguous data, or every page."""
        with _quiet_tifffile():
            pages = tif.pages
            if page_budget is not None:
                try:
                    pages[page_budget]
                except (IndexError, Exception):
                    pass
                else:
                    raise InputError(
                        f"{self.path} has more than {page_budget} pages, over the page budget: "
                        f"raise the page budget if you trust it"
                    )
            n_pages = len(pages)
            if n_pages == 0:
                raise InputError(f"{self.path} has no pages: re-export the file")
            chain_cut = bool(_tiff_chain_cut(tif))
            first = pages.first
            series = tif.series[0] if tif.series else None
        self._n_ifds = n_pages
        self._chain_cut = chain_cut
        self._mode = "pages"
        self._axes = ""
        self._axes_shape = ()
        self._offset = None
        self._declared = None
        ij = tif.imagej_metadata or {}
        declared_ij = int(ij.get("images", 0) or 0) if ij else 0
        if declared_ij > n_pages:
            # ImageJ writes hyperstacks contiguously from the first page; files over 4 GB and
            # truncated files hold fewer IFDs than images: read planes by offset, as ImageJ does.
            plane = _TiffPlane(first, self.path)
            offset = _contiguous_offset(first, plane)
            if offset is None:
                raise InputError(
                    f"{self.path} declares {declared_ij} ImageJ images but holds {n_pages} pages of "
                    f"compressed or scattered data: re-export it from ImageJ"
                )
            self._mode, self._plane, self._offset = "contiguous", plane, offset
            self._n = self._declared = declared_ij
        elif series is not None and series.kind not in ("generic", "uniform") and series.kind:
            series = series.levels[0] if getattr(series, "levels", None) else series
            keyframe = series.keyframe
            plane = _TiffPlane(keyframe, self.path)
            axes = str(series.axes)
            shape = tuple(int(s) for s in series.shape)
            frame_axes = [(a, s) for a, s in zip(axes, shape) if a not in "YXS"]
            n = math.prod(s for _, s in frame_axes) if frame_axes else 1
            spatial = tuple(s for a, s in zip(axes, shape) if a in "YX")
            if spatial != (plane.height, plane.width):
                # Volumetric pages or an unusual series: fall back to one frame per page.
                self._plane = _TiffPlane(first, self.path)
                self._n = n_pages + (1 if chain_cut else 0)
            else:
                self._mode, self._plane = "series", plane
                self._axes = "".join(a for a, _ in frame_axes)
                self._axes_shape = tuple(s for _, s in frame_axes)
                dataoffset = series.dataoffset
                if plane.bits != 8 * plane.dtype_in.itemsize or int(getattr(keyframe, "fillorder", 1)) != 1:
                    dataoffset = None  # packed or bit-reversed samples: let tifffile unpack each page
                self._offset = None if dataoffset is None else int(dataoffset)
                self._n = self._declared = n
                if self._offset is None:
                    # page objects only where frames are read page by page (contiguous data is read
                    # by offset: making a million page objects at open would cost minutes)
                    self._series_pages = list(series.pages)
                    if len(self._series_pages) < n:
                        self._series_pages += [None] * (n - len(self._series_pages))
        else:
            self._plane = _TiffPlane(first, self.path)
            self._n = n_pages + (1 if chain_cut else 0)
        self._truncated = self._declared is not None and self._readable() < self._declared
        self._truncated = self._truncated or chain_cut

    def __getstate__(self):
        state = super().__getstate__()
        state.pop("_series_pages", None)  # page objects hold the file: rebuilt on reopen
        return state

    def _close(self):
        with self._lock:
            if self._tif is not None:
                self._tif.close()
                self._tif = None
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
            self.__dict__.pop("_series_pages", None)

    def _pages_of_series(self):
        """The series' page objects (None where missing), reopening the file in a new process."""
        pages = self.__dict__.get("_series_pages")
        if pages is None:
            tif = self._open()
            with _quiet_tifffile():
                series = tif.series[0]
                series = series.levels[0] if getattr(series, "levels", None) else series
                pages = list(series.pages)
            if len(pages) < self._n:
                pages += [None] * (self._n - len(pages))
            self._series_pages = pages
        return pages

    # -- sizes ----------------------------------------------------------------------------

    def _length(self):
        return self._n

    @property
    def frame_shape(self):
        return tuple(self._plane.shape)

    @property
    def dtype(self):
        return self._plane.dtype

    def _readable(self) -> int:
        """How many frames the file holds completely (for the truncation message)."""
        if self._offset is not None:
            return max(0, min(self._n, (self._size - self._offset) // max(self._plane.nbytes, 1)))
        if self._mode == "series":
            count = 0
            for page in self._pages_of_series():
                if page is None or _page_data_end(page) > self._size:
                    break
                count += 1
            return count
        count = self._n_ifds
        with self._lock, _quiet_tifffile():
            try:
                if _page_data_end(self._open().pages[count - 1]) > self._size:
                    count -= 1
            except Exception:
                pass
        return count

    # -- reading --------------------------------------------------------------------------

    def _label(self, i):
        if self._mode == "series" and len(self._axes) > 1:
            coords = np.unravel_index(i, self._axes_shape)
            where = ", ".join(f"{a.lower()}={int(c)}" for a, c in zip(self._axes, coords))
            return f"{self.path}[page {i} ({where})]"
        return f"{self.path}[page {i}]"

    def _missing(self, i, cut_short=False) -> InputError:
        what = "is cut short" if cut_short else "is missing"
        if self._declared is not None:
            detail = f"declares {self._declared} pages, {self._readable()} readable"
        else:
            detail = f"the chain of pages breaks after page {self._n_ifds - 1}; {self._readable()} readable"
        return InputError(
            f"{self.path} page {i} {what}: the file is truncated ({detail}); copy or export it again"
        )

    def _read(self, i):
        label = self._label(i)
        try:
            if self._offset is not None:
                image = self._read_contiguous(i)
                plane = self._plane
            else:
                image, plane = self._read_page(i)
            frame = plane.convert(image)
        except (InputError, MemoryError):
            raise
        except Exception as exc:
            raise InputError(
                f"{label} is truncated or corrupt (TIFF: {_first_line(exc)}): re-export or copy the file again"
            ) from None
        return validate_array(frame, name=label)

    def _read_contiguous(self, i):
        plane = self._plane
        start = self._offset + i * plane.nbytes
        if start >= self._size:
            raise self._missing(i)
        if start + plane.nbytes > self._size:
            raise self._missing(i, cut_short=True)
        if self._fd is None:
            with self._lock:
                if self._fd is None:
                    self._fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
        dtype = plane.dtype_in.newbyteorder(self._byteorder())
        if hasattr(os, "preadv"):  # straight into the frame's buffer: one allocation, no copy
            out = np.empty(plane.nbytes // dtype.itemsize, dtype=dtype)
            got = os.preadv(self._fd, [memoryview(out).cast("B")], start)
            if got < plane.nbytes:
                raise self._missing(i, cut_short=True)
            return out
        if hasattr(os, "pread"):  # pragma: no cover - platforms without preadv
            data = os.pread(self._fd, plane.nbytes, start)
        else:  # pragma: no cover - Windows
            with self._lock:
                os.lseek(self._fd, start, os.SEEK_SET)
                data = os.read(self._fd, plane.nbytes)
        if len(data) < plane.nbytes:
            raise self._missing(i, cut_short=True)
        return np.frombuffer(data, dtype=dtype).copy()

    def _byteorder(self) -> str:
        bo = self.__dict__.get("_bo")
        if bo is None:
            with self._lock:
                bo = self._bo = self._open().byteorder
        return bo

    def _read_page(self, i):
        with self._lock:
            if self._mode == "series":
                page = self._pages_of_series()[i]
                plane = self._plane
            else:
                if i >= self._n_ifds:
                    raise self._missing(i)
                tif = self._open()
                with _quiet_tifffile():
                    page = tif.pages[i]
                plane = None
            if page is None:
                raise self._missing(i)
            if _page_data_end(page) > self._size:
                raise self._missing(i, cut_short=True)
            if plane is None:
                if not hasattr(page, "shaped"):
                    page = page.aspage()
                plane = _TiffPlane(page, f"{self.path} page {i}")
                _check_budget(f"{self.path} page {i}", plane.height, plane.width, self.max_pixels)
        with _quiet_tifffile():
            image = page.asarray(lock=self._lock)
        return image, plane

    def fingerprint(self):
        return {"kind": self.kind, "spec": self.spec, **_files_fingerprint([_stat_entry(self.path)])}


# --------------------------------------------------------------------------------------------
# Zarr (v2, v3, OME-Zarr)


def _is_zarr_dir(path: str) -> bool:
    return any(os.path.exists(os.path.join(path, n)) for n in ("zarr.json", ".zarray", ".zgroup"))


def _ome_multiscales(attrs: dict):
    ms = attrs.get("multiscales")
    if ms is None and isinstance(attrs.get("ome"), dict):
        ms = attrs["ome"].get("multiscales")
    return ms if isinstance(ms, list) and ms else None


class ZarrSource(Source):
    """Frames of a Zarr array (axis 0, or the OME axes), read by slicing."""

    kind = "zarr"
    _TRANSIENT = ("_lock", "_array", "_cache")

    def __init__(self, path: str, *, component=None, max_pixels: int, page_budget=None):
        super().__init__(path, max_pixels=max_pixels)
        import zarr  # noqa: PLC0415

        self.path = path
        self.component = component
        try:
            node = zarr.open(path, mode="r", path=component) if component else zarr.open(path, mode="r")
        except Exception as exc:
            if component:
                try:
                    root = zarr.open_group(path, mode="r")
                    arrays = sorted(root.array_keys()) + sorted(f"{g}/" for g in root.group_keys())
                except Exception:
                    arrays = None
                if arrays is not None:
                    listing = ", ".join(arrays[:8]) + (", ..." if len(arrays) > 8 else "") if arrays else "none"
                    raise InputError(
                        f"{path} has no array {component!r}: check --component (in the store: {listing})"
                    ) from None
            raise InputError(
                f"{path} is not a readable Zarr array ({_first_line(exc)}): check the path"
            ) from None
        inner = (component or "").strip("/")
        axes = None
        if not hasattr(node, "shape"):  # a group
            attrs = dict(node.attrs)
            ms = _ome_multiscales(attrs)
            where = f"{path}/{inner}" if inner else path
            if ms is None:
                arrays = sorted(node.array_keys()) + sorted(f"{g}/" for g in node.group_keys())
                listing = ", ".join(arrays[:8]) + (", ..." if len(arrays) > 8 else "") if arrays else "none"
                raise InputError(
                    f"{where} is a Zarr group, not an array: name the array with --component "
                    f"(arrays in it: {listing})"
                )
            datasets = ms[0].get("datasets") or []
            if not datasets or "path" not in datasets[0]:
                raise InputError(f"{where} has OME multiscales without datasets: fix its metadata")
            level = str(datasets[0]["path"])
            axes = ms[0].get("axes")
            try:
                node = node[level]
            except Exception:
                raise InputError(f"{where} names the OME level {level!r}, which is not in the store") from None
            inner = f"{inner}/{level}" if inner else level
            if axes is None:  # OME-NGFF 0.1/0.2: always 5D tczyx
                axes = ["t", "c", "z", "y", "x"]
            axes = [str(a.get("name", "") if isinstance(a, dict) else a).lower() for a in axes]
            axes_types = [
                str(a.get("type", "")).lower() if isinstance(a, dict) else "" for a in (ms[0].get("axes") or [])
            ]
            if len(axes_types) != len(axes):
                axes_types = [""] * len(axes)
        if axes is None:
            axes, axes_types = self._parent_ome_axes(path, inner)
        self._inner = inner
        self._name = f"{path.rstrip('/')}/{inner}" if inner else path
        shape = tuple(int(s) for s in node.shape)
        self._shape = shape
        self._dtype_in = np.dtype(node.dtype)
        self._chunk0 = int(node.chunks[0]) if node.chunks else 1
        if axes is not None:
            self._layout_ome(axes, axes_types, shape)
        else:
            self._layout_plain(shape)
        self._out_dtype = _output_dtype(self._dtype_in, self._name)
        h, w = shape[self._y], shape[self._x]
        _check_budget(self._name, h, w, max_pixels)
        self._n = math.prod(shape[a] for a in self._frame_axes) if self._frame_axes else 1
        if self._n == 1 and not self._frame_axes:
            raise _single_image(self._name)
        _check_frame_budget(self._name, self._n, page_budget)
        self._array = node

    @staticmethod
    def _parent_ome_axes(path: str, inner: str):
        """OME axes of an array named inside an OME-Zarr image (``image.zarr/0``), else (None, None)."""
        import zarr  # noqa: PLC0415

        full = os.path.normpath(os.path.join(path, inner)) if inner else os.path.normpath(path)
        parent = os.path.dirname(full)
        for _ in range(3):
            if not parent or not _is_zarr_dir(parent):
                break
            try:
                group = zarr.open_group(parent, mode="r")
                ms = _ome_multiscales(dict(group.attrs))
            except Exception:
                ms = None
            if ms:
                rel = os.path.relpath(full, parent).replace(os.sep, "/")
                if any(str(d.get("path")) == rel for d in ms[0].get("datasets") or []):
                    raw = ms[0].get("axes") or ["t", "c", "z", "y", "x"]
                    names = [str(a.get("name", "") if isinstance(a, dict) else a).lower() for a in raw]
                    types = [str(a.get("type", "")).lower() if isinstance(a, dict) else "" for a in raw]
                    return names, types
            parent = os.path.dirname(parent)
        return None, None

    def _layout_plain(self, shape):
        name = self._name
        if len(shape) == 2:
            raise _single_image(name)
        if len(shape) == 3:
            self._frame_axes, self._y, self._x, self._c = (0,), 1, 2, None
        elif len(shape) == 4 and shape[3] <= 4:
            self._frame_axes, self._y, self._x, self._c = (0,), 1, 2, 3
        else:
            raise InputError(
                f"{name} has shape {shape}: gpudiff reads Zarr arrays (T, H, W) or (T, H, W, C) with C <= 4 "
                f"channels last, or OME-Zarr with axes metadata; rechunk or transpose it"
            )
        self._axes_names = None

    def _layout_ome(self, axes, types, shape):
        name = self._name
        if len(axes) != len(shape):
            raise InputError(
                f"{name} has shape {shape} but its OME axes are {axes}: fix the multiscales metadata"
            )
        spatial = [k for k, a in enumerate(axes) if a in ("y", "x") or types[k] == "space"]
        if len(spatial) < 2:
            raise InputError(f"{name} has OME axes {axes} without two spatial axes (y, x): fix the metadata")
        self._y, self._x = spatial[-2], spatial[-1]
        self._c = None
        frame_axes = []
        for k, a in enumerate(axes):
            if k in (self._y, self._x):
                continue
            if (a == "c" or types[k] == "channel") and self._c is None and shape[k] in (1, 3):
                self._c = k
                continue
            frame_axes.append(k)
        self._frame_axes = tuple(frame_axes)
        self._axes_names = axes
        if not frame_axes:
            raise _single_image(name)

    def _node(self):
        if self._array is None:
            import zarr  # noqa: PLC0415

            with self._lock:
                if self._array is None:
                    try:
                        self._array = zarr.open_array(self.path, mode="r", path=self._inner or "")
                    except Exception as exc:
                        raise InputError(
                            f"{self._name} cannot be opened ({_first_line(exc)}): check the store"
                        ) from None
        return self._array

    def _length(self):
        return self._n

    @property
    def frame_shape(self):
        h, w = self._shape[self._y], self._shape[self._x]
        if self._c is None or self._shape[self._c] in (1, 2):
            return (h, w)
        return (h, w, 3)

    @property
    def dtype(self):
        return self._out_dtype

    def _label(self, i):
        return f"{self._name}[{i}]"

    def _coords(self, i):
        sizes = [self._shape[a] for a in self._frame_axes]
        return dict(zip(self._frame_axes, (int(c) for c in np.unravel_index(i, sizes))))

    def _block(self, b: int):
        """Frames ``b*chunk .. (b+1)*chunk`` along axis 0, decoded once and cached (or None)."""
        if self._cache is None:
            with self._lock:
                if self._cache is None:
                    self._cache = OrderedDict()
        with self._lock:
            block = self._cache.get(b)
            if block is not None:
                self._cache.move_to_end(b)
                return block
        lo = b * self._chunk0
        hi = min(lo + self._chunk0, self._shape[0])
        block = np.asarray(self._node()[lo:hi])
        with self._lock:
            self._cache[b] = block
            total = sum(v.nbytes for v in self._cache.values())
            while total > _ZARR_CACHE_BYTES and len(self._cache) > 1:
                _, old = self._cache.popitem(last=False)
                total -= old.nbytes
        return block

    def _read(self, i):
        coords = self._coords(i)
        index = tuple(coords.get(k, slice(None)) for k in range(len(self._shape)))
        label = self._label(i)
        try:
            per_block = self._dtype_in.itemsize * math.prod(self._shape[1:]) * self._chunk0
            if 0 in self._frame_axes and self._chunk0 > 1 and per_block <= _ZARR_BLOCK_BYTES:
                t = coords[0]
                block = self._block(t // self._chunk0)
                sub = block[(t % self._chunk0,) + index[1:]]
            else:
                sub = np.asarray(self._node()[index])
        except InputError:
            raise
        except Exception as exc:
            raise InputError(
                f"{label} cannot be read ({_first_line(exc)}): the store may be incomplete; write it again"
            ) from None
        kept = [k for k in range(len(self._shape)) if k not in coords]
        order = [kept.index(self._y), kept.index(self._x)]
        if self._c is not None:
            order.append(kept.index(self._c))
        frame = np.ascontiguousarray(np.transpose(sub, order))
        return validate_array(frame, name=label)

    def fingerprint(self):
        entries = []
        root = self.path
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            for f in filenames:
                full = os.path.join(dirpath, f)
                entries.append(_stat_entry(full, os.path.relpath(full, root)))
        out = {"kind": self.kind, "spec": self.spec, "component": self.component, "array": self._inner}
        out.update(_files_fingerprint(entries))
        return out


# --------------------------------------------------------------------------------------------
# video (PyAV)


def _import_av(path):
    try:
        import av  # noqa: PLC0415
    except ImportError:
        raise InputError(f"{path} is a video: install gpudiff[video] (PyAV) to read it") from None
    return av


def _looks_like_video(head: bytes, ext: str) -> bool:
    if ext in VIDEO_EXTENSIONS:
        return True
    if head[:4] == b"RIFF" and head[8:12] in (b"AVI ", b"AVIX"):
        return True
    if head[4:8] == b"ftyp":
        return head[8:12] not in (b"avif", b"heic", b"heix", b"mif1")
    if head[4:8] in (b"moov", b"mdat", b"wide", b"free", b"skip"):
        return True
    if head[:4] in (b"\x1a\x45\xdf\xa3", b"\x00\x00\x01\xba", b"\x00\x00\x01\xb3", b"OggS"):
        return True
    return head[:3] == b"FLV" or head[:4] == b"\x30\x26\xb2\x75"


class _Untrusted(Exception):
    """The decoder's timestamps do not match the packet table: fall back to counting frames."""


class _Decoder:
    """One open container with a decoder positioned somewhere in the stream."""

    def __init__(self, src: VideoSource):
        self._open(src)
        self.frames = None  # iterator of decoded frames
        self.rank = None  # rank of the last frame out (None: unknown, after a seek)
        self.array = None
        self.busy = False
        self.used = 0.0
        self.mode = None
        self.key = None  # keyframe rank of the last seek (None: decoding from the start)

    def _open(self, src: VideoSource):
        av = _import_av(src.path)
        try:
            self.container = av.open(src.path, metadata_errors="ignore")
        except Exception as exc:
            reason = getattr(exc, "strerror", None) or _first_line(exc)
            raise InputError(f"{src.path} cannot be opened as a video ({reason}): check the file") from None
        self.stream = self.container.streams.video[0]
        self.stream.thread_type = "AUTO"

    def restart(self, src: VideoSource):
        """Back to the start of the stream, counting frames from 0 (sequential mode): reopened,
        since a seek to 0 is not exact in every container."""
        self.close()
        self._open(src)
        self.frames = self.container.decode(self.stream)
        self.rank = -1
        self.array = None
        self.key = None
        self.mode = "sequential"

    def seek(self, pts: int):
        self.container.seek(int(pts), stream=self.stream, backward=True, any_frame=False)
        self.frames = self.container.decode(self.stream)
        self.rank = None
        self.array = None
        self.mode = "pts"

    def rewind(self, src: VideoSource):
        """Reopened at the start of the stream, frames identified by their timestamps."""
        self.close()
        self._open(src)
        self.frames = self.container.decode(self.stream)
        self.rank = None
        self.array = None
        self.key = None
        self.mode = "pts"

    def close(self):
        with contextlib.suppress(Exception):
            self.container.close()


class VideoSource(Source):
    """Frames of a video, decoded on demand by a small pool of positioned decoders.

    Frame ``i`` is the ``i``-th frame in presentation order (packet timestamps, sorted). Where the
    container declares a frame per time slot but stores frames only when the picture changes
    (AVI with dropped frames, e.g. cinepak ``tree.avi``), frame ``i`` is the picture shown in
    slot ``i`` and repeats are exact. Where timestamps cannot be trusted (missing, or reordered B
    frames in AVI), frames are counted in decoder output order.
    """

    kind = "video"
    _TRANSIENT = ("_lock", "_pool", "_pool_cv")

    def __init__(self, path: str, *, max_pixels: int, page_budget=None, max_decoders=None):
        super().__init__(path, max_pixels=max_pixels)
        av = _import_av(path)
        self.path = path
        self.max_decoders = int(max_decoders or min(8, os.cpu_count() or 1))
        try:
            container = av.open(path, metadata_errors="ignore")
        except Exception as exc:
            reason = getattr(exc, "strerror", None) or _first_line(exc)
            raise InputError(
                f"{path} cannot be opened as a video ({reason}): the file may be truncated or damaged; "
                f"check it, or re-encode it (ffmpeg -i {os.path.basename(path)} out.mp4)"
            ) from None
        try:
            if not container.streams.video:
                raise InputError(f"{path} has no video stream: give a video file")
            stream = container.streams.video[0]
            ctx = stream.codec_context
            self._width, self._height = int(ctx.width), int(ctx.height)
            if self._width <= 0 or self._height <= 0:
                raise InputError(f"{path} declares no frame size ({ctx.width} x {ctx.height}): check the file")
            _check_budget(path, self._height, self._width, max_pixels)
            self._format = self._output_format(av, ctx.pix_fmt)
            self._declared = int(stream.frames or 0)
            self._time_base = stream.time_base
            self._rate = stream.average_rate or stream.guessed_rate
            self._container_format = container.format.name or ""
            self._build_index(container, stream)
        finally:
            container.close()
        _check_frame_budget(path, self._n, page_budget)

    @staticmethod
    def _output_format(av, pix_fmt) -> str:
        if not pix_fmt:
            return "rgb24"
        try:
            fmt = av.VideoFormat(pix_fmt)
            bits = max((c.bits for c in fmt.components), default=8)
        except Exception:  # pragma: no cover - unknown format
            return "rgb24"
        grey = pix_fmt.startswith(("gray", "ya", "mono"))
        if grey:
            return "gray" if bits <= 8 else "gray16le"
        return "rgb24" if bits <= 8 else "rgb48le"

    # -- the packet table -----------------------------------------------------------------

    def _build_index(self, container, stream) -> None:
        """Demux once (no decoding): presentation timestamps and keyframes of every frame."""
        pts, keys, order_ok = [], [], True
        last = None
        self._demux_error = None
        try:
            for packet in container.demux(stream):
                if packet.size == 0:
                    continue
                p = packet.pts if packet.pts is not None else packet.dts
                pts.append(p)
                keys.append(bool(packet.is_keyframe))
                if p is not None and last is not None and p <= last:
                    order_ok = False
                last = p if p is not None else last
        except Exception as exc:  # a cut or corrupt file: the frames demuxed so far count
            self._demux_error = _first_line(exc)
        n_packets = len(pts)
        trusted = n_packets > 0 and all(p is not None for p in pts) and len(set(pts)) == n_packets
        if trusted and "avi" in self._container_format and not order_ok:
            trusted = False  # AVI has no presentation timestamps: reordered B frames get guesses
        self._mode = "frame"
        self._slots = None
        self._bad_keys = set()
        if not trusted:
            self._mode = "sequential"
            self._pts = None
            self._key_ranks = None
            self._n = self._declared or n_packets
            self._readable = n_packets
            return
        pts_sorted = np.sort(np.asarray(pts, dtype=np.int64))
        key_pts = np.sort(np.asarray([p for p, k in zip(pts, keys) if k], dtype=np.int64))
        self._pts = pts_sorted
        self._key_ranks = np.searchsorted(pts_sorted, key_pts).astype(np.int64)
        self._n = n_packets
        self._readable = n_packets
        if self._declared > n_packets and self._rate and self._time_base:
            step = Fraction(self._time_base) * Fraction(self._rate)
            slots = np.rint((pts_sorted - pts_sorted[0]) * float(step)).astype(np.int64)
            if np.all(np.diff(slots) > 0) and int(slots[-1]) < self._declared:
                # One frame per time slot declared, pictures stored only when they change.
                self._mode = "slot"
                self._slots = slots
                self._n = self._declared
                self._readable = int(slots[-1]) + 1
                return
        if self._declared > n_packets:
            self._n = self._declared  # the rest is missing: reported when read

    def __getstate__(self):
        state = super().__getstate__()
        if self._n > _VIDEO_INDEX_PICKLED:
            state["_pts"] = state["_key_ranks"] = state["_slots"] = None
            state["_index_dropped"] = True
        return state

    def _ensure_index(self):
        if self.__dict__.get("_index_dropped"):
            with self._lock:
                if self.__dict__.get("_index_dropped"):
                    av = _import_av(self.path)
                    container = av.open(self.path, metadata_errors="ignore")
                    try:
                        n = self._n
                        self._build_index(container, container.streams.video[0])
                        self._n = n
                    finally:
                        container.close()
                    self._index_dropped = False

    def frame_times(self):
        self._ensure_index()
        out = np.full(self._n, np.nan)
        if self._mode == "pts" and self._pts is not None and len(self._pts) and self._time_base:
            n = min(len(self._pts), self._n)
            out[:n] = (self._pts[:n] - self._pts[0]) * float(self._time_base)
        elif self._rate:
            out[:] = np.arange(self._n) / float(self._rate)  # one frame per slot of the declared rate
        else:
            return None
        return out

    def _close(self):
        if self._pool_cv is None:
            return
        with self._pool_cv:
            for dec in self._pool:
                dec.close()
            self._pool.clear()

    def _init_transient(self):
        super()._init_transient()
        self._pool = []
        self._pool_cv = threading.Condition()

    # -- sizes ----------------------------------------------------------------------------

    def _length(self):
        return self._n

    @property
    def frame_shape(self):
        if self._format in ("gray", "gray16le"):
            return (self._height, self._width)
        return (self._height, self._width, 3)

    @property
    def dtype(self):
        return np.dtype(np.uint8) if self._format in ("gray", "rgb24") else np.dtype(np.uint16)

    def _label(self, i):
        return f"{self.path}[frame {i}]"

    # -- decoding -------------------------------------------------------------------------

    def _rank(self, i: int) -> int:
        if self._mode == "slot":
            return int(np.searchsorted(self._slots, i, side="right")) - 1
        return i

    def _forward_cost(self, dec: _Decoder, rank: int):
        """Frames to decode to reach ``rank`` from where ``dec`` is, or None when a seek is better."""
        if dec.frames is None or dec.rank is None or dec.rank > rank:
            return None
        if dec.mode != ("sequential" if self._mode == "sequential" else "pts"):
            return None
        gap = rank - dec.rank
        if self._mode == "sequential" or gap <= 16:
            return gap
        key = self._key_before(rank)
        if key is not None and key > dec.rank:
            return None  # a usable keyframe lies between: seeking there is no dearer
        return gap

    def _checkout(self, rank: int) -> _Decoder:
        with self._pool_cv:
            while True:
                free = [d for d in self._pool if not d.busy]
                best, best_cost = None, None
                for d in free:
                    cost = self._forward_cost(d, rank)
                    if cost is not None and (best_cost is None or cost < best_cost):
                        best, best_cost = d, cost
                if best is None:
                    if len(self._pool) < self.max_decoders:
                        best = _Decoder(self)
                        self._pool.append(best)
                    elif free:
                        best = min(free, key=lambda d: d.used)
                if best is not None:
                    best.busy = True
                    return best
                self._pool_cv.wait()

    def _checkin(self, dec: _Decoder, broken=False):
        with self._pool_cv:
            dec.busy = False
            dec.used = time.monotonic()
            if broken:
                dec.close()
                self._pool.remove(dec)
            self._pool_cv.notify()

    def _to_array(self, frame):
        return frame.to_ndarray(format=self._format)

    def _read(self, i):
        self._ensure_index()
        label = self._label(i)
        for _ in range(2):
            rank = self._rank(i)
            dec = self._checkout(rank)
            broken = True
            try:
                if self._mode == "sequential":
                    array = self._decode_sequential(dec, rank, i)
                else:
                    array = self._decode_pts(dec, rank, i)
                broken = False
            except _Untrusted:
                with self._lock:
                    self._mode = "sequential"
                continue
            except (InputError, MemoryError):
                raise
            except Exception as exc:
                raise InputError(
                    f"{label} cannot be decoded ({_first_line(exc)}): the file may be corrupt; "
                    f"re-encode it (ffmpeg -i in out.mp4)"
                ) from None
            finally:
                self._checkin(dec, broken=broken)
            return validate_array(array, name=label)
        raise InputError(f"{label} cannot be decoded: the video's timestamps are inconsistent; re-encode it")

    def _end_of_stream(self, i, rank, seen) -> InputError:
        if self._mode == "sequential":
            return InputError(
                f"{self.path} frame {i} is missing: the decoder gives {seen} frames, the container declares "
                f"{self._n} (the file may be truncated or hold damaged frames); re-encode it"
            )
        if i >= self._readable:
            detail = f"declares {self._n} frames, {self._readable} readable"
            if self._demux_error:
                detail += f"; {self._demux_error}"
        else:
            detail = "the decoder stops before it"
        return InputError(
            f"{self.path} frame {i} is missing: the file is truncated ({detail}); copy or re-encode it"
        )

    def _decode_sequential(self, dec, rank, i):
        if dec.rank is not None and dec.rank == rank and dec.array is not None:
            return dec.array.copy()
        if dec.frames is None or dec.rank is None or dec.rank > rank or dec.mode != "sequential":
            dec.restart(self)
        while dec.rank < rank:
            try:
                frame = next(dec.frames)
            except StopIteration:
                seen = dec.rank + 1
                dec.frames = None
                raise self._end_of_stream(i, rank, seen) from None
            dec.rank += 1
            dec.array = None
            if dec.rank == rank:
                dec.array = self._to_array(frame)
        return dec.array.copy()

    def _key_before(self, rank: int):
        """Rank of the last keyframe at or before ``rank`` that decodes cleanly; None: the start."""
        keys = self._key_ranks
        k = int(np.searchsorted(keys, rank, side="right"))
        while k > 0:
            key = int(keys[k - 1])
            if key not in self._bad_keys:
                return key
            k -= 1
        return None

    def _decode_pts(self, dec, rank, i):
        """Frame of presentation rank ``rank``: decode forward, or seek to a keyframe first.

        After a seek, frames are checked: one that lands past the target, or a corrupt frame
        between the keyframe and the target (a keyframe that does not decode on its own, as
        in some H.264 files), sends the decoder back to an earlier keyframe, which is then
        remembered as unusable; from the start of the stream everything is accepted.
        """
        if i >= self._readable:
            raise self._end_of_stream(i, rank, self._readable)
        if dec.rank is not None and dec.rank == rank and dec.array is not None:
            return dec.array.copy()

        def go_to(key):
            if key is None:
                dec.rewind(self)
            else:
                dec.seek(int(self._pts[key]))
                dec.key = key

        if self._forward_cost(dec, rank) is None:
            go_to(self._key_before(rank))
        after_seek = dec.rank is None
        reseeked = after_seek
        last = dec.rank
        while True:
            try:
                frame = next(dec.frames)
            except StopIteration:
                dec.frames = None
                raise self._end_of_stream(i, rank, self._readable) from None
            if frame.pts is None:
                raise _Untrusted()
            r = int(np.searchsorted(self._pts, frame.pts))
            if r >= len(self._pts) or int(self._pts[r]) != int(frame.pts):
                raise _Untrusted()
            key = dec.key
            if after_seek and r > rank and key is not None:
                # Landed past the target: go back one keyframe.
                go_to(self._key_before(min(key, r) - 1) if min(key, r) > 0 else None)
                last = None
                continue
            if key is not None and key <= r <= rank and getattr(frame, "is_corrupt", False):
                # This keyframe does not decode on its own: never seek to it again.
                self._bad_keys.add(key)
                go_to(self._key_before(key - 1) if key > 0 else None)
                last, after_seek = None, True
                continue
            after_seek = False
            if last is not None and r <= last and r >= rank:
                raise _Untrusted()  # frames out of order at or past the target
            if r < rank:  # before the target (or leading pictures of an open GOP): skip
                last = r if last is None else max(last, r)
                dec.rank, dec.array = last, None
                continue
            dec.rank, dec.array, last = r, None, r
            if r == rank:
                dec.array = self._to_array(frame)
                return dec.array.copy()
            # r > rank: the decoder went past the target without giving it
            if not reseeked:
                go_to(self._key_before(rank))
                after_seek = reseeked = True
                last = None
                continue
            raise InputError(
                f"{self._label(i)} cannot be decoded (the decoder skips it): the file may be corrupt; re-encode it"
            )

    def fingerprint(self):
        return {"kind": self.kind, "spec": self.spec, **_files_fingerprint([_stat_entry(self.path)])}


# --------------------------------------------------------------------------------------------
# animated GIF (Pillow)


class GifSource(Source):
    """Frames of an animated GIF, composited by Pillow; one image kept open and seeked forward."""

    kind = "gif"
    _TRANSIENT = ("_lock", "_im", "_fh")

    def __init__(self, path: str, *, max_pixels: int, page_budget=None):
        super().__init__(path, max_pixels=max_pixels)
        self.path = path
        first = probe_image(path)
        self._n = int(first.pages)
        if self._n == 1:
            raise _single_image(path)
        _check_frame_budget(path, self._n, page_budget)
        last = probe_image(path, page=self._n - 1)  # the canvas grows to hold every frame
        _check_budget(path, last.shape[0], last.shape[1], max_pixels)
        self._shape = tuple(first.shape)
        self._dtype = first.dtype

    def _length(self):
        return self._n

    @property
    def frame_shape(self):
        return self._shape

    @property
    def dtype(self):
        return self._dtype

    def _label(self, i):
        return f"{self.path}[frame {i}]"

    def _close(self):
        with self._lock:
            self._close_image()

    def _close_image(self):
        if self._im is not None:
            with contextlib.suppress(Exception):
                self._im.close()
            self._im = None
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def _read(self, i):
        from PIL import GifImagePlugin  # noqa: PLC0415

        label = self._label(i)
        with self._lock, _pillow_guard(self.max_pixels):
            try:
                if self._im is None:
                    self._fh = open(self.path, "rb")  # noqa: SIM115 - closed by close()
                    self._im = GifImagePlugin.GifImageFile(self._fh)
                im = self._im
                im.seek(i)
                im.load()
                frame = np.asarray(im.convert("RGB"))
            except (InputError, MemoryError):
                raise
            except Exception as exc:
                self._close_image()
                raise InputError(
                    f"{label} is truncated or corrupt (GIF: {_first_line(exc)}): re-export or copy the file again"
                ) from None
        return validate_array(frame, name=label)

    def fingerprint(self):
        return {"kind": self.kind, "spec": self.spec, **_files_fingerprint([_stat_entry(self.path)])}


# --------------------------------------------------------------------------------------------
# CSV manifest of pairs

_MANIFEST_COLUMNS = ("reference", "moving", "id")
_MANIFEST_FIX = (
    "the first line must be the header 'reference,moving' (or 'reference,moving,id'), then one pair per line"
)


class ManifestSource(_ImageFilesMixin, Source):
    """The distinct images a CSV of pairs names; :meth:`pairs` gives the pairs as frame indices."""

    kind = "manifest"
    _TRANSIENT = ("_lock", "_probe")

    def __init__(self, path: str, *, max_pixels: int, page_budget=None):
        super().__init__(path, max_pixels=max_pixels)
        self.path = path
        base = os.path.dirname(os.path.abspath(path))
        try:
            with open(path, newline="", encoding="utf-8-sig") as fh:
                rows = list(enumerate(csv.reader(fh), start=1))
        except UnicodeDecodeError:
            raise InputError(f"{path} is not UTF-8 text: save the manifest as a UTF-8 CSV") from None
        except csv.Error as exc:
            raise InputError(f"{path} is not a valid CSV ({_first_line(exc)}): {_MANIFEST_FIX}") from None
        except OSError as exc:
            raise InputError(f"{path} cannot be read ({_first_line(exc)}): check the file") from None
        rows = [(n, r) for n, r in rows if r and any(c.strip() for c in r) and not r[0].lstrip().startswith("#")]
        if not rows:
            raise InputError(f"{path} is empty: {_MANIFEST_FIX}")
        header_line, header = rows[0]
        columns = [c.strip().lower() for c in header]
        unknown = [c for c in columns if c not in _MANIFEST_COLUMNS]
        if "reference" not in columns or "moving" not in columns:
            found = ",".join(c.strip() for c in header)
            missing = [c for c in ("reference", "moving") if c not in columns]
            if unknown and len(unknown) == len(columns):
                what = f"has no header (found {found!r})"
            else:
                what = f"has no {' or '.join(repr(m) for m in missing)} column in its header (found {found!r})"
            raise InputError(f"{path} line {header_line} {what}: {_MANIFEST_FIX}")
        if unknown:
            raise InputError(
                f"{path} line {header_line}: unknown column {unknown[0]!r} (columns are reference, moving "
                f"and optionally id): rename or remove it"
            )
        dup = [c for c in _MANIFEST_COLUMNS if columns.count(c) > 1]
        if dup:
            raise InputError(f"{path} line {header_line}: column {dup[0]!r} appears twice: keep one")
        col_ref, col_mov = columns.index("reference"), columns.index("moving")
        col_id = columns.index("id") if "id" in columns else None
        index: dict[str, int] = {}
        paths: list[str] = []
        lines: list[int] = []
        pairs: list[tuple[int, int]] = []
        ids: list[str] | None = [] if col_id is not None else None
        seen_ids: dict[str, int] = {}
        for line, row in rows[1:]:
            if len(row) > len(columns) and any(c.strip() for c in row[len(columns):]):
                raise InputError(
                    f"{path} line {line} has {len(row)} values but the header names {len(columns)} columns: "
                    f"quote values that contain commas"
                )
            cells = [c.strip() for c in row] + [""] * (len(columns) - len(row))
            pair = []
            for col, cname in ((col_ref, "reference"), (col_mov, "moving")):
                value = cells[col]
                if not value:
                    raise InputError(f"{path} line {line}: the {cname} column is empty: give an image path")
                full = os.path.normpath(value if os.path.isabs(value) else os.path.join(base, value))
                k = index.get(full)
                if k is None:
                    k = index[full] = len(paths)
                    paths.append(full)
                    lines.append(line)
                pair.append(k)
            pairs.append((pair[0], pair[1]))
            if ids is not None:
                value = cells[col_id]
                if not value:
                    raise InputError(f"{path} line {line}: the id column is empty: give every pair an id")
                if value in seen_ids:
                    raise InputError(
                        f"{path} line {line}: id {value!r} already used on line {seen_ids[value]}: ids must be unique"
                    )
                seen_ids[value] = line
                ids.append(value)
        if not pairs:
            raise InputError(f"{path} has a header but no pairs: add one line 'reference,moving' per pair")
        _check_frame_budget(path, len(paths), page_budget)
        self._paths, self._lines, self._pairs, self._ids = paths, lines, pairs, ids

    def _length(self):
        return len(self._paths)

    def _first_file(self) -> str:
        return self._paths[0]

    def _label(self, i):
        return self._paths[i]

    def _read(self, i):
        path = self._paths[i]
        if not os.path.lexists(path):
            raise InputError(
                f"{path} not found (named in {self.path} line {self._lines[i]}): "
                f"fix the path in the manifest or restore the file"
            )
        return read_image(path, max_pixels=self.max_pixels)

    def pairs(self):
        return list(self._pairs)

    def pair_ids(self):
        return None if self._ids is None else list(self._ids)

    def fingerprint(self):
        out = {"kind": self.kind, "spec": self.spec, "manifest": _files_fingerprint([_stat_entry(self.path)])}
        out.update(_files_fingerprint([_stat_entry(p) for p in self._paths]))
        return out


# --------------------------------------------------------------------------------------------
# open_source


def _check_page_budget(page_budget):
    return None if page_budget is None else _whole_number(page_budget, "page budget", 1)


def open_source(spec, *, component=None, page_budget=None, max_pixels=DEFAULT_MAX_PIXELS) -> Source:
    """Open a sequence of frames lazily.

    Parameters
    ----------
    spec : str or os.PathLike
        A folder of images, a glob pattern (``/cam/*.jpg``), a multi-page TIFF / OME-TIFF, a Zarr
        array or group (``store.zarr``, ``store.zarr/inner/array``), a video file, an animated
        GIF, or a CSV manifest of pairs (header ``reference,moving[,id]``).
    component : str, optional
        Path of the array inside a Zarr store (``--component``).
    page_budget : int, optional
        Refuse a source with more frames than this (None: no limit).
    max_pixels : int, optional
        Pixel budget per frame (height x width), checked before a frame is decoded.

    Returns
    -------
    Source
        :class:`FolderSource`, :class:`TiffSource`, :class:`ZarrSource`, :class:`VideoSource`,
        :class:`GifSource` or :class:`ManifestSource`.

    Raises
    ------
    gpudiff.errors.InputError
        Not found, nothing to read (an empty folder, a glob matching no image), a single image
        (use ``gpudiff compare``), a malformed manifest, an unreadable or unknown file, a video
        without PyAV installed, a frame size over the budget.
    gpudiff.errors.ConfigError
        ``max_pixels`` or ``page_budget`` not a whole number >= 1.

    Notes
    -----
    Detection: a directory is a Zarr store when it holds ``zarr.json``, ``.zarray`` or ``.zgroup``,
    else a folder; a missing path with ``* ? [`` is a glob; ``.csv`` is a manifest; then magic bytes
    (TIFF, GIF, video containers) and video extensions. Opening reads headers (and, for videos, the
    packet table, without decoding); frames are read one at a time by :meth:`Source.read`.
    """
    max_pixels = _check_max_pixels(max_pixels)
    page_budget = _check_page_budget(page_budget)
    if isinstance(spec, Source):
        return spec
    path = os.fspath(spec)
    if isinstance(path, bytes):
        path = os.fsdecode(path)
    if not path:
        raise InputError("no input given: name a folder, glob, TIFF, Zarr store, video or manifest")
    try:
        st = os.stat(path)
    except FileNotFoundError:
        if _GLOB_CHARS.search(path) and component is None:
            return FolderSource(path, max_pixels=max_pixels, page_budget=page_budget)
        st = None
    if st is None:
        st = _stat_file(path)  # raises the right message (not found, permission...)
    if component is not None and not (stat.S_ISDIR(st.st_mode) and _is_zarr_dir(path)):
        raise InputError(f"{path} is not a Zarr store: --component applies to Zarr stores only; drop it")
    if stat.S_ISDIR(st.st_mode):
        if _is_zarr_dir(path):
            return ZarrSource(path, component=component, max_pixels=max_pixels, page_budget=page_budget)
        return FolderSource(path, max_pixels=max_pixels, page_budget=page_budget)
    if not stat.S_ISREG(st.st_mode):
        raise InputError(f"{path} is not a regular file or folder: give {_SEQUENCES_TEXT}")
    ext = os.path.splitext(path)[1].lower()
    if ext == ".csv":
        return ManifestSource(path, max_pixels=max_pixels, page_budget=page_budget)
    if st.st_size == 0:
        raise InputError(f"{path} is empty (0 bytes): the file was not written completely; export it again")
    head = _read_head(path)
    fmt = _sniff(head)
    if fmt == "TIFF":
        return TiffSource(path, max_pixels=max_pixels, page_budget=page_budget)
    if fmt == "GIF":
        return GifSource(path, max_pixels=max_pixels, page_budget=page_budget)
    if fmt is not None:
        raise _single_image(path)
    if _looks_like_video(head, ext):
        return VideoSource(path, max_pixels=max_pixels, page_budget=page_budget)
    raise InputError(f"{path} is not a sequence gpudiff can read: give {_SEQUENCES_TEXT}")
