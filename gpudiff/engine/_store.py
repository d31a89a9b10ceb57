"""The result store: one Zarr v3 group per run, readable without gpudiff (zarr-python, xarray).

Layout of ``results.zarr`` (store version 1)::

    results.zarr/                 group; attributes below (JSON)
      status        (item)        uint8, 0 pending / 1 done / 2 failed, fill 0
      error         (item)        variable-length UTF-8 string, "" when fine
      reference_index, moving_index (item)  int64, fill -1
      reference_path, moving_path, id (item) string (manifests only)
      manhattan ... pixels (item) float64, fill NaN (one array per metric, see METRIC_COLUMNS)
      shift         (item, axis)  float64 (dy, dx), only when aligning
      maps/diff     (item, y, x[, channel]) float32, fill NaN, chunked one item per chunk (optional)

Every per-item array is chunked along ``item`` by the plan's ``chunk`` (maps: one item per chunk),
carries ``dimension_names`` (so ``xarray.open_zarr(path)`` gives a labelled Dataset; maps with
``group="maps"``), and uses zarr's default codecs (zstd). The metadata is consolidated into the root
``zarr.json`` once, at creation, and never rewritten: the schema is fixed before any task runs.

Safety, in the order things happen:

* **Created once, by whoever comes first.** The complete schema is built in a temporary sibling
  directory (``.results.zarr.tmp-<uuid>``) and renamed onto the target. Renaming a directory onto a
  non-empty one fails, so of N processes racing (SLURM array tasks sharing a filesystem) exactly
  one wins; the others delete their temporary and open the winner's store. Everyone then checks
  that the store was made with the same configuration (:class:`~gpudiff.errors.ConfigError`
  otherwise, naming the first differing key).
* **Whole chunks, no locks.** A writer writes whole chunks of its own items only (no two tasks touch
  one chunk), every data column first and the ``status`` chunk last: a chunk whose status is set
  is complete. Nothing else is written during a run (no attribute updates).
* **Kill safety.** zarr's ``LocalStore`` writes each chunk to ``<key>.<uuid>.partial`` and renames it
  into place (``zarr.storage._local._atomic_write``), so a killed writer leaves every chunk file
  either absent, old or complete. Readers never look at ``.partial`` files;
  :meth:`ResultStore.clean_stale_temporaries` removes old ones. A chunk file that cannot be read
  (for example, truncated by a power loss: zarr does not fsync) reads as fill values, so its
  status chunk reads as pending and the chunk is redone.
* **Disk full.** ``ENOSPC`` (or a quota) while writing chunk ``c`` raises
  :class:`~gpudiff.errors.InputError`; the chunk's status is not set, finished chunks stay valid.

Only local (POSIX or shared) filesystem paths are supported: the creation protocol needs rename.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from collections.abc import Iterable, Sequence
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from ..errors import ConfigError, InputError
from ._config import _config_mismatch, _jsonable
from ._schema import (
    _BUILTIN,
    _RESERVED,
    DONE,
    FAILED,
    PENDING,
    STATUS_NAMES,
    Field,
    _check_fields,
    _dtype_name,
)
from ._zarrfiles import (
    _PARTIAL,
    _create,
    _disk_error,
    _has_store_meta,
    _host,
    _read_meta,
    _read_robust,
    _remove_store,
    _set_together,
)

__all__ = ["ResultStore"]


class ResultStore:
    """A gpudiff result store (see the module docstring for the layout and the safety rules).

    Make one with :meth:`create_or_open` (a run) or :meth:`open` (status, export, report).
    Picklable: a copy reopens the same path (for Dask workers).

    Attributes
    ----------
    path : pathlib.Path
    n_items, chunk, n_chunks : int
    fields : list of Field
        The per-item outputs, besides ``status`` and ``error``.
    attrs : dict
        The group attributes (a copy).
    created_here : bool
        True in the one process whose :meth:`create_or_open` created the store.
    """

    def __init__(self, path, meta: dict, mode: str):
        import zarr  # noqa: PLC0415

        self.path = Path(path)
        self.mode = mode
        self.created_here = False
        attrs = dict(meta.get("attributes") or {})
        self.attrs = attrs
        try:
            self.n_items = int(attrs["n_items"])
            self.chunk = int(attrs["chunk"])
            names = list(attrs["fields"])
        except (KeyError, TypeError, ValueError) as e:
            raise InputError(f"{self.path} is not a gpudiff result store: attribute {e} is missing") from None
        zmode = "r" if mode == "r" else "r+"
        try:
            self._group = zarr.open_group(self.path, mode=zmode, zarr_format=3)
            self._arrays = {name: self._group[name] for name in (*_BUILTIN, *names)}
        except KeyError as e:
            raise InputError(
                f"{self.path} is not a gpudiff result store: array {e} is missing (damaged store: "
                f"rerun with --overwrite)"
            ) from None
        except Exception as e:  # noqa: BLE001 (any zarr failure to open is the same answer)
            raise InputError(f"{self.path} is not a gpudiff result store: {e}") from None
        self.fields = [self._field_of(name) for name in names]
        self._field_by_name = {f.name: f for f in self.fields}
        status = self._arrays["status"]
        if status.shape != (self.n_items,) or status.chunks[0] != self.chunk:
            raise InputError(
                f"{self.path} is not a gpudiff result store: status has shape {status.shape}, "
                f"chunks {status.chunks}, expected ({self.n_items},) in chunks of {self.chunk}"
            )

    # ---- opening ---------------------------------------------------------------------------

    @classmethod
    def open(cls, path, *, mode: str = "r") -> ResultStore:
        """Open an existing store; ``mode`` 'r' (read only) or 'r+' (write chunks).

        Raises
        ------
        InputError
            The path does not exist, is not a gpudiff store, or was written by a newer store version.
        """
        if mode not in ("r", "r+"):
            raise ValueError(f"mode {mode!r}: use 'r' or 'r+'")
        path = Path(os.path.abspath(os.fspath(path)))
        return cls(path, _read_meta(path), mode)

    @classmethod
    def create_or_open(
        cls,
        path,
        *,
        n_items: int,
        chunk: int,
        fields: Sequence[Field],
        attrs: dict | None = None,
        config: dict | None = None,
        overwrite: bool = False,
        initial: dict | None = None,
    ) -> ResultStore:
        """Create the store with its complete schema, or open the one another process made.

        Safe when many processes call it at once on a shared filesystem: exactly one creates
        (``created_here``), every one returns a store with the same schema and attributes.

        Parameters
        ----------
        path : str or Path
            The store directory (``results.zarr``); parents are created.
        n_items, chunk : int
            Items, and items per chunk (the plan's).
        fields : sequence of Field
            Per-item outputs besides ``status`` and ``error`` (see :func:`result_fields`).
        attrs : dict, optional
            Extra group attributes (``options``, ``source``, ``backend``, ``device``, ...), JSON-able.
        config : dict, optional
            What must match for a rerun to resume this store (options, pairing, source
            fingerprint...), JSON-able. ``n_items``, ``chunk`` and the fields are checked as well.
        overwrite : bool
            Remove an existing store first (only a gpudiff store or an empty directory; never
            anything else). Not for many processes at once: let one process overwrite.
        initial : dict of name -> array, optional
            Whole columns written at creation, before the store appears (e.g. ``reference_index``,
            ``moving_index``, paths), so every item is labelled even while pending.

        Raises
        ------
        ConfigError
            The existing store was made with a different configuration.
        InputError
            The path holds something else, or the disk is full.
        """
        path = Path(os.path.abspath(os.fspath(path)))
        n_items, chunk = int(n_items), int(chunk)
        if n_items < 0:
            raise ValueError(f"n_items {n_items} must be >= 0")
        if chunk < 1:
            raise ConfigError(f"--chunk {chunk} must be a whole number >= 1")
        fields = list(fields)
        _check_fields(fields, chunk)
        config = _jsonable(config or {}, "config")
        attrs = _jsonable(attrs or {}, "attrs")
        clash = sorted(set(attrs) & set(_RESERVED))
        if clash:
            raise ValueError(f"attrs may not set {', '.join(clash)}: the store sets them")

        if overwrite and path.exists():
            _remove_store(path)

        created = False
        if not _has_store_meta(path):
            if path.exists() and not (path.is_dir() and not any(path.iterdir())):
                _read_meta(path)  # something else is there: raises the precise InputError
            created = _create(path, n_items, chunk, fields, attrs, config, initial)
        store = cls(path, _read_meta(path), "r+")
        store.created_here = created
        store._check_same(n_items, chunk, fields, config)
        return store

    def _check_same(self, n_items, chunk, fields, config):
        # The config first: it says why (other options, another source) better than its effects.
        err = _config_mismatch(self.path, self.attrs.get("config", {}), config)
        if err is not None:
            raise err
        fix = "use the same input and options to resume, or --overwrite to start again"
        if self.n_items != n_items:
            raise ConfigError(
                f"{self.path} was made for {self.n_items} items but this run plans {n_items}: {fix}"
            )
        if self.chunk != chunk:
            raise ConfigError(
                f"{self.path} was made with --chunk {self.chunk} but this run asks --chunk {chunk}: {fix}"
            )
        old = {f.name: f.spec(self.chunk) for f in self.fields}
        new = {f.name: f.spec(chunk) for f in fields}
        if old == new:
            return
        only_old = [n for n in old if n not in new]
        only_new = [n for n in new if n not in old]
        if only_old or only_new:
            parts = []
            if only_new:
                parts.append(f"this run asks for outputs it lacks ({', '.join(only_new)})")
            if only_old:
                parts.append(f"it has outputs this run does not ask for ({', '.join(only_old)})")
            what = " and ".join(parts)
        else:
            name = next(n for n in old if old[n] != new[n])
            what = f"its {name} is {old[name]} but this run asks {new[name]}"
        raise ConfigError(f"{self.path} does not match this run: {what}: {fix}")

    def _field_of(self, name: str) -> Field:
        arr = self._arrays[name]
        dims = tuple(arr.metadata.dimension_names or ())
        fill = arr.fill_value
        fill = fill.item() if isinstance(fill, np.generic) else fill
        return Field(
            name,
            _dtype_name(arr.dtype),
            tuple(arr.shape[1:]),
            fill=fill,
            dims=dims,
            chunk_extra=tuple(arr.chunks[1:]),
            item_chunk=None if arr.chunks[0] == self.chunk else int(arr.chunks[0]),
        )

    def __reduce__(self):
        # A copy (a Dask worker's) reopens the same path with the same mode.
        return (_reopen, (str(self.path), self.mode))

    def __repr__(self) -> str:
        return f"ResultStore({str(self.path)!r}, n_items={self.n_items}, chunk={self.chunk})"

    # ---- geometry --------------------------------------------------------------------------

    @property
    def n_chunks(self) -> int:
        return -(-self.n_items // self.chunk) if self.n_items else 0

    def chunk_slice(self, c: int) -> slice:
        c = int(c)
        if not 0 <= c < self.n_chunks:
            raise IndexError(f"chunk {c} out of range 0..{self.n_chunks - 1} of {self.path}")
        return slice(c * self.chunk, min((c + 1) * self.chunk, self.n_items))

    @property
    def names(self) -> list[str]:
        """Every per-item array: ``status``, ``error``, then the fields."""
        return [*_BUILTIN, *(f.name for f in self.fields)]

    # ---- writing ---------------------------------------------------------------------------

    def write_chunk(self, c: int, columns: dict, status, errors: Sequence[str] | None = None) -> None:
        """Write chunk ``c``: every given column, the errors, and the status last.

        Parameters
        ----------
        c : int
            The chunk (items ``c*chunk`` to ``min((c+1)*chunk, n_items)``).
        columns : dict of name -> array
            Values of the chunk's items, leading axis the chunk's length. Columns not given keep
            their fill values (NaN).
        status : array of uint8
            1 (done) or 2 (failed) per item (0 leaves an item pending).
        errors : sequence of str, optional
            Why each failed item failed ("" or None when fine).

        Raises
        ------
        InputError
            Disk full (or another OS error) while writing; the chunk stays pending.
        """
        sl, prepared = self._prepare_columns(c, columns)
        m = sl.stop - sl.start
        status = np.asarray(_host(status), dtype=np.uint8).reshape(-1)
        if status.shape != (m,) or status.size and status.max() > FAILED:
            raise ValueError(f"status of chunk {c}: need {m} values of 0, 1 or 2, got {status!r}")
        errors = [""] * m if errors is None else ["" if e is None else str(e) for e in errors]
        if len(errors) != m:
            raise ValueError(f"errors of chunk {c}: need {m} strings, got {len(errors)}")
        prepared.append(("error", np.asarray(errors, dtype=object)))
        try:
            _set_together([(self._arrays[name], values) for name, values in prepared], sl)
            self._arrays["status"][sl] = status  # last: a chunk whose status is set is complete
        except OSError as e:
            raise _disk_error(self.path, e, f"writing chunk {c}") from None

    def write_columns(self, c: int, columns: dict) -> None:
        """Write some columns of chunk ``c`` without touching its status (a later pass over items
        already done, such as background subtraction, which keeps its own progress)."""
        sl, prepared = self._prepare_columns(c, columns)
        try:
            _set_together([(self._arrays[name], values) for name, values in prepared], sl)
        except OSError as e:
            raise _disk_error(self.path, e, f"writing chunk {c}") from None

    def _prepare_columns(self, c: int, columns: dict) -> tuple[slice, list]:
        """The chunk's slice, and each column as a host array of its field's dtype and shape."""
        if self.mode == "r":
            raise ValueError(f"{self.path} is open read-only: open it with mode='r+' to write")
        sl = self.chunk_slice(c)
        m = sl.stop - sl.start
        prepared = []
        for name, values in columns.items():
            f = self._field_by_name.get(name)
            if f is None:
                raise ValueError(f"{self.path} has no field {name!r}; it has {', '.join(self.names[2:])}")
            values = _host(values)
            if f.dtype == "str":
                flat = np.asarray(values).ravel()
                values = np.asarray(["" if v is None else str(v) for v in flat], dtype=object)
                values = values.reshape((-1, *f.shape))
            else:
                values = np.asarray(values, dtype=f.dtype)
            if values.shape != (m, *f.shape):
                raise ValueError(f"column {name}: shape {values.shape}, chunk {c} needs {(m, *f.shape)}")
            prepared.append((name, values))
        return sl, prepared

    # ---- reading ---------------------------------------------------------------------------

    def pending_chunks(self, chunks: Iterable[int], *, retry_failed: bool = False) -> list[int]:
        """The chunks of ``chunks`` that still need work: some item pending (or failed, with
        ``retry_failed``). Reads only the status array; an unreadable status chunk is pending."""
        chunks = [int(c) for c in chunks]
        for c in chunks:
            self.chunk_slice(c)  # range check
        if not chunks:
            return []
        arr = self._arrays["status"]
        wanted = sorted(set(chunks))
        values = {}
        try:
            if len(wanted) == self.n_chunks:
                whole = arr[:]
                values = {c: whole[self.chunk_slice(c)] for c in wanted}
            else:
                slices = [self.chunk_slice(c) for c in wanted]
                idx = np.concatenate([np.arange(s.start, s.stop) for s in slices])
                got = arr.oindex[idx]
                pos = 0
                for c in wanted:
                    s = self.chunk_slice(c)
                    values[c] = got[pos : pos + s.stop - s.start]
                    pos += s.stop - s.start
        except Exception:  # noqa: BLE001 (a damaged chunk somewhere: read one by one)
            for c in wanted:
                try:
                    values[c] = arr[self.chunk_slice(c)]
                except Exception:  # noqa: BLE001
                    values[c] = np.zeros(1, np.uint8)  # unreadable: redo it
        out = []
        for c in chunks:
            v = values[c]
            if np.any(v == PENDING) or (retry_failed and np.any(v == FAILED)):
                out.append(c)
        return out

    def read(self, names: Iterable[str] | None = None, items: slice | None = None) -> dict[str, np.ndarray]:
        """Columns by name (default: every per-item array outside ``maps/``), whole or ``items``.

        An unreadable chunk reads as fill values (its status as pending), with a warning.
        """
        if names is None:
            names = [n for n in self.names if not n.startswith("maps/")]
        sl = slice(0, self.n_items) if items is None else slice(*items.indices(self.n_items)[:2])
        out = {}
        for name in names:
            if name not in self._arrays:
                raise KeyError(f"{self.path} has no array {name!r}; it has {', '.join(self.names)}")
            out[name] = _read_robust(self._arrays[name], sl, name)
        return out

    def summary(self, max_failures: int = 20) -> dict:
        """Counts of done/failed/pending items and chunks, the first failures, and times."""
        status = self.read(["status"])["status"]
        counts = {s: int(np.count_nonzero(status == v)) for v, s in STATUS_NAMES.items()}
        failed = np.flatnonzero(status == FAILED)
        first = failed[:max_failures]
        messages = []
        if first.size:
            try:
                messages = list(self._arrays["error"].oindex[first])
            except Exception:  # noqa: BLE001
                messages = ["(unreadable)"] * first.size
        chunks_done = 0
        for c in range(self.n_chunks):
            if np.all(status[self.chunk_slice(c)] != PENDING):
                chunks_done += 1
        return {
            "path": str(self.path),
            "n_items": self.n_items,
            "chunk": self.chunk,
            "n_chunks": self.n_chunks,
            "done": counts["done"],
            "failed": counts["failed"],
            "pending": counts["pending"],
            "chunks_finished": chunks_done,
            "failures": [{"item": int(i), "error": str(m)} for i, m in zip(first, messages)],
            "created": self.attrs.get("created"),
            "last_write": self._last_write(),
            "backend": self.attrs.get("backend"),
            "device": self.attrs.get("device"),
            "source": self.attrs.get("source"),
            "findings": self.findings(status),
        }

    def findings(self, status=None) -> dict:
        """What the sequence passes and the alignment found, over the done items, for summaries:
        ``corrupt``/``cut`` (frames flagged), ``unaligned`` (alignment not trusted), and the mean /
        max of ``foreground_fraction``, ``flow_mean`` (px) and ``flow_valid`` (the share of pixels
        the forward-backward check trusted). Only the columns the store has."""
        status = self.read(["status"])["status"] if status is None else status
        done = status == DONE
        out: dict = {}
        names = set(self.names)
        for name, key in (("corrupt", "corrupt"), ("cut", "cut")):
            if name in names:
                v = np.asarray(self.read([name])[name])
                out[key] = int(np.count_nonzero(v[done] == 1))
        if "align_ok" in names:
            v = np.asarray(self.read(["align_ok"])["align_ok"], dtype=np.float64)
            out["unaligned"] = int(np.count_nonzero(v[done] == 0))
        for name in ("foreground_fraction", "flow_mean", "flow_valid"):
            if name in names:
                v = np.asarray(self.read([name])[name], dtype=np.float64)[done]
                v = v[np.isfinite(v)]
                if v.size:
                    out[name] = {"mean": float(v.mean()), "max": float(v.max()), "items": int(v.size)}
        return out

    def _last_write(self) -> str | None:
        latest = None
        try:
            with os.scandir(self.path / "status" / "c") as it:
                for entry in it:
                    if entry.is_file() and not _PARTIAL.search(entry.name):
                        t = entry.stat().st_mtime
                        latest = t if latest is None else max(latest, t)
        except OSError:
            return None
        if latest is None:
            return None
        return datetime.fromtimestamp(latest, timezone.utc).isoformat(timespec="seconds")

    # ---- housekeeping ----------------------------------------------------------------------

    def clean_stale_temporaries(self, older_than_s: float = 3600) -> int:
        """Remove ``*.partial`` chunk files older than ``older_than_s`` (left by killed writers),
        and stale creation temporaries beside the store. Younger ones may belong to writers
        running now, so they are kept. Returns how many were removed."""
        limit = time.time() - float(older_than_s)
        removed = 0
        for root, _dirs, files in os.walk(self.path):
            for name in files:
                if _PARTIAL.search(name):
                    p = os.path.join(root, name)
                    with contextlib.suppress(OSError):
                        if os.stat(p).st_mtime <= limit:
                            os.unlink(p)
                            removed += 1
        parent, base = self.path.parent, self.path.name
        with contextlib.suppress(OSError):
            for entry in os.scandir(parent):
                if entry.name.startswith((f".{base}.tmp-", f".{base}.old-")):
                    with contextlib.suppress(OSError):
                        if entry.stat(follow_symlinks=False).st_mtime <= limit:
                            shutil.rmtree(entry.path, ignore_errors=True)
                            removed += 1
        return removed


def _reopen(path, mode):
    return ResultStore.open(path, mode=mode)
