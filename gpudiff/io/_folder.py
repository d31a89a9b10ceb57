"""A folder of image files or a glob pattern: one file per frame, natural sort.

The same for objects (``s3://bucket/frames/``, ``s3://bucket/frames/*.tif``, an HTTP directory
listing): a frame is one object, fetched whole and decoded by the same readers as a local file.
"""

from __future__ import annotations

import glob
import os
import posixpath
import re

from ..errors import InputError
from ._images import _probe_image_bytes, _read_image_bytes, _sniff, read_image
from ._readerrors import _first_line
from ._remote import is_remote, remote_error, resolve_storage_options
from ._source import (
    _GLOB_CHARS,
    IMAGE_EXTENSIONS,
    Source,
    _ImageFilesMixin,
    _RemoteMixin,
    _check_frame_budget,
    _files_fingerprint,
    _is_image_file,
    _spec_of_url,
    _stat_entry,
    natural_key,
)

_HTTP_GLOB = re.compile(r"[*\[]")


def _is_remote_glob(url: str) -> bool:
    """A URL with glob characters: ``* ? [``; on HTTP(S) only ``*`` and ``[`` (``?`` starts a query)."""
    if url.split("://", 1)[0].lower() in ("http", "https"):
        return bool(_HTTP_GLOB.search(url.split("?", 1)[0]))
    return bool(_GLOB_CHARS.search(url))


def _object_url(spec: str, path: str) -> str:
    """The URL of an object the filesystem names ``path`` (``bucket/key``, or a URL on HTTP),
    in the scheme the user wrote."""
    return path if "://" in path else f"{spec.split('://', 1)[0]}://{path}"


def _images_by_magic(fs, urls) -> list:
    """The objects among ``urls`` (names without an image extension) whose first 64 bytes are an
    image's, fetched together (``cat_ranges``: concurrent on S3 and HTTP); unreadable ones are not
    taken, as for local files."""
    if not urls:
        return []
    paths = [fs._strip_protocol(u) for u in urls]
    try:
        heads = fs.cat_ranges(paths, [0] * len(paths), [64] * len(paths), on_error="return")
    except Exception:  # noqa: BLE001 - a client without batched ranges: one by one
        heads = []
        for p in paths:
            try:
                heads.append(fs.cat_file(p, start=0, end=64))
            except Exception as exc:  # noqa: BLE001
                heads.append(exc)
    return [u for u, head in zip(urls, heads) if isinstance(head, bytes) and _sniff(head) is not None]


_RELATIVE = "relative_to_glob"


def _glob_root(spec: str) -> str:
    """The folder part of a local glob before its first glob character (``''``: the current folder)."""
    m = _GLOB_CHARS.search(spec)
    head = spec[: m.start()] if m else spec
    cut = max(head.rfind("/"), head.rfind(os.sep))
    return head[: cut + 1] if cut >= 0 else ""


def _relative_name(path: str, root: str) -> str:
    rel = os.path.relpath(path, root or os.curdir)
    return rel.replace(os.sep, "/")


def same_source_fingerprints(old, new):
    """``(old, new)`` fingerprints brought to one naming before they are compared (on resume).

    A local glob's fingerprint also names its files relative to the glob's folder: when both sides
    have those names, they are compared instead of the names the glob gave (so ``f3/*.jpg``,
    ``./f3/*.jpg`` and the absolute glob are one source); a store made before they existed is
    compared by the glob's names, as it was (the same spelling resumes, another is refused as
    before). Anything else unchanged.
    """
    if not (isinstance(old, dict) and isinstance(new, dict)) or new.get("kind") != "folder":
        return old, new
    if _RELATIVE not in new:
        return old, new
    if not isinstance(old.get(_RELATIVE), dict):  # a store made before: by the glob's names, as it was
        return old, {k: v for k, v in new.items() if k != _RELATIVE}

    def relative(fp):
        keep = {k: v for k, v in fp.items() if k in ("kind", "spec")}
        return {**keep, **fp[_RELATIVE]}

    return relative(old), relative(new)


class FolderSource(_RemoteMixin, _ImageFilesMixin, Source):
    """Image files of one folder, or the files a glob pattern matches, in natural order."""

    kind = "folder"
    _TRANSIENT = ("_lock", "_probe", "_fs")

    def __init__(self, spec: str, *, max_pixels: int, page_budget=None, storage_options=None):
        super().__init__(spec, max_pixels=max_pixels)
        if is_remote(spec):
            self._storage_options = resolve_storage_options(storage_options)
            self._list_objects(spec)
        elif os.path.isdir(spec):
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

    def _list_objects(self, spec: str) -> None:
        """The image objects under a URL prefix (one level, as a folder) or matching a URL glob."""
        fs, path = self._filesystem(spec)
        self._remote = True
        try:
            if _is_remote_glob(spec):
                self._dir = None
                found = fs.glob(path, detail=True)
                candidates = [(_object_url(spec, p), info) for p, info in found.items()]
            else:
                self._dir = spec.rstrip("/")
                found = fs.ls(path.rstrip("/"), detail=True)
                candidates = [(_object_url(spec, e["name"]), e) for e in found]
        except Exception as exc:
            raise remote_error(spec, exc, "listing") from None
        kept, unnamed = [], []
        for url, info in candidates:
            name = posixpath.basename(url.rstrip("/"))
            if name.startswith(".") or info.get("type") == "directory" or url.endswith("/"):
                continue
            if posixpath.splitext(name)[1].lower() in IMAGE_EXTENSIONS:
                kept.append(url)
            elif info.get("size") != 0:
                unnamed.append(url)
        kept += _images_by_magic(fs, unnamed)
        kept.sort(key=natural_key)
        if self._dir is not None:
            self._names = [posixpath.basename(u) for u in kept]
            if not kept:
                raise InputError(
                    f"{spec} contains no image objects: put PNG, JPEG, BMP, PGM/PPM, TIFF or GIF objects "
                    f"under it, or give a glob such as '{self._dir}/*.png'"
                )
        else:
            self._names = kept
            if not kept:
                self._check_glob_root(fs, spec, path)
                raise InputError(f"{spec} matches no image objects: check the pattern")

    @staticmethod
    def _check_glob_root(fs, spec: str, path: str) -> None:
        """For a glob that matched nothing: the error of a missing bucket, if that is why."""
        m = _HTTP_GLOB.search(path) if "://" in path else _GLOB_CHARS.search(path)
        root = path[: m.start()].rsplit("/", 1)[0] if m else path
        if not root or root.endswith(":/") or root.endswith(":"):
            return
        try:
            fs.info(root)
        except FileNotFoundError as exc:
            text = str(exc).lower()
            if "bucket" in text:
                raise remote_error(spec, exc, "listing") from None
        except Exception as exc:
            raise remote_error(spec, exc, "listing") from None

    def _path(self, i: int) -> str:
        name = self._names[i]
        if self.__dict__.get("_remote"):
            return f"{self._dir}/{name}" if self._dir is not None else name
        return os.path.join(self._dir, name) if self._dir is not None else name

    def _fetch(self, url: str) -> bytes:
        fs, path = self._filesystem(url)
        try:
            return fs.cat_file(path)
        except Exception as exc:
            raise remote_error(url, exc, "reading") from None

    def _length(self) -> int:
        return len(self._names)

    def _first_file(self) -> str:
        return self._path(0)

    def _read(self, i):
        if self.__dict__.get("_remote"):
            url = self._path(i)
            return _read_image_bytes(self._fetch(url), url, max_pixels=self.max_pixels)
        return read_image(self._path(i), max_pixels=self.max_pixels)

    def _probe_first(self):
        if self.__dict__.get("_remote"):
            url = self._path(0)
            return _probe_image_bytes(self._fetch(url), url)
        return super()._probe_first()

    def _label(self, i):
        return self._path(i)

    def fingerprint(self):
        if self.__dict__.get("_remote"):
            return self._remote_fingerprint()
        if self._dir is not None:
            entries = [_stat_entry(os.path.join(self._dir, n), n) for n in self._names]
            return {"kind": self.kind, "spec": self.spec, **_files_fingerprint(entries)}
        entries = [_stat_entry(p) for p in self._names]
        # the names as the glob gave them (`f3/a.jpg`, `./f3/a.jpg`, `/abs/f3/a.jpg`: as before, so a
        # store made before keeps resuming with the same spelling), and the same files named relative
        # to the glob's folder, which do not depend on the spelling (see same_source_fingerprints)
        root = _glob_root(self.spec)
        relative = [(_relative_name(e[0], root), e[1], e[2]) for e in entries]
        return {"kind": self.kind, "spec": self.spec, **_files_fingerprint(entries),
                _RELATIVE: _files_fingerprint(relative)}

    def frame_stamps(self):
        """(name, size, mtime_ns) of each frame's file, in frame order, named as the fingerprint
        names them (relative to the folder, or to a glob's folder): what ``--retry-failed`` compares
        to find the files changed since a store was made. None for objects at a URL."""
        if self.__dict__.get("_remote"):
            return None
        if self._dir is not None:
            return [_stat_entry(os.path.join(self._dir, n), n) for n in self._names]
        root = _glob_root(self.spec)
        return [_stat_entry(p, _relative_name(p, root)) for p in self._names]

    def _remote_fingerprint(self) -> dict:
        fs, path = self._filesystem(self.spec)
        fs.invalidate_cache()
        try:
            if self._dir is not None:
                listed = {e["name"]: e for e in fs.ls(path.rstrip("/"), detail=True)}
            else:
                listed = fs.glob(path, detail=True)
        except Exception:  # noqa: BLE001 - each object is then asked about by itself
            listed = {}
        urls = [self._path(i) for i in range(len(self._names))]
        entries = self._remote_entries(fs, urls, self._names, listed)
        return {"kind": self.kind, "spec": _spec_of_url(self.spec), **_files_fingerprint(entries)}
