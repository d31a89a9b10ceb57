"""Compile the CPU kernels ahead of the first run (``gpudiff warmup``).

The fused pass, SSIM and the histogram distances are numba functions compiled on first use for each
argument signature (dtype, layout) and then kept in numba's on-disk cache (``__pycache__`` beside
the package, ``~/.cache/numba``, or ``NUMBA_CACHE_DIR``: see :mod:`gpudiff._numba_cache` for an
install where none is writable). A fresh install pays 3-7 s per signature inside its first run
(the demo: 7.0 s cold, 1.0 s warm); loading a cached signature takes 0.01-0.2 s. ``warmup`` calls the
public functions once on tiny inputs of every signature a run commonly needs, so that cost is paid
at install time (``scripts/_venv.sh`` runs it after installing) instead of inside a job.
"""

from __future__ import annotations

import time

import numpy as np

__all__ = ["warmup", "CASES"]


def _pair(dtype, channels):
    rng = np.random.default_rng(0)
    shape = (64, 48) if channels == 1 else (64, 48, channels)
    if np.dtype(dtype).kind == "f":
        a = rng.random(shape, dtype=np.float32).astype(dtype)
    else:
        a = rng.integers(0, np.iinfo(dtype).max, shape, dtype=dtype)
    return a, a[::-1].copy()


def _fused(dtype, channels, strided, serial):
    from ..pair._sums import pair_sums  # noqa: PLC0415
    from ..pair._sums_numba import serial_kernels  # noqa: PLC0415

    a, b = _pair(dtype, channels)
    if strided:  # what an aligned overlap or a crop passes: a view, not a copy
        a, b = a[2:-2, 1:-3], b[2:-2, 1:-3]
    hist = (0.0, 256.0) if np.dtype(dtype) == np.uint8 else (0.0, 1.0 if np.dtype(dtype).kind == "f" else 65536.0)
    center = 0.5 if np.dtype(dtype).kind == "f" else 0.0
    if serial:
        with serial_kernels():
            pair_sums(a, b, bins=256, hist_range=hist, center=center)
    else:
        pair_sums(a, b, bins=256, hist_range=hist, center=center)


def _ssim(dtype, serial):
    from ..pair._sums_numba import serial_kernels  # noqa: PLC0415
    from ..pair._ssim import structural_similarity  # noqa: PLC0415

    a, b = _pair(np.float32, 1)
    a, b = a.astype(dtype), b.astype(dtype)
    if serial:
        with serial_kernels():
            structural_similarity(a, b, data_range=1.0)
    else:
        structural_similarity(a, b, data_range=1.0)


def _histogram_distances():
    from ..pair._histograms import histogram_distances  # noqa: PLC0415

    p = np.full(256, 1 / 256)
    histogram_distances(p, p[::-1].copy())


def _cases():
    out = []
    for serial in (True, False):  # runs use the serial kernels (one per Dask thread); compare the parallel
        mode = "serial" if serial else "parallel"
        for dtype in (np.uint8, np.uint16, np.float32):
            for channels in (1, 3):
                for strided in (False, True):
                    label = f"fused pass {mode} {np.dtype(dtype).name} C={channels}{' view' if strided else ''}"
                    out.append((label, lambda d=dtype, c=channels, s=strided, m=serial: _fused(d, c, s, m)))
        out.append((f"ssim {mode} float32", lambda m=serial: _ssim(np.float32, m)))
    out.append(("histogram distances", _histogram_distances))
    return out


CASES = [label for label, _ in _cases()]


def warmup(print_fn=print) -> list[tuple[str, float]]:
    """Compile (or load from the cache) every common signature; returns (case, seconds) per case."""
    try:
        import numba  # noqa: F401, PLC0415
    except ImportError:
        print_fn("gpudiff warmup: numba is not installed: the CPU path runs the plain NumPy reference")
        return []
    times = []
    t_all = time.perf_counter()
    for label, fn in _cases():
        t0 = time.perf_counter()
        fn()
        times.append((label, time.perf_counter() - t0))
        print_fn(f"  {label:44s} {times[-1][1]:6.2f} s")
    print_fn(f"gpudiff warmup: {len(times)} cases (dtype x channels x layout x serial/parallel) ready in "
             f"{time.perf_counter() - t_all:.1f} s; numba keeps them on disk, later processes load them in "
             "well under a second")
    return times
