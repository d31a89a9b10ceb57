"""gpudiff dedup and gpudiff watch end to end: store, keep folder, kill and resume, files landing."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from gpudiff.cli._main import main
from gpudiff.io._images import read_image
from gpudiff.io import open_source
from gpudiff.engine._store import ResultStore
from gpudiff.engine._timelapse import watch


def _digest(folder: Path) -> dict:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


@pytest.fixture
def frames_folder(tmp_path, data_dir):
    """The bgslibrary traffic-camera PNG folder, with exact repeats spliced in (a stalled camera)."""
    src = data_dir / "bgslibrary-dataset/frames"
    names = sorted(os.listdir(src))[:20]
    out = tmp_path / "cam"
    out.mkdir()
    k = 0
    for i, name in enumerate(names):
        shutil.copy2(src / name, out / f"snap_{k:03d}.png")
        k += 1
        if i % 4 == 1:  # the camera resent the same picture twice
            for _ in range(2):
                shutil.copy2(src / name, out / f"snap_{k:03d}.png")
                k += 1
    return out


def test_dedup_keep_dir_copies_kept_files_and_leaves_originals(frames_folder, tmp_path, capsys):
    before = _digest(frames_folder)
    kept = tmp_path / "kept"
    rc = main(["dedup", str(frames_folder), "--keep-dir", str(kept), "--explain", "--backend", "numpy"])
    assert rc == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == len(before)
    verdicts = {line.split("\t")[0]: line.split("\t")[1] for line in out}
    # each spliced repeat dropped, everything else (a busy road) kept
    files = sorted(before)
    frames = [read_image(frames_folder / f) for f in files]
    repeats = {i for i in range(1, len(frames)) if np.array_equal(frames[i], frames[i - 1])}
    assert {int(i) for i, v in verdicts.items() if v == "drop"} == repeats
    assert sorted(p.name for p in kept.iterdir()) == [f for i, f in enumerate(files) if i not in repeats]
    for p in kept.iterdir():  # byte-identical copies
        assert p.read_bytes() == (frames_folder / p.name).read_bytes()
    assert _digest(frames_folder) == before


def test_dedup_hard_links_and_refuses_the_source_folder(frames_folder, tmp_path, capsys):
    kept = tmp_path / "kept"
    assert main(["dedup", str(frames_folder), "--keep-dir", str(kept), "--link", "--backend", "numpy"]) == 0
    some = next(kept.iterdir())
    assert os.stat(some).st_ino == os.stat(frames_folder / some.name).st_ino
    assert main(["dedup", str(frames_folder), "--keep-dir", str(frames_folder)]) == 2
    assert "is the source folder" in capsys.readouterr().err


def test_dedup_store_export_and_stack_frames_as_files(data_dir, tmp_path, capsys):
    store = tmp_path / "d.zarr"
    kept = tmp_path / "kept"
    rc = main(["dedup", str(data_dir / "pims-testdata/stuck.tif"), "--out", str(store), "--keep-dir", str(kept)])
    assert rc == 0
    s = ResultStore.open(store)
    cols = s.read(["status", "keep", "reference_index", "change", "reason"])
    assert cols["status"].tolist() == [1] * 5
    assert cols["keep"].tolist() == [1, 0, 0, 0, 0]
    assert cols["reference_index"].tolist() == [-1, 0, 0, 0, 0]
    assert (cols["change"][1:] < 0.001).all()
    assert [p.name for p in kept.iterdir()] == ["frame_000000.png"]
    frame0 = open_source(str(data_dir / "pims-testdata/stuck.tif")).read(0)
    np.testing.assert_array_equal(read_image(kept / "frame_000000.png"), frame0)  # lossless uint16
    capsys.readouterr()
    assert main(["export", str(store)]) == 0
    header = capsys.readouterr().out.splitlines()[0].split(",")
    assert {"keep", "change", "reason", "repeat_of"} <= set(header)


def test_dedup_killed_and_resumed_gives_the_same_store(data_dir, tmp_path):
    video = str(data_dir / "opencv-samples/video/tree.avi")
    whole = tmp_path / "whole.zarr"
    assert main(["dedup", video, "--out", str(whole), "--chunk", "16", "--backend", "numpy"]) == 0
    part = tmp_path / "part.zarr"
    cmd = [sys.executable, "-m", "gpudiff", "dedup", video, "--out", str(part), "--chunk", "16", "--backend", "numpy"]
    p = subprocess.Popen(cmd, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while time.time() < deadline:  # kill once some chunks are written, not all
        if part.exists():
            done = ResultStore.open(part).read(["status"])["status"]
            if 16 * 2 <= (done == 1).sum() < len(done) - 16:
                break
        time.sleep(0.05)
    p.send_signal(signal.SIGKILL)
    p.wait()
    partial = ResultStore.open(part).read(["status"])["status"]
    assert (partial == 0).any()
    assert main(["dedup", video, "--out", str(part), "--chunk", "16", "--backend", "numpy"]) == 0
    a = ResultStore.open(whole).read()
    b = ResultStore.open(part).read()
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


def test_dedup_bad_input_is_one_line(tmp_path, capsys):
    assert main(["dedup", str(tmp_path / "nope"), "--explain"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nope" in err[0]
    assert main(["dedup", str(tmp_path), "--rule", "metric", "--explain"]) == 2
    assert "needs --metric" in capsys.readouterr().err


# ---- watch --------------------------------------------------------------------------------------


def test_watch_decides_new_files_ignores_partial_ones_and_restarts(frames_folder, tmp_path):
    incoming = tmp_path / "incoming"
    incoming.mkdir()
    kept = tmp_path / "kept"
    files = sorted(os.listdir(frames_folder))
    log = open(os.devnull, "w")
    # three snapshots land, plus one still being written (truncated PNG)
    for f in files[:3]:
        shutil.copy2(frames_folder / f, incoming / f)
    data = (frames_folder / files[3]).read_bytes()
    (incoming / files[3]).write_bytes(data[: len(data) // 2])
    old = time.time() - 10
    for f in files[:4]:
        os.utime(incoming / f, (old, old))
    r = watch(str(incoming), keep_dir=str(kept), once=True, stream=log)
    assert r.decided == 3  # the truncated one waits
    # it completes; more land; the watcher is restarted (a new process would read the same state)
    (incoming / files[3]).write_bytes(data)
    for f in files[4:8]:
        shutil.copy2(frames_folder / f, incoming / f)
    for f in files[3:8]:
        os.utime(incoming / f, (old, old))
    r2 = watch(str(incoming), keep_dir=str(kept), once=True, stream=log)
    assert r2.decided == 5
    state = json.loads((kept / ".gpudiff-watch.json").read_text())
    assert sorted(state["done"]) == sorted(files[:8])
    # the same decisions as one dedup over the 8 files
    ref = tmp_path / "ref"
    for f in files[:8]:
        (ref / "x").parent.mkdir(exist_ok=True)
        shutil.copy2(frames_folder / f, ref / f)
    from gpudiff.engine import dedup
    from gpudiff.sequence._dedup import DedupOptions

    want = dedup(open_source(str(ref)), options=DedupOptions())
    got_kept = sorted(p.name for p in kept.iterdir() if not p.name.startswith("."))
    assert got_kept == [files[i] for i in want.kept]
    # a file modified moments ago is left for the next poll
    shutil.copy(frames_folder / files[8], incoming / files[8])  # mtime: now
    assert watch(str(incoming), keep_dir=str(kept), once=True, stream=log, settle=30).decided == 0


def test_watch_polls_until_stopped(frames_folder, tmp_path):
    import threading

    incoming = tmp_path / "in"
    incoming.mkdir()
    kept = tmp_path / "kept"
    stop = threading.Event()
    files = sorted(os.listdir(frames_folder))
    result = {}
    t = threading.Thread(target=lambda: result.setdefault("r", watch(
        str(incoming), keep_dir=str(kept), interval=0.05, settle=0.1, stop=stop, stream=open(os.devnull, "w"))))
    t.start()
    for f in files[:3]:
        shutil.copy2(frames_folder / f, incoming / f)
    deadline = time.time() + 20
    while time.time() < deadline:
        state = kept / ".gpudiff-watch.json"
        if state.exists() and len(json.loads(state.read_text())["done"]) == 3:
            break
        time.sleep(0.05)
    stop.set()
    t.join(10)
    assert result["r"].decided == 3


def test_watch_refuses_other_options_on_the_same_state(frames_folder, tmp_path, capsys):
    kept = tmp_path / "kept"
    assert main(["watch", str(frames_folder), "--keep-dir", str(kept), "--once", "--settle", "0"]) == 0
    assert main(["watch", str(frames_folder), "--keep-dir", str(kept), "--once", "--rule", "blocks"]) == 2
    assert "other dedup options" in capsys.readouterr().err
    assert main(["watch", str(frames_folder)]) == 2


def test_watch_once_says_how_many_wait_and_why(frames_folder, tmp_path, capsys):
    from gpudiff.cli._main import main

    incoming = tmp_path / "incoming"
    incoming.mkdir()
    files = sorted(os.listdir(frames_folder))
    old = time.time() - 60
    shutil.copy2(frames_folder / files[0], incoming / files[0])  # complete
    data = (frames_folder / files[1]).read_bytes()
    (incoming / files[1]).write_bytes(data[: len(data) // 3])  # truncated: does not decode
    for f in files[:2]:
        os.utime(incoming / f, (old, old))
    shutil.copy(frames_folder / files[2], incoming / files[2])  # modified just now
    shutil.copy(frames_folder / files[3], incoming / files[3])
    assert main(["watch", str(incoming), "--keep-dir", str(tmp_path / "kept"), "--once", "--settle", "30"]) == 0
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("gpudiff watch: 1 new frame decided, 1 kept; 3 waiting: ")
    assert "2 still being written (changed in the last 30 s, --settle)" in last
    assert f"1 not decodable yet (e.g. {files[1]}: " in last
