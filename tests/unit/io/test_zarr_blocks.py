"""A Zarr source's block cache under concurrent readers (``--prefetch`` threads): one fetch per block."""

from __future__ import annotations

import threading

import numpy as np

from gpudiff.io import open_source


def test_threads_reading_one_block_fetch_it_once(tmp_path, cdnet_clip):
    import zarr

    src = open_source(str(cdnet_clip(8)))
    frames = np.stack([src.read(i) for i in range(8)])
    z = zarr.create_array(str(tmp_path / "s.zarr"), shape=frames.shape, chunks=(8, *frames.shape[1:]),
                          dtype=frames.dtype)
    z[:] = frames
    zs = open_source(str(tmp_path / "s.zarr"))
    node = zs._node()
    fetches = []

    class Counting:
        def __getitem__(self, key):
            fetches.append(key)
            return node[key]

    zs._array = Counting()
    start = threading.Barrier(8)
    got = [None] * 8

    def read(i):
        start.wait()
        got[i] = zs.read(i)

    threads = [threading.Thread(target=read, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(fetches) == 1  # eight readers, one block, one fetch
    for i in range(8):
        np.testing.assert_array_equal(got[i], frames[i])
