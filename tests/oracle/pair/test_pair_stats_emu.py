"""kernels/pair_stats.cu executed on the CPU (CUDA emulator) against the NumPy reference, on real
images: every dtype the kernel is instantiated for, every flavour (shared / global histograms,
general / single-channel, 32- / 64-bit index), 1x1, odd widths, non-contiguous input as the
Python side passes it, and the index width at the limit the host guarantees.

The launches go through the package's own host code (``gpudiff.pair._sums._pair_sums_cuda`` on the
emulated GPU), except the index-width test, which instantiates the kernel body with a 16-bit index
to show at a reachable size what the 32-bit kernels do at 2**31.
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import tifffile
from PIL import Image

from gpudiff import backend as _backend
from gpudiff.backend import _kernels
from gpudiff.pair import _sums_core, _sums_cuda
from gpudiff.backend._cuda_emu import compile_module
from gpudiff.pair._sums import pair_sums

pytestmark = pytest.mark.skipif(shutil.which("g++") is None and shutil.which("c++") is None,
                                reason="needs a C++ compiler for the CUDA emulator")

emu = _backend.resolve_backend("emulated-gpu")
FLAVOURS = ("auto", "i64", "global-hist", "general-for-c1", "global-hist-i64")
FIELDS = ("l1", "sse", "max_abs", "sa", "sb", "saa", "sbb", "sab")


@pytest.fixture(scope="module")
def images(data_dir):
    sk = data_dir / "skimage-data"
    camera = np.asarray(Image.open(sk / "camera.png"))
    astronaut = np.asarray(Image.open(sk / "astronaut.png").convert("RGB"))
    coffee = np.asarray(Image.open(sk / "coffee.png").convert("RGBA"))
    with tifffile.TiffFile(data_dir / "imageio-standard" / "calcium_imaging.tif") as tf:
        calcium = [tf.pages[i].asarray() for i in (0, 7)]
    return {"camera": camera, "astronaut": astronaut, "coffee": coffee, "calcium": calcium}


def _same(a, b, *, exact, **kw):
    want = pair_sums(a, b, impl="reference", **kw)
    got = pair_sums(emu.asarray(a), emu.asarray(b), impl="cuda", **kw)
    for f in FIELDS:
        x, y = getattr(want, f), getattr(got, f)
        if exact or f == "max_abs":
            np.testing.assert_array_equal(x, y, err_msg=f)
        else:
            np.testing.assert_allclose(x, y, rtol=1e-12, atol=1e-9 * (np.abs(x).max() + 1), err_msg=f)
    np.testing.assert_array_equal(want.l0, got.l0)
    assert want.l0_any == got.l0_any
    if want.hist_a is not None:
        np.testing.assert_array_equal(want.hist_a, got.hist_a)
        np.testing.assert_array_equal(want.hist_b, got.hist_b)
    return got


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_real_images_every_dtype_and_flavour(force_kernel_flavour, images, flavour):
    force_kernel_flavour(flavour)
    cam = images["camera"][:201, :333]  # sizes that are not multiples of the block
    ast = images["astronaut"][:150, :257]
    rgba = images["coffee"][:99, :131]
    c0, c7 = images["calcium"]
    cases = [
        (cam, np.roll(cam, 3, axis=1), (0.0, 256.0), 256),
        (ast, np.clip(ast.astype(int) + 9, 0, 255).astype(np.uint8), (0.0, 256.0), 64),
        (rgba, rgba[::-1].copy(), (0.0, 256.0), 32),
        (c0, c7, (0.0, 65536.0), 256),  # uint16 calcium imaging
        (c0, c7, (200.0, 3300.0), 100),  # a data range narrower than the dtype's
    ]
    for a, b, rng, bins in cases:
        exact = a.dtype.kind == "u"
        _same(a, b, exact=exact, tolerance=2.0, center=0.0, bins=bins, hist_range=rng)
        _same(a, b, exact=exact, tolerance=0.0, center=100.0)  # no histograms
        fa, fb = a.astype(np.float32) / 255.0, b.astype(np.float32) / 255.0
        _same(fa, fb, exact=False, tolerance=0.01, center=0.4, bins=50, hist_range=(0.0, 1.0))
        _same(fa.astype(np.float64), fb.astype(np.float64), exact=False, tolerance=0.01, center=0.4, bins=50,
              hist_range=(0.0, 1.0))


def test_one_pixel_odd_widths_and_non_contiguous_views(images):
    cam = images["camera"]
    for h, w in ((1, 1), (1, 7), (7, 1), (3, 257), (257, 3), (33, 31)):
        _same(cam[:h, :w], cam[5 : 5 + h, 9 : 9 + w], exact=True, bins=256, hist_range=(0.0, 256.0))
    ast = images["astronaut"]
    # strided views, as a crop or a decimation reaches pair_sums: the host copies them once
    a, b = ast[::3, 1::2], ast[1::3, ::2][: ast[::3].shape[0]]
    b = b[:, : a.shape[1]]
    assert not a.flags.c_contiguous
    _same(a, b, exact=True, bins=128, hist_range=(0.0, 256.0))
    _same(ast[:, :, 1], ast[:, :, 2], exact=True, bins=256, hist_range=(0.0, 256.0))  # a channel view


def test_every_kernel_in_the_source_is_launched_somewhere():
    """The loader's names (_sums_cuda._cuda_kernel_name over its whole domain) are the file's kernels."""
    mod = compile_module(_kernels.kernel_source("pair_stats"), options=_kernels.COMPILE_OPTIONS)
    names = set()
    for dtype in (np.uint8, np.uint16, np.float32, np.float64):
        for C in (1, 2, 3, 4):
            for n_samples in (10, 2**30, 2**30 + 1):
                for bins in (0, 256, 65536):
                    names.add(_sums_cuda._cuda_kernel_name(dtype, C, n_samples, bins)[0])
    assert names == set(mod.kernel_names)


# ------------------------------------------------------------------------------------------------
# index width: a 16-bit index shows at 2**14 samples what the 32-bit one does at 2**30

I16 = r"""
extern "C" __global__ void __launch_bounds__(PS_MAX_THREADS)
pair_stats_u8_i16(const unsigned char* __restrict__ a, const unsigned char* __restrict__ b, short npix, int C,
                  double tol, u64 itol, double center, int nbins, double lo, double hi,
                  const unsigned int* __restrict__ lut, u64* __restrict__ sums, u64* __restrict__ counts,
                  u64* __restrict__ hist) {
    pair_stats_body<unsigned char, short, false, PS_MAX_C>(a, b, npix, C, tol, itol, center, nbins, lo, hi, lut,
                                                          sums, counts, hist);
}
"""


def _padded(x):
    """x's samples inside a larger buffer, so a wrapped (negative) 16-bit index reads memory that
    exists (77s) instead of faulting: the overflow shows as wrong sums."""
    big = np.full(2**15 + x.size + 2**15, 77, np.uint8)
    big[2**15 : 2**15 + x.size] = x.ravel()
    return big[2**15 :]


def _launch_i16(kernel, a, b, C, grid):
    npix = a.size // C
    bins = 256
    buf = np.zeros(7 * C + 2 * C + 1 + 2 * C * bins, np.uint64)
    sums, counts, hist = buf[: 7 * C], buf[7 * C : 9 * C + 1], buf[9 * C + 1 :]
    lut = _sums_core._value_bins("uint8", 0.0, 256.0, bins)
    kernel((grid,), (256,), (_padded(a), _padded(b), np.int16(npix), np.int32(C), np.float64(0.0), np.uint64(0),
                             np.float64(0.0), np.int32(bins), np.float64(0.0), np.float64(256.0), lut, sums, counts,
                             hist), shared_mem=2 * C * bins * 4)
    return _sums_cuda._decode_cuda_buffer(buf, C=C, nbins=bins, npix=npix, is_int=True, center=0.0,
                                       hist_range=(0.0, 256.0))


def test_index_arithmetic_holds_at_the_width_limit_the_host_guarantees(images):
    """The host picks the i32 kernels for npix * C <= 2**30 = 2**(32 - 2): the grid-stride loop's
    p + stride and p * C + c then stay below 2**31 for any grid the host launches (at most
    8 blocks per SM of 256 threads). The same rule for a 16-bit index is npix * C <= 2**14, with
    strides up to 2**14: the kernel is exact there, on a real image, with the largest stride; past
    the rule's limit the narrow index wraps and the sums go wrong, so the test can see an
    overflow when there is one."""
    mod = compile_module(_kernels.kernel_source("pair_stats"), options=_kernels.COMPILE_OPTIONS,
                         name="pair_stats_i16", extra_source=I16)
    k = mod.get_function("pair_stats_u8_i16")
    ast = images["astronaut"]
    for C, (h, w) in ((1, (128, 128)), (4, (64, 64))):  # npix * C == 2**14 exactly
        a = np.ascontiguousarray(np.dstack([ast[:h, :w]] * 2)[:, :, :C] if C == 4 else ast[:h, :w, 0])
        b = np.ascontiguousarray(np.roll(a, 5, axis=0))
        npix = h * w
        assert npix * C == 2**14
        want = pair_sums(a, b, impl="reference", bins=256, hist_range=(0.0, 256.0))
        for grid in (1, 7, 2**14 // 256):  # stride up to 2**14, as 8 blocks/SM on a large device
            got = _launch_i16(k, a, b, C, grid)
            np.testing.assert_array_equal(got.l1, want.l1)
            np.testing.assert_array_equal(got.sab, want.sab)
            np.testing.assert_array_equal(got.hist_b, want.hist_b)
    # Past the limit (npix * C = 2**16 samples > int16): the kernel overflows and the test sees it.
    a = np.ascontiguousarray(ast[:128, :128])  # 16384 pixels x 3 channels
    b = np.ascontiguousarray(ast[128:256, :128])
    want = pair_sums(a, b, impl="reference", bins=256, hist_range=(0.0, 256.0))
    got = _launch_i16(k, a, b, 3, 64)
    assert not np.array_equal(got.l1, want.l1)
    # and the host's rule keeps real launches on the wide index: i64 past 2**30 samples
    assert _sums_cuda._cuda_kernel_name(np.uint8, 4, 2**30, 256)[0].endswith("_i32")
    assert _sums_cuda._cuda_kernel_name(np.uint8, 4, 2**30 + 4, 256)[0].endswith("_i64")
