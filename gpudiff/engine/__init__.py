"""The batch engine: from a source to a result store, on Dask, resumable and kill-safe.

``source -> plan -> graph -> (load -> device -> pair/sequence maths) per chunk -> store``:

- ``_plan``: the work items (which frame against which) in chunks, and this process's shard;
- ``_runner``: the Dask graph, one task per chunk, signals (SIGTERM), progress;
- ``_store``: the Zarr v3 result store (schema, chunk writes, status, the sequence passes' state);
- ``_export``: the store as CSV / Parquet rows;
- ``_timelapse``: ``dedup`` over a source and ``watch`` over a folder, writing kept frames and a store.
"""

from ._export import export_csv, export_parquet, export_rows
from ._plan import Plan, Shard, make_plan, parse_shard, shard_from_env
from ._runner import RunConfig, RunReport, run
from ._store import DONE, FAILED, PENDING, ResultStore
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
    "run_dedup",
    "watch",
]
