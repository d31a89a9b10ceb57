"""Tables from a result store: one row per item, as CSV or Parquet.

Columns, in order: ``item``, ``reference``, ``moving`` (frame indices for sequences, paths for
manifests), ``reference_name``, ``moving_name`` (sequences: the frames' files, or labels such as
``stack.tif[page 3]``), ``reference_time``, ``moving_time`` (videos: seconds from the first frame),
``id`` (manifests), ``status`` (``pending``/``done``/``failed``), ``error``, then one
column per metric array of the store in its order, then ``shift_dy``, ``shift_dx`` when aligned.
A missing value (a metric not computed, an item pending or failed) is an empty CSV field and a
Parquet null. Floats are written with ``repr``, so they read back exactly.

Names are written as the store keeps them, quoted by the csv module where they hold a comma, a
quote or a newline (they read back equal with ``csv.reader``). A file name's bytes that are not
UTF-8 are kept as the four characters ``\\xNN`` (``gpudiff.io._source.display_name``; its
``fs_name`` gives back the file system's name).
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Iterator

import numpy as np

from ..errors import InputError
from ._schema import STATUS_NAMES
from ._store import ResultStore

__all__ = ["export_rows", "export_csv", "export_parquet", "export_columns"]

# Items read at a time: bounded memory whatever the archive size.
_BATCH_ITEMS = 1 << 16
_LABELS = ("reference_index", "moving_index", "reference_path", "moving_path", "id", "reference_name",
           "moving_name", "reference_time", "moving_time")
_AXIS_LABELS = {"shift": ("dy", "dx")}


def _plan(store: ResultStore):
    """[(column, kind, source array, trailing index or None)]; kind: int, float, str, status, label."""
    names = {f.name: f for f in store.fields}
    cols = [("item", "item", None, None)]
    for side in ("reference", "moving"):
        if f"{side}_path" in names:
            cols.append((side, "str", f"{side}_path", None))
        elif f"{side}_index" in names:
            cols.append((side, "int", f"{side}_index", None))
    for name in ("reference_name", "moving_name"):  # sequences: the frames' file names / labels
        if name in names:
            cols.append((name, "str", name, None))
    for name in ("reference_time", "moving_time"):  # videos: seconds from the first frame
        if name in names:
            cols.append((name, "float", name, None))
    if "id" in names:
        cols.append(("id", "str", "id", None))
    cols += [("status", "status", "status", None), ("error", "str", "error", None)]
    for f in store.fields:
        if f.name in _LABELS or f.name.startswith("maps/"):
            continue
        kind = "str" if f.dtype == "str" else ("int" if np.dtype(f.dtype).kind in "iub" else "float")
        if not f.shape:
            cols.append((f.name, kind, f.name, None))
        elif len(f.shape) == 1:
            labels = _AXIS_LABELS.get(f.name, tuple(str(i) for i in range(f.shape[0])))
            if len(labels) != f.shape[0]:
                labels = tuple(str(i) for i in range(f.shape[0]))
            cols += [(f"{f.name}_{lab}", kind, f.name, i) for i, lab in enumerate(labels)]
        # fields with more trailing axes are maps: not table material
    return cols


def export_columns(store: ResultStore) -> list[str]:
    """The column names :func:`export_rows` yields, in order."""
    return [c[0] for c in _plan(store)]


def _batches(store: ResultStore, batch_items: int | None = None):
    """Yield (start, {column: ndarray}) for consecutive blocks of items."""
    plan = _plan(store)
    sources = sorted({c[2] for c in plan if c[2] is not None})
    step = batch_items or max(store.chunk, _BATCH_ITEMS - _BATCH_ITEMS % store.chunk)
    for start in range(0, store.n_items, step):
        sl = slice(start, min(start + step, store.n_items))
        raw = store.read(sources, items=sl)
        cols = {}
        for name, kind, src, idx in plan:
            if kind == "item":
                cols[name] = np.arange(sl.start, sl.stop, dtype=np.int64)
                continue
            v = raw[src]
            cols[name] = v if idx is None else v[:, idx]
        yield sl.start, cols


def _cell(kind: str, value, fill):
    if kind == "status":
        return STATUS_NAMES.get(int(value), str(int(value)))
    if kind == "item":
        return int(value)
    if kind == "int":
        value = int(value)
        return None if value == fill else value
    if kind == "float":
        value = float(value)
        return None if math.isnan(value) else value
    value = str(value)
    return value


def export_rows(store: ResultStore) -> Iterator[dict]:
    """One dict per item (see the module docstring for the columns); missing values are None.

    ``error`` is ``''`` when fine; a manifest path never written (a pending item) is ``''``.
    """
    plan = _plan(store)
    fills = {}
    for f in store.fields:
        fills[f.name] = f.fill
    kinds = [(name, kind, fills.get(src)) for name, kind, src, _ in plan]
    for _start, cols in _batches(store):
        arrays = [cols[name] for name, _, _ in kinds]
        for i in range(len(arrays[0])):
            yield {name: _cell(kind, a[i], fill) for (name, kind, fill), a in zip(kinds, arrays)}


def export_csv(store: ResultStore, out) -> int:
    """Write :func:`export_rows` as CSV to ``out`` (a path or a text file). Returns the row count.

    Missing values are empty fields; floats are written with ``repr`` (exact round trip).
    """
    names = export_columns(store)

    def write(f) -> int:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(names)
        n = 0
        for row in export_rows(store):
            w.writerow(["" if v is None else (repr(v) if isinstance(v, float) else v) for v in row.values()])
            n += 1
        return n

    if isinstance(out, (str, os.PathLike)):
        try:
            with open(out, "w", newline="", encoding="utf-8") as f:
                return write(f)
        except OSError as e:
            raise InputError(f"{out}: cannot write the CSV ({e.strerror or e}): check the path") from None
    if isinstance(out, io.TextIOBase) or hasattr(out, "write"):
        return write(out)
    raise TypeError(f"out must be a path or a text file, got {type(out).__name__}")


def export_parquet(store: ResultStore, path) -> int:
    """Write the table as Parquet (needs pyarrow). Returns the row count.

    Missing values are nulls; the store's attributes are kept as JSON in the schema metadata
    under the key ``gpudiff``.
    """
    try:
        import pyarrow as pa  # noqa: PLC0415
        import pyarrow.parquet as pq  # noqa: PLC0415
    except ImportError:
        raise InputError(
            "Parquet export needs pyarrow: pip install pyarrow (or pip install 'gpudiff[parquet]'), "
            "or export CSV instead"
        ) from None
    plan = _plan(store)
    fills = {f.name: f.fill for f in store.fields}
    types = {
        "item": pa.int64(),
        "int": pa.int64(),
        "float": pa.float64(),
        "str": pa.string(),
        "status": pa.string(),
    }
    schema = pa.schema(
        [pa.field(name, types[kind]) for name, kind, _, _ in plan],
        metadata={"gpudiff": json.dumps(store.attrs, default=str)},
    )
    status_names = np.array([STATUS_NAMES.get(i, str(i)) for i in range(256)], dtype=object)
    n = 0
    try:
        with pq.ParquetWriter(os.fspath(path), schema) as writer:
            for _start, cols in _batches(store):
                arrays = []
                for name, kind, src, _ in plan:
                    v = cols[name]
                    if kind == "status":
                        arrays.append(pa.array(status_names[v.astype(np.intp)], type=pa.string()))
                    elif kind == "float":
                        v = np.asarray(v, dtype=np.float64)
                        arrays.append(pa.array(v, mask=np.isnan(v), type=pa.float64()))
                    elif kind == "int":
                        v = np.asarray(v, dtype=np.int64)
                        mask = v == fills.get(src) if src in fills else None
                        arrays.append(pa.array(v, mask=mask, type=pa.int64()))
                    elif kind == "item":
                        arrays.append(pa.array(v, type=pa.int64()))
                    else:
                        arrays.append(pa.array([str(x) for x in v], type=pa.string()))
                writer.write_table(pa.Table.from_arrays(arrays, schema=schema))
                n += len(cols["item"])
    except OSError as e:
        raise InputError(
            f"{path}: cannot write the Parquet file ({e.strerror or e}): check the path"
        ) from None
    return n
