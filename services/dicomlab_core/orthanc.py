"""One client for Orthanc's REST API and its DICOMweb plugin (QIDO-RS, WADO-RS, STOW-RS).

Every call has an explicit (connect, read) timeout. Retries with exponential backoff happen only
for idempotent requests and only on retryable answers (408, 429, 502, 503, 504) or connection
failures, never for uploads, so a retried request can never store or change something twice.
Connections are pooled (one ``requests.Session`` with a sized adapter). Failures surface as
:class:`UpstreamError` / :class:`UpstreamTimeout` / :class:`NotFound` with a message that names
Orthanc's address and never its credentials.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from enum import StrEnum
from http import HTTPStatus
from typing import Any, Protocol

import requests
from requests.adapters import HTTPAdapter
from urllib3.exceptions import ConnectTimeoutError, NewConnectionError, ReadTimeoutError
from urllib3.util.retry import Retry

from dicomlab_core.config import Secret
from dicomlab_core.errors import BadRequest, NotFound, UpstreamError, UpstreamTimeout
from dicomlab_core.multipart import decode_related, encode_related

logger = logging.getLogger(__name__)

RETRYABLE_STATUSES = frozenset({HTTPStatus.REQUEST_TIMEOUT, HTTPStatus.TOO_MANY_REQUESTS, HTTPStatus.BAD_GATEWAY,
                                HTTPStatus.SERVICE_UNAVAILABLE, HTTPStatus.GATEWAY_TIMEOUT})
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
STREAM_CHUNK_BYTES = 1024 * 1024
MAX_PROBE_TIMEOUT_S = 3.0
"""Readiness probes never wait longer than this for Orthanc."""


class QidoLevel(StrEnum):
    """QIDO-RS search levels."""

    STUDIES = "studies"
    SERIES = "series"
    INSTANCES = "instances"


class ResourceLevel(StrEnum):
    """Orthanc's resource levels, as ``/tools/find`` names them."""

    PATIENT = "Patient"
    STUDY = "Study"
    SERIES = "Series"
    INSTANCE = "Instance"


@dataclass(frozen=True)
class OrthancSettings:
    """How to reach Orthanc."""

    url: str = "http://127.0.0.1:8042"
    """Orthanc's base URL (REST API root)."""
    username: str = "dicomlab"
    """HTTP Basic user name for Orthanc."""
    password: Secret = Secret("")
    """HTTP Basic password for Orthanc (from a Secret; empty means no authentication)."""
    dicomweb_root: str = "/dicom-web"
    """Path of the DICOMweb plugin under ``url``."""
    connect_timeout: float = 3.0
    """Seconds to wait for a TCP connection."""
    read_timeout: float = 60.0
    """Seconds to wait for Orthanc between bytes of a response."""
    retries: int = 3
    """Retries for idempotent requests on retryable failures (exponential backoff)."""
    backoff: float = 0.2
    """Base of the exponential backoff between retries, in seconds."""
    pool_size: int = 16
    """Pooled connections kept open to Orthanc (size it to the worker thread count)."""
    probe_timeout: float = 2.0
    """Seconds a readiness probe (``/readyz``) waits for Orthanc, connecting and reading; one try, never
    retried; capped at 3 (default 2)."""

    @property
    def base(self) -> str:
        return self.url.rstrip("/")


class InstanceSource(Protocol):
    """Where DICOM files come from: Orthanc, or a folder of files in tests and offline runs."""

    def get_instance_file(self, instance_id: str) -> bytes: ...


class OrthancClient:
    """REST + DICOMweb client for one Orthanc server. Thread-safe for concurrent requests."""

    def __init__(self, settings: OrthancSettings) -> None:
        self.settings = settings
        self.session = requests.Session()
        if settings.password:
            self.session.auth = (settings.username, settings.password.reveal())
        retry = Retry(
            total=settings.retries, connect=settings.retries, read=settings.retries, status=settings.retries,
            backoff_factor=settings.backoff, status_forcelist=sorted(RETRYABLE_STATUSES),
            allowed_methods=IDEMPOTENT_METHODS, raise_on_status=False, respect_retry_after_header=True,
        )
        adapter = HTTPAdapter(pool_connections=1, pool_maxsize=settings.pool_size, max_retries=retry)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        # A separate adapter for calls we must not retry (uploads): a retried POST could store twice.
        self._no_retry = requests.Session()
        self._no_retry.auth = self.session.auth
        once = HTTPAdapter(pool_connections=1, pool_maxsize=settings.pool_size, max_retries=0)
        self._no_retry.mount("http://", once)
        self._no_retry.mount("https://", once)

    def close(self) -> None:
        self.session.close()
        self._no_retry.close()

    @property
    def timeout(self) -> tuple[float, float]:
        return (self.settings.connect_timeout, self.settings.read_timeout)

    # ----------------------------------------------------------------- plumbing

    def request(self, method: str, path: str, *, idempotent: bool | None = None, stream: bool = False,
                **kwargs: Any) -> requests.Response:
        """Send one request to ``path`` (relative to the base URL) and return a 2xx response.

        ``idempotent`` overrides the method's default (POST ``/tools/find`` is a read, for example).
        """
        retryable = method.upper() in IDEMPOTENT_METHODS if idempotent is None else idempotent
        session = self.session if retryable else self._no_retry
        if retryable and method.upper() not in IDEMPOTENT_METHODS:
            return self._retry_post(method, path, stream=stream, **kwargs)
        url = self.settings.base + path
        try:
            response = session.request(method, url, timeout=self.timeout, stream=stream, **kwargs)
        except requests.exceptions.RequestException as exc:
            if _is_timeout(exc):
                raise UpstreamTimeout(f"Orthanc at {self.settings.base} did not answer within "
                                      f"{self.settings.read_timeout:g} s ({method} {path.split('?')[0]})") from exc
            raise UpstreamError(f"Orthanc at {self.settings.base} is unreachable: {type(exc).__name__}") from exc
        self._raise_for_status(response, method, path)
        return response

    def _retry_post(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        import time

        attempt = 0
        while True:
            try:
                return self.request(method, path, idempotent=False, **kwargs)
            except UpstreamError as exc:
                status = getattr(exc, "upstream_status", None)
                retryable = status is None or status in RETRYABLE_STATUSES
                if attempt >= self.settings.retries or not retryable:
                    raise
                time.sleep(self.settings.backoff * (2 ** attempt))
                attempt += 1

    def _raise_for_status(self, response: requests.Response, method: str, path: str) -> None:
        if response.status_code < 400:
            return
        status = response.status_code
        where = f"{method} {path.split('?')[0]}"
        detail = ""
        try:
            body = response.json()
            if isinstance(body, Mapping):
                detail = str(body.get("Details") or body.get("Message") or "")[:200]
        except ValueError:
            pass
        response.close()
        if status == HTTPStatus.NOT_FOUND:
            raise NotFound(f"not found in Orthanc: {where}")
        if status == HTTPStatus.UNAUTHORIZED:
            error = UpstreamError(f"Orthanc at {self.settings.base} rejected the configured credentials")
        elif status == HTTPStatus.BAD_REQUEST:
            error = UpstreamError(f"Orthanc refused {where}: {detail or 'bad request'}")
        else:
            error = UpstreamError(f"Orthanc answered {status} to {where}{': ' + detail if detail else ''}")
        error.upstream_status = status  # type: ignore[attr-defined]
        raise error

    def get_json(self, path: str, params: Mapping[str, Any] | None = None) -> Any:
        return self.request("GET", path, params=params).json()

    def post_json(self, path: str, body: Any, *, idempotent: bool = False) -> Any:
        return self.request("POST", path, json=body, idempotent=idempotent).json()

    # ----------------------------------------------------------------- REST

    def system(self) -> dict[str, Any]:
        """``GET /system``: version, name, DICOMweb availability. Used as the health check."""
        result: dict[str, Any] = self.get_json("/system")
        return result

    def ping(self) -> None:
        """``GET /system`` once, with the short ``probe_timeout`` and no retry: the readiness check.

        The normal path (60 s reads, retried with backoff) would hold a probe for minutes when Orthanc
        hangs; a probe must answer within its own deadline.
        """
        timeout = min(max(self.settings.probe_timeout, 0.1), MAX_PROBE_TIMEOUT_S)
        try:
            response = self._no_retry.get(self.settings.base + "/system", timeout=(timeout, timeout))
        except requests.exceptions.RequestException as exc:
            if _is_timeout(exc):
                raise UpstreamTimeout(f"Orthanc at {self.settings.base} did not answer within {timeout:g} s") from exc
            raise UpstreamError(f"Orthanc at {self.settings.base} is unreachable: {type(exc).__name__}") from exc
        self._raise_for_status(response, "GET", "/system")

    def statistics(self) -> dict[str, Any]:
        result: dict[str, Any] = self.get_json("/statistics")
        return result

    def upload_instance(self, data: bytes) -> dict[str, Any]:
        """Store one DICOM file through the REST API (``POST /instances``); never retried.

        Raises :class:`BadRequest` when ``data`` is not DICOM, before Orthanc sees it.
        """
        if len(data) < 132 or data[128:132] != b"DICM":
            raise BadRequest("not a DICOM file (no 'DICM' preamble at byte 128)")
        result: dict[str, Any] = self.request(
            "POST", "/instances", data=data, headers={"Content-Type": "application/dicom"}).json()
        return result

    def get_instance_file(self, instance_id: str) -> bytes:
        """The stored DICOM file of an instance, by Orthanc ID."""
        return self.request("GET", f"/instances/{instance_id}/file").content

    def iter_instance_file(self, instance_id: str, chunk_size: int = STREAM_CHUNK_BYTES) -> Iterator[bytes]:
        """Stream an instance's DICOM file in ``chunk_size`` pieces without holding it whole."""
        response = self.request("GET", f"/instances/{instance_id}/file", stream=True)
        try:
            yield from response.iter_content(chunk_size=chunk_size)
        finally:
            response.close()

    def instance_tags(self, instance_id: str) -> dict[str, Any]:
        """``/instances/{id}/simplified-tags``: the main tags keyed by keyword."""
        result: dict[str, Any] = self.get_json(f"/instances/{instance_id}/simplified-tags")
        return result

    def changes(self, since: int = 0, limit: int = 1000) -> dict[str, Any]:
        """One page of the changes feed: ``{"Changes": [...], "Done": bool, "Last": int}``."""
        result: dict[str, Any] = self.get_json("/changes", {"since": since, "limit": limit})
        return result

    def find(self, level: ResourceLevel, query: Mapping[str, str] | None = None, *, limit: int = 0,
             since: int = 0, expand: bool = True, requested_tags: Iterable[str] = ()) -> list[Any]:
        """``POST /tools/find`` (a read, so it is retried): matching resources, expanded if asked."""
        body: dict[str, Any] = {"Level": str(level), "Query": dict(query or {}), "Expand": expand}
        if limit:
            body["Limit"] = limit
            body["Since"] = since
        tags = list(requested_tags)
        if tags:
            body["RequestedTags"] = tags
        result: list[Any] = self.post_json("/tools/find", body, idempotent=True)
        return result

    def lookup_instance(self, sop_instance_uid: str) -> str | None:
        """The Orthanc ID of the instance with this SOP Instance UID, or None."""
        hits = self.find(ResourceLevel.INSTANCE, {"SOPInstanceUID": sop_instance_uid}, expand=False)
        return str(hits[0]) if hits else None

    def delete(self, level: ResourceLevel, orthanc_id: str) -> None:
        path = {ResourceLevel.PATIENT: "patients", ResourceLevel.STUDY: "studies",
                ResourceLevel.SERIES: "series", ResourceLevel.INSTANCE: "instances"}[level]
        self.request("DELETE", f"/{path}/{orthanc_id}")

    # ----------------------------------------------------------------- DICOMweb

    @property
    def dicomweb(self) -> str:
        return self.settings.dicomweb_root.rstrip("/")

    def qido(self, level: QidoLevel, params: Mapping[str, Any] | None = None, *, study_uid: str | None = None,
             series_uid: str | None = None) -> list[dict[str, Any]]:
        """A QIDO-RS search at ``level``, optionally below a study or series."""
        path = self.dicomweb
        if study_uid:
            path += f"/studies/{study_uid}"
            if series_uid:
                path += f"/series/{series_uid}"
        path += f"/{level}"
        response = self.request("GET", path, params=params, headers={"Accept": "application/dicom+json"})
        if response.status_code == HTTPStatus.NO_CONTENT or not response.content:
            return []
        result: list[dict[str, Any]] = response.json()
        return result

    def stow(self, datasets: Iterable[bytes], study_uid: str | None = None) -> dict[str, Any]:
        """STOW-RS: store DICOM files in one multipart request (never retried). Returns the response."""
        body, content_type = encode_related(datasets)
        path = self.dicomweb + "/studies" + (f"/{study_uid}" if study_uid else "")
        response = self.request("POST", path, data=body,
                                headers={"Content-Type": content_type, "Accept": "application/dicom+json"})
        result: dict[str, Any] = response.json() if response.content else {}
        return result

    def retrieve_instance(self, study_uid: str, series_uid: str, sop_uid: str) -> bytes:
        """WADO-RS: the DICOM file of one instance, in its stored transfer syntax."""
        path = f"{self.dicomweb}/studies/{study_uid}/series/{series_uid}/instances/{sop_uid}"
        # transfer-syntax=* asks for the stored bytes: without it the DICOMweb plugin transcodes to
        # Explicit VR Little Endian, and answers 500 for syntaxes it cannot decode (JPEG 2000 here).
        accept = 'multipart/related; type="application/dicom"; transfer-syntax=*'
        response = self.request("GET", path, headers={"Accept": accept})
        parts = decode_related(response.content, response.headers.get("Content-Type", ""))
        if len(parts) != 1:
            raise UpstreamError(f"WADO-RS returned {len(parts)} parts for one instance")
        return parts[0]

    def retrieve_metadata(self, study_uid: str, series_uid: str | None = None,
                          sop_uid: str | None = None) -> list[dict[str, Any]]:
        """WADO-RS metadata (DICOM JSON) of a study, series or instance."""
        path = f"{self.dicomweb}/studies/{study_uid}"
        if series_uid:
            path += f"/series/{series_uid}"
            if sop_uid:
                path += f"/instances/{sop_uid}"
        result: list[dict[str, Any]] = self.get_json(path + "/metadata")
        return result


def _is_timeout(exc: requests.exceptions.RequestException) -> bool:
    """A timeout, also when urllib3's retry wrapper turned it into a ConnectionError."""
    if isinstance(exc, requests.exceptions.Timeout):
        return True
    reason = getattr(exc.args[0], "reason", None) if exc.args else None
    if isinstance(reason, NewConnectionError):  # a subclass of ConnectTimeoutError, but a refusal
        return False
    return isinstance(reason, ReadTimeoutError | ConnectTimeoutError)


def dicom_json_value(item: Mapping[str, Any], tag: str) -> Any:
    """The first value of ``tag`` (8 hex digits) in a DICOM JSON object, or None."""
    element = item.get(tag)
    if not isinstance(element, Mapping):
        return None
    values = element.get("Value")
    if not values:
        return None
    first = values[0]
    if isinstance(first, Mapping) and "Alphabetic" in first:
        return first["Alphabetic"]
    return first
