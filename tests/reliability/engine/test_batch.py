"""The batch engine on real sequences: equal to a plain loop, resumable after SIGKILL, SIGTERM-safe,
shardable, and tolerant of bad frames and of a Dask worker dying."""

from __future__ import annotations

import os
import random
import shutil
import signal
import threading
import time

import numpy as np
import pytest

import gpudiff
from gpudiff.cli._main import main
from gpudiff.io import open_source
from gpudiff.engine._store import ResultStore
from tests._stores import assert_same_store, calcium_stack, cli, store_arrays

METRICS = "manhattan,zero_norm,mse,psnr,max_abs,ncc,ssim,histogram"


@pytest.mark.parametrize(
    "source, kwargs",
    [
        ("trackpy-timelapse/foam", {}),
        ("trackpy-timelapse/bulk_water", {"color": "rgb"}),
        ("cdnet2014-traffic-subset/input", {"align": True, "upsample": 10}),
        ("bgslibrary-dataset/frames", {"blur": 1.0, "pairs": "first"}),
    ],
)
def test_store_equals_a_plain_loop_over_the_pairwise_api(tmp_path, data_dir, source, kwargs):
    kwargs = dict(kwargs)
    pairs = kwargs.pop("pairs", "consecutive")
    src_path = data_dir / source
    out = tmp_path / "r.zarr"
    argv = ["run", str(src_path), "--out", str(out), "--backend", "numpy", "--chunk", "7",
            "--pairs", pairs, "--no-progress"]
    for k, v in kwargs.items():
        argv += [f"--{k.replace('_', '-')}"] + ([] if v is True else [str(v)])
    assert main(argv) == 0
    src = open_source(str(src_path))
    n = len(src)
    cols = store_arrays(out)
    assert (cols["status"] == 1).all()
    expect_ref = np.arange(n - 1) if pairs == "consecutive" else np.zeros(n - 1, int)
    assert cols["reference_index"].tolist() == expect_ref.tolist()
    assert cols["moving_index"].tolist() == list(range(1, n))
    for k in range(n - 1):
        r = gpudiff.compare(src.read(int(expect_ref[k])), src.read(k + 1), backend="numpy", **kwargs)
        assert cols["manhattan"][k] == r.manhattan
        assert cols["zero_norm"][k] == r.zero_norm
        assert cols["ssim"][k] == r.ssim
        assert cols["hist_kl"][k] == r.histogram["kl"]
        if kwargs.get("align"):
            assert tuple(cols["shift"][k]) == r.shift


def test_kill_at_random_moments_then_resume_gives_the_identical_store(tmp_path, data_dir):
    stack = calcium_stack(tmp_path, data_dir, n=400)
    ref = tmp_path / "uninterrupted.zarr"
    assert main(["run", str(stack), "--out", str(ref), "--backend", "numpy", "--chunk", "5",
                 "--metrics", METRICS, "--no-progress"]) == 0
    for seed in (1, 2, 3):
        out = tmp_path / f"killed{seed}.zarr"
        rng = random.Random(seed)
        for _ in range(2):  # killed twice, at random moments
            p = cli("run", stack, "--out", out, "--backend", "numpy", "--chunk", "5", "--metrics", METRICS,
                     "--no-progress")
            time.sleep(rng.uniform(1.5, 4.0))
            p.send_signal(signal.SIGKILL)
            p.wait()
        p = cli("run", stack, "--out", out, "--backend", "numpy", "--chunk", "5", "--metrics", METRICS,
                 "--no-progress")
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
        assert_same_store(ref, out)


def test_sigterm_exits_75_quickly_and_a_rerun_completes(tmp_path, data_dir):
    stack = calcium_stack(tmp_path, data_dir, n=1000)
    out = tmp_path / "t.zarr"
    args = ["run", stack, "--out", out, "--backend", "numpy", "--chunk", "4", "--no-progress",
            "--align", "--upsample", "20"]
    p = cli(*args)
    # wait for the first finished chunk (its status object), not a fixed time: under load the
    # start-up alone can take seconds
    end = time.monotonic() + 120
    while time.monotonic() < end and p.poll() is None and not any(
            f.name.isdigit() for f in (out / "status" / "c").glob("*")):
        time.sleep(0.05)
    assert p.poll() is None, "the run ended before it could be interrupted"
    t0 = time.monotonic()
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=60)
    took = time.monotonic() - t0
    assert p.returncode == 75, err
    assert took < 30
    assert "resume" in err
    st = ResultStore.open(str(out)).read(["status"])["status"]
    assert (st == 0).any() and (st == 1).any()
    p = cli(*args)
    _, err = p.communicate(timeout=600)
    assert p.returncode == 0, err
    assert (ResultStore.open(str(out)).read(["status"])["status"] == 1).all()


def test_two_shards_in_parallel_complete_one_identical_store(tmp_path, data_dir):
    stack = calcium_stack(tmp_path, data_dir, n=200)
    ref = tmp_path / "single.zarr"
    assert main(["run", str(stack), "--out", str(ref), "--backend", "numpy", "--chunk", "6",
                 "--no-progress"]) == 0
    out = tmp_path / "sharded.zarr"
    procs = [cli("run", stack, "--out", out, "--backend", "numpy", "--chunk", "6", "--no-progress",
                  env={"SLURM_ARRAY_TASK_ID": str(i), "SLURM_ARRAY_TASK_COUNT": "2"}) for i in range(2)]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    assert_same_store(ref, out)


def test_a_different_configuration_on_an_existing_store_is_refused(tmp_path, data_dir, capsys):
    src = data_dir / "trackpy-timelapse/foam"
    out = tmp_path / "r.zarr"
    assert main(["run", str(src), "--out", str(out), "--backend", "numpy", "--no-progress"]) == 0
    assert main(["run", str(src), "--out", str(out), "--backend", "numpy", "--blur", "2",
                 "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "--overwrite" in err and "blur" in err
    assert main(["run", str(src), "--out", str(out), "--backend", "numpy", "--blur", "2", "--overwrite",
                 "--no-progress"]) == 0


def test_bad_frames_fail_only_their_items(tmp_path, data_dir, capsys):
    folder = tmp_path / "frames"
    shutil.copytree(data_dir / "bgslibrary-dataset/frames", folder)
    files = sorted(folder.iterdir())
    bad = files[10]
    bad.write_bytes(bad.read_bytes()[:200])  # truncated PNG
    (folder / files[20].name).write_bytes(b"")  # zero bytes
    out = tmp_path / "r.zarr"
    code = main(["run", str(folder), "--out", str(out), "--backend", "numpy", "--chunk", "4", "--no-progress"])
    assert code == 1
    err = capsys.readouterr().err
    assert "4 failed" in err
    cols = store_arrays(out)
    failed = np.flatnonzero(cols["status"] == 2).tolist()
    assert failed == [9, 10, 19, 20]  # each bad frame is in two consecutive pairs
    assert bad.name in cols["error"][9] and "truncated" in cols["error"][9].lower()
    assert (cols["status"][[i for i in range(len(files) - 1) if i not in failed]] == 1).all()
    assert np.isnan(cols["manhattan"][9]) and not np.isnan(cols["manhattan"][8])
    capsys.readouterr()
    assert main(["status", str(out)]) == 0
    status = capsys.readouterr().out
    assert f"{len(files) - 1} items: {len(files) - 5} done, 4 failed, 0 pending" in status
    assert f"item 9 failed: {bad}" in status and "source: folder" in status


def test_frames_of_another_shape_follow_the_shape_policy(tmp_path, data_dir):
    import cv2

    folder = tmp_path / "frames"
    shutil.copytree(data_dir / "trackpy-timelapse/foam", folder)
    files = sorted(folder.iterdir())
    img = cv2.imread(str(files[3]), cv2.IMREAD_UNCHANGED)
    cv2.imwrite(str(files[3].with_suffix(".png")), img[:-5, :-7])
    files[3].unlink()
    out = tmp_path / "r.zarr"
    assert main(["run", str(folder), "--out", str(out), "--backend", "numpy", "--no-progress"]) == 1
    cols = store_arrays(out)
    assert cols["status"].tolist().count(2) == 2 and "--shape" in cols["error"][2]
    assert main(["run", str(folder), "--out", str(tmp_path / "c.zarr"), "--backend", "numpy", "--shape", "crop",
                 "--no-progress"]) == 0


def test_worker_death_in_a_local_cluster_still_completes_identically(tmp_path, data_dir):
    distributed = pytest.importorskip("distributed")
    stack = calcium_stack(tmp_path, data_dir, n=600)
    ref = tmp_path / "single.zarr"
    assert main(["run", str(stack), "--out", str(ref), "--backend", "numpy", "--chunk", "5",
                 "--no-progress"]) == 0
    out = tmp_path / "cluster.zarr"
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                       dashboard_address=None, host="127.0.0.1")
    killed_at = []
    try:
        pids = [w.process.pid for w in cluster.workers.values()]

        def kill_one_mid_run():
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                time.sleep(0.05)
                try:
                    done = int((ResultStore.open(str(out)).read(["status"])["status"] != 0).sum())
                except Exception:  # noqa: BLE001 - the store is not there yet
                    continue
                if done >= 60:
                    os.kill(pids[0], signal.SIGKILL)
                    killed_at.append(done)
                    return

        killer = threading.Thread(target=kill_one_mid_run)
        killer.start()
        code = main(["run", str(stack), "--out", str(out), "--backend", "numpy", "--chunk", "5",
                     "--scheduler", cluster.scheduler_address, "--no-progress"])
        killer.join()
        if code == 75:  # a chunk lost with its worker more often than allowed: a rerun finishes it
            code = main(["run", str(stack), "--out", str(out), "--backend", "numpy", "--chunk", "5",
                         "--scheduler", cluster.scheduler_address, "--no-progress"])
        assert code == 0
    finally:
        cluster.close()
    assert killed_at and killed_at[0] < 599, "the worker was not killed in the middle of the run"
    assert_same_store(ref, out)


def test_a_truncated_stack_is_reported_not_shortened(tmp_path, data_dir, capsys):
    import tifffile

    full = calcium_stack(tmp_path, data_dir, n=20)
    with tifffile.TiffFile(full) as t:
        cut_at = t.pages[12].dataoffsets[0] + 10  # inside page 12's pixels: pages 0..11 survive
    cut = tmp_path / "cut.tif"
    cut.write_bytes(full.read_bytes()[:cut_at])
    out = tmp_path / "r.zarr"
    assert main(["run", str(cut), "--out", str(out), "--backend", "numpy", "--no-progress"]) == 1
    cols = store_arrays(out)
    assert len(cols["status"]) == 19  # 20 declared frames -> 19 consecutive pairs, not fewer
    assert (cols["status"][:11] == 1).all() and (cols["status"][11:] == 2).all()
    assert "truncated" in cols["error"][11] and "cut.tif" in cols["error"][11]
    assert "8 failed" in capsys.readouterr().err


def test_manifest_pairs_paths_and_ids_reach_the_export(tmp_path, data_dir, capsys):
    import csv
    import io

    frames = sorted((data_dir / "trackpy-timelapse/brightfield").iterdir())[:6]
    man = tmp_path / "pairs.csv"
    rows = [("reference", "moving", "id")]
    rows += [(str(frames[0]), str(f), f"vs0-{i}") for i, f in enumerate(frames[1:4])]
    rows += [(str(frames[4]), str(tmp_path / "gone.png"), "missing")]
    man.write_text("\n".join(",".join(r) for r in rows) + "\n")
    out = tmp_path / "m.zarr"
    assert main(["run", str(man), "--out", str(out), "--backend", "numpy", "--no-progress",
                 "--metrics", "manhattan,ssim"]) == 1
    capsys.readouterr()
    assert main(["export", str(out)]) == 0
    table = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [r["id"] for r in table] == ["vs0-0", "vs0-1", "vs0-2", "missing"]
    assert table[1]["reference"].endswith(frames[0].name) and table[1]["moving"].endswith(frames[2].name)
    assert [r["status"] for r in table] == ["done", "done", "done", "failed"]
    assert "gone.png" in table[3]["error"]
    r = gpudiff.compare(str(frames[0]), str(frames[2]), backend="numpy", metrics="manhattan,ssim")
    assert float(table[1]["manhattan"]) == pytest.approx(r.manhattan, rel=1e-12)
    assert float(table[1]["ssim"]) == pytest.approx(r.ssim, rel=1e-12)
