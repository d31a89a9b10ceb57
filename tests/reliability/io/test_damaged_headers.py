"""Defects the fuzz corpus found (tests/reliability/io/test_fuzz_corpus.py), each pinned by a test on a
real file with one header field edited:

1. a TIFF strip whose StripByteCounts is 0 read silently as zeros (exit 0): now one line naming the
   file, the page and the strip;
2. a TIFF whose BitsPerSample tag tifffile cannot parse was read as a 1-bit image (tifffile drops
   the tag and uses the default): now one line naming the tag;
3. tifffile's log warnings printed on stderr beside gpudiff's one-line error (or beside a clean
   read), from read_image and from the stack reader: now kept off stderr, and made the error when
   they are about the page read;
4. libpng's warnings (imagecodecs, 16-bit PNGs) printed on stderr, and a 16-bit PNG whose IHDR
   declares fewer rows than its data read as the short image: now one line;
5. the stack reader (open_source of a multi-page TIFF) let tifffile's own exceptions through
   (TiffFileError 'corrupted IFD structure', RuntimeError 'incompatible keyframe', ValueError from
   ImageJ metadata: exit 3, 'internal error') and left the file open: now one line, file closed.
"""

from __future__ import annotations

import gc
import io
import struct
import warnings

import numpy as np
import pytest
import tifffile

from gpudiff.errors import InputError
from gpudiff.io import open_source, read_image
from tests import _fuzz


@pytest.fixture(scope="module")
def seeds(data_dir):
    return _fuzz.load_seeds(data_dir)


def _quiet(capfd, caplog):
    """Nothing on stderr, and no record of tifffile's or imagecodecs' loggers reached a handler (under
    pytest the root logger has handlers, so a record let through would be captured, not printed)."""
    assert capfd.readouterr().err == ""
    leaked = [r for r in caplog.records if r.name.split(".")[0] in ("tifffile", "imagecodecs")]
    assert not leaked, [r.getMessage() for r in leaked]


def _edit(data: bytes, name: str, value: int) -> bytes:
    _, fields, _ = _fuzz._tiff_structure(data)
    return _fuzz._put(data, fields[name], value)


def _one_line(exc, *parts):
    text = str(exc.value)
    assert "\n" not in text, text
    for p in parts:
        assert str(p) in text, text
    return text


def test_strip_byte_count_zero_is_refused(seeds, tmp_path, capfd, caplog):
    path = tmp_path / "zero-strip.tif"
    path.write_bytes(_edit(seeds["stuck16x3.tif"][1], "p0.StripByteCounts[0]", 0))  # 4 strips of 16 rows
    with pytest.raises(InputError) as info:
        read_image(path)
    _one_line(info, path, "page 0", "StripByteCounts declares 0 bytes for strip 0 of 4", "re-export")
    # the stack reader: that page fails as an item, the others read
    with open_source(str(path)) as src:
        with pytest.raises(InputError) as info:
            src.read(0)
        _one_line(info, path, "StripByteCounts")
        assert src.read(1).shape == (64, 64)
    _quiet(capfd, caplog)


def test_single_strip_with_byte_count_zero_reads_correctly(data_dir, tmp_path):
    """tifffile reads a single uncompressed strip by its computed size: the right pixels, kept."""
    real = (data_dir / "skimage-data" / "multipage.tif").read_bytes()
    path = tmp_path / "zero-single.tif"
    path.write_bytes(_edit(real, "p0.StripByteCounts", 0))
    np.testing.assert_array_equal(read_image(path), tifffile.imread(io.BytesIO(real), key=0))


def test_unreadable_bits_per_sample_is_refused(seeds, tmp_path, capfd, caplog):
    path = tmp_path / "bits.tif"
    # BitsPerSample's count 1 -> 7: its 7 values would lie at an offset past the end of the file;
    # tifffile logs that, drops the tag and would decode the 16-bit page as 1-bit
    path.write_bytes(_edit(seeds["stuck16x3.tif"][1], "p0.BitsPerSample.count", 0xE10B0DAD))
    with pytest.raises(InputError) as info:
        read_image(path)
    _one_line(info, path, "page 0", "BitsPerSample tag is unreadable")
    _quiet(capfd, caplog)  # tifffile's warning is in the error, not beside it


def test_wrong_strip_count_is_refused_and_quiet(data_dir, tmp_path, capfd, caplog):
    """ImageLength 15 -> 65535 with one strip: tifffile logs 'incorrect StripOffsets count'."""
    real = (data_dir / "skimage-data" / "multipage.tif").read_bytes()
    path = tmp_path / "rows.tif"
    path.write_bytes(_edit(real, "p0.ImageLength", 600))
    with pytest.raises(InputError) as info:
        read_image(path)
    _one_line(info, path)
    _quiet(capfd, caplog)


def test_uncompressed_strips_shorter_than_the_size_are_refused(data_dir, tmp_path, capfd, caplog):
    """ImageLength 15 -> 20, one strip of 150 bytes: tifffile would read 200 bytes from the strip's
    offset, the last 50 from whatever follows it."""
    real = (data_dir / "skimage-data" / "multipage.tif").read_bytes()
    path = tmp_path / "taller.tif"
    path.write_bytes(_edit(real, "p0.ImageLength", 20))
    with pytest.raises(InputError) as info:
        read_image(path)
    _one_line(info, path, "its strips hold 150 bytes, its size needs 200")
    _quiet(capfd, caplog)


def test_broken_page_chain_after_the_page_read_is_quiet(seeds, tmp_path, capfd, caplog):
    """The next-IFD pointer of the last page damaged: page 0 is whole and reads, with nothing on stderr."""
    data = seeds["stuck16x3.tif"][1]
    path = tmp_path / "chain.tif"
    path.write_bytes(_edit(data, "p2.next-ifd", 0x80000000))
    good = tifffile.imread(io.BytesIO(data), key=0)
    np.testing.assert_array_equal(read_image(path), good)
    _quiet(capfd, caplog)


def test_png16_with_wrong_height_is_refused_quietly(seeds, tmp_path, capfd, caplog):
    data = seeds["stuck16.png"][1]
    _, fields, _ = _fuzz._png_structure(data)
    path = tmp_path / "short.png"
    path.write_bytes(_fuzz._png_fix_ihdr(_fuzz._put(data, fields["height"], 3)))
    with pytest.raises(InputError) as info:
        read_image(path)
    _one_line(info, path, "Too much image data")
    path.write_bytes(_fuzz._png_fix_ihdr(_fuzz._put(data, fields["interlace"], 255)))
    with pytest.raises(InputError) as info:
        read_image(path)
    _one_line(info, path)
    _quiet(capfd, caplog)
    assert read_image(tmp_path.parent / path.name if False else _write(tmp_path / "ok.png", data)).dtype == np.uint16


def _write(path, data):
    path.write_bytes(data)
    return path


def _cut_ifd(data: bytes) -> bytes:
    """multipage_rgb.tif with its second IFD's tag count made absurd ('corrupted IFD structure')."""
    bo, ifds = _fuzz._tiff_ifds(data)
    offset = ifds[1][0]
    return data[:offset] + struct.pack(bo + "H", 0xFFFF) + data[offset + 2 :]


@pytest.mark.parametrize("how", ["truncated-ifd", "incompatible-keyframe", "imagej-metadata"])
def test_stack_reader_refuses_tifffile_errors_in_one_line_and_closes(seeds, tmp_path, how):
    data = seeds["multipage_rgb.tif"][1] if how != "imagej-metadata" else None
    if how == "truncated-ifd":
        data = data[:2804]  # a cut inside the second page's tags (found by the corpus)
    elif how == "incompatible-keyframe":
        data = _edit(data, "p1.ImageLength", 65536)
    else:  # an ImageJ hyperstack whose 'images=' is not a number
        buf = io.BytesIO()
        tifffile.imwrite(buf, np.zeros((3, 8, 8), np.uint8), imagej=True)
        raw = buf.getvalue()
        assert b"images=3" in raw
        data = raw.replace(b"images=3", b"images=#", 1)
    path = tmp_path / f"{how}.tif"
    path.write_bytes(data)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ResourceWarning)
        try:
            src = open_source(str(path))
        except InputError as exc:
            assert "\n" not in str(exc) and str(path) in str(exc), exc
        else:  # tifffile coped: every frame reads or fails in one line
            with src:
                for k in range(len(src)):
                    try:
                        src.read(k)
                    except InputError as exc:
                        assert "\n" not in str(exc) and str(path) in str(exc)
        gc.collect()  # an unclosed file would warn (an error here) when collected


@pytest.mark.parametrize("what", ["bits", "chain", "png16"])
def test_cli_prints_one_line_and_nothing_else(seeds, tmp_path, what):
    """The real entry point in a subprocess (no pytest handlers on the root logger): stderr holds
    gpudiff's one line, or nothing on a clean read; never tifffile's or libpng's warnings."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    if what == "png16":
        data = seeds["stuck16.png"][1]
        _, fields, _ = _fuzz._png_structure(data)
        bad = _fuzz._png_fix_ihdr(_fuzz._put(data, fields["height"], 3))
        ext = ".png"
    else:
        data = seeds["stuck16x3.tif"][1]
        bad = _edit(data, "p0.BitsPerSample.count", 0xE10B0DAD) if what == "bits" else _edit(data, "p2.next-ifd", 0x80000000)
        ext = ".tif"
    orig, path = tmp_path / f"orig{ext}", tmp_path / f"bad{ext}"
    orig.write_bytes(data)
    path.write_bytes(bad)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[3])}
    proc = subprocess.run([sys.executable, "-m", "gpudiff", "compare", str(orig), str(path), "--backend", "numpy",
                           "--metrics", "mse"], capture_output=True, text=True, timeout=300, env=env)
    lines = proc.stderr.strip().splitlines()
    if what == "chain":
        assert proc.returncode == 0 and lines == [], proc.stderr
    else:
        assert proc.returncode == 2, proc.stderr
        assert len(lines) == 1 and lines[0].startswith("gpudiff compare: error: ") and str(path) in lines[0], proc.stderr
