"""Checks every request passes before routing: request target, headers, method overrides, bodies.

The path a browser legitimately sends here is made of UIDs (digits and dots), Orthanc IDs (hex and
dashes), frame lists and fixed words, so anything else that could change how a path is read —
percent-escapes (``%2e``, ``%2f``, double encoding), backslashes, NUL and control characters, dot
segments, empty segments — is refused outright instead of being normalized. The upstream address
is fixed by configuration; an absolute-URL request line or a forged ``Host`` only ever reaches
that fixed upstream (and ``public_url``, when set, decides the URLs written into responses).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote_plus, urlsplit

from dicomlab_core.errors import BadRequest, PayloadTooLarge
from dicomlab_proxy.errors import HeadersTooLarge, UriTooLong
from dicomlab_proxy.metrics import REQUESTS_REFUSED

_ALLOWED_ESCAPES = re.compile(r"%2[cC]")
"""The one escape a client may need in a path: an encoded comma in a frame list."""
_BAD_PATH_CHARS = re.compile(r"[\\\x00-\x1f\x7f\s]")
_BAD_QUERY = re.compile(r"[\x00-\x1f\x7f]|%00|%(25)+[0-9A-Fa-f]{2}", re.IGNORECASE)

METHOD_OVERRIDE_HEADERS = ("X-HTTP-Method-Override", "X-HTTP-Method", "X-Method-Override")
METHOD_OVERRIDE_PARAMS = frozenset({"_method", "x-http-method-override"})


def _refuse(reason: str, error: Exception) -> Exception:
    REQUESTS_REFUSED.labels(reason).inc()
    return error


def raw_target(environ: Mapping[str, Any]) -> str:
    """The request target as the client sent it (before any decoding by the WSGI server)."""
    raw = environ.get("RAW_URI") or environ.get("REQUEST_URI")
    if raw:
        return str(raw)
    path = str(environ.get("PATH_INFO", ""))
    query = str(environ.get("QUERY_STRING", ""))
    return path + ("?" + query if query else "")


def check_target(environ: Mapping[str, Any], *, max_query_chars: int) -> None:
    """Refuse request targets that try to escape or confuse the route table (400/414)."""
    raw = raw_target(environ)
    if raw.lower().startswith(("http://", "https://")):
        # Absolute form: only the path matters; the upstream never comes from the request.
        parts = urlsplit(raw)
        path, query = parts.path, parts.query
    else:
        path, _, query = raw.partition("?")
    if len(query) > max_query_chars or len(path) > 2048:
        raise _refuse("uri_too_long", UriTooLong("request URI too long"))
    if not path.startswith("/") or _BAD_PATH_CHARS.search(path):
        raise _refuse("path_chars", BadRequest("invalid request path"))
    if "%" in _ALLOWED_ESCAPES.sub("", path):
        raise _refuse("path_escape", BadRequest("invalid request path"))
    segments = path.split("/")[1:]
    if any(s in ("", ".", "..") for s in segments[:-1]) or segments[-1] in (".", ".."):
        raise _refuse("path_segments", BadRequest("invalid request path"))
    decoded = str(environ.get("PATH_INFO", ""))
    if ".." in decoded or "\\" in decoded or "\x00" in decoded or "//" in decoded:
        raise _refuse("path_segments", BadRequest("invalid request path"))
    if _BAD_QUERY.search(query):
        raise _refuse("query_chars", BadRequest("invalid query string"))


def check_headers(environ: Mapping[str, Any], *, max_header_bytes: int) -> None:
    """Refuse oversized headers (431) and method-override attempts (400)."""
    total = 0
    for key, value in environ.items():
        if key.startswith("HTTP_") or key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
            total += len(key) + len(str(value)) + 4
    if total > max_header_bytes:
        raise _refuse("headers_too_large", HeadersTooLarge("request headers too large"))
    for name in METHOD_OVERRIDE_HEADERS:
        if "HTTP_" + name.upper().replace("-", "_") in environ:
            raise _refuse("method_override", BadRequest("method override headers are not accepted"))


def check_no_body(environ: Mapping[str, Any]) -> None:
    """Reads carry no body: refuse one (a smuggling and resource-exhaustion vector)."""
    length = str(environ.get("CONTENT_LENGTH") or "0").strip()
    if environ.get("HTTP_TRANSFER_ENCODING") or (length not in ("", "0")):
        raise _refuse("body_on_read", PayloadTooLarge("this request takes no body"))


def check_method_override_params(args: Mapping[str, Any]) -> None:
    if any(key.lower() in METHOD_OVERRIDE_PARAMS for key in args):
        raise _refuse("method_override", BadRequest("method override parameters are not accepted"))


def forwardable_query(query_string: str, drop: str) -> str:
    """The raw query string without the ``drop`` parameter, every other byte as the client sent it."""
    if not query_string:
        return ""
    kept = [p for p in query_string.split("&") if p and unquote_plus(p.split("=", 1)[0]) != drop]
    return "&".join(kept)
