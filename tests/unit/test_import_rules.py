"""The rules between the subpackages (docs/ARCHITECTURE.md), checked on every import statement in the
package, lazy ones inside functions included.

Layers, lowest first: a module may import its own layer and the ones below, never one above.
    0  errors, options, _version      the vocabulary (and two standard-library helpers: _sigterm,
       _numba_cache)
    1  backend                        the array namespace (numpy/cupy), kernels, the emulated GPU
    2  io                             sources: files, stacks, videos, manifests
    3  pair                           the pairwise maths
    4  sequence                       the maths over sequences, built on pair
    5  engine                         plan, Dask graph, runner, store
    6  report                         reads the store
    7  cli                            the command line
    8  gpudiff/__init__, __main__     the public face
Third-party rooms: only backend imports cupy/cupyx; only engine schedules (dask, distributed, dask_cuda);
only report draws (matplotlib).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "gpudiff"

LAYERS = {
    "errors": 0, "options": 0, "_version": 0, "_sigterm": 0, "_numba_cache": 0,
    "backend": 1, "io": 2, "pair": 3, "sequence": 4, "engine": 5, "report": 6, "cli": 7,
    "__init__": 8, "__main__": 8,
}
ONLY = {  # third-party top-level package -> the subpackages allowed to import it
    "cupy": {"backend"}, "cupyx": {"backend"},
    "dask": {"engine"}, "distributed": {"engine"}, "dask_cuda": {"engine"},
    "matplotlib": {"report"},
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_names(source: str, module: str, *, is_package: bool) -> list[tuple[int, str]]:
    """(line, absolute module name) for every import in ``source`` (relative imports resolved)."""
    package = module if is_package else module.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                if node.module:
                    out.append((node.lineno, ".".join([*base, node.module])))
                else:  # from . import x: x may be a module
                    out += [(node.lineno, ".".join([*base, a.name])) for a in node.names]
            else:
                out.append((node.lineno, node.module))
    return out


def _room(module: str) -> str:
    """The subpackage (or top-level module) of a gpudiff module name."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def violations(source: str, module: str, *, is_package: bool = False) -> list[str]:
    here = _room(module)
    bad = []
    for line, name in imported_names(source, module, is_package=is_package):
        root = name.split(".")[0]
        if root == "gpudiff":
            there = _room(name)
            if there != here and LAYERS[there] > LAYERS[here]:
                bad.append(f"{module}:{line} imports {name} (layer {there} {LAYERS[there]} > {here} {LAYERS[here]})")
        elif root in ONLY and here not in ONLY[root]:
            bad.append(f"{module}:{line} imports {name} (only {', '.join(sorted(ONLY[root]))} may)")
    return bad


def _package_files():
    return sorted(p for p in PACKAGE.rglob("*.py"))


def test_every_room_of_the_package_has_a_layer():
    rooms = {_room(_module_name(p)) for p in _package_files()}
    assert rooms <= set(LAYERS), rooms - set(LAYERS)
    assert {"backend", "io", "pair", "sequence", "engine", "report", "cli"} <= rooms


def test_no_module_imports_a_higher_layer_or_a_library_outside_its_room():
    bad = []
    for path in _package_files():
        bad += violations(path.read_text(encoding="utf-8"), _module_name(path), is_package=path.name == "__init__.py")
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize(
    ("source", "module", "expected"),
    [
        ("from ..engine._store import ResultStore", "gpudiff.pair._compare", "layer engine 5 > pair 3"),
        ("def f():\n    from ..report import build_report\n", "gpudiff.sequence._flow", "layer report 6 > sequence 4"),
        ("from ..pair import compare", "gpudiff.io._tiff", "layer pair 3 > io 2"),
        ("import cupy as cp", "gpudiff.pair._sums_cuda", "only backend may"),
        ("def f():\n    import cupyx.scipy.ndimage\n", "gpudiff.sequence._background", "only backend may"),
        ("import dask", "gpudiff.sequence._dedup", "only engine may"),
        ("from gpudiff.cli import main", "gpudiff.engine._runner", "layer cli 7 > engine 5"),
    ],
)
def test_the_checker_catches_each_kind_of_violation(source, module, expected):
    found = violations(source, module)
    assert len(found) == 1 and expected in found[0], found


@pytest.mark.parametrize(
    ("source", "module"),
    [
        ("from ..engine._store import ResultStore", "gpudiff.report._build"),  # the report reads the store
        ("from ..pair._histograms import kl_divergence", "gpudiff.sequence._corrupt"),
        ("from ._namespace import xp\nimport cupy", "gpudiff.backend._kernels"),
        ("import dask.array as da", "gpudiff.engine._runner"),
        ("from .errors import InputError", "gpudiff.options"),
    ],
)
def test_the_checker_allows_what_the_rules_allow(source, module):
    assert violations(source, module) == []


def test_relative_imports_resolve_like_python():
    names = [n for _, n in imported_names("from ..pair._align import x\nfrom . import _a\nfrom .b import c\n",
                                          "gpudiff.sequence._flow", is_package=False)]
    assert names == ["gpudiff.pair._align", "gpudiff.sequence._a", "gpudiff.sequence.b"]
    names = [n for _, n in imported_names("from ._io import x\n", "gpudiff.report", is_package=True)]
    assert names == ["gpudiff.report._io"]
