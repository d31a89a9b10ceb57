#!/usr/bin/env python3
"""The batch engine (``gpudiff run``) against its floors and its peers, in one run.

Usage::

    python benchmarks/batch.py [--quick] [--gb 2.0] [--workdir DIR] [--repeats N] [--json out.json]

What it measures, on a multi-GB uint16 TIFF stack made from real frames (the cdnet2014 traffic
sequence, grey, upscaled to 1024x1024, scaled by 257, plus a small deterministic per-frame noise):

1. the **read floor**: tifffile reading every frame once, page by page, into one preallocated
   buffer (``page.asarray(out=...)``), from the page cache; plus two references: plain
   ``readinto`` of each frame at its offset (what the disk cache can give at all), and
   ``dask.array`` over tifffile's Zarr store, one frame per chunk;
2. ``gpudiff.run`` end to end (NumPy backend, the default local threaded scheduler, a fresh store
   each time), metrics only and with the full default set (SSIM included): frames/s, GB/s and the
   fraction of the read floor;
3. the loop a user would write: one process, tifffile reads each frame, OpenCV computes the same
   numbers per consecutive pair (``cv2.norm`` L1/L2/INF, ``countNonZero(absdiff)``, two
   ``calcHist`` + ``compareHist``, NCC by its formula), results in a list; its numbers are checked
   against the store gpudiff wrote;
4. linear time and memory: gpudiff on three stacks of 1/8, 1/2 and all the frames (the same frames),
   frames/s of each in this process, and the peak RSS of each as a fresh ``python -m gpudiff run``
   subprocess (``os.wait4``'s ``ru_maxrss`` of that child alone).

Times are printed, never asserted; each is the median (and minimum) of ``--repeats`` runs after a
warm-up. Generated data goes under ``--workdir`` (default ``/tmp/gpudiff-bench``) and is reused when
it is already there with the right size. GB means 10^9 bytes.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # benchmark the checkout, installed or not

import numpy as np  # noqa: E402

from peers import candidate_data_dirs, cpu_model_and_usable_cores  # noqa: E402  (benchmarks/peers.py)

SIZE = 1024  # frames are SIZE x SIZE uint16
FRAME_BYTES = SIZE * SIZE * 2
METRICS_ONLY = ("manhattan", "zero_norm", "mse", "max_abs", "ncc", "histogram")
TARGET_FLOOR = 0.50  # gpudiff metrics-only >= 50 % of the read floor
TARGET_RSS = 1.10  # peak RSS, all frames / 1/8 of them
#: Linear time: the three run times fit t = a + b n (a: the run's fixed start, b: per frame) within
#: this fraction of each time. (The frames/s of each length is reported too; it rises with length
#: while the fixed start is amortised, which says nothing against linearity.)
TARGET_LINEAR = 0.10

# --------------------------------------------------------------------------------------------------
# data


def source_frames() -> list[np.ndarray]:
    """The cdnet2014 traffic frames, grey uint8 (240x320), in order."""
    import cv2

    for c in candidate_data_dirs():
        folder = c / "cdnet2014-traffic-subset" / "input"
        files = sorted(folder.glob("*.jpg")) if folder.is_dir() else []
        if files:
            frames = [cv2.imread(str(f), cv2.IMREAD_GRAYSCALE) for f in files]
            if any(f is None for f in frames):
                sys.exit(f"batch.py: could not read a JPEG in {folder}")
            return frames
    tried = ", ".join(str(c) for c in candidate_data_dirs())
    sys.exit(f"batch.py: real frames not found (cdnet2014-traffic-subset/input/*.jpg in {tried}); "
             "set GPUDIFF_DATA to the shared data folder")


def make_frame(src: list[np.ndarray], k: int) -> np.ndarray:
    """Frame k of the stack: the source played forwards then backwards (so consecutive frames are
    always neighbours in time), upscaled to 1024x1024 (bilinear), times 257, plus uniform noise in
    [-32, 32] seeded by k (consecutive frames are never identical), clipped to uint16."""
    import cv2

    period = 2 * len(src) - 2
    j = k % period
    j = j if j < len(src) else period - j
    up = cv2.resize(src[j], (SIZE, SIZE), interpolation=cv2.INTER_LINEAR).astype(np.int32) * 257
    noise = np.random.default_rng(k).integers(-32, 33, up.shape, dtype=np.int32)
    return np.clip(up + noise, 0, 65535).astype(np.uint16)


def stack_ok(path: Path, n: int) -> bool:
    import tifffile

    if not path.is_file() or path.stat().st_size < n * FRAME_BYTES:
        return False
    try:
        with tifffile.TiffFile(path) as tif:
            s = tif.series[0]
            return tuple(s.shape) == (n, SIZE, SIZE) and s.dtype == np.uint16 and s.dataoffset is not None
    except Exception:
        return False


def build_stack(path: Path, n: int, src) -> tuple[bool, float]:
    """Write an n-frame uncompressed contiguous stack (reused when present); (built, seconds)."""
    import tifffile

    if stack_ok(path, n):
        return False, 0.0
    t0 = time.perf_counter()
    tmp = path.with_suffix(".tmp.tif")
    bigtiff = n * FRAME_BYTES > 2**32 - 2**26
    with tifffile.TiffWriter(tmp, bigtiff=bigtiff) as tw:
        tw.write((make_frame(src, k) for k in range(n)), shape=(n, SIZE, SIZE), dtype=np.uint16,
                 photometric="minisblack", compression=None)
    os.replace(tmp, path)
    return True, time.perf_counter() - t0


def warm_page_cache(path: Path) -> None:
    with open(path, "rb", buffering=0) as f:
        buf = bytearray(64 << 20)
        while f.readinto(buf):
            pass


# --------------------------------------------------------------------------------------------------
# timing


@dataclass
class Row:
    case: str
    frames: int
    median_s: float
    best_s: float
    repeats: int
    peak_rss_mb: float | None = None
    note: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def fps(self) -> float:
        return self.frames / self.median_s

    @property
    def gbps(self) -> float:
        return self.frames * FRAME_BYTES / self.median_s / 1e9


def timed(fn, repeats: int, warmup: bool = True):
    """(median, min, last value) of ``repeats`` calls of fn, after one warm-up call."""
    if warmup:
        fn()
    times, value = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        value = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), min(times), value


# --------------------------------------------------------------------------------------------------
# 1. the read floor


def read_tifffile(path: Path, buf: np.ndarray) -> int:
    """Every page once, page by page, into the same preallocated frame buffer."""
    import tifffile

    with tifffile.TiffFile(path) as tif:
        pages = tif.pages
        n = len(pages)
        for i in range(n):
            pages[i].asarray(out=buf)
    return n


def read_raw(path: Path, buf: np.ndarray) -> int:
    """readinto of each frame at its offset: the page-cache floor, no TIFF at all."""
    import tifffile

    with tifffile.TiffFile(path) as tif:
        s = tif.series[0]
        offset, n = int(s.dataoffset), int(s.shape[0])
    view = memoryview(buf).cast("B")
    with open(path, "rb", buffering=0) as f:
        f.seek(offset)
        for _ in range(n):
            f.readinto(view)
    return n


def read_dask_zarr(path: Path) -> int:
    """dask.array over tifffile's Zarr store, one frame per chunk; each task reads its frame whole."""
    import dask.array as da
    import tifffile
    import zarr

    store = tifffile.imread(path, aszarr=True)
    try:
        z = zarr.open(store, mode="r")
        arr = da.from_zarr(z, chunks=(1, SIZE, SIZE))
        corner = arr.map_blocks(lambda b: b[:, :1, :1].copy(), chunks=(1, 1, 1), dtype=arr.dtype)
        out = corner.compute()
        return int(out.shape[0])
    finally:
        store.close()


# --------------------------------------------------------------------------------------------------
# 2. gpudiff


def gpudiff_run(stack: Path, out: Path, metrics) -> object:
    from gpudiff.options import CompareOptions
    from gpudiff.engine._runner import RunConfig, run

    if out.exists():
        shutil.rmtree(out)
    cfg = RunConfig(source=str(stack), out=str(out), progress=False, log_every_s=1e9)
    report = run(cfg, CompareOptions(metrics=metrics, backend="numpy"), stream=open(os.devnull, "w"))
    if report.exit_code != 0 or report.failed or report.pending:
        sys.exit(f"batch.py: gpudiff run on {stack} ended with exit code {report.exit_code} "
                 f"({report.failed} failed, {report.pending} pending): {report.failures[:3]}")
    return report


def fresh_store_run(stack: Path, out: Path, metrics):
    """A callable that removes the store (untimed), then times one run into a fresh store."""
    times = []

    def once():
        if out.exists():
            shutil.rmtree(out)
        t0 = time.perf_counter()
        gpudiff_run(stack, out, metrics)
        times.append(time.perf_counter() - t0)

    return once, times


def time_gpudiff(stack: Path, out: Path, metrics, repeats: int) -> tuple[float, float]:
    once, times = fresh_store_run(stack, out, metrics)
    once()  # warm-up (numba compilation, imports)
    times.clear()
    for _ in range(repeats):
        once()
    return statistics.median(times), min(times)


# --------------------------------------------------------------------------------------------------
# 3. the loop a user would write


def opencv_loop(path: Path, *, ssim: bool = False) -> list[dict]:
    """tifffile reads each frame once; OpenCV computes the metrics of every consecutive pair."""
    import cv2
    import tifffile

    bins, rng = [256], [0, 65536]
    out = []

    def per_frame(img):
        h = cv2.calcHist([img], [0], None, bins, rng)
        h /= float(h.sum())
        mean, std = cv2.meanStdDev(img)
        f = {"img": img, "hist": h, "mean": float(mean[0, 0]), "std": float(std[0, 0]),
             "f64": img.ravel().astype(np.float64)}
        if ssim:
            f["f32"] = img.astype(np.float32)
        return f

    with tifffile.TiffFile(path) as tif:
        pages = tif.pages
        prev = per_frame(pages[0].asarray())
        n_px = prev["img"].size
        for i in range(1, len(pages)):
            cur = per_frame(pages[i].asarray())
            a, b = prev["img"], cur["img"]
            l1 = cv2.norm(a, b, cv2.NORM_L1)
            l2 = cv2.norm(a, b, cv2.NORM_L2)
            r = {
                "manhattan": l1,
                "zero_norm": cv2.countNonZero(cv2.absdiff(a, b)),
                "mse": l2 * l2 / n_px,
                "max_abs": cv2.norm(a, b, cv2.NORM_INF),
                "ncc": (float(np.dot(prev["f64"], cur["f64"])) / n_px - prev["mean"] * cur["mean"])
                / (prev["std"] * cur["std"]),
            }
            p, q = prev["hist"], cur["hist"]
            r["hist_kl"] = cv2.compareHist(p, q, cv2.HISTCMP_KL_DIV)
            r["hist_chi2"] = cv2.compareHist(p, q, cv2.HISTCMP_CHISQR)
            r["hist_chi2_alt"] = cv2.compareHist(p, q, cv2.HISTCMP_CHISQR_ALT)
            r["hist_bhattacharyya"] = cv2.compareHist(p, q, cv2.HISTCMP_BHATTACHARYYA)
            r["hist_intersection"] = cv2.compareHist(p, q, cv2.HISTCMP_INTERSECT)
            r["hist_correlation"] = cv2.compareHist(p, q, cv2.HISTCMP_CORREL)
            if ssim:
                r["ssim"] = opencv_ssim(prev["f32"], cur["f32"], 65535.0)
            out.append(r)
            prev = cur
    return out


def opencv_ssim(x: np.ndarray, y: np.ndarray, data_range: float) -> float:
    """SSIM by the OpenCV formula (Gaussian 11x11, sigma 1.5, float32 moments), mean over the
    interior 5 px from each border, as scikit-image's gaussian_weights=True."""
    import cv2

    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2

    def blur(z):
        return cv2.GaussianBlur(z, (11, 11), 1.5, borderType=cv2.BORDER_REFLECT)

    mx, my = blur(x), blur(y)
    sxx = blur(x * x) - mx * mx
    syy = blur(y * y) - my * my
    sxy = blur(x * y) - mx * my
    s = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))
    return float(s[5:-5, 5:-5].astype(np.float64).mean())


def agreement(store_path: Path, loop: list[dict], names) -> tuple[float, str]:
    """Largest |gpudiff - OpenCV| / max(|OpenCV|, 1) over every item and the given columns."""
    from gpudiff.engine._store import ResultStore

    cols = ResultStore.open(str(store_path)).read(list(names))
    worst, where = 0.0, ""
    for name in names:
        ours = np.asarray(cols[name], dtype=np.float64)
        theirs = np.array([r[name] for r in loop], dtype=np.float64)
        if ours.shape != theirs.shape:
            return math.inf, f"{name}: {ours.shape} items vs {theirs.shape}"
        d = np.abs(ours - theirs) / np.maximum(np.abs(theirs), 1.0)
        k = int(np.nanargmax(d)) if d.size else 0
        if d.size and (np.isnan(d).any() or d[k] > worst):
            worst, where = (math.inf if np.isnan(d).any() else float(d[k])), f"{name}[{k}]"
    return worst, where


def per_frame_costs(stack: Path, calls: int) -> dict:
    """Per-call medians (ms) of the steps a run does per frame, on one pair, in this thread."""
    from gpudiff.pair._compare import compare
    from gpudiff.io import open_source
    from gpudiff.pair._sums import pair_sums
    from gpudiff.options import CompareOptions

    src = open_source(str(stack))
    a, b = src.read(1), src.read(2)
    metrics = CompareOptions(metrics=METRICS_ONLY, backend="numpy")
    no_hist = CompareOptions(metrics=tuple(m for m in METRICS_ONLY if m != "histogram"), backend="numpy")
    full = CompareOptions(backend="numpy")
    steps = {
        "TiffSource.read (one frame)": lambda: src.read(3),
        "compare(), metrics only": lambda: compare(a, b, options=metrics),
        "compare(), metrics only without histograms": lambda: compare(a, b, options=no_hist),
        "compare(), all metrics (SSIM incl.)": lambda: compare(a, b, options=full),
        "metrics.pair_sums with both histograms": lambda: pair_sums(a, b, bins=256, hist_range=(0.0, 65536.0)),
        "metrics.pair_sums without histograms": lambda: pair_sums(a, b),
    }
    out = {}
    for name, fn in steps.items():
        med, best, _ = timed(fn, calls)
        out[name] = {"median_ms": med * 1e3, "min_ms": best * 1e3}
    src.close()
    return out


# --------------------------------------------------------------------------------------------------
# 4. linear time & memory


# The child is started by a small launcher process, never by this one: Linux carries the parent's
# peak RSS into a child that is forked (or vforked) from it and then execs, so ru_maxrss of a child of
# this (large) process would read at least this process's own peak. The launcher is a bare Python
# (~10 MB), far below any gpudiff run.
_LAUNCHER = (
    "import json, os, subprocess, sys, time\n"
    "t0 = time.perf_counter()\n"
    "p = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL)\n"
    "_, status, ru = os.wait4(p.pid, 0)\n"
    "wall = time.perf_counter() - t0\n"
    "print(json.dumps({'rc': os.waitstatus_to_exitcode(status), 'maxrss_kib': ru.ru_maxrss, 'wall_s': wall}))\n"
)


def subprocess_rss(argv: list[str], env: dict) -> tuple[float, float, int]:
    """(wall seconds, peak RSS in MB of that child alone, exit code) of one fresh process."""
    done = subprocess.run([sys.executable, "-c", _LAUNCHER, *argv], env=env, capture_output=True, text=True)
    try:
        r = json.loads(done.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        sys.stderr.write(done.stderr[-2000:])
        return math.nan, math.nan, done.returncode or 1
    if r["rc"] != 0:
        sys.stderr.write(done.stderr[-2000:])
    return r["wall_s"], r["maxrss_kib"] / 1024.0, r["rc"]  # ru_maxrss is KiB on Linux


# --------------------------------------------------------------------------------------------------
# machine


def machine_info() -> dict:
    import cv2
    import dask
    import numba
    import tifffile
    import zarr

    import gpudiff

    model, usable = cpu_model_and_usable_cores()
    mem = None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal"):
                    mem = round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "cpu": model, "cores": os.cpu_count(), "usable_cores": usable, "mem_gib": mem,
        "python": platform.python_version(), "numpy": np.__version__, "tifffile": tifffile.__version__,
        "zarr": zarr.__version__, "dask": dask.__version__, "opencv": cv2.__version__,
        "opencv_threads": cv2.getNumThreads(), "numba": numba.__version__,
        "numba_threads": numba.config.NUMBA_NUM_THREADS, "gpudiff": gpudiff.__version__,
        "load_average_start": list(os.getloadavg()),
    }


def print_header(info: dict) -> None:
    print(f"gpudiff batch benchmark  {info['date']}")
    print(f"  cpu: {info['cpu']} ({info['cores']} cores, {info['usable_cores']} usable), {info['mem_gib']} GiB")
    print(f"  python {info['python']}, numpy {info['numpy']}, tifffile {info['tifffile']}, zarr {info['zarr']}, "
          f"dask {info['dask']}, opencv {info['opencv']} ({info['opencv_threads']} threads), numba "
          f"{info['numba']} ({info['numba_threads']} threads), gpudiff {info['gpudiff']}")
    la = info["load_average_start"]
    busy = "  << other work is running: times are noisy, compare minima" if la[0] > 0.5 * info["usable_cores"] else ""
    print(f"  load average at start: {la[0]:.2f} {la[1]:.2f} {la[2]:.2f}{busy}")


# --------------------------------------------------------------------------------------------------
# main


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="a 0.3 GB stack and 2 repeats (about a minute)")
    p.add_argument("--gb", type=float, default=None, help="stack size in GB (default 2; --quick 0.3)")
    p.add_argument("--workdir", default="/tmp/gpudiff-bench", help="where stacks and stores are written")
    p.add_argument("--repeats", type=int, default=None, help="timed runs per row (default 3; --quick 2)")
    p.add_argument("--json", default=None, metavar="OUT.json", help="write every number as JSON")
    args = p.parse_args(argv)
    gb = args.gb if args.gb is not None else (0.3 if args.quick else 2.0)
    repeats = args.repeats or (2 if args.quick else 3)
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    if work.resolve() == REPO or REPO in work.resolve().parents:
        sys.exit("batch.py: --workdir must be outside the repository")

    info = machine_info()
    print_header(info)
    n = max(16, int(round(gb * 1e9 / FRAME_BYTES)))
    lengths = [max(2, n // 8), max(2, n // 2), n]
    print(f"  stack: {n} frames of {SIZE}x{SIZE} uint16 ({n * FRAME_BYTES / 1e9:.2f} GB), from the cdnet2014 "
          f"traffic frames; lengths for the linearity test: {lengths}; {repeats} timed runs per row")
    print(f"  workdir: {work}")

    # data ------------------------------------------------------------------------------------------
    src = source_frames()
    stacks = {}
    for m in lengths:
        path = work / f"traffic-{SIZE}-u16-{m}.tif"
        built, secs = build_stack(path, m, src)
        print(f"  {'wrote' if built else 'reused'} {path.name} ({m * FRAME_BYTES / 1e9:.2f} GB)"
              + (f" in {secs:.1f} s" if built else ""), flush=True)
        stacks[m] = path
    stack = stacks[n]
    for m in lengths:
        warm_page_cache(stacks[m])

    rows: list[Row] = []
    results: dict = {"machine": info, "frames": n, "frame_bytes": FRAME_BYTES, "lengths": lengths}

    # 1. read floor ---------------------------------------------------------------------------------
    print("\n[1/5] read floor", flush=True)
    buf = np.empty((SIZE, SIZE), dtype=np.uint16)
    med, best, _ = timed(lambda: read_tifffile(stack, buf), repeats)
    floor = Row("read floor: tifffile page.asarray(out=)", n, med, best, repeats)
    rows.append(floor)
    med, best, _ = timed(lambda: read_raw(stack, buf), repeats)
    rows.append(Row("ref: raw readinto per frame", n, med, best, repeats))
    try:
        med, best, got = timed(lambda: read_dask_zarr(stack), repeats)
        rows.append(Row("ref: dask.array over tifffile zarr (1 frame/chunk)", n, med, best, repeats))
    except Exception as exc:  # optional reference
        print(f"  dask/zarr reference skipped: {type(exc).__name__}: {exc}")

    # 2. gpudiff end to end -------------------------------------------------------------------------
    print("[2/5] gpudiff run (numpy backend, local threads, fresh store each run)", flush=True)
    out_metrics = work / "run-metrics.zarr"
    out_full = work / "run-full.zarr"
    med, best = time_gpudiff(stack, out_metrics, METRICS_ONLY, repeats)
    g_metrics = Row("gpudiff run, metrics only", n, med, best, repeats, note=",".join(METRICS_ONLY))
    rows.append(g_metrics)
    norms = tuple(m for m in METRICS_ONLY if m != "histogram")
    med, best = time_gpudiff(stack, work / "run-norms.zarr", norms, repeats)
    g_norms = Row("gpudiff run, norms only (no histograms)", n, med, best, repeats, note=",".join(norms))
    rows.append(g_norms)
    med, best = time_gpudiff(stack, out_full, None, repeats)
    g_full = Row("gpudiff run, all metrics (SSIM incl.)", n, med, best, repeats)
    rows.append(g_full)

    # 3. the user's loop ----------------------------------------------------------------------------
    print("[3/5] the loop a user would write (tifffile + OpenCV)", flush=True)
    med, best, loop = timed(lambda: opencv_loop(stack), repeats, warmup=False)
    cv_metrics = Row("OpenCV loop, same metrics", n, med, best, repeats)
    names = ["manhattan", "zero_norm", "mse", "max_abs", "ncc", "hist_kl", "hist_chi2", "hist_chi2_alt",
             "hist_bhattacharyya", "hist_intersection", "hist_correlation"]
    worst, where = agreement(out_metrics, loop, names)
    cv_metrics.note = f"max rel diff vs gpudiff {worst:.2g} ({where})"
    rows.append(cv_metrics)
    del loop
    med, best, loop = timed(lambda: opencv_loop(stack, ssim=True), max(1, repeats - 1), warmup=False)
    cv_full = Row("OpenCV loop + SSIM (OpenCV formula)", n, med, best, max(1, repeats - 1))
    ssim_worst, ssim_where = agreement(out_full, loop, ["ssim"])
    cv_full.note = f"SSIM max abs diff vs gpudiff {ssim_worst:.2g} ({ssim_where})"
    rows.append(cv_full)
    del loop

    # 4. linear time (in process) -------------------------------------------------------------------
    print("[4/5] linear time: gpudiff on 3 lengths (in process)", flush=True)
    linear = []
    for m in lengths:
        med, best = time_gpudiff(stacks[m], work / f"run-len{m}.zarr", METRICS_ONLY, repeats)
        r = Row(f"gpudiff run, metrics only, {m} frames", m, med, best, repeats)
        linear.append(r)

    ns = np.array(lengths, dtype=np.float64)
    ts = np.array([r.best_s for r in linear])  # minima: the least disturbed by other work
    slope, intercept = np.polyfit(ns, ts, 1)
    residual = float(np.max(np.abs(ts - (intercept + slope * ns)) / ts))
    fit = {"fixed_s": float(intercept), "per_frame_ms": float(slope) * 1e3,
           "marginal_fps": float(1.0 / slope) if slope > 0 else math.inf, "max_rel_residual": residual}

    # 5. memory (fresh subprocesses) ----------------------------------------------------------------
    print("[5/5] peak RSS: python -m gpudiff run in fresh subprocesses", flush=True)
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    base_wall, base_rss, _ = subprocess_rss(
        [sys.executable, "-c", "import gpudiff.engine._runner, gpudiff.pair._compare, gpudiff.pair._sums, gpudiff.engine._store, "
         "gpudiff.io._open, dask, zarr, tifffile, numba"], env)
    sub = []
    for r, m in zip(linear, lengths):
        out = work / f"sub-len{m}.zarr"
        if out.exists():
            shutil.rmtree(out)
        argv = [sys.executable, "-m", "gpudiff", "run", str(stacks[m]), "--out", str(out), "--metrics",
                ",".join(METRICS_ONLY), "--backend", "numpy", "--no-progress", "--overwrite"]
        wall, rss, rc = subprocess_rss(argv, env)
        if rc != 0:
            sys.exit(f"batch.py: {' '.join(argv)} exited with {rc}")
        r.peak_rss_mb = rss
        r.extra["subprocess_wall_s"] = wall
        sub.append((m, wall, rss))
    g_metrics.peak_rss_mb = linear[-1].peak_rss_mb
    rows.extend(linear)

    # where the time goes, per frame -----------------------------------------------------------------
    costs = per_frame_costs(stack, 30 if args.quick else 100)

    # the table -------------------------------------------------------------------------------------
    la_end = list(os.getloadavg())
    info["load_average_end"] = la_end
    print()
    print(f"{'case':<50} {'frames/s':>9} {'GB/s':>7} {'vs floor':>9} {'median s':>9} {'min s':>8} {'peak RSS MB':>12}")
    print("-" * 110)
    for r in rows:
        rss = f"{r.peak_rss_mb:.0f}" if r.peak_rss_mb is not None else "-"
        print(f"{r.case:<50} {r.fps:>9.1f} {r.gbps:>7.2f} {r.gbps / floor.gbps:>8.0%} {r.median_s:>9.3f} "
              f"{r.best_s:>8.3f} {rss:>12}")
    print("-" * 110)
    print("vs floor = GB/s / floor GB/s (same bytes: every frame read once). Notes:")
    for r in rows:
        if r.note:
            print(f"  {r.case}: {r.note}")
    print(f"  process baseline (imports only): peak RSS {base_rss:.0f} MB, {base_wall:.2f} s")
    for m, wall, rss in sub:
        print(f"  python -m gpudiff run, {m} frames: {wall:.2f} s wall incl. startup, peak RSS {rss:.0f} MB")
    print(f"  time vs length, least squares on the minima, t = a + b n: a = {fit['fixed_s'] * 1e3:.0f} ms fixed per run, "
          f"b = {fit['per_frame_ms']:.2f} ms per frame ({fit['marginal_fps']:.0f} frames/s marginal)")
    print(f"  where the time goes, one pair, one thread (median / min of {30 if args.quick else 100} calls):")
    for name, c in costs.items():
        print(f"    {name:<45} {c['median_ms']:8.3f} ms  {c['min_ms']:8.3f} ms")
    print(f"    (the read floor is {floor.median_s / n * 1e3:.3f} ms per frame; a consecutive run does one read and "
          f"one compare() per frame, on {os.cpu_count()} threads)")
    print(f"  load average at end: {la_end[0]:.2f} {la_end[1]:.2f} {la_end[2]:.2f}")

    # targets ---------------------------------------------------------------------------------------
    frac = g_metrics.gbps / floor.gbps
    frac_min = floor.best_s / g_metrics.best_s
    fps = [r.frames / r.best_s for r in linear]  # from the minima, as the fit
    fps_median = [r.fps for r in linear]
    spread = max(fps) / min(fps)
    rss_ratio = linear[-1].peak_rss_mb / linear[0].peak_rss_mb
    vs_cv = cv_metrics.median_s / g_metrics.median_s
    vs_cv_full = cv_full.median_s / g_full.median_s
    targets = {
        "floor_fraction": {"value": frac, "value_min": frac_min, "target": TARGET_FLOOR, "met": frac >= TARGET_FLOOR},
        "linear_time": {"max_rel_residual": fit["max_rel_residual"], "fixed_s": fit["fixed_s"],
                        "per_frame_ms": fit["per_frame_ms"], "fps_spread": spread, "fps_from_minima": fps,
                        "fps_from_medians": fps_median, "target": TARGET_LINEAR,
                        "met": fit["max_rel_residual"] <= TARGET_LINEAR},
        "peak_rss_ratio": {"value": rss_ratio, "rss_mb": [r.peak_rss_mb for r in linear], "target": TARGET_RSS,
                           "met": rss_ratio < TARGET_RSS},
        "vs_opencv_loop": {"metrics_only": vs_cv, "all_metrics": vs_cv_full},
    }

    def verdict(ok):
        return "met    " if ok else "NOT MET"

    print()
    print(f"target {verdict(frac >= TARGET_FLOOR)} gpudiff metrics only >= {TARGET_FLOOR:.0%} of the read floor: "
          f"{frac:.0%} ({g_metrics.gbps:.2f} vs {floor.gbps:.2f} GB/s; minima {frac_min:.0%})")
    print(f"target {verdict(fit['max_rel_residual'] <= TARGET_LINEAR)} linear time: t = {fit['fixed_s'] * 1e3:.0f} ms + "
          f"{fit['per_frame_ms']:.2f} ms x frames fits the {len(lengths)} lengths within "
          f"{fit['max_rel_residual']:.1%} (target <= {TARGET_LINEAR:.0%}); frames/s at {', '.join(map(str, lengths))} "
          f"frames = {', '.join(f'{f:.1f}' for f in fps)} from the minima ({', '.join(f'{f:.1f}' for f in fps_median)} "
          f"from the medians)")
    print(f"target {verdict(rss_ratio < TARGET_RSS)} memory flat: peak RSS {linear[-1].peak_rss_mb:.0f} MB "
          f"({lengths[-1]} frames) / {linear[0].peak_rss_mb:.0f} MB ({lengths[0]} frames) = {rss_ratio:.3f} "
          f"(target < {TARGET_RSS})")
    print(f"info   vs the OpenCV loop: gpudiff {vs_cv:.2f}x its speed (metrics only), {vs_cv_full:.2f}x "
          f"(with SSIM); > 1 means gpudiff is faster")

    if args.json:
        results["rows"] = [{**asdict(r), "fps": r.fps, "gbps": r.gbps, "vs_floor": r.gbps / floor.gbps} for r in rows]
        results["baseline_rss_mb"] = base_rss
        results["subprocess"] = [{"frames": m, "wall_s": w, "peak_rss_mb": s} for m, w, s in sub]
        results["targets"] = targets
        results["linear_fit"] = fit
        results["per_frame_costs_ms"] = costs
        Path(args.json).write_text(json.dumps(results, indent=2, default=float))
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
