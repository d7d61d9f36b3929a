"""JSON-lines logging to stdout that never writes PHI or secrets.

Entry points call :func:`configure_logging` once; modules use ``logging.getLogger(__name__)``.
A redaction filter scrubs what must never reach a log even by mistake: bearer tokens, token query
parameters, Basic credentials, passwords in URLs, and values of PHI-bearing fields passed in
``extra=`` (patient name, patient ID, birth date). Code should not log such values in the first
place; the filter is the seat belt, and the tests check both.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from typing import Any, TextIO

from dicomlab_core import fastjson

PHI_FIELDS = frozenset({
    "PatientName", "PatientID", "PatientBirthDate", "OtherPatientIDs", "patient_name", "patient_id",
    "birth_date", "password", "token", "authorization", "secret", "access_key", "secret_key",
})
"""``extra=`` keys whose values are always replaced by ``[redacted]``."""

_SCRUBBERS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]+"), r"\1[redacted]"),
    (re.compile(r"(?i)(basic\s+)[A-Za-z0-9+/=]+"), r"\1[redacted]"),
    (re.compile(r"(?i)([?&](?:token|access_token|X-Amz-Signature|X-Amz-Credential|sig)=)[^&\s\"']+"),
     r"\1[redacted]"),
    (re.compile(r"(?i)(\w+://[^/\s:@]+:)[^@\s/]+@"), r"\1[redacted]@"),
    (re.compile(r"(?i)(\"?(?:password|secret|token)\"?\s*[:=]\s*\"?)[^\",\s}]+"), r"\1[redacted]"),
)

_SUSPECT = re.compile(r"(?i)bearer|basic|token|sig=|x-amz-|://|password|secret")
"""What every scrubber needs to find something: text without any of these is returned as it is."""

_RESERVED = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


def scrub(text: str) -> str:
    """Remove tokens, credentials and passwords from ``text``."""
    if not _SUSPECT.search(text):  # one scan instead of five for the ordinary line
        return text
    for pattern, replacement in _SCRUBBERS:
        text = pattern.sub(replacement, text)
    return text


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, and any ``extra=`` fields."""

    def __init__(self, service: str = "") -> None:
        super().__init__()
        self.service = service
        self._second: tuple[int, str] = (-1, "")
        """The last whole second formatted, and its text (one ``strftime`` per second, not per line)."""

    def _timestamp(self, record: logging.LogRecord) -> str:
        second, text = self._second
        if int(record.created) != second:
            second = int(record.created)
            text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._second = (second, text)
        return f"{text}.{int(record.msecs):03d}Z"

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "ts": self._timestamp(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": scrub(record.getMessage()),
        }
        if self.service:
            payload["service"] = self.service
        for key, value in vars(record).items():
            if key in _RESERVED or key.startswith("_"):
                continue
            if key in PHI_FIELDS:
                payload[key] = "[redacted]"
            elif isinstance(value, str):
                payload[key] = scrub(value)
            elif isinstance(value, int | float | bool) or value is None:
                payload[key] = value
            else:
                payload[key] = scrub(json.dumps(value, default=str))
        if record.exc_info and record.exc_info[0] is not None:
            # The type and message only: tracebacks can carry request data.
            payload["error"] = f"{record.exc_info[0].__name__}: {scrub(str(record.exc_info[1]))}"
        try:
            return fastjson.dumps(payload).decode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate: ASCII escapes still make a valid line
            return json.dumps(payload)


def configure_logging(level: str = "INFO", *, service: str = "", stream: TextIO | None = None) -> None:
    """Send every log record to ``stream`` (default stdout) as one JSON line. Idempotent."""
    handler = logging.StreamHandler(stream or sys.stdout)
    handler.setFormatter(JsonFormatter(service))
    root = logging.getLogger()
    for existing in list(root.handlers):
        if getattr(existing, "_dicomlab", False):
            root.removeHandler(existing)
    handler._dicomlab = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level.upper())
    for noisy in ("urllib3", "botocore", "boto3", "s3transfer", "PIL", "matplotlib"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
