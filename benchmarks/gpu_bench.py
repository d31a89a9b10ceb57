#!/usr/bin/env python3
"""The GPU benchmarks: gpudiff on the device backend against the card's own floors, in one run.

Usage::

    python benchmarks/gpu_bench.py [--backend cupy|emulated-gpu] [--quick | --rehearse] [--json out.json]

What it measures (each printed, summarised in one table, never asserted):

1. **device-to-device copy bandwidth** (CuPy ``copyto`` of a large buffer, timed with CUDA events;
   bytes read + written): the card's practical HBM figure, the reference of the next rows;
2. **host-to-device bandwidth**, pageable (a NumPy array) and pinned (``cupyx.empty_pinned``);
3. the **fused pass** (``gpudiff.pair._sums.pair_sums(impl="cuda")``, norms + 256-bin histograms) on a
   4096^2 uint8 pair and on one 1024^2 uint16 pair (the batch frame): bytes read per second as a
   fraction of the copy bandwidth, and its agreement with the xp reference implementation;
4. **stage costs** on one 1024^2 pair: alignment (``phase_cross_correlation``, upsample 10) and SSIM,
   with the effective bandwidth of the bytes the roofline of ``RESULTS.md`` counts for them;
5. **cold start**, in fresh processes: ``import cupy`` / ``import gpudiff`` time, the first
   ``pair_sums`` call with an empty kernel cache (NVRTC compiles ``kernels/pair_stats.cu``), the
   first call with the disk cache warm, and a warm call;
6. the **batch engine** (``gpudiff.engine._runner.run``, what ``gpudiff run`` calls) on a synthetic stack of
   256 frames of 1024^2 uint16 (a TIFF in a temporary folder), metrics without SSIM, and with
   ``--align`` and every metric incl. SSIM: frames/s against the floor min(pinned H2D, host read),
   and against gpudiff on NumPy on the same stack.

Sizes: default as above; ``--quick`` 64 frames, smaller buffers (< 1 min); ``--rehearse`` tiny sizes
on the emulated device (``--backend emulated-gpu``, the default with it): every section runs, the
numbers mean nothing. The summary table's pass marks are those set in ``benchmarks/RESULTS.md``
("Expected GPU figures"); ``scripts/device-check`` copies the table into its report. Without a
device (backend ``cupy`` and no CUDA device) it prints why and exits 0. Exit 1 when a section
raised (the JSON says which).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # benchmark the checkout, installed or not

import numpy as np  # noqa: E402

SIZES = {
    "full": dict(copy_mib=1024, h2d_mib=256, fused=4096, frame=1024, frames=256, chunk=64, repeats=2, n=20),
    "quick": dict(copy_mib=256, h2d_mib=64, fused=2048, frame=1024, frames=64, chunk=64, repeats=1, n=10),
    "rehearse": dict(copy_mib=1, h2d_mib=1, fused=128, frame=64, frames=8, chunk=4, repeats=1, n=2),
}

# The roofline of benchmarks/RESULTS.md ("Expected GPU figures"), bytes per pixel of a pair.
# Spec-sheet HBM peaks by nvidia-smi name, most specific first (an H100 PCIe has HBM2e at 2.0 TB/s,
# the SXM card HBM3 at 3.35 TB/s; the NVL variant 3.9 TB/s).
HBM_PEAK_GBPS = {"H100 PCIe": 2000.0, "H100 NVL": 3900.0, "H100": 3350.0, "H200": 4800.0}
PCIE_GEN5_X16_GBPS = 64.0  # raw per direction; ~50-55 real with pinned memory
BYTES_PER_PX = {"fused": 4, "align": 136, "ssim": 380}  # uint16 pair; see RESULTS.md for the count
PASS = {
    "copy_of_peak": 0.80, "h2d_pinned_GBps": 40.0, "fused_of_copy": 0.60, "fused_small_ms": 0.10,
    "cold_first_call_s": 5.0, "batch_of_floor": 0.90, "batch_align_ssim_of_roofline": 0.20,
}


def _synthetic(size: int, dtype=np.uint16, seed: int = 0) -> np.ndarray:
    """A smooth random field with edges, scaled to the dtype's range."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    f = ndimage.gaussian_filter(rng.normal(size=(size, size)).astype(np.float32), max(1.0, size / 170))
    f += 0.5 * (ndimage.gaussian_filter(rng.normal(size=(size, size)).astype(np.float32), max(0.5, size / 500)) > 0)
    f = (f - f.min()) / (f.max() - f.min())
    top = np.iinfo(dtype).max if np.dtype(dtype).kind == "u" else 1.0
    return (f * 0.9 * top).round().astype(dtype)


def _pair(size: int, dtype) -> tuple[np.ndarray, np.ndarray]:
    a = _synthetic(size, dtype)
    noise = np.random.default_rng(1).integers(0, 4 if np.dtype(dtype).itemsize == 1 else 512, a.shape)
    b = np.roll(a, (2, -1), axis=(0, 1)).astype(np.int64) + noise
    return a, np.clip(b, 0, np.iinfo(dtype).max).astype(dtype)


class Device:
    """The backend's namespace with its timers."""

    def __init__(self, backend: str):
        from gpudiff import backend as _backend

        self.backend = backend
        self.xp = _backend.resolve_backend(backend)
        self.emulated = bool(getattr(_backend, "is_emulated", lambda xp: False)(self.xp))
        self.gpu = bool(_backend.is_cupy(self.xp)) or self.emulated
        self._backend = _backend

    def sync(self):
        self.xp.cuda.get_current_stream().synchronize()  # sync

    def host(self, a):
        return self._backend.to_host(a) if not hasattr(a, "get") else a.get()

    def events(self, fn, n: int) -> float:
        """Median seconds of ``fn`` between two CUDA events (one warm-up call first)."""
        xp = self.xp
        fn()
        self.sync()
        times = []
        for _ in range(max(1, n)):
            e0, e1 = xp.cuda.Event(), xp.cuda.Event()
            e0.record()
            fn()
            e1.record()
            e1.synchronize()  # sync
            times.append(xp.cuda.get_elapsed_time(e0, e1) / 1e3)
        return statistics.median(times)

    def wall(self, fn, n: int) -> tuple[float, object]:
        """Median wall seconds of ``fn`` with the stream synchronised inside the timed call."""
        value = fn()
        self.sync()
        times = []
        for _ in range(max(1, n)):
            t0 = time.perf_counter()
            value = fn()
            self.sync()
            times.append(time.perf_counter() - t0)
        return statistics.median(times), value

    def pinned(self, shape, dtype):
        if self.emulated:
            return np.empty(shape, dtype=dtype)  # the emulator has no page-locked memory
        import cupyx

        return cupyx.empty_pinned(shape, dtype=dtype)

    def upload(self, dev, host):
        if hasattr(dev, "set"):
            dev.set(host)
        else:
            dev[...] = self.xp.asarray(host)

    def info(self) -> dict:
        xp = self.xp
        p = xp.cuda.runtime.getDeviceProperties(xp.cuda.Device().id)
        name = p["name"].decode() if isinstance(p["name"], bytes) else str(p["name"])
        out = {"gpu": name, "memory_GiB": round(p["totalGlobalMem"] / 2**30, 1),
               "multiprocessors": int(p["multiProcessorCount"]), "backend": self.backend,
               "emulated": self.emulated, "numpy": np.__version__}
        try:
            import cupy

            out["cupy"] = cupy.__version__
            out["cuda_runtime"] = cupy.cuda.runtime.runtimeGetVersion()
            out["cuda_driver"] = cupy.cuda.runtime.driverGetVersion()
        except Exception:  # noqa: BLE001
            pass
        return out


# ------------------------------------------------------------------------------------------------
# sections


def bench_copy(d: Device, s: dict) -> dict:
    xp = d.xp
    n = s["copy_mib"] << 20
    src = xp.full(n, 7, dtype=xp.uint8)
    dst = xp.empty_like(src)
    t = d.events(lambda: xp.copyto(dst, src), s["n"])
    del src, dst
    return {"bytes": n, "ms": t * 1e3, "GBps": 2 * n / t / 1e9}


def bench_h2d(d: Device, s: dict) -> dict:
    xp = d.xp
    n = s["h2d_mib"] << 20
    dev = xp.empty(n, dtype=xp.uint8)
    pageable = np.full(n, 3, dtype=np.uint8)
    pin = d.pinned((n,), np.uint8)
    pin[...] = 3
    t_page = d.events(lambda: d.upload(dev, pageable), max(2, s["n"] // 2))
    t_pin = d.events(lambda: d.upload(dev, pin), max(2, s["n"] // 2))
    return {"bytes": n, "pageable_GBps": n / t_page / 1e9, "pinned_GBps": n / t_pin / 1e9,
            "pinned_is_emulated": d.emulated}


def _sums(s) -> dict:
    out = {}
    for k in ("n", "l1", "l0", "sse", "max_abs", "sa", "sb", "saa", "sbb", "sab", "hist_a", "hist_b"):
        v = getattr(s, k, None)
        if v is not None:
            out[k] = np.asarray(v, dtype=np.float64)
    return out


def bench_fused(d: Device, s: dict, copy_GBps: float) -> dict:
    from gpudiff.pair._sums import pair_sums

    out = {}
    for label, size, dtype, rng in (("uint8 gray", s["fused"], np.uint8, (0.0, 256.0)),
                                    ("uint16 frame", s["frame"], np.uint16, (0.0, 65536.0))):
        a, b = _pair(size, dtype)
        da, db = d.xp.asarray(a), d.xp.asarray(b)

        def run(impl, da=da, db=db, rng=rng):
            return pair_sums(da, db, tolerance=0.0, center=0.0, bins=256, hist_range=rng, impl=impl)

        t, value = d.wall(lambda: run("cuda"), s["n"])
        ref = _sums(run("reference"))
        got = _sums(value)
        worst = max((float(np.max(np.abs(got[k] - ref[k]) / (np.abs(ref[k]) + 1.0))) for k in ref), default=0.0)
        nbytes = a.nbytes + b.nbytes
        out[f"{size}^2 {label}"] = {
            "size": size, "dtype": np.dtype(dtype).name, "bytes_read": nbytes, "ms": t * 1e3,
            "read_GBps": nbytes / t / 1e9, "fraction_of_copy_bandwidth": nbytes / t / 1e9 / copy_GBps,
            "max_rel_diff_vs_reference": worst,
        }
        del da, db
    return out


def bench_stages(d: Device, s: dict, copy_GBps: float) -> dict:
    from gpudiff.pair._align import phase_cross_correlation
    from gpudiff.pair._ssim import structural_similarity

    size = s["frame"]
    a, b = _pair(size, np.uint16)
    da, db = d.xp.asarray(a), d.xp.asarray(b)
    out = {}
    for name, fn in (("align", lambda: phase_cross_correlation(da, db, upsample_factor=10)),
                     ("ssim", lambda: structural_similarity(da, db, data_range=65535.0))):
        t, _ = d.wall(fn, s["n"])
        nbytes = BYTES_PER_PX[name] * size * size
        out[name] = {"size": size, "ms": t * 1e3, "roofline_bytes": nbytes,
                     "effective_GBps": nbytes / t / 1e9, "fraction_of_copy_bandwidth": nbytes / t / 1e9 / copy_GBps}
    return out


_COLD = r"""
import json, os, sys, time
t0 = time.perf_counter()
backend = sys.argv[1]
if backend == "cupy":
    import cupy
t1 = time.perf_counter()
import numpy as np
import gpudiff
from gpudiff import backend as _backend
from gpudiff.pair._sums import pair_sums
t2 = time.perf_counter()
xp = _backend.resolve_backend(backend)
a = xp.asarray(np.arange(1 << 20, dtype=np.uint16).reshape(1024, 1024))
b = xp.asarray(np.arange(1 << 20, dtype=np.uint16)[::-1].reshape(1024, 1024).copy())
xp.cuda.get_current_stream().synchronize()
t3 = time.perf_counter()
pair_sums(a, b, bins=256, hist_range=(0.0, 65536.0), impl="cuda")
t4 = time.perf_counter()
pair_sums(a, b, bins=256, hist_range=(0.0, 65536.0), impl="cuda")
t5 = time.perf_counter()
print(json.dumps({"import_cupy_s": t1 - t0, "import_gpudiff_s": t2 - t1, "first_call_s": t4 - t3,
                  "warm_call_ms": (t5 - t4) * 1e3}))
"""


def bench_cold(d: Device) -> dict:
    cache = tempfile.mkdtemp(prefix="gpudiff-cupy-cache-")
    env = dict(os.environ, CUPY_CACHE_DIR=cache, PYTHONPATH=os.pathsep.join(
        [str(REPO)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
    out = {}
    try:
        for key in ("empty kernel cache (NVRTC compile)", "disk kernel cache warm"):
            r = subprocess.run([sys.executable, "-c", _COLD, d.backend], env=env, capture_output=True,
                               text=True, timeout=180)
            if r.returncode != 0:
                raise RuntimeError(f"cold-start process failed: {r.stderr.strip()[-400:]}")
            out[key] = json.loads(r.stdout.strip().splitlines()[-1])
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    return out


def _make_stack(path: Path, n: int, size: int) -> None:
    import tifffile

    base = _synthetic(size, np.uint16)
    rng = np.random.default_rng(2)
    with tifffile.TiffWriter(path) as tw:
        for k in range(n):
            f = np.roll(base, (k % 7, -(k % 5)), axis=(0, 1))
            f = f + rng.integers(0, 256, f.shape, dtype=np.uint16)  # below the 0.9 * max ceiling
            tw.write(f, contiguous=True)


def _read_floor(path: Path, n: int, size: int) -> float:
    import tifffile

    buf = np.empty((size, size), dtype=np.uint16)
    times = []
    for _ in range(2):
        t0 = time.perf_counter()
        with tifffile.TiffFile(path) as tf:
            for page in tf.pages[:n]:
                page.asarray(out=buf)
        times.append(time.perf_counter() - t0)
    return n / min(times)


def bench_batch(d: Device, s: dict, h2d_pinned_GBps: float, copy_GBps: float) -> dict:
    from gpudiff.options import ALL_METRICS, CompareOptions
    from gpudiff.engine._runner import RunConfig, run

    n, size = s["frames"], s["frame"]
    tmp = Path(tempfile.mkdtemp(prefix="gpudiff-gpu-bench-"))
    out = {"frames": n, "size": size, "dtype": "uint16", "stack_GB": n * size * size * 2 / 1e9}
    try:
        stack, warm = tmp / "stack.tif", tmp / "warm.tif"
        _make_stack(stack, n, size)
        _make_stack(warm, min(n, 2 * s["chunk"]), size)
        read_fps = _read_floor(stack, n, size)
        h2d_fps = h2d_pinned_GBps * 1e9 / (size * size * 2)
        out.update({"host_read_floor_fps": read_fps, "h2d_pinned_floor_fps": h2d_fps, "floor_fps": min(read_fps, h2d_fps)})
        roof = copy_GBps * 1e9 / ((BYTES_PER_PX["fused"] + BYTES_PER_PX["align"] + BYTES_PER_PX["ssim"]) * size * size)
        out["align_ssim_roofline_fps"] = roof
        cases = {"metrics, no SSIM": dict(metrics=tuple(m for m in ALL_METRICS if m != "ssim")),
                 "--align, all metrics incl. SSIM": dict(metrics=None, align=True)}
        devnull = open(os.devnull, "w")

        def once(src, backend, kw, tag):
            store = tmp / f"{tag}.zarr"
            shutil.rmtree(store, ignore_errors=True)
            cfg = RunConfig(source=str(src), out=str(store), progress=False, log_every_s=1e9, chunk=s["chunk"])
            t0 = time.perf_counter()
            rep = run(cfg, CompareOptions(backend=backend, **kw), stream=devnull)
            t = time.perf_counter() - t0
            if rep.exit_code != 0 or rep.failed or rep.pending:
                raise RuntimeError(f"gpudiff run ({backend}, {kw}) ended with exit {rep.exit_code}: {rep.failures[:2]}")
            return (rep.done + rep.failed + rep.pending) / t

        for name, kw in cases.items():
            once(warm, d.backend, kw, "warm")  # kernel compilation, pools, imports
            fps = statistics.median(once(stack, d.backend, kw, "dev") for _ in range(s["repeats"]))
            once(warm, "numpy", kw, "warm-cpu")
            cpu = once(stack, "numpy", kw, "cpu")
            ref = out["floor_fps"] if "no SSIM" in name else roof
            out[name] = {"fps": fps, "GBps": fps * size * size * 2 / 1e9, "numpy_fps": cpu,
                         "x_numpy": fps / cpu, "fraction": fps / ref}
            print(f"  batch {name}: {fps:.0f} frames/s ({out[name]['fraction']:.2f} of its reference), "
                  f"numpy {cpu:.0f} frames/s", flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


# ------------------------------------------------------------------------------------------------
# summary


def summary_rows(r: dict, rehearse: bool) -> list[list[str]]:
    """[measure, value, reference, fraction, pass mark, met] for device-check's report."""
    gpu = r.get("machine", {}).get("gpu", "")
    peak = next((v for k, v in HBM_PEAK_GBPS.items() if k in gpu), None)
    rows = []

    def met(ok):
        return "n/a (rehearsal)" if rehearse else ("yes" if ok else "NO")

    c = r.get("copy")
    if c:
        rows.append(["D2D copy (read + written)", f"{c['GBps']:.0f} GB/s",
                     f"HBM peak {peak:.0f} GB/s" if peak else "card peak unknown",
                     f"{c['GBps'] / peak:.2f}" if peak else "-", f">= {PASS['copy_of_peak']:.0%} of peak",
                     met(peak and c["GBps"] / peak >= PASS["copy_of_peak"]) if peak else "-"])
    h = r.get("h2d")
    if h:
        rows.append(["H2D pageable", f"{h['pageable_GBps']:.1f} GB/s", f"PCIe Gen5 x16 {PCIE_GEN5_X16_GBPS:.0f} GB/s",
                     f"{h['pageable_GBps'] / PCIE_GEN5_X16_GBPS:.2f}", "recorded", "-"])
        rows.append(["H2D pinned", f"{h['pinned_GBps']:.1f} GB/s", f"PCIe Gen5 x16 {PCIE_GEN5_X16_GBPS:.0f} GB/s",
                     f"{h['pinned_GBps'] / PCIE_GEN5_X16_GBPS:.2f}", f">= {PASS['h2d_pinned_GBps']:.0f} GB/s",
                     met(h["pinned_GBps"] >= PASS["h2d_pinned_GBps"])])
    for k, v in r.get("fused", {}).items():
        big = v["dtype"] == "uint8"
        rows.append([f"fused pass {k} (norms + histograms)",
                     f"{v['ms']:.3f} ms, {v['read_GBps']:.0f} GB/s read", "D2D copy rate",
                     f"{v['fraction_of_copy_bandwidth']:.2f}",
                     f">= {PASS['fused_of_copy']:.0%} of copy" if big else f"<= {PASS['fused_small_ms']} ms per pair",
                     met(v["fraction_of_copy_bandwidth"] >= PASS["fused_of_copy"]) if big
                     else met(v["ms"] <= PASS["fused_small_ms"])])
        rows.append([f"fused pass {k}: vs xp reference", f"max rel diff {v['max_rel_diff_vs_reference']:.1e}",
                     "", "", "<= 1e-12", met(v["max_rel_diff_vs_reference"] <= 1e-12)])
    for k, v in r.get("stages", {}).items():
        rows.append([f"{k} one {v['size']}^2 pair", f"{v['ms']:.3f} ms, {v['effective_GBps']:.0f} GB/s effective",
                     f"{BYTES_PER_PX[k]} B/px roofline", f"{v['fraction_of_copy_bandwidth']:.2f}", "recorded", "-"])
    for k, v in r.get("cold_start", {}).items():
        rows.append([f"cold start, {k}", f"first pair_sums {v['first_call_s']:.2f} s, warm {v['warm_call_ms']:.2f} ms",
                     f"import cupy {v['import_cupy_s']:.2f} s, gpudiff {v['import_gpudiff_s']:.2f} s", "",
                     f"first call <= {PASS['cold_first_call_s']:.0f} s", met(v["first_call_s"] <= PASS["cold_first_call_s"])])
    b = r.get("batch")
    if b:
        rows.append([f"batch floor ({b['frames']} x {b['size']}^2 uint16)",
                     f"{b['floor_fps']:.0f} frames/s",
                     f"host read {b['host_read_floor_fps']:.0f}, pinned H2D {b['h2d_pinned_floor_fps']:.0f} frames/s",
                     "", "recorded", "-"])
        for k in ("metrics, no SSIM", "--align, all metrics incl. SSIM"):
            v = b.get(k)
            if not v:
                continue
            no_align = "no SSIM" in k
            rows.append([f"batch {k}", f"{v['fps']:.0f} frames/s (numpy {v['numpy_fps']:.0f}, x{v['x_numpy']:.1f})",
                         "the floor" if no_align else f"HBM roofline {b['align_ssim_roofline_fps']:.0f} frames/s",
                         f"{v['fraction']:.2f}",
                         f">= {PASS['batch_of_floor']:.0%} of the floor" if no_align
                         else f">= {PASS['batch_align_ssim_of_roofline']:.0%} of the roofline",
                         met(v["fraction"] >= (PASS["batch_of_floor"] if no_align else PASS["batch_align_ssim_of_roofline"]))])
    for k, e in r.get("errors", {}).items():
        rows.append([f"{k}: ERROR", e[:200], "", "", "", "NO"])
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--backend", default=None, help="cupy (default) or emulated-gpu (default with --rehearse)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--quick", action="store_true", help="smaller sizes (< 1 min on a GPU)")
    g.add_argument("--rehearse", action="store_true", help="tiny sizes on the emulated device: numbers mean nothing")
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    args = p.parse_args(argv)
    mode = "rehearse" if args.rehearse else "quick" if args.quick else "full"
    backend = args.backend or ("emulated-gpu" if args.rehearse else os.environ.get("DEVICE_CHECK_BACKEND", "cupy"))
    s = SIZES[mode]

    from gpudiff import backend as _backend

    if backend == "cupy" and not _backend.cupy_available():
        print("gpu_bench: skipped: CuPy is not installed or sees no CUDA device (run it on a GPU machine through "
              "scripts/device-check, or rehearse with --rehearse)")
        return 0
    try:
        d = Device(backend)
    except Exception as e:  # noqa: BLE001
        print(f"gpu_bench: backend {backend!r} unusable: {type(e).__name__}: {e}")
        return 1
    if not d.gpu:
        print(f"gpu_bench: backend {backend!r} is not a GPU path ({d.xp.__name__}): nothing to measure")
        return 1
    r: dict = {"mode": mode, "sizes": s, "errors": {}}
    r["machine"] = d.info()
    r["sizes_text"] = (f"{mode}: copy {s['copy_mib']} MiB, H2D {s['h2d_mib']} MiB, fused {s['fused']}^2 uint8 and "
                       f"{s['frame']}^2 uint16, batch {s['frames']} x {s['frame']}^2 uint16 (chunk {s['chunk']}, "
                       f"median of {s['repeats']} runs), {s['n']} timed calls per kernel measure")
    m = r["machine"]
    print(f"# gpudiff GPU benchmarks ({mode}) on {m['gpu']} ({m['memory_GiB']} GiB, {m['multiprocessors']} SMs), "
          f"backend {backend}{' (EMULATED: numbers not meaningful)' if d.emulated else ''}", flush=True)
    t_all = time.perf_counter()

    def section(name, fn):
        t0 = time.perf_counter()
        try:
            r[name] = fn()
            print(f"{name}: {json.dumps(r[name], default=float)[:600]}  [{time.perf_counter() - t0:.1f} s]", flush=True)
        except Exception as e:  # noqa: BLE001
            r["errors"][name] = f"{type(e).__name__}: {e}"
            print(f"{name}: ERROR {r['errors'][name]}", flush=True)

    section("copy", lambda: bench_copy(d, s))
    copy_GBps = r.get("copy", {}).get("GBps", float("nan"))
    section("h2d", lambda: bench_h2d(d, s))
    section("fused", lambda: bench_fused(d, s, copy_GBps))
    section("stages", lambda: bench_stages(d, s, copy_GBps))
    section("cold_start", lambda: bench_cold(d))
    section("batch", lambda: bench_batch(d, s, r.get("h2d", {}).get("pinned_GBps", float("nan")), copy_GBps))
    r["total_s"] = time.perf_counter() - t_all
    r["summary_rows"] = summary_rows(r, rehearse=d.emulated)

    w = max(len(row[0]) for row in r["summary_rows"]) if r["summary_rows"] else 10
    print()
    for row in r["summary_rows"]:
        print(f"{row[0]:<{w}}  {row[1]}  | {row[2]} | {row[3]} | {row[4]} | {row[5]}")
    print(f"\n[total {r['total_s']:.0f} s on {m['gpu']}]")
    if args.json:
        Path(args.json).write_text(json.dumps(r, indent=1, default=float) + "\n")
    return 1 if r["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
