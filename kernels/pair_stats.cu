// pair_stats.cu: every norm, the NCC sums and both histograms of an image pair in one read.
//
// The GPU side of gpudiff.pair.pair_sums (impl="cuda"); gpudiff/pair/_sums_reference.py has the NumPy
// reference that computes the same numbers, and tests/gpu/pair/test_pair_sums_gpu.py compares them.
//
// Layout: a and b are C-contiguous, interleaved channels: sample (pixel p, channel c) is at
// p * C + c, with C from 1 to 4 given at run time. A grid-stride loop runs over pixels; each
// thread keeps its partial sums in registers, a block reduces them with warp shuffles, and one
// thread per block adds the block's totals to the global accumulators with one atomic per value.
//
// Outputs (zeroed by the caller):
//   sums   [C * 7]   per channel: l1, sse, sa, sb, saa, sbb, sab.
//                    Integer images: unsigned 64-bit, exact (sa/sb/saa/sbb/sab are raw sums, the
//                    host centres them). Float images: double, with sa.. centred on `center`.
//   counts [2C + 1]  max |a - b| per channel (bit pattern: the double's bits for float images,
//                    the integer for integer images; non-negative doubles order like their
//                    bits, so atomicMax on the bits is a max on the values), then l0 per
//                    channel, then l0_any (pixels where any channel has |a - b| > tolerance).
//   hist   [2 * C * nbins]  histograms of a then b, channel-major; only when nbins > 0.
//
// Histogram bins: integer images map each value through `lut` (value -> bin, nbins when out of
// range), built on the host with the float64 formula; float images compute
// min(floor((v - lo) * nbins / (hi - lo)), nbins - 1) in double for lo <= v <= hi (NaN and
// values outside are not counted). Arithmetic uses the _rn intrinsics so that nvcc does not
// contract multiply-adds into FMAs: the results then round like the CPU's.
//
// Kernels (extern "C", no name mangling), <dtype> in u8 u16 f32 f64, <index> in i32 i64 (the
// type of the sample index p * C + c: i32 when npix * C <= 2**30):
//   pair_stats_<dtype>_<index>                 C from 1 to 4; histograms privatised in shared
//                                              memory: launch with 2 * C * nbins * 4 bytes of
//                                              dynamic shared memory (<= 48 KiB), 0 when nbins == 0.
//   pair_stats_global_hist_<dtype>_<index>     the same with global 64-bit histogram atomics, for
//                                              histograms too large for shared memory.
//   pair_stats_c1_<dtype>_<index>,
//   pair_stats_global_hist_c1_<dtype>_<index>  the same for C == 1 only: a quarter of the
//                                              per-thread accumulators, so fewer registers and
//                                              more threads in flight for the common grey case.
// Launch with a 1-D grid and blockDim.x a multiple of 32, at most PS_MAX_THREADS (256).

typedef unsigned long long u64;

#define PS_MAX_C 4
#define PS_NSUM 7
#define PS_MAX_THREADS 256

template <typename T>
struct PsTraits;
template <>
struct PsTraits<unsigned char> {
    typedef u64 Acc;
    static const bool is_int = true;
};
template <>
struct PsTraits<unsigned short> {
    typedef u64 Acc;
    static const bool is_int = true;
};
template <>
struct PsTraits<float> {
    typedef double Acc;
    static const bool is_int = false;
};
template <>
struct PsTraits<double> {
    typedef double Acc;
    static const bool is_int = false;
};

__device__ __forceinline__ double ps_warp_sum(double v) {
    for (int off = 16; off > 0; off >>= 1) v += __shfl_down_sync(0xffffffffu, v, off);
    return v;
}
__device__ __forceinline__ u64 ps_warp_sum(u64 v) {
    for (int off = 16; off > 0; off >>= 1) v += __shfl_down_sync(0xffffffffu, v, off);
    return v;
}
__device__ __forceinline__ u64 ps_warp_max(u64 v) {
    for (int off = 16; off > 0; off >>= 1) {
        u64 o = __shfl_down_sync(0xffffffffu, v, off);
        v = o > v ? o : v;
    }
    return v;
}

// Block-wide reductions; the result is valid in thread 0. Every thread of the block must call.
template <typename V>
__device__ __forceinline__ V ps_block_sum(V v, V* scratch) {
    const int lane = threadIdx.x & 31;
    const int warp = threadIdx.x >> 5;
    const int nwarps = (blockDim.x + 31) >> 5;
    v = ps_warp_sum(v);
    __syncthreads();  // scratch may still be read by the previous reduction
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    v = (threadIdx.x < nwarps) ? scratch[threadIdx.x] : V(0);
    if (warp == 0) v = ps_warp_sum(v);
    return v;
}

__device__ __forceinline__ u64 ps_block_max(u64 v, u64* scratch) {
    const int lane = threadIdx.x & 31;
    const int warp = threadIdx.x >> 5;
    const int nwarps = (blockDim.x + 31) >> 5;
    v = ps_warp_max(v);
    __syncthreads();
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    v = (threadIdx.x < nwarps) ? scratch[threadIdx.x] : u64(0);
    if (warp == 0) v = ps_warp_max(v);
    return v;
}

// Bin of a float value, or -1 when it is not counted (outside [lo, hi], NaN).
__device__ __forceinline__ int ps_float_bin(double v, double lo, double hi, double fbins, double width,
                                            int nbins) {
    if (!(v >= lo && v <= hi)) return -1;
    const double t = floor(__ddiv_rn(__dmul_rn(__dsub_rn(v, lo), fbins), width));
    const int i = (int)t;
    return i < nbins ? i : nbins - 1;
}

// Per-thread partial sums of one channel.
template <typename T>
struct PsPartial {
    typedef typename PsTraits<T>::Acc Acc;
    Acc l1, sse, sa, sb, saa, sbb, sab;
    u64 mx;  // integer max, or the bits of the double max
    u64 l0;
};

template <typename T>
__device__ __forceinline__ bool ps_accumulate(PsPartial<T>& p, T va, T vb, double tol, u64 itol, double center) {
    if constexpr (PsTraits<T>::is_int) {
        const long long d = (long long)va - (long long)vb;
        const u64 ad = (u64)(d < 0 ? -d : d);
        p.l1 += ad;
        p.sse += ad * ad;
        p.mx = ad > p.mx ? ad : p.mx;
        const bool over = ad > itol;
        p.l0 += over;
        p.sa += (u64)va;
        p.sb += (u64)vb;
        p.saa += (u64)va * (u64)va;
        p.sbb += (u64)vb * (u64)vb;
        p.sab += (u64)va * (u64)vb;
        return over;
    } else {
        const double fa = (double)va;
        const double fb = (double)vb;
        const double d = __dsub_rn(fa, fb);
        const double ad = fabs(d);
        p.l1 = __dadd_rn(p.l1, ad);
        p.sse = __dadd_rn(p.sse, __dmul_rn(d, d));
        const u64 bits = (u64)__double_as_longlong(ad);  // ad >= +0: bits order like values
        p.mx = bits > p.mx ? bits : p.mx;
        const bool over = ad > tol;
        p.l0 += over;
        const double ca = __dsub_rn(fa, center);
        const double cb = __dsub_rn(fb, center);
        p.sa = __dadd_rn(p.sa, ca);
        p.sb = __dadd_rn(p.sb, cb);
        p.saa = __dadd_rn(p.saa, __dmul_rn(ca, ca));
        p.sbb = __dadd_rn(p.sbb, __dmul_rn(cb, cb));
        p.sab = __dadd_rn(p.sab, __dmul_rn(ca, cb));
        return over;
    }
}

template <typename T>
__device__ __forceinline__ int ps_bin(T v, const unsigned int* __restrict__ lut, double lo, double hi, double fbins,
                                      double width, int nbins) {
    if constexpr (PsTraits<T>::is_int) {
        const unsigned int i = __ldg(lut + (unsigned int)v);
        return i < (unsigned int)nbins ? (int)i : -1;
    } else {
        return ps_float_bin((double)v, lo, hi, fbins, width, nbins);
    }
}

template <typename T, typename I, bool GLOBAL_HIST, int MAXC>
__device__ __forceinline__ void pair_stats_body(const T* __restrict__ a, const T* __restrict__ b, I npix, int C,
                                                double tol, u64 itol, double center, int nbins, double lo,
                                                double hi, const unsigned int* __restrict__ lut,
                                                typename PsTraits<T>::Acc* __restrict__ sums,
                                                u64* __restrict__ counts, u64* __restrict__ hist) {
    typedef typename PsTraits<T>::Acc Acc;
    extern __shared__ unsigned int ps_shist[];  // [2][C][nbins] when !GLOBAL_HIST and nbins > 0
    __shared__ Acc ps_red[32];
    __shared__ u64 ps_red_u[32];

    const bool do_hist = nbins > 0;
    const int hsize = 2 * C * nbins;
    if (!GLOBAL_HIST && do_hist) {
        for (int i = threadIdx.x; i < hsize; i += blockDim.x) ps_shist[i] = 0u;
        __syncthreads();
    }

    PsPartial<T> part[MAXC];
#pragma unroll
    for (int c = 0; c < MAXC; ++c) {
        part[c].l1 = part[c].sse = part[c].sa = part[c].sb = Acc(0);
        part[c].saa = part[c].sbb = part[c].sab = Acc(0);
        part[c].mx = 0;
        part[c].l0 = 0;
    }
    u64 any_count = 0;
    const double fbins = (double)nbins;
    const double width = __dsub_rn(hi, lo);

    const I stride = (I)blockDim.x * (I)gridDim.x;
    for (I p = (I)blockIdx.x * (I)blockDim.x + (I)threadIdx.x; p < npix; p += stride) {
        const I base = p * (I)C;
        bool any_over = false;
#pragma unroll
        for (int c = 0; c < MAXC; ++c) {
            if (c < C) {
                const T va = a[base + c];
                const T vb = b[base + c];
                any_over |= ps_accumulate<T>(part[c], va, vb, tol, itol, center);
                if (do_hist) {
                    const int ia = ps_bin<T>(va, lut, lo, hi, fbins, width, nbins);
                    const int ib = ps_bin<T>(vb, lut, lo, hi, fbins, width, nbins);
                    if (GLOBAL_HIST) {
                        if (ia >= 0) atomicAdd(hist + c * nbins + ia, 1ULL);
                        if (ib >= 0) atomicAdd(hist + (C + c) * nbins + ib, 1ULL);
                    } else {
                        if (ia >= 0) atomicAdd(ps_shist + c * nbins + ia, 1u);
                        if (ib >= 0) atomicAdd(ps_shist + (C + c) * nbins + ib, 1u);
                    }
                }
            }
        }
        any_count += any_over;
    }

    // Block totals -> one atomic per value. C is uniform over the block, so every thread takes
    // the same branches around the __syncthreads() inside the reductions.
#pragma unroll
    for (int c = 0; c < MAXC; ++c) {
        if (c < C) {
            const Acc v0 = ps_block_sum<Acc>(part[c].l1, ps_red);
            if (threadIdx.x == 0) atomicAdd(sums + c * PS_NSUM + 0, v0);
            const Acc v1 = ps_block_sum<Acc>(part[c].sse, ps_red);
            if (threadIdx.x == 0) atomicAdd(sums + c * PS_NSUM + 1, v1);
            const Acc v2 = ps_block_sum<Acc>(part[c].sa, ps_red);
            if (threadIdx.x == 0) atomicAdd(sums + c * PS_NSUM + 2, v2);
            const Acc v3 = ps_block_sum<Acc>(part[c].sb, ps_red);
            if (threadIdx.x == 0) atomicAdd(sums + c * PS_NSUM + 3, v3);
            const Acc v4 = ps_block_sum<Acc>(part[c].saa, ps_red);
            if (threadIdx.x == 0) atomicAdd(sums + c * PS_NSUM + 4, v4);
            const Acc v5 = ps_block_sum<Acc>(part[c].sbb, ps_red);
            if (threadIdx.x == 0) atomicAdd(sums + c * PS_NSUM + 5, v5);
            const Acc v6 = ps_block_sum<Acc>(part[c].sab, ps_red);
            if (threadIdx.x == 0) atomicAdd(sums + c * PS_NSUM + 6, v6);
            const u64 mx = ps_block_max(part[c].mx, ps_red_u);
            if (threadIdx.x == 0) atomicMax(counts + c, mx);
            const u64 l0 = ps_block_sum<u64>(part[c].l0, ps_red_u);
            if (threadIdx.x == 0) atomicAdd(counts + C + c, l0);
        }
    }
    const u64 any_total = ps_block_sum<u64>(any_count, ps_red_u);
    if (threadIdx.x == 0) atomicAdd(counts + 2 * C, any_total);

    if (!GLOBAL_HIST && do_hist) {
        __syncthreads();  // every shared increment done
        for (int i = threadIdx.x; i < hsize; i += blockDim.x) {
            const unsigned int v = ps_shist[i];
            if (v) atomicAdd(hist + i, (u64)v);
        }
    }
}

#define PS_KERNEL(NAME, T, I, GLOBAL, MAXC)                                                                  \
    extern "C" __global__ void __launch_bounds__(PS_MAX_THREADS)                                             \
        NAME(const T* __restrict__ a, const T* __restrict__ b, I npix, int C, double tol, u64 itol,          \
             double center, int nbins, double lo, double hi, const unsigned int* __restrict__ lut,            \
             PsTraits<T>::Acc* __restrict__ sums, u64* __restrict__ counts, u64* __restrict__ hist) {        \
        pair_stats_body<T, I, GLOBAL, MAXC>(a, b, npix, C, tol, itol, center, nbins, lo, hi, lut, sums,     \
                                            counts, hist);                                                   \
    }

// One family per dtype/index/histogram flavour and channel bound.
#define PS_FAMILY(SUFFIX, T, I)                                                        \
    PS_KERNEL(pair_stats_##SUFFIX, T, I, false, PS_MAX_C)                              \
    PS_KERNEL(pair_stats_global_hist_##SUFFIX, T, I, true, PS_MAX_C)                   \
    PS_KERNEL(pair_stats_c1_##SUFFIX, T, I, false, 1)                                  \
    PS_KERNEL(pair_stats_global_hist_c1_##SUFFIX, T, I, true, 1)

PS_FAMILY(u8_i32, unsigned char, int)
PS_FAMILY(u8_i64, unsigned char, long long)
PS_FAMILY(u16_i32, unsigned short, int)
PS_FAMILY(u16_i64, unsigned short, long long)
PS_FAMILY(f32_i32, float, int)
PS_FAMILY(f32_i64, float, long long)
PS_FAMILY(f64_i32, double, int)
PS_FAMILY(f64_i64, double, long long)
