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
  either absent, old or complete. Readers never look at ``.partial`` files. They are removed
  (:mod:`gpudiff.engine._verify`): at a run's start those older than an hour (of any chunk: no
  live writer keeps one that long), and at the end of a run that finished its chunks those older
  than both the run's start and 10 s, of its own chunks only (no other shard writes them; a
  duplicate of the same shard racing it renames its temporaries within the grace); a run owning
  every chunk also removes the creation temporaries (``.NAME.tmp-*``) and resume-file temporaries
  under the same rule. A run that did not finish removes only the hour-old ones.
* **Lost data chunks.** Where a rename is not atomic (some NFS setups) or after a power loss
  (zarr does not fsync) a finished chunk's data file may be missing, truncated or garbled while
  its status says done. Every write stores its chunks even when they hold only fill values
  (zarr's ``write_empty_chunks``, attribute ``write_empty_chunks``), so ``gpudiff status --verify``
  (:meth:`ResultStore.verify`) can tell a lost chunk from an empty one: it reads every chunk of
  every array and re-marks a damaged one pending, so a rerun recomputes exactly those.
* **Disk full.** ``ENOSPC`` (or a quota) while writing chunk ``c`` raises
  :class:`~gpudiff.errors.StorageFull` (one line, exit 75: free space and rerun to resume); the
  chunk's status is not set, finished chunks stay valid. No permission (or a read-only
  filesystem) is one line naming the path, exit 2.

On an object store (``s3://bucket/results.zarr``; ``gs://``, ``memory://`` alike) there is no rename
and no directory, so each guarantee above is met another way (zarr's ``FsspecStore`` over the fsspec
filesystem of :func:`gpudiff.io._remote.get_filesystem`):

* **Created once: the root object is the commit.** The complete store (arrays' metadata, the
  initial columns, the consolidated root ``zarr.json``) is built in a local temporary directory
  with the same code as a local store, then every object but the root ``zarr.json`` is uploaded,
  and the root last: the store exists for readers once its root object does. On S3 the root is
  PUT with ``If-None-Match: *``, so of N racing creators exactly one commits (``created_here``);
  the others open the winner's store and check its configuration, as locally (a server without
  conditional writes: the last root written wins, with the same schema). Racing creators of one
  configuration (SLURM array tasks of one command) upload identical array metadata and initial
  columns: each object PUT is atomic, so whichever copy lands last is the same bytes, and the
  configuration check after opening catches any other configuration (``ConfigError``). Do not
  race two different configurations into one URL: the loser is refused, but the array objects
  it uploaded before losing may replace the winner's (rerun that one with ``--overwrite``). A
  creation killed before its root object leaves objects and no store: the next run uploads them
  again (it checks that the prefix holds only objects of such a store) and commits.
* **Whole chunks, atomic PUTs.** Each chunk object is written whole by one PUT (an object store
  never shows a partial object), data columns first and ``status`` last, as locally: a killed
  writer leaves each chunk object absent, old or complete, and a chunk whose status object is set
  is complete. There are no temporaries to clean (:meth:`ResultStore.clean_stale_temporaries`
  returns 0).
* **Listing may lag; nothing relies on it.** Status, data and the resume files
  (``background_state.pkl``, ``events_done.json``, and ``--retry-failed``'s
  ``source_files.json.gz`` and ``source_accepted.json``: :meth:`ResultStore.read_aux`, one PUT each
  to write) are read by key. Only ``last_write`` in :meth:`ResultStore.summary` lists the status
  objects (their newest LastModified), and it is informational.
* **Failures.** A write that fails (the endpoint unreachable, access denied, a timeout) raises a
  one-line :class:`~gpudiff.errors.InputError` (:func:`gpudiff.io._remote.remote_error`); the
  chunk's status is not set, finished chunks stay valid.

Storage options (endpoint, credentials) stay in memory: a store pickles them to its Dask workers,
and never writes them into the store's attributes nor shows them (``repr``, errors).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from collections.abc import Callable, Iterable, Sequence
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
    _create_remote,
    _has_store_meta,
    _host,
    _read_meta,
    _read_meta_remote,
    _read_robust,
    _remove_store,
    _remove_store_remote,
    _set_together,
    _write_error,
)

__all__ = ["ResultStore", "StoreRef", "SOURCE_ACCEPTED", "SOURCE_STAMPS"]

#: Beside the arrays: the source's fingerprint as ``gpudiff run --retry-failed`` last accepted it
#: (JSON ``{"source": ..., "accepted": time, "changed": [...]}``), which a rerun matches instead of
#: the one recorded at creation.
SOURCE_ACCEPTED = "source_accepted.json"
#: Beside the arrays: (name, size, mtime_ns) of every frame's file of a folder, glob or manifest
#: (gzip JSON), so ``--retry-failed`` can tell which files changed however many there are.
SOURCE_STAMPS = "source_files.json.gz"


class ResultStore:
    """A gpudiff result store (see the module docstring for the layout and the safety rules).

    Make one with :meth:`create_or_open` (a run) or :meth:`open` (status, export, report).
    Picklable: a copy reopens the same path (for Dask workers), a remote one with its storage options.

    Attributes
    ----------
    path : pathlib.Path, or str for a remote store (its URL)
    url : str
        The path as text, or the URL (:attr:`is_remote`).
    n_items, chunk, n_chunks : int
    fields : list of Field
        The per-item outputs, besides ``status`` and ``error``.
    attrs : dict
        The group attributes (a copy).
    created_here : bool
        True in the one process whose :meth:`create_or_open` created the store.
    """

    def __init__(self, path, meta: dict, mode: str, *, storage_options: dict | None = None, fs=None):
        import zarr  # noqa: PLC0415

        from ..io._remote import is_remote  # noqa: PLC0415

        remote = is_remote(str(path))
        # A local store's path is a Path, a remote one's its URL (str); storage options live only
        # here, in memory (and in pickles to workers): never in attributes, never printed.
        self.path = str(path).rstrip("/") if remote else Path(path)
        self._storage_options = dict(storage_options or {}) if remote else None
        self._fs = self._fs_root = None
        if remote:
            self._fs, self._fs_root = fs if fs is not None else _filesystem(self.path, self._storage_options)
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
            where = _zarr_store(self._fs, self._fs_root, mode == "r") if remote else self.path
            self._group = zarr.open_group(where, mode=zmode, zarr_format=3)
            self._arrays = {name: self._group[name] for name in (*_BUILTIN, *names)}
            if zmode == "r+":
                # every chunk written is stored, even one of fill values only (see `verify`)
                self._arrays = {name: _write_all_chunks(a) for name, a in self._arrays.items()}
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
    def open(cls, path, *, mode: str = "r", storage_options=None) -> ResultStore:
        """Open an existing store; ``mode`` 'r' (read only) or 'r+' (write chunks).

        ``path`` may be a URL (``s3://bucket/results.zarr``); its ``storage_options`` (a dict or
        JSON text) default to ``GPUDIFF_STORAGE_OPTIONS``, then the client's own configuration.

        Raises
        ------
        InputError
            The path does not exist, is not a gpudiff store, or was written by a newer store version.
        """
        if mode not in ("r", "r+"):
            raise ValueError(f"mode {mode!r}: use 'r' or 'r+'")
        from ..io._remote import is_remote, resolve_storage_options  # noqa: PLC0415

        if is_remote(os.fspath(path) if not isinstance(path, str) else path):
            url = str(path).rstrip("/")
            opts = resolve_storage_options(storage_options)
            fs = _filesystem(url, opts)
            return cls(url, _read_meta_remote(*fs, url), mode, storage_options=opts, fs=fs)
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
        initial: dict | Callable[[], dict] | None = None,
        storage_options=None,
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
            ``moving_index``, paths), so every item is labelled even while pending; or a function
            returning them, called only by the process that creates the store (a resume does not
            pay for labelling every item again).
        storage_options : dict or str, optional
            For a URL ``path``: the filesystem's options (default ``GPUDIFF_STORAGE_OPTIONS``).

        Raises
        ------
        ConfigError
            The existing store was made with a different configuration.
        InputError
            The path holds something else, or the disk is full.
        """
        from ..io._remote import is_remote, protocol_of  # noqa: PLC0415

        remote = isinstance(path, str) and is_remote(path)
        if not remote:
            path = Path(os.path.abspath(os.fspath(path)))
        elif protocol_of(path) in ("http", "https"):
            raise InputError(
                f"{path}: a web server is read-only for gpudiff: write the store to a local path or an "
                "object store (s3://, gs://)"
            )
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

        if remote:
            return cls._create_or_open_remote(path.rstrip("/"), n_items, chunk, fields, attrs, config, overwrite,
                                              initial, storage_options)
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

    @classmethod
    def _create_or_open_remote(cls, url, n_items, chunk, fields, attrs, config, overwrite, initial, storage_options):
        """:meth:`create_or_open` on an object store: the store is built locally, uploaded, and its
        root object uploaded last (the commit; see the module docstring)."""
        from ..io._remote import resolve_storage_options  # noqa: PLC0415
        from ._zarrfiles import _remote_root  # noqa: PLC0415

        opts = resolve_storage_options(storage_options)
        fs, root = _filesystem(url, opts)
        if overwrite:
            _remove_store_remote(fs, root, url)
        created = False
        if _remote_root(fs, root, url, "opening the store") is None:
            created = _create_remote(fs, root, url, n_items, chunk, fields, attrs, config, initial)
        store = cls(url, _read_meta_remote(fs, root, url), "r+", storage_options=opts, fs=(fs, root))
        store.created_here = created
        store._check_same(n_items, chunk, fields, config)
        return store

    def recorded_config(self) -> dict:
        """The configuration a rerun must match: the one recorded at creation, with the source as
        ``--retry-failed`` last accepted it (:data:`SOURCE_ACCEPTED`) when it did."""
        import json  # noqa: PLC0415

        config = dict(self.attrs.get("config", {}))
        raw = self.read_aux(SOURCE_ACCEPTED)
        if raw is not None:
            try:
                config["source"] = json.loads(raw)["source"]
            except (ValueError, KeyError, TypeError):
                raise InputError(f"{self.path}/{SOURCE_ACCEPTED} is damaged: rerun with --retry-failed to "
                                 "record the source again, or --overwrite to start again") from None
        return config

    def _check_same(self, n_items, chunk, fields, config):
        # The config first: it says why (other options, another source) better than its effects.
        err = _config_mismatch(self.path, self.recorded_config(), config)
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
        # A copy (a Dask worker's) reopens the same path with the same mode (and storage options).
        if self._storage_options is not None:
            return (_reopen, (self.path, self.mode, self._storage_options))
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
        except self._write_errors as e:
            raise _write_error(self.path, e, f"writing chunk {c}") from None

    def write_columns(self, c: int, columns: dict) -> None:
        """Write some columns of chunk ``c`` without touching its status (a later pass over items
        already done, such as background subtraction, which keeps its own progress)."""
        sl, prepared = self._prepare_columns(c, columns)
        try:
            _set_together([(self._arrays[name], values) for name, values in prepared], sl)
        except self._write_errors as e:
            raise _write_error(self.path, e, f"writing chunk {c}") from None

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
            **self._passes_summary(),
            **self._retry_summary(),
        }

    def _retry_summary(self) -> dict:
        """``retried``: when ``--retry-failed`` last accepted a changed source, how many files had
        changed, the first of them, and when (from :data:`SOURCE_ACCEPTED`)."""
        import json  # noqa: PLC0415

        try:
            raw = self.read_aux(SOURCE_ACCEPTED)
            doc = None if raw is None else json.loads(raw)
        except Exception:  # noqa: BLE001 (informational: a damaged record is reported by a run)
            return {}
        if not isinstance(doc, dict):
            return {}
        return {"retried": {"accepted": doc.get("accepted"), "n_changed": doc.get("n_changed"),
                            "changed": list(doc.get("changed") or [])[:5]}}

    def _passes_summary(self) -> dict:
        """``passes`` (the sequence passes' state) and ``passes_pending`` (their names) for summaries."""
        from ._verify import passes_state  # noqa: PLC0415

        passes = passes_state(self)
        if not passes:
            return {}
        return {"passes": passes, "passes_pending": [k for k, v in passes.items() if v["state"] != "done"]}

    def verify(self, *, repair: bool = True, chunks=None) -> dict:
        """Read every chunk of every array and check it against the status: a done or failed chunk
        whose data is missing or unreadable is re-marked pending (with ``repair``), so a rerun of the
        same command recomputes it; a damaged pass column resets that pass. The rules and the
        report: :func:`gpudiff.engine._verify.verify`."""
        from ._verify import verify  # noqa: PLC0415

        if repair and self.mode == "r":
            raise ValueError(f"{self.path} is open read-only: open it with mode='r+' to repair")
        return verify(self, repair=repair, chunks=chunks)

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
        if self.is_remote:
            return self._last_write_remote()
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
        if self.is_remote:
            return 0  # an object store has no temporaries: every object is one PUT, whole or absent
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


    # ---- where it is, and the files beside the arrays ------------------------------------------

    @property
    def is_remote(self) -> bool:
        """True for a store on an object store (``s3://...``)."""
        return self._storage_options is not None

    @property
    def url(self) -> str:
        """The store's location as text: the absolute local path, or the URL."""
        return str(self.path)

    @property
    def _write_errors(self):
        # locally only OSError means "cannot write" (anything else is a bug); an object store's
        # client raises its own exceptions (botocore, aiohttp) for the same things
        return Exception if self.is_remote else OSError

    def read_aux(self, name: str) -> bytes | None:
        """The bytes of file ``name`` beside the arrays (a pass's resume state), or None if absent."""
        if not self.is_remote:
            p = os.path.join(self.path, name)
            if not os.path.exists(p):
                return None
            with open(p, "rb") as f:
                return f.read()
        from ..io._remote import remote_error  # noqa: PLC0415

        try:
            return self._fs.cat_file(f"{self._fs_root}/{name}")
        except FileNotFoundError:
            return None
        except Exception as e:  # noqa: BLE001
            raise remote_error(self.url, e, f"reading {name}") from None

    def has_aux(self, name: str) -> bool:
        """True when file ``name`` is beside the arrays (without reading it)."""
        if not self.is_remote:
            return os.path.exists(os.path.join(self.path, name))
        from ..io._remote import remote_error  # noqa: PLC0415

        try:
            return bool(self._fs.exists(f"{self._fs_root}/{name}"))
        except Exception as e:  # noqa: BLE001
            raise remote_error(self.url, e, f"looking for {name}") from None

    def write_aux(self, name: str, data: bytes) -> None:
        """Write file ``name`` beside the arrays whole: locally a temporary renamed into place, on an
        object store one PUT (both atomic: a reader sees the old file or the new one)."""
        if not self.is_remote:
            p = os.path.join(self.path, name)
            tmp = f"{p}.tmp{os.getpid()}"
            try:
                with open(tmp, "wb") as f:
                    f.write(data)
                os.replace(tmp, p)
            except OSError as e:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                raise _write_error(self.path, e, f"writing {name}") from None
            return
        from ..io._remote import remote_error  # noqa: PLC0415

        try:
            self._fs.pipe_file(f"{self._fs_root}/{name}", bytes(data))
        except Exception as e:  # noqa: BLE001
            raise remote_error(self.url, e, f"writing {name}") from None

    def remove_aux(self, name: str) -> None:
        """Remove file ``name`` beside the arrays (nothing when absent)."""
        if not self.is_remote:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(self.path, name))
            return
        from ..io._remote import remote_error  # noqa: PLC0415

        try:
            self._fs.rm_file(f"{self._fs_root}/{name}")
        except FileNotFoundError:
            pass
        except Exception as e:  # noqa: BLE001
            raise remote_error(self.url, e, f"removing {name}") from None

    def ref(self):
        """What a worker needs to reopen this store: the path (local), or a picklable reference
        carrying the URL and the storage options (remote)."""
        return StoreRef(self.url, self._storage_options) if self.is_remote else self.url

    def _last_write_remote(self) -> str | None:
        """Newest LastModified of the status chunks (informational: a listing may lag)."""
        prefix = f"{self._fs_root}/status/c"
        try:
            self._fs.invalidate_cache(prefix)
            entries = self._fs.ls(prefix, detail=True)
        except Exception:  # noqa: BLE001 (no chunk yet, or the listing failed: nothing to say)
            return None
        latest = None
        for e in entries:
            t = e.get("LastModified") or e.get("last_modified") or e.get("mtime")
            if t is None:
                continue
            if not isinstance(t, datetime):
                try:
                    t = datetime.fromtimestamp(float(t), timezone.utc)
                except (TypeError, ValueError):
                    continue
            latest = t if latest is None else max(latest, t)
        if latest is None:
            return None
        if latest.tzinfo is None:
            latest = latest.replace(tzinfo=timezone.utc)
        return latest.astimezone(timezone.utc).isoformat(timespec="seconds")


class StoreRef:
    """A remote store's URL and storage options, picklable (to Dask workers) and shown without the
    options; :func:`gpudiff.engine._chunk._open_store` opens it."""

    __slots__ = ("url", "_storage_options")

    def __init__(self, url: str, storage_options: dict | None):
        self.url = url
        # None: resolved where it is opened (GPUDIFF_STORAGE_OPTIONS there)
        self._storage_options = None if storage_options is None else dict(storage_options)

    def __reduce__(self):
        return (StoreRef, (self.url, self._storage_options))

    def __repr__(self) -> str:
        return f"StoreRef({self.url!r})"

    def __str__(self) -> str:
        return self.url

    def open(self, mode: str = "r+") -> ResultStore:
        return ResultStore.open(self.url, mode=mode, storage_options=self._storage_options)


def _write_all_chunks(arr):
    """``arr`` with zarr's ``write_empty_chunks`` on (where this zarr has it)."""
    try:
        return arr.with_config({"write_empty_chunks": True})
    except (AttributeError, TypeError, ValueError):
        return arr


def _filesystem(url: str, storage_options: dict | None):
    """``(fs, path)`` of a store's URL, with a one-line error for a missing client package."""
    from ..io._remote import get_filesystem  # noqa: PLC0415

    return get_filesystem(url, storage_options or {})


class _DroppedConnectionNoise:
    """A logging filter for asyncio's logger: drop "Task exception was never retrieved" reports of
    connection errors. When an endpoint goes away mid-write, aiohttp leaves its request-body task
    failed and unretrieved; asyncio then prints its traceback at exit, after the one-line error the
    write already raised (the same failure)."""

    def filter(self, record) -> bool:
        if not str(record.msg).startswith(("Task exception was never retrieved",
                                           "Future exception was never retrieved")):
            return True
        exc = record.exc_info[1] if record.exc_info else None
        return not isinstance(exc, (ConnectionError, OSError)) and "Connection" not in type(exc).__name__


_NOISE_FILTER = _DroppedConnectionNoise()


def _zarr_store(fs, root: str, read_only: bool):
    """zarr's FsspecStore over ``fs`` (made asynchronous, as zarr needs) at ``root``."""
    import logging  # noqa: PLC0415

    from zarr.storage import FsspecStore  # noqa: PLC0415

    log = logging.getLogger("asyncio")
    if _NOISE_FILTER not in log.filters:
        log.addFilter(_NOISE_FILTER)

    try:
        from zarr.storage._fsspec import _make_async  # noqa: PLC0415

        afs = _make_async(fs)
    except ImportError:  # another zarr layout: rebuild the filesystem as an asynchronous one
        afs = type(fs)(**{**fs.storage_options, "asynchronous": True})
    return FsspecStore(afs, read_only=read_only, path=root)


def _reopen(path, mode, storage_options=None):
    if storage_options is not None:
        return ResultStore.open(path, mode=mode, storage_options=storage_options)
    return ResultStore.open(path, mode=mode)
