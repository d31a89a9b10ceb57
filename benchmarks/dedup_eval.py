"""Time-lapse keep/drop on the real sequences: what the defaults rest on, and how fast.

    python benchmarks/dedup_eval.py [--data ../shared/data]

For each sequence it prints the frames kept by each rule against the ground truth where there is
one (tree.avi: distinct frames; newtonscradle.gif: non-adjacent repeats; stuck.tif: noise only),
the changed-pixel fractions that place ``min_changed`` (largest on noise-only pairs, smallest on
real changes), and the parallel driver's speed against the sequential definition (one thread).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from peers import cpu_model_and_usable_cores  # noqa: E402

from gpudiff.engine import dedup  # noqa: E402
from gpudiff.sequence._dedup import DedupOptions, Deduplicator, change_score  # noqa: E402
from gpudiff.io import open_source  # noqa: E402


def _frames(src, limit=None):
    n = len(src) if limit is None else min(limit, len(src))
    return [src.read(i) for i in range(n)]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    args = p.parse_args(argv)
    data = Path(args.data)
    model, cores = cpu_model_and_usable_cores()
    print(f"gpudiff dedup evaluation  {time.strftime('%Y-%m-%d %H:%M')}  cpu: {model} ({cores} usable cores)")

    seqs = {
        "tree.avi (cinepak, exact repeats)": data / "opencv-samples/video/tree.avi",
        "newtonscradle.gif (periodic)": data / "imageio-standard/newtonscradle.gif",
        "stuck.tif (uint16, noise only)": data / "pims-testdata/stuck.tif",
        "bulk_water (microscopy, RGBA PNG)": data / "trackpy-timelapse/bulk_water",
        "calcium_imaging.tif (uint16 time-lapse)": data / "imageio-standard/calcium_imaging.tif",
        "vtest.avi (pedestrians, 200 frames)": data / "opencv-samples/video/vtest.avi",
    }
    rules = {
        "pixels (default)": DedupOptions(backend="numpy"),
        "blocks (mpdecimate)": DedupOptions(rule="blocks", backend="numpy"),
        "pixels, light=histogram": DedupOptions(light="histogram", backend="numpy"),
    }
    print("\nframes kept (of N) by rule; 'truth' where the data has one")
    print(f"{'sequence':42s} {'N':>5s} {'truth':>6s} " + " ".join(f"{r:>24s}" for r in rules))
    noise_max = []
    change_min = []
    for name, path in seqs.items():
        if not path.exists():
            print(f"{name:42s} missing")
            continue
        src = open_source(str(path))
        frames = _frames(src, 200)
        truth = "-"
        if "tree" in name:
            truth = str(1 + sum(not np.array_equal(frames[i], frames[i - 1]) for i in range(1, len(frames))))
        if "stuck" in name:
            truth = "1"
        if "newton" in name:
            truth = "34"  # 36 frames, 2 exact non-adjacent repeats
        row = []
        for opts in rules.values():
            judge = Deduplicator(opts, load=frames.__getitem__)
            row.append(sum(judge.decide(i, f).keep for i, f in enumerate(frames)))
        print(f"{name:42s} {len(frames):5d} {truth:>6s} " + " ".join(f"{k:24d}" for k in row))
        # the changed fraction of consecutive pairs
        fr = [change_score(frames[i - 1], frames[i], options=rules["pixels (default)"]).statistic
              for i in range(1, len(frames))]
        fr = np.array(fr)
        if "stuck" in name:
            noise_max.append((name, float(fr.max())))
        elif "tree" in name:
            change_min.append((name, float(fr[fr > 0].min())))
        elif "newton" in name:
            change_min.append((name, float(np.sort(fr)[0])))
    print("\nwhere min_changed (default 0.001) sits:")
    for name, v in noise_max:
        print(f"  largest changed fraction between noise-only frames, {name}: {v:.5f}")
    for name, v in change_min:
        print(f"  smallest changed fraction of a real change, {name}: {v:.5f}")

    # speed: the parallel driver against the sequential walk (decode included in both)
    print("\nspeed (decode included), frames/s")
    for name in ("tree.avi (cinepak, exact repeats)", "vtest.avi (pedestrians, 200 frames)"):
        path = seqs[name]
        src = open_source(str(path))
        n = min(len(src), 200)
        t0 = time.perf_counter()
        judge = Deduplicator(DedupOptions(backend="numpy"), load=src.read)
        seq = [judge.decide(i, src.read(i)).keep for i in range(n)]
        t_seq = time.perf_counter() - t0
        t0 = time.perf_counter()
        r = dedup(src, options=DedupOptions(backend="numpy"), stop=n, workers=os.cpu_count())
        t_par = time.perf_counter() - t0
        assert r.keep.tolist() == seq
        print(f"  {name:42s} sequential {n / t_seq:7.1f}  parallel {n / t_par:7.1f}  ratio {t_seq / t_par:4.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
