#!/usr/bin/env python3
"""gpudiff's background model beside OpenCV's MOG2 and KNN on CDnet 2014 cameraJitter/traffic.

Usage::

    python benchmarks/background_eval.py [--sweep] [--repeat 3] [--backend numpy|cupy] [--json out.json]

The same 101 frames (in000950.jpg .. in001050.jpg, 320x240 colour: all the frames of the subset,
and the only sequence under ``../shared/data`` with per-pixel masks) go through

* gpudiff ``background_subtract`` with the default ``BackgroundOptions`` (align off), and with
  ``align=True`` (each frame moved onto the first by phase correlation, masks carried back to
  the frame's own grid for scoring); then with ``shadows=True``, ``model='mixture'`` and
  ``model='samples'`` (each one change from the defaults);
* ``cv2.createBackgroundSubtractorMOG2()`` and ``cv2.createBackgroundSubtractorKNN()`` with
  their default parameters (``detectShadows=True``), and each with ``detectShadows=False``, fed
  BGR frames as OpenCV expects.

Scoring (CDnet rules, changedetection.net): ground truth 255 = foreground, 0 and 50 (shadow) =
background, 85 (outside ROI) and 170 (unknown) not counted, pixels outside ROI.bmp not counted
(here ROI.bmp is all 255, so nothing is left out; it is 352 wide against 320-wide frames and is
used only when it excludes nothing). Predictions: gpudiff's mask; OpenCV's 255 (its shadow label
127 counts as background, as CDnet counts shadows). True/false positives and negatives are summed
over all frames, then precision, recall and F = 2PR / (P + R), as CDnet's per-video numbers.
Shadow FP: the share of the pixels CDnet labels shadow (50, inside the ROI) that a method calls
foreground (lower is better; shadows count as background).

Time: each method runs over the whole sequence ``--repeat`` times; ms/frame = median total / N
(frames are decoded beforehand and not timed; gpudiff's time includes moving each mask to the
host; MOG2/KNN start from a fresh model each time, as gpudiff does). Ratios: F(gpudiff) /
F(peer) (> 1: gpudiff more accurate) and ms(peer) / ms(gpudiff) (> 1: gpudiff faster).
Times are printed, never asserted.

``--sweep`` also prints F for one option changed at a time around the defaults, with and
without alignment, then F and the shadow FP share for the shadow test's and the other models'
options: the measurement behind the defaults documented in ``BackgroundOptions``.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # evaluate the checkout, installed or not

import numpy as np  # noqa: E402

FOLDER = "cdnet2014-traffic-subset"
FIRST, LAST = 950, 1050


def find_data_dir() -> Path:
    cands = []
    if os.environ.get("GPUDIFF_DATA"):
        cands.append(Path(os.environ["GPUDIFF_DATA"]))
    cands += [REPO.parent / "shared" / "data", REPO / "shared" / "data"]
    for c in cands:
        if (c / FOLDER / "input").is_dir():
            return c / FOLDER
    sys.exit(f"CDnet subset not found under {', '.join(map(str, cands))}: set GPUDIFF_DATA")


def load(folder: Path):
    import cv2

    bgr = [cv2.imread(str(folder / "input" / f"in{i:06d}.jpg"), cv2.IMREAD_COLOR)
           for i in range(FIRST, LAST + 1)]
    gt = np.stack([cv2.imread(str(folder / "groundtruth" / f"gt{i:06d}.png"), cv2.IMREAD_GRAYSCALE)
                   for i in range(FIRST, LAST + 1)])
    roi = cv2.imread(str(folder / "ROI.bmp"), cv2.IMREAD_GRAYSCALE)
    if roi is not None and roi.shape == gt.shape[1:]:
        inside = roi > 0
    elif roi is None or (roi == 255).all():
        inside = np.ones(gt.shape[1:], dtype=bool)
    else:
        sys.exit(f"ROI.bmp {roi.shape} does not match the frames {gt.shape[1:]} and excludes pixels")
    rgb = [cv2.cvtColor(f, cv2.COLOR_BGR2RGB) for f in bgr]
    return bgr, rgb, gt, inside


def scores(masks, gt, inside) -> dict:
    from gpudiff.sequence import score_foreground  # noqa: PLC0415  (the tests' scorer: one definition)

    return score_foreground(masks, gt, roi=inside).as_dict()


def timed(fn, repeat: int):
    """(result of the last run, median seconds, min seconds)."""
    times, out = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return out, statistics.median(times), min(times)


def run_gpudiff(frames, options, xp):
    from gpudiff.sequence._background import background_subtract

    if xp is not np:
        frames = [xp.asarray(f) for f in frames]

    def go():
        masks, _ = background_subtract(frames, options=options, xp=xp)  # masks come back to the host
        return masks

    return go


def run_opencv(frames, kind, shadows: bool = True):
    import cv2

    def go():
        if kind == "MOG2":
            sub = cv2.createBackgroundSubtractorMOG2(detectShadows=shadows)
        else:
            sub = cv2.createBackgroundSubtractorKNN(detectShadows=shadows)
        return np.stack([sub.apply(f) == 255 for f in frames])  # 127 = shadow -> background

    return go


def shadow_fp(masks, gt, inside) -> float:
    """Share of CDnet's shadow pixels (50, inside the ROI) called foreground."""
    shadow = (gt == 50) & inside
    n = int(np.count_nonzero(shadow))
    return float(np.count_nonzero(masks & shadow)) / n if n else 0.0


def machine_info(backend: str, xp) -> dict:
    import cv2

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from peers import cpu_model_and_usable_cores  # noqa: PLC0415

    model, _ = cpu_model_and_usable_cores()
    info = {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "cpu": model, "cores": os.cpu_count(), "python": platform.python_version(),
        "numpy": np.__version__, "opencv": cv2.__version__, "opencv_threads": cv2.getNumThreads(),
        "backend": backend,
        "load_average": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
    }
    if backend == "cupy":
        from gpudiff.backend import device_name

        info["gpu"] = device_name(xp)
    return info


SWEEP = {
    "k": (2.5, 3.0, 4.0, 4.5),
    "min_std": (0.02, 0.03, 0.05, 0.08),
    "learning_rate": (0.01, 0.02, 0.1, 0.2),
    "init_frames": (1, 5, 10, 30),
    "cleanup_radius": (0, 1, 3),
    "color": ("gray",),
    "foreground_learning_rate": (0.005, 0.02),
    "upsample_factor": (4,),
}

# the shadow test and the other models: (label, options changed from the defaults)
SWEEP_MODELS = [
    ("shadows", {"shadows": True}),
    ("shadows, ratio (0.4, 0.95)", {"shadows": True, "shadow_ratio": (0.4, 0.95)}),
    ("shadows, ratio (0.6, 0.95)", {"shadows": True, "shadow_ratio": (0.6, 0.95)}),
    ("shadows, ratio (0.5, 1.0)", {"shadows": True, "shadow_ratio": (0.5, 1.0)}),
    ("shadows, chroma 0.05", {"shadows": True, "shadow_chroma": 0.05}),
    ("shadows, chroma 0.2", {"shadows": True, "shadow_chroma": 0.2}),
    ("mixture", {"model": "mixture"}),
    ("mixture, components 2", {"model": "mixture", "components": 2}),
    ("mixture, components 5", {"model": "mixture", "components": 5}),
    ("mixture, k 2.5", {"model": "mixture", "k": 2.5}),
    ("mixture, k 4", {"model": "mixture", "k": 4.0}),
    ("mixture, weight_learning_rate 0.002", {"model": "mixture", "weight_learning_rate": 0.002}),
    ("mixture, weight_learning_rate 0.01", {"model": "mixture", "weight_learning_rate": 0.01}),
    ("mixture, background_ratio 0.8", {"model": "mixture", "background_ratio": 0.8}),
    ("mixture, background_ratio 0.95", {"model": "mixture", "background_ratio": 0.95}),
    ("mixture + shadows", {"model": "mixture", "shadows": True}),
    ("samples", {"model": "samples"}),
    ("samples, sample_radius 0.08", {"model": "samples", "sample_radius": 0.08}),
    ("samples, sample_radius 0.2", {"model": "samples", "sample_radius": 0.2}),
    ("samples, min_matches 2", {"model": "samples", "min_matches": 2}),
    ("samples, min_matches 3", {"model": "samples", "min_matches": 3}),
    ("samples, subsampling 2", {"model": "samples", "subsampling": 2}),
    ("samples, samples 10", {"model": "samples", "samples": 10}),
    ("samples, subsampling 16", {"model": "samples", "subsampling": 16}),
    ("samples + shadows", {"model": "samples", "shadows": True}),
]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=3, help="timed runs per method (median reported)")
    ap.add_argument("--backend", choices=("numpy", "cupy"), default="numpy")
    ap.add_argument("--sweep", action="store_true", help="also sweep each option around the defaults")
    ap.add_argument("--json", type=Path, help="write the results here too")
    args = ap.parse_args(argv)

    from gpudiff.backend import resolve_backend
    from gpudiff.sequence._background import BackgroundOptions

    xp = resolve_backend(args.backend)
    bgr, rgb, gt, inside = load(find_data_dir())
    n = len(rgb)
    info = machine_info(args.backend, xp)
    print("# " + ", ".join(f"{k}={v}" for k, v in info.items()))
    h, w = rgb[0].shape[:2]
    print(f"# CDnet 2014 cameraJitter/traffic, frames {FIRST}-{LAST} ({n} frames, {w}x{h})")

    base = BackgroundOptions()
    rep = dataclasses.replace
    methods = [
        ("gpudiff", run_gpudiff(rgb, base, xp)),
        ("gpudiff align", run_gpudiff(rgb, rep(base, align=True), xp)),
        ("gpudiff shadows", run_gpudiff(rgb, rep(base, shadows=True), xp)),
        ("gpudiff align shadows", run_gpudiff(rgb, rep(base, align=True, shadows=True), xp)),
        ("gpudiff mixture", run_gpudiff(rgb, rep(base, model="mixture"), xp)),
        ("gpudiff mixture align", run_gpudiff(rgb, rep(base, model="mixture", align=True), xp)),
        ("gpudiff samples", run_gpudiff(rgb, rep(base, model="samples"), xp)),
        ("gpudiff samples align", run_gpudiff(rgb, rep(base, model="samples", align=True), xp)),
        ("OpenCV MOG2", run_opencv(bgr, "MOG2")),
        ("OpenCV MOG2 no shadows", run_opencv(bgr, "MOG2", shadows=False)),
        ("OpenCV KNN", run_opencv(bgr, "KNN")),
        ("OpenCV KNN no shadows", run_opencv(bgr, "KNN", shadows=False)),
    ]
    rows = []
    for name, go in methods:
        go()  # warm-up (imports, caches, CUDA/cupy kernels)
        masks, med, mn = timed(go, args.repeat)
        s = scores(masks, gt, inside)
        rows.append({"method": name, **s, "shadow_fp": shadow_fp(masks, gt, inside),
                     "ms_per_frame": 1e3 * med / n, "ms_per_frame_min": 1e3 * mn / n})

    gd = {r["method"]: r for r in rows if r["method"].startswith("gpudiff")}
    print(f"# gpudiff options: {base}")
    print(f"# shadow FP = share of the {int(np.count_nonzero((gt == 50) & inside))} CDnet shadow "
          "pixels (50) called foreground")
    print()
    print("| method | precision | recall | F | shadow FP | ms/frame (min) | F gpudiff/peer | F align/peer "
          "| speed gpudiff (peer/gpudiff ms) | speed align |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        peer = r["method"] not in gd
        cells = ["", "", "", ""]
        if peer:
            cells = [
                f"{gd['gpudiff']['f_measure'] / r['f_measure']:.2f}",
                f"{gd['gpudiff align']['f_measure'] / r['f_measure']:.2f}",
                f"{r['ms_per_frame'] / gd['gpudiff']['ms_per_frame']:.2f}",
                f"{r['ms_per_frame'] / gd['gpudiff align']['ms_per_frame']:.2f}",
            ]
        print(f"| {r['method']} | {r['precision']:.3f} | {r['recall']:.3f} | {r['f_measure']:.3f} | "
              f"{r['shadow_fp']:.3f} | {r['ms_per_frame']:.2f} ({r['ms_per_frame_min']:.2f}) | "
              + " | ".join(cells) + " |")

    sweep = []
    if args.sweep:
        from gpudiff.sequence._background import background_subtract

        print()
        print("Sweep: one option changed at a time from the defaults (F-measure, all 101 frames)")
        print()
        print("| option | value | F | F align |")
        print("|---|---|---:|---:|")
        cases = [("(defaults)", None)] + [(k, v) for k, vs in SWEEP.items() for v in vs]
        for key, value in cases:
            opts = base if value is None else dataclasses.replace(base, **{key: value})
            fs = []
            for align in (False, True):
                masks, _ = background_subtract(rgb, options=dataclasses.replace(opts, align=align), xp=xp)
                fs.append(scores(masks, gt, inside)["f_measure"])
            shown = "" if value is None else repr(value)
            print(f"| {key} | {shown} | {fs[0]:.3f} | {fs[1]:.3f} |", flush=True)
            sweep.append({"option": key, "value": value, "f": fs[0], "f_align": fs[1]})

        print()
        print("Shadows and models: options changed from the defaults (F, shadow FP share)")
        print()
        print("| options | F | shadow FP | F align | shadow FP align |")
        print("|---|---:|---:|---:|---:|")
        for label, changes in SWEEP_MODELS:
            cells = []
            for align in (False, True):
                opts = dataclasses.replace(base, align=align, **changes)
                masks, _ = background_subtract(rgb, options=opts, xp=xp)
                cells += [scores(masks, gt, inside)["f_measure"], shadow_fp(masks, gt, inside)]
            print(f"| {label} | {cells[0]:.3f} | {cells[1]:.3f} | {cells[2]:.3f} | {cells[3]:.3f} |",
                  flush=True)
            sweep.append({"option": label, "value": changes, "f": cells[0], "shadow_fp": cells[1],
                          "f_align": cells[2], "shadow_fp_align": cells[3]})

    if args.json:
        args.json.write_text(json.dumps({"machine": info, "options": base.to_dict(), "rows": rows,
                                         "sweep": sweep}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
