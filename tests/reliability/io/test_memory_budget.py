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
