"""Frames have names: export and xarray carry each item's frame files, labels and video times."""

from __future__ import annotations

import csv
import io
import shutil

import numpy as np
import pytest

from gpudiff.cli._main import main
from gpudiff.engine._export import export_csv
from gpudiff.engine._store import ResultStore


def _export(store) -> list[dict]:
    buf = io.StringIO()
    export_csv(ResultStore.open(str(store)), buf)
    return list(csv.DictReader(io.StringIO(buf.getvalue())))


def test_a_folder_run_exports_the_file_names_of_each_pair(data_dir, tmp_path):
    src = data_dir / "cdnet2014-traffic-subset/input"
    folder = tmp_path / "in"
    folder.mkdir()
    files = sorted(p.name for p in src.iterdir())[:12]
    for n in files:
        shutil.copy2(src / n, folder / n)
    out = tmp_path / "f.zarr"
    assert main(["run", str(folder), "--out", str(out), "--metrics", "manhattan", "--no-progress",
                 "--pairs", "consecutive"]) == 0
    rows = _export(out)
    assert [r["reference_name"].rsplit("/", 1)[-1] for r in rows] == files[:-1]
    assert [r["moving_name"].rsplit("/", 1)[-1] for r in rows] == files[1:]
    assert "reference_time" not in rows[0]  # image files have no time


def test_a_video_run_exports_times_that_pyav_agrees_with(data_dir, tmp_path):
    av = pytest.importorskip("av")
    video = data_dir / "bgslibrary-dataset/video.avi"
    out = tmp_path / "v.zarr"
    assert main(["run", str(video), "--out", str(out), "--metrics", "manhattan", "--no-progress"]) == 0
    rows = _export(out)
    with av.open(str(video)) as c:  # the oracle: the decoder's own frame times, first 40 frames
        times = []
        for frame in c.decode(video=0):
            times.append(float(frame.time))
            if len(times) == 40:
                break
    want = np.asarray(times) - times[0]
    got_ref = np.array([float(r["reference_time"]) for r in rows[:39]])
    got_mov = np.array([float(r["moving_time"]) for r in rows[:39]])
    np.testing.assert_allclose(got_ref, want[:39], atol=1e-9)
    np.testing.assert_allclose(got_mov, want[1:40], atol=1e-9)
    assert rows[5]["moving_name"].endswith("video.avi[frame 6]")


def test_a_tiff_stack_names_its_pages_and_xarray_gets_item_coordinates(data_dir, tmp_path):
    xr = pytest.importorskip("xarray")
    tifffile = pytest.importorskip("tifffile")
    stack = tmp_path / "s.tif"
    frames = tifffile.imread(data_dir / "imageio-standard/calcium_imaging.tif")[:6]
    tifffile.imwrite(stack, frames)
    out = tmp_path / "t.zarr"
    assert main(["run", str(stack), "--out", str(out), "--metrics", "manhattan", "--no-progress"]) == 0
    ds = xr.open_zarr(str(out)).load()
    for name in ("reference_name", "moving_name", "reference_index", "moving_index"):
        assert name in ds.coords, name
    assert str(ds["moving_name"].values[2]).endswith("s.tif[page 3]")
    # a metric selected by a frame's name
    sel = ds["manhattan"].where(ds["moving_name"] == ds["moving_name"].values[2], drop=True)
    want = np.abs(frames[3].astype(np.float64) - frames[2]).sum()
    assert float(sel.values[0]) == pytest.approx(want, rel=1e-12)
