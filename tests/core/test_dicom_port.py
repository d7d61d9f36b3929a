"""Orthanc's DICOM port accepts only configured modalities (issue 14 §3), tried with DCMTK's real tools.

A real Orthanc (Debian's 1.10) with the local stack's policy and two configured modalities: one at
127.0.0.1 (where the test runs) and one at another address. DCMTK's ``echoscu``/``storescu``/``findscu``
play the modalities; every refusal is also checked on Orthanc's side (the image is not stored).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
import requests
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid
from support.servers import private_orthanc

from dicomlab_cli.dicom_policy import (
    DicomModality,
    ModalityError,
    modalities_from_env,
    orthanc_settings,
    parse_modalities,
)
from dicomlab_cli.processes import LOOPBACK, OrthancServer

ORTHANC_AET = "DICOMLAB"
LOCAL = DicomModality("xray-room-1", "XRAY1", LOOPBACK, 11112)
ELSEWHERE = DicomModality("xray-room-2", "XRAY2", "192.0.2.10", 104)  # TEST-NET-1: never this machine

pytestmark = pytest.mark.skipif(shutil.which("storescu") is None, reason="DCMTK is not installed (apt-get install dcmtk)")


@pytest.fixture(scope="module")
def pacs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OrthancServer]:
    with private_orthanc(tmp_path_factory.mktemp("dicom-port"), dicom_modalities=(LOCAL, ELSEWHERE)) as server:
        yield server


def new_image(directory: Path) -> tuple[Path, str]:
    """A small CT image with a fresh SOP Instance UID (so each try is told apart in Orthanc)."""
    dataset = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    uid = generate_uid()
    dataset.SOPInstanceUID = uid
    dataset.file_meta.MediaStorageSOPInstanceUID = uid
    path = directory / f"{uid}.dcm"
    dataset.save_as(path)
    return path, uid


def dcmtk(tool: str, calling: str, server: OrthancServer, *args: str,
          called: str = ORTHANC_AET) -> subprocess.CompletedProcess[str]:
    return subprocess.run([tool, "-v", "-aet", calling, "-aec", called, "-to", "10", "-ta", "10", "-td", "10",
                           LOOPBACK, str(server.dicom_port), *args], capture_output=True, text=True, timeout=60,
                          check=False)


def rejected(result: subprocess.CompletedProcess[str], reason: str = "Calling AE Title Not Recognized") -> bool:
    """Orthanc refused the association itself (not a network failure or a tool error)."""
    output = result.stdout + result.stderr
    return result.returncode != 0 and "Association Rejected" in output and reason in output


def stored(server: OrthancServer, uid: str) -> bool:
    client = server.client()
    try:
        return client.lookup_instance(uid) is not None
    finally:
        client.close()


def test_an_unknown_ae_title_is_refused_and_its_image_not_stored(pacs: OrthancServer, tmp_path: Path) -> None:
    image, uid = new_image(tmp_path)
    assert rejected(dcmtk("echoscu", "INTRUDER", pacs))
    assert rejected(dcmtk("storescu", "INTRUDER", pacs, str(image)))
    assert not stored(pacs, uid)


def test_a_configured_ae_title_from_another_address_is_refused(pacs: OrthancServer, tmp_path: Path) -> None:
    image, uid = new_image(tmp_path)
    assert rejected(dcmtk("echoscu", ELSEWHERE.aet, pacs))
    assert rejected(dcmtk("storescu", ELSEWHERE.aet, pacs, str(image)))
    assert not stored(pacs, uid)


def test_a_wrong_called_ae_title_is_refused(pacs: OrthancServer, tmp_path: Path) -> None:
    image, uid = new_image(tmp_path)
    assert rejected(dcmtk("storescu", LOCAL.aet, pacs, str(image), called="ANY-SCP"),
                    "Called AE Title Not Recognized")
    assert not stored(pacs, uid)


def test_the_configured_modality_may_echo_and_store(pacs: OrthancServer, tmp_path: Path) -> None:
    image, uid = new_image(tmp_path)
    assert dcmtk("echoscu", LOCAL.aet, pacs).returncode == 0
    assert not stored(pacs, uid)
    assert dcmtk("storescu", LOCAL.aet, pacs, str(image)).returncode == 0
    assert stored(pacs, uid)


def test_the_configured_modality_may_not_query(pacs: OrthancServer, tmp_path: Path) -> None:
    """Modalities send; they do not browse the PACS (C-FIND refused, so no patient list leaks)."""
    image, _ = new_image(tmp_path)
    client = pacs.client()
    try:
        client.upload_instance(image.read_bytes())  # something a C-FIND would find
    finally:
        client.close()
    (tmp_path / "answers").mkdir()
    result = dcmtk("findscu", LOCAL.aet, pacs, "-S", "-X", "-od", str(tmp_path / "answers"),
                   "-k", "QueryRetrieveLevel=STUDY", "-k", "PatientName", "-k", "StudyInstanceUID")
    assert "Association Accepted" in result.stderr + result.stdout  # known modality: it gets this far...
    assert "Find Failed" in result.stderr + result.stdout  # ...and no further
    assert list((tmp_path / "answers").iterdir()) == []


def test_without_modalities_the_dicom_port_is_closed(orthanc: OrthancServer) -> None:
    """The shared test Orthanc runs the local stack's default: no modality, nothing listening."""
    with pytest.raises(ConnectionRefusedError), socket.create_connection((LOOPBACK, orthanc.dicom_port), timeout=5):
        pass
    assert orthanc_settings(())["DicomServerEnabled"] is False


def test_modalities_are_parsed_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DICOMLAB_DICOM_MODALITIES", "xray-room-1=XRAY1@127.0.0.1:11112, ct=CT_01@10.1.2.3")
    assert modalities_from_env() == (LOCAL, DicomModality("ct", "CT_01", "10.1.2.3", 104))
    assert parse_modalities("v6=US1@[fd00::5]:4100") == (DicomModality("v6", "US1", "fd00::5", 4100),)
    monkeypatch.delenv("DICOMLAB_DICOM_MODALITIES")
    assert modalities_from_env() == ()


@pytest.mark.parametrize(("text", "says"), [
    ("XRAY1@127.0.0.1", "name=AET@address"),
    ("a=THIS-AE-TITLE-IS-TOO-LONG@127.0.0.1", "AE title"),
    ("a=XRAY 1@127.0.0.1", "AE title"),
    ("a=XRAY1@modality.example.org", "IP address"),
    ("a=XRAY1@127.0.0.1:70000", "port"),
    ("a=XRAY1@127.0.0.1,a=XRAY2@127.0.0.2", "unique"),
])
def test_bad_modalities_are_refused_with_a_clear_message(text: str, says: str) -> None:
    with pytest.raises(ModalityError, match=says):
        parse_modalities(text)


def own_outside_address() -> str | None:
    """A non-loopback address of this machine (the one its default route uses), if it has one."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # no packet is sent: this only picks the route
        except OSError:
            return None
        address = str(probe.getsockname()[0])
    return None if address.startswith("127.") else address


def test_the_http_port_refuses_clients_that_are_not_on_loopback(orthanc: OrthancServer) -> None:
    """Orthanc 1.10 listens on every address; RemoteAccessAllowed=false makes it refuse all but loopback."""
    address = own_outside_address()
    if address is None:
        pytest.skip("this machine has no non-loopback address")
    auth = (orthanc.username, orthanc.password.reveal())
    assert requests.get(f"{orthanc.url}/system", auth=auth, timeout=10).status_code == 200
    outside = requests.get(f"http://{address}:{orthanc.http_port}/system", auth=auth, timeout=10)
    assert outside.status_code in (401, 403)
    assert "DicomAet" not in outside.text


def test_stack_up_refuses_a_bad_modality_before_starting_anything(tmp_path: Path) -> None:
    env = {**os.environ, "DICOMLAB_RUN_DIR": str(tmp_path / "run"), "DICOMLAB_DICOM_MODALITIES": "ct=CT1@ct.example"}
    result = subprocess.run([sys.executable, "-m", "dicomlab_cli.main", "stack", "up"], env=env,
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 2
    assert "dicomlab stack: error: modality 'ct': host 'ct.example' must be an IP address" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "run" / "orthanc").exists()
