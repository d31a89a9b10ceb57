"""gpudiff.sequence._motion: one interface over the flow methods, and the forward-backward check.

The check is held to hand-computed fields (a translation and its inverse: trusted except where the
match leaves the frame; a wrong backward flow: trusted nowhere) and to a real image whose moving
copy covers part of it (an occluding patch): the pixels the check rejects are the occluded ones.
"""

from __future__ import annotations

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2")

from gpudiff.backend import to_host  # noqa: E402
from gpudiff.errors import ConfigError, InputError  # noqa: E402
from gpudiff.sequence._flow import optical_flow_lk  # noqa: E402
from gpudiff.sequence._motion import FLOW_METHODS, flow_consistency, flow_input, optical_flow  # noqa: E402


def _field(h, w, v, u, dtype=np.float32):
    f = np.empty((2, h, w), dtype=dtype)
    f[0], f[1] = v, u
    return f


def test_a_translation_and_its_inverse_are_trusted_where_the_match_stays_inside(xp):
    h, w = 20, 30
    fwd = xp.asarray(_field(h, w, 0.0, 3.0))
    bwd = xp.asarray(_field(h, w, 0.0, -3.0))
    valid = to_host(flow_consistency(fwd, bwd))
    assert valid.dtype == bool and valid.shape == (h, w)
    # column c matches c + 3: inside the frame for c <= w - 4
    assert valid[:, : w - 3].all()
    assert not valid[:, w - 3 :].any()


def test_a_backward_flow_that_does_not_return_is_trusted_nowhere(xp):
    fwd = xp.asarray(_field(16, 16, 1.0, 1.0))
    bwd = xp.asarray(_field(16, 16, 1.0, 1.0))  # goes on instead of coming back: |w + w_b|^2 = 8
    # tolerance 0.01 * (2 + 2) + 0.5 = 0.54 < 8
    assert not to_host(flow_consistency(fwd, bwd)).any()


def test_the_tolerance_is_sundarams_and_grows_with_the_motion(xp):
    # round-trip error 1 px (|w + w_b|^2 = 1): rejected at 2 px of motion (tolerance 0.58), accepted at
    # 10 px (0.01 * (100 + 81) + 0.5 = 2.31)
    small = flow_consistency(xp.asarray(_field(8, 40, 0.0, 2.0)), xp.asarray(_field(8, 40, 0.0, -1.0)))
    large = flow_consistency(xp.asarray(_field(8, 40, 0.0, 10.0)), xp.asarray(_field(8, 40, 0.0, -9.0)))
    assert not to_host(small)[:, :30].any()
    assert to_host(large)[:, :29].all()


def test_occluded_pixels_of_a_real_image_are_the_ones_rejected(data_dir):
    grey = cv2.imread(str(data_dir / "skimage-data" / "camera.png"), cv2.IMREAD_GRAYSCALE).astype(np.float32) / 255
    ref = grey[100:260, 100:300].copy()
    mov = grey[100:260, 96:296].copy()  # the scene moves right by 4 px: u = +4
    patch = grey[300:340, 300:340]
    mov[60:100, 80:120] = patch  # an object in the moving frame covers 40 x 40 px of the scene
    fwd = optical_flow_lk(ref, mov)
    bwd = optical_flow_lk(mov, ref)
    valid = flow_consistency(fwd, bwd)
    occluded = np.zeros(ref.shape, bool)
    occluded[60:100, 76:116] = True  # reference pixels whose match lies under the patch
    away = np.ones(ref.shape, bool)
    away[40:120, 56:140] = False  # well clear of the patch (the window of the flow spreads it)
    away[:, -12:] = False  # and of the border the scene leaves by
    # most occluded pixels are rejected; nearly every clear pixel is kept
    assert 1 - valid[occluded].mean() > 0.85  # measured 0.91
    assert valid[away].mean() > 0.95  # measured 0.97
    # and the flow is right where it is trusted
    err = np.hypot(fwd[0], fwd[1] - 4.0)
    assert np.median(err[valid & away]) < 0.1


def test_optical_flow_dispatches_to_the_named_method(xp):
    rng = np.random.default_rng(0)
    ref = rng.random((48, 64)).astype(np.float32)
    mov = np.roll(ref, 1, axis=1)
    a = to_host(optical_flow(xp.asarray(ref), xp.asarray(mov), method="lk", radius=5))
    b = to_host(optical_flow_lk(xp.asarray(ref), xp.asarray(mov), radius=5))
    np.testing.assert_array_equal(a, b)
    assert "lk" in FLOW_METHODS and "tvl1" in FLOW_METHODS


def test_bad_calls_are_one_line_errors():
    f = _field(8, 8, 0.0, 0.0)
    with pytest.raises(ConfigError, match="flow method 'farneback' is unknown: choose one of lk"):
        optical_flow(f[0], f[0], method="farneback")
    with pytest.raises(ConfigError, match="does not take attachment"):
        optical_flow(f[0], f[0], method="lk", attachment=3)
    with pytest.raises(InputError, match="differ: give both flows of one frame pair"):
        flow_consistency(f, f[:, :4])
    with pytest.raises(InputError, match=r"expected a float \(2, H, W\) field"):
        flow_consistency(f[0], f)


def test_a_colour_and_a_grey_copy_of_a_frame_get_the_same_flow(data_dir):
    grey = cv2.imread(str(data_dir / "skimage-data" / "camera.png"), cv2.IMREAD_GRAYSCALE)[:128, :160]
    moved = np.roll(grey, 2, axis=1)
    colour = np.repeat(grey[..., None], 3, axis=2)
    colour_moved = np.repeat(moved[..., None], 3, axis=2)
    np.testing.assert_array_equal(flow_input(grey), grey)  # integer grey: the methods scale it themselves
    np.testing.assert_allclose(flow_input(colour), grey / np.float32(255), rtol=1e-7)
    np.testing.assert_array_equal(
        optical_flow_lk(flow_input(colour), flow_input(colour_moved)), optical_flow_lk(grey, moved)
    )
