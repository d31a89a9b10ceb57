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
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import threading
import time
from types import ModuleType, SimpleNamespace

import numpy as _np

__all__ = ["ndarray", "asarray", "array", "asnumpy", "get_array_module", "cuda", "transfers", "DEVICE_NAME"]

DEVICE_NAME = "gpudiff emulated GPU (CPU)"
_SM_COUNT = 4
_IMPLICIT = ("Implicit conversion to a NumPy array is not allowed. "
             "Please use `.get()` to construct a NumPy array explicitly.")


# --------------------------------------------------------------------------------------------------
# the real CuPy as the oracle of names and keywords


@functools.lru_cache(maxsize=1)
def _real():
    try:
        import cupy  # noqa: PLC0415
        import cupyx.scipy.fft  # noqa: F401, PLC0415
        import cupyx.scipy.ndimage  # noqa: F401, PLC0415

        return cupy
    except Exception:  # noqa: BLE001 - not installed: no oracle, no check
        return None


@functools.lru_cache(maxsize=None)
def _real_params(path: str):
    """Keyword names the real CuPy callable at ``path`` takes (None: not checkable / any)."""
    cp = _real()
    if cp is None:
        return None
    obj = _resolve(path)
    if obj is _MISSING:
        return _MISSING
    if type(obj).__name__ == "ufunc":
        return frozenset({"out", "dtype", "casting"})
    try:
        sig = inspect.signature(obj)
    except (TypeError, ValueError):
        return None
    if any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values()):
        return None
    return frozenset(p.name for p in sig.parameters.values() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY))


_MISSING = object()


def _resolve(path: str):
    """The real CuPy object at a dotted path ('cupy.sum', 'cupyx.scipy.fft.rfft2'), or _MISSING."""
    import sys  # noqa: PLC0415

    head, _, rest = path.partition(".")
    obj = sys.modules.get(head)
    if obj is None:
        return _MISSING
    for part in rest.split(".") if rest else ():
        obj = getattr(obj, part, _MISSING)
        if obj is _MISSING:
            return _MISSING
    return obj


def _check_call(path: str, kwargs) -> None:
    params = _real_params(path)
    if params is _MISSING:
        raise AttributeError(f"CuPy has no {path}: the GPU path would fail here")
    if params is not None:
        bad = [k for k in kwargs if k not in params]
        if bad:
            raise TypeError(f"{path}() got an unexpected keyword argument {bad[0]!r} (not in CuPy's signature)")


def _check_name(path: str) -> None:
    cp = _real()
    if cp is not None and _resolve(path) is _MISSING:
        raise AttributeError(f"CuPy has no {path}: the GPU path would fail here")


#: every CuPy name the package reached on this device (for tests and the API report)
used_names: set[str] = set()


# --------------------------------------------------------------------------------------------------
# transfers


class TransferLog:
    """Host <-> device copies seen while active: counts and bytes per direction, with call tags."""

    def __init__(self):
        self.h2d_count = self.h2d_bytes = self.d2h_count = self.d2h_bytes = 0
        self.events: list[tuple[str, int, str]] = []

    def add(self, direction: str, nbytes: int, tag: str):
        if direction == "h2d":
            self.h2d_count += 1
            self.h2d_bytes += nbytes
        else:
            self.d2h_count += 1
            self.d2h_bytes += nbytes
        if len(self.events) < 100_000:
            self.events.append((direction, nbytes, tag))


_logs: list[TransferLog] = []
_log_lock = threading.Lock()


def _record(direction: str, nbytes: int, tag: str) -> None:
    if _logs:
        with _log_lock:
            for log in _logs:
                log.add(direction, int(nbytes), tag)


@contextlib.contextmanager
def transfers():
    """``with transfers() as log:`` counts every host <-> device copy made inside (all threads)."""
    log = TransferLog()
    with _log_lock:
        _logs.append(log)
    try:
        yield log
    finally:
        with _log_lock:
            _logs.remove(log)


# --------------------------------------------------------------------------------------------------
# the device array


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


@functools.lru_cache(maxsize=1)
def _ufunc_names():
    cp = _real()
    names = {n for n in dir(_np) if isinstance(getattr(_np, n), _np.ufunc)}
    if cp is not None:
        names = {n for n in names if hasattr(cp, n)}
    return frozenset(getattr(_np, n).__name__ for n in names)


# --------------------------------------------------------------------------------------------------
# module-level functions


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

    return sys.modules[__name__] if any(type(a) is ndarray for a in args) else _np


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


# --------------------------------------------------------------------------------------------------
# kernels


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


# --------------------------------------------------------------------------------------------------
# cuda: devices, streams, events


_tls = threading.local()


class _Stream:
    def __init__(self, null=False, non_blocking=False, ptds=False, priority=None):
        self.ptr = 0 if null else id(self)
        self.non_blocking = non_blocking

    def synchronize(self):
        return None

    def use(self):
        _tls.stream = self
        return self

    def __enter__(self):
        stack = getattr(_tls, "streams", None)
        if stack is None:
            stack = _tls.streams = []
        stack.append(self)
        return self

    def __exit__(self, *exc):
        _tls.streams.pop()
        return False

    def record(self, event=None):
        event = event or _Event()
        event.record(self)
        return event

    @property
    def done(self):
        return True


_NULL_STREAM = _Stream(null=True)


def _get_current_stream(device_id=None):
    stack = getattr(_tls, "streams", None)
    return stack[-1] if stack else getattr(_tls, "stream", _NULL_STREAM)


class _Event:
    def __init__(self, block=False, disable_timing=False, interprocess=False):
        self.t = None

    def record(self, stream=None):
        self.t = time.perf_counter()

    def synchronize(self):
        return None

    @property
    def done(self):
        return True


def _get_elapsed_time(start, end):
    return (end.t - start.t) * 1e3


class _Device:
    def __init__(self, device=None):
        device = 0 if device is None else int(device)
        if device != 0:
            raise RuntimeError(f"cudaErrorInvalidDevice: the emulated GPU is device 0 only, not {device}")
        self.id = 0
        self.attributes = {"MultiProcessorCount": _SM_COUNT, "MaxThreadsPerBlock": 1024,
                           "MaxSharedMemoryPerBlock": 48 * 1024, "WarpSize": 32}
        self.compute_capability = "90"

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def use(self):
        return self

    def synchronize(self):
        return None

    def __int__(self):
        return 0

    def __eq__(self, other):
        return isinstance(other, _Device) and other.id == self.id

    def __hash__(self):
        return 0


def _props(device=0):
    return {"name": DEVICE_NAME.encode(), "totalGlobalMem": 8 << 30, "multiProcessorCount": _SM_COUNT,
            "major": 9, "minor": 0, "maxThreadsPerBlock": 1024, "sharedMemPerBlock": 48 * 1024,
            "warpSize": 32, "clockRate": 0, "memoryClockRate": 0, "memoryBusWidth": 0}


def _named(ns_path, **members):
    """A namespace whose attribute lookups are checked against the real CuPy and recorded."""

    class _NS(ModuleType):
        def __getattribute__(self, name):
            if not name.startswith("_"):
                path = f"{ns_path}.{name}"
                _check_name(path)
                used_names.add(path)
            return ModuleType.__getattribute__(self, name)

    ns = _NS(ns_path)
    for k, v in members.items():
        setattr(ns, k, v)
    return ns


runtime = _named("cupy.cuda.runtime", getDeviceCount=lambda: 1, getDeviceProperties=_props,
                 runtimeGetVersion=lambda: 13000, driverGetVersion=lambda: 13000, getDevice=lambda: 0,
                 deviceSynchronize=lambda: None)
nvrtc = _named("cupy.cuda.nvrtc", getVersion=lambda: (0, 0))
cuda = _named("cupy.cuda", Device=_Device, Stream=_Stream, Event=_Event, get_current_stream=_get_current_stream,
              get_elapsed_time=_get_elapsed_time, runtime=runtime, nvrtc=nvrtc, is_available=lambda: True)


# --------------------------------------------------------------------------------------------------
# cupyx: pinned memory, scipy.ndimage, scipy.fft


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
