"""The :class:`Source` interface every source kind implements, and what the kinds share: the
frame and pixel budgets, the file fingerprint a resume checks, natural sort, image-file detection.
"""

from __future__ import annotations

import hashlib
import operator
import os
import re
import threading

import numpy as np

from ..errors import InputError
from ._images import _sniff, probe_image
from ._memory import check_decode_memory
from ._readerrors import _sci


#: File names a folder or glob takes as images without looking inside (others: by magic bytes).
IMAGE_EXTENSIONS = frozenset(
    {".png", ".jpg", ".jpeg", ".jpe", ".bmp", ".pgm", ".ppm", ".pnm", ".pbm", ".tif", ".tiff", ".gif"}
)
#: Containers opened as videos (also recognised by their magic bytes).
VIDEO_EXTENSIONS = frozenset(
    {".avi", ".mp4", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".ogv", ".wmv", ".flv", ".ts", ".mts"}
    | {".m2ts", ".3gp"}
)
_GLOB_CHARS = re.compile(r"[*?\[]")
_DIGITS = re.compile(r"([0-9]+)")
#: A fingerprint lists its files one by one up to this many (always: count and sha256).
_FINGERPRINT_LISTED = 64
_ESCAPED_BYTE = re.compile(r"\\x([89a-fA-F][0-9a-fA-F])")


def display_name(text: str) -> str:
    """A file name as text every store, CSV and page can hold: valid UTF-8, the same name.

    On Linux a file name is bytes; Python gives the bytes that are not UTF-8 as lone surrogates
    (``os.fsdecode``'s surrogateescape: b'\\xff' -> '\\udcff'), which UTF-8 cannot encode. They
    become the four characters ``\\xff`` here, everything else stays as it is (``<``, quotes,
    newlines: escaping for HTML and CSV is the writer's job). :func:`fs_name` undoes it.
    """
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        pass
    try:
        raw = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a surrogate not from a byte (a name built in Python)
        raw = text.encode("utf-8", "surrogatepass")
    return raw.decode("utf-8", "backslashreplace")


def fs_name(name: str) -> str:
    """The file name (os.fsdecode form) a :func:`display_name` stands for: each ``\\xNN`` with NN
    from 80 to ff back to that byte. (A name that holds such four characters literally reads back
    as the byte: the one ambiguity, for a name no one types.)"""
    if "\\x" not in name:
        return name
    out, last = bytearray(), 0
    for m in _ESCAPED_BYTE.finditer(name):
        out += name[last : m.start()].encode("utf-8", "surrogateescape")
        out.append(int(m.group(1), 16))
        last = m.end()
    out += name[last:].encode("utf-8", "surrogateescape")
    return os.fsdecode(bytes(out))


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
        try:
            return self._read(self._index(index))
        except InputError as exc:
            text = str(exc)
            if display_name(text) != text:  # a file name with bytes that are not UTF-8
                raise InputError(display_name(text)) from None
            raise

    def label(self, index: int) -> str:
        """Human name of a frame for messages and exports: a file path, ``stack.tif[page 12]``...
        Bytes of a file name that are not UTF-8 are written ``\\xNN`` (:func:`display_name`)."""
        return display_name(self._label(self._index(index)))

    def fingerprint(self) -> dict:
        """JSON-able identity of the input: kind, spec and the files' sizes and mtimes.

        Files are summarised as ``count`` and a ``sha256`` over the sorted (name, size,
        mtime_ns) list; up to 64 files are also listed one by one. For objects at a URL the
        ``mtime_ns`` entry holds the object's ETag (else its last-modified time) as a string, and
        the spec is the URL without a trailing ``/``.
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


def _check_budget(name, height, width, max_pixels, *, channels=None, dtype=None, per_frame=True) -> None:
    """A frame's pre-decode budget: its pixels against ``max_pixels``, then, given the frame's
    ``channels`` and ``dtype`` (as :meth:`Source.read` returns it), the memory its decode needs
    against the memory available (:func:`~gpudiff.io._memory.check_decode_memory`). Header
    values only: nothing is decoded. ``per_frame``: the size is each frame's (checked at open)."""
    pixels = int(height) * int(width)
    if pixels > max_pixels:
        raise InputError(
            f"{name} declares {int(width)} x {int(height)} = {_sci(pixels)} pixels, over the budget of "
            f"{_sci(max_pixels)}: raise --max-pixels if you trust it"
        )
    if dtype is not None:
        check_decode_memory(name, height, width, 1 if channels is None else channels, dtype, per_frame=per_frame)


def _frame_channels(shape) -> int:
    """Samples per pixel of a frame shape ``(H, W)`` or ``(H, W, C)``."""
    return int(shape[2]) if len(shape) > 2 else 1


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
                self._probe = self._probe_first()
            except InputError:
                self._probe = False
        return self._probe or None

    def _probe_first(self):
        return probe_image(self._first_file())

    @property
    def frame_shape(self):
        info = self._first_info()
        return None if info is None else tuple(info.shape)

    @property
    def dtype(self):
        info = self._first_info()
        return None if info is None else info.dtype


# --------------------------------------------------------------------------------------------
# sources in object stores and on web servers


class _RemoteMixin:
    """What a source read through fsspec keeps: its URL's storage options (pickled with it, in
    memory, never shown) and the filesystem, rebuilt lazily in each process (``_fs`` is transient)."""

    _fs = None
    _storage_options: dict | None = None

    def _filesystem(self, url: str):
        """``(fs, path)`` for ``url`` with this source's storage options."""
        from ._remote import get_filesystem  # noqa: PLC0415

        fs = self._fs
        if fs is None:
            fs, _ = get_filesystem(url, self._storage_options)
            self._fs = fs
        return fs, fs._strip_protocol(url)

    def _remote_entries(self, fs, urls, names, listed=None) -> list:
        """(name, size, version) per object for :func:`_files_fingerprint`: the version is the ETag,
        else the last-modified time (``object_fingerprint``); from a fresh listing where it has them
        (``listed``: fs path -> info), else one ``fs.info`` per object (concurrent)."""
        from ._remote import object_fingerprint, object_infos  # noqa: PLC0415

        listed = listed or {}
        infos = {}
        for url in urls:
            info = listed.get(fs._strip_protocol(url))
            if info is not None and object_fingerprint(info)[1] is not None:
                infos[url] = info
        ask = [u for u in urls if u not in infos]
        for url, info in zip(ask, object_infos(fs, ask)):
            infos[url] = info if isinstance(info, dict) else {}
        return [(name, *object_fingerprint(infos[url])) for name, url in zip(names, urls)]


def _spec_of_url(url: str) -> str:
    """The fingerprint's spec for a URL: as given, without a trailing ``/``."""
    return url.rstrip("/") or url
