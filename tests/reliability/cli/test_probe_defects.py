"""Defects a probe found, each pinned: numba's cache without a writable place, SIGTERM at every
moment of ``gpudiff run`` as a process (75, never 143), schedulers that cannot work, ``--chunk``
beyond the items, one source spelled several ways, and options out of range (one line, exit 2)."""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gpudiff.cli import main

REPO = Path(__file__).resolve().parents[3]


def _env(**extra):
    env = {k: v for k, v in os.environ.items() if k not in ("GPUDIFF_DEBUG", "NUMBA_CACHE_DIR")}
    env.update({"GPUDIFF_BACKEND": "numpy", "PYTHONPATH": str(REPO)})
    env.update(extra)
    return env


def _gpudiff(*args, timeout=180, **popen):
    """``python -m gpudiff ARGS`` as a process: (returncode, stdout, stderr)."""
    p = subprocess.run([sys.executable, "-m", "gpudiff", *map(str, args)], capture_output=True, text=True,
                       timeout=timeout, **{"env": _env(), "cwd": REPO, **popen})
    return p.returncode, p.stdout, p.stderr


def _one_error_line(err: str, command: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err, err
    assert lines and lines[-1].startswith(f"gpudiff {command}: error: "), err
    return lines[-1]


# ------------------------------------------------------------------------------------------------
# 1. numba's on-disk cache with no writable place for it


def test_numba_no_cache_locator_compiles_without_cache(tmp_path, data_dir):
    """numba raises 'cannot cache function ...: no locator available' at decoration when no cache
    location is writable; every command then failed at import. Simulated with numba's own
    NUMBA_CACHE_LOCATOR_CLASSES naming a locator that never finds a place."""
    (tmp_path / "nolocator.py").write_text(
        "class Never:\n    @classmethod\n    def from_function(cls, py_func, py_file):\n        return None\n")
    home = tmp_path / "home"
    home.mkdir()
    home.chmod(0o555)
    frames = sorted((data_dir / "cdnet2014-traffic-subset/input").iterdir())[:2]
    env = _env(PYTHONPATH=f"{REPO}{os.pathsep}{tmp_path}", NUMBA_CACHE_LOCATOR_CLASSES="nolocator.Never",
               HOME=str(home))
    rc, out, err = _gpudiff("compare", *frames, "--metrics", "mse", "--json", env=env, timeout=600)
    assert rc == 0, err
    assert "cannot cache" not in err and "Traceback" not in err
    assert json.loads(out)["mse"] > 0


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="needs root to run as nobody")
def test_numba_cache_as_a_user_who_cannot_write_the_install_or_home(data_dir):
    """The real case: another user (nobody, HOME=/nonexistent) runs a root-owned install."""
    frames = sorted((data_dir / "cdnet2014-traffic-subset/input").iterdir())[:2]

    def as_nobody():
        os.setgid(65534)
        os.setuid(65534)

    env = _env(HOME="/nonexistent")
    env.pop("XDG_CACHE_HOME", None)
    try:
        rc, out, err = _gpudiff("compare", *frames, "--metrics", "mse", "--json", env=env, cwd="/",
                                preexec_fn=as_nobody, timeout=600)
    except (PermissionError, OSError) as exc:  # pragma: no cover - a sandbox without setuid
        pytest.skip(f"cannot run as nobody: {exc}")
    if rc != 0 and ("Permission denied" in err or "No module named" in err):  # pragma: no cover
        pytest.skip(f"nobody cannot run this interpreter or read the package: {err.strip()[:200]}")
    assert rc == 0, err
    assert "Traceback" not in err
    assert json.loads(out)["mse"] > 0


def test_prepare_cache_dir_points_numba_at_a_temporary_dir(monkeypatch, tmp_path):
    """Neither the package's __pycache__ nor ~/.cache is writable: NUMBA_CACHE_DIR goes to
    <tempdir>/gpudiff-numba-<uid> (and numba's live config follows when numba is imported)."""
    import tempfile

    from gpudiff import _numba_cache

    numba_config = pytest.importorskip("numba.core.config")
    monkeypatch.setattr(numba_config, "CACHE_DIR", numba_config.CACHE_DIR)
    monkeypatch.setenv("NUMBA_CACHE_DIR", "")
    monkeypatch.delenv("NUMBA_CACHE_DIR")
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: str(p).startswith(str(tmp_path)) and real_access(p, mode))
    path = _numba_cache.prepare_cache_dir()
    assert path == os.path.join(str(tmp_path), f"gpudiff-numba-{os.getuid()}")
    assert os.environ["NUMBA_CACHE_DIR"] == path and os.path.isdir(path)
    assert numba_config.CACHE_DIR == path
    # a writable default, or NUMBA_CACHE_DIR already set: numba's own choice stands
    assert _numba_cache.prepare_cache_dir() is None
    monkeypatch.setattr(os, "access", real_access)
    monkeypatch.delenv("NUMBA_CACHE_DIR")
    assert _numba_cache.prepare_cache_dir() is None


def test_cached_njit_falls_back_to_no_cache(monkeypatch):
    numba = pytest.importorskip("numba")
    from gpudiff._numba_cache import cached_njit

    def add(a, b):
        return a + b

    real = numba.njit

    def njit(*args, **kw):
        if kw.get("cache"):
            raise RuntimeError("cannot cache function 'add': no locator available for file 'x.py'")
        return real(*args, **kw)

    monkeypatch.setattr(numba, "njit", njit)
    assert cached_njit(nogil=True)(add)(2, 3) == 5


# ------------------------------------------------------------------------------------------------
# 2. SIGTERM: 75 (resumable), never 143


def _spawn_run(*args, cwd):
    return subprocess.Popen([sys.executable, "-u", "-m", "gpudiff", "run", *map(str, args)], cwd=cwd,
                            env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_line(proc, predicate, timeout=240.0):
    """Read stderr lines until one satisfies ``predicate``; returns the lines read."""
    lines = []
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        ready, _, _ = select.select([proc.stderr], [], [], 0.5)
        if ready:
            line = proc.stderr.readline()
            if not line:
                break
            lines.append(line)
            if predicate(line):
                return lines
        elif proc.poll() is not None:
            break
    raise AssertionError(f"the line never came (rc {proc.poll()}): {''.join(lines)}")


@pytest.mark.parametrize("delay", [0.1, 0.2, 0.3, 0.6])
def test_sigterm_during_start_up_exits_75(cdnet_clip, tmp_path, delay):
    clip = cdnet_clip(4)
    proc = _spawn_run(clip, "--out", tmp_path / "r.zarr", cwd=tmp_path)
    time.sleep(delay)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 75, err
    assert "Traceback" not in err
    last = [line for line in err.splitlines() if line.strip()][-1]
    assert last in ("gpudiff run: interrupted before starting: rerun to resume",
                    "gpudiff run: interrupted; run the same command again to resume"), err


def test_sigterm_during_the_corrupt_cuts_pass_exits_75(cdnet_clip, tmp_path):
    clip = cdnet_clip(40)
    out = tmp_path / "r.zarr"
    proc = _spawn_run(clip, "--out", out, "--corrupt", "--cuts", "--log-json", "--chunk", "8", cwd=tmp_path)
    try:
        _wait_for_line(proc, lambda line: '"corrupt/cuts"' in line)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=180)
    finally:
        proc.kill()
    assert proc.returncode == 75, err
    assert "Traceback" not in err
    # the rerun finishes the pass and exits 0
    rc, _, err = _gpudiff("run", clip, "--out", out, "--corrupt", "--cuts", "--chunk", "8", cwd=tmp_path)
    assert rc == 0, err


def test_sigterm_just_after_the_summary_line_exits_75(cdnet_clip, tmp_path):
    clip = cdnet_clip(4)
    proc = _spawn_run(clip, "--out", tmp_path / "r.zarr", cwd=tmp_path)
    try:
        _wait_for_line(proc, lambda line: line.startswith("gpudiff run: 3 items:"))
        still_running = proc.poll() is None
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    if not still_running:  # pragma: no cover - it had already exited: nothing was interrupted
        assert proc.returncode == 0
        return
    assert proc.returncode == 75, err
    assert "Traceback" not in err


# ------------------------------------------------------------------------------------------------
# 3. schedulers that cannot work: one line, exit 2, at once


@pytest.mark.parametrize("sched", ["local:0", "local:-1"])
def test_scheduler_local_needs_a_worker(cdnet_clip, tmp_path, sched):
    rc, _, err = _gpudiff("run", cdnet_clip(3), "--out", tmp_path / "r.zarr", "--scheduler", sched, timeout=120)
    assert rc == 2, err
    assert "--scheduler local:N needs N >= 1" in _one_error_line(err, "run")
    assert not (tmp_path / "r.zarr").exists()


def test_scheduler_nobody_listens(cdnet_clip, tmp_path):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    t0 = time.monotonic()
    rc, _, err = _gpudiff("run", cdnet_clip(3), "--out", tmp_path / "r.zarr", "--scheduler",
                          f"tcp://127.0.0.1:{port}", timeout=120)
    assert rc == 2, err
    line = _one_error_line(err, "run")
    assert f"tcp://127.0.0.1:{port}" in line and "dask scheduler" in line
    assert time.monotonic() - t0 < 60


# ------------------------------------------------------------------------------------------------
# 4. --chunk: clamped to the items, absurd values refused


def test_chunk_is_clamped_to_the_items_and_resumes(cdnet_clip, tmp_path, capsys):
    from gpudiff.engine import ResultStore

    clip, out = cdnet_clip(4), tmp_path / "r.zarr"
    argv = ["run", str(clip), "--out", str(out), "--chunk", "100000000", "--backend", "numpy", "--no-progress"]
    assert main(argv) == 0
    assert ResultStore.open(out).chunk == 3
    assert main(argv) == 0
    assert "0 chunks run, 1 already done" in capsys.readouterr().err


def test_a_store_made_with_an_unclamped_chunk_still_resumes(cdnet_clip, tmp_path, monkeypatch, capsys):
    from gpudiff.engine import ResultStore, _runner

    clip, out = cdnet_clip(4), tmp_path / "r.zarr"
    argv = ["run", str(clip), "--out", str(out), "--chunk", "64", "--backend", "numpy", "--no-progress"]
    with monkeypatch.context() as m:  # as before the clamp
        m.setattr(_runner, "store_chunk", lambda chunk, n: chunk)
        assert main(argv) == 0
    assert ResultStore.open(out).chunk == 64
    capsys.readouterr()
    assert main(argv) == 0
    assert "0 chunks run, 1 already done" in capsys.readouterr().err


@pytest.mark.parametrize("value", ["1e23", "4294967296", "0", "-3", "1e999", "nan"])
def test_absurd_chunk_refused(cdnet_clip, tmp_path, capsys, value):
    rc = main(["run", str(cdnet_clip(3)), "--out", str(tmp_path / "r.zarr"), f"--chunk={value}"])
    assert rc == 2
    assert "--chunk" in _one_error_line(capsys.readouterr().err, "run")


# ------------------------------------------------------------------------------------------------
# 7. one source, several spellings


def test_source_spelled_differently_resumes(cdnet_clip, tmp_path, monkeypatch, capsys):
    clip = cdnet_clip(4)
    monkeypatch.chdir(tmp_path)
    out = str(tmp_path / "r.zarr")
    common = ["--out", out, "--backend", "numpy", "--no-progress"]
    assert main(["run", clip.name, *common]) == 0
    for spelling in (clip.name + "/", "./" + clip.name, str(clip), str(clip) + "/", f"./{clip.name}/../{clip.name}"):
        capsys.readouterr()
        assert main(["run", spelling, *common]) == 0, spelling
        assert "1 already done" in capsys.readouterr().err


def test_old_store_with_a_relative_spec_resumes_with_the_absolute_path(cdnet_clip, tmp_path, monkeypatch, capsys):
    from gpudiff.engine import _runner

    clip = cdnet_clip(4)
    monkeypatch.chdir(tmp_path)
    common = ["--out", str(tmp_path / "r.zarr"), "--backend", "numpy", "--no-progress"]
    with monkeypatch.context() as m:  # as before the spec was normalised: recorded as typed
        m.setattr(_runner, "normal_source_key", lambda config: config)
        assert main(["run", clip.name + "/", *common]) == 0
    capsys.readouterr()
    assert main(["run", str(clip), *common]) == 0
    assert "1 already done" in capsys.readouterr().err


def test_glob_spelled_differently_resumes(cdnet_clip, tmp_path, monkeypatch, capsys):
    clip = cdnet_clip(4)
    monkeypatch.chdir(tmp_path)
    out = str(tmp_path / "r.zarr")
    common = ["--out", out, "--backend", "numpy", "--no-progress"]
    assert main(["run", f"{clip.name}/*.jpg", *common]) == 0
    for spelling in (f"./{clip.name}/*.jpg", f"{clip}/*.jpg", f"./{clip.name}/../{clip.name}/*.jpg"):
        capsys.readouterr()
        assert main(["run", spelling, *common]) == 0, spelling
        assert "0 chunks run, 1 already done" in capsys.readouterr().err, spelling


def test_glob_matching_other_files_is_still_refused(cdnet_clip, tmp_path, monkeypatch, capsys):
    clip = cdnet_clip(4)
    monkeypatch.chdir(tmp_path)
    common = ["--out", str(tmp_path / "r.zarr"), "--backend", "numpy", "--no-progress"]
    assert main(["run", f"{clip.name}/*.jpg", *common]) == 0
    first = sorted(clip.iterdir())[0]
    os.utime(first, (first.stat().st_atime, first.stat().st_mtime + 10))  # the same names, one file changed
    capsys.readouterr()
    assert main(["run", f"./{clip.name}/*.jpg", *common]) == 2
    assert "--overwrite" in _one_error_line(capsys.readouterr().err, "run")


def test_old_store_of_a_glob_resumes_with_the_same_spelling(cdnet_clip, tmp_path, monkeypatch, capsys):
    from gpudiff.io import _folder

    clip = cdnet_clip(4)
    monkeypatch.chdir(tmp_path)
    common = ["--out", str(tmp_path / "r.zarr"), "--backend", "numpy", "--no-progress"]
    plain = _folder.FolderSource.fingerprint
    with monkeypatch.context() as m:  # as before the relative names were recorded
        m.setattr(_folder.FolderSource, "fingerprint",
                  lambda self: {k: v for k, v in plain(self).items() if k != _folder._RELATIVE})
        assert main(["run", f"{clip.name}/*.jpg", *common]) == 0
    capsys.readouterr()
    assert main(["run", f"{clip.name}/*.jpg", *common]) == 0
    assert "0 chunks run, 1 already done" in capsys.readouterr().err


def test_normal_source_spec():
    from gpudiff.engine._config import normal_source_spec

    assert normal_source_spec("s3://bucket/frames/") == "s3://bucket/frames"
    assert normal_source_spec("https://host/a/b.tif") == "https://host/a/b.tif"
    assert normal_source_spec("frames/") == os.path.join(os.getcwd(), "frames")
    assert normal_source_spec("./frames/*.png") == os.path.join(os.getcwd(), "frames", "*.png")


# ------------------------------------------------------------------------------------------------
# 9. every option checked before starting: one line, exit 2


@pytest.mark.parametrize("flags", [
    ["--blur", "inf"], ["--blur", "nan"], ["--edges", "sobel", "--edge-threshold", "-1"],
    ["--edges", "sobel", "--edge-threshold", "inf"], ["--tolerance", "inf"], ["--tolerance", "nan"],
    ["--data-range", "inf"], ["--align", "--max-shift", "inf"], ["--align", "--upsample", "1e999"],
    ["--bins", "1e999"], ["--page", "1e999"], ["--max-pixels", "1e999"],
])
def test_compare_options_out_of_range(data_dir, capsys, flags):
    a, b = sorted((data_dir / "cdnet2014-traffic-subset/input").iterdir())[:2]
    assert main(["compare", str(a), str(b), *flags]) == 2
    _one_error_line(capsys.readouterr().err, "compare")


@pytest.mark.parametrize("flags", [
    ["--flow", "--flow-radius", "0"], ["--flow", "--flow-radius", "-2"], ["--shard", ""], ["--workers", "0"],
    ["--workers", "1e999"], ["--blur", "inf"],
])
def test_run_options_out_of_range(cdnet_clip, tmp_path, capsys, flags):
    out = tmp_path / "r.zarr"
    assert main(["run", str(cdnet_clip(3)), "--out", str(out), *flags]) == 2
    _one_error_line(capsys.readouterr().err, "run")
    assert not out.exists()


@pytest.mark.parametrize("flags", [["--chunk", "0"], ["--chunk", "1e23"], ["--workers", "0"]])
def test_dedup_options_out_of_range(cdnet_clip, capsys, flags):
    assert main(["dedup", str(cdnet_clip(3)), "--json", *flags]) == 2
    _one_error_line(capsys.readouterr().err, "dedup")


@pytest.mark.parametrize("flags", [["--interval", "0"], ["--interval", "-1"], ["--interval", "nan"],
                                   ["--interval", "inf"], ["--settle", "-1"], ["--settle", "inf"]])
def test_watch_options_out_of_range(cdnet_clip, tmp_path, capsys, flags):
    assert main(["watch", str(cdnet_clip(3)), "--keep-dir", str(tmp_path / "keep"), "--once", *flags]) == 2
    _one_error_line(capsys.readouterr().err, "watch")


def test_library_options_refuse_non_finite():
    from gpudiff import CompareOptions, ConfigError

    for kw in ({"blur": float("inf")}, {"tolerance": float("inf")}, {"data_range": float("inf")},
               {"max_shift": float("inf")}, {"edges": "sobel", "edge_threshold": -1.0},
               {"edges": "sobel", "edge_threshold": float("nan")}):
        with pytest.raises(ConfigError):
            CompareOptions(**kw)


def test_run_config_refuses_bad_chunk_scheduler_and_flow_radius():
    from gpudiff import ConfigError
    from gpudiff.engine import RunConfig

    for kw in ({"chunk": 2**31 + 1}, {"chunk": 0}, {"scheduler": "local:0"}, {"scheduler": "nope"},
               {"flow": True, "flow_radius": 0}):
        with pytest.raises(ConfigError):
            RunConfig(source="x", out="y", **kw)
