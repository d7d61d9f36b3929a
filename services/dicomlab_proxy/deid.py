"""De-identified reading: what a token with the ``deid`` claim may fetch, and the metadata it gets.

A job with ``allowPatientIdentifiers: false`` hands its readers de-identified tokens. For them:

- WADO-RS metadata and QIDO-RS results are read whole from Orthanc (as ``application/dicom+json``,
  uncompressed, at most ``deid_max_json_bytes``), the attributes of
  :data:`dicomlab_core.deid.IDENTIFYING_KEYWORDS` (PS3.15 Basic Profile) removed, and sent;
- pixels come through frames, rendered and thumbnail routes, and bulk data of Pixel Data only;
- routes that return a whole DICOM header are refused (403): instance/series/study retrieve,
  ``/instances/{id}/file``, and WADO-URI unless it asks for a rendered image (``contentType`` of
  :data:`RENDERED_TYPES`);
- a QIDO search takes only the parameters of :data:`SEARCH_KEYS`: matching on any other attribute
  (``PatientName=A*``) would tell the reader what the answer hides.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from http import HTTPStatus

from flask import Response

from dicomlab_core import fastjson
from dicomlab_core.deid import strip_datasets
from dicomlab_core.errors import BadRequest, UpstreamError
from dicomlab_proxy.metrics import UPSTREAM_ERRORS
from dicomlab_proxy.scope import LEVEL_OF_KEY, Route, RouteKind, normal_key
from dicomlab_proxy.upstream import ProtocolError
from dicomlab_proxy.upstream import Response as UpstreamResponse

JSON_TYPE = "application/dicom+json"
FILTERED_KINDS = frozenset({RouteKind.METADATA, RouteKind.SEARCH})
"""Routes whose JSON answer is de-identified before it is sent."""
REFUSED_KINDS = frozenset({RouteKind.RETRIEVE, RouteKind.FILE})
"""Routes that return whole DICOM headers: never for a de-identified reader."""
RENDERED_TYPES = frozenset({"image/jpeg", "image/png", "image/gif"})
"""WADO-URI ``contentType`` values that return pixels only (anything else may be ``application/dicom``)."""
PIXEL_DATA_TAGS = frozenset({"7FE00010", "7FE00008", "7FE00009"})
"""Pixel Data, Float Pixel Data, Double Float Pixel Data: the only bulk data a de-identified reader gets."""
SEARCH_KEYS = frozenset({"limit", "offset", "includefield", "fuzzymatching", *LEVEL_OF_KEY})
"""Query keys (normalized) a de-identified search may use: UID filters, paging, includefield."""


def allowed(route: Route, args: Iterable[tuple[str, str]], bulk_tags: str | None) -> bool:
    """Whether a de-identified reader may call ``route`` with these query arguments."""
    if route.kind in REFUSED_KINDS:
        return False
    if route.kind is RouteKind.WADO_URI:
        types = [value for key, value in args if normal_key(key) == "contenttype"]
        return bool(types) and all(t in RENDERED_TYPES for t in types)
    if route.kind is RouteKind.BULK:
        return bulk_tags is not None and bulk_tags.upper() in PIXEL_DATA_TAGS
    return True


def check_search_keys(args: Iterable[tuple[str, str]], ignored: str) -> None:
    """A 400 when a de-identified search matches on anything but UIDs (an attribute oracle)."""
    for key, _ in args:
        if key != ignored and normal_key(key) not in SEARCH_KEYS:
            raise BadRequest("de-identified searches match on UIDs only")


def upstream_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """The request headers for a filtered route: JSON, uncompressed, never a conditional or partial answer."""
    dropped = {"accept", "accept-encoding", "range", "if-none-match", "if-modified-since", "if-range"}
    out = {k: v for k, v in headers.items() if k.lower() not in dropped}
    out["Accept"] = JSON_TYPE
    return out


def filtered(upstream: UpstreamResponse, max_bytes: int) -> Response:
    """Orthanc's JSON answer (status < 400) read whole, de-identified, as a new response."""
    if upstream.status == HTTPStatus.NO_CONTENT:  # an empty search
        upstream.release()
        return Response(status=HTTPStatus.NO_CONTENT)
    content_type = (upstream.headers.get("Content-Type") or "").split(";")[0].strip().lower()
    if content_type not in (JSON_TYPE, "application/json") or upstream.headers.get("Content-Encoding"):
        upstream.discard()
        UPSTREAM_ERRORS.labels("deid").inc()
        raise UpstreamError("the PACS answered in a form that cannot be de-identified")
    chunks: list[bytes] = []
    size = 0
    try:
        while data := upstream.read(1024 * 1024):
            size += len(data)
            if size > max_bytes:
                upstream.discard()
                UPSTREAM_ERRORS.labels("deid").inc()
                raise UpstreamError("the metadata is too large to de-identify")
            chunks.append(data)
    except (OSError, ProtocolError):
        upstream.discard()
        UPSTREAM_ERRORS.labels("protocol").inc()
        raise UpstreamError("the PACS connection failed") from None
    upstream.release()
    try:
        document = strip_datasets(fastjson.loads(b"".join(chunks)))
    except ValueError:
        UPSTREAM_ERRORS.labels("deid").inc()
        raise UpstreamError("the PACS answered in a form that cannot be de-identified") from None
    return Response(fastjson.dumps(document), status=upstream.status, content_type=JSON_TYPE)
