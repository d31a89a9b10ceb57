"""A seeded corpus of damaged files (``tests/_fuzz.py``, mutants of the real files in ../shared/data)
replayed on every CI run through every way in: ``read_image``, ``probe_image``, the stack readers
(``open_source`` of a mutated multi-page TIFF or GIF, every frame read), ``gpudiff compare``
(in-process and a few as subprocesses under a memory limit), one ``gpudiff run`` of a folder holding
a few hundred mutants among good frames, mutated CSV manifests and a mutated Zarr chunk.

Allowed outcomes: a correct read (a valid array within the pixel budget), a one-line InputError
naming the file (exit 2 from the CLI), or a failed batch item with its reason (exit 1). Not allowed:
any other exception, a traceback, an 'internal error' (exit 3), anything else on stderr (tifffile's
or libpng's warnings beside the error), a read over the per-file time limit, or memory beyond the
pixel budget.

Time limit: each read_image of these small mutants takes at most ~0.15 s on a loaded 2-core CI
machine (measured; the median is under 1 ms), so the limit of 2 s flags a hang or a quadratic walk
without flaking. Memory: with a budget of 2**22 pixels, the largest frame allowed is
2**22 x 3 x 8 bytes = 96 MiB; the growth of ru_maxrss over the whole run must stay under 400 MiB.

Memory: ru_maxrss grows by ~50 KiB per mutant read (159 MiB over the 3,000 here). That is glibc's
heap, not a leak: reading the same mutants again adds nothing, Python's own allocations stay flat
(tracemalloc), and with ``MALLOC_MMAP_THRESHOLD_=131072`` (no dynamic mmap threshold) 6,000 mutants
add 28 MiB instead of 310.

Wall time (2 shared cores): 26 s with numba's kernels cached on disk; 124 s on a cold cache, of which
~100 s is numba compiling the compare kernels for each new dtype pair (the first compare of a
uint16 or float64 mutant). read_image of the 3,000 mutants alone: ~4 s.

Run with ``-s`` to see the counts by mutation class and outcome.
"""

from __future__ import annotations

import collections
import contextlib
import csv
import gc
import io
import os
import random
import resource
import shutil
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

from gpudiff.errors import InputError
from gpudiff.io import probe_image, read_image
from tests import _fuzz

SEED = 20261207
N_READ = 3000  # read_image + probe_image
N_STACK = 400  # open_source of multi-page TIFF / GIF mutants, every frame
N_COMPARE = 300  # gpudiff compare in-process
N_SUBPROCESS = 6
N_BATCH = 250  # mutants in the one `gpudiff run` folder
BUDGET = 1 << 22
TIME_LIMIT_S = 2.0
#: a compare of a mutant may be the first of its dtype pair: numba then compiles the kernels for it
#: (10-60 s on a loaded 2-core machine, cached on disk after), so only a hang is flagged here
COMPARE_LIMIT_S = 120.0
RSS_GROWTH_MB = 400


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@pytest.fixture(autouse=True)
def _collect_earlier_garbage():
    """Collect what earlier tests left before a test starts counting warnings: a ResourceWarning of
    another test's unclosed file (CI saw one from a leaked TIFF handle, since fixed and tested in
    test_open_handles) is not a fault of these mutants."""
    gc.collect()


@pytest.fixture(scope="module")
def seeds(data_dir):
    return _fuzz.load_seeds(data_dir)


def _report(title, counts):
    by_outcome = collections.Counter()
    by_kind = collections.defaultdict(collections.Counter)
    for (kind, outcome), n in counts.items():
        by_outcome[outcome] += n
        by_kind[kind][outcome] += n
    print(f"\n{title}: {sum(by_outcome.values())} mutants; outcomes {dict(sorted(by_outcome.items()))}")
    for kind in sorted(by_kind):
        print(f"  {kind:14s} {dict(sorted(by_kind[kind].items()))}")


def _one_line_naming(message: str, path) -> bool:
    return "\n" not in message and str(path) in message and "Traceback" not in message


def _every_frame_outcome(path, must_name, some_refused: str, all_read: str) -> str:
    """Open ``path`` as a sequence and read every frame, classified by :func:`_classify_read`; a
    read whose frames were all read or refused is ``all_read`` or ``some_refused``. A frame's error
    must be one line (naming ``must_name`` unless it is None)."""
    from gpudiff.io import open_source

    def read_all():
        src = open_source(str(path), max_pixels=BUDGET)
        try:
            out = read_all.last = []
            for k in range(len(src)):
                try:
                    out.append(src.read(k).shape)
                except InputError as exc:
                    text = str(exc)
                    if not (_one_line_naming(text, must_name) if must_name is not None else "\n" not in text):
                        raise AssertionError(f"frame {k}: {exc!r}") from None
                    out.append("failed")
            return out
        finally:
            src.close()

    read_all.last = []
    outcome, _ = _classify_read(read_all, path)
    if outcome == "read":
        outcome = some_refused if "failed" in read_all.last else all_read
    return outcome


@contextlib.contextmanager
def _stderr_and_warnings():
    """Everything Python-level code writes to stderr, and every warning, during the block."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield err, caught


def _classify_read(call, path):
    """('read' | 'refused' | 'BAD: ...', seconds)."""
    start = time.perf_counter()
    with _stderr_and_warnings() as (err, caught):
        try:
            out = call()
        except InputError as exc:
            outcome = "refused" if _one_line_naming(str(exc), path) else f"BAD message: {exc!r}"
        except Exception as exc:  # noqa: BLE001 - the point of the test
            outcome = f"BAD exception: {type(exc).__name__}: {exc}"
        else:
            outcome = "read"
            if isinstance(out, np.ndarray):
                if out.ndim not in (2, 3) or out.shape[0] * out.shape[1] > BUDGET:
                    outcome = f"BAD array {out.shape} {out.dtype}"
                elif out.dtype.kind == "f" and not np.isfinite(out).all():
                    outcome = "BAD non-finite values"
    seconds = time.perf_counter() - start
    if seconds > TIME_LIMIT_S:
        outcome = f"BAD slow: {seconds:.2f} s"
    noise = err.getvalue().strip()
    if noise or caught:
        outcome = f"BAD noise: {noise[:300]!r} {[str(w.message) for w in caught][:3]}"
    return outcome, seconds


def _write(folder: Path, i: int, m: _fuzz.Mutant) -> Path:
    path = folder / f"m{i:05d}_{m.seed.split('.')[0]}_{m.kind}{m.ext}"
    path.write_bytes(m.data)
    return path


def test_read_image_and_probe_on_mutants(seeds, tmp_path):
    rss0 = _rss_mb()
    counts, bad, slowest = collections.Counter(), [], 0.0
    t0 = time.perf_counter()
    for i, m in enumerate(_fuzz.mutants(seeds, N_READ, seed=SEED)):
        path = _write(tmp_path, i, m)
        for name, call in (("read", lambda: read_image(path, max_pixels=BUDGET)),
                           ("probe", lambda: probe_image(path, max_pixels=BUDGET))):
            outcome, seconds = _classify_read(call, path)
            slowest = max(slowest, seconds)
            if name == "read":
                counts[(f"{m.fmt}:{m.kind}", outcome if not outcome.startswith("BAD") else "BAD")] += 1
            if outcome.startswith("BAD"):
                bad.append(f"{name} {path.name} ({m.what}): {outcome}")
        path.unlink()
    wall = time.perf_counter() - t0
    _report(f"read_image ({wall:.1f} s, slowest {slowest * 1000:.0f} ms)", counts)
    growth = _rss_mb() - rss0
    print(f"  ru_maxrss growth {growth:.0f} MiB")
    assert not bad, "\n".join(bad[:30])
    assert growth < RSS_GROWTH_MB
    outcomes = collections.Counter(o for (_, o) in counts.elements())
    assert outcomes["read"] > 100 and outcomes["refused"] > 1000  # the corpus exercises both sides


def test_stack_readers_on_mutants(seeds, tmp_path):
    """Multi-page TIFF and GIF mutants opened as sequences, every frame read (TiffSource, GifSource)."""
    stacks = {k: v for k, v in seeds.items() if v[0] in ("TIFF", "GIF")}
    counts, bad = collections.Counter(), []
    t0 = time.perf_counter()
    for i, m in enumerate(_fuzz.mutants(stacks, N_STACK, seed=SEED + 1)):
        path = _write(tmp_path, i, m)

        outcome = _every_frame_outcome(path, path, "opened, some frames refused", "every frame read")
        counts[(f"{m.fmt}:{m.kind}", outcome if not outcome.startswith("BAD") else "BAD")] += 1
        if outcome.startswith("BAD"):
            bad.append(f"{path.name} ({m.what}): {outcome}")
        path.unlink()
    _report(f"open_source + every frame ({time.perf_counter() - t0:.1f} s)", counts)
    assert not bad, "\n".join(bad[:30])


def test_compare_cli_on_mutants(seeds, tmp_path, capsys):
    from gpudiff.cli._main import main

    originals = {}
    for name, (fmt, data) in seeds.items():
        originals[name] = tmp_path / f"orig_{name}"
        originals[name].write_bytes(data)
    counts, bad, slowest = collections.Counter(), [], 0.0
    t0 = time.perf_counter()
    for i, m in enumerate(_fuzz.mutants(seeds, N_COMPARE, seed=SEED + 2)):
        path = _write(tmp_path, i, m)
        start = time.perf_counter()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            rc = main(["compare", str(originals[m.seed]), str(path), "--backend", "numpy",
                       "--max-pixels", str(BUDGET)])
        seconds = time.perf_counter() - start
        other = list(caught)  # any warning (a float overflow in the maths, say) is a bad outcome
        out, err = capsys.readouterr()
        lines = err.strip().splitlines()
        if rc == 0:
            outcome = "compared" if out.strip() else "BAD: exit 0 without a result"
            if lines and not all("warning: alignment" in ln for ln in lines):
                outcome = f"BAD stderr with exit 0: {err[:300]!r}"
        elif rc == 2:
            outcome = "error (exit 2)"
            if len(lines) != 1 or not lines[0].startswith("gpudiff compare: error: "):
                outcome = f"BAD stderr: {err[:300]!r}"
        else:
            outcome = f"BAD exit {rc}: {err[:300]!r}"
        if other:
            outcome = f"BAD warning: {[str(w.message) for w in other][:3]}"
        slowest = max(slowest, seconds)
        if seconds > COMPARE_LIMIT_S:
            outcome = f"BAD slow {seconds:.1f} s"
        counts[(f"{m.fmt}:{m.kind}", outcome if not outcome.startswith("BAD") else "BAD")] += 1
        if outcome.startswith("BAD"):
            bad.append(f"{path.name} ({m.what}): {outcome}")
        path.unlink()
    _report(f"gpudiff compare in-process ({time.perf_counter() - t0:.1f} s, slowest {slowest:.2f} s)", counts)
    assert not bad, "\n".join(bad[:30])


def _limit_memory():  # pragma: no cover - runs in the child
    limit = 3 << 30  # address space: the interpreter, NumPy and one frame of the budget fit easily
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def test_compare_subprocess_under_memory_limit(seeds, tmp_path):
    """A handful of bombs and truncations through the real entry point, in a child limited to
    3 GiB of address space: exit 0 or 2, one line on stderr, never a crash."""
    rng = random.Random(SEED + 3)
    picks = []
    for m in _fuzz.mutants(seeds, 400, seed=SEED + 3):
        if m.kind in ("huge", "trunc-struct") and m.fmt != "VIDEO":
            picks.append(m)
    rng.shuffle(picks)
    root = Path(__file__).resolve().parents[3]
    env = {**os.environ, "PYTHONPATH": str(root)}
    for i, m in enumerate(picks[:N_SUBPROCESS]):
        orig = tmp_path / f"orig_{m.seed}"
        orig.write_bytes(seeds[m.seed][1])
        path = _write(tmp_path, i, m)
        proc = subprocess.run([sys.executable, "-m", "gpudiff", "compare", str(orig), str(path), "--backend", "numpy"],
                              capture_output=True, text=True, timeout=120, env=env, preexec_fn=_limit_memory)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode in (0, 2), (m.what, proc.returncode, proc.stderr[-2000:])
        assert "Traceback" not in proc.stderr, proc.stderr
        if proc.returncode == 2:
            assert len(lines) == 1 and lines[0].startswith("gpudiff compare: error: "), proc.stderr
            assert str(path) in lines[0]
        print(f"\nsubprocess {m.fmt}:{m.kind} ({m.what}): exit {proc.returncode}")


def test_batch_run_of_a_folder_of_mutants(seeds, data_dir, tmp_path, capsys):
    """One `gpudiff run` over good frames and a few hundred mutants of frames of the same size:
    exit 1, every mutant item either done or failed with its reason, every good pair done."""
    from gpudiff.cli._main import main

    folder = tmp_path / "frames"
    folder.mkdir()
    good = sorted((data_dir / "cdnet2014-traffic-subset" / "input").glob("*.jpg"))[:20]
    jpeg_seed = {good[0].name: ("JPEG", good[0].read_bytes())}
    names = []
    for k, p in enumerate(good):
        shutil.copy(p, folder / f"f{k:04d}_good.jpg")
        names.append(f"f{k:04d}_good.jpg")
    for i, m in enumerate(_fuzz.mutants(jpeg_seed, N_BATCH, seed=SEED + 4)):
        name = f"f{20 + i:04d}_{m.kind}.jpg"
        (folder / name).write_bytes(m.data)
        names.append(name)
    store = tmp_path / "run.zarr"
    t0 = time.perf_counter()
    rc = main(["run", str(folder), "--out", str(store), "--no-progress", "--backend", "numpy",
               "--chunk", "64", "--max-pixels", str(BUDGET)])
    wall = time.perf_counter() - t0
    out, err = capsys.readouterr()
    assert rc in (0, 1), err
    assert "Traceback" not in err and "internal error" not in err, err[-3000:]
    assert main(["export", str(store)]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert len(rows) == len(names) - 1  # adjacent pairs
    status = collections.Counter(r["status"] for r in rows)
    print(f"\ngpudiff run of {len(names)} frames ({N_BATCH} mutants) in {wall:.1f} s: exit {rc}, items {dict(status)}")
    assert set(status) <= {"done", "failed"}
    for r in rows:
        if r["status"] == "failed":
            assert r["error"] and "\n" not in r["error"] and "Traceback" not in r["error"], r
            assert "internal" not in r["error"].lower(), r
        if int(r["moving"]) < 20:  # the good frames
            assert r["status"] == "done", r
    assert (rc == 1) == (status["failed"] > 0)
    # the done items are correct: the same values as comparing their two files directly
    from gpudiff.options import CompareOptions
    from gpudiff.pair._compare import compare

    for r in [r for r in rows if r["status"] == "done"][:3]:
        want = compare(str(folder / names[int(r["reference"])]), str(folder / names[int(r["moving"])]),
                       options=CompareOptions(backend="numpy")).to_dict()
        assert float(r["mse"]) == pytest.approx(want["mse"], rel=1e-12), (r, want)


def test_manifest_mutants(data_dir, tmp_path):
    """Damaged CSV manifests: opened and read, or one line naming the manifest."""
    from gpudiff.io import open_source

    imgs = sorted((data_dir / "cdnet2014-traffic-subset" / "input").glob("*.jpg"))[:6]
    text = "reference,moving,id\n" + "".join(f"{a},{b},pair{k}\n" for k, (a, b) in enumerate(zip(imgs, imgs[1:])))
    rng = random.Random(SEED + 5)
    counts, bad = collections.Counter(), []
    for i in range(200):
        path = tmp_path / f"m{i}.csv"
        path.write_text(_fuzz.mutate_text(rng, text), encoding="utf-8", errors="surrogatepass")

        def go():
            src = open_source(str(path), max_pixels=BUDGET)
            try:
                return [src.read(k).shape for k in range(min(len(src), 3))]
            finally:
                src.close()

        outcome, _ = _classify_read(go, path)
        if outcome.startswith("BAD") and "InputError" not in outcome:
            # a frame the manifest names (a mutated path) may be what the message names
            bad.append(f"{path.name}: {outcome}")
        counts[("manifest", outcome if not outcome.startswith("BAD") else "BAD")] += 1
    _report("manifests (open + first 3 frames)", counts)
    assert not bad, "\n".join(bad[:20])


def test_zarr_chunk_mutants(data_dir, tmp_path):
    """A real frame stack as a Zarr array; its chunk files damaged: every frame read or one line."""
    zarr = pytest.importorskip("zarr")
    import tifffile

    frames = tifffile.imread(data_dir / "pims-testdata" / "stuck.tif", key=range(4))[:, :64, :64]
    base = tmp_path / "base.zarr"
    arr = zarr.create_array(str(base), shape=frames.shape, chunks=(1, 64, 64), dtype=frames.dtype)
    arr[:] = frames
    chunk_files = sorted(p for p in base.rglob("*") if p.is_file() and p.name != "zarr.json")
    assert chunk_files
    rng = random.Random(SEED + 6)
    counts, bad = collections.Counter(), []
    for i in range(60):
        store = tmp_path / f"z{i}.zarr"
        shutil.copytree(base, store)
        target = store / chunk_files[i % len(chunk_files)].relative_to(base)
        data = bytearray(target.read_bytes())
        kind = ("flip", "trunc-random", "empty")[i % 3]
        if kind == "flip":
            for _ in range(rng.choice((1, 4))):
                data[rng.randrange(len(data))] ^= rng.randrange(1, 256)
        elif kind == "trunc-random":
            data = data[: rng.randrange(1, len(data))]
        else:
            data = bytearray()
        target.write_bytes(bytes(data))

        outcome = _every_frame_outcome(store, None, "some frames refused", "every frame read")
        counts[(f"zarr:{kind}", outcome if not outcome.startswith("BAD") else "BAD")] += 1
        if outcome.startswith("BAD"):
            bad.append(f"{target} ({kind}): {outcome}")
        shutil.rmtree(store)
    _report("zarr chunks", counts)
    assert not bad, "\n".join(bad[:20])
