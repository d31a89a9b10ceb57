"""The CUDA emulator's own semantics: barriers, shared memory, warps, atomics, launch checks.

Each test runs a small kernel whose device behaviour is known, so the emulator is held to what a
GPU would do: a reduction missing a barrier must come out wrong, a divergent barrier must be an
error, not a silent pass.
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest

pytestmark = pytest.mark.skipif(shutil.which("g++") is None and shutil.which("c++") is None,
                                reason="needs a C++ compiler")

from gpudiff.backend._cuda_emu import EmuError, compile_module  # noqa: E402

SCHEDULES = ("forward", "reverse", "random:1", "random:2", "random:3")

REDUCE = r"""
extern "C" __global__ void block_sum(const int* x, int n, long long* out) {
    __shared__ int s[256];
    const int t = threadIdx.x;
    int v = 0;
    for (int i = blockIdx.x * blockDim.x + t; i < n; i += blockDim.x * gridDim.x) v += x[i];
    s[t] = v;
    BARRIER_1
    for (int stride = blockDim.x / 2; stride > 0; stride >>= 1) {
        if (t < stride) s[t] += s[t + stride];
        __syncthreads();
    }
    if (t == 0) atomicAdd((unsigned long long*)out, (unsigned long long)(long long)s[0]);
}
"""

WARPS = r"""
extern "C" __global__ void warp_sum(const double* x, double* out) {
    double v = x[threadIdx.x];
    for (int off = 16; off > 0; off >>= 1) v += __shfl_down_sync(0xffffffffu, v, off);
    if ((threadIdx.x & 31) == 0) out[threadIdx.x >> 5] = v;
}
extern "C" __global__ void butterfly(const unsigned long long* x, unsigned long long* out) {
    unsigned long long v = x[threadIdx.x];
    for (int m = 1; m < 32; m <<= 1) v += __shfl_xor_sync(0xffffffffu, v, m);
    out[threadIdx.x] = v;
}
extern "C" __global__ void shuffles(const int* x, int* up, int* down, int* idx, unsigned* ballot) {
    const int t = threadIdx.x;
    up[t] = __shfl_up_sync(0xffffffffu, x[t], 3);
    down[t] = __shfl_down_sync(0xffffffffu, x[t], 5, 16);
    idx[t] = __shfl_sync(0xffffffffu, x[t], 7);
    ballot[t] = __ballot_sync(0xffffffffu, x[t] % 3 == 0);
}
extern "C" __global__ void even_lanes(const int* x, int* out) {
    const int t = threadIdx.x;
    if ((t & 1) == 0) out[t] = __shfl_down_sync(0x55555555u, x[t], 2);
}
"""

ATOMICS = r"""
extern "C" __global__ void atomics(int* i, unsigned long long* u, double* d, unsigned long long* mx,
                                   int* cas_old) {
    const unsigned long long g = blockIdx.x * (unsigned long long)blockDim.x + threadIdx.x;
    atomicAdd(i, 1);
    atomicAdd(u, g);
    atomicAdd(d, 0.5);
    atomicMax(mx, (g * 7919ull) % 10007ull);
    if (g == 0) cas_old[0] = atomicCAS(cas_old + 1, 5, 9);
}
"""

SHARED = r"""
extern "C" __global__ void read_dynamic(unsigned int* out) {
    extern __shared__ unsigned int dyn[];
    out[blockIdx.x * blockDim.x + threadIdx.x] = dyn[threadIdx.x];  // never written: poison
}
extern "C" __global__ void per_block(int* out) {
    __shared__ int first;
    if (threadIdx.x == 0) first = blockIdx.x * 10;
    __syncthreads();
    out[blockIdx.x * blockDim.x + threadIdx.x] = first;
}
extern "C" __global__ void indices(int* out) {
    const int t = threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
    const int b = blockIdx.x + gridDim.x * (blockIdx.y + gridDim.y * blockIdx.z);
    const int nt = blockDim.x * blockDim.y * blockDim.z;
    out[b * nt + t] = ((blockIdx.z * 4 + blockIdx.y) * 4 + blockIdx.x) * 1000 + (threadIdx.z * 8 + threadIdx.y) * 8 + threadIdx.x;
}
"""

BAD = r"""
extern "C" __global__ void divergent(int* out) {
    if ((threadIdx.x & 1) == 0) {
        __syncthreads();
    }
    out[threadIdx.x] = 1;
}
extern "C" __global__ void two_barriers(int* out) {
    if (threadIdx.x < 32) {
        __syncthreads();
    } else {
        __syncthreads();
    }
    out[threadIdx.x] = 2;
}
extern "C" __global__ void __launch_bounds__(64) bounded(int* out) { out[threadIdx.x] = 3; }
extern "C" __global__ void types(const float* a, int n, long long m, double x, unsigned long long u, float* out) {
    out[0] = a[0] + n + m + x + u;
}
"""


@pytest.fixture(scope="module")
def reduce_ok():
    return compile_module(REDUCE.replace("BARRIER_1", "__syncthreads();"), name="reduce_ok").get_function("block_sum")


@pytest.fixture(scope="module")
def reduce_racy():
    return compile_module(REDUCE.replace("BARRIER_1", ""), name="reduce_racy").get_function("block_sum")


def _sum(kernel, x, schedule, grid=3):
    out = np.zeros(1, np.int64)
    kernel((grid,), (256,), (x, np.int32(x.size), out), schedule=schedule)
    return int(out[0])


def test_a_block_reduction_with_barriers_is_exact_under_every_schedule(reduce_ok):
    x = np.random.default_rng(0).integers(-1000, 1000, 5000).astype(np.int32)
    for s in SCHEDULES:
        assert _sum(reduce_ok, x, s) == int(x.sum()), s


def test_a_missing_barrier_gives_a_wrong_sum_under_some_schedule(reduce_racy):
    """The race a device would show: the tree reads s[t + stride] before its owner wrote it."""
    x = np.random.default_rng(1).integers(1, 1000, 5000).astype(np.int32)
    got = {s: _sum(reduce_racy, x, s) for s in SCHEDULES}
    assert any(v != int(x.sum()) for v in got.values()), got


def test_warp_shuffle_sum_and_butterfly_match_numpy():
    mod = compile_module(WARPS, name="warps")
    x = np.random.default_rng(2).normal(size=128)
    out = np.zeros(4)
    mod.get_function("warp_sum")((1,), (128,), (x, out))
    np.testing.assert_allclose(out, x.reshape(4, 32).sum(axis=1), rtol=1e-14)

    u = np.random.default_rng(3).integers(0, 2**40, 64).astype(np.uint64)
    out_u = np.zeros(64, np.uint64)
    mod.get_function("butterfly")((1,), (64,), (u, out_u))
    np.testing.assert_array_equal(out_u, np.repeat(u.reshape(2, 32).sum(axis=1), 32))


def test_shuffle_variants_follow_cudas_lane_rules():
    mod = compile_module(WARPS, name="warps")
    x = np.arange(100, 164, dtype=np.int32)
    up, down, idx = (np.zeros(64, np.int32) for _ in range(3))
    ballot = np.zeros(64, np.uint32)
    mod.get_function("shuffles")((1,), (64,), (x, up, down, idx, ballot))
    lane = np.arange(64) % 32
    # up by 3: lanes 0-2 keep their own value
    np.testing.assert_array_equal(up, np.where(lane >= 3, x - 3, x))
    # down by 5 within segments of 16: the last 5 lanes of each segment keep their own
    np.testing.assert_array_equal(down, np.where(lane % 16 + 5 < 16, x + 5, x))
    # index 7 of the own warp
    np.testing.assert_array_equal(idx, np.repeat(x[[7, 39]], 32))
    bits = (x % 3 == 0).reshape(2, 32)
    want = [int(sum(1 << i for i in range(32) if bits[w, i])) for w in range(2)]
    np.testing.assert_array_equal(ballot, np.repeat(np.array(want, np.uint32), 32))

    out = np.full(32, -1, np.int32)
    mod.get_function("even_lanes")((1,), (32,), (x[:32].copy(), out))
    t = np.arange(32)
    want = np.where(t % 2 == 0, np.where(t + 2 < 32, x[:32][np.minimum(t + 2, 31)], x[:32]), -1)
    np.testing.assert_array_equal(out, want)


def test_atomics_from_many_blocks_and_threads_total_exactly():
    k = compile_module(ATOMICS, name="atomics").get_function("atomics")
    i = np.zeros(1, np.int32)
    u = np.zeros(1, np.uint64)
    d = np.zeros(1, np.float64)
    mx = np.zeros(1, np.uint64)
    cas = np.array([0, 5], np.int32)
    grid, block = 37, 96
    k((grid,), (block,), (i, u, d, mx, cas), workers=4, schedule="random:7")
    n = grid * block
    g = np.arange(n, dtype=np.uint64)
    assert int(i[0]) == n
    assert int(u[0]) == int(g.sum())
    assert float(d[0]) == 0.5 * n
    assert int(mx[0]) == int(((g * 7919) % 10007).max())
    assert list(cas) == [5, 9]  # atomicCAS returned the old value and swapped


def test_shared_memory_is_poisoned_and_per_block():
    mod = compile_module(SHARED, name="shared")
    out = np.zeros(2 * 64, np.uint32)
    mod.get_function("read_dynamic")((2,), (64,), (out,), shared_mem=64 * 4)
    assert (out == 0xCDCDCDCD).all()
    per = np.zeros(5 * 32, np.int32)
    mod.get_function("per_block")((5,), (32,), (per,), workers=2)
    np.testing.assert_array_equal(per, np.repeat(np.arange(5) * 10, 32))


def test_three_dimensional_grids_and_blocks():
    k = compile_module(SHARED, name="shared").get_function("indices")
    out = np.zeros(4 * 4 * 2 * 8 * 8 * 2, np.int32)
    k((4, 4, 2), (8, 8, 2), (out,))
    bz, by, bx, tz, ty, tx = np.meshgrid(range(2), range(4), range(4), range(2), range(8), range(8), indexing="ij")
    want = ((bz * 4 + by) * 4 + bx) * 1000 + (tz * 8 + ty) * 8 + tx
    np.testing.assert_array_equal(out, want.ravel())


def test_divergent_barriers_are_errors_and_the_interpreter_survives():
    mod = compile_module(BAD, name="bad")
    out = np.zeros(64, np.int32)
    with pytest.raises(EmuError, match=r"divergent.*line 4"):
        mod.get_function("divergent")((1,), (64,), (out,))
    with pytest.raises(EmuError, match="different __syncthreads"):
        mod.get_function("two_barriers")((1,), (64,), (out,))
    mod.get_function("bounded")((1,), (64,), (out,))  # still usable afterwards
    assert (out == 3).all()


def test_launch_configuration_is_checked_as_on_a_device():
    mod = compile_module(BAD, name="bad")
    out = np.zeros(2048, np.int32)
    with pytest.raises(EmuError, match="1024"):
        mod.get_function("bounded")((1,), (2048,), (out,))
    with pytest.raises(EmuError, match="launch_bounds"):
        mod.get_function("bounded")((1,), (128,), (out,))
    with pytest.raises(EmuError, match="shared memory"):
        mod.get_function("bounded")((1,), (32,), (out,), shared_mem=64 * 1024)
    with pytest.raises(EmuError, match=">= 1"):
        mod.get_function("bounded")((0,), (32,), (out,))


def test_arguments_are_checked_strictly():
    k = compile_module(BAD, name="bad").get_function("types")
    assert k.param_types == ("const float*", "int", "long long", "double", "unsigned long long", "float*")
    a = np.ones(1, np.float32)
    out = np.zeros(1, np.float32)
    ok = (a, np.int32(2), np.int64(3), np.float64(4.0), np.uint64(5), out)
    k((1,), (1,), ok)
    assert out[0] == 15.0
    k((1,), (1,), (a, np.int32(2), 3, 4.0, np.uint64(5), out))  # Python int -> int64, float -> float64
    bad = [
        ((a.astype(np.float64), *ok[1:]), "argument 0 .*float64"),
        ((a, np.int64(2), *ok[2:]), "argument 1 \\(int\\) got int64"),
        ((a, 2, *ok[2:]), "argument 1 \\(int\\) got int64"),  # a Python int is int64, as CuPy passes it
        ((a, np.int32(2), 3.0, *ok[3:]), "argument 2 .*float64"),
        ((a, np.int32(2), np.int64(3), np.float32(4.0), *ok[4:]), "argument 3 .*float32"),
        (ok[:5], "takes 6 arguments, got 5"),
        ((*ok[:5], None), "argument 5 .*NoneType"),
    ]
    for args, msg in bad:
        with pytest.raises(TypeError, match=msg):
            k((1,), (1,), args)
    ro = np.zeros(1, np.float32)
    ro.flags.writeable = False
    with pytest.raises(TypeError, match="read-only"):
        k((1,), (1,), (*ok[:5], ro))


def test_unknown_names_compile_errors_and_the_cache():
    mod = compile_module(BAD, name="bad")
    assert set(mod.kernel_names) == {"divergent", "two_barriers", "bounded", "types"}
    with pytest.raises(LookupError, match="named symbol not found: nope"):
        mod.get_function("nope")
    assert compile_module(BAD, name="bad") is mod  # memoized
    with pytest.raises(EmuError, match="error"):
        compile_module('extern "C" __global__ void k(int* o) { o[0] = undefined_name; }', name="broken")
