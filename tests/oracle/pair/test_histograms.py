"""Histogram distances against OpenCV's compareHist (the definitions gpudiff follows) on real images."""

from __future__ import annotations

import numpy as np
import pytest

from gpudiff.pair._histograms import histogram_distances, js_divergence, kl_divergence, normalize_histogram

cv2 = pytest.importorskip("cv2")

_CV_METHODS = {
    "correlation": cv2.HISTCMP_CORREL,
    "chi2": cv2.HISTCMP_CHISQR,
    "intersection": cv2.HISTCMP_INTERSECT,
    "bhattacharyya": cv2.HISTCMP_BHATTACHARYYA,
    "chi2_alt": cv2.HISTCMP_CHISQR_ALT,
    "kl": cv2.HISTCMP_KL_DIV,
}


def _gray(path):
    return cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)


def _cv_hist(img, bins=256):
    h = cv2.calcHist([img], [0], None, [bins], [0, 256]).reshape(-1).astype(np.float64)
    return h / h.sum()


PAIRS = [
    ("skimage-data/camera.png", "skimage-data/moon.png"),
    ("skimage-data/coins.png", "skimage-data/text.png"),
    ("skimage-data/camera.png", "skimage-data/camera.png"),
    ("opencv-samples/pairs/leuvenA.jpg", "opencv-samples/pairs/leuvenB.jpg"),
]


@pytest.mark.parametrize("bins", [256, 32])
@pytest.mark.parametrize("pair", PAIRS, ids=lambda p: f"{p[0].split('/')[-1]}-{p[1].split('/')[-1]}")
def test_distances_equal_opencv_compareHist(data_dir, pair, bins):
    paths = [data_dir / p for p in pair]
    if not all(p.exists() for p in paths):
        pytest.skip(f"missing {pair}")
    h1, h2 = (_cv_hist(_gray(p), bins) for p in paths)
    ours = histogram_distances(h1, h2, normalize=False)
    for name, method in _CV_METHODS.items():
        ref = cv2.compareHist(h1.astype(np.float32), h2.astype(np.float32), method)
        assert ours[name] == pytest.approx(ref, rel=2e-5, abs=1e-6), name


def test_counts_are_normalised_to_probabilities(data_dir):
    img1, img2 = _gray(data_dir / "skimage-data/camera.png"), _gray(data_dir / "skimage-data/coins.png")
    c1 = np.bincount(img1.ravel(), minlength=256)
    c2 = np.bincount(img2.ravel(), minlength=256)
    a = histogram_distances(c1, c2)
    b = histogram_distances(_cv_hist(img1), _cv_hist(img2), normalize=False)
    for k in a:
        assert a[k] == pytest.approx(b[k], rel=1e-9, abs=1e-12)


def test_hand_computed_values():
    p = np.array([0.5, 0.5, 0.0])
    q = np.array([0.25, 0.25, 0.5])
    # KL: 0.5 ln 2 + 0.5 ln 2 = ln 2 ; empty p bins skipped
    assert kl_divergence(p, q) == pytest.approx(np.log(2))
    # q empty where p has mass: replaced by 1e-10
    assert kl_divergence(q, p) == pytest.approx(0.25 * np.log(0.25 / 0.5) * 2 + 0.5 * np.log(0.5 / 1e-10))
    # JS: m = (0.375, 0.375, 0.25)
    m = np.array([0.375, 0.375, 0.25])
    expect = 0.5 * np.sum(p[:2] * np.log(p[:2] / m[:2])) + 0.5 * np.sum(q * np.log(q / m))
    assert js_divergence(p, q) == pytest.approx(expect)
    d = histogram_distances(p, q, normalize=False)
    assert d["intersection"] == pytest.approx(0.5)
    assert d["chi2_alt"] == pytest.approx(2 * (2 * 0.0625 / 0.75 + 0.25 / 0.5))


def test_identical_and_disjoint_histograms():
    p = normalize_histogram(np.array([3, 1, 0, 0]))
    q = normalize_histogram(np.array([0, 0, 2, 2]))
    same = histogram_distances(p, p, normalize=False)
    assert same["kl"] == 0 and same["js"] == 0 and same["chi2"] == 0 and same["bhattacharyya"] == 0
    assert same["intersection"] == pytest.approx(1.0) and same["correlation"] == pytest.approx(1.0)
    apart = histogram_distances(p, q, normalize=False)
    assert apart["js"] == pytest.approx(np.log(2))
    assert apart["bhattacharyya"] == pytest.approx(1.0)
    assert apart["intersection"] == 0.0


def test_js_symmetric_kl_not(data_dir):
    h1 = _cv_hist(_gray(data_dir / "skimage-data/camera.png"))
    h2 = _cv_hist(_gray(data_dir / "skimage-data/moon.png"))
    assert js_divergence(h1, h2) == pytest.approx(js_divergence(h2, h1))
    assert kl_divergence(h1, h2) != pytest.approx(kl_divergence(h2, h1))
    assert 0 < js_divergence(h1, h2) <= np.log(2)


def test_empty_histogram_is_zeros():
    assert np.all(normalize_histogram(np.zeros(8)) == 0)


def test_compiled_distances_equal_the_numpy_definitions():
    # histogram_distances runs one compiled pass; each distance also exists as a NumPy function
    from gpudiff.pair import _histograms as H

    rng = np.random.default_rng(7)
    for trial in range(200):
        n = int(rng.choice([1, 2, 7, 256, 1000]))
        a = rng.integers(0, 50, n) * (rng.random(n) < 0.7)
        b = a.copy() if trial % 40 == 0 else rng.integers(0, 50, n) * (rng.random(n) < 0.7)
        for norm in (True, False):
            got = H.histogram_distances(a, b, normalize=norm)
            p = H.normalize_histogram(a) if norm else a.astype(np.float64)
            q = H.normalize_histogram(b) if norm else b.astype(np.float64)
            for name, fn in H._FUNCS.items():
                assert got[name] == pytest.approx(fn(p, q), rel=1e-9, abs=1e-12), (name, n, norm)
