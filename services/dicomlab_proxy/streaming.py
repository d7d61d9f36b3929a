"""Relaying Orthanc's answers to the client: allow-listed headers, bodies streamed, never buffered whole.

Only an allow-list of request headers travels upstream (so ``Host``, ``Origin``, cookies, the
caller's token and method-override headers never do); the HTTP client is
:mod:`dicomlab_proxy.upstream`. Response bodies are read in ``chunk_bytes`` pieces and yielded as
they are: multipart boundaries, compression and lengths stay byte-identical. When the client goes
away, the WSGI server closes the iterator and the upstream connection is dropped (not returned
half-read to the pool); when Orthanc goes away mid-body,
:class:`~dicomlab_proxy.errors.StreamBroken` makes the server cut the client connection.

Large bodies of known length take a zero-copy path where the server allows it (:func:`splice_relay`):
the bytes move from Orthanc's socket to the client's socket inside the kernel (``splice(2)``
through a pipe) instead of being copied into Python and back (measured in ``benchmarks/bench_proxy.py``).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import io
import logging
import os
import select
import socket
import ssl
import struct
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from dicomlab_proxy.errors import StreamBroken
from dicomlab_proxy.metrics import UPSTREAM_ERRORS
from dicomlab_proxy.upstream import ProtocolError, Response

logger = logging.getLogger(__name__)

FORWARDED_REQUEST_HEADERS = ("Accept", "Accept-Encoding", "Range", "If-None-Match", "If-Modified-Since",
                             "If-Range", "Content-Type", "Content-Length")
PASSED_RESPONSE_HEADERS = ("Content-Type", "Content-Length", "Content-Range", "Accept-Ranges", "ETag",
                           "Last-Modified", "Content-Encoding")
SPLICE_MIN_BYTES = 256 * 1024
"""Bodies at least this long take the zero-copy path; shorter ones are cheaper to copy once."""
PIPE_BYTES = 1024 * 1024
"""Pipe capacity asked for the splice path (Linux's default unprivileged ``pipe-max-size``)."""
_F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)


def _environ_key(name: str) -> str:
    key = name.upper().replace("-", "_")
    return key if key in ("CONTENT_TYPE", "CONTENT_LENGTH") else "HTTP_" + key


_FORWARDED_KEYS = tuple((name, _environ_key(name)) for name in FORWARDED_REQUEST_HEADERS)


def forward_headers(environ: Mapping[str, Any], *, body: bool) -> dict[str, str]:
    """The allow-listed request headers to send upstream (body headers only when there is a body).

    Read straight from the WSGI environ: a missing header costs a dict miss, not an exception.
    """
    out: dict[str, str] = {}
    for name, key in _FORWARDED_KEYS:
        value = environ.get(key)
        if value is not None and (body or key not in ("CONTENT_TYPE", "CONTENT_LENGTH")):
            out[name] = value
    return out


def passed_headers(response: Response) -> list[tuple[str, str]]:
    """The response headers clients get from Orthanc's answer (no Server, cookies, WWW-Authenticate)."""
    return [(name, response.headers[name]) for name in PASSED_RESPONSE_HEADERS if name in response.headers]


def drain(response: Response, limit: int = 64 * 1024) -> None:
    """Read a small body to the end so the connection can be reused; drop it when large."""
    length = response.content_length
    if length is None or length > limit:
        response.discard()
        return
    try:
        while response.read(limit):
            pass
    except (OSError, ProtocolError):
        response.discard()
        return
    response.release()


Done = Callable[[int, str, float], None]
"""Called once when a relay ends: ``(bytes_sent, outcome, seconds)`` with outcome complete/aborted/upstream_error."""


def relay(response: Response, chunk_bytes: int, started: float, done: Done) -> Iterator[bytes]:
    """Yield the upstream body as it arrives; release or drop the connection exactly once."""
    sent = 0
    outcome = "aborted"
    try:
        while True:
            try:
                data = response.read(chunk_bytes)
            except (ProtocolError, OSError) as exc:
                outcome = "upstream_error"
                kind = "read_timeout" if isinstance(exc, TimeoutError) else "midstream"
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
            response.release()
        else:
            response.discard()
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


def limit_client_send(environ: Mapping[str, Any], seconds: float) -> None:
    """Make writes to a client that stops reading fail after ``seconds`` without progress.

    Sets ``SO_SNDTIMEO`` on the connection the server exposes (gunicorn's ``gunicorn.socket``), which
    bounds every blocking send to it: the server's own writes of headers and copied bodies, and the
    splice path's. Without it, a client that stops reading holds a worker thread and an upstream
    connection for as long as it keeps the connection open.
    """
    sock = environ.get("gunicorn.socket")
    if isinstance(sock, socket.socket):
        whole = int(seconds)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO,
                        struct.pack("ll", whole, int((seconds - whole) * 1_000_000)))


def splice_source(response: Response) -> tuple[socket.socket, io.BufferedReader, int] | None:
    """``(socket, buffered reader, length)`` of an upstream body that can be spliced, else None.

    Only a plain-TCP body framed by ``Content-Length`` (not chunked) of at least
    :data:`SPLICE_MIN_BYTES` qualifies. The reader may already hold the first bytes of the body,
    read along with the headers.
    """
    length = response.content_length
    conn = response.connection
    if length is None or length < SPLICE_MIN_BYTES or conn is None or isinstance(conn.sock, ssl.SSLSocket):
        return None
    return conn.sock, conn.reader, length


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


def _flush(pipe_out: int, client: socket.socket, count: int, timeout: float) -> None:
    """Move exactly ``count`` bytes from the pipe to the client socket.

    A blocking socket reports ``EAGAIN`` once its send timeout (:func:`limit_client_send`) passed
    without progress: the client stopped reading. A non-blocking one is given ``timeout`` to drain.
    """
    while count:
        try:
            count -= os.splice(pipe_out, client.fileno(), count, flags=os.SPLICE_F_MOVE)
        except BlockingIOError:
            if client.getblocking() or not _wait(client.fileno(), select.POLLOUT, timeout):
                raise _ClientGone(BrokenPipeError(errno.EPIPE, "client stopped reading")) from None
        except OSError as exc:
            raise _ClientGone(exc) from None


def splice_relay(response: Response, source: tuple[socket.socket, io.BufferedReader, int], client: socket.socket,
                 timeouts: tuple[float, float], started: float, done: Done) -> Iterator[bytes]:
    """Like :func:`relay`, with the body moved socket to socket by the kernel.

    The first (empty) item makes the server send the status line and headers; the body then goes
    straight to ``client``. ``timeouts`` are ``(read, send)`` seconds: how long Orthanc may stay silent
    and how long the client may take no bytes. Failures end as in :func:`relay`: Orthanc failing raises
    :class:`StreamBroken`; the client leaving (or stalling past the send timeout) re-raises its socket
    error, which the server treats as the dropped connection it is.
    """
    upstream, reader, length = source
    read_timeout, send_timeout = timeouts
    sent = 0
    outcome = "aborted"
    pipe_out = pipe_in = -1
    try:
        yield b""
        try:
            try:
                head = reader.read1(min(length, 64 * 1024))  # what the reader buffered with the headers
            except OSError as exc:
                raise _upstream_broken(exc, sent) from None
            if not head:
                raise _upstream_broken(ConnectionResetError(errno.ECONNRESET, "closed early"), sent)
            try:
                client.sendall(head)
            except BlockingIOError:  # the send timeout passed without progress
                raise _ClientGone(BrokenPipeError(errno.EPIPE, "client stopped reading")) from None
            except OSError as exc:
                raise _ClientGone(exc) from None
            sent = len(head)
            pipe_out, pipe_in = os.pipe2(os.O_CLOEXEC)
            with contextlib.suppress(OSError):  # the default 64 KiB pipe still works, with more calls
                fcntl.fcntl(pipe_in, _F_SETPIPE_SZ, PIPE_BYTES)
            while sent < length:
                try:
                    moved = _fill(upstream.fileno(), pipe_in, min(length - sent, PIPE_BYTES), read_timeout)
                except OSError as exc:
                    raise _upstream_broken(exc, sent) from None
                if moved == 0:
                    raise _upstream_broken(ConnectionResetError(errno.ECONNRESET, "closed early"), sent)
                _flush(pipe_out, client, moved, send_timeout)
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
            response.consumed_externally()  # the connection sits at the next message: back to the pool
            response.release()
        else:
            response.discard()
        done(sent, outcome, time.perf_counter() - started)


def _upstream_broken(error: OSError, sent: int) -> StreamBroken:
    kind = "read_timeout" if isinstance(error, TimeoutError) else "midstream"
    UPSTREAM_ERRORS.labels(kind).inc()
    logger.warning("upstream failed mid-stream after %d bytes: %s", sent, type(error).__name__)
    return StreamBroken("upstream failed mid-stream")
