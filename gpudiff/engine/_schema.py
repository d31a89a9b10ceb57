"""The schema of a result store: its layout version, status values, metric columns and the per-item
fields (:class:`Field`): what arrays a store has, their dtypes, shapes, fills and chunks.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "STORE_VERSION",
    "PENDING",
    "DONE",
    "FAILED",
    "STATUS_NAMES",
    "METRIC_COLUMNS",
    "Field",
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
