"""``cupyx``: pinned host memory, and ``scipy.ndimage``/``scipy.fft`` (imported on first use) behind
CuPy's rules with the names and keywords of ``cupyx.scipy``.
"""

from __future__ import annotations

import functools
from types import ModuleType, SimpleNamespace

import numpy as _np

from ._array import _wrap_function
from ._realcupy import _check_name, used_names


def _wrap_module(real_mod, path: str):
    """scipy.<x> behind CuPy's rules, with the names and keywords of ``cupyx.scipy.<x>``."""

    class _NS(ModuleType):
        def __getattr__(self, name):
            if name.startswith("__"):
                raise AttributeError(name)
            full = f"{path}.{name}"
            _check_name(full)
            used_names.add(full)
            obj = getattr(real_mod, name)
            if not callable(obj) or isinstance(obj, type):
                return obj
            if name == "next_fast_len":
                return obj
            fn = _wrap_function(obj, full)
            setattr(self, name, fn)
            return fn

    return _NS(path)


def _pinned(kind):
    def alloc(shape, dtype=float, order="C"):
        used_names.add(f"cupyx.{kind}_pinned")
        return (_np.empty if kind == "empty" else _np.zeros)(shape, dtype=dtype, order=order)

    return alloc


class _LazyScipy:
    @functools.cached_property
    def ndimage(self):
        import scipy.ndimage  # noqa: PLC0415

        return _wrap_module(scipy.ndimage, "cupyx.scipy.ndimage")

    @functools.cached_property
    def fft(self):
        import scipy.fft  # noqa: PLC0415

        return _wrap_module(scipy.fft, "cupyx.scipy.fft")


cupyx = SimpleNamespace(empty_pinned=_pinned("empty"), zeros_pinned=_pinned("zeros"), scipy=_LazyScipy())


def scipy_ndimage():
    """The emulated ``cupyx.scipy.ndimage``."""
    return cupyx.scipy.ndimage


def scipy_fft():
    """The emulated ``cupyx.scipy.fft``."""
    return cupyx.scipy.fft
