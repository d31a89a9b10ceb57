#!/usr/bin/env python3
"""The GPU-only benchmarks: gpudiff on CuPy, checked against its own reference paths.

Usage::

    python benchmarks/gpu_bench.py [--json out.json]

- the fused pass (``pair_sums``, impl ``cuda``) against the xp reference implementation on the same
  CuPy arrays: times, equality of every sum and histogram, bytes read / time as a fraction of the
  device's measured copy bandwidth;
- a batch of 16 pairs of 4096 x 4096 uint8 through the fused pass: the same fraction;
- alignment (``phase_cross_correlation``, integer and upsample 20) on CuPy against cuCIM's when it
  imports, and against gpudiff on NumPy (CPU) for reference;
- SSIM and the whole ``compare`` on CuPy against gpudiff on NumPy (CPU).

Times: one warm-up, then median and minimum of N calls, the stream synchronised inside each timed
call; ``ratio`` = other / gpudiff-on-CuPy. Without CuPy or a CUDA device it prints why and exits 0.
Uses the real images of the shared data folder when found (see peers.py), else a synthetic one.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import peers  # noqa: E402  (benchmarks/peers.py: timing, data, table; it puts the checkout on sys.path)
from peers import Clock, Row, agreement, print_table  # noqa: E402

import numpy as np  # noqa: E402

SIZE = 4096
BATCH = 16


def _synthetic_gray(size: int = 512) -> np.ndarray:
    """A smooth random field with edges: a stand-in when the real images are not there."""
    from scipy import ndimage

    rng = np.random.default_rng(0)
    f = ndimage.gaussian_filter(rng.normal(size=(size, size)), 6.0)
    f += 0.5 * (ndimage.gaussian_filter(rng.normal(size=(size, size)), 2.0) > 0)
    f = (f - f.min()) / (f.max() - f.min())
    return (f * 255).round().astype(np.uint8)


def sums_all(s) -> dict:
    """Every field of a PairSums on the host (per channel), for an equality check."""
    out = {}
    for k in ("n", "l1", "l0", "l0_any", "sse", "max_abs", "sa", "sb", "saa", "sbb", "sab", "hist_a", "hist_b"):
        v = getattr(s, k, None)
        if v is not None:
            out[k] = np.asarray(peers._host(v), dtype=np.float64)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    args = p.parse_args(argv)

    from gpudiff import _backend

    if not _backend.cupy_available():
        print("gpu_bench: skipped: CuPy is not installed or sees no CUDA device (run it on a GPU machine, "
              "e.g. through scripts/device-check)")
        return 0
    gd = peers.Gpudiff("cupy")
    cp = gd.xp
    clock = Clock(budget_s=1.0, min_repeats=5, max_repeats=50, sync=gd.sync)
    cpu_clock = Clock(budget_s=1.0, min_repeats=3, max_repeats=10)
    info = peers.machine_info(gd)
    print(f"# gpudiff GPU benchmarks  {info['date']}")
    print(f"# GPU: {info['gpu']}, CuPy {info['cupy']}, CUDA runtime {info['cuda_runtime']}, driver {info['cuda_driver']}; "
          f"CPU: {info['cpu']}, {info['usable_cores']} cores; numpy {info['numpy']}")

    data = peers.find_data_dir()
    if data is not None:
        gray, rgb = peers.base_gray(data), peers.base_rgb(data)
        print(f"# data: real images from {data}")
    else:
        gray = _synthetic_gray()
        rgb = np.stack([gray, np.roll(gray, 31, axis=0), np.roll(gray, 57, axis=1)], axis=-1)
        print("# data: shared data folder not found (set GPUDIFF_DATA): a synthetic image stands in")
    print(flush=True)

    rows: list[Row] = []
    summary: dict = {"machine": info}
    t0 = time.perf_counter()

    copy_bytes = 1 << 30
    src = cp.full(copy_bytes, 7, dtype=cp.uint8)
    dst = cp.empty_like(src)
    t_copy = clock(lambda: cp.copyto(dst, src))
    del src, dst
    dev_bw = 2 * copy_bytes / t_copy.median
    summary["device_copy_GBps"] = dev_bw / 1e9
    print(f"device copy bandwidth: 1 GiB device-to-device in {t_copy.median * 1e3:.3f} ms = "
          f"{dev_bw / 1e9:.0f} GB/s (bytes read + written)", flush=True)

    # 1. the fused pass against the reference implementation, same CuPy arrays
    fused = {}
    cases = [
        ("gray uint8", gray, True, 0.0, (0.0, 256.0)),
        ("gray uint8, norms only", gray, False, 0.0, None),
        ("RGB uint8", rgb, True, 0.0, (0.0, 256.0)),
        ("gray float32 [0,1]", gray, True, 0.5, (0.0, 1.0)),
    ]
    from gpudiff.metrics import pair_sums

    for name, base, hist, center, hist_range in cases:
        a, b = peers.make_pair(base, SIZE)
        if "float32" in name:
            a = a.astype(np.float32) / 255
            b = b.astype(np.float32) / 255
        da, db = cp.asarray(a), cp.asarray(b)
        del a, b

        def run(impl, da=da, db=db, center=center, hist_range=hist_range):
            return pair_sums(da, db, tolerance=0.0, center=center, bins=256, hist_range=hist_range, impl=impl)

        t_cuda = clock(lambda: run("cuda"))
        t_ref = clock(lambda: run("reference"))
        label = f"fused pass {SIZE}^2 {name}"
        rows.append(Row(label, "xp reference on CuPy", t_cuda, t_ref, agreement(sums_all(t_cuda.value), sums_all(t_ref.value))))
        nbytes = da.nbytes + db.nbytes
        frac = nbytes / t_cuda.median / dev_bw
        fused[name] = {"ms": t_cuda.median * 1e3, "reference_ms": t_ref.median * 1e3,
                       "bytes_read": nbytes, "fraction_of_copy_bandwidth": frac}
        print(f"{label}: cuda {t_cuda.median * 1e3:.3f} ms ({nbytes / t_cuda.median / 1e9:.0f} GB/s read, "
              f"{frac:.2f} of copy bandwidth), reference {t_ref.median * 1e3:.3f} ms", flush=True)
        del da, db
    summary["fused"] = fused

    # 2. a batch of 16 pairs through the fused pass
    batch = {}
    for hist in (True, False):
        s = peers.case_batch(gd, clock, gray, SIZE, BATCH, dev_bw, hist=hist)
        key = "with histograms" if hist else "norms only"
        batch[key] = s
        print(f"batch {BATCH} x {SIZE}^2 uint8 pairs, {key}: {s['ms']:.2f} ms = {s['read_GBps']:.0f} GB/s read = "
              f"{s['fraction_of_copy_bandwidth']:.2f} of copy bandwidth", flush=True)
    summary["batch"] = batch

    # 3. alignment: gpudiff on CuPy vs cuCIM (GPU) and gpudiff on NumPy (CPU)
    from gpudiff.align import phase_cross_correlation

    ref, mov, truth = peers.make_shifted_pair(gray, 2048)
    dref, dmov = cp.asarray(ref), cp.asarray(mov)
    try:
        from cucim.skimage.registration import phase_cross_correlation as cu_pcc
    except ImportError:
        cu_pcc = None
        print("cuCIM not importable: alignment is compared with gpudiff on NumPy only")
    align = {}
    for up in (1, 20):
        label = f"align 2048^2 {'integer' if up == 1 else 'upsample 20'}"
        t_gpu = clock(lambda up=up: phase_cross_correlation(dref, dmov, upsample_factor=up))
        ours = {"shift": np.array(t_gpu.value.shift, dtype=np.float64)}
        t_cpu = cpu_clock(lambda up=up: phase_cross_correlation(ref, mov, upsample_factor=up))
        rows.append(Row(label, "gpudiff on NumPy (CPU)", t_gpu, t_cpu,
                        agreement(ours, {"shift": np.array(t_cpu.value.shift)})
                        + f"; shift ({ours['shift'][0]:g}, {ours['shift'][1]:g}), truth ({truth[0]:g}, {truth[1]:g})"))
        align[label] = {"ms": t_gpu.median * 1e3, "numpy_ms": t_cpu.median * 1e3,
                        "shift": [float(v) for v in ours["shift"]]}
        if cu_pcc is not None:
            t_cu = clock(lambda up=up: cu_pcc(dref, dmov, upsample_factor=up)[0])
            theirs = {"shift": np.asarray(peers._host(t_cu.value), dtype=np.float64)}
            rows.append(Row(label, "cuCIM phase_cross_correlation", t_gpu, t_cu, agreement(ours, theirs)))
            align[label]["cucim_ms"] = t_cu.median * 1e3
    summary["align"] = align
    del dref, dmov

    # 4. SSIM and the whole compare on CuPy vs gpudiff on NumPy
    import gpudiff
    from gpudiff.ssim import structural_similarity

    ssim = {}
    for size in (2048, SIZE):
        a, b = peers.make_pair(gray, size)
        da, db = cp.asarray(a), cp.asarray(b)
        label = f"SSIM {size}^2 gray"
        t_gpu = clock(lambda da=da, db=db: structural_similarity(da, db, data_range=255.0))
        t_cpu = cpu_clock(lambda a=a, b=b: structural_similarity(a, b, data_range=255.0))
        rows.append(Row(label, "gpudiff on NumPy (CPU)", t_gpu, t_cpu, agreement({"ssim": t_gpu.value}, {"ssim": t_cpu.value})))
        ssim[label] = {"ms": t_gpu.median * 1e3, "numpy_ms": t_cpu.median * 1e3, "ssim": t_gpu.value}
        label = f"compare() all metrics {size}^2 gray"
        t_gpu = clock(lambda da=da, db=db: gpudiff.compare(da, db, backend="cupy"))
        t_cpu = cpu_clock(lambda a=a, b=b: gpudiff.compare(a, b, backend="numpy"))
        rows.append(Row(label, "gpudiff on NumPy (CPU)", t_gpu, t_cpu,
                        agreement(peers.comparison_numbers(t_gpu.value), peers.comparison_numbers(t_cpu.value))))
        ssim[label] = {"ms": t_gpu.median * 1e3, "numpy_ms": t_cpu.median * 1e3}
        del da, db
    summary["ssim_compare"] = ssim

    print()
    print_table(rows)
    print(f"\n[total {time.perf_counter() - t0:.0f} s on {info['gpu']}]")
    if args.json:
        summary["rows"] = [r.to_dict() for r in rows]
        Path(args.json).write_text(json.dumps(summary, indent=2, default=float) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
