"""Empty apps for the proxy benchmark's floor: what gunicorn, and Flask on top of it, cost per request.

``raw`` is a bare WSGI callable and ``flask_app`` a one-view Flask app; both answer every path with
the same small JSON body, so the benchmark can load them exactly like the proxy.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from flask import Flask, Response

BODY = b"[]"


def raw(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    start_response("200 OK", [("Content-Type", "application/dicom+json"), ("Content-Length", str(len(BODY)))])
    return [BODY]


flask_app = Flask(__name__)


@flask_app.route("/", defaults={"path": ""})
@flask_app.route("/<path:path>")
def anything(path: str) -> Response:
    return Response(BODY, content_type="application/dicom+json")
