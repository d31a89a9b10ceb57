"""Hostile file names and manifest ids (``<``, ``"``, ``&``, ``'``, ``../``-like text, newlines, bytes that
are not UTF-8) through run, the store, the CSV export and the HTML report.

- The HTML report escapes them: no element, attribute or script comes from a name. Checked on the
  page as written (Python's HTML parser) and on the DOM that Debian's headless Chromium builds from
  it (``--dump-dom``), as in ``test_report_browser.py`` (skips without /usr/bin/chromium unless
  GPUDIFF_REQUIRE_BROWSER=1).
- The CSV export quotes them: read back with the csv module, every name equals the original.
- The store keeps them exactly. A name's bytes that are not UTF-8 (Linux file names are bytes;
  ``os.fsdecode`` gives them as lone surrogates, which UTF-8 text cannot hold) are stored as the four
  characters ``\\xNN`` (``gpudiff.io._source.display_name``); ``fs_name`` gives back the name the
  file system has, byte for byte.
"""

from __future__ import annotations

import csv
from html.parser import HTMLParser
import io
import os
import shutil

import pytest

from gpudiff.io._source import display_name, fs_name
from tests._browser import run_headless


#: file names (bytes: the last is not UTF-8); none holds '/', which no file name can
HOSTILE = [
    b"00_<img src=x onerror=alert(1)>.jpg",
    b'01_"quoted" & <i>italic.jpg',
    b"02_<b id=pwn>bold.jpg",
    b"03_line\nbreak.jpg",
    b"04_bad\xff\xfe bytes.jpg",
    b"05_..'x<script>alert(1)<\\script>.jpg",
    b"06_<svg onload=alert(1)>&amp;.jpg",
]
HOSTILE_IDS = ['<b id=pwn2>x', 'a "quoted", id', "new\nline & <img src=y onerror=alert(2)>", "..\\..\\evil"]


class _Elements(HTMLParser):
    """Every start tag with its attributes, and the text."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.tags, self.text = [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_startendtag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)


def _parse(html: str) -> _Elements:
    p = _Elements()
    p.feed(html)
    return p


def _assert_no_injection(html: str, where: str):
    p = _parse(html)
    ids = {a.get("id") for _, a in p.tags}
    assert "pwn" not in ids and "pwn2" not in ids, where
    assert not [t for t, _ in p.tags if t in ("script", "svg", "i")], where
    assert not [a for _, a in p.tags if any(k.startswith("on") for k in a)], where  # no event handler attribute
    imgs = [a for t, a in p.tags if t == "img"]
    assert all(a.get("src", "").startswith("data:image/") for a in imgs), where  # only the page's own images
    return p


@pytest.fixture(scope="module")
def hostile_run(tmp_path_factory, data_dir):
    """A folder of real frames under hostile names (the fourth one truncated, so it fails with its
    name in the reason), run, exported and reported."""
    from gpudiff.cli._main import main
    from gpudiff.report import build_report

    tmp = tmp_path_factory.mktemp("hostile")
    src = tmp / "frames"
    src.mkdir()
    frames = sorted((data_dir / "cdnet2014-traffic-subset" / "input").glob("*.jpg"))[: len(HOSTILE)]
    paths = []
    for p, name in zip(frames, HOSTILE):
        target = os.path.join(os.fsencode(src), name)
        shutil.copyfile(os.fsencode(p), target)
        paths.append(os.fsdecode(target))
    with open(os.fsencode(paths[3]), "r+b") as fh:  # the newline one: cut short, a failed item
        fh.truncate(500)
    store = tmp / "run.zarr"
    rc = main(["run", str(src), "--out", str(store), "--no-progress", "--backend", "numpy"])
    html = tmp / "report.html"
    build_report(store, html=html, top=len(HOSTILE))
    return rc, paths, store, html


def test_store_keeps_the_names(hostile_run):
    from gpudiff.engine._store import ResultStore

    rc, paths, store, _ = hostile_run
    assert rc == 1  # two items fail (the truncated frame on both sides)
    st = ResultStore.open(str(store))
    cols = st.read(["reference_name", "moving_name", "status", "error"])
    stored = [str(v) for v in cols["reference_name"]] + [str(cols["moving_name"][-1])]
    assert stored == [display_name(p) for p in paths]
    assert stored[4] == os.fsdecode(os.path.join(os.fsencode(os.path.dirname(paths[4])), b"")) + "04_bad\\xff\\xfe bytes.jpg"
    # fs_name gives back the file system's name, byte for byte, for every one of them
    assert [os.fsencode(fs_name(s)) for s in stored] == [os.fsencode(p) for p in paths]
    assert all(os.path.exists(fs_name(s)) for s in stored)
    errors = [str(e) for e in cols["error"] if str(e)]
    # a reason is one line: whitespace in it, the name's newline included, is one space
    assert len(errors) == 2 and all(" ".join(display_name(paths[3]).split()) in e for e in errors)


def test_csv_export_reads_back_equal(hostile_run, capsys):
    from gpudiff.cli._main import main

    _, paths, store, _ = hostile_run
    assert main(["export", str(store)]) == 0
    out = capsys.readouterr().out
    rows = list(csv.DictReader(io.StringIO(out, newline="")))
    names = [r["reference_name"] for r in rows] + [rows[-1]["moving_name"]]
    assert names == [display_name(p) for p in paths]
    assert [os.fsencode(fs_name(n)) for n in names] == [os.fsencode(p) for p in paths]
    failed = [r for r in rows if r["status"] == "failed"]
    assert len(failed) == 2 and all(r["error"] for r in failed)


def test_export_to_a_file_reads_back_equal(hostile_run, tmp_path):
    from gpudiff.engine._export import export_csv
    from gpudiff.engine._store import ResultStore

    _, paths, store, _ = hostile_run
    target = tmp_path / "out.csv"
    export_csv(ResultStore.open(str(store)), str(target))
    with open(target, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["reference_name"] for r in rows] == [display_name(p) for p in paths[:-1]]
    assert [r["moving_name"] for r in rows] == [display_name(p) for p in paths[1:]]


def test_report_escapes_every_name(hostile_run):
    _, paths, _, html = hostile_run
    text = html.read_text(encoding="utf-8")
    p = _assert_no_injection(text, "the page as written")
    body = "".join(p.text)
    # the failure table shows the reason with the name as text
    assert "03_line" in body


@pytest.fixture(scope="module")
def manifest_run(tmp_path_factory, data_dir):
    """A manifest whose ids and file names are hostile, run and reported (the pair tables show the
    files' names and the ids)."""
    from gpudiff.cli._main import main
    from gpudiff.report import build_report

    tmp = tmp_path_factory.mktemp("hostile-manifest")
    frames = sorted((data_dir / "cdnet2014-traffic-subset" / "input").glob("*.jpg"))[:5]
    names = ["a_<b id=pwn>.jpg", 'b_"q"&<img src=x onerror=alert(1)>.jpg', "c_new\nline.jpg", "d_plain.jpg",
             "e_<script>x.jpg"]
    for p, n in zip(frames, names):
        shutil.copyfile(p, tmp / n)
    rows = [(names[k], names[k + 1], HOSTILE_IDS[k]) for k in range(4)]
    manifest = tmp / "pairs.csv"
    with open(manifest, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["reference", "moving", "id"])
        w.writerows(rows)
    store = tmp / "m.zarr"
    rc = main(["run", str(manifest), "--out", str(store), "--no-progress", "--backend", "numpy"])
    html = tmp / "report.html"
    build_report(store, html=html, top=4)
    return rc, tmp, rows, store, html


def test_manifest_ids_and_paths_in_export_and_report(manifest_run, capsys):
    from gpudiff.cli._main import main

    rc, tmp, rows, store, html = manifest_run
    assert rc == 0
    assert main(["export", str(store)]) == 0
    got = list(csv.DictReader(io.StringIO(capsys.readouterr().out, newline="")))
    assert [r["id"] for r in got] == [r[2] for r in rows]
    assert [os.path.basename(r["reference"]) for r in got] == [r[0] for r in rows]
    assert [os.path.basename(r["moving"]) for r in got] == [r[1] for r in rows]
    text = html.read_text(encoding="utf-8")
    p = _assert_no_injection(text, "the manifest page as written")
    body = "".join(p.text)
    assert "a_<b id=pwn>.jpg" in body and "<b id=pwn2>x" in body  # shown as text
    # the check itself: the same page with one name left unescaped is caught
    assert "&lt;b id=pwn2&gt;" in text
    with pytest.raises(AssertionError):
        _assert_no_injection(text.replace("&lt;b id=pwn2&gt;", "<b id=pwn2>", 1), "unescaped")


def _dump_dom(exe, profile, uri) -> str:
    proc = run_headless(exe, profile, "--virtual-time-budget=3000", "--dump-dom", uri, timeout=90)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def test_chromium_builds_no_element_from_a_name(chromium, hostile_run, manifest_run, tmp_path):
    for k, html in enumerate((hostile_run[3], manifest_run[4])):
        dom = _dump_dom(chromium, tmp_path / f"p{k}", html.as_uri())
        assert 'id="header"' in dom  # the DOM Chromium built
        p = _assert_no_injection(dom, f"Chromium's DOM of {html.name}")
        body = "".join(p.text)
        if k == 0:
            assert "03_line" in body
        else:
            assert "a_<b id=pwn>.jpg" in body and "<b id=pwn2>x" in body
