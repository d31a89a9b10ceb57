"""``gpudiff run --retry-failed``: redo the failed items of a store, re-reading the input files that
were fixed in place since, and nothing else.

A store refuses a rerun whose source changed (its fingerprint: every file's size and mtime). After
someone repairs the broken frames of a folder (or the images of a manifest) in place, that refusal
is right for the done items, whose results came from the old files, and wrong for the failed ones,
which never had a result. So ``--retry-failed`` accepts a changed source only when every changed
file is an input of failed (or still pending) items alone; a changed file that a done item was
computed from is refused in one line naming the file and the item.

How it knows which files changed: the store keeps (name, size, mtime_ns) of every frame's file
(:data:`~gpudiff.engine._store.SOURCE_STAMPS`, written by the first run that finds the source as
the store records it); a store made before that, with at most 64 files, has them in its
fingerprint. A source that is one file (a TIFF stack, a Zarr array, a video, a GIF) cannot tell
which of its frames changed: a changed one is refused; an unchanged one (items that failed for a
passing reason: a timeout, memory) is retried like any other.

Order of writes, so that a kill at any point leaves a store that a rerun of the same command
finishes: (1) the chunks of failed items with a changed input are re-marked pending and the
sequence passes' resume files removed (they saw the frames as missing); (2) the new per-file
stamps; (3) the accepted fingerprint (:data:`~gpudiff.engine._store.SOURCE_ACCEPTED`), from which
on a plain rerun resumes too.

Shards of one ``--retry-failed`` may start at once: each accepts the same record. A shard that read
the record before another wrote it, and the status after the other redid items, finds done items
with a changed input; it reads the record again, and since every shard writes it before redoing
anything, the record then holds the new source and those items are the other shard's results.
"""

from __future__ import annotations

import gzip
import json

import numpy as np

from ..errors import ConfigError
from ._config import _config_mismatch, _jsonable, _now
from ._schema import DONE, FAILED
from ._store import SOURCE_ACCEPTED, SOURCE_STAMPS

__all__ = ["accept_changed_source", "record_stamps", "reset_passes"]

#: How many changed file names the accepted record lists (the count is always there).
_LISTED = 64


def frame_stamps(source):
    """(name, size, mtime_ns) of each frame's file in frame order, or None for a source that is
    one file or objects at a URL."""
    fn = getattr(source, "frame_stamps", None)
    return None if fn is None else fn()


def _encode(stamps) -> bytes:
    doc = {"version": 1, "frames": [[n, s, m] for n, s, m in stamps]}
    return gzip.compress(json.dumps(doc, separators=(",", ":")).encode("utf-8", "surrogateescape"), mtime=0)


def _decode(raw: bytes, where: str):
    try:
        doc = json.loads(gzip.decompress(raw).decode("utf-8", "surrogateescape"))
        return [(str(n), s, m) for n, s, m in doc["frames"]]
    except (OSError, ValueError, KeyError, TypeError, EOFError):
        raise ConfigError(f"{where} is damaged: --retry-failed cannot tell which files changed; "
                          "use --overwrite to start again") from None


def record_stamps(store, source) -> bool:
    """Keep the per-file stamps of ``source`` in ``store`` when it has none yet (call only after the
    source was found to match the store's record). True when written."""
    if store.has_aux(SOURCE_STAMPS):
        return False
    stamps = frame_stamps(source)
    if stamps is None:
        return False
    store.write_aux(SOURCE_STAMPS, _encode(stamps))
    return True


def _recorded_stamps(store, old_source: dict):
    """The stamps the store keeps, else the file list of a fingerprint of at most 64 files (a glob's
    by the names relative to its folder, as :meth:`FolderSource.frame_stamps` names them)."""
    raw = store.read_aux(SOURCE_STAMPS)
    if raw is not None:
        return _decode(raw, f"{store.url}/{SOURCE_STAMPS}")
    from ..io._folder import _RELATIVE  # noqa: PLC0415

    listing = old_source.get(_RELATIVE, old_source) if isinstance(old_source, dict) else {}
    files = listing.get("files") if isinstance(listing, dict) else None
    if not isinstance(files, list):
        return None
    return [(str(f.get("path")), f.get("size"), f.get("mtime_ns")) for f in files]


def reset_passes(store) -> list[str]:
    """Remove the corrupt/cuts and background passes' resume files, so the passes run again over
    the retried frames. Returns the passes reset."""
    from ._passes import _BG_STATE, _EVENTS_DONE  # noqa: PLC0415

    names, out = set(store.names), []
    if "corrupt" in names and store.has_aux(_EVENTS_DONE):
        store.remove_aux(_EVENTS_DONE)
        out.append("corrupt/cuts")
    if "foreground_fraction" in names and store.has_aux(_BG_STATE):
        store.remove_aux(_BG_STATE)
        out.append("background")
    return out


def _accepted_meanwhile(store, new_src) -> bool:
    """True when the store's record (read again, after the status) now holds ``new_src``: a shard of
    the same ``--retry-failed`` started at once wrote it before redoing any item, so done items with
    a changed input are its results, not old ones."""
    now = store.recorded_config().get("source")
    return _config_mismatch(store.url, {"source": now}, {"source": new_src}) is None


def only_source_differs(store, config: dict) -> bool:
    """True when ``config`` matches the store's record in everything but the source."""
    config = _jsonable(config, "config")
    recorded = store.recorded_config()
    return _config_mismatch(store.url, {**recorded, "source": None}, {**config, "source": None}) is None


def accept_changed_source(store, source, plan, config: dict) -> list[str]:
    """Accept ``source`` for ``store`` when it differs from the store's record only in files that are
    inputs of failed or pending items (module docstring); returns the changed files' labels.

    Raises a one-line :class:`ConfigError` when anything but the source differs (the same error as
    a plain rerun's), when a done item's input changed, when files were added or removed, or when
    the store cannot tell which files changed.
    """
    recorded = store.recorded_config()
    config = _jsonable(config, "config")  # as the store keeps it (tuples as lists)
    old_src, new_src = recorded.get("source"), config.get("source")
    err = _config_mismatch(store.url, {**recorded, "source": None}, {**config, "source": None})
    if err is not None:
        raise err
    if _config_mismatch(store.url, {"source": old_src}, {"source": new_src}) is None:
        return []
    spec = (new_src or {}).get("spec", "the source") if isinstance(new_src, dict) else "the source"
    fix = "restore it, or --overwrite to start again"
    if isinstance(old_src, dict) and isinstance(new_src, dict) and old_src.get("kind") != new_src.get("kind"):
        raise ConfigError(f"{spec} is a {new_src.get('kind')} but {store.url} was made from a "
                          f"{old_src.get('kind')}: --retry-failed re-reads changed files of the same source; "
                          "use --overwrite to start again")
    if isinstance(old_src, dict) and "manifest" in old_src and old_src.get("manifest") != new_src.get("manifest"):
        raise ConfigError(f"{spec} (the manifest itself) changed since {store.url} was made: its pairs may "
                          f"differ: --retry-failed re-reads only changed images; {fix}")
    new = frame_stamps(source)
    if new is None:
        raise ConfigError(
            f"{spec} changed since {store.url} was made, and it is one {source.kind} (or objects at a URL): "
            "--retry-failed can re-read the changed files of a local folder, glob or manifest only; "
            "use --overwrite to start again")
    old = _recorded_stamps(store, old_src)
    if old is None:
        raise ConfigError(
            f"{store.url} records no per-file sizes and times of its {len(new)} input files (made by an "
            "older gpudiff): --retry-failed cannot tell which changed; use --overwrite to start again")
    old_by_name = {n: (s, m) for n, s, m in old}
    new_names = [n for n, _, _ in new]
    added = [n for n in new_names if n not in old_by_name]
    gone = sorted(set(old_by_name) - set(new_names))
    if added or gone or len(new) != len(old):
        what = (f"{added[0]} is new" if added else f"{gone[0]} is gone") if (added or gone) else "files were renamed"
        raise ConfigError(f"{spec}: {what} since {store.url} was made ({len(added)} added, {len(gone)} removed): "
                          f"the items would change: --retry-failed re-reads files changed in place only; {fix}")
    changed = np.array([old_by_name[n] != (s, m) for n, s, m in new], dtype=bool)
    uses = changed[plan.reference] | changed[plan.moving]
    status = store.read(["status"])["status"]
    done_bad = np.flatnonzero(uses & (status == DONE))
    if done_bad.size and _accepted_meanwhile(store, new_src):
        return []  # another shard of the same retry accepted it and has redone those items since
    if done_bad.size:
        i = int(done_bad[0])
        frame = int(plan.reference[i]) if changed[plan.reference[i]] else int(plan.moving[i])
        more = f" (and {done_bad.size - 1} more done items)" if done_bad.size > 1 else ""
        raise ConfigError(
            f"{source.label(frame)} changed since item {i}{more} was computed from it: --retry-failed "
            f"re-reads only the inputs of failed items: {fix}")
    # (1) the chunks of failed items with a changed input pending, the passes to run again
    redo = np.flatnonzero(uses & (status == FAILED))
    chunks = sorted({int(i) // plan.chunk for i in redo})
    from ._verify import _remark_pending  # noqa: PLC0415

    for c in chunks:
        _remark_pending(store, c)
    if chunks:
        reset_passes(store)
    # (2) the stamps of the files as they are now, (3) the source as accepted
    store.write_aux(SOURCE_STAMPS, _encode(new))
    labels = [source.label(int(k)) for k in np.flatnonzero(changed)]
    store.write_aux(SOURCE_ACCEPTED, json.dumps(
        {"source": new_src, "accepted": _now(), "n_changed": len(labels), "changed": labels[:_LISTED]},
        allow_nan=True).encode("utf-8", "surrogateescape"))
    return labels
