"""The result store: schema, chunk writes, resume, config checks, readers without gpudiff, export."""

from __future__ import annotations

import csv
import io
import json
import math
import pickle

import numpy as np
import pytest

from gpudiff.errors import ConfigError, InputError
from gpudiff.engine._export import export_columns, export_csv, export_parquet, export_rows
from gpudiff.options import CompareOptions
from gpudiff.engine._schema import (
    DONE,
    FAILED,
    METRIC_COLUMNS,
    STORE_VERSION,
    Field,
    comparison_columns,
    metric_columns,
    result_fields,
)
from gpudiff.engine._store import ResultStore

N, CHUNK = 23, 5  # 5 chunks, the last one partial


def make(path, *, options=None, n=N, chunk=CHUNK, manifest=False, maps=None, config=None, **kw):
    options = options or CompareOptions(align=True)
    fields = result_fields(options, manifest=manifest, maps=maps)
    cfg = {"options": options.to_dict(), "pairs": "consecutive"} if config is None else config
    return ResultStore.create_or_open(
        path, n_items=n, chunk=chunk, fields=fields, attrs={"options": options.to_dict(), "backend": "numpy"},
        config=cfg, **kw,
    )


def expected_chunk(store, c):
    """Deterministic values for chunk c: metric k of item i is i + k / 100."""
    sl = store.chunk_slice(c)
    items = np.arange(sl.start, sl.stop)
    cols = {"reference_index": items, "moving_index": items + 1}
    for k, f in enumerate(store.fields):
        if f.dtype == "float64" and not f.shape:
            cols[f.name] = items + k / 100
    if any(f.name == "shift" for f in store.fields):
        cols["shift"] = np.stack([items * 0.5, -items * 0.25], axis=1)
    status = np.where(items % 7 == 3, FAILED, DONE).astype(np.uint8)
    errors = [f"item {i} broke" if s == FAILED else "" for i, s in zip(items, status)]
    return cols, status, errors


def test_create_write_out_of_order_and_read_back(tmp_path):
    store = make(tmp_path / "r.zarr")
    assert store.created_here and store.n_items == N and store.chunk == CHUNK and store.n_chunks == 5
    assert store.pending_chunks(range(5)) == [0, 1, 2, 3, 4]
    for c in (4, 1, 3):
        store.write_chunk(c, *expected_chunk(store, c))
    assert store.pending_chunks(range(5)) == [0, 2]
    assert store.pending_chunks([3, 2, 0]) == [2, 0]  # order of the request kept
    got = store.read()
    for c in range(5):
        sl = store.chunk_slice(c)
        cols, status, errors = expected_chunk(store, c)
        if c in (0, 2):
            assert np.all(got["status"][sl] == 0)
            assert np.all(np.isnan(got["mse"][sl]))
            assert np.all(got["reference_index"][sl] == -1)
            assert list(got["error"][sl]) == [""] * (sl.stop - sl.start)
            continue
        np.testing.assert_array_equal(got["status"][sl], status)
        assert list(got["error"][sl]) == errors
        for name, values in cols.items():
            np.testing.assert_array_equal(got[name][sl], values)
    # only part of the items, and only some names
    part = store.read(["mse"], items=slice(15, 20))
    np.testing.assert_array_equal(part["mse"], expected_chunk(store, 3)[0]["mse"])


def test_device_arrays_are_brought_to_the_host(tmp_path):
    """Columns and status handed over as GPU arrays (here the emulated device) are copied to the
    host before writing: the values read back equal the host write."""
    from gpudiff import backend

    xp = backend.resolve_backend("emulated-gpu")
    store = make(tmp_path / "d.zarr")
    cols, status, errors = expected_chunk(store, 2)
    store.write_chunk(2, {k: xp.asarray(v) for k, v in cols.items()}, xp.asarray(status), errors)
    got = store.read(items=store.chunk_slice(2))
    np.testing.assert_array_equal(got["status"], status)
    for name, values in cols.items():
        np.testing.assert_array_equal(got[name], values)


def test_pending_chunks_retry_failed_and_partial_status(tmp_path):
    store = make(tmp_path / "r.zarr")
    cols, _, _ = expected_chunk(store, 0)
    store.write_chunk(0, cols, [1, 1, 2, 1, 1], ["", "", "x", "", ""])
    store.write_chunk(2, {}, [1, 0, 1, 1, 1])  # an item left pending keeps the chunk pending
    assert store.pending_chunks(range(5)) == [1, 2, 3, 4]
    assert store.pending_chunks(range(5), retry_failed=True) == [0, 1, 2, 3, 4]
    with pytest.raises(IndexError):
        store.pending_chunks([5])


def test_unreadable_status_chunk_is_pending(tmp_path):
    store = make(tmp_path / "r.zarr")
    for c in range(5):
        store.write_chunk(c, *expected_chunk(store, c))
    assert store.pending_chunks(range(5)) == []
    (tmp_path / "r.zarr" / "status" / "c" / "2").write_bytes(b"\x00garbage")
    assert store.pending_chunks(range(5)) == [2]
    assert store.pending_chunks([2, 3]) == [2]
    with pytest.warns(RuntimeWarning, match="unreadable"):
        status = store.read(["status"])["status"]
    assert np.all(status[store.chunk_slice(2)] == 0)


def test_write_chunk_validates(tmp_path):
    store = make(tmp_path / "r.zarr")
    with pytest.raises(ValueError, match="no field"):
        store.write_chunk(0, {"nope": np.zeros(5)}, np.ones(5))
    with pytest.raises(ValueError, match="shape"):
        store.write_chunk(0, {"mse": np.zeros(4)}, np.ones(5))
    with pytest.raises(ValueError, match="status"):
        store.write_chunk(0, {}, np.ones(4))
    with pytest.raises(ValueError, match="errors"):
        store.write_chunk(0, {}, np.ones(5), ["x"])
    with pytest.raises(IndexError):
        store.write_chunk(5, {}, np.ones(3))
    ro = ResultStore.open(tmp_path / "r.zarr")
    with pytest.raises(ValueError, match="read-only"):
        ro.write_chunk(0, {}, np.ones(5))


def test_xarray_reads_the_store_without_gpudiff(tmp_path):
    xr = pytest.importorskip("xarray")
    store = make(tmp_path / "r.zarr", maps={"diff": (3, 4)})
    for c in (0, 2):
        cols, status, errors = expected_chunk(store, c)
        m = len(status)
        cols["maps/diff"] = np.full((m, 3, 4), float(c), np.float32)
        store.write_chunk(c, cols, status, errors)
    ds = xr.open_zarr(tmp_path / "r.zarr")
    assert ds.sizes["item"] == N and ds.sizes["axis"] == 2
    for name in ("status", "error", "mse", "ssim", "pixels", "hist_kl", "reference_index"):
        assert ds[name].dims == ("item",)
    assert ds["shift"].dims == ("item", "axis")
    expect, status, errors = expected_chunk(store, 2)
    sl = store.chunk_slice(2)
    np.testing.assert_array_equal(ds["mse"].values[sl], expect["mse"])
    np.testing.assert_array_equal(ds["shift"].values[sl], expect["shift"])
    np.testing.assert_array_equal(ds["status"].values[sl], status)
    assert ds["status"].dtype == np.uint8  # the fill 0 is not turned into NaN
    assert [str(e) for e in ds["error"].values[sl]] == errors
    assert np.isnan(ds["mse"].values[store.chunk_slice(1)]).all()
    assert ds.attrs["gpudiff_store_version"] == STORE_VERSION
    assert ds.attrs["options"]["align"] is True
    maps = xr.open_zarr(tmp_path / "r.zarr", group="maps")
    assert maps["diff"].dims == ("item", "y", "x")
    assert maps["diff"].dtype == np.float32
    assert float(maps["diff"][sl.start, 1, 1]) == 2.0
    assert np.isnan(maps["diff"][6].values).all()


def test_plain_zarr_reads_the_store(tmp_path):
    zarr = pytest.importorskip("zarr")
    store = make(tmp_path / "r.zarr")
    store.write_chunk(1, *expected_chunk(store, 1))
    g = zarr.open_group(tmp_path / "r.zarr", mode="r")
    assert g.attrs["n_items"] == N
    assert list(g["mse"].metadata.dimension_names) == ["item"]
    assert g["mse"].chunks == (CHUNK,)
    np.testing.assert_array_equal(g["mse"][5:10], expected_chunk(store, 1)[0]["mse"])


def test_attrs_round_trip_and_fields_reconstructed(tmp_path):
    options = CompareOptions(blur=1.5, metrics=("mse", "ssim"))
    store = make(tmp_path / "r.zarr", options=options, manifest=True)
    again = ResultStore.open(tmp_path / "r.zarr")
    a = again.attrs
    assert a["gpudiff_store_version"] == 1
    assert a["n_items"] == N and a["chunk"] == CHUNK
    assert a["options"] == options.to_dict() | {"metrics": ["mse", "ssim"]}
    assert CompareOptions.from_dict(a["options"]) == options
    assert a["backend"] == "numpy"
    assert a["config"]["pairs"] == "consecutive"
    assert "numpy" in a["versions"] and "zarr" in a["versions"]
    assert a["created"] and a["gpudiff_version"]
    assert a["fields"] == [f.name for f in store.fields]
    assert [f.spec(CHUNK) for f in again.fields] == [f.spec(CHUNK) for f in store.fields]
    assert "shift" not in a["fields"] and "ssim" in a["fields"] and "ncc" not in a["fields"]
    assert {"reference_path", "moving_path", "id"} <= set(a["fields"])
    # a second create_or_open with the same config opens the same store
    same = make(tmp_path / "r.zarr", options=options, manifest=True)
    assert not same.created_here and same.attrs["created"] == a["created"]
    # pickles (Dask workers) by path and mode
    copy = pickle.loads(pickle.dumps(same))
    assert copy.path == same.path and copy.mode == "r+"


def test_config_mismatch_names_the_nested_key(tmp_path):
    make(tmp_path / "r.zarr", options=CompareOptions(blur=0))
    with pytest.raises(ConfigError) as info:
        make(tmp_path / "r.zarr", options=CompareOptions(blur=1.5))
    msg = str(info.value)
    assert "was made with --blur 0" in msg and "this run asks --blur 1.5" in msg
    assert "--overwrite" in msg and "\n" not in msg
    # a nested key outside the options reads as a dotted path
    base = {"options": CompareOptions().to_dict(), "source": {"kind": "tiff", "fingerprint": {"size": 10}}}
    make(tmp_path / "s.zarr", options=CompareOptions(), config=base)
    other = json.loads(json.dumps(base))
    other["source"]["fingerprint"]["size"] = 11
    expect = r"source\.fingerprint\.size = 10 but this run asks source\.fingerprint\.size = 11"
    with pytest.raises(ConfigError, match=expect):
        make(tmp_path / "s.zarr", options=CompareOptions(), config=other)
    # other outputs, item count, chunk
    with pytest.raises(ConfigError, match="outputs"):
        ResultStore.create_or_open(
            tmp_path / "s.zarr", n_items=N, chunk=CHUNK, fields=[Field("mse", "float64")], attrs={},
            config=base,
        )
    with pytest.raises(ConfigError, match=f"made for {N} items but this run plans {N + 1}"):
        make(tmp_path / "s.zarr", options=CompareOptions(), config=base, n=N + 1)
    with pytest.raises(ConfigError, match="--chunk 5 but this run asks --chunk 7"):
        make(tmp_path / "s.zarr", options=CompareOptions(), config=base, chunk=7)


def test_overwrite(tmp_path):
    store = make(tmp_path / "r.zarr")
    store.write_chunk(0, *expected_chunk(store, 0))
    fresh = make(tmp_path / "r.zarr", options=CompareOptions(blur=2.0), overwrite=True)
    assert fresh.created_here and fresh.pending_chunks(range(5)) == [0, 1, 2, 3, 4]
    assert fresh.attrs["options"]["blur"] == 2.0
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # nothing left aside
    # an empty directory is fine to use
    (tmp_path / "empty.zarr").mkdir()
    assert make(tmp_path / "empty.zarr").created_here
    (tmp_path / "empty2.zarr").mkdir()
    assert make(tmp_path / "empty2.zarr", overwrite=True).created_here


def test_overwrite_and_open_refuse_an_unrelated_directory(tmp_path):
    precious = tmp_path / "thesis"
    precious.mkdir()
    (precious / "chapter1.tex").write_text("do not delete")
    with pytest.raises(InputError, match="not a gpudiff result store.*refusing to delete"):
        make(precious, overwrite=True)
    assert (precious / "chapter1.tex").read_text() == "do not delete"
    with pytest.raises(InputError, match="is not a gpudiff result store"):
        make(precious)
    with pytest.raises(InputError, match="is not a gpudiff result store: there is no zarr.json"):
        ResultStore.open(precious)
    # a plain zarr group is not a gpudiff store either, and is not deleted
    zarr = pytest.importorskip("zarr")
    other = zarr.open_group(tmp_path / "other.zarr", mode="w", zarr_format=3)
    other.create_array("x", shape=(3,), dtype="f8")
    with pytest.raises(InputError, match="no gpudiff_store_version"):
        ResultStore.open(tmp_path / "other.zarr")
    with pytest.raises(InputError, match="refusing to delete"):
        make(tmp_path / "other.zarr", overwrite=True)
    assert (tmp_path / "other.zarr" / "x" / "zarr.json").exists()
    # a file
    (tmp_path / "file.zarr").write_text("x")
    with pytest.raises(InputError, match="is a file"):
        ResultStore.open(tmp_path / "file.zarr")


def test_missing_path_and_newer_version(tmp_path):
    with pytest.raises(InputError, match="no such result store"):
        ResultStore.open(tmp_path / "nowhere.zarr")
    make(tmp_path / "r.zarr")
    meta_file = tmp_path / "r.zarr" / "zarr.json"
    meta = json.loads(meta_file.read_text())
    meta["attributes"]["gpudiff_store_version"] = STORE_VERSION + 1
    meta_file.write_text(json.dumps(meta))
    with pytest.raises(InputError) as info:
        ResultStore.open(tmp_path / "r.zarr")
    assert str(info.value).endswith(
        f"r.zarr was written by gpudiff store version {STORE_VERSION + 1}; this gpudiff reads version "
        f"{STORE_VERSION}: upgrade gpudiff"
    )
    with pytest.raises(InputError, match="upgrade gpudiff"):
        make(tmp_path / "r.zarr")
    # a newer gpudiff store is still a gpudiff store: --overwrite may replace it
    assert make(tmp_path / "r.zarr", overwrite=True).created_here


def test_empty_plan_and_field_validation(tmp_path):
    store = make(tmp_path / "r.zarr", n=0)
    assert store.n_chunks == 0 and store.pending_chunks([]) == []
    assert store.summary()["pending"] == 0
    assert list(export_rows(store)) == []
    with pytest.raises(ValueError):
        Field("status", "uint8")
    with pytest.raises(ValueError):
        Field("shift", "float64", (2,))  # dims missing
    with pytest.raises(ValueError, match="divide"):
        ResultStore.create_or_open(
            tmp_path / "x.zarr", n_items=4, chunk=4, fields=[Field("a", "f8", item_chunk=3)], attrs={},
            config={},
        )
    with pytest.raises(ValueError, match="may not set"):
        ResultStore.create_or_open(tmp_path / "x.zarr", n_items=4, chunk=4, fields=[], attrs={"n_items": 3})
    # the runner may record its own versions
    s = ResultStore.create_or_open(
        tmp_path / "y.zarr", n_items=4, chunk=4, fields=[],
        attrs={"gpudiff_version": "9.9", "versions": {"x": 1}},
    )
    assert s.attrs["gpudiff_version"] == "9.9" and s.attrs["versions"] == {"x": 1}


def test_initial_columns_label_pending_items(tmp_path):
    options = CompareOptions()
    ResultStore.create_or_open(
        tmp_path / "r.zarr", n_items=N, chunk=CHUNK, fields=result_fields(options, manifest=True), attrs={},
        config={}, initial={"reference_index": np.arange(N), "moving_index": np.arange(N) + 1,
                            "reference_path": [f"a{i}.png" for i in range(N)],
                            "moving_path": [f"b{i}.png" for i in range(N)]},
    )
    rows = list(export_rows(ResultStore.open(tmp_path / "r.zarr")))
    assert (rows[7]["reference"], rows[7]["moving"], rows[7]["status"]) == ("a7.png", "b7.png", "pending")


def test_initial_columns_from_a_function_are_made_only_by_the_creator(tmp_path):
    """A resume opens the store without labelling every item again (a 400k-item run spent 2 s on
    it): the function is called once, by the process that creates the store."""
    calls = []

    def initial():
        calls.append(1)
        return {"reference_index": np.arange(N), "moving_index": np.arange(N) + 1}

    a = make(tmp_path / "r.zarr", initial=initial)
    b = make(tmp_path / "r.zarr", initial=initial)
    assert calls == [1] and a.created_here and not b.created_here
    cols = b.read(["reference_index", "moving_index"])
    assert cols["reference_index"].tolist() == list(range(N))
    assert cols["moving_index"].tolist() == list(range(1, N + 1))


def test_summary(tmp_path):
    store = make(tmp_path / "r.zarr")
    for c in (0, 1, 2):
        store.write_chunk(c, *expected_chunk(store, c))
    s = store.summary(max_failures=1)
    items = np.arange(15)
    failed = int(np.count_nonzero(items % 7 == 3))
    assert s["failed"] == failed and s["done"] == 15 - failed and s["pending"] == N - 15
    assert s["chunks_finished"] == 3 and s["n_chunks"] == 5
    assert s["failures"] == [{"item": 3, "error": "item 3 broke"}]
    assert s["created"] == store.attrs["created"] and s["last_write"] is not None


def test_metric_columns_follow_the_options():
    assert metric_columns() == list(METRIC_COLUMNS)
    cols = metric_columns(CompareOptions(metrics=("rmse", "histogram")))
    assert cols[:3] == ["mse", "rmse", "psnr"] and "hist_js" in cols and cols[-1] == "pixels"
    assert "confidence" not in cols and "confidence" in metric_columns(CompareOptions(align=True))


def test_comparison_columns_from_compare():
    from gpudiff import compare

    rng = np.random.default_rng(0)
    a = rng.integers(0, 255, (32, 32), dtype=np.uint8)
    b = np.roll(a, 2, axis=1)
    options = CompareOptions(align=True, backend="numpy")
    r = compare(a, b, options=options)
    names = [f.name for f in result_fields(options) if f.dtype == "float64"]
    cols = comparison_columns([r, None, r.to_dict()], names)
    assert cols["mse"][0] == r.mse and math.isnan(cols["mse"][1]) and cols["mse"][2] == r.mse
    assert cols["hist_kl"][0] == r.histogram["kl"]
    assert cols["pixels"][0] == r.pixels and cols["zero_norm"][0] == r.zero_norm
    np.testing.assert_array_equal(cols["shift"][0], r.shift)
    assert cols["shift"].shape == (3, 2)


# ---- export ----------------------------------------------------------------------------------


def _written_store(tmp_path, **kw):
    store = make(tmp_path / "r.zarr", **kw)
    for c in (3, 0, 1):
        store.write_chunk(c, *expected_chunk(store, c))
    return store


def test_export_csv_equals_the_written_values(tmp_path):
    store = _written_store(tmp_path)
    buf = io.StringIO()
    assert export_csv(store, buf) == N
    rows = list(csv.DictReader(io.StringIO(buf.getvalue())))
    assert list(rows[0]) == export_columns(store)
    assert export_columns(store)[:5] == ["item", "reference", "moving", "status", "error"]
    assert export_columns(store)[-2:] == ["shift_dy", "shift_dx"]
    got = store.read()
    for i, row in enumerate(rows):
        assert int(row["item"]) == i
        assert row["status"] == {0: "pending", 1: "done", 2: "failed"}[int(got["status"][i])]
        assert row["error"] == str(got["error"][i])
        if got["status"][i] == 0:
            assert row["reference"] == row["moving"] == row["mse"] == row["shift_dy"] == ""
            continue
        assert int(row["reference"]) == got["reference_index"][i] and int(row["moving"]) == i + 1
        for name in METRIC_COLUMNS:
            assert float(row[name]) == got[name][i]  # repr: exact
        assert float(row["shift_dy"]) == got["shift"][i, 0] and float(row["shift_dx"]) == got["shift"][i, 1]
    # to a path, as well
    assert export_csv(store, tmp_path / "out.csv") == N
    assert (tmp_path / "out.csv").read_text() == buf.getvalue()


def test_export_rows_manifest_uses_paths(tmp_path):
    store = make(tmp_path / "r.zarr", options=CompareOptions(), manifest=True)
    cols, status, errors = expected_chunk(store, 0)
    cols |= {
        "reference_path": [f"r{i}.tif" for i in range(5)],
        "moving_path": [f"m{i}.tif" for i in range(5)],
        "id": [f"pair-{i}" for i in range(5)],
    }
    store.write_chunk(0, cols, status, errors)
    rows = list(export_rows(store))
    assert list(rows[0])[:6] == ["item", "reference", "moving", "id", "status", "error"]
    assert rows[2]["reference"] == "r2.tif" and rows[2]["id"] == "pair-2" and rows[2]["status"] == "done"
    assert rows[3]["status"] == "failed" and rows[3]["error"] == "item 3 broke"
    assert "shift_dy" not in rows[0]


def test_export_parquet(tmp_path):
    pq = pytest.importorskip("pyarrow.parquet")
    store = _written_store(tmp_path)
    assert export_parquet(store, tmp_path / "out.parquet") == N
    table = pq.read_table(tmp_path / "out.parquet")
    assert table.column_names == export_columns(store)
    d = table.to_pydict()
    rows = list(export_rows(store))
    for name in table.column_names:
        assert d[name] == [r[name] for r in rows], name
    assert d["mse"][10] is None and d["reference"][10] is None  # pending: nulls
    meta = json.loads(table.schema.metadata[b"gpudiff"])
    assert meta["n_items"] == N


def test_export_parquet_without_pyarrow(tmp_path, monkeypatch):
    import builtins

    real = builtins.__import__

    def fake(name, *a, **k):
        if name.startswith("pyarrow"):
            raise ImportError("no pyarrow")
        return real(name, *a, **k)

    store = make(tmp_path / "r.zarr")
    monkeypatch.setattr(builtins, "__import__", fake)
    with pytest.raises(InputError, match="pip install pyarrow"):
        export_parquet(store, tmp_path / "x.parquet")


def test_aux_file_names_are_known_to_the_remote_store_housekeeping():
    """Every file the engine keeps beside the arrays is one the remote creation and --overwrite
    count as the store's own (else a half-removed store's stamps would read as someone's data)."""
    from gpudiff.engine._passes import _BG_STATE, _EVENTS_DONE
    from gpudiff.engine._store import SOURCE_ACCEPTED, SOURCE_STAMPS
    from gpudiff.engine._zarrfiles import _AUX_NAMES

    assert {_BG_STATE, _EVENTS_DONE, SOURCE_STAMPS, SOURCE_ACCEPTED} <= set(_AUX_NAMES)
