"""The installed CuPy as the oracle of names and keywords: what the emulated GPU lets the code reach.

CuPy imports on machines without a GPU, so its names and signatures are checked here; without it,
nothing is checked. :data:`used_names` records every CuPy name the package reached.
"""

from __future__ import annotations

import functools
import inspect

import numpy as _np



@functools.lru_cache(maxsize=1)
def _real():
    try:
        import cupy  # noqa: PLC0415
        import cupyx.scipy.fft  # noqa: F401, PLC0415
        import cupyx.scipy.ndimage  # noqa: F401, PLC0415

        return cupy
    except Exception:  # noqa: BLE001 - not installed: no oracle, no check
        return None


@functools.lru_cache(maxsize=None)
def _real_params(path: str):
    """Keyword names the real CuPy callable at ``path`` takes (None: not checkable / any)."""
    cp = _real()
    if cp is None:
        return None
    obj = _resolve(path)
    if obj is _MISSING:
        return _MISSING
    if type(obj).__name__ == "ufunc":
        return frozenset({"out", "dtype", "casting"})
    try:
        sig = inspect.signature(obj)
    except (TypeError, ValueError):
        return None
    if any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values()):
        return None
    return frozenset(p.name for p in sig.parameters.values() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY))


_MISSING = object()


def _resolve(path: str):
    """The real CuPy object at a dotted path ('cupy.sum', 'cupyx.scipy.fft.rfft2'), or _MISSING."""
    import sys  # noqa: PLC0415

    head, _, rest = path.partition(".")
    obj = sys.modules.get(head)
    if obj is None:
        return _MISSING
    for part in rest.split(".") if rest else ():
        obj = getattr(obj, part, _MISSING)
        if obj is _MISSING:
            return _MISSING
    return obj


def _check_call(path: str, kwargs) -> None:
    params = _real_params(path)
    if params is _MISSING:
        raise AttributeError(f"CuPy has no {path}: the GPU path would fail here")
    if params is not None:
        bad = [k for k in kwargs if k not in params]
        if bad:
            raise TypeError(f"{path}() got an unexpected keyword argument {bad[0]!r} (not in CuPy's signature)")


def _check_name(path: str) -> None:
    cp = _real()
    if cp is not None and _resolve(path) is _MISSING:
        raise AttributeError(f"CuPy has no {path}: the GPU path would fail here")


#: every CuPy name the package reached on this device (for tests and the API report)
used_names: set[str] = set()


@functools.lru_cache(maxsize=1)
def _ufunc_names():
    cp = _real()
    names = {n for n in dir(_np) if isinstance(getattr(_np, n), _np.ufunc)}
    if cp is not None:
        names = {n for n in names if hasattr(cp, n)}
    return frozenset(getattr(_np, n).__name__ for n in names)
