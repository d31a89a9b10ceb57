"""The batch engine: from a source to a result store, on Dask, resumable and kill-safe.

``source -> plan -> graph -> (load -> device -> pair/sequence maths) per chunk -> store``:

- ``_plan``: the work items (which frame against which) in chunks, and this process's shard;
- ``_runner``: ``run``, its configuration and report, the store's fields and attributes for a run;
  it drives ``_execute`` (the Dask graph on a scheduler, one task per chunk), ``_chunk`` (the
  per-chunk task), ``_passes`` (the sequence passes: corrupt/cuts, background), ``_progress``
  (bar and log lines) and ``_signals`` (the stop event SIGTERM sets);
- ``_store``: the Zarr v3 result store (``ResultStore``: open/create, chunk writes, status, reads),
  on ``_schema`` (status values, metric columns, fields), ``_zarrfiles`` (the files under the
  store: atomic creation, metadata, robust chunk reads and writes) and ``_config`` (a rerun's
  config against the stored one);
- ``_export``: the store as CSV / Parquet rows;
- ``_dedup_run``: ``dedup``, the keep/drop decisions of a whole source as Dask tasks;
- ``_timelapse``: ``run_dedup`` over a source and ``watch`` over a folder, writing kept frames and a store.
"""

from ._dedup_run import dedup
from ._export import export_csv, export_parquet, export_rows
from ._plan import Plan, Shard, make_plan, parse_shard, shard_from_env
from ._runner import RunConfig, RunReport, run
from ._schema import DONE, FAILED, PENDING
from ._store import ResultStore
from ._timelapse import run_dedup, watch

__all__ = [
    "run",
    "RunConfig",
    "RunReport",
    "make_plan",
    "parse_shard",
    "shard_from_env",
    "Plan",
    "Shard",
    "ResultStore",
    "PENDING",
    "DONE",
    "FAILED",
    "export_csv",
    "export_parquet",
    "export_rows",
    "dedup",
    "run_dedup",
    "watch",
]
