"""A multi-page TIFF, OME-TIFF or ImageJ hyperstack (tifffile): frames are the planes of its
first series, read on demand by page or by offset; truncation is reported, never hidden.

A TIFF object (``s3://bucket/stack.tif``, ``https://host/stack.tif``) is read the same way by byte
range, never whole: tifffile reads it through :class:`_ObjectReader` (headers through a small block
cache, pixel data one ranged GET per page or strip), and contiguous planes are fetched by
``fs.cat_file(start, end)``, which is thread-safe (no shared file position).
"""

from __future__ import annotations

from collections import OrderedDict
import math
import os

import numpy as np

from ..errors import InputError
from ._read_tiff import _TiffPlane, _damaged, _quiet_tifffile, _tiff_chain_cut, _tiff_damage
from ._readerrors import _first_line
from ._remote import is_remote, is_transport_error, remote_error, resolve_storage_options
from ._source import (
    Source,
    _RemoteMixin,
    _check_budget,
    _files_fingerprint,
    _frame_channels,
    _single_image,
    _spec_of_url,
    _stat_entry,
)

#: Reads of a remote TIFF shorter than this (tifffile's headers and tag values) go through a cache
#: of blocks this size; longer ones (pixel data) are one ranged GET of exactly the bytes asked for.
_REMOTE_BLOCK = 1 << 14
#: Blocks the cache keeps (least recently used go first).
_REMOTE_BLOCKS = 256
from ._validate import validate_array


# --------------------------------------------------------------------------------------------
# TIFF (multi-page, OME-TIFF, ImageJ hyperstacks)


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


class _ObjectReader:
    """A read-only seekable file over an object, for tifffile: short reads through an LRU cache of
    ``_REMOTE_BLOCK``-byte blocks (a page's header and tags cost one small GET, shared with its
    neighbours), long reads as one ranged GET of exactly their bytes (no read-ahead past a page's
    data). Not thread-safe by itself: tifffile reads it under the source's lock."""

    mode = "rb"

    def __init__(self, fs, path: str, size: int, name: str):
        self._fs, self._path, self._size, self.name = fs, path, int(size), name
        self._pos = 0
        self._blocks = OrderedDict()
        self.closed = False

    def seekable(self):
        return True

    def readable(self):
        return True

    def tell(self):
        return self._pos

    def seek(self, offset, whence=0):
        base = {0: 0, 1: self._pos, 2: self._size}[whence]
        self._pos = max(0, base + int(offset))
        return self._pos

    def read(self, n=-1):
        start = self._pos
        end = self._size if n is None or n < 0 else min(self._size, start + int(n))
        if end <= start:
            return b""
        if end - start >= _REMOTE_BLOCK:
            data = self._fs.cat_file(self._path, start=start, end=end)
        else:
            data = self._cached(start, end)
        self._pos = start + len(data)
        return data

    def readinto(self, buffer):
        view = memoryview(buffer).cast("B")
        data = self.read(len(view))
        view[: len(data)] = data
        return len(data)

    def _cached(self, start, end):
        first, last = start // _REMOTE_BLOCK, (end - 1) // _REMOTE_BLOCK
        missing = [b for b in range(first, last + 1) if b not in self._blocks]
        if missing:
            lo, hi = missing[0] * _REMOTE_BLOCK, min(self._size, (missing[-1] + 1) * _REMOTE_BLOCK)
            data = self._fs.cat_file(self._path, start=lo, end=hi)
            for b in missing:
                self._blocks[b] = data[(b - missing[0]) * _REMOTE_BLOCK : (b - missing[0] + 1) * _REMOTE_BLOCK]
        parts = []
        for b in range(first, last + 1):
            self._blocks.move_to_end(b)
            parts.append(self._blocks[b])
        while len(self._blocks) > _REMOTE_BLOCKS:
            self._blocks.popitem(last=False)
        joined = b"".join(parts)
        offset = first * _REMOTE_BLOCK
        return joined[start - offset : end - offset]

    def close(self):
        self._blocks.clear()
        self.closed = True


class TiffSource(_RemoteMixin, Source):
    """Planes of a multi-page TIFF / OME-TIFF / ImageJ hyperstack, read on demand."""

    kind = "tiff"
    _TRANSIENT = ("_lock", "_tif", "_fd", "_fs", "_fh")

    def __init__(self, path: str, *, max_pixels: int, page_budget=None, storage_options=None, object_size=None):
        super().__init__(path, max_pixels=max_pixels)
        self.path = path
        if is_remote(path):
            self._remote = True
            self._storage_options = resolve_storage_options(storage_options)
            self._size = self._object_size() if object_size is None else int(object_size)
        else:
            self._size = os.stat(path).st_size
        try:
            with self._lock:
                tif = self._open()
                with _quiet_tifffile():
                    self._layout(tif, page_budget)
            if self._n == 1 and not self._truncated:
                raise _single_image(path)
            plane = self._plane  # every page of the series has its shape: the pixel and memory budgets once
            _check_budget(self.path, plane.height, plane.width, max_pixels,
                          channels=_frame_channels(plane.shape), dtype=plane.dtype)
        except BaseException as exc:
            self.close()  # the file is not left open behind an error
            if isinstance(exc, (InputError, MemoryError)) or not isinstance(exc, Exception):
                raise
            if self.__dict__.get("_remote") and is_transport_error(exc) and not isinstance(exc, ValueError):
                raise remote_error(self.path, exc, "opening") from None
            # tifffile's own parse of a damaged file (a corrupted IFD, an incompatible series
            # keyframe, ImageJ metadata that is not numbers)
            raise InputError(
                f"{self.path} is truncated or corrupt (TIFF: {_first_line(exc)}): re-export or copy the file again"
            ) from None

    # -- opening --------------------------------------------------------------------------

    def _object_size(self) -> int:
        """The object's size in bytes (what the truncation checks compare with)."""
        fs, path = self._filesystem(self.path)
        try:
            size = fs.info(path).get("size")
        except Exception as exc:
            raise remote_error(self.path, exc, "opening") from None
        if size is None:
            raise InputError(
                f"{self.path}: the server does not tell the object's size, which reading a TIFF by byte "
                f"range needs: copy the file locally"
            )
        if int(size) == 0:
            raise InputError(
                f"{self.path} is empty (0 bytes): the object was not written completely; upload it again"
            )
        return int(size)

    def _open(self):
        if self._tif is None:
            import tifffile  # noqa: PLC0415

            target = self.path
            if self.__dict__.get("_remote"):
                fs, path = self._filesystem(self.path)
                name = self.path.rstrip("/").rsplit("/", 1)[-1]
                self._fh = target = _ObjectReader(fs, path, self._size, name)
            try:
                with _quiet_tifffile():
                    if target is self.path:
                        self._tif = tifffile.TiffFile(self.path)
                    else:
                        self._tif = tifffile.TiffFile(target, name=name)
            except Exception as exc:
                if self._fh is not None and is_transport_error(exc) and not isinstance(exc, ValueError):
                    raise remote_error(self.path, exc, "opening") from None
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
            if self._fh is not None:
                self._fh.close()
                self._fh = None
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
            if self.__dict__.get("_remote") and is_transport_error(exc) and not isinstance(exc, ValueError):
                raise remote_error(label, exc, "reading") from None
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
        if self.__dict__.get("_remote"):  # one ranged GET, no shared file position: thread-safe
            dtype = plane.dtype_in.newbyteorder(self._byteorder())
            fs, path = self._filesystem(self.path)
            try:
                data = fs.cat_file(path, start=start, end=start + plane.nbytes)
            except Exception as exc:
                raise remote_error(self._label(i), exc, "reading") from None
            if len(data) < plane.nbytes:
                raise self._missing(i, cut_short=True)
            return np.frombuffer(data, dtype=dtype).copy()
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
        loading = []  # tifffile's log records from parsing the page (pages mode)
        with self._lock:
            if self._mode == "series":
                page = self._pages_of_series()[i]
                plane = self._plane
            else:
                if i >= self._n_ifds:
                    raise self._missing(i)
                tif = self._open()
                with _quiet_tifffile() as loading:
                    page = tif.pages[i]
                plane = None
            if page is None:
                raise self._missing(i)
            if _page_data_end(page) > self._size:
                raise self._missing(i, cut_short=True)
            if plane is None:
                if not hasattr(page, "shaped"):
                    with _quiet_tifffile() as more:
                        page = page.aspage()
                    loading = loading + more
                plane = _TiffPlane(page, f"{self.path} page {i}")
                _check_budget(f"{self.path} page {i}", plane.height, plane.width, self.max_pixels,
                              channels=_frame_channels(plane.shape), dtype=plane.dtype, per_frame=False)
        # tifffile's notes on the page (a structure tag it could not parse, strip counts that do
        # not fit, a strip of 0 bytes) make the frame an error instead of a wrongly decoded one
        reason = _tiff_damage(page, loading)
        if reason is None:
            with _quiet_tifffile() as decoding:
                image = page.asarray(lock=self._lock)
            reason = _tiff_damage(page, decoding)
        if reason is not None:
            raise _damaged(self.path, i, reason)
        return image, plane

    def fingerprint(self):
        if self.__dict__.get("_remote"):
            fs, _ = self._filesystem(self.path)
            fs.invalidate_cache()
            entries = self._remote_entries(fs, [self.path], [_spec_of_url(self.path)])
            return {"kind": self.kind, "spec": _spec_of_url(self.spec), **_files_fingerprint(entries)}
        return {"kind": self.kind, "spec": self.spec, **_files_fingerprint([_stat_entry(self.path)])}
