"""Cold start: ``gpudiff warmup`` fills numba's disk cache, and a run says what start-up cost it."""

from __future__ import annotations

import importlib
import io
import json
import subprocess
import sys
import time

import pytest

from gpudiff.cli._main import _warm_note, main
from gpudiff.options import CompareOptions
from gpudiff.engine._runner import RunConfig, RunReport, run

pytest.importorskip("numba")

PROBE = r"""
import json, numpy as np
from gpudiff.pair import _sums_numba
from gpudiff.pair._sums import pair_sums
from gpudiff.pair._sums_numba import serial_kernels
rng = np.random.default_rng(5)
for dt, hist in ((np.uint8, (0, 256)), (np.uint16, (0, 65536)), (np.float32, (0.0, 1.0))):
    a = (rng.random((37, 29, 3)) * (255 if dt != np.float32 else 1)).astype(dt)
    with serial_kernels():
        pair_sums(a, a[::-1].copy(), bins=256, hist_range=hist)
    pair_sums(a[1:, 2:], a[:-1, :-2], bins=256, hist_range=hist)   # a view, the parallel driver
out = {}
for name in ("_numba_integer_serial", "_numba_float_serial", "_numba_integer", "_numba_float"):
    st = getattr(_sums_numba, name).stats
    out[name] = [sum(st.cache_hits.values()), sum(st.cache_misses.values())]
print(json.dumps(out))
"""


def test_after_warmup_a_new_process_compiles_nothing(capsys):
    assert main(["warmup", "--quiet"]) == 0  # fast when the cache is already warm (scripts/_venv.sh)
    assert "cases" in capsys.readouterr().out
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True).stdout
    stats = json.loads(out.strip().splitlines()[-1])
    for name, (hits, misses) in stats.items():
        assert hits >= 1 and misses == 0, (name, hits, misses)


def test_a_run_reports_its_start_up_and_the_rate_after_it(cdnet_clip, tmp_path, monkeypatch):
    module = importlib.import_module("gpudiff.pair._compare")
    real = module._compare_arrays
    calls = []

    def first_is_slow(*a, **k):  # stands in for first-use compilation
        time.sleep(1.5 if not calls else 0.02)
        calls.append(1)
        return real(*a, **k)

    monkeypatch.setattr(module, "_compare_arrays", first_is_slow)
    clip = cdnet_clip(40)
    report = run(RunConfig(source=str(clip), out=str(tmp_path / "w.zarr"), chunk=8, workers=1, progress=False,
                           log_every_s=1e9),
                 CompareOptions(metrics=("manhattan",), backend="numpy"), stream=io.StringIO())
    assert report.done == 39
    assert report.startup_s >= 1.5
    assert report.warm_rate is not None and report.warm_rate > 39 / report.elapsed_s
    assert report.warm_rate < 1 / 0.02 * 1.2  # one worker at 20 ms an item: about 50 items/s, not a burst
    note = _warm_note(report)
    assert "after" in note and "gpudiff warmup" in note


def test_no_note_when_start_up_is_a_small_part():
    r = RunReport(0, elapsed_s=100.0, startup_s=2.0, warm_rate=50.0)
    assert _warm_note(r) == ""
    r = RunReport(0, elapsed_s=10.0, startup_s=6.0, warm_rate=50.0)
    assert _warm_note(r).startswith("50.0 items/s after 6.0 s")
