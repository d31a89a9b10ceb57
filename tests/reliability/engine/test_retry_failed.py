"""``gpudiff run --retry-failed``: broken inputs fixed in place are re-read and their failed items
redone, ending in the store a run on the good files makes; a changed input of a done item, added or
removed files, a changed manifest or a changed single-file source are refused in one line, and a
refused retry writes nothing."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest

from gpudiff.cli._main import main
from gpudiff.engine._store import SOURCE_ACCEPTED, SOURCE_STAMPS, ResultStore
from tests._stores import assert_same_store

BASE = ["--backend", "numpy", "--no-progress", "--chunk", "4"]


def _run(capsys, *argv):
    code = main(["run", *map(str, argv), *BASE])
    err = capsys.readouterr().err
    return code, err


def _break(path):
    """Truncate a JPEG to its first 2000 bytes (a half-copied file) and return its good bytes."""
    good = path.read_bytes()
    path.write_bytes(good[:2000])
    return good


def _status(store):
    return ResultStore.open(store).read(["status"])["status"].tolist()


def _one_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.mark.parametrize("passes", [[], ["--corrupt", "--cuts", "--background"]], ids=["plain", "passes"])
def test_fixed_frame_is_redone_and_the_store_equals_a_run_on_good_files(cdnet_clip, tmp_path, capsys, passes):
    folder = cdnet_clip(12)
    frame = sorted(folder.iterdir())[5]
    good = _break(frame)
    out, ref = tmp_path / "s.zarr", tmp_path / "ref.zarr"
    code, err = _run(capsys, folder, "--out", out, *passes)
    assert code == 1 and _status(out).count(2) == 2  # items 4 and 5 read the broken frame
    assert "--retry-failed" in err
    main(["status", str(out)])
    assert "then rerun the run's command with --retry-failed" in capsys.readouterr().out

    frame.write_bytes(good)  # fixed in place
    code, err = _run(capsys, folder, "--out", out, *passes)
    line = _one_line(err)
    assert code == 2 and "source" in line and "--retry-failed" in line

    code, err = _run(capsys, folder, "--out", out, *passes, "--retry-failed")
    assert code == 0, err
    assert "1 changed input file of failed items accepted" in err and frame.name in err
    assert _status(out) == [1] * 11
    code, _ = _run(capsys, folder, "--out", ref, *passes)
    assert code == 0
    assert_same_store(out, ref)
    # from now on the plain command resumes it (nothing left to do)
    code, err = _run(capsys, folder, "--out", out, *passes)
    assert code == 0 and "0 chunks run" in err
    # and the store says what was accepted, and when
    assert main(["status", str(out)]) == 0
    said = capsys.readouterr().out
    assert "retried: 1 changed input file of failed items accepted by --retry-failed at " in said
    assert frame.name in said


def test_a_changed_input_of_a_done_item_is_refused_and_nothing_is_written(cdnet_clip, tmp_path, capsys):
    folder = cdnet_clip(10)
    frames = sorted(folder.iterdir())
    good = _break(frames[6])
    out = tmp_path / "s.zarr"
    assert _run(capsys, folder, "--out", out)[0] == 1
    before = _status(out)
    frames[6].write_bytes(good)
    frames[1].write_bytes(frames[1].read_bytes() + b"\0")  # a done item's input, changed
    code, err = _run(capsys, folder, "--out", out, "--retry-failed")
    line = _one_line(err)
    assert code == 2 and frames[1].name in line and "item 0" in line and "--overwrite" in line
    assert _status(out) == before
    assert not (out / SOURCE_ACCEPTED).exists()


def test_added_or_removed_files_are_refused(cdnet_clip, tmp_path, capsys):
    folder = cdnet_clip(9)
    frames = sorted(folder.iterdir())
    _break(frames[3])
    out = tmp_path / "s.zarr"
    assert _run(capsys, folder, "--out", out)[0] == 1
    frames[3].unlink()  # the broken frame dropped instead of fixed: other items, another plan
    code, err = _run(capsys, folder, "--out", out, "--retry-failed")
    assert code == 2 and "items" in _one_line(err)
    assert not (out / SOURCE_ACCEPTED).exists()


def test_many_files_use_the_stamp_table_and_an_old_store_without_it_is_refused(data_dir, tmp_path, capsys):
    """Beyond 64 files the fingerprint lists none: the per-file stamps the store keeps tell which
    changed. A store made before them (the table removed) cannot say, and is refused."""
    from PIL import Image

    cam = np.asarray(Image.open(data_dir / "skimage-data/camera.png").convert("L"))
    folder = tmp_path / "tiles"
    folder.mkdir()
    for i in range(70):  # 70 real 32x32 crops of the camera image
        y, x = (i * 37) % 480, (i * 53) % 480
        Image.fromarray(cam[y:y + 32, x:x + 32]).save(folder / f"t{i:03d}.png")
    broken = [folder / "t020.png", folder / "t055.png"]
    goods = [p.read_bytes() for p in broken]
    for p in broken:
        p.write_bytes(p.read_bytes()[:40])
    out, old, ref = tmp_path / "s.zarr", tmp_path / "old.zarr", tmp_path / "ref.zarr"
    assert _run(capsys, folder, "--out", out)[0] == 1
    assert (out / SOURCE_STAMPS).exists()
    shutil.copytree(out, old)
    os.unlink(old / SOURCE_STAMPS)
    for p, g in zip(broken, goods):
        p.write_bytes(g)
    code, err = _run(capsys, folder, "--out", old, "--retry-failed")
    line = _one_line(err)
    assert code == 2 and "records no per-file sizes" in line and "70 input files" in line
    code, err = _run(capsys, folder, "--out", out, "--retry-failed")
    assert code == 0 and "2 changed input files of failed items accepted" in err, err
    assert _run(capsys, folder, "--out", ref)[0] == 0
    assert_same_store(out, ref)


def test_a_small_store_without_the_table_uses_its_fingerprint(cdnet_clip, tmp_path, capsys):
    folder = cdnet_clip(8)
    frame = sorted(folder.iterdir())[2]
    good = _break(frame)
    out, ref = tmp_path / "s.zarr", tmp_path / "ref.zarr"
    assert _run(capsys, folder, "--out", out)[0] == 1
    os.unlink(out / SOURCE_STAMPS)  # as a store made before the table: its fingerprint lists the 8 files
    frame.write_bytes(good)
    code, err = _run(capsys, folder, "--out", out, "--retry-failed")
    assert code == 0, err
    assert _run(capsys, folder, "--out", ref)[0] == 0
    assert_same_store(out, ref)


def test_manifest_images_fixed_are_redone_but_an_edited_manifest_is_refused(cdnet_clip, tmp_path, capsys):
    folder = cdnet_clip(6)
    frames = sorted(folder.iterdir())
    manifest = tmp_path / "pairs.csv"
    manifest.write_text("reference,moving,id\n" + "".join(
        f"{frames[0]},{frames[i]},p{i}\n" for i in range(1, 6)))
    good = _break(frames[3])
    out, ref = tmp_path / "s.zarr", tmp_path / "ref.zarr"
    assert _run(capsys, manifest, "--out", out)[0] == 1
    assert _status(out) == [1, 1, 2, 1, 1]
    frames[3].write_bytes(good)
    code, err = _run(capsys, manifest, "--out", out, "--retry-failed")
    assert code == 0, err
    assert _run(capsys, manifest, "--out", ref)[0] == 0
    assert_same_store(out, ref)

    _break(frames[4])
    other = tmp_path / "s2.zarr"
    assert _run(capsys, manifest, "--out", other)[0] == 1
    manifest.write_text(manifest.read_text().replace(",p5", ",q5"))
    code, err = _run(capsys, manifest, "--out", other, "--retry-failed")
    assert code == 2 and "the manifest itself" in _one_line(err)


def test_single_file_source_changed_is_refused_unchanged_is_retried(data_dir, tmp_path, capsys):
    """A TIFF stack cannot say which frames changed: a changed one is refused. An unchanged one
    whose items failed for a passing reason (here: marked failed by hand) is redone."""
    import tifffile

    stack = tmp_path / "stack.tif"
    tifffile.imwrite(stack, tifffile.imread(data_dir / "imageio-standard/calcium_imaging.tif", key=range(10)))
    out, ref = tmp_path / "s.zarr", tmp_path / "ref.zarr"
    assert _run(capsys, stack, "--out", out)[0] == 0
    assert _run(capsys, stack, "--out", ref)[0] == 0
    s = ResultStore.open(out, mode="r+")
    sl = s.chunk_slice(1)
    s._arrays["status"][sl] = np.full(sl.stop - sl.start, 2, np.uint8)  # as after a transient failure
    s._arrays["error"][sl] = np.asarray(["timed out"] * (sl.stop - sl.start), dtype=object)
    s._arrays["manhattan"][sl] = np.full(sl.stop - sl.start, np.nan)
    assert _run(capsys, stack, "--out", out)[0] == 1  # a plain rerun leaves failed items as they are
    code, err = _run(capsys, stack, "--out", out, "--retry-failed")
    assert code == 0, err
    assert_same_store(out, ref)

    os.utime(stack, ns=(stack.stat().st_atime_ns, stack.stat().st_mtime_ns + 10**9))
    code, err = _run(capsys, stack, "--out", out, "--retry-failed")
    line = _one_line(err)
    assert code == 2 and "one tiff" in line.lower() and "--overwrite" in line


@pytest.mark.parametrize("fail_on", [SOURCE_STAMPS, SOURCE_ACCEPTED])
def test_a_retry_killed_between_its_writes_is_finished_by_the_same_command(cdnet_clip, tmp_path, capsys,
                                                                          monkeypatch, fail_on):
    folder = cdnet_clip(10)
    frame = sorted(folder.iterdir())[7]
    good = _break(frame)
    out, ref = tmp_path / "s.zarr", tmp_path / "ref.zarr"
    assert _run(capsys, folder, "--out", out, "--corrupt")[0] == 1
    frame.write_bytes(good)
    real = ResultStore.write_aux

    def dies(self, name, data):
        if name == fail_on:
            raise SystemExit(137)  # the process ends here, as under SIGKILL
        return real(self, name, data)

    monkeypatch.setattr(ResultStore, "write_aux", dies)
    with pytest.raises(SystemExit):
        _run(capsys, folder, "--out", out, "--corrupt", "--retry-failed")
    monkeypatch.setattr(ResultStore, "write_aux", real)
    capsys.readouterr()
    code, err = _run(capsys, folder, "--out", out, "--corrupt", "--retry-failed")
    assert code == 0, err
    assert _run(capsys, folder, "--out", ref, "--corrupt")[0] == 0
    assert_same_store(out, ref)


def test_retry_failed_with_overwrite_is_refused(cdnet_clip, tmp_path, capsys):
    code, err = _run(capsys, cdnet_clip(3), "--out", tmp_path / "s.zarr", "--retry-failed", "--overwrite")
    assert code == 2 and "give one" in _one_line(err)


def test_shards_retrying_at_once_do_not_refuse_each_others_results(cdnet_clip, tmp_path, capsys, monkeypatch):
    """Shard 1 reads the store's record before shard 0 of the same retry accepts the fixed file,
    and the status after shard 0 has redone the items: the items done with the changed input are
    shard 0's, so shard 1 goes on (the record, read again after the status, says so)."""
    folder = cdnet_clip(13)  # 12 items, 3 chunks of 4
    frame = sorted(folder.iterdir())[5]  # an input of items 4 and 5 (chunk 1)
    good = _break(frame)
    out, ref = tmp_path / "s.zarr", tmp_path / "ref.zarr"
    assert _run(capsys, folder, "--out", out)[0] == 1
    stale = ResultStore.open(out).recorded_config()
    stale_stamps = (out / SOURCE_STAMPS).read_bytes()
    frame.write_bytes(good)
    assert _run(capsys, folder, "--out", out, "--retry-failed")[0] == 0  # "shard 0": the whole retry

    real = ResultStore.recorded_config
    calls = []

    def first_stale(self):
        calls.append(1)
        return stale if len(calls) == 1 else real(self)

    real_aux = ResultStore.read_aux

    def stale_table(self, name):  # the stamps as shard 1 read them, before shard 0 replaced them
        return stale_stamps if name == SOURCE_STAMPS else real_aux(self, name)

    monkeypatch.setattr(ResultStore, "recorded_config", first_stale)
    monkeypatch.setattr(ResultStore, "read_aux", stale_table)
    from gpudiff.engine._retry import accept_changed_source
    from gpudiff.engine._runner import RunConfig, _fields, _run_config_key
    from gpudiff.engine._plan import make_plan
    from gpudiff.io import open_source
    from gpudiff.options import CompareOptions

    options = CompareOptions(backend="numpy")
    cfg = RunConfig(source=str(folder), out=str(out), chunk=4)
    with open_source(str(folder)) as src:
        plan = make_plan(len(src), chunk=4)
        config = _run_config_key(options, cfg, src, plan, _fields(options, cfg, src))
        assert accept_changed_source(ResultStore.open(out, mode="r+"), src, plan, config) == []
    assert len(calls) >= 2  # read again after the status: without it, item 4 is refused as done
    monkeypatch.setattr(ResultStore, "recorded_config", real)
    monkeypatch.setattr(ResultStore, "read_aux", real_aux)
    assert _run(capsys, folder, "--out", ref)[0] == 0
    assert_same_store(out, ref)
