#!/usr/bin/env python3
"""gpudiff and its peers side by side, in one process, on the same pairs, with ratios.

Usage::

    python benchmarks/peers.py [--quick] [--json out.json] [--backend numpy|cupy]

Each case times gpudiff and each peer (OpenCV; scikit-image/NumPy; cuCIM on a GPU when it imports)
on the same images, and checks that they computed the same numbers: a benchmark that compares wrong
answers is worthless. Timing: one warm-up call (it also compiles numba/CUDA code), then the median
and the minimum of N timed calls (``time.perf_counter``; on CuPy the stream is synchronised inside
the timed call). ``ratio`` = peer median / gpudiff median: > 1 means gpudiff is faster.

The pairs come from real images (``skimage-data/camera.png`` and ``astronaut.png`` in the shared
data folder: ``$GPUDIFF_DATA``, else ``../shared/data`` beside the checkout, else ``shared/data``
inside it), resized to the benchmark sizes; the moving image is a blurred, slightly shifted, noisy
copy of the reference. Times are printed, never asserted.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # benchmark the checkout, installed or not

import numpy as np  # noqa: E402

# --------------------------------------------------------------------------------------------------
# data


def candidate_data_dirs() -> list[Path]:
    out = []
    if os.environ.get("GPUDIFF_DATA"):
        out.append(Path(os.environ["GPUDIFF_DATA"]))
    return out + [REPO.parent / "shared" / "data", REPO / "shared" / "data"]


def find_data_dir() -> Path | None:
    """The shared real-image folder (the first candidate holding skimage-data/camera.png), or None."""
    for c in candidate_data_dirs():
        if (c / "skimage-data" / "camera.png").is_file() and (c / "skimage-data" / "astronaut.png").is_file():
            return c
    return None


def data_dir() -> Path:
    """The shared real-image folder, or exit with a message that says how to provide it."""
    found = find_data_dir()
    if found is not None:
        return found
    tried = ", ".join(str(c) for c in candidate_data_dirs())
    sys.exit(
        f"peers.py: real test data not found (looked for skimage-data/camera.png and astronaut.png in "
        f"{tried}). Set GPUDIFF_DATA to the shared data folder, or copy its skimage-data/ into "
        "shared/data/ inside the checkout (that folder travels to the GPU machine)."
    )


def _imread(path: Path, flags: int):
    import cv2

    img = cv2.imread(str(path), flags)
    if img is None:
        sys.exit(f"peers.py: could not read {path}")
    return img


def base_gray(data: Path):
    import cv2

    return _imread(data / "skimage-data" / "camera.png", cv2.IMREAD_GRAYSCALE)


def base_rgb(data: Path):
    import cv2

    return cv2.cvtColor(_imread(data / "skimage-data" / "astronaut.png", cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def make_pair(base: np.ndarray, size: int, *, seed: int = 0):
    """(reference, moving) uint8 of size x size (x C): the real image resized, and a copy of it
    blurred (Gaussian sigma 1), shifted by (2, -1) pixels and with Gaussian noise (sigma 2) added."""
    import cv2

    ref = cv2.resize(base, (size, size), interpolation=cv2.INTER_CUBIC)
    mov = cv2.GaussianBlur(ref, (0, 0), 1.0)
    mov = np.roll(mov, (2, -1), axis=(0, 1))
    noise = np.random.default_rng(seed).normal(0.0, 2.0, mov.shape).astype(np.float32)
    mov = np.clip(mov.astype(np.float32) + noise, 0, 255).round().astype(np.uint8)
    return np.ascontiguousarray(ref), np.ascontiguousarray(mov)


def make_shifted_pair(base: np.ndarray, size: int, shift=(12.4, -7.3), *, seed: int = 1):
    """float32 (reference, moving, expected shift): two size x size crops of the resized image, the
    moving one taken after a subpixel shift by ``shift`` (cubic spline), plus a little noise. The
    shift that registers moving onto reference (scikit-image's convention) is ``-shift``."""
    import cv2
    from scipy import ndimage

    margin = 32
    big = cv2.resize(base, (size + 2 * margin, size + 2 * margin), interpolation=cv2.INTER_CUBIC)
    big = big.astype(np.float32)
    moved = ndimage.shift(big, shift, order=3, mode="nearest")
    sl = (slice(margin, margin + size), slice(margin, margin + size))
    ref = np.ascontiguousarray(big[sl])
    mov = moved[sl] + np.random.default_rng(seed).normal(0.0, 2.0, (size, size)).astype(np.float32)
    return ref, np.ascontiguousarray(mov.astype(np.float32)), (-float(shift[0]), -float(shift[1]))


# --------------------------------------------------------------------------------------------------
# timing


@dataclass
class Timing:
    median: float  # seconds
    best: float
    repeats: int
    value: object = field(default=None, repr=False)

    @property
    def ms(self) -> float:
        return self.median * 1e3


class Clock:
    """Warm-up, then the median and minimum of N calls; N adapts to the time budget per measure."""

    def __init__(self, *, budget_s: float, min_repeats: int, max_repeats: int, sync=None):
        self.budget_s = budget_s
        self.min_repeats = min_repeats
        self.max_repeats = max_repeats
        self.sync = sync or (lambda: None)

    def __call__(self, fn) -> Timing:
        def call():
            value = fn()
            self.sync()  # sync: inside the timed call, so GPU work is counted
            return value

        call()  # warm-up (JIT compilation, caches, pool allocations)
        t0 = time.perf_counter()
        value = call()  # the first timed call also sizes N
        times = [time.perf_counter() - t0]
        n = int(min(self.max_repeats, max(self.min_repeats, self.budget_s / max(times[0], 1e-6))))
        for _ in range(n - 1):
            t0 = time.perf_counter()
            value = call()
            times.append(time.perf_counter() - t0)
        return Timing(statistics.median(times), min(times), n, value)


# --------------------------------------------------------------------------------------------------
# agreement


def max_rel_diff(ours: dict, theirs: dict) -> tuple[float, str]:
    """Largest |ours - theirs| / max(|theirs|, 1) over the keys both have (arrays: elementwise), and
    the key where it occurs. Dividing by at least 1 makes it the absolute difference for values
    below 1 (SSIM, NCC) and the relative one for sums and counts."""
    worst, name = 0.0, None
    for k in ours:
        if k not in theirs or ours[k] is None or theirs[k] is None:
            continue
        x = np.asarray(ours[k], dtype=np.float64).ravel()
        y = np.asarray(theirs[k], dtype=np.float64).ravel()
        if x.shape != y.shape:
            return math.inf, f"{k} (shapes {x.shape} vs {y.shape})"
        both_inf = np.isinf(x) & np.isinf(y) & (np.sign(x) == np.sign(y))  # PSNR of identical images
        diff = np.where(both_inf, 0.0, np.abs(x - y) / np.maximum(np.abs(y), 1.0))
        d = float(np.max(diff)) if x.size else 0.0
        if not math.isfinite(d) or d > worst or (name is None and d == worst):
            worst, name = d, k
    return worst, name or "-"


def agreement(ours: dict, theirs: dict) -> str:
    d, k = max_rel_diff(ours, theirs)
    keys = [k2 for k2 in ours if k2 in theirs]
    if d == 0:
        return f"identical ({', '.join(keys)})"
    return f"max rel diff {d:.1e} ({k})"


# --------------------------------------------------------------------------------------------------
# gpudiff side


class Gpudiff:
    """gpudiff's calls on one backend, with inputs already on its device."""

    def __init__(self, backend: str):
        from gpudiff import backend as _backend

        self.backend = backend
        self.xp = _backend.resolve_backend(backend)
        self.is_cupy = _backend.is_cupy(self.xp)
        self.impl = "cuda" if self.is_cupy else "auto"

    def sync(self):
        if self.is_cupy:
            self.xp.cuda.get_current_stream().synchronize()  # sync

    def put(self, a):
        return self.xp.asarray(a) if self.is_cupy else a

    def pair_sums(self, a, b, *, hist: bool, impl: str | None = None):
        from gpudiff.pair._sums import pair_sums

        return pair_sums(
            a, b, tolerance=0.0, center=0.0, bins=256,
            hist_range=(0.0, 256.0) if hist else None, impl=impl or self.impl,
        )


def _host(x):
    from gpudiff.backend import to_host

    return np.asarray(to_host(x))


def sums_numbers(s, *, hist: bool) -> dict:
    """The numbers a PairSums carries, in the peers' terms (totals over channels)."""
    sse = _host(s.sse).astype(np.float64)
    out = {
        "l1": float(np.sum(_host(s.l1))),
        "l0": int(_host(s.l0_any)),
        "l2": math.sqrt(float(np.sum(sse))),
        "inf": float(np.max(_host(s.max_abs))),
    }
    if hist:
        out["hist_a"] = _host(s.hist_a).reshape(-1)
        out["hist_b"] = _host(s.hist_b).reshape(-1)
    return out


# --------------------------------------------------------------------------------------------------
# peers: the cheapest sequence of library calls that gives the same numbers


def opencv_norms(a, b, *, hist: bool) -> dict:
    import cv2

    out = {
        "l1": cv2.norm(a, b, cv2.NORM_L1),
        "l2": cv2.norm(a, b, cv2.NORM_L2),
        "inf": cv2.norm(a, b, cv2.NORM_INF),
    }
    d = cv2.absdiff(a, b)
    if d.ndim == 3:  # a pixel differs where any channel does
        ch = cv2.split(d)
        m = ch[0]
        for c in ch[1:]:
            m = cv2.max(m, c)
        out["l0"] = cv2.countNonZero(m)
    else:
        out["l0"] = cv2.countNonZero(d)
    if hist:
        C = 1 if a.ndim == 2 else a.shape[2]
        out["hist_a"] = np.concatenate([cv2.calcHist([a], [c], None, [256], [0, 256]).ravel() for c in range(C)])
        out["hist_b"] = np.concatenate([cv2.calcHist([b], [c], None, [256], [0, 256]).ravel() for c in range(C)])
    return out


def numpy_norms(a, b, *, hist: bool) -> dict:
    from skimage.metrics import mean_squared_error

    d = np.abs(a.astype(np.float64) - b)
    nz = d > 0
    out = {
        "l1": float(d.sum()),
        "l0": int(np.count_nonzero(nz if d.ndim == 2 else nz.any(axis=-1))),
        "l2": math.sqrt(mean_squared_error(a, b) * a.size),
        "inf": float(d.max()),
    }
    if hist:
        C = 1 if a.ndim == 2 else a.shape[2]
        pa = [a] if C == 1 else [a[..., c] for c in range(C)]
        pb = [b] if C == 1 else [b[..., c] for c in range(C)]
        out["hist_a"] = np.concatenate([np.histogram(x, bins=256, range=(0, 256))[0] for x in pa])
        out["hist_b"] = np.concatenate([np.histogram(x, bins=256, range=(0, 256))[0] for x in pb])
    return out


def opencv_ssim(a, b, data_range=255.0) -> float:
    """SSIM the OpenCV way (its tutorial's formula): float32 moments by GaussianBlur 11x11, sigma 1.5;
    the mean over the interior (5 pixels from each border), as scikit-image averages."""
    import cv2

    c1 = (0.01 * data_range) ** 2
    c2 = (0.03 * data_range) ** 2
    x = a.astype(np.float32)
    y = b.astype(np.float32)

    def blur(z):
        return cv2.GaussianBlur(z, (11, 11), 1.5)

    mx, my = blur(x), blur(y)
    mx2, my2, mxy = cv2.multiply(mx, mx), cv2.multiply(my, my), cv2.multiply(mx, my)
    sxx = cv2.subtract(blur(cv2.multiply(x, x)), mx2)
    syy = cv2.subtract(blur(cv2.multiply(y, y)), my2)
    sxy = cv2.subtract(blur(cv2.multiply(x, y)), mxy)
    num = cv2.multiply(cv2.add(cv2.multiply(mxy, 2.0), c1), cv2.add(cv2.multiply(sxy, 2.0), c2))
    den = cv2.multiply(cv2.add(cv2.add(mx2, my2), c1), cv2.add(cv2.add(sxx, syy), c2))
    m = cv2.divide(num, den)
    return float(cv2.mean(m[5:-5, 5:-5])[0])


def skimage_ssim(a, b, data_range=255.0) -> float:
    from skimage.metrics import structural_similarity

    return float(structural_similarity(a, b, gaussian_weights=True, sigma=1.5,
                                       use_sample_covariance=False, data_range=data_range))


def _hist_chi2(ha, hb) -> float:
    import cv2

    ha = (ha / ha.sum()).astype(np.float32)
    hb = (hb / hb.sum()).astype(np.float32)
    return float(cv2.compareHist(ha, hb, cv2.HISTCMP_CHISQR))


def opencv_compare(a, b) -> dict:
    """Every metric of gpudiff.compare (gray uint8) the OpenCV way."""
    import cv2

    n = a.size
    r = opencv_norms(a, b, hist=True)
    mse = r["l2"] ** 2 / n
    return {
        "manhattan": r["l1"],
        "zero_norm": r["l0"],
        "mse": mse,
        "psnr": 10 * math.log10(255.0**2 / mse) if mse else math.inf,
        "max_abs": r["inf"],
        "ncc": float(cv2.matchTemplate(a, b, cv2.TM_CCOEFF_NORMED)[0, 0]),
        "chi2": _hist_chi2(r["hist_a"], r["hist_b"]),
        "ssim": opencv_ssim(a, b),
    }


def skimage_compare(a, b) -> dict:
    """Every metric of gpudiff.compare (gray uint8) the scikit-image/NumPy way."""
    from skimage.metrics import peak_signal_noise_ratio

    r = numpy_norms(a, b, hist=True)
    n = a.size
    ha, hb = r["hist_a"].astype(np.float64), r["hist_b"].astype(np.float64)
    pa, pb = ha / ha.sum(), hb / hb.sum()
    use = pa > 0
    return {
        "manhattan": r["l1"],
        "zero_norm": r["l0"],
        "mse": r["l2"] ** 2 / n,
        "psnr": peak_signal_noise_ratio(a, b, data_range=255),
        "max_abs": r["inf"],
        "ncc": float(np.corrcoef(a.ravel(), b.ravel())[0, 1]),
        "chi2": float(np.sum((pa[use] - pb[use]) ** 2 / pa[use])),
        "ssim": skimage_ssim(a, b),
    }


def comparison_numbers(c) -> dict:
    return {
        "manhattan": c.manhattan, "zero_norm": c.zero_norm, "mse": c.mse, "psnr": c.psnr,
        "max_abs": c.max_abs, "ncc": c.ncc, "chi2": (c.histogram or {}).get("chi2"), "ssim": c.ssim,
    }


def cv_shift(ref, mov):
    """cv2.phaseCorrelate's (x, y) turned into scikit-image's (dy, dx) registering moving onto ref."""
    import cv2

    (x, y), _ = cv2.phaseCorrelate(ref, mov)
    return (-float(y), -float(x))


# --------------------------------------------------------------------------------------------------
# the report


@dataclass
class Row:
    case: str
    peer: str
    gpudiff: Timing
    other: Timing
    agree: str

    def ratio(self) -> float:
        return self.other.median / self.gpudiff.median

    def ratio_min(self) -> float:
        return self.other.best / self.gpudiff.best

    def to_dict(self) -> dict:
        return {
            "case": self.case, "peer": self.peer,
            "gpudiff_ms": self.gpudiff.median * 1e3, "gpudiff_min_ms": self.gpudiff.best * 1e3,
            "gpudiff_repeats": self.gpudiff.repeats,
            "peer_ms": self.other.median * 1e3, "peer_min_ms": self.other.best * 1e3,
            "peer_repeats": self.other.repeats, "ratio": self.ratio(), "ratio_of_minima": self.ratio_min(),
            "agreement": self.agree,
        }


def _fmt_ms(t: Timing) -> str:
    return f"{t.median * 1e3:9.2f} {t.best * 1e3:9.2f}"


def print_table(rows: list[Row]) -> None:
    w_case = max([len("case")] + [len(r.case) for r in rows])
    w_peer = max([len("peer")] + [len(r.peer) for r in rows])
    print(f"{'case':<{w_case}}  {'gpudiff ms':>9} {'(min)':>9}  {'peer':<{w_peer}}  "
          f"{'peer ms':>9} {'(min)':>9}  {'ratio':>7} {'(min)':>7}  agreement")
    last = None
    for r in rows:
        case = r.case if r.case != last else ""
        last = r.case
        print(f"{case:<{w_case}}  {_fmt_ms(r.gpudiff)}  {r.peer:<{w_peer}}  {_fmt_ms(r.other)}  "
              f"{r.ratio():7.2f} {r.ratio_min():7.2f}  {r.agree}")


def cpu_model_and_usable_cores() -> tuple[str, int]:
    """The CPU's model name (from /proc/cpuinfo where there is one) and the cores this process may use."""
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        usable = os.cpu_count()
    return model, usable


def machine_info(gd: Gpudiff) -> dict:
    import cv2
    import scipy
    import skimage

    import gpudiff

    model, usable = cpu_model_and_usable_cores()
    info = {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "cpu": model, "cores": os.cpu_count(), "usable_cores": usable,
        "python": platform.python_version(), "numpy": np.__version__, "scipy": scipy.__version__,
        "opencv": cv2.__version__, "opencv_threads": cv2.getNumThreads(),
        "skimage": skimage.__version__, "gpudiff": gpudiff.__version__, "backend": gd.backend,
        "load_average": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
    }
    try:
        import numba

        info["numba"] = numba.__version__
        info["numba_threads"] = numba.config.NUMBA_NUM_THREADS
    except ImportError:
        info["numba"] = None
    if gd.is_cupy:
        from gpudiff.backend import device_name

        cp = gd.xp
        info["gpu"] = device_name(cp)
        info["cupy"] = cp.__version__
        info["cuda_runtime"] = cp.cuda.runtime.runtimeGetVersion()
        info["cuda_driver"] = cp.cuda.runtime.driverGetVersion()
    return info


# --------------------------------------------------------------------------------------------------
# cases


def host_copy_bandwidth(clock: Clock, nbytes: int) -> tuple[float, Timing]:
    """np.copyto of an nbytes buffer: (bytes read + written) / median time, in bytes/s."""
    src = np.full(nbytes, 7, dtype=np.uint8)
    dst = np.empty_like(src)
    np.copyto(dst, src)  # touch every page before timing
    t = clock(lambda: np.copyto(dst, src))
    return 2 * nbytes / t.median, t


def device_copy_bandwidth(gd: Gpudiff, clock: Clock, nbytes: int) -> tuple[float, Timing]:
    """A device-to-device copy of an nbytes buffer: (bytes read + written) / median time."""
    cp = gd.xp
    src = cp.full(nbytes, 7, dtype=cp.uint8)
    dst = cp.empty_like(src)
    t = clock(lambda: cp.copyto(dst, src))
    del src, dst
    return 2 * nbytes / t.median, t


def case_norms(rows, gd, clock, base, size, *, label, hist, peers=("opencv", "skimage")):
    a, b = make_pair(base, size)
    da, db = gd.put(a), gd.put(b)
    t_gd = clock(lambda: gd.pair_sums(da, db, hist=hist))
    ours = sums_numbers(t_gd.value, hist=hist)
    if "opencv" in peers:
        t = clock(lambda: opencv_norms(a, b, hist=hist))
        rows.append(Row(label, "OpenCV norm/countNonZero" + ("/calcHist" if hist else ""), t_gd, t,
                        agreement(ours, t.value)))
    if "skimage" in peers:
        t = clock(lambda: numpy_norms(a, b, hist=hist))
        rows.append(Row(label, "NumPy/skimage MSE" + ("/np.histogram" if hist else ""), t_gd, t,
                        agreement(ours, t.value)))
    return a, b, t_gd


def case_compare(rows, gd, clock, base, size):
    import gpudiff

    label = f"compare() all metrics {size}^2 gray"
    a, b = make_pair(base, size)
    da, db = gd.put(a), gd.put(b)
    t_gd = clock(lambda: gpudiff.compare(da, db, backend=gd.backend))
    ours = comparison_numbers(t_gd.value)
    for name, fn in (("OpenCV seq + OpenCV SSIM", opencv_compare), ("skimage seq + skimage SSIM", skimage_compare)):
        t = clock(lambda fn=fn: fn(a, b))
        rows.append(Row(label, name, t_gd, t, agreement(ours, t.value)))


def case_align(rows, gd, clock, base, size):
    from skimage.registration import phase_cross_correlation as sk_pcc

    from gpudiff.pair._align import phase_cross_correlation

    ref, mov, truth = make_shifted_pair(base, size)
    dref, dmov = gd.put(ref), gd.put(mov)
    int_truth = (float(round(truth[0])), float(round(truth[1])))
    t_int = clock(lambda: phase_cross_correlation(dref, dmov))
    t_up = clock(lambda: phase_cross_correlation(dref, dmov, upsample_factor=20))
    s_int = tuple(float(v) for v in t_int.value.shift)
    s_up = tuple(float(v) for v in t_up.value.shift)

    def agree(ours, theirs):
        d = max(abs(o - t) for o, t in zip(ours, theirs, strict=True))
        return (f"gpudiff ({ours[0]:g}, {ours[1]:g}) vs ({theirs[0]:.3g}, {theirs[1]:.3g}): "
                f"max |diff| {d:.3g} px; truth ({truth[0]:g}, {truth[1]:g})")

    label_i = f"align {size}^2 integer"
    label_u = f"align {size}^2 upsample 20"
    t = clock(lambda: cv_shift(ref, mov))
    rows.append(Row(label_i, "cv2.phaseCorrelate (subpixel)", t_int, t, agree(s_int, t.value)))
    t = clock(lambda: tuple(float(v) for v in sk_pcc(ref, mov)[0]))
    rows.append(Row(label_i, "skimage phase_cross_correlation", t_int, t, agree(s_int, t.value)))
    t = clock(lambda: cv_shift(ref, mov))
    rows.append(Row(label_u, "cv2.phaseCorrelate (subpixel)", t_up, t, agree(s_up, t.value)))
    t = clock(lambda: tuple(float(v) for v in sk_pcc(ref, mov, upsample_factor=20)[0]))
    rows.append(Row(label_u, "skimage pcc upsample 20", t_up, t, agree(s_up, t.value)))
    if gd.is_cupy:
        try:
            from cucim.skimage.registration import phase_cross_correlation as cu_pcc
        except ImportError:
            print("cuCIM not importable: no GPU alignment peer")
        else:
            t = clock(lambda: tuple(float(v) for v in cu_pcc(dref, dmov)[0]))
            rows.append(Row(label_i, "cuCIM phase_cross_correlation", t_int, t, agree(s_int, t.value)))
            t = clock(lambda: tuple(float(v) for v in cu_pcc(dref, dmov, upsample_factor=20)[0]))
            rows.append(Row(label_u, "cuCIM pcc upsample 20", t_up, t, agree(s_up, t.value)))
    if s_int != int_truth:
        print(f"WARNING: gpudiff integer shift {s_int} is not the rounded truth {int_truth}")


def case_ssim(rows, gd, clock, base, size):
    from gpudiff.pair._ssim import structural_similarity

    a, b = make_pair(base, size)
    da, db = gd.put(a), gd.put(b)
    label = f"SSIM {size}^2 gray"
    t_gd = clock(lambda: structural_similarity(da, db, data_range=255.0))
    ours = {"ssim": t_gd.value}
    for name, fn in (("OpenCV GaussianBlur formula", opencv_ssim), ("skimage structural_similarity", skimage_ssim)):
        t = clock(lambda fn=fn: fn(a, b))
        d = abs(ours["ssim"] - t.value)
        flag = "" if d <= 1e-4 else "  <-- MORE THAN 1e-4"
        rows.append(Row(label, name, t_gd, t, f"gpudiff {ours['ssim']:.6f} vs {t.value:.6f}: |diff| {d:.1e}{flag}"))


def case_batch(gd, clock, base, size, count, dev_bw, *, hist: bool = True) -> dict:
    """count pairs of size x size uint8 through the fused pass, one call each, on the device: bytes
    read / median time, and that as a fraction of the device copy bandwidth ``dev_bw``."""
    cp = gd.xp
    a, b = make_pair(base, size)
    da, db = cp.asarray(a), cp.asarray(b)
    A = cp.empty((count, size, size), dtype=cp.uint8)
    B = cp.empty_like(A)
    for i in range(count):  # distinct pairs without host work: rolled copies
        A[i] = cp.roll(da, 17 * i, axis=1)
        B[i] = cp.roll(db, 17 * i, axis=1)
    del da, db

    def run():
        return [gd.pair_sums(A[i], B[i], hist=hist) for i in range(count)]

    t = clock(run)
    nbytes = A.nbytes + B.nbytes
    rate = nbytes / t.median
    return {
        "pairs": count, "size": size, "histograms": hist, "bytes_read": nbytes, "ms": t.median * 1e3, "min_ms": t.best * 1e3,
        "read_GBps": rate / 1e9, "copy_GBps": dev_bw / 1e9, "fraction_of_copy_bandwidth": rate / dev_bw,
    }


# --------------------------------------------------------------------------------------------------


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="small sizes and few repeats: a smoke test (< 1 min)")
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    p.add_argument("--backend", choices=("numpy", "cupy"), default="numpy", help="where gpudiff runs (peers stay on the CPU)")
    args = p.parse_args(argv)

    data = data_dir()
    from gpudiff.errors import BackendUnavailable

    try:
        gd = Gpudiff(args.backend)
    except BackendUnavailable as e:
        print(f"peers.py: {e}", file=sys.stderr)
        return 2

    if args.quick:
        big, mid, copy_bytes = 1024, 512, 64 << 20
        clock = Clock(budget_s=0.3, min_repeats=3, max_repeats=10, sync=gd.sync)
    else:
        big, mid, copy_bytes = 4096, 2048, 256 << 20
        clock = Clock(budget_s=2.0, min_repeats=5, max_repeats=30, sync=gd.sync)
    batch_size = 4096  # the GPU batch stays full size: it is cheap there

    info = machine_info(gd)
    print(f"# gpudiff vs peers  ({'quick' if args.quick else 'full'} run, backend {gd.backend})  {info['date']}")
    load = info["load_average"]
    busy = "  <-- other work is running: times are noisy" if load is not None and load > 0.5 * (info["usable_cores"] or 1) else ""
    load_text = f"load average {load:.2f} at start" if load is not None else "load average unknown"
    print(f"# CPU: {info['cpu']}, {info['cores']} cores ({info['usable_cores']} usable), {load_text}{busy}; "
          f"Python {info['python']}")
    print(f"# numpy {info['numpy']}, scipy {info['scipy']}, opencv {info['opencv']} "
          f"({info['opencv_threads']} threads), scikit-image {info['skimage']}, "
          f"numba {info.get('numba')} ({info.get('numba_threads')} threads), gpudiff {info['gpudiff']}")
    if gd.is_cupy:
        print(f"# GPU: {info['gpu']}, CuPy {info['cupy']}, CUDA runtime {info['cuda_runtime']}, "
              f"driver {info['cuda_driver']}")
    print("# times: median and min of N calls after a warm-up; ratio = peer / gpudiff (> 1: gpudiff faster), "
          "of the medians and (min) of the minima")
    print(flush=True)

    gray, rgb = base_gray(data), base_rgb(data)
    rows: list[Row] = []
    summary: dict = {}
    t_start = time.perf_counter()

    # memory-bandwidth floor of the fused pass: it must read both images once
    host_clock = Clock(budget_s=clock.budget_s, min_repeats=clock.min_repeats, max_repeats=clock.max_repeats)
    bw, t_copy = host_copy_bandwidth(host_clock, copy_bytes)
    summary["host_copy"] = {"bytes": copy_bytes, "ms": t_copy.median * 1e3, "GBps_read_plus_written": bw / 1e9}
    print(f"host copy bandwidth: np.copyto of {copy_bytes >> 20} MiB in {t_copy.median * 1e3:.2f} ms "
          f"= {bw / 1e9:.2f} GB/s (bytes read + written; one thread)", flush=True)

    # norms only (no histograms) and the floor, gray
    label = f"norms only {big}^2 gray"
    a, b, t_norms = case_norms(rows, gd, clock, gray, big, label=label, hist=False)
    if gd.is_cupy:
        dev_bw, t_dcopy = device_copy_bandwidth(gd, clock, 1 << 30)
        summary["device_copy"] = {"bytes": 1 << 30, "ms": t_dcopy.median * 1e3, "GBps_read_plus_written": dev_bw / 1e9}
        print(f"device copy bandwidth: 1 GiB device-to-device in {t_dcopy.median * 1e3:.3f} ms "
              f"= {dev_bw / 1e9:.0f} GB/s (bytes read + written)", flush=True)
        floor_bw, where = dev_bw, "device"
    else:
        floor_bw, where = bw, "host"
    floor_s = (a.nbytes + b.nbytes) / floor_bw
    floor_t = Timing(floor_s, floor_s, 1)
    rows.append(Row(label, f"floor: 2 images / {where} copy bw", t_norms, floor_t,
                    f"gpudiff = {t_norms.median / floor_s:.2f} x floor"))
    summary["norms_vs_floor"] = {"size": big, "bytes_read": a.nbytes + b.nbytes, "floor_ms": floor_s * 1e3,
                                 "gpudiff_ms": t_norms.median * 1e3, "times_floor": t_norms.median / floor_s}
    print(f"norms only {big}^2 gray: gpudiff {t_norms.median * 1e3:.2f} ms = "
          f"{t_norms.median / floor_s:.2f} x the memory floor ({floor_s * 1e3:.2f} ms: "
          f"{(a.nbytes + b.nbytes) >> 20} MiB read at the {where} copy bandwidth)", flush=True)

    # the full metric set of the fused pass: norms and both histograms
    case_norms(rows, gd, clock, gray, big, label=f"norms + hists {big}^2 gray", hist=True)
    case_norms(rows, gd, clock, rgb, big, label=f"norms + hists {big}^2x3 RGB", hist=True)
    print(f"[fused-pass cases done, {time.perf_counter() - t_start:.0f} s]", flush=True)

    for size in (mid, big):
        case_compare(rows, gd, clock, gray, size)
        print(f"[compare {size}^2 done, {time.perf_counter() - t_start:.0f} s]", flush=True)
    case_align(rows, gd, clock, gray, mid)
    case_ssim(rows, gd, clock, gray, mid)
    print(f"[align + SSIM done, {time.perf_counter() - t_start:.0f} s]", flush=True)

    if gd.is_cupy:
        summary["batch"] = case_batch(gd, clock, gray, batch_size, 16, dev_bw)

    print()
    print_table(rows)
    if "batch" in summary:
        s = summary["batch"]
        print(f"\nbatch: {s['pairs']} pairs of {s['size']}^2 uint8 through the fused pass (with histograms) in "
              f"{s['ms']:.2f} ms = {s['read_GBps']:.0f} GB/s read = {s['fraction_of_copy_bandwidth']:.2f} of the "
              f"device copy bandwidth ({s['copy_GBps']:.0f} GB/s read + written)")
    print(f"\n[total {time.perf_counter() - t_start:.0f} s]")

    if args.json:
        out = {"machine": info, "quick": args.quick, "rows": [r.to_dict() for r in rows], "summary": summary}
        Path(args.json).write_text(json.dumps(out, indent=2, default=float) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
