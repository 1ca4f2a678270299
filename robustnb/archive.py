"""One archive of trained models and results: ``python -m robustnb cache export`` / ``import``.

A reader who wants to look rather than retrain fetches the archive the book's build made and imports it into
their cache (``ROBUSTNB_CACHE``); every chapter then reads its models and results back instead of computing them.

The archive is a ``.tar.gz`` holding the cache's ``models/``, ``results/`` and ``tuning/`` folders (decoded
datasets are not included: they are made from the reader's data files) and ``manifest.json`` first: the package's
cache format (:data:`robustnb.cache.CACHE_FORMAT`), the time and the preset label it was made with, and per file
its path, size and SHA-256. :func:`import_archive` refuses, with :class:`ArchiveError` naming the problem, an
archive whose manifest is missing or of another cache format, a member outside the three folders (or a link, or a
path leaving the cache), a member not in the manifest or a manifest entry without its member, and a file whose size
or checksum differs. Nothing is written before the whole archive has been checked, each file is written through
:func:`robustnb.cache.atomic_write`, and a file the reader already has is never overwritten: an identical one is
counted as present, a different one is kept and reported (``conflicts``).

Every entry also verifies itself when a chapter reads it (its spec and a checksum of its content are inside), so an
imported file is trusted exactly as much as one the reader computed.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import time
from pathlib import Path, PurePosixPath

from robustnb.cache import CACHE_FORMAT, atomic_write
from robustnb.config import ConfigError, cache_dir

#: the cache folders an archive carries (trained models, experiment results, tuning results)
FOLDERS = ("models", "results", "tuning")
MANIFEST = "manifest.json"
ARCHIVE_KIND = "robustnb-cache"


class ArchiveError(ConfigError):
    """An archive that cannot be imported: corrupt, incomplete, of another cache format, or unsafe."""


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _files(cache: Path) -> list[Path]:
    return sorted(p for folder in FOLDERS for p in (cache / folder).rglob("*")
                  if p.is_file() and not p.is_symlink() and not p.name.startswith(".tmp"))


def export_archive(out: str | Path, cache: str | Path | None = None, label: str = "") -> dict:
    """Write the cache's models, results and tuning results to a new ``.tar.gz`` at ``out`` (never overwriting a
    file; the folder must exist) with a manifest of sizes and SHA-256 checksums; returns the manifest.
    ``label``: free text stored in the manifest (e.g. the preset the cache was built at)."""
    out = Path(out)
    if out.exists() or out.is_symlink():
        raise ConfigError(f"{out} exists: not overwriting it. Remove it or name another file.")
    if not out.name.endswith((".tar.gz", ".tgz")):
        raise ConfigError(f"{out}: name the archive with .tar.gz (or .tgz), e.g. robustnb-cache-cpu.tar.gz.")
    if not out.absolute().parent.is_dir():
        raise ConfigError(f"{out}: the folder {out.absolute().parent} does not exist.")
    cache = Path(cache) if cache is not None else cache_dir()
    files = _files(cache)
    entries = []
    for p in files:
        data = p.read_bytes()
        entries.append({"path": p.relative_to(cache).as_posix(), "size": len(data), "sha256": _sha256(data)})
    manifest = {"kind": ARCHIVE_KIND, "cache_format": CACHE_FORMAT, "label": str(label),
                "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "files": entries}

    def write(f):
        with tarfile.open(fileobj=f, mode="w:gz") as tar:
            body = json.dumps(manifest, indent=1, sort_keys=True).encode()
            info = tarfile.TarInfo(MANIFEST)
            info.size, info.mtime = len(body), int(time.time())
            tar.addfile(info, io.BytesIO(body))
            for p, e in zip(files, entries):
                info = tarfile.TarInfo(e["path"])
                info.size, info.mtime = e["size"], int(p.stat().st_mtime)
                with p.open("rb") as src:
                    tar.addfile(info, src)

    with open(out, "xb") as f:  # exclusive: never replaces a file created meanwhile
        write(f)
    return manifest


def _safe(name: str) -> PurePosixPath:
    path = PurePosixPath(name)
    if path.is_absolute() or ".." in path.parts or len(path.parts) < 2 or path.parts[0] not in FOLDERS:
        raise ArchiveError(f"archive member {name!r} is outside the cache folders {', '.join(FOLDERS)}: refusing "
                           "the archive.")
    return path


def read_archive(path: str | Path) -> tuple[dict, dict[str, bytes]]:
    """The manifest and the files of an archive, every one checked (:class:`ArchiveError` otherwise); nothing is
    written."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path} is not a file: name an archive made by `python -m robustnb cache export`.")
    try:
        with tarfile.open(path, mode="r:gz") as tar:
            members = tar.getmembers()
            names = [m.name for m in members]
            if MANIFEST not in names:
                raise ArchiveError(f"{path} has no {MANIFEST}: not an archive made by `python -m robustnb cache "
                                   "export`.")
            manifest = json.loads(tar.extractfile(MANIFEST).read())
            files = {}
            for m in members:
                if m.name == MANIFEST:
                    continue
                _safe(m.name)
                if not m.isfile():
                    raise ArchiveError(f"archive member {m.name!r} is not a plain file (a link or a device): refusing "
                                       "the archive.")
                files[m.name] = tar.extractfile(m).read()
    except (tarfile.TarError, EOFError, OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ArchiveError(f"{path} cannot be read as a robustnb cache archive ({type(e).__name__}: {e}); it may be "
                           "truncated or corrupt: download it again.") from None
    if not isinstance(manifest, dict) or manifest.get("kind") != ARCHIVE_KIND:
        raise ArchiveError(f"{path}: its manifest is not a robustnb cache manifest.")
    if manifest.get("cache_format") != CACHE_FORMAT:
        raise ArchiveError(f"{path} was made with cache format {manifest.get('cache_format')!r}; this robustnb reads "
                           f"format {CACHE_FORMAT}: use an archive built by this version of the book.")
    listed = {e["path"]: e for e in manifest.get("files", [])}
    missing = sorted(set(listed) - set(files))
    extra = sorted(set(files) - set(listed))
    if missing or extra:
        raise ArchiveError(f"{path} does not match its manifest: missing {missing[:3]}{'...' if len(missing) > 3 else ''}"
                           f", not listed {extra[:3]}{'...' if len(extra) > 3 else ''}.")
    for name, data in files.items():
        e = listed[name]
        if len(data) != e["size"] or _sha256(data) != e["sha256"]:
            raise ArchiveError(f"{path}: {name} does not match its checksum in the manifest (corrupt archive): nothing "
                               "was imported.")
    return manifest, files


def import_archive(path: str | Path, cache: str | Path | None = None) -> dict:
    """Check the whole archive (:func:`read_archive`), then add its files to the cache, never overwriting one:
    returns ``{"added", "present", "conflicts": [paths kept as the reader had them], "label"}``."""
    manifest, files = read_archive(path)
    cache = Path(cache) if cache is not None else cache_dir()
    added, present, conflicts = 0, 0, []
    for name, data in sorted(files.items(), key=lambda kv: (kv[0].endswith(MANIFEST), kv[0])):  # manifests last
        target = cache / PurePosixPath(name)
        if target.exists() or target.is_symlink():
            if target.is_file() and _sha256(target.read_bytes()) == _sha256(data):
                present += 1
            else:
                conflicts.append(name)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(target, lambda f, data=data: f.write(data))
        added += 1
    return {"added": added, "present": present, "conflicts": conflicts, "label": manifest.get("label", "")}


__all__ = ["ArchiveError", "FOLDERS", "export_archive", "import_archive", "read_archive"]
