"""Invariants of gpudiff.sequence._background, checked on many random cases (hypothesis).

* Tiling is exact: for any tile shape, clean-up radius, colour mode and (subpixel) shifts, the
  tiles' masks stitched together equal the whole frame's mask, and the tiles' states equal the
  whole state, bit for bit.
* A sequence of one repeated frame never has foreground, whatever the options.
* ``mask_to_frame`` undoes the model's translation for whole-pixel shifts.
"""

from __future__ import annotations

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from gpudiff.sequence._background import (
    BackgroundModel,
    BackgroundOptions,
    background_subtract,
    mask_to_frame,
    plan_tiles,
)

_shift = st.floats(-6, 6, allow_nan=False).map(lambda v: round(v * 4) / 4)


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    hw=st.tuples(st.integers(6, 40), st.integers(6, 40)),
    tile=st.tuples(st.integers(1, 24), st.integers(1, 24)),
    radius=st.integers(0, 2),
    color=st.sampled_from(["gray", "channels"]),
    channels=st.sampled_from([0, 3]),
    shifts=st.lists(st.tuples(_shift, _shift), min_size=6, max_size=6),
)
def test_tiled_equals_whole(seed, hw, tile, radius, color, channels, shifts):
    rng = np.random.default_rng(seed)
    shape = (*hw, channels) if channels else hw
    frames = [rng.normal(120, 8, shape) for _ in shifts]
    for f in frames:  # objects: blocks of other intensities
        y, x = rng.integers(0, hw[0]), rng.integers(0, hw[1])
        f[y : y + 5, x : x + 7] += rng.choice([-80, 80])
    frames = [np.clip(f, 0, 255).astype(np.uint8) for f in frames]
    options = BackgroundOptions(init_frames=2, cleanup_radius=radius, color=color, k=2, min_std=0.01,
                                align=True)
    tiles = plan_tiles(shape, tile, halo=options.halo)
    whole = BackgroundModel(options=options)
    models = [BackgroundModel(options=options, tile=t) for t in tiles]
    for f, s in zip(frames, shifts):
        ref = whole.update(f, shift=s)
        out = np.zeros_like(ref)
        for t, m in zip(tiles, models):
            out[t.core_slices] = m.update(f, shift=s)
        np.testing.assert_array_equal(out, ref)
    for t, m in zip(tiles, models):
        for name in ("mean", "var", "count"):
            a, b = getattr(m.state, name)[t.crop], getattr(whole.state, name)[t.core_slices]
            np.testing.assert_array_equal(a, b)


@settings(max_examples=20, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    k=st.floats(0.1, 5),
    min_std=st.floats(0, 0.2),
    lr=st.floats(0.001, 1),
    n_init=st.integers(1, 4),
    radius=st.integers(0, 2),
    dtype=st.sampled_from([np.uint8, np.uint16, np.float32]),
)
def test_still_sequence_has_no_foreground(seed, k, min_std, lr, n_init, radius, dtype):
    rng = np.random.default_rng(seed)
    frame = (rng.random((12, 15)) * (1 if dtype == np.float32 else np.iinfo(dtype).max)).astype(dtype)
    options = BackgroundOptions(k=k, min_std=min_std, learning_rate=lr, init_frames=n_init,
                                cleanup_radius=radius)
    masks, fractions = background_subtract([frame] * 8, options=options)
    assert not masks.any() and (fractions == 0).all()


@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    dy=st.integers(-8, 8),
    dx=st.integers(-8, 8),
)
def test_mask_to_frame_inverts_the_translation(seed, dy, dx):
    rng = np.random.default_rng(seed)
    frame_mask = rng.random((20, 25)) < 0.3
    # the model sees frame[r - dy, c - dx] at [r, c]
    model_mask = np.zeros_like(frame_mask)
    H, W = frame_mask.shape
    for r in range(H):
        for c in range(W):
            if 0 <= r - dy < H and 0 <= c - dx < W:
                model_mask[r, c] = frame_mask[r - dy, c - dx]
    back = mask_to_frame(model_mask, (dy, dx))
    inside = np.zeros_like(frame_mask)
    inside[max(0, -dy) : H - max(0, dy), max(0, -dx) : W - max(0, dx)] = True
    np.testing.assert_array_equal(back, frame_mask & inside)


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    density=st.floats(0.2, 0.8),
    hw=st.tuples(st.integers(3, 30), st.integers(3, 30)),
    tile=st.tuples(st.integers(1, 12), st.integers(1, 12)),
    radius=st.integers(1, 2),
)
def test_cleanup_tiled_equals_whole_on_any_mask(seed, density, hw, tile, radius):
    # the raw mask is exactly the drawn pattern (a still background, then pattern * 200 on top), so
    # the clean-up meets arbitrary masks; its reach is 4 * radius and a smaller halo fails here
    pattern = np.random.default_rng(seed).random(hw) < density
    background = np.full(hw, 20, np.uint8)
    frame = (background + 200 * pattern).astype(np.uint8)
    options = BackgroundOptions(init_frames=1, cleanup_radius=radius, k=1, min_std=0.01)
    whole = BackgroundModel(options=options)
    whole.update(background)
    ref = whole.classify(frame)
    out = np.zeros_like(ref)
    for t in plan_tiles(hw, tile, halo=options.halo):
        m = BackgroundModel(options=options, tile=t)
        m.update(background)
        out[t.core_slices] = m.classify(frame)
    np.testing.assert_array_equal(out, ref)


@settings(max_examples=12, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    hw=st.tuples(st.integers(6, 30), st.integers(6, 30)),
    tile=st.tuples(st.integers(1, 16), st.integers(1, 16)),
    radius=st.integers(0, 1),
    model=st.sampled_from(["gaussian", "mixture"]),
    channels=st.sampled_from([0, 3]),
    shifts=st.lists(st.tuples(_shift, _shift), min_size=5, max_size=5),
)
def test_shadows_and_mixture_tiled_equal_whole(seed, hw, tile, radius, model, channels, shifts):
    # the shadow test and the mixture are pointwise too: tiles hold the whole frame's labels and state
    rng = np.random.default_rng(seed)
    shape = (*hw, channels) if channels else hw
    frames = [rng.normal(150, 6, shape) for _ in shifts]
    for f in frames:  # a shadow (same colour, 0.6 as bright) and an object
        y, x = rng.integers(0, hw[0]), rng.integers(0, hw[1])
        f[y : y + 6, x : x + 6] *= 0.6
        f[x % hw[0] : x % hw[0] + 4, y % hw[1] : y % hw[1] + 5] += rng.choice([-90, 90])
    frames = [np.clip(f, 0, 255).astype(np.uint8) for f in frames]
    options = BackgroundOptions(model=model, init_frames=2, cleanup_radius=radius, shadows=True,
                                k=2, min_std=0.01, align=True)
    tiles = plan_tiles(shape, tile, halo=options.halo)
    whole = BackgroundModel(options=options)
    models = [BackgroundModel(options=options, tile=t) for t in tiles]
    for f, s in zip(frames, shifts):
        ref = whole.update(f, shift=s, labels=True)[1]
        out = np.zeros_like(ref)
        for t, m in zip(tiles, models):
            out[t.core_slices] = m.update(f, shift=s, labels=True)[1]
        np.testing.assert_array_equal(out, ref)
