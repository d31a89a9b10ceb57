"""The plan: pairing, chunking and shards are deterministic and disjoint."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gpudiff.errors import ConfigError
from gpudiff.engine._plan import Shard, make_plan, parse_shard, shard_from_env


def test_consecutive_and_first():
    p = make_plan(5, pairs="consecutive", chunk=2)
    assert p.reference.tolist() == [0, 1, 2, 3] and p.moving.tolist() == [1, 2, 3, 4]
    assert p.n_chunks == 2 and p.chunk_slice(1) == slice(2, 4)
    f = make_plan(4, pairs="first", chunk=10)
    assert f.reference.tolist() == [0, 0, 0] and f.moving.tolist() == [1, 2, 3]
    assert make_plan(1).n_items == 0 and make_plan(0).n_chunks == 0


def test_explicit_pairs_and_frames_of_chunk():
    p = make_plan(explicit=[(3, 1), (1, 2), (5, 5)], chunk=2)
    assert p.frames_of_chunk(0).tolist() == [1, 2, 3]
    assert p.frames_of_chunk(1).tolist() == [5]


@given(n=st.integers(0, 500), chunk=st.integers(1, 50), count=st.integers(1, 9))
def test_shards_partition_the_chunks(n, chunk, count):
    p = make_plan(n, chunk=chunk)
    owned = [p.shard_chunks(Shard(i, count)) for i in range(count)]
    flat = sorted(c for o in owned for c in o)
    assert flat == list(range(p.n_chunks))
    items = np.concatenate([np.arange(p.n_items)[p.chunk_slice(c)] for c in flat]) if flat else []
    assert list(items) == list(range(p.n_items))


def test_parse_and_env():
    assert parse_shard("2/4") == Shard(2, 4)
    for bad in ["4/4", "x/2", "1", "-1/3"]:
        with pytest.raises(ConfigError, match="--shard"):
            parse_shard(bad)
    assert shard_from_env({}) is None
    env = {"SLURM_ARRAY_TASK_ID": "3", "SLURM_ARRAY_TASK_COUNT": "4", "SLURM_ARRAY_TASK_MIN": "1"}
    assert shard_from_env(env) == Shard(2, 4)
    with pytest.raises(ConfigError):
        make_plan(5, pairs="random")
    with pytest.raises(ConfigError, match="--chunk"):
        make_plan(5, chunk=0)


@given(n=st.integers(0, 300), chunk=st.integers(1, 40), data=st.data())
def test_items_of_chunks(n, chunk, data):
    """The items of any list of chunks, in the order given, against slicing each chunk by hand."""
    p = make_plan(n + 1, chunk=chunk)
    chunks = data.draw(st.lists(st.integers(0, max(p.n_chunks - 1, 0)), max_size=12)) if p.n_chunks else []
    expect = [i for c in chunks for i in range(c * chunk, min((c + 1) * chunk, p.n_items))]
    got = p.items_of(chunks)
    assert got.dtype == np.int64 and got.tolist() == expect
    with pytest.raises(IndexError):
        p.items_of([p.n_chunks])


def test_items_of_is_linear_in_the_items():
    """Many small chunks: memory of the order of the items selected, not chunks x items (the run's
    summary once built one arange of every item per chunk: 2.5 GB for 782 chunks of 400k items)."""
    import tracemalloc

    p = make_plan(5001, chunk=1)  # 5000 chunks of 1 item; chunks x items x 8 bytes would be 200 MB
    tracemalloc.start()
    try:
        got = p.items_of(range(p.n_chunks))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert got.tolist() == list(range(5000))
    assert peak < 20 * got.nbytes, f"{peak} bytes traced for {got.nbytes} bytes of indices"
