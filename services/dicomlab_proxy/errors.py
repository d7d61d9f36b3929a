"""Errors specific to the proxy (the shared hierarchy lives in :mod:`dicomlab_core.errors`)."""

from __future__ import annotations

import errno
from http import HTTPStatus

from dicomlab_core.errors import Forbidden, ServiceError, Unauthorized

DENIED = "access denied"
"""The one description every 401/403 carries: nothing that tells an attacker what was wrong."""


def unauthorized() -> Unauthorized:
    return Unauthorized(DENIED, headers={"WWW-Authenticate": 'Bearer realm="dicomlab"'})


def forbidden() -> Forbidden:
    return Forbidden(DENIED)


class MethodNotAllowed(ServiceError):
    status = HTTPStatus.METHOD_NOT_ALLOWED


class LengthRequired(ServiceError):
    status = HTTPStatus.LENGTH_REQUIRED


class UriTooLong(ServiceError):
    status = HTTPStatus.REQUEST_URI_TOO_LONG


class HeadersTooLarge(ServiceError):
    status = HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE


class NotAcceptable(ServiceError):
    status = HTTPStatus.NOT_ACCEPTABLE


class RangeNotSatisfiable(ServiceError):
    status = HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE


class UnsupportedMediaType(ServiceError):
    status = HTTPStatus.UNSUPPORTED_MEDIA_TYPE


class StreamBroken(ConnectionResetError):
    """The upstream failed after the response headers were sent: the connection must be dropped.

    Raised out of the response iterator on purpose: the WSGI server then closes the client
    connection instead of ending a chunked body normally, so a truncated object never looks whole.
    It is a connection reset (``ECONNRESET``) so that gunicorn and werkzeug treat it as a dropped
    connection and log it quietly, instead of logging "Error handling request <uri>" — a URI that
    can carry a ``?token=``.
    """

    def __init__(self, message: str) -> None:
        super().__init__(errno.ECONNRESET, message)
