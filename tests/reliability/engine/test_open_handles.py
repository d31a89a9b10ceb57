"""A finished command leaves no input file open in the calling process: the driver's handle of a
TIFF stack or a video (found leaked by a ResourceWarning that surfaced in another test)."""

from __future__ import annotations

import os
import shutil

import pytest

from gpudiff.cli._main import main

BASE = ["--backend", "numpy", "--no-progress"]


def _open_paths() -> set[str]:
    """The paths this process holds open, from /proc/self/fd (the kernel's list)."""
    out = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            out.add(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:
            pass
    return out


@pytest.fixture
def inputs(data_dir, tmp_path):
    tifffile = pytest.importorskip("tifffile")
    if not os.path.isdir("/proc/self/fd"):
        pytest.skip("needs /proc/self/fd (Linux)")
    stack = tmp_path / "stack.tif"
    tifffile.imwrite(stack, tifffile.imread(data_dir / "imageio-standard/calcium_imaging.tif", key=range(8)))
    video = tmp_path / "video.avi"
    shutil.copy(data_dir / "bgslibrary-dataset/video.avi", video)
    return {"stack": stack, "video": video}


@pytest.mark.parametrize("kind", ["stack", "video"])
@pytest.mark.parametrize("command", [
    ["run", "--metrics", "manhattan"],
    ["run", "--metrics", "manhattan", "--corrupt"],
    ["dedup"],
])
def test_no_input_left_open(inputs, tmp_path, kind, command):
    src = inputs[kind]
    assert str(src) not in _open_paths()
    extra = BASE if command[0] == "run" else []  # dedup has neither flag
    assert main([command[0], str(src), "--out", str(tmp_path / "r.zarr"), *extra, *command[1:]]) == 0
    left = {p for p in _open_paths() if p.startswith(str(tmp_path))}
    assert str(src) not in left, left
