"""A folder of image files or a glob pattern: one file per frame, natural sort."""

from __future__ import annotations

import glob
import os

from ..errors import InputError
from ._images import read_image
from ._readerrors import _first_line
from ._source import (
    Source,
    _ImageFilesMixin,
    _check_frame_budget,
    _files_fingerprint,
    _is_image_file,
    _stat_entry,
    natural_key,
)


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
