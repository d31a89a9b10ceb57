"""Sources on real data: each kind against an independent reader (tifffile, OpenCV, Pillow, zarr)."""

from __future__ import annotations

import csv
import os
import pickle
import shutil

import numpy as np
import pytest

from gpudiff.io._images import read_image
from gpudiff.io import Source, natural_key, open_source
from tests._threads import read_from_threads

cv2 = pytest.importorskip("cv2")
tifffile = pytest.importorskip("tifffile")


# --------------------------------------------------------------------------------------------
# helpers


def _assert_concurrent_equal(src: Source, indices):
    expected = {i: src.read(i) for i in sorted(set(indices))}
    got = read_from_threads(src, indices)
    for i, arrays in got.items():
        for a in arrays:
            np.testing.assert_array_equal(a, expected[i], err_msg=src.label(i))


def _cv2_rgb(path):
    """OpenCV's read as channels-last RGB (alpha dropped)."""
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if img.ndim == 3:
        img = img[..., :3][..., ::-1]
    return img


def _cv2_video_frames(path, indices):
    """Frames ``indices`` of a video decoded sequentially by OpenCV (RGB)."""
    wanted = set(indices)
    out = {}
    cap = cv2.VideoCapture(str(path))
    k = 0
    while wanted - out.keys():
        ok, frame = cap.read()
        if not ok:
            break
        if k in wanted:
            out[k] = frame[..., ::-1].copy()
        k += 1
    cap.release()
    return out


def _calcium(data_dir, n=20):
    path = data_dir / "imageio-standard" / "calcium_imaging.tif"
    return np.stack([tifffile.imread(path, key=i) for i in range(n)])


# --------------------------------------------------------------------------------------------
# natural sort


def test_natural_key_orders_digit_runs_by_value():
    names = ["img10.png", "img2.png", "img1.png", "IMG3.png", "img01.png", "a.png", "img2b.png"]
    assert sorted(names, key=natural_key) == [
        "a.png",
        "img01.png",
        "img1.png",
        "img2.png",
        "img2b.png",
        "IMG3.png",
        "img10.png",
    ]


# --------------------------------------------------------------------------------------------
# folder / glob


def test_folder_of_rgba_pngs(data_dir):
    folder = data_dir / "trackpy-timelapse" / "bulk_water"
    src = open_source(folder)
    assert src.kind == "folder"
    pngs = sorted(p for p in os.listdir(folder) if p.endswith(".png"))
    assert len(src) == len(pngs) == 100  # the README is skipped
    assert src.frame_shape == (424, 640, 3)
    assert src.dtype == np.uint8
    assert [os.path.basename(src.label(i)) for i in range(len(src))] == pngs
    for i in (0, 41, 99):
        frame = src.read(i)
        np.testing.assert_array_equal(frame, _cv2_rgb(folder / pngs[i]))
    assert src.label(-1) == str(folder / pngs[-1])
    assert src.pairs() is None and src.pair_ids() is None


def test_folder_of_tiffs(data_dir):
    folder = data_dir / "trackpy-timelapse" / "foam"
    src = open_source(str(folder))
    assert len(src) == 9
    assert src.frame_shape == (768, 768) and src.dtype == np.uint8
    for i in (0, 8):
        np.testing.assert_array_equal(src.read(i), tifffile.imread(src.label(i)))


def test_glob_of_jpegs(data_dir):
    pattern = str(data_dir / "cdnet2014-traffic-subset" / "input" / "*.jpg")
    src = open_source(pattern)
    assert src.kind == "folder" and src.spec == pattern
    assert len(src) == 101
    assert os.path.basename(src.label(0)) == "in000950.jpg"
    for i in (0, 50, 100):
        np.testing.assert_array_equal(src.read(i), _cv2_rgb(src.label(i)))


def test_glob_with_question_marks(data_dir):
    src = open_source(str(data_dir / "bgslibrary-dataset" / "frames" / "0?.png"))
    assert [os.path.basename(src.label(i)) for i in range(len(src))] == [f"0{k}.png" for k in range(1, 10)]
    np.testing.assert_array_equal(src.read(3), _cv2_rgb(src.label(3)))


def test_folder_natural_order_skips_hidden_and_non_images(data_dir, tmp_path):
    frames = sorted((data_dir / "bgslibrary-dataset" / "frames").glob("*.png"))[:4]
    for name, source in zip(["img10.png", "img2.png", "img1.png"], frames):
        shutil.copy(source, tmp_path / name)
    shutil.copy(frames[3], tmp_path / "img3")  # no extension: found by its magic bytes
    shutil.copy(frames[0], tmp_path / ".hidden.png")
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "sub").mkdir()
    shutil.copy(frames[0], tmp_path / "sub" / "img0.png")
    src = open_source(tmp_path)
    assert [os.path.basename(src.label(i)) for i in range(len(src))] == ["img1.png", "img2.png", "img3", "img10.png"]
    np.testing.assert_array_equal(src.read(0), _cv2_rgb(frames[2]))
    np.testing.assert_array_equal(src.read(3), _cv2_rgb(frames[0]))
    np.testing.assert_array_equal(src.read(2), _cv2_rgb(frames[3]))


def test_folder_fingerprint_stable_and_sensitive(data_dir, tmp_path):
    frames = sorted((data_dir / "bgslibrary-dataset" / "frames").glob("*.png"))[:5]
    for f in frames:
        shutil.copy(f, tmp_path / f.name)
    first = open_source(tmp_path).fingerprint()
    again = open_source(tmp_path).fingerprint()
    assert first == again
    assert first["kind"] == "folder" and first["count"] == 5 and len(first["files"]) == 5
    import json

    json.dumps(first)
    target = tmp_path / frames[2].name
    st = target.stat()
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    touched = open_source(tmp_path).fingerprint()
    assert touched["sha256"] != first["sha256"]
    with open(target, "ab") as fh:
        fh.write(b"\0")
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    grown = open_source(tmp_path).fingerprint()
    assert grown["sha256"] not in (first["sha256"], touched["sha256"])


def test_folder_fingerprint_summarises_many_files(data_dir):
    src = open_source(data_dir / "trackpy-timelapse" / "bulk_water")
    fp = src.fingerprint()
    assert fp["count"] == 100 and "files" not in fp and len(fp["sha256"]) == 64


# --------------------------------------------------------------------------------------------
# TIFF


def test_multipage_tiff_pages_on_demand(data_dir):
    path = data_dir / "imageio-standard" / "calcium_imaging.tif"
    src = open_source(path)
    assert src.kind == "tiff"
    assert len(src) == 1000
    assert src.frame_shape == (30, 40) and src.dtype == np.uint16
    for i in (0, 1, 499, 998, 999):
        np.testing.assert_array_equal(src.read(i), tifffile.imread(path, key=i))
    assert src.label(12) == f"{path}[page 12]"
    np.testing.assert_array_equal(src.read(-1), tifffile.imread(path, key=999))


def test_stuck_tiff_matches_reference_decodes(data_dir):
    folder = data_dir / "pims-testdata"
    src = open_source(folder / "stuck.tif")
    assert len(src) == 5 and src.frame_shape == (512, 512)
    np.testing.assert_array_equal(src.read(0), np.load(folder / "stuck_frame0.npy"))
    np.testing.assert_array_equal(src.read(1), np.load(folder / "stuck_frame1.npy"))


def test_imagej_hyperstack_frames_are_the_product_of_axes(data_dir, tmp_path):
    data = _calcium(data_dir, 12).reshape(3, 2, 2, 30, 40)  # T, Z, C
    path = tmp_path / "hyper.tif"
    tifffile.imwrite(path, data, imagej=True, metadata={"axes": "TZCYX"})
    src = open_source(path)
    assert len(src) == 12 and src.frame_shape == (30, 40)
    flat = data.reshape(12, 30, 40)
    for i in range(12):
        np.testing.assert_array_equal(src.read(i), flat[i])
    assert src.label(7) == f"{path}[page 7 (t=1, z=1, c=1)]"


def test_ome_tiff_time_series(data_dir, tmp_path):
    data = _calcium(data_dir, 10)
    path = tmp_path / "series.ome.tif"
    tifffile.imwrite(path, data, ome=True, metadata={"axes": "TYX"})
    src = open_source(path)
    assert len(src) == 10
    for i in (0, 9, 4):
        np.testing.assert_array_equal(src.read(i), data[i])
    # compressed: pages read one by one through tifffile, also after a round trip through pickle
    zpath = tmp_path / "series_zlib.ome.tif"
    tifffile.imwrite(zpath, data, ome=True, metadata={"axes": "TYX"}, compression="zlib")
    zsrc = open_source(zpath)
    for i in (9, 2):
        np.testing.assert_array_equal(zsrc.read(i), data[i])
    clone = pickle.loads(pickle.dumps(zsrc))
    np.testing.assert_array_equal(clone.read(3), data[3])
    _assert_concurrent_equal(zsrc, list(range(10)) * 3)


def test_tiff_written_page_by_page_and_compressed(data_dir, tmp_path):
    data = _calcium(data_dir, 8)
    path = tmp_path / "pages.tif"
    with tifffile.TiffWriter(path) as tw:
        for frame in data:
            tw.write(frame, contiguous=False, compression="zlib", metadata=None)
    src = open_source(path)
    assert len(src) == 8
    for i in (7, 0, 3):
        np.testing.assert_array_equal(src.read(i), tifffile.imread(path, key=i))
    clone = pickle.loads(pickle.dumps(src))
    np.testing.assert_array_equal(clone.read(3), data[3])
    _assert_concurrent_equal(clone, list(range(8)) * 3)


def test_tiff_threads_pickle_fingerprint(data_dir):
    path = data_dir / "imageio-standard" / "calcium_imaging.tif"
    src = open_source(path)
    _assert_concurrent_equal(src, list(range(0, 1000, 7)))
    clone = pickle.loads(pickle.dumps(src))
    np.testing.assert_array_equal(clone.read(3), src.read(3))
    assert len(clone) == 1000
    fp = src.fingerprint()
    assert fp == open_source(path).fingerprint() == clone.fingerprint()
    assert fp["files"][0]["size"] == os.path.getsize(path)
    src.close()
    np.testing.assert_array_equal(src.read(5), tifffile.imread(path, key=5))  # reopens


def test_tiff_fingerprint_changes_with_the_file(data_dir, tmp_path):
    path = tmp_path / "s.tif"
    shutil.copy(data_dir / "pims-testdata" / "stuck.tif", path)
    fp = open_source(path).fingerprint()
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
    assert open_source(path).fingerprint() != fp


# --------------------------------------------------------------------------------------------
# Zarr


zarr = pytest.importorskip("zarr")


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_zarr_plain_arrays(data_dir, tmp_path, zarr_format):
    grey = _calcium(data_dir, 12)
    path = tmp_path / "grey.zarr"
    arr = zarr.create_array(str(path), shape=grey.shape, chunks=(5, 30, 40), dtype=grey.dtype, zarr_format=zarr_format)
    arr[:] = grey
    src = open_source(path)
    assert src.kind == "zarr" and len(src) == 12
    assert src.frame_shape == (30, 40) and src.dtype == np.uint16
    for i in (11, 0, 6, 5, 4):  # across chunks, out of order
        np.testing.assert_array_equal(src.read(i), zarr.open_array(str(path), mode="r")[i])
    assert src.label(4) == f"{path}[4]"
    _assert_concurrent_equal(src, list(range(12)) * 2)

    folder = data_dir / "trackpy-timelapse" / "bulk_water"
    rgba = np.stack([_cv2_rgb(folder / f"bulk_water_{k:03d}.png") for k in range(3)])
    rgba = np.concatenate([rgba, np.full(rgba.shape[:3] + (1,), 255, np.uint8)], axis=-1)
    cpath = tmp_path / "colour.zarr"
    carr = zarr.create_array(
        str(cpath), shape=rgba.shape, chunks=(1, 212, 320, 4), dtype="uint8", zarr_format=zarr_format
    )
    carr[:] = rgba
    csrc = open_source(cpath)
    assert len(csrc) == 3 and csrc.frame_shape == (424, 640, 3)
    np.testing.assert_array_equal(csrc.read(2), rgba[2, ..., :3])


def _write_ome(path, data, axes, zarr_format):
    """An OME-Zarr image with two levels (full resolution, then 2x downsampled in y/x)."""
    group = zarr.open_group(str(path), mode="w", zarr_format=zarr_format)
    full = group.create_array("0", shape=data.shape, chunks=(1,) + data.shape[1:], dtype=data.dtype)
    full[:] = data
    half = data[..., ::2, ::2]
    low = group.create_array("1", shape=half.shape, dtype=data.dtype)
    low[:] = half
    multiscales = [
        {
            "axes": [
                {"name": a, "type": {"t": "time", "c": "channel", "z": "space", "y": "space", "x": "space"}[a]}
                for a in axes
            ],
            "datasets": [
                {"path": "0", "coordinateTransformations": [{"type": "scale", "scale": [1.0] * len(axes)}]},
                {
                    "path": "1",
                    "coordinateTransformations": [{"type": "scale", "scale": [1.0] * (len(axes) - 2) + [2.0, 2.0]}],
                },
            ],
        }
    ]
    if zarr_format == 2:
        group.attrs.update({"multiscales": [dict(multiscales[0], version="0.4")]})
    else:
        group.attrs.update({"ome": {"version": "0.5", "multiscales": multiscales}})


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_ome_zarr_full_resolution_channels_last(data_dir, tmp_path, zarr_format):
    folder = data_dir / "bgslibrary-dataset" / "frames"
    rgb = np.stack([_cv2_rgb(folder / f"{k:02d}.png") for k in range(1, 6)])  # T, Y, X, C
    tcyx = np.ascontiguousarray(np.moveaxis(rgb, -1, 1))
    path = tmp_path / "rgb.ome.zarr"
    _write_ome(path, tcyx, "tcyx", zarr_format)
    src = open_source(path)
    assert src.kind == "zarr" and len(src) == 5
    assert src.frame_shape == (240, 320, 3)
    for i in (4, 0, 2):
        np.testing.assert_array_equal(src.read(i), rgb[i])
    assert src.label(2) == f"{path}/0[2]"

    grey = _calcium(data_dir, 6)[:, None, None]  # T, C=1, Z=1, Y, X
    gpath = tmp_path / "grey.ome.zarr"
    _write_ome(gpath, grey, "tczyx", zarr_format)
    gsrc = open_source(gpath)
    assert len(gsrc) == 6 and gsrc.frame_shape == (30, 40)
    np.testing.assert_array_equal(gsrc.read(5), grey[5, 0, 0])

    # a level named by its path inside the store, or by component, keeps the OME axes
    inner = open_source(path / "0")
    assert len(inner) == 5 and inner.frame_shape == (240, 320, 3)
    np.testing.assert_array_equal(inner.read(1), rgb[1])
    low = open_source(path, component="1")
    assert len(low) == 5 and low.frame_shape == (120, 160, 3)
    np.testing.assert_array_equal(low.read(3), rgb[3, ::2, ::2])
    assert low.label(3) == f"{path}/1[3]"


def test_zarr_pickle_and_fingerprint(data_dir, tmp_path):
    grey = _calcium(data_dir, 6)
    path = tmp_path / "g.zarr"
    arr = zarr.create_array(str(path), shape=grey.shape, chunks=(2, 30, 40), dtype=grey.dtype)
    arr[:] = grey
    src = open_source(path)
    src.read(0)
    clone = pickle.loads(pickle.dumps(src))
    np.testing.assert_array_equal(clone.read(3), grey[3])
    fp = src.fingerprint()
    assert fp == open_source(path).fingerprint()
    arr[3] = grey[3] + 1
    assert open_source(path).fingerprint() != fp


# --------------------------------------------------------------------------------------------
# video


def test_tree_avi_slots_repeat_exactly_and_random_access_is_sequential(data_dir):
    pytest.importorskip("av")
    path = data_dir / "opencv-samples" / "video" / "tree.avi"
    src = open_source(path)
    assert src.kind == "video"
    assert len(src) == 444  # one frame per declared time slot (the AVI stores only changes)
    assert src.frame_shape == (240, 320, 3) and src.dtype == np.uint8
    sequential = [src.read(i) for i in range(len(src))]
    # the 68 stored pictures, in order, are OpenCV's frames exactly (cinepak decodes bit-exactly)
    cap = cv2.VideoCapture(str(path))
    stored = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        stored.append(frame[..., ::-1])
    runs = [0]
    for i in range(1, len(sequential)):
        if np.array_equal(sequential[i], sequential[i - 1]):
            runs[-1] += 1
        else:
            runs.append(0)
    changes = [i for i in range(1, len(sequential)) if not np.array_equal(sequential[i], sequential[i - 1])]
    distinct = [sequential[0]] + [sequential[i] for i in changes]
    assert len(distinct) == len(stored) == 68
    for a, b in zip(distinct, stored):
        np.testing.assert_array_equal(a, b)
    # repeats as in the ground truth (ffmpeg's constant-rate output holds the first picture one
    # slot less and the last one 6 slots more; the runs in between are the same)
    with open(data_dir / "opencv-samples" / "ground_truth" / "tree_duplicates.csv") as fh:
        rows = list(csv.DictReader(fh))
    truth_runs = [0]
    for row in rows[1:]:
        if row["identical_to_previous"] == "1":
            truth_runs[-1] += 1
        else:
            truth_runs.append(0)
    assert runs[1:-1] == truth_runs[1:-1]
    # out of order equals in order
    rng = np.random.default_rng(7)
    for i in rng.permutation(len(src))[:80]:
        np.testing.assert_array_equal(src.read(int(i)), sequential[i])
    assert src.label(40) == f"{path}[frame 40]"


def test_bulk_water_mov_matches_reference_decodes(data_dir):
    pytest.importorskip("av")
    folder = data_dir / "pims-testdata"
    src = open_source(folder / "bulk-water.mov")
    assert len(src) == 480 and src.frame_shape == (424, 640, 3)
    late = src.read(300)  # a far jump first, then back to the start
    for k in (0, 1):
        frame = src.read(k)
        ref = np.load(folder / f"bulk-water_frame{k}.npy")
        assert frame.shape == ref.shape and frame.dtype == ref.dtype
        assert np.abs(frame.astype(int) - ref).mean() < 1.0
        assert np.abs(frame.astype(int) - ref).max() <= 8
    cv = _cv2_video_frames(folder / "bulk-water.mov", [2, 300])
    assert np.abs(late.astype(int) - cv[300]).mean() < 1.0
    assert np.abs(src.read(2).astype(int) - cv[2]).mean() < 1.0


def test_short_mp4_against_opencv_in_any_order(data_dir):
    pytest.importorskip("av")
    path = data_dir / "imageio-standard" / "realshort.mp4"
    src = open_source(path)
    assert len(src) == 36
    cv = _cv2_video_frames(path, range(36))
    for i in list(range(35, -1, -1)) + [0, 17, 5, 30]:
        frame = src.read(i)
        assert frame.shape == cv[i].shape
        assert np.abs(frame.astype(int) - cv[i]).mean() < 1.0, i


def test_vtest_avi_against_opencv(data_dir):
    pytest.importorskip("av")
    path = data_dir / "opencv-samples" / "video" / "vtest.avi"
    src = open_source(path)
    assert len(src) == 795 and src.frame_shape == (576, 768, 3)
    wanted = [260, 3, 120, 121, 250]
    cv = _cv2_video_frames(path, wanted)
    for i in wanted:
        assert np.abs(src.read(i).astype(int) - cv[i]).mean() < 1.0, i


def test_video_threads_and_pickle(data_dir):
    pytest.importorskip("av")
    path = data_dir / "opencv-samples" / "video" / "tree.avi"
    src = open_source(path)
    _assert_concurrent_equal(src, list(range(0, 444, 3)))
    clone = pickle.loads(pickle.dumps(src))
    np.testing.assert_array_equal(clone.read(3), src.read(3))
    assert len(clone) == len(src)
    assert src.fingerprint() == open_source(path).fingerprint()
    src.close()
    clone.close()

    short = open_source(data_dir / "imageio-standard" / "realshort.mp4")
    _assert_concurrent_equal(short, list(range(36)) * 2)


# --------------------------------------------------------------------------------------------
# GIF


def test_animated_gif_against_pillow(data_dir):
    from PIL import Image, ImageSequence

    path = data_dir / "imageio-standard" / "newtonscradle.gif"
    src = open_source(path)
    assert src.kind == "gif" and len(src) == 36
    assert src.frame_shape == (150, 200, 3) and src.dtype == np.uint8
    with Image.open(path) as im:
        expected = [np.asarray(f.convert("RGB")) for f in ImageSequence.Iterator(im)]
    for i in [35, 0, 18, 1, 17, 20]:
        np.testing.assert_array_equal(src.read(i), expected[i])
        np.testing.assert_array_equal(src.read(i), read_image(path, page=i))
    # the periodic duplicates of the ground truth
    np.testing.assert_array_equal(src.read(0), src.read(18))
    np.testing.assert_array_equal(src.read(1), src.read(17))
    assert src.label(3) == f"{path}[frame 3]"
    _assert_concurrent_equal(src, list(range(36)))
    clone = pickle.loads(pickle.dumps(src))
    np.testing.assert_array_equal(clone.read(3), expected[3])


# --------------------------------------------------------------------------------------------
# manifest


def test_manifest_pairs_ids_and_relative_paths(data_dir, tmp_path):
    frames = data_dir / "bgslibrary-dataset" / "frames"
    local = tmp_path / "imgs"
    local.mkdir()
    for k in (1, 2, 3):
        shutil.copy(frames / f"0{k}.png", local / f"0{k}.png")
    absolute = str(frames / "09.png")
    manifest = tmp_path / "pairs.csv"
    manifest.write_text(
        "reference,moving,id\n"
        "imgs/01.png,imgs/02.png,a\n"
        f"imgs/01.png,{absolute},b\n"
        "\n"
        "imgs/03.png,imgs/./02.png,c\n"
    )
    src = open_source(manifest)
    assert src.kind == "manifest"
    assert len(src) == 4  # 01, 02, 09 (absolute), 03
    assert src.pairs() == [(0, 1), (0, 2), (3, 1)]
    assert src.pair_ids() == ["a", "b", "c"]
    assert src.label(0) == str(local / "01.png")
    assert src.label(2) == absolute
    np.testing.assert_array_equal(src.read(2), _cv2_rgb(absolute))
    np.testing.assert_array_equal(src.read(3), read_image(local / "03.png"))
    assert src.frame_shape == (240, 320, 3)
    clone = pickle.loads(pickle.dumps(src))
    assert clone.pairs() == src.pairs()
    np.testing.assert_array_equal(clone.read(3), src.read(3))
    fp = src.fingerprint()
    assert fp == open_source(manifest).fingerprint()
    manifest.write_text("reference,moving\nimgs/01.png,imgs/02.png\n")
    changed = open_source(manifest)
    assert changed.fingerprint() != fp
    assert changed.pair_ids() is None and changed.pairs() == [(0, 1)]


def test_manifest_columns_in_any_order(data_dir, tmp_path):
    frames = data_dir / "bgslibrary-dataset" / "frames"
    manifest = tmp_path / "m.csv"
    manifest.write_text(f"id, Moving ,reference\nx,{frames / '02.png'},{frames / '01.png'}\n")
    src = open_source(manifest)
    assert src.pairs() == [(0, 1)]
    assert src.label(0) == str(frames / "01.png")
    assert src.pair_ids() == ["x"]


# --------------------------------------------------------------------------------------------
# general


def test_index_errors_and_repr(data_dir):
    src = open_source(data_dir / "pims-testdata" / "stuck.tif")
    with pytest.raises(IndexError):
        src.read(5)
    with pytest.raises(IndexError):
        src.read(-6)
    with pytest.raises(TypeError):
        src.read(1.5)
    assert "5 frames" in repr(src)
    with src as s:
        assert s is src
