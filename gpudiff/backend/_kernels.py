"""Loads the CUDA kernels of ``kernels/*.cu`` with CuPy, compiled once per device.

The ``.cu`` files live in ``<repo>/kernels/`` in a source checkout and in ``gpudiff/kernels/`` in
an installed wheel (``pyproject.toml`` force-includes them there); the package copy wins when
both exist. Each file is one kernel family whose kernels are ``extern "C"`` functions with names
that carry the dtype and the index width (``pair_stats_u8_i32``), so they are looked up by plain
name. A family is compiled with NVRTC (``cupy.RawModule``) the first time one of its kernels is
asked for on a device (CuPy also caches the binary on disk); kernels are memoized per
``(device id, family, kernel name)``.

This module imports without CuPy: CuPy is reached only through :mod:`gpudiff.backend`, inside
the functions that need it.
"""

from __future__ import annotations

import threading
from pathlib import Path

from ..errors import BackendUnavailable

__all__ = [
    "COMPILE_OPTIONS",
    "kernel_dirs",
    "kernel_source_paths",
    "kernel_source",
    "get_module",
    "get_function",
    "clear_cache",
]

#: NVRTC options for every family.
COMPILE_OPTIONS = ("-std=c++17",)

_PACKAGE_DIR = Path(__file__).resolve().parents[1] / "kernels"  # gpudiff/kernels in a wheel
_SOURCE_DIR = Path(__file__).resolve().parents[2] / "kernels"  # <repo>/kernels in a checkout

_lock = threading.Lock()
_modules: dict[tuple[str, int, str], object] = {}
_functions: dict[tuple[str, int, str, str], object] = {}


def kernel_dirs() -> list[Path]:
    """The folders holding ``*.cu`` files, in search order (package first, then source tree)."""
    return [d for d in (_PACKAGE_DIR, _SOURCE_DIR) if d.is_dir()]


def kernel_source_paths() -> list[Path]:
    """Every kernel family's ``.cu`` file, one per family (the first found in :func:`kernel_dirs`)."""
    found: dict[str, Path] = {}
    for d in kernel_dirs():
        for path in sorted(d.glob("*.cu")):
            found.setdefault(path.stem, path)
    return [found[k] for k in sorted(found)]


def _source_path(family: str) -> Path:
    for d in kernel_dirs():
        path = d / f"{family}.cu"
        if path.is_file():
            return path
    searched = ", ".join(str(d) for d in (_PACKAGE_DIR, _SOURCE_DIR))
    raise BackendUnavailable(
        f"CUDA kernel source {family}.cu not found (searched {searched}): reinstall gpudiff, "
        "or run from a source checkout that has kernels/"
    )


def kernel_source(family: str) -> str:
    """The CUDA source of a kernel family (``'pair_stats'`` -> ``pair_stats.cu``)."""
    return _source_path(family).read_text(encoding="utf-8")


def _cupy(xp=None):
    """The device namespace: ``xp`` when given (CuPy or the emulated GPU), else CuPy."""
    if xp is not None:
        return xp
    from ._namespace import resolve_backend  # noqa: PLC0415

    return resolve_backend("cupy")  # raises BackendUnavailable without CuPy / device


def get_module(family: str, *, device_id: int | None = None, xp=None):
    """The compiled ``RawModule`` of a family on a device (default: the current one).

    ``xp``: the device namespace (default CuPy); the emulated GPU compiles for the CPU emulator.
    """
    cp = _cupy(xp)
    if device_id is None:
        device_id = cp.cuda.Device().id
    key = (cp.__name__, int(device_id), family)
    with _lock:
        module = _modules.get(key)
        if module is None:
            code = kernel_source(family)
            with cp.cuda.Device(device_id):
                module = cp.RawModule(code=code, options=COMPILE_OPTIONS)
                module.compile()
            _modules[key] = module
    return module


def get_function(family: str, name: str, *, device_id: int | None = None, xp=None):
    """The ``RawKernel`` named ``name`` (an ``extern "C"`` kernel) of a family."""
    cp = _cupy(xp)
    if device_id is None:
        device_id = cp.cuda.Device().id
    key = (cp.__name__, int(device_id), family, name)
    fn = _functions.get(key)
    if fn is not None:
        return fn
    module = get_module(family, device_id=device_id, xp=cp)
    with _lock, cp.cuda.Device(device_id):
        fn = _functions.get(key)
        if fn is None:
            try:
                fn = module.get_function(name)
            except Exception as exc:  # CUDADriverError: named symbol not found
                raise BackendUnavailable(
                    f"kernel {name!r} is not in {family}.cu ({exc}): the installed kernels and "
                    "gpudiff do not match; reinstall gpudiff"
                ) from exc
            _functions[key] = fn
    return fn


def clear_cache() -> None:
    """Forget the compiled modules (tests; after editing a ``.cu`` file in a live session)."""
    with _lock:
        _modules.clear()
        _functions.clear()
