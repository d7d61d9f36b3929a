"""The built labeling UI bundle: where its files are and their Subresource Integrity hashes.

``scripts/build_frontend.py`` (``make frontend``) writes ``static/dist/manifest.json``::

    {"version": 1, "entries": {"gt-worker": {"file": "gt-worker-<hash>.js", "integrity": "sha384-...",
                                             "imports": [{"file": ..., "integrity": ...}], "css": [...]}}}

Pages and the Ground Truth template link an entry with :meth:`AssetManifest.tags_for` (a module
script with ``integrity`` + ``crossorigin``, ``modulepreload`` links for its chunks, its CSS).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from functools import lru_cache
from http import HTTPStatus
from pathlib import Path
from typing import Any

from dicomlab_core.errors import ServiceError

logger = logging.getLogger(__name__)

DIST_DIR = Path(__file__).resolve().parent / "static" / "dist"
"""Where ``make frontend`` puts the bundle."""
MANIFEST_NAME = "manifest.json"


class AssetsMissing(ServiceError):
    """The UI bundle has not been built (run ``make frontend``)."""

    status = HTTPStatus.SERVICE_UNAVAILABLE


@dataclass(frozen=True)
class Asset:
    """One built file and its SRI hash."""

    file: str
    integrity: str

    def url(self, base: str) -> str:
        return f"{base.rstrip('/')}/{self.file}"


@dataclass(frozen=True)
class Entry:
    """One entry point: its module, the chunks it imports (transitively) and its CSS."""

    name: str
    module: Asset
    imports: tuple[Asset, ...]
    css: tuple[Asset, ...]


@dataclass(frozen=True)
class AssetManifest:
    """The parsed ``manifest.json``."""

    entries: dict[str, Entry]
    dist_dir: Path

    def entry(self, name: str) -> Entry:
        try:
            return self.entries[name]
        except KeyError:
            raise AssetsMissing(f"the UI bundle has no entry {name!r}: rebuild it with `make frontend`") from None

    def tags_for(self, name: str, base: str, *, css: tuple[str, ...] = ("style",)) -> dict[str, Any]:
        """What a page needs to load ``name`` from ``base``: script, preloads and stylesheets (URL + SRI)."""
        entry = self.entry(name)
        styles = [*(self.entry(c).module for c in css if c in self.entries), *entry.css]
        return {
            "script": {"url": entry.module.url(base), "integrity": entry.module.integrity},
            "preloads": [{"url": a.url(base), "integrity": a.integrity} for a in entry.imports],
            "styles": [{"url": a.url(base), "integrity": a.integrity} for a in styles],
        }


def _asset(raw: dict[str, Any]) -> Asset:
    return Asset(file=str(raw["file"]), integrity=str(raw["integrity"]))


def load_manifest(dist_dir: Path | None = None) -> AssetManifest:
    """Read the manifest in ``dist_dir`` (default :data:`DIST_DIR`); :class:`AssetsMissing` when never built."""
    dist_dir = dist_dir or DIST_DIR
    path = dist_dir / MANIFEST_NAME
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        raise AssetsMissing(f"{path} is missing: build the labeling UI with `make frontend`") from None
    entries = {
        name: Entry(
            name=name,
            module=_asset(item),
            imports=tuple(_asset(i) for i in item.get("imports", [])),
            css=tuple(_asset(c) for c in item.get("css", [])),
        )
        for name, item in raw["entries"].items()
    }
    return AssetManifest(entries=entries, dist_dir=dist_dir)


@lru_cache(maxsize=4)
def _cached(dist_dir: Path, mtime_ns: int) -> AssetManifest:
    return load_manifest(dist_dir)


def manifest(dist_dir: Path | None = None) -> AssetManifest:
    """The manifest, re-read only when the file changes (a rebuild under a running dev server)."""
    dist_dir = dist_dir or DIST_DIR
    path = dist_dir / MANIFEST_NAME
    try:
        mtime = path.stat().st_mtime_ns
    except FileNotFoundError:
        raise AssetsMissing(f"{path} is missing: build the labeling UI with `make frontend`") from None
    return _cached(dist_dir, mtime)
