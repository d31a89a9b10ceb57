"""Result stores on S3 (a real moto server on loopback, spoken to over HTTP by s3fs): a run into
``s3://bucket/r.zarr`` gives the store a local run gives, value for value; a run killed (SIGKILL) at
random points, or stopped (SIGTERM, exit 75), resumes to it; two shards fill one remote store,
one after the other or at once; status, export and report read it without showing a secret; and
every failure (missing bucket, unreachable endpoint, wrong credentials, a prefix holding something
else, bad options) is one line and exit code 2, in seconds.

The oracle is the local store of the same real frames (CDnet traffic), made by the same command.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from gpudiff.cli._main import main
from gpudiff.engine._store import ResultStore

ROOT = Path(__file__).resolve().parents[3]
ARGS = ["--metrics", "manhattan,mse,ssim,histogram", "--backend", "numpy", "--no-progress"]
#: Attributes that differ between two runs of the same command (when, and with which versions).
VOLATILE = {"created", "versions", "gpudiff_version"}


def assert_same_store(a: ResultStore, b: ResultStore) -> None:
    """Every array (status, error, metrics, labels, maps) equal value for value (NaN = NaN), and the
    attributes equal but for when and with which versions they were made."""
    assert (a.n_items, a.chunk) == (b.n_items, b.chunk)
    assert a.names == b.names
    for name in a.names:
        x, y = a.read([name])[name], b.read([name])[name]
        if x.dtype.kind == "f":
            np.testing.assert_array_equal(x, y, err_msg=name)  # treats NaN as equal
        else:
            assert x.tolist() == y.tolist(), name
    ka = {k: v for k, v in a.attrs.items() if k not in VOLATILE}
    kb = {k: v for k, v in b.attrs.items() if k not in VOLATILE}
    assert ka == kb


def s3fs_of(options):
    import s3fs

    return s3fs.S3FileSystem(**options, skip_instance_cache=True)


def env_with(options) -> dict:
    return {**os.environ, "GPUDIFF_STORAGE_OPTIONS": json.dumps(options), "PYTHONPATH": str(ROOT)}


def gpudiff_proc(argv, env, **kw):
    return subprocess.Popen([sys.executable, "-m", "gpudiff", *argv], env=env, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def wait_for_status_object(fs, store_key: str, proc, timeout: float = 60.0) -> bool:
    """Poll the bucket until the first status chunk object of the store exists; False if the process
    ended first."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            return False
        fs.invalidate_cache()
        try:
            if fs.ls(f"{store_key}/status/c", detail=False):
                return True
        except FileNotFoundError:
            pass
        time.sleep(0.02)
    raise AssertionError("no status object appeared")


@pytest.fixture
def clip(cdnet_clip):
    return cdnet_clip(13)  # 12 consecutive pairs of real frames


@pytest.fixture
def local_store(clip, tmp_path):
    """``local_store(*extra)``: the store a local run of ``clip`` gives (the oracle)."""
    made = {}

    def make(*extra):
        key = tuple(extra)
        if key not in made:
            out = tmp_path / f"local-{len(made)}.zarr"
            assert main(["run", str(clip), "--out", str(out), *ARGS, *extra]) == 0
            made[key] = ResultStore.open(out)
        return made[key]

    return make


# ---- (a) a run into S3 gives the local store ------------------------------------------------------


def test_a_run_into_s3_gives_the_store_a_local_run_gives(s3, clip, local_store, capsys):
    options, bucket = s3
    url = f"s3://{bucket}/results/plate0.zarr"
    t0 = time.perf_counter()
    assert main(["run", str(clip), "--out", url, "--chunk", "4", *ARGS]) == 0
    remote_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    local = local_store("--chunk", "4")
    local_s = time.perf_counter() - t0
    store = ResultStore.open(url)
    assert store.is_remote and store.url == url
    assert_same_store(local, store)
    assert store.summary()["done"] == 12
    # rerun: nothing to do, nothing rewritten
    assert main(["run", str(clip), "--out", url, "--chunk", "4", *ARGS]) == 0
    assert "0 chunks run, 3 already done" in capsys.readouterr().err
    print(f"12 items, chunk 4: remote {remote_s:.2f} s, local {local_s:.2f} s")


def test_a_run_into_s3_from_the_command_line_with_the_options_in_the_environment(s3, clip, local_store):
    options, bucket = s3
    url = f"s3://{bucket}/cli.zarr"
    r = subprocess.run([sys.executable, "-m", "gpudiff", "run", str(clip), "--out", url, "--chunk", "5", *ARGS],
                       env=env_with(options), cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert_same_store(local_store("--chunk", "5"), ResultStore.open(url))


def test_a_remote_store_pickles_with_its_storage_options_and_never_shows_them(s3):
    import pickle

    options, bucket = s3
    url = f"s3://{bucket}/p.zarr"
    from gpudiff.engine._schema import Field

    store = ResultStore.create_or_open(url, n_items=5, chunk=2, fields=[Field("mse", "float64")],
                                       storage_options=options)
    store.write_chunk(1, {"mse": np.array([1.0, 2.0])}, np.ones(2, np.uint8))
    copy = pickle.loads(pickle.dumps(store))
    np.testing.assert_array_equal(copy.read(["mse"])["mse"], [np.nan, np.nan, 1.0, 2.0, np.nan])
    assert options["secret"] not in repr(store) and options["secret"] not in repr(store.ref())
    assert store.clean_stale_temporaries(0) == 0  # an object store has no temporaries
    assert store.summary()["last_write"] is not None
    store.write_aux("state.bin", b"abc")
    assert store.read_aux("state.bin") == b"abc" and store.read_aux("missing") is None
    store.remove_aux("state.bin")
    assert store.read_aux("state.bin") is None


# ---- (b) SIGKILL at random points, then resume ----------------------------------------------------


@pytest.mark.slow
def test_a_remote_run_killed_at_random_points_resumes_to_the_uninterrupted_store(s3, clip, local_store):
    options, bucket = s3
    fs = s3fs_of(options)
    url = f"s3://{bucket}/killed.zarr"
    argv = ["run", str(clip), "--out", url, "--chunk", "2", "--workers", "1", *ARGS]
    rng = random.Random(12)
    kills = 0
    for attempt in range(4):
        proc = gpudiff_proc(argv, env_with(options))
        if attempt == 0:
            appeared = wait_for_status_object(fs, f"{bucket}/killed.zarr", proc)
        else:  # a random moment: during start-up, creation or the chunk writes
            time.sleep(rng.uniform(0.5, 4.0))
            appeared = proc.poll() is None
        if appeared:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.communicate(timeout=120)
    assert kills >= 1
    # whatever state the kills left, the store is complete chunks and pending ones: resume
    assert main(argv) == 0
    assert_same_store(local_store("--chunk", "2"), ResultStore.open(url))


# ---- (c) shards into one remote store -------------------------------------------------------------


def test_two_shards_one_after_the_other_fill_one_remote_store(s3, clip, local_store):
    options, bucket = s3
    url = f"s3://{bucket}/shards.zarr"
    for shard in ("0/2", "1/2"):
        assert main(["run", str(clip), "--out", url, "--chunk", "3", "--shard", shard, *ARGS]) == 0
    assert_same_store(local_store("--chunk", "3"), ResultStore.open(url))


@pytest.mark.slow
def test_two_shards_at_once_race_to_create_and_fill_one_remote_store(s3, clip, local_store):
    options, bucket = s3
    url = f"s3://{bucket}/race.zarr"
    procs = [gpudiff_proc(["run", str(clip), "--out", url, "--chunk", "3", "--shard", s, *ARGS], env_with(options))
             for s in ("0/2", "1/2")]
    for p in procs:
        _, err = p.communicate(timeout=180)
        assert p.returncode == 0, err
    store = ResultStore.open(url)
    assert_same_store(local_store("--chunk", "3"), store)
    assert store.summary()["pending"] == 0


# ---- (d) SIGTERM: exit 75, resume ----------------------------------------------------------------


@pytest.mark.slow
def test_sigterm_during_a_remote_run_exits_75_and_the_rerun_completes_it(s3, cdnet_clip, tmp_path):
    options, bucket = s3
    fs = s3fs_of(options)
    frames = cdnet_clip(40)
    url = f"s3://{bucket}/term.zarr"
    argv = ["run", str(frames), "--out", url, "--chunk", "1", "--workers", "1", *ARGS]
    proc = gpudiff_proc(argv, env_with(options))
    assert wait_for_status_object(fs, f"{bucket}/term.zarr", proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 75, err
    assert "interrupted" in err
    assert ResultStore.open(url).summary()["pending"] > 0
    assert main(argv) == 0
    local = tmp_path / "term-local.zarr"
    assert main(["run", str(frames), "--out", str(local), "--chunk", "1", *ARGS]) == 0
    assert_same_store(ResultStore.open(local), ResultStore.open(url))


# ---- (e) status, export, report; no secret anywhere ------------------------------------------------


@pytest.mark.slow
def test_status_export_and_report_of_a_remote_store_show_no_secret(s3_server, clip, tmp_path, capsys, monkeypatch):
    from tests._servers import new_bucket, s3_options

    key, secret = "AKIAGPUDIFFKEY0000042", "gpudiff-secret-do-not-show-7c1e"
    options = s3_options(s3_server.endpoint, key=key, secret=secret)
    monkeypatch.delenv("GPUDIFF_STORAGE_OPTIONS", raising=False)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    bucket = new_bucket(options)
    url = f"s3://{bucket}/shown.zarr"
    so = ["--storage-options", json.dumps(options)]
    assert main(["run", str(clip), "--out", url, "--chunk", "4", *so, *ARGS]) == 0
    assert main(["status", url, *so]) == 0
    assert main(["status", url, "--json", *so]) == 0
    csv = tmp_path / "out.csv"
    assert main(["export", url, "-o", str(csv), *so]) == 0
    assert main(["export", url, *so]) == 0
    html = tmp_path / "report.html"
    assert main(["report", url, "--html", str(html), "--top", "2", *so]) == 0
    out, err = capsys.readouterr()
    assert f"{url}: 12 items: 12 done, 0 failed, 0 pending" in out
    rows = csv.read_text().splitlines()
    assert len(rows) == 13 and rows[0].startswith(("item", "reference_index"))
    assert html.stat().st_size > 10_000
    store = ResultStore.open(url, storage_options=options)
    shown = out + err + json.dumps(store.attrs) + html.read_text() + csv.read_text() + repr(store)
    # and not in any object of the store either
    fs = s3fs_of(options)
    shown += "".join(fs.cat_file(k).decode("latin-1") for k in fs.find(f"{bucket}/shown.zarr"))
    for s in (key, secret):
        assert s not in shown


# ---- (f) failures: one line, exit 2, in seconds ---------------------------------------------------


def one_line_error(err: str, command: str) -> str:
    assert "Traceback" not in err, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith(f"gpudiff {command}: error: "), err
    return lines[0]


def run_cli(argv, env, timeout=60):
    t0 = time.monotonic()
    r = subprocess.run([sys.executable, "-m", "gpudiff", *argv], env=env, cwd=ROOT, capture_output=True, text=True,
                       timeout=timeout)
    return r, time.monotonic() - t0


def test_out_to_a_missing_bucket_is_one_line(s3, clip, capsys):
    t0 = time.monotonic()
    assert main(["run", str(clip), "--out", "s3://gpudiff-no-such-bucket-4242/r.zarr", *ARGS]) == 2
    assert time.monotonic() - t0 < 20
    line = one_line_error(capsys.readouterr().err, "run")
    assert "no such bucket" in line
    assert main(["status", "s3://gpudiff-no-such-bucket-4242/r.zarr"]) == 2
    assert "no such result store" in one_line_error(capsys.readouterr().err, "status")


@pytest.mark.slow
def test_an_unreachable_endpoint_is_one_line_in_seconds(clip, s3):
    from tests._servers import free_port, s3_options

    options = s3_options(f"http://127.0.0.1:{free_port()}")
    for argv, cmd in (([("run"), str(clip), "--out", "s3://bucket/r.zarr", *ARGS], "run"),
                      (["status", "s3://bucket/r.zarr"], "status")):
        r, seconds = run_cli(argv, env_with(options))
        assert r.returncode == 2, r.stderr
        assert seconds < 20
        assert "cannot reach the endpoint" in one_line_error(r.stderr, cmd)


@pytest.mark.slow
def test_wrong_credentials_are_one_line(clip, tmp_path, monkeypatch):
    """A second moto server that checks credentials after its first request (the bucket's creation):
    moto's ``INITIAL_NO_AUTH_ACTION_COUNT``. The wrong key is refused (InvalidAccessKeyId, 403)."""
    pytest.importorskip("moto")
    pytest.importorskip("s3fs")
    from tests._servers import _wait_port, free_port, new_bucket, s3_options

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    port = free_port()
    env = {**os.environ, "MOTO_ALLOW_NONEXISTENT_REGION": "true", "INITIAL_NO_AUTH_ACTION_COUNT": "1"}
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    try:
        _wait_port(port, 60, server)
        options = s3_options(f"http://127.0.0.1:{port}", key="AKIAWRONGKEY00000000", secret="wrong-secret")
        bucket = new_bucket(options)  # the one free request
        for argv, cmd in (([("run"), str(clip), "--out", f"s3://{bucket}/r.zarr", *ARGS], "run"),
                          (["status", f"s3://{bucket}/r.zarr"], "status")):
            r, seconds = run_cli(argv, env_with(options))
            assert r.returncode == 2, r.stderr
            assert seconds < 20
            line = one_line_error(r.stderr, cmd)
            assert "access denied" in line
            assert "wrong-secret" not in r.stderr
    finally:
        server.terminate()
        server.wait(10)


def test_overwrite_of_a_prefix_holding_something_else_is_refused(s3, clip, capsys):
    options, bucket = s3
    fs = s3fs_of(options)
    fs.pipe_file(f"{bucket}/data/notes.txt", b"precious")
    for extra in ([], ["--overwrite"]):
        assert main(["run", str(clip), "--out", f"s3://{bucket}/data", *ARGS, *extra]) == 2
        line = one_line_error(capsys.readouterr().err, "run")
        assert "is not a gpudiff result store" in line
    fs.invalidate_cache()
    assert fs.cat_file(f"{bucket}/data/notes.txt") == b"precious"


def test_overwrite_of_a_remote_store_starts_again(s3, clip, capsys):
    options, bucket = s3
    url = f"s3://{bucket}/again.zarr"
    assert main(["run", str(clip), "--out", url, "--chunk", "4", *ARGS]) == 0
    first = ResultStore.open(url).attrs["created"]
    capsys.readouterr()
    assert main(["run", str(clip), "--out", url, "--chunk", "6", *ARGS]) == 2  # another chunking: refused
    assert "chunk = 4" in one_line_error(capsys.readouterr().err, "run")
    time.sleep(1.1)
    assert main(["run", str(clip), "--out", url, "--chunk", "6", "--overwrite", *ARGS]) == 0
    store = ResultStore.open(url)
    assert store.chunk == 6 and store.attrs["created"] != first and store.summary()["done"] == 12


def test_bad_storage_options_json_is_one_line(clip, tmp_path, capsys):
    for argv in (["run", str(clip), "--out", "s3://b/r.zarr", "--storage-options", "{not json"],
                 ["status", "s3://b/r.zarr", "--storage-options", "[1, 2]"],
                 ["export", "s3://b/r.zarr", "--storage-options", "{"],
                 ["report", "s3://b/r.zarr", "--html", str(tmp_path / "r.html"), "--storage-options", "{"]):
        assert main(argv) == 2
        assert "--storage-options" in one_line_error(capsys.readouterr().err, argv[0])


def test_a_store_on_a_web_server_is_refused_as_read_only(clip, http_root, capsys):
    server, root = http_root
    assert main(["run", str(clip), "--out", f"{server.url}/r.zarr"]) == 2
    assert "read-only" in one_line_error(capsys.readouterr().err, "run")
    assert not any(root.iterdir())  # nothing was written there


def test_a_url_keep_dir_is_one_line(clip, capsys):
    assert main(["dedup", str(clip), "--keep-dir", "s3://bucket/kept"]) == 2
    assert "must be a local folder" in one_line_error(capsys.readouterr().err, "dedup")


# ---- a store that stops answering mid-run: one line, finished chunks kept ------------------------


def test_a_failed_chunk_write_is_one_line_and_leaves_that_chunk_pending(s3, s3_server):
    from gpudiff.engine._schema import Field
    from gpudiff.errors import InputError
    from tests._servers import LatencyProxy

    options, bucket = s3
    url = f"s3://{bucket}/cut.zarr"
    proxy = LatencyProxy(int(s3_server.endpoint.rsplit(":", 1)[1]), 0.0).start()
    via_proxy = {**options, "endpoint_url": proxy.url}
    store = ResultStore.create_or_open(url, n_items=6, chunk=2, fields=[Field("mse", "float64")],
                                       storage_options=via_proxy)
    store.write_chunk(0, {"mse": np.array([1.0, 2.0])}, np.ones(2, np.uint8))
    proxy.stop()  # the endpoint goes away (connection refused from now on)
    t0 = time.monotonic()
    with pytest.raises(InputError) as e:
        for c in (1, 2):  # an open connection may carry one more request: the next one fails
            store.write_chunk(c, {"mse": np.array([3.0, 4.0])}, np.ones(2, np.uint8))
    assert time.monotonic() - t0 < 20
    msg = str(e.value)
    assert "\n" not in msg and "writing chunk" in msg and "finished chunks are kept" in msg
    assert options["secret"] not in msg
    fresh = ResultStore.open(url, storage_options=options)
    status = fresh.read(["status"])["status"]
    assert status[:2].tolist() == [1, 1]  # chunk 0 kept
    failed_chunk = int(msg.split("writing chunk ")[1].split()[0].rstrip(":;)"))
    assert status[fresh.chunk_slice(failed_chunk)].tolist() == [0, 0]  # the failed one pending
    assert fresh.pending_chunks(range(3)) == [c for c in range(3) if c != 0 and not (status[fresh.chunk_slice(c)] == 1).all()]


@pytest.mark.slow
def test_a_batch_whose_store_goes_away_fails_in_one_line_and_the_rerun_completes_it(s3, s3_server, cdnet_clip,
                                                                                     tmp_path):
    from tests._servers import LatencyProxy

    options, bucket = s3
    fs = s3fs_of(options)
    frames = cdnet_clip(30)
    url = f"s3://{bucket}/gone.zarr"
    argv = ["run", str(frames), "--out", url, "--chunk", "1", "--workers", "1", *ARGS]
    proxy = LatencyProxy(int(s3_server.endpoint.rsplit(":", 1)[1]), 0.0).start()
    proc = gpudiff_proc(argv, env_with({**options, "endpoint_url": proxy.url}))
    assert wait_for_status_object(fs, f"{bucket}/gone.zarr", proc)
    proxy.stop()
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2, err
    line = [ln for ln in err.splitlines() if ": error: " in ln]
    assert len(line) == 1 and "Traceback" not in err, err
    assert "finished chunks are kept" in line[0] or "cannot reach" in line[0]
    done_before = ResultStore.open(url).summary()["done"]
    assert done_before >= 1  # the chunks written before the store went away are there
    assert main(argv) == 0
    local = tmp_path / "gone-local.zarr"
    assert main(["run", str(frames), "--out", str(local), "--chunk", "1", *ARGS]) == 0
    assert_same_store(ResultStore.open(local), ResultStore.open(url))


# ---- creation killed before its commit; dedup and parquet ----------------------------------------


def test_a_creation_killed_before_its_root_object_is_no_store_and_the_rerun_creates_it(s3, clip, local_store,
                                                                                        monkeypatch, capsys):
    from gpudiff.engine import _zarrfiles

    options, bucket = s3
    url = f"s3://{bucket}/half.zarr"

    class Killed(BaseException):
        pass

    def die(*a, **k):
        raise Killed  # the process dies after uploading every object but the root

    monkeypatch.setattr(_zarrfiles, "_commit_root", die)
    with pytest.raises(Killed):
        main(["run", str(clip), "--out", url, "--chunk", "4", *ARGS])
    monkeypatch.undo()
    monkeypatch.setenv("GPUDIFF_STORAGE_OPTIONS", json.dumps(options))
    fs = s3fs_of(options)
    left = fs.find(f"{bucket}/half.zarr")
    assert left and not any(k.endswith("half.zarr/zarr.json") for k in left)
    capsys.readouterr()
    assert main(["status", url]) == 2  # no root object: no store for readers
    assert "no zarr.json" in one_line_error(capsys.readouterr().err, "status")
    assert main(["run", str(clip), "--out", url, "--chunk", "4", *ARGS]) == 0
    assert_same_store(local_store("--chunk", "4"), ResultStore.open(url))


def test_dedup_into_s3_gives_the_local_dedup_store(s3, clip, tmp_path):
    options, bucket = s3
    url = f"s3://{bucket}/dedup.zarr"
    local = tmp_path / "dedup.zarr"
    for out in (str(local), url):
        assert main(["dedup", str(clip), "--out", out, "--chunk", "4", "--backend", "numpy"]) in (0, 1)
    assert_same_store(ResultStore.open(local), ResultStore.open(url))


def test_export_parquet_of_a_remote_store_equals_the_local_export(s3, clip, local_store, tmp_path):
    pq = pytest.importorskip("pyarrow.parquet")
    options, bucket = s3
    url = f"s3://{bucket}/pq.zarr"
    assert main(["run", str(clip), "--out", url, "--chunk", "4", *ARGS]) == 0
    local = local_store("--chunk", "4")
    a, b = tmp_path / "local.parquet", tmp_path / "remote.parquet"
    assert main(["export", local.url, "--format", "parquet", "-o", str(a)]) == 0
    assert main(["export", url, "--format", "parquet", "-o", str(b)]) == 0
    assert pq.read_table(a).equals(pq.read_table(b))


def test_of_racing_creators_exactly_one_commits_the_root_object(s3):
    import threading

    from gpudiff.engine._schema import Field

    options, bucket = s3
    url = f"s3://{bucket}/racing.zarr"
    barrier = threading.Barrier(6)
    stores, errors = [], []

    def create():
        barrier.wait()
        try:
            stores.append(ResultStore.create_or_open(
                url, n_items=30, chunk=4, fields=[Field("mse", "float64"), Field("moving_index", "int64", fill=-1)],
                config={"same": True}, initial={"moving_index": np.arange(1, 31)}, storage_options=options))
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=create) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    assert sum(s.created_here for s in stores) == 1
    assert len({s.attrs["created"] for s in stores}) == 1  # everyone opened the one committed root
    np.testing.assert_array_equal(ResultStore.open(url).read(["moving_index"])["moving_index"], np.arange(1, 31))


def test_storage_options_are_no_part_of_a_run_configuration():
    from gpudiff.engine._runner import RunConfig

    secret = {"key": "AKIAHIDDEN", "secret": "hidden-secret"}
    a = RunConfig(source="in", out="s3://b/r.zarr", storage_options=secret)
    b = RunConfig(source="in", out="s3://b/r.zarr")
    assert a == b  # not compared: the same run whatever the credentials
    assert "hidden" not in repr(a) and "AKIAHIDDEN" not in repr(a)


# ---- remote source and remote store together -------------------------------------------------------


def _upload_clip(options, bucket, clip) -> str:
    fs = s3fs_of(options)
    for f in sorted(Path(clip).iterdir()):
        fs.put_file(str(f), f"{bucket}/frames/{f.name}")
    return f"s3://{bucket}/frames/"


def _same_but_source(local: ResultStore, remote: ResultStore) -> None:
    """Equal stores but for the source's identity (a URL and ETags against a path and mtimes)."""
    for name in local.names:
        x, y = local.read([name])[name], remote.read([name])[name]
        if x.dtype.kind == "f":
            np.testing.assert_array_equal(x, y, err_msg=name)
        else:
            if name.endswith("_name"):  # frame labels: the file's name either way
                x = np.array([Path(str(v)).name for v in x], dtype=object)
                y = np.array([str(v).rsplit("/", 1)[-1] for v in y], dtype=object)
            assert x.tolist() == y.tolist(), name
    def attrs(store):
        out = {k: v for k, v in store.attrs.items() if k not in VOLATILE | {"source"}}
        out["config"] = {k: v for k, v in out["config"].items() if k != "source"}
        return out

    assert attrs(local) == attrs(remote)


@pytest.mark.slow
def test_frames_from_s3_into_a_store_on_s3_with_every_sequence_pass(s3, clip, tmp_path):
    options, bucket = s3
    src = _upload_clip(options, bucket, clip)
    seq = ["--align", "--flow", "lk", "--corrupt", "--cuts", "--background", "--chunk", "4"]
    local = tmp_path / "local.zarr"
    assert main(["run", str(clip), "--out", str(local), *ARGS, *seq]) == 0
    url = f"s3://{bucket}/r.zarr"
    assert main(["run", src, "--out", url, *ARGS, *seq]) == 0
    remote = ResultStore.open(url)
    _same_but_source(ResultStore.open(local), remote)
    fp = remote.attrs["source"]
    assert fp["spec"] == src.rstrip("/") and fp["count"] == 13
    # a re-uploaded frame (other bytes) changes the fingerprint: the resume is refused, not mixed
    fs = s3fs_of(options)
    first = sorted(fs.ls(f"{bucket}/frames/"))[0]
    data = fs.cat_file(first)
    fs.pipe_file(first, data[:-2] + bytes([data[-2] ^ 1]) + data[-1:])
    assert main(["run", src, "--out", url, *ARGS, *seq]) == 2


@pytest.mark.slow
def test_a_distributed_run_gets_its_storage_options_from_the_command_line_only(s3, clip, local_store,
                                                                              monkeypatch):
    options, bucket = s3
    src = _upload_clip(options, bucket, clip)
    monkeypatch.delenv("GPUDIFF_STORAGE_OPTIONS")  # the workers must get them from the run
    url = f"s3://{bucket}/dist.zarr"
    assert main(["run", src, "--out", url, "--chunk", "4", "--scheduler", "local:2",
                 "--storage-options", json.dumps(options), *ARGS]) == 0
    _same_but_source(local_store("--chunk", "4"), ResultStore.open(url, storage_options=options))
