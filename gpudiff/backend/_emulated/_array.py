"""The device array (:class:`ndarray`): NumPy memory behind CuPy's rules, and the module-level
functions that make or take one (``asarray``, ``array``, ``asnumpy``, ``get_array_module``,
``ascontiguousarray``), with the wrappers that put any NumPy function or ufunc behind those rules.
"""

from __future__ import annotations

import functools
from types import SimpleNamespace

import numpy as _np

from ._realcupy import _check_call, _check_name, _real, _ufunc_names, used_names
from ._runtime import cuda
from ._transfers import _record

_IMPLICIT = ("Implicit conversion to a NumPy array is not allowed. "
             "Please use `.get()` to construct a NumPy array explicitly.")


def _unwrap(x, where: str):
    """Device arrays -> their NumPy buffers (recursing into lists/tuples); host arrays refused."""
    if type(x) is ndarray:
        return x._a
    if isinstance(x, _np.ndarray):
        raise TypeError(f"{where}: a host numpy.ndarray mixed with device arrays (CuPy refuses this: "
                        "move it with xp.asarray, or bring the device array back with .get())")
    if isinstance(x, (list, tuple)):
        return type(x)(_unwrap(v, where) for v in x)
    return x


def _wrap(x):
    if isinstance(x, _np.ndarray):
        return ndarray._of(x)
    if isinstance(x, _np.generic):
        return ndarray._of(_np.asarray(x))
    if isinstance(x, tuple):
        return tuple(_wrap(v) for v in x)
    if isinstance(x, list):
        return [_wrap(v) for v in x]
    return x


class _Data:
    def __init__(self, a):
        self.ptr = a.ctypes.data
        self.mem = SimpleNamespace(size=a.nbytes)


class ndarray:
    """A device array: NumPy memory behind CuPy's rules."""

    __gpudiff_emulated__ = True
    __array_priority__ = 100
    __slots__ = ("_a",)

    def __init__(self, shape, dtype=float, order="C"):
        self._a = _np.empty(shape, dtype=dtype, order=order)

    @classmethod
    def _of(cls, a):
        obj = cls.__new__(cls)
        obj._a = a
        return obj

    # ---- refusals and explicit transfers
    def __array__(self, *args, **kwargs):
        raise TypeError(_IMPLICIT)

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        if ufunc.__name__ not in _ufunc_names():
            raise TypeError(f"CuPy has no ufunc {ufunc.__name__}")
        args = _unwrap(inputs, f"numpy.{ufunc.__name__}")
        kw = {k: _unwrap(v, f"numpy.{ufunc.__name__}") for k, v in kwargs.items()}
        return _wrap(getattr(ufunc, method)(*args, **kw))

    def __array_function__(self, func, types, args, kwargs):
        name = func.__name__
        if _real() is not None and not hasattr(_real(), name):
            raise TypeError(f"numpy.{name} on a device array: CuPy has no {name}")
        return _wrap(func(*_unwrap(args, f"numpy.{name}"), **{k: _unwrap(v, f"numpy.{name}") for k, v in kwargs.items()}))

    def get(self, stream=None, order="C", out=None, blocking=True):
        _record("d2h", self._a.nbytes, "ndarray.get")
        if out is not None:
            out[...] = self._a
            return out
        return _np.array(self._a, order=order, copy=True)

    def set(self, arr, stream=None):
        if not isinstance(arr, _np.ndarray):
            raise TypeError(f"ndarray.set takes a numpy.ndarray, got {type(arr).__name__}")
        if arr.shape != self._a.shape or arr.dtype != self._a.dtype:
            raise ValueError("ndarray.set: shape and dtype must match")
        _record("h2d", arr.nbytes, "ndarray.set")
        self._a[...] = arr

    def item(self):
        _record("d2h", self._a.itemsize, "ndarray.item")
        return self._a.item()

    def tolist(self):
        _record("d2h", self._a.nbytes, "ndarray.tolist")
        return self._a.tolist()

    def _scalar(self, kind):
        if self._a.size != 1:
            raise TypeError(f"only size-1 arrays can be converted to Python {kind.__name__}")
        _record("d2h", self._a.itemsize, f"implicit {kind.__name__}()")
        return kind(self._a.reshape(()).item())

    def __float__(self):
        return self._scalar(float)

    def __int__(self):
        return self._scalar(int)

    def __index__(self):
        if self._a.dtype.kind not in "iu" or self._a.ndim != 0:
            raise TypeError("only integer scalar arrays can be converted to a scalar index")
        return self._scalar(int)

    def __bool__(self):
        return self._scalar(bool)

    def __complex__(self):
        return self._scalar(complex)

    def __repr__(self):
        _record("d2h", self._a.nbytes, "repr")
        return "array(" + repr(self._a)[6:] if repr(self._a).startswith("array(") else repr(self._a)

    __str__ = __repr__

    # ---- attributes
    shape = property(lambda self: self._a.shape)
    dtype = property(lambda self: self._a.dtype)
    ndim = property(lambda self: self._a.ndim)
    size = property(lambda self: self._a.size)
    nbytes = property(lambda self: self._a.nbytes)
    itemsize = property(lambda self: self._a.itemsize)
    strides = property(lambda self: self._a.strides)
    flags = property(lambda self: self._a.flags)
    T = property(lambda self: ndarray._of(self._a.T))
    real = property(lambda self: ndarray._of(self._a.real))
    imag = property(lambda self: ndarray._of(self._a.imag))
    data = property(lambda self: _Data(self._a))
    device = property(lambda self: cuda.Device(0))
    base = property(lambda self: None if self._a.base is None else ndarray._of(self._a.base))

    def __len__(self):
        return len(self._a)

    def __iter__(self):
        for row in self._a:
            yield _wrap(row)

    def __getitem__(self, key):
        return _wrap(self._a[_index(key)])

    def __setitem__(self, key, value):
        if isinstance(value, _np.ndarray) and value.ndim > 0:
            _record("h2d", value.nbytes, "setitem from host")
            v = value
        else:
            v = _unwrap(value, "ndarray.__setitem__")
        self._a[_index(key)] = v

    def __getattr__(self, name):
        # methods: astype, reshape, ravel, view, copy, sum, mean, max, min, any, all, argmax, ...
        real = _real()
        if real is not None and not hasattr(real.ndarray, name):
            raise AttributeError(f"cupy.ndarray has no attribute {name!r}")
        attr = getattr(self._a, name)
        if not callable(attr):
            return _wrap(attr)
        path = f"cupy.ndarray.{name}"
        used_names.add(path)

        def method(*args, **kwargs):
            _check_call(path, kwargs)
            kw = {k: _unwrap(v, path) for k, v in kwargs.items()}
            return _wrap(attr(*_unwrap(args, path), **kw))

        return method


def _index(key):
    if type(key) is ndarray:
        return key._a
    if isinstance(key, tuple):
        return tuple(k._a if type(k) is ndarray else k for k in key)
    return key


def _binop(name):
    op = getattr(_np.ndarray, name)

    def f(self, other):
        if isinstance(other, _np.ndarray):
            raise TypeError(f"Unsupported type {type(other)} (a host numpy.ndarray with a device array; CuPy refuses this)")
        other = other._a if type(other) is ndarray else other
        return _wrap(op(self._a, other))

    f.__name__ = name
    return f


for _name in ("__add__", "__radd__", "__sub__", "__rsub__", "__mul__", "__rmul__", "__truediv__", "__rtruediv__",
              "__floordiv__", "__rfloordiv__", "__mod__", "__rmod__", "__pow__", "__rpow__", "__matmul__",
              "__rmatmul__", "__and__", "__rand__", "__or__", "__ror__", "__xor__", "__rxor__", "__lshift__",
              "__rshift__", "__lt__", "__le__", "__gt__", "__ge__", "__eq__", "__ne__"):
    setattr(ndarray, _name, _binop(_name))


def _inplace(name):
    op = getattr(_np.ndarray, name)

    def f(self, other):
        if isinstance(other, _np.ndarray):
            raise TypeError(f"Unsupported type {type(other)} (a host numpy.ndarray with a device array)")
        op(self._a, other._a if type(other) is ndarray else other)
        return self

    f.__name__ = name
    return f


for _name in ("__iadd__", "__isub__", "__imul__", "__itruediv__", "__ifloordiv__", "__imod__", "__ipow__",
              "__iand__", "__ior__", "__ixor__"):
    setattr(ndarray, _name, _inplace(_name))

for _name in ("__neg__", "__pos__", "__abs__", "__invert__"):
    setattr(ndarray, _name, (lambda op: lambda self: _wrap(op(self._a)))(getattr(_np.ndarray, _name)))
ndarray.__hash__ = None


def asarray(a, dtype=None, order=None, *, blocking=False):
    used_names.add("cupy.asarray")
    if type(a) is ndarray:
        if (dtype is None or _np.dtype(dtype) == a.dtype) and order in (None, "K", "A"):
            return a
        return ndarray._of(_np.asarray(a._a, dtype=dtype, order=order))
    host = _np.array(a, dtype=dtype, order=order or "K", copy=True)
    _record("h2d", host.nbytes, "asarray")
    return ndarray._of(host)


def array(obj, dtype=None, copy=True, order="K", subok=False, ndmin=0, *, blocking=False):
    used_names.add("cupy.array")
    if type(obj) is ndarray:
        return ndarray._of(_np.array(obj._a, dtype=dtype, copy=copy, order=order, ndmin=ndmin))
    host = _np.array(obj, dtype=dtype, copy=True, order=order, ndmin=ndmin)
    _record("h2d", host.nbytes, "array")
    return ndarray._of(host)


def asnumpy(a, stream=None, order="C", out=None, *, blocking=True):
    used_names.add("cupy.asnumpy")
    if type(a) is ndarray:
        return a.get(order=order, out=out)
    return _np.asarray(a, order=order)


def get_array_module(*args):
    used_names.add("cupy.get_array_module")
    import sys  # noqa: PLC0415

    return sys.modules[__package__] if any(type(a) is ndarray for a in args) else _np  # the face: the xp module


def ascontiguousarray(a, dtype=None):
    used_names.add("cupy.ascontiguousarray")
    if type(a) is not ndarray:
        raise TypeError("cupy.ascontiguousarray takes a device array (move host data with asarray)")
    return ndarray._of(_np.ascontiguousarray(a._a, dtype=dtype))


class _Ufunc:
    """A NumPy ufunc behind CuPy's rules (``xp.add``, ``xp.add.at``, ``xp.maximum.reduce``)."""

    def __init__(self, uf, path):
        self._uf = uf
        self._path = path
        self.__name__ = uf.__name__

    def __call__(self, *args, **kwargs):
        _check_call(self._path, kwargs)
        return _wrap(self._uf(*_unwrap(args, self._path), **{k: _unwrap(v, self._path) for k, v in kwargs.items()}))

    def __getattr__(self, method):
        path = f"{self._path}.{method}"
        _check_name(path)
        used_names.add(path)
        fn = getattr(self._uf, method)

        def call(*args, **kwargs):
            return _wrap(fn(*_unwrap(args, path), **{k: _unwrap(v, path) for k, v in kwargs.items()}))

        return call


def _wrap_function(fn, path: str):
    @functools.wraps(fn)
    def call(*args, **kwargs):
        _check_call(path, kwargs)
        kw = {k: _unwrap(v, path) for k, v in kwargs.items()}
        return _wrap(fn(*_unwrap(args, path), **kw))

    return call
