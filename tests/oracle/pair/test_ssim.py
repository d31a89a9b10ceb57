"""SSIM against scikit-image (Gaussian weights, Wang et al. 2004 settings) on real images."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy import ndimage as ndi

from gpudiff.backend import to_host
from gpudiff.errors import ConfigError, InputError
from gpudiff.pair._ssim import gaussian_window, numba_available, ssim_map, structural_similarity

cv2 = pytest.importorskip("cv2")
skm = pytest.importorskip("skimage.metrics")

IMPLS = [
    "reference",
    pytest.param("numba", marks=pytest.mark.skipif(not numba_available(), reason="no numba")),
]


def skimage_ssim(a, b, data_range, **kw):
    kw.setdefault("sigma", 1.5)
    if a.ndim == 3:
        kw["channel_axis"] = -1
    return float(
        skm.structural_similarity(
            a, b, gaussian_weights=True, use_sample_covariance=False, data_range=data_range, **kw
        )
    )


def _rgb(path):
    return np.ascontiguousarray(cv2.imread(str(path), cv2.IMREAD_COLOR)[..., ::-1])


@pytest.fixture(scope="module")
def camera(data_dir):
    return cv2.imread(str(data_dir / "skimage-data" / "camera.png"), cv2.IMREAD_GRAYSCALE)


@pytest.fixture(scope="module")
def blurred_camera(camera):
    return np.clip(np.rint(ndi.gaussian_filter(camera.astype(np.float64), 2.0)), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def astronaut(data_dir):
    return _rgb(data_dir / "skimage-data" / "astronaut.png")


@pytest.fixture(scope="module")
def noisy_astronaut(astronaut):
    rng = np.random.default_rng(7)
    return np.clip(astronaut + rng.normal(0, 20, astronaut.shape), 0, 255).astype(np.uint8)


def _ssim(xp, a, b, **kw):
    return structural_similarity(xp.asarray(a), xp.asarray(b), **kw)


def _impl_for(xp, impl):
    if xp is not np and impl == "numba":
        pytest.skip("numba runs on NumPy arrays")
    return impl


@pytest.mark.parametrize("impl", IMPLS)
def test_camera_vs_blurred_camera(xp, impl, camera, blurred_camera):
    got = _ssim(xp, camera, blurred_camera, data_range=255, impl=_impl_for(xp, impl))
    expected = skimage_ssim(camera, blurred_camera, 255)
    assert 0.3 < expected < 0.95
    assert got == pytest.approx(expected, abs=1e-4)


@pytest.mark.parametrize("impl", IMPLS)
def test_rgb_astronaut_vs_noisy_copy(xp, impl, astronaut, noisy_astronaut):
    got = _ssim(xp, astronaut, noisy_astronaut, data_range=255, impl=_impl_for(xp, impl))
    assert got == pytest.approx(skimage_ssim(astronaut, noisy_astronaut, 255), abs=1e-4)


@pytest.mark.parametrize("impl", IMPLS)
def test_uint16_scaled(xp, impl, camera, blurred_camera):
    a = camera.astype(np.uint16) * 257
    b = blurred_camera.astype(np.uint16) * 257
    got = _ssim(xp, a, b, data_range=65535, impl=_impl_for(xp, impl))
    assert got == pytest.approx(skimage_ssim(a, b, 65535), abs=1e-4)
    # SSIM is scale-invariant when data_range scales with the data
    assert got == pytest.approx(skimage_ssim(camera, blurred_camera, 255), abs=1e-4)


@pytest.mark.parametrize("impl", IMPLS)
def test_float32_unit_range(xp, impl, data_dir):
    pairs = data_dir / "opencv-samples" / "pairs"
    a = cv2.imread(str(pairs / "leuvenA.jpg"), cv2.IMREAD_GRAYSCALE).astype(np.float32) / 255
    b = cv2.imread(str(pairs / "leuvenB.jpg"), cv2.IMREAD_GRAYSCALE).astype(np.float32) / 255
    got = _ssim(xp, a, b, data_range=1.0, impl=_impl_for(xp, impl))
    assert got == pytest.approx(skimage_ssim(a, b, 1.0), abs=1e-4)


@pytest.mark.parametrize("impl", IMPLS)
def test_non_square_and_non_contiguous(xp, impl, astronaut, noisy_astronaut):
    a = astronaut[17:317, 5:455]  # 300 x 450 views
    b = noisy_astronaut[17:317, 5:455]
    impl = _impl_for(xp, impl)
    assert _ssim(xp, a, b, data_range=255, impl=impl) == pytest.approx(skimage_ssim(a, b, 255), abs=1e-4)
    assert _ssim(xp, a[..., 1], b[..., 1], data_range=255, impl=impl) == pytest.approx(
        skimage_ssim(a[..., 1], b[..., 1], 255), abs=1e-4
    )


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("sigma", [0.8, 1.5, 2.5])
def test_other_sigmas(xp, impl, sigma, camera, blurred_camera):
    a, b = camera[:200, :333], blurred_camera[:200, :333]
    got = _ssim(xp, a, b, data_range=255, sigma=sigma, impl=_impl_for(xp, impl))
    assert got == pytest.approx(skimage_ssim(a, b, 255, sigma=sigma), abs=1e-4)


@pytest.mark.parametrize("impl", IMPLS)
def test_identical_images(xp, impl, camera, astronaut):
    impl = _impl_for(xp, impl)
    assert _ssim(xp, camera, camera, data_range=255, impl=impl) == pytest.approx(1.0, abs=1e-7)
    assert _ssim(xp, astronaut, astronaut, data_range=255, impl=impl) == pytest.approx(1.0, abs=1e-7)


@pytest.mark.parametrize("impl", IMPLS)
def test_smallest_image_with_an_interior_matches_skimage(xp, impl, camera, blurred_camera):
    win = gaussian_window(1.5).size
    assert win == 11
    a, b = camera[200 : 200 + win, 300 : 300 + win + 4], blurred_camera[200 : 200 + win, 300 : 300 + win + 4]
    got = _ssim(xp, a, b, data_range=255, impl=_impl_for(xp, impl))
    assert got == pytest.approx(skimage_ssim(a, b, 255), abs=1e-4)


def _global_ssim(a, b, L, k1=0.01, k2=0.03):
    a = a.astype(np.float64)
    b = b.astype(np.float64)
    c1, c2 = (k1 * L) ** 2, (k2 * L) ** 2
    mx, my = a.mean(), b.mean()
    vx, vy = a.var(), b.var()
    cxy = ((a - mx) * (b - my)).mean()
    return (2 * mx * my + c1) * (2 * cxy + c2) / ((mx**2 + my**2 + c1) * (vx + vy + c2))


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("shape", [(1, 1), (7, 7), (10, 10), (10, 40), (40, 3)])
def test_images_smaller_than_the_window_use_one_global_window(xp, impl, shape, camera, blurred_camera):
    h, w = shape
    a, b = camera[250 : 250 + h, 250 : 250 + w], blurred_camera[250 : 250 + h, 250 : 250 + w]
    impl = _impl_for(xp, impl)
    got = _ssim(xp, a, b, data_range=255, impl=impl)
    assert got == pytest.approx(_global_ssim(a, b, 255.0), rel=1e-12, abs=1e-12)
    assert -1.0 <= got <= 1.0
    assert _ssim(xp, a, a, data_range=255, impl=impl) == pytest.approx(1.0, abs=1e-12)
    rgb = np.stack([a, b, a], axis=-1)
    expected = np.mean([_global_ssim(rgb[..., c], rgb[..., 2 - c], 255.0) for c in range(3)])
    assert _ssim(xp, rgb, rgb[..., ::-1], data_range=255, impl=impl) == pytest.approx(expected, abs=1e-12)


@pytest.mark.skipif(not numba_available(), reason="no numba")
def test_numba_and_reference_agree(camera, blurred_camera, astronaut, noisy_astronaut, data_dir):
    cases = [
        (camera, blurred_camera, 255),
        (astronaut, noisy_astronaut, 255),
        (astronaut[3:250, 7:480, 0], noisy_astronaut[100:347, 20:493, 2], 255),
        (camera.astype(np.float32) / 255, blurred_camera.astype(np.float32) / 255, 1.0),
        (camera.astype(np.uint16) * 257, blurred_camera.astype(np.uint16) * 257, 65535),
    ]
    import tifffile

    stack = tifffile.imread(data_dir / "imageio-standard" / "calcium_imaging.tif", key=[0, 10])
    cases.append((stack[0], stack[1], float(stack.max()) - float(stack.min())))
    for a, b, L in cases:
        ref = structural_similarity(a, b, data_range=L, impl="reference")
        fused = structural_similarity(a, b, data_range=L, impl="numba")
        assert fused == pytest.approx(ref, abs=1e-6)
        # float64 throughout; skimage itself computes float32 input in float32
        assert fused == pytest.approx(skimage_ssim(a, b, L), abs=1e-4 if a.dtype == np.float32 else 1e-9)


@pytest.mark.skipif(not numba_available(), reason="no numba")
def test_numba_result_does_not_depend_on_threads(astronaut, noisy_astronaut):
    import numba

    a, b = astronaut[..., 0], noisy_astronaut[..., 0]
    n = numba.get_num_threads()
    try:
        many = structural_similarity(a, b, data_range=255, impl="numba")
        numba.set_num_threads(1)
        one = structural_similarity(a, b, data_range=255, impl="numba")
    finally:
        numba.set_num_threads(n)
    assert one == many


def test_auto_is_numba_on_numpy_when_available(camera, blurred_camera):
    auto = structural_similarity(camera, blurred_camera, data_range=255)
    expected = "numba" if numba_available() else "reference"
    assert auto == structural_similarity(camera, blurred_camera, data_range=255, impl=expected)


def test_ssim_map_is_skimages_full_map(xp, camera, blurred_camera, astronaut, noisy_astronaut):
    smap = np.asarray(to_host(ssim_map(xp.asarray(camera), xp.asarray(blurred_camera), data_range=255)))
    _, full = skm.structural_similarity(
        camera,
        blurred_camera,
        gaussian_weights=True,
        sigma=1.5,
        use_sample_covariance=False,
        data_range=255,
        full=True,
    )
    assert smap.shape == camera.shape and smap.dtype == np.float32
    np.testing.assert_allclose(smap, full, atol=1e-4)
    r = 5
    assert smap[r:-r, r:-r].mean(dtype=np.float64) == pytest.approx(
        structural_similarity(camera, blurred_camera, data_range=255), abs=1e-6
    )
    cmap = np.asarray(to_host(ssim_map(xp.asarray(astronaut), xp.asarray(noisy_astronaut), data_range=255)))
    assert cmap.shape == astronaut.shape
    _, full = skm.structural_similarity(
        astronaut,
        noisy_astronaut,
        gaussian_weights=True,
        sigma=1.5,
        use_sample_covariance=False,
        data_range=255,
        full=True,
        channel_axis=-1,
    )
    np.testing.assert_allclose(cmap, full, atol=1e-4)


def test_symmetric(camera, blurred_camera):
    assert structural_similarity(camera, blurred_camera, data_range=255) == pytest.approx(
        structural_similarity(blurred_camera, camera, data_range=255), abs=1e-12
    )


def test_errors(xp, camera):
    a = xp.asarray(camera)
    with pytest.raises(InputError, match=r"\(512, 512\) vs \(511, 512\)"):
        structural_similarity(a, a[1:], data_range=255)
    with pytest.raises(InputError):
        structural_similarity(a[0], a[0], data_range=255)
    with pytest.raises(InputError):
        structural_similarity(a[:0], a[:0], data_range=255)
    for bad in (0, -1.0, float("nan"), float("inf"), None):
        with pytest.raises(ConfigError):
            structural_similarity(a, a, data_range=bad)
    with pytest.raises(ConfigError):
        structural_similarity(a, a, data_range=255, sigma=0)
    with pytest.raises(ConfigError):
        structural_similarity(a, a, data_range=255, impl="opencv")


def test_works_without_numba(monkeypatch, camera, blurred_camera):
    from gpudiff.pair import _ssim as ssim_module

    with_numba = structural_similarity(camera, blurred_camera, data_range=255)
    monkeypatch.setattr(ssim_module, "numba", None)
    assert not ssim_module.numba_available()
    without = structural_similarity(camera, blurred_camera, data_range=255)
    assert without == pytest.approx(with_numba, abs=1e-6)
    with pytest.raises(ConfigError, match="numba"):
        structural_similarity(camera, blurred_camera, data_range=255, impl="numba")


@st.composite
def _pairs(draw):
    h = draw(st.integers(1, 40))
    w = draw(st.integers(1, 40))
    a = draw(arrays(np.uint8, (h, w)))
    b = draw(arrays(np.uint8, (h, w)))
    return a, b


@settings(max_examples=40, deadline=None)
@given(_pairs())
def test_properties(pair):
    a, b = pair
    s = structural_similarity(a, b, data_range=255)
    assert -1.0 - 1e-12 <= s <= 1.0 + 1e-12
    assert s == pytest.approx(structural_similarity(b, a, data_range=255), abs=1e-12)
    assert structural_similarity(a, a, data_range=255) == pytest.approx(1.0, abs=1e-12)
    assert s == pytest.approx(structural_similarity(a, b, data_range=255, impl="reference"), abs=1e-6)
    if min(a.shape) >= 11:
        assert s == pytest.approx(skimage_ssim(a, b, 255), abs=1e-9)
