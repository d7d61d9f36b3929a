"""A labeling site for browser tests: the real labeling app and proxy, served on loopback in front of
Orthanc, with the viewer bundle built and the admin signed in through the JSON API.

The browser test modules differ in their images, jobs and readers; what they share (bundle, ports,
config, the proxy allowing the labeling origin, the two servers, the admin, disposing the database)
is here once.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from dicomlab_cli.processes import OrthancServer, free_port
from dicomlab_labeling.config import LabelingConfig
from support.browser import ensure_bundle
from support.labeling import ADMIN, Api, create_users, make_config, write_manifest
from support.servers import LOOPBACK, serve


@dataclass
class Site:
    """A running site: the labeling service at ``base``, the proxy at ``proxy``, files under ``tmp``."""

    base: str
    proxy: str
    tmp: Path
    config: LabelingConfig
    admin: Api

    def create_job(self, name: str, records: list[dict[str, Any]] | None = None, *, manifest: str = "input.manifest",
                   manifest_uri: str | None = None, **fields: Any) -> dict[str, Any]:
        """A job over ``records`` (written to the store as ``manifests/<manifest>``) or an existing
        ``manifest_uri``; ``fields`` are the job's other JSON fields (``readersPerImage=2``...)."""
        if manifest_uri is None:
            assert records is not None, "a job needs records or a manifest"
            manifest_uri = write_manifest(self.tmp, records, name=manifest)
        status, job = self.admin.call("POST", "/admin/jobs", {"name": name, "manifestUri": manifest_uri, **fields})
        assert status == 201, job
        return dict(job)

    def users(self, names: list[str], role: str = "annotator") -> None:
        create_users(self.admin, names, role)


@contextmanager
def labeling_site(orthanc: OrthancServer, tmp: Path, **config: Any) -> Iterator[Site]:
    """Build the bundle, start the proxy and the labeling app (SQLite in ``tmp``; ``config`` replaces fields
    of the labeling config, e.g. ``token_ttl_seconds=65``) and sign the admin in."""
    from dicomlab_labeling.app import create_app as labeling_app
    from dicomlab_proxy.app import create_app as proxy_app
    from dicomlab_proxy.config import Config as ProxyConfig

    ensure_bundle()
    labeling_port, proxy_port = free_port(), free_port()
    proxy_url = f"http://{LOOPBACK}:{proxy_port}"
    settings = replace(make_config(tmp, f"sqlite:///{tmp / 'labeling.db'}", orthanc), proxy_public_url=proxy_url,
                       **config)
    proxy = proxy_app(ProxyConfig(token_keys=settings.token_keys, orthanc=orthanc.settings(),
                                  allowed_origins=(f"http://{LOOPBACK}:{labeling_port}",)))
    app = labeling_app(settings)
    try:
        with serve(proxy, port=proxy_port), serve(app, port=labeling_port) as base:
            yield Site(base=base, proxy=proxy_url, tmp=tmp, config=settings, admin=Api(base_url=base).login(*ADMIN))
    finally:
        app.extensions["dicomlab_labeling_api"].db.dispose()
