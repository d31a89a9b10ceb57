"""Object stores and web servers (``s3://``, ``gs://``, ``http(s)://``) through fsspec.

gpudiff has no storage client of its own: a URL goes to fsspec (``s3fs``, ``gcsfs``, its HTTP
filesystem on aiohttp), and Zarr stores on top of it go through zarr's own ``FsspecStore``. This
module only decides that a spec is a URL, finds the storage options, builds the filesystem with
bounded timeouts and retries, and turns the clients' exceptions into one-line errors.

Storage options (credentials, endpoint) come the way the client libraries take them: their own
environment and files (``AWS_*``, ``~/.aws``, ``GOOGLE_APPLICATION_CREDENTIALS``), or a JSON object
given as ``--storage-options`` or in ``GPUDIFF_STORAGE_OPTIONS``. The object is either flat (the same
keyword arguments for every protocol) or keyed by protocol (``{"s3": {...}, "https": {...}}``).
They travel with a source or a store to Dask workers (in memory, pickled); they are never printed
nor written to a store's attributes (:func:`redacted` is what may be shown).

Bounded waiting: S3 connects within 5 s and reads within 60 s, with 3 attempts (botocore's
``standard`` retry mode, whose backoff is under a few seconds); HTTP connects within 5 s and reads
within 60 s. A refused connection fails in seconds, never hangs. Explicit options override these.
On S3, whole-object reads are one GET (``max_concurrency=1``: no HEAD before each read).
"""

from __future__ import annotations

import errno
import json
import os
import posixpath
import re

from ..errors import ConfigError, InputError

__all__ = [
    "REMOTE_PROTOCOLS",
    "STORAGE_OPTIONS_ENV",
    "is_remote",
    "protocol_of",
    "parse_storage_options",
    "resolve_storage_options",
    "get_filesystem",
    "filesystem_options",
    "remote_error",
    "redacted",
    "url_join",
    "url_parent",
    "is_transport_error",
    "object_infos",
    "object_fingerprint",
]

#: Protocols gpudiff reads and writes, and the package fsspec needs for each (in ``gpudiff[remote]``
#: for s3 and http; gcsfs is installed by hand for gs).
REMOTE_PROTOCOLS = {
    "s3": "s3fs",
    "s3a": "s3fs",
    "gs": "gcsfs",
    "gcs": "gcsfs",
    "http": "aiohttp",
    "https": "aiohttp",
    "memory": None,  # fsspec's in-process filesystem: for tests and notebooks
}
STORAGE_OPTIONS_ENV = "GPUDIFF_STORAGE_OPTIONS"

_URL = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_SECRET_KEYS = re.compile(r"(secret|key|token|password|passwd|credential|session|auth|sas)", re.I)
_CONNECT_S, _READ_S, _ATTEMPTS = 5, 60, 3


def protocol_of(spec) -> str | None:
    """The lower-case protocol of a URL (``s3``), or None for a local path (and ``file://``)."""
    if not isinstance(spec, str):
        return None
    m = _URL.match(spec)
    if m is None:
        return None
    proto = m.group(1).lower()
    return None if proto in ("file", "local") else proto


def is_remote(spec) -> bool:
    """True for ``s3://``, ``gs://``, ``http(s)://`` and the other URL forms fsspec knows."""
    return protocol_of(spec) is not None


def parse_storage_options(text: str, where: str = "--storage-options") -> dict:
    """A JSON object of storage options, or a one-line :class:`ConfigError` naming ``where``."""
    try:
        value = json.loads(text)
    except ValueError as e:
        raise ConfigError(
            f"{where} is not valid JSON ({e.msg} at character {e.pos}): give an object such as "
            "'{\"endpoint_url\": \"http://host:9000\"}'"
        ) from None
    if not isinstance(value, dict):
        raise ConfigError(f"{where} must be a JSON object of keyword arguments, not {type(value).__name__}")
    return value


def resolve_storage_options(explicit=None) -> dict:
    """``explicit`` (a dict, or JSON text), else ``GPUDIFF_STORAGE_OPTIONS``, else ``{}``."""
    if explicit is None:
        text = os.environ.get(STORAGE_OPTIONS_ENV, "").strip()
        return parse_storage_options(text, STORAGE_OPTIONS_ENV) if text else {}
    if isinstance(explicit, str):
        return parse_storage_options(explicit)
    if not isinstance(explicit, dict):
        raise ConfigError(f"storage options must be a dict, not {type(explicit).__name__}")
    return dict(explicit)


def _for_protocol(proto: str, options: dict) -> dict:
    """The options of one protocol: its own entry when the object is keyed by protocol."""
    keyed = {k for k in options if k in REMOTE_PROTOCOLS and isinstance(options[k], dict)}
    if keyed:
        aliases = {"s3a": "s3", "gcs": "gs", "https": "http"}
        base = aliases.get(proto, proto)
        chosen = options.get(proto) or options.get(base)
        if chosen is None:  # "http" serves "https" and the other way round
            chosen = next((options[k] for k in keyed if aliases.get(k, k) == base), {})
        rest = {k: v for k, v in options.items() if k not in keyed}
        return {**rest, **chosen}
    return dict(options)


def _with_limits(proto: str, options: dict) -> dict:
    """Our bounded timeouts and retries under the user's options (theirs win)."""
    out = dict(options)
    if proto in ("s3", "s3a"):
        config = dict(out.get("config_kwargs") or {})
        config.setdefault("connect_timeout", _CONNECT_S)
        config.setdefault("read_timeout", _READ_S)
        config.setdefault("retries", {"max_attempts": _ATTEMPTS, "mode": "standard"})
        out["config_kwargs"] = config
        # s3fs asks for an object's size (a HEAD) before each whole-object read when it may split
        # large ones into concurrent ranges: a second round trip for every chunk and image object,
        # which doubles the latency of reading frame by frame. gpudiff's objects are chunks and
        # frames (MBs); its concurrency is requests in flight (--prefetch, zarr's async reads).
        out.setdefault("max_concurrency", 1)
    elif proto in ("http", "https"):
        import aiohttp  # noqa: PLC0415

        client = dict(out.get("client_kwargs") or {})
        client.setdefault("timeout", aiohttp.ClientTimeout(total=None, connect=_CONNECT_S, sock_read=_READ_S))
        out["client_kwargs"] = client
    return out


def _missing_extra(spec: str, proto: str, package: str) -> InputError:
    extra = "'gpudiff[remote]'" if package in ("s3fs", "aiohttp") else package
    return InputError(f"{spec}: reading {proto}:// needs {package}, which is not installed: pip install {extra}")


def filesystem_options(spec: str, storage_options=None) -> dict:
    """The keyword arguments fsspec gets for ``spec``: the protocol's options with gpudiff's limits.

    What :func:`get_filesystem` passes to fsspec, and what a Zarr ``FsspecStore.from_url`` takes as
    ``storage_options``. Raises the InputError naming ``gpudiff[remote]`` when the protocol's package
    is not installed.
    """
    proto = protocol_of(spec)
    if proto is None:
        raise ValueError(f"{spec!r} is not a URL")
    package = REMOTE_PROTOCOLS.get(proto)
    if package:
        try:
            __import__(package)
        except ImportError:
            raise _missing_extra(spec, proto, package) from None
    return _with_limits(proto, _for_protocol(proto, resolve_storage_options(storage_options)))


def get_filesystem(spec: str, storage_options=None):
    """``(fs, path)`` for a URL: the fsspec filesystem with gpudiff's limits, and the path in it.

    Raises
    ------
    InputError
        The protocol is unknown, or its package is not installed (naming ``gpudiff[remote]``).
    ConfigError
        Storage options that are not a JSON object, or that the filesystem does not take.
    """
    proto = protocol_of(spec)
    if proto is None:
        raise ValueError(f"{spec!r} is not a URL")
    try:
        import fsspec  # noqa: PLC0415
    except ImportError:
        raise _missing_extra(spec, proto, "fsspec") from None
    if proto not in REMOTE_PROTOCOLS:
        try:
            fsspec.get_filesystem_class(proto)
        except (ValueError, ImportError):
            known = ", ".join(p for p in REMOTE_PROTOCOLS if p != "memory")
            raise InputError(f"{spec}: unknown protocol {proto}:// (gpudiff reads {known}, and local paths)") from None
    options = filesystem_options(spec, storage_options)
    try:
        fs, path = fsspec.core.url_to_fs(spec, **options)
    except TypeError as e:
        raise ConfigError(f"{spec}: storage options not taken by {proto}:// ({e}): check --storage-options") from None
    except ImportError as e:
        package = REMOTE_PROTOCOLS.get(proto)
        raise _missing_extra(spec, proto, getattr(e, "name", None) or package or proto) from None
    return fs, path


def url_join(url: str, *parts: str) -> str:
    """``url`` with ``parts`` appended by ``/`` (no normalisation of the scheme or host)."""
    out = url.rstrip("/")
    for p in parts:
        p = str(p).strip("/")
        if p:
            out = f"{out}/{p}"
    return out


def url_parent(url: str) -> str:
    """The URL one level up (``s3://b/a/x.zarr`` -> ``s3://b/a``)."""
    proto = protocol_of(url)
    head, _, rest = url.partition("://")
    parent = posixpath.dirname(rest.rstrip("/"))
    return f"{head}://{parent}" if proto else posixpath.dirname(url)


def redacted(options: dict) -> dict:
    """Storage options safe to show: every key that may hold a secret replaced by ``"***"``."""
    out = {}
    for k, v in (options or {}).items():
        if isinstance(v, dict):
            out[k] = redacted(v)
        elif _SECRET_KEYS.search(str(k)) and k not in ("anon",):
            out[k] = "***"
        else:
            out[k] = v
    return out


# --------------------------------------------------------------------------------------------
# errors


def _codes(exc) -> set:
    """Error codes carried by a botocore ClientError (or its wrapper), upper case."""
    out = set()
    seen = 0
    while exc is not None and seen < 6:
        resp = getattr(exc, "response", None)
        if isinstance(resp, dict):
            code = (resp.get("Error") or {}).get("Code")
            if code:
                out.add(str(code).upper())
        status = getattr(exc, "status", None) or getattr(exc, "code", None)
        if isinstance(status, int):
            out.add(str(status))
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return out


def _chain_text(exc) -> str:
    parts = []
    seen = 0
    while exc is not None and seen < 6:
        parts.append(f"{type(exc).__name__}: {exc}")
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return " | ".join(parts)


def _first_line(exc) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 160 else text[:157] + "..."


_CLIENT_MODULES = (
    "aiohttp", "botocore", "aiobotocore", "s3fs", "fsspec", "gcsfs", "google", "requests", "urllib3",
)


def is_transport_error(exc: BaseException) -> bool:
    """True for what a storage client raises (OS and network errors, botocore/aiohttp errors), as
    opposed to a decoder's complaint about the bytes it was given."""
    if isinstance(exc, (OSError, ConnectionError, TimeoutError)):
        return True
    return any(type(e).__module__.split(".")[0] in _CLIENT_MODULES for e in type(exc).__mro__)


def remote_error(spec: str, exc: BaseException, doing: str = "reading") -> InputError:
    """One line for what went wrong ``doing`` something with ``spec``, and the fix."""
    if isinstance(exc, InputError):
        return exc
    codes = _codes(exc)
    text = _chain_text(exc).lower()
    refused = "connection refused" in text or "connect call failed" in text or "cannot connect" in text
    if refused or "could not connect to the endpoint" in text or "endpointconnectionerror" in text:
        # first: fsspec's HTTP filesystem reports a refused connection as FileNotFoundError
        return InputError(
            f"{spec}: cannot reach the endpoint while {doing} ({_first_line(exc)}): check endpoint_url "
            "in --storage-options and that the server is up"
        )
    if isinstance(exc, FileNotFoundError) or codes & {"NOSUCHKEY", "NOSUCHBUCKET", "404"} or "not found" in text:
        if "NOSUCHBUCKET" in codes or "nosuchbucket" in text or "bucket does not exist" in text:
            return InputError(f"{spec}: no such bucket while {doing}: check the URL (the bucket must exist)")
        return InputError(f"{spec}: no such object while {doing}: check the URL")
    if isinstance(exc, PermissionError) or codes & {
        "ACCESSDENIED", "INVALIDACCESSKEYID", "SIGNATUREDOESNOTMATCH", "403", "401", "EXPIREDTOKEN",
    } or "access denied" in text or "forbidden" in text:
        return InputError(
            f"{spec}: access denied while {doing}: check the credentials (AWS_ACCESS_KEY_ID / "
            "--storage-options key, secret) and the bucket policy"
        )
    if "timeout" in text or "timed out" in text:
        return InputError(
            f"{spec}: the server did not answer in time while {doing}: check the network, or raise the "
            "timeouts in --storage-options"
        )
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
        return InputError(f"{spec}: storage full while {doing}: free space and rerun")
    return InputError(f"{spec}: {doing} failed ({_first_line(exc)}): check the URL and --storage-options")


# --------------------------------------------------------------------------------------------
# identity


def object_fingerprint(info: dict) -> tuple:
    """``(size, version)`` of an object from ``fs.info``/``fs.ls(detail=True)``: its ETag (S3, GCS:
    md5 or generation), else last-modified; what a resume compares instead of a local mtime."""
    size = info.get("size")
    size = int(size) if isinstance(size, (int, float)) else None
    for key in ("ETag", "etag", "md5Hash", "generation", "VersionId"):
        v = info.get(key)
        if v:
            return size, str(v).strip('"')
    for key in ("LastModified", "last_modified", "mtime", "updated", "Last-Modified"):
        v = info.get(key)
        if v:
            return size, str(v.isoformat() if hasattr(v, "isoformat") else v)
    return size, None


def object_infos(fs, paths) -> list:
    """``fs.info`` of each path, concurrently where the filesystem is asynchronous (one HEAD per
    object on HTTP); an exception in place of the info of an object that cannot be asked about."""
    paths = list(paths)
    if not paths:
        return []
    if getattr(fs, "async_impl", False) and not getattr(fs, "asynchronous", False):
        import asyncio  # noqa: PLC0415

        from fsspec.asyn import sync  # noqa: PLC0415

        async def gather():
            limit = asyncio.Semaphore(32)

            async def one(p):
                async with limit:
                    return await fs._info(p)

            return await asyncio.gather(*(one(p) for p in paths), return_exceptions=True)

        return list(sync(fs.loop, gather))
    out = []
    for p in paths:
        try:
            out.append(fs.info(p))
        except Exception as exc:  # noqa: BLE001 - returned, the caller decides
            out.append(exc)
    return out
