"""CORS for an exact allow-list of origins, and the security headers every response carries.

An allowed origin gets ``Access-Control-Allow-Origin: <that origin>`` (never ``*``) on every
answer, errors included, so the browser can read why a request failed; an origin not on the list
gets no CORS header at all and the browser blocks the read. Preflights are answered here without
a token (browsers never send credentials on them). No cookies are used, so no
``Allow-Credentials``: the token travels in ``Authorization`` or the query.
"""

from __future__ import annotations

from collections.abc import Iterable
from http import HTTPStatus

from flask import Response

ALLOWED_REQUEST_HEADERS = ("Authorization", "Accept", "Range", "If-None-Match", "If-Modified-Since", "Content-Type")
EXPOSED_HEADERS = ("Content-Length", "Content-Range", "Content-Type", "Accept-Ranges", "ETag", "Last-Modified",
                   "Retry-After", "WWW-Authenticate")
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "private, no-store",
    "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'",
    "X-Frame-Options": "DENY",
}
_EXPOSED = ", ".join(EXPOSED_HEADERS)


class Cors:
    """The allow-list and the headers that follow from it."""

    def __init__(self, origins: Iterable[str], *, max_age: int, methods: Iterable[str]) -> None:
        self.origins = frozenset(origins)
        self.max_age = max_age
        self.methods = tuple(methods)

    def allowed(self, origin: str | None) -> bool:
        return origin is not None and origin in self.origins

    def preflight(self, origin: str | None, requested_method: str | None) -> Response:
        """The answer to ``OPTIONS``: 204 with the CORS grant, or 403 without any CORS header."""
        response = Response(status=HTTPStatus.NO_CONTENT)
        response.headers["Allow"] = ", ".join(self.methods)
        if origin is None:
            return response
        if not self.allowed(origin) or (requested_method and requested_method.upper() not in self.methods):
            response.status_code = HTTPStatus.FORBIDDEN
            return response
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Access-Control-Allow-Methods"] = ", ".join(self.methods)
        response.headers["Access-Control-Allow-Headers"] = ", ".join(ALLOWED_REQUEST_HEADERS)
        response.headers["Access-Control-Max-Age"] = str(self.max_age)
        return response

    def decorate(self, response: Response, origin: str | None, *, preflight: bool = False) -> Response:
        """Add CORS (for an allowed origin) and security headers to any response but a refused preflight.

        Runs on every response, so the headers already present are looked at once, not per header.
        """
        headers = response.headers
        present = {name.lower() for name, _ in headers}
        added: list[tuple[str, str]] = []
        if "vary" in present:
            response.vary.add("Origin")
        else:
            added.append(("Vary", "Origin"))
        if self.allowed(origin) and not (preflight and response.status_code >= 400):
            assert origin is not None
            for name, value in (("Access-Control-Allow-Origin", origin), ("Access-Control-Expose-Headers", _EXPOSED)):
                if name.lower() in present:
                    del headers[name]
                added.append((name, value))
        added += [(key, value) for key, value in SECURITY_HEADERS.items() if key.lower() not in present]
        headers.extend(added)
        return response
