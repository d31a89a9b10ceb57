"""``compare`` end to end against independent oracles (OpenCV, scikit-image, NumPy) on real images."""

from __future__ import annotations

import json

import numpy as np
import pytest

import gpudiff
from gpudiff.cli._main import main

cv2 = pytest.importorskip("cv2")
skm = pytest.importorskip("skimage.metrics")


def _gray(path):
    img = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    assert img is not None, path
    return img


def _rgb(path):
    return cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


@pytest.fixture(scope="module")
def camera_pair(data_dir):
    a = _gray(data_dir / "skimage-data/camera.png")
    b = cv2.GaussianBlur(a, (7, 7), 1.5)
    return a, b


def test_every_metric_equals_its_oracle_uint8(xp, camera_pair):
    a, b = camera_pair
    r = gpudiff.compare(xp.asarray(a), xp.asarray(b))
    n = a.size
    assert r.pixels == n
    assert r.manhattan == pytest.approx(cv2.norm(a, b, cv2.NORM_L1), rel=1e-12)
    assert r.manhattan_per_pixel == pytest.approx(cv2.norm(a, b, cv2.NORM_L1) / n, rel=1e-12)
    assert r.zero_norm == cv2.countNonZero(cv2.absdiff(a, b))
    assert r.zero_norm_per_pixel == pytest.approx(cv2.countNonZero(cv2.absdiff(a, b)) / n)
    assert r.mse == pytest.approx(skm.mean_squared_error(a, b), rel=1e-12)
    assert r.rmse == pytest.approx(cv2.norm(a, b, cv2.NORM_L2) / np.sqrt(n), rel=1e-9)
    assert r.psnr == pytest.approx(skm.peak_signal_noise_ratio(a, b, data_range=255), rel=1e-9)
    # scikit-image's NRMSE (euclidean) is RMSE / sqrt(mean(reference^2))
    nrmse = skm.normalized_root_mse(a, b, normalization="euclidean")
    assert r.rmse / np.sqrt(np.mean(a.astype(np.float64) ** 2)) == pytest.approx(nrmse, rel=1e-9)
    assert r.max_abs == cv2.norm(a, b, cv2.NORM_INF)
    assert r.ncc == pytest.approx(np.corrcoef(a.ravel(), b.ravel())[0, 1], rel=1e-9)
    ssim = skm.structural_similarity(
        a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255
    )
    assert r.ssim == pytest.approx(ssim, abs=1e-4)
    h1 = cv2.calcHist([a], [0], None, [256], [0, 256]).reshape(-1)
    h2 = cv2.calcHist([b], [0], None, [256], [0, 256]).reshape(-1)
    h1, h2 = h1 / h1.sum(), h2 / h2.sum()
    for name, method in [("kl", cv2.HISTCMP_KL_DIV), ("chi2", cv2.HISTCMP_CHISQR),
                         ("chi2_alt", cv2.HISTCMP_CHISQR_ALT), ("intersection", cv2.HISTCMP_INTERSECT),
                         ("bhattacharyya", cv2.HISTCMP_BHATTACHARYYA), ("correlation", cv2.HISTCMP_CORREL)]:
        assert r.histogram[name] == pytest.approx(cv2.compareHist(h1, h2, method), rel=1e-4, abs=1e-6), name
    assert r.shift is None and r.confidence is None


def test_original_answer_worked_example_image_against_itself(data_dir, capsys):
    path = str(data_dir / "skimage-data/camera.png")
    assert main(["compare", path, path, "--backend", "numpy"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "Manhattan norm: 0.0 / per pixel: 0.0"
    assert out[1] == "Zero norm: 0 / per pixel: 0.0"


def test_minmax_normalised_blurred_copy_differs_almost_everywhere(data_dir, tmp_path):
    # The original answer: gray (mean of channels), minmax to [0, 255], then norms. Blurring changes
    # almost every pixel of a photograph by a fraction of a grey level: the zero norm per pixel ~ 1.
    rgb = cv2.imread(str(data_dir / "skimage-data/hubble_deep_field.jpg"), cv2.IMREAD_COLOR)
    one, blurred = tmp_path / "one.jpg", tmp_path / "one-blurred.jpg"
    cv2.imwrite(str(one), rgb)
    cv2.imwrite(str(blurred), cv2.GaussianBlur(rgb, (5, 5), 0))
    r = gpudiff.compare(str(one), str(blurred), normalize="minmax", backend="numpy")
    # oracle: the answer's recipe in NumPy on the same decoded pixels
    a = cv2.cvtColor(cv2.imread(str(one)), cv2.COLOR_BGR2RGB).astype(np.float64).mean(axis=-1)
    b = cv2.cvtColor(cv2.imread(str(blurred)), cv2.COLOR_BGR2RGB).astype(np.float64).mean(axis=-1)
    a = (a - a.min()) * 255 / (a.max() - a.min())
    b = (b - b.min()) * 255 / (b.max() - b.min())
    d = a - b
    assert r.manhattan == pytest.approx(np.abs(d).sum(), rel=1e-4)
    assert r.zero_norm == pytest.approx(np.count_nonzero(d), rel=1e-3)
    assert r.zero_norm_per_pixel > 0.9


def test_rgb_sums_over_channels_and_reports_each(xp, data_dir):
    a = _rgb(data_dir / "skimage-data/astronaut.png")
    noise = np.random.default_rng(1).integers(-3, 4, a.shape)
    b = np.clip(a.astype(int) + noise, 0, 255).astype(np.uint8)
    r = gpudiff.compare(xp.asarray(a), xp.asarray(b), color="rgb")
    assert r.manhattan == pytest.approx(cv2.norm(a, b, cv2.NORM_L1), rel=1e-12)
    assert r.manhattan_per_pixel == pytest.approx(cv2.norm(a, b, cv2.NORM_L1) / (a.shape[0] * a.shape[1]))
    assert r.zero_norm == int(np.count_nonzero(cv2.absdiff(a, b).max(axis=-1)))
    assert r.mse == pytest.approx(skm.mean_squared_error(a, b), rel=1e-12)
    assert r.max_abs == 3
    ssim = skm.structural_similarity(a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                     data_range=255, channel_axis=-1)
    assert r.ssim == pytest.approx(ssim, abs=1e-4)
    assert len(r.channels) == 3
    for c in range(3):
        assert r.channels[c]["manhattan"] == pytest.approx(cv2.norm(a[..., c], b[..., c], cv2.NORM_L1))
        assert r.channels[c]["zero_norm"] == cv2.countNonZero(cv2.absdiff(a[..., c], b[..., c]))


def test_gray_is_mean_of_channels_luma_is_bt601(data_dir):
    a = _rgb(data_dir / "skimage-data/coffee.png")
    b = _rgb(data_dir / "skimage-data/chelsea.png")
    h = min(a.shape[0], b.shape[0]); w = min(a.shape[1], b.shape[1])
    a, b = a[:h, :w], b[:h, :w]
    gray = gpudiff.compare(a, b, backend="numpy", metrics="manhattan")
    ga = a.astype(np.float64).mean(-1); gb = b.astype(np.float64).mean(-1)
    assert gray.manhattan == pytest.approx(np.abs(ga - gb).sum(), rel=1e-5)
    luma = gpudiff.compare(a, b, backend="numpy", metrics="manhattan", color="luma")
    wts = np.array([0.299, 0.587, 0.114])
    assert luma.manhattan == pytest.approx(np.abs(a @ wts - b @ wts).sum(), rel=1e-5)


def test_alignment_recovers_shift_and_compares_the_overlap(xp, data_dir):
    a = _gray(data_dir / "skimage-data/camera.png")
    b = np.roll(a, (3, -5), axis=(0, 1))
    r = gpudiff.compare(xp.asarray(a), xp.asarray(b), align=True)
    assert r.shift == (-3.0, 5.0)  # scikit-image's phase_cross_correlation convention
    assert r.confidence > 0.5
    # registered: the overlap of a and b is identical (np.roll wraps: the wrapped band is outside it)
    assert r.manhattan == 0 and r.zero_norm == 0
    assert r.pixels == (512 - 3) * (512 - 5)
    # unaligned, everything looks different
    plain = gpudiff.compare(xp.asarray(a), xp.asarray(b))
    assert plain.zero_norm_per_pixel > 0.5


def test_aligned_metrics_equal_opencv_on_the_overlap(data_dir):
    a = _gray(data_dir / "skimage-data/camera.png")
    noisy = np.clip(a.astype(int) + np.random.default_rng(0).integers(-2, 3, a.shape), 0, 255).astype(np.uint8)
    b = np.zeros_like(a)
    b[7:, :-4] = noisy[:-7, 4:]  # moving shows the scene 7 rows down, 4 columns left
    r = gpudiff.compare(a, b, align=True, backend="numpy")
    assert r.shift == (-7.0, 4.0)
    ov_a, ov_b = a[:-7, 4:], b[7:, :-4]
    assert r.pixels == ov_a.size
    assert r.manhattan == pytest.approx(cv2.norm(ov_a, ov_b, cv2.NORM_L1))
    assert r.zero_norm == cv2.countNonZero(cv2.absdiff(ov_a, ov_b))
    assert r.max_abs == 2


def test_json_output_has_every_key(data_dir, capsys, tmp_path):
    a = str(data_dir / "skimage-data/camera.png")
    b = tmp_path / "b.png"
    cv2.imwrite(str(b), cv2.GaussianBlur(_gray(data_dir / "skimage-data/camera.png"), (5, 5), 1.0))
    heat = tmp_path / "heat.png"
    assert main(["compare", a, str(b), "--json", "--backend", "numpy", "--diff-map", str(heat)]) == 0
    d = json.loads(capsys.readouterr().out)
    for key in ["manhattan", "manhattan_per_pixel", "zero_norm", "zero_norm_per_pixel", "mse", "rmse",
                "psnr", "max_abs", "ncc", "ssim", "histogram", "shift", "confidence", "pixels", "backend"]:
        assert key in d, key
    assert set(d["histogram"]) == {"kl", "js", "chi2", "chi2_alt", "bhattacharyya", "intersection",
                                   "correlation"}
    assert d["backend"] == "numpy" and d["shift"] is None and d["pixels"] == 512 * 512
    hm = cv2.imread(str(heat), cv2.IMREAD_COLOR)
    assert hm.shape == (512, 512, 3)
    # bright where the blur changed the most (edges), dark where it changed nothing
    diff = cv2.absdiff(_gray(data_dir / "skimage-data/camera.png"), _gray(b)).astype(float)
    lum = hm.astype(float).mean(-1)
    assert np.corrcoef(diff.ravel(), lum.ravel())[0, 1] > 0.8


def test_identical_images_psnr_is_infinite_and_json_null(data_dir, capsys):
    p = str(data_dir / "skimage-data/coins.png")
    r = gpudiff.compare(p, p, backend="numpy")
    assert r.psnr == float("inf") and r.mse == 0 and r.ssim == pytest.approx(1.0)
    assert r.ncc == pytest.approx(1.0) and r.histogram["kl"] == 0
    main(["compare", p, p, "--json", "--backend", "numpy"])
    assert json.loads(capsys.readouterr().out)["psnr"] is None


def test_metrics_subset_computes_only_those(camera_pair):
    a, b = camera_pair
    r = gpudiff.compare(a, b, metrics="manhattan,zero_norm", backend="numpy")
    assert r.manhattan is not None and r.zero_norm is not None
    assert r.ssim is None and r.histogram is None and r.mse is None and r.ncc is None


def test_constant_and_tiny_images_have_defined_results():
    c = np.full((5, 7), 9, np.uint8)
    d = np.full((5, 7), 9, np.uint8)
    r = gpudiff.compare(c, d, backend="numpy")
    assert r.manhattan == 0 and r.ncc == 1.0 and r.psnr == float("inf")
    e = np.full((5, 7), 10, np.uint8)
    r = gpudiff.compare(c, e, backend="numpy")
    assert r.manhattan == 35 and r.zero_norm == 35 and r.max_abs == 1 and r.ncc == 1.0
    one = gpudiff.compare(np.array([[3]], np.uint8), np.array([[5]], np.uint8), backend="numpy")
    assert one.manhattan == 2 and one.pixels == 1 and one.mse == 4
    assert np.isfinite(one.ssim)


def test_tolerance_counts_only_larger_differences(camera_pair):
    a, b = camera_pair
    d = cv2.absdiff(a, b)
    r = gpudiff.compare(a, b, tolerance=4, metrics="zero_norm", backend="numpy")
    assert r.zero_norm == int(np.count_nonzero(d > 4))


@pytest.mark.gpu
def test_numbers_identical_on_both_backends(camera_pair, cp, gpu_backend):
    a, b = camera_pair
    for kw in [{}, {"align": True, "upsample": 10}, {"blur": 1.0, "edges": "sobel"}, {"normalize": "zscore"}]:
        rn = gpudiff.compare(a, b, backend="numpy", **kw).to_dict()
        rc = gpudiff.compare(cp.asarray(a), cp.asarray(b), backend=gpu_backend, **kw).to_dict()
        for k, v in rn.items():
            if isinstance(v, float):
                assert rc[k] == pytest.approx(v, rel=1e-5, abs=1e-6), (kw, k)
