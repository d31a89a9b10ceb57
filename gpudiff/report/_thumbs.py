"""Thumbnails: the only thing the report reads from the source, frames downscaled to about 160 px
wide, their difference, heat maps and foreground examples, as JPEG/PNG bytes.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import warnings
from dataclasses import dataclass, field

import numpy as np

from ..engine._schema import DONE
from ..engine._store import ResultStore
from ..errors import GpudiffError
from ._columns import _FINGERPRINT_LIMIT, _Run, _field_names, _read1, _values_at
from ._text import _fmt


#: Width of the thumbnails, pixels (frames are block-averaged down to at most this).
THUMB_WIDTH = 160
# Metrics shown under each thumbnail pair (after the ranking metric), the first few present.
_CAPTION_METRICS = ("mse", "manhattan_per_pixel", "ssim", "psnr", "hist_js", "change", "kl_prev", "flow_mean",
                    "foreground_fraction", "corrupt_score")


# --------------------------------------------------------------------------------------------------
# thumbnails (the only reads of the source)
# --------------------------------------------------------------------------------------------------


def _open_source(store: ResultStore):
    """(source or None, notice or None)."""
    from ..io import open_source  # noqa: PLC0415

    fp = store.attrs.get("source")
    if not isinstance(fp, dict) or not fp.get("spec"):
        return None, "The store does not record its source: no thumbnails."
    spec = str(fp["spec"])
    component = fp.get("component")
    candidates = [spec]
    if not os.path.isabs(spec) and not getattr(store, "is_remote", False):
        # a relative spec beside a local store (a remote store has no folder to be relative to)
        candidates.append(os.path.join(os.fspath(store.path.parent), spec))
    opts = store.attrs.get("options") or {}
    kwargs = {}
    if isinstance(opts.get("max_pixels"), int) and opts["max_pixels"] > 0:
        kwargs["max_pixels"] = opts["max_pixels"]
    last = None
    for cand in candidates:
        try:
            src = open_source(cand, component=component, **kwargs)
        except Exception as e:  # noqa: BLE001 (any failure: the page says so and goes on)
            last = last or e  # the path as recorded says most
            continue
        note = None
        with contextlib.suppress(Exception):
            if len(src) <= _FINGERPRINT_LIMIT:
                now = src.fingerprint()
                if any(fp.get(k) is not None and now.get(k) != fp.get(k) for k in ("count", "sha256")):
                    note = (f"The source {spec} changed since the run (its files' sizes or times differ): the "
                            "thumbnails may not show the frames that were compared.")
        return src, note
    why = " ".join(str(last).split()) if last else "unknown reason"
    return None, (f"The source {spec} cannot be opened ({why}): no thumbnails. The plots come from the store "
                  "alone.")


def _downscale(a: np.ndarray, width: int = THUMB_WIDTH) -> np.ndarray:
    """Block mean of ``a`` ((H, W) or (H, W, C)) by a whole factor so the width is at most ``width``;
    float32, NaN-aware for float input."""
    h, w = a.shape[:2]
    f = max(1, math.ceil(w / width), math.ceil(h / (2 * width)))
    hh, ww = max(f, h - h % f), max(f, w - w % f)
    if hh > h or ww > w:  # smaller than one block: one pixel per axis
        hh, ww = min(h, hh), min(w, ww)
        f = 1 if min(hh, ww) < f else f
    view = a[: hh - hh % f, : ww - ww % f]
    blocks = view.reshape(view.shape[0] // f, f, view.shape[1] // f, f, *view.shape[2:])
    if np.issubdtype(a.dtype, np.floating):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            return np.nanmean(blocks, axis=(1, 3), dtype=np.float64).astype(np.float32)
    return (blocks.sum(axis=(1, 3), dtype=np.float64) / (f * f)).astype(np.float32)


def _to_u8(images: list, dtype) -> tuple[list, str]:
    """Thumbnails for display: uint8 as is, others scaled by their joint 0.5-99.5 percentiles."""
    if np.dtype(dtype) == np.uint8:
        return [np.clip(np.rint(np.nan_to_num(t)), 0, 255).astype(np.uint8) for t in images], ""
    vals = np.concatenate([t[np.isfinite(t)].ravel() for t in images]) if images else np.zeros(0)
    lo, hi = (np.percentile(vals, [0.5, 99.5]) if vals.size else (0.0, 1.0))
    hi = hi if hi > lo else lo + 1.0
    out = [np.clip(np.rint((np.nan_to_num(t, nan=lo) - lo) * (255.0 / (hi - lo))), 0, 255).astype(np.uint8)
           for t in images]
    return out, f"{np.dtype(dtype).name} frames shown scaled from {_fmt(lo)} to {_fmt(hi)}"


def _grey(frame: np.ndarray) -> np.ndarray:
    if frame.ndim == 3:
        return frame.mean(axis=2, dtype=np.float32)
    return frame.astype(np.float32, copy=False)


def _pair_difference(ref: np.ndarray, mov: np.ndarray, shift) -> tuple[np.ndarray, str]:
    """|grey(ref) - grey(mov)| at full size (NaN outside the overlap), registered by ``shift`` when given."""
    from ..pair._overlap import overlap_window, register_overlap  # noqa: PLC0415

    a, b = _grey(ref), _grey(mov)
    how = "|difference| of the grey frames"
    if shift is not None and np.all(np.isfinite(shift)):
        try:
            ra, rb = register_overlap(a, b, (float(shift[0]), float(shift[1])))
            r0, r1, c0, c1 = overlap_window(a.shape, b.shape, (float(shift[0]), float(shift[1])))
            out = np.full(a.shape, np.nan, dtype=np.float32)
            out[r0:r1, c0:c1] = np.abs(ra.astype(np.float32) - rb.astype(np.float32))
            return out, how + " after the stored shift"
        except GpudiffError:
            pass
    h, w = min(a.shape[0], b.shape[0]), min(a.shape[1], b.shape[1])
    if (h, w) != a.shape:
        how += " over their common top-left region"
    out = np.full(a.shape, np.nan, dtype=np.float32)
    out[:h, :w] = np.abs(a[:h, :w] - b[:h, :w])
    return out, how


#: Thumbnails narrower than this (a 48x48 clip, a 30x40 calcium frame) are enlarged by a whole factor,
#: nearest neighbour, so every pixel stays a visible square.
THUMB_MIN_WIDTH = 120


def _enlarge(img: np.ndarray, min_width: int = THUMB_MIN_WIDTH) -> np.ndarray:
    k = -(-min_width // max(1, img.shape[1]))
    if k <= 1:
        return img
    return np.repeat(np.repeat(img, k, axis=0), k, axis=1)


def _encode_thumb(img: np.ndarray) -> tuple[bytes, int, int]:
    """A thumbnail as JPEG (quality 88: photographs are ~6x smaller than as PNG), with its width and
    height; small frames enlarged (nearest neighbour) to at least THUMB_MIN_WIDTH px wide."""
    from PIL import Image  # noqa: PLC0415

    img = _enlarge(img)
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(img)).save(buf, format="JPEG", quality=88)
    return buf.getvalue(), int(img.shape[1]), int(img.shape[0])


@dataclass
class _Pair:
    item: int
    ref_label: str
    mov_label: str
    values: list  # (name, value)
    images: list = field(default_factory=list)  # [ref u8 | None, mov u8 | None, diff float | None]
    diff_how: str = ""
    notes: list = field(default_factory=list)
    pngs: list = field(default_factory=list)


def _frame_indices(run: _Run, items) -> tuple[list | None, list | None]:
    """(reference frames, moving frames) of ``items``, or None where the store has no such column."""
    names = _field_names(run.store)
    out = []
    for col in ("reference_index", "moving_index"):
        f = names.get(col)
        out.append([int(v) for v in _values_at(run.store, col, items)] if f is not None and not f.shape else None)
    return out[0], out[1]


def _caption_values(run: _Run, items, columns: list) -> dict:
    """{column: [value per item]} for the few values printed beside the thumbnails (NaN unless done)."""
    done = run.done[np.asarray(items, dtype=np.int64)] if len(items) else np.zeros(0, bool)
    out = {}
    for c in columns:
        v = np.asarray(_values_at(run.store, c, items), dtype=np.float64)
        out[c] = np.where(done, v, np.nan)
    return out


def _unaligned_items(run: _Run) -> np.ndarray:
    """Done items whose alignment was not trusted (``align_ok == 0``); empty without the column."""
    if "align_ok" not in _field_names(run.store):
        return np.zeros(0, dtype=np.int64)
    ok = np.asarray(_read1(run.store, "align_ok"), dtype=np.float64)
    status = np.asarray(_read1(run.store, "status"))
    return np.flatnonzero((ok == 0) & (status == DONE))


def _pair_rows(run: _Run, items: np.ndarray, digests: dict, source) -> list[_Pair]:
    store = run.store
    names = _field_names(store)
    items = [int(i) for i in items]
    caption_cols = [run.ranked_by] + [c for c in _CAPTION_METRICS if c in digests and c != run.ranked_by
                                      and not digests[c].empty][:4]
    values = _caption_values(run, items, caption_cols)
    refs, movs = _frame_indices(run, items)
    if run.is_manifest and "reference_path" in names and "moving_path" in names:
        ref_labels = [os.path.basename(str(s)) for s in _values_at(store, "reference_path", items)]
        mov_labels = [os.path.basename(str(s)) for s in _values_at(store, "moving_path", items)]
    else:
        ref_labels = [f"frame {r}" for r in refs] if refs is not None else ["?"] * len(items)
        mov_labels = [f"frame {m}" for m in movs] if movs is not None else ["?"] * len(items)
    if "id" in names and names["id"].dtype == "str":
        ids = [str(v) for v in _values_at(store, "id", items)]
        mov_labels = [f"{m} (id {i})" if i else m for m, i in zip(mov_labels, ids)]
    f = names.get("shift")
    shifts = _values_at(store, "shift", items) if f is not None and f.shape == (2,) else [None] * len(items)
    aligned_ok = _values_at(store, "align_ok", items) if "align_ok" in names else [None] * len(items)
    has_map = "maps/diff" in names
    rows = []
    for k, i in enumerate(items):
        vals = [(c, values[c][k]) for c in caption_cols]
        p = _Pair(int(i), ref_labels[k], mov_labels[k], vals)
        if aligned_ok[k] is not None and float(aligned_ok[k]) == 0:
            p.notes.append("alignment not trusted: compared unaligned")
        stored = None
        if has_map:
            try:
                stored = _downscale(_read1(store, "maps/diff", items=slice(int(i), int(i) + 1))[0])
                p.diff_how = "stored diff map (after the run's preprocessing)"
            except Exception as e:  # noqa: BLE001
                p.notes.append(f"diff map unreadable ({' '.join(str(e).split())})")
        ref_t = mov_t = diff_t = None
        dtype = np.uint8
        if source is not None and refs is not None and movs is not None:
            ri, mi = refs[k], movs[k]
            ref = mov = None
            try:
                ref = source.read(ri)
                ref_t, dtype = _downscale(ref), ref.dtype
            except Exception as e:  # noqa: BLE001
                p.notes.append(f"reference unreadable: {' '.join(str(e).split())}")
            try:
                mov = source.read(mi)
                mov_t, dtype = _downscale(mov), mov.dtype
            except Exception as e:  # noqa: BLE001
                p.notes.append(f"moving unreadable: {' '.join(str(e).split())}")
            if stored is None and ref is not None and mov is not None:
                d, p.diff_how = _pair_difference(ref, mov, shifts[k])
                diff_t = _downscale(d)
            del ref, mov
        if stored is not None:
            diff_t = stored
        shown = [t for t in (ref_t, mov_t) if t is not None]
        u8, how = _to_u8(shown, dtype)
        it = iter(u8)
        p.images = [next(it) if ref_t is not None else None, next(it) if mov_t is not None else None, diff_t]
        if how:
            p.notes.append(how)
        rows.append(p)
    return rows


def _heat_pngs(rows: list[_Pair]) -> float:
    """Colour every diff thumbnail of a table on one scale; returns that scale's top (99th percentile)."""
    from ..pair._diffmap import colorize  # noqa: PLC0415

    tops = [float(np.nanpercentile(p.images[2], 99)) for p in rows
            if p.images and p.images[2] is not None and np.isfinite(p.images[2]).any()]
    vmax = max(tops) if tops else 0.0
    for p in rows:
        pngs = []
        for j, img in enumerate(p.images):
            if img is None:
                pngs.append(None)
            elif j == 2:
                rgb = colorize(np.nan_to_num(img, nan=0.0), vmax=vmax if vmax > 0 else None)
                rgb[~np.isfinite(img)] = 128  # outside the overlap: mid grey
                p.images[2] = rgb
                pngs.append(_encode_thumb(rgb))
            else:
                pngs.append(_encode_thumb(img))
        p.pngs = pngs
    return vmax


def _foreground_examples(run: _Run, items, source) -> list[tuple[int, bytes, str]]:
    out = []
    orange = np.array([0xD5, 0x5E, 0x00], dtype=np.float32)  # Okabe-Ito vermillion
    items = [int(i) for i in items]
    _, movs = _frame_indices(run, items)
    for k, i in enumerate(items):
        try:
            mask = _read1(run.store, "maps/foreground", items=slice(i, i + 1))[0]
        except Exception:  # noqa: BLE001
            continue
        frac = _downscale((np.asarray(mask) > 0).astype(np.float32))
        base = None
        note = ""
        if source is not None and movs is not None:
            try:
                frame = source.read(movs[k])
                g = _downscale(_grey(frame))
                (base,), _ = _to_u8([g], frame.dtype)
            except Exception as e:  # noqa: BLE001
                note = f"frame unreadable: {' '.join(str(e).split())}"
        if base is None or base.shape != frac.shape:
            base = np.zeros(frac.shape, np.uint8)
            note = note or "mask only (frame not available)"
        a = (0.65 * np.nan_to_num(frac))[..., None]
        rgb = np.clip((1 - a) * base[..., None].astype(np.float32) + a * orange, 0, 255).astype(np.uint8)
        label = f"item {i}" + (f", frame {movs[k]}" if movs is not None else "")
        out.append((i, _encode_thumb(rgb), label + (f" ({note})" if note else "")))
    return out
