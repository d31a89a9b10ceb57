"""The memory half of the pre-decode budget: refuse a file whose declared size would not fit.

The pixel budget (``--max-pixels``) bounds height x width; a small file can still declare a size
under it whose decode does not fit in memory (a 0.87 MB PNG of 30000 x 30000 RGB declares 2.7 GB of
pixels). So before decoding, :func:`_check_memory` compares what reading it needs with the memory
available and raises one :class:`~gpudiff.errors.InputError` when it does not fit. The frames of a
sequence (a TIFF stack's pages, a Zarr array's planes, a video's pictures) share one declared shape,
checked once when the source opens (:func:`check_decode_memory`, through the sources' frame budget).

What reading needs: the decoded bytes (height x width x channels x bytes per sample, from the
header's :class:`~gpudiff.io.ImageInfo`) times :data:`WORKING_COPIES`. Measured on 4000 x 4000 RGB
uint8 PNGs of random pixels (48 MB decoded; 2026-12-07, 2-core VM, peak RSS growth of a fresh
process): ``read_image`` 115 MB (2.4x: the decoder's buffer plus the array), ``gpudiff compare`` of
two such files 201 MB (2.1x per image: decode, validate, the float32 work of the comparisons). The
factor 4 is a margin above both, for the wider intermediates of other options (alignment, SSIM).

What is available: ``GPUDIFF_MEMORY_LIMIT`` (bytes) when set; otherwise Linux's ``MemAvailable``
(``/proc/meminfo``), lowered to the cgroup's limit (``/sys/fs/cgroup/memory.max``) when that is
smaller; otherwise ``os.sysconf`` (available physical pages). Read at most once a second. When
nothing can be read the check is skipped.
"""

from __future__ import annotations

import os
import threading
import time

import numpy as np

from ..errors import ConfigError, InputError
from ._imageinfo import ImageInfo

#: Working copies of the decoded pixels reading and comparing one image holds at its peak.
WORKING_COPIES = 4

#: The environment variable that sets the available memory (bytes), e.g. for tests or a shared host.
ENV_VAR = "GPUDIFF_MEMORY_LIMIT"

_CACHE_S = 1.0
_lock = threading.Lock()
_cached: tuple = (float("-inf"), None, "")  # (monotonic time, bytes or None, where from)


def _human(n: int) -> str:
    """1073741824 -> '1.07 GB', 2700000000 -> '2.7 GB' (decimal units)."""
    n = float(n)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.3g} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1000
    return f"{n:.3g} TB"  # pragma: no cover


def _env_limit():
    text = os.environ.get(ENV_VAR, "").strip()
    if not text:
        return None
    try:
        value = float(text)
        if value != value or value <= 0 or value == float("inf"):
            raise ValueError
    except ValueError:
        raise ConfigError(
            f"{ENV_VAR}={text!r} must be a number of bytes > 0 (e.g. 1000000000); unset it to use the "
            f"memory the system reports"
        ) from None
    return int(value)


def _read_int(path: str):
    try:
        with open(path, encoding="ascii") as fh:
            text = fh.read().strip()
    except (OSError, ValueError):
        return None
    try:
        return int(text)
    except ValueError:  # 'max' (no limit) or garbage
        return None


def _meminfo_available():
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    parts = line.split()
                    return int(parts[1]) * (1024 if len(parts) < 3 or parts[2].lower() == "kb" else 1)
    except (OSError, ValueError, IndexError):
        pass
    return None


def _cgroup_room():
    # the limit itself, not limit - memory.current: current counts page cache the kernel reclaims
    return _read_int("/sys/fs/cgroup/memory.max")


def _sysconf_available():
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None


def _system_available():
    """(bytes or None, where from), from the system (no environment override)."""
    avail, where = _meminfo_available(), "MemAvailable"
    if avail is None:
        avail, where = _sysconf_available(), "available physical memory"
    room = _cgroup_room()
    if room is not None and (avail is None or room < avail):
        avail, where = room, "the cgroup's memory.max"
    return avail, where


def available_memory():
    """(bytes or None, where from): what a decode may use; ``GPUDIFF_MEMORY_LIMIT`` first."""
    env = _env_limit()
    if env is not None:
        return env, ENV_VAR
    global _cached
    now = time.monotonic()
    with _lock:
        if now - _cached[0] < _CACHE_S:
            return _cached[1], _cached[2]
    avail, where = _system_available()
    with _lock:
        _cached = (now, avail, where)
    return avail, where


def decoded_bytes(info: ImageInfo) -> int:
    channels = int(info.shape[2]) if len(info.shape) > 2 else 1
    return int(info.shape[0]) * int(info.shape[1]) * channels * int(info.dtype.itemsize)


def _check_memory(info: ImageInfo) -> None:
    """InputError when reading ``info``'s page needs more memory than is available."""
    channels = int(info.shape[2]) if len(info.shape) > 2 else 1
    check_decode_memory(info.path, int(info.shape[0]), int(info.shape[1]), channels, info.dtype)


def check_decode_memory(name, height, width, channels, dtype, *, per_frame: bool = False) -> None:
    """InputError when decoding one ``height x width x channels`` image of ``dtype`` (its decoded
    bytes times :data:`WORKING_COPIES`) needs more memory than :func:`available_memory` says.

    ``name`` is what the message names (a file, ``stack.tif page 3``); ``per_frame`` says that the
    size is each frame's of a sequence (a TIFF stack, a Zarr array, a video), checked at open.
    The one place that compares what a decode needs with what is available.
    """
    avail, where = available_memory()
    if avail is None:
        return
    dtype = np.dtype(dtype)
    height, width, channels = int(height), int(width), int(channels)
    size = height * width * channels * int(dtype.itemsize)
    need = size * WORKING_COPIES
    if need <= avail:
        return
    each = " per frame" if per_frame else ""
    one = "a frame" if per_frame else "it"
    raise InputError(
        f"{name} declares {width} x {height} x {channels} {dtype} = {_human(size)} of pixels{each}; "
        f"reading {one} needs about {_human(need)} but {_human(avail)} of memory is available ({where}): "
        f"run with more memory (or raise {ENV_VAR} if you trust it), use a smaller image or crop, "
        f"or lower --max-pixels to refuse such files"
    )
