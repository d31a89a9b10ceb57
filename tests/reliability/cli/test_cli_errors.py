"""Bad input at the command line: one line on stderr naming the file and the fix, exit code 2."""

from __future__ import annotations

import numpy as np
import pytest

from gpudiff.backend import cupy_available
from gpudiff.cli._main import main

cv2 = pytest.importorskip("cv2")
tifffile = pytest.importorskip("tifffile")


@pytest.fixture()
def good(tmp_path, data_dir):
    img = cv2.imread(str(data_dir / "skimage-data/camera.png"), cv2.IMREAD_GRAYSCALE)
    p = tmp_path / "good.png"
    cv2.imwrite(str(p), img)
    return p


def _run(capsys, *argv):
    code = main(["compare", *map(str, argv)])
    err = capsys.readouterr().err
    return code, err


def _assert_one_line(err: str, *must_contain: str):
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    for m in must_contain:
        assert m.lower() in lines[0].lower(), (m, lines[0])
    return lines[0]


def test_missing_file(capsys, good, tmp_path):
    code, err = _run(capsys, good, tmp_path / "nope.png")
    assert code == 2
    _assert_one_line(err, "nope.png", "not found")


def test_directory(capsys, good, tmp_path):
    d = tmp_path / "adir"
    d.mkdir()
    code, err = _run(capsys, d, good)
    assert code == 2
    _assert_one_line(err, "adir", "directory")


def test_not_an_image(capsys, good, tmp_path):
    p = tmp_path / "notes.png"
    p.write_text("these are my notes, not a picture\n")
    code, err = _run(capsys, good, p)
    assert code == 2
    _assert_one_line(err, "notes.png", "not an image")


def test_zero_byte_file(capsys, good, tmp_path):
    p = tmp_path / "empty.jpg"
    p.write_bytes(b"")
    code, err = _run(capsys, good, p)
    assert code == 2
    _assert_one_line(err, "empty.jpg", "empty")


@pytest.mark.parametrize("ext", ["png", "jpg", "tif"])
def test_truncated_files(capsys, good, tmp_path, data_dir, ext):
    img = cv2.imread(str(data_dir / "skimage-data/astronaut.png"), cv2.IMREAD_COLOR)
    full = tmp_path / f"full.{ext}"
    if ext == "tif":
        tifffile.imwrite(full, img)
    else:
        cv2.imwrite(str(full), img)
    data = full.read_bytes()
    cut = tmp_path / f"cut.{ext}"
    cut.write_bytes(data[: len(data) // 2])
    code, err = _run(capsys, good, cut, "--color", "gray")
    assert code == 2
    _assert_one_line(err, f"cut.{ext}", "truncated")


def test_shapes_differ_names_both_shapes_and_the_flags(capsys, good, tmp_path, data_dir):
    img = cv2.imread(str(data_dir / "skimage-data/camera.png"), cv2.IMREAD_GRAYSCALE)
    p = tmp_path / "smaller.png"
    cv2.imwrite(str(p), img[:500, :400])
    code, err = _run(capsys, good, p)
    assert code == 2
    _assert_one_line(err, "(512, 512)", "(500, 400)", "--shape crop", "--shape resize")
    # and the flags do what they say
    assert main(["compare", str(good), str(p), "--shape", "crop", "--backend", "numpy"]) == 0
    assert main(["compare", str(good), str(p), "--shape", "resize", "--backend", "numpy"]) == 0


def test_channel_counts_differ_in_rgb_mode(capsys, good, data_dir):
    rgb = data_dir / "skimage-data/astronaut.png"
    gray = data_dir / "skimage-data/camera.png"
    code, err = _run(capsys, gray, rgb, "--color", "rgb", "--shape", "crop")
    assert code == 2
    _assert_one_line(err, "channel", "--color gray")


def test_nan_and_inf_in_float_image_are_counted(capsys, tmp_path):
    a = np.random.default_rng(0).random((20, 30)).astype(np.float32)
    b = a.copy()
    b[0, :4] = np.nan
    b[5, 5] = np.inf
    pa, pb = tmp_path / "a.tif", tmp_path / "b.tif"
    tifffile.imwrite(pa, a)
    tifffile.imwrite(pb, b)
    code, err = _run(capsys, pa, pb)
    assert code == 2
    line = _assert_one_line(err, "b.tif", "4 nan", "1 inf")
    assert "nan_to_num" in line or "replace" in line.lower()


def test_pixel_budget_refused_before_decoding(capsys, good):
    code, err = _run(capsys, good, good, "--max-pixels", "1000")
    assert code == 2
    _assert_one_line(err, "good.png", "--max-pixels")


def test_unsupported_dtype(capsys, tmp_path, good):
    p = tmp_path / "complex.tif"
    tifffile.imwrite(p, (np.ones((8, 8)) + 1j).astype(np.complex64))
    code, err = _run(capsys, p, p)
    assert code == 2
    _assert_one_line(err, "complex.tif", "complex")


@pytest.mark.skipif(cupy_available(), reason="a device is present")
def test_backend_cupy_without_device(capsys, good):
    code, err = _run(capsys, good, good, "--backend", "cupy")
    assert code == 2
    _assert_one_line(err, "cupy", "--backend numpy")


@pytest.mark.parametrize(
    "flags, words",
    [
        (["--upsample", "0"], ["--upsample"]),
        (["--upsample", "4"], ["--align"]),
        (["--metrics", "bogus"], ["bogus", "known"]),
        (["--edge-threshold", "3"], ["--edges"]),
        (["--bins", "1"], ["--bins"]),
        (["--blur", "-1"], ["--blur"]),
        (["--shape", "stretch"], ["--shape"]),
    ],
)
def test_bad_options(capsys, good, flags, words):
    code, err = _run(capsys, good, good, *flags)
    assert code == 2
    _assert_one_line(err, *words)


def test_valid_edge_cases_are_not_errors(capsys, tmp_path):
    one = tmp_path / "one.png"
    cv2.imwrite(str(one), np.array([[7]], np.uint8))
    const = tmp_path / "const.png"
    cv2.imwrite(str(const), np.full((16, 16), 200, np.uint8))
    assert main(["compare", str(one), str(one), "--backend", "numpy"]) == 0
    assert main(["compare", str(const), str(const), "--normalize", "minmax", "--backend", "numpy"]) == 0
    assert main(["compare", str(const), str(const), "--align", "--backend", "numpy"]) == 0
    assert "Traceback" not in capsys.readouterr().err
