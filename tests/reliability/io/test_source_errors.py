"""Bad sequences: every failure is one InputError line naming the file (and frame) with a fix."""

from __future__ import annotations

import shutil
import sys

import numpy as np
import pytest

from gpudiff.errors import ConfigError, InputError
from gpudiff.io import open_source

tifffile = pytest.importorskip("tifffile")


def _one_line(exc_info) -> str:
    text = str(exc_info.value)
    assert "\n" not in text
    return text


def _calcium(data_dir, n=20):
    path = data_dir / "imageio-standard" / "calcium_imaging.tif"
    return np.stack([tifffile.imread(path, key=i) for i in range(n)])


# --------------------------------------------------------------------------------------------
# what is opened


def test_missing_path(tmp_path):
    with pytest.raises(InputError) as e:
        open_source(tmp_path / "nope")
    assert "not found" in _one_line(e) and "nope" in str(e.value)


def test_glob_matching_nothing(tmp_path):
    with pytest.raises(InputError) as e:
        open_source(str(tmp_path / "*.png"))
    assert "contains no images" in _one_line(e)


def test_empty_folder_and_folder_without_images(tmp_path):
    with pytest.raises(InputError) as e:
        open_source(tmp_path)
    assert "contains no images" in _one_line(e) and str(tmp_path) in str(e.value)
    (tmp_path / "README").write_text("frames go here")
    (tmp_path / ".hidden.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    with pytest.raises(InputError, match="contains no images"):
        open_source(tmp_path)


@pytest.mark.parametrize(
    "relpath",
    [
        "trackpy-timelapse/bulk_water/bulk_water_000.png",
        "cdnet2014-traffic-subset/input/in000950.jpg",
        "trackpy-timelapse/foam/V1.75f3.1250001.tif",
        "cdnet2014-traffic-subset/ROI.bmp",
    ],
)
def test_single_image_points_to_compare(data_dir, relpath):
    with pytest.raises(InputError) as e:
        open_source(data_dir / relpath)
    text = _one_line(e)
    assert "is a single image" in text and "gpudiff compare" in text and relpath.split("/")[-1] in text


def test_single_frame_gif(data_dir, tmp_path):
    from PIL import Image

    with Image.open(data_dir / "imageio-standard" / "newtonscradle.gif") as im:
        im.convert("RGB").save(tmp_path / "still.gif")
    with pytest.raises(InputError, match="single image"):
        open_source(tmp_path / "still.gif")


def test_unknown_file_and_empty_file(tmp_path):
    (tmp_path / "data.bin").write_bytes(b"\x00\x01" * 40)
    with pytest.raises(InputError) as e:
        open_source(tmp_path / "data.bin")
    assert "not a sequence gpudiff can read" in _one_line(e)
    (tmp_path / "empty.tif").write_bytes(b"")
    with pytest.raises(InputError, match="empty"):
        open_source(tmp_path / "empty.tif")


def test_component_only_for_zarr(data_dir):
    with pytest.raises(InputError, match="--component"):
        open_source(data_dir / "pims-testdata" / "stuck.tif", component="0")


def test_zarr_group_without_array_lists_them(data_dir, tmp_path):
    zarr = pytest.importorskip("zarr")
    group = zarr.open_group(str(tmp_path / "g.zarr"), mode="w")
    group.create_array("frames", shape=(3, 30, 40), dtype="uint16")
    with pytest.raises(InputError) as e:
        open_source(tmp_path / "g.zarr")
    assert "--component" in _one_line(e) and "frames" in str(e.value)
    assert len(open_source(tmp_path / "g.zarr", component="frames")) == 3
    with pytest.raises(InputError):
        open_source(tmp_path / "g.zarr", component="nothing")


def test_zarr_bad_layouts(tmp_path):
    zarr = pytest.importorskip("zarr")
    zarr.create_array(str(tmp_path / "still.zarr"), shape=(30, 40), dtype="uint8")
    with pytest.raises(InputError, match="single image"):
        open_source(tmp_path / "still.zarr")
    zarr.create_array(str(tmp_path / "chw.zarr"), shape=(4, 3, 30, 40), dtype="uint8")
    with pytest.raises(InputError, match=r"\(4, 3, 30, 40\)"):
        open_source(tmp_path / "chw.zarr")


def test_budgets(data_dir):
    stack = data_dir / "imageio-standard" / "calcium_imaging.tif"
    with pytest.raises(InputError, match="over the budget"):
        open_source(stack, max_pixels=1000)
    with pytest.raises(InputError, match="page budget"):
        open_source(stack, page_budget=999)
    assert len(open_source(stack, page_budget=1000)) == 1000
    with pytest.raises(InputError, match="page budget"):
        open_source(data_dir / "trackpy-timelapse" / "foam", page_budget=3)
    with pytest.raises(ConfigError):
        open_source(stack, max_pixels=0)
    with pytest.raises(ConfigError):
        open_source(stack, page_budget="many")


# --------------------------------------------------------------------------------------------
# manifests


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "is empty"),
        ("\n\n", "is empty"),
        ("reference,moving\n", "no pairs"),
        ("a.png,b.png\nc.png,d.png\n", "line 1 has no header"),
        ("reference,movng\na.png,b.png\n", "line 1 has no 'moving' column"),
        ("reference,moving,ids\na.png,b.png,1\n", "line 1: unknown column 'ids'"),
        ("reference,moving,id\na.png,b.png,1\na.png,c.png,1\n", "line 3: id '1' already used on line 2"),
        ("reference,moving\na.png,b.png\na.png,\n", "line 3: the moving column is empty"),
        ("reference,moving\na.png,b.png,c.png\n", "line 2 has 3 values"),
        ("reference,moving,id\na.png,b.png,\n", "line 2: the id column is empty"),
    ],
)
def test_bad_manifests(tmp_path, text, expected):
    path = tmp_path / "pairs.csv"
    path.write_text(text)
    with pytest.raises(InputError) as e:
        open_source(path)
    message = _one_line(e)
    assert str(path) in message and expected in message
    assert ":" in message.split(expected, 1)[-1] or "header" in message or "pair" in message


def test_manifest_naming_a_missing_file(data_dir, tmp_path):
    frames = data_dir / "bgslibrary-dataset" / "frames"
    path = tmp_path / "pairs.csv"
    path.write_text(f"reference,moving\n{frames / '01.png'},{frames / '02.png'}\n{frames / '01.png'},gone.png\n")
    src = open_source(path)  # not an error at open time
    assert len(src) == 3 and src.pairs() == [(0, 1), (0, 2)]
    src.read(0)
    src.read(1)
    with pytest.raises(InputError) as e:
        src.read(2)
    message = _one_line(e)
    assert str(tmp_path / "gone.png") in message and "not found" in message
    assert "pairs.csv line 3" in message


# --------------------------------------------------------------------------------------------
# truncated multi-page TIFFs


def _cut(src_path, dst_path, size):
    dst_path.write_bytes(src_path.read_bytes()[:size])
    return dst_path


@pytest.mark.parametrize("flavour", ["imagej", "shaped", "ome"])
@pytest.mark.parametrize("where", ["boundary", "mid-page"])
def test_truncated_tiff_reports_missing_pages(data_dir, tmp_path, flavour, where):
    data = _calcium(data_dir, 20)
    full = tmp_path / "stack.tif"
    if flavour == "imagej":
        tifffile.imwrite(full, data, imagej=True, metadata={"axes": "TYX"})
    elif flavour == "shaped":
        tifffile.imwrite(full, data)
    else:  # OME-XML in the first IFD, each page's IFD next to its data (as microscopes write)
        ome = tifffile.OmeXml()
        ome.addimage(data.dtype, data.shape, (20, 1, 1, 30, 40, 1), axes="TYX")
        xml = ome.tostring()
        with tifffile.TiffWriter(full) as tw:
            for i, frame in enumerate(data):
                tw.write(frame, contiguous=False, description=xml if i == 0 else None, metadata=None)
    with tifffile.TiffFile(full) as tif:
        if flavour == "ome":
            end_of_12 = tif.pages[12].dataoffsets[0] + tif.pages[12].databytecounts[0]
            start_of_12 = tif.pages[12].dataoffsets[0]
            boundary = tif.pages[13].offset
        else:
            start = tif.series[0].dataoffset
            start_of_12, end_of_12 = start + 12 * 2400, start + 13 * 2400
            boundary = end_of_12
    size = boundary if where == "boundary" else start_of_12 + 1200
    readable = 13 if where == "boundary" else 12
    cut = _cut(full, tmp_path / "cut.tif", size)
    src = open_source(cut)
    assert len(src) == 20  # the declared count, not silently shortened
    for i in range(readable):
        np.testing.assert_array_equal(src.read(i), data[i])
    for i in range(readable, 20):
        with pytest.raises(InputError) as e:
            src.read(i)
        message = _one_line(e)
        assert f"{cut} page {i} " in message and "truncated" in message
        assert f"declares 20 pages, {readable} readable" in message
    if where == "mid-page":
        with pytest.raises(InputError, match="page 12 is cut short"):
            src.read(12)


def test_tiff_with_a_broken_chain_of_pages(data_dir, tmp_path):
    data = _calcium(data_dir, 20)
    full = tmp_path / "pages.tif"
    with tifffile.TiffWriter(full) as tw:
        for frame in data:
            tw.write(frame, contiguous=False, metadata=None)
    with tifffile.TiffFile(full) as tif:
        boundary = tif.pages[13].offset
    cut = _cut(full, tmp_path / "cut.tif", boundary)
    src = open_source(cut)
    assert len(src) == 14  # the 13 pages found, and one that reports the break
    np.testing.assert_array_equal(src.read(12), data[12])
    with pytest.raises(InputError) as e:
        src.read(13)
    message = _one_line(e)
    assert "page 13 is missing" in message and "truncated" in message and "breaks after page 12" in message


def test_corrupt_tiff_header(tmp_path):
    (tmp_path / "bad.tif").write_bytes(b"II*\x00" + b"\xff" * 60)
    with pytest.raises(InputError) as e:
        open_source(tmp_path / "bad.tif")
    assert "bad.tif" in _one_line(e)


# --------------------------------------------------------------------------------------------
# a corrupt frame inside a folder


def test_corrupt_frame_in_a_folder(data_dir, tmp_path):
    frames = sorted((data_dir / "bgslibrary-dataset" / "frames").glob("*.png"))[:5]
    for f in frames:
        shutil.copy(f, tmp_path / f.name)
    broken = tmp_path / frames[2].name
    broken.write_bytes(frames[2].read_bytes()[:2000])
    src = open_source(tmp_path)
    assert len(src) == 5
    with pytest.raises(InputError) as e:
        src.read(2)
    assert str(broken) in _one_line(e)
    for i in (0, 1, 3, 4):
        assert src.read(i).shape == (240, 320, 3)


# --------------------------------------------------------------------------------------------
# videos


def test_video_without_pyav_gives_the_install_hint(data_dir, monkeypatch):
    monkeypatch.setitem(sys.modules, "av", None)  # import av -> ImportError
    with pytest.raises(InputError) as e:
        open_source(data_dir / "opencv-samples" / "video" / "tree.avi")
    message = _one_line(e)
    assert "tree.avi is a video" in message and "gpudiff[video]" in message and "PyAV" in message


def test_truncated_videos(data_dir, tmp_path):
    pytest.importorskip("av")
    avi = data_dir / "opencv-samples" / "video" / "vtest.avi"
    cut = _cut(avi, tmp_path / "cut.avi", avi.stat().st_size // 2)
    src = open_source(cut)
    assert len(src) == 795
    src.read(10)
    with pytest.raises(InputError) as e:
        src.read(700)
    message = _one_line(e)
    assert "cut.avi frame 700 is missing" in message and "truncated" in message and "declares 795" in message

    mp4 = data_dir / "imageio-standard" / "realshort.mp4"  # its index comes last: nothing to open
    with pytest.raises(InputError) as e:
        open_source(_cut(mp4, tmp_path / "cut.mp4", mp4.stat().st_size // 2))
    assert "cut.mp4 cannot be opened as a video" in _one_line(e)


def test_not_really_a_video(tmp_path):
    pytest.importorskip("av")
    (tmp_path / "fake.mp4").write_bytes(b"\x00\x00\x00\x18ftypisom" + b"\x00" * 100)
    with pytest.raises(InputError) as e:
        open_source(tmp_path / "fake.mp4")
    assert "fake.mp4" in _one_line(e)
