"""Every CUDA kernel the package asks for exists, and every launch passes what it declares.

The kernels of ``kernels/*.cu`` are declared through macros (``PS_FAMILY`` / ``PS_KERNEL`` in
pair_stats.cu), so their names and parameter types are taken from the real toolchain, not
from a hand-written parser:

* ``g++ -E`` expands the macros; each ``extern "C" __global__`` declaration in the output gives a
  kernel's name, its parameter names and its ``__launch_bounds__`` expression;
* a generated C++ translation unit includes the ``.cu`` itself (CUDA keywords defined away, the
  few device built-ins it calls stubbed) and prints, for each kernel, every parameter type of
  its function pointer as the compiler resolved it (typedefs such as ``u64`` and
  ``PsTraits<T>::Acc`` included): pointer or value, const, kind (u/i/f/b) and size.

Then (a) every name the loader can ask for (``_sums_cuda._cuda_kernel_name`` over dtypes, channels,
sizes and bin counts, and any literal passed to ``_kernels.get_function``) must be a kernel, and
(b) the launch in ``_sums_cuda._pair_sums_cuda`` is run for real, with ``_kernels.get_function``
returning a recorder and a minimal NumPy-backed device namespace written here, for every dtype x
C x histogram flavour x index width; each recorded argument (array dtype, NumPy scalar type,
Python scalar as CuPy converts it) must match the kernel's parameter in count, order and type,
and the launch configuration must fit the kernel (block size, shared memory).
"""

from __future__ import annotations

import ast
import inspect
import re
import shutil
import subprocess
import types
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pytest

from gpudiff.backend import _kernels
from gpudiff.pair import _sums as metrics
from gpudiff.pair import _sums_cuda

GXX = shutil.which("g++")
NO_GXX = "needs g++: the C++ preprocessor and compiler read the kernels' declarations (CI has it)"

PACKAGE = Path(__file__).resolve().parents[3] / "gpudiff"

#: The device built-ins the kernels call, as host stand-ins: only their types matter (nothing
#: runs). A kernel using a built-in not here fails to compile; add its stub.
CUDA_PRELUDE = r"""
#include <cstdio>
#include <cstring>
#include <math.h>
#include <type_traits>
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __noinline__
#define __launch_bounds__(...)
#define __shared__
#define __constant__
struct gd_dim3 { unsigned x, y, z; };
static gd_dim3 threadIdx, blockIdx, blockDim, gridDim;
static const int warpSize = 32;
inline void __syncthreads() {}
inline void __syncwarp(unsigned = 0xffffffffu) {}
template <class T> T __shfl_down_sync(unsigned, T v, int, int = 32) { return v; }
template <class T> T __shfl_xor_sync(unsigned, T v, int, int = 32) { return v; }
template <class T> T __shfl_sync(unsigned, T v, int, int = 32) { return v; }
template <class T, class U> T atomicAdd(T* p, U v) { T o = *p; *p = (T)(o + v); return o; }
template <class T, class U> T atomicMax(T* p, U v) { T o = *p; if ((T)v > o) *p = (T)v; return o; }
template <class T, class U> T atomicMin(T* p, U v) { T o = *p; if ((T)v < o) *p = (T)v; return o; }
template <class T> T __ldg(const T* p) { return *p; }
inline double __dadd_rn(double a, double b) { return a + b; }
inline double __dsub_rn(double a, double b) { return a - b; }
inline double __dmul_rn(double a, double b) { return a * b; }
inline double __ddiv_rn(double a, double b) { return a / b; }
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fdiv_rn(float a, float b) { return a / b; }
inline long long __double_as_longlong(double d) { long long r; std::memcpy(&r, &d, sizeof r); return r; }
inline double __longlong_as_double(long long i) { double r; std::memcpy(&r, &i, sizeof r); return r; }
inline int __float_as_int(float f) { int r; std::memcpy(&r, &f, sizeof r); return r; }
"""

REPORTER = r"""
template <class T> void gd_param(int i) {
  typedef typename std::remove_pointer<T>::type P;
  typedef typename std::remove_cv<P>::type B;
  const char kind = std::is_same<B, bool>::value ? 'b'
                  : std::is_floating_point<B>::value ? 'f'
                  : std::is_integral<B>::value ? (std::is_signed<B>::value ? 'i' : 'u') : '?';
  std::printf("P\t%d\t%d\t%d\t%c\t%zu\t%s\n", i, (int)std::is_pointer<T>::value, (int)std::is_const<P>::value,
              kind, sizeof(B), __PRETTY_FUNCTION__);
}
template <class F> struct gd_sig;
template <class R, class... A> struct gd_sig<R (*)(A...)> {
  static void print(const char* name) {
    std::printf("K\t%s\t%zu\t%d\n", name, sizeof...(A), (int)std::is_void<R>::value);
    int i = 0;
    (void)i;
    int dummy[] = {0, (gd_param<A>(i++), 0)...};
    (void)dummy;
  }
};
"""

SHARED_BYTES_LIMIT = 48 * 1024  # without cudaFuncSetAttribute opt-in (gpudiff never opts in)
MAX_BLOCK = 1024


# --------------------------------------------------------------------------------------------------
# the kernels, from the compiler


@dataclass(frozen=True)
class Param:
    index: int
    name: str
    pointer: bool
    const: bool
    kind: str  # u i f b (of the pointee for pointers)
    size: int  # bytes (of the pointee for pointers)
    cxx: str  # as the compiler spells it: "long long unsigned int*"

    @property
    def dtype(self) -> np.dtype | None:
        try:
            return np.dtype("?" if self.kind == "b" else f"{self.kind}{self.size}")
        except TypeError:
            return None


@dataclass(frozen=True)
class Kernel:
    family: str
    name: str
    params: tuple[Param, ...]
    launch_bounds: int | None


def _matching(text: str, start: int, open_="(", close=")") -> int:
    """Index just past the bracket closing the one at ``start``."""
    depth = 0
    for i in range(start, len(text)):
        if text[i] == open_:
            depth += 1
        elif text[i] == close:
            depth -= 1
            if depth == 0:
                return i + 1
    raise ValueError(f"unbalanced {open_}{close} from offset {start}")


def _split_top(text: str) -> list[str]:
    """Split a parameter list at the commas outside <>, (), [], {}."""
    out, depth, cur = [], 0, ""
    for ch in text:
        if ch in "<([{":
            depth += 1
        elif ch in ">)]}":
            depth -= 1
        elif ch == "," and depth == 0:
            out.append(cur.strip())
            cur = ""
            continue
        cur += ch
    return [p for p in [*out, cur.strip()] if p]


_EXTERN_C = re.compile(r'extern\s*"C"\s*')
_GLOBAL = re.compile(r"\b__global__\b")


def kernel_declarations(expanded: str) -> list[tuple[str, list[str], str | None]]:
    """(name, parameter names, launch-bounds expression) of every ``extern "C" __global__``
    function in preprocessed source (the CUDA keywords left as tokens): declared right after
    ``extern "C"`` or inside an ``extern "C" { ... }`` block."""
    blocks, direct = [], set()
    for m in _EXTERN_C.finditer(expanded):
        if expanded.startswith("{", m.end()):
            blocks.append((m.end(), _matching(expanded, m.end(), "{", "}")))
        else:
            direct.add(m.end())
    out = []
    for m in _GLOBAL.finditer(expanded):
        if m.start() not in direct and not any(a < m.start() < b for a, b in blocks):
            continue  # a C++ (mangled, e.g. template) kernel: not loadable by plain name
        pos, bounds = m.end(), None
        while True:  # `void` and `__launch_bounds__(...)`, in either order
            v = re.compile(r"\s*void\b").match(expanded, pos)
            if v:
                pos = v.end()
                continue
            lb = re.compile(r"\s*__launch_bounds__\s*\(").match(expanded, pos)
            if lb:
                close_at = _matching(expanded, lb.end() - 1)
                bounds = _split_top(expanded[lb.end():close_at - 1])[0]
                pos = close_at
                continue
            break
        nm = re.compile(r"\s*([A-Za-z_]\w*)\s*\(").match(expanded, pos)
        if not nm:
            raise ValueError(f"cannot read the kernel declared at: {expanded[m.start():m.start() + 200]!r}")
        close_at = _matching(expanded, nm.end() - 1)
        names = [re.findall(r"[A-Za-z_]\w*", p)[-1] for p in _split_top(expanded[nm.end():close_at - 1])]
        out.append((nm.group(1), names, bounds))
    return out


def _run(cmd, **kw) -> str:
    res = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=120, **kw)
    if res.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, cmd))} failed ({res.returncode}):\n{res.stderr[-4000:]}")
    return res.stdout


def read_family(path: Path, workdir: Path) -> dict[str, Kernel]:
    """The kernels of one ``.cu`` file, with their parameter types as the compiler sees them."""
    expanded = _run([GXX, "-E", "-P", "-x", "c++", "-std=c++17", str(path)])
    decls = kernel_declarations(expanded)
    assert decls, f"{path.name}: no extern \"C\" __global__ kernel found after preprocessing"
    lines = [CUDA_PRELUDE, f'#include "{path}"', REPORTER, "int main() {"]
    for name, _, bounds in decls:
        lines.append(f'  gd_sig<decltype(&{name})>::print("{name}");')
        if bounds is not None:
            lines.append(f'  std::printf("L\\t{name}\\t%d\\n", (int)({bounds}));')
    lines += ["  return 0;", "}"]
    src = workdir / f"{path.stem}_signatures.cpp"
    src.write_text("\n".join(lines), encoding="utf-8")
    exe = workdir / f"{path.stem}_signatures"
    # --gc-sections drops the (never called) kernel bodies, with their extern __shared__ arrays
    _run([GXX, "-std=c++17", "-O0", "-w", "-ffunction-sections", "-fdata-sections", "-Wl,--gc-sections",
          str(src), "-o", str(exe)])
    params: dict[str, list[Param]] = {}
    counts: dict[str, int] = {}
    bounds_of: dict[str, int] = {}
    current = None
    for row in _run([str(exe)]).splitlines():
        f = row.split("\t")
        if f[0] == "K":
            current = f[1]
            counts[current] = int(f[2])
            assert f[3] == "1", f"{path.name}: kernel {current} does not return void"
            params[current] = []
        elif f[0] == "P":
            cxx = re.search(r"\[with T = (.*)\]$", f[6])
            params[current].append(Param(int(f[1]), "", f[2] == "1", f[3] == "1", f[4], int(f[5]),
                                         cxx.group(1) if cxx else f[6]))
        elif f[0] == "L":
            bounds_of[f[1]] = int(f[2])
    out = {}
    for name, pnames, _ in decls:
        ps = params[name]
        assert len(ps) == counts[name] == len(pnames), (name, pnames, ps)
        ps = tuple(replace(p, name=n) for p, n in zip(ps, pnames, strict=True))
        out[name] = Kernel(path.stem, name, ps, bounds_of.get(name))
    return out


@pytest.fixture(scope="module")
def kernels(tmp_path_factory) -> dict[str, Kernel]:
    if GXX is None:
        pytest.skip(NO_GXX)
    work = tmp_path_factory.mktemp("kernel_signatures")
    out: dict[str, Kernel] = {}
    paths = _kernels.kernel_source_paths()
    assert paths, "no kernels/*.cu found"
    for path in paths:
        fam = read_family(path, work)
        clash = set(fam) & set(out)
        assert not clash, f"kernel names in two families: {sorted(clash)}"
        out.update(fam)
    return out


# --------------------------------------------------------------------------------------------------
# (a) every name the loader can ask for


DTYPES = ("uint8", "uint16", "float32", "float64")


def loader_names() -> dict[str, tuple]:
    """Every kernel name ``_sums_cuda._cuda_kernel_name`` can return -> one input giving it."""
    out = {}
    for dt in DTYPES:
        for C in (1, 2, 3, 4):
            for n in (1, 1000 * C, 1 << 30, (1 << 30) + 1, 1 << 34):
                # no histogram, small, at the shared-memory edge, one past it, the largest
                edge = _sums_cuda._SHARED_HIST_BYTES // (2 * C * 4)
                for bins in (0, 1, 256, edge, edge + 1, 65536):
                    name, shared = _sums_cuda._cuda_kernel_name(np.dtype(dt), C, n, bins)
                    assert 0 <= shared <= SHARED_BYTES_LIMIT, (dt, C, n, bins, shared)
                    out.setdefault(name, (dt, C, n, bins))
    return out


def test_every_kernel_name_the_loader_builds_exists(kernels):
    names = loader_names()
    missing = {n: why for n, why in names.items() if n not in kernels}
    assert not missing, "gpudiff.pair._sums asks for kernels that no .cu defines (dtype, C, n_samples, bins):\n" + \
        "\n".join(f"  {n}: {why}" for n, why in sorted(missing.items()))
    unused = sorted(k for k, v in kernels.items() if v.family == "pair_stats" and k not in names)
    assert not unused, f"pair_stats.cu kernels no launch can reach (dead, or the loader lost a case): {unused}"


def _get_function_calls() -> list[tuple[str, int, str, ast.Call]]:
    """Every ``get_function(...)`` call in gpudiff outside _kernels.py: (file, line, function, call)."""
    out = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).as_posix()
        if rel == "backend/_kernels.py" or rel.startswith(("backend/_emulated/", "backend/_cuda_emu/")):
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for fn in ast.walk(tree):
            if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(fn):
                if isinstance(node, ast.Call):
                    f = node.func
                    if (isinstance(f, ast.Attribute) and f.attr == "get_function"
                            and isinstance(f.value, ast.Name) and f.value.id == "_kernels") or \
                            (isinstance(f, ast.Name) and f.id == "get_function"):
                        out.append((rel, node.lineno, fn.name, node))
    return out


#: Launch sites whose kernel name is computed, and the test that runs each one below.
DYNAMIC_SITES = {("pair/_sums_cuda.py", "_pair_sums_cuda"): "test_pair_sums_launches_match_the_kernels"}


def test_every_get_function_call_names_an_existing_kernel(kernels):
    calls = _get_function_calls()
    assert calls, "no _kernels.get_function call found: the collector is blind"
    families = {k.family for k in kernels.values()}
    bad, sites = [], set()
    for rel, line, fn, call in calls:
        args = {i: a for i, a in enumerate(call.args)}
        args.update({{"family": 0, "name": 1}.get(k.arg, -1): k.value for k in call.keywords})
        fam, name = args.get(0), args.get(1)
        if isinstance(fam, ast.Constant):
            if fam.value not in families:
                bad.append(f"gpudiff/{rel}:{line}: no kernel family {fam.value!r} (kernels/{fam.value}.cu)")
        else:
            bad.append(f"gpudiff/{rel}:{line}: the family is not a literal: add a check for it here")
        if isinstance(name, ast.Constant):
            k = kernels.get(name.value)
            if k is None or (isinstance(fam, ast.Constant) and k.family != fam.value):
                bad.append(f"gpudiff/{rel}:{line}: no kernel {name.value!r} in {getattr(fam, 'value', '?')}.cu")
        else:
            sites.add((rel, fn))
    assert not bad, "\n".join(bad)
    unknown = sites - set(DYNAMIC_SITES)
    assert not unknown, f"launch sites with computed kernel names that no test here runs: {sorted(unknown)}"
    assert set(DYNAMIC_SITES) <= sites, f"DYNAMIC_SITES entries that no longer exist: {set(DYNAMIC_SITES) - sites}"


# --------------------------------------------------------------------------------------------------
# (b) the launch, recorded


class DevArray(np.ndarray):
    """Device memory in the fake namespace: a NumPy array with CuPy's ``.device.id``."""

    device = types.SimpleNamespace(id=0)


class _Device:
    def __init__(self, device=None):
        self.id = 0 if device is None else int(device)
        self.attributes = {"MultiProcessorCount": 132}

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def fake_device_namespace() -> types.ModuleType:
    """The part of CuPy ``_pair_sums_cuda`` uses, over NumPy (a module: hashable, so the
    package's lru_caches keyed on the namespace work as with cupy)."""
    m = types.ModuleType("fake_cupy_for_launch_tests")
    m.uint64, m.uint32, m.float64 = np.uint64, np.uint32, np.float64
    m.zeros = lambda shape, dtype=float: np.zeros(shape, dtype).view(DevArray)
    m.asarray = lambda a, dtype=None: np.array(a, dtype=dtype).view(DevArray)
    m.cuda = types.SimpleNamespace(Device=_Device)
    return m


@dataclass
class Launch:
    family: str
    name: str
    grid: object
    block: object
    args: tuple
    shared_mem: int
    # what the caller passed, to check the values against
    C: int = 0
    npix: int = 0
    nbins: int = 0
    inputs: tuple = ()
    notes: dict = field(default_factory=dict)


_GET_FUNCTION_SIGNATURE = inspect.signature(_kernels.get_function)  # before any monkeypatching


class Recorder:
    """Stands in for a ``cupy.RawKernel``: same call signature, records the launch."""

    def __init__(self, family, name, log):
        self.family, self.name, self.log = family, name, log

    def __call__(self, grid, block, args, *, shared_mem=0):  # cupy.RawKernel.__call__
        self.log.append(Launch(self.family, self.name, grid, block, tuple(args), shared_mem))


def record_pair_sums_launch(monkeypatch, xp, dtype, C, hist, big):
    """Run _sums_cuda._pair_sums_cuda once with the recorder; the Launch it made."""
    log: list[Launch] = []
    real = _GET_FUNCTION_SIGNATURE

    def get_function(*args, **kwargs):
        bound = real.bind(*args, **kwargs)  # called as the real loader takes it
        bound.apply_defaults()
        assert bound.arguments.get("device_id") == 0, bound
        if "xp" in bound.arguments:
            assert bound.arguments["xp"] in (None, xp), "the kernel is loaded for another namespace"
        return Recorder(bound.arguments["family"], bound.arguments["name"], log)

    monkeypatch.setattr(_kernels, "get_function", get_function)
    dt = np.dtype(dtype)
    if big:  # > 2**30 samples without the memory: every element aliases one
        H, W = 1 << 15, (1 << 15) // C + 1
        one = np.zeros(1, dt)
        a = np.lib.stride_tricks.as_strided(one, shape=(H, W * C), strides=(0, 0)).view(DevArray)
        b = a
    else:
        H, W = 3, 5
        rng = np.random.default_rng(C)
        a = (rng.random((H, W * C)) * 200).astype(dt).view(DevArray)
        b = (rng.random((H, W * C)) * 200).astype(dt).view(DevArray)
    lo_hi = (0.0, 256.0) if dt.kind == "u" else (0.0, 1.0)
    bins = {"none": 256, "shared": 256, "global": 2 * _sums_cuda._SHARED_HIST_BYTES // (2 * C * 4)}[hist]
    tol, center, bins, hist_range = metrics._check_options(2.5, 0.5, bins, None if hist == "none" else lo_hi)
    _sums_cuda._pair_sums_cuda(xp, a, b, C, tol, center, bins, hist_range)
    assert len(log) == 1, f"{len(log)} launches"
    launch = log[0]
    launch.C, launch.npix, launch.nbins, launch.inputs = C, H * W, bins if hist_range else 0, (a, b)
    launch.notes = {"dtype": dt.name, "hist": hist, "big": big}
    return launch


def _scalar_dtype(v):
    """The dtype a kernel receives for a scalar argument, as CuPy converts it
    (cupy/_core/_scalar.pyx: CScalar / numpy_dtype_from_pyscalar): NumPy scalars keep theirs;
    Python bool -> bool, float -> float64, int -> int64 (uint64 from 2**63); RawKernel applies
    no further cast (it does not know the parameter types)."""
    if isinstance(v, np.generic):
        return v.dtype, type(v).__name__
    if type(v) is bool:
        return np.dtype(bool), "a Python bool (CuPy passes bool)"
    if type(v) is float:
        return np.dtype(np.float64), "a Python float (CuPy passes float64)"
    if type(v) is int:
        d = np.dtype(np.uint64) if v >= 1 << 63 else np.dtype(np.int64)
        return d, f"a Python int (CuPy passes {d.name})"
    return None, type(v).__name__


def check_arguments(kernel: Kernel, launch: Launch) -> list[str]:
    """Count, order and type of the arguments against the kernel's parameters."""
    out = []
    where = f"{launch.name} ({launch.notes})"
    if len(launch.args) != len(kernel.params):
        out.append(f"{where}: {len(launch.args)} arguments for {len(kernel.params)} parameters")
    for p, v in zip(kernel.params, launch.args, strict=False):
        slot = f"{where}: argument {p.index} ({p.name}: {p.cxx})"
        is_array = hasattr(v, "dtype") and hasattr(v, "shape") and not isinstance(v, np.generic)
        if p.pointer:
            if not is_array:
                out.append(f"{slot} is {type(v).__name__}, not an array")
                continue
            if p.dtype is None or v.dtype != p.dtype:
                out.append(f"{slot} is a {v.dtype} array, the kernel reads {p.dtype}")
            if not isinstance(v, DevArray):
                out.append(f"{slot} is host memory ({type(v).__name__}), not a device array")
            if not v.flags.c_contiguous and not any(v is i for i in launch.inputs):
                out.append(f"{slot} is not contiguous: the kernel indexes it densely")
        else:
            if is_array:
                out.append(f"{slot} is a {v.dtype} array where the kernel takes a value")
                continue
            d, what = _scalar_dtype(v)
            if d is None or d != p.dtype:
                out.append(f"{slot} is {what}, the kernel takes {p.dtype}")
    return out


def check_config(kernel: Kernel, launch: Launch) -> list[str]:
    out = []
    where = f"{launch.name} ({launch.notes})"
    grid = launch.grid if isinstance(launch.grid, tuple) else (launch.grid,)
    block = launch.block if isinstance(launch.block, tuple) else (launch.block,)
    if not all(isinstance(g, (int, np.integer)) and 1 <= g < 1 << 31 for g in grid):
        out.append(f"{where}: grid {launch.grid} is not 1 to 2**31 - 1 blocks")
    threads = int(np.prod(block))
    if kernel.launch_bounds is not None and threads > kernel.launch_bounds:
        out.append(f"{where}: block of {threads} threads > __launch_bounds__({kernel.launch_bounds})")
    if threads > MAX_BLOCK or threads % 32:
        out.append(f"{where}: block of {threads} threads is not a multiple of 32 up to {MAX_BLOCK}")
    if not 0 <= launch.shared_mem <= SHARED_BYTES_LIMIT:
        out.append(f"{where}: shared_mem={launch.shared_mem} outside 0..{SHARED_BYTES_LIMIT}")
    return out


def check_pair_stats_contract(kernel: Kernel, launch: Launch) -> list[str]:
    """What pair_stats.cu's header says a launch must provide (sizes, values, shared memory)."""
    out = []
    where = f"{launch.name} ({launch.notes})"
    args = dict(zip((p.name for p in kernel.params), launch.args, strict=False))
    C, nbins, npix = launch.C, launch.nbins, launch.npix

    def need(name, n):
        v = args.get(name)
        if v is not None and hasattr(v, "size") and v.size < n:
            out.append(f"{where}: {name} holds {v.size} elements, the kernel writes/reads {n}")

    if int(args.get("C", -1)) != C or not 1 <= C <= (1 if "_c1_" in kernel.name else 4):
        out.append(f"{where}: C={args.get('C')} for {C} channels")
    if int(args.get("npix", -1)) != npix:
        out.append(f"{where}: npix={args.get('npix')} for {npix} pixels")
    if int(args.get("nbins", -1)) != nbins:
        out.append(f"{where}: nbins={args.get('nbins')} for {nbins} bins")
    need("a", npix * C)
    need("b", npix * C)
    need("sums", 7 * C)
    need("counts", 2 * C + 1)
    need("hist", 2 * C * nbins)
    a = args.get("a")
    if nbins and a is not None and a.dtype.kind == "u":
        need("lut", 1 << (8 * a.dtype.itemsize))  # indexed by every value of the dtype
    # extern __shared__ unsigned int ps_shist[2][C][nbins] in the shared-histogram flavour
    want = 0 if "global_hist" in kernel.name else 2 * C * nbins * 4
    if launch.shared_mem != want:
        out.append(f"{where}: shared_mem={launch.shared_mem}, the kernel indexes {want} bytes")
    return out


def check_launch(kernels: dict[str, Kernel], launch: Launch) -> list[str]:
    kernel = kernels.get(launch.name)
    if kernel is None or kernel.family != launch.family:
        return [f"{launch.name}: no such kernel in {launch.family}.cu"]
    out = check_arguments(kernel, launch) + check_config(kernel, launch)
    if kernel.family == "pair_stats":
        out += check_pair_stats_contract(kernel, launch)
    return out


CASES = [(dt, C, hist, big) for dt in DTYPES for C in (1, 2, 3, 4) for hist in ("none", "shared", "global")
         for big in (False, True)]


@pytest.fixture(scope="module")
def launches(kernels) -> list[Launch]:
    xp = fake_device_namespace()
    out = []
    with pytest.MonkeyPatch.context() as mp:
        for dt, C, hist, big in CASES:
            out.append(record_pair_sums_launch(mp, xp, dt, C, hist, big))
    return out


def test_pair_sums_launches_match_the_kernels(kernels, launches):
    problems = [p for launch in launches for p in check_launch(kernels, launch)]
    assert not problems, "\n".join(problems)
    # every flavour was reached: dtype x {c1, multi} x {shared, global} x {i32, i64}
    reached = {lc.name for lc in launches}
    assert len(reached) == 32 and reached <= set(kernels), sorted(reached)


def test_the_launch_checker_reports_mismatches(kernels, launches):
    good = next(lc for lc in launches if lc.notes == {"dtype": "float64", "hist": "shared", "big": False}
                and lc.C == 3)
    k = kernels[good.name]
    assert check_launch(kernels, good) == []
    pos = {p.name: p.index for p in k.params}

    def broken(**changes):
        args = list(good.args)
        for name, value in changes.items():
            args[pos[name]] = value
        return replace(good, args=tuple(args))

    cases = {
        "np.int64 at int": (broken(npix=np.int64(good.npix)), "argument 2 (npix: int) is int64, the kernel takes int32"),
        "float32 array at double*": (broken(sums=good.args[pos["sums"]].view(np.float32)),
                                      "argument 11 (sums: double*) is a float32 array, the kernel reads float64"),
        "python int at int": (broken(C=3), "argument 3 (C: int) is a Python int (CuPy passes int64), the kernel takes int32"),
        "python float at double": (broken(tol=2.5), None),  # CuPy passes float64: correct
        "host array": (broken(lut=np.zeros(1, np.uint32)), "argument 10 (lut: const unsigned int*) is host memory"),
        "u64 value as int": (broken(itol=np.int64(2)), "argument 5 (itol: long long unsigned int) is int64, the kernel takes uint64"),
        "missing": (replace(good, args=good.args[:-1]), "13 arguments for 14 parameters"),
        "big block": (replace(good, block=(512,)), "block of 512 threads > __launch_bounds__(256)"),
        "shared mem": (replace(good, shared_mem=good.shared_mem // 2), f"the kernel indexes {2 * good.C * good.nbins * 4} bytes"),
        "short hist": (broken(hist=good.args[pos["hist"]][:10]), "hist holds 10 elements"),
    }
    for what, (launch, expected) in cases.items():
        problems = check_launch(kernels, launch)
        if expected is None:
            assert problems == [], (what, problems)
        else:
            assert any(expected in p for p in problems), f"{what}: not reported ({expected!r}) in {problems}"


def test_the_compiler_reads_the_declared_types(kernels):
    """The typedefs resolved by the compiler, on two kernels (spot check of the reader)."""
    k = kernels["pair_stats_u16_i64"]
    assert [(p.name, p.pointer, p.const, p.dtype.str[1:]) for p in k.params] == [
        ("a", True, True, "u2"), ("b", True, True, "u2"), ("npix", False, False, "i8"), ("C", False, False, "i4"),
        ("tol", False, False, "f8"), ("itol", False, False, "u8"), ("center", False, False, "f8"),
        ("nbins", False, False, "i4"), ("lo", False, False, "f8"), ("hi", False, False, "f8"),
        ("lut", True, True, "u4"), ("sums", True, False, "u8"), ("counts", True, False, "u8"),
        ("hist", True, False, "u8"),
    ]
    assert kernels["pair_stats_global_hist_c1_f32_i32"].params[11].dtype == np.float64  # PsTraits<float>::Acc
    assert {k.launch_bounds for k in kernels.values()} == {256}


def test_declarations_reader_on_synthetic_source():
    src = (
        'extern "C" __global__ void __launch_bounds__(128, 2) k1(const float* __restrict__ x, Foo<int, 2>::T n) {}\n'
        'extern "C" { __global__ void k2(double* y) { } }\n'
        "template <class T> __global__ void k3(T* z) {}\n"
    )
    assert kernel_declarations(src) == [("k1", ["x", "n"], "128"), ("k2", ["y"], None)]
