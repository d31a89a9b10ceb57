"""The CuPy API the package uses, checked against the real CuPy.

CuPy 14 imports without a GPU (only allocating device memory fails), so the installed package
(the ``gpu-api`` extra) is the oracle. The package's source is read with :mod:`ast` and every
attribute reached on the CuPy side of the seam is collected:

* ``xp.NAME[.SUB...]`` (``xp``, ``cp`` and ``<obj>.xp`` hold numpy or cupy), ``cupy.*``,
  ``cupyx.*`` and modules imported from them (``import cupyx.scipy.ndimage as ndi``);
* names on the results of ``_backend.ndimage(xp)`` / ``_backend.fft(xp)`` (``cupyx.scipy.*``),
  followed through local assignments (``ndi = ndimage(xp)``, ``f = _backend.fft(xp)``,
  ``nfl = getattr(f, "next_fast_len", None)``) in each function;
* such names passed to the module's own functions (``_pyramid(ref, shapes, ndi, xp)``: the
  parameter ``ndi`` of ``_pyramid`` is then an alias too);
* attributes and methods of CuPy objects: of a class's instance (``dev = xp.cuda.Device(0);
  dev.id``; ``kernel = _kernels.get_function(...)`` is a ``cupy.RawKernel``), of the ndarray an
  array routine returns (``xp.abs(d).sum(axis=1)``: ``cupy.ndarray.sum``), and the literal keys of
  ``Device().attributes[...]``. Arrays that arrive as parameters are not typed, so their methods
  are not checked here (the emulated GPU runs them).

Each must resolve on the installed cupy/cupyx, and each call's keywords (and positional count,
where the signature says) must fit the callee: ``inspect.signature`` for Python functions, the
signature Cython embeds in the docstring for compiled ones, and CuPy's ufunc rules for ufuncs.

Branches that only run on NumPy (``if xp is np``, ``if not is_cupy(xp)``, a flag assigned from
such a test, ``else`` of ``if is_cupy(xp)`` ...) and on the emulated GPU (``if is_emulated(xp)``)
are skipped, and so are numba-compiled functions; the NumPy-only uses the AST cannot see go in
ALLOWED with their reason, and an entry that matches nothing fails (the list cannot rot).

``python tests/unit/backend/test_cupy_api.py`` prints the collected surface for review.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib
import inspect
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

cupy = pytest.importorskip("cupy", reason="needs the real CuPy package: pip install 'gpudiff[gpu-api]'")
import cupyx
import cupyx.scipy.fft
import cupyx.scipy.ndimage  # noqa: F401

PACKAGE = Path(__file__).resolve().parents[3] / "gpudiff"

#: Files that are not users of the CuPy API but stand-ins for it (they define the surface).
SKIP_DIRS = ("backend/_emulated/", "backend/_cuda_emu/")

#: (file relative to gpudiff/, dotted name) -> "file.py:LINE: why a name CuPy lacks is fine there"
#: (a NumPy-only use the guard detection misses). Each entry must match a collected use, else
#: test_allow_list_entries_are_used fails. Empty: every NumPy-only branch today is one the
#: collector recognises (see Collector.guard); `python tests/unit/backend/test_cupy_api.py` lists them.
ALLOWED: dict[tuple[str, str], str] = {}

#: Names that hold numpy or cupy wherever they appear.
NAMESPACE_NAMES = {"xp": "cupy", "cp": "cupy"}
#: ``_backend`` functions: the namespace itself, or cupyx.scipy modules.
NAMESPACE_FACTORIES = {"resolve_backend": "cupy", "get_namespace": "cupy"}
MODULE_FACTORIES = {"ndimage": "cupyx.scipy.ndimage", "fft": "cupyx.scipy.fft"}
#: gpudiff functions returning a CuPy object (their docstrings say so): (module alias, name).
RETURNS = {("_kernels", "get_function"): "cupy.RawKernel()", ("_kernels", "get_module"): "cupy.RawModule()"}
#: ``_backend`` functions returning keyword dicts for CuPy calls (``f.rfft2(a, **fft_kwargs(xp))``):
#: expanded by calling the real one with the cupy module.
KWARG_FACTORIES = {"fft_kwargs"}
#: results of compiled CuPy functions whose docstring names their type
RESULT_TYPES = {"cupy.cuda.get_current_stream": "cupy.cuda.Stream"}
#: dicts CuPy documents the keys of: name -> (is the key valid, what the keys are)
KEYED = {
    # cupy/cuda/device.pyx Device.attributes: the cudaDevAttr* names of cupy.cuda.runtime, trimmed
    "cupy.cuda.Device().attributes": (lambda k: hasattr(cupy.cuda.runtime, "cudaDevAttr" + k),
                                      "a cudaDevAttr* name without the prefix"),
}
NUMBA_DECORATORS = {"njit", "jit", "vectorize", "guvectorize", "stencil", "cfunc"}

#: CuPy's ``ufunc.__call__`` (cupy/_core/_kernel.pyx) pops exactly these keywords (plus the
#: private ``_where``) and raises TypeError('Wrong arguments ...') for any other, e.g. NumPy's
#: ``where=``, ``order=``, ``subok=``; it takes nin to nin + nout positional arguments.
UFUNC_CALL_KWARGS = frozenset({"out", "dtype", "casting"})


# --------------------------------------------------------------------------------------------------
# collecting


@dataclass(frozen=True)
class Use:
    file: str  # relative to gpudiff/
    line: int
    name: str  # dotted, "()" marks the result of a call: "cupy.cuda.Device().id"
    call: bool = False
    nargs: int = 0  # positional arguments (without *starred)
    kwargs: tuple[str, ...] = ()
    star: bool = False  # *args in the call
    dstar: bool = False  # **kwargs in the call
    optional: bool = False  # getattr(x, "name", default) / hasattr: absence is handled
    kw_factories: tuple[str, ...] = ()  # **_backend.fft_kwargs(xp): expanded at check time
    key: str | None = None  # a literal subscript of the name: Device().attributes["..."]

    def where(self) -> str:
        return f"gpudiff/{self.file}:{self.line}"


def _guard_flip(g):
    return {"numpy": "device", "device": "numpy"}.get(g)


class Collector(ast.NodeVisitor):
    """The CuPy-side uses in one module's source."""

    def __init__(self, rel: str, source: str, param_aliases: dict | None = None):
        self.rel = rel
        self.tree = ast.parse(source)
        self.uses: list[Use] = []
        # CuPy-side values passed to this module's own functions: {function: {parameter: dotted}},
        # filled by the call sites (``_pyramid(ref, shapes, ndi, xp)``); see collect()
        self.param_aliases: dict[str, dict[str, str]] = param_aliases or {}
        self.found_params: dict[str, dict[str, str]] = {}
        self.local_defs: dict[str, list[ast.arguments]] = {}
        for node in ast.walk(self.tree):
            for child in ast.iter_child_nodes(node):
                child._parent = node  # type: ignore[attr-defined]
        # module-level bindings: how _backend and its functions are reached here
        self.backend_mods = {"_backend"}
        self.factories: dict[str, str] = {}  # local function name -> module ("ndimage" -> cupyx...)
        self.ns_factories: set[str] = set()
        self.kw_factories: set[str] = set()
        self.gpudiff_mods = {"_kernels"}
        for node in ast.walk(self.tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                self.local_defs.setdefault(node.name, []).append(node.args)
            if isinstance(node, ast.ImportFrom):
                mod = node.module or ""
                for a in node.names:
                    local = a.asname or a.name
                    if mod.split(".")[-1] in ("backend", "_namespace"):
                        if a.name in MODULE_FACTORIES:
                            self.factories[local] = MODULE_FACTORIES[a.name]
                        elif a.name in NAMESPACE_FACTORIES:
                            self.ns_factories.add(local)
                        elif a.name in KWARG_FACTORIES:
                            self.kw_factories.add(local)
                    elif a.name in ("backend", "_namespace"):
                        self.backend_mods.add(local)
        if rel == "backend/_namespace.py":  # its own ndimage()/fft()/resolve_backend()
            self.factories.update(MODULE_FACTORIES)
            self.ns_factories.update(NAMESPACE_FACTORIES)
            self.kw_factories.update(KWARG_FACTORIES)
        self.scopes: list[dict[str, str]] = [dict(NAMESPACE_NAMES)]
        self.guards: list[dict[str, str]] = [{}]
        self.kw_sources: list[set[str]] = [set()]  # names holding _backend.fft_kwargs(xp)
        self.skipped: list[tuple[int, str]] = []  # (line, guard) of the branches not collected

    def run(self) -> list[Use]:
        self.visit(self.tree)
        return self.uses

    # -- scopes --------------------------------------------------------------------------------

    def _function(self, node):
        for d in node.decorator_list:
            f = d.func if isinstance(d, ast.Call) else d
            name = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else ""
            if name in NUMBA_DECORATORS:
                self.skipped.append((node.lineno, "numba"))
                return  # numba-compiled: NumPy arrays only
        for d in node.decorator_list:
            self.visit(d)
        for default in [*node.args.defaults, *node.args.kw_defaults]:
            if default is not None:
                self.visit(default)
        self.scopes.append(dict(self.scopes[-1]))
        self.guards.append(dict(self.guards[-1]))
        self.kw_sources.append(set(self.kw_sources[-1]))
        self.scopes[-1].update(self.param_aliases.get(node.name, {}))
        for stmt in node.body:
            self.visit(stmt)
        self.scopes.pop()
        self.guards.pop()
        self.kw_sources.pop()

    visit_FunctionDef = visit_AsyncFunctionDef = _function

    def visit_Lambda(self, node):
        self.visit(node.body)

    # -- imports -------------------------------------------------------------------------------

    def visit_Import(self, node):
        for a in node.names:
            top = a.name.split(".")[0]
            if top not in ("cupy", "cupyx"):
                continue
            self.uses.append(Use(self.rel, node.lineno, a.name))
            if a.asname:
                self.scopes[-1][a.asname] = a.name
            else:
                self.scopes[-1][top] = top

    def visit_ImportFrom(self, node):
        mod = node.module or ""
        if node.level or mod.split(".")[0] not in ("cupy", "cupyx"):
            return
        for a in node.names:
            full = f"{mod}.{a.name}"
            self.uses.append(Use(self.rel, node.lineno, full))
            self.scopes[-1][a.asname or a.name] = full

    # -- branches that only run on NumPy (or only on the emulated GPU) ---------------------------

    def _is_ns(self, node) -> bool:
        return self.dotted(node) == "cupy"

    def guard(self, test) -> str | None:
        """'numpy' / 'device' / 'emulated' when ``test`` is true only there, else None."""
        if isinstance(test, ast.Compare) and len(test.ops) == 1:
            left, right = test.left, test.comparators[0]
            is_np = lambda n: isinstance(n, ast.Name) and n.id in ("np", "numpy")
            if (self._is_ns(left) and is_np(right)) or (is_np(left) and self._is_ns(right)):
                if isinstance(test.ops[0], ast.Is):
                    return "numpy"
                if isinstance(test.ops[0], ast.IsNot):
                    return "device"
            return None
        if isinstance(test, ast.UnaryOp) and isinstance(test.op, ast.Not):
            return _guard_flip(self.guard(test.operand))
        if isinstance(test, ast.BoolOp):
            gs = [self.guard(v) for v in test.values]
            if isinstance(test.op, ast.And):
                for g in ("numpy", "emulated", "device"):
                    if g in gs:
                        return g
                return None
            return gs[0] if len(set(gs)) == 1 else None
        if isinstance(test, ast.Call) and test.args:
            f = test.func
            name = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else ""
            if self._is_ns(test.args[0]):
                if name == "is_cupy":
                    return "device"
                if name == "is_emulated":
                    return "emulated"
            return None
        if isinstance(test, ast.Name):
            return self.guards[-1].get(test.id)
        return None

    def _branches(self, test, body, orelse, has_else=True):
        g = self.guard(test)
        self.visit(test)
        if g not in ("numpy", "emulated"):
            body()
        else:
            self.skipped.append((test.lineno, g))
        if g != "device":
            orelse()
        elif has_else:
            self.skipped.append((test.lineno, "numpy (else)"))

    def visit_If(self, node):
        self._branches(node.test, lambda: [self.visit(s) for s in node.body],
                       lambda: [self.visit(s) for s in node.orelse], bool(node.orelse))

    def visit_IfExp(self, node):
        self._branches(node.test, lambda: self.visit(node.body), lambda: self.visit(node.orelse))

    # -- names bound to CuPy things --------------------------------------------------------------

    def _bind(self, target, value):
        if isinstance(target, (ast.Tuple, ast.List)) and isinstance(value, (ast.Tuple, ast.List)) \
                and len(target.elts) == len(value.elts):
            for t, v in zip(target.elts, value.elts, strict=True):
                self._bind(t, v)
            return
        if not isinstance(target, ast.Name):
            return
        d = self.dotted(value)
        if d is not None:
            # module/function bindings accumulate (a fallback rebinding in some branch leaves the
            # CuPy one possible: ``nfl = getattr(f, ...); if nfl is None: from scipy... import``)
            self.scopes[-1][target.id] = d
        elif isinstance(value, ast.Name) and value.id in ("np", "numpy"):
            self.scopes[-1].pop(target.id, None)  # `xp = np`: NumPy from here on in this scope
        elif "()" in self.scopes[-1].get(target.id, "") or target.id in self.kw_sources[-1]:
            # a CuPy object's name rebound to something else: stop typing it as that object
            self.scopes[-1].pop(target.id, None)
            self.kw_sources[-1].discard(target.id)
        if self._is_kw_source(value):
            self.kw_sources[-1].add(target.id)
        g = self.guard(value)
        if g is not None:
            self.guards[-1][target.id] = g
        else:
            self.guards[-1].pop(target.id, None)

    def visit_Assign(self, node):
        self.visit(node.value)
        for t in node.targets:
            self._bind(t, node.value)

    def visit_AnnAssign(self, node):
        if node.value is not None:
            self.visit(node.value)
            self._bind(node.target, node.value)

    def visit_withitem(self, node):
        self.visit(node.context_expr)
        if node.optional_vars is not None:
            d = self.dotted(node.context_expr)
            if d is not None and d.endswith("()") and isinstance(node.optional_vars, ast.Name):
                self.scopes[-1][node.optional_vars.id] = d  # CuPy's context managers return self

    def _is_kw_source(self, node) -> bool:
        """``_backend.fft_kwargs(xp)`` (or the imported name): keywords CuPy calls get splatted."""
        if isinstance(node, ast.Name):
            return node.id in self.kw_sources[-1]
        if not isinstance(node, ast.Call):
            return False
        f = node.func
        if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) and f.value.id in self.backend_mods:
            return f.attr in KWARG_FACTORIES
        return isinstance(f, ast.Name) and f.id in self.kw_factories

    def dotted(self, node) -> str | None:
        """The CuPy-side dotted name an expression denotes, or None."""
        if isinstance(node, ast.Name):
            return self.scopes[-1].get(node.id)
        if isinstance(node, ast.Attribute):
            base = self.dotted(node.value)
            if base is not None:
                return f"{base}.{node.attr}"
            if node.attr == "xp":  # self.xp, state.xp: the namespace
                return "cupy"
            return None
        if isinstance(node, ast.Call):
            f = node.func
            fname = f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else None
            owner = f.value.id if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) else None
            if isinstance(f, ast.Name) and fname in self.factories:
                return self.factories[fname]
            if isinstance(f, ast.Name) and fname in self.ns_factories:
                return "cupy"
            if owner in self.backend_mods and fname in MODULE_FACTORIES:
                return MODULE_FACTORIES[fname]
            if owner in self.backend_mods and fname in NAMESPACE_FACTORIES:
                return "cupy"
            if owner in self.gpudiff_mods and (owner, fname) in RETURNS:
                return RETURNS[(owner, fname)]
            if isinstance(f, ast.Name) and (Path(self.rel).stem, fname) in RETURNS:
                return RETURNS[(Path(self.rel).stem, fname)]  # called inside its module
            if fname == "getattr" and isinstance(f, ast.Name) and len(node.args) >= 2:
                base = self.dotted(node.args[0])
                lit = node.args[1]
                if base is not None and isinstance(lit, ast.Constant) and isinstance(lit.value, str):
                    return f"{base}.{lit.value}"
                return None
            base = self.dotted(f)
            return f"{base}()" if base is not None else None
        return None

    # -- uses ------------------------------------------------------------------------------------

    def visit_Call(self, node):
        f = node.func
        if isinstance(f, ast.Name) and f.id in ("getattr", "hasattr") and len(node.args) >= 2:
            base = self.dotted(node.args[0])
            lit = node.args[1]
            if base is not None and isinstance(lit, ast.Constant) and isinstance(lit.value, str):
                optional = f.id == "hasattr" or len(node.args) > 2
                self.uses.append(Use(self.rel, node.lineno, f"{base}.{lit.value}", optional=optional))
        if isinstance(f, ast.Name) and f.id in self.local_defs and f.id not in self.scopes[-1]:
            self._pass_to_local(f.id, node)
        d = self.dotted(f)
        if d is not None and d.split(".")[0] in ("cupy", "cupyx"):
            self.uses.append(Use(
                self.rel, node.lineno, d, call=True,
                nargs=sum(not isinstance(a, ast.Starred) for a in node.args),
                kwargs=tuple(k.arg for k in node.keywords if k.arg is not None),
                star=any(isinstance(a, ast.Starred) for a in node.args),
                dstar=any(k.arg is None and not self._is_kw_source(k.value) for k in node.keywords),
                kw_factories=("fft_kwargs",) * any(k.arg is None and self._is_kw_source(k.value)
                                                   for k in node.keywords),
            ))
        self.generic_visit(node)

    def _pass_to_local(self, fname: str, node: ast.Call):
        """Note the CuPy-side arguments of a call to a function of this module."""
        for args in self.local_defs[fname]:
            positional = [a.arg for a in [*args.posonlyargs, *args.args]]
            named = {a.arg for a in [*args.args, *args.kwonlyargs]}
            bound = self.found_params.setdefault(fname, {})
            for i, a in enumerate(node.args):
                if isinstance(a, ast.Starred):
                    break
                d = self.dotted(a)
                if d is not None and i < len(positional):
                    bound.setdefault(positional[i], d)
            for k in node.keywords:
                d = self.dotted(k.value) if k.arg in named else None
                if d is not None:
                    bound.setdefault(k.arg, d)

    def visit_Subscript(self, node):
        d = self.dotted(node.value)
        k = node.slice
        if d in KEYED and isinstance(k, ast.Constant) and isinstance(k.value, str):
            self.uses.append(Use(self.rel, node.lineno, d, key=k.value))
        self.generic_visit(node)

    def visit_Attribute(self, node):
        parent = getattr(node, "_parent", None)
        inner = (isinstance(parent, ast.Attribute) and parent.value is node) or \
                (isinstance(parent, ast.Call) and parent.func is node)
        if not inner and isinstance(node.ctx, ast.Load):
            d = self.dotted(node)
            if d is not None and d != "cupy":
                self.uses.append(Use(self.rel, node.lineno, d))
        self.generic_visit(node)


def collect(source: str, rel: str = "<src>.py") -> list[Use]:
    """The uses in one module; CuPy-side values passed to its own functions are followed into
    them (re-collecting until no new parameter binding appears)."""
    params: dict[str, dict[str, str]] = {}
    for _ in range(8):
        c = Collector(rel, source, params)
        uses = c.run()
        found = {f: {**params.get(f, {}), **b} for f, b in c.found_params.items() if b}
        found = {**params, **found}
        if found == params:
            return uses
        params = found
    raise AssertionError(f"{rel}: parameter bindings do not settle: {params}")  # pragma: no cover


def package_files() -> list[tuple[str, Path]]:
    out = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).as_posix()
        if not rel.startswith(SKIP_DIRS):
            out.append((rel, path))
    return out


def guarded_branches() -> list[str]:
    """The branches and functions the collector leaves out, for review: 'file:line: guard'."""
    out = []
    for rel, path in package_files():
        c = Collector(rel, path.read_text(encoding="utf-8"))
        c.run()
        out += [f"{rel}:{line}: {g}" for line, g in c.skipped]
    return out


def collect_package() -> list[Use]:
    uses: list[Use] = []
    for rel, path in package_files():
        uses += collect(path.read_text(encoding="utf-8"), rel)
    return uses


# --------------------------------------------------------------------------------------------------
# resolving and checking


class Unknown(Exception):
    """The name goes through a value whose type is not known statically (a method's result, a
    property's value, a function that may return a tuple)."""


#: cupy functions whose result is not (always) one ndarray.
NOT_ARRAY_RESULTS = frozenset({
    "nonzero", "unique", "gradient", "where", "meshgrid", "histogram", "histogram2d", "histogramdd",
    "broadcast_arrays", "split", "array_split", "hsplit", "vsplit", "dsplit", "unravel_index",
    "indices", "ix_", "divmod", "modf", "frexp", "atleast_1d", "atleast_2d", "atleast_3d",
    "shape", "ndim", "size", "isscalar", "result_type", "can_cast", "get_array_module",
    "asnumpy", "allclose", "array_equal", "array_equiv", "iscomplexobj", "isrealobj",
})


def _returns_ndarray(obj) -> bool:
    """A cupy/cupyx.scipy callable whose result is a cupy.ndarray (ufuncs and array routines)."""
    if isinstance(obj, cupy._core._kernel.ufunc):
        return True
    mod = getattr(obj, "__module__", "") or ""
    name = getattr(obj, "__name__", "")
    return (inspect.isfunction(obj) and name not in NOT_ARRAY_RESULTS
            and mod.startswith(("cupy._", "cupyx.scipy.")))


def resolve(dotted: str):
    """(object, kind) for a dotted name on the installed cupy/cupyx; kind is 'plain' (a module,
    function, class...), 'instance' (an object of the class ``object``) or 'method' (``object``
    as found on a class: a method taking ``self``).

    ``X()`` in a name is the result of calling X: an instance when X is a class, a cupy.ndarray
    when X is an array routine (:func:`_returns_ndarray`), else not followed (Unknown). Attributes
    of instances are looked up on their class; a property's value is not followed.
    Raises AttributeError(prefix, missing) for the first missing part.
    """
    parts = dotted.split(".")
    obj = importlib.import_module(parts[0])
    kind = "plain"
    done = [parts[0]]
    for p in parts[1:]:
        called = p.endswith("()")
        p = p.removesuffix("()")
        if p:
            if kind == "opaque":
                raise Unknown(dotted)
            if kind == "instance":
                cls = obj
                if not hasattr(cls, p):
                    raise AttributeError(".".join(done).removesuffix("()") + "()", p)
                obj = inspect.getattr_static(cls, p)
                if isinstance(obj, (staticmethod, classmethod)):
                    obj, kind = getattr(cls, p), "plain"
                elif inspect.isroutine(obj) or inspect.ismethoddescriptor(obj) and callable(obj):
                    kind = "method"
                else:
                    kind = "opaque"  # a property / data descriptor: its value's type is unknown
            elif kind == "method":
                raise Unknown(dotted)
            else:
                try:
                    obj = getattr(obj, p)
                except AttributeError:
                    if not inspect.ismodule(obj):
                        raise AttributeError(".".join(done), p) from None
                    try:
                        obj = importlib.import_module(f"{obj.__name__}.{p}")
                    except ImportError:
                        raise AttributeError(".".join(done), p) from None
            done.append(p)
        if called:
            if kind == "plain" and isinstance(obj, type):
                kind = "instance"
            elif kind == "plain" and _returns_ndarray(obj):
                obj, kind = cupy.ndarray, "instance"
            elif kind == "plain" and ".".join(done) in RESULT_TYPES:
                obj, kind = resolve(RESULT_TYPES[".".join(done)])[0], "instance"
            else:
                raise Unknown(dotted)
            done[-1] += "()"
    return obj, kind


@dataclass
class Sig:
    """What a callee accepts."""

    positional: list[tuple[str, bool]] = field(default_factory=list)  # (name, has default)
    posonly: int = 0  # the first `posonly` of positional cannot be keywords
    kwonly: list[tuple[str, bool]] = field(default_factory=list)
    var_pos: bool = False
    var_kw: bool = False
    min_pos: int | None = None  # ufuncs: nin
    source: str = ""

    @classmethod
    def from_inspect(cls, s: inspect.Signature, drop_self: bool = False) -> Sig:
        out = cls(source="inspect.signature")
        params = list(s.parameters.values())
        if drop_self and params and params[0].kind in (params[0].POSITIONAL_ONLY, params[0].POSITIONAL_OR_KEYWORD):
            params = params[1:]
        for p in params:
            default = p.default is not p.empty
            if p.kind is p.POSITIONAL_ONLY:
                out.positional.append((p.name, default))
                out.posonly += 1
            elif p.kind is p.POSITIONAL_OR_KEYWORD:
                out.positional.append((p.name, default))
            elif p.kind is p.VAR_POSITIONAL:
                out.var_pos = True
            elif p.kind is p.KEYWORD_ONLY:
                out.kwonly.append((p.name, default))
            else:
                out.var_kw = True
        return out


_DOC_SIG = re.compile(r"^\s*([A-Za-z_][\w.]*)\((.*)\)\s*(->.*)?$")


def _split_params(text: str) -> list[str]:
    out, depth, cur, quote = [], 0, "", None
    for ch in text:
        if quote:
            cur += ch
            if ch == quote:
                quote = None
            continue
        if ch in "'\"":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch == "," and depth == 0:
            out.append(cur.strip())
            cur = ""
            continue
        cur += ch
    if cur.strip():
        out.append(cur.strip())
    return out


def sig_from_doc(obj) -> Sig | None:
    """The signature Cython embeds as the docstring's first line(s): ``f(int a, *, str b=None)``.

    Where several lines are embedded (a generic one, then the real one), the one without
    ``**kwargs`` wins.
    """
    doc = inspect.getdoc(obj) or ""
    cands = []
    for line in doc.splitlines():
        if not line.strip():
            if cands:
                break
            continue
        m = _DOC_SIG.match(line.replace("\\*", "*"))
        if not m:
            break
        cands.append(m.group(2))
    if not cands:
        return None
    cands.sort(key=lambda c: "**" in c)
    out = Sig(source="docstring")
    kwonly = False
    params = _split_params(cands[0])
    if params and params[0].split("=")[0].split()[-1] == "self":
        params = params[1:]
    for p in params:
        if p == "/":
            out.posonly = len(out.positional)
            continue
        if p == "*":
            kwonly = True
            continue
        if p.startswith("**"):
            out.var_kw = True
            continue
        if p.startswith("*"):
            out.var_pos = kwonly = True
            continue
        head, eq, _ = p.partition("=")
        name = head.split()[-1].split(":")[0]
        (out.kwonly if kwonly else out.positional).append((name, bool(eq)))
    return out


def signature_of(obj, kind: str) -> Sig | None:
    """What calling ``obj`` accepts (kind as from :func:`resolve`), or None where CuPy exposes no
    signature."""
    if isinstance(obj, cupy._core._kernel.ufunc) and kind == "plain":
        return Sig(positional=[(f"x{i}", i >= obj.nin) for i in range(obj.nargs)], posonly=obj.nargs,
                   kwonly=[(k, True) for k in sorted(UFUNC_CALL_KWARGS)], min_pos=obj.nin,
                   source="cupy/_core/_kernel.pyx ufunc.__call__")
    target, drop_self = obj, kind == "method"
    if kind == "instance":
        target, drop_self = inspect.getattr_static(obj, "__call__", None), True
        if target is None:
            return None
    try:
        return Sig.from_inspect(inspect.signature(target), drop_self=drop_self)
    except (TypeError, ValueError):
        pass
    return sig_from_doc(target)  # a leading `self` is dropped there


def check_call(use: Use, sig: Sig, label: str) -> list[str]:
    out = []
    names_pos = [n for n, _ in sig.positional]
    kw_ok = set(names_pos[sig.posonly:]) | {n for n, _ in sig.kwonly}
    for k in use.kwargs:
        if k in kw_ok or (sig.var_kw and k not in names_pos[: sig.posonly]):
            continue
        out.append(f"{use.where()}: {label}() takes no keyword {k!r}")
    if not use.star and not sig.var_pos and use.nargs > len(names_pos):
        out.append(f"{use.where()}: {label}() takes at most {len(names_pos)} positional arguments "
                   f"({use.nargs} given)")
    if not use.star and not use.dstar:
        if sig.min_pos is not None and use.nargs < sig.min_pos:
            out.append(f"{use.where()}: {label}() needs {sig.min_pos} positional arguments ({use.nargs} given)")
        given = set(names_pos[: use.nargs]) | set(use.kwargs)
        for n, default in [*sig.positional[use.nargs:], *sig.kwonly]:
            if not default and n not in given and sig.min_pos is None:
                out.append(f"{use.where()}: {label}() is missing the required argument {n!r}")
    return out


@dataclass
class Report:
    problems: list[str] = field(default_factory=list)
    allowed_hits: set = field(default_factory=set)
    names: set = field(default_factory=set)  # resolved names (the reviewed surface)
    optional_missing: list[str] = field(default_factory=list)
    unchecked_calls: set = field(default_factory=set)  # calls whose signature CuPy does not expose
    followed: set = field(default_factory=set)  # through a function's result: not checkable


def check(uses: list[Use], allowed: dict | None = None) -> Report:
    allowed = ALLOWED if allowed is None else allowed
    rep = Report()
    for u in uses:
        key = (u.file, u.name)
        if key in allowed:
            rep.allowed_hits.add(key)
            continue
        try:
            obj, kind = resolve(u.name)
        except Unknown:
            rep.followed.add(u.name)
            continue
        except AttributeError as exc:
            prefix, missing = exc.args
            msg = f"{u.where()}: {prefix} has no {missing}" + (f" (in {u.name})" if u.name != f"{prefix}.{missing}" else "")
            (rep.optional_missing if u.optional else rep.problems).append(msg)
            continue
        rep.names.add(u.name)
        if u.key is not None:
            valid, what = KEYED[u.name]
            if not valid(u.key):
                rep.problems.append(f"{u.where()}: {u.name} has no key {u.key!r} (keys: {what})")
            continue
        if not u.call:
            continue
        if u.kw_factories:
            from gpudiff import backend as _backend

            extra = tuple(k for f in u.kw_factories for k in getattr(_backend, f)(cupy))
            u = dataclasses.replace(u, kwargs=u.kwargs + extra)
        sig = signature_of(obj, kind)
        if sig is None:
            rep.unchecked_calls.add(u.name)
            continue
        rep.problems += check_call(u, sig, u.name)
    return rep


# --------------------------------------------------------------------------------------------------
# tests


@pytest.fixture(scope="module")
def uses() -> list[Use]:
    return collect_package()


@pytest.fixture(scope="module")
def report(uses) -> Report:
    return check(uses)


def test_every_cupy_name_and_call_the_package_uses_exists_in_cupy(report):
    assert not report.problems, "CuPy API mismatches:\n" + "\n".join(report.problems)


def test_allow_list_entries_are_used(report):
    stale = sorted(set(ALLOWED) - report.allowed_hits)
    assert not stale, f"ALLOWED entries that match no use any more (remove them): {stale}"


def test_the_surface_covers_the_seam(uses, report):
    """The collector reaches each way into CuPy (a blind collector would pass everything)."""
    files = {u.file for u in uses}
    assert {"backend/_namespace.py", "backend/_kernels.py", "pair/_sums_cuda.py", "pair/_align.py", "sequence/_flow.py",
            "pair/_preprocess.py"} <= files
    expected = {
        "cupy.cuda.Device", "cupy.cuda.Device().attributes",  # _sums_cuda._sm_count (with its key)
        "cupy.RawModule", "cupy.RawModule().get_function",  # _kernels: a local holding an object
        "cupy.RawKernel()",  # the launch in _sums_cuda._pair_sums_cuda (via _kernels.get_function)
        "cupyx.empty_pinned",  # _backend.to_device: the imported cupyx
        "cupyx.scipy.fft.rfft2", "cupyx.scipy.fft.next_fast_len",  # a fft(xp) alias; getattr on it
        "cupyx.scipy.ndimage.gaussian_filter",  # an ndimage(xp) alias
        "cupyx.scipy.ndimage.map_coordinates",  # an alias passed as an argument to a helper
        "cupy.add", "cupy.float32",  # ufunc; keyword values (dtype=xp.float32)
    }
    missing = expected - report.names
    assert not missing, f"not collected: {sorted(missing)}"
    # nothing a NumPy-only branch or the emulated GPU uses leaks in
    assert "cupy.scipy_ndimage" not in report.names and "cupy.cupyx" not in report.names
    print("\n" + format_surface(uses, report))


def test_ufunc_keywords_match_cupy():
    """UFUNC_CALL_KWARGS (read from cupy/_core/_kernel.pyx) agrees with the installed CuPy's
    ufunc signature line, and a wrong keyword really raises there (no device needed: the
    keywords are checked before any allocation)."""
    s = sig_from_doc(cupy.add)
    assert s is not None and {n for n, _ in s.kwonly} | {n for n, _ in s.positional[2:]} == UFUNC_CALL_KWARGS
    a = cupy.float64(1.0)  # a NumPy scalar: no device memory touched before the keyword check
    with pytest.raises(TypeError, match="Wrong arguments"):
        cupy.add(a, a, where=True)


SYNTHETIC = '''
import numpy as np
from gpudiff import backend as _backend
from gpudiff.backend import ndimage as get_ndi

def f(xp, a):
    x = xp.not_a_function(a)
    y = xp.sum(a, axes=1)
    sm = get_ndi(xp)
    z = sm.gaussian_filter(a, 1.0, truncated=4.0)
    w = _backend.fft(xp).rfft2(a, s=None, axes=(0, 1), norm=None, overwrite_x=False, plan=None, nope=1)
    xp.add(a, a, out=a, where=a > 0)
    xp.isfinite(a, a, a)
    xp.cuda.Device(0).attribs
    xp.zeros()
    if xp is np:
        v = xp.ma.masked_invalid(a)
    on_gpu = _backend.is_cupy(xp)
    dev = xp.cuda.Device(0)
    if not on_gpu:
        xp.fromregex("x", "y", float)
    else:
        xp.cuda.runtime.not_there(0)
    return xp.add.at, xp.cuda.Device(0).id, getattr(sm, "maybe_missing", None), dev.attributes["SMCount"]

@numba.njit
def g(xp):
    return xp.numba_only()
'''


def test_the_checker_reports_wrong_names_keywords_and_counts():
    rep = check(collect(SYNTHETIC, "synthetic.py"), allowed={})
    text = "\n".join(rep.problems)
    expected = [
        "gpudiff/synthetic.py:7: cupy has no not_a_function",
        "gpudiff/synthetic.py:8: cupy.sum() takes no keyword 'axes'",
        "gpudiff/synthetic.py:10: cupyx.scipy.ndimage.gaussian_filter() takes no keyword 'truncated'",
        "gpudiff/synthetic.py:11: cupyx.scipy.fft.rfft2() takes no keyword 'nope'",
        "gpudiff/synthetic.py:12: cupy.add() takes no keyword 'where'",
        "gpudiff/synthetic.py:13: cupy.isfinite() takes at most 2 positional arguments (3 given)",
        "gpudiff/synthetic.py:14: cupy.cuda.Device() has no attribs",
        "gpudiff/synthetic.py:15: cupy.zeros() is missing the required argument 'shape'",
        "gpudiff/synthetic.py:23: cupy.cuda.runtime has no not_there",
        "gpudiff/synthetic.py:24: cupy.cuda.Device().attributes has no key 'SMCount'",
    ]
    for e in expected:
        assert any(p.startswith(e) for p in rep.problems), f"not reported: {e}\n{text}"
    assert len(rep.problems) == len(expected), text
    # guarded NumPy-only code and numba functions are not CuPy's business; optional getattr is noted
    assert "ma" not in {p.split()[-1] for p in rep.problems}
    assert "fromregex" not in text and "numba_only" not in text
    assert rep.optional_missing == ["gpudiff/synthetic.py:24: cupyx.scipy.ndimage has no maybe_missing"]
    assert {"cupy.add.at", "cupy.cuda.Device().id"} <= rep.names


def test_allow_list_mechanics():
    uses = collect("def f(xp):\n    return xp.fromregex('x', 'y', float)\n", "m.py")
    assert check(uses, allowed={}).problems == ["gpudiff/m.py:2: cupy has no fromregex"]
    rep = check(uses, allowed={("m.py", "cupy.fromregex"): "numpy-only"})
    assert not rep.problems and rep.allowed_hits == {("m.py", "cupy.fromregex")}


def format_surface(uses: list[Use], report: Report) -> str:
    by_name: dict[str, list[str]] = {}
    for u in uses:
        if u.name in report.names:
            by_name.setdefault(u.name, []).append(f"{u.file}:{u.line}")
    lines = [f"CuPy surface used by gpudiff: {len(by_name)} names"]
    for n in sorted(by_name):
        flag = "  (signature not exposed: keywords unchecked)" if n in report.unchecked_calls else ""
        lines.append(f"  {n}{flag}  [{len(by_name[n])} uses, e.g. {by_name[n][0]}]")
    lines.append("left out (NumPy-only / emulated-only branches, numba functions):")
    lines += [f"  {b}" for b in guarded_branches()]
    if report.optional_missing:
        lines.append("optional names CuPy lacks (the code handles their absence):")
        lines += [f"  {m}" for m in report.optional_missing]
    return "\n".join(lines)


if __name__ == "__main__":  # pragma: no cover - review aid
    u = collect_package()
    r = check(u)
    print(format_surface(u, r))
    if r.problems:
        print("PROBLEMS:", *r.problems, sep="\n  ")
    sys.exit(1 if r.problems else 0)
