"""Where numba keeps the compiled CPU kernels, and what happens when it cannot keep them.

The kernels are ``njit(cache=True)``: numba looks for a writable cache directory at decoration time
(``NUMBA_CACHE_DIR``, the package's ``__pycache__``, then the user-wide ``~/.cache/numba``) and raises
``RuntimeError: cannot cache function ...: no locator available`` when there is none: a shared
install read-only to its users, or a container run as another user with an unwritable ``$HOME``.
That would make every command fail at import. So:

- :func:`prepare_cache_dir` (called before ``import numba``): when ``NUMBA_CACHE_DIR`` is unset and
  neither default place is writable, it points ``NUMBA_CACHE_DIR`` at
  ``<tempdir>/gpudiff-numba-<uid>`` (kernels are then cached per machine and user);
- :func:`cached_njit` decorates with ``cache=True`` and, if numba still finds no cache locator,
  compiles without a cache (each process then compiles on first use: slower start, same results).
"""

from __future__ import annotations

import os
import sys
import tempfile

__all__ = ["prepare_cache_dir", "cached_njit", "fallback_cache_dir"]

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


def _writable_dir(path: str) -> bool:
    """True when ``path`` is (or could be created as) a directory this process can write."""
    path = os.path.abspath(path)
    while not os.path.isdir(path):
        parent = os.path.dirname(path)
        if parent == path or (os.path.exists(path) and not os.path.isdir(path)):
            return False
        path = parent
    return os.access(path, os.W_OK | os.X_OK)


def _user_cache_dir() -> str:
    """numba's user-wide cache directory (``appdirs.user_cache_dir('numba')`` on Linux and macOS)."""
    if sys.platform == "darwin":
        return os.path.expanduser("~/Library/Caches/numba")
    base = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    return os.path.join(base, "numba")


def fallback_cache_dir() -> str:
    """``<tempdir>/gpudiff-numba-<uid>``: the cache when the default places are not writable."""
    uid = os.getuid() if hasattr(os, "getuid") else os.environ.get("USERNAME", "user")
    return os.path.join(tempfile.gettempdir(), f"gpudiff-numba-{uid}")


def prepare_cache_dir() -> str | None:
    """Set ``NUMBA_CACHE_DIR`` to :func:`fallback_cache_dir` when it is unset and neither the
    package's ``__pycache__`` folders nor the user-wide cache are writable; returns the directory
    set, or None (numba's own choice stands). Call before numba reads its configuration; if numba
    is already imported, its ``config.CACHE_DIR`` is set too."""
    if os.environ.get("NUMBA_CACHE_DIR"):
        return None
    in_tree = os.path.join(_PACKAGE_DIR, "pair", "__pycache__")  # where the cached kernels live
    if _writable_dir(in_tree) or _writable_dir(_user_cache_dir()):
        return None
    path = fallback_cache_dir()
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
    except OSError:
        return None  # not even the temporary directory: cached_njit compiles without a cache
    if not _writable_dir(path):
        return None
    os.environ["NUMBA_CACHE_DIR"] = path
    config = sys.modules.get("numba.core.config")
    if config is not None:
        config.CACHE_DIR = path
    return path


def cached_njit(**options):
    """``numba.njit(cache=True, **options)`` as a decorator, falling back to ``numba.njit(**options)``
    (no disk cache) when numba finds no writable place for the cache."""
    import numba  # noqa: PLC0415 - only called where numba imported

    def decorate(func):
        try:
            return numba.njit(cache=True, **options)(func)
        except RuntimeError as exc:
            if "cannot cache" not in str(exc):
                raise
            return numba.njit(**options)(func)

    return decorate
