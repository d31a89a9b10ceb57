"""The files under a result store: creating it atomically (a temporary sibling renamed into place),
reading its root metadata, removing it, and writing / reading its chunks robustly (disk full,
unreadable chunks, device arrays brought to the host).
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import uuid
import warnings
from pathlib import Path

import numpy as np

from ..backend import is_device_array
from ..errors import InputError, StorageFull
from ._config import _gpudiff_version, _now, _versions
from ._schema import PENDING, STORE_VERSION

_PARTIAL = re.compile(r"\.[0-9a-f]{32}\.partial$")
_DISK_FULL = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}


def _set_together(writes, sl: slice) -> None:
    """``array[sl] = values`` for every pair, the writes in flight together.

    A chunk's ~20 small columns are written concurrently on zarr's own event loop (one file each),
    instead of one blocking round trip to that loop per column (about 1.4 ms each on a local disk).
    Falls back to one at a time where zarr's asynchronous layer is not where it is expected.
    """
    try:
        import asyncio  # noqa: PLC0415

        from zarr.core.sync import sync  # noqa: PLC0415

        handles = [(a._async_array, v) for a, v in writes]
    except (ImportError, AttributeError):
        handles = None
    if handles is None or len(handles) < 2:
        for a, v in writes:
            a[sl] = v
        return

    async def _all():
        # every write runs to its end before a failure is raised: none is left in flight (on an
        # object store, a request still pending when the process exits is reported by asyncio)
        results = await asyncio.gather(*(h.setitem(sl, v) for h, v in handles), return_exceptions=True)
        for r in results:
            if isinstance(r, BaseException):
                raise r

    sync(_all())


_NO_PERMISSION = {errno.EACCES, errno.EPERM, errno.EROFS}


def _disk_error(path, e: OSError, doing: str) -> InputError:
    """A failed local write as one line: disk full (:class:`StorageFull`, exit 75: free space and
    rerun to resume), no permission / read-only filesystem (exit 2), or another OS error (exit 2)."""
    if e.errno in _DISK_FULL:
        return StorageFull(f"{path}: disk full while {doing}: free space and rerun; finished chunks are kept")
    if e.errno in _NO_PERMISSION:
        where = getattr(e, "filename", None) or path
        why = "read-only filesystem" if e.errno == errno.EROFS else "permission denied"
        return InputError(
            f"{path}: cannot write ({why}: {where}) while {doing}: make it writable for this user "
            "(chmod/chown, or a writable mount), or choose another output path"
        )
    return InputError(
        f"{path}: cannot write ({e.strerror or e}) while {doing}: check the path and permissions"
    )


def _read_meta(path: Path) -> dict:
    """The root ``zarr.json`` of ``path``, checked to be a gpudiff store this version reads."""
    if not path.exists():
        raise InputError(f"{path}: no such result store: check the path (a run creates it)")
    if not path.is_dir():
        raise InputError(f"{path} is not a gpudiff result store: it is a file, not a directory")
    meta_file = path / "zarr.json"
    if not meta_file.is_file():
        why = "a Zarr v2 store (.zgroup)" if (path / ".zgroup").exists() else "there is no zarr.json"
        raise InputError(f"{path} is not a gpudiff result store: {why}")
    try:
        meta = json.loads(meta_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise InputError(f"{path} is not a gpudiff result store: zarr.json is unreadable ({e})") from None
    return _checked_meta(path, meta)


def _checked_meta(path, meta) -> dict:
    """``meta`` (the parsed root ``zarr.json`` of ``path``), checked to be a gpudiff store this version reads."""
    if not isinstance(meta, dict) or meta.get("zarr_format") != 3 or meta.get("node_type") != "group":
        raise InputError(f"{path} is not a gpudiff result store: zarr.json is not a Zarr v3 group")
    version = (meta.get("attributes") or {}).get("gpudiff_store_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise InputError(f"{path} is not a gpudiff result store: it has no gpudiff_store_version attribute")
    if version > STORE_VERSION:
        raise InputError(
            f"{path} was written by gpudiff store version {version}; this gpudiff reads version "
            f"{STORE_VERSION}: upgrade gpudiff"
        )
    return meta


def _is_store_or_empty(path: Path) -> bool:
    if not path.exists():
        return True
    if path.is_dir() and not any(path.iterdir()):
        return True
    try:
        _read_meta(path)
    except InputError as e:
        return "was written by gpudiff store version" in str(e)  # a newer gpudiff store: still ours
    return True


def _host(values):
    """A CuPy array comes to the host; anything else passes."""
    return values.get() if is_device_array(values) else values  # .get() syncs


def _read_robust(arr, sl: slice, name: str) -> np.ndarray:
    try:
        return np.asarray(arr[sl])
    except Exception:  # noqa: BLE001 (fall back to chunk by chunk)
        pass
    shape = (sl.stop - sl.start, *arr.shape[1:])
    out = np.full(shape, arr.fill_value, dtype=arr.dtype)
    step = arr.chunks[0]
    bad = []
    for start in range(sl.start - sl.start % step, sl.stop, step):
        a, b = max(start, sl.start), min(start + step, sl.stop)
        try:
            out[a - sl.start : b - sl.start] = arr[a:b]
        except Exception:  # noqa: BLE001
            bad.append(start // step)
    if bad:
        warnings.warn(
            f"{name}: chunk(s) {bad[:10]} unreadable, read as fill values", RuntimeWarning, stacklevel=3
        )
    return out


def _has_store_meta(path: Path) -> bool:
    return (path / "zarr.json").exists()


def _remove_store(path: Path) -> None:
    """Delete a gpudiff store (or an empty directory) at ``path``; refuse anything else."""
    if not _is_store_or_empty(path):
        raise InputError(
            f"{path} exists and is not a gpudiff result store: refusing to delete it with --overwrite; "
            f"choose another output path"
        )
    aside = path.with_name(f".{path.name}.old-{uuid.uuid4().hex}")
    try:
        os.rename(path, aside)  # one atomic step: the old store is gone from readers at once
    except FileNotFoundError:
        return  # another process removed it
    except OSError as e:
        raise InputError(
            f"{path}: cannot remove the old store ({e.strerror or e}): remove it by hand"
        ) from None
    shutil.rmtree(aside, ignore_errors=True)


def _create(path: Path, n_items, chunk, fields, attrs, config, initial) -> bool:
    """Build the store in a temporary sibling and rename it onto ``path``. True if this won."""
    import zarr  # noqa: PLC0415

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise _disk_error(path, e, "creating the store's folder") from None
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex}")
    all_attrs = {
        "gpudiff_store_version": STORE_VERSION,
        "gpudiff_version": _gpudiff_version(),
        "created": _now(),
        "n_items": n_items,
        "chunk": chunk,
        "fields": [f.name for f in fields],
        "versions": _versions(),
        # every chunk a write touches is stored, even one of fill values only (zarr's
        # write_empty_chunks): so `gpudiff status --verify` can tell a lost chunk from an empty one
        "write_empty_chunks": True,
        **attrs,  # may give gpudiff_version and versions; never the reserved keys (checked)
        "config": config,
    }
    try:
        try:
            group = zarr.open_group(tmp, mode="w-", zarr_format=3, attributes=all_attrs)
            group.create_array(
                "status", shape=(n_items,), chunks=(chunk,), dtype="uint8", fill_value=PENDING,
                dimension_names=["item"],
            )
            group.create_array(
                "error", shape=(n_items,), chunks=(chunk,), dtype=str, fill_value="", dimension_names=["item"]
            )
            for f in fields:
                group.create_array(
                    f.name,
                    shape=(n_items, *f.shape),
                    chunks=(f.item_chunk or chunk, *f.chunk_extra),
                    dtype=str if f.dtype == "str" else f.dtype,
                    fill_value=f.fill,
                    dimension_names=list(f.dims),
                )
            if callable(initial):  # made only now, when this process creates the store
                initial = initial()
            for name, values in (initial or {}).items():
                if name not in {f.name for f in fields}:
                    raise ValueError(f"initial column {name!r} is not a field")
                values = np.asarray(_host(values))
                if values.dtype.kind in "OUST":
                    values = np.asarray([str(v) for v in values.ravel()], dtype=object).reshape(values.shape)
                if values.shape[:1] != (n_items,):
                    raise ValueError(f"initial column {name}: {values.shape[0]} values for {n_items} items")
                group[name][...] = values
            with warnings.catch_warnings():
                # zarr warns that consolidated metadata is not (yet) in the v3 spec; zarr-python and
                # xarray read it, and other readers fall back to the per-array zarr.json.
                warnings.simplefilter("ignore")
                zarr.consolidate_metadata(tmp, zarr_format=3)
        except OSError as e:
            raise _disk_error(path, e, "creating the store") from None
        try:
            os.rename(tmp, path)  # atomic; fails when another process's store is already there
            return True
        except OSError as e:
            if _has_store_meta(path):
                return False  # lost the race: the winner's store is complete
            if e.errno in _DISK_FULL or e.errno in _NO_PERMISSION:
                raise _disk_error(path, e, "creating the store") from None
            raise InputError(
                f"{path} exists and is not a gpudiff result store: choose another output path, or remove it"
            ) from None
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


# ------------------------------------------------------------------------------------------------
# stores on an object store (s3://, gs://, memory://): no rename, so the root object is the commit


_ROOT = "zarr.json"
#: Keys of a store whose root object is missing: a creation that died between its uploads.
_PARTIAL_KEY = re.compile(r"^(maps/)?[A-Za-z0-9_.-]+/(zarr\.json|c/.+)$")


def _remote_key(root: str, rel: str = "") -> str:
    return f"{root.rstrip('/')}/{rel}" if rel else root.rstrip("/")


def _remote_root(fs, root: str, url: str, doing: str):
    """The bytes of the root ``zarr.json``, or None when there is none (never a cached answer)."""
    from ..io._remote import remote_error  # noqa: PLC0415

    key = _remote_key(root, _ROOT)
    try:
        fs.invalidate_cache(root)
        return fs.cat_file(key)
    except FileNotFoundError:
        return None
    except Exception as e:  # noqa: BLE001 (the client's errors: one line)
        raise remote_error(url, e, doing) from None


def _remote_keys(fs, root: str, url: str, doing: str) -> list[str]:
    """Every object under the store's prefix, relative to it ([] for none, or no such bucket yet)."""
    from ..io._remote import remote_error  # noqa: PLC0415

    base = _remote_key(root)
    try:
        fs.invalidate_cache(base)
        found = fs.find(base)
    except FileNotFoundError:
        return []
    except Exception as e:  # noqa: BLE001
        raise remote_error(url, e, doing) from None
    out = []
    for k in found:
        k = k.split("://", 1)[-1]
        if k.startswith(base + "/"):
            out.append(k[len(base) + 1 :])
        elif k == base:
            out.append("")  # an object where the store's "directory" is
    return out


def _read_meta_remote(fs, root: str, url: str) -> dict:
    """The root ``zarr.json`` of the store at ``url``, checked as :func:`_read_meta` checks a local one."""
    raw = _remote_root(fs, root, url, "opening the store")
    if raw is None:
        keys = _remote_keys(fs, root, url, "opening the store")
        if not keys:
            raise InputError(f"{url}: no such result store: check the URL (a run creates it)")
        if keys == [""]:
            raise InputError(f"{url} is not a gpudiff result store: it is an object, not a prefix")
        why = "a Zarr v2 store (.zgroup)" if ".zgroup" in keys else "there is no zarr.json"
        raise InputError(f"{url} is not a gpudiff result store: {why}")
    try:
        meta = json.loads(raw.decode("utf-8"))
    except ValueError as e:
        raise InputError(f"{url} is not a gpudiff result store: zarr.json is unreadable ({e})") from None
    return _checked_meta(url, meta)


def _remove_store_remote(fs, root: str, url: str) -> None:
    """``--overwrite`` on an object store: delete the prefix when it holds a gpudiff store (or a creation
    that died before its root object, or nothing); refuse anything else."""
    from ..io._remote import remote_error  # noqa: PLC0415

    keys = _remote_keys(fs, root, url, "checking the old store")
    if not keys:
        return
    ours = False
    if _ROOT in keys:
        try:
            _read_meta_remote(fs, root, url)
            ours = True
        except InputError as e:
            ours = "was written by gpudiff store version" in str(e)
    else:
        ours = all(not k or _PARTIAL_KEY.match(k) or k in _AUX_NAMES for k in keys)
    if not ours:
        raise InputError(
            f"{url} exists and is not a gpudiff result store: refusing to delete it with --overwrite; "
            f"choose another output URL"
        )
    try:
        # the root object first: from then on readers see no store (the rest is garbage being removed)
        if _ROOT in keys:
            fs.rm_file(_remote_key(root, _ROOT))
        fs.rm(_remote_key(root), recursive=True)
    except FileNotFoundError:
        pass  # another process removed it
    except Exception as e:  # noqa: BLE001
        raise remote_error(url, e, "removing the old store") from None
    fs.invalidate_cache(root)


#: Files a run keeps beside the arrays (resume state of the sequence passes).
#: The files beside the arrays (the passes' resume files; --retry-failed's per-file stamps and the
#: source it accepted: _store.SOURCE_STAMPS, _store.SOURCE_ACCEPTED): a store's own, never strays.
_AUX_NAMES = ("background_state.pkl", "events_done.json", "source_files.json.gz", "source_accepted.json")


def _create_remote(fs, root: str, url: str, n_items, chunk, fields, attrs, config, initial) -> bool:
    """Build the store in a local temporary directory (with :func:`_create`), upload every object but
    the root ``zarr.json``, then the root: the commit. True if this process's root object is the one
    that landed; False when another creator's was there first (its store is complete)."""
    import tempfile  # noqa: PLC0415

    from ..io._remote import remote_error  # noqa: PLC0415

    with tempfile.TemporaryDirectory(prefix="gpudiff-create-") as tmp:
        local = Path(tmp) / "store.zarr"
        _create(local, n_items, chunk, fields, attrs, config, initial)
        objects = {}
        for dirpath, _dirs, files in os.walk(local):
            for name in files:
                p = Path(dirpath) / name
                objects[p.relative_to(local).as_posix()] = p.read_bytes()
    root_bytes = objects.pop(_ROOT)
    existing = _remote_keys(fs, root, url, "creating the store")
    if _ROOT in existing:
        return False  # committed by another process meanwhile
    # ("": the prefix itself, as a listing may show it while another creator uploads, or a folder marker)
    stray = [k for k in existing if k and k not in objects and k not in _AUX_NAMES]
    if stray:  # objects that are no part of a store of this configuration: someone else's data
        raise InputError(
            f"{url} exists and is not a gpudiff result store ({len(stray)} other objects, e.g. {stray[0]}): "
            "choose another output URL, or remove it"
        )
    try:
        # Whole objects, each one PUT (atomic): a racing creator of the same configuration uploads
        # the same bytes, so whichever lands last changes nothing.
        fs.pipe({_remote_key(root, k): v for k, v in objects.items()})
    except Exception as e:  # noqa: BLE001
        raise remote_error(url, e, "creating the store") from None
    return _commit_root(fs, root, url, root_bytes)


def _commit_root(fs, root: str, url: str, data: bytes) -> bool:
    """PUT the root object; where the store supports it (S3's ``If-None-Match: *``) only if absent,
    so of N racing creators exactly one commits. True if this one did."""
    from ..io._remote import protocol_of, remote_error  # noqa: PLC0415

    key = _remote_key(root, _ROOT)
    exclusive = protocol_of(url) in ("s3", "s3a")
    try:
        if exclusive:
            fs.pipe_file(key, data, mode="create")
        else:
            fs.pipe_file(key, data)
        fs.invalidate_cache(root)
        return True
    except Exception as e:  # noqa: BLE001
        first = e
    if _remote_root(fs, root, url, "creating the store") is not None:
        return False  # lost the race: the winner's root is there, and its store is complete
    text = f"{type(first).__name__} {first}".lower()
    if exclusive and ("notimplemented" in text or "not implemented" in text or "501" in text):
        try:  # an S3-compatible server without conditional writes: last writer of the root wins
            fs.pipe_file(key, data)
            return True
        except Exception as e:  # noqa: BLE001
            first = e
    raise remote_error(url, first, "creating the store") from None


def _write_error(path, e: BaseException, doing: str) -> InputError:
    """A failed chunk write as one line: a local OSError (disk full...) or an object store's error."""
    from ..io._remote import is_remote, remote_error  # noqa: PLC0415

    if is_remote(str(path)):
        err = remote_error(str(path), e, doing)
        return InputError(f"{err}; finished chunks are kept, rerun to resume")
    return _disk_error(path, e, doing)
