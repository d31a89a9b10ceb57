"""A Zarr v2/v3 array or OME-Zarr image: frames along its frame axes, blocks cached per source.

A store at a URL (``s3://bucket/plate.zarr``, ``https://host/image.ome.zarr``) is opened read-only
through zarr's ``FsspecStore``; reading a block slice is one call whose chunk GETs zarr's
asynchronous layer keeps in flight together.
"""

from __future__ import annotations

from collections import OrderedDict
import math
import os
import threading

import numpy as np

from ..errors import InputError
from ._readerrors import _first_line
from ._remote import (
    filesystem_options,
    is_remote,
    is_transport_error,
    object_fingerprint,
    object_infos,
    remote_error,
    resolve_storage_options,
    url_join,
    url_parent,
)
from ._source import (
    Source,
    _RemoteMixin,
    _check_budget,
    _check_frame_budget,
    _files_fingerprint,
    _frame_channels,
    _single_image,
    _spec_of_url,
    _stat_entry,
)
from ._validate import _output_dtype, validate_array


#: Zarr blocks along the frame axis cached per source (bytes), so a chunk of 64 frames is decoded once.
_ZARR_CACHE_BYTES = 256 << 20
_ZARR_BLOCK_BYTES = 64 << 20


# --------------------------------------------------------------------------------------------
# Zarr (v2, v3, OME-Zarr)


_ZARR_MARKERS = ("zarr.json", ".zarray", ".zgroup")
#: What a remote store's fingerprint asks about object by object where its listing has no version.
_ZARR_METADATA = frozenset({"zarr.json", ".zarray", ".zgroup", ".zattrs", ".zmetadata"})
#: ... or every object, when the store holds no more than this many.
_ZARR_ASK_ALL = 2048


def _is_zarr_dir(path: str) -> bool:
    return any(os.path.exists(os.path.join(path, n)) for n in _ZARR_MARKERS)


def _is_zarr_url(fs, url: str) -> bool:
    """A URL is a Zarr store when ``zarr.json``, ``.zarray`` or ``.zgroup`` is under it (one small
    request each, stopping at the first found)."""
    for name in _ZARR_MARKERS:
        try:
            if fs.exists(fs._strip_protocol(url_join(url, name))):
                return True
        except Exception:  # noqa: BLE001 - unreachable or denied: reported by the caller's next step
            return False
    return False


def _transport_failure(exc) -> bool:
    """An error of the storage client (unreachable, denied), not zarr's word on the store's content."""
    if type(exc).__module__.startswith(("zarr", "numcodecs")) or isinstance(exc, FileNotFoundError):
        return False
    return is_transport_error(exc)


def _remote_store(url: str, storage_options):
    """zarr's read-only FsspecStore at ``url``."""
    from zarr.storage import FsspecStore  # noqa: PLC0415

    try:
        return FsspecStore.from_url(url, storage_options=filesystem_options(url, storage_options), read_only=True)
    except InputError:
        raise
    except Exception as exc:
        raise remote_error(url, exc, "opening the Zarr store") from None


def _ome_multiscales(attrs: dict):
    ms = attrs.get("multiscales")
    if ms is None and isinstance(attrs.get("ome"), dict):
        ms = attrs["ome"].get("multiscales")
    return ms if isinstance(ms, list) and ms else None


class ZarrSource(_RemoteMixin, Source):
    """Frames of a Zarr array (axis 0, or the OME axes), read by slicing."""

    kind = "zarr"
    _TRANSIENT = ("_lock", "_array", "_cache", "_fs", "_loading")

    def __init__(self, path: str, *, component=None, max_pixels: int, page_budget=None, storage_options=None):
        super().__init__(path, max_pixels=max_pixels)
        import zarr  # noqa: PLC0415

        self.path = path
        self.component = component
        if is_remote(path):
            self._remote = True
            self._storage_options = resolve_storage_options(storage_options)
        where = self._where(path)
        try:
            node = zarr.open(where, mode="r", path=component) if component else zarr.open(where, mode="r")
        except Exception as exc:
            if self.__dict__.get("_remote") and _transport_failure(exc):
                raise remote_error(path, exc, "opening the Zarr store") from None
            if component:
                try:
                    root = zarr.open_group(where, mode="r")
                    arrays = sorted(root.array_keys()) + sorted(f"{g}/" for g in root.group_keys())
                except Exception:
                    arrays = None
                if arrays is not None:
                    listing = ", ".join(arrays[:8]) + (", ..." if len(arrays) > 8 else "") if arrays else "none"
                    raise InputError(
                        f"{path} has no array {component!r}: check --component (in the store: {listing})"
                    ) from None
            raise InputError(
                f"{path} is not a readable Zarr array ({_first_line(exc)}): check the path"
            ) from None
        inner = (component or "").strip("/")
        axes = None
        if not hasattr(node, "shape"):  # a group
            attrs = dict(node.attrs)
            ms = _ome_multiscales(attrs)
            where = f"{path}/{inner}" if inner else path
            if ms is None:
                arrays = sorted(node.array_keys()) + sorted(f"{g}/" for g in node.group_keys())
                listing = ", ".join(arrays[:8]) + (", ..." if len(arrays) > 8 else "") if arrays else "none"
                raise InputError(
                    f"{where} is a Zarr group, not an array: name the array with --component "
                    f"(arrays in it: {listing})"
                )
            datasets = ms[0].get("datasets") or []
            if not datasets or "path" not in datasets[0]:
                raise InputError(f"{where} has OME multiscales without datasets: fix its metadata")
            level = str(datasets[0]["path"])
            axes = ms[0].get("axes")
            try:
                node = node[level]
            except Exception:
                raise InputError(f"{where} names the OME level {level!r}, which is not in the store") from None
            inner = f"{inner}/{level}" if inner else level
            if axes is None:  # OME-NGFF 0.1/0.2: always 5D tczyx
                axes = ["t", "c", "z", "y", "x"]
            axes = [str(a.get("name", "") if isinstance(a, dict) else a).lower() for a in axes]
            axes_types = [
                str(a.get("type", "")).lower() if isinstance(a, dict) else "" for a in (ms[0].get("axes") or [])
            ]
            if len(axes_types) != len(axes):
                axes_types = [""] * len(axes)
        if axes is None:
            axes, axes_types = self._parent_ome_axes(path, inner)
        self._inner = inner
        self._name = f"{path.rstrip('/')}/{inner}" if inner else path
        shape = tuple(int(s) for s in node.shape)
        self._shape = shape
        self._dtype_in = np.dtype(node.dtype)
        self._chunk0 = int(node.chunks[0]) if node.chunks else 1
        if axes is not None:
            self._layout_ome(axes, axes_types, shape)
        else:
            self._layout_plain(shape)
        self._out_dtype = _output_dtype(self._dtype_in, self._name)
        h, w = shape[self._y], shape[self._x]
        _check_budget(self._name, h, w, max_pixels, channels=_frame_channels(self.frame_shape), dtype=self._out_dtype)
        self._n = math.prod(shape[a] for a in self._frame_axes) if self._frame_axes else 1
        if self._n == 1 and not self._frame_axes:
            raise _single_image(self._name)
        _check_frame_budget(self._name, self._n, page_budget)
        self._array = node

    def _where(self, path: str):
        """What zarr opens: the local path, or a read-only FsspecStore at the URL."""
        return _remote_store(path, self._storage_options) if self.__dict__.get("_remote") else path

    def _parent_ome_axes(self, path: str, inner: str):
        """OME axes of an array named inside an OME-Zarr image (``image.zarr/0``), else (None, None)."""
        import zarr  # noqa: PLC0415

        remote = bool(self.__dict__.get("_remote"))
        if remote:  # posix path operations on the URL, existence asked of the store's filesystem
            fs, _ = self._filesystem(path)
            full = url_join(path, inner)
            dirname, is_zarr = url_parent, lambda p: _is_zarr_url(fs, p)
            relpath = lambda p, start: p[len(start.rstrip("/")) + 1 :]  # noqa: E731
        else:
            full = os.path.normpath(os.path.join(path, inner)) if inner else os.path.normpath(path)
            dirname, is_zarr = os.path.dirname, _is_zarr_dir
            relpath = lambda p, start: os.path.relpath(p, start).replace(os.sep, "/")  # noqa: E731
        parent = dirname(full)
        for _ in range(3):
            if not parent or parent.endswith("://") or not is_zarr(parent):
                break
            try:
                group = zarr.open_group(self._where(parent), mode="r")
                ms = _ome_multiscales(dict(group.attrs))
            except Exception:
                ms = None
            if ms:
                rel = relpath(full, parent)
                if any(str(d.get("path")) == rel for d in ms[0].get("datasets") or []):
                    raw = ms[0].get("axes") or ["t", "c", "z", "y", "x"]
                    names = [str(a.get("name", "") if isinstance(a, dict) else a).lower() for a in raw]
                    types = [str(a.get("type", "")).lower() if isinstance(a, dict) else "" for a in raw]
                    return names, types
            parent = os.path.dirname(parent)
        return None, None

    def _layout_plain(self, shape):
        name = self._name
        if len(shape) == 2:
            raise _single_image(name)
        if len(shape) == 3:
            self._frame_axes, self._y, self._x, self._c = (0,), 1, 2, None
        elif len(shape) == 4 and shape[3] <= 4:
            self._frame_axes, self._y, self._x, self._c = (0,), 1, 2, 3
        else:
            raise InputError(
                f"{name} has shape {shape}: gpudiff reads Zarr arrays (T, H, W) or (T, H, W, C) with C <= 4 "
                f"channels last, or OME-Zarr with axes metadata; rechunk or transpose it"
            )
        self._axes_names = None

    def _layout_ome(self, axes, types, shape):
        name = self._name
        if len(axes) != len(shape):
            raise InputError(
                f"{name} has shape {shape} but its OME axes are {axes}: fix the multiscales metadata"
            )
        spatial = [k for k, a in enumerate(axes) if a in ("y", "x") or types[k] == "space"]
        if len(spatial) < 2:
            raise InputError(f"{name} has OME axes {axes} without two spatial axes (y, x): fix the metadata")
        self._y, self._x = spatial[-2], spatial[-1]
        self._c = None
        frame_axes = []
        for k, a in enumerate(axes):
            if k in (self._y, self._x):
                continue
            if (a == "c" or types[k] == "channel") and self._c is None and shape[k] in (1, 3):
                self._c = k
                continue
            frame_axes.append(k)
        self._frame_axes = tuple(frame_axes)
        self._axes_names = axes
        if not frame_axes:
            raise _single_image(name)

    def _node(self):
        if self._array is None:
            import zarr  # noqa: PLC0415

            with self._lock:
                if self._array is None:
                    try:
                        self._array = zarr.open_array(self._where(self.path), mode="r", path=self._inner or "")
                    except InputError:
                        raise
                    except Exception as exc:
                        raise InputError(
                            f"{self._name} cannot be opened ({_first_line(exc)}): check the store"
                        ) from None
        return self._array

    def _length(self):
        return self._n

    @property
    def frame_shape(self):
        h, w = self._shape[self._y], self._shape[self._x]
        if self._c is None or self._shape[self._c] in (1, 2):
            return (h, w)
        return (h, w, 3)

    @property
    def dtype(self):
        return self._out_dtype

    def _label(self, i):
        return f"{self._name}[{i}]"

    def _coords(self, i):
        sizes = [self._shape[a] for a in self._frame_axes]
        return dict(zip(self._frame_axes, (int(c) for c in np.unravel_index(i, sizes))))

    def _block(self, b: int):
        """Frames ``b*chunk .. (b+1)*chunk`` along axis 0, decoded once and cached (or None).

        Threads reading ahead (``--prefetch``) ask for frames of one block at once: the first one
        fetches it, the others wait for it instead of fetching the same chunks again.
        """
        with self._lock:
            if self._cache is None:
                self._cache = OrderedDict()
            if self._loading is None:
                self._loading = {}
            block = self._cache.get(b)
            if block is not None:
                self._cache.move_to_end(b)
                return block
            busy = self._loading.get(b)
            if busy is None:
                busy = self._loading[b] = threading.Event()
                mine = True
            else:
                mine = False
        if not mine:
            busy.wait()
            with self._lock:
                block = self._cache.get(b)
            return block if block is not None else self._block(b)  # the fetch failed or was evicted
        try:
            lo = b * self._chunk0
            hi = min(lo + self._chunk0, self._shape[0])
            block = np.asarray(self._node()[lo:hi])
            with self._lock:
                self._cache[b] = block
                total = sum(v.nbytes for v in self._cache.values())
                while total > _ZARR_CACHE_BYTES and len(self._cache) > 1:
                    _, old = self._cache.popitem(last=False)
                    total -= old.nbytes
            return block
        finally:
            with self._lock:
                self._loading.pop(b, None)
            busy.set()

    def _read(self, i):
        coords = self._coords(i)
        index = tuple(coords.get(k, slice(None)) for k in range(len(self._shape)))
        label = self._label(i)
        try:
            per_block = self._dtype_in.itemsize * math.prod(self._shape[1:]) * self._chunk0
            if 0 in self._frame_axes and self._chunk0 > 1 and per_block <= _ZARR_BLOCK_BYTES:
                t = coords[0]
                block = self._block(t // self._chunk0)
                sub = block[(t % self._chunk0,) + index[1:]]
            else:
                sub = np.asarray(self._node()[index])
        except InputError:
            raise
        except Exception as exc:
            if self.__dict__.get("_remote") and _transport_failure(exc):
                raise remote_error(label, exc, "reading") from None
            raise InputError(
                f"{label} cannot be read ({_first_line(exc)}): the store may be incomplete; write it again"
            ) from None
        kept = [k for k in range(len(self._shape)) if k not in coords]
        order = [kept.index(self._y), kept.index(self._x)]
        if self._c is not None:
            order.append(kept.index(self._c))
        frame = np.ascontiguousarray(np.transpose(sub, order))
        return validate_array(frame, name=label)

    def fingerprint(self):
        if self.__dict__.get("_remote"):
            return self._remote_fingerprint()
        entries = []
        root = self.path
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            for f in filenames:
                full = os.path.join(dirpath, f)
                entries.append(_stat_entry(full, os.path.relpath(full, root)))
        out = {"kind": self.kind, "spec": self.spec, "component": self.component, "array": self._inner}
        out.update(_files_fingerprint(entries))
        return out

    def _remote_fingerprint(self) -> dict:
        """Every object under the store's URL (name, size, ETag) from one recursive listing; on a
        web server, whose listing has no versions, each object is asked about (one HEAD each, in
        flight together), only the metadata documents when the store has over 2048 objects; on a
        web server without listings, the metadata documents of the store and of the array."""
        fs, root = self._filesystem(self.path)
        fs.invalidate_cache()
        root = root.rstrip("/")
        try:
            found = fs.find(root, detail=True)
        except Exception:  # noqa: BLE001 - no listing (a plain web server): the metadata below
            found = {}
        listed = {
            p: info for p, info in found.items() if p.startswith(root + "/") and info.get("type") != "directory"
        }
        prefixes = ["", f"{self._inner}/"] if self._inner else [""]
        for docs in (("zarr.json",), (".zarray", ".zattrs", ".zgroup", ".zmetadata")):  # v3, else v2
            if listed:
                break
            candidates = [f"{pre}{m}" for pre in prefixes for m in docs]
            infos = object_infos(fs, [fs._strip_protocol(url_join(self.path, c)) for c in candidates])
            listed = {f"{root}/{c}": info for c, info in zip(candidates, infos) if isinstance(info, dict)}
        names, urls, entries = [], [], []
        for p, info in sorted(listed.items()):
            rel = p[len(root) + 1 :]
            unversioned = object_fingerprint(info)[1] is None
            if unversioned and (len(listed) <= _ZARR_ASK_ALL or rel.rsplit("/", 1)[-1] in _ZARR_METADATA):
                names.append(rel)
                urls.append(url_join(self.path, rel))
            else:
                entries.append((rel, *object_fingerprint(info)))
        entries += self._remote_entries(fs, urls, names)
        out = {"kind": self.kind, "spec": _spec_of_url(self.spec), "component": self.component}
        out["array"] = self._inner
        out.update(_files_fingerprint(entries))
        return out
