"""Bad input files and arrays: each refused with one InputError line naming the file and the fix.

Includes decompression bombs (a PNG and a TIFF whose headers declare 2.5e9 pixels), refused before
any pixel is decoded or allocated.
"""

from __future__ import annotations

import os
import struct
import threading
import time
import tracemalloc
import zlib

import numpy as np
import pytest
import tifffile
from PIL import Image, ImageFile

from gpudiff.io import _read_pillow, _readerrors
from gpudiff.errors import ConfigError, InputError
from gpudiff.io._images import probe_image, read_image
from gpudiff.io._validate import validate_array


def refused(call, *, names, hint):
    """Run ``call``; it must raise one InputError line containing ``names`` and ``hint``."""
    with pytest.raises(InputError) as info:
        call()
    message = str(info.value)
    assert "\n" not in message, message
    assert str(names) in message, message
    assert hint in message, message
    assert info.value.__suppress_context__ or info.value.__cause__ is None
    return message


@pytest.fixture
def camera(data_dir):
    return data_dir / "skimage-data" / "camera.png"


# --------------------------------------------------------------------------------------------
# the file itself


@pytest.mark.parametrize("fn", [read_image, probe_image])
def test_missing_file(tmp_path, fn):
    path = tmp_path / "nope.png"
    refused(lambda: fn(path), names=path, hint="not found: check the path")


def test_missing_parent_is_a_file(tmp_path):
    parent = tmp_path / "file.txt"
    parent.write_text("x")
    path = parent / "image.png"
    refused(lambda: read_image(path), names=path, hint="check the path")


@pytest.mark.parametrize("fn", [read_image, probe_image])
def test_directory(tmp_path, fn):
    hint = "is a directory: give an image file (gpudiff run takes folders)"
    refused(lambda: fn(tmp_path), names=tmp_path, hint=hint)


@pytest.mark.parametrize("fn", [read_image, probe_image])
def test_zero_bytes(tmp_path, fn):
    path = tmp_path / "empty.png"
    path.write_bytes(b"")
    refused(lambda: fn(path), names=path, hint="is empty (0 bytes)")


@pytest.mark.parametrize(
    "content",
    [b"hello, this is text\n", b"\x00" * 100, os.urandom(500), b"BM", b"P7\n", b"%PDF-1.4 ...", b"\x89PN"],
    ids=["text", "zeros", "random", "bm-only", "pam", "pdf", "png-prefix"],
)
def test_not_an_image(tmp_path, content):
    path = tmp_path / "thing.png"
    path.write_bytes(content)
    refused(
        lambda: read_image(path),
        names=path,
        hint="is not an image gpudiff can read (PNG, JPEG, BMP, PGM/PPM, TIFF, GIF)",
    )


def test_permission_denied_simulated(tmp_path, camera, monkeypatch):
    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(_readerrors, "open", denied, raising=False)
    refused(lambda: read_image(camera), names=camera, hint="(permission denied): check the permissions")


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root reads any file")
def test_permission_denied_real(tmp_path, camera):
    path = tmp_path / "secret.png"
    path.write_bytes(camera.read_bytes())
    path.chmod(0)
    try:
        refused(lambda: read_image(path), names=path, hint="permission denied")
    finally:
        path.chmod(0o644)


# --------------------------------------------------------------------------------------------
# truncated and corrupt data


def _cut(tmp_path, src, fraction, name):
    data = src.read_bytes()
    path = tmp_path / name
    path.write_bytes(data[: int(len(data) * fraction)])
    return path


TRUNCATED_HINT = "is truncated or corrupt"


@pytest.mark.parametrize("fraction", [0.5, 0.9, 0.999])
def test_truncated_jpeg(tmp_path, data_dir, fraction):
    # Pillow can fill a cut JPEG with grey; that must be an error, never an image.
    path = _cut(tmp_path, data_dir / "skimage-data" / "rocket.jpg", fraction, "cut.jpg")
    refused(lambda: read_image(path), names=path, hint=TRUNCATED_HINT)


@pytest.mark.parametrize("fraction", [0.5, 0.9, 0.999])
def test_truncated_png(tmp_path, data_dir, fraction):
    path = _cut(tmp_path, data_dir / "skimage-data" / "astronaut.png", fraction, "cut.png")
    refused(lambda: read_image(path), names=path, hint=TRUNCATED_HINT)


def test_truncated_png_header(tmp_path, data_dir):
    path = tmp_path / "cut.png"
    path.write_bytes((data_dir / "skimage-data" / "camera.png").read_bytes()[:20])
    refused(lambda: probe_image(path), names=path, hint=TRUNCATED_HINT)


def test_truncated_16bit_png(tmp_path):
    import cv2

    data = np.random.default_rng(0).integers(0, 65536, (50, 60, 3), dtype=np.uint16)
    src = tmp_path / "full.png"
    cv2.imwrite(str(src), data)
    path = _cut(tmp_path, src, 0.5, "cut16.png")
    refused(lambda: read_image(path), names=path, hint=TRUNCATED_HINT)


@pytest.mark.parametrize("fraction", [0.3, 0.7, 0.99])
def test_truncated_tiff_real(tmp_path, data_dir, fraction):
    path = _cut(tmp_path, data_dir / "pims-testdata" / "stuck.tif", fraction, "cut.tif")
    # The last page tifffile still finds is the one cut: it must not read as zeros.
    last = probe_image(path).pages - 1
    refused(lambda: read_image(path, page=last), names=path, hint=TRUNCATED_HINT)


def test_truncated_tiff_missing_pages_are_not_out_of_range(tmp_path, data_dir):
    # Cut inside page 2's data: pages 3 and 4 are lost, which is a truncation, not a page number
    # out of range; the pages before the cut still read.
    src = data_dir / "pims-testdata" / "stuck.tif"
    path = _cut(tmp_path, src, 0.3, "cut.tif")
    pages = probe_image(path).pages
    assert 1 <= pages < 5
    assert np.array_equal(read_image(path, page=0), tifffile.imread(src, key=0))
    refused(lambda: read_image(path, page=4), names=path, hint=TRUNCATED_HINT)
    refused(lambda: probe_image(path, page=4), names=path, hint="chain of pages breaks")


@pytest.mark.parametrize("compression", [None, "zlib", "lzw"])
def test_truncated_tiff_written(tmp_path, compression):
    data = np.random.default_rng(0).integers(0, 65536, (200, 300), dtype=np.uint16)
    src = tmp_path / "full.tif"
    tifffile.imwrite(src, data, compression=compression, rowsperstrip=8)
    path = _cut(tmp_path, src, 0.6, "cut.tif")
    refused(lambda: read_image(path), names=path, hint=TRUNCATED_HINT)


def test_tiff_header_only(tmp_path):
    path = tmp_path / "head.tif"
    path.write_bytes(b"II*\x00\x08\x00\x00\x00")
    refused(lambda: read_image(path), names=path, hint=TRUNCATED_HINT)


@pytest.mark.parametrize("fraction", [0.3, 0.6, 0.95])
def test_truncated_gif(tmp_path, data_dir, fraction):
    # Pillow decodes a cut GIF silently (the missing rows keep the background): refuse it.
    path = _cut(tmp_path, data_dir / "imageio-standard" / "newtonscradle.gif", fraction, "cut.gif")
    refused(lambda: read_image(path), names=path, hint=TRUNCATED_HINT)


def test_truncated_ppm(tmp_path, data_dir):
    path = _cut(tmp_path, data_dir / "mmflow-flow-fixtures" / "00001_img1.ppm", 0.5, "cut.ppm")
    refused(lambda: read_image(path), names=path, hint=TRUNCATED_HINT)


def test_truncated_16bit_pgm(tmp_path):
    path = tmp_path / "cut16.pgm"
    path.write_bytes(b"P5\n10 10\n65535\n" + b"\x01\x02" * 30)
    refused(lambda: read_image(path), names=path, hint=TRUNCATED_HINT)


def test_corrupt_pnm_header(tmp_path):
    path = tmp_path / "bad.pgm"
    path.write_bytes(b"P5\n10 ten\n255\n" + b"\x00" * 100)
    refused(lambda: read_image(path), names=path, hint=TRUNCATED_HINT)


@pytest.mark.parametrize("name", ["ROI.bmp"])
def test_truncated_bmp(tmp_path, data_dir, name):
    path = _cut(tmp_path, data_dir / "cdnet2014-traffic-subset" / name, 0.5, "cut.bmp")
    refused(lambda: read_image(path), names=path, hint=TRUNCATED_HINT)


def test_truncated_24bit_bmp(tmp_path):
    src = tmp_path / "rgb.bmp"
    Image.fromarray(np.full((40, 50, 3), 7, np.uint8)).save(src)
    path = _cut(tmp_path, src, 0.5, "cut.bmp")
    refused(lambda: read_image(path), names=path, hint=TRUNCATED_HINT)


def test_corrupt_png_crc(tmp_path, data_dir):
    data = bytearray((data_dir / "skimage-data" / "camera.png").read_bytes())
    data[29] ^= 0xFF  # IHDR CRC
    path = tmp_path / "crc.png"
    path.write_bytes(bytes(data))
    refused(lambda: read_image(path), names=path, hint=TRUNCATED_HINT)


def test_truncation_caught_even_if_pillow_told_to_load_truncated(tmp_path, data_dir, monkeypatch):
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    path = _cut(tmp_path, data_dir / "skimage-data" / "rocket.jpg", 0.5, "cut.jpg")
    refused(lambda: read_image(path), names=path, hint=TRUNCATED_HINT)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True  # the caller's setting is put back


# --------------------------------------------------------------------------------------------
# pages


def test_tiff_page_out_of_range(data_dir):
    path = data_dir / "pims-testdata" / "stuck.tif"
    hint = "has 5 pages; --page 7 is out of range"
    message = refused(lambda: read_image(path, page=7), names=path, hint=hint)
    assert "0 to 4" in message
    refused(lambda: probe_image(path, page=5), names=path, hint="--page 5 is out of range")


def test_gif_page_out_of_range(data_dir):
    path = data_dir / "skimage-data" / "no_time_for_that_tiny.gif"
    refused(lambda: read_image(path, page=24), names=path, hint="has 24 pages; --page 24 is out of range")


@pytest.mark.parametrize("name", ["camera.png", "rocket.jpg"])
def test_single_page_formats_out_of_range(data_dir, name):
    path = data_dir / "skimage-data" / name
    refused(lambda: read_image(path, page=1), names=path, hint="has 1 page; --page 1 is out of range")


def test_ppm_page_out_of_range(data_dir):
    path = data_dir / "mmflow-flow-fixtures" / "00001_img1.ppm"
    refused(lambda: read_image(path, page=2), names=path, hint="has 1 page; --page 2 is out of range")


@pytest.mark.parametrize("page", [-1, 1.5, "2"])
def test_bad_page_argument(camera, page):
    with pytest.raises(ConfigError, match="--page"):
        read_image(camera, page=page)


@pytest.mark.parametrize("max_pixels", [0, -5, 2.5, "many"])
def test_bad_max_pixels_argument(camera, max_pixels):
    with pytest.raises(ConfigError, match="--max-pixels"):
        read_image(camera, max_pixels=max_pixels)


# --------------------------------------------------------------------------------------------
# pixel budget (decompression bombs)

BUDGET_HINT = "raise --max-pixels if you trust it"


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _bomb_png(path, width=50000, height=50000, depth=8, color=0):
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, depth, color, 0, 0, 0))
        + _png_chunk(b"IDAT", zlib.compress(b"\x00" * 1000))
        + _png_chunk(b"IEND", b"")
    )
    return path


def _bomb_tiff(path, width=50000, height=50000):
    """A classic little-endian TIFF whose one strip declares width x height uint8 pixels."""
    entries = [
        (256, 4, 1, width),  # ImageWidth, LONG
        (257, 4, 1, height),  # ImageLength
        (258, 3, 1, 8),  # BitsPerSample, SHORT
        (259, 3, 1, 1),  # Compression: none
        (262, 3, 1, 1),  # Photometric: min-is-black
        (273, 4, 1, 8 + 2 + 12 * 8 + 4),  # StripOffsets: right after the IFD
        (277, 3, 1, 1),  # SamplesPerPixel
        (278, 4, 1, height),  # RowsPerStrip
        (279, 4, 1, width * height),  # StripByteCounts
    ]
    ifd = struct.pack("<H", len(entries))
    for tag, kind, count, value in entries:
        fmt = "<HHIHxx" if kind == 3 else "<HHII"
        ifd += struct.pack(fmt, tag, kind, count, value)
    ifd += struct.pack("<I", 0)
    header = b"II*\x00" + struct.pack("<I", 8)
    body = header + ifd
    path.write_bytes(body + b"\x00" * 64)
    return path


def _assert_refused_cheaply(call, path, monkeypatch, declared_bytes):
    """Refused with the budget message, fast, allocating far less than the declared size."""

    def decoded(*args, **kwargs):
        raise AssertionError("pixels were decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", decoded)
    monkeypatch.setattr(tifffile.TiffPage, "asarray", decoded)
    tracemalloc.start()
    start = time.perf_counter()
    try:
        message = refused(call, names=path, hint=BUDGET_HINT)
        elapsed = time.perf_counter() - start
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert elapsed < 2.0
    assert peak < 16 * 2**20 < declared_bytes / 100
    return message


def test_png_bomb_refused_before_decoding(tmp_path, monkeypatch):
    path = _bomb_png(tmp_path / "bomb.png")
    message = _assert_refused_cheaply(lambda: read_image(path), path, monkeypatch, 2.5e9)
    assert "declares 50000 x 50000 = 2.5e9 pixels, over the budget of 1.07e9" in message


def test_png_16bit_bomb_refused(tmp_path, monkeypatch):
    path = _bomb_png(tmp_path / "bomb16.png", width=60000, height=30000, depth=16, color=2)
    message = _assert_refused_cheaply(lambda: read_image(path), path, monkeypatch, 1.08e10)
    assert "60000 x 30000 = 1.8e9 pixels" in message


def test_tiff_bomb_refused_before_reading(tmp_path, monkeypatch):
    path = _bomb_tiff(tmp_path / "bomb.tif")
    with tifffile.TiffFile(path) as tif:  # the crafted file is a valid TIFF as far as tags go
        assert tif.pages[0].shape == (50000, 50000)
    message = _assert_refused_cheaply(lambda: read_image(path), path, monkeypatch, 2.5e9)
    assert "declares 50000 x 50000 = 2.5e9 pixels, over the budget of 1.07e9" in message


def test_gif_bomb_refused(tmp_path, monkeypatch):
    # Logical screen 65535 x 65535 with one tiny frame.
    gif = (
        b"GIF89a"
        + struct.pack("<HHBBB", 65535, 65535, 0x80, 0, 0)
        + b"\x00\x00\x00\xff\xff\xff"
        + b"\x2c"
        + struct.pack("<HHHHB", 0, 0, 1, 1, 0)
        + b"\x02\x02\x44\x01\x00"
        + b"\x3b"
    )
    path = tmp_path / "bomb.gif"
    path.write_bytes(gif)
    _assert_refused_cheaply(lambda: read_image(path), path, monkeypatch, 4.2e9)
    assert probe_image(path).shape == (65535, 65535, 3)


def test_pnm_bomb_refused(tmp_path, monkeypatch):
    path = tmp_path / "bomb.ppm"
    path.write_bytes(b"P6\n60000 60000\n65535\n" + b"\x00" * 100)
    _assert_refused_cheaply(lambda: read_image(path), path, monkeypatch, 2.1e10)


def test_small_budget_on_real_image(camera):
    message = refused(lambda: read_image(camera, max_pixels=1000), names=camera, hint=BUDGET_HINT)
    assert "512 x 512 = 262144 pixels, over the budget of 1000" in message
    assert read_image(camera, max_pixels=512 * 512).shape == (512, 512)
    refused(lambda: probe_image(camera, max_pixels=1000), names=camera, hint=BUDGET_HINT)


def test_small_budget_on_real_tiff(data_dir):
    path = data_dir / "pims-testdata" / "stuck.tif"
    refused(lambda: read_image(path, max_pixels=512 * 511), names=path, hint=BUDGET_HINT)


def test_pillow_decompression_bomb_error_becomes_ours(camera, monkeypatch):
    def bomb(im):
        raise Image.DecompressionBombError("Image size (...) exceeds limit")

    monkeypatch.setattr(_read_pillow, "_pillow_to_array", bomb)
    refused(lambda: read_image(camera), names=camera, hint=BUDGET_HINT)


def test_pillow_limits_set_during_read_and_restored(camera, monkeypatch):
    seen = {}
    real = _read_pillow._pillow_to_array

    def spy(im):
        seen["max"] = Image.MAX_IMAGE_PIXELS
        seen["truncated"] = ImageFile.LOAD_TRUNCATED_IMAGES
        return real(im)

    monkeypatch.setattr(_read_pillow, "_pillow_to_array", spy)
    before = Image.MAX_IMAGE_PIXELS
    read_image(camera, max_pixels=3_000_000_000)
    assert seen == {"max": 3_000_000_000, "truncated": False}
    assert Image.MAX_IMAGE_PIXELS == before
    with pytest.raises(InputError):
        read_image(camera.parent / "missing.png")
    assert Image.MAX_IMAGE_PIXELS == before


def test_pillow_limits_restored_after_concurrent_reads(data_dir):
    before = (Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES)
    names = ("camera.png", "astronaut.png", "rocket.jpg", "coins.png")
    files = [data_dir / "skimage-data" / n for n in names]
    errors = []

    def work(i):
        try:
            for _ in range(5):
                read_image(files[i % len(files)], max_pixels=10**6 + i)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert (Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES) == before


# --------------------------------------------------------------------------------------------
# unsupported content in files


def test_complex_tiff(tmp_path):
    path = tmp_path / "complex.tif"
    tifffile.imwrite(path, np.ones((4, 5), np.complex64))
    hint = "has dtype complex64: gpudiff compares real-valued images; take np.abs or .real first"
    refused(lambda: read_image(path), names=path, hint=hint)
    refused(lambda: probe_image(path), names=path, hint="complex64")


def test_float_tiff_with_nan_and_inf(tmp_path):
    data = np.zeros((10, 10), np.float32)
    data.flat[:12] = np.nan
    data.flat[50:52] = np.inf
    data.flat[99] = -np.inf
    path = tmp_path / "nan.tif"
    tifffile.imwrite(path, data)
    refused(
        lambda: read_image(path),
        names=path,
        hint="has 12 NaN and 3 Inf values: replace them (np.nan_to_num) or mask them first",
    )


def test_tiff_too_many_samples(tmp_path):
    path = tmp_path / "six.tif"
    tifffile.imwrite(path, np.zeros((6, 8, 9), np.uint8), photometric="minisblack", planarconfig="separate")
    refused(lambda: read_image(path), names=path, hint="6 samples per pixel")


def test_tiff_volume_page(tmp_path):
    path = tmp_path / "volume.tif"
    volume = np.zeros((4, 16, 16), np.uint8)
    tifffile.imwrite(path, volume, volumetric=True, tile=(16, 16), photometric="minisblack")
    with tifffile.TiffFile(path) as tif:
        if tif.pages[0].imagedepth == 1:
            pytest.skip("this tifffile did not write a volumetric page")
    refused(lambda: read_image(path), names=path, hint="save the slices as separate pages")


# --------------------------------------------------------------------------------------------
# validate_array


@pytest.mark.parametrize(
    "array, hint",
    [
        (
            np.ones((3, 3), np.complex128),
            "has dtype complex128: gpudiff compares real-valued images; take np.abs or .real first",
        ),
        (np.array([["a", "b"], ["c", "d"]]), "has dtype <U1: gpudiff compares numeric images"),
        (np.empty((2, 2), object), "has dtype object"),
        (np.zeros((2, 2), "datetime64[s]"), "has dtype datetime64[s]"),
        (np.zeros(5), "has shape (5,): gpudiff takes (H, W) grey or (H, W, C) colour"),
        (np.zeros((2, 3, 4, 5)), "has shape (2, 3, 4, 5)"),
        (np.zeros((3, 40, 50)), "np.moveaxis(image, 0, -1)"),
        (np.zeros((4, 4, 5)), "1 to 4 channels"),
        (np.zeros((0, 5)), "is empty (shape (0, 5)): give an image with at least one pixel"),
        (np.zeros((5, 0, 3)), "is empty"),
    ],
    ids=[
        "complex", "str", "object", "datetime", "1d", "4d",
        "channels-first", "5-channels", "empty", "empty-rgb",
    ],
)
def test_validate_array_refuses(array, hint):
    refused(lambda: validate_array(array, name="reference"), names="reference", hint=hint)


def test_validate_array_counts_nan_and_inf(xp):
    a = xp.zeros((20, 20), dtype=xp.float64)
    a[0, :12] = xp.nan
    a[5, :2] = xp.inf
    a[6, 0] = -xp.inf
    refused(
        lambda: validate_array(a),
        names="image",
        hint="image has 12 NaN and 3 Inf values: replace them (np.nan_to_num) or mask them first",
    )


def test_validate_array_only_nan(xp):
    a = xp.ones((4, 4, 3), dtype=xp.float32)
    a[1, 1, 1] = xp.nan
    refused(lambda: validate_array(a, name="moving"), names="moving", hint="has 1 NaN and 0 Inf values")


def test_validate_array_float64_beyond_float32s_range(xp):
    """A float64 image with values past float32's range would compare as inf (the maths runs in
    float32): refused with the fix; the largest float32 value itself is fine."""
    a = xp.ones((4, 4), dtype=xp.float64)
    a[2, 3] = -1e39
    refused(lambda: validate_array(a, name="moving"), names="moving", hint="beyond float32's range")
    a[2, 3] = float(np.finfo(np.float32).max)
    assert validate_array(a) is a


def test_validate_array_nan_in_dropped_alpha_is_ignored():
    a = np.ones((4, 4, 4), np.float32)
    a[..., 3] = np.nan
    assert validate_array(a).shape == (4, 4, 3)


def test_validate_array_not_an_array():
    refused(lambda: validate_array({"a": 1}), names="image", hint="has dtype object")
