"""The result store under stress: racing creators, concurrent writers, SIGKILL mid-write, disk full.

What must hold: exactly one schema however many processes create it at once; writers of disjoint
chunks need no locks; after a kill every chunk is either complete (status set, data as written) or
pending, and no chunk file is ever torn; a full disk fails one chunk with a clear message and keeps
the finished ones.
"""

from __future__ import annotations

import errno
import multiprocessing as mp
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from gpudiff.errors import InputError
from gpudiff.options import CompareOptions
from gpudiff.engine._schema import DONE, FAILED, PENDING, result_fields
from gpudiff.engine._store import ResultStore

ROOT = Path(__file__).resolve().parents[3]
OPTIONS = CompareOptions(align=True)
MAP_SHAPE = (6, 5)


def fields():
    return result_fields(OPTIONS, maps={"diff": MAP_SHAPE})


def create(path, n_items, chunk, **kw):
    return ResultStore.create_or_open(
        path, n_items=n_items, chunk=chunk, fields=fields(),
        attrs={"options": OPTIONS.to_dict(), "backend": "numpy"},
        config={"options": OPTIONS.to_dict(), "pairs": "consecutive", "source": {"n_frames": n_items + 1}},
        **kw,
    )


def expected(store, c):
    """Deterministic columns, status and errors of chunk c (a function of the item index only)."""
    sl = store.chunk_slice(c)
    items = np.arange(sl.start, sl.stop)
    cols = {"reference_index": items, "moving_index": items + 1}
    for k, f in enumerate(store.fields):
        if f.dtype == "float64" and not f.shape:
            cols[f.name] = items * 1000.0 + k
    cols["shift"] = np.stack([items * 0.5, -items * 0.25], axis=1)
    cols["maps/diff"] = (items[:, None, None] + np.zeros((1, *MAP_SHAPE))).astype(np.float32)
    status = np.where(items % 11 == 5, FAILED, DONE).astype(np.uint8)
    errors = [f"item {i}: unreadable frame" if s == FAILED else "" for i, s in zip(items, status)]
    return cols, status, errors


def write_chunks(path, chunks, *, announce=False):
    store = ResultStore.open(path, mode="r+")
    for c in chunks:
        store.write_chunk(c, *expected(store, c))
        if announce:
            print(c, flush=True)


def check_consistent(store):
    """Every chunk is complete (status set, data as expected) or pending; no chunk file torn.

    Returns the pending chunks.
    """
    got = store.read()
    maps = store.read(["maps/diff"])["maps/diff"]
    pending = []
    for c in range(store.n_chunks):
        sl = store.chunk_slice(c)
        cols, status, errors = expected(store, c)
        st = got["status"][sl]
        if np.all(st == PENDING):
            pending.append(c)
            # a data chunk of a pending chunk is either untouched or completely written
            for name, values in cols.items():
                v = maps[sl] if name == "maps/diff" else got[name][sl]
                if name == "maps/diff":  # one item per chunk
                    for j in range(len(v)):
                        assert np.all(np.isnan(v[j])) or np.array_equal(v[j], values[j]), (c, name, j)
                elif v.dtype.kind == "f":
                    assert np.all(np.isnan(v)) or np.array_equal(v, values), (c, name)
                else:
                    assert np.all(v == -1) or np.array_equal(v, values), (c, name)
            continue
        np.testing.assert_array_equal(st, status, err_msg=f"chunk {c}: torn status")
        assert [str(e) for e in got["error"][sl]] == errors, c
        for name, values in cols.items():
            v = maps[sl] if name == "maps/diff" else got[name][sl]
            np.testing.assert_array_equal(v, values, err_msg=f"chunk {c} marked done but {name} differs")
    return pending


# ---- creation race -------------------------------------------------------------------------------


def _racer(path, barrier, queue):
    try:
        barrier.wait(timeout=60)
        store = create(path, 100, 10)
        queue.put(("ok", store.created_here, store.attrs, sorted(os.listdir(path))))
    except BaseException as e:  # noqa: BLE001 (report to the parent)
        queue.put(("error", repr(e), None, None))


def test_eight_processes_create_the_same_store_at_once(tmp_path):
    path = tmp_path / "results.zarr"
    ctx = mp.get_context("spawn")
    barrier, queue = ctx.Barrier(8), ctx.Queue()
    procs = [ctx.Process(target=_racer, args=(str(path), barrier, queue)) for _ in range(8)]
    for p in procs:
        p.start()
    results = [queue.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    errors = [r for r in results if r[0] != "ok"]
    assert not errors, errors
    assert sum(r[1] for r in results) == 1  # exactly one process created it
    attrs = [r[2] for r in results]
    assert all(a == attrs[0] for a in attrs)  # everyone sees the winner's attributes ('created' too)
    assert all(r[3] == results[0][3] for r in results)
    assert sorted(os.listdir(tmp_path)) == ["results.zarr"]  # every loser removed its temporary
    store = ResultStore.open(path)
    assert [f.name for f in store.fields] == [f.name for f in fields()]
    assert store.pending_chunks(range(10)) == list(range(10))


def test_the_loser_of_the_rename_opens_the_winner(tmp_path):
    path = tmp_path / "results.zarr"
    winner = create(path, 30, 10)
    from gpudiff.engine import _zarrfiles

    # what a racer that checked too early does: build its own and fail to rename
    assert _zarrfiles._create(path, 30, 10, fields(), {}, winner.attrs["config"], None) is False
    assert sorted(os.listdir(tmp_path)) == ["results.zarr"]
    again = create(path, 30, 10)
    assert not again.created_here and again.attrs["created"] == winner.attrs["created"]


# ---- concurrent writers --------------------------------------------------------------------------


def test_two_processes_write_disjoint_chunks_concurrently(tmp_path):
    path = tmp_path / "results.zarr"
    store = create(path, 600, 10)
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=write_chunks, args=(str(path), list(range(k, 60, 2)))) for k in (0, 1)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert [p.exitcode for p in procs] == [0, 0]
    assert check_consistent(store) == []
    assert store.pending_chunks(range(60)) == []
    s = store.summary()
    assert s["done"] + s["failed"] == 600 and s["pending"] == 0


# ---- SIGKILL -----------------------------------------------------------------------------------

CHILD = """
import sys
sys.path.insert(0, sys.argv[3])
from test_store_safety import write_chunks
write_chunks(sys.argv[1], list(range(int(sys.argv[2]))), announce=True)
print("finished", flush=True)
"""


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="POSIX only")
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sigkill_mid_write_leaves_complete_or_pending_chunks(tmp_path, seed):
    rng = random.Random(seed)
    n_items, chunk = 500, 10
    path = tmp_path / "results.zarr"
    store = create(path, n_items, chunk)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    # kill after a random number of chunks, at a random moment within the next one
    after = rng.randrange(1, 25)
    with subprocess.Popen(
        [sys.executable, "-c", CHILD, str(path), str(store.n_chunks), str(Path(__file__).parent)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    ) as proc:
        try:
            for _ in range(after):
                line = proc.stdout.readline()
                assert line.strip().isdigit(), (line, proc.stderr.read())
            time.sleep(rng.uniform(0, 0.03))
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the writer finished before the kill: write more chunks"

    # a stale .partial from the killed writer (planted too, so the check never depends on timing)
    for name in ("status", "mse"):
        (path / name / "c" / f"0.{'ab' * 16}.partial").write_bytes(b"\x01" * 3)
    pending = check_consistent(store)
    assert after <= store.n_chunks - len(pending) < store.n_chunks
    assert store.pending_chunks(range(store.n_chunks)) == pending
    assert pending == list(range(pending[0], store.n_chunks))  # one writer, in order: a clean tail

    # readers that know nothing of gpudiff see no .partial either
    xr = pytest.importorskip("xarray")
    ds = xr.open_zarr(path)
    np.testing.assert_array_equal(ds["status"].values, store.read(["status"])["status"])

    # fresh temporaries may belong to a live writer: kept; old ones go
    partials = [p for p in path.rglob("*.partial")]
    assert store.clean_stale_temporaries() == 0
    old = time.time() - 7200
    for p in partials:
        os.utime(p, (old, old))
    assert store.clean_stale_temporaries() == len(partials)
    assert not list(path.rglob("*.partial"))

    # resume: only the pending chunks are written, and the store is then complete
    write_chunks(path, store.pending_chunks(range(store.n_chunks)))
    assert check_consistent(store) == []


# ---- disk full -----------------------------------------------------------------------------------


def _fail_on(monkeypatch, marker):
    import zarr.storage._local as local

    real = local._put

    def put(path, value, *a, **k):
        if marker in str(path):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return real(path, value, *a, **k)

    monkeypatch.setattr(local, "_put", put)


def test_disk_full_while_writing_a_chunk(tmp_path, monkeypatch):
    path = tmp_path / "results.zarr"
    store = create(path, 200, 10)
    for c in range(12):
        store.write_chunk(c, *expected(store, c))
    _fail_on(monkeypatch, f"{os.sep}ssim{os.sep}c{os.sep}12")
    with pytest.raises(InputError) as info:
        store.write_chunk(12, *expected(store, 12))
    msg = str(info.value)
    assert "disk full while writing chunk 12: free space and rerun; finished chunks are kept" in msg
    assert str(path) in msg and "\n" not in msg
    assert info.value.__cause__ is None and info.value.__suppress_context__
    monkeypatch.undo()
    assert store.pending_chunks(range(20)) == list(range(12, 20))  # status of 12 not set
    assert check_consistent(store) == list(range(12, 20))
    store.write_chunk(12, *expected(store, 12))  # space freed: the rerun writes it
    assert store.pending_chunks(range(20)) == list(range(13, 20))


def test_disk_full_while_creating(tmp_path, monkeypatch):
    _fail_on(monkeypatch, "ssim")
    with pytest.raises(InputError, match="disk full while creating the store"):
        create(tmp_path / "results.zarr", 100, 10)
    assert os.listdir(tmp_path) == []  # no temporary, no half store
