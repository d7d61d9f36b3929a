"""/metrics only on the metrics port, nothing else there; the public port answers 404 for /metrics."""

from __future__ import annotations

import pytest
from flask import Flask

from dicomlab_core.metrics import DEFAULT_METRICS_PORT, metrics_bind, metrics_port
from dicomlab_core.web import install_common


@pytest.fixture
def app(monkeypatch: pytest.MonkeyPatch) -> Flask:
    monkeypatch.setenv("DICOMLAB_METRICS_PORT", "9464")
    app = Flask(__name__)
    install_common(app, service="probe")

    @app.get("/hello")
    def hello() -> str:
        return "hi"

    return app


def test_metrics_answer_only_on_the_metrics_port(app: Flask) -> None:
    client = app.test_client()
    public = client.get("/metrics", base_url="http://svc:8080")
    assert public.status_code == 404 and public.json is not None and public.json["code"] == 404
    scraped = client.get("/metrics", base_url="http://svc:9464")
    assert scraped.status_code == 200 and b"dicomlab_http_requests_total" in scraped.data
    # the Host header does not decide: the port is the server's (werkzeug's test client sets SERVER_PORT
    # from base_url, gunicorn from the listening socket)
    spoofed = client.get("/metrics", base_url="http://svc:8080", headers={"Host": "svc:9464"})
    assert spoofed.status_code == 404


def test_metrics_port_serves_nothing_else(app: Flask) -> None:
    client = app.test_client()
    for path in ("/hello", "/healthz", "/readyz", "/metrics/", "/"):
        response = client.get(path, base_url="http://svc:9464")
        assert response.status_code == 404, path
        assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert client.get("/hello", base_url="http://svc:8080").data == b"hi"


def test_metrics_port_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DICOMLAB_METRICS_PORT", raising=False)
    assert metrics_port() == DEFAULT_METRICS_PORT == 9090
    assert metrics_bind("0.0.0.0:8080") == "0.0.0.0:9090"
    assert metrics_bind("127.0.0.1:8081") == "127.0.0.1:9090"
    monkeypatch.setenv("DICOMLAB_METRICS_PORT", "8080")
    with pytest.raises(ValueError, match="public port too"):
        metrics_bind("0.0.0.0:8080")
    for bad in ("nine", "0", "70000"):
        monkeypatch.setenv("DICOMLAB_METRICS_PORT", bad)
        with pytest.raises(ValueError, match="DICOMLAB_METRICS_PORT"):
            metrics_port()
