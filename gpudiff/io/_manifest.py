"""A CSV manifest of pairs (``reference,moving[,id]``): frames are its distinct image paths."""

from __future__ import annotations

import csv
import os

from ..errors import InputError
from ._images import read_image
from ._readerrors import _cannot_read, _first_line
from ._source import Source, _ImageFilesMixin, _check_frame_budget, _files_fingerprint, _stat_entry


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
            raise _cannot_read(path, exc, "check the file") from None
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

    def frame_stamps(self):
        """(path, size, mtime_ns) of each frame's file (the manifest's distinct paths, in frame
        order), named as the fingerprint names them: see FolderSource.frame_stamps."""
        return [_stat_entry(p) for p in self._paths]

    def fingerprint(self):
        out = {"kind": self.kind, "spec": self.spec, "manifest": _files_fingerprint([_stat_entry(self.path)])}
        out.update(_files_fingerprint([_stat_entry(p) for p in self._paths]))
        return out
