"""The sequence passes of a run, after the comparisons: background subtraction (in time order, tiled
in space, resumable from a saved model) and corrupted frames / cuts (features in parallel, then one
decision over the whole sequence). Each writes its columns into chunks already done.
"""

from __future__ import annotations

import dataclasses
import os
from typing import TYPE_CHECKING

import numpy as np

from .. import backend as _backend
from ..errors import ConfigError, GpudiffError
from ._plan import Plan
from ._signals import _STOP

if TYPE_CHECKING:  # for the annotations only
    from ._runner import RunConfig

__all__ = ["background_pass", "events_pass"]


# ------------------------------------------------------------------------------------------------
# background subtraction: in time order (the model carries through time), tiled in space


#: The background pass's resume state, a file beside the arrays (``ResultStore.read_aux``).
_BG_STATE = "background_state.pkl"
#: The marker the corrupt/cuts pass leaves when it is complete.
_EVENTS_DONE = "events_done.json"


def background_pass(cfg: RunConfig, source, plan: Plan, store, chunks, *, backend=None, progress=None) -> int:
    """Run the background model over the sequence in store-chunk order, each chunk's frames as one
    Dask task per spatial tile (each tile carries its own model), writing ``foreground_fraction``
    (and ``maps/foreground``) of each item's moving frame.

    The models are saved (atomically) after each chunk with the next chunk to do, so a killed run
    resumes where the model stood. A shard runs the pass only when it owns every chunk (the model
    needs the whole sequence in order): with several shards, the last rerun without ``--shard``
    completes it. Returns the number of items whose foreground is still missing.
    """
    from ..sequence._background import BackgroundOptions  # noqa: PLC0415

    all_chunks = list(range(plan.n_chunks))
    if sorted(chunks) != all_chunks:
        return plan.n_items  # a shard cannot run the model alone
    opts = BackgroundOptions(**(cfg.background_options or {}))
    xp = _backend.resolve_backend(backend)
    state = _load_bg_state(store, opts)
    start = int(state["next_chunk"])
    if start >= plan.n_chunks:
        return 0
    if progress is not None and start:
        progress.advance(int(plan.chunk_slice(start).start) + 1)  # done by an earlier run
    shape = source.frame_shape
    if not shape:
        raise ConfigError(f"--background needs frames of one shape; {cfg.source} has mixed shapes")
    tiles, models = _bg_models(cfg, shape, opts, xp, state["models"])
    reference = None if state["reference"] is None else _backend.to_device(state["reference"], xp)
    save_maps = "foreground" in cfg.save_maps
    save_labels = "labels" in cfg.save_maps

    for c in range(start, plan.n_chunks):
        if _STOP.is_set():
            return int(plan.n_items - plan.chunk_slice(c).start)
        sl = plan.chunk_slice(c)
        idx = [int(i) for i in plan.moving[sl]]
        if c == 0:
            idx = [int(plan.reference[0])] + idx  # the first frame only teaches the model
        frames = _read_frames(source, idx, xp)
        if reference is None:
            reference = next((f for f in frames if f is not None), None)
        masks, labels, shifts, models = _foreground_masks(frames, reference, models, tiles, opts, xp, shape[:2],
                                                          labels=save_labels)
        missing = np.array([f is None for f in frames])
        if c == 0:
            masks, missing, shifts = masks[1:], missing[1:], shifts[1:]
            labels = None if labels is None else labels[1:]
        masks, fractions = _foreground_fractions(masks, shifts, missing, opts, xp)
        cols = {"foreground_fraction": fractions}
        if save_maps:
            cols["maps/foreground"] = _backend.to_host(masks)  # sync
        if labels is not None:
            cols["maps/foreground_labels"] = _backend.to_host(_labels_in_frame(labels, shifts, opts, xp))  # sync
        store.write_columns(c, cols)
        _save_bg_state(store, c + 1, models, reference, opts)
        if progress is not None:
            progress.advance(len(idx), failed=int(missing.sum()))
    return 0


def _load_bg_state(store, opts) -> dict:
    """The saved state of an earlier run with the same options (in the store), or a fresh one."""
    import pickle  # noqa: PLC0415

    state = {"next_chunk": 0, "models": None, "reference": None, "options": opts.to_dict()}
    raw = store.read_aux(_BG_STATE)
    if raw is not None:
        saved = pickle.loads(raw)
        if saved.get("options") == opts.to_dict():
            state = saved
    return state


def _save_bg_state(store, next_chunk: int, models, reference, opts) -> None:
    """Save the models and the reference frame with the next chunk to do (atomically: a temporary
    renamed into place, or one PUT on an object store)."""
    import pickle  # noqa: PLC0415

    store.write_aux(_BG_STATE, pickle.dumps({"next_chunk": next_chunk, "models": [_model_state(m) for m in models],
                                             "reference": _backend.to_host(reference), "options": opts.to_dict()}))


def _bg_models(cfg: RunConfig, shape, opts, xp, saved_models) -> tuple[list, list]:
    """The spatial tiles (about one per worker) and a background model per tile, restored from
    ``saved_models`` when an earlier run saved them."""
    from ..sequence._background import BackgroundModel, plan_tiles  # noqa: PLC0415

    h, w = shape[:2]
    ntiles = max(1, min(cfg.workers or os.cpu_count() or 1, h // max(8, 2 * opts.halo + 1)))
    if not opts.tileable:
        ntiles = 1
    tiles = plan_tiles(shape, (-(-h // ntiles), w), halo=opts.halo)
    # a single whole-frame tile is the model without a tile (what an untileable model accepts)
    models = [BackgroundModel(options=opts, tile=t if len(tiles) > 1 else None, xp=xp) for t in tiles]
    if saved_models:
        for m, saved in zip(models, saved_models):
            _restore_model(m, saved, xp)
    return tiles, models


def _read_frames(source, idx, xp) -> list:
    """Frames ``idx`` read in parallel (threads) and moved to the device; None for an unreadable one."""
    import dask  # noqa: PLC0415

    frames = dask.compute(*[dask.delayed(_read_or_none)(source, i) for i in idx], scheduler="threads")
    return [None if f is None else _backend.to_device(f, xp) for f in frames]


def _run_tile(model, frames, shifts, labels=False):
    # an unreadable frame (None) neither teaches the model nor gets a mask
    return [None if f is None else model.update(f, shift=s, labels=labels) for f, s in zip(frames, shifts)], model


def _foreground_masks(frames, reference, models, tiles, opts, xp, hw, *, labels=False) -> tuple:
    """Every frame through every tile's model (one Dask task per tile), the tiles' masks (and label
    maps) stitched into whole frames; returns (masks, label maps or None, each frame's shift to the
    reference or None, the models). An unreadable frame's labels are all 170 (unknown)."""
    from ..sequence._background_shadows import LABEL_UNKNOWN  # noqa: PLC0415
    import dask  # noqa: PLC0415

    from ..sequence._background import estimate_shift  # noqa: PLC0415

    h, w = hw
    if opts.align and reference is not None:
        shifts = dask.compute(*[dask.delayed(estimate_shift)(reference, f, options=opts) if f is not None
                                else None for f in frames], scheduler="threads")
    else:
        shifts = [None] * len(frames)
    outs = dask.compute(*[dask.delayed(_run_tile)(m, frames, shifts, labels) for m in models], scheduler="threads")
    models = [m for _, m in outs]
    masks = xp.zeros((len(frames), h, w), dtype=bool)
    label_maps = xp.full((len(frames), h, w), LABEL_UNKNOWN, dtype=xp.uint8) if labels else None
    for (tile_out, _), tile in zip(outs, tiles):
        ys, xs = tile.core_slices
        for j, got in enumerate(tile_out):
            if got is None:
                continue
            if labels:
                masks[j, ys, xs], label_maps[j, ys, xs] = got
            else:
                masks[j, ys, xs] = got
    return masks, label_maps, shifts, models


def _labels_in_frame(labels, shifts, opts, xp):
    """The label maps in frame coordinates (when aligned), 170 where the model does not cover."""
    if not opts.align:
        return labels
    from ..sequence._background import labels_to_frame  # noqa: PLC0415

    return xp.stack([lb if s is None else labels_to_frame(lb, s) for lb, s in zip(labels, shifts)])


def _foreground_fractions(masks, shifts, missing, opts, xp) -> tuple:
    """The masks in frame coordinates (when aligned) and each frame's foreground fraction, NaN for a
    frame that could not be read."""
    if opts.align:
        from ..sequence._background import mask_to_frame  # noqa: PLC0415

        masks = xp.stack([mk if s is None else mask_to_frame(mk, s) for mk, s in zip(masks, shifts)])
    fractions = _backend.to_host(masks.reshape(len(masks), -1).mean(axis=1, dtype=xp.float64))  # sync
    return masks, np.where(missing, np.nan, fractions)


# ------------------------------------------------------------------------------------------------
# corrupted frames and cuts: features in parallel, then one decision over the whole sequence


def _event_features(source, t0: int, t1: int, n: int, opts, backend, advance=None):
    """Frame features of frames [t0, t1) and the pair features each needs: (t-1, t) and (t-1, t+1)."""
    from ..sequence._corrupt import frame_features, pair_features  # noqa: PLC0415

    xp = _backend.resolve_backend(backend)
    cache: dict = {}
    unreadable: list = []

    def get(i):
        # An unreadable frame stands in as a repeat of the nearest readable one before it (or
        # after it, at the start): a repeat raises no event; its item is left undecided.
        if i not in cache:
            j, step = i, -1
            while True:
                f = _read_or_none(source, j)
                if f is not None:
                    break
                if j == i:
                    unreadable.append(i)
                j += step
                if j < 0:
                    j, step = i + 1, 1
                if j >= n:
                    raise GpudiffError("no frame of the sequence can be read")
            cache[i] = _backend.to_device(f, xp)
        return cache[i]

    ff, cons, skip = [], [], []
    for t in range(t0, t1):
        f = frame_features(get(t), color=opts.color)
        ff.append(type(f)(histogram=_backend.to_host(f.histogram), shape=f.shape, lsb=f.lsb))
        cons.append(pair_features(get(t - 1), get(t), block_size=opts.block_size, color=opts.color)
                    if t >= 1 else None)
        skip.append(pair_features(get(t - 1), get(t + 1), block_size=opts.block_size, color=opts.color)
                    if 1 <= t <= n - 2 else None)
        for k in [k for k in cache if k < t - 1]:
            del cache[k]
        if advance is not None:
            advance(1)
    return ff, cons, skip, sorted(set(unreadable))


def events_pass(cfg: RunConfig, source, plan: Plan, store, chunks, *, backend=None, progress=None) -> int:
    """Flag corrupted frames and cuts: per-frame histograms and per-pair block maps (consecutive
    and skip-one pairs) computed as Dask tasks over blocks of frames, then the decision of
    :func:`gpudiff.sequence.detect_events` over the whole sequence; written as the columns of each
    item's moving frame (item k is frame k + 1; frame 0 has no item). Idempotent: a marker file
    records completion; a killed pass is redone. Holds the block maps of the whole sequence
    (2 * H * W / 64 float32 per frame with 8x8 blocks). Returns the items still missing."""
    import json as _json  # noqa: PLC0415

    import dask  # noqa: PLC0415

    from ..sequence._corrupt import EventOptions, check_motion, detect_events  # noqa: PLC0415

    if sorted(chunks) != list(range(plan.n_chunks)):
        return plan.n_items  # the decision needs the whole sequence: a run without --shard completes it
    opts = EventOptions(**(cfg.event_options or {}))
    if store.read_aux(_EVENTS_DONE) is not None:
        if progress is not None:
            progress.advance(len(source))  # done by an earlier run
        return 0
    n = len(source)
    step = max(1, -(-n // max(1, 4 * (cfg.workers or os.cpu_count() or 1))))
    advance = progress.advance if progress is not None else None
    tasks = [dask.delayed(_event_features)(source, t0, min(n, t0 + step), n, opts, backend, advance)
             for t0 in range(0, n, step)]
    parts = dask.compute(*tasks, scheduler="threads", **({"num_workers": cfg.workers} if cfg.workers else {}))
    ff = [x for p in parts for x in p[0]]
    cons = [x for p in parts for x in p[1]]
    skip = [x for p in parts for x in p[2]]
    bad = sorted({i for p in parts for i in p[3]})
    ev = check_motion(detect_events(ff, cons, skip, options=opts), source.read, options=opts)
    if bad:  # frames that could not be read: no verdict (their items failed in the main pass)
        ev = {k: np.array(v, dtype=np.float64 if k.endswith(("score", "prev")) else np.int8) for k, v in ev.items()
              if k in ("corrupt", "cut", "corrupt_score", "cut_score", "kl_prev")}
        for k in ev:
            ev[k][bad] = np.nan if ev[k].dtype.kind == "f" else -1
    moving = np.asarray(plan.moving, dtype=np.int64)
    for c in range(plan.n_chunks):
        if _STOP.is_set():
            return plan.n_items
        fr = moving[plan.chunk_slice(c)]
        store.write_columns(c, {
            "corrupt": np.asarray(ev["corrupt"])[fr].astype(np.int8),
            "cut": np.asarray(ev["cut"])[fr].astype(np.int8),
            "corrupt_score": np.asarray(ev["corrupt_score"], dtype=np.float64)[fr],
            "cut_score": np.asarray(ev["cut_score"], dtype=np.float64)[fr],
            "kl_prev": np.asarray(ev["kl_prev"], dtype=np.float64)[fr],
        })
    store.write_aux(_EVENTS_DONE, _json.dumps({"done": True, "frame0_corrupt": bool(np.asarray(ev["corrupt"])[0]),
                                               "options": opts.to_dict() if hasattr(opts, "to_dict") else None}).encode())
    return 0


def _read_or_none(source, i):
    """A frame, or None when it cannot be read (its item already failed in the main pass)."""
    try:
        return source.read(i)
    except Exception:  # noqa: BLE001 - recorded as the item's failure by the main pass
        return None


def _model_state(model) -> dict:
    """A background model's state on the host, without its array module (for the resume file)."""
    out = {}
    for k, v in vars(model).items():
        if k in ("xp", "options", "tile"):
            continue
        if k == "state" and v is not None:  # BackgroundState, MixtureState or SampleState
            v = {"type": type(v).__name__,
                 **{f.name: _backend.to_host(getattr(v, f.name)) for f in dataclasses.fields(v)}}
        else:
            v = _backend.to_host(v)
        out[k] = v
    return out


def _restore_model(model, saved: dict, xp) -> None:
    from ..sequence._background_mixture import MixtureState  # noqa: PLC0415
    from ..sequence._background_model import BackgroundState  # noqa: PLC0415
    from ..sequence._background_samples import SampleState  # noqa: PLC0415

    kinds = {c.__name__: c for c in (BackgroundState, MixtureState, SampleState)}
    for k, v in saved.items():
        if k == "state" and v is not None:
            v = dict(v)
            cls = kinds[v.pop("type", "BackgroundState")]  # files of earlier versions: the Gaussian's
            v = cls(**{f: int(a) if f == "frames" else xp.asarray(a) for f, a in v.items()})
        elif isinstance(v, np.ndarray):
            v = xp.asarray(v)
        setattr(model, k, v)
