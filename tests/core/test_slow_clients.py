"""Slow clients do not take the threads of our gunicorn services (issue 14 §4).

The proxy runs under real gunicorn with the shared config (2 workers x 16 threads, the head-first
gthread worker) in front of the real test Orthanc. 500 loopback connections trickle an endless request
head (or a small body); ``/healthz`` and an authorised QIDO request must still be answered, correctly. With gunicorn's
stock gthread worker 34 such connections were enough to stop every answer. Latency figures are
measured by ``benchmarks/bench_slow_clients.py``, not asserted here.
"""

from __future__ import annotations

import io
import socket
import time
from collections.abc import Iterator

import pydicom
import pytest
import requests
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid
from slow_clients import LOOPBACK, SlowClients, raise_fd_limit, wait_until_held
from support.servers import PROXY_APP, gunicorn, proxy_env

from dicomlab_cli.processes import GunicornService, OrthancServer
from dicomlab_core.gthread_worker import (
    BUFFERED_BODY_BYTES,
    body_timeout,
    declared_length,
    head_complete,
    head_end,
    header_timeout,
)
from dicomlab_core.tokens import KeyRing

SLOW = 500
SERVICE_TOKEN = "slow-client-test-service-token-0123"
HEADER_TIMEOUT = 3.0
BODY_TIMEOUT = 3.0


@pytest.fixture(scope="module")
def proxy_service(orthanc: OrthancServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GunicornService]:
    raise_fd_limit(4 * SLOW)  # the service inherits the limit: it holds one descriptor per slow connection
    env = {**proxy_env(orthanc, KeyRing.generate_entry("s1"), service_tokens=SERVICE_TOKEN,
                       rate_limit_per_second="1000", stow_enabled="true"),
           "DICOMLAB_HEADER_TIMEOUT": str(HEADER_TIMEOUT), "DICOMLAB_BODY_TIMEOUT": str(BODY_TIMEOUT)}
    with gunicorn("proxy", PROXY_APP, tmp_path_factory.mktemp("slow"), env) as service:
        yield service


def raw_exchange(port: int, pieces: list[bytes], pause: float = 0.0, read_for: float = 5.0) -> bytes:
    """Send ``pieces`` (``pause`` seconds apart) on one connection; everything read until the server closes."""
    with socket.create_connection((LOOPBACK, port), timeout=read_for) as sock:
        for piece in pieces:
            sock.sendall(piece)
            time.sleep(pause)
        chunks = []
        deadline = time.monotonic() + read_for
        while time.monotonic() < deadline:
            try:
                data = sock.recv(65536)
            except TimeoutError:
                break
            if not data:
                break
            chunks.append(data)
        return b"".join(chunks)


def test_healthz_and_requests_are_answered_while_500_slow_clients_hold_connections(
        proxy_service: GunicornService) -> None:
    auth = {"Authorization": f"Bearer {SERVICE_TOKEN}"}
    with SlowClients(proxy_service.port, SLOW, interval=0.5) as clients:
        assert clients.opened >= SLOW, "the slow connections must all be open for the check to mean anything"
        assert proxy_service.pid is not None
        assert wait_until_held(proxy_service.pid, SLOW) >= SLOW, "the workers must have taken them in"
        for _ in range(5):  # each on a fresh connection: accept must not queue behind the slow ones
            health = requests.get(f"{proxy_service.url}/healthz", timeout=10)
            assert health.status_code == 200
            qido = requests.get(f"{proxy_service.url}/dicom-web/studies?limit=5", headers=auth, timeout=10)
            assert qido.status_code in (200, 204)
            assert qido.status_code == 204 or isinstance(qido.json(), list)
            refused = requests.get(f"{proxy_service.url}/dicom-web/studies", timeout=10)
            assert refused.status_code == 401  # the app still decides, not the worker
        with requests.Session() as session:  # keep-alive: the second request goes through the head reader again
            for _ in range(3):
                assert session.get(f"{proxy_service.url}/healthz", timeout=10).status_code == 200
        assert clients.open_count() > 0


def test_a_head_sent_in_pieces_and_pipelined_requests_are_served(proxy_service: GunicornService) -> None:
    head = f"GET /healthz HTTP/1.1\r\nHost: {LOOPBACK}\r\nX-Test: pieces\r\n\r\n".encode()
    answer = raw_exchange(proxy_service.port, [head[:10], head[10:30], head[30:] + head.replace(
        b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n")], pause=0.2)
    assert answer.count(b"HTTP/1.1 200 OK") == 2


def test_a_head_that_never_ends_gets_408_and_the_connection_closed(proxy_service: GunicornService) -> None:
    answer = raw_exchange(proxy_service.port, [b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: a"],
                          read_for=HEADER_TIMEOUT + 10)
    assert answer.startswith(b"HTTP/1.1 408 Request Timeout\r\n")


def test_a_kept_alive_connection_that_trickles_its_next_head_gets_408(proxy_service: GunicornService) -> None:
    first = f"GET /healthz HTTP/1.1\r\nHost: {LOOPBACK}\r\n\r\n".encode()
    answer = raw_exchange(proxy_service.port, [first, b"GET /healthz HTTP/1.1\r\nX-Slow: a"], pause=0.3,
                          read_for=HEADER_TIMEOUT + 10)
    assert answer.startswith(b"HTTP/1.1 200 OK\r\n")
    assert answer.count(b"HTTP/1.1 200 OK") == 1 and b"HTTP/1.1 408 Request Timeout\r\n" in answer


def test_too_many_header_fields_are_refused_by_gunicorns_limits(proxy_service: GunicornService) -> None:
    fields = b"".join(b"X-%d: a\r\n" % i for i in range(150))
    answer = raw_exchange(proxy_service.port, [b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + fields + b"\r\n"])
    assert answer.startswith(b"HTTP/1.1 431 Request Header Fields Too Large\r\n")


def test_a_head_past_64_kib_is_refused_with_431(proxy_service: GunicornService) -> None:
    """The event loop holds at most 64 KiB of head per connection (nginx's default is 32 KiB)."""
    line = b"X-Big: " + b"a" * 8000 + b"\r\n"
    try:
        answer = raw_exchange(proxy_service.port, [b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + line * 9])
    except (ConnectionResetError, BrokenPipeError):
        answer = b""  # the server answered and closed with bytes unread: TCP may reset before we read
    assert answer == b"" or answer.startswith(b"HTTP/1.1 431 Request Header Fields Too Large\r\n")
    assert requests.get(f"{proxy_service.url}/healthz", timeout=10).status_code == 200


def stow_request(dataset: pydicom.Dataset) -> bytes:
    """A whole STOW-RS request (head and multipart body) storing ``dataset``, as raw bytes."""
    buffer = io.BytesIO()
    dataset.save_as(buffer)
    boundary = b"dicomlab-test-boundary"
    body = (b"--" + boundary + b"\r\nContent-Type: application/dicom\r\n\r\n" + buffer.getvalue()
            + b"\r\n--" + boundary + b"--\r\n")
    head = (f"POST /dicom-web/studies HTTP/1.1\r\nHost: {LOOPBACK}\r\nAuthorization: Bearer {SERVICE_TOKEN}\r\n"
            f"Content-Type: multipart/related; type=\"application/dicom\"; boundary={boundary.decode()}\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode()
    return head + body


def test_a_small_body_sent_in_pieces_reaches_the_app_whole(proxy_service: GunicornService,
                                                            orthanc: OrthancServer) -> None:
    dataset = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    dataset.SOPInstanceUID = dataset.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    raw = stow_request(dataset)
    assert len(raw) < BUFFERED_BODY_BYTES  # buffered by the worker, then given to the app in one piece
    pieces = [raw[i:i + 9000] for i in range(0, len(raw), 9000)]
    answer = raw_exchange(proxy_service.port, pieces, pause=0.1)
    assert answer.startswith(b"HTTP/1.1 200 OK\r\n"), answer[:200]
    client = orthanc.client()
    try:
        assert client.lookup_instance(dataset.SOPInstanceUID) is not None
    finally:
        client.close()


def test_a_body_that_never_ends_gets_408(proxy_service: GunicornService) -> None:
    head = (f"POST /dicom-web/studies HTTP/1.1\r\nHost: {LOOPBACK}\r\nContent-Length: 1000\r\n"
            "Content-Type: multipart/related\r\n\r\n").encode()
    answer = raw_exchange(proxy_service.port, [head + b"x" * 10], read_for=BODY_TIMEOUT + 10)
    assert answer.startswith(b"HTTP/1.1 408 Request Timeout\r\n")


def test_500_slow_bodies_do_not_stop_the_others(proxy_service: GunicornService) -> None:
    opening = (f"POST /dicom-web/studies HTTP/1.1\r\nHost: {LOOPBACK}\r\nAuthorization: Bearer {SERVICE_TOKEN}\r\n"
               "Content-Type: multipart/related\r\nContent-Length: 60000\r\n\r\n").encode()
    with SlowClients(proxy_service.port, SLOW, interval=0.5, opening=opening) as clients:
        assert clients.opened >= SLOW
        assert proxy_service.pid is not None
        assert wait_until_held(proxy_service.pid, SLOW) >= SLOW
        for _ in range(3):
            assert requests.get(f"{proxy_service.url}/healthz", timeout=10).status_code == 200
            qido = requests.get(f"{proxy_service.url}/dicom-web/studies?limit=5", timeout=10,
                                headers={"Authorization": f"Bearer {SERVICE_TOKEN}"})
            assert qido.status_code in (200, 204)


def test_head_helpers(monkeypatch: pytest.MonkeyPatch) -> None:
    assert head_complete(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n") and head_complete(b"GET / HTTP/1.0\n\n")
    assert not head_complete(b"GET / HTTP/1.1\r\nHost: x\r\n")
    monkeypatch.setenv("DICOMLAB_HEADER_TIMEOUT", "2.5")
    assert header_timeout() == 2.5
    for bad in ("soon", "0", "-1"):
        monkeypatch.setenv("DICOMLAB_HEADER_TIMEOUT", bad)
        with pytest.raises(ValueError, match="DICOMLAB_HEADER_TIMEOUT"):
            header_timeout()
    monkeypatch.delenv("DICOMLAB_HEADER_TIMEOUT")
    assert header_timeout() == 10.0
    monkeypatch.setenv("DICOMLAB_BODY_TIMEOUT", "x")
    with pytest.raises(ValueError, match="DICOMLAB_BODY_TIMEOUT"):
        body_timeout()
    monkeypatch.delenv("DICOMLAB_BODY_TIMEOUT")
    assert body_timeout() == 30.0
    head = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 12\r\n\r\nhello world!"
    assert head_end(head) == head.index(b"hello") and declared_length(head[:head_end(head)]) == 12
    assert head_end(b"GET / HTTP/1.1\r\nHost: x\r\n") is None
    for left_to_the_thread in (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
                               b"POST / HTTP/1.1\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n",
                               b"POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n",
                               b"POST / HTTP/1.1\r\nContent-Length: +5\r\n\r\n",
                               b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"):
        assert declared_length(left_to_the_thread) is None


def test_the_shared_config_uses_the_head_first_worker() -> None:
    from dicomlab_core import gunicorn_conf

    assert gunicorn_conf.worker_class == "dicomlab_core.gthread_worker.HeadFirstThreadWorker"
