"""Manifests in the object store: ``<prefix>/<name>.jsonl`` and the sidecar ``<prefix>/<name>.summary.json``.

The manifest is streamed from the job's spooled lines into one atomic object write (a reader sees
the whole object or nothing), hashing as it goes; the summary is written after it, so a manifest
"exists" (is listed) only once both are complete.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import IO, Any
from urllib.parse import urlparse, urlunparse

from dicomlab_core.errors import BadRequest, NotFound
from dicomlab_core.objectstore import ObjectStore, StoreScope, open_store
from dicomlab_manifest.spec import MAX_LINE_CHARS, SelectionSpec
from dicomlab_manifest.state import Progress

logger = logging.getLogger(__name__)

MANIFEST_SUFFIX = ".jsonl"
SUMMARY_SUFFIX = ".summary.json"
JSONL_CONTENT_TYPE = "application/jsonl"
WRITE_BLOCK_LINES = 1024
"""Lines joined into one write and one hash update (per-line calls cost more than the line)."""


@dataclass(frozen=True)
class ManifestKeys:
    """Where one named manifest and its summary live."""

    manifest: str
    summary: str


class ManifestStore:
    """Named manifests under a prefix of one object store."""

    def __init__(self, store: ObjectStore, prefix: str, readable: StoreScope | None = None) -> None:
        self.store = store
        self.prefix = prefix.strip("/")
        self.readable = readable or StoreScope([store.url])
        """Where manifests named by URI may be read from (the store itself unless configured otherwise)."""

    def keys(self, name: str) -> ManifestKeys:
        base = f"{self.prefix}/{name}" if self.prefix else name
        return ManifestKeys(base + MANIFEST_SUFFIX, base + SUMMARY_SUFFIX)

    def exists(self, name: str) -> bool:
        keys = self.keys(name)
        return self.store.exists(keys.summary) or self.store.exists(keys.manifest)

    def write_manifest(self, name: str, lines: Iterable[bytes]) -> tuple[int, int, str]:
        """Write the lines (each ending in a newline) atomically; returns (lines, bytes, sha256 hex)."""
        digest = hashlib.sha256()
        count = size = 0
        block: list[bytes] = []
        with self.store.open_write(self.keys(name).manifest, JSONL_CONTENT_TYPE) as handle:
            for line in lines:
                if len(line) - 1 > MAX_LINE_CHARS:
                    raise BadRequest(f"a manifest line is {len(line) - 1} characters (limit {MAX_LINE_CHARS})")
                block.append(line)
                if len(block) == WRITE_BLOCK_LINES:
                    size += _write_block(handle, digest, block)
                    count += len(block)
                    block = []
            size += _write_block(handle, digest, block)
            count += len(block)
        return count, size, digest.hexdigest()

    def write_summary(self, name: str, summary: dict[str, Any]) -> None:
        body = json.dumps(summary, indent=2, sort_keys=True).encode() + b"\n"
        self.store.put_bytes(self.keys(name).summary, body, "application/json")

    def summary(self, name: str) -> dict[str, Any]:
        try:
            data: dict[str, Any] = json.loads(self.store.get_bytes(self.keys(name).summary))
        except NotFound:
            raise NotFound(f"no manifest named {name!r}") from None
        return data

    def list(self) -> list[dict[str, Any]]:
        """Short entries for every manifest with a summary, sorted by name."""
        entries = []
        for key in self.store.list(self.prefix + "/" if self.prefix else ""):
            if not key.endswith(SUMMARY_SUFFIX):
                continue
            name = key.rsplit("/", 1)[-1][: -len(SUMMARY_SUFFIX)]
            try:
                summary = self.summary(name)
            except NotFound:
                continue
            entries.append({"name": name, "instances": summary.get("instances"), "created": summary.get("created"),
                            "manifest": summary.get("manifest"), "mode": summary.get("mode"),
                            "sha256": summary.get("sha256")})
        return sorted(entries, key=lambda e: str(e["name"]))

    def read_lines(self, ref: str, *, field: str) -> Iterator[dict[str, Any]]:
        """The lines of a manifest named ``ref`` here, or at an ``s3://``/``file://`` URI (input or output)
        inside :attr:`readable`; a URI anywhere else is refused with one message naming ``field``."""
        if ref.startswith(("s3://", "file://")):
            store_url, key = self.readable.locate(ref, field=field)
            store, what = open_store(store_url), ref
        else:
            store, key, what = self.store, self.keys(ref).manifest, repr(ref)
        try:
            data = store.get_bytes(key)
        except NotFound:
            raise BadRequest(f"{field}: no manifest {what} in the object store") from None
        for number, raw in enumerate(data.splitlines(), 1):
            if not raw.strip():
                continue
            try:
                item = json.loads(raw)
            except ValueError:
                raise BadRequest(f"{field}: line {number} of {what} is not JSON") from None
            if isinstance(item, dict):
                yield item


def _write_block(handle: IO[bytes], digest: hashlib._Hash, block: list[bytes]) -> int:
    """Write and hash a block of lines at once; returns its size in bytes."""
    data = b"".join(block)
    handle.write(data)
    digest.update(data)
    return len(data)


def exclusion_keys(lines: Iterable[dict[str, Any]]) -> Iterator[str]:
    """Keys that exclude an instance: its SOP Instance UID and its Orthanc ID (``source``)."""
    for item in lines:
        sop = item.get("sop-instance-uid")
        if isinstance(sop, str) and sop:
            yield f"sop:{sop}"
        source = item.get("source")
        if isinstance(source, str) and source:
            yield f"oid:{source}"


def public_url(url: str) -> str:
    """``url`` without user information (never write credentials into a summary)."""
    parsed = urlparse(url)
    if parsed.username or parsed.password:
        host = parsed.hostname or ""
        netloc = host + (f":{parsed.port}" if parsed.port else "")
        parsed = parsed._replace(netloc=netloc)
    return urlunparse(parsed)


def compose_summary(spec: SelectionSpec, progress: Progress, *, manifest: str, lines: int, size: int, sha256: str,
                    orthanc_url: str, job_id: str) -> dict[str, Any]:
    """The sidecar: counts, skips by reason, filters, source (no credentials), cursor, time, content hash."""
    return {
        "name": spec.name,
        "format": "groundtruth-input-manifest/jsonl",
        "manifest": manifest,
        "instances": lines,
        "bytes": size,
        "sha256": sha256,
        "labels": list(spec.labels),
        "mode": "incremental" if spec.incremental else "full",
        "truncated": progress.truncated,
        "filters": {k: v for k, v in spec.to_dict().items() if k not in ("name", "overwrite")},
        "counts": dict(sorted(progress.counts.items())),
        "skipped": dict(sorted(progress.skipped.items())),
        "source": {"orthanc": public_url(orthanc_url),
                   "changes": {"from": progress.low if spec.incremental else None, "cursor": progress.high}},
        "created": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "job": job_id,
    }
