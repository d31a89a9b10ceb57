"""read_image / probe_image on real files and on files written here, against independent decoders.

Oracles: OpenCV (``cv2.imread(..., IMREAD_UNCHANGED)``, BGR -> RGB) for PNG/JPEG/BMP/PNM/GIF and
tifffile used directly for TIFF. validate_array runs on every backend (``xp`` fixture).
"""

from __future__ import annotations

import struct

import cv2
import numpy as np
import pytest
import tifffile
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image

from gpudiff.errors import InputError
from gpudiff.io._imageinfo import ImageInfo
from gpudiff.io._images import probe_image, read_image
from gpudiff.io._validate import validate_array


def cv_rgb(path, index=None):
    """OpenCV's decode with colour reordered to RGB and alpha dropped (page ``index`` of a GIF)."""
    if index is None:
        a = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    else:
        ok, frames = cv2.imreadmulti(str(path), flags=cv2.IMREAD_UNCHANGED)
        assert ok
        a = frames[index]
    assert a is not None, f"OpenCV could not read {path}"
    if a.ndim == 3 and a.shape[2] == 3:
        a = cv2.cvtColor(a, cv2.COLOR_BGR2RGB)
    elif a.ndim == 3 and a.shape[2] == 4:
        a = cv2.cvtColor(a, cv2.COLOR_BGRA2RGB)
    return a


def pil_mode(path):
    with Image.open(path) as im:
        return im.mode


def assert_same(got, want):
    assert got.shape == want.shape
    assert got.dtype == want.dtype
    np.testing.assert_array_equal(got, want)


def assert_probe_matches(path, image, *, page=0, pages=None):
    info = probe_image(path, page=page)
    assert isinstance(info, ImageInfo)
    assert info.path == str(path)
    assert info.shape == image.shape
    assert info.dtype == image.dtype
    if pages is not None:
        assert info.pages == pages
    return info


# --------------------------------------------------------------------------------------------
# real files


def test_grey_png_camera(data_dir):
    path = data_dir / "skimage-data" / "camera.png"
    image = read_image(path)
    assert image.shape == (512, 512) and image.dtype == np.uint8
    assert_same(image, cv_rgb(path))
    info = assert_probe_matches(path, image, pages=1)
    assert info.format == "PNG"


def test_rgb_png_astronaut(data_dir):
    path = data_dir / "skimage-data" / "astronaut.png"
    image = read_image(path)
    assert image.shape == (512, 512, 3)
    assert_same(image, cv_rgb(path))
    assert_probe_matches(path, image, pages=1)


@pytest.mark.parametrize("name", ["rocket.jpg", "retina.jpg", "hubble_deep_field.jpg"])
def test_jpeg_matches_opencv(data_dir, name):
    path = data_dir / "skimage-data" / name
    image = read_image(path)
    want = cv_rgb(path)
    assert image.shape == want.shape and image.dtype == np.uint8
    # Both use libjpeg(-turbo); decoders may differ by a level or two with other IDCT settings.
    assert np.abs(image.astype(np.int16) - want.astype(np.int16)).max() <= 2
    info = assert_probe_matches(path, image, pages=1)
    assert info.format == "JPEG"


@pytest.mark.parametrize("page", [0, 1, 23])
def test_gif_frames(data_dir, page):
    path = data_dir / "skimage-data" / "no_time_for_that_tiny.gif"
    image = read_image(path, page=page)
    assert image.shape == (25, 14, 3) and image.dtype == np.uint8
    assert_same(image, cv_rgb(path, index=page))
    info = assert_probe_matches(path, image, page=page, pages=24)
    assert info.format == "GIF"


def test_gif_default_is_first_frame(data_dir):
    path = data_dir / "imageio-standard" / "newtonscradle.gif"
    assert_same(read_image(path), cv_rgb(path, index=0))
    assert_same(read_image(path, page=35), cv_rgb(path, index=35))
    assert probe_image(path).pages == 36


@pytest.mark.parametrize("page", [0, 1])
def test_multipage_tiff(data_dir, page):
    path = data_dir / "skimage-data" / "multipage.tif"
    image = read_image(path, page=page)
    assert_same(image, tifffile.imread(path, key=page))
    info = assert_probe_matches(path, image, page=page, pages=2)
    assert info.format == "TIFF"


def test_multipage_tiff_pages_differ(data_dir):
    path = data_dir / "skimage-data" / "multipage.tif"
    assert not np.array_equal(read_image(path, page=0), read_image(path, page=1))


@pytest.mark.parametrize("page", [0, 1])
def test_planar_float_rgb_tiff(data_dir, page):
    path = data_dir / "skimage-data" / "multipage_rgb.tif"  # float64, stored (3, H, W)
    image = read_image(path, page=page)
    assert_same(image, np.moveaxis(tifffile.imread(path, key=page), 0, -1))
    assert_probe_matches(path, image, page=page, pages=2)


def test_uint16_tiff_time_lapse_page_3(data_dir):
    path = data_dir / "imageio-standard" / "calcium_imaging.tif"
    image = read_image(path, page=3)
    assert image.dtype == np.uint16
    assert_same(image, tifffile.imread(path, key=3))
    assert image.max() > 255  # really 16-bit data, not reduced
    assert_probe_matches(path, image, page=3, pages=1000)


def test_rgba_png_drops_alpha(data_dir):
    path = data_dir / "trackpy-timelapse" / "bulk_water" / "bulk_water_005.png"
    assert pil_mode(path) == "RGBA"
    image = read_image(path)
    assert image.shape[2] == 3
    assert_same(image, cv_rgb(path))
    assert_probe_matches(path, image)


def test_ppm(data_dir):
    path = data_dir / "mmflow-flow-fixtures" / "00001_img1.ppm"
    image = read_image(path)
    assert_same(image, cv_rgb(path))
    info = assert_probe_matches(path, image, pages=1)
    assert info.format == "PNM"


def test_bmp_8bit_black_white_palette(data_dir):
    # An 8-bit BMP with a 2-entry black/white palette: Pillow (<= 13) unpacks it as 1-bit and
    # returns stripes; read_image must give what the file holds (all white here, as OpenCV says).
    path = data_dir / "cdnet2014-traffic-subset" / "ROI.bmp"
    image = read_image(path)
    assert image.dtype == np.uint8 and image.ndim == 2
    assert_same(image, cv_rgb(path))
    info = assert_probe_matches(path, image, pages=1)
    assert info.format == "BMP"


# --------------------------------------------------------------------------------------------
# files written here


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


def test_png_16bit_grey_and_colour_keep_values(tmp_path, rng):
    grey = rng.integers(0, 65536, (31, 47), dtype=np.uint16)
    colour = rng.integers(0, 65536, (31, 47, 3), dtype=np.uint16)
    for name, data in (("grey16.png", grey), ("colour16.png", colour)):
        path = tmp_path / name
        assert cv2.imwrite(str(path), data)
        image = read_image(path)
        assert image.dtype == np.uint16
        assert_same(image, cv_rgb(path))
        assert image.max() > 255
        assert_probe_matches(path, image, pages=1)


def test_png_16bit_rgba_drops_alpha(tmp_path, rng):
    rgba = rng.integers(0, 65536, (9, 11, 4), dtype=np.uint16)
    path = tmp_path / "rgba16.png"
    assert cv2.imwrite(str(path), rgba)
    assert_same(read_image(path), cv_rgb(path))


def test_tiff_uint16_grey(tmp_path, rng):
    data = rng.integers(0, 65536, (40, 30), dtype=np.uint16)
    path = tmp_path / "g16.tif"
    tifffile.imwrite(path, data)
    assert_same(read_image(path), data)
    assert_probe_matches(path, data, pages=1)


@pytest.mark.parametrize("compression", ["zlib", "lzw", "zstd", "jpeg"])
def test_tiff_compressed(tmp_path, rng, compression):
    data = rng.integers(0, 256, (64, 48, 3), dtype=np.uint8)
    path = tmp_path / f"{compression}.tif"
    kwargs = {"compressionargs": {"level": 100}} if compression == "jpeg" else {}
    tifffile.imwrite(path, data, compression=compression, rowsperstrip=16, photometric="rgb", **kwargs)
    assert_same(read_image(path), tifffile.imread(path))


def test_tiff_tiled(tmp_path, rng):
    data = rng.integers(0, 65536, (70, 50), dtype=np.uint16)
    path = tmp_path / "tiled.tif"
    tifffile.imwrite(path, data, tile=(32, 32), compression="zlib")
    assert_same(read_image(path), data)


def test_tiff_float32(tmp_path, rng):
    data = rng.standard_normal((20, 25)).astype(np.float32)
    path = tmp_path / "f32.tif"
    tifffile.imwrite(path, data)
    image = read_image(path)
    assert_same(image, data)
    assert_probe_matches(path, image)


def test_tiff_two_samples_drops_alpha(tmp_path, rng):
    data = rng.integers(0, 256, (20, 25, 2), dtype=np.uint8)
    path = tmp_path / "ga.tif"
    tifffile.imwrite(path, data, photometric="minisblack", extrasamples=["unassalpha"])
    image = read_image(path)
    assert_same(image, data[:, :, 0])
    assert_probe_matches(path, image)


def test_tiff_rgba_drops_alpha(tmp_path, rng):
    data = rng.integers(0, 256, (20, 25, 4), dtype=np.uint8)
    path = tmp_path / "rgba.tif"
    tifffile.imwrite(path, data, photometric="rgb", extrasamples=["unassalpha"])
    image = read_image(path)
    assert_same(image, data[:, :, :3])
    assert_probe_matches(path, image)


def test_tiff_planar_rgb_to_channels_last(tmp_path, rng):
    data = rng.integers(0, 65536, (3, 20, 25), dtype=np.uint16)
    path = tmp_path / "planar.tif"
    tifffile.imwrite(path, data, photometric="rgb", planarconfig="separate")
    with tifffile.TiffFile(path) as tif:
        assert tif.pages[0].axes == "SYX"
    image = read_image(path)
    assert_same(image, np.moveaxis(data, 0, -1))
    assert_probe_matches(path, image)


def test_tiff_planar_rgba(tmp_path, rng):
    data = rng.integers(0, 256, (4, 20, 25), dtype=np.uint8)
    path = tmp_path / "planar_rgba.tif"
    tifffile.imwrite(path, data, photometric="rgb", planarconfig="separate", extrasamples=["unassalpha"])
    assert_same(read_image(path), np.moveaxis(data[:3], 0, -1))


def test_tiff_page_selection(tmp_path, rng):
    stack = rng.integers(0, 65536, (5, 12, 9), dtype=np.uint16)
    path = tmp_path / "stack.tif"
    with tifffile.TiffWriter(path) as tw:
        for frame in stack:
            tw.write(frame, contiguous=False)
    for page in (0, 2, 4):
        assert_same(read_image(path, page=page), stack[page])
    assert probe_image(path, page=4).pages == 5


def test_ome_tiff(tmp_path, rng):
    data = rng.integers(0, 65536, (3, 16, 20), dtype=np.uint16)
    path = tmp_path / "x.ome.tif"
    tifffile.imwrite(path, data, ome=True, metadata={"axes": "ZYX"})
    info = probe_image(path, page=2)
    assert info.format == "OME-TIFF" and info.pages == 3
    assert_same(read_image(path, page=2), data[2])


def test_tiff_bool_becomes_0_255(tmp_path, rng):
    data = rng.integers(0, 2, (10, 17)).astype(bool)
    path = tmp_path / "bits.tif"
    tifffile.imwrite(path, data)
    image = read_image(path)
    assert_same(image, data.astype(np.uint8) * 255)  # values as stored (min-is-white not inverted)
    assert_probe_matches(path, image)


@pytest.mark.parametrize("dtype", [np.int8, np.int16, np.int32, np.uint32])
def test_tiff_other_integers_become_float64(tmp_path, rng, dtype):
    info = np.iinfo(dtype)
    data = rng.integers(info.min, info.max, (8, 9), endpoint=True).astype(dtype)
    path = tmp_path / "ints.tif"
    tifffile.imwrite(path, data)
    image = read_image(path)
    assert_same(image, data.astype(np.float64))
    assert_probe_matches(path, image)


def test_tiff_float16_becomes_float32(tmp_path, rng):
    data = rng.standard_normal((8, 9)).astype(np.float16)
    path = tmp_path / "f16.tif"
    tifffile.imwrite(path, data)
    image = read_image(path)
    assert_same(image, data.astype(np.float32))
    assert_probe_matches(path, image)


def test_tiff_palette_expanded(tmp_path, rng):
    index = rng.integers(0, 256, (12, 14), dtype=np.uint8)
    colormap = rng.integers(0, 256, (3, 256), dtype=np.uint16) * 257
    path = tmp_path / "palette.tif"
    tifffile.imwrite(path, index, photometric="palette", colormap=colormap)
    image = read_image(path)
    want = np.moveaxis((colormap // 257).astype(np.uint8)[:, index], 0, -1)
    assert_same(image, want)
    assert_probe_matches(path, image)


def test_tiff_cmyk_to_rgb(tmp_path, rng):
    cmyk = rng.integers(0, 256, (6, 7, 4), dtype=np.uint8)
    path = tmp_path / "cmyk.tif"
    tifffile.imwrite(path, cmyk, photometric="separated")
    image = read_image(path)
    # Same formula as Pillow's CMYK -> RGB: R = (255 - C)(255 - K) / 255.
    want = Image.frombytes("CMYK", (7, 6), cmyk.tobytes()).convert("RGB")
    assert image.shape == (6, 7, 3) and image.dtype == np.uint8
    assert np.abs(image.astype(int) - np.asarray(want).astype(int)).max() <= 1


def test_palette_png_expanded_to_rgb(tmp_path, rng):
    index = rng.integers(0, 16, (21, 13), dtype=np.uint8)
    im = Image.fromarray(index, mode="P")
    im.putpalette(rng.integers(0, 256, 16 * 3).tolist())
    path = tmp_path / "palette.png"
    im.save(path)
    assert pil_mode(path) == "P"
    image = read_image(path)
    assert image.shape == (21, 13, 3)
    assert_same(image, cv_rgb(path))
    assert_probe_matches(path, image)


def test_one_bit_png_is_0_255(tmp_path, rng):
    bits = rng.integers(0, 2, (19, 23)).astype(bool)
    path = tmp_path / "bits.png"
    Image.fromarray(bits).save(path)
    assert pil_mode(path) == "1"
    image = read_image(path)
    assert_same(image, bits.astype(np.uint8) * 255)
    assert_same(image, cv_rgb(path))
    assert_probe_matches(path, image)


def test_grey_alpha_png_drops_alpha(tmp_path, rng):
    la = rng.integers(0, 256, (10, 12, 2), dtype=np.uint8)
    path = tmp_path / "la.png"
    Image.fromarray(la, mode="LA").save(path)
    image = read_image(path)
    assert_same(image, la[:, :, 0])
    assert_probe_matches(path, image)


def test_pgm_8_and_16_bit(tmp_path, rng):
    for name, data in (
        ("g8.pgm", rng.integers(0, 256, (14, 18), dtype=np.uint8)),
        ("g16.pgm", rng.integers(0, 65536, (14, 18), dtype=np.uint16)),
        ("c16.ppm", rng.integers(0, 65536, (14, 18, 3), dtype=np.uint16)),
    ):
        path = tmp_path / name
        assert cv2.imwrite(str(path), data if data.ndim == 2 else data[:, :, ::-1])  # BGR
        image = read_image(path)
        assert_same(image, cv_rgb(path))
        assert_same(image, data)
        assert_probe_matches(path, image, pages=1)


def test_plain_ascii_pnm(tmp_path):
    path = tmp_path / "plain.pgm"
    path.write_text("P2\n# a comment\n3 2\n1000\n0 1 2\n999 1000 7\n")
    assert_same(read_image(path), np.array([[0, 1, 2], [999, 1000, 7]], dtype=np.uint16))
    path = tmp_path / "plain8.pgm"
    path.write_text("P2\n3 2\n255\n0 1 2\n200 255 7\n")
    assert_same(read_image(path), np.array([[0, 1, 2], [200, 255, 7]], dtype=np.uint8))


def test_pnm_maxval_not_255_keeps_values(tmp_path):
    path = tmp_path / "m15.pgm"
    path.write_bytes(b"P5\n4 1\n15\n" + bytes([0, 5, 10, 15]))
    assert_same(read_image(path), np.array([[0, 5, 10, 15]], np.uint8))
    assert_same(read_image(path), cv_rgb(path))
    path = tmp_path / "m1000.ppm"
    values = np.array([[[0, 5, 10], [1000, 999, 1]]], dtype=np.uint16)
    path.write_bytes(b"P6\n2 1\n1000\n" + values.astype(">u2").tobytes())
    assert_same(read_image(path), values)
    assert probe_image(path).dtype == np.uint16


def test_pbm(tmp_path, rng):
    bits = rng.integers(0, 2, (9, 13)).astype(bool)
    path = tmp_path / "bits.pbm"
    Image.fromarray(bits).save(path)
    image = read_image(path)
    assert_same(image, bits.astype(np.uint8) * 255)
    assert_same(image, cv_rgb(path))


def _write_bmp_4bit(path, index, palette):
    """A 4-bit uncompressed bottom-up BMP (Pillow cannot write one)."""
    height, width = index.shape
    stride = ((width * 4 + 31) // 32) * 4
    rows = np.zeros((height, stride), np.uint8)
    padded = np.zeros((height, 2 * stride), np.uint8)
    padded[:, :width] = index
    rows[:] = (padded[:, 0::2] << 4) | padded[:, 1::2]
    pal = b"".join(bytes((b, g, r, 0)) for r, g, b in palette)
    offset = 14 + 40 + len(pal)
    size = offset + rows.size
    header = b"BM" + struct.pack("<IHHI", size, 0, 0, offset)
    dib = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 4, 0, rows.size, 2835, 2835, len(palette), 0)
    path.write_bytes(header + dib + pal + rows[::-1].tobytes())


@pytest.mark.parametrize("colours", [2, 16])
def test_bmp_4bit_grey_palettes(tmp_path, rng, colours):
    index = rng.integers(0, colours, (7, 11), dtype=np.uint8)
    palette = [(0, 0, 0), (255, 255, 255)] if colours == 2 else [(i, i, i) for i in range(16)]
    path = tmp_path / f"p{colours}.bmp"
    _write_bmp_4bit(path, index, palette)
    want = np.array([p[0] for p in palette], np.uint8)[index]
    image = read_image(path)
    assert_same(image, want)
    cv = cv_rgb(path)
    assert_same(image, cv if cv.ndim == 2 else cv[:, :, 0])


def test_bmp_8bit_colour_palette_and_24bit(tmp_path, rng):
    rgb = rng.integers(0, 256, (9, 10, 3), dtype=np.uint8)
    path = tmp_path / "rgb.bmp"
    assert cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    assert_same(read_image(path), rgb)
    index = rng.integers(0, 5, (9, 10), dtype=np.uint8)
    im = Image.fromarray(index, mode="P")
    im.putpalette([10, 20, 30, 40, 50, 60, 70, 80, 90, 100, 110, 120, 130, 140, 150])
    path = tmp_path / "p.bmp"
    im.save(path)
    assert_same(read_image(path), cv_rgb(path))


def test_grey_bmp_from_opencv(tmp_path, rng):
    grey = rng.integers(0, 256, (9, 10), dtype=np.uint8)
    path = tmp_path / "grey.bmp"
    assert cv2.imwrite(str(path), grey)
    assert_same(read_image(path), grey)


def test_cmyk_jpeg_becomes_rgb(tmp_path, rng):
    cmyk = rng.integers(0, 256, (16, 16, 4), dtype=np.uint8)
    path = tmp_path / "cmyk.jpg"
    Image.frombytes("CMYK", (16, 16), cmyk.tobytes()).save(path, quality=100)
    image = read_image(path)
    assert image.shape == (16, 16, 3) and image.dtype == np.uint8
    assert np.abs(image.astype(int) - cv_rgb(path).astype(int)).max() <= 3


def test_grey_jpeg(tmp_path, rng):
    grey = rng.integers(0, 256, (16, 24), dtype=np.uint8)
    path = tmp_path / "grey.jpg"
    assert cv2.imwrite(str(path), grey)
    image = read_image(path)
    assert image.shape == (16, 24)
    assert np.abs(image.astype(int) - cv_rgb(path).astype(int)).max() <= 2


def test_format_chosen_by_magic_not_extension(tmp_path, data_dir):
    src = data_dir / "skimage-data" / "camera.png"
    path = tmp_path / "camera.jpg"
    path.write_bytes(src.read_bytes())
    assert probe_image(path).format == "PNG"
    assert_same(read_image(path), read_image(src))
    path = tmp_path / "no_extension"
    path.write_bytes((data_dir / "skimage-data" / "multipage.tif").read_bytes())
    assert probe_image(path).format == "TIFF"


def test_str_and_pathlike_accepted(data_dir):
    path = data_dir / "skimage-data" / "camera.png"
    assert_same(read_image(str(path)), read_image(path))


# --------------------------------------------------------------------------------------------
# probe_image reads headers only


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    import zlib

    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def test_probe_does_not_decode(tmp_path, monkeypatch):
    import zlib

    # A PNG declaring 40000 x 30000 RGB with almost no data: probing must not touch the pixels.
    png = (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", 40000, 30000, 8, 2, 0, 0, 0))
        + _png_chunk(b"IDAT", zlib.compress(b"\x00" * 10))
        + _png_chunk(b"IEND", b"")
    )
    path = tmp_path / "huge.png"
    path.write_bytes(png)

    def boom(*args, **kwargs):
        raise AssertionError("probe_image decoded pixels")

    from PIL import ImageFile

    monkeypatch.setattr(ImageFile.ImageFile, "load", boom)
    monkeypatch.setattr(tifffile.TiffPage, "asarray", boom)
    info = probe_image(path)
    assert info == ImageInfo(str(path), "PNG", (30000, 40000, 3), np.dtype(np.uint8), 1)
    assert info.pixels == 1_200_000_000
    info = probe_image(path.parent.parent / path.parent.name / path.name)
    assert info.shape == (30000, 40000, 3)


def test_probe_tiff_without_decoding(data_dir, monkeypatch):
    def boom(*args, **kwargs):
        raise AssertionError("probe_image decoded pixels")

    monkeypatch.setattr(tifffile.TiffPage, "asarray", boom)
    info = probe_image(data_dir / "pims-testdata" / "stuck.tif", page=4)
    assert info.shape == (512, 512) and info.dtype == np.uint16 and info.pages == 5


def test_probe_gif_without_decoding(data_dir, monkeypatch):
    from PIL import ImageFile

    def boom(*args, **kwargs):
        raise AssertionError("probe_image decoded pixels")

    monkeypatch.setattr(ImageFile.ImageFile, "load", boom)
    info = probe_image(data_dir / "imageio-standard" / "newtonscradle.gif", page=7)
    assert info.shape == (150, 200, 3) and info.pages == 36 and info.format == "GIF"


def test_probe_budget_is_optional(data_dir):
    path = data_dir / "skimage-data" / "camera.png"
    assert probe_image(path, max_pixels=512 * 512).shape == (512, 512)


# --------------------------------------------------------------------------------------------
# validate_array, on every backend


def test_validate_keeps_supported_arrays_untouched(xp):
    for dtype in (xp.uint8, xp.uint16, xp.float32, xp.float64):
        a = xp.ones((4, 5), dtype=dtype)
        assert validate_array(a) is a
        rgb = xp.ones((4, 5, 3), dtype=dtype)
        assert validate_array(rgb) is rgb


def test_validate_channels(xp):
    a = xp.arange(4 * 5 * 4, dtype=xp.uint8).reshape(4, 5, 4)
    out = validate_array(a)
    assert out.shape == (4, 5, 3)
    assert bool((out == a[:, :, :3]).all())
    assert out.flags.c_contiguous
    out = validate_array(a[:, :, :2])
    assert out.shape == (4, 5) and bool((out == a[:, :, 0]).all())
    out = validate_array(a[:, :, :1])
    assert out.shape == (4, 5) and bool((out == a[:, :, 0]).all())


def test_validate_dtypes(xp):
    b = xp.asarray([[True, False], [False, True]])
    out = validate_array(b)
    assert out.dtype == xp.uint8
    assert out.tolist() == [[255, 0], [0, 255]]
    for dtype in (xp.int8, xp.int16, xp.int32, xp.int64, xp.uint32, xp.uint64):
        a = xp.asarray([[1, 2], [3, 100]], dtype=dtype)
        out = validate_array(a)
        assert out.dtype == xp.float64
        assert out.tolist() == [[1.0, 2.0], [3.0, 100.0]]
    h = xp.asarray([[0.5, 1.5]], dtype=xp.float16)
    assert validate_array(h).dtype == xp.float32


def test_validate_bool_does_not_modify_input(xp):
    b = xp.ones((3, 3), dtype=bool)
    validate_array(b)
    assert b.dtype == bool and bool(b.all())


def test_validate_big_endian_numpy():
    a = np.arange(6, dtype=">u2").reshape(2, 3)
    out = validate_array(a)
    assert out.dtype == np.uint16 and out.dtype.isnative
    assert out.tolist() == a.tolist()


def test_validate_list_input():
    out = validate_array([[1, 2], [3, 4]])
    assert isinstance(out, np.ndarray) and out.dtype == np.float64  # int64 -> float64


def test_validate_float_without_nan_passes(xp):
    a = xp.linspace(-1e30, 1e30, 12, dtype=xp.float32).reshape(3, 4)
    assert validate_array(a) is a


# --------------------------------------------------------------------------------------------
# property: validate_array keeps values, whatever the real dtype and channel count

_REAL_DTYPES = st.sampled_from(
    [np.bool_, np.uint8, np.uint16, np.uint32, np.int8, np.int16, np.int32]
    + [np.float16, np.float32, np.float64]
)


@settings(max_examples=60, deadline=None)
@given(data=st.data(), dtype=_REAL_DTYPES, channels=st.sampled_from([0, 1, 2, 3, 4]))
def test_validate_array_property(data, dtype, channels):
    shape = (data.draw(st.integers(1, 6)), data.draw(st.integers(1, 6)))
    if channels:
        shape += (channels,)
    finite = {"allow_nan": False, "allow_infinity": False} if np.dtype(dtype).kind == "f" else None
    a = data.draw(hnp.arrays(dtype, shape, elements=finite))
    # the channels kept: grey (and grey + alpha) keep the first, RGB(A) the first three (alpha dropped)
    want = a if a.ndim == 2 else (a[:, :, 0] if channels in (1, 2) else a[:, :, :3])
    if a.dtype == np.float64 and want.size and float(np.abs(want).max()) > float(np.finfo(np.float32).max):
        # the comparisons run in float32: kept values they would turn into inf are refused, in one line
        with pytest.raises(InputError, match="beyond float32's range"):
            validate_array(a)
        return
    out = validate_array(a)
    assert out.shape == want.shape
    assert out.dtype in (np.uint8, np.uint16, np.float32, np.float64)
    if a.dtype == bool:
        np.testing.assert_array_equal(out, want.astype(np.uint8) * 255)
    else:
        np.testing.assert_array_equal(out, want.astype(out.dtype))
        assert np.all(out.astype(np.float64) == want.astype(np.float64))
