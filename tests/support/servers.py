"""Servers for tests: a WSGI app in a thread, our services under gunicorn, a private Orthanc.

One place for "start on a free loopback port, wait until it answers, stop it, keep its log" so each
test folder does not grow its own copy.
"""

from __future__ import annotations

import socketserver
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

from dicomlab_cli.processes import GunicornService, OrthancServer

LOOPBACK = "127.0.0.1"
PROXY_APP = "dicomlab_proxy.app:create_app()"
MANIFEST_APP = "dicomlab_manifest.app:create_app()"


class _QuietHandler(WSGIRequestHandler):
    """No access log (the dev server would log query strings, tokens included); the connection is exposed
    as gunicorn exposes it, so in-process tests take the proxy's zero-copy path too."""

    def log_request(self, *args: Any, **kwargs: Any) -> None:
        pass

    def make_environ(self) -> Any:
        environ = super().make_environ()
        environ["gunicorn.socket"] = self.connection
        return environ


@contextmanager
def in_thread(server: socketserver.BaseServer) -> Iterator[int]:
    """Run a bound socketserver (werkzeug's, ``http.server``'s) in a daemon thread; yields its port; shuts
    it down and closes its socket afterwards."""
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])  # type: ignore[index]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@contextmanager
def serve(app: Any, host: str = LOOPBACK, port: int = 0) -> Iterator[str]:
    """Run a WSGI app on a threaded werkzeug server (on ``port``, default a free one); yields its base URL."""
    server: BaseWSGIServer = make_server(host, port, app, threaded=True, request_handler=_QuietHandler)
    with in_thread(server) as bound:
        yield f"http://{host}:{bound}"


@contextmanager
def gunicorn(name: str, app: str, directory: Path, env: dict[str, str], **options: Any) -> Iterator[GunicornService]:
    """One of our services under real gunicorn (``options``: workers, threads, port), answering ``/healthz``
    when yielded and stopped afterwards; its log stays at ``service.log_path`` for the test to read."""
    service = GunicornService(name, app, directory, env=env, **options).start()
    try:
        yield service
    finally:
        service.stop()


def proxy_env(orthanc: OrthancServer | None, key_entry: str, **settings: str) -> dict[str, str]:
    """The proxy's environment in front of ``orthanc`` (its URL and credentials) signing with ``key_entry``;
    ``settings`` are further ``DICOMLAB_PROXY__<NAME>`` values (``allowed_origins="..."``)."""
    env = {"DICOMLAB_PROXY__TOKEN_KEYS": key_entry}
    if orthanc is not None:
        env.update({"DICOMLAB_PROXY__ORTHANC__URL": orthanc.url,
                    "DICOMLAB_PROXY__ORTHANC__USERNAME": orthanc.username,
                    "DICOMLAB_PROXY__ORTHANC__PASSWORD": orthanc.password.reveal()})
    env.update({f"DICOMLAB_PROXY__{key.upper()}": value for key, value in settings.items()})
    return env


@contextmanager
def private_orthanc(directory: Path, **options: Any) -> Iterator[OrthancServer]:
    """An Orthanc of the test's own (not the shared session one), stopped afterwards; ``options`` go to
    :class:`OrthancServer` (``dicom_modalities``, ``http_port``...)."""
    server = OrthancServer(directory, **options).start()
    try:
        yield server
    finally:
        server.stop()
