"""The pre-decode budget is memory-aware (issue 14): a small file declaring a huge size is refused
before decoding when its decode would not fit in the memory available (``GPUDIFF_MEMORY_LIMIT``
stands in for it here, so nothing large is allocated)."""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
import sys
import zlib

import pytest

from gpudiff.cli._main import main
from gpudiff.errors import ConfigError, InputError
from gpudiff.io import read_image
from gpudiff.io import _memory

GB = 1_000_000_000


def _zeros_png(path, width, height):
    """An RGB 8-bit PNG of zeros: the IDAT compresses ~1000:1 (30000 x 30000 -> 2.6 MB)."""
    row = b"\x00" * (1 + 3 * width)
    comp = zlib.compressobj(9)
    idat = b"".join(comp.compress(row) for _ in range(height)) + comp.flush()

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))
    return path


@pytest.fixture(scope="module")
def bomb(tmp_path_factory):
    return _zeros_png(tmp_path_factory.mktemp("bomb") / "huge.png", 30000, 30000)


_CHILD = r"""
import json, resource, sys, time
from gpudiff.io import read_image
from gpudiff.errors import InputError
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t = time.perf_counter()
try:
    read_image(sys.argv[1])
    out = {"error": None}
except InputError as exc:
    out = {"error": str(exc)}
out["seconds"] = time.perf_counter() - t
out["grew_kb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
out["shape"] = list(read_image(sys.argv[2]).shape)
print(json.dumps(out))
"""


def test_a_small_png_declaring_30000x30000_is_refused_in_one_line_without_allocating(bomb, data_dir):
    assert bomb.stat().st_size < 5_000_000  # below 1/500 of its 2.7 GB of pixels
    real = data_dir / "skimage-data/astronaut.png"
    env = {**__import__("os").environ, "GPUDIFF_MEMORY_LIMIT": str(GB)}
    r = subprocess.run([sys.executable, "-c", _CHILD, str(bomb), str(real)], env=env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    msg = out["error"]
    assert msg is not None and "\n" not in msg
    assert str(bomb) in msg and "30000 x 30000 x 3 uint8" in msg and "2.7 GB" in msg
    assert "10.8 GB" in msg and "1 GB of memory is available (GPUDIFF_MEMORY_LIMIT)" in msg
    assert "--max-pixels" in msg and "more memory" in msg and "smaller image" in msg
    assert out["seconds"] < 2
    assert out["grew_kb"] * 1024 < 100_000_000  # far below the 2.7 GB the decode would take
    assert out["shape"] == [512, 512, 3]  # a real image still reads under the same limit
    assert r.stderr == ""


def test_the_check_uses_the_decoded_bytes_times_the_working_copies(bomb, monkeypatch):
    need = 30000 * 30000 * 3 * _memory.WORKING_COPIES
    monkeypatch.setenv("GPUDIFF_MEMORY_LIMIT", str(need - 1))
    with pytest.raises(InputError, match="available"):
        read_image(bomb)
    # just enough memory: the memory check passes (the pixel budget still applies)
    monkeypatch.setenv("GPUDIFF_MEMORY_LIMIT", str(need))
    with pytest.raises(InputError, match="over the budget"):
        read_image(bomb, max_pixels=1000)


def test_normal_images_read_as_before_with_the_system_memory(data_dir, monkeypatch):
    monkeypatch.delenv("GPUDIFF_MEMORY_LIMIT", raising=False)
    avail, where = _memory.available_memory()
    assert avail is None or avail > 0
    assert where in ("MemAvailable", "available physical memory", "the cgroup's memory.max")
    assert read_image(data_dir / "skimage-data/camera.png").shape == (512, 512)


def test_a_bad_memory_limit_is_a_one_line_config_error(monkeypatch, data_dir):
    monkeypatch.setenv("GPUDIFF_MEMORY_LIMIT", "lots")
    with pytest.raises(ConfigError, match="GPUDIFF_MEMORY_LIMIT='lots' must be a number of bytes"):
        read_image(data_dir / "skimage-data/camera.png")


def test_the_system_reading_is_cached(monkeypatch):
    monkeypatch.delenv("GPUDIFF_MEMORY_LIMIT", raising=False)
    calls = []
    monkeypatch.setattr(_memory, "_system_available", lambda: calls.append(1) or (123, "MemAvailable"))
    monkeypatch.setattr(_memory, "_cached", (float("-inf"), None, ""))
    for _ in range(50):
        assert _memory.available_memory() == (123, "MemAvailable")
    assert len(calls) == 1


def test_in_a_run_batch_such_a_frame_fails_only_its_items(bomb, cdnet_clip, tmp_path, monkeypatch, capsys):
    folder = cdnet_clip(5)
    names = sorted(p.name for p in folder.iterdir())
    shutil.copy(bomb, folder / (names[2].rsplit(".", 1)[0] + "b.png"))  # sorts third among six
    monkeypatch.setenv("GPUDIFF_MEMORY_LIMIT", str(GB))
    out = tmp_path / "s.zarr"
    rc = main(["run", str(folder), "--out", str(out), "--no-progress", "--pairs", "consecutive"])
    err = capsys.readouterr().err
    assert rc == 1
    failed = [line for line in err.splitlines() if "failed:" in line]
    assert len(failed) == 2, err  # the two pairs the frame is in; the other three pairs are done
    assert all("b.png declares 30000 x 30000 x 3 uint8" in line and "available" in line for line in failed)
    assert "3 done, 2 failed" in err


# ---- frames of a TIFF stack, a Zarr array, a video: checked once at open (issue 14, frames) -------

STACK_FRAME = (512, 512, 3)  # uint16: 1572864 bytes a frame
STACK_BYTES = 512 * 512 * 3 * 2


def _mb(n):
    return f"{n / 1e6:.3g} MB"


@pytest.fixture
def stack(tmp_path):
    """3 pages of 512 x 512 RGB uint16 (random), written by tifffile."""
    import numpy as np
    import tifffile

    frames = np.random.default_rng(3).integers(0, 65536, (3, *STACK_FRAME), dtype=np.uint16)
    path = tmp_path / "stack.tif"
    tifffile.imwrite(path, frames, photometric="rgb")
    return path


@pytest.fixture
def zarr_array(tmp_path):
    """The same kind of frames as a Zarr array (T, H, W, C), written by zarr."""
    import numpy as np
    import zarr

    path = tmp_path / "frames.zarr"
    z = zarr.create_array(str(path), shape=(3, *STACK_FRAME), dtype="uint16", chunks=(1, *STACK_FRAME))
    z[:] = np.random.default_rng(4).integers(0, 65536, (3, *STACK_FRAME), dtype=np.uint16)
    return path


def _assert_refused(path, name, frame_bytes, limit, geometry):
    from gpudiff.io import open_source

    with pytest.raises(InputError) as exc:
        open_source(path)
    msg = str(exc.value)
    assert "\n" not in msg
    assert msg.startswith(f"{name} declares {geometry} = {_mb(frame_bytes)} of pixels per frame"), msg
    assert f"needs about {_mb(4 * frame_bytes)} but {_mb(limit)} of memory is available (GPUDIFF_MEMORY_LIMIT)" in msg
    assert "raise GPUDIFF_MEMORY_LIMIT if you trust it" in msg and "more memory" in msg and "crop" in msg


@pytest.mark.parametrize("kind", ["tiff", "zarr"])
def test_a_stack_whose_frames_do_not_fit_is_refused_at_open_and_one_that_fits_reads(kind, stack, zarr_array,
                                                                                    monkeypatch):
    import numpy as np
    import tifffile
    import zarr

    from gpudiff.io import open_source

    path = stack if kind == "tiff" else zarr_array
    limit = 4 * STACK_BYTES - 1_000_000  # below the 4 working copies of one frame
    monkeypatch.setenv("GPUDIFF_MEMORY_LIMIT", str(limit))
    _assert_refused(path, str(path), STACK_BYTES, limit, "512 x 512 x 3 uint16")

    monkeypatch.setenv("GPUDIFF_MEMORY_LIMIT", str(4 * STACK_BYTES))  # just enough
    with open_source(path) as src:
        assert len(src) == 3
        oracle = tifffile.imread(path, key=0) if kind == "tiff" else zarr.open_array(str(path), mode="r")[0]
        got = src.read(0)
        assert got.dtype == oracle.dtype
        np.testing.assert_array_equal(got, oracle)


def test_a_video_whose_frames_do_not_fit_is_refused_at_open_and_one_that_fits_reads(data_dir, monkeypatch):
    pytest.importorskip("av")
    cv2 = pytest.importorskip("cv2")
    import numpy as np

    from gpudiff.io import open_source

    path = data_dir / "imageio-standard" / "realshort.mp4"
    cap = cv2.VideoCapture(str(path))
    ok, first = cap.read()
    cap.release()
    assert ok
    oracle = first[..., ::-1]  # OpenCV's BGR -> RGB
    h, w = oracle.shape[:2]
    frame_bytes = h * w * 3  # uint8
    limit = 2 * frame_bytes
    monkeypatch.setenv("GPUDIFF_MEMORY_LIMIT", str(limit))
    with pytest.raises(InputError) as exc:
        open_source(path)
    msg = str(exc.value)
    assert "\n" not in msg
    assert msg.startswith(f"{path} declares {w} x {h} x 3 uint8 = {frame_bytes / 1e3:.3g} kB of pixels per frame")
    assert f"needs about {4 * frame_bytes / 1e3:.3g} kB but {limit / 1e3:.3g} kB of memory is available" in msg

    monkeypatch.setenv("GPUDIFF_MEMORY_LIMIT", str(4 * frame_bytes))
    with open_source(path) as src:
        got = src.read(0)
    assert got.shape == oracle.shape and got.dtype == np.uint8
    assert np.abs(got.astype(int) - oracle).mean() < 1.0  # decoders differ slightly (tests/unit/io)


def test_a_tiff_page_of_another_shape_is_checked_when_read_naming_the_page(tmp_path, monkeypatch):
    import numpy as np
    import tifffile

    from gpudiff.io import open_source

    path = tmp_path / "mixed.tif"
    small = np.arange(64 * 64, dtype=np.uint16).reshape(64, 64)
    with tifffile.TiffWriter(path) as tw:  # no shaped metadata: one frame per page, shapes differ
        tw.write(small, metadata=None)
        tw.write(np.ones(STACK_FRAME, np.uint16), photometric="rgb", metadata=None)
        tw.write(small[::-1], metadata=None)
    limit = 4 * STACK_BYTES // 2
    monkeypatch.setenv("GPUDIFF_MEMORY_LIMIT", str(limit))
    with open_source(path) as src:
        np.testing.assert_array_equal(src.read(0), tifffile.imread(path, key=0))
        np.testing.assert_array_equal(src.read(2), tifffile.imread(path, key=2))
        with pytest.raises(InputError) as exc:
            src.read(1)
    msg = str(exc.value)
    assert "\n" not in msg
    assert msg.startswith(f"{path} page 1 declares 512 x 512 x 3 uint16 = {_mb(STACK_BYTES)} of pixels;"), msg
    assert f"but {_mb(limit)} of memory is available" in msg


def test_gpudiff_run_on_such_a_stack_exits_2_with_one_line(stack, tmp_path):
    from tests._stores import cli

    out = tmp_path / "out.zarr"
    proc = cli("run", stack, "--out", out, "--no-progress",
               env={"GPUDIFF_MEMORY_LIMIT": str(STACK_BYTES), "GPUDIFF_BACKEND": "numpy"})
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 2, stderr
    lines = stderr.splitlines()
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    assert lines[0].startswith(f"gpudiff run: error: {stack} declares 512 x 512 x 3 uint16"), stderr
    assert "GPUDIFF_MEMORY_LIMIT" in lines[0]
    assert not out.exists()


def test_a_gif_whose_frames_do_not_fit_is_refused_at_open_and_one_that_fits_reads(data_dir, monkeypatch):
    import numpy as np
    from PIL import Image

    from gpudiff.io import open_source

    path = data_dir / "imageio-standard" / "newtonscradle.gif"  # 36 frames of 200 x 150, RGB on decode
    oracle = np.asarray(Image.open(path).convert("RGB"))
    h, w = oracle.shape[:2]
    frame_bytes = h * w * 3
    monkeypatch.setenv("GPUDIFF_MEMORY_LIMIT", str(2 * frame_bytes))
    with pytest.raises(InputError) as exc:
        open_source(path)
    msg = str(exc.value)
    assert "\n" not in msg
    assert msg.startswith(f"{path} declares {w} x {h} x 3 uint8 = {frame_bytes / 1e3:.3g} kB of pixels per frame"), msg

    monkeypatch.setenv("GPUDIFF_MEMORY_LIMIT", str(4 * frame_bytes))
    with open_source(path) as src:
        np.testing.assert_array_equal(src.read(0), oracle)
