"""The sample-based model of :mod:`._background` (``BackgroundOptions(model='samples')``), after
ViBe (Barnich and Van Droogenbroeck, IEEE TIP 20(6), 2011): per pixel a set of past values; a
pixel is background when enough of them are close to it; background values replace a random
sample now and then and spread into the neighbours' sets.

Elementwise over pixels (short Python loops over the samples and the 8 neighbours), float32
state. The random choices come from a counter-based hash of (seed, frame, pixel, purpose), not
from a stateful generator, so NumPy and CuPy draw the same numbers. ViBe's *push* (a pixel writes
into a random neighbour's set, where two pixels may write one slot) is run as the equivalent
*pull* (a pixel takes a random background neighbour's value): no write conflicts, the same
result on any device. A pixel's state depends on its neighbours' through time, so a tile with a
fixed halo cannot hold the whole frame's values: this model refuses tiles.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ._background_shadows import channel_sum

__all__ = ["SampleState"]

# the 8 neighbours (the 3 x 3 block row by row, without its centre)
_OFFSETS = ((-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1))

# purposes of a random draw (the hash's stream)
_OWN, _OWN_SLOT, _NEIGHBOUR, _WHICH, _NEIGHBOUR_SLOT, _INIT = 1, 2, 3, 4, 5, 16


@dataclass
class SampleState:
    """The sample sets of one window, as ``xp`` arrays.

    Attributes
    ----------
    samples : float32 (N, h, w) or (N, h, w, C)
        Past values per pixel, in units of the data range.
    count : int32 (h, w)
        Valid frames seen, saturating at ``init_frames``; classified once equal.
    pixel : uint32 (h, w)
        The pixel's index in the frame (row-major): what the random draws hash.
    frames : int
        Frames given to ``update``.
    """

    samples: Any
    count: Any
    pixel: Any
    frames: int = 0


def start(shape, chans: int, frame_width: int, origin, options, xp) -> SampleState:
    h, w = shape
    N = options.samples
    sshape = (N, h, w, chans) if chans else (N, h, w)
    rows = xp.arange(h, dtype=xp.uint32)[:, None] + xp.uint32(origin[0])
    cols = xp.arange(w, dtype=xp.uint32)[None, :] + xp.uint32(origin[1])
    return SampleState(
        samples=xp.zeros(sshape, dtype=xp.float32),
        count=xp.zeros((h, w), dtype=xp.int32),
        pixel=rows * xp.uint32(frame_width) + cols,
    )


def _draw(st: SampleState, stream: int, seed: int, xp):
    """A uint32 per pixel, a hash of (seed, frame, pixel, stream) (the "lowbias32" finaliser of
    C. Wellons, 2018, over a Weyl-sequence mix of the counters)."""
    u = xp.uint32
    key = (seed * 0x27D4EB2F + st.frames * 0x85EBCA77 + stream * 0xC2B2AE3D) & 0xFFFFFFFF
    h = st.pixel * u(0x9E3779B1) + u(key)
    h = h ^ (h >> u(16))
    h = h * u(0x7FEB352D)
    h = h ^ (h >> u(15))
    h = h * u(0x846CA68B)
    return h ^ (h >> u(16))


def _matches(st: SampleState, x, options, xp):
    f32 = xp.float32
    rr = f32(options.sample_radius * options.sample_radius)
    n = xp.zeros(st.count.shape, dtype=xp.int32)
    for i in range(st.samples.shape[0]):
        dc = x - st.samples[i]
        sq = dc * dc
        if sq.ndim == 3:
            sq = channel_sum(sq) / f32(sq.shape[2])
        n = n + (sq <= rr).astype(xp.int32)
    return n


def classify(st: SampleState, x, options, xp):
    """Raw foreground (fewer than ``min_matches`` samples within ``sample_radius``) and the pixels
    past initialisation."""
    n = _matches(st, x, options, xp)
    return n < xp.int32(options.min_matches), st.count >= options.init_frames, ()


def reference(st: SampleState, xp, var: bool = True):
    """The mean of each pixel's samples (the background the shadow test compares with) and their
    population variance (mean over channels)."""
    f32 = xp.float32
    N = st.samples.shape[0]
    s = st.samples[0]
    for i in range(1, N):
        s = s + st.samples[i]
    mean = s / f32(N)
    if not var:
        return mean, None
    v = None
    for i in range(N):
        d = st.samples[i] - mean
        sq = d * d
        if sq.ndim == 3:
            sq = channel_sum(sq) / f32(sq.shape[2])
        v = sq if v is None else v + sq
    return mean, v / f32(N)


def _put(samples, slot, where, value, xp):
    """``samples[slot] = value`` at the pixels ``where`` (elsewhere the slot keeps its value): one
    gather and one scatter of an (h, w) plane. Each pixel writes one slot of its own, so no two
    writes meet and the result is the same on any device."""
    h, w = slot.shape
    hw = h * w
    C = value.shape[2] if value.ndim == 3 else 1
    flat = xp.ascontiguousarray(samples).reshape(-1)
    idx = slot.reshape(hw).astype(xp.int64) * hw + xp.arange(hw, dtype=xp.int64)
    if C > 1:
        idx = (idx[:, None] * C + xp.arange(C, dtype=xp.int64)).reshape(-1)
        where = xp.broadcast_to(where[..., None], value.shape)
    flat[idx] = xp.where(where.reshape(-1), value.reshape(-1), flat[idx])
    return flat.reshape(samples.shape)


def _neighbour(a, which, xp, centre: bool = False):
    """``a[r + dy, c + dx]`` for the neighbour ``which`` of each pixel (0..7 as :data:`_OFFSETS`;
    with ``centre``, 0..8 over the 3 x 3 block row by row, 4 the pixel itself); outside the
    window, the nearest pixel inside (replicated border). A gather, no loop over the offsets."""
    h, w = a.shape[:2]
    k = which.astype(xp.int64)
    if not centre:
        k = k + (k >= 4).astype(xp.int64)  # skip the centre of the 3 x 3 block
    rows = xp.arange(h, dtype=xp.int64)[:, None] + (k // 3 - 1)
    cols = xp.arange(w, dtype=xp.int64)[None, :] + (k % 3 - 1)
    rows = xp.clip(rows, 0, h - 1)
    cols = xp.clip(cols, 0, w - 1)
    return a.reshape((h * w,) + a.shape[2:])[rows * w + cols]


def fold(st: SampleState, x, valid, foreground, options, xp):
    """Fold a frame in: ViBe's conservative update with spatial propagation.

    * A pixel's first valid frame fills its set with values of random pixels of its 3 x 3
      neighbourhood, itself included (covered ones; else its own).
    * A covered background pixel replaces a random sample with its value, with a chance of
      ``1 / subsampling``; while initialising, every covered pixel does, every frame.
    * Any covered pixel, with the same chance, takes the value of a random one of its 8
      neighbours into a random slot, if that neighbour is covered and background (ViBe's spatial
      diffusion, pulled instead of pushed), which eats ghosts and still objects from their edges.
    """
    N = st.samples.shape[0]
    u = xp.uint32
    seed, phi = options.seed, u(options.subsampling)
    ready = st.count >= options.init_frames
    bg = valid & (~foreground | ~ready)
    new = valid & (st.count == 0)
    samples = st.samples
    if bool(xp.any(new)):  # sync: only on frames where pixels first get data
        fill = []
        for i in range(N):
            pick = _draw(st, _INIT + i, seed, xp) % u(9)
            val = _neighbour(x, pick, xp, centre=True)
            ok = _neighbour(valid, pick, xp, centre=True)
            val = xp.where(ok[..., None] if val.ndim == 3 else ok, val, x)
            fill.append(xp.where(new[..., None] if val.ndim == 3 else new, val, samples[i]))
        samples = xp.stack(fill)
    own = bg & ~new & ((_draw(st, _OWN, seed, xp) % phi == u(0)) | ~ready)
    samples = _put(samples, _draw(st, _OWN_SLOT, seed, xp) % u(N), own, x, xp)
    which = _draw(st, _WHICH, seed, xp) % u(8)
    take = valid & ~new & (_draw(st, _NEIGHBOUR, seed, xp) % phi == u(0)) & _neighbour(bg, which, xp)
    samples = _put(samples, _draw(st, _NEIGHBOUR_SLOT, seed, xp) % u(N), take, _neighbour(x, which, xp), xp)
    st.samples = samples
    st.count = xp.where(valid & ~ready, st.count + 1, st.count)
    st.frames += 1
