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
import errno
import json
import math
import os
import re
import shutil
import sys
import time
import uuid
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from ..backend import is_device_array
from ..errors import ConfigError, InputError

__all__ = [
    "STORE_VERSION",
    "PENDING",
    "DONE",
    "FAILED",
    "STATUS_NAMES",
    "METRIC_COLUMNS",
    "Field",
    "ResultStore",
    "metric_columns",
    "result_fields",
    "map_field",
    "comparison_columns",
]

#: The layout version this gpudiff writes and reads (attribute ``gpudiff_store_version``).
STORE_VERSION = 1

#: Values of the ``status`` array.
PENDING, DONE, FAILED = 0, 1, 2
STATUS_NAMES = {PENDING: "pending", DONE: "done", FAILED: "failed"}

#: One float64 array per metric, named as ``Comparison.to_dict()`` (histogram distances flattened
#: to ``hist_<name>``). Counts (``zero_norm``, ``pixels``) are float64 too: exact up to 2**53, and
#: NaN marks "not computed" uniformly for every reader.
METRIC_COLUMNS = (
    "manhattan",
    "manhattan_per_pixel",
    "zero_norm",
    "zero_norm_per_pixel",
    "mse",
    "rmse",
    "psnr",
    "max_abs",
    "ncc",
    "ssim",
    "hist_kl",
    "hist_js",
    "hist_chi2",
    "hist_chi2_alt",
    "hist_bhattacharyya",
    "hist_intersection",
    "hist_correlation",
    "confidence",
    "significance",
    "align_ok",
    "pixels",
)

# Arrays every store has, outside ``fields``.
_BUILTIN = ("status", "error")
# Attributes the store owns; ``attrs`` passed by a caller may not set them.
# (``gpudiff_version`` and ``versions`` are filled in when the caller does not give them.)
_RESERVED = ("gpudiff_store_version", "created", "n_items", "chunk", "fields", "config")
_NAME = re.compile(r"^(maps/)?[A-Za-z_][A-Za-z0-9_]*$")
_PARTIAL = re.compile(r"\.[0-9a-f]{32}\.partial$")
_DISK_FULL = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}


# --------------------------------------------------------------------------------------------------
# Fields: the per-item outputs
# --------------------------------------------------------------------------------------------------


def _dtype_name(dtype) -> str:
    """'str' for text, else NumPy's canonical name ('float64', 'uint8', ...)."""
    if dtype in (str, object) or (isinstance(dtype, str) and dtype in ("str", "string", "U", "O")):
        return "str"
    dt = np.dtype(dtype)
    if dt.kind in "OUST":
        return "str"
    return dt.name


def _default_fill(dtype: str):
    if dtype == "str":
        return ""
    kind = np.dtype(dtype).kind
    if kind == "f" or kind == "c":
        return math.nan
    if kind == "i":
        return -1
    if kind == "b":
        return False
    return 0


def _json_fill(value):
    """A fill value as a JSON-comparable token (NaN and infinities as strings)."""
    if isinstance(value, (float, np.floating)):
        v = float(value)
        if math.isnan(v):
            return "NaN"
        if math.isinf(v):
            return "Infinity" if v > 0 else "-Infinity"
        return v
    if isinstance(value, (np.integer, np.bool_)):
        return value.item()
    return value


@dataclass(frozen=True)
class Field:
    """One per-item output array of the store.

    Parameters
    ----------
    name : str
        Array name: an identifier, or ``maps/<identifier>`` for a map in the ``maps`` group.
    dtype : str
        NumPy dtype name (``'float64'``, ``'int64'``, ``'uint8'``, ``'float32'``) or ``'str'``
        (variable-length UTF-8).
    shape : tuple of int
        Trailing shape per item: ``()`` for a scalar, ``(2,)`` for a shift, ``(H, W)`` for a map.
    fill : scalar, optional
        Value of items never written. Default: NaN for floats, -1 for signed integers, 0 for
        unsigned, ``''`` for strings.
    dims : tuple of str
        Dimension names, ``'item'`` first, one per axis (``1 + len(shape)`` of them).
    chunk_extra : tuple of int, optional
        Chunk shape of the trailing axes (default: the whole trailing shape).
    item_chunk : int, optional
        Items per chunk of this array (default: the store's ``chunk``). Must divide the store's
        chunk so a store chunk is always written as whole array chunks; maps use 1.
    """

    name: str
    dtype: str
    shape: tuple = ()
    fill: object = None
    dims: tuple = ("item",)
    chunk_extra: tuple | None = None
    item_chunk: int | None = None

    def __post_init__(self):
        if not isinstance(self.name, str) or not _NAME.match(self.name) or self.name in _BUILTIN:
            raise ValueError(
                f"field name {self.name!r}: use an identifier (or maps/<identifier>), not status or error"
            )
        dtype = _dtype_name(self.dtype)
        object.__setattr__(self, "dtype", dtype)
        shape = tuple(int(s) for s in self.shape)
        if any(s < 1 for s in shape):
            raise ValueError(f"field {self.name}: trailing shape {shape} must be positive")
        object.__setattr__(self, "shape", shape)
        dims = tuple(str(d) for d in self.dims)
        if len(dims) != 1 + len(shape) or dims[0] != "item" or len(set(dims)) != len(dims):
            raise ValueError(
                f"field {self.name}: dims {dims} must be 'item' then one distinct name per trailing axis "
                f"of shape {shape}"
            )
        object.__setattr__(self, "dims", dims)
        if self.fill is None:
            object.__setattr__(self, "fill", _default_fill(dtype))
        if self.chunk_extra is None:
            object.__setattr__(self, "chunk_extra", shape)
        else:
            extra = tuple(int(s) for s in self.chunk_extra)
            if len(extra) != len(shape) or any(s < 1 for s in extra):
                raise ValueError(f"field {self.name}: chunk_extra {extra} does not fit shape {shape}")
            object.__setattr__(self, "chunk_extra", extra)
        if self.item_chunk is not None:
            if int(self.item_chunk) != self.item_chunk or self.item_chunk < 1:
                raise ValueError(f"field {self.name}: item_chunk {self.item_chunk} must be >= 1")
            object.__setattr__(self, "item_chunk", int(self.item_chunk))

    def spec(self, chunk: int | None = None) -> dict:
        """JSON description; two fields with equal specs make identical arrays."""
        return {
            "name": self.name,
            "dtype": self.dtype,
            "shape": list(self.shape),
            "fill": _json_fill(self.fill),
            "dims": list(self.dims),
            "chunks": [self.item_chunk or chunk, *self.chunk_extra],
        }


def metric_columns(options=None) -> list[str]:
    """The metric arrays a run with ``options`` (a ``CompareOptions``; None: all) fills."""
    if options is None:
        return list(METRIC_COLUMNS)
    wanted = set()
    if options.wants("manhattan"):
        wanted |= {"manhattan", "manhattan_per_pixel"}
    if options.wants("zero_norm"):
        wanted |= {"zero_norm", "zero_norm_per_pixel"}
    if options.wants("mse") or options.wants("rmse") or options.wants("psnr"):
        wanted |= {"mse", "rmse", "psnr"}  # computed together
    for m in ("max_abs", "ncc", "ssim"):
        if options.wants(m):
            wanted.add(m)
    if options.wants("histogram"):
        wanted |= {c for c in METRIC_COLUMNS if c.startswith("hist_")}
    if options.align:
        wanted |= {"confidence", "significance", "align_ok"}  # align_ok: 1 trusted, 0 compared unaligned
    wanted.add("pixels")
    return [c for c in METRIC_COLUMNS if c in wanted]


def map_field(name: str, shape: Sequence[int], dtype: str = "float32") -> Field:
    """A per-item map ``maps/<name>`` of shape (H, W) or (H, W, C), one item per chunk."""
    shape = tuple(int(s) for s in shape)
    if len(shape) not in (2, 3):
        raise ValueError(f"map {name}: shape {shape} must be (H, W) or (H, W, C)")
    dims = ("item", "y", "x", "channel")[: 1 + len(shape)]
    return Field(f"maps/{name}", dtype, shape, dims=dims, item_chunk=1)


def result_fields(options=None, *, manifest: bool = False, maps: dict | None = None) -> list[Field]:
    """The standard per-item fields of a run (besides ``status`` and ``error``).

    Parameters
    ----------
    options : CompareOptions, optional
        Decides the metric columns (:func:`metric_columns`) and ``shift`` (with ``align``).
    manifest : bool
        Add ``reference_path``, ``moving_path`` and ``id`` (string) columns.
    maps : dict of name -> shape, optional
        Per-item maps, e.g. ``{"diff": (H, W)}`` (see :func:`map_field`).
    """
    out = [Field("reference_index", "int64"), Field("moving_index", "int64")]
    if manifest:
        out += [Field("reference_path", "str"), Field("moving_path", "str"), Field("id", "str")]
    out += [Field(name, "float64") for name in metric_columns(options)]
    if options is not None and options.align:
        out.append(Field("shift", "float64", (2,), dims=("item", "axis")))
    for name, shape in (maps or {}).items():
        out.append(map_field(name, shape))
    return out


def comparison_columns(results: Sequence, names: Iterable[str]) -> dict[str, np.ndarray]:
    """Columns for :meth:`ResultStore.write_chunk` from a chunk's results.

    ``results`` holds one ``Comparison`` (or its ``to_dict()``) per item, or None for a failed item
    (its values stay NaN). ``names`` are the metric columns wanted (and ``'shift'``).
    """
    names = list(names)
    n = len(results)
    out = {}
    for name in names:
        if name == "shift":
            col = np.full((n, 2), np.nan)
        else:
            col = np.full(n, np.nan)
        for i, r in enumerate(results):
            if r is None:
                continue
            value = _comparison_value(r, name)
            if value is not None:
                col[i] = value
        out[name] = col
    return out


def _comparison_value(r, name):
    get = r.get if isinstance(r, dict) else (lambda k, _r=r: getattr(_r, k, None))
    if name.startswith("hist_"):
        hist = get("histogram")
        return None if hist is None else hist.get(name[5:])
    value = get(name)
    if name == "shift" and value is not None:
        return [float(v) for v in value]
    return value


# --------------------------------------------------------------------------------------------------
# The store
# --------------------------------------------------------------------------------------------------


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _jsonable(obj, what: str):
    """``obj`` as plain JSON types (tuples become lists, NumPy scalars plain numbers)."""

    def default(o):
        if isinstance(o, np.generic):
            return o.item()
        if isinstance(o, np.ndarray):
            return o.tolist()
        if isinstance(o, (Path, os.PathLike)):
            return os.fspath(o)
        if isinstance(o, (set, frozenset)):
            return sorted(o)
        raise TypeError(f"{type(o).__name__} is not JSON serialisable")

    try:
        return json.loads(json.dumps(obj, default=default, allow_nan=True))
    except (TypeError, ValueError) as e:
        raise ValueError(f"{what} must be JSON-able: {e}") from None


def _versions() -> dict:
    out = {"python": sys.version.split()[0]}
    for name in ("numpy", "zarr", "dask", "numcodecs", "scipy", "cupy"):
        mod = sys.modules.get(name)
        if mod is None and name != "cupy":  # never import cupy just to record its version
            with contextlib.suppress(Exception):
                mod = __import__(name)
        if mod is not None:
            out[name] = getattr(mod, "__version__", "?")
    return out


def _gpudiff_version() -> str:
    from .._version import __version__  # noqa: PLC0415

    return __version__


def _set_together(writes, sl: slice) -> None:
    """``array[sl] = values`` for every pair, the writes in flight together.

    A chunk's ~20 small columns are written concurrently on zarr's own event loop (one file each),
    instead of one blocking round trip to that loop per column (about 1.4 ms each on a local disk).
    Falls back to one at a time where zarr's asynchronous layer is not where it is expected.
    """
    try:
        import asyncio  # noqa: PLC0415

        from zarr.core.sync import sync  # noqa: PLC0415

        handles = [(a._async_array, v) for a, v in writes]
    except (ImportError, AttributeError):
        handles = None
    if handles is None or len(handles) < 2:
        for a, v in writes:
            a[sl] = v
        return

    async def _all():
        await asyncio.gather(*(h.setitem(sl, v) for h, v in handles))

    sync(_all())


def _disk_error(path, e: OSError, doing: str) -> InputError:
    if e.errno in _DISK_FULL:
        return InputError(f"{path}: disk full while {doing}: free space and rerun; finished chunks are kept")
    return InputError(
        f"{path}: cannot write ({e.strerror or e}) while {doing}: check the path and permissions"
    )


def _read_meta(path: Path) -> dict:
    """The root ``zarr.json`` of ``path``, checked to be a gpudiff store this version reads."""
    if not path.exists():
        raise InputError(f"{path}: no such result store: check the path (a run creates it)")
    if not path.is_dir():
        raise InputError(f"{path} is not a gpudiff result store: it is a file, not a directory")
    meta_file = path / "zarr.json"
    if not meta_file.is_file():
        why = "a Zarr v2 store (.zgroup)" if (path / ".zgroup").exists() else "there is no zarr.json"
        raise InputError(f"{path} is not a gpudiff result store: {why}")
    try:
        meta = json.loads(meta_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise InputError(f"{path} is not a gpudiff result store: zarr.json is unreadable ({e})") from None
    if not isinstance(meta, dict) or meta.get("zarr_format") != 3 or meta.get("node_type") != "group":
        raise InputError(f"{path} is not a gpudiff result store: zarr.json is not a Zarr v3 group")
    version = (meta.get("attributes") or {}).get("gpudiff_store_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise InputError(f"{path} is not a gpudiff result store: it has no gpudiff_store_version attribute")
    if version > STORE_VERSION:
        raise InputError(
            f"{path} was written by gpudiff store version {version}; this gpudiff reads version "
            f"{STORE_VERSION}: upgrade gpudiff"
        )
    return meta


def _is_store_or_empty(path: Path) -> bool:
    if not path.exists():
        return True
    if path.is_dir() and not any(path.iterdir()):
        return True
    try:
        _read_meta(path)
    except InputError as e:
        return "was written by gpudiff store version" in str(e)  # a newer gpudiff store: still ours
    return True


# ---- config comparison -------------------------------------------------------------------------

_FLAG_SECTIONS = ("options",)  # keys under these are CLI flags (--blur 1.5)
_MISSING = object()


def _first_difference(old, new, key=()):
    """(key path, old value, new value) of the first difference, or None."""
    if isinstance(old, dict) and isinstance(new, dict):
        for k in list(old) + [k for k in new if k not in old]:
            a, b = old.get(k, _MISSING), new.get(k, _MISSING)
            d = _first_difference(a, b, (*key, str(k)))
            if d is not None:
                return d
        return None
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        for i, (a, b) in enumerate(zip(old, new)):
            if isinstance(a, (dict, list)) and isinstance(b, (dict, list)):
                d = _first_difference(a, b, (*key, str(i)))
                if d is not None:
                    return d
            elif not _same(a, b):
                return key, old, new  # a list of plain values reads best whole
        return None
    if _same(old, new):
        return None
    return key, old, new


def _same(a, b) -> bool:
    if a is _MISSING or b is _MISSING:
        return a is b
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b


def _show(key, value) -> str:
    """One config entry for people: ``--blur 1.5`` for options, ``source.size = 123`` otherwise."""
    if key and key[0] in _FLAG_SECTIONS and len(key) >= 2:
        flag = "--" + key[1].replace("_", "-") + "".join(f"[{k}]" for k in key[2:])
        if value is _MISSING or value is None:
            return f"no {flag}"
        return f"{flag} {_plain(value)}"
    name = ".".join(key) or "config"
    if value is _MISSING:
        return f"no {name}"
    return f"{name} = {_plain(value)}"


def _plain(value) -> str:
    if isinstance(value, str):
        return value if value and " " not in value else json.dumps(value)
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list) and all(not isinstance(v, (dict, list)) for v in value):
        return ",".join(_plain(v) for v in value) if value else "[]"
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= 80 else text[:77] + "..."


def _config_mismatch(path, old, new) -> ConfigError | None:
    d = _first_difference(old, new)
    if d is None:
        return None
    key, a, b = d
    return ConfigError(
        f"{path} was made with {_show(key, a)} but this run asks {_show(key, b)}: use the same options "
        f"to resume, or --overwrite to start again"
    )


# ---- the class ---------------------------------------------------------------------------------


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
        max of ``foreground_fraction`` and ``flow_mean`` (px). Only the columns the store has."""
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
        for name in ("foreground_fraction", "flow_mean"):
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


def _host(values):
    """A CuPy array comes to the host; anything else passes."""
    return values.get() if is_device_array(values) else values  # .get() syncs


def _read_robust(arr, sl: slice, name: str) -> np.ndarray:
    try:
        return np.asarray(arr[sl])
    except Exception:  # noqa: BLE001 (fall back to chunk by chunk)
        pass
    shape = (sl.stop - sl.start, *arr.shape[1:])
    out = np.full(shape, arr.fill_value, dtype=arr.dtype)
    step = arr.chunks[0]
    bad = []
    for start in range(sl.start - sl.start % step, sl.stop, step):
        a, b = max(start, sl.start), min(start + step, sl.stop)
        try:
            out[a - sl.start : b - sl.start] = arr[a:b]
        except Exception:  # noqa: BLE001
            bad.append(start // step)
    if bad:
        warnings.warn(
            f"{name}: chunk(s) {bad[:10]} unreadable, read as fill values", RuntimeWarning, stacklevel=3
        )
    return out


def _check_fields(fields: list[Field], chunk: int) -> None:
    seen = set()
    for f in fields:
        if not isinstance(f, Field):
            raise TypeError(f"fields must be Field objects, got {f!r}")
        if f.name in seen:
            raise ValueError(f"field {f.name} given twice")
        seen.add(f.name)
        if f.item_chunk is not None and chunk % f.item_chunk:
            raise ValueError(f"field {f.name}: item_chunk {f.item_chunk} must divide the chunk {chunk}")


def _has_store_meta(path: Path) -> bool:
    return (path / "zarr.json").exists()


def _remove_store(path: Path) -> None:
    """Delete a gpudiff store (or an empty directory) at ``path``; refuse anything else."""
    if not _is_store_or_empty(path):
        raise InputError(
            f"{path} exists and is not a gpudiff result store: refusing to delete it with --overwrite; "
            f"choose another output path"
        )
    aside = path.with_name(f".{path.name}.old-{uuid.uuid4().hex}")
    try:
        os.rename(path, aside)  # one atomic step: the old store is gone from readers at once
    except FileNotFoundError:
        return  # another process removed it
    except OSError as e:
        raise InputError(
            f"{path}: cannot remove the old store ({e.strerror or e}): remove it by hand"
        ) from None
    shutil.rmtree(aside, ignore_errors=True)


def _create(path: Path, n_items, chunk, fields, attrs, config, initial) -> bool:
    """Build the store in a temporary sibling and rename it onto ``path``. True if this won."""
    import zarr  # noqa: PLC0415

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex}")
    all_attrs = {
        "gpudiff_store_version": STORE_VERSION,
        "gpudiff_version": _gpudiff_version(),
        "created": _now(),
        "n_items": n_items,
        "chunk": chunk,
        "fields": [f.name for f in fields],
        "versions": _versions(),
        **attrs,  # may give gpudiff_version and versions; never the reserved keys (checked)
        "config": config,
    }
    try:
        try:
            group = zarr.open_group(tmp, mode="w-", zarr_format=3, attributes=all_attrs)
            group.create_array(
                "status", shape=(n_items,), chunks=(chunk,), dtype="uint8", fill_value=PENDING,
                dimension_names=["item"],
            )
            group.create_array(
                "error", shape=(n_items,), chunks=(chunk,), dtype=str, fill_value="", dimension_names=["item"]
            )
            for f in fields:
                group.create_array(
                    f.name,
                    shape=(n_items, *f.shape),
                    chunks=(f.item_chunk or chunk, *f.chunk_extra),
                    dtype=str if f.dtype == "str" else f.dtype,
                    fill_value=f.fill,
                    dimension_names=list(f.dims),
                )
            for name, values in (initial or {}).items():
                if name not in {f.name for f in fields}:
                    raise ValueError(f"initial column {name!r} is not a field")
                values = np.asarray(_host(values))
                if values.dtype.kind in "OUST":
                    values = np.asarray([str(v) for v in values.ravel()], dtype=object).reshape(values.shape)
                if values.shape[:1] != (n_items,):
                    raise ValueError(f"initial column {name}: {values.shape[0]} values for {n_items} items")
                group[name][...] = values
            with warnings.catch_warnings():
                # zarr warns that consolidated metadata is not (yet) in the v3 spec; zarr-python and
                # xarray read it, and other readers fall back to the per-array zarr.json.
                warnings.simplefilter("ignore")
                zarr.consolidate_metadata(tmp, zarr_format=3)
        except OSError as e:
            raise _disk_error(path, e, "creating the store") from None
        try:
            os.rename(tmp, path)  # atomic; fails when another process's store is already there
            return True
        except OSError:
            if _has_store_meta(path):
                return False  # lost the race: the winner's store is complete
            raise InputError(
                f"{path} exists and is not a gpudiff result store: choose another output path, or remove it"
            ) from None
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
