"""The Orthanc client against a real Orthanc: STOW-RS, QIDO-RS, WADO-RS, REST, faults."""

from __future__ import annotations

import io
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from dicomlab_cli.processes import OrthancServer, free_port
from dicomlab_core.config import Secret
from dicomlab_core.errors import BadRequest, NotFound, UpstreamError, UpstreamTimeout
from dicomlab_core.orthanc import OrthancClient, OrthancSettings, QidoLevel, ResourceLevel, dicom_json_value


def dataset_bytes(ds: pydicom.Dataset) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def fresh_instance(source: str = "CT_small.dcm") -> tuple[bytes, pydicom.Dataset]:
    """A test file with new UIDs, so each test stores something new."""
    ds = pydicom.dcmread(get_testdata_file(source))
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    return dataset_bytes(ds), ds


def test_stow_qido_wado_roundtrip_is_byte_identical(orthanc_client: OrthancClient) -> None:
    data, ds = fresh_instance()
    result = orthanc_client.stow([data])
    assert "00081199" in result  # ReferencedSOPSequence: stored
    studies = orthanc_client.qido(QidoLevel.STUDIES, {"StudyInstanceUID": ds.StudyInstanceUID})
    assert [dicom_json_value(s, "0020000D") for s in studies] == [ds.StudyInstanceUID]
    instances = orthanc_client.qido(QidoLevel.INSTANCES, study_uid=ds.StudyInstanceUID)
    assert [dicom_json_value(i, "00080018") for i in instances] == [ds.SOPInstanceUID]
    retrieved = orthanc_client.retrieve_instance(ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID)
    assert retrieved == data
    metadata = orthanc_client.retrieve_metadata(ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID)
    assert dicom_json_value(metadata[0], "00080018") == ds.SOPInstanceUID


def test_rest_upload_lookup_stream_and_find(orthanc_client: OrthancClient) -> None:
    data, ds = fresh_instance("MR_small.dcm")
    stored = orthanc_client.upload_instance(data)
    assert stored["Status"] == "Success"
    orthanc_id = orthanc_client.lookup_instance(ds.SOPInstanceUID)
    assert orthanc_id == stored["ID"]
    assert b"".join(orthanc_client.iter_instance_file(orthanc_id, chunk_size=1000)) == data
    assert orthanc_client.get_instance_file(orthanc_id) == data
    found = orthanc_client.find(ResourceLevel.STUDY, {"StudyInstanceUID": ds.StudyInstanceUID})
    assert found[0]["MainDicomTags"]["StudyInstanceUID"] == ds.StudyInstanceUID
    changes = orthanc_client.changes(since=0, limit=1000)
    assert any(c["ID"] == orthanc_id for c in changes["Changes"])


def test_non_dicom_upload_is_refused_before_orthanc(orthanc_client: OrthancClient) -> None:
    with pytest.raises(BadRequest, match="not a DICOM file"):
        orthanc_client.upload_instance(b"<html>an error page, not an image</html>")


def test_missing_instance_is_not_found(orthanc_client: OrthancClient) -> None:
    with pytest.raises(NotFound):
        orthanc_client.get_instance_file("00000000-00000000-00000000-00000000-00000000")


def test_wrong_credentials_are_reported_without_the_password(orthanc: OrthancServer) -> None:
    client = OrthancClient(orthanc.settings(password=Secret("wrong-password-123")))
    with pytest.raises(UpstreamError) as info:
        client.system()
    assert "rejected the configured credentials" in info.value.description
    assert "wrong-password-123" not in info.value.description


def test_unreachable_orthanc_fails_fast(monkeypatch: pytest.MonkeyPatch) -> None:
    """One retry, and no backoff beyond the configured one (urllib3's sleeps are recorded, not timed)."""
    import types

    import urllib3.util.retry

    slept: list[float] = []
    clock = types.SimpleNamespace(sleep=slept.append, time=time.time, monotonic=time.monotonic)
    monkeypatch.setattr(urllib3.util.retry, "time", clock)  # urllib3's backoff between attempts (GET retries)
    settings = OrthancSettings(url=f"http://127.0.0.1:{free_port()}", connect_timeout=0.5, retries=1, backoff=0.01)
    with pytest.raises(UpstreamError, match="unreachable"):
        OrthancClient(settings).system()
    assert len(slept) <= settings.retries and sum(slept) <= settings.backoff * 2 ** settings.retries


class SilentServer:
    """A TCP server that accepts connections and never answers (a hung upstream); counts the connections."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = int(self.sock.getsockname()[1])
        self.accepted: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        self.sock.settimeout(0.2)
        while not self._stop.is_set():
            try:
                self.accepted.append(self.sock.accept()[0])
            except OSError:
                continue

    def connections(self) -> int:
        """How many connections clients opened so far (those still in the backlog included)."""
        self._stop.set()
        self._thread.join()
        self.sock.setblocking(False)
        while True:
            try:
                self.accepted.append(self.sock.accept()[0])
            except OSError:
                return len(self.accepted)

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        for conn in self.accepted:
            conn.close()
        self.sock.close()


@pytest.fixture
def silent_server() -> Iterator[SilentServer]:
    server = SilentServer()
    yield server
    server.close()


def test_hung_orthanc_times_out_within_the_configured_timeout(silent_server: SilentServer) -> None:
    settings = OrthancSettings(url=f"http://127.0.0.1:{silent_server.port}", read_timeout=0.5, retries=0)
    with pytest.raises(UpstreamTimeout, match=r"did not answer within 0\.5 s"):
        OrthancClient(settings).system()
    assert silent_server.connections() == 1


def test_uploads_are_never_retried(silent_server: SilentServer) -> None:
    """A POST that timed out may have been stored: it must not be sent again."""
    settings = OrthancSettings(url=f"http://127.0.0.1:{silent_server.port}", read_timeout=0.3, retries=3,
                               backoff=0.01)
    data, _ = fresh_instance()
    with pytest.raises(UpstreamTimeout):
        OrthancClient(settings).upload_instance(data)
    assert silent_server.connections() == 1  # one attempt, not four


def test_orthanc_server_reports_missing_binary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from dicomlab_cli import processes

    monkeypatch.setattr(processes, "ORTHANC_BINARY", tmp_path / "no-such-orthanc")
    with pytest.raises(processes.StackError, match="Orthanc is not installed"):
        OrthancServer(tmp_path).start()


def test_orthanc_server_reports_port_in_use(tmp_path: Path, orthanc: OrthancServer) -> None:
    from dicomlab_cli.processes import StackError

    with pytest.raises(StackError, match=f"port {orthanc.http_port} .* already in use"):
        OrthancServer(tmp_path, http_port=orthanc.http_port).start()


def test_orthanc_config_and_credentials_are_private(orthanc: OrthancServer) -> None:
    assert orthanc.config_path.stat().st_mode & 0o077 == 0
    assert orthanc.password.reveal() not in orthanc.log_path.read_text()
