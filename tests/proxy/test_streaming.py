"""Streaming: large objects byte-identical, conditional/range headers passed through, aborts and failures clean."""

from __future__ import annotations

import logging
import os
import signal
import socket
import ssl
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests
from prometheus_client import REGISTRY
from proxy_helpers import Proxy, Recorder, Studies, make_dicom, recording_upstream, upload

from dicomlab_cli.processes import OrthancServer, free_port
from dicomlab_core.config import Secret
from dicomlab_core.multipart import decode_related
from dicomlab_core.orthanc import OrthancSettings
from dicomlab_core.tokens import Scope
from dicomlab_proxy.streaming import splice_client

OID = "0a1b2c3d-0a1b2c3d-0a1b2c3d-0a1b2c3d-0a1b2c3d"


def test_large_file_and_wado_rs_are_byte_identical(proxy: Proxy, studies: Studies, direct: requests.Session,
                                                   orthanc: OrthancServer) -> None:
    big = studies.big
    token = proxy.study_token(big)
    assert len(big.data) > 8 * 1024 * 1024
    via = requests.get(f"{proxy.url}/instances/{big.orthanc_id}/file", headers=proxy.headers(token))
    assert via.status_code == 200 and via.content == big.data
    assert via.headers["Content-Length"] == str(len(big.data))
    assert via.headers["Content-Type"] == "application/dicom"
    path = f"/dicom-web/studies/{big.study}/series/{big.series}/instances/{big.sop}"
    wado = requests.get(proxy.url + path, headers=proxy.headers(token))
    raw = direct.get(orthanc.url + path)
    assert wado.headers["Content-Length"] == raw.headers["Content-Length"]
    assert decode_related(wado.content, wado.headers["Content-Type"]) == [big.data]
    # The boundary in the body is the one in the header: the multipart framing passed through untouched.
    boundary = wado.headers["Content-Type"].split("boundary=")[1].strip('"')
    assert wado.content.startswith(b"--" + boundary.encode())
    head = requests.head(f"{proxy.url}/instances/{big.orthanc_id}/file", headers=proxy.headers(token))
    assert head.status_code == 200 and head.headers["Content-Length"] == str(len(big.data)) and not head.content


@pytest.fixture
def recorded(start_proxy: Callable[..., Any]) -> Any:
    recorder = Recorder(body=os.urandom(6 * 1024 * 1024))
    with recording_upstream(recorder) as url, \
            start_proxy(orthanc=OrthancSettings(url=url, password=Secret("pw"))) as p:
        yield recorder, p


def test_range_etag_and_304_pass_through(recorded: Any) -> None:
    recorder, p = recorded
    headers = p.headers(p.token(Scope(orthanc_ids=(OID,))))
    url = f"{p.url}/instances/{OID}/file"
    full = requests.get(url, headers=headers)
    assert full.content == recorder.body and full.headers["ETag"] == '"v1"'
    assert full.headers["Accept-Ranges"] == "bytes"
    part = requests.get(url, headers={**headers, "Range": "bytes=100-199"})
    assert part.status_code == 206 and part.content == recorder.body[100:200]
    assert part.headers["Content-Range"] == f"bytes 100-199/{len(recorder.body)}"
    assert recorder.requests[-1]["headers"]["Range"] == "bytes=100-199"
    cached = requests.get(url, headers={**headers, "If-None-Match": '"v1"'})
    assert cached.status_code == 304 and cached.headers["ETag"] == '"v1"' and not cached.content


def test_spliced_bodies_keep_the_upstream_connection(recorded: Any) -> None:
    """After a zero-copy body the pooled connection sits at the next message and is reused."""
    recorder, p = recorded
    headers = p.headers(p.token(Scope(orthanc_ids=(OID,))))
    for _ in range(3):
        response = requests.get(f"{p.url}/instances/{OID}/file", headers=headers)
        assert response.content == recorder.body
    assert len({r["peer"] for r in recorder.requests[-3:]}) == 1


def _aborts() -> float:
    return REGISTRY.get_sample_value("dicomlab_proxy_client_aborts_total", {"route": "/instances/<oid:oid>/file"}) or 0


def test_client_abort_releases_the_upstream(recorded: Any) -> None:
    recorder, p = recorded
    recorder.slow = True
    before = _aborts()
    response = requests.get(f"{p.url}/instances/{OID}/file", stream=True,
                            headers=p.headers(p.token(Scope(orthanc_ids=(OID,)))))
    first = next(response.iter_content(64 * 1024))
    assert first == recorder.body[:len(first)]
    response.raw._fp.fp.raw._sock.shutdown(socket.SHUT_RDWR)  # the browser tab goes away
    response.close()
    assert recorder.aborted.wait(15), "the upstream kept sending after the client left"
    deadline = time.monotonic() + 5
    while _aborts() <= before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _aborts() == before + 1


def test_upstream_down_is_a_quick_502(start_proxy: Callable[..., Any], studies: Studies) -> None:
    settings = OrthancSettings(url=f"http://127.0.0.1:{free_port()}", password=Secret("pw"), connect_timeout=1.0)
    with start_proxy(orthanc=settings) as p:
        # A refused connection is answered at once: the client's own timeout would fail a proxy that waits.
        response = requests.get(f"{p.url}/instances/{studies.a.orthanc_id}/file",
                                headers=p.headers(p.study_token(studies.a)), timeout=10)
        assert response.status_code == 502
        assert response.json()["description"] == "the PACS is unreachable"
        assert requests.get(f"{p.url}/readyz").status_code == 503
        assert requests.get(f"{p.url}/healthz").status_code == 200


def test_upstream_hang_is_a_504_within_the_timeout(start_proxy: Callable[..., Any], studies: Studies) -> None:
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)  # accepts connections (kernel backlog) and never answers
    try:
        settings = OrthancSettings(url=f"http://127.0.0.1:{silent.getsockname()[1]}", password=Secret("pw"),
                                   read_timeout=0.5)
        with start_proxy(orthanc=settings) as p:
            # The silent upstream never answers: only the proxy's read timeout gives a 504 (a proxy without
            # one would leave the client to its own timeout, an exception here).
            response = requests.get(f"{p.url}/instances/{studies.a.orthanc_id}/file",
                                    headers=p.headers(p.study_token(studies.a)), timeout=10)
        assert response.status_code == 504, response.text
        assert response.json()["description"] == "the PACS did not answer in time"
    finally:
        silent.close()


@pytest.mark.slow
def test_orthanc_stopped_mid_stream(start_proxy: Callable[..., Any], tmp_path: Path) -> None:
    """A throwaway Orthanc is killed while a 48 MB object streams: the client sees a cut, never a hang."""
    server = OrthancServer(tmp_path / "orthanc").start()
    try:
        client = server.client()
        item = upload(client, make_dicom("CT_small.dcm", big_bytes=48 * 1024 * 1024))
        client.close()
        with start_proxy(orthanc=server.settings(read_timeout=5.0)) as p:
            response = requests.get(f"{p.url}/instances/{item.orthanc_id}/file", stream=True, timeout=15,
                                    headers=p.headers(p.study_token(item)))
            assert response.status_code == 200
            expected = int(response.headers["Content-Length"])
            received = len(next(response.iter_content(256 * 1024)))
            assert server.pid is not None
            os.killpg(server.pid, signal.SIGKILL)
            with pytest.raises(requests.exceptions.RequestException) as cut:
                for chunk in response.iter_content(1024 * 1024):
                    received += len(chunk)
            assert received < expected
            assert "timed out" not in str(cut.value)  # the proxy cut the body; the client did not give up waiting
            after = requests.get(f"{p.url}/instances/{item.orthanc_id}/file", headers=p.headers(p.study_token(item)))
            assert after.status_code == 502
    finally:
        server.stop()


def _relay_lines(caplog: pytest.LogCaptureFixture, count: int) -> list[logging.LogRecord]:
    """The access-log records of streamed bodies (written when the last byte has left: wait a moment)."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        lines = [r for r in caplog.records if r.name == "dicomlab.access" and getattr(r, "relay", None)]
        if len(lines) >= count:
            return lines
        time.sleep(0.02)
    raise AssertionError(f"expected {count} access-log lines with a relay mode")


@pytest.mark.parametrize("zero_copy", [True, False], ids=["splice", "copy"])
def test_both_relays_are_byte_identical(start_proxy: Callable[..., Any], studies: Studies,
                                        caplog: pytest.LogCaptureFixture, zero_copy: bool) -> None:
    caplog.set_level(logging.INFO, logger="dicomlab.access")
    big = studies.big
    path = f"/dicom-web/studies/{big.study}/series/{big.series}/instances/{big.sop}"
    with start_proxy(zero_copy=zero_copy) as p:
        headers = p.headers(p.study_token(big))
        via = requests.get(f"{p.url}/instances/{big.orthanc_id}/file", headers=headers)
        wado = requests.get(p.url + path, headers=headers)
        small = requests.get(f"{p.url}/instances/{studies.a.orthanc_id}/file", headers=p.headers(p.study_token(studies.a)))
    assert via.content == big.data and decode_related(wado.content, wado.headers["Content-Type"]) == [big.data]
    assert small.content == studies.a.data
    lines = _relay_lines(caplog, 3)
    large_mode = "splice" if zero_copy else "copy"
    assert [(r.bytes, r.relay, r.outcome) for r in lines] == [  # type: ignore[attr-defined]
        (len(big.data), large_mode, "complete"), (len(wado.content), large_mode, "complete"),
        (len(studies.a.data), "copy", "complete")]  # small bodies are cheaper to copy


@pytest.mark.parametrize("zero_copy", [True, False], ids=["splice", "copy"])
def test_upstream_stall_mid_body_is_cut_within_the_timeout(start_proxy: Callable[..., Any], zero_copy: bool) -> None:
    recorder = Recorder(body=os.urandom(6 * 1024 * 1024), stall_at=1024 * 1024)
    before = REGISTRY.get_sample_value("dicomlab_proxy_upstream_errors_total", {"kind": "read_timeout"}) or 0
    try:
        with recording_upstream(recorder) as url, start_proxy(
                orthanc=OrthancSettings(url=url, password=Secret("pw"), read_timeout=0.5), zero_copy=zero_copy) as p:
            response = requests.get(f"{p.url}/instances/{OID}/file", stream=True, timeout=10,
                                    headers=p.headers(p.token(Scope(orthanc_ids=(OID,)))))
            received = b""
            with pytest.raises(requests.exceptions.RequestException):
                for chunk in response.iter_content(256 * 1024):
                    received += chunk
            assert recorder.body.startswith(received) and len(received) < len(recorder.body)
    finally:
        recorder.aborted.set()
    after = REGISTRY.get_sample_value("dicomlab_proxy_upstream_errors_total", {"kind": "read_timeout"})
    assert after == before + 1  # the proxy's read timeout cut the body (the upstream stays silent for 30 s)


def test_only_plain_tcp_sockets_are_spliced() -> None:
    plain = socket.socket()
    wrapped = ssl.create_default_context().wrap_socket(socket.socket(), server_hostname="proxy.example")
    try:
        assert splice_client({"gunicorn.socket": plain}) is plain
        assert splice_client({"gunicorn.socket": wrapped}) is None  # splicing would bypass the encryption
        assert splice_client({}) is None  # another WSGI server: the bytes are copied
    finally:
        plain.close()
        wrapped.close()


@pytest.mark.parametrize("zero_copy", [True, False], ids=["splice", "copy"])
def test_a_client_that_stops_reading_is_dropped_after_the_send_timeout(
        start_proxy: Callable[..., Any], caplog: pytest.LogCaptureFixture, zero_copy: bool) -> None:
    """A stalled reader must not hold a worker thread and a PACS connection for as long as it likes."""
    caplog.set_level(logging.INFO, logger="dicomlab.access")
    recorder = Recorder(body=os.urandom(48 * 1024 * 1024))  # far more than the socket buffers hold
    try:
        with recording_upstream(recorder) as url, start_proxy(
                orthanc=OrthancSettings(url=url, password=Secret("pw")), zero_copy=zero_copy, send_timeout=0.5) as p:
            host, port = p.url.removeprefix("http://").split(":")
            with socket.socket() as client:
                client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)  # a small window
                client.connect((host, int(port)))
                token = p.token(Scope(orthanc_ids=(OID,)))
                client.sendall(f"GET /instances/{OID}/file HTTP/1.1\r\nHost: {host}\r\n"
                               f"Authorization: Bearer {token}\r\n\r\n".encode())
                assert client.recv(4096).startswith(b"HTTP/1.1 200")
                (line,) = _relay_lines(caplog, 1)  # written when the proxy gives up on the client (bounded wait)
                assert recorder.aborted.wait(10)  # the upstream connection was dropped, not kept half-read
        assert line.outcome == "aborted" and 0 < line.bytes < len(recorder.body)  # type: ignore[attr-defined]
    finally:
        recorder.aborted.set()
