"""gpudiff report: digests and plots on small stores, the page's content, bad input.

Oracles: brute-force loops over buckets, NumPy on the columns written, the store's own summary(),
scikit-image's ``downscale_local_mean`` for thumbnails, Pillow for decoding what the page embeds.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import re
import shutil
import sys

import numpy as np
import pytest

from gpudiff.report import _digest as rd
from gpudiff.report import _plots as rp
from gpudiff.errors import ConfigError, GpudiffError, InputError
from gpudiff.cli._report import register_cli
from gpudiff.report import build_report
from gpudiff.report._columns import _extreme, _plain_layout, _read_chunks_directly
from gpudiff.report._thumbs import _downscale
from gpudiff.engine._schema import Field
from gpudiff.engine._store import ResultStore

PIL = pytest.importorskip("PIL.Image")

N, CHUNK = 60, 8
THRESHOLDS = {"change": 0.5, "mse": 30.0}
PENDING_CHUNK = 5  # items 40..47 never written
FAILED_ITEM = 10


def _values(n=N, seed=1):
    rng = np.random.default_rng(seed)
    mse = rng.gamma(2.0, 5.0, n)
    mse[::17] = 0.0  # exact repeats: distance 0, PSNR +inf
    mse[5] = 5000.0  # a spike: with the zeros, mse spans decades -> symlog
    with np.errstate(divide="ignore"):
        psnr = 10 * np.log10(255.0**2 / mse)
    change = rng.random(n)
    keep = (change > THRESHOLDS["change"]).astype(np.uint8)
    corrupt = np.zeros(n, np.uint8)
    corrupt[[5, 33]] = 1
    cut = np.zeros(n, np.uint8)
    cut[52] = 1
    shift = rng.normal(0, 1, (n, 2))
    return {"mse": mse, "ssim": 1 - mse / 6000.0, "psnr": psnr, "change": change, "keep": keep, "corrupt": corrupt,
            "cut": cut, "shift": shift}


def _make_store(path, *, source="/nonexistent/frames", n=N, chunk=CHUNK, pending=(PENDING_CHUNK,), version=None):
    v = _values(n)
    fields = [Field("reference_index", "int64"), Field("moving_index", "int64"), Field("mse", "float64"),
              Field("ssim", "float64"), Field("psnr", "float64"), Field("change", "float64"), Field("keep", "uint8"),
              Field("corrupt", "uint8"), Field("cut", "uint8"), Field("shift", "float64", (2,), dims=("item", "axis"))]
    attrs = {"pairs": "consecutive", "source": {"kind": "folder", "spec": source}, "thresholds": THRESHOLDS,
             "backend": "numpy", "device": "cpu", "options": {"align": True, "blur": 0.0}}
    store = ResultStore.create_or_open(path, n_items=n, chunk=chunk, fields=fields, attrs=attrs,
                                       initial={"reference_index": np.arange(n), "moving_index": np.arange(1, n + 1)})
    for c in range(store.n_chunks):
        if c in pending:
            continue
        sl = store.chunk_slice(c)
        m = sl.stop - sl.start
        status = np.ones(m, np.uint8)
        errors = [""] * m
        if sl.start <= FAILED_ITEM < sl.stop:
            status[FAILED_ITEM - sl.start] = 2
            errors[FAILED_ITEM - sl.start] = "frame 11: cannot read <b>truncated</b> & more"
        store.write_chunk(c, {k: a[sl] for k, a in v.items()}, status, errors)
    return store, v


@pytest.fixture()
def small(tmp_path):
    store, v = _make_store(tmp_path / "small.zarr")
    status = store.read(["status"])["status"]
    return store, v, status


# ---------------------------------------------------------------------------------------------- digests


def test_buckets_cover_every_item_once_and_count_status():
    status = np.ones(1003, np.uint8)
    status[[7, 8, 500]] = 2
    status[900:950] = 0
    b = rd.make_buckets(1003, 100, status=status)
    sizes = np.diff(b.edges)
    assert b.edges[0] == 0 and b.edges[-1] == 1003 and sizes.min() >= 10 and sizes.max() - sizes.min() <= 1
    for k in range(len(sizes)):  # oracle: a loop per bucket
        seg = status[b.edges[k] : b.edges[k + 1]]
        assert b.failed_fraction[k] == pytest.approx(np.mean(seg == 2))
        assert b.pending_fraction[k] == pytest.approx(np.mean(seg == 0))
        assert b.x[k] == pytest.approx((b.edges[k] + b.edges[k + 1] - 1) / 2)
    assert (b.n_failed, b.n_pending) == (3, 50)
    few = rd.make_buckets(7, 100)
    assert not few.decimated and np.array_equal(few.x, np.arange(7))


def test_digest_min_max_mean_per_bucket_match_a_loop():
    rng = np.random.default_rng(3)
    n = 10_000
    v = rng.lognormal(0, 1, n)
    v[rng.random(n) < 0.05] = np.nan
    v[1234] = 1e6  # one spike among ten thousand
    done = rng.random(n) > 0.1
    b = rd.make_buckets(n, 97, status=np.where(done, 1, 2).astype(np.uint8))
    d = rd.digest_column("x", v, b, done=done)
    for k in range(97):
        seg = v[b.edges[k] : b.edges[k + 1]][done[b.edges[k] : b.edges[k + 1]]]
        seg = seg[np.isfinite(seg)]
        assert d.lo[k] == seg.min() and d.hi[k] == seg.max()
        assert d.mean[k] == pytest.approx(seg.mean(), rel=1e-12)
    if done[1234]:
        assert d.hi.max() == 1e6  # the spike survives decimation
    assert d.n_done == done.sum() and d.n_finite == np.count_nonzero(done & np.isfinite(v))
    assert d.scale == "log"  # lognormal with a 1e6 spike spans many decades
    assert sum(c.sum() for c in d.hist.values()) == d.n_finite


@pytest.mark.parametrize(
    ("values", "scale", "linthresh"),
    [
        ([1.0, 2.0, 3.0, 50.0], "linear", None),
        ([1e-3, 1.0, 5.0], "log", None),  # 5 / 1e-3 = 5000: more than three decades
        ([1e-3, 0.5, 0.9], "linear", None),  # 900: less
        ([-1.0, 1e-3, 1e3], "linear", None),  # negative values: never logarithmic
        ([0.0, 0.0, 1e-2, 3.0, 50.0], "symlog", 1e-2),  # zeros among values spanning decades
        ([0.0, 1.0, 2.0], "linear", None),
        ([np.nan, np.inf, 1.0, 1e4], "log", None),  # NaN and inf do not count
    ],
)
def test_choose_scale(values, scale, linthresh):
    got = rd.choose_scale(np.array(values))
    assert got == (scale, linthresh)


def test_histogram_split_kept_dropped_and_threshold_counts(small):
    store, v, status = small
    done = status == 1
    b = rd.make_buckets(N, 2000, status=status)
    keep = v["keep"] == 1
    d = rd.digest_column("change", v["change"], b, done=done, keep=keep, threshold=0.5)
    finite = done & np.isfinite(v["change"])
    assert d.hist["kept"].sum() == np.count_nonzero(finite & keep)
    assert d.hist["dropped"].sum() == np.count_nonzero(finite & ~keep)
    assert d.above == np.count_nonzero(finite & (v["change"] > 0.5))
    assert d.above + d.below == np.count_nonzero(finite)
    # a per-item threshold column that varies is kept per bucket, a constant one becomes a line
    t = np.linspace(0.2, 0.8, N)
    dv = rd.digest_column("change", v["change"], b, done=done, threshold_values=t)
    assert dv.threshold is None and dv.above == np.count_nonzero(finite & (v["change"] > t))
    dc = rd.digest_column("change", v["change"], b, done=done, threshold_values=np.full(N, 0.25))
    assert dc.threshold == 0.25


# ---------------------------------------------------------------------------------------------- figures


def _by_gid(ax, gid):
    arts = [a for a in (*ax.lines, *ax.collections) if a.get_gid() == gid]
    assert len(arts) <= 1, gid
    return arts[0] if arts else None


def test_timeline_marks_thresholds_scale(small):
    store, v, status = small
    done = status == 1
    flags = {"kept": v["keep"] == 1, "corrupt": v["corrupt"] == 1, "cut": v["cut"] == 1}
    b = rd.make_buckets(N, 2000, x=np.arange(1, N + 1), status=status, xlabel="moving frame")
    d = rd.digest_column("mse", v["mse"], b, done=done, flags=flags, threshold=30.0)
    fig = rp.timeline_figure(d, b, ylabel="mse (intensity²)")
    ax, strip = fig.axes
    assert ax.get_yscale() == "symlog"  # zeros and 0.x .. 5000
    line = _by_gid(ax, "values")
    expected = np.where(done & np.isfinite(v["mse"]), v["mse"], np.nan)
    np.testing.assert_array_equal(line.get_ydata(), expected)
    np.testing.assert_array_equal(line.get_xdata(), np.arange(1, N + 1))
    thr = _by_gid(ax, "threshold")
    assert list(thr.get_ydata()) == [30.0, 30.0]
    corrupt = _by_gid(ax, "corrupt").get_offsets()
    want = [(i + 1, v["mse"][i]) for i in np.flatnonzero(v["corrupt"]) if done[i]]
    np.testing.assert_array_equal(np.asarray(corrupt), np.array(want))
    assert len(_by_gid(ax, "kept").get_offsets()) == np.count_nonzero(flags["kept"] & done)
    assert len(_by_gid(ax, "cut").get_offsets()) == 1
    # failed item 10 (x = 11) on the status strip; the pending chunk shaded on the axes
    failed = _by_gid(strip, "failed")
    verts = np.concatenate([p.vertices for p in failed.get_paths()])
    assert verts[verts[:, 1] > 0, 0].min() == pytest.approx(FAILED_ITEM + 1 - 0.5)
    assert verts[verts[:, 1] > 0, 0].max() == pytest.approx(FAILED_ITEM + 1 + 0.5)
    pend = _by_gid(ax, "pending")
    (x0, w), = [(p.vertices[:, 0].min(), np.ptp(p.vertices[:, 0])) for p in pend.get_paths()]
    assert x0 == pytest.approx(PENDING_CHUNK * CHUNK + 1 - 0.5) and w == pytest.approx(CHUNK)
    labels = ax.get_legend().get_texts()
    assert any("failed (1)" in t.get_text() for t in labels) and any("pending (8)" in t.get_text() for t in labels)
    # PSNR: the repeats are +inf, marked along the top, not drawn as values
    dp = rd.digest_column("psnr", v["psnr"], b, done=done)
    axp = rp.timeline_figure(dp, b, ylabel="psnr (dB)").axes[0]
    inf_x = _by_gid(axp, "infinite").get_offsets()[:, 0]
    np.testing.assert_array_equal(inf_x, [i + 1 for i in np.flatnonzero(np.isinf(v["psnr"])) if done[i]])
    assert axp.get_yscale() == "linear"


def test_decimated_timeline_keeps_the_spike_and_shows_means():
    n = 20_000
    v = np.full(n, 1.0)
    v[::2] = 3.0
    v[12_345] = 250.0
    b = rd.make_buckets(n, 400)
    d = rd.digest_column("m", v, b, done=np.ones(n, bool))
    fig = rp.timeline_figure(d, b, ylabel="m")
    ax = fig.axes[0]
    band = _by_gid(ax, "values")
    ys = np.concatenate([p.vertices[:, 1] for p in band.get_paths()])
    assert ys.max() == 250.0 and ys.min() == 1.0
    mean = _by_gid(ax, "mean").get_ydata()
    assert b.size == 50
    # bucket 246 holds items 12300..12349: 25 threes, 24 ones and the spike (item 12345 was a one)
    assert mean[246] == pytest.approx((25 * 3 + 24 * 1 + 250) / 50)
    assert mean[0] == pytest.approx(2.0)
    assert len(fig.axes) == 1  # nothing failed or pending: no status strip


def test_histogram_figure_draws_groups_and_threshold(small):
    store, v, status = small
    b = rd.make_buckets(N, 2000, status=status)
    d = rd.digest_column("change", v["change"], b, done=status == 1, keep=v["keep"] == 1, threshold=0.5)
    ax = rp.histogram_figure(d, xlabel="change").axes[0]
    kept = [a for a in ax.patches if a.get_gid() == "kept"]
    dropped = [a for a in ax.patches if a.get_gid() == "dropped"]
    assert len(kept) == len(dropped) == 1
    np.testing.assert_array_equal(kept[0].get_data().values, d.hist["kept"])
    thr = _by_gid(ax, "threshold")
    assert list(thr.get_xdata()) == [0.5, 0.5]


def test_drift_figure_cumulative_panel_is_the_running_sum(small):
    store, v, status = small
    done = status == 1
    b = rd.make_buckets(N, 2000, status=status)
    fig = rp.drift_figure(v["shift"], b, done=done, cumulative=True)
    top, bottom = fig.axes
    np.testing.assert_array_equal(_by_gid(top, "dy").get_ydata(), np.where(done, v["shift"][:, 0], np.nan))
    want = np.nancumsum(np.where(done[:, None], v["shift"], np.nan), axis=0)
    np.testing.assert_allclose(_by_gid(bottom, "dx-cum").get_ydata(), want[:, 1])


def test_figure_png_is_deterministic_and_white():
    b = rd.make_buckets(5, 100)
    d = rd.digest_column("m", np.arange(5.0), b, done=np.ones(5, bool))
    a = rp.figure_png(rp.timeline_figure(d, b, ylabel="m"))
    c = rp.figure_png(rp.timeline_figure(d, b, ylabel="m"))
    assert a == c
    img = np.asarray(PIL.open(io.BytesIO(a)).convert("RGB"))
    assert img.shape == (270, 830, 3)
    assert (img[0, 0] == 255).all()  # the palette keeps the background pure white


# ---------------------------------------------------------------------------------------------- helpers


def test_downscale_matches_skimage_block_mean():
    transform = pytest.importorskip("skimage.transform")
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)
    got = _downscale(img, 160)  # factor 4
    want = transform.downscale_local_mean(img.astype(np.float64), (4, 4, 1))
    np.testing.assert_allclose(got, want, rtol=1e-6)
    f = np.full((8, 8), np.nan, np.float32)
    f[:4, :4] = 2.0
    np.testing.assert_array_equal(_downscale(f, 2), [[2.0, np.nan], [np.nan, np.nan]])


def test_extreme_picks_the_largest_and_smallest_among_allowed():
    score = np.array([5.0, np.nan, 9.0, 1.0, 9.0, 3.0])
    ok = np.array([True, True, True, True, True, False])
    np.testing.assert_array_equal(_extreme(score, ok, 2, largest=True), [2, 4])  # tie: lower item first
    np.testing.assert_array_equal(_extreme(score, ok, 2, largest=False), [3, 0])
    assert _extreme(score, np.zeros(6, bool), 3, largest=True).size == 0


def test_direct_chunk_reader_equals_zarr(small):
    store, v, status = small
    for name in ("status", "mse", "keep", "shift", "reference_index"):
        got = _read_chunks_directly(store, name)
        want = store.read([name])[name]  # zarr-python: the oracle
        assert got is not None and got.dtype == want.dtype and got.shape == want.shape
        np.testing.assert_array_equal(got, want)
    assert np.isnan(_read_chunks_directly(store, "mse")[PENDING_CHUNK * CHUNK]).all()  # never written: fill
    assert _read_chunks_directly(store, "error") is None  # strings: zarr-python reads them
    # a damaged chunk file: fill values and the same warning as ResultStore.read
    (store.path / "mse" / "c" / "2").write_bytes(b"\x28\xb5\x2f\xfd garbage")
    with pytest.warns(RuntimeWarning, match=r"mse: chunk\(s\) \[2\] unreadable"):
        got = _read_chunks_directly(store, "mse")
    with pytest.warns(RuntimeWarning, match=r"mse: chunk\(s\) \[2\] unreadable"):
        want = store.read(["mse"])["mse"]
    np.testing.assert_array_equal(got, want)
    assert np.isnan(got[16:24]).all() and not np.isnan(got[:8]).all()
    # a layout it does not know is left to zarr-python
    meta = json.loads((store.path / "mse" / "zarr.json").read_text())
    assert _plain_layout(meta, N, CHUNK) is not None
    assert _plain_layout({**meta, "codecs": [meta["codecs"][0], {"name": "blosc"}]}, N, CHUNK) is None
    assert _plain_layout(meta, N, CHUNK + 1) is None


def test_report_notes_damaged_chunks(small, tmp_path):
    store, _, _ = small
    (store.path / "ssim" / "c" / "1").write_bytes(b"not zstd")
    r = build_report(store.path, html=tmp_path / "r.html", top=0)
    assert any("ssim: chunk(s) [1] unreadable" in n for n in r.notices)


# ---------------------------------------------------------------------------------------------- the page


def _images(page: str) -> list[tuple[str, bytes]]:
    out = []
    for mime, data in re.findall(r'src="data:(image/(?:png|jpeg));base64,([A-Za-z0-9+/=]+)"', page):
        out.append((mime, base64.b64decode(data)))
    return out


def test_page_from_a_store_still_being_written(small, tmp_path):
    store, v, status = small
    out = tmp_path / "r.html"
    r = build_report(store.path, html=out, png_dir=tmp_path / "png", top=4)
    page = out.read_text(encoding="utf-8")
    s = store.summary()
    # header numbers are the store's own summary
    for key in ("done", "failed", "pending"):
        assert getattr(r, key) == s[key]
        assert f'{s[key]} {key}</span>' in page
    assert (r.done, r.failed, r.pending) == (N - CHUNK - 1, 1, CHUNK)
    assert f"{s['n_items']} in {s['n_chunks']} chunks of {s['chunk']}" in page
    assert "numpy, cpu" in page
    # still being written: says so; source gone: says so, and renders anyway
    assert any("pending" in n for n in r.notices)
    assert "cannot be opened" in page and not r.source_available
    # the failed item, escaped
    assert "frame 11: cannot read &lt;b&gt;truncated&lt;/b&gt; &amp; more" in page and "<b>truncated" not in page
    assert re.search(r"<td>10</td><td>10</td><td>11</td>", page)
    # self-contained, script-free, no network
    assert "Content-Security-Policy" in page and "<script" not in page.lower()
    assert not re.search(r'(src|href)="(https?:|//)', page)
    imgs = _images(page)
    assert len(imgs) == len(r.figures)  # no thumbnails without the source
    for _, data in imgs:
        PIL.open(io.BytesIO(data)).verify()
    assert {"timeline_mse", "histogram_mse", "timeline_psnr", "timeline_change", "drift"} <= set(r.figures)
    assert r.ranked_by == "change"  # the dedup statistic ranks first when present
    for name in ("timeline_mse", "drift"):
        assert f'id="fig-{name}"' in page
    # the PNG files are the embedded figures
    files = {p.rsplit("/", 1)[-1][:-4]: p for p in r.png_files}
    embedded = {d for _, d in imgs}
    for name in r.figures:
        assert open(files[name], "rb").read() in embedded


def test_thresholds_and_flags_reach_the_page(small, tmp_path):
    store, v, status = small
    out = tmp_path / "r.html"
    build_report(store.path, html=out, top=0)
    page = out.read_text(encoding="utf-8")
    done = status == 1
    above = np.count_nonzero(done & (v["change"] > 0.5))
    assert f"Threshold 0.5 (dashed): {above} items above" in page
    kept = np.count_nonzero(done & (v["keep"] == 1))
    assert f"{kept} kept, {np.count_nonzero(done) - kept} dropped" in page
    assert "most-changed" not in page  # top=0: no thumbnail tables, no link to them


@pytest.fixture()
def real_store(tmp_path, data_dir):
    """The real pipeline on 9 real traffic frames (8 consecutive pairs), aligned, with diff maps."""
    from gpudiff.cli._main import main

    src = tmp_path / "frames"
    src.mkdir()
    for p in sorted((data_dir / "cdnet2014-traffic-subset" / "input").glob("*.jpg"))[:9]:
        shutil.copy(p, src / p.name)
    out = tmp_path / "run.zarr"
    code = main(["run", str(src), "--out", str(out), "--chunk", "4", "--align", "--save-maps", "diff",
                 "--metrics", "mse,ssim", "--no-progress", "--backend", "numpy"])
    assert code == 0
    return out, src


def test_real_run_thumbnails_rank_and_missing_source(real_store, tmp_path):
    out, src = real_store
    store = ResultStore.open(out)
    mse = store.read(["mse"])["mse"]
    html = tmp_path / "real.html"
    r = build_report(out, html=html, top=3)
    assert r.source_available and r.ranked_by == "mse"
    page = html.read_text(encoding="utf-8")
    most = page.split('id="most-changed"')[1].split("</section>")[0]
    # the three largest MSE items, in order (oracle: argsort of the stored column)
    want = np.argsort(-mse, kind="stable")[:3]
    assert re.findall(r"<td>item (\d+)<br>", most) == [str(i) for i in want]
    thumbs = [PIL.open(io.BytesIO(d)) for m, d in _images(most)]
    assert len(thumbs) == 9 and all(t.size == (160, 120) for t in thumbs)  # 320x240 frames, factor 2
    assert "stored diff map" in most
    least = page.split('id="least-changed"')[1].split("</section>")[0]
    assert re.findall(r"<td>item (\d+)<br>", least) == [str(i) for i in np.argsort(mse, kind="stable")[:3]]
    assert "changed since the run" not in page
    # a frame rewritten after the run: the page warns that thumbnails may not match
    first = sorted(src.iterdir())[0]
    os.utime(first, ns=(first.stat().st_atime_ns, first.stat().st_mtime_ns + 10**9))
    r1 = build_report(out, html=tmp_path / "touched.html", top=1)
    assert any("changed since the run" in n for n in r1.notices)
    # the source moved away: the page still renders, says so, and has no thumbnails
    shutil.rmtree(src)
    r2 = build_report(out, html=tmp_path / "gone.html", top=3)
    page2 = (tmp_path / "gone.html").read_text(encoding="utf-8")
    assert not r2.source_available and "cannot be opened" in page2 and "not available" in page2
    assert r2.figures == r.figures


def test_worker_processes_draw_the_same_figures(small, tmp_path):
    store, _, _ = small
    one = build_report(store.path, png_dir=tmp_path / "one", top=2, workers=1)
    two = build_report(store.path, png_dir=tmp_path / "two", top=2, workers=2)
    assert one.figures == two.figures
    for a, b in zip(one.png_files, two.png_files):
        assert open(a, "rb").read() == open(b, "rb").read(), a


# ---------------------------------------------------------------------------------------------- bad input


def test_not_a_store(tmp_path):
    (tmp_path / "plain").mkdir()
    (tmp_path / "file.zarr").write_text("x")
    for p in (tmp_path / "plain", tmp_path / "file.zarr", tmp_path / "missing.zarr"):
        with pytest.raises(InputError, match="result store"):
            build_report(p, html=tmp_path / "r.html")
    assert not (tmp_path / "r.html").exists()


def test_newer_store_version(tmp_path):
    store, _ = _make_store(tmp_path / "new.zarr", pending=())
    meta_file = store.path / "zarr.json"
    meta = json.loads(meta_file.read_text())
    meta["attributes"]["gpudiff_store_version"] = 99
    meta_file.write_text(json.dumps(meta))
    with pytest.raises(InputError, match="version 99.*upgrade gpudiff"):
        build_report(store.path, html=tmp_path / "r.html")


def test_empty_stores(tmp_path):
    ResultStore.create_or_open(tmp_path / "zero.zarr", n_items=0, chunk=4, fields=[Field("mse", "float64")])
    with pytest.raises(InputError, match="empty result store"):
        build_report(tmp_path / "zero.zarr", html=tmp_path / "r.html")
    ResultStore.create_or_open(tmp_path / "fresh.zarr", n_items=10, chunk=4, fields=[Field("mse", "float64")])
    with pytest.raises(InputError, match=r"no finished item yet \(10 pending\)"):
        build_report(tmp_path / "fresh.zarr", html=tmp_path / "r.html")


def test_bad_options(small, tmp_path):
    store, _, _ = small
    with pytest.raises(ConfigError, match="nothing to write"):
        build_report(store.path)
    with pytest.raises(ConfigError, match="--top 501"):
        build_report(store.path, html=tmp_path / "r.html", top=501)
    with pytest.raises(ConfigError, match="--max-points"):
        build_report(store.path, html=tmp_path / "r.html", max_points=3)
    with pytest.raises(ConfigError, match="--rank-by nope.*mse"):
        build_report(store.path, html=tmp_path / "r.html", rank_by="nope")
    with pytest.raises(InputError, match="does not exist"):
        build_report(store.path, html=tmp_path / "no" / "dir" / "r.html")


# ---------------------------------------------------------------------------------------------- CLI


def _cli(argv, capsys):
    """``gpudiff report ...`` through gpudiff.cli once it registers the subcommand, else through an
    equivalent harness (same parser class, same error handling as cli.main)."""
    from gpudiff.cli import _main as cli

    parser = cli.build_parser()
    if "report" in getattr(parser, "subcommands", {}):
        code = cli.main(argv)
    else:
        p = cli._Parser(prog="gpudiff")
        sub = p.add_subparsers(dest="command", parser_class=cli._Parser)
        register_cli(sub)
        try:
            args = p.parse_args(argv)
            code = args.func(args)
        except SystemExit as e:
            code = int(e.code or 0)
        except GpudiffError as e:
            print(f"gpudiff report: error: {' '.join(str(e).split())}", file=sys.stderr)
            code = e.exit_code
    cap = capsys.readouterr()
    return code, cap.err


def test_cli_writes_and_fails_in_one_line(small, tmp_path, capsys):
    store, _, _ = small
    out = tmp_path / "c.html"
    code, err = _cli(["report", str(store.path), "--html", str(out), "--top", "2"], capsys)
    assert code == 0 and out.exists() and "gpudiff report:" in err
    (tmp_path / "notastore").mkdir()
    code, err = _cli(["report", str(tmp_path / "notastore"), "--html", str(out)], capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "notastore" in lines[0] and "Traceback" not in err
    code, err = _cli(["report", str(store.path), "--html", str(out), "--top", "many"], capsys)
    assert code == 2 and "--top" in err


def test_register_cli_adds_the_subcommand():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="command")
    register_cli(sub)
    args = p.parse_args(["report", "s.zarr", "--png", "d", "--top", "5", "--max-points", "500"])
    assert (args.store, args.png, args.html, args.top, args.max_points) == ("s.zarr", "d", None, 5, 500)
    assert callable(args.func)


# ---------------------------------------------------------------------------------------------- flow, foreground


def test_flow_and_foreground_sections_from_a_tiff_source(tmp_path):
    """Sequence columns of the other stages (flow, background model) on a generated uint16 TIFF."""
    tifffile = pytest.importorskip("tifffile")
    from gpudiff.io import open_source

    n_frames, h, w = 13, 48, 64
    rng = np.random.default_rng(5)
    frames = (1000 + 50 * rng.standard_normal((n_frames, h, w))).astype(np.uint16)
    masks = np.zeros((n_frames - 1, h, w), np.uint8)
    for t in range(n_frames - 1):  # an object that grows: the foreground of item t is (t+2)^2 px
        masks[t, 10 : 12 + t, 20 : 22 + t] = 1
        frames[t + 1, 10 : 12 + t, 20 : 22 + t] = 4000
    tif = tmp_path / "stack.tif"
    tifffile.imwrite(tif, frames)
    n = n_frames - 1
    fg = masks.reshape(n, -1).mean(axis=1)
    flow_mean, flow_p95 = 0.1 + 0.05 * np.arange(n), 0.5 + 0.1 * np.arange(n)
    fields = [Field("reference_index", "int64"), Field("moving_index", "int64"), Field("mse", "float64"),
              Field("foreground_fraction", "float64"), Field("flow_mean", "float64"), Field("flow_p95", "float64"),
              Field("maps/foreground", "uint8", (h, w), dims=("item", "y", "x"), item_chunk=1)]
    store = ResultStore.create_or_open(
        tmp_path / "seq.zarr", n_items=n, chunk=4, fields=fields,
        attrs={"pairs": "consecutive", "source": open_source(tif).fingerprint()},
        initial={"reference_index": np.arange(n), "moving_index": np.arange(1, n + 1)})
    for c in range(store.n_chunks):
        sl = store.chunk_slice(c)
        store.write_chunk(c, {"mse": fg[sl] * 1e4 + 1, "foreground_fraction": fg[sl], "flow_mean": flow_mean[sl],
                              "flow_p95": flow_p95[sl], "maps/foreground": masks[sl]}, np.ones(sl.stop - sl.start))
    r = build_report(store.path, html=tmp_path / "seq.html", png_dir=tmp_path / "png", top=2)
    assert r.source_available and not any("changed" in x for x in r.notices)
    assert {"flow", "timeline_foreground_fraction"} <= set(r.figures)
    page = (tmp_path / "seq.html").read_text(encoding="utf-8")
    # flow: both series on one axis (the PNG is the figure's; redraw to read its data)
    b = rd.make_buckets(n, 2000, x=np.arange(1, n + 1))
    ds = {lab: rd.digest_column(lab, v, b, done=np.ones(n, bool)) for lab, v in
          (("mean |flow|", flow_mean), ("p95 |flow|", flow_p95))}
    ax = rp.series_figure(ds, b, ylabel="px").axes[0]
    np.testing.assert_allclose(_by_gid(ax, "p95 |flow|").get_ydata(), flow_p95)
    # foreground: the 4 items with the largest fraction, mask in vermillion over the grey frame
    section = page.split('id="foreground"')[1].split("</section>")[0]
    assert re.findall(r'id="mask-(\d+)"', section) == [str(i) for i in sorted(np.argsort(-fg)[:4])]
    last = n - 1
    big = np.asarray(PIL.open(io.BytesIO(_images(section)[-1][1])).convert("RGB"), dtype=float)
    k = -(-120 // w)  # small frames are enlarged by a whole factor to >= 120 px, nearest neighbour
    assert big.shape == (h * k, w * k, 3)
    img = big.reshape(h, k, w, k, 3).mean(axis=(1, 3))  # back to one value per frame pixel
    assert np.abs(big[::k, ::k] - img).mean() < 4  # square blocks of one value (up to JPEG)
    inside = img[12 : 10 + last, 22 : 20 + last].mean(axis=(0, 1))
    outside = img[30:, :15].mean(axis=(0, 1))
    assert inside[0] > inside[1] + 40 > inside[2] + 40  # vermillion (213, 94, 0) blended in
    assert abs(outside[0] - outside[2]) < 12  # grey where there is no mask
    assert "uint16 frames shown scaled" in page
    assert (tmp_path / "png" / "foreground_masks.png").exists()


def test_contents_link_every_section_and_metric_row_and_the_run_row_names_its_flags(cdnet_clip, tmp_path):
    from gpudiff.cli._main import main

    clip = cdnet_clip(20)
    store = tmp_path / "s.zarr"
    assert main(["run", str(clip), "--out", str(store), "--flow", "--corrupt", "--cuts", "--background",
                 "--save-maps", "foreground", "--metrics", "manhattan,ssim", "--no-progress"]) == 0
    build_report(str(store), html=str(tmp_path / "r.html"))
    page = (tmp_path / "r.html").read_text(encoding="utf-8")
    toc = page.split('<nav id="toc">')[1].split("</nav>")[0]
    linked = set(re.findall(r'href="#([^"]+)"', toc))
    rows = set(re.findall(r'<div class="row" id="(metric-[^"]+)"', page))
    sections = set(re.findall(r'<section id="([^"]+)"', page)) - {"notices"}
    assert rows and rows <= linked
    assert sections <= linked, sections - linked
    run_row = page.split("<th>Run</th>")[1].split("</tr>")[0]
    for flag in ("--flow (radius 7)", "--corrupt --cuts", "--background (k 3.5", "--save-maps foreground"):
        assert flag in run_row, flag


def test_a_threshold_far_off_the_data_does_not_squash_the_histogram():
    n = 500
    v = np.random.default_rng(0).gamma(4.0, 1e-4, n)  # like vtest's kl_prev: ~0.0004, max ~0.002
    b = rd.make_buckets(n, 2000)
    d = rd.digest_column("kl_prev", v, b, done=np.ones(n, bool), threshold=0.2)
    ax = rp.histogram_figure(d, xlabel="kl_prev").axes[0]
    assert ax.get_xlim()[1] < 2 * v.max()  # the axis spans the data, not the threshold
    (line,) = [x for x in ax.get_lines() if x.get_gid() == "threshold"]
    assert "off the scale above" in line.get_label() and len(line.get_xdata()) == 0
    near = rd.digest_column("kl_prev", v, b, done=np.ones(n, bool), threshold=float(v.max() * 1.5))
    ax = rp.histogram_figure(near, xlabel="kl_prev").axes[0]
    (line,) = [x for x in ax.get_lines() if x.get_gid() == "threshold"]
    assert line.get_xdata()[0] == pytest.approx(v.max() * 1.5)  # drawn where it is
