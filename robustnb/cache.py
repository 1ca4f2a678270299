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
the function, its arguments (:func:`describe`: configs, dataset specs, model keys, tensor hashes) and the
source of the robustnb modules its module imports (:func:`code_fingerprint`); frames are stored as Parquet,
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
import inspect
import json
import os
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from torch import nn

from robustnb.config import cache_dir

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


# ------------------------------------------------------------------------------------------- results
def module_sources(module: str, package: str = "robustnb", root: Path | None = None) -> list[Path]:
    """The source files of ``module`` and of every ``package`` module it imports, transitively (read from the
    files' import statements, nothing is imported): the code a result computed by ``module`` depends on.
    ``root``: the package's folder (default: this package's)."""
    root = Path(root) if root is not None else Path(__file__).resolve().parent
    seen: dict[str, Path] = {}
    todo = [module]
    while todo:
        name = todo.pop()
        if name in seen or not (name == package or name.startswith(package + ".")):
            continue
        rel = Path(*name.split(".")[1:])
        path = root / rel / "__init__.py" if (root / rel).is_dir() else (root / rel).with_suffix(".py")
        if not path.exists():  # ``from robustnb.x import name`` where name is not a module
            continue
        seen[name] = path
        parent = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                todo += [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative import
                    base = ".".join(parent.split(".")[: len(parent.split(".")) - node.level + 1] + ([base] if base else []))
                todo += [base] + [f"{base}.{a.name}" for a in node.names]
    return [seen[k] for k in sorted(seen)]


def code_fingerprint(module: str, package: str = "robustnb", root: Path | None = None) -> str:
    """A hash of the source of ``module`` and of the robustnb modules it depends on (:func:`module_sources`):
    editing any of them changes the fingerprint, editing an unrelated module or a notebook does not."""
    root = Path(root) if root is not None else Path(__file__).resolve().parent
    return sources_digest(module_sources(module, package, root), root)[:16]


def sources_digest(paths, root: Path) -> str:
    """SHA-256 over source files: each one's path relative to ``root`` and its bytes."""
    h = hashlib.sha256()
    for path in paths:
        h.update(str(Path(path).relative_to(root)).encode() + b"\0" + Path(path).read_bytes() + b"\0")
    return h.hexdigest()


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
    (:func:`describe`) and the source of its module and of every robustnb module that module imports
    (:func:`code_fingerprint`): a rebuild after a prose edit reads the result back; an edit to the code it
    depends on recomputes it.

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
    """The spec an :func:`experiment` result is stored under."""
    return {"kind": "experiment", "function": f"{fn.__module__}.{fn.__qualname__}",
            "code": code_fingerprint(fn.__module__), "args": {k: describe(v) for k, v in arguments.items()}}


__all__ = ["CACHE_FORMAT", "CacheError", "Unnameable", "canonical", "cache_key", "cache_path", "dataset_fingerprint",
           "data_spec", "atomic_write", "tensor_digest", "save_tensors", "load_tensors", "cached_tensors",
           "json_digest", "write_json", "read_json",
           "cached_json", "save_checkpoint", "load_checkpoint", "cached", "module_sources", "code_fingerprint",
           "sources_digest", "describe", "frame_digest", "save_frame", "load_frame", "save_result", "load_result", "cached_result",
           "experiment", "experiment_spec"]
