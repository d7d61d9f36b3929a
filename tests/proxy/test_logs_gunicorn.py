"""Logs hold no token, credential or patient name; the proxy under real gunicorn streams and counts."""

from __future__ import annotations

import contextlib
import io
import json
import logging
from pathlib import Path

import pytest
import requests
from proxy_helpers import ALLOWED_ORIGIN, PATIENT_NAME, SERVICE_TOKEN, Proxy, Studies, raw_request
from support.servers import PROXY_APP, gunicorn, proxy_env

from dicomlab_cli.processes import OrthancServer
from dicomlab_core.logging import JsonFormatter
from dicomlab_core.tokens import Scope


def test_logs_contain_no_secrets_or_phi(proxy: Proxy, studies: Studies, orthanc: OrthancServer,
                                        caplog: pytest.LogCaptureFixture) -> None:
    a, b = studies.a, studies.b
    token = proxy.study_token(a)
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter("proxy"))
    root = logging.getLogger()
    root.addHandler(handler)
    caplog.set_level(logging.DEBUG)
    try:
        requests.get(f"{proxy.url}/dicom-web/studies/{a.study}/metadata", headers=proxy.headers(token))
        requests.get(f"{proxy.url}/instances/{a.orthanc_id}/file?token={token}")
        requests.get(f"{proxy.url}/dicom-web/studies/{b.study}/metadata", headers=proxy.headers(token))
        requests.get(f"{proxy.url}/dicom-web/studies/{a.study}/metadata", headers=proxy.headers(token[:-2] + "xx"))
        requests.get(f"{proxy.url}/dicom-web/studies?PatientName={PATIENT_NAME}&StudyInstanceUID={a.study}",
                     headers=proxy.headers(SERVICE_TOKEN))
        raw_request(proxy.url, f"GET /dicom-web/studies/%2e%2e/system?token={token} HTTP/1.1")
    finally:
        root.removeHandler(handler)
    text = stream.getvalue()
    raw = "\n".join(r.getMessage() + json.dumps({k: str(v) for k, v in vars(r).items()}) for r in caplog.records)
    for blob in (text, raw):
        for secret in (token, token.split(".")[-1], SERVICE_TOKEN, orthanc.password.reveal(), "Basic ",
                       PATIENT_NAME, PATIENT_NAME.replace("^", " "), "Confidential"):
            assert secret not in blob
    lines = [json.loads(line) for line in text.splitlines() if '"dicomlab.access"' in line]
    statuses = sorted(line["status"] for line in lines)
    assert statuses == [200, 200, 200, 400, 401, 403]
    file_line = next(line for line in lines if line["route"] == "/instances/<oid:oid>/file")
    assert file_line["bytes"] == len(a.data) and file_line["outcome"] == "complete"
    assert all(line["token_id"] is None or len(line["token_id"]) in (16,) or line["token_id"].startswith("service:")
               for line in lines)
    # The audit trail: every read names what it read (or tried to) and the token id, never the token.
    jti = proxy.signer.verify(token).token_id
    by_status = {(line["route"], line["status"]): line for line in lines}
    meta = by_status[("/dicom-web/studies/<uid:study>/metadata", 200)]
    assert (meta["study"], meta["grant"], meta["token_id"], meta["token_subject"]) == (a.study, "study", jti, "reader-7")
    assert meta["deid"] is False
    refused = by_status[("/dicom-web/studies/<uid:study>/metadata", 403)]
    assert (refused["study"], refused["grant"], refused["token_id"]) == (b.study, None, jti)
    assert (file_line["orthanc_id"], file_line["grant"], file_line["token_id"]) == (a.orthanc_id, "orthanc_id", jti)
    search = by_status[("/dicom-web/studies", 200)]
    assert (search["study"], search["grant"], search["token_id"]) == (a.study, "service", "service:0")


def test_under_gunicorn(orthanc: OrthancServer, studies: Studies, key_entry: str, tmp_path: Path) -> None:
    env = proxy_env(orthanc, key_entry, allowed_origins=ALLOWED_ORIGIN)
    with gunicorn("proxy", PROXY_APP, tmp_path, env, workers=2, threads=4) as service:
        from dicomlab_core.tokens import signer_from_entries

        big = studies.big
        token = signer_from_entries([key_entry]).issue(Scope(studies=(big.study,), orthanc_ids=(big.orthanc_id,)),
                                                       subject="r", ttl_seconds=60)
        for _ in range(2):
            response = requests.get(f"{service.url}/instances/{big.orthanc_id}/file",
                                    headers={"Authorization": f"Bearer {token}", "Origin": ALLOWED_ORIGIN})
            assert response.status_code == 200 and response.content == big.data
            assert response.headers["Access-Control-Allow-Origin"] == ALLOWED_ORIGIN
        # gunicorn takes the path of an absolute-form request line; the upstream stays fixed.
        status, _, body = raw_request(service.url, f"GET http://169.254.169.254/instances/{big.orthanc_id}/file "
                                      "HTTP/1.1", {"Authorization": f"Bearer {token}"}, host="169.254.169.254")
        assert status == 200 and body == big.data
        status, _, _ = raw_request(service.url, "GET /dicom-web/studies HTTP/1.1", {"X-Big": "a" * 20000})
        assert status in (400, 431)
        assert requests.get(f"{service.url}/readyz").status_code == 200
        metrics = requests.get(f"{service.metrics_url}/metrics").text
        sent = [line for line in metrics.splitlines()
                if line.startswith("dicomlab_proxy_response_bytes_total{") and "file" in line]
        assert sent and float(sent[0].split()[-1]) == 3 * len(big.data)
        assert 'dicomlab_http_requests_total{dicomlab_service="proxy",method="GET",route="/instances/<oid:oid>/file",' \
               'status="200"} 3.0' in metrics
        assert requests.get(f"{service.url}/metrics").status_code == 404  # not on the public port
        log = service.log_path.read_text()
        assert token not in log and orthanc.password.reveal() not in log
        assert "Logging error" not in log  # gunicorn's own text log still formats (its %(process)d included)
        records = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
        served = [r for r in records if r.get("route") == "/instances/<oid:oid>/file" and r.get("status") == 200]
        assert len(served) == 3
        assert {r["relay"] for r in served} == {"splice"}  # gunicorn exposes its socket: large bodies go zero-copy


def test_upstream_cut_under_gunicorn_drops_the_client_quietly(key_entry: str, tmp_path: Path) -> None:
    """The client sees a truncated body (never a complete-looking one) and gunicorn logs no URI/token."""
    from proxy_helpers import Recorder, recording_upstream

    from dicomlab_core.tokens import signer_from_entries

    oid = "0a1b2c3d-0a1b2c3d-0a1b2c3d-0a1b2c3d-0a1b2c3d"
    recorder = Recorder(body=b"\x00" * (4 * 1024 * 1024), truncate_at=512 * 1024)
    with recording_upstream(recorder) as upstream:
        env = proxy_env(None, key_entry, orthanc__url=upstream, orthanc__password="pw")
        with gunicorn("proxy", PROXY_APP, tmp_path, env, workers=1, threads=2) as service:
            token = signer_from_entries([key_entry]).issue(Scope(orthanc_ids=(oid,)), subject="r", ttl_seconds=60)
            with pytest.raises(requests.exceptions.ChunkedEncodingError):
                requests.get(f"{service.url}/instances/{oid}/file?token={token}", timeout=10)
            assert requests.get(f"{service.url}/healthz", timeout=5).status_code == 200
            metrics = requests.get(f"{service.metrics_url}/metrics").text
            assert 'dicomlab_proxy_upstream_errors_total{kind="midstream"} 1.0' in metrics
    log = service.log_path.read_text()
    assert token not in log and "Error handling request" not in log
    assert "upstream failed mid-stream" in log


@pytest.mark.parametrize("zero_copy", ["true", "false"], ids=["splice", "copy"])
def test_a_stalled_reader_under_gunicorn_frees_the_only_thread(key_entry: str, tmp_path: Path, zero_copy: str) -> None:
    """One worker thread: a client that stops reading must not keep the next caller waiting for ever."""
    import os
    import socket

    from proxy_helpers import Recorder, recording_upstream

    from dicomlab_core.tokens import signer_from_entries

    oid = "0a1b2c3d-0a1b2c3d-0a1b2c3d-0a1b2c3d-0a1b2c3d"
    recorder = Recorder(body=os.urandom(48 * 1024 * 1024))
    with recording_upstream(recorder) as upstream:
        env = proxy_env(None, key_entry, orthanc__url=upstream, orthanc__password="pw", send_timeout="0.5",
                        zero_copy=zero_copy)
        with (gunicorn("proxy", PROXY_APP, tmp_path, env, workers=1, threads=1) as service,
              contextlib.ExitStack() as stack):
            stack.callback(recorder.aborted.set)  # first: the upstream's stalled handler returns, then gunicorn stops
            token = signer_from_entries([key_entry]).issue(Scope(orthanc_ids=(oid,)), subject="r", ttl_seconds=60)
            host, port = service.url.removeprefix("http://").split(":")
            with socket.socket() as stalled:
                stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)
                stalled.connect((host, int(port)))
                stalled.sendall(f"GET /instances/{oid}/file HTTP/1.1\r\nHost: {host}\r\n"
                                f"Authorization: Bearer {token}\r\n\r\n".encode())
                assert stalled.recv(4096).startswith(b"HTTP/1.1 200")
                # The stalled reader still holds its connection open; the next caller gets the thread.
                assert requests.get(f"{service.url}/healthz", timeout=15).status_code == 200
                assert recorder.aborted.wait(10)
    log = service.log_path.read_text()
    assert token not in log and "Error handling request" not in log
    assert "Logging error" not in log  # gunicorn's own text log still formats (its %(process)d included)
    records = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    assert [r["outcome"] for r in records if r.get("route") == "/instances/<oid:oid>/file"] == ["aborted"]
