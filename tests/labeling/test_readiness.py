"""``/readyz`` of the labeling and manifest services answers promptly when Orthanc or the database hangs.

Orthanc is really stopped (SIGSTOP: its port still accepts connections, nothing answers), and a bare
listening socket stands in for a hung server. The old path waited 60 s per read and retried 3 times.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from selfhosted_support import database_url, make_config

from dicomlab_cli.processes import OrthancServer
from dicomlab_core.config import Secret
from dicomlab_core.errors import ServiceUnavailable
from dicomlab_core.orthanc import OrthancSettings
from dicomlab_core.web import BoundedCheck
from dicomlab_labeling.app import create_app as create_labeling_app
from dicomlab_manifest.app import create_app as create_manifest_app
from dicomlab_manifest.config import Config as ManifestConfig

BOUND_S = 20.0
"""Far above the probe deadline (≤ 3 s) and far below the old retried path (~240 s)."""


def labeling_app(tmp_path: Path, settings: OrthancSettings, orthanc: OrthancServer) -> Flask:
    config = make_config(tmp_path, database_url("sqlite", tmp_path, None), orthanc)
    return create_labeling_app(replace(config, orthanc=settings))


def manifest_app(tmp_path: Path, settings: OrthancSettings, orthanc: OrthancServer) -> Flask:
    config = ManifestConfig(orthanc=settings, patient_key_secret=Secret("k" * 32), service_token=Secret("t" * 32),
                            store_url=f"file://{tmp_path / 'store'}", state_dir=tmp_path / "state")
    return create_manifest_app(config, resume_jobs=False)


APPS = {"labeling": labeling_app, "manifest": manifest_app}


def probe(app: Flask) -> tuple[int, dict[str, Any]]:
    """GET /readyz in a thread; fails the test if no answer comes within BOUND_S."""
    result: list[tuple[int, dict[str, Any]]] = []

    def run() -> None:
        response = app.test_client().get("/readyz")
        result.append((response.status_code, response.get_json()))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(BOUND_S)
    assert result, f"/readyz did not answer within {BOUND_S:g} s"
    return result[0]


@pytest.fixture(scope="module")
def stoppable_orthanc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OrthancServer]:
    server = OrthancServer(tmp_path_factory.mktemp("stoppable-orthanc")).start()
    yield server
    os.kill(server.pid or 0, signal.SIGCONT)
    server.stop()


@pytest.fixture
def hung_socket() -> Iterator[str]:
    """A port that accepts TCP connections (the kernel's backlog) and never answers a byte."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    sock.close()


@pytest.mark.parametrize("service", sorted(APPS))
def test_readyz_answers_promptly_when_orthanc_is_stopped(service: str, tmp_path: Path,
                                                         stoppable_orthanc: OrthancServer) -> None:
    make: Callable[..., Flask] = APPS[service]
    app = make(tmp_path, stoppable_orthanc.settings(), stoppable_orthanc)
    assert probe(app) == (200, {"status": "ready"})
    pid = stoppable_orthanc.pid or 0
    os.kill(pid, signal.SIGSTOP)
    try:
        status, body = probe(app)
    finally:
        os.kill(pid, signal.SIGCONT)
    assert status == 503 and body["status"] == "not ready"
    assert "did not answer within 2 s" in body["reason"]
    assert probe(app)[0] == 200  # back as soon as Orthanc is


@pytest.mark.parametrize("service", sorted(APPS))
def test_readyz_does_not_retry_a_hung_orthanc(service: str, tmp_path: Path, hung_socket: str,
                                              orthanc: OrthancServer) -> None:
    settings = replace(orthanc.settings(), url=hung_socket, probe_timeout=10.0)  # capped at 3 s
    status, body = probe(APPS[service](tmp_path, settings, orthanc))
    assert status == 503 and "did not answer within 3 s" in body["reason"]


def test_a_hung_database_check_answers_within_its_deadline() -> None:
    release = threading.Event()
    started: list[int] = []

    def hung() -> None:
        started.append(1)
        release.wait(30)

    check = BoundedCheck(hung, 0.2, "the database")
    with pytest.raises(ServiceUnavailable, match=r"the database did not answer within 0\.2 s"):
        check()
    with pytest.raises(ServiceUnavailable):
        check()
    assert len(started) == 1  # the second probe waited on the stuck check instead of starting another
    release.set()
    check()  # once the database answers again, so does the probe
