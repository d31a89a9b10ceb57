// cuda_emu.h: CUDA's execution model on the host, for running kernels/*.cu on a CPU in CI.
//
// Force-included (g++ -include) before a .cu file compiled as C++17 by gpudiff/_cuda_emu; the
// Python side rewrites __shared__ declarations (see _rewrite_shared there) and generates the
// launch table. What it models:
//   - a grid of blocks; each block's threads are fibers (own stacks) on one OS thread, run one at a
//     time until they block; blocks are spread over a few OS threads, so atomics race for real;
//   - threadIdx/blockIdx/blockDim/gridDim of the running fiber;
//   - __shared__ memory per block, filled with a poison pattern (0xCD bytes) before first use, so
//     reading shared memory nobody wrote gives garbage as on a device; dynamic shared memory the same;
//   - __syncthreads() as a real barrier of the block's threads; a barrier some threads skip or leave
//     early (divergent) and barriers at different lines are reported, not silently passed;
//   - warp-synchronous intrinsics (__shfl*_sync, __syncwarp, __ballot_sync, __any_sync, __all_sync):
//     every lane of the mask must arrive before any continues;
//   - atomics with the GCC __atomic builtins (CAS loops for float/double);
//   - the _rn intrinsics as plain IEEE operations (compiled with -ffp-contract=off, no FMA).
// The order in which runnable fibers resume is a launch parameter (forward, reverse, random), so a
// missing barrier shows up as a wrong result under some order.
#pragma once

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <new>
#include <random>
#include <string>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

#if !defined(__x86_64__)
#include <ucontext.h>
#endif

struct dim3 {
    unsigned int x, y, z;
    constexpr dim3(unsigned int x_ = 1, unsigned int y_ = 1, unsigned int z_ = 1) : x(x_), y(y_), z(z_) {}
};
typedef dim3 uint3;

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __noinline__
#define __launch_bounds__(...)
#define __align__(n) alignas(n)
#define __constant__ static
#define warpSize 32

namespace emu {

enum State { RUN = 0, BAR = 1, WARP = 2, DONE = 3 };
enum WarpOp { W_IDX = 0, W_UP, W_DOWN, W_XOR, W_SYNC, W_BALLOT, W_ANY, W_ALL };

struct Fiber {
    void* sp = nullptr;
#if !defined(__x86_64__)
    ucontext_t uc;
#endif
    char* stack = nullptr;
    dim3 tid;
    int linear = 0, lane = 0, warp = 0;
    int state = RUN;
    int line = 0;  // source line of the barrier / warp op it waits at
    // warp op in flight
    int wop = 0;
    unsigned wmask = 0;
    int warg = 0, wwidth = 32;
    unsigned long long wval = 0, wres = 0;
};

struct SharedVar {
    std::string key;
    size_t size;
    void* ptr;
};

struct Block {
    dim3 bid, bdim, gdim;
    int nthreads = 0;
    std::vector<Fiber>* fibers = nullptr;
    void* sched_sp = nullptr;
#if !defined(__x86_64__)
    ucontext_t sched_uc;
#endif
    std::vector<SharedVar> statics;
    char* dyn = nullptr;
    size_t dyn_bytes = 0;
    void (*invoke)(void* fn, void** args) = nullptr;
    void* fn = nullptr;
    void** args = nullptr;
    bool failed = false;
    std::string error;
};

extern thread_local Block* g_block;
extern thread_local Fiber* g_fiber;

}  // namespace emu

#define threadIdx (::emu::g_fiber->tid)
#define blockIdx (::emu::g_block->bid)
#define blockDim (::emu::g_block->bdim)
#define gridDim (::emu::g_block->gdim)

namespace emu {

thread_local Block* g_block = nullptr;
thread_local Fiber* g_fiber = nullptr;

static const size_t kStack = 256 * 1024;  // committed lazily by the kernel (mmap)
static const size_t kGuard = 4096;

// ------------------------------------------------------------------------------------------------
// context switch

#if defined(__x86_64__)
extern "C" void emu_switch_ctx(void** save_sp, void* load_sp);
asm(R"(
.text
.p2align 4
.type emu_switch_ctx,@function
emu_switch_ctx:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    subq $8, %rsp
    stmxcsr (%rsp)
    fnstcw 4(%rsp)
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    ldmxcsr (%rsp)
    fldcw 4(%rsp)
    addq $8, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
.size emu_switch_ctx,.-emu_switch_ctx
)");
#endif

[[noreturn]] static void fiber_exit();

static void fiber_entry() {
    Block* B = g_block;
    B->invoke(B->fn, B->args);
    g_fiber->state = DONE;
    fiber_exit();
}

static void to_scheduler() {
    Fiber* f = g_fiber;
    Block* B = g_block;
#if defined(__x86_64__)
    emu_switch_ctx(&f->sp, B->sched_sp);
#else
    swapcontext(&f->uc, &B->sched_uc);
#endif
}

[[noreturn]] static void fiber_exit() {
    to_scheduler();
    std::abort();  // a finished fiber is never resumed
}

static void fiber_start(Fiber& f) {
    char* top = f.stack + kStack;  // 16-aligned (page-aligned mapping)
#if defined(__x86_64__)
    uint64_t* s = reinterpret_cast<uint64_t*>(top);
    *--s = 0;                                             // fake return address of fiber_entry
    *--s = reinterpret_cast<uint64_t>(&fiber_entry);      // popped by ret
    for (int i = 0; i < 6; ++i) *--s = 0;                 // rbp rbx r12..r15
    *--s = 0x1F80ull | (0x037Full << 32);                 // mxcsr, x87 control word
    f.sp = s;
#else
    getcontext(&f.uc);
    f.uc.uc_stack.ss_sp = f.stack;
    f.uc.uc_stack.ss_size = kStack;
    f.uc.uc_link = nullptr;
    makecontext(&f.uc, fiber_entry, 0);
#endif
}

static void resume(Block& B, Fiber& f) {
    g_fiber = &f;
#if defined(__x86_64__)
    emu_switch_ctx(&B.sched_sp, f.sp);
#else
    swapcontext(&B.sched_uc, &f.uc);
#endif
}

// ------------------------------------------------------------------------------------------------
// errors from inside a kernel

[[noreturn]] inline void fail(const std::string& msg) {
    Block* B = g_block;
    if (!B->failed) {
        B->failed = true;
        B->error = msg;
    }
    g_fiber->state = DONE;
    fiber_exit();
}

// ------------------------------------------------------------------------------------------------
// shared memory

inline void* shared_alloc(const char* key, size_t size, size_t align) {
    Block* B = g_block;
    for (auto& v : B->statics)
        if (v.size == size && v.key == key) return v.ptr;
    if (align < 16) align = 16;
    size_t rounded = (size + align - 1) / align * align;
    void* p = std::aligned_alloc(align, rounded ? rounded : align);
    if (!p) fail("out of host memory for __shared__");
    std::memset(p, 0xCD, rounded ? rounded : align);
    B->statics.push_back(SharedVar{key, size, p});
    return p;
}

template <class T>
inline T& shared_var(const char* key) {
    return *reinterpret_cast<T*>(shared_alloc(key, sizeof(T), alignof(T)));
}

inline void* dyn_shared() { return g_block->dyn; }

// ------------------------------------------------------------------------------------------------
// barriers and warp ops

inline void syncthreads(int line) {
    g_fiber->state = BAR;
    g_fiber->line = line;
    to_scheduler();
}

template <class T>
inline unsigned long long to_bits(T v) {
    static_assert(sizeof(T) <= 8, "warp shuffle of a type wider than 64 bits");
    unsigned long long b = 0;
    std::memcpy(&b, &v, sizeof(T));
    return b;
}
template <class T>
inline T from_bits(unsigned long long b) {
    T v;
    std::memcpy(&v, &b, sizeof(T));
    return v;
}

inline unsigned long long warp_op(int op, unsigned mask, unsigned long long val, int arg, int width, int line) {
    Fiber* f = g_fiber;
    if (!(mask >> f->lane & 1u)) fail("a warp intrinsic called by a lane outside its own mask (line " + std::to_string(line) + ")");
    if (width <= 0 || width > 32 || (width & (width - 1))) fail("warp shuffle width must be a power of 2 up to 32 (line " + std::to_string(line) + ")");
    f->state = WARP;
    f->wop = op;
    f->wmask = mask;
    f->wval = val;
    f->warg = arg;
    f->wwidth = width;
    f->line = line;
    to_scheduler();
    return f->wres;
}

// Resolve warp `w` if every lane of the mask is waiting at the same warp op. 1 resolved, 0 not
// ready; on a lane that exited or waits elsewhere, 0 (the deadlock check reports it).
inline int try_resolve_warp(Block& B, int w) {
    std::vector<Fiber>& F = *B.fibers;
    const int first = w * 32;
    const int nlanes = std::min(32, B.nthreads - first);
    int leader = -1;
    for (int l = 0; l < nlanes; ++l)
        if (F[first + l].state == WARP) {
            leader = l;
            break;
        }
    if (leader < 0) return 0;
    const Fiber& L = F[first + leader];
    const unsigned mask = L.wmask;
    for (int l = 0; l < nlanes; ++l) {
        if (!(mask >> l & 1u)) continue;
        const Fiber& g = F[first + l];
        if (g.state != WARP || g.wop != L.wop || g.wmask != mask || g.line != L.line) return 0;
    }
    unsigned long long vals[32];
    unsigned present = 0;
    for (int l = 0; l < nlanes; ++l)
        if (mask >> l & 1u) {
            vals[l] = F[first + l].wval;
            present |= 1u << l;
        }
    unsigned ballot = 0;
    if (L.wop == W_BALLOT || L.wop == W_ANY || L.wop == W_ALL)
        for (int l = 0; l < nlanes; ++l)
            if ((present >> l & 1u) && vals[l]) ballot |= 1u << l;
    for (int l = 0; l < nlanes; ++l) {
        if (!(present >> l & 1u)) continue;
        Fiber& g = F[first + l];
        const int width = g.wwidth;
        const int seg = l & ~(width - 1);
        int src = l;
        switch (g.wop) {
            case W_IDX: src = seg + (g.warg & (width - 1)); break;
            case W_UP: src = (l - g.warg >= seg) ? l - g.warg : l; break;
            case W_DOWN: src = (l + g.warg < seg + width) ? l + g.warg : l; break;
            case W_XOR: src = ((l ^ g.warg) < seg + width && (l ^ g.warg) >= seg) ? (l ^ g.warg) : l; break;
            default: break;
        }
        if (g.wop <= W_XOR) g.wres = (src < nlanes && (present >> src & 1u)) ? vals[src] : g.wval;
        else if (g.wop == W_BALLOT) g.wres = ballot;
        else if (g.wop == W_ANY) g.wres = ballot != 0;
        else if (g.wop == W_ALL) g.wres = ballot == present;
        else g.wres = 0;
        g.state = RUN;
    }
    return 1;
}

// ------------------------------------------------------------------------------------------------
// the block scheduler

struct Worker {
    std::vector<Fiber> fibers;
    std::vector<char*> stacks;
    Block block;
    ~Worker() {
        for (char* s : stacks) munmap(s - kGuard, kStack + kGuard);
    }
    bool ensure(int n) {
        while ((int)stacks.size() < n) {
            void* m = mmap(nullptr, kStack + kGuard, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
            if (m == MAP_FAILED) return false;
            mprotect(m, kGuard, PROT_NONE);  // a stack overflow faults instead of corrupting
            stacks.push_back(static_cast<char*>(m) + kGuard);
        }
        if ((int)fibers.size() < n) fibers.resize(n);
        return true;
    }
};

struct Launch {
    dim3 grid, block;
    size_t shared_mem;
    int schedule;  // 0 forward, 1 reverse, 2 random
    unsigned long long seed;
    void (*invoke)(void*, void**);
    void* fn;
    void** args;
    const char* name;
    std::atomic<long long> next{0};
    std::atomic<bool> failed{false};
    std::string error;
    std::atomic_flag error_lock = ATOMIC_FLAG_INIT;
};

inline std::string where(const Block& B) {
    char buf[96];
    std::snprintf(buf, sizeof buf, "block (%u,%u,%u)", B.bid.x, B.bid.y, B.bid.z);
    return buf;
}

// Run one block to completion; false (and B.error) on an error.
inline bool run_block(Worker& W, Launch& L, long long linear_block) {
    Block& B = W.block;
    B.gdim = L.grid;
    B.bdim = L.block;
    B.bid = dim3((unsigned)(linear_block % L.grid.x), (unsigned)(linear_block / L.grid.x % L.grid.y),
                 (unsigned)(linear_block / ((long long)L.grid.x * L.grid.y)));
    B.nthreads = (int)(L.block.x * L.block.y * L.block.z);
    B.fibers = &W.fibers;
    for (auto& v : B.statics) std::free(v.ptr);
    B.statics.clear();
    if (B.dyn) std::memset(B.dyn, 0xCD, B.dyn_bytes);
    B.invoke = L.invoke;
    B.fn = L.fn;
    B.args = L.args;
    B.failed = false;
    B.error.clear();
    std::vector<Fiber>& F = W.fibers;
    for (int i = 0; i < B.nthreads; ++i) {
        Fiber& f = F[i];
        f.stack = W.stacks[i];
        f.linear = i;
        f.lane = i & 31;
        f.warp = i >> 5;
        f.tid = dim3(i % L.block.x, i / L.block.x % L.block.y, i / (L.block.x * L.block.y));
        f.state = RUN;
        f.line = 0;
        fiber_start(f);
    }
    g_block = &B;
    std::vector<int> order(B.nthreads);
    for (int i = 0; i < B.nthreads; ++i) order[i] = L.schedule == 1 ? B.nthreads - 1 - i : i;
    std::mt19937_64 rng(L.seed * 0x9E3779B97F4A7C15ull + (unsigned long long)linear_block);
    const int nwarps = (B.nthreads + 31) / 32;
    for (;;) {
        if (L.schedule == 2) std::shuffle(order.begin(), order.end(), rng);
        for (int idx : order) {
            Fiber& f = F[idx];
            if (f.state != RUN) continue;
            resume(B, f);
            if (B.failed) return false;
        }
        // Nothing runnable now: resolve warp ops, then barriers.
        int resolved = 0;
        for (int w = 0; w < nwarps; ++w) resolved += try_resolve_warp(B, w);
        if (resolved) continue;
        int n_done = 0, n_bar = 0, n_warp = 0, bar_line = -1, other_line = -1;
        for (int i = 0; i < B.nthreads; ++i) {
            const Fiber& f = F[i];
            if (f.state == DONE) ++n_done;
            else if (f.state == BAR) {
                ++n_bar;
                if (bar_line < 0) bar_line = f.line;
                else if (f.line != bar_line) other_line = f.line;
            } else if (f.state == WARP) ++n_warp;
        }
        if (n_done == B.nthreads) return true;
        if (n_warp == 0 && n_bar > 0 && n_done == 0) {
            if (other_line >= 0) {
                B.error = "threads of " + where(B) + " wait at different __syncthreads() (lines " + std::to_string(bar_line) +
                          " and " + std::to_string(other_line) + "): divergent barrier";
                return false;
            }
            for (int i = 0; i < B.nthreads; ++i) F[i].state = RUN;
            continue;
        }
        if (n_bar > 0 && n_warp == 0) {
            B.error = "divergent __syncthreads() at line " + std::to_string(bar_line) + " in " + where(B) + ": " +
                      std::to_string(n_bar) + " threads wait there, " + std::to_string(n_done) +
                      " have exited without reaching it (a deadlock or undefined behaviour on a device)";
            return false;
        }
        int wline = -1;
        for (int i = 0; i < B.nthreads; ++i)
            if (F[i].state == WARP) {
                wline = F[i].line;
                break;
            }
        B.error = "deadlock in " + where(B) + ": a warp-synchronous intrinsic at line " + std::to_string(wline) +
                  " waits for lanes of its mask that exited or wait elsewhere (" + std::to_string(n_bar) +
                  " threads at a barrier, " + std::to_string(n_done) + " exited)";
        return false;
    }
}

inline void worker_main(Launch& L, long long nblocks) {
    Worker W;
    const int n = (int)(L.block.x * L.block.y * L.block.z);
    auto report = [&](const std::string& msg) {
        while (L.error_lock.test_and_set()) {
        }
        if (!L.failed.exchange(true)) L.error = msg;
        L.error_lock.clear();
    };
    if (!W.ensure(n)) {
        report("cannot map fiber stacks for a block of " + std::to_string(n) + " threads");
        return;
    }
    std::vector<char> dyn_storage;
    if (L.shared_mem) {
        W.block.dyn = static_cast<char*>(std::aligned_alloc(16, (L.shared_mem + 15) / 16 * 16));
        W.block.dyn_bytes = L.shared_mem;
    }
    for (;;) {
        if (L.failed.load()) break;
        long long b = L.next.fetch_add(1);
        if (b >= nblocks) break;
        if (!run_block(W, L, b)) {
            report(W.block.error);
            break;
        }
    }
    for (auto& v : W.block.statics) std::free(v.ptr);
    W.block.statics.clear();
    std::free(W.block.dyn);
    g_block = nullptr;
    g_fiber = nullptr;
}

inline int launch(const char* name, void (*invoke)(void*, void**), void* fn, const unsigned* grid, const unsigned* block,
                  size_t shared_mem, int schedule, unsigned long long seed, int nworkers, void** args, char* err,
                  size_t errlen) {
    Launch L;
    L.grid = dim3(grid[0], grid[1], grid[2]);
    L.block = dim3(block[0], block[1], block[2]);
    L.shared_mem = shared_mem;
    L.schedule = schedule;
    L.seed = seed;
    L.invoke = invoke;
    L.fn = fn;
    L.args = args;
    L.name = name;
    const long long nblocks = (long long)grid[0] * grid[1] * grid[2];
    if (nworkers < 1) nworkers = 1;
    if (nworkers > nblocks) nworkers = (int)nblocks;
    if (nworkers <= 1) {
        worker_main(L, nblocks);
    } else {
        std::vector<std::thread> ts;
        for (int i = 0; i < nworkers; ++i) ts.emplace_back([&L, nblocks] { worker_main(L, nblocks); });
        for (auto& t : ts) t.join();
    }
    if (L.failed.load()) {
        std::snprintf(err, errlen, "%s", L.error.c_str());
        return 1;
    }
    return 0;
}

// ------------------------------------------------------------------------------------------------
// the launch table: parameter type codes and a typed trampoline per kernel

template <class T>
constexpr const char* code_of() {
    typedef typename std::remove_cv<T>::type U;
    if constexpr (std::is_same<U, bool>::value) return "b1";
    else if constexpr (std::is_floating_point<U>::value) return sizeof(U) == 4 ? "f4" : (sizeof(U) == 8 ? "f8" : "??");
    else if constexpr (std::is_integral<U>::value) {
        if constexpr (std::is_signed<U>::value)
            return sizeof(U) == 1 ? "i1" : sizeof(U) == 2 ? "i2" : sizeof(U) == 4 ? "i4" : "i8";
        else
            return sizeof(U) == 1 ? "u1" : sizeof(U) == 2 ? "u2" : sizeof(U) == 4 ? "u4" : "u8";
    } else return "??";
}

template <class A>
inline std::string param_code() {
    if constexpr (std::is_pointer<A>::value) {
        typedef typename std::remove_pointer<A>::type P;
        return std::string(std::is_const<P>::value ? "const " : "") + code_of<P>() + "*";
    } else {
        return code_of<A>();
    }
}

template <class... A, size_t... I>
inline void call_with(void (*f)(A...), void** args, std::index_sequence<I...>) {
    f(*static_cast<typename std::remove_reference<A>::type*>(args[I])...);
}

template <class... A>
struct Entry {
    static void invoke(void* fn, void** args) {
        call_with(reinterpret_cast<void (*)(A...)>(fn), args, std::index_sequence_for<A...>{});
    }
    static std::string signature() {
        std::string s;
        const std::string parts[] = {std::string(), param_code<A>()...};
        for (size_t i = 1; i < sizeof...(A) + 1; ++i) {
            if (i > 1) s += ",";
            s += parts[i];
        }
        return s;
    }
};

struct KernelInfo {
    const char* name;
    void* fn;
    void (*invoke)(void*, void**);
    std::string sig;
};

template <class... A>
inline KernelInfo make_info(const char* name, void (*f)(A...)) {
    return KernelInfo{name, reinterpret_cast<void*>(f), &Entry<A...>::invoke, Entry<A...>::signature()};
}

}  // namespace emu

// ------------------------------------------------------------------------------------------------
// the CUDA device API

#define __syncthreads() ::emu::syncthreads(__LINE__)

template <class T>
inline T __emu_shfl(int op, unsigned mask, T v, int arg, int width, int line) {
    return ::emu::from_bits<T>(::emu::warp_op(op, mask, ::emu::to_bits(v), arg, width, line));
}
#define __shfl_sync(mask, v, src, ...) __emu_shfl(::emu::W_IDX, (mask), (v), (int)(src), __emu_width(__VA_ARGS__ + 0), __LINE__)
#define __shfl_up_sync(mask, v, d, ...) __emu_shfl(::emu::W_UP, (mask), (v), (int)(d), __emu_width(__VA_ARGS__ + 0), __LINE__)
#define __shfl_down_sync(mask, v, d, ...) __emu_shfl(::emu::W_DOWN, (mask), (v), (int)(d), __emu_width(__VA_ARGS__ + 0), __LINE__)
#define __shfl_xor_sync(mask, v, d, ...) __emu_shfl(::emu::W_XOR, (mask), (v), (int)(d), __emu_width(__VA_ARGS__ + 0), __LINE__)
inline int __emu_width(int w) { return w == 0 ? 32 : w; }
#define __syncwarp(...) ((void)::emu::warp_op(::emu::W_SYNC, __emu_mask(__VA_ARGS__ + 0u), 0, 0, 32, __LINE__))
inline unsigned __emu_mask(unsigned m) { return m == 0u ? 0xffffffffu : m; }
#define __ballot_sync(mask, p) ((unsigned)::emu::warp_op(::emu::W_BALLOT, (mask), (p) ? 1 : 0, 0, 32, __LINE__))
#define __any_sync(mask, p) ((int)::emu::warp_op(::emu::W_ANY, (mask), (p) ? 1 : 0, 0, 32, __LINE__))
#define __all_sync(mask, p) ((int)::emu::warp_op(::emu::W_ALL, (mask), (p) ? 1 : 0, 0, 32, __LINE__))

template <class T>
inline T __ldg(const T* p) { return *p; }

inline double __dadd_rn(double a, double b) { return a + b; }
inline double __dsub_rn(double a, double b) { return a - b; }
inline double __dmul_rn(double a, double b) { return a * b; }
inline double __ddiv_rn(double a, double b) { return a / b; }
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fdiv_rn(float a, float b) { return a / b; }
inline long long __double_as_longlong(double v) { return ::emu::from_bits<long long>(::emu::to_bits(v)); }
inline double __longlong_as_double(long long v) { return ::emu::from_bits<double>(::emu::to_bits(v)); }
inline int __float_as_int(float v) { return ::emu::from_bits<int>(::emu::to_bits(v)); }
inline float __int_as_float(int v) { return ::emu::from_bits<float>(::emu::to_bits(v)); }
inline unsigned __float_as_uint(float v) { return ::emu::from_bits<unsigned>(::emu::to_bits(v)); }
inline float __uint_as_float(unsigned v) { return ::emu::from_bits<float>(::emu::to_bits(v)); }
inline float rsqrtf(float v) { return 1.0f / std::sqrt(v); }
inline double rsqrt(double v) { return 1.0 / std::sqrt(v); }

inline int min(int a, int b) { return a < b ? a : b; }
inline unsigned min(unsigned a, unsigned b) { return a < b ? a : b; }
inline long long min(long long a, long long b) { return a < b ? a : b; }
inline unsigned long long min(unsigned long long a, unsigned long long b) { return a < b ? a : b; }
inline float min(float a, float b) { return std::fmin(a, b); }
inline double min(double a, double b) { return std::fmin(a, b); }
inline int max(int a, int b) { return a > b ? a : b; }
inline unsigned max(unsigned a, unsigned b) { return a > b ? a : b; }
inline long long max(long long a, long long b) { return a > b ? a : b; }
inline unsigned long long max(unsigned long long a, unsigned long long b) { return a > b ? a : b; }
inline float max(float a, float b) { return std::fmax(a, b); }
inline double max(double a, double b) { return std::fmax(a, b); }

// atomics: return the old value, as CUDA's do
#define EMU_ATOMIC_INT(T)                                                                                      \
    inline T atomicAdd(T* p, T v) { return __atomic_fetch_add(p, v, __ATOMIC_SEQ_CST); }                      \
    inline T atomicSub(T* p, T v) { return __atomic_fetch_sub(p, v, __ATOMIC_SEQ_CST); }                      \
    inline T atomicExch(T* p, T v) { return __atomic_exchange_n(p, v, __ATOMIC_SEQ_CST); }                    \
    inline T atomicOr(T* p, T v) { return __atomic_fetch_or(p, v, __ATOMIC_SEQ_CST); }                        \
    inline T atomicAnd(T* p, T v) { return __atomic_fetch_and(p, v, __ATOMIC_SEQ_CST); }                      \
    inline T atomicXor(T* p, T v) { return __atomic_fetch_xor(p, v, __ATOMIC_SEQ_CST); }                      \
    inline T atomicCAS(T* p, T cmp, T v) {                                                                     \
        __atomic_compare_exchange_n(p, &cmp, v, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);                  \
        return cmp;                                                                                            \
    }                                                                                                          \
    inline T atomicMax(T* p, T v) {                                                                            \
        T old = __atomic_load_n(p, __ATOMIC_SEQ_CST);                                                          \
        while (old < v && !__atomic_compare_exchange_n(p, &old, v, true, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST)) \
            ;                                                                                                  \
        return old;                                                                                            \
    }                                                                                                          \
    inline T atomicMin(T* p, T v) {                                                                            \
        T old = __atomic_load_n(p, __ATOMIC_SEQ_CST);                                                          \
        while (old > v && !__atomic_compare_exchange_n(p, &old, v, true, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST)) \
            ;                                                                                                  \
        return old;                                                                                            \
    }
EMU_ATOMIC_INT(int)
EMU_ATOMIC_INT(unsigned int)
EMU_ATOMIC_INT(long long)
EMU_ATOMIC_INT(unsigned long long)
#undef EMU_ATOMIC_INT

template <class F, class B>
inline F __emu_atomic_float_add(F* p, F v) {
    B* bp = reinterpret_cast<B*>(p);
    B old = __atomic_load_n(bp, __ATOMIC_SEQ_CST);
    for (;;) {
        F cur = ::emu::from_bits<F>(old);
        B want = (B)::emu::to_bits(static_cast<F>(cur + v));
        if (__atomic_compare_exchange_n(bp, &old, want, true, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST)) return cur;
    }
}
inline float atomicAdd(float* p, float v) { return __emu_atomic_float_add<float, unsigned int>(p, v); }
inline double atomicAdd(double* p, double v) { return __emu_atomic_float_add<double, unsigned long long>(p, v); }
inline float atomicExch(float* p, float v) {
    return ::emu::from_bits<float>(__atomic_exchange_n(reinterpret_cast<unsigned*>(p), (unsigned)::emu::to_bits(v), __ATOMIC_SEQ_CST));
}
