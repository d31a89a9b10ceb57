#!/usr/bin/env python3
"""Frames/s from a real S3-compatible server on loopback against the local read of the same data.

Usage::

    python benchmarks/remote_read.py [--latency-ms 20] [--repeat 3] [--frames 101] [--json out.json]

Data: the CDnet 2014 traffic frames (``../shared/data/cdnet2014-traffic-subset/input``, 101 real
320x240 colour JPEGs), in two layouts that archives use:

* ``folder``: the JPEG files as they are, one object per frame (``s3://bucket/frames/``);
* ``zarr``: the decoded frames as a Zarr v3 array ``(T, 240, 320, 3)`` uint8, one frame per chunk
  (``s3://bucket/stack.zarr``): one GET per frame.

Each layout is read locally (the floor) and through moto's S3 server (``python -m moto.server``,
its own process on 127.0.0.1), directly and behind a TCP proxy that delays each request by
``--latency-ms`` (a distant object store). A read is what a ``gpudiff run`` task does with a chunk of
consecutive pairs (``gpudiff.engine._chunk._ChunkFrames``): every frame of the chunk read once, in
order of use, with 1, 4 or 16 reads in flight (``--prefetch``: 0, 4, 16). Frames/s is frames over
the median wall time of ``--repeat`` passes (the source opened once beforehand, not timed). The
last table is ``gpudiff run`` itself (metrics only, one chunk of all pairs) from each place.

Every source's frames are first checked equal to the local decode (a pass that also warms the
client). Times are printed, never asserted. Ratios: frames/s over the local read of the same layout.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gpudiff.engine._chunk import _ChunkFrames  # noqa: E402
from gpudiff.io import open_source  # noqa: E402
from tests._servers import LatencyProxy, S3Server, new_bucket, s3_options  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "cdnet2014-traffic-subset" / "input"


def _read_all(source, prefetch: int) -> float:
    n = len(source)
    refs, movs = list(range(n - 1)), list(range(1, n))
    frames = _ChunkFrames(source, np, refs, movs, prefetch=prefetch)
    t0 = time.perf_counter()
    for k, (r, m) in enumerate(zip(refs, movs)):
        frames.get(r)
        frames.get(m)
        frames.release(k, r, m)
    frames.close()
    return time.perf_counter() - t0


def _rate(source, prefetch: int, repeat: int) -> float:
    times = [_read_all(source, prefetch) for _ in range(repeat)]
    return len(source) / statistics.median(times)


def _run_rate(src: str, opts: dict | None, out: str, repeat: int) -> float:
    from gpudiff.cli._main import main  # noqa: PLC0415

    args = ["run", src, "--out", out, "--chunk", "1000", "--no-progress", "--metrics", "manhattan,mse,histogram",
            "--overwrite"]
    if opts:
        args += ["--storage-options", json.dumps(opts)]
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        if main(args) != 0:
            raise SystemExit(f"gpudiff run {src} failed")
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--latency-ms", type=float, default=20.0)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--frames", type=int, default=101)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()

    import s3fs  # noqa: PLC0415
    import zarr  # noqa: PLC0415

    files = sorted(DATA.glob("*.jpg"))[: args.frames]
    tmp = Path(tempfile.mkdtemp(prefix="gd-remote-bench-"))
    folder = tmp / "frames"
    folder.mkdir()
    for f in files:
        (folder / f.name).write_bytes(f.read_bytes())
    local = open_source(str(folder))
    stack = np.stack([local.read(i) for i in range(len(local))])
    zpath = tmp / "stack.zarr"
    z = zarr.create_array(str(zpath), shape=stack.shape, chunks=(1, *stack.shape[1:]), dtype=stack.dtype)
    z[:] = stack

    rows = []
    with S3Server() as server:
        opts = s3_options(server.endpoint)
        bucket = new_bucket(opts)
        fs = s3fs.S3FileSystem(**opts, skip_instance_cache=True)
        fs.put(str(folder) + "/", f"{bucket}/frames/", recursive=True)
        fs.put(str(zpath) + "/", f"{bucket}/stack.zarr/", recursive=True)
        with LatencyProxy(server.port, args.latency_ms / 1000.0) as proxy:
            slow = s3_options(proxy.url)
            places = [("local", None, None), ("s3 loopback", opts, ""), (f"s3 +{args.latency_ms:g} ms", slow, "")]
            for layout, local_spec, key in (("folder", str(folder), "frames/"), ("zarr", str(zpath), "stack.zarr")):
                base = None
                for place, o, _ in places:
                    spec = local_spec if o is None else f"s3://{bucket}/{key}"
                    src = open_source(spec) if o is None else open_source(spec, storage_options=o)
                    for i in range(len(src)):  # same frames as the local decode (and a warm-up)
                        if not np.array_equal(src.read(i), stack[i]):
                            raise SystemExit(f"{spec}: frame {i} differs from the local read")
                    for prefetch in (0, 4, 16):
                        if o is None and prefetch:
                            continue
                        fps = _rate(src, prefetch, args.repeat)
                        base = fps if o is None else base
                        rows.append({"layout": layout, "place": place, "in_flight": max(1, prefetch),
                                     "frames_per_s": fps, "vs_local": fps / base})
                        print(f"{layout:6s} {place:14s} in flight {max(1, prefetch):2d}: {fps:8.1f} frames/s "
                              f"({fps / base:.2f}x local)", flush=True)
            run_rows = []
            for place, o, _ in places:
                spec = str(folder) if o is None else f"s3://{bucket}/frames/"
                s = _run_rate(spec, o, str(tmp / "run.zarr"), args.repeat)
                run_rows.append({"place": place, "seconds": s, "frames_per_s": len(files) / s})
                print(f"gpudiff run from {place:14s}: {s:6.2f} s, {len(files) / s:7.1f} frames/s", flush=True)

    print("\n| layout | where | reads in flight | frames/s | vs local |\n|---|---|---:|---:|---:|")
    for r in rows:
        print(f"| {r['layout']} | {r['place']} | {r['in_flight']} | {r['frames_per_s']:.1f} | {r['vs_local']:.2f} |")
    print("\n| `gpudiff run` (folder, metrics only, default prefetch) | s | frames/s |\n|---|---:|---:|")
    for r in run_rows:
        print(f"| {r['place']} | {r['seconds']:.2f} | {r['frames_per_s']:.1f} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"reads": rows, "run": run_rows}, indent=1))


if __name__ == "__main__":
    main()
