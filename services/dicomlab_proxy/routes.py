"""The route table: the DICOMweb reads, WADO-URI, ``/instances/{id}/file`` and (optionally) STOW-RS.

Nothing else exists here: Orthanc's REST API, ``/tools/*``, writes and deletes are 404/405 by
construction. Path parameters are typed by converters (UIDs are digits and dots, Orthanc IDs five
groups of 8 hex digits), so a route only matches well-formed identifiers. The public DICOMweb root
equals Orthanc's, so the absolute URLs Orthanc writes (RetrieveURL, BulkDataURI) — built from the
``Forwarded`` header this proxy sends — resolve back here.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from flask import Flask, Response, current_app, g, request
from werkzeug.routing import BaseConverter

from dicomlab_core.errors import BadRequest, NotFound, PayloadTooLarge, ServiceError, UpstreamError
from dicomlab_core.tokens import Grant, RouteLevel, TokenRejection
from dicomlab_proxy import deid, hardening
from dicomlab_proxy.access import (
    TOKEN_PARAM,
    Authenticator,
    Identity,
    RateLimiter,
    bearer_token,
    deny,
    require_scope,
    require_service,
)
from dicomlab_proxy.config import PUBLIC_URL, Config
from dicomlab_proxy.errors import LengthRequired, NotAcceptable, RangeNotSatisfiable, UnsupportedMediaType
from dicomlab_proxy.metrics import UPSTREAM_ERRORS
from dicomlab_proxy.observe import current_audit, log_completion
from dicomlab_proxy.scope import (
    LEVEL_OF_KEY,
    WADO_LEVEL_OF_KEY,
    Route,
    RouteKind,
    Target,
    classify,
    constrain_search,
    normal_key,
    one_uid,
    search_query,
)
from dicomlab_proxy.streaming import (
    Done,
    drain,
    forward_headers,
    limit_client_send,
    passed_headers,
    relay,
    splice_client,
    splice_relay,
    splice_source,
)
from dicomlab_proxy.upstream import Response as UpstreamResponse
from dicomlab_proxy.upstream import Upstream

UID = re.compile(r"[0-9][0-9.]{0,63}")
_HOST = re.compile(r"^(?:[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?$")
WADO_URI_ROUTE = Route(RouteLevel.INSTANCE, RouteKind.WADO_URI)
FILE_ROUTE = Route(RouteLevel.ORTHANC_FILE, RouteKind.FILE)


class UidConverter(BaseConverter):
    regex = UID.pattern


class OrthancIdConverter(BaseConverter):
    regex = r"[0-9a-f]{8}(?:-[0-9a-f]{8}){4}"


class FramesConverter(BaseConverter):
    regex = r"[1-9][0-9]{0,5}(?:,[1-9][0-9]{0,5}){0,255}"


class BulkConverter(BaseConverter):
    regex = r"[0-9A-Fa-f]{8}(?:/[0-9]{1,6}/[0-9A-Fa-f]{8}){0,8}"
    part_isolating = False


@dataclass
class ProxyState:
    """What the views need, built once by ``create_app``."""

    config: Config
    upstream: Upstream
    auth: Authenticator
    limiter: RateLimiter
    forwarded: tuple[str, str] | None
    """``(host+prefix, scheme)`` from ``public_url``, or None to take them from each request."""


def state() -> ProxyState:
    found: ProxyState = current_app.extensions["dicomlab_proxy"]
    return found


# ------------------------------------------------------------------------------------ identifiers

def _query_identifiers(level_of_key: Mapping[str, Grant]) -> dict[Grant, list[str]]:
    """The query's UID values by kind, its keys normalized by :func:`~dicomlab_proxy.scope.normal_key`."""
    named: dict[Grant, list[str]] = {Grant.STUDY: [], Grant.SERIES: [], Grant.INSTANCE: []}
    for name, value in request.args.items(multi=True):
        level = level_of_key.get(normal_key(name))
        if level is not None:
            named[level].append(value)
    return named


def dicomweb_targets(view_args: Mapping[str, str]) -> tuple[Target, dict[Grant, str | None]]:
    """The study/series/instance of a DICOMweb request's path, and the single UID its query names per kind.

    Conflicting (path vs query, repeated, aliases) or malformed UIDs — lists, wildcards — are a 400.
    Only the path takes part in a scope decision; the query's UIDs are at most a search's choice.
    """
    named = _query_identifiers(LEVEL_OF_KEY)
    path = Target(view_args.get("study"), view_args.get("series"), view_args.get("sop"))
    chosen = {Grant.STUDY: one_uid(path.study, named[Grant.STUDY], "StudyInstanceUID", UID),
              Grant.SERIES: one_uid(path.series, named[Grant.SERIES], "SeriesInstanceUID", UID),
              Grant.INSTANCE: one_uid(path.instance, named[Grant.INSTANCE], "SOPInstanceUID", UID)}
    return path, chosen


def wado_uri_target() -> Target:
    """Study, series and object UIDs of a WADO-URI request (all three required, one value each)."""
    if request.args.get("requestType") != "WADO":
        raise BadRequest("requestType=WADO is required")
    named = _query_identifiers(WADO_LEVEL_OF_KEY)
    found: dict[Grant, str] = {}
    for key, grant in WADO_LEVEL_OF_KEY.items():
        value = one_uid(None, named[grant], key, UID)
        if value is None:
            raise BadRequest(f"{key} is required")
        found[grant] = value
    return Target(found[Grant.STUDY], found[Grant.SERIES], found[Grant.INSTANCE])


# ------------------------------------------------------------------------------------ upstream calls

def _forwarded(st: ProxyState) -> tuple[str, str]:
    if st.forwarded is not None:
        return st.forwarded
    host = request.host
    if not _HOST.match(host):
        raise BadRequest("invalid Host header")
    return host, request.scheme


def _upstream_headers(st: ProxyState, *, body: bool) -> dict[str, str]:
    host, proto = _forwarded(st)
    headers = forward_headers(request.environ, body=body)
    # DICOMweb 1.7 reads `Forwarded` (verbatim, prefix included); newer plugins read X-Forwarded-*.
    headers["Forwarded"] = f"host={host};proto={proto}"
    headers["X-Forwarded-Host"] = host
    headers["X-Forwarded-Proto"] = proto
    return headers


def _status_error(status: int) -> ServiceError:
    if status == HTTPStatus.NOT_FOUND:
        return NotFound("not found")
    if status == HTTPStatus.NOT_ACCEPTABLE:
        return NotAcceptable("no acceptable representation")
    if status == HTTPStatus.UNSUPPORTED_MEDIA_TYPE:
        return UnsupportedMediaType("unsupported media type")
    if status == HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE:
        return RangeNotSatisfiable("range not satisfiable")
    if status in (HTTPStatus.UNAUTHORIZED, HTTPStatus.FORBIDDEN):
        UPSTREAM_ERRORS.labels("auth").inc()
        return UpstreamError("the PACS refused the proxy")
    if status >= HTTPStatus.INTERNAL_SERVER_ERROR:
        UPSTREAM_ERRORS.labels("status_5xx").inc()
        return UpstreamError("the PACS failed")
    return BadRequest("the PACS refused the request")


def _respond(st: ProxyState, upstream: UpstreamResponse) -> Response:
    """Turn Orthanc's answer into ours: errors mapped, bodies streamed, HEAD without a body."""
    if upstream.status >= HTTPStatus.BAD_REQUEST:
        drain(upstream)
        raise _status_error(upstream.status)
    headers = passed_headers(upstream)
    if request.method == "HEAD" or upstream.status in (HTTPStatus.NO_CONTENT, HTTPStatus.NOT_MODIFIED):
        if request.method == "HEAD":
            upstream.discard()
        else:
            drain(upstream)
        response = Response(status=upstream.status, headers=headers)
        if "Content-Length" in upstream.headers:  # HEAD: the length of the body not sent
            response.headers["Content-Length"] = upstream.headers["Content-Length"]
        return response
    g.proxy_streamed = True
    limit_client_send(request.environ, st.config.send_timeout)
    client = splice_client(request.environ) if st.config.zero_copy else None
    source = splice_source(upstream) if client is not None else None
    if client is not None and source is not None:
        done = _access_logger(upstream.status, "splice")
        timeouts = (st.config.orthanc.read_timeout, st.config.send_timeout)
        body = splice_relay(upstream, source, client, timeouts, g.proxy_started, done)
    else:
        body = relay(upstream, st.config.chunk_bytes, g.proxy_started, _access_logger(upstream.status, "copy"))
    return Response(body, status=upstream.status, headers=headers, direct_passthrough=True)


def _access_logger(status: int, relay_mode: str) -> Done:
    method, route = request.method, (request.url_rule.rule if request.url_rule else "unmatched")
    audit = current_audit()

    def done(sent: int, outcome: str, seconds: float) -> None:
        log_completion(method, route, status, sent, seconds, outcome, audit, relay_mode)

    return done


def _authenticate(st: ProxyState) -> Identity:
    hardening.check_method_override_params(request.args)
    identity = st.auth.authenticate(bearer_token(request.headers.get("Authorization"), request.args.get(TOKEN_PARAM)))
    g.proxy_identity = identity
    st.limiter.check(identity.key)
    return identity


def _route() -> Route:
    return route_of(request.url_rule.rule if request.url_rule else "", state().config.dicomweb_root)


@functools.lru_cache(maxsize=64)
def route_of(rule: str, root: str) -> Route:
    return classify(rule[len(root):])


def _read(identity: Identity, route: Route, target: Target, query: str) -> Response:
    """Forward a read the scope allowed; apply the de-identified mode for such tokens."""
    st = state()
    headers = _upstream_headers(st, body=False)
    if identity.deidentified:
        if not deid.allowed(route, request.args.items(multi=True), request.view_args.get("tags")
                            if request.view_args else None):
            deny(TokenRejection.DEIDENTIFIED)
        if route.kind is RouteKind.SEARCH:
            deid.check_search_keys(request.args.items(multi=True), TOKEN_PARAM)
        if route.kind in deid.FILTERED_KINDS:
            upstream = st.upstream.open("GET", request.path, query=query, headers=deid.upstream_headers(headers))
            if upstream.status >= HTTPStatus.BAD_REQUEST:
                drain(upstream)
                raise _status_error(upstream.status)
            response = deid.filtered(upstream, st.config.deid_max_json_bytes)
            if request.method == "HEAD":
                response.set_data(b"")
            return response
    upstream = st.upstream.open("GET", request.path, query=query, headers=headers)
    return _respond(st, upstream)


def _begin() -> tuple[ProxyState, Identity]:
    st = state()
    hardening.check_no_body(request.environ)
    return st, _authenticate(st)


def _raw_query() -> str:
    return request.query_string.decode("latin-1")


# ------------------------------------------------------------------------------------ views

def dicomweb_read(**view_args: str) -> Response:
    """Every DICOMweb read: retrieve/metadata/rendered/frames/bulk by the path, searches constrained."""
    _, identity = _begin()
    route = _route()
    path, chosen = dicomweb_targets(view_args)
    if route.kind is not RouteKind.SEARCH:
        g.proxy_target = path
        g.proxy_grant = require_scope(identity, route.level, study=path.study, series=path.series,
                                      instance=path.instance)
        return _read(identity, route, path, hardening.forwardable_query(_raw_query(), TOKEN_PARAM))
    if identity.service:
        g.proxy_target = Target(chosen[Grant.STUDY], chosen[Grant.SERIES], chosen[Grant.INSTANCE])
        return _read(identity, route, g.proxy_target, hardening.forwardable_query(_raw_query(), TOKEN_PARAM))
    assert identity.claims is not None
    g.proxy_target = path
    search = constrain_search(identity.claims.scope, route.level, path, chosen)
    if search is None:
        deny()
    g.proxy_target, g.proxy_grant = search.target, search.grant
    return _read(identity, route, search.target, search_query(_raw_query(), drop_key=TOKEN_PARAM, search=search))


def wado_uri() -> Response:
    _, identity = _begin()
    target = g.proxy_target = wado_uri_target()
    g.proxy_grant = require_scope(identity, RouteLevel.INSTANCE, study=target.study, series=target.series,
                                  instance=target.instance)
    return _read(identity, WADO_URI_ROUTE, target, hardening.forwardable_query(_raw_query(), TOKEN_PARAM))


def instance_file(oid: str) -> Response:
    _, identity = _begin()
    target = g.proxy_target = Target(orthanc_id=oid)
    g.proxy_grant = require_scope(identity, RouteLevel.ORTHANC_FILE, orthanc_id=oid)
    return _read(identity, FILE_ROUTE, target, hardening.forwardable_query(_raw_query(), TOKEN_PARAM))


def stow(**view_args: str) -> Response:
    """STOW-RS for service callers only: the body is streamed upstream, never held whole."""
    st = state()
    identity = _authenticate(st)
    require_service(identity)
    if view_args.get("study") is not None:
        one_uid(view_args["study"], [], "StudyInstanceUID", UID)
    length = request.content_length
    if length is None or request.headers.get("Transfer-Encoding"):
        raise LengthRequired("Content-Length is required")
    if length > st.config.max_stow_bytes:
        raise PayloadTooLarge("request body too large")
    if not (request.mimetype or "").lower().startswith("multipart/related"):
        raise UnsupportedMediaType("STOW-RS takes multipart/related")
    stream = request.environ["wsgi.input"]

    def body() -> Any:
        left = length
        while left > 0:
            data = stream.read(min(left, st.config.chunk_bytes))
            if not data:
                raise BadRequest("request body shorter than Content-Length")
            left -= len(data)
            yield data

    headers = _upstream_headers(st, body=True)
    headers["Content-Length"] = str(length)
    upstream = st.upstream.open("POST", request.path, headers=headers, body=body(), retry=False)
    return _respond(st, upstream)


def register(app: Flask, config: Config) -> None:
    """Add the converters and every route; nothing else is reachable."""
    app.url_map.converters.update(uid=UidConverter, oid=OrthancIdConverter, frames=FramesConverter,
                                  bulk=BulkConverter)
    app.url_map.merge_slashes = False
    app.url_map.strict_slashes = False
    read = ["GET", "HEAD"]
    root = config.dicomweb_root
    study, series, sop = "/studies/<uid:study>", "/series/<uid:series>", "/instances/<uid:sop>"
    reads = [
        "/studies", "/series", "/instances",
        study, f"{study}/metadata", f"{study}/rendered", f"{study}/thumbnail", f"{study}/series", f"{study}/instances",
        f"{study}{series}", f"{study}{series}/metadata", f"{study}{series}/rendered", f"{study}{series}/thumbnail",
        f"{study}{series}/instances",
        f"{study}{series}{sop}", f"{study}{series}{sop}/metadata", f"{study}{series}{sop}/rendered",
        f"{study}{series}{sop}/thumbnail", f"{study}{series}{sop}/frames/<frames:frames>",
        f"{study}{series}{sop}/frames/<frames:frames>/rendered", f"{study}{series}{sop}/bulk/<bulk:tags>",
    ]
    for rule in reads:
        methods = [*read, "POST"] if config.stow_enabled and rule in ("/studies", study) else read
        app.add_url_rule(root + rule, endpoint="dicomweb:" + rule, view_func=_dispatch, methods=methods,
                         provide_automatic_options=False)
    app.add_url_rule(config.wado_root, endpoint="wado-uri", view_func=wado_uri, methods=read,
                     provide_automatic_options=False)
    app.add_url_rule("/instances/<oid:oid>/file", endpoint="instance-file", view_func=instance_file, methods=read,
                     provide_automatic_options=False)


def _dispatch(**view_args: str) -> Response:
    if request.method == "POST":
        return stow(**view_args)
    return dicomweb_read(**view_args)


def public_forwarded(public_url: str) -> tuple[str, str] | None:
    """``(host+prefix, scheme)`` for the ``Forwarded`` header, from the configured public URL."""
    if not public_url:
        return None
    match = PUBLIC_URL.match(public_url)
    assert match is not None  # validated by Config.validate
    return match.group(2) + match.group(3), match.group(1)


def new_state(config: Config) -> ProxyState:
    from dicomlab_core.tokens import signer_from_entries

    return ProxyState(config=config, upstream=Upstream(config.orthanc),
                      auth=Authenticator(signer_from_entries(config.token_keys), config.service_tokens),
                      limiter=RateLimiter(config.rate_limit_per_second, config.rate_limit_burst),
                      forwarded=public_forwarded(config.public_url))

