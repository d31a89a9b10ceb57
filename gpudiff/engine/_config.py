"""What a store records about its making (time, versions, the run's config as JSON), and how a rerun's
config is compared with the stored one: the first difference, shown as the flag or key a person set.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from ..errors import ConfigError


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _jsonable(obj, what: str):
    """``obj`` as plain JSON types (tuples become lists, NumPy scalars plain numbers)."""

    def default(o):
        if isinstance(o, np.generic):
            return o.item()
        if isinstance(o, np.ndarray):
            return o.tolist()
        if isinstance(o, (Path, os.PathLike)):
            return os.fspath(o)
        if isinstance(o, (set, frozenset)):
            return sorted(o)
        raise TypeError(f"{type(o).__name__} is not JSON serialisable")

    try:
        return json.loads(json.dumps(obj, default=default, allow_nan=True))
    except (TypeError, ValueError) as e:
        raise ValueError(f"{what} must be JSON-able: {e}") from None


def _versions() -> dict:
    out = {"python": sys.version.split()[0]}
    for name in ("numpy", "zarr", "dask", "numcodecs", "scipy", "cupy"):
        mod = sys.modules.get(name)
        if mod is None and name != "cupy":  # never import cupy just to record its version
            with contextlib.suppress(Exception):
                mod = __import__(name)
        if mod is not None:
            out[name] = getattr(mod, "__version__", "?")
    return out


def _gpudiff_version() -> str:
    from .._version import __version__  # noqa: PLC0415

    return __version__


_FLAG_SECTIONS = ("options",)  # keys under these are CLI flags (--blur 1.5)
_MISSING = object()


def _first_difference(old, new, key=()):
    """(key path, old value, new value) of the first difference, or None."""
    if isinstance(old, dict) and isinstance(new, dict):
        for k in list(old) + [k for k in new if k not in old]:
            a, b = old.get(k, _MISSING), new.get(k, _MISSING)
            d = _first_difference(a, b, (*key, str(k)))
            if d is not None:
                return d
        return None
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        for i, (a, b) in enumerate(zip(old, new)):
            if isinstance(a, (dict, list)) and isinstance(b, (dict, list)):
                d = _first_difference(a, b, (*key, str(i)))
                if d is not None:
                    return d
            elif not _same(a, b):
                return key, old, new  # a list of plain values reads best whole
        return None
    if _same(old, new):
        return None
    return key, old, new


def _same(a, b) -> bool:
    if a is _MISSING or b is _MISSING:
        return a is b
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b


def _show(key, value) -> str:
    """One config entry for people: ``--blur 1.5`` for options, ``source.size = 123`` otherwise."""
    if key and key[0] in _FLAG_SECTIONS and len(key) >= 2:
        flag = "--" + key[1].replace("_", "-") + "".join(f"[{k}]" for k in key[2:])
        if value is _MISSING or value is None:
            return f"no {flag}"
        return f"{flag} {_plain(value)}"
    name = ".".join(key) or "config"
    if value is _MISSING:
        return f"no {name}"
    return f"{name} = {_plain(value)}"


def _plain(value) -> str:
    if isinstance(value, str):
        return value if value and " " not in value else json.dumps(value)
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list) and all(not isinstance(v, (dict, list)) for v in value):
        return ",".join(_plain(v) for v in value) if value else "[]"
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= 80 else text[:77] + "..."


def normal_source_spec(spec):
    """One spelling of a source: a local path absolute and normalised (``frames/``, ``./frames``
    and ``/abs/frames`` are one source); a URL (``s3://``, ``https://``) as written but for a
    trailing ``/``. Anything else is returned as is."""
    if not isinstance(spec, str) or not spec:
        return spec
    if "://" in spec:
        return spec.rstrip("/") or spec
    return os.path.normpath(os.path.abspath(spec))


def normal_source_key(config):
    """``config`` with its ``source.spec`` in :func:`normal_source_spec`'s spelling (a copy; the
    input is not changed)."""
    src = config.get("source") if isinstance(config, dict) else None
    if not isinstance(src, dict) or not isinstance(src.get("spec"), str):
        return config
    return {**config, "source": {**src, "spec": normal_source_spec(src["spec"])}}


def _config_mismatch(path, old, new) -> ConfigError | None:
    # a store made before specs were normalised records the source as it was typed: compare both
    # sides normalised, so `frames/`, `./frames` and the absolute path resume one another
    old, new = normal_source_key(old), normal_source_key(new)
    # a local glob's files by their names relative to the glob's folder, when both sides have them
    if isinstance(old, dict) and isinstance(new, dict) and "source" in old and "source" in new:
        from ..io._folder import same_source_fingerprints  # noqa: PLC0415

        a, b = same_source_fingerprints(old["source"], new["source"])
        old, new = {**old, "source": a}, {**new, "source": b}
    d = _first_difference(old, new)
    if d is None:
        return None
    key, a, b = d
    return ConfigError(
        f"{path} was made with {_show(key, a)} but this run asks {_show(key, b)}: use the same options "
        f"to resume, or --overwrite to start again"
    )
