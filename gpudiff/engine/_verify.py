"""Checking a result store's chunks against its status (``gpudiff status --verify``), the state of
the sequence passes (for ``gpudiff status``), and removing the temporaries killed writers left.

**What verify checks.** Every chunk of every array is read (maps too). For each store chunk ``c``:

* ``status``: a status chunk that cannot be decoded is damaged (it reads as pending anyway).
* When ``c`` is done or failed (some item's status is 1 or 2):

  - the *chunk columns* (every array a chunk write stores: ``error``, the metric columns,
    ``shift``, flow, ``maps/diff``...; every field but the initial columns and the pass columns
    below) must have each of their chunk objects present and decodable. Presence is checked by
    key (a directory listing locally, one ``exists`` per key on an object store), because zarr
    reads a missing chunk as its fill value. The rule for presence holds for stores made by this
    version (attribute ``write_empty_chunks``: their writes store chunks of fill values too); in
    an older store a chunk of fill values only is legitimately absent, so there only undecodable
    chunks are reported.
  - A damaged chunk is *re-marked pending*: its ``status`` chunk is rewritten to 0 (pending) for
    all its items, then its ``error`` chunk to "" (so a failed item's message does not outlive its
    status). A rerun of the same command recomputes exactly those chunks.

* Pass columns: ``corrupt, cut, corrupt_score, cut_score, kl_prev`` must be complete when the
  corrupt/cuts pass recorded completion (``events_done.json``); ``foreground_fraction`` and the
  foreground maps for the chunks before the background pass's ``next_chunk``. A damaged one
  resets that pass (its resume file is removed): the rerun runs it again (the background model
  from the first chunk: its state at the damaged chunk is not kept).
* Initial columns (indices, names, times, paths, ids: written once at creation) are checked for
  decoding only; a damaged one cannot be recomputed by a rerun and is reported as such
  (``--overwrite`` makes the store again).

Not detectable: a chunk corrupted inside valid compressed framing that still decodes to the right
size (zarr's default zstd has no checksum). Run verify while no run writes the store.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import time

import numpy as np

from ._schema import DONE, FAILED, PENDING
from ._zarrfiles import _PARTIAL

_INITIAL = ("reference_index", "moving_index", "reference_path", "moving_path", "id", "reference_name",
            "moving_name", "reference_time", "moving_time")
_EVENTS = ("corrupt", "cut", "corrupt_score", "cut_score", "kl_prev")
_BACKGROUND = ("foreground_fraction", "maps/foreground", "maps/foreground_labels")
_BG_STATE = "background_state.pkl"
_EVENTS_DONE = "events_done.json"
#: A write_aux temporary (``<name>.tmp<pid>``) of a killed writer.
_AUX_TMP = re.compile(r"\.(pkl|json|gz)\.tmp\d+$")


#: FUSE mounts of object stores: their rename is a copy and a delete, so a writer killed during it
#: can leave a short chunk file under its final name (the filesystem types /proc/mounts shows).
NON_ATOMIC_RENAME_FS = ("fuse.gcsfuse", "fuse.s3fs", "fuse.goofys", "fuse.rclone", "fuse.mountpoint-s3",
                        "fuse.blobfuse", "fuse.blobfuse2", "fuse.geesefs")


def _mount_field(text: str) -> str:
    """A /proc/mounts field with its octal escapes (``\\040`` for a space) decoded."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), text)


def non_atomic_rename_fs(path, mounts: str | None = None) -> str | None:
    """The filesystem type of ``path``'s mount when it is one that cannot rename atomically
    (:data:`NON_ATOMIC_RENAME_FS`), else None. ``mounts``: the text of /proc/self/mounts (read when
    None; None is returned where it cannot be read)."""
    if mounts is None:
        try:
            with open("/proc/self/mounts", encoding="utf-8", errors="surrogateescape") as f:
                mounts = f.read()
        except OSError:
            return None
    target = os.path.realpath(os.fspath(path))
    best, best_type = "", None
    for line in mounts.splitlines():
        parts = line.split()
        if len(parts) < 3:
            continue
        point, fstype = _mount_field(parts[1]), parts[2]
        inside = target == point or target.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best):
            best, best_type = point, fstype
    return best_type if best_type in NON_ATOMIC_RENAME_FS else None


def passes_state(store) -> dict:
    """The sequence passes the store was made for, each ``{"state": "done"|"pending", ...}``
    (background: ``next_chunk`` of ``n_chunks``, ``items_pending``), read from their resume files."""
    names = set(store.names)
    out: dict = {}
    if "corrupt" in names:
        try:
            done = store.read_aux(_EVENTS_DONE) is not None
        except Exception:  # noqa: BLE001 (unreadable: not known to be done)
            done = False
        out["corrupt/cuts"] = {"state": "done" if done else "pending"}
    if "foreground_fraction" in names:
        nxt = _bg_next_chunk(store)
        left = 0 if nxt >= store.n_chunks else store.n_items - store.chunk_slice(nxt).start
        out["background"] = {"state": "done" if left == 0 else "pending", "next_chunk": nxt,
                             "n_chunks": store.n_chunks, "items_pending": int(left)}
    return out


def _bg_next_chunk(store) -> int:
    import pickle  # noqa: PLC0415

    try:
        raw = store.read_aux(_BG_STATE)
        return 0 if raw is None else int(pickle.loads(raw)["next_chunk"])
    except Exception:  # noqa: BLE001 (unreadable or damaged: the pass restarts)
        return 0


def verify(store, *, repair: bool = True, chunks=None) -> dict:
    """Check every chunk of ``store`` (or only ``chunks``: a shard's own, which no other shard
    writes) against its status (module docstring); with ``repair``
    re-mark damaged chunks pending and reset damaged passes. Returns a JSON-able report:
    ``findings`` (one dict per damaged chunk or pass: ``chunk``, ``items``, ``arrays`` with what
    is wrong), ``remarked`` (chunks), ``passes_reset``, ``unrecoverable``, ``clean``."""
    names = store.names
    strict = bool(store.attrs.get("write_empty_chunks"))
    present = _PresentKeys(store)
    passes = passes_state(store)
    bg_next = passes.get("background", {}).get("next_chunk", 0)
    events_done = passes.get("corrupt/cuts", {}).get("state") == "done"
    findings, remarked, unrecoverable = [], [], []
    reset = set()
    status_arr = store._arrays["status"]
    for c in (range(store.n_chunks) if chunks is None else sorted({int(c) for c in chunks})):
        sl = store.chunk_slice(c)
        problems: dict = {}
        try:
            st = np.asarray(status_arr[sl])
            status_bad = False
        except Exception as e:  # noqa: BLE001
            problems["status"] = f"unreadable ({_short(e)})"
            st = np.zeros(sl.stop - sl.start, np.uint8)
            status_bad = True
        finished = bool(np.any((st == DONE) | (st == FAILED)))
        pass_problems: dict = {}
        init_problems: dict = {}
        for name in names:
            if name == "status":
                continue
            arr = store._arrays[name]
            if name in _INITIAL:
                kind, must_exist = init_problems, False
            elif name in _EVENTS:
                kind, must_exist = pass_problems, strict and events_done
            elif name in _BACKGROUND:
                kind, must_exist = pass_problems, strict and c < bg_next
            else:
                kind, must_exist = problems, strict and finished
            missing = [k for k in _chunk_keys(arr, sl)] if must_exist else []
            missing = [k for k in missing if not present.has(name, k)]
            if missing:
                kind[name] = f"missing ({len(missing)} chunk object{'s' if len(missing) != 1 else ''})"
                continue
            try:
                arr[sl]
            except Exception as e:  # noqa: BLE001 (truncated, garbled: whatever zarr says)
                kind[name] = f"unreadable ({_short(e)})"
        items = [int(sl.start), int(sl.stop - 1)]
        if problems and (finished or status_bad):
            findings.append({"chunk": c, "items": items, "status": _status_word(st, status_bad),
                             "arrays": problems, "action": "re-marked pending" if repair else "none"})
            remarked.append(c)
        for name, what in pass_problems.items():
            which = "corrupt/cuts" if name in _EVENTS else "background"
            findings.append({"chunk": c, "items": items, "pass": which, "arrays": {name: what},
                             "action": f"{which} pass reset" if repair else "none"})
            reset.add(which)
        if init_problems:
            findings.append({"chunk": c, "items": items, "arrays": init_problems,
                             "action": "none: written at creation, a rerun cannot recompute it: "
                                       "rerun with --overwrite"})
            unrecoverable.append(c)
    if repair:
        for c in remarked:
            _remark_pending(store, c)
        for which in sorted(reset):
            store.remove_aux(_EVENTS_DONE if which == "corrupt/cuts" else _BG_STATE)
    return {"path": store.url, "n_chunks": store.n_chunks, "arrays": len(names), "findings": findings,
            "remarked": remarked, "passes_reset": sorted(reset), "unrecoverable": unrecoverable,
            "strict_presence": strict, "clean": not findings}


def _status_word(st, bad: bool) -> str:
    if bad:
        return "unreadable"
    if np.all(st == DONE):
        return "done"
    if np.all(st == PENDING):
        return "pending"
    return "done/failed"


def _short(e: BaseException) -> str:
    return " ".join(f"{type(e).__name__}: {e}".split())[:160]


def _remark_pending(store, c: int) -> None:
    """Status of chunk ``c`` to pending (first: from then on the chunk is redone whatever follows),
    then its errors to ""."""
    from ._zarrfiles import _write_error  # noqa: PLC0415

    sl = store.chunk_slice(c)
    m = sl.stop - sl.start
    try:
        store._arrays["status"][sl] = np.zeros(m, np.uint8)
        store._arrays["error"][sl] = np.asarray([""] * m, dtype=object)
    except store._write_errors as e:
        raise _write_error(store.path, e, f"re-marking chunk {c} pending") from None


def _chunk_keys(arr, sl: slice) -> list[str]:
    """The chunk keys (relative to the array) of the item range ``sl`` of ``arr``, every chunk of
    the other axes with it."""
    chunks = arr.chunks
    ic = chunks[0]
    first, last = sl.start // ic, (sl.stop - 1) // ic
    others = [range(-(-s // k)) for s, k in zip(arr.shape[1:], chunks[1:])]
    enc = arr.metadata.encode_chunk_key
    return [enc((i, *rest)) for i in range(first, last + 1) for rest in itertools.product(*others)]


class _PresentKeys:
    """Which chunk objects exist: locally one listing per array; on an object store one ``exists``
    per key (a listing may lag)."""

    def __init__(self, store):
        self.store = store
        self._local: dict = {}

    def has(self, name: str, key: str) -> bool:
        if not self.store.is_remote:
            if name not in self._local:
                self._local[name] = _listing(os.path.join(self.store.path, *name.split("/")))
            return key in self._local[name]
        fs, root = self.store._fs, self.store._fs_root
        return bool(fs.exists(f"{root}/{name}/{key}"))


def _listing(array_dir: str) -> set:
    out = set()
    base = os.path.join(array_dir, "c")
    for root, _dirs, files in os.walk(base):
        rel = os.path.relpath(root, array_dir)
        for f in files:
            if not _PARTIAL.search(f):
                out.add("/".join([*rel.split(os.sep), f]))
    return out


def format_verify(report: dict) -> str:
    """One line per finding, and a summary line."""
    path = report["path"]
    lines = []
    for f in report["findings"]:
        what = ", ".join(f"{n} {w}" for n, w in f["arrays"].items())
        head = f"chunk {f['chunk']} (items {f['items'][0]}-{f['items'][1]}"
        head += f", {f['status']})" if "status" in f else (f", {f['pass']} pass)" if "pass" in f else ")")
        lines.append(f"{path}: {head}: {what}: {f['action']}")
    n = len(report["remarked"])
    if report["clean"]:
        lines.append(f"{path}: verified {report['n_chunks']} chunks of {report['arrays']} arrays: every "
                     "finished chunk is complete and readable")
    else:
        parts = [f"{n} chunk{'s' if n != 1 else ''} re-marked pending"]
        if report["passes_reset"]:
            parts.append(f"pass{'es' if len(report['passes_reset']) > 1 else ''} reset: "
                         f"{', '.join(report['passes_reset'])}")
        if report["unrecoverable"]:
            parts.append(f"{len(report['unrecoverable'])} chunk(s) of creation-time columns damaged "
                         "(rerun with --overwrite)")
        lines.append(f"{path}: verified {report['n_chunks']} chunks of {report['arrays']} arrays: "
                     f"{'; '.join(parts)}: rerun the same command to recompute them")
    return "\n".join(lines)


# ---- temporaries of killed writers ----------------------------------------------------------------

#: A chunk temporary younger than this may belong to a writer renaming it right now.
PARTIAL_GRACE_S = 10.0


def clean_temporaries(store, *, older_than: float, chunks=None) -> int:
    """Remove the temporaries killed writers left: ``*.partial`` chunk files (of ``chunks`` only,
    or all), write_aux temporaries, and the creation / overwrite temporaries beside the store
    (``.NAME.tmp-*``, ``.NAME.old-*``; only without ``chunks``), each only when its newest mtime is
    before ``older_than`` (a time.time() value). Returns how many were removed. Nothing on an object store (no temporaries)."""
    if store.is_remote:
        return 0
    removed = 0
    wanted = None
    if chunks is not None:
        wanted = {}
        for name in store.names:
            arr = store._arrays[name]
            wanted[name] = set()
            for c in chunks:
                wanted[name].update(_chunk_keys(arr, store.chunk_slice(c)))
    base = str(store.path)
    for root, _dirs, files in os.walk(base):
        for f in files:
            p = os.path.join(root, f)
            if _PARTIAL.search(f):
                if wanted is not None and not _partial_of(base, p, f, wanted):
                    continue
            elif not (wanted is None and root == base and _AUX_TMP.search(f)):
                continue
            with contextlib.suppress(OSError):
                if os.stat(p).st_mtime < older_than:
                    os.unlink(p)
                    removed += 1
    if wanted is not None:
        return removed  # a shard's run: another shard may be creating or overwriting right now
    parent, name = store.path.parent, store.path.name
    import shutil  # noqa: PLC0415

    with contextlib.suppress(OSError):
        for entry in os.scandir(parent):
            if entry.name.startswith((f".{name}.tmp-", f".{name}.old-")):
                with contextlib.suppress(OSError):
                    if _newest_mtime(entry.path) < older_than:
                        shutil.rmtree(entry.path, ignore_errors=True)
                        removed += 1
    return removed


def _partial_of(base: str, p: str, f: str, wanted: dict) -> bool:
    """Is ``p`` (a ``<key>.<uuid>.partial``) a temporary of one of the wanted chunk keys?"""
    rel = os.path.relpath(p, base).split(os.sep)
    try:
        ci = rel.index("c")
    except ValueError:
        return False
    name = "/".join(rel[:ci])
    key = "/".join([*rel[ci:-1], _PARTIAL.sub("", f)])
    return key in wanted.get(name, ())


def _newest_mtime(path: str) -> float:
    """The newest mtime in a tree (a creation still writing into it is young)."""
    newest = os.stat(path, follow_symlinks=False).st_mtime
    for root, dirs, files in os.walk(path):
        for n in (*dirs, *files):
            with contextlib.suppress(OSError):
                newest = max(newest, os.stat(os.path.join(root, n), follow_symlinks=False).st_mtime)
    return newest


#: At a run's start: temporaries older than this are left by killed writers (a live writer renames
#: its chunk temporary within milliseconds, its creation temporary within seconds).
STALE_AT_START_S = 3600.0


def clean_before_run(store) -> float:
    """At the start of a run: remove the temporaries older than :data:`STALE_AT_START_S` (any
    chunk: shards may run now, but none of them keeps a temporary that long). Returns the time the
    run started (for :func:`clean_after_run`). Never fails the run."""
    started = time.time()
    with contextlib.suppress(Exception):
        clean_temporaries(store, older_than=started - STALE_AT_START_S)
    return started


def clean_after_run(store, mine, started: float, finished: bool) -> int:
    """At the end of a run whose chunks (``mine``) are all finished: remove the temporaries older
    than both the run's start and :data:`PARTIAL_GRACE_S`. Only the ``.partial`` files of this
    run's own chunks (no other shard writes them; a duplicate of this shard racing it renames its
    temporaries within the grace), and, for a run that owns every chunk, the write_aux and creation
    temporaries as well. Nothing when the run did not finish. Never fails the run."""
    if not finished:
        return 0
    limit = min(started, time.time() - PARTIAL_GRACE_S)
    everything = sorted(int(c) for c in mine) == list(range(store.n_chunks))
    try:
        return clean_temporaries(store, older_than=limit, chunks=None if everything else list(mine))
    except Exception:  # noqa: BLE001 (housekeeping: a finished run stays a success)
        return 0
