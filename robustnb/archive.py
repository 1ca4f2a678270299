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

:func:`import_archive` also takes an ``http(s)`` URL (the book's ``cpu`` archive, a release asset named in
``_config.yml``): it is downloaded to a temporary file first (:func:`download`, which names the URL in its error),
then checked and imported like a local file.

Every entry also verifies itself when a chapter reads it (its spec and a checksum of its content are inside), so an
imported file is trusted exactly as much as one the reader computed.
"""

from __future__ import annotations

import hashlib
import http.client
import io
import json
import shutil
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from urllib.parse import urlparse

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


def read_archive(path: str | Path, source: str | None = None) -> tuple[dict, dict[str, bytes]]:
    """The manifest and the files of an archive, every one checked (:class:`ArchiveError` otherwise); nothing is
    written. ``source``: what the errors call the archive (default ``path``; the URL of a downloaded one)."""
    path = Path(path)
    shown = source or path
    if not path.is_file():
        raise ConfigError(f"{shown} is not a file: name an archive made by `python -m robustnb cache export`.")
    try:
        with tarfile.open(path, mode="r:gz") as tar:
            members = tar.getmembers()
            names = [m.name for m in members]
            if MANIFEST not in names:
                raise ArchiveError(f"{shown} has no {MANIFEST}: not an archive made by `python -m robustnb cache "
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
        raise ArchiveError(f"{shown} cannot be read as a robustnb cache archive ({type(e).__name__}: {e}); it may be "
                           "truncated or corrupt: download it again.") from None
    if not isinstance(manifest, dict) or manifest.get("kind") != ARCHIVE_KIND:
        raise ArchiveError(f"{shown}: its manifest is not a robustnb cache manifest.")
    if manifest.get("cache_format") != CACHE_FORMAT:
        raise ArchiveError(f"{shown} was made with cache format {manifest.get('cache_format')!r}; this robustnb reads "
                           f"format {CACHE_FORMAT}: use an archive built by this version of the book.")
    listed = {e["path"]: e for e in manifest.get("files", [])}
    missing = sorted(set(listed) - set(files))
    extra = sorted(set(files) - set(listed))
    if missing or extra:
        raise ArchiveError(f"{shown} does not match its manifest: missing {missing[:3]}{'...' if len(missing) > 3 else ''}"
                           f", not listed {extra[:3]}{'...' if len(extra) > 3 else ''}.")
    for name, data in files.items():
        e = listed[name]
        if len(data) != e["size"] or _sha256(data) != e["sha256"]:
            raise ArchiveError(f"{shown}: {name} does not match its checksum in the manifest (corrupt archive): nothing "
                               "was imported.")
    return manifest, files


def is_url(source: str | Path) -> bool:
    """Whether ``source`` names an archive to download (``http://`` or ``https://``) rather than a local file."""
    return isinstance(source, str) and urlparse(source).scheme in ("http", "https")


@contextmanager
def download(url: str, timeout: float = 60.0):
    """Download ``url`` to a temporary ``.tar.gz`` (removed on exit) and yield its path. Redirects are followed
    (a GitHub release asset redirects to its storage); ``timeout``: seconds without data before giving up. A failure
    (HTTP error, no network, a cut-off transfer) raises :class:`ArchiveError` naming the URL."""
    with tempfile.TemporaryDirectory(prefix="robustnb-archive-") as tmp:
        path = Path(tmp) / "archive.tar.gz"
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response, open(path, "xb") as f:
                shutil.copyfileobj(response, f, length=1 << 20)
                expected = response.headers.get("Content-Length")
            # urllib ends a short body without an error: compare with the announced length
            if expected is not None and path.stat().st_size != int(expected):
                raise ArchiveError(f"cannot download {url}: the transfer was cut off after {path.stat().st_size} of "
                                   f"{int(expected)} bytes: try again.")
        except urllib.error.HTTPError as e:
            raise ArchiveError(f"cannot download {url}: HTTP {e.code} {e.reason} (is the address right, and has "
                               "the book's workflow attached the archive to that release?)") from None
        except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
            reason = getattr(e, "reason", None) or e
            raise ArchiveError(f"cannot download {url}: {reason} (no network, or the transfer was cut off: try "
                               "again)") from None
        yield path


def import_archive(path: str | Path, cache: str | Path | None = None) -> dict:
    """Check the whole archive (:func:`read_archive`), then add its files to the cache, never overwriting one:
    returns ``{"added", "present", "conflicts": [paths kept as the reader had them], "label"}``. ``path``: a local
    archive, or an ``http(s)`` URL downloaded first (:func:`download`)."""
    if is_url(path):
        with download(str(path)) as local:
            return _import(local, cache, source=str(path))
    return _import(path, cache)


def _import(path: str | Path, cache: str | Path | None, source: str | None = None) -> dict:
    manifest, files = read_archive(path, source)
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


__all__ = ["ArchiveError", "FOLDERS", "download", "export_archive", "import_archive", "is_url", "read_archive"]
