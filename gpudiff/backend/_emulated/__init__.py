"""An emulated GPU: a CuPy stand-in with NumPy memory that refuses what CuPy refuses.

``--backend emulated-gpu`` (``GPUDIFF_BACKEND=emulated-gpu``) hands this module to the code as
``xp``: every CuPy branch of gpudiff runs (``_backend.is_cupy(xp)`` is true), the CUDA kernels of
``kernels/*.cu`` run under the CPU emulator of :mod:`gpudiff._cuda_emu`, and the numbers are the
GPU path's numbers. It is slow and proves the code path, not its speed: use it to check a GPU job
on a machine without a GPU (a login node, CI).

What it holds the code to, as CuPy does:

- a device array (:class:`ndarray`) never turns into a host array implicitly: ``np.asarray(d)``
  raises CuPy's TypeError; ``.get()``, ``.item()``, ``asnumpy`` and ``float(d)`` are transfers,
  and counted;
- a host NumPy array mixed with a device array in an operation, an ``xp`` function or a kernel
  launch is a TypeError (NumPy and Python scalars are fine);
- reductions give 0-d device arrays, not host scalars;
- only names and keywords the real CuPy has exist (checked against the installed ``cupy`` when it
  imports: it does on machines without a GPU);
- kernels are launched with the argument types their C signature has (see ``_cuda_emu``).

Host <-> device transfers are counted (:func:`transfers`), so a test can hold the engine to its
promise that each frame crosses once and only small results come back.

Behind this face, one job per file:

- ``_realcupy``: the installed ``cupy`` as the oracle of names and keywords; :data:`used_names`;
- ``_transfers``: the host <-> device transfer log (:func:`transfers`, :class:`TransferLog`);
- ``_array``: the device array (:class:`ndarray`), ``asarray``/``array``/``asnumpy``/
  ``get_array_module``/``ascontiguousarray``, and the wrappers that put NumPy functions and ufuncs
  behind CuPy's rules;
- ``_kernels``: ``RawKernel`` and ``RawModule`` on the CUDA emulator;
- ``_runtime``: the ``cuda`` namespace (device, streams, events, ``runtime``, ``nvrtc``);
- ``_cupyx``: ``cupyx`` (pinned memory, ``scipy.ndimage``, ``scipy.fft``).

Every other name (``xp.sum``, ``xp.float32``, ``xp.add``) is NumPy's, looked up by this module's
``__getattr__`` and checked against the real CuPy.
"""

from __future__ import annotations

import numpy as _np

from . import _array, _cupyx, _kernels, _realcupy, _runtime, _transfers
from ._array import _Ufunc, _wrap_function, array, asarray, asnumpy, get_array_module, ndarray
from ._realcupy import _MISSING, _check_name, used_names
from ._runtime import DEVICE_NAME, cuda
from ._transfers import transfers

__all__ = ["ndarray", "asarray", "array", "asnumpy", "get_array_module", "cuda", "transfers", "DEVICE_NAME"]

# also reached as xp.<name> (or by tests), though not in __all__
ascontiguousarray = _array.ascontiguousarray
RawKernel, RawModule = _kernels.RawKernel, _kernels.RawModule
runtime, nvrtc = _runtime.runtime, _runtime.nvrtc
cupyx, scipy_ndimage, scipy_fft = _cupyx.cupyx, _cupyx.scipy_ndimage, _cupyx.scipy_fft
TransferLog = _transfers.TransferLog
_real = _realcupy._real

_cache: dict[str, object] = {}


def __getattr__(name: str):
    if name.startswith("__"):
        raise AttributeError(name)
    got = _cache.get(name)
    if got is not None:
        used_names.add(f"cupy.{name}")
        return got
    path = f"cupy.{name}"
    _check_name(path)
    obj = getattr(_np, name, _MISSING)
    if obj is _MISSING:
        raise AttributeError(f"the emulated device does not provide cupy.{name}")
    if isinstance(obj, _np.ufunc):
        out = _Ufunc(obj, path)
    elif isinstance(obj, type) or not callable(obj):
        out = obj  # dtypes (float32, ...), dtype/finfo classes, constants (pi, inf, newaxis)
    elif name in ("dtype", "finfo", "iinfo", "result_type", "can_cast", "promote_types", "issubdtype", "isscalar"):
        out = obj
    else:
        out = _wrap_function(obj, path)
    _cache[name] = out
    used_names.add(path)
    return out
