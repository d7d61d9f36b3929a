"""The proxy's own HTTP/1.1 client against a scripted upstream: framing, reuse, stale connections, refusals."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import pytest

from dicomlab_core.config import Secret
from dicomlab_core.errors import BadRequest, UpstreamError, UpstreamTimeout
from dicomlab_core.orthanc import OrthancSettings
from dicomlab_proxy.upstream import ProtocolError, Upstream

Answer = Callable[[int, int, bytes], bytes | None]
"""``(connection number, request number on it, request head) -> raw answer``; None closes silently.

The connection is closed after an answer that says ``Connection: close``.
"""


@dataclass
class Script:
    answer: Answer
    connections: int = 0
    heads: list[bytes] = field(default_factory=list)
    ended: list[int] = field(default_factory=list)
    """Connections the client closed (EOF seen), by number."""


def _read_head(conn: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        try:
            piece = conn.recv(65536)
        except ConnectionResetError:  # the client closed with our answer unread: a reset, not a FIN
            piece = b""
        if not piece:
            return b""
        data += piece
    return data


@contextmanager
def scripted(answer: Answer) -> Iterator[tuple[Upstream, Script]]:
    script = Script(answer)
    server = socket.create_server(("127.0.0.1", 0))

    def serve(conn: socket.socket, number: int) -> None:
        with conn:
            for index in range(100):
                head = _read_head(conn)
                if not head:
                    script.ended.append(number)
                    return
                script.heads.append(head)
                raw = script.answer(number, index, head)
                if raw is None:
                    return
                conn.sendall(raw)
                if b"Connection: close" in raw.split(b"\r\n\r\n")[0]:
                    return

    def accept() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            script.connections += 1
            threading.Thread(target=serve, args=(conn, script.connections), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    settings = OrthancSettings(url=f"http://127.0.0.1:{server.getsockname()[1]}", username="u",
                               password=Secret("secret-pw"), connect_timeout=1.0, read_timeout=1.0)
    upstream = Upstream(settings)
    try:
        yield upstream, script
    finally:
        upstream.close()
        server.close()


def _ok(body: bytes, extra: str = "") -> bytes:
    return f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\n{extra}\r\n".encode() + body


def _body(response: object, size: int = 7) -> bytes:
    out = b""
    while piece := response.read(size):  # type: ignore[attr-defined]
        out += piece
    return out


def test_length_framed_bodies_reuse_one_connection_and_carry_credentials() -> None:
    with scripted(lambda c, i, head: _ok(b"answer-%d" % i)) as (upstream, script):
        for i in range(3):
            response = upstream.open("GET", "/system", headers={"Accept": "application/json"})
            assert response.status == 200 and _body(response) == b"answer-%d" % i
            response.release()
        assert script.connections == 1
        first = script.heads[0].decode()
        assert first.startswith("GET /system HTTP/1.1\r\n") and "Accept: application/json\r\n" in first
        assert "Authorization: Basic dTpzZWNyZXQtcHc=\r\n" in first  # u:secret-pw, added here only


def test_chunked_bodies_are_decoded_and_trailers_dropped() -> None:
    raw = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
           b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n")
    with scripted(lambda c, i, head: raw) as (upstream, script):
        for _ in range(2):
            response = upstream.open("GET", "/x")
            assert response.content_length is None and _body(response, 3) == b"hello world"
            response.release()
        assert script.connections == 1


def test_body_until_close_is_read_whole_and_not_pooled() -> None:
    with scripted(lambda c, i, head: b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nno length here") as (
            upstream, script):
        response = upstream.open("GET", "/x")
        assert _body(response) == b"no length here"
        response.release()
        upstream.open("GET", "/x").discard()
        assert script.connections == 2


def test_head_and_304_have_no_body_and_keep_the_connection() -> None:
    def answer(c: int, i: int, head: bytes) -> bytes:
        if head.startswith(b"HEAD"):
            return b"HTTP/1.1 200 OK\r\nContent-Length: 999\r\n\r\n"
        return b"HTTP/1.1 304 Not Modified\r\nETag: \"v1\"\r\n\r\n"

    with scripted(answer) as (upstream, script):
        head = upstream.open("HEAD", "/file")
        assert head.headers["content-length"] == "999" and head.read(10) == b""
        head.release()
        cached = upstream.open("GET", "/file", headers={"If-None-Match": '"v1"'})
        assert cached.status == 304 and cached.headers["ETag"] == '"v1"' and cached.read(10) == b""
        cached.release()
        assert script.connections == 1


def test_a_connection_closed_while_idle_is_replaced() -> None:
    with scripted(lambda c, i, head: _ok(b"x") if i == 0 else None) as (upstream, script):
        for _ in range(2):
            response = upstream.open("GET", "/x")
            assert _body(response) == b"x"
            response.release()
        assert script.connections == 2


def test_a_request_that_meets_a_closing_connection_is_sent_again_only_when_allowed() -> None:
    # Connection 1 answers its first request, then takes the second and closes without a word:
    # the race where Orthanc drops an idle keep-alive connection just as it is reused.
    with scripted(lambda c, i, head: None if (c, i) == (1, 1) else _ok(b"ok")) as (upstream, script):
        first = upstream.open("GET", "/x")
        assert _body(first) == b"ok"
        first.release()
        again = upstream.open("GET", "/x")
        assert _body(again) == b"ok" and script.connections == 2
        again.release()
    with scripted(lambda c, i, head: None if (c, i) == (1, 1) else _ok(b"ok")) as (upstream, script):
        first = upstream.open("GET", "/x")
        _body(first)
        first.release()
        with pytest.raises(UpstreamError):
            upstream.open("POST", "/studies", body=[b""], retry=False)
        assert script.connections == 1


@pytest.mark.parametrize("raw", [
    b"SPDY/3 200 OK\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n",
    b"HTTP/1.1 200 OK\r\n" + b"X-Many: 1\r\n" * 101 + b"\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: -5\r\n\r\n",
], ids=["status-line", "header-line", "too-many-headers", "bad-length"])
def test_garbage_answers_are_502(raw: bytes) -> None:
    with scripted(lambda c, i, head: raw) as (upstream, _), pytest.raises(UpstreamError) as caught:
        upstream.open("GET", "/x")
    assert not isinstance(caught.value, UpstreamTimeout)


def test_truncated_and_badly_chunked_bodies_raise_while_reading() -> None:
    for raw in (b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\nConnection: close\r\n\r\nshort",
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"):
        with scripted(lambda c, i, head, raw=raw: raw) as (upstream, _):  # type: ignore[misc]
            response = upstream.open("GET", "/x")
            with pytest.raises(ProtocolError):
                _body(response)
            response.discard()


def test_silence_is_a_504_within_the_read_timeout() -> None:
    def answer(c: int, i: int, head: bytes) -> bytes:
        threading.Event().wait(3)
        return _ok(b"late")

    with scripted(answer) as (upstream, _), pytest.raises(UpstreamTimeout):
        upstream.open("GET", "/x")


@pytest.mark.parametrize(("path", "query", "headers"), [
    ("/x y", "", {}),
    ("/x", "a=1\r\nX-Injected: 1", {}),
    ("/x", "", {"Accept": "*/*\r\nX-Injected: 1"}),
    ("/x", "", {"Range": "bytes=0-1\x00"}),
], ids=["space-in-target", "crlf-in-query", "crlf-in-header", "nul-in-header"])
def test_request_smuggling_attempts_never_leave_the_proxy(path: str, query: str, headers: dict[str, str]) -> None:
    with scripted(lambda c, i, head: _ok(b"x")) as (upstream, script):
        with pytest.raises(BadRequest):
            upstream.open("GET", path, query=query, headers=headers)
        assert script.heads == []


def test_a_request_body_that_fails_midway_leaves_no_connection_behind() -> None:
    def body() -> Iterator[bytes]:
        yield b"--part"
        raise BadRequest("request body shorter than Content-Length")

    with scripted(lambda c, i, head: _ok(b"x")) as (upstream, script):
        with pytest.raises(BadRequest) as caught:
            upstream.open("POST", "/studies", headers={"Content-Length": "100"}, body=body(), retry=False)
        deadline = time.monotonic() + 2
        while not script.ended and time.monotonic() < deadline:
            time.sleep(0.01)
        assert script.ended == [1] and caught.value  # closed at once, though the traceback still holds it
        response = upstream.open("GET", "/x")
        assert _body(response) == b"x" and script.connections == 2
        response.release()
