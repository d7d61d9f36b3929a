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


def test_unreachable_orthanc_fails_fast() -> None:
    settings = OrthancSettings(url=f"http://127.0.0.1:{free_port()}", connect_timeout=0.5, retries=1, backoff=0.01)
    started = time.monotonic()
    with pytest.raises(UpstreamError, match="unreachable"):
        OrthancClient(settings).system()
    assert time.monotonic() - started < 5


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A TCP server that accepts connections and never answers (a hung upstream)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    port = sock.getsockname()[1]
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        sock.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(sock.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield port
    stop.set()
    thread.join()
    for conn in accepted:
        conn.close()
    sock.close()


def test_hung_orthanc_times_out_within_the_configured_timeout(silent_server: int) -> None:
    settings = OrthancSettings(url=f"http://127.0.0.1:{silent_server}", read_timeout=0.5, retries=0)
    started = time.monotonic()
    with pytest.raises(UpstreamTimeout, match=r"did not answer within 0\.5 s"):
        OrthancClient(settings).system()
    assert time.monotonic() - started < 3


def test_uploads_are_never_retried(silent_server: int) -> None:
    """A POST that timed out may have been stored: it must not be sent again."""
    settings = OrthancSettings(url=f"http://127.0.0.1:{silent_server}", read_timeout=0.3, retries=3, backoff=0.01)
    data, _ = fresh_instance()
    started = time.monotonic()
    with pytest.raises(UpstreamTimeout):
        OrthancClient(settings).upload_instance(data)
    assert time.monotonic() - started < 1.5  # one attempt of 0.3 s, not four


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
