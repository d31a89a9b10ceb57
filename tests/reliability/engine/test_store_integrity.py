"""Store integrity: `gpudiff status --verify` finds finished chunks whose data was lost (truncated,
deleted, garbled: a crash without atomic rename, a power loss) and re-marks them pending, so a
rerun ends identical to an uninterrupted run; status reports unfinished sequence passes; killed
writers' temporaries are cleaned; a full disk, a read-only store and duplicated / re-counted shards
end in one line and a store that a rerun completes identically."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

from gpudiff.cli._main import main
from gpudiff.engine import _verify
from gpudiff.engine._store import ResultStore
from tests._stores import assert_same_store, calcium_stack, cli

BASE = ["--backend", "numpy", "--no-progress"]


def _run(src, out, *extra):
    return main(["run", str(src), "--out", str(out), *BASE, *extra])


def _error_lines(err: str) -> list[str]:
    return [ln for ln in err.splitlines() if "error" in ln.lower() or "Traceback" in ln or "Exception" in ln]


# ---- A: verify ------------------------------------------------------------------------------------


def _damage(out: Path):
    """Truncate a metric chunk (3), delete a map chunk (item 5: chunk 1), garble an error chunk (7)
    and a status chunk (8). Returns the store chunks damaged."""
    f = out / "manhattan" / "c" / "3"
    f.write_bytes(f.read_bytes()[:7])
    (out / "maps" / "diff" / "c" / "5" / "0" / "0").unlink()
    (out / "error" / "c" / "7").write_bytes(b"\x00garbage bytes\xff" * 3)
    (out / "status" / "c" / "8").write_bytes(b"not zstd")
    return {1, 3, 7, 8}


def test_verify_finds_truncated_deleted_garbled_chunks_and_a_rerun_restores_the_store(tmp_path, data_dir, capsys):
    src = calcium_stack(tmp_path, data_dir, n=41)
    ref, out = tmp_path / "ref.zarr", tmp_path / "out.zarr"
    args = ("--chunk", "4", "--save-maps", "diff")
    assert _run(src, ref, *args) == 0
    assert _run(src, out, *args) == 0
    capsys.readouterr()
    assert main(["status", "--verify", str(out)]) == 0  # clean
    assert "every finished chunk is complete" in capsys.readouterr().out
    damaged = _damage(out)
    assert main(["status", "--verify", str(out)]) == 1
    text = capsys.readouterr().out
    lines = text.strip().splitlines()
    assert len(lines) == len(damaged) + 1  # one line per finding, and the summary
    for c, what in ((1, "maps/diff missing"), (3, "manhattan unreadable"), (7, "error unreadable"),
                    (8, "status unreadable")):
        assert any(f"chunk {c} " in ln and what in ln and "re-marked pending" in ln for ln in lines), (c, text)
    assert "4 chunks re-marked pending" in lines[-1]
    st = ResultStore.open(str(out)).read(["status", "error"])
    pend = {i // 4 for i in np.flatnonzero(st["status"] == 0)}
    assert pend == damaged and set(st["error"][st["status"] == 0]) == {""}
    assert main(["status", "--verify", str(out)]) == 0  # nothing finished is damaged any more
    capsys.readouterr()
    assert _run(src, out, *args) == 0
    assert "4 chunks run" in capsys.readouterr().err  # exactly the damaged chunks were recomputed
    assert_same_store(ref, out, maps=True)
    assert main(["status", "--verify", str(out)]) == 0


def test_verify_json_and_a_damaged_pass_column_resets_that_pass(tmp_path, data_dir, capsys):
    src = calcium_stack(tmp_path, data_dir, n=30)
    ref, out = tmp_path / "ref.zarr", tmp_path / "out.zarr"
    args = ("--chunk", "5", "--corrupt")
    assert _run(src, ref, *args) == 0
    assert _run(src, out, *args) == 0
    (out / "corrupt_score" / "c" / "2").unlink()
    (out / "mse" / "c" / "4").write_bytes(b"")  # a 0-byte chunk file (rename without data)
    capsys.readouterr()
    assert main(["status", "--verify", "--json", str(out)]) == 1
    rep = json.loads(capsys.readouterr().out)
    assert rep["remarked"] == [4] and rep["passes_reset"] == ["corrupt/cuts"] and not rep["clean"]
    assert {f["chunk"] for f in rep["findings"]} == {2, 4}
    assert not (out / "events_done.json").exists()
    assert main(["status", "--json", str(out)]) == 0
    assert json.loads(capsys.readouterr().out)["passes_pending"] == ["corrupt/cuts"]
    assert _run(src, out, *args) == 0
    assert_same_store(ref, out, maps=True)


def test_verify_on_s3_finds_a_deleted_chunk_object(tmp_path, data_dir, s3, capsys):
    opts, bucket = s3
    src = calcium_stack(tmp_path, data_dir, n=25)
    ref = tmp_path / "ref.zarr"
    url = f"s3://{bucket}/r.zarr"
    assert _run(src, ref, "--chunk", "4") == 0
    assert _run(src, url, "--chunk", "4") == 0
    from gpudiff.io._remote import get_filesystem

    fs, root = get_filesystem(url, opts)
    fs.rm_file(f"{root}/ssim/c/2")
    capsys.readouterr()
    assert main(["status", "--verify", url]) == 1
    text = capsys.readouterr().out
    assert "chunk 2 " in text and "ssim missing" in text
    assert _run(src, url, "--chunk", "4") == 0
    assert_same_store(ref, url, maps=True, open_b={"storage_options": opts})
    assert main(["status", "--verify", url]) == 0


# ---- B: passes in status --------------------------------------------------------------------------


def test_status_reports_passes_that_shards_left_pending(tmp_path, data_dir, capsys):
    src = calcium_stack(tmp_path, data_dir, n=30)
    out = tmp_path / "s.zarr"
    for i in range(2):
        _run(src, out, "--chunk", "5", "--corrupt", "--background", "--shard", f"{i}/2")
    capsys.readouterr()
    assert main(["status", str(out)]) == 0
    head = capsys.readouterr().out.splitlines()[0]
    assert "0 pending" in head and "passes not finished: corrupt/cuts (not run), background (not run)" in head
    assert main(["status", "--json", str(out)]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["pending"] == 0 and s["passes_pending"] == ["corrupt/cuts", "background"]
    assert s["passes"]["background"] == {"state": "pending", "next_chunk": 0, "n_chunks": 6, "items_pending": 29}
    assert _run(src, out, "--chunk", "5", "--corrupt", "--background") == 0
    capsys.readouterr()
    main(["status", "--json", str(out)])
    s = json.loads(capsys.readouterr().out)
    assert s["passes_pending"] == [] and s["passes"]["background"]["state"] == "done"


def test_a_shard_leaving_the_corrupt_pass_to_a_final_run_exits_75(tmp_path, data_dir, capsys):
    """The corrupt/cuts decision needs the whole sequence: a shard's run is not finished (75, as with
    --background) until a run without --shard has made it; then 0."""
    src = calcium_stack(tmp_path, data_dir, n=30)
    out = tmp_path / "c.zarr"
    assert [_run(src, out, "--chunk", "5", "--corrupt", "--shard", f"{i}/2") for i in range(2)] == [75, 75]
    assert _run(src, out, "--chunk", "5", "--corrupt") == 0
    capsys.readouterr()
    main(["status", "--json", str(out)])
    assert json.loads(capsys.readouterr().out)["passes_pending"] == []


# ---- C: temporaries -------------------------------------------------------------------------------


def _partial(out: Path, array: str, key: str, age_s: float = 0) -> Path:
    p = out / array / "c" / f"{key}.{uuid.uuid4().hex}.partial"
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(b"half a chunk")
    if age_s:
        t = time.time() - age_s
        os.utime(p, (t, t))
    return p


def test_a_finished_run_removes_the_temporaries_of_killed_writers(tmp_path, data_dir, monkeypatch):
    monkeypatch.setattr(_verify, "PARTIAL_GRACE_S", 0.0)
    src = calcium_stack(tmp_path, data_dir, n=21)
    out = tmp_path / "r.zarr"
    assert _run(src, out, "--chunk", "5", "--shard", "0/2") == 0  # chunks 1, 3 left to shard 1
    old_other = _partial(out, "mse", "1", age_s=7200)  # shard 1's chunk, two hours old
    young_other = _partial(out, "mse", "3")  # shard 1's chunk, could be a live writer's
    mine = _partial(out, "mse", "2")  # shard 0's own chunk, left before this run started
    aux = out / f"background_state.pkl.tmp{os.getpid() + 1}"
    aux.write_bytes(b"x")
    creation = tmp_path / f".r.zarr.tmp-{uuid.uuid4().hex}"
    (creation / "status").mkdir(parents=True)
    t = time.time() - 7200
    os.utime(creation / "status", (t, t))
    os.utime(creation, (t, t))
    time.sleep(0.05)
    assert _run(src, out, "--chunk", "5", "--shard", "0/2") == 0
    assert not old_other.exists() and not creation.exists()  # stale: removed at the start
    assert young_other.exists() and aux.exists()  # another shard's, young: kept
    assert not mine.exists()  # this shard's own chunk, older than this run: removed at its end
    fresh_creation = tmp_path / f".r.zarr.tmp-{uuid.uuid4().hex}"  # a creation killed just now
    (fresh_creation / "status").mkdir(parents=True)
    time.sleep(0.05)
    assert _run(src, out, "--chunk", "5", "--shard", "1/2") == 0
    assert not young_other.exists()  # shard 1's own chunk 3, older than this run: removed
    assert fresh_creation.exists()  # a shard's run leaves creation temporaries to a whole run
    assert _run(src, out, "--chunk", "5") == 0  # owns every chunk: everything older than the run
    assert not young_other.exists() and not aux.exists() and not fresh_creation.exists()
    assert not list(out.rglob("*.partial"))


def test_an_unfinished_run_keeps_temporaries(tmp_path, data_dir, monkeypatch):
    monkeypatch.setattr(_verify, "PARTIAL_GRACE_S", 0.0)
    src = calcium_stack(tmp_path, data_dir, n=21)
    out = tmp_path / "r.zarr"
    args = ("--chunk", "5", "--shard", "0/2", "--background")  # a shard cannot run the background pass
    assert _run(src, out, *args) == 75
    p = _partial(out, "mse", "0")
    time.sleep(0.05)
    assert _run(src, out, *args) == 75  # not finished: nothing is cleaned but what is stale
    assert p.exists()


def test_the_grace_protects_a_young_partial_of_a_duplicate_writer(tmp_path, data_dir):
    src = calcium_stack(tmp_path, data_dir, n=11)
    out = tmp_path / "r.zarr"
    assert _run(src, out, "--chunk", "5") == 0
    p = _partial(out, "mse", "0", age_s=1)  # this run's own chunk, but younger than the grace
    assert _run(src, out, "--chunk", "5") == 0
    assert p.exists()


# ---- D: disk full ----------------------------------------------------------------------------------


@pytest.fixture
def small_fs(tmp_path):
    """``(dir, resize)``: a 2 MiB tmpfs (root only); ``resize(MiB)`` grows it ("space freed")."""
    d = tmp_path / "small"
    d.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(d)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {r.stderr.strip()}")

    def resize(mib: int):
        subprocess.run(["mount", "-o", f"remount,size={mib}m", str(d)], check=True)

    yield d, resize
    subprocess.run(["umount", "-l", str(d)], check=False)


def test_disk_full_during_run_one_line_exit_75_and_a_rerun_completes_identically(cdnet_clip, tmp_path,
                                                                                 small_fs, capsys):
    d, resize = small_fs
    src = cdnet_clip(30)
    ref, out = tmp_path / "ref.zarr", d / "r.zarr"
    args = ("--chunk", "3", "--save-maps", "diff")
    assert _run(src, ref, *args) == 0
    capsys.readouterr()
    assert _run(src, out, *args) == 75
    err = capsys.readouterr().err
    errs = _error_lines(err)
    assert len(errs) == 1 and "disk full" in errs[0] and "rerun" in errs[0], err
    assert main(["status", str(out)]) == 0  # the store stays readable
    assert "pending" in capsys.readouterr().out
    resize(64)
    assert _run(src, out, *args) == 0
    assert_same_store(ref, out, maps=True)
    assert not list(out.rglob("*.partial"))


def test_disk_full_in_worker_processes_is_one_line(cdnet_clip, tmp_path, small_fs):
    d, _ = small_fs
    src = cdnet_clip(24)
    p = cli("run", src, "--out", d / "r.zarr", *BASE, "--chunk", "2", "--save-maps", "diff",
             "--scheduler", "local:2")
    _, err = p.communicate(timeout=300)
    assert p.returncode == 75, err
    errs = _error_lines(err)
    assert len(errs) == 1 and "disk full" in errs[0], err


def _fill(d: Path, leave: int = 60_000) -> Path:
    st = os.statvfs(d)
    f = d / "filler"
    f.write_bytes(b"\0" * max(0, st.f_bavail * st.f_frsize - leave))
    return f


def _tree(d: Path) -> dict:
    return {p.name: p.read_bytes() for p in sorted(d.iterdir())}


def test_disk_full_in_dedup_keep_dir_and_watch(cdnet_clip, tmp_path, small_fs, capsys):
    d, _ = small_fs
    src = cdnet_clip(40)
    cmds = {"dedup": lambda tag: ["dedup", str(src), "--out", str(tmp_path / f"{tag}.zarr")],
            "watch": lambda tag: ["watch", str(src), "--once", "--settle", "0", "--state",
                                  str(tmp_path / f"{tag}.json")]}
    for name, cmd in cmds.items():
        ref_keep = tmp_path / f"ref-keep-{name}"
        assert main([*cmd("ref-" + name), "--keep-dir", str(ref_keep), "--backend", "numpy"]) == 0
        keep = d / f"keep-{name}"
        filler = _fill(d)
        capsys.readouterr()
        rc = main([*cmd(name), "--keep-dir", str(keep), "--backend", "numpy"])
        err = capsys.readouterr().err
        assert rc == 75, err
        errs = _error_lines(err)
        assert len(errs) == 1 and "disk full" in errs[0], err
        assert [p.name for p in keep.iterdir() if p.name.startswith(".") or p.stat().st_size == 0] == []
        assert len(list(keep.iterdir())) < len(list(ref_keep.iterdir()))
        filler.unlink()
        assert main([*cmd(name), "--keep-dir", str(keep), "--backend", "numpy"]) == 0
        assert _tree(keep) == _tree(ref_keep), name
        shutil.rmtree(keep)


def test_disk_full_in_compare_diff_map_leaves_no_file(cdnet_clip, small_fs, capsys):
    d, _ = small_fs
    src = cdnet_clip(2)
    a, b = sorted(src.iterdir())
    _fill(d, leave=4096)
    out = d / "diff.png"
    assert main(["compare", str(a), str(b), "--diff-map", str(out), "--backend", "numpy"]) == 2
    err = capsys.readouterr().err
    assert "disk full" in err and len(err.strip().splitlines()) == 1
    assert sorted(p.name for p in d.iterdir()) == ["filler"]


# ---- E: no permission ------------------------------------------------------------------------------


def test_a_store_that_cannot_be_written_is_one_line_exit_2(tmp_path, data_dir, monkeypatch, capsys):
    import zarr.storage

    src = calcium_stack(tmp_path, data_dir, n=12)
    out = tmp_path / "ro" / "r.zarr"

    async def denied(self, key, value, *a, **k):
        raise PermissionError(13, "Permission denied", str(Path(self.root) / key))

    with monkeypatch.context() as m:  # a read-only folder: creating the store fails
        m.setattr(zarr.storage.LocalStore, "set", denied)
        assert _run(src, out, "--chunk", "4") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert "permission denied" in err and str(out) in err and "make it writable" in err
    assert _run(src, out, "--chunk", "4", "--shard", "0/3") == 0  # the store exists now
    capsys.readouterr()
    with monkeypatch.context() as m:  # made read-only after creation: writing chunks fails
        m.setattr(zarr.storage.LocalStore, "set", denied)
        assert _run(src, out, "--chunk", "4") == 2
    err = capsys.readouterr().err.strip()
    assert len(_error_lines(err)) == 1 and "permission denied" in err and "writing chunk" in err
    assert main(["status", str(out)]) == 0
    capsys.readouterr()
    with monkeypatch.context() as m:  # the resume file of a pass
        real = os.replace

        def deny_aux(a, b, *k, **kw):
            if str(b).endswith("events_done.json"):
                raise PermissionError(13, "Permission denied", str(b))
            return real(a, b, *k, **kw)

        m.setattr(os, "replace", deny_aux)
        out2 = tmp_path / "r2.zarr"
        assert _run(src, out2, "--chunk", "4", "--corrupt") == 2
    err = capsys.readouterr().err.strip()
    assert len(_error_lines(err)) == 1 and "events_done.json" in err and "permission denied" in err
    assert not list(out2.glob("*.tmp*"))


# ---- F: duplicated and re-counted shards -----------------------------------------------------------


def test_a_duplicated_shard_racing_itself_and_changed_shard_counts(tmp_path, data_dir):
    src = calcium_stack(tmp_path, data_dir, n=401)
    ref = tmp_path / "ref.zarr"
    args = ("--chunk", "4", "--backend", "numpy", "--no-progress")
    assert main(["run", str(src), "--out", str(ref), *args]) == 0
    for trial in range(3):
        out = tmp_path / f"dup{trial}.zarr"
        procs = [cli("run", src, "--out", out, *args, "--shard", "0/2") for _ in range(2)]
        for p in procs:
            _, err = p.communicate(timeout=300)
            assert p.returncode == 0, err  # shard 1's chunks are left
            assert "Traceback" not in err
        s = ResultStore.open(str(out)).summary()
        assert s["done"] == 200 and s["pending"] == 200  # every even chunk once, none twice
        p = cli("run", src, "--out", out, *args, "--shard", "1/2")
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
        assert_same_store(ref, out, maps=True)
        assert ResultStore.open(str(out), mode="r+").verify()["clean"]
        assert not list(out.rglob("*.partial"))
    out = tmp_path / "recount.zarr"
    assert main(["run", str(src), "--out", str(out), *args, "--shard", "0/2"]) == 0
    for i in range(3):  # the count changed between runs (a resubmission with another array size)
        assert main(["run", str(src), "--out", str(out), *args, "--shard", f"{i}/3"]) in (0, 75)
    s = ResultStore.open(str(out)).summary()
    assert s["done"] == 400 and s["pending"] == 0 and s["failed"] == 0
    assert_same_store(ref, out, maps=True)
