"""A gunicorn gthread worker that hands a connection to a thread only once its request head is complete.

Why: gunicorn's gthread worker gives a connection to a pool thread as soon as its first bytes arrive,
and the thread then blocks in the HTTP parser until the headers are complete. A client that sends
its headers slowly (slowloris) therefore holds a thread for as long as it likes; with 2 workers x 16
threads, 34 such connections stopped ``/healthz`` from answering. Here the worker's event loop (the
one that already accepts connections and watches kept-alive ones) reads the request head itself,
non-blocking, and submits the connection to the thread pool only when the blank line that ends the
head has arrived (or the head is over gunicorn's limits, which the parser then refuses). A slow client
costs a buffer and a file descriptor, never a thread, and is closed (408) once
``DICOMLAB_HEADER_TIMEOUT`` seconds have passed without a complete head.

Everything after the head is gunicorn's own code path: the parser gets the bytes read so far
(:meth:`Unreader.unread`, as gunicorn's own h2c handling does), the application gets the same blocking
socket in ``environ["gunicorn.socket"]`` (the proxy's splice relay depends on that), and keep-alive,
limits and error answers are unchanged. Request *bodies* are still read by the thread; a client that
trickles a body holds that thread until the application's own read limits end it, which is why a
production ingress must also bound body time (see the README's security model).

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

_READ_SIZE = 64 * 1024
_HEAD_ENDS = (b"\r\n\r\n", b"\n\n")
_REQUEST_TIMEOUT = b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"


def header_timeout() -> float:
    """The head deadline from ``DICOMLAB_HEADER_TIMEOUT`` (seconds, > 0), else the default."""
    raw = os.environ.get(HEADER_TIMEOUT_ENV, "")
    try:
        value = float(raw) if raw else DEFAULT_HEADER_TIMEOUT
    except ValueError as exc:
        raise ValueError(f"{HEADER_TIMEOUT_ENV} must be a number of seconds, not {raw!r}") from exc
    if not value > 0:
        raise ValueError(f"{HEADER_TIMEOUT_ENV} must be > 0 seconds, not {raw!r}")
    return value


def head_complete(data: bytes | bytearray) -> bool:
    """Whether ``data`` holds a whole request head (up to its blank line)."""
    return any(end in data for end in _HEAD_ENDS)


class _Head:
    """The bytes of a request head read so far, and when the connection must have finished it."""

    __slots__ = ("data", "deadline")

    def __init__(self, data: bytes, deadline: float) -> None:
        self.data = bytearray(data)
        self.deadline = deadline


class HeadFirstThreadWorker(ThreadWorker):  # type: ignore[misc]  # gunicorn is untyped
    """gthread, with the request head read by the event loop under a deadline (see the module docstring)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.header_timeout = header_timeout()
        # the biggest head gunicorn's parser can accept; past it the parser answers the error itself
        self.max_head = (self.cfg.limit_request_line + 4
                         + self.cfg.limit_request_fields * (self.cfg.limit_request_field_size + 2) + 2)
        self.heads: OrderedDict[TConn, _Head] = OrderedDict()  # in deadline order: one timeout for all
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
        head = _Head(buffered, time.monotonic() + self.header_timeout)
        if head_complete(head.data):
            self._dispatch(conn, head)
            return
        conn.sock.setblocking(False)
        self.heads[conn] = head
        self.poller.register(conn.sock, selectors.EVENT_READ, partial(self._on_head_readable, conn))
        self._on_head_readable(conn, conn.sock)  # the head has often arrived already: no wait for the poller

    def _on_head_readable(self, conn: TConn, client: socket.socket) -> None:
        head = self.heads[conn]
        try:
            data = conn.sock.recv(_READ_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:  # the client went away before finishing its head
            self._drop(conn)
            return
        head.data += data
        if head_complete(head.data) or len(head.data) > self.max_head:
            self.poller.unregister(conn.sock)
            del self.heads[conn]
            self._dispatch(conn, head)

    def _dispatch(self, conn: TConn, head: _Head) -> None:
        """Give the head to the connection's parser and the connection to a thread."""
        conn.sock.setblocking(True)
        conn.init()  # plain HTTP/1.x only (see _stock): creates the parser, reads nothing
        if head.data:
            conn.parser.unreader.unread(bytes(head.data))
        conn.data_ready = True  # no second wait for data in the thread
        super().enqueue_req(conn)

    def _drop(self, conn: TConn, answer: bytes = b"") -> None:
        self.heads.pop(conn, None)
        with contextlib.suppress(KeyError, ValueError, OSError):
            self.poller.unregister(conn.sock)
        if answer:
            try:
                conn.sock.send(answer)
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EPIPE, errno.ECONNRESET):
                    logger.debug("could not answer 408: %s", exc)
        self.nr_conns -= 1
        conn.close()

    def murder_pending(self) -> None:
        """Also close connections whose head is overdue (when stopping, within gthread's keep-alive linger)."""
        super().murder_pending()
        now = time.monotonic()
        if not self.alive and self.stop_deadline is None:
            self.stop_deadline = now + STOP_KEEPALIVE_LINGER
        while self.heads:
            conn, head = next(iter(self.heads.items()))
            # one cap for all keeps the deadline order, so the first one not due ends the sweep
            deadline = head.deadline if self.stop_deadline is None else min(head.deadline, self.stop_deadline)
            if deadline > now:
                break
            self._drop(conn, _REQUEST_TIMEOUT)
