"""Reading ahead (``--prefetch``): frames of a chunk read on N threads while earlier items compare.

The oracle is the same chunk read in turn (prefetch 0): same frames, same errors, same store; and
the reads in flight, counted by a source that takes a fixed time per frame (a high-latency store).
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from gpudiff.engine._chunk import _ChunkFrames
from gpudiff.engine._execute import REMOTE_PREFETCH, _prefetch
from gpudiff.engine._runner import RunConfig
from gpudiff.errors import ConfigError, GpudiffError, InputError
from gpudiff.io import open_source


class _SlowSource:
    """Frames of a real sequence, each read taking ``delay`` seconds; counts reads in flight."""

    def __init__(self, inner, delay=0.02, bad=()):
        self.inner, self.delay, self.bad = inner, delay, set(bad)
        self.lock = threading.Lock()
        self.in_flight = 0
        self.most = 0
        self.reads = []

    def read(self, i):
        with self.lock:
            self.in_flight += 1
            self.most = max(self.most, self.in_flight)
            self.reads.append(i)
        try:
            time.sleep(self.delay)
            if i in self.bad:
                raise InputError(f"frame {i} is damaged: replace it")
            return self.inner.read(i)
        finally:
            with self.lock:
                self.in_flight -= 1

    def label(self, i):
        return self.inner.label(i)


def _walk(frames, refs, movs):
    """Use the frames as process_chunk does: get both of each item, then release them."""
    out = []
    for k, (r, m) in enumerate(zip(refs, movs)):
        row = []
        for i in (r, m):
            try:
                row.append(np.array(frames.get(i)))
            except GpudiffError as e:
                row.append(str(e))
        out.append(row)
        frames.release(k, r, m)
    frames.close()
    return out


@pytest.fixture
def clip(cdnet_clip):
    return open_source(str(cdnet_clip(12)))


def test_reading_ahead_gives_the_same_frames_and_errors_with_reads_in_flight(clip):
    refs, movs = list(range(11)), list(range(1, 12))
    plain = _SlowSource(clip, bad={5})
    ahead = _SlowSource(clip, bad={5})
    want = _walk(_ChunkFrames(plain, np, refs, movs, prefetch=0), refs, movs)
    got = _walk(_ChunkFrames(ahead, np, refs, movs, prefetch=4), refs, movs)
    assert len(got) == len(want) == 11
    for a, b in zip(want, got):
        for x, y in zip(a, b):
            if isinstance(x, str):
                assert x == y and "frame 5 is damaged" in x  # the same one-line error, for both items
            else:
                np.testing.assert_array_equal(x, y)
    assert plain.most == 1
    assert 2 <= ahead.most <= 4  # several requests in flight, never more than asked
    assert sorted(ahead.reads) == list(range(12))  # every frame read exactly once


def test_reading_ahead_hides_latency(clip):
    refs, movs = list(range(11)), list(range(1, 12))
    t0 = time.perf_counter()
    _walk(_ChunkFrames(_SlowSource(clip, delay=0.05), np, refs, movs, prefetch=0), refs, movs)
    serial = time.perf_counter() - t0
    t0 = time.perf_counter()
    _walk(_ChunkFrames(_SlowSource(clip, delay=0.05), np, refs, movs, prefetch=8), refs, movs)
    ahead = time.perf_counter() - t0
    # 12 reads of 50 ms: 0.6 s in turn; with 8 in flight about 2 rounds. A behaviour check, with a
    # wide margin (the speed itself is measured in benchmarks/remote_read.py).
    assert serial > 0.55 and ahead < serial / 2


def test_a_stopped_chunk_does_not_keep_reading(clip):
    src = _SlowSource(clip, delay=0.05)
    frames = _ChunkFrames(src, np, list(range(11)), list(range(1, 12)), prefetch=2)
    frames.get(0)
    frames.close()
    time.sleep(0.2)
    assert len(src.reads) <= 4  # the two in flight finish; nothing queued starts


def test_prefetch_default_is_for_urls_only_and_bad_values_are_refused():
    assert _prefetch(RunConfig(source="s3://bucket/stack.zarr", out="r.zarr")) == REMOTE_PREFETCH
    assert _prefetch(RunConfig(source="https://host/frames/", out="r.zarr")) == REMOTE_PREFETCH
    assert _prefetch(RunConfig(source="/data/frames", out="r.zarr")) == 0
    assert _prefetch(RunConfig(source="/data/frames", out="r.zarr", prefetch=3)) == 3
    for bad in (-1, 257, 2.5, True):
        with pytest.raises(ConfigError, match="--prefetch"):
            RunConfig(source="/data/frames", out="r.zarr", prefetch=bad)


def test_a_run_reading_ahead_writes_the_store_of_a_run_reading_in_turn(tmp_path, cdnet_clip):
    from gpudiff.cli._main import main
    from gpudiff.engine._store import ResultStore

    src = str(cdnet_clip(9))
    stores = {}
    for n in (0, 5):
        out = tmp_path / f"p{n}.zarr"
        assert main(["run", src, "--out", str(out), "--chunk", "3", "--prefetch", str(n), "--no-progress",
                     "--metrics", "manhattan,ssim,histogram"]) == 0
        stores[n] = ResultStore.open(str(out)).read()
    assert sorted(stores[0]) == sorted(stores[5])
    for k, v in stores[0].items():
        if v.dtype.kind == "f":
            np.testing.assert_array_equal(v, stores[5][k], err_msg=k)
        else:
            assert v.tolist() == stores[5][k].tolist(), k
    assert int((stores[5]["status"] == 1).sum()) == 8
