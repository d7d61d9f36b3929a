"""Test helpers for the proxy: DICOM files with known UIDs and a recording upstream (the in-process server
is :func:`support.servers.serve`)."""

from __future__ import annotations

import http.server
import io
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pydicom
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid
from support.servers import in_thread

from dicomlab_cli.processes import free_port
from dicomlab_core.tokens import Scope, TokenSigner
from dicomlab_proxy.config import Config

PATIENT_NAME = "Confidential^Patientname"


@dataclass(frozen=True)
class StoredInstance:
    study: str
    series: str
    sop: str
    orthanc_id: str
    data: bytes


ALLOWED_ORIGIN_PORT = free_port()
ALLOWED_ORIGIN = f"http://127.0.0.1:{ALLOWED_ORIGIN_PORT}"
OTHER_ORIGIN = "http://127.0.0.1:1"
SERVICE_TOKEN = "service-secret-for-tests-0123456789"


@dataclass(frozen=True)
class Studies:
    a: StoredInstance
    b: StoredInstance
    big: StoredInstance


@dataclass(frozen=True)
class Proxy:
    url: str
    config: Config
    signer: TokenSigner

    def token(self, scope: Scope, ttl: int = 300, **kwargs: Any) -> str:
        return self.signer.issue(scope, subject="reader-7", ttl_seconds=ttl, **kwargs)

    def study_token(self, item: StoredInstance) -> str:
        return self.token(Scope(studies=(item.study,), orthanc_ids=(item.orthanc_id,)))

    def headers(self, token: str, **extra: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}", **extra}



def make_dicom(template: str = "CT_small.dcm", *, big_bytes: int = 0, patient: str = PATIENT_NAME) -> bytes:
    """A test file with fresh UIDs; ``big_bytes`` > 0 replaces the pixels with that much random data."""
    ds = pydicom.dcmread(get_testdata_file(template))
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.PatientName = patient
    ds.PatientID = "PID-" + ds.SOPInstanceUID[-8:]
    if big_bytes:
        side = int((big_bytes // 2) ** 0.5)
        ds.Rows = ds.Columns = side
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
        rng = np.random.default_rng(7)
        ds.PixelData = rng.integers(0, 65535, size=side * side, dtype=np.uint16).tobytes()
        for keyword in ("SmallestImagePixelValue", "LargestImagePixelValue"):
            if keyword in ds:
                delattr(ds, keyword)
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def upload(client: Any, data: bytes) -> StoredInstance:
    ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
    result = client.upload_instance(data)
    return StoredInstance(ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID, result["ID"], data)


@dataclass
class Recorder:
    """What the recording upstream saw, and what it should answer."""

    requests: list[dict[str, Any]] = field(default_factory=list)
    body: bytes = b"x" * (4 * 1024 * 1024)
    etag: str = '"v1"'
    slow: bool = False
    truncate_at: int = 0
    """When > 0: announce the full length, send this many bytes, then close (an upstream dying mid-body)."""
    stall_at: int = 0
    """When > 0: send this many bytes, then go silent without closing (an upstream hanging mid-body)."""
    aborted: threading.Event = field(default_factory=threading.Event)


@contextmanager
def recording_upstream(recorder: Recorder) -> Iterator[str]:
    """A small HTTP server standing in for Orthanc where Orthanc lacks a feature (Range, ETag, slowness).

    It records each request's method, target and headers, answers ``If-None-Match`` with 304 and
    ``Range: bytes=a-b`` with 206, and in ``slow`` mode trickles the body so aborts can be seen.
    """

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True

        def log_message(self, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            recorder.requests.append({"method": "GET", "target": self.path, "headers": dict(self.headers),
                                      "peer": self.client_address})
            body = recorder.body
            if self.headers.get("If-None-Match") == recorder.etag:
                self.send_response(304)
                self.send_header("ETag", recorder.etag)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            status, extra = 200, {}
            ranged = self.headers.get("Range", "")
            if ranged.startswith("bytes="):
                first, _, last = ranged[6:].partition("-")
                start, end = int(first), int(last)
                body = body[start:end + 1]
                status, extra = 206, {"Content-Range": f"bytes {start}-{end}/{len(recorder.body)}"}
            self.send_response(status)
            self.send_header("Content-Type", "application/dicom")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("ETag", recorder.etag)
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("Server", "upstream-internal")
            self.send_header("Set-Cookie", "internal=1")
            for key, value in extra.items():
                self.send_header(key, value)
            self.end_headers()
            step = 64 * 1024
            if recorder.truncate_at:
                body = body[:recorder.truncate_at]
                self.close_connection = True
            try:
                for offset in range(0, len(body), step):
                    if recorder.stall_at and offset >= recorder.stall_at:
                        recorder.aborted.wait(30)  # silent until the test ends (or 30 s)
                        return
                    self.wfile.write(body[offset:offset + step])
                    if recorder.slow:
                        time.sleep(0.05)
            except (BrokenPipeError, ConnectionResetError):
                recorder.aborted.set()

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    with in_thread(server) as port:
        yield f"http://127.0.0.1:{port}"


def raw_request(url: str, request_line: str, headers: dict[str, str] | None = None, body: bytes = b"",
                *, host: str | None = None, timeout: float = 10.0,
                extra_lines: list[str] | None = None) -> tuple[int, dict[str, str], bytes]:
    """Send bytes exactly as given (no client-side normalization) and read the whole answer.

    ``extra_lines`` are header lines sent verbatim after ``headers`` (duplicates, smuggling attempts).
    """
    import socket
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    lines = [request_line, f"Host: {host if host is not None else parts.netloc}", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    lines += extra_lines or []
    data = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
    with socket.create_connection((parts.hostname, parts.port), timeout=timeout) as sock:
        sock.sendall(data)
        chunks = []
        while True:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            chunks.append(chunk)
    raw = b"".join(chunks)
    head, _, rest = raw.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    parsed = {}
    for line in header_lines:
        key, _, value = line.partition(":")
        parsed[key.strip().lower()] = value.strip()
    return int(status_line.split()[1]), parsed, rest
