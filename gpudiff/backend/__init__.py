"""The array namespace and the device: the only subpackage that imports CuPy.

Everything else receives arrays and calls ``xp.`` functions (``xp`` is numpy, cupy or the emulated
GPU), with SciPy-like calls going through :func:`ndimage` and :func:`fft`, so the CPU tests run the
code the GPU runs. Behind this face:

- ``_namespace``: choosing the backend (``--backend auto|numpy|cupy|emulated-gpu``), host/device copies;
- ``_kernels``: loading ``kernels/*.cu`` with ``cupy.RawModule``, memoized per device;
- ``_emulated``: CuPy's API on NumPy memory (``--backend emulated-gpu``), for CI without a GPU;
- ``_cuda_emu``: CUDA's execution model on the CPU, so ``kernels/*.cu`` run in the tests.
"""

from ._namespace import (
    BACKENDS,
    EMULATED,
    asarray,
    backend_name,
    cupy_available,
    device_name,
    device_stream,
    fft,
    fft_kwargs,
    get_namespace,
    is_cupy,
    is_device_array,
    is_emulated,
    ndimage,
    resolve_backend,
    to_device,
    to_host,
)

__all__ = [
    "BACKENDS",
    "EMULATED",
    "asarray",
    "backend_name",
    "cupy_available",
    "device_name",
    "device_stream",
    "fft",
    "fft_kwargs",
    "get_namespace",
    "is_cupy",
    "is_device_array",
    "is_emulated",
    "ndimage",
    "resolve_backend",
    "to_device",
    "to_host",
]
