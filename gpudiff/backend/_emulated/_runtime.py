"""``cuda``: the device, streams, events, and the ``runtime``/``nvrtc`` namespaces, each lookup
checked against the real CuPy.
"""

from __future__ import annotations

import threading
import time
from types import ModuleType

from ._realcupy import _check_name, used_names

DEVICE_NAME = "gpudiff emulated GPU (CPU)"
_SM_COUNT = 4


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
