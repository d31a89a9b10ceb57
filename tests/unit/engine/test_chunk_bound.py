"""``--chunk`` bounded by memory: a chunk task holds its ``--save-maps`` maps for every item of its
chunk, as many tasks at once as Dask runs, so a new store's chunk is lowered to what fits half the
available memory (``GPUDIFF_MEMORY_LIMIT`` stands in for it here); a resume keeps its store's chunk."""

from __future__ import annotations

import io

import numpy as np
import pytest

from gpudiff.engine._runner import RunConfig, run, store_chunk
from gpudiff.engine._store import ResultStore
from gpudiff.options import CompareOptions
from tests._stores import assert_same_store

# ---- the pure function, by hand ------------------------------------------------------------------


def test_without_a_memory_bound_the_chunk_is_only_clamped_to_the_items():
    assert store_chunk(64, 9) == 9
    assert store_chunk(4096, 1_000_000) == 4096
    assert store_chunk(64, 0) == 1
    assert store_chunk(4096, 1_000_000, 1000, 8, None) == 4096  # nothing known about the memory
    assert store_chunk(4096, 1_000_000, 0, 8, 10) == 4096  # no maps: nothing grows with the chunk


def test_the_chunk_is_lowered_to_the_largest_that_fits_half_the_memory():
    # 4 tasks x 1000 bytes per item = 4000 per item of the chunk; half of 1e6 = 500000 -> 125 items
    assert store_chunk(4096, 1_000_000, 1000, 4, 1_000_000) == 125
    # 125 x 4000 = 500000 exactly fits; one byte less and 124 do
    assert store_chunk(125, 1_000_000, 1000, 4, 1_000_000) == 125
    assert store_chunk(4096, 1_000_000, 1000, 4, 999_998) == 124
    # the clamp to the items still comes first
    assert store_chunk(4096, 100, 1000, 4, 1_000_000) == 100
    # at least 1, however little memory
    assert store_chunk(4096, 1_000_000, 1000, 4, 10) == 1
    # another share
    assert store_chunk(4096, 1_000_000, 1000, 4, 1_000_000, share=0.25) == 62


def test_a_serial_pass_bounds_the_chunk_by_its_own_bytes_per_item():
    # the background pass: one chunk at a time, 100 bytes per item; half of 10000 = 5000 -> 50
    assert store_chunk(100, 100, 0, 8, 10_000, serial_item_bytes=100) == 50
    # tasks' 8 x 10 = 80 < 100: the pass bounds it
    assert store_chunk(100, 100, 10, 8, 10_000, serial_item_bytes=100) == 50
    # tasks' 8 x 20 = 160 > 100: the tasks do (5000 // 160 = 31)
    assert store_chunk(100, 100, 20, 8, 10_000, serial_item_bytes=100) == 31


# ---- a run ---------------------------------------------------------------------------------------

H = W = 64
N_FRAMES = 9  # 8 consecutive pairs
WORKERS = 2


@pytest.fixture
def frames_zarr(tmp_path):
    import zarr

    rng = np.random.default_rng(7)
    base = rng.integers(0, 256, (H, W)).astype(np.float64)
    frames = np.stack([np.clip(base + 12 * rng.standard_normal((H, W)) + 3 * k, 0, 255) for k in range(N_FRAMES)])
    path = tmp_path / "frames.zarr"
    z = zarr.create_array(str(path), shape=frames.shape, dtype="uint8", chunks=(1, H, W))
    z[:] = frames.astype(np.uint8)
    return path


def _run(src, out, **kw):
    cfg = RunConfig(source=str(src), out=str(out), chunk=64, save_maps=("diff",), workers=WORKERS, progress=False,
                    **kw)
    buf = io.StringIO()
    report = run(cfg, CompareOptions(metrics=("manhattan", "mse"), backend="numpy"), stream=buf)
    return report, buf.getvalue()


def test_a_run_lowers_the_chunk_of_a_new_store_and_a_resume_keeps_it(frames_zarr, tmp_path, monkeypatch):
    per_item = H * W * 4  # maps/diff: float32 (H, W) per item of a chunk
    k = 3
    limit = 2 * k * per_item * WORKERS + 1000  # half of it holds k items' maps on each of the 2 threads
    expected = (limit // 2) // (per_item * WORKERS)
    assert expected == k

    monkeypatch.delenv("GPUDIFF_MEMORY_LIMIT", raising=False)
    whole = tmp_path / "whole.zarr"
    report, note = _run(frames_zarr, whole)
    assert report.exit_code == 0 and "lowered" not in note
    assert ResultStore.open(str(whole)).chunk == N_FRAMES - 1  # clamped to the 8 items only

    monkeypatch.setenv("GPUDIFF_MEMORY_LIMIT", str(limit))
    bounded = tmp_path / "bounded.zarr"
    report, note = _run(frames_zarr, bounded)
    assert report.exit_code == 0 and report.done == N_FRAMES - 1
    store = ResultStore.open(str(bounded))
    assert store.chunk == expected and store.n_chunks == -(-(N_FRAMES - 1) // expected)
    lines = [line for line in note.splitlines() if "lowered" in line]
    assert len(lines) == 1, note
    assert lines[0].startswith(f"gpudiff run: --chunk 64 lowered to {expected}: 8 items of maps/diff")
    assert "GPUDIFF_MEMORY_LIMIT" in lines[0]
    # the maps (and every column) value for value as the unbounded run's
    assert_same_store(whole, bounded, maps=True)
    maps = store.read(["maps/diff"])["maps/diff"]
    assert maps.shape == (N_FRAMES - 1, H, W) and np.isfinite(maps).all()

    # a resume keeps the store's chunk, whatever the memory says now
    for env in (str(limit), None, str(limit // 3)):
        if env is None:
            monkeypatch.delenv("GPUDIFF_MEMORY_LIMIT")
        else:
            monkeypatch.setenv("GPUDIFF_MEMORY_LIMIT", env)
        report, note = _run(frames_zarr, bounded)
        assert report.exit_code == 0 and report.chunks_skipped == store.n_chunks, note
        assert "lowered" not in note
        assert ResultStore.open(str(bounded)).chunk == expected
    assert_same_store(whole, bounded, maps=True)


def test_overwrite_bounds_the_chunk_again(frames_zarr, tmp_path, monkeypatch):
    out = tmp_path / "s.zarr"
    monkeypatch.delenv("GPUDIFF_MEMORY_LIMIT", raising=False)
    _run(frames_zarr, out)
    assert ResultStore.open(str(out)).chunk == N_FRAMES - 1
    per_item = H * W * 4
    monkeypatch.setenv("GPUDIFF_MEMORY_LIMIT", str(2 * 2 * per_item * WORKERS))  # 2 items fit
    report, note = _run(frames_zarr, out, overwrite=True)
    assert report.exit_code == 0 and "lowered to 2" in note
    assert ResultStore.open(str(out)).chunk == 2
