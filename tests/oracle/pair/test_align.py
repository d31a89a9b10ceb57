"""gpudiff.pair._align against scikit-image's phase_cross_correlation and OpenCV's phaseCorrelate on real
images, with shifts of known ground truth (np.roll, crop windows, Fourier shifts, and the masked
pairs of skimage-registration-shifts).

Conventions of the peers:

* scikit-image returns ``(dy, dx)`` registering moving onto reference - the same as gpudiff.
* ``cv2.phaseCorrelate(reference, moving)`` returns ``((x, y), response)``, the displacement of
  ``moving`` relative to ``reference``: gpudiff's ``(dy, dx) == (-y, -x)``. It needs float input
  and refines with a 5x5 weighted centroid, so its values are compared after rounding.
"""

from __future__ import annotations

import csv

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2")
skimage_registration = pytest.importorskip("skimage.registration")
skimage_io = pytest.importorskip("skimage.io")
scipy_ndimage = pytest.importorskip("scipy.ndimage")

from gpudiff.pair._align import phase_cross_correlation  # noqa: E402
from gpudiff.pair._overlap import register_overlap  # noqa: E402
from gpudiff.backend import to_host  # noqa: E402

sk_pcc = skimage_registration.phase_cross_correlation

IMAGES = ["camera.png", "brick.png", "coins.png", "moon.png", "text.png", "grass.png"]


def _grey(path) -> np.ndarray:
    im = skimage_io.imread(path)
    if im.ndim == 3:
        im = im[..., :3].mean(axis=2)
    return im


@pytest.fixture(scope="module")
def images(data_dir):
    return {name: _grey(data_dir / "skimage-data" / name) for name in IMAGES}


def _wrapped(d: int, n: int) -> int:
    """A circular shift as phase correlation reports it: in (-n/2, n/2] (n even) or [-n//2, n//2]."""
    d %= n
    return d - n if d > n // 2 else d


def _cv2_shift(reference, moving) -> tuple[float, float]:
    """OpenCV's estimate in gpudiff's convention (dy, dx)."""
    (x, y), _response = cv2.phaseCorrelate(
        np.ascontiguousarray(reference, dtype=np.float64), np.ascontiguousarray(moving, dtype=np.float64)
    )
    return -y, -x


# ----------------------------------------------------------------------------------------------
# integer shifts


@pytest.mark.parametrize("name", IMAGES)
@pytest.mark.parametrize("roll", [(3, -5), (-17, 40), (0, 1), (60, 0), (-100, -91)])
def test_roll_integer_matches_skimage_and_cv2(xp, images, name, roll):
    ref = images[name]
    mov = np.roll(ref, roll, axis=(0, 1))
    expected = (_wrapped(-roll[0], ref.shape[0]), _wrapped(-roll[1], ref.shape[1]))

    got = phase_cross_correlation(xp.asarray(ref), xp.asarray(mov))
    assert got.shift == expected
    assert got.method == "phase"
    assert got.confidence > 0.99  # circular shift: the phase-correlation peak is a delta

    sk, _, _ = sk_pcc(ref, mov)
    assert tuple(sk) == got.shift
    cv = _cv2_shift(ref, mov)
    assert tuple(_wrapped(round(v), n) for v, n in zip(cv, ref.shape)) == expected


@pytest.mark.parametrize("name", IMAGES)
@pytest.mark.parametrize("offset", [(7, -5), (-12, 20), (25, 31), (0, -33)])
def test_crop_window_integer_matches_skimage_and_cv2(xp, images, name, offset):
    im = images[name]
    h, w = im.shape[0] // 2, im.shape[1] // 2
    y0, x0 = im.shape[0] // 4, im.shape[1] // 4
    sy, sx = offset
    ref = im[y0 : y0 + h, x0 : x0 + w]
    mov = im[y0 + sy : y0 + sy + h, x0 + sx : x0 + sx + w]  # ref[r, c] == mov[r - sy, c - sx]

    got = phase_cross_correlation(xp.asarray(ref), xp.asarray(mov))
    assert got.shift == (sy, sx)
    assert got.confidence > 0.5

    sk, _, _ = sk_pcc(ref, mov)
    assert tuple(sk) == got.shift
    # OpenCV always refines (5x5 centroid); on non-circular shifts of small, sparse images such as
    # text.png that centroid drifts by up to ~0.6 px, so it is held to the neighbourhood only.
    np.testing.assert_allclose(_cv2_shift(ref, mov), (sy, sx), atol=0.75)

    ref_part, mov_part = register_overlap(xp.asarray(ref), xp.asarray(mov), got.shift)
    np.testing.assert_array_equal(to_host(ref_part), to_host(mov_part))


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32, np.float64])
def test_dtypes_agree_with_skimage(xp, images, dtype):
    im = images["camera.png"]
    scale = 257 if dtype == np.uint16 else 1
    ref = (im[:400, :300].astype(np.float64) * scale).astype(dtype)
    mov = (im[13:413, 9:309].astype(np.float64) * scale).astype(dtype)
    got = phase_cross_correlation(xp.asarray(ref), xp.asarray(mov))
    sk, _, _ = sk_pcc(ref, mov)
    assert got.shift == tuple(sk) == (13, 9)


# ----------------------------------------------------------------------------------------------
# subpixel


def _fourier_shifted(im: np.ndarray, shift) -> np.ndarray:
    spectrum = np.fft.fft2(im.astype(np.float64))
    return np.fft.ifft2(scipy_ndimage.fourier_shift(spectrum, shift)).real


@pytest.mark.parametrize("name", ["camera.png", "brick.png", "coins.png", "grass.png"])
@pytest.mark.parametrize("upsample", [20, 100])
@pytest.mark.parametrize("true_shift", [(1.25, -3.4), (0.5, 0.5), (-7.33, 2.71), (12.05, -0.95)])
def test_subpixel_fourier_shift(xp, images, name, upsample, true_shift):
    ref = images[name].astype(np.float64)
    mov = _fourier_shifted(ref, true_shift)  # mov[r] = ref[r - s]  ->  registering shift is -s
    expected = np.array([-true_shift[0], -true_shift[1]])

    got = phase_cross_correlation(xp.asarray(ref), xp.asarray(mov), upsample_factor=upsample)
    assert got.upsample_factor == upsample
    # on a grid of step 1/upsample; the estimate lies within half a step of the truth
    np.testing.assert_allclose(got.shift, expected, atol=1.0 / upsample + 1e-3)
    grid = np.array(got.shift) * upsample
    np.testing.assert_allclose(grid, np.round(grid), atol=1e-6)
    assert got.confidence > 0.8  # sub-pixel spread keeps >= ~0.85 of the peak energy in 3x3

    sk, _, _ = sk_pcc(ref, mov, upsample_factor=upsample)
    np.testing.assert_allclose(got.shift, sk, atol=1.0 / upsample + 1e-6)

    # OpenCV refines by a 5x5 weighted centroid of the peak, biased by up to ~0.35 px here: it
    # only agrees on the neighbourhood (one reason gpudiff uses the upsampled DFT).
    np.testing.assert_allclose(_cv2_shift(ref, mov), expected, atol=0.5)


def test_subpixel_integer_estimate_is_the_nearest_pixel(xp, images):
    ref = images["brick.png"].astype(np.float64)
    mov = _fourier_shifted(ref, (2.2, -4.7))
    got = phase_cross_correlation(xp.asarray(ref), xp.asarray(mov))
    sk, _, _ = sk_pcc(ref, mov)
    assert got.shift == tuple(sk) == (-2.0, 5.0)


def test_subpixel_crop_of_real_image(xp, data_dir):
    """Non-circular subpixel shift: a bilinear-free crop of a 2x-downsampled image."""
    im = _grey(data_dir / "skimage-data" / "camera.png").astype(np.float64)
    # Averaging 2x2 blocks of a one-pixel-offset window gives a half-pixel shift at half size.
    a = im[:480, :480].reshape(240, 2, 240, 2).mean(axis=(1, 3))
    b = im[1:481, 3:483].reshape(240, 2, 240, 2).mean(axis=(1, 3))  # b[r] = a[r + 0.5, c + 1.5]
    got = phase_cross_correlation(xp.asarray(a), xp.asarray(b), upsample_factor=20)
    sk, _, _ = sk_pcc(a, b, upsample_factor=20)
    np.testing.assert_allclose(got.shift, (0.5, 1.5), atol=0.1)
    np.testing.assert_allclose(got.shift, sk, atol=0.05 + 1e-6)


# ----------------------------------------------------------------------------------------------
# masked (Padfield) on the pairs with invalid zero borders


def _shift_pairs(data_dir):
    folder = data_dir / "skimage-registration-shifts"
    with open(folder / "shifts.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 3
    out = []
    for row in rows:
        ref = skimage_io.imread(folder / row["reference_image"])
        mov = skimage_io.imread(folder / row["moving_image"])
        expected = (float(row["expected_shift_row"]), float(row["expected_shift_col"]))
        out.append((row["reference_image"], ref, mov, expected))
    return out


@pytest.fixture(scope="module")
def shift_pairs(data_dir):
    return _shift_pairs(data_dir)


def test_masked_pairs_exact(xp, shift_pairs):
    for name, ref, mov, expected in shift_pairs:
        got = phase_cross_correlation(
            xp.asarray(ref),
            xp.asarray(mov),
            reference_mask=xp.asarray(ref != 0),
            moving_mask=xp.asarray(mov != 0),
            overlap_ratio=0.1,
        )
        assert got.shift == expected, name
        assert got.method == "masked_ncc"
        assert got.upsample_factor == 1
        assert got.confidence > 0.99, name
        sk, _, _ = sk_pcc(ref, mov, reference_mask=ref != 0, moving_mask=mov != 0, overlap_ratio=0.1)
        assert tuple(sk) == got.shift, name
        # the registered valid pixels coincide
        rp, mp = register_overlap(ref, mov, got.shift)
        both = (rp != 0) & (mp != 0)
        assert both.sum() > 1000
        np.testing.assert_array_equal(rp[both], mp[both])


def test_masked_same_as_skimage_at_default_overlap_ratio(xp, shift_pairs):
    """At overlap_ratio=0.3 both libraries pick the same (here partly wrong) shifts."""
    for name, ref, mov, _expected in shift_pairs:
        got = phase_cross_correlation(
            xp.asarray(ref), xp.asarray(mov), reference_mask=xp.asarray(ref != 0), moving_mask=xp.asarray(mov != 0)
        )
        sk, _, _ = sk_pcc(ref, mov, reference_mask=ref != 0, moving_mask=mov != 0)
        assert tuple(sk) == got.shift, name


def test_masked_one_mask_stands_for_both(xp, shift_pairs):
    name, ref, mov, expected = shift_pairs[0]
    both = phase_cross_correlation(
        xp.asarray(ref), xp.asarray(mov), reference_mask=xp.asarray(ref != 0), moving_mask=xp.asarray(ref != 0),
        overlap_ratio=0.1,
    )
    one = phase_cross_correlation(
        xp.asarray(ref), xp.asarray(mov), reference_mask=xp.asarray(ref != 0), overlap_ratio=0.1
    )
    assert one == both


def test_unmasked_correlation_fails_on_the_masked_pairs(xp, shift_pairs):
    """The zero borders fool plain phase correlation (gpudiff's and scikit-image's alike) on the
    +-130 pairs: the masked mode is what gets them right, not the data being easy."""
    wrong = 0
    for name, ref, mov, expected in shift_pairs:
        got = phase_cross_correlation(xp.asarray(ref), xp.asarray(mov))
        sk, _, _ = sk_pcc(ref, mov)
        assert tuple(sk) == got.shift, name
        if "130" in name:
            assert got.shift != expected, name
        wrong += got.shift != expected
    assert wrong >= 2


def test_masked_recovers_roll_with_hidden_region(xp, images):
    """A masked circular roll of a real image: invalid pixels filled with garbage are ignored."""
    ref = images["coins.png"].astype(np.float32)
    mov = np.roll(ref, (21, -34), axis=(0, 1))
    rng = np.random.default_rng(5)
    mov_mask = np.ones(mov.shape, bool)
    mov_mask[:120, :] = False
    mov = np.where(mov_mask, mov, rng.uniform(0, 255, mov.shape).astype(np.float32))
    got = phase_cross_correlation(
        xp.asarray(ref), xp.asarray(mov), reference_mask=xp.ones(ref.shape, bool), moving_mask=xp.asarray(mov_mask)
    )
    # A circular roll is only a translation away from the wrapped seams; the masked NCC over the
    # (non-circular) overlap finds the roll itself.
    assert got.shift == (-21, 34)
    assert got.confidence > 0.9
