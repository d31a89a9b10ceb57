#!/usr/bin/env python3
"""Corrupt-frame and cut false alarms on every clean real clip, at native size and full length.

Usage::

    python benchmarks/clean_false_alarms.py [--json out.json] [--motion-search PX]

``corrupt_eval.py`` measures recall on downscaled, shortened clips; this measures what a user meets
first: ``gpudiff run CLIP --corrupt --cuts`` on the clips as they are. Every video, frame folder and
TIFF/GIF time-lapse of the shared data folder (``$GPUDIFF_DATA``, else ``../shared/data``) is read
through ``gpudiff.io.open_source`` and decided exactly as the run's events pass does
(features per frame block, :func:`detect_events`, then :func:`check_motion`). None of these clips has
a corrupted frame, so every corrupt flag is a false alarm; cut flags are listed (a few clips are
edited: a cut there is right, elsewhere it is a false alarm). The generated demo sequence (one
corrupted frame, 34, and a fast object) is scored too. The KL > 0.2 rule is shown beside.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import platform
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

from gpudiff.sequence._corrupt import EventOptions, check_motion, detect_events, kl_rule  # noqa: E402
from gpudiff.io import open_source  # noqa: E402
from gpudiff.engine._passes import _event_features  # noqa: E402

#: (name, path under the data folder); folders are frame folders.
CLIPS = [
    ("vtest", "opencv-samples/video/vtest.avi"),
    ("tree", "opencv-samples/video/tree.avi"),
    ("bgs-video", "bgslibrary-dataset/video.avi"),
    ("bgs-video02", "bgslibrary-dataset/video02.avi"),
    ("bgs-video03", "bgslibrary-dataset/video03.avi"),
    ("bgs-demo", "bgslibrary-dataset/demo.avi"),
    ("bgs-frames", "bgslibrary-dataset/frames"),
    ("cdnet-jitter", "cdnet2014-traffic-subset/input"),
    ("cockatoo", "imageio-standard/cockatoo.mp4"),
    ("realshort", "imageio-standard/realshort.mp4"),
    ("newtonscradle", "imageio-standard/newtonscradle.gif"),
    ("calcium-u16", "imageio-standard/calcium_imaging.tif"),
    ("stuck-u16", "pims-testdata/stuck.tif"),
    ("bulk-water-mov", "pims-testdata/bulk-water.mov"),
    ("tp-bulk-water", "trackpy-timelapse/bulk_water"),
    ("tp-brightfield", "trackpy-timelapse/brightfield"),
    ("tp-foam", "trackpy-timelapse/foam"),
]


def data_root() -> Path:
    env = os.environ.get("GPUDIFF_DATA")
    return Path(env) if env else REPO.parent / "shared" / "data"


def decide_source(src, opts: EventOptions):
    n = len(src)
    ff, cons, skip, bad = _event_features(src, 0, n, n, opts, "numpy")
    ev = check_motion(detect_events(ff, cons, skip, options=opts), src.read, options=opts)
    base = kl_rule([f.histogram for f in ff])
    return ev, base


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--motion-search", type=int, default=EventOptions().motion_search,
                    help="check_motion's search radius (0: without the motion check)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    opts = dataclasses.replace(EventOptions(), motion_search=args.motion_search)
    root = data_root()
    print(f"clean-clip false alarms  {datetime.datetime.now():%Y-%m-%d %H:%M}  "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores; motion_search {opts.motion_search}")
    print(f"{'clip':15s} {'frames':>6s} {'size':>11s} | {'corrupt':>7s} {'cuts':>5s} | {'KL rule':>7s} | "
          f"{'s':>5s}  flagged frames (corrupt; cut)")
    rows, tot = [], [0, 0, 0, 0]
    for name, rel in CLIPS:
        path = root / rel
        if not path.exists():
            print(f"{name:15s} missing ({path})")
            continue
        t0 = time.perf_counter()
        src = open_source(str(path), max_pixels=1 << 30)
        ev, base = decide_source(src, opts)
        took = time.perf_counter() - t0
        c, x = np.flatnonzero(ev["corrupt"]).tolist(), np.flatnonzero(ev["cut"]).tolist()
        shape = "x".join(str(v) for v in (src.frame_shape or ("?",))[:2])
        print(f"{name:15s} {len(src):6d} {shape:>11s} | {len(c):7d} {len(x):5d} | {int(base.sum()):7d} | "
              f"{took:5.1f}  {c[:8]}; {x[:8]}")
        rows.append({"clip": name, "frames": len(src), "corrupt": c, "cut": x, "kl_rule": int(base.sum()),
                     "motion_cleared": np.flatnonzero(ev["motion"]).tolist(), "seconds": took})
        tot = [a + b for a, b in zip(tot, [len(src), len(c), len(x), int(base.sum())])]
        src.close()
    print(f"{'all':15s} {tot[0]:6d} {'':>11s} | {tot[1]:7d} {tot[2]:5d} | {tot[3]:7d} |")

    from gpudiff.cli._demo import make_sample_sequence  # noqa: PLC0415

    frames = make_sample_sequence()
    n = len(frames)

    class Frames:
        def __len__(self):
            return n

        def read(self, i):
            return frames[i]

        def label(self, i):
            return f"demo[{i}]"

    ev, base = decide_source(Frames(), opts)
    c = np.flatnonzero(ev["corrupt"]).tolist()
    print(f"demo sequence (corrupted frame 34, a fast object in 18-25): corrupt flags {c}, "
          f"cuts {np.flatnonzero(ev['cut']).tolist()}; KL rule {np.flatnonzero(base).tolist()}")
    if args.json:
        args.json.write_text(json.dumps({"options": opts.to_dict(), "clips": rows, "demo_corrupt": c}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
