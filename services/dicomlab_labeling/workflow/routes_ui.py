"""The browser UI: the self-hosted pages and the built bundle under ``/static/dist``.

Pages are thin HTML shells (``templates/ui/*.html``) that load the ``app`` entry of the bundle; the
script talks to the JSON API (API.md). Every page is sent with a Content-Security-Policy that only
allows our own scripts, workers from our origin or ``blob:``, and connections to us and the DICOMweb
proxy. ``/static/dist/*`` files have content-hashed names, so they are cached for a year; they are
public code (no PHI, no secrets) and carry ``Access-Control-Allow-Origin: *`` so the Ground Truth
worker page (origin ``https://s3.amazonaws.com``) can load them as CORS module scripts with SRI; the
worker template itself is written by :mod:`dicomlab_labeling.groundtruth.template`.
"""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any
from urllib.parse import urlsplit

from flask import Blueprint, Response, abort, redirect, render_template, request, send_from_directory

from dicomlab_labeling import ui_assets
from dicomlab_labeling.state import services
from dicomlab_labeling.workflow.api_state import state
from dicomlab_labeling.workflow.auth import COOKIE_NAME, find_session, has_role
from dicomlab_labeling.workflow.models import Role

logger = logging.getLogger(__name__)

bp = Blueprint("ui", __name__)

IMMUTABLE = "public, max-age=31536000, immutable"
PAGES = {
    "login": "Sign in",
    "queue": "My queue",
    "label": "Labeling",
    "review": "Review",
    "admin": "Administration",
}


def origin_of(url: str) -> str:
    """``scheme://host[:port]`` of a URL (the CSP source for the proxy)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}" if parts.scheme and parts.netloc else ""


def content_security_policy(proxy_url: str) -> str:
    """The pages' CSP. ``'wasm-unsafe-eval'`` lets the image decoder compile its WASM codecs (JPEG-LS,
    JPEG 2000, HTJ2K); it allows no JavaScript eval. Inline styles are allowed because Cornerstone
    positions its canvases and SVG overlays with style attributes."""
    proxy = origin_of(proxy_url)
    connect = " ".join(s for s in ("'self'", proxy) if s)
    img = " ".join(s for s in ("'self'", "blob:", "data:", proxy) if s)
    return "; ".join(
        [
            "default-src 'self'",
            "script-src 'self' 'wasm-unsafe-eval'",
            "worker-src 'self' blob:",
            f"connect-src {connect}",
            f"img-src {img}",
            "style-src 'self' 'unsafe-inline'",
            "object-src 'none'",
            "base-uri 'none'",
            "form-action 'self'",
            "frame-ancestors 'none'",
        ]
    )


def _proxy_url() -> str:
    return services().config.proxy_public_url


def _page(name: str, **context: Any) -> Response:
    assets = ui_assets.manifest().tags_for("app", "/static/dist")
    html = render_template(f"ui/{name}.html", page=name, title=PAGES[name], assets=assets, **context)
    response = Response(html, content_type="text/html; charset=utf-8")
    response.headers["Content-Security-Policy"] = content_security_policy(_proxy_url())
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "same-origin"
    return response


@bp.get("/")
def index() -> Response:
    return redirect("/ui/queue")  # type: ignore[return-value]


@bp.get("/ui/login")
def login() -> Response:
    return _page("login")


@bp.get("/ui/queue")
def queue() -> Response:
    return _page("queue")


@bp.get("/ui/jobs/<int:job_id>/label")
def label(job_id: int) -> Response:
    return _page("label", job_id=job_id)


def _below(role: Role) -> bool:
    """True when the request's session belongs to a user without ``role`` (no session: False, the page's
    script sends the visitor to sign in; SSO sessions start in the API, so the script checks roles too)."""
    token = request.cookies.get(COOKIE_NAME, "")
    if not token:
        return False
    api = state()
    with api.db.session(readonly=True) as session:
        found = find_session(session, secret=api.session_secret, token=token)
    return found is not None and not has_role(found[1], role)


@bp.get("/ui/review")
def review() -> Response:
    if _below(Role.REVIEWER):
        return redirect("/ui/queue")  # type: ignore[return-value]
    return _page("review")


@bp.get("/ui/admin")
def admin() -> Response:
    if _below(Role.ADMIN):
        return redirect("/ui/queue")  # type: ignore[return-value]
    return _page("admin")


@bp.get("/static/dist/<path:filename>")
def dist(filename: str) -> Response:
    """A built file; hashed names never change content, so they are immutable."""
    if any(part.startswith(".") for part in filename.split("/")):
        abort(HTTPStatus.NOT_FOUND)  # build stamps and Vite's own manifest are not served
    immutable = filename != ui_assets.MANIFEST_NAME
    response = send_from_directory(ui_assets.DIST_DIR, filename, max_age=31536000 if immutable else 0)
    response.headers["Cache-Control"] = IMMUTABLE if immutable else "no-cache"
    response.headers["Access-Control-Allow-Origin"] = "*"
    response.headers["Cross-Origin-Resource-Policy"] = "cross-origin"
    response.headers["X-Content-Type-Options"] = "nosniff"
    if filename.endswith(".wasm"):
        response.headers["Content-Type"] = "application/wasm"
    return response
