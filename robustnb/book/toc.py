"""What the book is made of: the files ``_toc.yml`` lists, its parts (one per paper), the chapters (notebooks),
the repository ``_config.yml`` names, the package version (``pyproject.toml``) and the URL of the archive of
trained models and results (``_config.yml``'s ``robustnb: cache_archive``)."""

from __future__ import annotations

import tomllib
from pathlib import Path
from urllib.parse import urlparse

import yaml

from robustnb.config import ConfigError

ROOT = Path(__file__).resolve().parents[2]


def load_yaml(name: str, root: Path = ROOT) -> dict:
    path = root / name
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: run this from a checkout of the robustnb repository.")
    return yaml.safe_load(path.read_text())


def _toc_entries(entries) -> list[str]:
    """The files of a ``_toc.yml`` list of entries and of their sections and chapters, in reading order."""
    out = []
    for e in entries or []:
        if "file" in e:
            out.append(e["file"])
        out += _toc_entries(e.get("sections")) + _toc_entries(e.get("chapters"))
    return out


def toc_files(root: Path = ROOT) -> list[str]:
    """Every file named in ``_toc.yml`` (without suffix), root first, in reading order."""
    toc = load_yaml("_toc.yml", root)
    return [toc["root"], *_toc_entries(toc.get("parts")), *_toc_entries(toc.get("chapters"))]


def toc_parts(root: Path = ROOT) -> list[tuple[str, list[str]]]:
    """The parts of ``_toc.yml`` in order: (caption, the files of its chapters and their sections). In this
    book a part is one paper."""
    return [(part.get("caption", ""), _toc_entries(part.get("chapters")))
            for part in load_yaml("_toc.yml", root).get("parts") or []]


def chapters(root: Path = ROOT) -> list[Path]:
    """The executable chapters (notebooks) listed in ``_toc.yml``, in reading order."""
    paths = []
    for f in toc_files(root):
        p = (root / f).with_suffix(".ipynb")
        if p.exists():
            paths.append(p)
    return paths


def repository(root: Path = ROOT) -> tuple[str, str]:
    """``_config.yml``'s repository: its URL (no trailing slash) and branch (default ``main``)."""
    repo = load_yaml("_config.yml", root).get("repository", {})
    return repo["url"].rstrip("/"), repo.get("branch", "main")


def package_version(root: Path = ROOT) -> str:
    """The package's version, ``[project] version`` in ``pyproject.toml`` (the Colab cell installs the git tag
    ``v<version>``)."""
    return tomllib.loads((root / "pyproject.toml").read_text())["project"]["version"]


def cache_archive_url(root: Path = ROOT) -> str:
    """The URL of the ``cpu`` archive of trained models and results (``robustnb: cache_archive`` in
    ``_config.yml``; the Pages workflow attaches it to a release of the repository). Jupyter Book ignores the
    ``robustnb`` key (its schema allows keys of its own). Raises :class:`~robustnb.config.ConfigError` when the key
    is missing or not an http(s) URL."""
    url = (load_yaml("_config.yml", root).get("robustnb") or {}).get("cache_archive")
    if not isinstance(url, str) or urlparse(url).scheme not in ("http", "https") or not urlparse(url).netloc:
        raise ConfigError(f"_config.yml: robustnb: cache_archive must be the https URL of the cache archive (e.g. "
                          f"{repository(root)[0]}/releases/download/cache-cpu/robustnb-cache-cpu.tar.gz), got {url!r}.")
    return url


def no_deps_requirements(root: Path = ROOT) -> list[str]:
    """The requirements marked ``# no-deps`` in requirements.txt: installed without their declared pins, which
    would downgrade a Colab runtime (compressai's numpy<2, torchattacks' old requests)."""
    lines = (root / "requirements.txt").read_text().splitlines()
    return [ln.split("#")[0].strip() for ln in lines if ln.split("#", 1)[-1].strip() == "no-deps" and "#" in ln]
