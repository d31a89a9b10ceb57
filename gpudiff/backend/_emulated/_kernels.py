"""``RawKernel`` and ``RawModule``: CUDA source compiled for the CPU emulator (:mod:`gpudiff.backend._cuda_emu`),
launched with CuPy's calling convention.
"""

from __future__ import annotations

import numpy as _np

from ._array import ndarray
from ._realcupy import _check_call


class RawKernel:
    """A kernel of CUDA source, launched on the CPU emulator with CuPy's calling convention."""

    def __init__(self, code=None, name=None, options=(), *, _kernel=None, **kwargs):
        _check_call("cupy.RawKernel", kwargs)
        if _kernel is None:
            _kernel = RawModule(code=code, options=options).get_function(name)._k
        self._k = _kernel
        self.name = _kernel.name

    def __call__(self, grid, block, args, *, shared_mem=0, stream=None, enable_cooperative_groups=False):
        host = []
        for v in args:
            if type(v) is ndarray:
                host.append(v._a)
            elif isinstance(v, _np.ndarray):
                raise TypeError(f"kernel {self.name}: a host numpy.ndarray passed as a device pointer "
                                "(on a GPU that is a host address: move it with xp.asarray)")
            else:
                host.append(v)
        self._k(grid, block, tuple(host), shared_mem=int(shared_mem))


class RawModule:
    """``cupy.RawModule``: CUDA source compiled for the CPU emulator."""

    def __init__(self, code=None, *, path=None, options=(), backend="nvrtc", translate_cucomplex=False,
                 enable_cooperative_groups=False, name_expressions=None, jitify=False):
        from .. import _cuda_emu, _kernels  # noqa: PLC0415

        if code is None:
            raise TypeError("the emulated RawModule takes CUDA source as code=")
        name = "module"
        for p in _kernels.kernel_source_paths():
            if p.read_text(encoding="utf-8") == code:
                name = str(p)  # so kernel coverage maps to kernels/<family>.cu
                break
        self._mod = _cuda_emu.compile_module(code, options=tuple(options), name=name)

    def compile(self, log_stream=None):
        return None

    def get_function(self, name):
        return RawKernel(_kernel=self._mod.get_function(name))
