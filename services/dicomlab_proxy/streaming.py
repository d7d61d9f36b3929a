"""The upstream side: one urllib3 connection pool to Orthanc and a response relay that never buffers.

Requests go to the fixed Orthanc address from configuration with its credentials added here; only
an allow-list of request headers travels upstream (so ``Host``, ``Origin``, cookies, the caller's
token and method-override headers never do). Response bodies are read in ``chunk_bytes`` pieces
with ``decode_content=False`` and yielded as they are: multipart boundaries, compression and
lengths stay byte-identical. When the client goes away, the WSGI server closes the iterator and the
upstream connection is dropped (not returned half-read to the pool); when Orthanc goes away
mid-body, :class:`~dicomlab_proxy.errors.StreamBroken` makes the server cut the client connection.

Large bodies of known length take a zero-copy path where the server allows it (:func:`splice_relay`):
the bytes move from Orthanc's socket to the client's socket inside the kernel (``splice(2)``
through a pipe) instead of being copied into Python and back. On an 8 MB ``/instances/{id}/file``
this is what brings the proxy close to direct Orthanc throughput (see ``benchmarks/bench_proxy.py``).
"""

from __future__ import annotations

import base64
import contextlib
import errno
import fcntl
import logging
import os
import select
import socket
import ssl
import time
from collections.abc import Callable, Iterator, Mapping
from types import TracebackType
from typing import Any, Self
from urllib.parse import urlsplit

import urllib3
from urllib3.exceptions import (
    ConnectTimeoutError,
    HTTPError,
    MaxRetryError,
    NewConnectionError,
    ProtocolError,
    ReadTimeoutError,
)
from urllib3.util.retry import Retry

from dicomlab_core.errors import UpstreamError, UpstreamTimeout
from dicomlab_core.orthanc import OrthancSettings
from dicomlab_proxy.errors import StreamBroken
from dicomlab_proxy.metrics import UPSTREAM_ERRORS

SPLICE_MIN_BYTES = 256 * 1024
"""Bodies at least this long take the zero-copy path; shorter ones are cheaper to copy once."""
PIPE_BYTES = 1024 * 1024
"""Pipe capacity asked for the splice path (Linux's default unprivileged ``pipe-max-size``)."""
_F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)

logger = logging.getLogger(__name__)

FORWARDED_REQUEST_HEADERS = ("Accept", "Accept-Encoding", "Range", "If-None-Match", "If-Modified-Since",
                             "If-Range", "Content-Type", "Content-Length")
PASSED_RESPONSE_HEADERS = ("Content-Type", "Content-Length", "Content-Range", "Accept-Ranges", "ETag",
                           "Last-Modified", "Content-Encoding")


class _StaleConnectionRetry(Retry):
    """Retry once when a pooled keep-alive connection turns out closed, never after a timeout.

    Orthanc closes idle keep-alive connections after about a second; a request that meets such a
    socket failed before Orthanc saw it, so sending it again is safe. A timeout is not retried:
    a dead Orthanc must become a 502/504 within one timeout, not several.
    """

    def increment(self, method: str | None = None, url: str | None = None,
                  response: urllib3.BaseHTTPResponse | None = None, error: Exception | None = None,
                  _pool: Any = None, _stacktrace: TracebackType | None = None) -> Self:
        if isinstance(error, ConnectTimeoutError | ReadTimeoutError):  # incl. NewConnectionError: refused
            raise error
        return super().increment(method, url, response, error, _pool, _stacktrace)


class Upstream:
    """Orthanc behind a pooled, thread-safe urllib3 connection pool."""

    def __init__(self, settings: OrthancSettings, *, chunk_bytes: int) -> None:
        self.settings = settings
        self.chunk_bytes = chunk_bytes
        parts = urlsplit(settings.url)
        self.base_path = parts.path.rstrip("/")
        self.address = f"{parts.scheme}://{parts.netloc}"
        # urllib3 logs every request line at DEBUG, query included (QIDO queries can carry PHI).
        logging.getLogger("urllib3.connectionpool").setLevel(logging.WARNING)
        self.pool = urllib3.connection_from_url(settings.url, maxsize=settings.pool_size, block=False)
        self.timeout = urllib3.Timeout(connect=settings.connect_timeout, read=settings.read_timeout)
        self._auth: str | None = None
        if settings.password:
            basic = f"{settings.username}:{settings.password.reveal()}".encode()
            self._auth = "Basic " + base64.b64encode(basic).decode("ascii")

    def close(self) -> None:
        self.pool.close()

    def open(self, method: str, path: str, *, query: str = "", headers: Mapping[str, str] | None = None,
             body: Any = None, timeout: urllib3.Timeout | None = None, retry: bool = True) -> urllib3.BaseHTTPResponse:
        """Send one request and return the response with its body still unread.

        Raises :class:`UpstreamTimeout` (504) or :class:`UpstreamError` (502) when Orthanc cannot be
        reached in time; HTTP error statuses are returned, not raised.
        """
        sent: dict[str, str] = dict(headers or {})
        if self._auth:
            sent["Authorization"] = self._auth
        url = self.base_path + path + ("?" + query if query else "")
        retries: Retry | bool = _StaleConnectionRetry(total=1, connect=1, read=1, status=0, redirect=0, other=0,
                                                      raise_on_status=False) if retry else False
        try:
            return self.pool.urlopen(method, url, body=body, headers=sent, retries=retries, redirect=False,
                                     timeout=timeout or self.timeout, preload_content=False,
                                     decode_content=False, release_conn=False, assert_same_host=True)
        except MaxRetryError as exc:
            raise self._translate(exc.reason or exc) from exc
        except HTTPError as exc:
            raise self._translate(exc) from exc
        except OSError as exc:
            UPSTREAM_ERRORS.labels("connect").inc()
            raise UpstreamError("the PACS is unreachable") from exc

    def _translate(self, error: Exception) -> UpstreamError:
        if isinstance(error, NewConnectionError):  # first: urllib3 derives it from ConnectTimeoutError
            UPSTREAM_ERRORS.labels("connect").inc()
            return UpstreamError("the PACS is unreachable")
        if isinstance(error, ConnectTimeoutError):
            UPSTREAM_ERRORS.labels("connect_timeout").inc()
            return UpstreamTimeout("the PACS did not answer in time")
        if isinstance(error, ReadTimeoutError):
            UPSTREAM_ERRORS.labels("read_timeout").inc()
            return UpstreamTimeout("the PACS did not answer in time")
        UPSTREAM_ERRORS.labels("protocol").inc()
        return UpstreamError("the PACS connection failed")

    def ping(self, timeout: float) -> bool:
        """Whether Orthanc answers ``/system`` with 200 within ``timeout`` seconds (for ``/readyz``)."""
        try:
            response = self.open("GET", "/system", timeout=urllib3.Timeout(connect=timeout, read=timeout),
                                 retry=False)
        except UpstreamError:
            return False
        try:
            response.read()
        finally:
            response.release_conn()
        return response.status == 200


def forward_headers(incoming: Mapping[str, str], *, body: bool) -> dict[str, str]:
    """The allow-listed request headers to send upstream (body headers only when there is a body)."""
    out: dict[str, str] = {}
    for name in FORWARDED_REQUEST_HEADERS:
        if not body and name in ("Content-Type", "Content-Length"):
            continue
        value = incoming.get(name)
        if value is not None:
            out[name] = value
    return out


def passed_headers(response: urllib3.BaseHTTPResponse) -> list[tuple[str, str]]:
    """The response headers clients get from Orthanc's answer (no Server, cookies, WWW-Authenticate)."""
    return [(name, response.headers[name]) for name in PASSED_RESPONSE_HEADERS if name in response.headers]


def discard(response: urllib3.BaseHTTPResponse) -> None:
    """Drop an upstream response without reading its body (the connection is closed, not reused)."""
    response.close()
    response.release_conn()


def drain(response: urllib3.BaseHTTPResponse, limit: int = 64 * 1024) -> None:
    """Read a small body to the end so the connection can be reused; drop it when large."""
    length = response.headers.get("Content-Length")
    if length is not None and length.isdigit() and int(length) <= limit:
        try:
            response.read()
        except HTTPError:
            response.close()
        response.release_conn()
    else:
        discard(response)


Done = Callable[[int, str, float], None]
"""Called once when a relay ends: ``(bytes_sent, outcome, seconds)`` with outcome complete/aborted/upstream_error."""


def relay(response: urllib3.BaseHTTPResponse, chunk_bytes: int, started: float, done: Done) -> Iterator[bytes]:
    """Yield the upstream body as it arrives; release or drop the connection exactly once."""
    sent = 0
    outcome = "aborted"
    try:
        while True:
            try:
                data = response.read(chunk_bytes)
            except (ProtocolError, ReadTimeoutError, HTTPError, OSError) as exc:
                outcome = "upstream_error"
                kind = "read_timeout" if isinstance(exc, ReadTimeoutError) else "midstream"
                UPSTREAM_ERRORS.labels(kind).inc()
                logger.warning("upstream failed mid-stream after %d bytes: %s", sent, type(exc).__name__)
                raise StreamBroken("upstream failed mid-stream") from None
            if not data:
                break
            sent += len(data)
            yield data
        outcome = "complete"
    finally:
        if outcome == "complete":
            response.release_conn()
        else:
            discard(response)
        done(sent, outcome, time.perf_counter() - started)


# ------------------------------------------------------------------------------------ zero copy

def splice_client(environ: Mapping[str, Any]) -> socket.socket | None:
    """The client's plain TCP socket when the WSGI server exposes it, else None (copy instead).

    gunicorn puts the connection in ``environ["gunicorn.socket"]`` and writes the status line and
    headers on the first body write, so the rest of the body may go to the socket directly. A TLS
    socket never qualifies: splicing would bypass the encryption.
    """
    sock = environ.get("gunicorn.socket")
    if not hasattr(os, "splice") or not isinstance(sock, socket.socket) or isinstance(sock, ssl.SSLSocket):
        return None
    return sock


def splice_source(response: urllib3.BaseHTTPResponse) -> tuple[socket.socket, Any, int] | None:
    """``(socket, buffered reader, length)`` of an upstream body that can be spliced, else None.

    Only a plain-TCP body with a ``Content-Length`` (no chunked framing) of at least
    :data:`SPLICE_MIN_BYTES` qualifies. The reader is http.client's buffer over the socket: it may
    already hold the first bytes of the body, read along with the headers.
    """
    length = response.headers.get("Content-Length", "")
    if not length.isdigit() or int(length) < SPLICE_MIN_BYTES or "Transfer-Encoding" in response.headers:
        return None
    connection = getattr(response, "connection", None)
    sock = getattr(connection, "sock", None)
    reader = getattr(getattr(response, "_fp", None), "fp", None)  # urllib3 2.x: the http.client response's reader
    if not isinstance(sock, socket.socket) or isinstance(sock, ssl.SSLSocket) or not hasattr(reader, "read1"):
        return None
    return sock, reader, int(length)


class _ClientGone(Exception):
    def __init__(self, error: OSError) -> None:
        self.error = error


def _wait(fd: int, event: int, timeout: float) -> bool:
    poller = select.poll()
    poller.register(fd, event | select.POLLERR | select.POLLHUP)
    return bool(poller.poll(timeout * 1000))


def _fill(upstream: int, pipe_in: int, want: int, timeout: float) -> int:
    """Move up to ``want`` bytes from the upstream socket into the pipe; 0 means Orthanc closed early."""
    while True:
        try:
            return os.splice(upstream, pipe_in, want, flags=os.SPLICE_F_MOVE | os.SPLICE_F_NONBLOCK)
        except BlockingIOError:
            if not _wait(upstream, select.POLLIN, timeout):
                raise TimeoutError("upstream read timed out") from None


def _flush(pipe_out: int, client: int, count: int, timeout: float) -> None:
    """Move exactly ``count`` bytes from the pipe to the client socket."""
    while count:
        try:
            count -= os.splice(pipe_out, client, count, flags=os.SPLICE_F_MOVE)
        except BlockingIOError:
            if not _wait(client, select.POLLOUT, timeout):
                raise _ClientGone(BrokenPipeError(errno.EPIPE, "client stopped reading")) from None
        except OSError as exc:
            raise _ClientGone(exc) from None


def splice_relay(response: urllib3.BaseHTTPResponse, source: tuple[socket.socket, Any, int], client: socket.socket,
                 timeout: float, started: float, done: Done) -> Iterator[bytes]:
    """Like :func:`relay`, with the body moved socket to socket by the kernel.

    The first (empty) item makes the server send the status line and headers; the body then goes
    straight to ``client``. Failures end as in :func:`relay`: Orthanc
    failing raises :class:`StreamBroken`, the client leaving re-raises its socket error, which the
    server treats as the dropped connection it is.
    """
    upstream, reader, length = source
    sent = 0
    outcome = "aborted"
    pipe_out = pipe_in = -1
    try:
        yield b""
        try:
            try:
                head = reader.read1(min(length, 64 * 1024))  # what http.client buffered with the headers
            except OSError as exc:
                raise _upstream_broken(exc, sent) from None
            if not head:
                raise _upstream_broken(ConnectionResetError(errno.ECONNRESET, "closed early"), sent)
            try:
                client.sendall(head)
            except OSError as exc:
                raise _ClientGone(exc) from None
            sent = len(head)
            pipe_out, pipe_in = os.pipe2(os.O_CLOEXEC)
            with contextlib.suppress(OSError):  # the default 64 KiB pipe still works, with more calls
                fcntl.fcntl(pipe_in, _F_SETPIPE_SZ, PIPE_BYTES)
            while sent < length:
                try:
                    moved = _fill(upstream.fileno(), pipe_in, min(length - sent, PIPE_BYTES), timeout)
                except OSError as exc:
                    raise _upstream_broken(exc, sent) from None
                if moved == 0:
                    raise _upstream_broken(ConnectionResetError(errno.ECONNRESET, "closed early"), sent)
                _flush(pipe_out, client.fileno(), moved, timeout)
                sent += moved
        except _ClientGone as gone:
            raise gone.error from None
        outcome = "complete"
    except StreamBroken:
        outcome = "upstream_error"
        raise
    finally:
        for fd in (pipe_out, pipe_in):
            if fd >= 0:
                os.close(fd)
        if outcome == "complete":
            _release_spliced(response)
        else:
            discard(response)
        done(sent, outcome, time.perf_counter() - started)


def _release_spliced(response: urllib3.BaseHTTPResponse) -> None:
    """Return the connection of a fully spliced body to the pool (it sits at the next message).

    The kernel read the body behind http.client's back, so its response is closed by hand first.
    Reuse matters: a fresh connection per large object costs Orthanc and the proxy ~0.5 ms each
    (handshake, and TCP buffers that have to grow again).
    """
    reader = getattr(response, "_fp", None)
    if reader is None or getattr(reader, "will_close", True):
        discard(response)
        return
    reader.close()
    response.release_conn()


def _upstream_broken(error: OSError, sent: int) -> StreamBroken:
    kind = "read_timeout" if isinstance(error, TimeoutError) else "midstream"
    UPSTREAM_ERRORS.labels(kind).inc()
    logger.warning("upstream failed mid-stream after %d bytes: %s", sent, type(error).__name__)
    return StreamBroken("upstream failed mid-stream")
