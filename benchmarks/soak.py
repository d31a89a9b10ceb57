#!/usr/bin/env python3
"""The long soak: ``gpudiff run`` on many small items, killed at random and restarted, must end with
the same store as one uninterrupted run.

Usage::

    python benchmarks/soak.py [--items 100000] [--duration 600] [--kill-every 2,6] [--seed 1]
                              [--chunk 512] [--metrics manhattan,mse,histogram]
                              [--workdir DIR] [--json out.json]

The source: a Zarr array of shape (items + 1, 8, 8) uint8 (consecutive pairs: ``items`` pairs) of
8x8 crops of the real camera image (``skimage-data/camera.png``) at deterministic offsets, each crop
shifted by a small per-item brightness step (``i % 17 - 8``, clipped), so every pair's metrics differ.

The soak: ``python -m gpudiff run SRC --out soaked.zarr ...`` is started, and after a random wait in
``[a, b]`` seconds (``--kill-every a,b``, seeded by ``--seed``) it gets SIGKILL or SIGTERM (chosen at
random, seeded); then the same command is started again, for ``--duration`` seconds (or until a run
finishes by itself first). Then a last run of the same command resumes the store to completion.
Every exit code is recorded: SIGTERM must give 75, SIGKILL -9 (a segment that ended on its own gives
0). The peak RSS of each child is sampled from ``/proc/<pid>/status`` (VmHWM, else the highest VmRSS
seen) every 0.2 s; the finished items after each segment are counted from the store's status chunks.

Then the same command runs once uninterrupted into ``reference.zarr``. Checked (exit 1 on a
failure): every array of the two stores equal value for value (NaN == NaN), ``gpudiff status
--verify`` clean (exit 0) on the soaked store, every SIGTERM answered with 75, every SIGKILL with
-9, and the final resume exiting 0. Times and RSS are printed, never asserted.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def _data_dir() -> Path:
    for p in (os.environ.get("GPUDIFF_DATA"), ROOT.parent / "shared" / "data", ROOT / "shared" / "data"):
        if p and Path(p, "skimage-data", "camera.png").exists():
            return Path(p)
    raise SystemExit("soak: no shared data folder with skimage-data/camera.png")


def make_source(path: Path, items: int) -> None:
    """(items + 1, 8, 8) uint8 crops of the camera image, reused when already there."""
    import numpy as np
    import zarr
    from PIL import Image

    n = items + 1
    if (path / "zarr.json").exists():
        try:
            if zarr.open_array(str(path), mode="r").shape == (n, 8, 8):
                return
        except Exception:
            pass
    shutil.rmtree(path, ignore_errors=True)
    img = np.asarray(Image.open(_data_dir() / "skimage-data" / "camera.png").convert("L"))
    i = np.arange(n)
    ys = (i * 7919) % (img.shape[0] - 8)
    xs = (i * 104729) % (img.shape[1] - 8)
    off = np.arange(8)
    tiles = img[ys[:, None, None] + off[None, :, None], xs[:, None, None] + off[None, None, :]]
    tiles = np.clip(tiles.astype(np.int16) + ((i % 17) - 8)[:, None, None], 0, 255).astype(np.uint8)
    z = zarr.create_array(str(path), shape=tiles.shape, chunks=(4096, 8, 8), dtype="uint8")
    z[:] = tiles


class RssWatch(threading.Thread):
    """Samples a child's peak RSS (VmHWM, else the highest VmRSS) every 0.2 s until it ends."""

    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self.pid, self.peak_kb, self.done = pid, 0, threading.Event()

    def run(self):
        while not self.done.is_set():
            try:
                with open(f"/proc/{self.pid}/status") as f:
                    for line in f:
                        if line.startswith(("VmHWM:", "VmRSS:")):
                            self.peak_kb = max(self.peak_kb, int(line.split()[1]))
            except (OSError, ValueError):
                pass
            self.done.wait(0.2)


def items_done(store: Path, items: int, chunk: int) -> int:
    """Finished items, from the store's status chunk objects (one file per finished chunk)."""
    c = store / "status" / "c"
    if not c.is_dir():
        return 0
    return sum(min(chunk, items - int(f.name) * chunk) for f in c.iterdir()
               if f.name.isdigit() and int(f.name) * chunk < items)


def segment(cmd, store, items, chunk, kill_after=None, sig=None, log=None):
    t0 = time.monotonic()
    p = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=log or subprocess.DEVNULL)
    w = RssWatch(p.pid)
    w.start()
    killed = False
    try:
        p.wait(timeout=kill_after)
    except subprocess.TimeoutExpired:
        # one last sample right before the signal
        w.done.set(); w.join()
        try:
            with open(f"/proc/{p.pid}/status") as f:
                for line in f:
                    if line.startswith(("VmHWM:", "VmRSS:")):
                        w.peak_kb = max(w.peak_kb, int(line.split()[1]))
        except OSError:
            pass
        p.send_signal(sig)
        killed = True
        p.wait()
    w.done.set(); w.join()
    return {"signal": (signal.Signals(sig).name if killed else None), "rc": p.returncode,
            "seconds": round(time.monotonic() - t0, 2), "peak_rss_mb": round(w.peak_kb / 1024, 1),
            "items_done": items_done(store, items, chunk)}


def compare_stores(a: Path, b: Path) -> list[str]:
    import numpy as np
    from gpudiff.engine._store import ResultStore

    da, db = ResultStore.open(str(a)).read(), ResultStore.open(str(b)).read()
    bad = []
    if sorted(da) != sorted(db):
        bad.append(f"array names differ: {sorted(set(da) ^ set(db))}")
    for k in sorted(set(da) & set(db)):
        va, vb = np.asarray(da[k]), np.asarray(db[k])
        if va.shape != vb.shape:
            bad.append(f"{k}: shape {va.shape} vs {vb.shape}")
        elif va.dtype.kind in "fc":
            if not np.array_equal(va, vb, equal_nan=True):
                n = int((~((va == vb) | (np.isnan(va) & np.isnan(vb)))).sum())
                bad.append(f"{k}: {n} values differ")
        elif va.tolist() != vb.tolist():
            bad.append(f"{k}: values differ")
    return bad


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--items", type=int, default=100_000)
    ap.add_argument("--duration", type=float, default=600.0, help="seconds of kills (default 600)")
    ap.add_argument("--kill-every", default="2,6", help="a,b: seconds between kills, uniform (default 2,6)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--chunk", type=int, default=512)
    ap.add_argument("--metrics", default="manhattan,mse,histogram")
    ap.add_argument("--workdir", default="/tmp/gpudiff-soak")
    ap.add_argument("--json", dest="json_out")
    args = ap.parse_args(argv)
    a, b = (float(x) for x in args.kill_every.split(","))
    rng = random.Random(args.seed)
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    src, soaked, ref = work / "source.zarr", work / "soaked.zarr", work / "reference.zarr"
    make_source(src, args.items)
    for p in (soaked, ref):
        shutil.rmtree(p, ignore_errors=True)

    def cmd(out):
        return [sys.executable, "-m", "gpudiff", "run", str(src), "--out", str(out), "--chunk",
                str(args.chunk), "--metrics", args.metrics, "--backend", "numpy", "--no-progress"]

    started = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    print(f"soak: {args.items} items, chunk {args.chunk}, metrics {args.metrics}, kills every "
          f"{a}-{b} s for {args.duration} s, seed {args.seed}; {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cores, Python {platform.python_version()}; {started}", flush=True)
    log = open(work / "soak-stderr.log", "w")
    segs = []
    t_soak = time.monotonic()
    while time.monotonic() - t_soak < args.duration:
        wait = rng.uniform(a, b)
        sig = rng.choice([signal.SIGKILL, signal.SIGTERM])
        s = segment(cmd(soaked), soaked, args.items, args.chunk, wait, sig, log)
        segs.append(s)
        print(f"  segment {len(segs):3d}: {s['signal'] or 'ended'} after {s['seconds']:.2f} s -> rc "
              f"{s['rc']}, {s['items_done']} items done, peak RSS {s['peak_rss_mb']} MB", flush=True)
        if s["signal"] is None:
            break
    soak_s = time.monotonic() - t_soak
    final = segment(cmd(soaked), soaked, args.items, args.chunk, None, None, log)
    print(f"  final resume: rc {final['rc']} in {final['seconds']:.2f} s, {final['items_done']} items "
          f"done, peak RSS {final['peak_rss_mb']} MB", flush=True)
    refrun = segment(cmd(ref), ref, args.items, args.chunk, None, None, log)
    print(f"  uninterrupted reference: rc {refrun['rc']} in {refrun['seconds']:.2f} s, peak RSS "
          f"{refrun['peak_rss_mb']} MB", flush=True)
    log.close()

    diffs = compare_stores(soaked, ref)
    v = subprocess.run([sys.executable, "-m", "gpudiff", "status", "--verify", str(soaked)], cwd=ROOT,
                       capture_output=True, text=True)

    kills = [s for s in segs if s["signal"]]
    by = {n: [s for s in kills if s["signal"] == n] for n in ("SIGKILL", "SIGTERM")}
    rcs = {n: sorted({s["rc"] for s in ss}) for n, ss in by.items()}
    problems = []
    if any(s["rc"] != 75 for s in by["SIGTERM"]):
        problems.append(f"SIGTERM exit codes {rcs['SIGTERM']} (want 75)")
    if any(s["rc"] != -9 for s in by["SIGKILL"]):
        problems.append(f"SIGKILL exit codes {rcs['SIGKILL']} (want -9)")
    ended = [s for s in segs if not s["signal"]]
    if any(s["rc"] != 0 for s in ended):
        problems.append(f"a soak segment ended by itself with rc {[s['rc'] for s in ended]}")
    if final["rc"] != 0 or final["items_done"] != args.items:
        problems.append(f"final resume rc {final['rc']}, {final['items_done']} items done")
    if refrun["rc"] != 0:
        problems.append(f"reference run rc {refrun['rc']}")
    problems += [f"store differs: {d}" for d in diffs]
    if v.returncode != 0:
        problems.append(f"status --verify rc {v.returncode}: {(v.stdout + v.stderr).strip()[-500:]}")

    rss = [s["peak_rss_mb"] for s in segs + [final] if s["peak_rss_mb"]]
    progress = [s["items_done"] for s in segs]
    gains = [y - x for x, y in zip([0] + progress, progress)]
    print()
    print(f"| soak ({args.items} items of 8x8 uint8, chunk {args.chunk}, `{args.metrics}`) | value |")
    print("|---|---|")
    rows = [
        ("kills survived", f"{len(kills)} in {soak_s:.0f} s: {len(by['SIGKILL'])} SIGKILL, {len(by['SIGTERM'])} SIGTERM"),
        ("exit codes seen", f"SIGKILL -> {rcs['SIGKILL']}, SIGTERM -> {rcs['SIGTERM']}, final resume -> {final['rc']}"),
        ("segments", f"{len(segs)} in the soak (+1 final resume); {len(ended)} ended by themselves"),
        ("items done after the soak", f"{progress[-1] if progress else 0} / {args.items}; per segment "
         f"min {min(gains) if gains else 0}, median {sorted(gains)[len(gains) // 2] if gains else 0}, max {max(gains) if gains else 0}"),
        ("final resume", f"{final['seconds']:.1f} s to {final['items_done']} items"),
        ("uninterrupted reference", f"{refrun['seconds']:.1f} s"),
        ("soaked == reference (every array, NaN == NaN)", "yes" if not diffs else "NO: " + "; ".join(diffs)[:300]),
        ("`gpudiff status --verify` on the soaked store", "clean (exit 0)" if v.returncode == 0 else f"exit {v.returncode}"),
        ("peak RSS per run (MB): first / last / max / min", f"{rss[0]} / {rss[-1]} / {max(rss)} / {min(rss)}; reference {refrun['peak_rss_mb']}" if rss else "n/a"),
        ("result", "PASS" if not problems else "FAIL"),
    ]
    for k, val in rows:
        print(f"| {k} | {val} |")
    for pr in problems:
        print(f"soak: FAIL: {pr}", file=sys.stderr)
    if args.json_out:
        Path(args.json_out).write_text(json.dumps({
            "started": started, "args": vars(args), "machine": {"cpu": platform.processor() or platform.machine(),
                                                               "cores": os.cpu_count()},
            "segments": segs, "final": final, "reference": refrun, "soak_seconds": round(soak_s, 1),
            "store_differences": diffs, "verify_rc": v.returncode, "verify_output": v.stdout[-2000:],
            "problems": problems}, indent=1))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
