"""A small HTTP/1.1 client for the one upstream the proxy talks to: Orthanc.

Why not urllib3: on a small QIDO request its request building, retry objects and http.client's
email-based header parsing were a large share of everything the proxy adds (the measurement is in
``benchmarks/results/README.md``). This client does only what the proxy needs:

- one fixed origin (``http://`` or ``https://``), persistent connections in a LIFO pool;
- requests written in one ``sendall``; every header value and the target checked for control
  characters and spaces (no request smuggling through a forwarded header or query);
- responses parsed with C-level ``readline`` under size limits; bodies framed by
  ``Content-Length``, chunked transfer coding, or the end of the connection;
- a pooled connection that Orthanc closed while idle (it does after ~1 s) is detected before
  use, and a request that meets one anyway is sent again once on a fresh connection — only when
  the caller allows it (idempotent reads) and never after a timeout: a dead Orthanc becomes a
  502/504 within one timeout.

Errors: :class:`~dicomlab_core.errors.UpstreamError` (502) when Orthanc cannot be reached or
answers garbage, :class:`~dicomlab_core.errors.UpstreamTimeout` (504) when it is too slow; while
a body is being read, ``OSError`` (timeouts included) and :class:`ProtocolError`.
"""

from __future__ import annotations

import base64
import io
import re
import select
import socket
import ssl
import threading
from collections.abc import Iterable, Mapping
from typing import cast
from urllib.parse import urlsplit

from dicomlab_core.errors import BadRequest, UpstreamError, UpstreamTimeout
from dicomlab_core.orthanc import OrthancSettings
from dicomlab_proxy.metrics import UPSTREAM_ERRORS

MAX_HEADER_LINES = 100
MAX_LINE_BYTES = 16 * 1024
READ_BUFFER = 64 * 1024
_STATUS_LINE = re.compile(rb"HTTP/1\.([01]) ([1-5][0-9][0-9])(?: [^\r\n]*)?\r?\n")
_SAFE_TARGET = re.compile(r"[\x21-\x7e]+")
_UNSAFE_VALUE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
"""An HTTP header name (RFC 9110 token)."""
_NO_BODY_STATUSES = frozenset({204, 304})


class ProtocolError(Exception):
    """Orthanc's answer broke HTTP/1.1 framing (bad status line, headers, chunk sizes, early end)."""


class Connection:
    """One socket to the upstream with its buffered reader."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.reader = cast(io.BufferedReader, sock.makefile("rb", buffering=READ_BUFFER))

    def usable(self) -> bool:
        """An idle pooled connection is usable when nothing is readable: data or EOF would mean closed/garbage."""
        try:
            poller = select.poll()
            poller.register(self.sock, select.POLLIN | select.POLLERR | select.POLLHUP)
            return not poller.poll(0)
        except (OSError, ValueError):
            return False

    def close(self) -> None:
        try:
            self.reader.close()
        finally:
            self.sock.close()


class ResponseHeaders:
    """Response headers by case-insensitive name (repeated ones joined with ``, ``)."""

    def __init__(self) -> None:
        self._items: dict[str, tuple[str, str]] = {}

    def add(self, name: str, value: str) -> None:
        key = name.lower()
        if key in self._items:
            value = self._items[key][1] + ", " + value
        self._items[key] = (name, value)

    def get(self, name: str, default: str | None = None) -> str | None:
        found = self._items.get(name.lower())
        return found[1] if found is not None else default

    def __getitem__(self, name: str) -> str:
        return self._items[name.lower()][1]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._items


class Response:
    """An upstream answer whose body is read on demand; give it back with :meth:`release` or :meth:`discard`."""

    def __init__(self, pool: Upstream, conn: Connection, status: int, headers: ResponseHeaders, *,
                 has_body: bool, keep_alive: bool) -> None:
        self._pool = pool
        self._conn: Connection | None = conn
        self.status = status
        self.headers = headers
        self._chunked = has_body and "chunked" in (headers.get("Transfer-Encoding") or "").lower()
        length = headers.get("Content-Length")
        if not has_body:
            self._remaining: int | None = 0
        elif self._chunked:
            self._remaining = None
        elif length is not None:
            if not length.isdigit():
                raise ProtocolError("bad Content-Length")
            self._remaining = int(length)
        else:
            self._remaining = None  # until the connection closes
            keep_alive = False
        self._chunk_left = 0
        self._done = self._remaining == 0
        self._keep_alive = keep_alive

    @property
    def connection(self) -> Connection | None:
        return self._conn

    @property
    def content_length(self) -> int | None:
        """The declared length of a body framed by ``Content-Length`` (None when chunked or until close)."""
        return None if self._chunked else self._remaining

    def read(self, amount: int) -> bytes:
        """Up to ``amount`` bytes of the body (``b""`` at its end)."""
        if self._done or self._conn is None:
            return b""
        reader = self._conn.reader
        if self._chunked:
            return self._read_chunked(reader, amount)
        if self._remaining is None:
            data = reader.read1(amount) if amount > 0 else b""
            if not data:
                self._done = True
            return data
        data = reader.read(min(amount, self._remaining))
        if not data:
            raise ProtocolError("the upstream closed the connection before the end of the body")
        self._remaining -= len(data)
        self._done = self._remaining == 0
        return data

    def _read_chunked(self, reader: io.BufferedReader, amount: int) -> bytes:
        if self._chunk_left == 0:
            line = reader.readline(MAX_LINE_BYTES)
            size = line.split(b";", 1)[0].strip()
            try:
                self._chunk_left = int(size, 16)
            except ValueError:
                raise ProtocolError("bad chunk size") from None
            if self._chunk_left == 0:
                _read_headers(reader)  # trailers, dropped
                self._done = True
                return b""
        data = reader.read(min(amount, self._chunk_left))
        if not data:
            raise ProtocolError("the upstream closed the connection inside a chunk")
        self._chunk_left -= len(data)
        if self._chunk_left == 0 and reader.readline(MAX_LINE_BYTES) not in (b"\r\n", b"\n"):
            raise ProtocolError("bad chunk framing")
        return data

    def consumed_externally(self) -> None:
        """The body was moved past this object (spliced by the kernel): it is complete."""
        self._remaining = 0
        self._done = True

    def release(self) -> None:
        """Back to the pool when the whole body was read and the connection may stay open; else closed."""
        conn, self._conn = self._conn, None
        if conn is None:
            return
        if self._done and self._keep_alive:
            self._pool.put(conn)
        else:
            conn.close()

    def discard(self) -> None:
        """Close the connection whatever was read (a client left, or a large body is not worth draining)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()


class Upstream:
    """Orthanc at a fixed address, with credentials added here and a thread-safe connection pool."""

    def __init__(self, settings: OrthancSettings) -> None:
        self.settings = settings
        parts = urlsplit(settings.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"unsupported upstream URL scheme {parts.scheme!r}")
        self.base_path = parts.path.rstrip("/")
        self.address = f"{parts.scheme}://{parts.netloc}"
        self._host, self._port = parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)
        self._tls = ssl.create_default_context() if parts.scheme == "https" else None
        self._host_header = parts.netloc.rsplit("@", 1)[-1]
        self._auth = ""
        if settings.password:
            basic = f"{settings.username}:{settings.password.reveal()}".encode()
            self._auth = "Authorization: Basic " + base64.b64encode(basic).decode("ascii") + "\r\n"
        self._idle: list[Connection] = []
        self._lock = threading.Lock()
        self._max_idle = settings.pool_size

    # ------------------------------------------------------------------ pool

    def _connect(self, connect_timeout: float, read_timeout: float) -> Connection:
        try:
            sock = socket.create_connection((self._host, self._port), timeout=connect_timeout)
        except TimeoutError as exc:
            UPSTREAM_ERRORS.labels("connect_timeout").inc()
            raise UpstreamTimeout("the PACS did not answer in time") from exc
        except OSError as exc:
            UPSTREAM_ERRORS.labels("connect").inc()
            raise UpstreamError("the PACS is unreachable") from exc
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.settimeout(read_timeout)
        if self._tls is not None:
            try:
                sock = self._tls.wrap_socket(sock, server_hostname=self._host)
            except (OSError, ssl.SSLError) as exc:
                sock.close()
                UPSTREAM_ERRORS.labels("connect").inc()
                raise UpstreamError("the PACS is unreachable") from exc
        return Connection(sock)

    def _take(self) -> Connection | None:
        while True:
            with self._lock:
                if not self._idle:
                    return None
                conn = self._idle.pop()
            if conn.usable():
                return conn
            conn.close()

    def put(self, conn: Connection) -> None:
        with self._lock:
            if len(self._idle) < self._max_idle:
                self._idle.append(conn)
                return
        conn.close()

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

    # ------------------------------------------------------------------ requests

    def open(self, method: str, path: str, *, query: str = "", headers: Mapping[str, str] | None = None,
             body: Iterable[bytes] | None = None, timeout: tuple[float, float] | None = None,
             retry: bool = True) -> Response:
        """Send one request and return the response with its body unread.

        ``timeout`` is ``(connect, read)`` seconds (default from the settings). HTTP error statuses
        are returned, not raised.
        """
        connect_timeout, read_timeout = timeout or (self.settings.connect_timeout, self.settings.read_timeout)
        head = self._head(method, self.base_path + path + ("?" + query if query else ""), headers or {})
        pooled = self._take()
        if pooled is not None:
            pooled.sock.settimeout(read_timeout)
            try:
                return self._exchange(pooled, method, head, body)
            except _Stale:
                pooled.close()
                if not retry:
                    UPSTREAM_ERRORS.labels("protocol").inc()
                    raise UpstreamError("the PACS connection failed") from None
        return self._exchange(self._connect(connect_timeout, read_timeout), method, head, body, fresh=True)

    def _head(self, method: str, target: str, headers: Mapping[str, str]) -> bytes:
        if not _SAFE_TARGET.fullmatch(target):
            raise BadRequest("invalid request target")
        lines = [f"{method} {target} HTTP/1.1\r\nHost: {self._host_header}\r\n", self._auth]
        for name, value in headers.items():
            if _UNSAFE_VALUE.search(value) or not _TOKEN.fullmatch(name):
                raise BadRequest(f"invalid {name} header")
            lines.append(f"{name}: {value}\r\n")
        lines.append("\r\n")
        return "".join(lines).encode("latin-1")

    def _exchange(self, conn: Connection, method: str, head: bytes, body: Iterable[bytes] | None, *,
                  fresh: bool = False) -> Response:
        """Write the request and read the status line and headers; raise :class:`_Stale` when a pooled
        connection turns out closed before anything was answered."""
        started_answer = False
        try:
            conn.sock.sendall(head)
            if body is not None:
                for piece in body:
                    conn.sock.sendall(piece)
            while True:
                line = conn.reader.readline(MAX_LINE_BYTES)
                if not line:
                    raise ConnectionResetError("closed before the status line")
                started_answer = True
                match = _STATUS_LINE.fullmatch(line)
                if match is None:
                    raise ProtocolError("bad status line")
                status = int(match.group(2))
                headers = _read_headers(conn.reader)
                if status >= 200 or status == 101:
                    break  # 1xx interim answers are skipped
            minor = match.group(1)
            connection = (headers.get("Connection") or "").lower()
            keep_alive = "close" not in connection and (minor == b"1" or "keep-alive" in connection)
            has_body = method != "HEAD" and status not in _NO_BODY_STATUSES and status >= 200
            return Response(self, conn, status, headers, has_body=has_body, keep_alive=keep_alive)
        except TimeoutError as exc:
            conn.close()
            UPSTREAM_ERRORS.labels("read_timeout").inc()
            raise UpstreamTimeout("the PACS did not answer in time") from exc
        except ProtocolError as exc:
            conn.close()
            UPSTREAM_ERRORS.labels("protocol").inc()
            raise UpstreamError("the PACS connection failed") from exc
        except OSError as exc:
            if not fresh and not started_answer:
                raise _Stale from exc
            conn.close()
            UPSTREAM_ERRORS.labels("protocol").inc()
            raise UpstreamError("the PACS connection failed") from exc
        except BaseException:  # e.g. a request body that ended early: the connection is in an unknown state
            conn.close()
            raise

    def ping(self, timeout: float) -> bool:
        """Whether Orthanc answers ``/system`` with 200 within ``timeout`` seconds (for ``/readyz``)."""
        try:
            response = self.open("GET", "/system", timeout=(timeout, timeout), retry=False)
        except UpstreamError:
            return False
        try:
            while response.read(64 * 1024):
                pass
        except (OSError, ProtocolError):
            response.discard()
            return False
        response.release()
        return response.status == 200


class _Stale(Exception):
    """A pooled connection was closed by the upstream before it answered: safe to send again."""


def _read_headers(reader: io.BufferedReader) -> ResponseHeaders:
    headers = ResponseHeaders()
    for _ in range(MAX_HEADER_LINES):
        line = reader.readline(MAX_LINE_BYTES)
        if line in (b"\r\n", b"\n"):
            return headers
        if not line or not line.endswith(b"\n"):
            raise ProtocolError("truncated or oversized header")
        name, sep, value = line.decode("latin-1").partition(":")
        if not sep or not name or name != name.strip():
            raise ProtocolError("bad header line")
        headers.add(name, value.strip())
    raise ProtocolError("too many headers")
