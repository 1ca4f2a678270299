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
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Mapping

import pandas as pd
import torch
from torch import nn

from robustnb.config import cache_dir

CACHE_FORMAT = 2  # bump to invalidate every cached artifact after an incompatible change


class CacheError(ValueError):
    """A cached file does not hold what its key promises (other spec, damaged, truncated)."""


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


def cached_json(name: str, spec: Mapping, compute: Callable[[], Any], folder: str = "results") -> Any:
    """A JSON-able result from the cache, or ``compute()`` it and store it with its spec."""
    path = cache_path(name, spec, folder, suffix=".json")
    if path.exists():
        try:
            payload = json.loads(path.read_text())
            if payload.get("spec") == canonical(spec):
                return payload["value"]
            warnings.warn(f"{path} was saved for a different spec; recomputing")
        except (ValueError, KeyError, AttributeError) as e:
            warnings.warn(f"{path} is unreadable ({type(e).__name__}); recomputing")
    value = compute()
    text = json.dumps({"spec": canonical(spec), "value": value})
    atomic_write(path, lambda f: f.write(text), mode="w")
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


__all__ = ["CACHE_FORMAT", "CacheError", "canonical", "cache_key", "cache_path", "dataset_fingerprint",
           "data_spec", "atomic_write", "tensor_digest", "save_tensors", "load_tensors", "cached_tensors",
           "cached_json", "save_checkpoint", "load_checkpoint", "cached"]
