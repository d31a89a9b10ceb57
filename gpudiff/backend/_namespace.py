"""The array namespace: the only module that imports CuPy (lazily).

Everything else receives arrays and calls ``xp.`` functions, with SciPy-like calls going through
:func:`ndimage` and :func:`fft`, so the CPU tests exercise the same code the GPU runs.
"""

from __future__ import annotations

import functools
import os
from types import ModuleType

import numpy as np

from ..errors import BackendUnavailable, ConfigError

__all__ = [
    "BACKENDS",
    "cupy_available",
    "resolve_backend",
    "get_namespace",
    "is_cupy",
    "is_emulated",
    "is_device_array",
    "ndimage",
    "fft",
    "to_host",
    "asarray",
    "backend_name",
    "device_name",
]

BACKENDS = ("auto", "numpy", "cupy", "emulated-gpu")
EMULATED = "gpudiff.backend._emulated"


@functools.lru_cache(maxsize=1)
def _import_cupy() -> ModuleType | None:
    try:
        import cupy  # noqa: PLC0415

        if cupy.cuda.runtime.getDeviceCount() < 1:  # sync
            return None
        return cupy
    except Exception:  # ImportError, CUDARuntimeError (no driver), ...
        return None


def cupy_available() -> bool:
    """True when CuPy imports and sees at least one CUDA device."""
    return _import_cupy() is not None


def _emulated() -> ModuleType:
    from . import _emulated as emu  # noqa: PLC0415

    return emu


def resolve_backend(name: str | None = None) -> ModuleType:
    """Return the array module for ``name`` ('auto', 'numpy', 'cupy' or 'emulated-gpu').

    ``None`` reads ``GPUDIFF_BACKEND`` and falls back to 'auto', which takes the GPU when CuPy finds
    a device and NumPy otherwise. 'emulated-gpu' is the CuPy code path on the CPU
    (:mod:`gpudiff.backend._emulated`): never chosen by 'auto'.
    """
    if name is None:
        name = os.environ.get("GPUDIFF_BACKEND", "auto") or "auto"
    name = name.lower()
    if name not in BACKENDS:
        raise ConfigError(f"unknown backend {name!r}: use one of {', '.join(BACKENDS)}")
    if name == "numpy":
        return np
    if name == "emulated-gpu":
        return _emulated()
    cp = _import_cupy()
    if cp is not None:
        return cp
    if name == "cupy":
        raise BackendUnavailable(
            "backend 'cupy' requested but CuPy or a CUDA device is missing: "
            "install gpudiff[cuda12] or gpudiff[cuda13] on a GPU node, or use --backend numpy"
        )
    return np


def is_cupy(xp: ModuleType) -> bool:
    """True for CuPy and for the emulated GPU: the namespaces that take the GPU code path."""
    return xp is not np and getattr(xp, "__name__", "") in ("cupy", EMULATED)


def is_emulated(xp: ModuleType) -> bool:
    return getattr(xp, "__name__", "") == EMULATED


def is_device_array(a) -> bool:
    """True for a CuPy array or an emulated-GPU array (memory the host must not read directly)."""
    t = type(a)
    return t.__module__.startswith("cupy") or getattr(t, "__gpudiff_emulated__", False)


def get_namespace(*arrays) -> ModuleType:
    """numpy, cupy or the emulated GPU, from the arrays given (NumPy when none is on a device)."""
    for a in arrays:
        if getattr(type(a), "__gpudiff_emulated__", False):
            return _emulated()
        if type(a).__module__.startswith("cupy"):
            cp = _import_cupy()
            if cp is None:  # pragma: no cover - a cupy array without cupy cannot exist
                raise BackendUnavailable("a CuPy array was given but CuPy sees no device")
            return cp
    return np


def ndimage(xp: ModuleType) -> ModuleType:
    """scipy.ndimage or cupyx.scipy.ndimage."""
    if is_emulated(xp):
        return xp.scipy_ndimage()
    if is_cupy(xp):
        import cupyx.scipy.ndimage as ndi  # noqa: PLC0415

        return ndi
    import scipy.ndimage as ndi  # noqa: PLC0415

    return ndi


def fft(xp: ModuleType) -> ModuleType:
    """scipy.fft or cupyx.scipy.fft (both take ``workers=`` where it matters)."""
    if is_emulated(xp):
        return xp.scipy_fft()
    if is_cupy(xp):
        import cupyx.scipy.fft as f  # noqa: PLC0415

        return f
    import scipy.fft as f  # noqa: PLC0415

    return f


def fft_kwargs(xp: ModuleType) -> dict:
    """Extra keyword arguments for FFT calls: all CPU cores for scipy.fft."""
    return {} if is_cupy(xp) else {"workers": -1}


def to_host(a):
    """A NumPy array (or Python scalar) from a NumPy/CuPy array or scalar."""
    if hasattr(a, "get") and is_device_array(a):
        return a.get()  # sync
    return a


def asarray(a, xp: ModuleType):
    """``a`` on the namespace's device (a host->device copy for CuPy)."""
    if xp is np:
        return to_host(a) if not isinstance(a, np.ndarray) else a
    return xp.asarray(a)


def to_device(a, xp: ModuleType):
    """A host frame on ``xp``'s device, staged through page-locked (pinned) host memory.

    Pinned staging lets the copy run at full PCIe/NVLink speed on the current stream; the stream is
    synchronised before the staging buffer is released, so the buffer is never reused while a copy
    from it is in flight. NumPy: returned as is.
    """
    if not is_cupy(xp):
        return a if isinstance(a, np.ndarray) else np.asarray(to_host(a))
    if not isinstance(a, np.ndarray):
        return xp.asarray(a)
    if is_emulated(xp):
        cupyx = xp.cupyx
    else:
        import cupyx  # noqa: PLC0415

    staging = cupyx.empty_pinned(a.shape, dtype=a.dtype)
    staging[...] = a
    out = xp.empty(a.shape, dtype=a.dtype)
    stream = xp.cuda.get_current_stream()
    out.set(staging, stream=stream)
    stream.synchronize()  # sync: the staging buffer goes back to the pinned pool after this
    return out


def device_stream(xp: ModuleType):
    """A context manager running GPU work on a stream of its own (a null context for NumPy), so
    tasks on different threads overlap their copies and kernels."""
    import contextlib  # noqa: PLC0415

    if not is_cupy(xp):
        return contextlib.nullcontext()
    return xp.cuda.Stream(non_blocking=True)


def backend_name(xp: ModuleType) -> str:
    if is_emulated(xp):
        return "emulated-gpu"
    return "cupy" if is_cupy(xp) else "numpy"


def device_name(xp: ModuleType) -> str:
    """A human name for where the arrays live: the GPU's name, or 'cpu'."""
    if not is_cupy(xp):
        return "cpu"
    try:
        dev = xp.cuda.Device()
        props = xp.cuda.runtime.getDeviceProperties(dev.id)
        name = props["name"]
        return name.decode() if isinstance(name, bytes) else str(name)
    except Exception:  # pragma: no cover
        return "cuda"
