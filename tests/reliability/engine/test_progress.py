"""Progress of a run: per item (not per chunk), on a timer, and one stage per pass."""

from __future__ import annotations

import importlib
import io
import json
import time

import numpy as np
import pytest

from gpudiff.engine import _progress
from gpudiff.options import CompareOptions
from gpudiff.engine._runner import RunConfig, run


@pytest.fixture
def clip(cdnet_clip):
    return cdnet_clip(25)


def _slowed(monkeypatch, seconds):
    module = importlib.import_module("gpudiff.pair._compare")  # (gpudiff.compare is also the function)
    real = module._compare_arrays

    def slow(*a, **k):
        time.sleep(seconds)
        return real(*a, **k)

    monkeypatch.setattr(module, "_compare_arrays", slow)


def _events(buf):
    return [json.loads(line) for line in buf.getvalue().splitlines() if line.startswith("{")]


def test_a_slow_single_chunk_reports_per_item_on_a_timer(clip, tmp_path, monkeypatch):
    _slowed(monkeypatch, 0.06)  # 24 items in one chunk: ~1.5 s
    buf = io.StringIO()
    t0 = time.monotonic()
    cfg = RunConfig(source=str(clip), out=str(tmp_path / "s.zarr"), chunk=64, log_json=True, log_every_s=0.2,
                    progress=False)
    report = run(cfg, CompareOptions(metrics=("manhattan",), backend="numpy"), stream=buf)
    took = time.monotonic() - t0
    assert report.done == 24
    ev = [e for e in _events(buf) if e["stage"] == "compare"]
    progress = [e for e in ev if e["event"] == "progress"]
    # lines came while the only chunk was still running, with counts that grew item by item
    partial = [e["items"] for e in progress if 0 < e["items"] < 24]
    assert len(partial) >= 3, ev
    assert partial == sorted(partial)
    # on the timer: no gap much longer than log_every_s
    times = [e["elapsed_s"] for e in progress]
    assert max(np.diff(times)) <= 0.2 + 0.35, times
    assert times[-1] <= took
    assert ev[-1]["event"] == "stage_done" and ev[-1]["items"] == 24
    # the ETA shrinks as items finish
    etas = [e["eta_s"] for e in progress if e["eta_s"] is not None and 0 < e["items"] < 24]
    assert etas[-1] < etas[0]


def test_each_sequence_pass_is_its_own_stage(clip, tmp_path):
    buf = io.StringIO()
    cfg = RunConfig(source=str(clip), out=str(tmp_path / "q.zarr"), chunk=8, log_json=True, log_every_s=0.05,
                    progress=False, events=True, background=True)
    assert run(cfg, CompareOptions(metrics=("manhattan",), backend="numpy"), stream=buf).exit_code == 0
    ev = _events(buf)
    stages = list(dict.fromkeys(e["stage"] for e in ev))
    assert stages == ["compare", "corrupt/cuts", "background"]
    done = {e["stage"]: e for e in ev if e["event"] == "stage_done"}
    assert done["compare"]["items"] == done["compare"]["total"] == 24
    assert done["corrupt/cuts"]["items"] == done["corrupt/cuts"]["total"] == 25
    assert done["background"]["items"] == done["background"]["total"] == 25
    assert done["background"]["unit"] == "frames"
    # while compare ran, nothing claimed the sequence passes were done
    first_seq = next(i for i, e in enumerate(ev) if e["stage"] != "compare")
    assert all(e["stage"] == "compare" for e in ev[:first_seq])


def test_plain_log_lines_name_the_stage(clip, tmp_path):
    buf = io.StringIO()
    cfg = RunConfig(source=str(clip), out=str(tmp_path / "p.zarr"), chunk=8, log_every_s=0.05, progress=False,
                    events=True)
    run(cfg, CompareOptions(metrics=("manhattan",), backend="numpy"), stream=buf)
    lines = buf.getvalue().splitlines()
    assert any(line.startswith("gpudiff run: 24/24 items") for line in lines), lines
    assert any(line.startswith("gpudiff run: corrupt/cuts: 25/25 frames") for line in lines), lines


def test_the_distributed_ticker_batches_worker_events(monkeypatch):
    distributed = pytest.importorskip("distributed")
    sent = []

    class FakeWorker:
        def log_event(self, topic, msg):
            sent.append((topic, msg))

    monkeypatch.setattr(distributed, "get_worker", lambda: FakeWorker())
    monkeypatch.setattr(_progress, "_TICK", None)
    t = _progress._Ticker(7)
    for k in range(200):
        t.item(k % 50 != 0)
    assert t.done == 196 and t.failed == 4
    # batched: a first event at most, none of 200 per item within 0.25 s
    assert len(sent) <= 1
    time.sleep(0.3)
    t.item(True)
    assert sent[-1][0] == _progress._TICK_TOPIC and sent[-1][1]["chunk"] == 7
    assert sum(m["done"] for _, m in sent) == 197 and sum(m["failed"] for _, m in sent) == 4

    got = []

    class P:
        def tick(self, c, d, f):
            got.append((c, d, f))

    monkeypatch.setattr(_progress, "_TICK", P())
    t = _progress._Ticker(3)
    t.item(True)
    t.item(False)
    assert got == [(3, 1, 0), (3, 0, 1)]  # in process: every item
