"""The on-disk cache of everything that is expensive to recompute: trained models, crafted examples, tuning.

Every artifact is stored under ``$ROBUSTNB_CACHE/<folder>/<name>-<key>.<ext>`` where ``key`` is a hash of its
*spec*: a JSON-able dict holding everything that determines the content (architecture, data fingerprint,
training config, seed, ...). The same key must always mean the same content, so:

* **one writer** (:func:`atomic_write`): a temporary file in the same folder, fsync, then rename over the
  target; a killed run never leaves a file that is later trusted, and a failed write leaves no temporary file;
* **verified reads**: tensor payloads carry their canonical spec and a SHA-256 of their tensors; a reader
  checks both (:class:`CacheError` otherwise) and recomputes instead of trusting a stale or damaged file;
* **weights_only**: checkpoints hold only tensors and strings and are read with
  ``torch.load(..., weights_only=True)``.

Specs of datasets are built by one helper, :func:`data_spec` (name, size and a fingerprint of the pixels).

Experiment results (frames, crafted examples, numbers) are cached by the :func:`experiment` decorator, keyed by
the function, its arguments (:func:`describe`: configs, dataset specs, model keys, tensor hashes) and the code
that computes it (:func:`code_fingerprint`: what the function reaches, by its normalised syntax, so a docstring,
a comment or a figure changes no key); frames are stored as Parquet,
tensors like models, and a manifest written last makes an entry complete. Every stored value is under a
checksum: frames and tensors in their files, and the numbers, strings and structure kept in the manifest (and in
:func:`cached_json`'s files) by a SHA-256 of their canonical JSON (:func:`json_digest`), so a digit changed by
hand or by a damaged disk is a :class:`CacheError` and a recompute, never a silently different number.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import hashlib
import importlib
import inspect
import json
import marshal
import os
import re
import sys
import textwrap
import time
import tokenize
import types
import warnings
import weakref
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from torch import nn

from robustnb.config import cache_dir
from robustnb.registry import Registry

CACHE_FORMAT = 2  # bump to invalidate every cached artifact after an incompatible change


class CacheError(ValueError):
    """A cached file does not hold what its key promises (other spec, damaged, truncated)."""


class Unnameable(TypeError):
    """An experiment's argument has no description for a cache key: the result is computed, not cached."""


# ------------------------------------------------------------------------------------------------ keys
def canonical(spec: Mapping) -> str:
    """The spec as canonical JSON (sorted keys, the cache format included): what the key hashes."""
    return json.dumps({"cache_format": CACHE_FORMAT, **spec}, sort_keys=True, default=str)


def cache_key(spec: Mapping) -> str:
    """A 16-hex-digit key derived from the full spec (and the cache format)."""
    return hashlib.sha256(canonical(spec).encode()).hexdigest()[:16]


def cache_path(name: str, spec: Mapping, folder: str = "models", suffix: str = ".pt") -> Path:
    """``$ROBUSTNB_CACHE/<folder>/<name>-<key><suffix>`` (``name`` made filesystem-safe)."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
    return cache_dir() / folder / f"{safe}-{cache_key(spec)}{suffix}"


def dataset_fingerprint(data) -> str:
    """A short hash of an ImageDataset's pixels and labels (memoised in ``data.meta``)."""
    if "fingerprint" not in data.meta:
        h = hashlib.sha1()
        h.update(data.images.numpy().tobytes())
        h.update(data.labels.numpy().tobytes())
        data.meta["fingerprint"] = h.hexdigest()[:16]
    return data.meta["fingerprint"]


def data_spec(data) -> dict:
    """The part of a spec that names a dataset: ``{"data", "n", "data_fp"}``."""
    return {"data": data.name, "n": len(data), "data_fp": dataset_fingerprint(data)}


# ----------------------------------------------------------------------------------------------- files
def atomic_write(path: Path, write: Callable[[Any], None], mode: str = "wb") -> Path:
    """Write ``path`` through ``write(file)`` atomically: temporary file, fsync, rename. On any failure the
    temporary file is removed and the error re-raised; the target is then untouched."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, mode) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def tensor_digest(tensors: Mapping[str, torch.Tensor]) -> str:
    """SHA-256 over the names, dtypes, shapes and bytes of ``tensors`` (sorted by name)."""
    h = hashlib.sha256()
    for k in sorted(tensors):
        t = tensors[k].detach().cpu().contiguous()
        h.update(f"{k}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def _write(path: Path, key: str, tensors: Mapping[str, torch.Tensor], spec: Mapping,
           strings: Mapping[str, str]) -> Path:
    tensors = {k: v.detach().cpu() for k, v in tensors.items()}
    payload = {key: tensors, "spec": canonical(spec), "sha256": tensor_digest(tensors),
               **{k: str(v) for k, v in strings.items()}}
    return atomic_write(path, lambda f: torch.save(payload, f))


def _read(path: Path, key: str, spec: Mapping) -> dict:
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated, not a torch file, ...
        raise CacheError(f"{path} is unreadable ({type(e).__name__}: {e})") from e
    if not isinstance(payload, dict) or payload.get("spec") != canonical(spec):
        raise CacheError(f"{path} was saved for a different spec")
    if payload.get("sha256") != tensor_digest(payload.get(key, {})):
        raise CacheError(f"{path} is damaged: its tensors do not match their checksum")
    return payload


def save_tensors(path: Path, tensors: Mapping[str, torch.Tensor], spec: Mapping) -> Path:
    """Store named tensors with their spec and a checksum (atomic)."""
    return _write(path, "tensors", tensors, spec, {})


def load_tensors(path: Path, spec: Mapping) -> dict[str, torch.Tensor]:
    """Read what :func:`save_tensors` wrote; :class:`CacheError` if unreadable, for another spec, or damaged."""
    return _read(path, "tensors", spec)["tensors"]


def cached_tensors(name: str, spec: Mapping, compute: Callable[[], Mapping[str, torch.Tensor]],
                   folder: str = "results") -> dict[str, torch.Tensor]:
    """Named tensors from the cache, or ``compute()`` them and store them. A damaged or stale file is
    recomputed and replaced (with a warning), never trusted."""
    path = cache_path(name, spec, folder)
    if path.exists():
        try:
            return load_tensors(path, spec)
        except CacheError as e:
            warnings.warn(f"{e}; recomputing")
    out = {k: v.detach().cpu() for k, v in compute().items()}
    save_tensors(path, out, spec)
    return out


def json_digest(value: Any) -> str:
    """SHA-256 of a JSON-able value's canonical text (sorted keys): the checksum of the numbers, strings and
    structure a JSON file holds. A value read back from its file has the digest it was written with."""
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()


def write_json(path: Path, body: Mapping) -> Path:
    """Write a JSON object with a ``sha256`` of its content (:func:`json_digest`), atomically."""
    text = json.dumps({**body, "sha256": json_digest(dict(body))})
    return atomic_write(path, lambda f: f.write(text), mode="w")


def read_json(path: Path) -> dict:
    """Read what :func:`write_json` wrote; :class:`CacheError` if unreadable or if its content does not match
    its checksum (a changed digit, a file without a checksum)."""
    try:
        payload = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise CacheError(f"{path} is unreadable ({type(e).__name__})") from e
    if not isinstance(payload, dict):
        raise CacheError(f"{path} is unreadable (not a JSON object)")
    if "sha256" not in payload:
        raise CacheError(f"{path} has no checksum (written by an older robustnb)")
    digest = payload.pop("sha256")
    if digest != json_digest(payload):
        raise CacheError(f"{path} is damaged: its values do not match their checksum")
    return payload


def cached_json(name: str, spec: Mapping, compute: Callable[[], Any], folder: str = "results") -> Any:
    """A JSON-able result from the cache, or ``compute()`` it and store it with its spec and a checksum. A
    damaged or stale file is recomputed and replaced (with a warning), never trusted."""
    path = cache_path(name, spec, folder, suffix=".json")
    if path.exists():
        try:
            payload = read_json(path)
            if payload.get("spec") == canonical(spec) and "value" in payload:
                return payload["value"]
            warnings.warn(f"{path} was saved for a different spec; recomputing")
        except CacheError as e:
            warnings.warn(f"{e}; recomputing")
    value = compute()
    write_json(path, {"spec": canonical(spec), "value": value})
    return value


# ------------------------------------------------------------------------------------------- models
def save_checkpoint(path: Path, model: nn.Module, spec: Mapping, history: pd.DataFrame | None = None,
                    extra: Mapping[str, str] | None = None) -> None:
    """A model's ``state_dict`` with its spec, training ``history`` and a checksum of the weights (atomic)."""
    strings = {"history": (history if history is not None else pd.DataFrame()).to_json(orient="records"),
               **{f"extra_{k}": v for k, v in (extra or {}).items()}}
    _write(path, "state_dict", model.state_dict(), spec, strings)


def load_checkpoint(path: Path, model: nn.Module, spec: Mapping) -> pd.DataFrame:
    """Load weights saved by :func:`save_checkpoint` into ``model`` (spec and checksum verified); returns the
    training history."""
    payload = _read(path, "state_dict", spec)
    model.load_state_dict(payload["state_dict"])
    return pd.DataFrame(json.loads(payload.get("history") or "[]"))


def _build_seeded(build: Callable[[], nn.Module], spec: Mapping) -> nn.Module:
    """``build()`` with torch's RNG seeded from the spec's key (and the caller's RNG state left untouched), so
    the initial weights, hence the trained weights, are a function of the key alone: not of whatever ran
    before, and the same after a damaged checkpoint is retrained."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(cache_key(spec), 16) % 2**63)
        return build()


def cached(name: str, spec: Mapping, build: Callable[[], nn.Module],
           train: Callable[[nn.Module], pd.DataFrame | None], device: torch.device | str = "cpu",
           verbose: bool = True) -> nn.Module:
    """Return a trained model, from the cache when possible.

    ``spec`` must hold everything that determines the weights (architecture, data, training config,
    seed ...). ``build()`` makes the untrained module (under an RNG seeded from the spec's key); ``train(model)`` trains it in place and may return a
    history frame. The model comes back in eval mode on ``device`` with ``model.robustnb_info`` set
    (path, key, history, whether it was loaded from the cache, training seconds).
    """
    path = cache_path(name, spec)
    model = _build_seeded(build, spec)
    if path.exists():
        try:
            history = load_checkpoint(path, model, spec)
            model.to(device).eval()
            model.robustnb_info = {"path": str(path), "key": cache_key(spec), "history": history,
                                   "from_cache": True, "train_seconds": 0.0}
            if verbose:
                print(f"loaded {name} from cache ({path.name})")
            return model
        except Exception as e:  # unreadable or stale: it is our own file, so retrain and replace it
            warnings.warn(f"cached model {path} could not be used ({type(e).__name__}: {e}); retraining")
            model = _build_seeded(build, spec)
    t0 = time.perf_counter()
    history = train(model.to(device))
    seconds = time.perf_counter() - t0
    history = history if isinstance(history, pd.DataFrame) else pd.DataFrame()
    save_checkpoint(path, model, spec, history)
    model.to(device).eval()
    model.robustnb_info = {"path": str(path), "key": cache_key(spec), "history": history,
                           "from_cache": False, "train_seconds": seconds}
    if verbose:
        print(f"trained {name} in {seconds:.1f} s, cached as {path.name}")
    return model


# ------------------------------------------------------------------------------------- code fingerprints
# An experiment's key holds the code that computes it, each piece by its normalised syntax (the AST without
# docstrings, unparsed: comments and formatting are gone), found statically from the function:
#
# * names and attribute chains on robustnb modules (``rate.real_bytes``), resolved through the function's
#   globals (closures through their cells, imports inside functions through the module they import): robustnb
#   functions (closures with their cells' values, decorated ones with what they wrap) and classes (the whole
#   class statement, decorators included, and its robustnb base classes), followed recursively; module
#   constants by the statements that bind them and their current value;
# * registries (``robustnb.registry``): when the code reaches one (``registry.ATTACKS.make``, ``mechanisms.make``
#   through ``KINDS``), the entry (its object and maker) of every registered name among the string constants of
#   the reached code and the strings of the described arguments; a registry the code enumerates
#   (``names()``, iteration, handed on as a value) counts with all its entries (those of a constant filter);
# * arguments: the robustnb classes of models and all their submodules, of configs and their fields (dataclasses),
#   of datasets; strings carried by models (``arch``, ``entropy_model``) count as names;
# * what cannot be seen (a name bound at run time, ``globals()``, ``getattr(module, name)`` with a computed
#   name, an unknown import): the whole module, normalised.
#
# Never in a key: :data:`NOT_IN_KEYS`, outside libraries (their versions are pinned), and the keys' own
# machinery (:data:`_NOT_CODE`). Computed once per function, argument classes and names per process, from the
# sources as they are then (a kernel sees an edit to the package after a restart, as it runs the old code).

#: never in a result's key: figures, widgets and progress bars only read what an experiment computed
NOT_IN_KEYS = ("robustnb.plots", "robustnb.widgets", "robustnb.progress")
PACKAGE = __name__.partition(".")[0]
#: functions that enumerate a registry chosen by their first argument (a kind of ``KINDS``): at a call site
#: with a constant kind (and constant filters), only that registry's matching entries are in the key
_DISPATCHERS = {"robustnb.mechanisms:names": "KINDS"}
#: methods of a :class:`robustnb.registry.Registry` that look one entry up by its name
_BY_NAME = {"get", "make", "check", "meta", "register", "add", "set_maker", "kind", "__getitem__", "__contains__"}
#: builtins that read only a mapping's keys (the registries in a dict of registries stay unread)
_KEYS_ONLY = {"len", "repr", "str", "list", "sorted", "tuple", "set", "frozenset", "iter", "map", "enumerate",
              "join", "print", "format"}
_MISSING = object()
_OWN: set[str] = set()  # modules outside the package whose experiments are fingerprinted (tests, notebooks)


@functools.lru_cache(maxsize=None)
def _ours(module: str | None) -> bool:
    """Code of ``module`` belongs in keys: robustnb (less :data:`NOT_IN_KEYS`) and an experiment's own module."""
    if not isinstance(module, str) or any(module == m or module.startswith(m + ".") for m in NOT_IN_KEYS):
        return False
    return module == PACKAGE or module.startswith(PACKAGE + ".") or module in _OWN


def _strip_docstrings(tree: ast.AST) -> ast.AST:
    """Remove every bare string statement (docstrings, attribute docs): they do nothing when the code runs."""
    for node in ast.walk(tree):
        for name in ("body", "orelse", "finalbody"):
            body = getattr(node, name, None)
            if isinstance(body, list) and body and isinstance(body[0], ast.stmt):
                kept = [s for s in body if not (isinstance(s, ast.Expr) and isinstance(s.value, ast.Constant)
                                                and isinstance(s.value.value, str))]
                if len(kept) != len(body):
                    setattr(node, name, kept or [ast.Pass()])
    return tree


def normalised_source(source: str) -> str:
    """``source``'s syntax without docstrings, comments or formatting (``ast.unparse`` of the stripped AST): the
    text a code fingerprint hashes, so that only an edit to what the code does changes it."""
    return ast.unparse(_strip_docstrings(ast.parse(source)))


class _ModuleIndex:
    """One module's stripped AST, its definitions by qualified name and its module-level bindings by name."""

    def __init__(self, name: str, path: str, tree: ast.Module):
        self.name, self.path, self.tree = name, path, _strip_docstrings(tree)
        self.real = os.path.realpath(path)
        self.defs: dict[str, list[ast.AST]] = {}
        self.functions: dict[tuple[str, int], ast.AST] = {}
        self.lambdas: dict[int, list[ast.Lambda]] = {}
        self.bindings: dict[str, list[ast.stmt]] = {}
        self.imports: dict[str, tuple[str, str | None]] = {}
        self._text: dict[int, str] = {}
        self._index(self.tree, "")
        self._bind(self.tree.body)

    def _index(self, node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                qn = prefix + child.name
                self.defs.setdefault(qn, []).append(child)
                if not isinstance(child, ast.ClassDef):
                    line = child.decorator_list[0].lineno if child.decorator_list else child.lineno
                    self.functions[(child.name, line)] = child
                self._index(child, qn + (".<locals>." if not isinstance(child, ast.ClassDef) else "."))
            else:
                if isinstance(child, ast.Lambda):
                    self.lambdas.setdefault(child.lineno, []).append(child)
                self._index(child, prefix)

    def _package(self) -> str:
        return self.name if self.path.endswith("__init__.py") else self.name.rpartition(".")[0]

    def absolute(self, node: ast.ImportFrom) -> str:
        if not node.level:
            return node.module or ""
        parts = self._package().split(".")
        base = parts[: len(parts) - node.level + 1]
        return ".".join(base + ([node.module] if node.module else []))

    def _bind(self, stmts) -> None:
        for s in stmts:
            if isinstance(s, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                continue
            names: list[str] = []
            if isinstance(s, ast.Assign):
                for t in s.targets:
                    names += _target_roots(t)
            elif isinstance(s, (ast.AnnAssign, ast.AugAssign)):
                names += _target_roots(s.target)
            elif isinstance(s, (ast.For, ast.AsyncFor)):
                names += _target_roots(s.target)
            elif isinstance(s, (ast.With, ast.AsyncWith)):
                for item in s.items:
                    names += _target_roots(item.optional_vars) if item.optional_vars is not None else []
            elif isinstance(s, ast.Delete):
                for t in s.targets:
                    names += _target_roots(t)
            elif isinstance(s, ast.Import):
                for a in s.names:
                    names.append(a.asname or a.name.partition(".")[0])
                    self.imports[names[-1]] = (a.name if a.asname else a.name.partition(".")[0], None)
            elif isinstance(s, ast.ImportFrom):
                for a in s.names:
                    names.append(a.asname or a.name)
                    self.imports[names[-1]] = (self.absolute(s), a.name)
            elif isinstance(s, ast.Expr) and isinstance(s.value, ast.Call):  # X.update(...), X.append(...)
                func = s.value.func
                if isinstance(func, ast.Attribute):
                    names += _target_roots(func.value)
            for n in names:
                self.bindings.setdefault(n, []).append(s)
            for field in ("body", "orelse", "finalbody", "handlers"):
                inner = getattr(s, field, None)
                if isinstance(inner, list):
                    for h in inner:
                        if isinstance(h, ast.ExceptHandler):
                            if h.name:
                                self.bindings.setdefault(h.name, []).append(s)
                            self._bind(h.body)
                    self._bind([x for x in inner if isinstance(x, ast.stmt)])

    def lambda_at(self, line: int) -> ast.AST | None:
        """The lambda starting on ``line``; several there: all of them (a superset of its code)."""
        nodes = self.lambdas.get(line, [])
        if len(nodes) > 1:
            self.lambdas[line] = nodes = [ast.Module(body=[ast.Expr(n) for n in nodes], type_ignores=[])]
        return nodes[0] if nodes else None

    def text(self, node: ast.AST) -> str:
        if id(node) not in self._text:
            self._text[id(node)] = ast.unparse(node)
        return self._text[id(node)]


def _target_roots(t) -> list[str]:
    if isinstance(t, ast.Name):
        return [t.id]
    if isinstance(t, (ast.Tuple, ast.List)):
        return [n for e in t.elts for n in _target_roots(e)]
    if isinstance(t, ast.Starred):
        return _target_roots(t.value)
    if isinstance(t, (ast.Attribute, ast.Subscript)):
        return _target_roots(t.value)
    return []


_INDEXES: dict[tuple, _ModuleIndex | None] = {}


def _module_index(name: str) -> _ModuleIndex | None:
    """The index of module ``name``'s source file (memoised per file version), or None without a file."""
    mod = sys.modules.get(name)
    path = getattr(mod, "__file__", None)
    if not path or not str(path).endswith(".py"):
        return None
    try:
        st = os.stat(path)
    except OSError:
        return None
    key = (name, path, st.st_mtime_ns, st.st_size)
    if key not in _INDEXES:
        try:
            with tokenize.open(path) as f:
                _INDEXES[key] = _ModuleIndex(name, path, ast.parse(f.read()))
        except (OSError, SyntaxError, ValueError):
            _INDEXES[key] = None
    return _INDEXES[key]


_SCOPES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef, ast.ListComp, ast.SetComp,
           ast.DictComp, ast.GeneratorExp)
_COMPREHENSIONS = (ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)


def _bound(scope) -> set[str]:
    """The names a scope binds (Python's rule: assigned anywhere in it, less ``global`` ones); nested scopes
    bind their own, except their headers (decorators, defaults, bases) and walrus targets of comprehensions."""
    names: set[str] = set()
    declared_global: set[str] = set()
    if isinstance(scope, _COMPREHENSIONS):
        for g in scope.generators:
            names |= {n.id for n in ast.walk(g.target) if isinstance(n, ast.Name)}
        return names
    if isinstance(scope, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
        a = scope.args
        names |= {x.arg for x in a.posonlyargs + a.args + a.kwonlyargs + [a.vararg, a.kwarg] if x is not None}
    stack = list(scope.body) if isinstance(scope.body, list) else [scope.body]
    while stack:
        n = stack.pop()
        if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(n.name)
            stack += n.decorator_list
            stack += (n.bases + [k.value for k in n.keywords] if isinstance(n, ast.ClassDef)
                      else n.args.defaults + [d for d in n.args.kw_defaults if d is not None])
            continue
        if isinstance(n, ast.Lambda):
            stack += n.args.defaults + [d for d in n.args.kw_defaults if d is not None]
            continue
        if isinstance(n, _COMPREHENSIONS):
            stack.append(n.generators[0].iter)
            names |= {w.target.id for w in ast.walk(n) if isinstance(w, ast.NamedExpr)}
            continue
        if isinstance(n, ast.Name) and not isinstance(n.ctx, ast.Load):
            names.add(n.id)
        elif isinstance(n, (ast.Import, ast.ImportFrom)):
            names |= {x.asname or x.name.partition(".")[0] for x in n.names}
        elif isinstance(n, ast.ExceptHandler) and n.name:
            names.add(n.name)
        elif isinstance(n, ast.Global):
            declared_global |= set(n.names)
        elif isinstance(n, ast.Nonlocal):
            names |= set(n.names)
        elif isinstance(n, (ast.MatchAs, ast.MatchStar)) and n.name:
            names.add(n.name)
        elif isinstance(n, ast.MatchMapping) and n.rest:
            names.add(n.rest)
        stack.extend(ast.iter_child_nodes(n))
    return names - declared_global


def _is_local(name: ast.Name, parents: dict, memo: dict) -> bool:
    """Whether ``name`` (a load) is bound in a scope enclosing it inside the scanned code (then it is not a
    global, whatever the module binds to that name)."""
    path = [name]
    node = parents.get(name)
    crossed_function = False
    while node is not None:
        child = path[-1]
        if isinstance(node, _SCOPES):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                inside = any(child is s for s in node.body)
            elif isinstance(node, ast.Lambda):
                inside = child is node.body
            elif isinstance(node, ast.ClassDef):
                inside = any(child is s for s in node.body) and not crossed_function
            else:  # a comprehension: its first iterable is evaluated outside
                inside = not (child is node.generators[0] and len(path) > 1 and path[-2] is node.generators[0].iter)
            if inside:
                if id(node) not in memo:
                    memo[id(node)] = _bound(node)
                if name.id in memo[id(node)]:
                    return True
                if not isinstance(node, (ast.ClassDef,) + _COMPREHENSIONS):
                    crossed_function = True
        path.append(node)
        node = parents.get(node)
    return False


class _Part:
    """One piece of a key: a label, the digest of its normalised content, and what it reaches."""

    __slots__ = ("label", "digest", "deps", "strings", "registries", "enums")

    def __init__(self, label: str, content: str, acc: "_Reach"):
        self.label, self.digest = label, hashlib.sha256(content.encode()).hexdigest()[:16]
        self.deps, self.strings = frozenset(acc.deps), frozenset(acc.strings)
        self.registries, self.enums = dict(acc.registries), frozenset(acc.enums)


class _Reach:
    """What a piece of code reaches: other pieces (deps), string constants, registries looked up by name and
    registries enumerated (``(id, filter)``; ``filter`` None: every entry)."""

    def __init__(self, module: str = "", suppress_enums: bool = False, const: bool = False):
        self.module, self.suppress, self.const = module, suppress_enums, const
        self.deps: set = set()
        self.strings: set[str] = set()
        self.registries: dict[int, Any] = {}
        self.enums: set = set()

    # ---------------------------------------------------------------------------------------- values
    def value(self, v, depth: int = 0, seen=None) -> str:
        """A deterministic description of a runtime value (module constant, closure cell, registry entry):
        plain data by its repr, robustnb code by reference (a dep), registries, partials, tensors."""
        seen = set() if seen is None else seen
        if v is None or isinstance(v, (bool, int, float, complex, bytes)):
            return repr(v)
        if isinstance(v, str):
            self.strings.add(v)
            return repr(v)
        if depth > 8 or id(v) in seen:
            return f"<{type(v).__qualname__} ...>"
        seen = seen | {id(v)}
        if isinstance(v, Registry):
            self.note(v)
            return f"<registry {v.kind}>"
        if isinstance(v, type):
            if _ours(v.__module__) and _label(v) not in _NOT_CODE:
                self.deps.add(("cls", v))
            return f"<class {v.__module__}.{v.__qualname__}>"
        if isinstance(v, types.ModuleType):
            if _ours(v.__name__):  # a module held as a value: any of its attributes may be used
                self.deps.add(("module", v.__name__))
            return f"<module {v.__name__}>"
        if isinstance(v, types.FunctionType):
            label = _label(v)
            if label in _NOT_CODE:
                return f"<key machinery {label}>"
            if _ours(_code_module(v)):
                self.deps.add(("fn", v))
            elif hasattr(v, "__wrapped__"):  # an outside decorator (torch.no_grad, contextmanager): what it wraps
                return f"<{label} of {self.value(v.__wrapped__, depth + 1, seen)}>"
            return f"<function {label}>"
        if isinstance(v, types.MethodType):
            return f"<method {self.value(v.__func__, depth + 1, seen)} of {self.value(v.__self__, depth + 1, seen)}>"
        if isinstance(v, (staticmethod, classmethod)):
            return f"<{type(v).__name__} {self.value(v.__func__, depth + 1, seen)}>"
        if isinstance(v, property):
            return f"<property {[self.value(f, depth + 1, seen) for f in (v.fget, v.fset, v.fdel)]}>"
        if isinstance(v, functools.partial):
            return (f"partial({self.value(v.func, depth + 1, seen)}, {self.value(v.args, depth + 1, seen)}, "
                    f"{self.value(v.keywords, depth + 1, seen)})")
        if isinstance(v, (tuple, list)):
            inner = ", ".join(self.value(x, depth + 1, seen) for x in v)
            return f"{type(v).__name__}({inner})"
        if isinstance(v, (set, frozenset)):
            return f"{type(v).__name__}({', '.join(sorted(self.value(x, depth + 1, seen) for x in v))})"
        if isinstance(v, (weakref.WeakKeyDictionary, weakref.WeakValueDictionary, weakref.WeakSet)):
            return f"<{type(v).__name__}: a runtime memo, its contents are not code>"  # filled as the run goes
        if isinstance(v, Mapping):
            return "{" + ", ".join(f"{self.value(k, depth + 1, seen)}: {self.value(x, depth + 1, seen)}"
                                   for k, x in v.items()) + "}"
        if isinstance(v, torch.Tensor):
            return f"<tensor {tensor_digest({'t': v})[:16]}>"
        if isinstance(v, np.ndarray):
            return f"<array {v.dtype} {v.shape} {hashlib.sha256(np.ascontiguousarray(v).tobytes()).hexdigest()[:16]}>"
        cls = type(v)
        if isinstance(v, nn.Module):
            for m in v.modules():
                self.value(type(m), depth + 1, seen)
            return f"<nn.Module {cls.__module__}.{cls.__qualname__}>"
        if hasattr(v, "__wrapped__") and callable(v):
            return f"<{cls.__qualname__} of {self.value(v.__wrapped__, depth + 1, seen)}>"
        if dataclasses.is_dataclass(v):
            fields = ", ".join(f"{f.name}={self.value(getattr(v, f.name, None), depth + 1, seen)}"
                               for f in dataclasses.fields(v))
            return f"{self.value(cls, depth + 1, seen)}({fields})"
        if _ours(cls.__module__):
            state = getattr(v, "__dict__", {})
            return (f"{self.value(cls, depth + 1, seen)}("
                    + ", ".join(f"{k}={self.value(state[k], depth + 1, seen)}" for k in sorted(state)) + ")")
        if isinstance(v, (types.BuiltinFunctionType, types.BuiltinMethodType)) or (
                callable(v) and hasattr(v, "__qualname__")):
            return f"<{getattr(v, '__module__', '')}.{getattr(v, '__qualname__', type(v).__qualname__)}>"
        try:
            text = repr(v)
        except Exception:  # a repr that fails: the type alone
            text = " at 0x"
        # an external object: its type, and its repr when that is stable (no memory address)
        return f"<{cls.__module__}.{cls.__qualname__}{'' if ' at 0x' in text or len(text) > 2000 else ' ' + text}>"

    # ------------------------------------------------------------------------------------ registries
    def note(self, registry) -> None:
        """A registry is reached: its class's code (``make`` calls the makers) and, later, its entries."""
        self.registries[id(registry)] = registry
        self.value(type(registry))

    def enum(self, registry, where) -> None:
        self.note(registry)
        if not self.suppress:
            self.enums.add((id(registry), where))

    def use_registries(self, node, regs: list, parents: dict) -> None:
        """Registries ``regs`` are what ``node`` evaluates to: looked up by name (``.make``, ``[name]``) or
        enumerated (``.names()``, iteration, handed on): enumerated ones count with every entry."""
        for r in regs:
            self.note(r)
        parent = parents.get(node)
        if self.const and isinstance(parent, (ast.Dict, ast.List, ast.Tuple, ast.Set)):
            return  # a module constant holding registries: its readers are checked (:meth:`use_container`)
        if isinstance(parent, ast.Attribute) and parent.value is node:
            if parent.attr == "names":
                call = parents.get(parent)
                if (isinstance(call, ast.Call) and call.func is parent and not call.args
                        and all(k.arg and isinstance(k.value, ast.Constant) for k in call.keywords)):
                    where = tuple(sorted((k.arg, k.value.value) for k in call.keywords))
                    for r in regs:
                        self.enum(r, where)
                    return
            elif parent.attr in _BY_NAME:
                return
        elif isinstance(parent, ast.Subscript) and parent.value is node:
            return
        elif isinstance(parent, ast.Compare) and node in parent.comparators and all(
                isinstance(op, (ast.In, ast.NotIn)) for op in parent.ops):
            return
        for r in regs:
            self.enum(r, None)

    def use_container(self, node, container, parents: dict) -> None:
        """``node`` evaluates to a constant holding registries (``mechanisms.KINDS``)."""
        values = container.values() if isinstance(container, Mapping) else container
        regs = [r for r in values if isinstance(r, Registry)]
        if not regs:
            return
        for r in regs:
            self.note(r)
        parent = parents.get(node)
        if isinstance(parent, ast.Subscript) and parent.value is node:
            return self.use_registries(parent, regs, parents)
        if isinstance(parent, ast.Attribute) and parent.value is node and parent.attr == "get":
            call = parents.get(parent)
            if isinstance(call, ast.Call) and call.func is parent:
                return self.use_registries(call, regs, parents)
        if isinstance(container, Mapping):  # the keys only
            if isinstance(parent, ast.Compare) and node in parent.comparators:
                return
            if isinstance(parent, (ast.For, ast.comprehension)) and parent.iter is node:
                return
            if isinstance(parent, ast.Call) and node in parent.args and _call_name(parent) in _KEYS_ONLY:
                return
        for r in regs:
            self.enum(r, None)


def _code_module(fn) -> str:
    """The module whose source holds ``fn``'s code (``functools.wraps`` copies the wrapped ``__module__``)."""
    return fn.__globals__.get("__name__", fn.__module__) if isinstance(fn, types.FunctionType) else fn.__module__


def _label(obj) -> str:
    if isinstance(obj, types.FunctionType):
        code = obj.__code__  # functools.wraps copies the wrapped function's names onto a wrapper
        qualname = getattr(code, "co_qualname", None) or (code.co_name if hasattr(obj, "__wrapped__")
                                                           else obj.__qualname__)
        return f"{_code_module(obj)}:{qualname}"
    return f"{obj.__module__}:{obj.__qualname__}"


def _call_name(call: ast.Call) -> str:
    f = call.func
    return f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else ""


def _walk(nodes):
    """Pre-order nodes and their parents; function annotations are skipped (they do not run)."""
    parents: dict = {}
    order = []
    stack = list(reversed(list(nodes)))
    while stack:
        node = stack.pop()
        order.append(node)
        children = []
        for field, value in ast.iter_fields(node):
            if (field == "returns" and isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))) or (
                    field == "annotation" and isinstance(node, ast.arg)):
                continue
            for c in value if isinstance(value, list) else [value]:
                if isinstance(c, ast.AST):
                    parents[c] = node
                    children.append(c)
        stack.extend(reversed(children))
    return order, parents


def _scan(nodes, ns: Mapping, module: str, acc: _Reach, cells: Mapping | None = None) -> _Reach:
    """Resolve what the code ``nodes`` (run in namespace ``ns`` of ``module``; ``cells``: a closure's free
    variables) reaches, into ``acc``: every name and attribute chain on robustnb modules, string constants,
    registries and how they are used."""
    import builtins

    order, parents = _walk(nodes)
    cells = dict(cells or {})
    scopes: dict = {}
    local_imports: dict[str, list] = {}
    index = _module_index(module)
    top = {id(s) for s in index.tree.body} if index else set()
    for n in order:  # imports inside functions bind local names
        if isinstance(n, (ast.Import, ast.ImportFrom)) and id(n) not in top:
            for a in n.names:
                try:
                    if isinstance(n, ast.Import):
                        target = a.name if a.asname else a.name.partition(".")[0]
                        value, origin = importlib.import_module(target), None
                    else:
                        base = index.absolute(n) if index else (n.module or "")
                        value, origin = getattr(importlib.import_module(base), a.name, _MISSING), (base, a.name)
                        if value is _MISSING:
                            value = importlib.import_module(f"{base}.{a.name}")
                    local_imports.setdefault(a.asname or (target if isinstance(n, ast.Import) else a.name),
                                             []).append((value, origin))
                except Exception:  # cannot see what it binds: the whole module, conservatively
                    acc.deps.add(("module", module))
    own_builtins = vars(builtins)

    def lookup(name):
        if name in cells:
            return True, cells[name], None
        if name in ns:
            return True, ns[name], (module, name)
        return False, None, None

    for n in order:
        if isinstance(n, ast.Constant) and isinstance(n.value, str):
            acc.strings.add(n.value)
        elif isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load):
            chain, node = [n], n
            while isinstance(parents.get(node), ast.Attribute) and parents[node].value is node:
                node = parents[node]
                chain.append(node)
            if _is_local(n, parents, scopes):
                for value, origin in local_imports.get(n.id, ()):  # ``from robustnb.x import y`` in a function
                    _reference(value, origin, chain, parents, acc)
                continue
            found, value, origin = lookup(n.id)
            if not found:
                if n.id in own_builtins:
                    if n.id in ("globals", "eval", "exec"):  # names looked up at run time
                        acc.deps.add(("module", module))
                    continue
                acc.deps.add(("module", module))  # bound at run time to something unseen: the whole module
                continue
            _reference(value, origin, chain, parents, acc)
        elif isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id in ("getattr", "__import__") \
                and n.func.id not in ns and not _is_local(n.func, parents, scopes):
            _dynamic(n, lookup, acc, module)
        elif isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and n.func.attr == "import_module":
            _dynamic(n, lookup, acc, module)
    return acc


def _dynamic(call: ast.Call, lookup, acc: _Reach, module: str) -> None:
    """``getattr(module, name)``, ``import_module(name)``: a constant name is followed, any other reaches the
    whole module (or, for an import of an unknown name, every loaded robustnb module)."""
    if _call_name(call) == "getattr":
        if not call.args or not isinstance(call.args[0], ast.Name):
            return
        _, value, _ = lookup(call.args[0].id)
        if isinstance(value, types.ModuleType) and _ours(value.__name__):
            attr = call.args[1] if len(call.args) > 1 else None
            if isinstance(attr, ast.Constant) and isinstance(attr.value, str):
                acc.value(getattr(value, attr.value, None))
                if not (callable(getattr(value, attr.value, None))):
                    acc.deps.add(("const", value.__name__, attr.value))
            else:
                acc.deps.add(("module", value.__name__))
        return
    arg = call.args[0] if call.args else None
    if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
        if _ours(arg.value):
            acc.deps.add(("module", arg.value))
    else:
        acc.deps.update(("module", m) for m in list(sys.modules) if _ours(m) and m != PACKAGE)


def _reference(value, origin, chain, parents, acc: _Reach) -> None:
    """A name (and the attributes read on it, ``chain``) resolved to ``value`` bound at ``origin``."""
    i = 0
    while isinstance(value, types.ModuleType) and i + 1 < len(chain):
        if not _ours(value.__name__):
            return
        attr = chain[i + 1].attr
        nxt = getattr(value, attr, _MISSING)
        if nxt is _MISSING:
            try:
                nxt = importlib.import_module(f"{value.__name__}.{attr}")
            except Exception:
                acc.deps.add(("module", value.__name__))
                return
        value, origin, i = nxt, (value.__name__, attr), i + 1
    node = chain[i]
    if isinstance(value, types.ModuleType):
        if _ours(value.__name__):  # a robustnb module used as a value (not only its attributes read)
            parent = parents.get(node)
            if not (isinstance(parent, ast.Attribute) and parent.value is node):
                acc.deps.add(("module", value.__name__))
        return
    if isinstance(value, Registry):
        acc.use_registries(node, [value], parents)
        return
    if isinstance(value, types.FunctionType) and _label(value) in _DISPATCHERS:
        _dispatch(value, node, parents, acc)
    if isinstance(value, (type, types.FunctionType, types.MethodType, functools.partial, staticmethod,
                          classmethod, property)) or callable(value) and hasattr(value, "__wrapped__"):
        acc.value(value)
        return
    if isinstance(value, (Mapping, list, tuple)) and any(isinstance(v, Registry) for v in (
            value.values() if isinstance(value, Mapping) else value)):
        acc.use_container(node, value, parents)
    if origin is not None and _ours(origin[0]):
        index = _module_index(origin[0])
        imported = index.imports.get(origin[1]) if index else None
        if imported and not _ours(imported[0]):
            return  # a name imported from another library
        acc.deps.add(("const",) + tuple(origin))
    elif _ours(type(value).__module__):
        acc.value(value)


def _dispatch(fn, node, parents, acc: _Reach) -> None:
    """A call of a dispatcher (:data:`_DISPATCHERS`): a constant kind (and constant filters) enumerates that
    registry's matching entries; anything else, every registry it chooses from."""
    container = fn.__globals__.get(_DISPATCHERS[_label(fn)], {})
    call = parents.get(node)
    if isinstance(call, ast.Call) and call.func is node and call.args and isinstance(call.args[0], ast.Constant) \
            and call.args[0].value in container and all(isinstance(a, ast.Constant) for a in call.args) \
            and all(k.arg and isinstance(k.value, ast.Constant) for k in call.keywords) and len(call.args) == 1:
        acc.enum(container[call.args[0].value], tuple(sorted((k.arg, k.value.value) for k in call.keywords)))
        return
    for r in container.values():
        acc.enum(r, None)


def _locate(obj) -> tuple[_ModuleIndex | None, ast.AST | None]:
    """The definition of a function or class in its module's source (None if it cannot be found for sure)."""
    index = _module_index(_code_module(obj))
    if index is None:
        return None, None
    if isinstance(obj, types.FunctionType) and os.path.realpath(obj.__code__.co_filename) != index.real:
        return None, None
    if isinstance(obj, types.FunctionType) and obj.__code__.co_name == "<lambda>":
        return index, index.lambda_at(obj.__code__.co_firstlineno)
    if isinstance(obj, types.FunctionType):  # by its name and first line (its first decorator's)
        return index, index.functions.get((obj.__code__.co_name, obj.__code__.co_firstlineno))
    nodes = [n for n in index.defs.get(obj.__qualname__, []) if isinstance(n, ast.ClassDef)]
    if "<locals>" not in obj.__qualname__:
        holder = sys.modules.get(obj.__module__)
        for part in obj.__qualname__.split("."):
            holder = getattr(holder, part, None)
        if holder is not obj:  # made by type(...) or rebound: not that source
            return index, None
    return index, (nodes[0] if len(nodes) == 1 else None)


_PARTS: dict = {}


def _part(key) -> _Part:
    if key in _PARTS:
        return _PARTS[key]
    kind = key[0]
    if kind == "fn":
        part = _function_part(key[1])
    elif kind == "cls":
        part = _class_part(key[1])
    elif kind == "const":
        part = _const_part(key[1], key[2])
    elif kind == "module":
        part = _module_part(key[1])
    else:
        part = _entry_part(key[1], key[2])
    _PARTS[key] = part
    return part


def _function_part(fn) -> _Part:
    label, module = _label(fn), _code_module(fn)
    acc = _Reach(module, suppress_enums=label in _DISPATCHERS)
    cells = {}
    for name, cell in zip(fn.__code__.co_freevars, fn.__closure__ or ()):
        try:
            cells[name] = cell.cell_contents
        except ValueError:  # an empty cell
            pass
    index, node = _locate(fn)
    if node is not None:
        content = index.text(node)
        _scan([node], fn.__globals__, module, acc, cells)
    else:
        try:  # a function of a notebook cell or of exec'd code: its source from linecache
            tree = _strip_docstrings(ast.parse(textwrap.dedent(inspect.getsource(fn))))
            content = ast.unparse(tree)
            _scan(tree.body, fn.__globals__, module, acc, cells)
        except Exception:  # no source at all: its compiled code
            content = "<no source> " + hashlib.sha256(marshal.dumps(fn.__code__)).hexdigest()
            if _module_index(module) is not None:
                acc.deps.add(("module", module))
    for name in fn.__code__.co_freevars:
        content += f"\n{name} = {acc.value(cells[name]) if name in cells else '<empty>'}"
    if hasattr(fn, "__wrapped__"):
        content += f"\n__wrapped__ = {acc.value(fn.__wrapped__)}"
        label += f" of {_label(fn.__wrapped__)}" if isinstance(fn.__wrapped__, (types.FunctionType, type)) else ""
    return _Part(label, content, acc)


def _class_part(cls) -> _Part:
    label = f"{cls.__module__}:{cls.__qualname__}"
    acc = _Reach(cls.__module__)
    index, node = _locate(cls)
    module = sys.modules.get(cls.__module__)
    if node is not None and module is not None:
        content = index.text(node)
        _scan([node], vars(module), cls.__module__, acc)
        later = [s for s in index.bindings.get(cls.__qualname__, []) if "." not in cls.__qualname__]
        if later:  # ``Cls.attr = ...`` at module level, after the class statement
            content += "\n" + "\n".join(index.text(s) for s in later)
            _scan(later, vars(module), cls.__module__, acc)
    else:  # made at run time (``type(name, bases, namespace)``): its namespace describes it
        skip = {"__dict__", "__weakref__", "__doc__", "__module__", "__qualname__"}
        content = "class " + ", ".join(f"{k}={acc.value(v)}" for k, v in sorted(vars(cls).items()) if k not in skip)
    content += "\nbases: " + ", ".join(acc.value(b) for b in cls.__mro__[1:])
    return _Part(label, content, acc)


def _const_part(module: str, name: str) -> _Part:
    label = f"{module}:{name}"
    acc = _Reach(module, const=True)
    index, mod = _module_index(module), sys.modules.get(module)
    value = getattr(mod, name, _MISSING) if mod is not None else _MISSING
    stmts = index.bindings.get(name, []) if index else []
    imported = index.imports.get(name) if index else None
    if stmts and imported and imported[1] is not None and all(isinstance(s, ast.ImportFrom) for s in stmts):
        if _ours(imported[0]):  # ``from robustnb.x import NAME``: the constant of robustnb.x
            acc.deps.add(("const", imported[0], imported[1]))
        content = f"from {imported[0]} import {imported[1]}"
    else:
        content = "\n".join(index.text(s) for s in stmts) if stmts else ""
        if stmts:
            _scan(stmts, vars(mod), module, acc)
        elif not (name.startswith("__") and name.endswith("__")):  # bound at run time: the whole module
            acc.deps.add(("module", module))
    content += "\nvalue: " + (acc.value(value) if value is not _MISSING else "<missing>")
    return _Part(label, content, acc)


def _module_part(module: str) -> _Part:
    acc = _Reach(module)
    index, mod = _module_index(module), sys.modules.get(module)
    if index is None or mod is None:
        return _Part(f"{module}:*", f"<no source for {module}>", acc)
    _scan(index.tree.body, vars(mod), module, acc)
    return _Part(f"{module}:*", index.text(index.tree), acc)


def _entry_part(registry_id: int, name: str) -> _Part:
    registry = _REGISTRIES[registry_id]
    acc = _Reach()
    content = (f"entry {acc.value(registry.get(name))}\nmaker {acc.value(registry._makers[name])}\n"
               f"meta {acc.value(registry.meta(name))}")
    return _Part(f"registry {registry.kind}:{name}", content, acc)


_REGISTRIES: dict[int, Any] = {}
_FILLED: list = []


def _fill_registries() -> None:
    """Import every robustnb module that registers entries (by reading the sources), so that a key sees the
    registries as full as any experiment can find them."""
    if _FILLED:
        return
    _FILLED.append(True)
    root = Path(__file__).resolve().parent
    pattern = re.compile(r"registry\.[A-Z_]+\.(register|add|set_maker)\(")
    for path in sorted(root.rglob("*.py")):
        name = ".".join((PACKAGE,) + path.relative_to(root).with_suffix("").parts).removesuffix(".__init__")
        if _ours(name) and ".chapters" not in name and ".book" not in name and pattern.search(path.read_text()):
            importlib.import_module(name)


def _argument_code(value, types_: set, strings: set, seen: set) -> None:
    """The robustnb classes whose code runs inside an experiment through its arguments (models and their
    submodules, configs, datasets), and the strings they carry (names chosen at run time)."""
    if id(value) in seen or value is None or isinstance(value, (bool, int, float, torch.Tensor)):
        return
    seen.add(id(value))
    if isinstance(value, pd.DataFrame):  # names a frame carries (an attack column) may choose mechanisms
        strings.update(str(c) for c in value.columns)
        for c in value.columns:
            if value[c].dtype == object or isinstance(value[c].dtype, pd.CategoricalDtype):
                strings.update(v for v in value[c].tolist() if isinstance(v, str))
        return
    if isinstance(value, str):
        strings.add(value)
        return
    if isinstance(value, nn.Module):
        for m in value.modules():
            if _ours(type(m).__module__):
                types_.add(type(m))
            for k, v in vars(m).items():
                if isinstance(v, str):
                    strings.add(v)
                elif v is None or isinstance(v, (bool, int, float, torch.Tensor, nn.Module)) or k in (
                        "_parameters", "_buffers", "_modules", "robustnb_info"):
                    continue
                elif isinstance(v, (types.FunctionType, type)) or _ours(type(v).__module__):
                    _argument_code(v, types_, strings, seen)
        info = getattr(value, "robustnb_info", None) or {}
        strings.update(v for v in info.values() if isinstance(v, str))
        return
    if isinstance(value, types.FunctionType):
        if _ours(_code_module(value)):
            types_.add(value)
        return
    if isinstance(value, type):
        if _ours(value.__module__):
            types_.add(value)
        return
    if _ours(type(value).__module__):
        types_.add(type(value))
    if hasattr(value, "images") and hasattr(value, "labels") and hasattr(value, "meta"):
        return
    if dataclasses.is_dataclass(value):
        for f in dataclasses.fields(value):
            _argument_code(getattr(value, f.name, None), types_, strings, seen)
    elif isinstance(value, Mapping):
        for k, v in value.items():
            _argument_code(k, types_, strings, seen)
            _argument_code(v, types_, strings, seen)
    elif isinstance(value, (list, tuple, set, frozenset)):
        for v in value:
            _argument_code(v, types_, strings, seen)


def _strings(described, out: set) -> set:
    if isinstance(described, str):
        out.add(described)
    elif isinstance(described, Mapping):
        for k, v in described.items():
            _strings(k, out)
            _strings(v, out)
    elif isinstance(described, (list, tuple)):
        for v in described:
            _strings(v, out)
    return out


def _registered_names() -> frozenset:
    return frozenset((rid, n) for rid, r in _REGISTRIES.items() for n in r)


def _reach(roots, strings: set) -> dict:
    """Every part reachable from ``roots``, with registry entries for the names in the strings of the code
    and of ``strings`` (looked up) and for enumerated registries (all matching entries), to a fixed point."""
    seen: dict = {}
    todo, strings = list(roots), set(strings)
    registries: dict[int, Any] = {}
    enums: set = set()
    while todo:
        while todo:
            key = todo.pop()
            if key in seen:
                continue
            part = seen[key] = _part(key)
            todo.extend(d for d in part.deps if d not in seen)
            strings |= part.strings
            registries.update(part.registries)
            enums |= part.enums
        if registries:
            _fill_registries()
            _REGISTRIES.update(registries)
        for rid, registry in registries.items():
            todo.extend(("entry", rid, n) for n in registry if n in strings and ("entry", rid, n) not in seen)
        for rid, where in enums:
            todo.extend(("entry", rid, n) for n in _REGISTRIES[rid].names(**dict(where or ()))
                        if ("entry", rid, n) not in seen)
    return seen


_FINGERPRINTS: dict = {}


def _roots(fn: Callable, arguments: Mapping | None, described: Mapping | None) -> tuple[set, set[str]]:
    """Where the reach starts: ``fn`` and the robustnb classes of its arguments; the arguments' strings."""
    module = _code_module(fn) if isinstance(fn, types.FunctionType) else getattr(fn, "__module__", None)
    if not _ours(module) and isinstance(module, str):
        _OWN.add(module)  # an experiment outside the package (a test, a notebook): its own module counts
        _ours.cache_clear()
    start = _Reach()
    start.value(fn)
    roots, strings = set(start.deps), set()
    classes: set = set()
    if arguments is not None:
        seen: set = set()
        for v in arguments.values():
            _argument_code(v, classes, strings, seen)
    roots |= {("fn", c) if isinstance(c, types.FunctionType) else ("cls", c) for c in classes}
    if described is not None:
        _strings(described, strings)
    return roots, strings


def _described(arguments: Mapping | None, described: Mapping | None) -> Mapping | None:
    if described is None and arguments is not None:
        try:
            return {k: describe(v) for k, v in arguments.items()}
        except Unnameable:
            return None
    return described


def code_parts(fn: Callable, arguments: Mapping | None = None, described: Mapping | None = None) -> dict[str, str]:
    """What :func:`code_fingerprint` hashes: ``{label: digest}`` of every piece of code ``fn(**arguments)``
    reaches, each by its normalised syntax (:func:`normalised_source`): functions, classes (with their robustnb
    bases), the module constants they read, the registry entries chosen by name (in the code or the arguments'
    strings, ``described``: their :func:`describe`) or enumerated, the robustnb classes of the arguments'
    models (every submodule), configs and datasets; the whole module where something cannot be seen
    statically. Never :data:`NOT_IN_KEYS` (figures, widgets, progress bars)."""
    roots, strings = _roots(fn, arguments, _described(arguments, described))
    out: dict[str, list] = {}
    for part in _reach(roots, strings).values():
        out.setdefault(part.label, []).append(part.digest)
    return {k: v[0] if len(v) == 1 else hashlib.sha256("\0".join(sorted(v)).encode()).hexdigest()[:16]
            for k, v in sorted(out.items())}


def code_fingerprint(fn: Callable, arguments: Mapping | None = None, described: Mapping | None = None) -> str:
    """A hash of the code that computes ``fn(**arguments)`` (:func:`code_parts`): an edit to what that code
    does changes it; a docstring, a comment, formatting, a figure, or code ``fn`` does not reach does not.
    Memoised per process by function, argument classes and the registered names among the arguments' strings
    (a few milliseconds per call once the function's code has been read)."""
    described = _described(arguments, described)
    roots, strings = _roots(fn, arguments, described)
    names = {n for _, n in _registered_names()}
    memo = (fn, frozenset(roots), frozenset(strings & names), len(names))
    if memo not in _FINGERPRINTS:
        try:
            parts = code_parts(fn, arguments, described)
        except Exception as e:  # never a key that may be wrong: the result is computed, not cached
            warnings.warn(f"the code of {getattr(fn, '__qualname__', fn)} could not be fingerprinted "
                          f"({type(e).__name__}: {e}); its result is not cached")
            raise Unnameable(f"no code fingerprint for {fn!r}") from e
        h = hashlib.sha256()
        for label, digest in parts.items():
            h.update(f"{label}\0{digest}\n".encode())
        _FINGERPRINTS[memo] = h.hexdigest()[:16]
    return _FINGERPRINTS[memo]


def describe(value) -> Any:
    """A JSON-able description of an experiment's argument that determines its content: configs by their
    fields, datasets by :func:`data_spec`, cached models by their cache key, tensors and frames by a hash of
    their bytes. Anything else raises :class:`Unnameable`: a result whose inputs cannot be named is not cached."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (np.integer, np.floating, np.bool_)):
        return value.item()
    if isinstance(value, torch.Tensor):
        return {"tensor": tensor_digest({"t": value})[:16]}
    if isinstance(value, nn.Module):
        info = getattr(value, "robustnb_info", None)
        if not info or "key" not in info:
            raise Unnameable(f"{type(value).__name__} has no cache key (robustnb_info['key']): it was not made by "
                            "robustnb.cache.cached, so a result computed from it cannot be cached")
        return {"model": info["key"]}
    if isinstance(value, pd.DataFrame):
        return {"frame": frame_digest(value)[:16]}
    if hasattr(value, "images") and hasattr(value, "labels") and hasattr(value, "meta"):
        return data_spec(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {"type": type(value).__name__,
                **{f.name: describe(getattr(value, f.name)) for f in dataclasses.fields(value)}}
    if isinstance(value, Mapping):
        return {"mapping": [[describe(k), describe(v)] for k, v in value.items()]}
    if isinstance(value, (list, tuple)):
        return [describe(v) for v in value]
    raise Unnameable(f"cannot describe a {type(value).__name__} for a cache key; allowed: None, numbers, strings, "
                    "tensors, cached models, frames, datasets, dataclasses, and mappings/sequences of these")


def frame_digest(frame: pd.DataFrame) -> str:
    """SHA-256 of a frame's values, index, column names and dtypes."""
    def hashable(col: pd.Series) -> pd.Series:  # arrays in cells (e.g. per-image hits) by their exact repr
        if col.dtype != object:
            return col
        return col.map(lambda v: repr(v.tolist()) if isinstance(v, np.ndarray) else repr(v))

    h = hashlib.sha256(pd.util.hash_pandas_object(frame.apply(hashable) if len(frame.columns) else frame,
                                                  index=True).values.tobytes())
    h.update(json.dumps([[str(c), str(t)] for c, t in frame.dtypes.items()]).encode())
    return h.hexdigest()


def save_frame(path: Path, frame: pd.DataFrame, spec: Mapping) -> Path:
    """A frame as Parquet (exact values and dtypes) with its spec and checksum in the file's metadata (atomic)."""
    table = pa.Table.from_pandas(frame)
    meta = {**(table.schema.metadata or {}), b"robustnb_spec": canonical(spec).encode(),
            b"robustnb_sha256": frame_digest(frame).encode()}
    table = table.replace_schema_metadata(meta)
    return atomic_write(path, lambda f: pq.write_table(table, f))


def load_frame(path: Path, spec: Mapping) -> pd.DataFrame:
    """Read what :func:`save_frame` wrote; :class:`CacheError` if unreadable, for another spec, or damaged."""
    try:
        table = pq.read_table(path)
    except Exception as e:  # truncated, not Parquet, ...
        raise CacheError(f"{path} is unreadable ({type(e).__name__}: {e})") from e
    meta = table.schema.metadata or {}
    if meta.get(b"robustnb_spec") != canonical(spec).encode():
        raise CacheError(f"{path} was saved for a different spec")
    frame = table.to_pandas()
    if meta.get(b"robustnb_sha256") != frame_digest(frame).encode():
        raise CacheError(f"{path} is damaged: its values do not match their checksum")
    return frame


def _encode(value, frames: list, tensors: dict) -> Any:
    """A JSON structure for a result: frames and tensors replaced by references into ``frames``/``tensors``."""
    if isinstance(value, pd.DataFrame):
        frames.append(value)
        return {"frame": len(frames) - 1}
    if isinstance(value, torch.Tensor):
        tensors[str(len(tensors))] = value.detach().cpu()
        return {"tensor": str(len(tensors) - 1)}
    if isinstance(value, Mapping):
        return {"dict": [[_encode(k, frames, tensors), _encode(v, frames, tensors)] for k, v in value.items()]}
    if isinstance(value, (list, tuple)):
        return {type(value).__name__: [_encode(v, frames, tensors) for v in value]}
    if isinstance(value, (np.integer, np.floating, np.bool_)):
        value = value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return {"value": value}
    raise TypeError(f"cannot cache a {type(value).__name__} in an experiment's result; allowed: DataFrames, "
                    "tensors, numbers, strings, None, and dicts/lists/tuples of these")


def _decode(enc, frames: list, tensors: Mapping) -> Any:
    (kind, v), = enc.items()
    if kind == "frame":
        return frames[v]
    if kind == "tensor":
        return tensors[v]
    if kind == "dict":
        return {_decode(k, frames, tensors): _decode(x, frames, tensors) for k, x in v}
    if kind == "list":
        return [_decode(x, frames, tensors) for x in v]
    if kind == "tuple":
        return tuple(_decode(x, frames, tensors) for x in v)
    return v


def save_result(folder: Path, value, spec: Mapping) -> None:
    """Store an experiment's result under ``folder``: frames as Parquet, tensors in one checksummed torch file,
    and last a manifest naming the structure and holding the plain values (numbers, strings), under its own
    checksum (:func:`write_json`); a run killed before the manifest leaves nothing that is read."""
    frames, tensors = [], {}
    structure = _encode(value, frames, tensors)
    manifest = folder / "manifest.json"
    if manifest.exists():
        manifest.unlink()
    for i, f in enumerate(frames):
        save_frame(folder / f"frame{i}.parquet", f, {**spec, "part": i})
    if tensors:
        save_tensors(folder / "tensors.pt", tensors, spec)
    write_json(manifest, {"spec": canonical(spec), "structure": structure, "frames": len(frames),
                          "tensors": bool(tensors)})


def load_result(folder: Path, spec: Mapping) -> Any:
    """Read what :func:`save_result` wrote; :class:`CacheError` if incomplete, for another spec, or damaged
    (a frame, the tensors or the manifest's own values not matching their checksum)."""
    manifest = read_json(folder / "manifest.json")
    if manifest.get("spec") != canonical(spec):
        raise CacheError(f"{folder} was saved for a different spec")
    frames = [load_frame(folder / f"frame{i}.parquet", {**spec, "part": i}) for i in range(manifest["frames"])]
    tensors = load_tensors(folder / "tensors.pt", spec) if manifest["tensors"] else {}
    try:
        return _decode(manifest["structure"], frames, tensors)
    except (KeyError, IndexError, TypeError, ValueError) as e:
        raise CacheError(f"{folder}: its manifest does not match its files ({type(e).__name__})") from e


def cached_result(name: str, spec: Mapping, compute: Callable[[], Any], folder: str = "results") -> Any:
    """An experiment's result (frames, tensors, numbers in dicts/lists/tuples) from the cache, or ``compute()``
    it and store it. Verified on load; a damaged, incomplete or stale entry is recomputed and replaced (with a
    warning), never trusted. The first run returns what it stored, read back, so a rebuild shows the same."""
    path = cache_path(name, spec, folder, suffix="")
    if (path / "manifest.json").exists():
        try:
            return load_result(path, spec)
        except CacheError as e:
            warnings.warn(f"{e}; recomputing")
    save_result(path, compute(), spec)
    return load_result(path, spec)


def experiment(fn: Callable) -> Callable:
    """Cache a function's result (:func:`cached_result`), keyed by the function, its arguments
    (:func:`describe`) and the code that computes it (:func:`code_fingerprint`: the function and the robustnb
    functions, classes, constants and registry entries it reaches, by their syntax without docstrings, comments
    or formatting; never figures, widgets or progress bars): a rebuild after a prose, docstring or figure edit
    reads the result back; an edit to the code it runs recomputes it.

    The random draws inside (attack noise, random starts, corruptions) come from torch's and numpy's global
    generators seeded from the function and its arguments (the caller's generators are left as they were), so
    a result is a function of its inputs: the same whether it is computed first in a chapter or in a test,
    cached or not. ``fn(..., cache=False)`` computes without reading or writing the cache; arguments that
    cannot be named (a model the cache did not make) make the call compute, uncached, from the caller's RNG."""
    sig = inspect.signature(fn)

    @functools.wraps(fn)
    def wrapper(*args, cache: bool = True, **kwargs):
        bound = sig.bind(*args, **kwargs)
        bound.apply_defaults()
        try:
            spec = experiment_spec(fn, bound.arguments)
        except Unnameable:
            return fn(*bound.args, **bound.kwargs)
        seed = int(cache_key({k: spec[k] for k in ("function", "args")}), 16) % 2**32

        def compute():
            with _seeded(seed):
                return fn(*bound.args, **bound.kwargs)

        if not cache:
            return compute()
        return cached_result(f"{fn.__module__.rpartition('.')[2]}-{fn.__name__}", spec, compute)

    wrapper.uncached = fn
    return wrapper


class _seeded:
    """Seed torch's (CPU and CUDA) and numpy's global generators; restore them on exit."""

    def __init__(self, seed: int):
        self.seed = seed

    def __enter__(self):
        self._torch = torch.random.fork_rng(devices=list(range(torch.cuda.device_count())))
        self._torch.__enter__()
        self._numpy = np.random.get_state()
        torch.manual_seed(self.seed)
        np.random.seed(self.seed)

    def __exit__(self, *exc):
        np.random.set_state(self._numpy)
        return self._torch.__exit__(*exc)


def experiment_spec(fn: Callable, arguments: Mapping) -> dict:
    """The spec an :func:`experiment` result is stored under: the function, its arguments (:func:`describe`)
    and the code that computes it (:func:`code_fingerprint`)."""
    args = {k: describe(v) for k, v in arguments.items()}
    return {"kind": "experiment", "function": f"{fn.__module__}.{fn.__qualname__}",
            "code": code_fingerprint(fn, arguments, args), "args": args}


#: the keys' own machinery: it names results and computes none, so it is never in a key itself (a change to how
#: keys are made changes the keys through :data:`CACHE_FORMAT` or the spec, not through this list)
_NOT_CODE = frozenset(f"{__name__}:{name}" for name in (
    "_ours", "_strip_docstrings", "normalised_source", "_ModuleIndex", "_target_roots", "_module_index",
    "_bound", "_is_local", "_Part", "_Reach", "_code_module", "_label", "_call_name", "_walk", "_scan", "_dynamic",
    "_reference", "_dispatch", "_locate", "_part", "_function_part", "_class_part", "_const_part", "_module_part",
    "_entry_part", "_fill_registries", "_argument_code", "_strings", "_registered_names", "_reach", "_roots",
    "_described", "code_parts",
    "code_fingerprint", "describe", "experiment_spec"))


__all__ = ["CACHE_FORMAT", "CacheError", "Unnameable", "canonical", "cache_key", "cache_path", "dataset_fingerprint",
           "data_spec", "atomic_write", "tensor_digest", "save_tensors", "load_tensors", "cached_tensors",
           "json_digest", "write_json", "read_json",
           "cached_json", "save_checkpoint", "load_checkpoint", "cached", "code_fingerprint", "code_parts",
           "normalised_source", "describe", "frame_digest", "save_frame", "load_frame", "save_result", "load_result", "cached_result",
           "experiment", "experiment_spec"]
