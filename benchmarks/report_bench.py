#!/usr/bin/env python3
"""``gpudiff report`` on a store of a million items: time, peak memory, page size.

Usage::

    python benchmarks/report_bench.py [--items 1000000] [--chunk 64 1024] [--workers 1 2] [--workdir DIR]
                                      [--json out.json]

For each chunk size a synthetic but realistic store is written directly with
:class:`gpudiff.engine._store.ResultStore` (whole columns at creation, then ``status`` and ``error`` through
zarr): every metric column of a full run (the 19 of ``METRIC_COLUMNS``), ``shift`` (aligned run),
the sequence columns ``keep`` (about 1 frame in 8 kept), ``repeat_of``, ``corrupt`` (0.1 %), ``cut``
(0.01 %), ``change`` with ``thresholds = {"change": ...}`` in the attributes, ``kl_prev``, and 0.5 %
failed items with reasons. Values follow a slow random walk with bursts and spikes so that the
timelines and histograms are not trivial. The source does not exist (a store moved off the cluster),
so the page says so and draws no thumbnails; thumbnails cost at most ``2 * top`` frame reads
whatever the store's size.

Each report runs in a fresh process (``python -c 'build_report(...)'``, like the CLI), in one
process and with a pool of 2 worker processes (``--workers``; 0 = build_report's automatic choice);
peak memory is the resident set of the report process and its workers together, sampled every
50 ms. Stores are kept in ``--workdir`` and reused by later runs
(creating one at chunk 64 takes a few minutes). Nothing is asserted: the numbers are printed with
the budget of the issue (1 minute, 5 MB page) as ratios (< 1: within budget).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # benchmark the checkout, installed or not

import numpy as np  # noqa: E402

TIME_BUDGET_S = 60.0
PAGE_BUDGET_B = 5e6


def make_store(path: Path, n: int, chunk: int, seed: int = 0) -> float:
    """Write the synthetic store; returns seconds taken."""
    import zarr

    from gpudiff.engine._schema import METRIC_COLUMNS, Field
    from gpudiff.engine._store import ResultStore

    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    # A scene that drifts slowly, with bursts of activity and rare spikes (corrupt frames, cuts).
    walk = np.cumsum(rng.normal(0, 1.0 / np.sqrt(n), n))  # about one e-fold over the whole run
    activity = np.exp(walk - walk.mean()) * (1 + 2 * ((rng.random(n) < 2e-5).cumsum() % 2))  # busy periods
    base = np.abs(activity * (1 + 0.2 * rng.standard_normal(n)))
    corrupt = rng.random(n) < 0.001
    cut = rng.random(n) < 0.0001
    base[corrupt] *= 30
    base[cut] *= 15
    repeat = rng.random(n) < 0.05
    base[repeat] = 0.0
    px = 640 * 480
    cols = {
        "reference_index": np.arange(n, dtype=np.int64),
        "moving_index": np.arange(1, n + 1, dtype=np.int64),
        "manhattan_per_pixel": 2.0 * base,
        "zero_norm_per_pixel": np.clip(0.3 * base / (1 + 0.3 * base), 0, 1),
        "mse": 6.0 * base**2 + 0.1 * (base > 0),
        "max_abs": np.minimum(255.0, 40 * base),
        "ncc": 1 - 0.5 * base / (1 + base),
        "ssim": 1 - 0.7 * base / (1 + base),
        "hist_kl": 0.01 * base**1.5,
        "hist_js": np.minimum(np.log(2), 0.004 * base),
        "hist_chi2": 0.05 * base,
        "hist_chi2_alt": 0.08 * base,
        "hist_bhattacharyya": np.clip(0.03 * np.sqrt(base), 0, 1),
        "hist_intersection": 1 - 0.5 * base / (1 + base),
        "hist_correlation": 1 - 0.3 * base / (1 + base),
        "confidence": np.clip(0.9 - 0.3 * base / (1 + base) + 0.02 * rng.standard_normal(n), 0, 1),
        "pixels": np.full(n, float(px)),
    }
    cols["manhattan"] = cols["manhattan_per_pixel"] * px
    cols["zero_norm"] = np.rint(cols["zero_norm_per_pixel"] * px)
    cols["rmse"] = np.sqrt(cols["mse"])
    with np.errstate(divide="ignore"):
        cols["psnr"] = 10 * np.log10(255.0**2 / cols["mse"])  # +inf for exact repeats
    cols["shift"] = np.stack([rng.normal(0.02, 0.3, n), rng.normal(-0.01, 0.3, n)], axis=1)
    # dedup: keep when the change since the last kept frame exceeds the threshold
    change = np.abs(base * (1 + 0.5 * rng.standard_normal(n)))
    threshold = float(np.quantile(change, 0.875))
    keep = change > threshold
    keep[0] = True
    cols["change"] = change
    cols["keep"] = keep.astype(np.uint8)
    cols["repeat_of"] = np.where(repeat, np.arange(n), -1).astype(np.int64)
    cols["corrupt"] = corrupt.astype(np.uint8)
    cols["cut"] = cut.astype(np.uint8)
    cols["kl_prev"] = cols["hist_kl"] * (1 + 0.3 * rng.random(n))

    fields = [Field("reference_index", "int64"), Field("moving_index", "int64")]
    fields += [Field(m, "float64") for m in METRIC_COLUMNS]
    fields += [Field("shift", "float64", (2,), dims=("item", "axis"))]
    fields += [Field("change", "float64"), Field("keep", "uint8"), Field("repeat_of", "int64"),
               Field("corrupt", "uint8"), Field("cut", "uint8"), Field("kl_prev", "float64")]
    attrs = {
        "options": {"align": True, "metrics": None, "backend": "auto"},
        "pairs": "consecutive",
        "source": {"kind": "folder", "spec": str(path.parent / "frames-not-here"), "count": n + 1},
        "frames": n + 1,
        "frame_shape": [480, 640],
        "backend": "cupy",
        "device": "NVIDIA H100 (synthetic)",
        "thresholds": {"change": threshold, "kl_prev": 0.2},
    }
    ResultStore.create_or_open(path, n_items=n, chunk=chunk, fields=fields, attrs=attrs, overwrite=True,
                               initial=cols)
    failed = rng.random(n) < 0.005
    status = np.where(failed, 2, 1).astype(np.uint8)
    errors = np.full(n, "", dtype=object)
    for i in np.flatnonzero(failed):
        errors[i] = f"/data/frames/f{i + 1:07d}.png: cannot read (truncated PNG data): re-export the frame"
    g = zarr.open_group(path, mode="r+", zarr_format=3)
    g["error"][:] = errors
    g["status"][:] = status
    return time.perf_counter() - t0


def run_report(store: Path, out: Path, top: int, workers: int | None) -> dict:
    """build_report in a fresh process: wall time, its own timing, peak memory, page size.

    Memory is sampled every 50 ms as the resident set of the report process and of its worker
    processes together (psutil; ``ru_maxrss`` would include this process's pages at fork time).
    """
    import psutil

    code = (
        "import json,sys; from gpudiff.report import build_report; "
        f"r = build_report({str(store)!r}, html={str(out)!r}, top={top}, workers={workers!r}); "
        "print(json.dumps({'seconds': r.seconds, 'bytes': r.page_bytes, 'figures': len(r.figures), "
        "'done': r.done, 'failed': r.failed, 'notices': len(r.notices)}))"
    )
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    ps = psutil.Process(proc.pid)
    peak_total = peak_main = 0
    while proc.poll() is None:
        try:
            main_rss = ps.memory_info().rss
            total = main_rss + sum(c.memory_info().rss for c in ps.children(recursive=True))
        except psutil.Error:
            total = main_rss = 0
        peak_total, peak_main = max(peak_total, total), max(peak_main, main_rss)
        time.sleep(0.05)
    wall = time.perf_counter() - t0
    out_text, err_text = (b.decode() for b in proc.communicate())
    if proc.returncode != 0:
        raise SystemExit(f"report failed:\n{err_text}")
    info = json.loads(out_text.strip().splitlines()[-1])
    info.update(wall=wall, peak_total_mb=peak_total / 2**20, peak_main_mb=peak_main / 2**20)
    return info


def _du(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--items", type=int, default=1_000_000)
    ap.add_argument("--chunk", type=int, nargs="+", default=[64, 1024])
    ap.add_argument("--top", type=int, default=12)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2],
                    help="build_report(workers=...) to time; 0 = its automatic choice (default: 1 2)")
    ap.add_argument("--workdir", default=None, help="where the stores are kept (default: a temporary folder)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="gpudiff-report-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"# gpudiff report benchmark, {datetime.date.today()}, {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}, Python {platform.python_version()}")
    rows = []
    for chunk in args.chunk:
        store = work / f"bench-{args.items}-c{chunk}.zarr"
        made = None
        if not (store / "zarr.json").exists():
            made = make_store(store, args.items, chunk)
        for workers in args.workers:
            w = None if workers == 0 else workers
            r = run_report(store, work / f"report-c{chunk}.html", args.top, w)
            r.update(items=args.items, chunk=chunk, store_mb=_du(store) / 1e6, made_s=made, workers=workers)
            rows.append(r)
            made = None
    print()
    print("| items | chunk | store on disk | workers | report wall (process) | build_report | / 60 s budget "
          "| peak RSS, all processes | main process | page | / 5 MB budget | figures |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['items']:,} | {r['chunk']} | {r['store_mb']:.0f} MB | {r['workers'] or 'auto'} "
              f"| {r['wall']:.1f} s | {r['seconds']:.1f} s | {r['wall'] / TIME_BUDGET_S:.2f} "
              f"| {r['peak_total_mb']:.0f} MB | {r['peak_main_mb']:.0f} MB | {r['bytes'] / 1e6:.2f} MB "
              f"| {r['bytes'] / PAGE_BUDGET_B:.2f} | {r['figures']} |")
    for chunk in args.chunk:
        same = [r for r in rows if r["chunk"] == chunk]
        for r in same[1:]:
            ratio = same[0]["wall"] / r["wall"]
            print(f"chunk {chunk}: workers {same[0]['workers'] or 'auto'} / workers {r['workers'] or 'auto'} "
                  f"wall-time ratio {ratio:.2f} (> 1: the second is faster)")
    for r in rows:
        if r["made_s"]:
            print(f"(store with chunk {r['chunk']} written in {r['made_s']:.0f} s)")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
