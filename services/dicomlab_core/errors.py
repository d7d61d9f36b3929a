"""The error hierarchy shared by every service, and one JSON error handler for Flask apps.

Every error a client can see is a :class:`ServiceError` with an HTTP status, a short ``name`` and a
``description`` written for the caller. Upstream failures (Orthanc, S3, the database) are wrapped
with ``raise UpstreamError(...) from exc`` so the cause is logged but never returned.
"""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from flask import Flask, Response

logger = logging.getLogger(__name__)


class ServiceError(Exception):
    """Base class: an error with an HTTP status and a message safe to show to the caller."""

    status: ClassVar[HTTPStatus] = HTTPStatus.INTERNAL_SERVER_ERROR

    def __init__(self, description: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(description)
        self.description = description
        self.headers = headers or {}

    def to_dict(self) -> dict[str, Any]:
        """The JSON body: ``{"code", "name", "description"}``."""
        return {"code": int(self.status), "name": self.status.phrase, "description": self.description}


class BadRequest(ServiceError):
    """The request is malformed or a value is invalid; the description names the field."""

    status = HTTPStatus.BAD_REQUEST


class Unauthorized(ServiceError):
    """No valid credential was presented."""

    status = HTTPStatus.UNAUTHORIZED


class Forbidden(ServiceError):
    """The credential is valid but does not allow this request."""

    status = HTTPStatus.FORBIDDEN


class NotFound(ServiceError):
    """The resource does not exist (or the caller may not know that it does)."""

    status = HTTPStatus.NOT_FOUND


class Conflict(ServiceError):
    """The request conflicts with the current state (e.g. a lease taken by someone else)."""

    status = HTTPStatus.CONFLICT


class PayloadTooLarge(ServiceError):
    """The request body or headers exceed the configured limit."""

    status = HTTPStatus.REQUEST_ENTITY_TOO_LARGE


class TooManyRequests(ServiceError):
    """A rate limit was hit; the caller should retry later."""

    status = HTTPStatus.TOO_MANY_REQUESTS


class UpstreamError(ServiceError):
    """A dependency (Orthanc, S3, the database) failed or answered with an error."""

    status = HTTPStatus.BAD_GATEWAY


class UpstreamTimeout(UpstreamError):
    """A dependency did not answer within the configured timeout."""

    status = HTTPStatus.GATEWAY_TIMEOUT


class ServiceUnavailable(ServiceError):
    """The service cannot serve now (e.g. not ready); retry later."""

    status = HTTPStatus.SERVICE_UNAVAILABLE


class ConfigError(Exception):
    """The configuration is missing or invalid; the message names the environment variable."""


def json_error(error: ServiceError) -> Response:
    """Render ``error`` as the JSON body every service returns."""
    from flask import jsonify

    response = jsonify(error.to_dict())
    response.status_code = int(error.status)
    for key, value in error.headers.items():
        response.headers[key] = value
    return response


def register_error_handlers(app: Flask) -> None:
    """Make every error leaving ``app`` a JSON ``{"code", "name", "description"}`` body.

    Werkzeug's HTTP exceptions (404 for unknown routes, 405, 413) keep their status; anything
    unexpected becomes a 500 without a stack trace in the response (it is logged instead).
    """
    from werkzeug.exceptions import HTTPException

    @app.errorhandler(ServiceError)
    def _service_error(error: ServiceError) -> Response:
        if error.status >= HTTPStatus.INTERNAL_SERVER_ERROR:
            logger.warning("request failed: %s", error.description, exc_info=error.__cause__ is not None)
        return json_error(error)

    @app.errorhandler(HTTPException)
    def _http_exception(error: HTTPException) -> Response:
        status = HTTPStatus(error.code or 500)
        wrapped = ServiceError(error.description or status.phrase)
        body = {"code": int(status), "name": status.phrase, "description": wrapped.description}
        from flask import jsonify

        response = jsonify(body)
        response.status_code = int(status)
        for key, value in error.get_headers():
            if key.lower() not in {"content-type", "content-length"}:
                response.headers[key] = value
        return response

    @app.errorhandler(Exception)
    def _unexpected(error: Exception) -> Response:
        logger.exception("unhandled error")
        return json_error(ServiceError("internal error"))
