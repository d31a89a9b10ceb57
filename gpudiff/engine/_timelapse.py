"""``gpudiff dedup`` and ``gpudiff watch``: keep/drop decisions written to a store and a keep folder.

:func:`run_dedup` decides every frame of a source (in parallel, :func:`gpudiff.engine.dedup`),
writes the decisions to a resumable Zarr store (one item per frame, a chunk written once all its
frames are decided, status last) and copies or hard-links the kept frames into a folder. A rerun
continues after the last decided chunk, from the last kept frame.

:func:`watch` polls a folder for new snapshots and decides each complete new file as it lands;
its state (last kept file, checksums of kept files, files seen) lives in a small JSON file written
atomically, so a restart continues from the last kept frame. A file still being written (its size
or mtime moved since the last poll, or it does not decode) waits for the next poll.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import backend as _backend
from ..sequence._dedup import Decision, DedupOptions, Deduplicator
from ._dedup_run import dedup
from ..errors import ConfigError, GpudiffError, InputError
from ._schema import DONE, FAILED, Field

__all__ = ["run_dedup", "DedupRunReport", "watch", "WatchReport", "save_frame"]


def dedup_fields():
    return [
        Field("reference_index", "int64"),
        Field("moving_index", "int64"),
        Field("keep", "int8"),  # 1 kept, 0 dropped, -1 undecided
        Field("repeat_of", "int64"),
        Field("change", "float64"),
        Field("change_threshold", "float64"),
        Field("noise_level", "float64"),
        Field("checksum", "int64"),
        Field("reason", "str"),
    ]


@dataclass
class DedupRunReport:
    frames: int = 0
    kept: int = 0
    dropped: int = 0
    failed: int = 0
    decided_now: int = 0
    elapsed_s: float = 0.0
    decisions: list = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return 1 if self.failed else 0


# ---- keep folder -------------------------------------------------------------------------------


def _check_keep_dir(keep_dir: str, source_dir: str | None) -> Path:
    from ..io._remote import is_remote  # noqa: PLC0415

    if is_remote(str(keep_dir)):
        raise ConfigError(f"--keep-dir {keep_dir}: the keep folder must be a local folder, not a URL "
                          "(a store can be remote: --out s3://...)")
    kd = Path(os.path.abspath(keep_dir))
    if source_dir is not None and kd == Path(os.path.abspath(source_dir)):
        raise ConfigError(f"--keep-dir {keep_dir} is the source folder: give another folder (originals are never touched)")
    try:
        kd.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(f"--keep-dir {keep_dir}: cannot create it ({e.strerror}): give a writable folder") from None
    return kd


def save_frame(frame: np.ndarray, path: Path) -> Path:
    """Write ``frame`` losslessly: PNG for uint8 (and uint16 grey/RGB), TIFF for float. Atomic."""
    frame = np.asarray(frame)
    ext = ".tif" if frame.dtype.kind == "f" else ".png"
    path = path.with_suffix(ext)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        if os.path.lexists(tmp):  # a link planted where the temporary goes is removed, not written through
            tmp.unlink()
        if ext == ".png":
            import imagecodecs  # noqa: PLC0415

            tmp.write_bytes(imagecodecs.png_encode(np.ascontiguousarray(frame)))
        else:
            import tifffile  # noqa: PLC0415

            tifffile.imwrite(tmp, frame)
        os.replace(tmp, path)
    except OSError as e:
        raise _keep_error(path, tmp, e) from None
    return path


def _keep_error(dst: Path, tmp: Path, e: OSError):
    """A kept frame that could not be written: the temporary removed (never a 0-byte file left), and
    one line (disk full: exit 75, rerun to resume; no permission: exit 2)."""
    from ._zarrfiles import _disk_error  # noqa: PLC0415

    with contextlib.suppress(OSError):
        os.unlink(tmp)
    return _disk_error(dst.parent, e, f"writing {dst.name}")


def _keep_file(source, i: int, kd: Path, link: bool) -> Path:
    """Copy (or hard-link) a kept frame into the keep folder; a stack's frame becomes a file."""
    if getattr(source, "kind", "") == "folder":
        # the file's own path (a label writes bytes that are not UTF-8 as \xNN)
        src = Path(source._path(i) if hasattr(source, "_path") else source.label(i))
        dst = _inside(kd, src.name)
        if dst.exists() and dst.stat().st_size == src.stat().st_size:
            return dst  # a resumed run copied it already
        return _copy_into(src, kd, link)
    return save_frame(source.read(i), _inside(kd, f"frame_{i:06d}"))


def _inside(kd: Path, name: str) -> Path:
    """``kd / name`` for a kept frame, never outside ``kd`` whatever the input's names: only the last
    component of ``name`` counts ('../x.png' and '/abs/x.png' are 'x.png'); '', '.' and '..' are
    refused (no file has those names)."""
    base = os.path.basename(str(name).rstrip("/"))  # a backslash is part of a Linux file name
    if base in ("", ".", ".."):
        raise InputError(f"--keep-dir {kd}: a frame named {name!r} has no file name to keep it under")
    dst = kd / base
    if os.path.dirname(os.path.abspath(dst)) != os.path.abspath(kd):  # pragma: no cover - by construction
        raise InputError(f"--keep-dir {kd}: {name!r} would be written outside the keep folder")
    return dst


# ---- dedup over a source into a store -----------------------------------------------------------


def run_dedup(
    spec: str,
    *,
    options: DedupOptions | None = None,
    out: str | None = None,
    keep_dir: str | None = None,
    link: bool = False,
    overwrite: bool = False,
    component: str | None = None,
    chunk: int = 64,
    workers: int | None = None,
    on_decision=None,
    storage_options=None,
) -> DedupRunReport:
    """Decide every frame of ``spec``; write the store (``out``) and the keep folder.

    Returns
    -------
    DedupRunReport
        Counts over the whole source (decisions restored from the store included) and the
        decisions made in this call.
    """
    from ..io import open_source  # noqa: PLC0415

    options = options or DedupOptions()
    t0 = time.perf_counter()
    import inspect  # noqa: PLC0415

    takes = storage_options is not None and "storage_options" in inspect.signature(open_source).parameters
    # the source's file handle or decoder closed however the run ends
    with open_source(spec, component=component, **({"storage_options": storage_options} if takes else {})) as source:
        return _dedup_source(source, spec, options=options, out=out, keep_dir=keep_dir, link=link,
                             overwrite=overwrite, chunk=chunk, workers=workers, on_decision=on_decision,
                             storage_options=storage_options, t0=t0)


def _dedup_source(source, spec, *, options, out, keep_dir, link, overwrite, chunk, workers, on_decision,
                  storage_options, t0) -> DedupRunReport:
    n = len(source)
    source_dir = spec if getattr(source, "kind", "") == "folder" and os.path.isdir(spec) else None
    kd = _check_keep_dir(keep_dir, source_dir) if keep_dir else None

    store = None
    start = 0
    state = None
    restored: dict = {}
    if out:
        # memory follows the frames, not --chunk: no chunk larger than the source (a store made
        # before this clamp records the chunk as given, and resumes with it)
        given, chunk = chunk, max(1, min(int(chunk), n))
        try:
            store = _dedup_store(out, source, options, n, chunk, overwrite, storage_options)
        except ConfigError as exc:
            if chunk == given:
                raise
            try:
                chunk = int(given)
                store = _dedup_store(out, source, options, n, chunk, overwrite, storage_options)
            except ConfigError:
                raise exc from None
        start, state, restored = _resume_point(store, n, chunk)

    report = DedupRunReport(frames=n)
    buf: list[Decision] = []

    def decided(d: Decision):
        report.decisions.append(d)
        if kd is not None and d.keep:
            _keep_file(source, d.index, kd, link)
        if on_decision is not None:
            on_decision(d)
        if store is not None:
            buf.append(d)
            c = d.index // chunk
            end = min(n, (c + 1) * chunk)
            if d.index == end - 1:
                _write_decisions(store, c, list(buf))
                buf.clear()

    if start < n:
        dedup(source, options=options, start=start, state=state, workers=workers, on_decision=decided)
    report.decided_now = len(report.decisions)
    _count_decisions(report, n, start, restored)
    report.elapsed_s = time.perf_counter() - t0
    source.close()
    return report


def _dedup_store(out: str, source, options: DedupOptions, n: int, chunk: int, overwrite: bool,
                 storage_options=None):
    """The dedup store of ``source`` (one item per frame): created, or opened to resume (``out`` a
    folder, or a URL with its ``storage_options``)."""
    from ..io._remote import is_remote  # noqa: PLC0415
    from ._store import ResultStore  # noqa: PLC0415

    remote = {"storage_options": storage_options} if is_remote(str(out)) else {}

    config = {"dedup": options.to_dict(), "source": source.fingerprint(), "kind": "dedup"}
    return ResultStore.create_or_open(
        out, n_items=n, chunk=chunk, fields=dedup_fields(),
        attrs={"dedup": options.to_dict(), "options": options.to_dict(), "rule": options.describe(),
               "pairs": "last kept frame", "source": source.fingerprint(), "source_kind": source.kind,
               "frames": n, "frame_shape": list(source.frame_shape) if source.frame_shape else None,
               "backend": _backend.backend_name(_backend.resolve_backend(options.backend)),
               "device": _backend.device_name(_backend.resolve_backend(options.backend)),
               "thresholds": {"change": options.min_changed if options.rule == "pixels" else
                              (1.0 if options.rule == "blocks" else options.threshold)}},
        config=config, overwrite=overwrite,
        initial={"moving_index": np.arange(n, dtype=np.int64)}, **remote,
    )


def _resume_point(store, n: int, chunk: int) -> tuple[int, dict | None, dict]:
    """Where a rerun continues: the first frame of the first pending chunk, the dedup state there
    (the last kept frame, the checksums of the kept ones), and the decisions already stored before it."""
    pending = store.pending_chunks(range(store.n_chunks))
    first = pending[0] if pending else store.n_chunks
    start = min(n, first * chunk)
    if start <= 0:
        return start, None, {}
    prev = store.read(["status", "keep", "checksum"], items=slice(0, start))
    kept = np.flatnonzero((prev["status"] == DONE) & (prev["keep"] == 1))
    csums: dict = {}
    for k in kept.tolist():
        csums.setdefault(str(int(prev["checksum"][k])), []).append(int(k))
    state = {"last_index": int(kept[-1]) if kept.size else -1, "kept_checksums": csums}
    return start, state, prev


def _write_decisions(store, c: int, decisions: list[Decision]) -> None:
    """Write chunk ``c`` of the store from its frames' decisions, status last."""
    cols = {
        "reference_index": np.array([d.reference for d in decisions], np.int64),
        "moving_index": np.array([d.index for d in decisions], np.int64),
        "keep": np.array([d.keep for d in decisions], np.int8),
        "repeat_of": np.array([d.repeat_of for d in decisions], np.int64),
        "change": np.array([d.statistic for d in decisions], np.float64),
        "change_threshold": np.array([d.threshold for d in decisions], np.float64),
        "noise_level": np.array([d.level for d in decisions], np.float64),
        "checksum": np.array([d.checksum for d in decisions], np.int64),
        "reason": [d.reason for d in decisions],
    }
    status = np.array([FAILED if d.failed else DONE for d in decisions], np.uint8)
    errors = [d.reason if d.failed else "" for d in decisions]
    store.write_chunk(c, cols, status, errors)


def _count_decisions(report: DedupRunReport, n: int, start: int, restored: dict) -> None:
    """Kept / failed / dropped over the whole source: the decisions restored from the store before
    ``start`` and those made now."""
    keep_all = np.zeros(n, bool)
    failed_all = np.zeros(n, bool)
    if restored:
        keep_all[:start] = (restored["status"] == DONE) & (restored["keep"] == 1)
        failed_all[:start] = restored["status"] == FAILED
    for d in report.decisions:
        keep_all[d.index] = d.keep
        failed_all[d.index] = d.failed
    report.kept = int(keep_all.sum())
    report.failed = int(failed_all.sum())
    report.dropped = n - report.kept - report.failed


# ---- watch ----------------------------------------------------------------------------------------


@dataclass
class WatchReport:
    decided: int = 0
    kept: int = 0
    polls: int = 0
    decisions: list = field(default_factory=list)
    #: Files of the last poll not decided yet, name -> why (still being written, or not decodable yet).
    waiting: dict = field(default_factory=dict)

    def waiting_summary(self, settle: float) -> str:
        """'3 waiting: 2 still being written (changed in the last 1 s, --settle), 1 not decodable yet'."""
        if not self.waiting:
            return ""
        writing = sum(1 for w in self.waiting.values() if w.startswith("still being written"))
        broken = len(self.waiting) - writing
        parts = []
        if writing:
            parts.append(f"{writing} still being written (changed in the last {settle:g} s, --settle)")
        if broken:
            first = next(f"{n}: {w}" for n, w in self.waiting.items() if not w.startswith("still being written"))
            parts.append(f"{broken} not decodable yet (e.g. {first})")
        return f"{len(self.waiting)} waiting: " + ", ".join(parts) + "; they are decided on a later poll"


def _atomic_json(path: Path, obj) -> None:
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        raise _keep_error(path, Path(tmp) if tmp else path.with_name(f".{path.name}.none"), e) from None


def _list_images(folder: Path, ignore: set) -> list[Path]:
    from ..io._source import _is_image_file, natural_key  # noqa: PLC0415

    out = []
    with os.scandir(folder) as it:
        for e in it:
            if e.name.startswith(".") or not e.is_file() or e.name in ignore:
                continue
            if _is_image_file(e.path, e.name):
                out.append(Path(e.path))
    return sorted(out, key=lambda p: natural_key(p.name))


def watch(
    folder: str,
    *,
    keep_dir: str,
    options: DedupOptions | None = None,
    state_path: str | None = None,
    interval: float = 2.0,
    settle: float = 1.0,
    once: bool = False,
    max_polls: int | None = None,
    link: bool = False,
    stream=None,
    stop=None,
) -> WatchReport:
    """Decide each new complete image in ``folder`` as it lands; keep the changed ones.

    Parameters
    ----------
    folder : str
        The folder a camera writes into (never modified).
    keep_dir : str
        Where kept frames are copied (or hard-linked with ``link``).
    state_path : str, optional
        The state file (default ``<keep_dir>/.gpudiff-watch.json``).
    interval : float
        Seconds between polls.
    settle : float
        A file is complete once its size and mtime are unchanged for this long (and it decodes).
    once : bool
        Decide what is complete now and return (for cron jobs and tests).
    max_polls : int, optional
        Stop after this many polls.
    stop : threading.Event, optional
        Set it to stop between polls.
    """
    from ..io._images import read_image  # noqa: PLC0415

    options = options or DedupOptions()
    src = Path(folder)
    if not src.is_dir():
        raise InputError(f"{folder}: no such folder to watch: give the folder the camera writes into")
    kd = _check_keep_dir(keep_dir, folder)
    sp = Path(state_path) if state_path else kd / ".gpudiff-watch.json"
    state = _load_watch_state(sp, options)
    done = set(state.get("done", []))
    judge = _restored_judge(options, state, kd)
    last_path = state.get("last_path")
    seen: dict = {}  # path -> (size, mtime_ns, first seen unchanged at)
    report = WatchReport()
    index = len(done)
    out = stream if stream is not None else sys.stderr
    while True:
        report.polls += 1
        report.waiting = {}
        now = time.monotonic()
        for p in _list_images(src, done):
            why = _still_writing(p, seen, now, settle, once)
            if why is not None:
                report.waiting[p.name] = why
                continue
            try:
                frame = read_image(p)
            except GpudiffError as e:
                report.waiting[p.name] = " ".join(str(e).split())  # incomplete or not an image yet
                continue
            d = _decide_file(judge, index, frame, p, kd, link, out)
            if d.keep:
                last_path = str(p)
                report.kept += 1
            report.decisions.append(d)
            report.decided += 1
            index += 1
            done.add(p.name)
            seen.pop(p.name, None)
            state = {"done": sorted(done), "judge": judge.state(), "last_path": last_path,
                     "options": options.to_dict()}
            _atomic_json(sp, state)
        if once or (max_polls is not None and report.polls >= max_polls) or (stop is not None and stop.is_set()):
            return report
        time.sleep(interval)


def _load_watch_state(sp: Path, options: DedupOptions) -> dict:
    """The watch state saved at ``sp`` (made with the same options), or a fresh one."""
    state = {"done": [], "judge": None, "last_path": None, "options": options.to_dict()}
    if sp.exists():
        try:
            state = json.loads(sp.read_text())
        except (OSError, ValueError) as e:
            raise InputError(f"{sp}: unreadable watch state ({e}): delete it to start afresh") from None
        if state.get("options") != options.to_dict():
            raise ConfigError(f"{sp} was made with other dedup options: use the same ones, or delete it to start afresh")
    return state


def _restored_judge(options: DedupOptions, state: dict, kd: Path) -> Deduplicator:
    """The deduplicator where the saved state left it, with the last kept frame read back (from the
    watched folder, or its copy in the keep folder)."""
    from ..io._images import read_image  # noqa: PLC0415

    judge = Deduplicator(options)
    last_path = state.get("last_path")
    if state.get("judge"):
        last = None
        if last_path:
            try:
                last = read_image(last_path)
            except GpudiffError:
                last = None
        if last is None and last_path:
            kept_copy = list(kd.glob(Path(last_path).stem + ".*"))
            if kept_copy:
                last = read_image(kept_copy[0])
        judge.restore(state["judge"], last_frame=last)
    return judge


def _still_writing(p: Path, seen: dict, now: float, settle: float, once: bool) -> str | None:
    """Why ``p`` may still be being written (its size or mtime moved within ``settle`` s), or None
    when it is complete. Records its (size, mtime_ns, first seen unchanged at) in ``seen``."""
    st = p.stat()
    sig = (st.st_size, st.st_mtime_ns)
    prev = seen.get(p.name)
    writing = "still being written (size or time changed since the last poll)"
    if prev is None or prev[:2] != sig:
        seen[p.name] = (*sig, now)
        if not once:
            return writing
    elif now - prev[2] < settle and not once:
        return writing
    if once and time.time() - st.st_mtime < settle:
        return f"still being written (modified {time.time() - st.st_mtime:.1f} s ago)"
    return None


def _decide_file(judge: Deduplicator, index: int, frame, p: Path, kd: Path, link: bool, out) -> Decision:
    """Keep or drop the complete file ``p`` (frame ``index``): a kept one is copied into ``kd``;
    the decision is printed to ``out``."""
    d = judge.decide(index, frame)
    d.reason = f"{p.name}: " + d.reason
    if d.keep:
        _copy_into(p, kd, link)
    print(f"gpudiff watch: {'keep' if d.keep else 'drop'} {p.name} ({d.reason.split(': ', 1)[1]})",
          file=out)
    return d


def _copy_into(p: Path, kd: Path, link: bool) -> Path:
    """``p`` copied (or hard-linked) into ``kd`` under its own name, atomically (temp, then rename)."""
    dst = _inside(kd, p.name)
    tmp = kd / f".{dst.name}.tmp{os.getpid()}"
    try:
        if os.path.lexists(tmp):  # lexists: a link planted there is removed, never written through
            tmp.unlink()  # left by a killed run of this process id
        if link:
            try:
                os.link(p, tmp)
            except OSError:  # another filesystem: copy instead
                shutil.copy2(p, tmp)
        else:
            shutil.copy2(p, tmp)
        os.replace(tmp, dst)
    except OSError as e:
        raise _keep_error(dst, tmp, e) from None
    return dst
