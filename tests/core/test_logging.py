"""JSON logs never carry tokens, credentials or PHI."""

from __future__ import annotations

import io
import json
import logging

from dicomlab_core.logging import configure_logging, scrub


def test_json_lines_with_redaction() -> None:
    stream = io.StringIO()
    configure_logging("DEBUG", service="test", stream=stream)
    log = logging.getLogger("dicomlab.test")
    log.info("fetch http://user:pa55word@orthanc:8042/x?token=v1.k1.abc.def&a=1 with Bearer v1.k1.xyz.sig",
             extra={"PatientName": "DOE^JOHN", "route": "/studies/<study>", "status": 200})
    log.warning("Authorization: Basic ZGljb21sYWI6c2VjcmV0", extra={"password": "pw"})
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert lines[0]["service"] == "test"
    assert lines[0]["level"] == "info"
    assert lines[0]["route"] == "/studies/<study>"
    assert lines[0]["status"] == 200
    text = stream.getvalue()
    for secret in ("pa55word", "v1.k1.abc.def", "v1.k1.xyz.sig", "DOE^JOHN", "ZGljb21sYWI6c2VjcmV0"):
        assert secret not in text
    assert lines[0]["PatientName"] == "[redacted]"
    assert lines[1]["password"] == "[redacted]"


def test_exception_is_one_line_without_traceback() -> None:
    stream = io.StringIO()
    configure_logging("INFO", stream=stream)
    try:
        raise ValueError("bad token=abc123")
    except ValueError:
        logging.getLogger("x").exception("failed")
    (line,) = stream.getvalue().splitlines()
    record = json.loads(line)
    assert record["error"].startswith("ValueError")
    assert "abc123" not in line
    assert "Traceback" not in line


def test_scrub_keeps_ordinary_text() -> None:
    assert scrub("GET /dicom-web/studies 200") == "GET /dicom-web/studies 200"


def test_quick_check_never_skips_what_a_scrubber_would_change() -> None:
    """The one-scan shortcut in ``scrub`` must let through every text some scrubber would redact."""
    from dicomlab_core.logging import _SCRUBBERS

    samples = ["Authorization: BEARER abc.def", "basic Zm9vOmJhcg==", "/x?access_token=1", "/x?X-Amz-Signature=ab",
               "/x?X-Amz-Credential=AK/1", "/x?a=1&sig=zz", "/wado?token=v1.a.b.c", "s3://key:secret@host/b",
               'password="hunter2"', "Secret: s3cr3t", '"token": "abc"', "GET /dicom-web/studies 200"]
    for text in samples:
        slow = text
        for pattern, replacement in _SCRUBBERS:
            slow = pattern.sub(replacement, slow)
        assert scrub(text) == slow, text
    assert sum(scrub(t) != t for t in samples) == len(samples) - 1


def test_every_record_makes_one_valid_line() -> None:
    stream = io.StringIO()
    configure_logging("INFO", stream=stream)
    log = logging.getLogger("dicomlab.test")
    log.info("lone surrogate \ud800 in a message", extra={"huge": 2**70, "nested": {"a": [1, 2]}, "ratio": 0.5})
    log.info("plain", extra={"name_in_utf8": "Zoë"})
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert len(lines) == 2
    assert lines[0]["huge"] == 2**70 and lines[0]["nested"] == '{"a": [1, 2]}' and lines[0]["ratio"] == 0.5
    assert lines[1]["name_in_utf8"] == "Zoë" and lines[1]["ts"].endswith("Z") and len(lines[1]["ts"]) == 24
