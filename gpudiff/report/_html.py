"""The HTML page: inline CSS, a Content-Security-Policy that forbids any network access, every
string escaped; header, figures, pair tables and failures.
"""

from __future__ import annotations

import base64
import contextlib
import math

from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from ._columns import _Columns, _Run, _field_names, _values_at
from ._figures import _Figure
from ._text import _esc, _fmt
from ._thumbs import THUMB_MIN_WIDTH, THUMB_WIDTH, _Pair, _frame_indices


# --------------------------------------------------------------------------------------------------
# the page
# --------------------------------------------------------------------------------------------------

_CSS = """
:root{color-scheme:light}
body{font-family:"DejaVu Sans",Arial,Helvetica,sans-serif;margin:0 20px 40px;color:#111;background:#fff;
font-size:14px;line-height:1.4}
header{border-bottom:6px solid #0072B2;padding:8px 0 10px}
h1{font-size:22px;margin:8px 0 6px}
h2{font-size:18px;margin:26px 0 8px;border-bottom:1px solid #ccc;padding-bottom:3px}
h3{font-size:15px;margin:14px 0 4px}
table{border-collapse:collapse}
td,th{padding:2px 8px;text-align:left;vertical-align:top}
table.facts th{color:#444;font-weight:600;white-space:nowrap}
table.list td,table.list th{border-bottom:1px solid #e4e4e4}
.badge{display:inline-block;padding:1px 8px;border-radius:3px;font-weight:600;margin-right:4px}
.b-done{background:#009E73;color:#fff}.b-failed{background:#000;color:#fff}.b-pending{background:#BBBBBB;color:#000}
.notice{background:#FFF4D6;border-left:6px solid #E69F00;padding:6px 10px;margin:6px 0}
nav#toc{position:sticky;top:0;background:#fff;border-bottom:1px solid #ccc;padding:4px 0;z-index:2}
nav a{margin-right:12px}nav .sub{font-size:12px;color:#444}nav .sub a{margin-right:8px}
.row{display:flex;flex-wrap:wrap;gap:8px;align-items:flex-start;margin:8px 0 14px}
figure{margin:0}figure img{display:block;border:0}
figcaption{font-size:12px;color:#333;margin-top:2px}
table.pairs td{padding:3px 4px;font-size:12px}table.pairs img{display:block}
.muted{color:#666}.mono{font-family:"DejaVu Sans Mono",monospace;font-size:12px}
.cell-missing{width:160px;height:60px;background:#eee;color:#666;font-size:11px;display:flex;align-items:center;
justify-content:center;text-align:center}
"""

_CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"


def _data_uri(data: bytes) -> str:
    mime = "image/png" if data[:8] == b"\x89PNG\r\n\x1a\n" else "image/jpeg"
    return f"data:{mime};base64," + base64.b64encode(data).decode("ascii")


def _img(thumb: tuple, alt: str) -> str:
    data, w, h = thumb
    return f'<img src="{_data_uri(data)}" width="{w}" height="{h}" alt="{_esc(alt)}">'


def _figure_html(f: _Figure) -> str:
    col = f' data-column="{_esc(f.column)}"' if f.column else ""
    return (f'<figure class="plot {f.kind}" id="fig-{_esc(f.name)}" data-plot="{_esc(f.kind)}"{col}>'
            f'<img src="{_data_uri(f.png)}" width="{f.width}" height="{f.height}" alt="{_esc(f.alt)}">'
            f'<figcaption style="max-width:{f.width}px">{f.caption}</figcaption></figure>')


def _run_time(attrs: dict, summary: dict) -> tuple[str, str]:
    """(run time text, throughput text) from recorded timings, else from creation to last write."""
    items = summary["done"] + summary["failed"]
    timings = attrs.get("timings") if isinstance(attrs.get("timings"), dict) else {}
    elapsed = None
    for key in ("elapsed_s", "run_s", "seconds"):
        v = timings.get(key, attrs.get(key))
        if isinstance(v, (int, float)) and v > 0:
            elapsed, how = float(v), "recorded"
            break
    if elapsed is None:
        try:
            t0 = datetime.fromisoformat(str(summary["created"]))
            t1 = datetime.fromisoformat(str(summary["last_write"]))
            elapsed = max((t1 - t0).total_seconds(), 1.0)
            how = "from the store's creation to its last chunk write (includes any pause between runs)"
        except (TypeError, ValueError):
            return "unknown (no timings recorded)", "unknown"
    rate = items / elapsed if elapsed > 0 else math.nan
    rate_text = f"{rate:,.0f}" if rate >= 100 else f"{rate:.3g}"
    return f"{_fmt_duration(elapsed)} ({how})", f"{rate_text} items/s ({items:,} items finished)"


def _fmt_duration(s: float) -> str:
    s = int(round(s))
    if s < 60:
        return f"{s} s"
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def _run_flags(attrs: dict) -> str:
    """The run's sequence passes and saved maps as the flags that asked for them."""
    cfg = attrs.get("config") if isinstance(attrs.get("config"), dict) else {}
    seq = cfg.get("sequence") if isinstance(cfg.get("sequence"), dict) else {}
    out = []
    if seq.get("flow"):
        out.append(f"--flow (radius {seq.get('flow_radius', '?')})")
    if seq.get("events"):
        out.append("--corrupt --cuts" + (f" {seq['event_options']}" if seq.get("event_options") else ""))
    if seq.get("background"):
        bo = seq.get("background_options") or {}
        keys = ("k", "learning_rate", "min_std", "init_frames", "cleanup_radius", "align")
        out.append("--background (" + ", ".join(f"{k} {bo[k]}" for k in keys if k in bo) + ")")
    maps = cfg.get("save_maps") or []
    if maps:
        out.append("--save-maps " + ",".join(maps))
    pairs = attrs.get("pairs")
    if pairs and pairs not in ("consecutive", "manifest"):
        out.append(f"--pairs {pairs}")
    return " ".join(out)


def _options_html(attrs: dict) -> str:
    opts = attrs.get("options")
    if not isinstance(opts, dict) or not opts:
        return '<span class="muted">not recorded</span>'
    defaults = {}
    with contextlib.suppress(Exception):
        from ..options import CompareOptions  # noqa: PLC0415

        defaults = CompareOptions().to_dict()
    parts = []
    for k, v in opts.items():
        text = f"{_esc(k)}={_esc(v if v is not None else 'none')}"
        if k in defaults and defaults[k] != v:
            parts.append(f"<b>{text}</b>")
        else:
            parts.append(text)
    return '<span class="mono">' + ", ".join(parts) + "</span> <span class=\"muted\">(bold: not the default)</span>"


def _header_html(run: _Run, source_note_ok: bool) -> str:
    s, a = run.summary, run.store.attrs
    src = a.get("source") if isinstance(a.get("source"), dict) else {}
    src_text = f"{src.get('kind', '?')} {src.get('spec', '?')}"
    if src.get("component"):
        src_text += f" (component {src['component']})"
    if src.get("count") is not None:
        src_text += f", {src['count']} files"
    rt, rate = _run_time(a, s)
    rows = [
        ("Store", f'<span class="mono">{_esc(s["path"])}</span>'),
        ("Source", _esc(src_text) + ("" if source_note_ok else ' <span class="muted">(not readable now)</span>')),
        ("Items", f"{s['n_items']} in {s['n_chunks']} chunks of {s['chunk']}; {s['chunks_finished']} chunks finished"),
        ("Status", f'<span class="badge b-done">{s["done"]} done</span><span class="badge b-failed">{s["failed"]} '
                   f'failed</span><span class="badge b-pending">{s["pending"]} pending</span>'),
        ("Pairs", _esc(a.get("pairs", "?"))),
    ]
    if a.get("frames") is not None:
        shape = a.get("frame_shape")
        rows.append(("Frames", _esc(f"{a['frames']}" + (f" of shape {tuple(shape)}" if shape else ""))))
    rows += [
        ("Backend, device", _esc(f"{a.get('backend', '?')}, {a.get('device', '?')}")),
        ("Created, last write", _esc(f"{s.get('created') or '?'}, {s.get('last_write') or '?'}")),
        ("Run time", _esc(rt)),
        ("Throughput", _esc(rate)),
    ]
    if run.flags:
        d = run.done
        parts = []
        if "kept" in run.flags:
            k = int(np.count_nonzero(run.flags["kept"] & d))
            parts.append(f"{k} kept, {int(np.count_nonzero(d)) - k} dropped")
        for flag in ("corrupt", "cut"):
            if flag in run.flags:
                parts.append(f"{int(np.count_nonzero(run.flags[flag] & d))} {flag}")
        rows.append(("Sequence", _esc(", ".join(parts) + " (among done items)")))
    if run.thresholds:
        rows.append(("Thresholds", _esc(", ".join(f"{k} {_fmt(v)}" for k, v in run.thresholds.items()))))
    rows.append(("Options", _options_html(a)))
    run_flags = _run_flags(a)
    if run_flags:
        rows.append(("Run", f'<span class="mono">{_esc(run_flags)}</span>'))
    rows.append(("gpudiff", _esc(f"{a.get('gpudiff_version', '?')} (store version {a.get('gpudiff_store_version')})")))
    body = "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in rows)
    name = Path(s["path"]).name
    return (f'<header id="header"><h1>gpudiff report: {_esc(name)}</h1>'
            f'<table class="facts" id="facts">{body}</table></header>')


def _pairs_html(title: str, anchor: str, intro: str, rows: list[_Pair], vmax: float) -> str:
    if not rows:
        return f'<section id="{anchor}"><h2>{_esc(title)}</h2><p class="muted">{_esc(intro)}</p></section>'
    head = "<tr><th>#</th><th>reference</th><th>moving</th><th>|difference|</th><th>values</th></tr>"
    body = []
    for k, p in enumerate(rows, 1):
        cells = []
        for j, png in enumerate(p.pngs):
            what = ("reference", "moving", "difference")[j]
            if png is None:
                cells.append(f'<td><div class="cell-missing">{what} not available</div></td>')
            else:
                cells.append(f"<td>{_img(png, f'{what} of item {p.item}')}</td>")
        vals = "<br>".join(f"{_esc(n)} = {_esc(_fmt(v))}" for n, v in p.values)
        notes = "".join(f'<br><span class="muted">{_esc(n)}</span>' for n in p.notes)
        if p.diff_how:
            notes += f'<br><span class="muted">heat map: {_esc(p.diff_how)}</span>'
        label = f"item {p.item}<br>{_esc(p.ref_label)} → {_esc(p.mov_label)}"
        body.append(f'<tr><td>{k}</td>{"".join(cells)}<td>{label}<br>{vals}{notes}</td></tr>')
    scale = (f" Heat maps share one viridis scale: dark 0 to bright {_fmt(vmax)} (intensity units, the 99th "
             "percentile of the table's maps).") if vmax > 0 else ""
    return (f'<section id="{anchor}"><h2>{_esc(title)}</h2><p>{_esc(intro)}{scale} Thumbnails are block means '
            f'down to at most {THUMB_WIDTH} px wide (small frames enlarged to {THUMB_MIN_WIDTH} px, pixels kept square).</p><table class="pairs list">{head}{"".join(body)}</table>'
            "</section>")


def _failures_html(run: _Run) -> str:
    s = run.summary
    if not s["failed"]:
        return '<section id="failures"><h2>Failed items</h2><p>None.</p></section>'
    fails = s["failures"]
    items = [f["item"] for f in fails]
    names = _field_names(run.store)
    if run.is_manifest and "reference_path" in names:
        refs = [str(v) for v in _values_at(run.store, "reference_path", items)]
        movs = [str(v) for v in _values_at(run.store, "moving_path", items)]
    else:
        r, m = _frame_indices(run, items)
        refs = [str(v) for v in r] if r is not None else ["?"] * len(items)
        movs = [str(v) for v in m] if m is not None else ["?"] * len(items)
    rows = "".join(
        f"<tr><td>{f['item']}</td><td>{_esc(r)}</td><td>{_esc(m)}</td><td>{_esc(f['error'])}</td></tr>"
        for f, r, m in zip(fails, refs, movs)
    )
    more = ""
    if s["failed"] > len(fails):
        more = (f'<p class="muted">The first {len(fails)} of {s["failed"]} failed items; all of them: '
                f'<span class="mono">gpudiff export {_esc(s["path"])}</span> (status column "failed").</p>')
    return (f'<section id="failures"><h2>Failed items ({s["failed"]})</h2>'
            f'<table class="list" id="failure-table"><tr><th>item</th><th>reference</th><th>moving</th>'
            f"<th>reason</th></tr>{rows}</table>{more}</section>")


def _page(run: _Run, cols: _Columns, extra: dict, notices: list, pairs: dict, fg: list, source_ok: bool,
          took: float) -> str:
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>gpudiff report: {_esc(Path(run.summary['path']).name)}</title>",
        f"<style>{_CSS}</style></head><body>",
        _header_html(run, source_ok),
    ]
    nav = [("metrics", "Metrics")]
    if extra.get("drift"):
        nav.append(("drift", "Drift"))
    if extra.get("flow"):
        nav.append(("flow", "Optical flow"))
    if fg:
        nav.append(("foreground", "Foreground"))
    if pairs:
        nav += [("most-changed", "Most changed"), ("least-changed", "Least changed")]
    nav.append(("failures", "Failed items"))
    by_col_names = list(dict.fromkeys(f.column for f in cols.figures))
    sub = "".join(f'<a href="#metric-{_esc(c)}">{_esc(c)}</a>' for c in by_col_names)
    parts.append('<nav id="toc"><b>Contents</b> ' + "".join(f'<a href="#{a}">{_esc(t)}</a>' for a, t in nav)
                 + (f'<div class="sub">Metrics: {sub}</div>' if sub else "") + "</nav>")
    if notices:
        parts.append('<section id="notices">' + "".join(f'<div class="notice">{_esc(n)}</div>' for n in notices)
                     + "</section>")
    parts.append('<section id="metrics"><h2>Metrics over time, and their distributions</h2>')
    by_col = {}
    for f in cols.figures:
        by_col.setdefault(f.column, []).append(f)
    for name, figs in by_col.items():
        parts.append(f'<div class="row" id="metric-{_esc(name)}">' + "".join(_figure_html(f) for f in figs) + "</div>")
    if cols.notes:
        parts.append("<p>Not plotted: " + "; ".join(_esc(t) for _, t in cols.notes) + ".</p>")
    parts.append("</section>")
    for key, anchor, title in (("drift", "drift", "Alignment drift"), ("flow", "flow", "Optical flow")):
        if extra.get(key):
            parts.append(f'<section id="{anchor}"><h2>{title}</h2><div class="row">{_figure_html(extra[key])}'
                         "</div></section>")
    if fg:
        cells = "".join(
            f'<figure class="mask" id="mask-{i}">{_img(png, f"foreground mask of item {i}")}'
            f"<figcaption>{_esc(label)}</figcaption></figure>" for i, png, label in fg
        )
        link = ' Its time course: <a href="#metric-foreground_fraction">foreground_fraction</a>.' \
            if "foreground_fraction" in cols.digests else ""
        parts.append(f'<section id="foreground"><h2>Foreground</h2><p>Foreground masks (vermillion) over their '
                     f"frames, for the items with the largest foreground fraction.{link}</p>"
                     f'<div class="row">{cells}</div></section>')
    parts.append(pairs.get("most", ""))
    parts.append(pairs.get("least", ""))
    parts.append(_failures_html(run))
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    parts.append(f'<footer><p class="muted">Made by gpudiff report at {now} in {took:.1f} s, from the store alone '
                 "(the source is read only for thumbnails). This page loads nothing from the network.</p></footer>")
    parts.append("</body></html>")
    return "\n".join(parts)
