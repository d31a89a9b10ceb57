#!/usr/bin/env python3
"""Dense optical flow against ground truth: gpudiff's pyramidal iterative Lucas-Kanade beside
scikit-image's ``optical_flow_ilk`` and OpenCV's Farneback, on the Middlebury 2014 "Motorcycle" stereo
pair (``skimage-data/motorcycle_*``), where the horizontal motion is the disparity.

Usage::

    python benchmarks/flow_eval.py [--scales 4 2 1] [--repeats 3] [--backend numpy|cupy]

Ground truth: ``motorcycle_disp.npz`` is the left image's disparity, ``right_x = left_x - disp`` (inf:
unknown). With ``reference = left`` and ``moving = right`` the true flow is ``(v, u) = (0, -disp)``.
At scale ``s`` the grey images (mean of R, G, B) are averaged over ``s x s`` blocks (the width is cropped
to a multiple of ``s``) and the disparity is the block mean divided by ``s``, unknown where any pixel of
the block is unknown.

Reported per method, over the pixels with ground truth: EPE (mean endpoint error
``|flow - truth|``, pixels of that scale), the share of pixels with EPE > 1 px and > 3 px, and time
(median of ``--repeats`` calls after one warm-up; on CuPy the stream is synchronised inside the
timed call, inputs already on the device). ``EPE ratio`` = method EPE / gpudiff-default EPE (< 1: the
method is more accurate); ``time ratio`` = method time / gpudiff-default time (> 1: gpudiff is faster).
Nothing is asserted.

Peers and their settings:

* ``skimage ilk``: ``skimage.registration.optical_flow_ilk(left, right, radius=7, num_warp=10)``
  (its defaults; the same algorithm and pyramid, gpudiff's default upsampling is the same too).
* ``cv2 Farneback``: ``cv2.calcOpticalFlowFarneback(left_u8, right_u8, None, pyr_scale=0.5, levels=L,
  winsize, iterations, poly_n, poly_sigma, flags=0)`` with two settings: OpenCV's sample values
  (samples/python/opt_flow.py: winsize 15 = gpudiff's window, iterations 3, poly_n 5, poly_sigma 1.2)
  and a setting tuned here for large motion (winsize 31, iterations 10, poly_n 7, poly_sigma 1.5).
  ``L`` = gpudiff's automatic level count minus one (OpenCV does not count the full-size level), but
  OpenCV stops its pyramid before a side drops below 32 px, so it gets at most 1/8 of the full size
  (62x92 px) where gpudiff/scikit-image go down to 1/16 (32x47 px). Its flow is ``(dx, dy)`` with
  ``prev(y, x) ~ next(y + dy, x + dx)``, i.e. gpudiff's ``(v, u) = (dy, dx)``.

The ``levels=k`` rows show what the pyramid does: the largest disparity (60 px at full size) must be
within about one window radius at the coarsest level for Lucas-Kanade to converge.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # benchmark the checkout, installed or not

import numpy as np  # noqa: E402


def data_dir() -> Path:
    cands = ([Path(os.environ["GPUDIFF_DATA"])] if os.environ.get("GPUDIFF_DATA") else []) + [
        REPO.parent / "shared" / "data",
        REPO / "shared" / "data",
    ]
    for c in cands:
        if (c / "skimage-data" / "motorcycle_disp.npz").is_file():
            return c
    sys.exit(f"flow_eval.py: motorcycle data not found in {', '.join(map(str, cands))}: set GPUDIFF_DATA")


def load_motorcycle(data: Path, scale: int):
    """(left, right, true_u, valid) at 1/scale: grey float32 in [0, 255], block-averaged."""
    import cv2

    def grey(name):
        img = cv2.imread(str(data / "skimage-data" / name), cv2.IMREAD_COLOR)
        if img is None:
            sys.exit(f"flow_eval.py: could not read {name}")
        return img.astype(np.float32).mean(axis=2)

    def blocks(a, s):
        h, w = (a.shape[0] // s) * s, (a.shape[1] // s) * s
        return a[:h, :w].reshape(h // s, s, w // s, s).mean(axis=(1, 3))

    left, right = grey("motorcycle_left.png"), grey("motorcycle_right.png")
    disp = np.load(data / "skimage-data" / "motorcycle_disp.npz")["arr_0"].astype(np.float64)
    disp_s = blocks(disp, scale) / scale  # inf anywhere in a block -> inf
    valid = np.isfinite(disp_s)
    true_u = np.where(valid, -disp_s, 0.0)
    return (
        np.ascontiguousarray(blocks(left, scale), dtype=np.float32),
        np.ascontiguousarray(blocks(right, scale), dtype=np.float32),
        true_u,
        valid,
    )


def epe_stats(flow_vu, true_u, valid):
    v = np.asarray(flow_vu[0], dtype=np.float64)[valid]
    u = np.asarray(flow_vu[1], dtype=np.float64)[valid]
    err = np.hypot(v, u - true_u[valid])
    return float(err.mean()), float((err > 1).mean() * 100), float((err > 3).mean() * 100)


def farneback(prev_u8, next_u8, levels, winsize, iterations, poly_n, poly_sigma):
    """A call of OpenCV's Farneback returning gpudiff's (v, u) = (dy, dx) layout."""
    import cv2

    def run():
        f = cv2.calcOpticalFlowFarneback(
            prev_u8, next_u8, None, 0.5, levels, winsize, iterations, poly_n, poly_sigma, 0
        )
        return np.moveaxis(f[..., ::-1], -1, 0)

    return run


def timed(fn, repeats):
    out = fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return out, statistics.median(times)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scales", type=int, nargs="+", default=[4, 2, 1], help="downscale factors (1 = full)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--backend", default="numpy", choices=["numpy", "cupy"])
    args = ap.parse_args(argv)

    import cv2
    import skimage
    from skimage.registration import optical_flow_ilk

    from gpudiff.backend import resolve_backend, to_host
    from gpudiff.sequence._flow import _pyramid_shapes, optical_flow_lk

    xp = resolve_backend(args.backend)
    sync = (lambda: xp.cuda.get_current_stream().synchronize()) if xp is not np else (lambda: None)
    data = data_dir()
    print(
        f"# flow_eval  {time.strftime('%Y-%m-%d %H:%M')}  {platform.processor() or platform.machine()}  "
        f"{os.cpu_count()} cores  load {os.getloadavg()[0]:.2f}  backend {args.backend}  "
        f"numpy {np.__version__}  scikit-image {skimage.__version__}  opencv {cv2.__version__}"
    )
    for scale in args.scales:
        left, right, true_u, valid = load_motorcycle(data, scale)
        n_levels = len(_pyramid_shapes(left.shape, None))
        print(
            f"\n## motorcycle 1/{scale}: {left.shape[1]}x{left.shape[0]}, {int(valid.sum())} px with truth, "
            f"|disp| up to {np.abs(true_u[valid]).max():.1f} px "
            f"(median {np.median(np.abs(true_u[valid])):.1f}); "
            f"automatic pyramid: {n_levels} levels, coarsest {_pyramid_shapes(left.shape, None)[-1]}"
        )
        dl, dr = xp.asarray(left), xp.asarray(right)
        l8 = np.clip(np.round(left), 0, 255).astype(np.uint8)
        r8 = np.clip(np.round(right), 0, 255).astype(np.uint8)

        def ours(**kw):
            def run():
                f = optical_flow_lk(dl, dr, **kw)
                sync()
                return f

            return run

        rows = [
            ("gpudiff lk (r=7, warp=10, auto levels)", ours()),
            ("gpudiff lk num_warp=3", ours(num_warp=3)),
            ("gpudiff lk gaussian", ours(gaussian=True)),
            ("gpudiff lk prefilter", ours(prefilter=True)),
        ]
        rows += [(f"gpudiff lk levels={k}", ours(levels=k)) for k in range(1, n_levels)]
        rows += [
            (
                "skimage optical_flow_ilk (r=7, warp=10)",
                lambda: optical_flow_ilk(left, right, radius=7, num_warp=10),
            ),
            (
                f"cv2 Farneback sample (levels={n_levels - 1}, win=15)",
                farneback(l8, r8, n_levels - 1, 15, 3, 5, 1.2),
            ),
            (
                f"cv2 Farneback tuned (levels={n_levels - 1}, win=31)",
                farneback(l8, r8, n_levels - 1, 31, 10, 7, 1.5),
            ),
        ]
        results = []
        for name, fn in rows:
            flow, t = timed(fn, args.repeats)
            results.append((name, *epe_stats(to_host(flow), true_u, valid), t))
        base_epe, base_t = results[0][1], results[0][4]
        print("| method | EPE px | >1px % | >3px % | time ms | EPE ratio | time ratio |")
        print("|---|---:|---:|---:|---:|---:|---:|")
        for name, epe, p1, p3, t in results:
            print(
                f"| {name} | {epe:.3f} | {p1:.1f} | {p3:.1f} | {t * 1e3:.1f} "
                f"| {epe / base_epe:.2f} | {t / base_t:.2f} |"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
