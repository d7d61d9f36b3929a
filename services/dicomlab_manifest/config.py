"""Configuration of the manifest service and CLI, from ``DICOMLAB_MANIFEST__*`` variables."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from dicomlab_core.config import Secret
from dicomlab_core.objectstore import StoreScope
from dicomlab_core.orthanc import OrthancSettings

PREFIX = "DICOMLAB_MANIFEST"


class SopClassCheck(StrEnum):
    """How the SOP class of candidate instances is verified (Orthanc 1.10 keeps it in per-instance metadata)."""

    SERIES = "series"
    """The SOP class of each series' first single-frame instance (read in bulk); multi-frame checked per instance."""
    INSTANCE = "instance"
    """The SOP class of every instance, read with its listing: exact, ~50% more Orthanc work per instance."""


@dataclass(frozen=True)
class Config:
    """Settings of the manifest service (HTTP API and ``dicomlab manifest`` CLI)."""

    orthanc: OrthancSettings = field(default_factory=OrthancSettings)
    """Where Orthanc is (``DICOMLAB_MANIFEST__ORTHANC__URL`` etc.)."""
    patient_key_secret: Secret = Secret("")
    """HMAC key for the non-reversible patient key written to manifests (required)."""
    service_token: Secret = Secret("")
    """Bearer token callers of the HTTP API must present (required by the HTTP service, not the CLI)."""
    store_url: str = "file:///var/lib/dicomlab/store"
    """Object store root for manifests: ``file:///path`` or ``s3://bucket/prefix``."""
    extra_read_stores: tuple[str, ...] = ()
    """Further object-store roots (``s3://bucket/prefix`` or ``file:///dir``, comma-separated) whose manifests
    ``exclude_manifests`` may name by URI; ``store_url`` is always allowed, any other URI is refused with one
    message (default none)."""
    manifest_prefix: str = "manifests"
    """Key prefix of manifests and their summaries in the object store."""
    state_dir: Path = Path("/var/lib/dicomlab/manifest-state")
    """Local folder for job state (cursor, progress, spooled lines) so a crashed build resumes."""
    page_size: int = 100
    """Studies per listing page (one checkpoint per page)."""
    changes_page_size: int = 1000
    """Changes per ``/changes`` page in incremental builds (one checkpoint per page)."""
    workers: int = 4
    """Concurrent Orthanc requests per build while fetching series and instance lists."""
    job_threads: int = 2
    """Manifest builds that may run at the same time in one service process."""
    sync_wait_seconds: float = 30.0
    """How long ``POST /manifests?sync=true`` waits for the build before answering 202 instead."""
    sop_class_check: SopClassCheck = SopClassCheck.SERIES
    """Default SOP class verification: ``series`` (fast) or ``instance`` (exact, slow)."""
    log_level: str = "INFO"
    """Log level of the service."""

    def validate(self) -> None:
        if not self.patient_key_secret:
            raise ValueError(f"{PREFIX}__PATIENT_KEY_SECRET is required (the HMAC key of patient keys)")
        if self.page_size < 1 or self.changes_page_size < 1 or self.workers < 1 or self.job_threads < 1:
            raise ValueError("page sizes, workers and job_threads must be at least 1")
        if ".." in self.manifest_prefix.split("/"):
            raise ValueError(f"{PREFIX}__MANIFEST_PREFIX must not contain '..'")
        try:
            self.read_scope()
        except ValueError as exc:
            raise ValueError(f"{PREFIX}__STORE_URL / {PREFIX}__EXTRA_READ_STORES: {exc}") from None

    def read_scope(self) -> StoreScope:
        """Where URIs in requests may point: ``store_url`` plus ``extra_read_stores``."""
        return StoreScope((self.store_url, *self.extra_read_stores))
