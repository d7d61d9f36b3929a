"""Fixtures for the proxy tests: studies in the shared Orthanc, signing keys, the proxy in-process."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import pytest
import requests
from proxy_helpers import ALLOWED_ORIGIN, SERVICE_TOKEN, Proxy, Studies, make_dicom, upload
from support.servers import serve

from dicomlab_cli.processes import OrthancServer, free_port
from dicomlab_core.config import Secret
from dicomlab_core.orthanc import OrthancClient
from dicomlab_core.tokens import KeyRing, TokenSigner
from dicomlab_proxy.app import create_app
from dicomlab_proxy.config import Config


@pytest.fixture(scope="session")
def studies(orthanc_client: OrthancClient) -> Studies:
    """Two small studies (A, B) and one with an ~8 MB instance, uploaded to the shared Orthanc."""
    return Studies(a=upload(orthanc_client, make_dicom("CT_small.dcm")),
                   b=upload(orthanc_client, make_dicom("MR_small.dcm")),
                   big=upload(orthanc_client, make_dicom("CT_small.dcm", big_bytes=8 * 1024 * 1024)))


@pytest.fixture(scope="session")
def key_entry() -> str:
    return KeyRing.generate_entry("t1")


def proxy_config(server: OrthancServer, key_entry: str, public_url: str, **overrides: Any) -> Config:
    config = Config(token_keys=(Secret(key_entry),), orthanc=server.settings(read_timeout=20.0),
                    allowed_origins=(ALLOWED_ORIGIN,), public_url=public_url,
                    service_tokens=(Secret(SERVICE_TOKEN),), rate_limit_per_second=1000, rate_limit_burst=5000)
    return replace(config, **overrides)


@pytest.fixture(scope="session")
def start_proxy(orthanc: OrthancServer, key_entry: str) -> Callable[..., Any]:
    """Start another in-process proxy with config overrides (a context manager yielding :class:`Proxy`)."""
    from contextlib import contextmanager

    @contextmanager
    def start(**overrides: Any) -> Iterator[Proxy]:
        port = free_port()
        public = overrides.pop("public_url", f"http://127.0.0.1:{port}")
        config = proxy_config(orthanc, key_entry, public, **overrides)
        with serve(create_app(config), port=port):
            yield Proxy(f"http://127.0.0.1:{port}", config, TokenSigner(KeyRing.parse(config.token_keys)))

    return start


@pytest.fixture(scope="session")
def proxy(start_proxy: Callable[..., Any], studies: Studies) -> Iterator[Proxy]:
    """The proxy under test, on a loopback port, in front of the shared Orthanc."""
    with start_proxy() as running:
        yield running


@pytest.fixture(scope="session")
def direct(orthanc: OrthancServer) -> Iterator[requests.Session]:
    session = requests.Session()
    session.auth = (orthanc.username, orthanc.password.reveal())
    yield session
    session.close()
