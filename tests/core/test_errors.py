"""One JSON error shape for every Flask app."""

from __future__ import annotations

from flask import Flask

from dicomlab_core.errors import BadRequest, UpstreamTimeout, register_error_handlers


def make_app() -> Flask:
    app = Flask(__name__)
    register_error_handlers(app)

    @app.get("/bad")
    def bad() -> str:
        raise BadRequest("modality: expected one of DX, CR")

    @app.get("/slow")
    def slow() -> str:
        raise UpstreamTimeout("Orthanc did not answer")

    @app.get("/boom")
    def boom() -> str:
        raise RuntimeError("secret internals /etc/passwd")

    return app


def test_service_errors_become_json() -> None:
    client = make_app().test_client()
    response = client.get("/bad")
    assert response.status_code == 400
    assert response.json == {"code": 400, "name": "Bad Request", "description": "modality: expected one of DX, CR"}
    assert client.get("/slow").status_code == 504


def test_unknown_route_and_method_are_json() -> None:
    client = make_app().test_client()
    response = client.get("/nope")
    assert response.status_code == 404
    assert response.json["code"] == 404
    response = client.post("/bad")
    assert response.status_code == 405
    assert "GET" in response.headers["Allow"]


def test_unexpected_errors_do_not_leak() -> None:
    response = make_app().test_client().get("/boom")
    assert response.status_code == 500
    assert response.json == {"code": 500, "name": "Internal Server Error", "description": "internal error"}
    assert b"passwd" not in response.data
