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

URLs (``s3://bucket/plate.zarr``, ``https://host/stack.ome.zarr``, ``s3://bucket/frames/*.tif``,
``s3://bucket/stack.tif``) open as the same kinds through fsspec (``gpudiff[remote]``): a Zarr store
through zarr's ``FsspecStore``, a folder or glob of image objects (each fetched whole when read), a
multi-page TIFF by byte range (never the whole object). A remote source pickles with its storage
options; its fingerprint lists each object's size and ETag (else last-modified time) where a local
one lists sizes and mtimes.
"""

from __future__ import annotations

import os
import stat

from ..errors import InputError
from ..options import DEFAULT_MAX_PIXELS
from ._folder import FolderSource
from ._gif import GifSource
from ._images import _sniff
from ._manifest import ManifestSource
from ._readerrors import _cannot_read, _stat_file
from ._remote import is_remote
from ._source import Source, _GLOB_CHARS, _single_image
from ._tiff import TiffSource
from ._validate import _check_max_pixels, _whole_number
from ._video import VideoSource, _looks_like_video
from ._zarr import ZarrSource, _is_zarr_dir


#: The kinds of :class:`Source`, as in :attr:`Source.kind`.
SOURCE_KINDS = ("folder", "tiff", "zarr", "video", "gif", "manifest")
_SEQUENCES_TEXT = (
    "a folder or glob of images, a multi-page TIFF, a Zarr array, a video, an animated GIF or a CSV pair manifest"
)


# --------------------------------------------------------------------------------------------
# open_source


def _read_head(path: str, n: int = 64) -> bytes:
    """The first ``n`` bytes, to tell the kinds apart by their magic bytes."""
    try:
        with open(path, "rb") as fh:
            return fh.read(n)
    except OSError as exc:
        raise _cannot_read(path, exc, "check the file") from None


def _check_page_budget(page_budget):
    return None if page_budget is None else _whole_number(page_budget, "page budget", 1)


def _is_listing(info: dict | None, url: str) -> bool:
    """An object-store prefix, or a web server's page that may be a directory listing."""
    if info is None or info.get("type") == "directory":
        return True
    if url.split("://", 1)[0].lower() in ("http", "https"):
        return url.endswith("/") or str(info.get("mimetype") or "").startswith("text/html")
    return False


def _open_remote(url: str, *, component, page_budget, max_pixels, storage_options) -> Source:
    """:func:`open_source` of a URL: a Zarr store, a glob or prefix of image objects, or a TIFF."""
    import posixpath  # noqa: PLC0415

    from ._folder import _is_remote_glob  # noqa: PLC0415
    from ._remote import get_filesystem, remote_error, resolve_storage_options  # noqa: PLC0415
    from ._zarr import _is_zarr_url  # noqa: PLC0415

    options = resolve_storage_options(storage_options)
    kw = {"max_pixels": max_pixels, "page_budget": page_budget, "storage_options": options}
    fs, path = get_filesystem(url, options)
    not_zarr = InputError(f"{url} is not a Zarr store: --component applies to Zarr stores only; drop it")
    if _is_remote_glob(url):
        if component is not None:
            raise not_zarr
        return FolderSource(url, **kw)
    name = posixpath.basename(url.split("?", 1)[0].rstrip("/"))
    ext = posixpath.splitext(name)[1].lower()
    if ext == ".csv":
        raise InputError(f"{url}: a pair manifest is read from a local file only: copy the manifest locally")
    try:
        info = fs.info(path)
        missing = None
    except (FileNotFoundError, PermissionError) as exc:  # a store's prefix need not be listable
        info, missing = None, exc
    except Exception as exc:
        raise remote_error(url, exc, "opening") from None
    if _is_listing(info, url):
        if _is_zarr_url(fs, url):
            return ZarrSource(url, component=component, **kw)
        if missing is not None:
            raise remote_error(url, missing, "opening") from None
        if component is not None:
            raise not_zarr
        return FolderSource(url, **kw)
    if component is not None:
        raise not_zarr
    if info.get("size") == 0:
        raise InputError(f"{url} is empty (0 bytes): the object was not written completely; upload it again")
    try:
        head = fs.cat_file(path, start=0, end=64)
    except Exception as exc:
        raise remote_error(url, exc, "reading") from None
    fmt = _sniff(head)
    if fmt == "TIFF":
        size = info.get("size")
        return TiffSource(url, object_size=size if isinstance(size, int) and size > 0 else None, **kw)
    if fmt == "GIF":
        raise InputError(f"{url} is an animated GIF: gpudiff reads GIFs from local files only; copy it locally")
    if fmt is not None:
        raise _single_image(url)
    if _looks_like_video(head, ext):
        raise InputError(f"{url} is a video: gpudiff reads videos from local files only; copy it locally")
    raise InputError(
        f"{url} is not a sequence gpudiff reads from a URL: give a folder (prefix) or glob of images, "
        f"a multi-page TIFF or a Zarr store"
    )


def open_source(
    spec, *, component=None, page_budget=None, max_pixels=DEFAULT_MAX_PIXELS, storage_options=None
) -> Source:
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
    storage_options : dict or str, optional
        For a URL (``s3://``, ``gs://``, ``http(s)://``): fsspec's keyword arguments (credentials,
        ``endpoint_url``), flat or keyed by protocol, as a dict or JSON text; default
        ``GPUDIFF_STORAGE_OPTIONS``, else the client's own configuration. Kept with the source (and
        pickled with it), never shown.

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

    A URL is a Zarr store when ``zarr.json``, ``.zarray`` or ``.zgroup`` is under it; with ``* ? [``
    (on HTTP ``*`` and ``[``) a glob of objects; a prefix (or a web server's directory listing) is a
    folder of objects; otherwise its first 64 bytes tell a multi-page TIFF, read by byte range.
    Manifests, videos and animated GIFs are read from local files only. Whatever fails (no such
    object or bucket, access denied, unreachable endpoint) is one InputError naming the URL.
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
    if is_remote(path):
        return _open_remote(
            path, component=component, page_budget=page_budget, max_pixels=max_pixels,
            storage_options=storage_options,
        )
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
