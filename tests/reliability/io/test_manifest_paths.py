"""Paths as the user wrote them, and a keep folder that never writes outside itself.

- A manifest may name files by absolute path and by paths with ``..`` (relative to the manifest's
  folder): reading what the user points at is the user's right, so those run.
- ``dedup --keep-dir`` and ``watch`` write kept frames only directly inside the keep folder,
  whatever the input's names: file names that look like paths (``..``-prefixed, backslashes, a name
  with bytes that are not UTF-8), labels of stack frames, and a link planted in the keep folder
  where a temporary file goes.
"""

from __future__ import annotations

import csv
import io
import os
import shutil

import pytest

from gpudiff.errors import InputError


@pytest.fixture
def frames(data_dir):
    return sorted((data_dir / "cdnet2014-traffic-subset" / "input").glob("*.jpg"))[:4]


def test_manifest_with_absolute_and_dotdot_paths_runs(frames, tmp_path, capsys):
    from gpudiff.cli._main import main

    other = tmp_path / "other"
    other.mkdir()
    work = tmp_path / "work" / "lists"
    work.mkdir(parents=True)
    for p in frames:
        shutil.copy(p, other / p.name)
    manifest = work / "pairs.csv"
    rows = [
        (f"../../other/{frames[0].name}", str(other / frames[1].name), "dotdot-vs-absolute"),
        (str(frames[2]), f"../../other/{frames[3].name}", "shared-data-absolute"),
    ]
    with open(manifest, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["reference", "moving", "id"])
        w.writerows(rows)
    store = tmp_path / "m.zarr"
    assert main(["run", str(manifest), "--out", str(store), "--no-progress", "--backend", "numpy"]) == 0
    capsys.readouterr()
    assert main(["export", str(store)]) == 0
    got = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [r["status"] for r in got] == ["done", "done"]
    assert [r["id"] for r in got] == ["dotdot-vs-absolute", "shared-data-absolute"]
    # the files the paths name, resolved from the manifest's folder
    assert os.path.samefile(got[0]["reference"], other / frames[0].name)
    assert os.path.samefile(got[0]["moving"], other / frames[1].name)
    assert os.path.samefile(got[1]["reference"], frames[2])


def _tree(root):
    return sorted(os.path.relpath(os.path.join(d, f), root) for d, _, fs in os.walk(root) for f in fs)


def test_dedup_keep_dir_writes_only_inside_itself(frames, tmp_path, capsys):
    from gpudiff.cli._main import main

    top = tmp_path / "top"
    src = top / "incoming"
    src.mkdir(parents=True)
    names = [b"evil..jpg", b"..\\..\\escape.jpg", b"x\xff\xfe.jpg", b"a\\..\\..\\b.jpg"]
    for p, n in zip(frames, names):
        shutil.copyfile(os.fsencode(p), os.path.join(os.fsencode(src), n))
    kept = top / "kept"
    before = _tree(top)
    rc = main(["dedup", str(src), "--keep-dir", str(kept), "--backend", "numpy"])
    assert rc == 0, capsys.readouterr().err
    after = _tree(top)
    new = sorted(set(after) - set(before))
    assert new and all(os.path.dirname(n) == "kept" for n in new), new  # nothing written elsewhere
    # every kept file is one of the originals, byte for byte, under its own name
    kept_names = sorted(os.listdir(os.fsencode(kept)))
    assert set(kept_names) <= set(names)
    assert b"x\xff\xfe.jpg" in kept_names  # kept by its own bytes (the store's label is x\\xff\\xfe.jpg)
    for n in kept_names:
        with open(os.path.join(os.fsencode(kept), n), "rb") as a, open(os.path.join(os.fsencode(src), n), "rb") as b:
            assert a.read() == b.read()


def test_dedup_of_a_stack_keeps_frames_as_files_inside(data_dir, tmp_path):
    from gpudiff.cli._main import main

    kept = tmp_path / "kept"
    assert main(["dedup", str(data_dir / "pims-testdata" / "stuck.tif"), "--keep-dir", str(kept),
                 "--backend", "numpy"]) == 0
    assert all(os.path.dirname(n) == "" and n.startswith("frame_") for n in _tree(kept))


def test_watch_keeps_inside_and_does_not_follow_a_planted_link(frames, tmp_path):
    from gpudiff.engine._timelapse import watch

    incoming = tmp_path / "incoming"
    incoming.mkdir()
    kept = tmp_path / "kept"
    kept.mkdir()
    outside = tmp_path / "outside.txt"
    for p, n in zip(frames, ("a..jpg", "b\\..\\c.jpg")):
        shutil.copy(p, incoming / n)
        os.utime(incoming / n, (1e9, 1e9))  # complete long ago (watch waits for files still being written)
    # a dangling link where the copy's temporary file goes: the copy must not write through it
    os.symlink(outside, kept / f".a..jpg.tmp{os.getpid()}")
    r = watch(str(incoming), keep_dir=str(kept), once=True, stream=io.StringIO())
    assert r.decided == 2
    assert not outside.exists()
    assert {"a..jpg", "b\\..\\c.jpg"} <= set(os.listdir(kept))
    assert all(os.path.dirname(n) == "" for n in _tree(kept))


@pytest.mark.parametrize("name, want", [("../x.png", "x.png"), ("/abs/y.png", "y.png"), ("a\\..\\b.png", "a\\..\\b.png"),
                                        ("frame_000001", "frame_000001")])
def test_kept_path_is_the_last_component(tmp_path, name, want):
    from gpudiff.engine._timelapse import _inside

    assert _inside(tmp_path, name) == tmp_path / want


@pytest.mark.parametrize("name", ["..", ".", "", "../.."])
def test_kept_path_without_a_file_name_is_refused(tmp_path, name):
    from gpudiff.engine._timelapse import _inside

    with pytest.raises(InputError):
        _inside(tmp_path, name)


def test_a_stack_frame_kept_does_not_write_through_a_planted_link(data_dir, tmp_path):
    from gpudiff.cli._main import main

    kept = tmp_path / "kept"
    kept.mkdir()
    outside = tmp_path / "outside.png"
    os.symlink(outside, kept / f".frame_000000.png.tmp{os.getpid()}")  # where frame 0's temporary goes
    assert main(["dedup", str(data_dir / "pims-testdata" / "stuck.tif"), "--keep-dir", str(kept),
                 "--backend", "numpy"]) == 0
    assert not outside.exists()
    assert (kept / "frame_000000.png").is_file() and not (kept / "frame_000000.png").is_symlink()
