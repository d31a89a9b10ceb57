"""Run CUDA kernels (``kernels/*.cu``) on the CPU, under an emulation of CUDA's execution model.

The real ``.cu`` source is compiled with the system C++ compiler against ``cuda_emu.h`` (the CUDA
built-ins for the host: blocks of fiber threads, ``__shared__`` memory per block, ``__syncthreads``
as a real barrier, warp-synchronous shuffles, atomics) and called through :mod:`ctypes`. It exists
so that CI, which has no GPU, executes every kernel and compares it with the NumPy reference, and
so that ``--backend emulated-gpu`` can run a GPU job's code path on a login node. It is slow (a
block's threads take turns on one core) and proves results, not speed.

No well-kept emulator runs unmodified CUDA C++ with these features from the registries we have
(HIP-CPU runs HIP source, not ``__syncthreads``-and-``extern "C"`` CUDA as NVRTC takes it), so
this is a small one of our own; ``tests/unit/backend/test_cuda_emu.py`` shows it catches what a device
would show: a missing barrier gives a wrong sum, a divergent barrier is an error.

Use::

    mod = compile_module(source, options=("-std=c++17",))
    k = mod.get_function("pair_stats_u8_i32")
    k((grid,), (256,), (a, b, np.int32(n), ...), shared_mem=nbytes)

Arguments are checked strictly at launch (on a device a wrong type is silent garbage): a pointer
parameter takes a NumPy array of exactly its element type, a scalar parameter a NumPy scalar of
exactly its type; Python ``int``/``float``/``bool`` are taken as ``int64``/``float64``/``bool``,
as CuPy passes them.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

import numpy as np

__all__ = ["EmuError", "EmuModule", "EmuKernel", "compile_module", "cache_dir", "SCHEDULES"]

HEADER = Path(__file__).with_name("cuda_emu.h")
SCHEDULES = ("forward", "reverse", "random")
MAX_THREADS_PER_BLOCK = 1024
MAX_SHARED_BYTES = 48 * 1024

#: C type code (from the header's ``code_of``) -> (C spelling, NumPy dtype, ctypes type)
_CODES = {
    "b1": ("bool", np.dtype(np.bool_), ctypes.c_bool),
    "i1": ("signed char", np.dtype(np.int8), ctypes.c_int8),
    "u1": ("unsigned char", np.dtype(np.uint8), ctypes.c_uint8),
    "i2": ("short", np.dtype(np.int16), ctypes.c_int16),
    "u2": ("unsigned short", np.dtype(np.uint16), ctypes.c_uint16),
    "i4": ("int", np.dtype(np.int32), ctypes.c_int32),
    "u4": ("unsigned int", np.dtype(np.uint32), ctypes.c_uint32),
    "i8": ("long long", np.dtype(np.int64), ctypes.c_int64),
    "u8": ("unsigned long long", np.dtype(np.uint64), ctypes.c_uint64),
    "f4": ("float", np.dtype(np.float32), ctypes.c_float),
    "f8": ("double", np.dtype(np.float64), ctypes.c_double),
}

_KERNEL_RE = re.compile(
    r'extern\s*"C"\s*__global__\s+void\s+(?:__launch_bounds__\s*\(\s*([^),]+)[^)]*\)\s*)?([A-Za-z_]\w*)\s*\('
)
_EXTERN_SHARED_RE = re.compile(r"extern\s+__shared__\s+(?:__align__\s*\(\s*\d+\s*\)\s*)?([^;\[\]]+?)\s+(\w+)\s*\[\s*\]\s*;")
_SHARED_RE = re.compile(r"(?<![\w])__shared__\s+(?:__align__\s*\(\s*\d+\s*\)\s*)?([^;\[\]=]+?)\s+(\w+)\s*((?:\[[^\]]*\]\s*)*);")

_lock = threading.Lock()


class EmuError(RuntimeError):
    """A kernel could not be built or failed under the emulator (divergent barrier, deadlock, launch)."""


def cache_dir() -> Path:
    """Where compiled modules are kept: ``$GPUDIFF_EMU_CACHE`` or ``~/.cache/gpudiff/cuda_emu``."""
    env = os.environ.get("GPUDIFF_EMU_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "gpudiff" / "cuda_emu"


def _rewrite_shared(code: str) -> str:
    """``__shared__`` declarations -> per-block buffers of the emulator; line count unchanged."""
    code = _EXTERN_SHARED_RE.sub(
        lambda m: f"{m.group(1)}* {m.group(2)} = reinterpret_cast<{m.group(1)}*>(::emu::dyn_shared());", code
    )

    def static(m):
        typ, name, dims = m.group(1).strip(), m.group(2), re.sub(r"\s+", "", m.group(3))
        line = code.count("\n", 0, m.start()) + 1
        return f'auto& {name} = ::emu::shared_var<{typ}{dims}>("{name}@{line}");'

    return _SHARED_RE.sub(static, code)


def _compiler() -> str:
    cxx = os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++") or shutil.which("clang++")
    if not cxx:
        raise EmuError("the CUDA emulator needs a C++17 compiler: install g++ (apt install g++) or set CXX")
    return cxx


def _compiler_version(cxx: str) -> str:
    try:
        return subprocess.run([cxx, "--version"], capture_output=True, text=True, timeout=30).stdout.splitlines()[0]
    except (OSError, subprocess.SubprocessError, IndexError):
        return cxx


def _defines(options) -> list[str]:
    out = []
    for o in options:
        o = str(o)
        if o.startswith(("-D", "--define-macro=")):
            out.append("-D" + o.split("=", 1)[1] if o.startswith("--define-macro=") else o)
    return out


def _std(options) -> str:
    for o in options:
        o = str(o)
        if o.startswith(("-std=", "--std=")):
            v = o.split("=", 1)[1]
            return "-std=" + (v if v in ("c++17", "c++20") else "c++17")
    return "-std=c++17"


def _kernels_in(code: str, cxx: str, options) -> list[tuple[str, int | None]]:
    """(name, launch bound) of every ``extern "C" __global__`` kernel, after macro expansion."""
    r = subprocess.run(
        [cxx, "-E", "-P", "-x", "c++", _std(options), *_defines(options), "-"],
        input=code, capture_output=True, text=True, timeout=120,
    )
    if r.returncode != 0:
        raise EmuError(f"preprocessing the kernel source failed: {_first_error(r.stderr)}")
    text = re.sub(r"\s+", " ", r.stdout)
    found = []
    for m in _KERNEL_RE.finditer(text):
        bound = m.group(1)
        try:
            bound = int(eval(bound, {"__builtins__": {}}, {})) if bound else None  # noqa: S307 - a constant expression
        except Exception:  # noqa: BLE001
            bound = None
        found.append((m.group(2), bound))
    return found


def _first_error(stderr: str) -> str:
    for line in stderr.splitlines():
        if "error" in line:
            return line.strip()
    return (stderr.strip().splitlines() or ["(no compiler output)"])[0]


def _translation_unit(code: str, extra_source: str, kernels, source_name: str) -> str:
    body = _rewrite_shared(code)
    extra = _rewrite_shared(extra_source) if extra_source else ""
    infos = ",\n".join(f'    ::emu::make_info("{n}", &{n})' for n, _ in kernels)
    return f"""#line 1 "{source_name}"
{body}
#line 1 "{source_name}.extra"
{extra}
#line 1 "{source_name}.table"
static const ::emu::KernelInfo emu_table[] = {{
{infos}
}};
extern "C" {{
int emu_num_kernels() {{ return (int)(sizeof(emu_table) / sizeof(emu_table[0])); }}
const char* emu_kernel_name(int i) {{ return emu_table[i].name; }}
const char* emu_kernel_sig(int i) {{ return emu_table[i].sig.c_str(); }}
int emu_launch(int i, const unsigned* grid, const unsigned* block, unsigned long long shmem, int schedule,
               unsigned long long seed, int workers, void** args, char* err, unsigned long long errlen) {{
    return ::emu::launch(emu_table[i].name, emu_table[i].invoke, emu_table[i].fn, grid, block, (size_t)shmem,
                         schedule, seed, workers, args, err, (size_t)errlen);
}}
}}
"""


class EmuKernel:
    """One ``extern "C"`` kernel of an :class:`EmuModule`; call it like a ``cupy.RawKernel``."""

    def __init__(self, module: "EmuModule", index: int, name: str, signature: str, launch_bound: int | None):
        self._module = module
        self._index = index
        self.name = name
        self.launch_bound = launch_bound
        self._codes = tuple(s for s in signature.split(",") if s)
        self.param_types = tuple(_c_spelling(c) for c in self._codes)

    def __repr__(self):
        return f"<EmuKernel {self.name}({', '.join(self.param_types)})>"

    def _arg(self, i: int, code: str, value, keep: list):
        const = code.startswith("const ")
        base = code.removeprefix("const ")
        where = f"kernel {self.name}: argument {i} ({self.param_types[i]})"
        if base.endswith("*"):
            want = _CODES[base[:-1]][1] if base[:-1] in _CODES else None
            if not isinstance(value, np.ndarray):
                raise TypeError(f"{where} got {type(value).__name__}: a pointer parameter takes a device array")
            if want is None or value.dtype != want:
                raise TypeError(f"{where} got an array of {value.dtype}")
            if not const and not value.flags.writeable:
                raise TypeError(f"{where} got a read-only array for a pointer the kernel may write")
            p = ctypes.c_void_p(value.ctypes.data)
            keep.append((p, value))
            return ctypes.cast(ctypes.pointer(p), ctypes.c_void_p)
        spelling, want, ctype = _CODES[base]
        if isinstance(value, (bool, np.bool_)):
            got = np.dtype(np.bool_)
        elif isinstance(value, int):
            got = np.dtype(np.int64)  # CuPy passes a Python int as int64
        elif isinstance(value, float):
            got = np.dtype(np.float64)
        elif isinstance(value, np.generic):
            got = value.dtype
        else:
            raise TypeError(f"{where} got {type(value).__name__}")
        if got != want:
            raise TypeError(f"{where} got {got} (pass np.{want.name}(...))")
        c = ctype(value.item() if isinstance(value, np.generic) else value)
        keep.append(c)
        return ctypes.cast(ctypes.pointer(c), ctypes.c_void_p)

    def __call__(self, grid, block, args, *, shared_mem: int = 0, schedule: str | None = None, seed: int = 0,
                 workers: int | None = None):
        g, b = _dims(grid, "grid"), _dims(block, "block")
        nthreads = b[0] * b[1] * b[2]
        if nthreads > MAX_THREADS_PER_BLOCK:
            raise EmuError(f"kernel {self.name}: a block of {nthreads} threads (> {MAX_THREADS_PER_BLOCK})")
        if self.launch_bound is not None and nthreads > self.launch_bound:
            raise EmuError(f"kernel {self.name}: a block of {nthreads} threads exceeds its __launch_bounds__({self.launch_bound})")
        if not 0 <= int(shared_mem) <= MAX_SHARED_BYTES:
            raise EmuError(f"kernel {self.name}: {shared_mem} bytes of dynamic shared memory (at most {MAX_SHARED_BYTES})")
        args = tuple(args)
        if len(args) != len(self._codes):
            raise TypeError(f"kernel {self.name}: takes {len(self._codes)} arguments, got {len(args)}")
        keep: list = []
        ptrs = (ctypes.c_void_p * max(1, len(args)))()
        for i, (code, value) in enumerate(zip(self._codes, args)):
            ptrs[i] = self._arg(i, code, value, keep)
        sched, seed = _schedule(schedule, seed)
        if workers is None:
            workers = int(os.environ.get("GPUDIFF_EMU_THREADS", "2"))
        err = ctypes.create_string_buffer(1024)
        grid_c = (ctypes.c_uint * 3)(*g)
        block_c = (ctypes.c_uint * 3)(*b)
        rc = self._module._lib.emu_launch(self._index, grid_c, block_c, int(shared_mem), sched, seed, int(workers),
                                          ptrs, err, len(err))
        if rc != 0:
            raise EmuError(f"kernel {self.name}: {err.value.decode(errors='replace')}")


def _c_spelling(code: str) -> str:
    const = code.startswith("const ")
    base = code.removeprefix("const ")
    ptr = base.endswith("*")
    name = _CODES.get(base.rstrip("*"), (base.rstrip("*"),))[0]
    return ("const " if const else "") + name + ("*" if ptr else "")


def _dims(d, what: str) -> tuple[int, int, int]:
    t = (d,) if isinstance(d, (int, np.integer)) else tuple(d)
    if not 1 <= len(t) <= 3:
        raise EmuError(f"{what} must have 1 to 3 dimensions, got {d!r}")
    t = tuple(int(v) for v in t) + (1,) * (3 - len(t))
    if any(v < 1 for v in t):
        raise EmuError(f"{what} dimensions must be >= 1, got {d!r}")
    return t


def _schedule(schedule: str | None, seed: int) -> tuple[int, int]:
    s = schedule or os.environ.get("GPUDIFF_EMU_SCHEDULE", "forward")
    if s.startswith("random"):
        if ":" in s:
            seed = int(s.split(":", 1)[1])
        return 2, int(seed) & (2**64 - 1)
    if s not in SCHEDULES:
        raise EmuError(f"unknown schedule {s!r}: use forward, reverse or random[:SEED]")
    return SCHEDULES.index(s), 0


class EmuModule:
    """A compiled kernel source; ``get_function(name)`` gives an :class:`EmuKernel`."""

    def __init__(self, path: Path, bounds: dict[str, int | None]):
        self.path = path
        self._lib = ctypes.CDLL(str(path), mode=getattr(os, "RTLD_LOCAL", 0))
        lib = self._lib
        lib.emu_num_kernels.restype = ctypes.c_int
        lib.emu_kernel_name.restype = ctypes.c_char_p
        lib.emu_kernel_name.argtypes = [ctypes.c_int]
        lib.emu_kernel_sig.restype = ctypes.c_char_p
        lib.emu_kernel_sig.argtypes = [ctypes.c_int]
        lib.emu_launch.restype = ctypes.c_int
        lib.emu_launch.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_ulonglong, ctypes.c_int,
                                   ctypes.c_ulonglong, ctypes.c_int, ctypes.c_void_p, ctypes.c_char_p, ctypes.c_ulonglong]
        self._kernels = {}
        for i in range(lib.emu_num_kernels()):
            name = lib.emu_kernel_name(i).decode()
            self._kernels[name] = EmuKernel(self, i, name, lib.emu_kernel_sig(i).decode(), bounds.get(name))
        self.kernel_names = tuple(self._kernels)

    def get_function(self, name: str) -> EmuKernel:
        try:
            return self._kernels[name]
        except KeyError:
            raise LookupError(f"named symbol not found: {name}") from None


_modules: dict[str, EmuModule] = {}


def compile_module(code: str, *, options=(), name: str = "module", extra_source: str = "",
                   coverage: bool | None = None) -> EmuModule:
    """Compile CUDA source for the emulator (cached on disk by content) and load it.

    ``coverage`` (default: ``$GPUDIFF_EMU_COVERAGE`` set) builds with ``-O0 --coverage`` so that
    ``scripts/kernel-coverage`` can report the kernel lines executed.
    """
    if coverage is None:
        coverage = bool(os.environ.get("GPUDIFF_EMU_COVERAGE"))
    cxx = _compiler()
    header = HEADER.read_text(encoding="utf-8")
    std = _std(options)
    flags = [std, "-fPIC", "-shared", "-ffp-contract=off", "-fno-fast-math", "-w", "-pthread",
             *(["-O0", "--coverage"] if coverage else ["-O1"]), *_defines(options)]
    key = hashlib.sha256("\0".join([header, code, extra_source, name, " ".join(flags),
                                    _compiler_version(cxx)]).encode()).hexdigest()[:24]
    with _lock:
        mod = _modules.get(key)
        if mod is not None:
            return mod
        folder = cache_dir() / ("cov-" + key if coverage else key)
        so = folder / f"{_safe(name)}.so"
        kernels = _kernels_in(code + "\n" + extra_source, cxx, options)
        if not so.is_file():
            folder.mkdir(parents=True, exist_ok=True)
            tu = folder / f"{_safe(name)}.emu.cpp"
            source_name = str(Path(name).resolve()) if Path(name).is_file() else name
            text = _translation_unit(code, extra_source, kernels, source_name)
            fd, tmp_tu = tempfile.mkstemp(dir=folder, suffix=".cpp")
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(text)
            os.replace(tmp_tu, tu)
            fd, tmp_so = tempfile.mkstemp(dir=folder, suffix=".so")
            os.close(fd)
            cmd = [cxx, *flags, "-include", str(HEADER), "-x", "c++", str(tu), "-o", tmp_so]
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=folder)
            if r.returncode != 0:
                os.unlink(tmp_so)
                raise EmuError(f"compiling {name} for the CUDA emulator failed: {_first_error(r.stderr)}")
            os.replace(tmp_so, so)
        mod = EmuModule(so, dict(kernels))
        _modules[key] = mod
        return mod


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", Path(name).name) or "module"
