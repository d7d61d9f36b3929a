"""A gunicorn gthread worker that hands a connection to a thread only once its request head is complete.

Why: gunicorn's gthread worker gives a connection to a pool thread as soon as its first bytes arrive,
and the thread then blocks in the HTTP parser until the headers are complete. A client that sends
its headers slowly (slowloris) therefore holds a thread for as long as it likes; with 2 workers x 16
threads, 34 such connections stopped ``/healthz`` from answering. Here the worker's event loop (the
one that already accepts connections and watches kept-alive ones) reads the request head itself,
non-blocking, and submits the connection to the thread pool only when the blank line that ends the
head has arrived, and, for a small body of declared length (``Content-Length`` up to
:data:`BUFFERED_BODY_BYTES`, no ``Expect``/``Transfer-Encoding``), once the body has arrived too, as
nginx buffers request bodies. A slow client costs a buffer and a file descriptor, never a thread, and is
answered 408 and closed once ``DICOMLAB_HEADER_TIMEOUT`` seconds (default 10) pass without a complete
head, or ``DICOMLAB_BODY_TIMEOUT`` seconds (default 30) without its buffered body. A head over
:data:`MAX_HEAD_BYTES` is answered 431 (nginx's default limit is 32 KiB), which bounds the memory one
connection can hold here.

Everything after the head is gunicorn's own code path: the parser gets the bytes read so far
(:meth:`Unreader.unread`, as gunicorn's own h2c handling does), the application gets the same blocking
socket in ``environ["gunicorn.socket"]`` (the proxy's splice relay depends on that), and keep-alive,
limits and error answers are unchanged. Larger or chunked bodies (STOW-RS uploads) are read by the
thread as before: a client that trickles one holds that thread, which is why a production ingress must
also bound body time (see the README's security model).

TLS, HTTP/2 prior knowledge and the uwsgi protocol are passed to the stock behaviour unchanged (none is
used by dicomlab: TLS ends at the ingress).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import selectors
import socket
import time
from collections import OrderedDict
from functools import partial
from typing import Any

from gunicorn.http2 import negotiation
from gunicorn.workers.gthread import STOP_KEEPALIVE_LINGER, TConn, ThreadWorker

logger = logging.getLogger(__name__)

HEADER_TIMEOUT_ENV = "DICOMLAB_HEADER_TIMEOUT"
DEFAULT_HEADER_TIMEOUT = 10.0
"""Seconds a connection may take to send a complete request head (nginx's ``client_header_timeout``)."""
BODY_TIMEOUT_ENV = "DICOMLAB_BODY_TIMEOUT"
DEFAULT_BODY_TIMEOUT = 30.0
"""Seconds a connection may take, after its head, to send a body that is buffered here."""
MAX_HEAD_BYTES = 64 * 1024
"""Largest request head read here; a bigger one is answered 431."""
BUFFERED_BODY_BYTES = 64 * 1024
"""Bodies of declared length up to this are read before a thread is given; bigger ones by the thread."""

_READ_SIZE = 64 * 1024
_REQUEST_TIMEOUT = b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
_HEAD_TOO_LARGE = b"HTTP/1.1 431 Request Header Fields Too Large\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"


def _seconds(name: str, default: float) -> float:
    raw = os.environ.get(name, "")
    try:
        value = float(raw) if raw else default
    except ValueError as exc:
        raise ValueError(f"{name} must be a number of seconds, not {raw!r}") from exc
    if not value > 0:
        raise ValueError(f"{name} must be > 0 seconds, not {raw!r}")
    return value


def header_timeout() -> float:
    """The head deadline from ``DICOMLAB_HEADER_TIMEOUT`` (seconds, > 0), else the default."""
    return _seconds(HEADER_TIMEOUT_ENV, DEFAULT_HEADER_TIMEOUT)


def body_timeout() -> float:
    """The buffered-body deadline from ``DICOMLAB_BODY_TIMEOUT`` (seconds, > 0), else the default."""
    return _seconds(BODY_TIMEOUT_ENV, DEFAULT_BODY_TIMEOUT)


def head_end(data: bytes | bytearray) -> int | None:
    """Offset just past the blank line that ends the request head, or None while it is incomplete."""
    ends = [i + len(mark) for mark in (b"\r\n\r\n", b"\n\n") if (i := data.find(mark)) >= 0]
    return min(ends) if ends else None


def head_complete(data: bytes | bytearray) -> bool:
    """Whether ``data`` holds a whole request head (up to its blank line)."""
    return head_end(data) is not None


def declared_length(head: bytes | bytearray) -> int | None:
    """The body length a head declares, if it is one to buffer here: a single, plain ``Content-Length``
    and no ``Transfer-Encoding`` or ``Expect`` (the client then waits for ``100 Continue``). None leaves
    the body to the thread; gunicorn's parser still makes every framing decision either way."""
    length = None
    for line in bytes(head).split(b"\n")[1:]:
        name, colon, value = line.rstrip(b"\r").partition(b":")
        key = name.lower()
        if not colon:
            continue
        if key in (b"transfer-encoding", b"expect"):
            return None
        if key == b"content-length":
            value = value.strip(b" \t")
            if length is not None or not value.isdigit():
                return None
            length = int(value)
    return length


class _Request:
    """The bytes of a request read so far, when they are due, and how many to hold before a thread."""

    __slots__ = ("data", "deadline", "need")

    def __init__(self, data: bytes, deadline: float) -> None:
        self.data = bytearray(data)
        self.deadline = deadline
        self.need: int | None = None  # set once the head is complete


class HeadFirstThreadWorker(ThreadWorker):  # type: ignore[misc]  # gunicorn is untyped
    """gthread, with the request head (and a small body) read by the event loop under deadlines."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.header_timeout = header_timeout()
        self.body_timeout = body_timeout()
        # requests still being read, one dict per phase so that each stays in deadline order
        self.heads: OrderedDict[TConn, _Request] = OrderedDict()
        self.bodies: OrderedDict[TConn, _Request] = OrderedDict()
        self.stop_deadline: float | None = None

    def _stock(self, conn: TConn) -> bool:
        """Connections this worker leaves to gthread's own handling."""
        return bool(self.cfg.is_ssl or getattr(self.cfg, "protocol", "http") != "http"
                    or negotiation.prior_knowledge_allowed(self.cfg, conn.client))

    def enqueue_req(self, conn: TConn) -> None:
        """Every path to the thread pool comes here (accept, kept-alive readable, pipelined bytes)."""
        if self._stock(conn):
            super().enqueue_req(conn)
            return
        buffered = conn.parser.unreader.take_buffered() if conn.parser is not None else b""
        request = _Request(buffered, time.monotonic() + self.header_timeout)
        if self._settle(conn, request):
            return
        conn.sock.setblocking(False)
        self._phase(request)[conn] = request
        self.poller.register(conn.sock, selectors.EVENT_READ, partial(self._on_readable, conn))
        self._on_readable(conn, conn.sock)  # the request has often arrived already: no wait for the poller

    def _phase(self, request: _Request) -> OrderedDict[TConn, _Request]:
        return self.heads if request.need is None else self.bodies

    def _settle(self, conn: TConn, request: _Request) -> bool:
        """Hand the connection on (a thread, or a 431) if what was read allows; True when it was."""
        if request.need is None:
            end = head_end(request.data)
            if end is None or end > MAX_HEAD_BYTES:
                if len(request.data) > MAX_HEAD_BYTES:
                    self._drop(conn, _HEAD_TOO_LARGE)
                    return True
                return False
            length = declared_length(request.data[:end])
            request.need = end + length if length is not None and length <= BUFFERED_BODY_BYTES else end
            request.deadline = time.monotonic() + self.body_timeout
        if len(request.data) < request.need:
            return False
        self._dispatch(conn, request)
        return True

    def _on_readable(self, conn: TConn, client: socket.socket) -> None:
        request = self.heads.get(conn) or self.bodies[conn]
        try:
            data = conn.sock.recv(_READ_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:  # the client went away before finishing its request
            self._drop(conn)
            return
        request.data += data
        in_head = request.need is None
        if self._settle(conn, request):
            return
        if in_head and request.need is not None:  # head complete, body still coming: next phase
            del self.heads[conn]
            self.bodies[conn] = request

    def _forget(self, conn: TConn) -> None:
        self.heads.pop(conn, None)
        self.bodies.pop(conn, None)
        with contextlib.suppress(KeyError, ValueError, OSError):
            self.poller.unregister(conn.sock)

    def _dispatch(self, conn: TConn, request: _Request) -> None:
        """Give the bytes read to the connection's parser and the connection to a thread."""
        self._forget(conn)
        conn.sock.setblocking(True)
        conn.init()  # plain HTTP/1.x only (see _stock): creates the parser, reads nothing
        if request.data:
            conn.parser.unreader.unread(bytes(request.data))
        conn.data_ready = True  # no second wait for data in the thread
        super().enqueue_req(conn)

    def _drop(self, conn: TConn, answer: bytes = b"") -> None:
        self._forget(conn)
        if answer:
            try:
                conn.sock.send(answer)
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EPIPE, errno.ECONNRESET):
                    logger.debug("could not answer a slow or oversized request: %s", exc)
        self.nr_conns -= 1
        conn.close()

    def murder_pending(self) -> None:
        """Also answer 408 to requests overdue (when stopping, within gthread's keep-alive linger)."""
        super().murder_pending()
        now = time.monotonic()
        if not self.alive and self.stop_deadline is None:
            self.stop_deadline = now + STOP_KEEPALIVE_LINGER
        for waiting in (self.heads, self.bodies):
            while waiting:
                conn, request = next(iter(waiting.items()))
                # one timeout per phase, one cap for all: the first one not due ends the sweep
                deadline = request.deadline if self.stop_deadline is None else min(request.deadline,
                                                                                   self.stop_deadline)
                if deadline > now:
                    break
                self._drop(conn, _REQUEST_TIMEOUT)
