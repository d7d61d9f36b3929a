"""The manifest service's parts, wired once from a :class:`Config` and shared by the HTTP app and the CLI."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests

from dicomlab_core.errors import BadRequest, Conflict
from dicomlab_core.objectstore import open_store
from dicomlab_core.orthanc import OrthancClient
from dicomlab_manifest.builder import ManifestBuilder
from dicomlab_manifest.config import Config
from dicomlab_manifest.jobs import JobRunner
from dicomlab_manifest.selection import patient_key_function
from dicomlab_manifest.spec import SelectionSpec, parse_spec
from dicomlab_manifest.writer import ManifestStore

logger = logging.getLogger(__name__)


def pin_environment(client: OrthancClient) -> OrthancClient:
    """Resolve proxy and CA-bundle settings from the environment once, instead of on every request.

    ``requests`` re-reads the whole environment (proxies, ``no_proxy``, CA bundle) for each request;
    with a large environment that cost more per call than Orthanc's answer to a series' instance list
    (measured in ``benchmarks/results/README.md``). A build makes thousands of calls, and the environment
    does not change under it.
    """
    for session in (client.session, client._no_retry):
        session.proxies.update(requests.utils.get_environ_proxies(client.settings.base))
        bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
        if bundle:
            session.verify = bundle
        session.trust_env = False
    return client


class ManifestService:
    """Orthanc client, manifest store, patient-key function and (for the HTTP app) the job runner."""

    def __init__(self, config: Config, *, client: OrthancClient | None = None) -> None:
        self.config = config
        self.client = client or pin_environment(OrthancClient(config.orthanc))
        self.manifests = ManifestStore(open_store(config.store_url), config.manifest_prefix, config.read_scope())
        self.patient_key = patient_key_function(config.patient_key_secret.reveal())
        self._runner: JobRunner | None = None

    def parse(self, data: Any) -> SelectionSpec:
        return parse_spec(data, patient_key=self.patient_key,
                          default_sop_class_check=self.config.sop_class_check.value)

    def precheck(self, spec: SelectionSpec) -> None:
        """Cheap checks before a job is queued, so the caller gets a 400/409 now rather than a failed job."""
        if not spec.overwrite and self.manifests.exists(spec.name):
            raise Conflict(f"name: a manifest named {spec.name!r} exists; choose another name or set overwrite")
        refs = [("exclude_manifests", ref) for ref in spec.exclude_manifests]
        for field, ref in refs:
            if ref.startswith(("s3://", "file://")):
                self.manifests.readable.locate(ref, field=field)  # refused now, not in a failed job
                continue
            if not self.manifests.store.exists(self.manifests.keys(ref).manifest):
                raise BadRequest(f"{field}: no manifest named {ref!r}")
        if spec.since_manifest is not None and not self.manifests.store.exists(
                self.manifests.keys(spec.since_manifest).summary):
            raise BadRequest(f"since_manifest: no manifest named {spec.since_manifest!r}")

    def builder(self, spec: SelectionSpec, job_dir: Path, job_id: str = "",
                on_progress: Callable[[dict[str, Any]], None] | None = None) -> ManifestBuilder:
        config = self.config
        return ManifestBuilder(spec, client=self.client, manifests=self.manifests, job_dir=job_dir,
                               patient_key=self.patient_key, page_size=config.page_size,
                               changes_page_size=config.changes_page_size, workers=config.workers,
                               job_id=job_id, on_progress=on_progress)

    @property
    def runner(self) -> JobRunner:
        if self._runner is None:
            self._runner = JobRunner(self.config.state_dir / "jobs", self.builder, self.parse,
                                     threads=self.config.job_threads)
        return self._runner

    def close(self) -> None:
        if self._runner is not None:
            self._runner.shutdown(wait=False)
        self.client.close()
