"""The report page in a real browser: Debian's headless Chromium loads it offline with no error, and
the screenshot shows the plots where the page lays them out.

Skips where /usr/bin/chromium is absent, unless GPUDIFF_REQUIRE_BROWSER=1 (CI), where that fails.

Three Chromium runs (about a second each):

1. the page as written, with console logging: any console message (a CSP violation, a resource
   that failed to load) is an error, since the page has no script and loads nothing;
2. a screenshot of the page as written, 1280 x 4000 at device scale 1;
3. a probe copy of the page (its CSP relaxed for one inline script, otherwise identical) whose
   script records, after the load event, every image's box and whether it decoded; ``--dump-dom``
   returns that record. The layout is the same as the page's (the script adds a node after
   everything else), so the boxes locate each image in the screenshot of run 2.
"""

from __future__ import annotations

import base64
import io
import json
import re
import shutil

import numpy as np
import pytest

from gpudiff.report import build_report
from tests._browser import run_headless

WIDTH, HEIGHT = 1280, 4000

Image = pytest.importorskip("PIL.Image")


def _chromium(exe, profile, *args, timeout=60):
    return run_headless(exe, profile, "--hide-scrollbars", "--force-device-scale-factor=1",
                        f"--window-size={WIDTH},{HEIGHT}", *args, timeout=timeout)


_PROBE = """<script>window.addEventListener('load', function () {
  var out = [];
  document.querySelectorAll('img').forEach(function (im) {
    var r = im.getBoundingClientRect(), f = im.closest('figure');
    out.push({figure: f ? f.id : '', alt: im.alt, x: r.left + window.scrollX, y: r.top + window.scrollY,
              w: r.width, h: r.height, nw: im.naturalWidth, nh: im.naturalHeight, ok: im.complete});
  });
  var pre = document.createElement('pre'); pre.id = 'layout-probe';
  pre.textContent = JSON.stringify(out); document.body.appendChild(pre);
});</script>"""


@pytest.fixture(scope="module")
def page(tmp_path_factory, data_dir):
    """A report of the real pipeline on 9 real frames (thumbnails from the source), with one frame
    unreadable (a failed item) and an alignment drift section."""
    from gpudiff.cli._main import main

    tmp = tmp_path_factory.mktemp("browser")
    src = tmp / "frames"
    src.mkdir()
    frames = sorted((data_dir / "cdnet2014-traffic-subset" / "input").glob("*.jpg"))[:9]
    for p in frames:
        shutil.copy(p, src / p.name)
    (src / frames[6].name).write_bytes(b"\xff\xd8\xff\xe0 truncated")  # items 5 and 6 fail
    store = tmp / "run.zarr"
    main(["run", str(src), "--out", str(store), "--chunk", "4", "--align", "--metrics", "mse,ssim,histogram",
          "--no-progress", "--backend", "numpy"])
    html = tmp / "report.html"
    summary = build_report(store, html=html, top=3)
    return summary, html


def test_page_loads_offline_without_errors_and_shows_its_plots(chromium, page, tmp_path):
    summary, html = page
    assert summary.failed == 2 and summary.source_available
    text = html.read_text(encoding="utf-8")

    # 1. console: nothing at all (no script, nothing to load, CSP forbids the network)
    log = _chromium(chromium, tmp_path / "p1", "--enable-logging=stderr", "--v=0",
                    "--virtual-time-budget=3000", "--dump-dom", html.as_uri())
    assert log.returncode == 0, log.stderr[-2000:]
    console = [ln for ln in log.stderr.splitlines() if ":CONSOLE" in ln or "net::ERR" in ln]
    assert console == [], console
    assert 'id="header"' in log.stdout and "failed</span>" in log.stdout  # the DOM Chromium built

    # 2. the screenshot of the page as written
    shot_file = tmp_path / "shot.png"
    shot = _chromium(chromium, tmp_path / "p2", f"--screenshot={shot_file}", html.as_uri())
    assert shot.returncode == 0 and shot_file.exists(), shot.stderr[-2000:]
    img = np.asarray(Image.open(shot_file).convert("RGB"), dtype=np.int16)
    assert img.shape == (HEIGHT, WIDTH, 3)
    assert img.std() > 20, "the screenshot is blank"

    # 3. where the page put its images
    probe_html = tmp_path / "probe.html"
    probe_html.write_text(re.sub(r'<meta http-equiv="Content-Security-Policy"[^>]*>', "", text)
                          .replace("</body>", _PROBE + "</body>"), encoding="utf-8")
    dom = _chromium(chromium, tmp_path / "p3", "--virtual-time-budget=3000", "--dump-dom", probe_html.as_uri())
    m = re.search(r'<pre id="layout-probe">(.*?)</pre>', dom.stdout, re.S)
    assert m, dom.stderr[-2000:]
    boxes = json.loads(m.group(1).replace("&quot;", '"').replace("&amp;", "&"))
    embedded = re.findall(r'<img src="data:image/(png|jpeg);base64,([A-Za-z0-9+/=]+)" width="(\d+)" height="(\d+)"',
                          text)
    assert len(boxes) == len(embedded) > 0
    assert all(b["ok"] and b["nw"] > 0 for b in boxes), "an image did not decode"

    checked = 0
    for b, (kind, data, w, h) in zip(boxes, embedded):
        # every image is laid out at its own pixel size, as the page says (width/height attributes)
        assert (round(b["w"]), round(b["h"])) == (int(w), int(h)) == (b["nw"], b["nh"])
        x, y = round(b["x"]), round(b["y"])
        if y + int(h) > HEIGHT or kind != "png":
            continue  # below the screenshot, or a JPEG thumbnail (lossy: checked for content only)
        region = img[y : y + int(h), x : x + int(w)]
        assert region.std() > 5, f"{b['figure']}: a uniform region where the page puts a plot"
        want = np.asarray(Image.open(io.BytesIO(base64.b64decode(data))).convert("RGB"), dtype=np.int16)
        err = np.abs(region - want).mean()
        assert err < 2.0, f"{b['figure']}: the screenshot at ({x}, {y}) is not the plot (mean |diff| {err:.1f})"
        checked += 1
    figures_on_screen = {b["figure"] for b in boxes if b["figure"].startswith("fig-") and b["y"] + b["h"] <= HEIGHT}
    assert {"fig-timeline_mse", "fig-histogram_mse"} <= figures_on_screen
    assert checked >= 4

    # the header sits above the first plot and says what the store says
    first_plot = min(b["y"] for b in boxes if b["figure"].startswith("fig-"))
    header = img[: int(first_plot)]
    blue = np.all(np.abs(header - np.array([0x00, 0x72, 0xB2])) < 8, axis=-1)  # the header's rule
    assert blue.sum(axis=1).max() > WIDTH * 0.8
    assert f"{summary.done} done</span>" in text and f"{summary.failed} failed</span>" in text
