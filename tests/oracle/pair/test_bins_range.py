"""Histogram ranges for 16-bit data (``--bins-range auto|dtype|LO:HI``), against OpenCV on real frames.

calcium_imaging.tif is a 1,000-page uint16 time-lapse whose values stay far below 65535: over the
dtype's range its frames fill a dozen of 256 bins and every histogram distance says little.
"""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import tifffile

from gpudiff import compare
from gpudiff.cli._main import main
from gpudiff.pair._compare import auto_top
from gpudiff.errors import ConfigError
from gpudiff.options import CompareOptions
from gpudiff.engine._store import ResultStore

METHODS = [("kl", cv2.HISTCMP_KL_DIV), ("chi2", cv2.HISTCMP_CHISQR), ("intersection", cv2.HISTCMP_INTERSECT),
           ("bhattacharyya", cv2.HISTCMP_BHATTACHARYYA), ("correlation", cv2.HISTCMP_CORREL)]


@pytest.fixture(scope="module")
def calcium(data_dir):
    return tifffile.imread(data_dir / "imageio-standard/calcium_imaging.tif")


def _cv_hist(a, lo, hi, bins=256):
    h = cv2.calcHist([a.astype(np.float32)], [0], None, [bins], [lo, hi]).reshape(-1)
    return h / h.sum()


def _check_against_opencv(r, a, b, lo, hi):
    h1, h2 = _cv_hist(a, lo, hi), _cv_hist(b, lo, hi)
    for name, method in METHODS:
        assert r.histogram[name] == pytest.approx(cv2.compareHist(h1, h2, method), rel=1e-4, abs=1e-6), name
    return h1


def test_auto_spreads_16_bit_frames_over_the_bins(calcium):
    a, b = calcium[100], calcium[400]
    r = compare(a, b, metrics=["histogram"])
    top = auto_top(max(a.max(), b.max()))
    assert r.histogram_range == (0.0, top) and top == np.ceil(1.25 * (max(a.max(), b.max()) + 1))
    h_auto = _check_against_opencv(r, a, b, 0.0, top)
    d = compare(a, b, metrics=["histogram"], bins_range="dtype")
    assert d.histogram_range == (0.0, 65536.0)
    h_dtype = _check_against_opencv(d, a, b, 0.0, 65536.0)
    assert np.count_nonzero(h_dtype) <= 16 and np.count_nonzero(h_auto) > 4 * np.count_nonzero(h_dtype)


def test_an_explicit_range_in_the_inputs_units(calcium):
    a, b = calcium[10], calcium[11]
    r = compare(a, b, metrics=["histogram"], bins_range="0:4096")
    assert r.histogram_range == (0.0, 4096.0)
    _check_against_opencv(r, a, b, 0.0, 4096.0)


def test_uint8_auto_is_the_dtype_range(data_dir):
    a = cv2.imread(str(data_dir / "skimage-data/camera.png"), cv2.IMREAD_GRAYSCALE)
    b = cv2.GaussianBlur(a, (5, 5), 0)
    assert compare(a, b, metrics=["histogram"]).histogram_range == (0.0, 256.0)


@pytest.mark.parametrize("bad", ["wide", "5:1", "0:inf", "1:2:3"])
def test_bad_ranges_are_refused(bad):
    with pytest.raises(ConfigError, match="--bins-range"):
        CompareOptions(bins_range=bad)


def test_a_range_in_input_units_is_refused_after_normalisation():
    with pytest.raises(ConfigError, match="input's units"):
        CompareOptions(bins_range="0:4096", normalize="zscore")


def test_a_run_fixes_one_range_from_a_sample_and_records_it(calcium, tmp_path, capsys):
    stack = tmp_path / "ca.tif"
    frames = calcium[:40]
    tifffile.imwrite(stack, frames)
    out = tmp_path / "ca.zarr"
    assert main(["run", str(stack), "--out", str(out), "--metrics", "histogram", "--no-progress"]) == 0
    err = capsys.readouterr().err
    picks = sorted({int(round(i)) for i in np.linspace(0, 39, 16)})
    top = auto_top(max(int(frames[i].max()) for i in picks))
    assert f"256 bins over 0:{top:g} (--bins-range auto" in err
    store = ResultStore.open(str(out))
    assert store.attrs["options"]["bins_range"] == f"0:{top:g}"
    # every item uses that one range: item 7 equals compare() with it, and OpenCV
    kl = store.read(["hist_kl"])["hist_kl"]
    r = compare(frames[7], frames[8], metrics=["histogram"], bins_range=f"0:{top:g}")
    assert kl[7] == pytest.approx(r.histogram["kl"], rel=1e-12)
    _check_against_opencv(r, frames[7], frames[8], 0.0, top)
    # and the JSON of compare says the range
    assert main(["compare", str(stack), str(stack), "--page", "0", "--json", "--metrics", "histogram"]) == 0
    assert json.loads(capsys.readouterr().out)["histogram_range"][0] == 0.0
