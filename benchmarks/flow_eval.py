#!/usr/bin/env python3
"""Dense optical flow against ground truth: gpudiff's flow beside scikit-image's and OpenCV's, on every
real pair with ground truth in the shared data folder and on real photographs warped by known fields,
all methods on the same inputs in one run.

Usage::

    python benchmarks/flow_eval.py [--quick] [--cases PATTERN ...] [--list] [--scales 4 2 1]
                                   [--repeats 3] [--baseline lk|tvl1] [--backend numpy|cupy]

``--cases`` takes case names or shell patterns (``'zoom-*'``, ``'*/4'``); ``--list`` prints the names.
Default cases: Motorcycle at every ``--scales`` (4 2 1), Aloe and graffiti at 1/4 and 1/2, the
FlyingChairs crop, and the three warps of astronaut, chelsea and coffee (17 cases, about 3 minutes on
2 idle cores with 3 repeats). ``--quick``: Motorcycle, Aloe and graffiti at 1/4, the FlyingChairs crop
and the three warps of chelsea (7 cases), ``--repeats 1`` (about 20 s on 2 cores). ``aloe/1`` and
``graf/1`` exist but run only when named.

Cases and their ground truth
----------------------------
Every image is made grey as the mean of R, G and B (float, [0, 255]); at scale ``s`` it is averaged over
``s x s`` blocks (the size cropped to a multiple of ``s``). The truth is a flow ``(v, u)`` on the
reference's grid with ``reference[r, c] ~ moving[r + v, c + u]``. Scored pixels (``valid``): those with
truth whose match ``(r + v, c + u)`` lies inside the frame.

* ``motorcycle/s`` (s = 4, 2, 1; Middlebury 2014 stereo, ``skimage-data/motorcycle_*``): reference =
  left, moving = right; ``motorcycle_disp.npz`` is the left disparity, ``right_x = left_x - disp`` (inf:
  unknown), so the truth is ``(0, -disp)``. At scale ``s`` the disparity is the block mean / ``s``,
  unknown where any pixel of the block is. Up to 60 px at full size (741x500).
* ``aloe/s`` (s = 4, 2; 1 on request; Middlebury 2006 "Aloe", ``opencv-samples/pairs/aloe*``, full size
  1282x1110): reference = aloeL, moving = aloeR, truth ``(0, -aloeGT)``, 0 = unknown, scaled like the
  Motorcycle's. The scale of aloeGT.png is 1 (value = disparity in full-size pixels, 43-211): the
  README says "value = disparity", OpenCV's ``ximgproc::readGT`` reads a one-channel Middlebury PNG the
  same way (x16 for its fixed point), and the photometric check decides it: warping R by ``s * GT``
  gives a mean absolute difference of 7.8 grey levels for s = 1 against 30-32 for s = 0.25, 0.5 and 2.
  The disparities are whole pixels, so the truth itself carries up to 0.5 px of rounding at full size.
* ``graf/s`` (s = 4, 2; 1 on request; Oxford VGG "graffiti", ``opencv-samples/pairs/graf1.png``,
  ``graf3.png``, ``H1to3p.xml``, 800x640): a planar wall seen from two viewpoints; reference = graf1,
  moving = graf3, truth ``H(x) - x`` with the homography ``H1to3p`` (graf1 pixel -> graf3 pixel,
  0-based: that origin gives the lowest warp error, 16.9 grey levels against 18.7 for 1-based), taken at
  the block centres of scale ``s``. Mean motion 108 px, up to 286 px at full size: the hard case.
* ``chairs`` (FlyingChairs crop ``mmflow-flow-fixtures/00001_*``, 50x50): reference = 00001_img1.ppm,
  moving = 00001_img2.ppm, truth = ``00001_flow.flo`` (Middlebury .flo: float32 magic 202021.25, int32
  width, height, then float32 ``(u, v)`` interleaved row by row), read as ``(v, u) = (flo[..., 1],
  flo[..., 0])`` on img1's grid (FlyingChairs' forward flow; warp check: 4.66 -> 2.20 grey levels, the
  reversed sign 7.83; img2 is a bilinear resampling of img1, so sampling img1 instead gives 0.12 on the
  smooth part). The chair moves by up to 12.5 px but those pixels leave the 50x50 crop, so the scored
  motion is at most 1.6 px: a small-motion case with textureless patches. The FlyingThings3D crop
  (``0000000-*``) is left out: neither of its flows explains its pair (warp error 10.3 -> 9.7-10.3
  grey levels in every direction and sign; the backward flow is at most 0.4 px where the forward one
  reaches 19 px).
* Not used: ``skimage-registration-shifts`` (a known translation, but two thirds of each image is a
  masked zero frame that does not move while the content moves by 75-130 px inside it: a test of
  masked registration, not of a flow field), RubberWhale and Basketball (no ground truth in the folder).
* Warped photographs ``zoom-IMG``, ``rotate-IMG``, ``band-IMG`` for IMG = astronaut (512x512), chelsea
  (451x300), coffee (600x400) from ``skimage-data``: the reference is the photograph without a margin of
  44 px on each side (so the moving image shows real content where the motion brings new pixels in),
  the moving image is ``moving(y) = source(T^-1(y) + margin)`` sampled by
  ``scipy.ndimage.map_coordinates`` (cubic spline, float64, clipped to [0, 255]) with the exact inverse
  of a smooth invertible map ``T`` on the reference's grid, so ``moving(T(x)) = reference(x)`` and the
  truth is ``T(x) - x`` (pixels with ``T(x)`` outside the frame not scored):

  - ``zoom``: forward motion, ``T(x) = p + k (x - p)`` about ``p = (0.4 H, 0.6 W)`` (off the centre),
    ``k - 1 = 36 px / (distance from p to its farthest corner)``: 12-17 px at the nearest border,
    36 px at the farthest corner;
  - ``rotate``: a rotation by 3 degrees about the centre plus a translation ``(v, u) = (8, -12)`` px:
    up to about 30 px at the corners;
  - ``band``: ``rotate`` after a horizontal band of the source (the reference's rows 45 %-65 %, the
    whole width) is replaced by its Gaussian blur (sigma 8): a textureless region that moves with the
    scene, so the truth is exact and a method must fill the flow in; the table adds the EPE inside the
    band (``band EPE``).

Each case's heading checks its truth: the mean ``|reference - moving(x + truth)|`` over the scored
pixels (bilinear), beside the same with zero flow (interpolation keeps the first at 1-2 grey levels on
the warps; occlusions, lighting and sensor noise at 6-17 on the real pairs).

Reported per method: EPE (mean endpoint error ``|flow - truth|`` over the scored pixels, in pixels of
that case), the share of pixels with EPE > 1 px and > 3 px (KITTI's outlier measure uses 3 px), and time
(median of ``--repeats`` calls after one warm-up; on CuPy the stream is synchronised inside the timed
call, inputs already on the device). ``EPE ratio`` = method EPE / baseline EPE (< 1: the method is more
accurate), ``time ratio`` = method time / baseline time (> 1: the baseline is faster); the baseline is
``gpudiff lk``, the flow before TV-L1 (``--baseline tvl1`` for today's default of ``gpudiff run --flow``). A final table gives,
per method, the mean EPE and >3 px share over the cases it ran (each in the pixels of its own case),
the number of cases where it has the lowest EPE (within 0.1 % of the lowest counts too, so a port and
its original both score), the median time ratio and the total time.
Nothing is asserted.

Methods and their settings (same images: float32 in [0, 1] for gpudiff and scikit-image, the same
rounded to uint8 for OpenCV):

* ``gpudiff lk``: ``gpudiff.sequence.optical_flow_lk(ref, mov)``, its defaults (radius 7, num_warp 10,
  automatic pyramid levels, box window, no prefilter, float32).
* ``gpudiff tvl1``: ``gpudiff.sequence.optical_flow_tvl1(ref, mov)``, its defaults (attachment
  30, num_warp 10; scikit-image's are 15 and 5).
* ``gpudiff dis PRESET``: ``gpudiff.sequence.optical_flow_dis(ref, mov, preset=PRESET)`` for
  ultrafast, fast and medium (OpenCV's preset values).
* ``skimage ilk``: ``skimage.registration.optical_flow_ilk(ref, mov, radius=7)`` (its defaults:
  num_warp 10, box window, no prefilter; the same algorithm and pyramid as gpudiff lk).
* ``skimage tvl1``: ``skimage.registration.optical_flow_tvl1(ref, mov)``, its defaults (attachment 15,
  tightness 0.3, num_warp 5, num_iter 10, tol 1e-4, no prefilter).
* ``cv2 Farneback``: ``cv2.calcOpticalFlowFarneback(ref_u8, mov_u8, None, pyr_scale=0.5, levels=L,
  winsize, iterations, poly_n, poly_sigma, flags=0)`` with two settings: OpenCV's sample values
  (samples/python/opt_flow.py: winsize 15 = gpudiff's window, iterations 3, poly_n 5, poly_sigma 1.2)
  and a setting tuned on the Motorcycle pair for large motion (winsize 31, iterations 10, poly_n 7,
  poly_sigma 1.5). ``L`` = gpudiff's automatic level count minus one (OpenCV does not count the
  full-size level), but OpenCV stops its pyramid before a side drops below 32 px, so it may get fewer.
* ``cv2 DIS``: ``cv2.DISOpticalFlow_create(preset).calc(ref_u8, mov_u8, None)`` for the presets
  ultrafast, fast and medium (everything else OpenCV's defaults for the preset).

OpenCV's flows are ``(dx, dy)`` with ``prev(y, x) ~ next(y + dy, x + dx)``, i.e. gpudiff's
``(v, u) = (dy, dx)``. On the Motorcycle cases gpudiff lk also runs with one option changed at a time
(``num_warp=3``, ``gaussian``, ``prefilter``, ``levels=k``): the ``levels=k`` rows show what the
pyramid does (the largest disparity must be within about one window radius at the coarsest level for
Lucas-Kanade to converge); those rows are left out of the summary.
"""

from __future__ import annotations

import argparse
import fnmatch
import math
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # benchmark the checkout, installed or not

import numpy as np  # noqa: E402

FLO_MAGIC = 202021.25
WARP_IMAGES = {"astronaut": "astronaut.png", "chelsea": "chelsea.png", "coffee": "coffee.png"}
WARP_MARGIN = 44  # px cut from each side of the photograph: the motion never needs more
ZOOM_MAX = 36.0  # px of zoom displacement at the corner farthest from its centre
ROTATE_DEG, SHIFT_VU = 3.0, (8.0, -12.0)
BAND_ROWS, BAND_SIGMA = (0.45, 0.65), 8.0
TIE = 1e-3  # EPEs within 0.1 % of the lowest count as best too (gpudiff tvl1 ports scikit-image's)


# ----------------------------------------------------------------------------------------------
# data


def data_dir() -> Path:
    cands = ([Path(os.environ["GPUDIFF_DATA"])] if os.environ.get("GPUDIFF_DATA") else []) + [
        REPO.parent / "shared" / "data",
        REPO / "shared" / "data",
    ]
    for c in cands:
        if (c / "skimage-data" / "motorcycle_disp.npz").is_file():
            return c
    sys.exit(f"flow_eval.py: motorcycle data not found in {', '.join(map(str, cands))}: set GPUDIFF_DATA")


@dataclass
class Case:
    name: str
    reference: np.ndarray  # float64, [0, 255]
    moving: np.ndarray
    truth: np.ndarray  # (2, H, W) float64: (v, u)
    valid: np.ndarray  # bool (H, W): truth known, match inside the frame
    note: str
    region: np.ndarray | None = None  # extra scored subset (the blurred band)
    variants: bool = False  # run gpudiff lk's option rows too


def grey(path: Path) -> np.ndarray:
    import cv2

    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        sys.exit(f"flow_eval.py: could not read {path}")
    return img.astype(np.float64).mean(axis=2)


def blocks(a, s):
    h, w = (a.shape[0] // s) * s, (a.shape[1] // s) * s
    return a[:h, :w].reshape(h // s, s, w // s, s).mean(axis=(1, 3))


def in_frame(truth, shape):
    rows = np.arange(shape[0])[:, None] + truth[0]
    cols = np.arange(shape[1])[None, :] + truth[1]
    return (rows >= 0) & (rows <= shape[0] - 1) & (cols >= 0) & (cols <= shape[1] - 1)


def stereo_case(name, left, right, disp, scale, note):
    """A rectified pair with the left disparity ``disp`` (non-finite: unknown) at 1/scale."""
    disp_s = blocks(disp, scale) / scale  # an unknown pixel anywhere in a block -> unknown
    known = np.isfinite(disp_s)
    truth = np.stack([np.zeros_like(disp_s), np.where(known, -disp_s, 0.0)])
    ref, mov = blocks(left, scale), blocks(right, scale)
    valid = known & in_frame(truth, ref.shape)
    return Case(name, ref, mov, truth, valid, note)


def load_motorcycle(data: Path, scale: int) -> Case:
    d = data / "skimage-data"
    disp = np.load(d / "motorcycle_disp.npz")["arr_0"].astype(np.float64)  # inf: unknown
    return stereo_case(
        f"motorcycle/{scale}",
        grey(d / "motorcycle_left.png"),
        grey(d / "motorcycle_right.png"),
        disp,
        scale,
        "Middlebury 2014 stereo, truth (0, -disparity)",
    )


def load_aloe(data: Path, scale: int) -> Case:
    import cv2

    d = data / "opencv-samples" / "pairs"
    gt = cv2.imread(str(d / "aloeGT.png"), cv2.IMREAD_UNCHANGED).astype(np.float64)
    disp = np.where(gt > 0, gt, np.inf)  # 0: unknown; value = disparity in full-size px
    return stereo_case(
        f"aloe/{scale}",
        grey(d / "aloeL.jpg"),
        grey(d / "aloeR.jpg"),
        disp,
        scale,
        "Middlebury 2006 stereo, truth (0, -aloeGT), whole-pixel disparities",
    )


def read_homography(path: Path) -> np.ndarray:
    import cv2

    fs = cv2.FileStorage(str(path), cv2.FILE_STORAGE_READ)
    try:
        return np.asarray(fs.getNode("H13").mat(), dtype=np.float64)
    finally:
        fs.release()


def load_graf(data: Path, scale: int) -> Case:
    d = data / "opencv-samples" / "pairs"
    h = read_homography(d / "H1to3p.xml")
    ref, mov = blocks(grey(d / "graf1.png"), scale), blocks(grey(d / "graf3.png"), scale)
    # block centres of scale s in full-size pixels: s * i + (s - 1) / 2
    half = (scale - 1) / 2
    r, c = np.mgrid[: ref.shape[0], : ref.shape[1]].astype(np.float64) * scale + half
    w = h[2, 0] * c + h[2, 1] * r + h[2, 2]
    x = (h[0, 0] * c + h[0, 1] * r + h[0, 2]) / w
    y = (h[1, 0] * c + h[1, 1] * r + h[1, 2]) / w
    truth = np.stack([(y - r) / scale, (x - c) / scale])
    return Case(
        f"graf/{scale}",
        ref,
        mov,
        truth,
        in_frame(truth, ref.shape),
        "Oxford graffiti 1 -> 3, planar wall, truth H1to3p(x) - x",
    )


def read_flo(path: Path) -> np.ndarray:
    """A Middlebury .flo file as (v, u) of shape (2, H, W), float64."""
    raw = path.read_bytes()
    magic = np.frombuffer(raw, "<f4", 1)[0]
    if magic != np.float32(FLO_MAGIC):
        sys.exit(f"flow_eval.py: {path} is not a .flo file (magic {magic}, expected {FLO_MAGIC})")
    width, height = (int(n) for n in np.frombuffer(raw, "<i4", 2, offset=4))
    uv = np.frombuffer(raw, "<f4", 2 * width * height, offset=12).reshape(height, width, 2)
    return np.stack([uv[..., 1], uv[..., 0]]).astype(np.float64)


def load_chairs(data: Path) -> Case:
    d = data / "mmflow-flow-fixtures"
    truth = read_flo(d / "00001_flow.flo")
    ref, mov = grey(d / "00001_img1.ppm"), grey(d / "00001_img2.ppm")
    known = np.isfinite(truth).all(axis=0) & (np.abs(truth) < 1e9).all(axis=0)  # .flo: 1e9 = unknown
    truth = np.where(known, truth, 0.0)
    return Case(
        "chairs",
        ref,
        mov,
        truth,
        known & in_frame(truth, ref.shape),
        "FlyingChairs crop 00001, truth 00001_flow.flo (img1 -> img2)",
    )


def warp_case(data: Path, kind: str, image: str) -> Case:
    """A photograph and its warp by a known similarity ``T`` (zoom, or rotation plus translation)."""
    from scipy import ndimage as ndi

    source = grey(data / "skimage-data" / WARP_IMAGES[image])
    m = WARP_MARGIN
    height, width = source.shape[0] - 2 * m, source.shape[1] - 2 * m
    region = None
    if kind == "band":
        r0, r1 = (int(round(f * height)) for f in BAND_ROWS)
        source = source.copy()
        source[m + r0 : m + r1] = ndi.gaussian_filter(source, BAND_SIGMA, mode="mirror")[m + r0 : m + r1]
        region = np.zeros((height, width), dtype=bool)
        region[r0:r1] = True
    # T(x) = centre + A (x - centre) + shift on (row, col); T^-1(y) = centre + A^-1 (y - centre - shift)
    if kind == "zoom":
        centre = np.array([0.4 * height, 0.6 * width])
        corners = np.array([[0, 0], [0, width - 1], [height - 1, 0], [height - 1, width - 1]], float)
        k = 1.0 + ZOOM_MAX / np.hypot(*(corners - centre).T).max()
        a, shift = np.eye(2) * k, np.zeros(2)
        how = f"zoom x{k:.4f} about ({centre[0]:.0f}, {centre[1]:.0f})"
    else:
        centre = np.array([(height - 1) / 2, (width - 1) / 2])
        t = math.radians(ROTATE_DEG)
        a = np.array([[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]])
        shift = np.array(SHIFT_VU)
        how = f"rotation {ROTATE_DEG:g} deg about the centre + shift (v, u) = {SHIFT_VU}"
        if kind == "band":
            how += f", rows {r0}-{r1} blurred (sigma {BAND_SIGMA:g})"
    grid = np.mgrid[:height, :width].astype(np.float64)  # (2, H, W): (row, col)
    rel = grid - centre[:, None, None]
    mapped = np.einsum("ij,jhw->ihw", a, rel) + (centre + shift)[:, None, None]  # T(x)
    truth = mapped - grid
    pre = np.einsum("ij,jhw->ihw", np.linalg.inv(a), rel - shift[:, None, None]) + centre[:, None, None]
    moving = ndi.map_coordinates(source, pre + m, order=3, mode="mirror")
    reference = source[m : m + height, m : m + width]
    valid = in_frame(truth, reference.shape)
    return Case(
        f"{kind}-{image}",
        reference,
        np.clip(moving, 0, 255),
        truth,
        valid,
        f"{image} {how}",
        region=region if region is None else region & valid,
    )


def case_table(data: Path, scales=None):
    """name -> (builder, in the default run, in the quick run); ``scales``: the Motorcycle scales of both
    runs (default 4 2 1, quick 4)."""
    table = {}
    for s in sorted(set(scales or ()) | {4, 2, 1}, reverse=True):
        table[f"motorcycle/{s}"] = (
            lambda s=s: load_motorcycle(data, s),
            s in (scales or (4, 2, 1)),
            s in (scales or (4,)),
        )
    for s in (4, 2, 1):
        table[f"aloe/{s}"] = (lambda s=s: load_aloe(data, s), s != 1, s == 4)
    for s in (4, 2, 1):
        table[f"graf/{s}"] = (lambda s=s: load_graf(data, s), s != 1, s == 4)
    table["chairs"] = (lambda: load_chairs(data), True, True)
    for kind in ("zoom", "rotate", "band"):
        for image in WARP_IMAGES:
            table[f"{kind}-{image}"] = (
                lambda k=kind, i=image: warp_case(data, k, i),
                True,
                image == "chelsea",
            )
    return table


# ----------------------------------------------------------------------------------------------
# methods


def pyramid_levels(shape) -> int:
    """gpudiff's automatic level count (its private helper when it imports, else the same rule)."""
    try:
        from gpudiff.sequence._pyramid import _pyramid_shapes

        return len(_pyramid_shapes(tuple(shape), None))
    except ImportError:
        n, side = 1, min(shape)
        while n < 10 and side > 32:
            side, n = math.ceil(side / 2), n + 1
        return n


def farneback(prev_u8, next_u8, levels, winsize, iterations, poly_n, poly_sigma):
    """A call of OpenCV's Farneback returning gpudiff's (v, u) = (dy, dx) layout."""
    import cv2

    def run():
        f = cv2.calcOpticalFlowFarneback(
            prev_u8, next_u8, None, 0.5, levels, winsize, iterations, poly_n, poly_sigma, 0
        )
        return np.moveaxis(f[..., ::-1], -1, 0)

    return run


def dis(prev_u8, next_u8, preset):
    import cv2

    flow = cv2.DISOpticalFlow_create(preset)

    def run():
        return np.moveaxis(flow.calc(prev_u8, next_u8, None)[..., ::-1], -1, 0)

    return run


def methods_for(case: Case, xp, sync):
    """[(name, fn, in the summary)] for one case, all on the same images."""
    import cv2
    from skimage.registration import optical_flow_ilk, optical_flow_tvl1

    from gpudiff.sequence import optical_flow_dis, optical_flow_lk
    from gpudiff.sequence import optical_flow_tvl1 as gpudiff_tvl1

    ref = (case.reference / 255.0).astype(np.float32)
    mov = (case.moving / 255.0).astype(np.float32)
    r8 = np.clip(np.round(case.reference), 0, 255).astype(np.uint8)
    m8 = np.clip(np.round(case.moving), 0, 255).astype(np.uint8)
    dref, dmov = xp.asarray(ref), xp.asarray(mov)
    n_levels = pyramid_levels(ref.shape)

    def ours(fn, **kw):
        def run():
            f = fn(dref, dmov, **kw)
            sync()  # sync
            return f

        return run

    rows = [("gpudiff lk", ours(optical_flow_lk), True)]
    rows.append(("gpudiff tvl1", ours(gpudiff_tvl1), True))
    rows += [(f"gpudiff dis {p}", ours(optical_flow_dis, preset=p), True) for p in ("ultrafast", "fast", "medium")]
    if case.variants:
        rows += [
            ("  gpudiff lk num_warp=3", ours(optical_flow_lk, num_warp=3), False),
            ("  gpudiff lk gaussian", ours(optical_flow_lk, gaussian=True), False),
            ("  gpudiff lk prefilter", ours(optical_flow_lk, prefilter=True), False),
        ]
        rows += [
            (f"  gpudiff lk levels={k}", ours(optical_flow_lk, levels=k), False) for k in range(1, n_levels)
        ]
    fl = max(n_levels - 1, 0)
    rows += [
        ("skimage ilk", lambda: optical_flow_ilk(ref, mov, radius=7), True),
        ("skimage tvl1", lambda: optical_flow_tvl1(ref, mov), True),
        (f"cv2 Farneback sample (levels={fl}, win=15)", farneback(r8, m8, fl, 15, 3, 5, 1.2), True),
        (f"cv2 Farneback tuned (levels={fl}, win=31)", farneback(r8, m8, fl, 31, 10, 7, 1.5), True),
        ("cv2 DIS ultrafast", dis(r8, m8, cv2.DISOpticalFlow_PRESET_ULTRAFAST), True),
        ("cv2 DIS fast", dis(r8, m8, cv2.DISOpticalFlow_PRESET_FAST), True),
        ("cv2 DIS medium", dis(r8, m8, cv2.DISOpticalFlow_PRESET_MEDIUM), True),
    ]
    return rows, n_levels


def summary_key(name: str) -> str:
    """The summary's name of a method (Farneback's level count varies with the case)."""
    return name.split(" (levels=")[0]


# ----------------------------------------------------------------------------------------------
# scoring and timing


def truth_check(case: Case):
    """Mean |reference - moving(x + truth)| over the scored pixels (bilinear), and with zero flow."""
    from scipy import ndimage as ndi

    grid = np.mgrid[: case.reference.shape[0], : case.reference.shape[1]].astype(np.float64)
    warped = ndi.map_coordinates(case.moving, grid + case.truth, order=1, mode="nearest")
    v = case.valid
    return (
        float(np.abs(warped - case.reference)[v].mean()),
        float(np.abs(case.moving - case.reference)[v].mean()),
    )


def epe_stats(flow_vu, case: Case):
    err = np.hypot(
        np.asarray(flow_vu[0], dtype=np.float64) - case.truth[0],
        np.asarray(flow_vu[1], dtype=np.float64) - case.truth[1],
    )
    e = err[case.valid]
    region = float(err[case.region].mean()) if case.region is not None and case.region.any() else None
    return float(e.mean()), float((e > 1).mean() * 100), float((e > 3).mean() * 100), region


def timed(fn, repeats):
    out = fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return out, statistics.median(times)


def header(args):
    import cv2
    import scipy
    import skimage

    print(
        f"# flow_eval  {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}  {platform.platform()}  "
        f"{platform.processor() or platform.machine()}  {os.cpu_count()} CPUs  "
        f"load {os.getloadavg()[0]:.2f}  python {platform.python_version()}"
    )
    print(
        f"# backend {args.backend}  numpy {np.__version__}  scipy {scipy.__version__}  "
        f"scikit-image {skimage.__version__}  opencv {cv2.__version__} ({cv2.getNumThreads()} threads)  "
        f"repeats {args.repeats} (median, after one warm-up)  baseline gpudiff {args.baseline}"
    )


def run_case(case: Case, xp, sync, args):
    rows, n_levels = methods_for(case, xp, sync)
    from gpudiff.backend import to_host

    tv = case.truth[:, case.valid]
    mag = np.hypot(*tv) if tv.size else np.zeros(1)
    warp_err, still_err = truth_check(case)
    print(
        f"\n## {case.name}: {case.reference.shape[1]}x{case.reference.shape[0]}, {case.note}; "
        f"{int(case.valid.sum())} px scored ({case.valid.mean() * 100:.0f} %), |flow| up to "
        f"{mag.max():.1f} px (median {np.median(mag):.1f}); gpudiff pyramid {n_levels} levels; "
        f"truth check: mean |ref - mov(x + truth)| {warp_err:.2f} grey levels (zero flow {still_err:.2f})"
    )
    results = []
    for name, fn, in_summary in rows:
        try:
            flow, t = timed(fn, args.repeats)
            results.append((name, in_summary, *epe_stats(to_host(flow), case), t))
        except Exception as exc:  # a benchmark records a failure and goes on
            results.append((name, in_summary, None, None, None, None, None))
            print(f"  {name}: failed: {type(exc).__name__}: {exc}")
    base = next((r for r in results if r[0] == f"gpudiff {args.baseline}" and r[2] is not None), None)
    region_col = case.region is not None
    print(
        "| method | EPE px | >1px % | >3px % |"
        + (" band EPE |" if region_col else "")
        + " time ms | EPE ratio | time ratio |"
    )
    print("|---|---:|---:|---:|" + ("---:|" if region_col else "") + "---:|---:|---:|")
    for name, _, epe, p1, p3, reg, t in results:
        if epe is None:
            print(f"| {name} | failed |" + " |" * (6 + region_col))
            continue
        er = f"{epe / base[2]:.2f}" if base and base[2] > 0 else "-"
        tr = f"{t / base[6]:.2f}" if base and base[6] > 0 else "-"
        print(
            f"| {name} | {epe:.3f} | {p1:.1f} | {p3:.1f} |"
            + (f" {reg:.3f} |" if region_col else "")
            + f" {t * 1e3:.1f} | {er} | {tr} |"
        )
    return results, base


def print_summary(all_results, baseline):
    stats: dict[str, dict] = {}
    for _, results, base in all_results:
        ok = [r for r in results if r[1] and r[2] is not None]
        if not ok:
            continue
        best = min(r[2] for r in ok)
        for name, _, epe, _p1, p3, _reg, t in ok:
            s = stats.setdefault(summary_key(name), {"epe": [], "p3": [], "best": 0, "tr": [], "t": 0.0})
            s["epe"].append(epe)
            s["p3"].append(p3)
            s["t"] += t
            s["best"] += epe <= best * (1 + TIE)
            if base is not None and base[6] > 0:
                s["tr"].append(t / base[6])
    n_cases = len(all_results)
    print(f"\n## summary over {n_cases} cases (mean of per-case numbers; baseline gpudiff {baseline})")
    print(
        "| method | cases | mean EPE px | mean >3px % | best EPE (cases) | median time ratio "
        "| total time s |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, s in stats.items():
        tr = f"{statistics.median(s['tr']):.2f}" if s["tr"] else "-"
        print(
            f"| {name} | {len(s['epe'])} | {statistics.fmean(s['epe']):.3f} "
            f"| {statistics.fmean(s['p3']):.1f} "
            f"| {s['best']} | {tr} | {s['t']:.2f} |"
        )


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--scales",
        type=int,
        nargs="+",
        default=None,
        help="Motorcycle downscale factors (1 = full; default 4 2 1, --quick 4)",
    )
    ap.add_argument("--repeats", type=int, default=None, help="timed calls per method (default 3, --quick 1)")
    ap.add_argument("--backend", default="numpy", choices=["numpy", "cupy"])
    ap.add_argument("--cases", nargs="+", default=None, help="case names or shell patterns (see --list)")
    ap.add_argument("--list", action="store_true", help="print the case names and exit")
    ap.add_argument("--quick", action="store_true", help="small cases only, --repeats 1")
    ap.add_argument("--baseline", default="lk", choices=["lk", "tvl1"], help="gpudiff method the ratios use")
    args = ap.parse_args(argv)
    if args.repeats is None:
        args.repeats = 1 if args.quick else 3
    data = data_dir()
    table = case_table(data, args.scales)
    if args.list:
        for name, (_, default, quick) in table.items():
            print(f"{name:22s} {'default' if default else '':8s} {'quick' if quick else ''}")
        return 0
    if args.cases:
        names = [n for n in table if any(fnmatch.fnmatchcase(n, p) for p in args.cases)]
        if not names:
            ap.error(f"--cases {' '.join(args.cases)} matches none of: {', '.join(table)}")
    else:
        names = [n for n, (_, default, quick) in table.items() if (quick if args.quick else default)]

    from gpudiff.backend import resolve_backend

    xp = resolve_backend(args.backend)
    sync = (lambda: xp.cuda.get_current_stream().synchronize()) if xp is not np else (lambda: None)
    header(args)
    print(f"# cases: {' '.join(names)}")
    t_start = time.perf_counter()
    all_results = []
    for name in names:
        case = table[name][0]()
        case.variants = name.startswith("motorcycle/")
        results, base = run_case(case, xp, sync, args)
        all_results.append((name, results, base))
    print_summary(all_results, args.baseline)
    print(f"\n# total wall time {time.perf_counter() - t_start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
