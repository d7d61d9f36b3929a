"""The input manifest line (JSON Lines, one data object per line; ``ground-truth.md``).

``{"source": "<orthanc id>" | "source-ref": "s3://...", "labels": ..., ...}``: :func:`parse_manifest_line` /
:func:`iter_manifest` give a :class:`ManifestLine` that keeps every key as it came (they are copied
through to the output manifest unchanged). :func:`input_line` writes dicomlab's own line (the manifest
service writes the same bytes on its hot path, from the same key constants).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from dicomlab_core.errors import BadRequest
from dicomlab_core.labels import parse_label_list

logger = logging.getLogger(__name__)

MAX_MANIFEST_LINE_CHARS = 100_000
"""Ground Truth's limit on one input manifest line, in characters."""

SOURCE_KEY = "source"
SOURCE_REF_KEY = "source-ref"
LABELS_KEY = "labels"
STUDY_UID_KEY = "study-uid"
SERIES_UID_KEY = "series-uid"
SOP_UID_KEY = "sop-instance-uid"
"""dicomlab's own manifest keys (extra keys are allowed and copied through by Ground Truth)."""


PATIENT_KEY_KEY = "patient-key"
"""The keyed pseudonym of the patient (patient-level splits without the patient ID)."""
INPUT_LINE_SEPARATORS = (", ", ": ")
"""The separators of the input lines dicomlab writes (``json.dumps``' defaults)."""


class ManifestError(BadRequest):
    """An input or output manifest line is malformed; the message names the line and the reason."""


@dataclass(frozen=True)
class ManifestLine:
    """One input manifest line. ``data`` is the line as read (every key, unchanged, in order)."""

    data: Mapping[str, Any]
    labels: tuple[str, ...] | None
    """The label list, parsed from a comma string or JSON array; None when the line has none."""

    @property
    def source(self) -> str | None:
        """The Orthanc instance ID (``source``), if the line has one."""
        value = self.data.get(SOURCE_KEY)
        return value if isinstance(value, str) else None

    @property
    def source_ref(self) -> str | None:
        """The object URI (``source-ref``), if the line has one."""
        value = self.data.get(SOURCE_REF_KEY)
        return value if isinstance(value, str) else None

    @property
    def ref(self) -> str:
        """``source`` or ``source-ref``: the identity of the data object."""
        return self.source or self.source_ref or ""

    def get_str(self, key: str) -> str | None:
        value = self.data.get(key)
        return value if isinstance(value, str) and value else None

    @property
    def study_uid(self) -> str | None:
        return self.get_str(STUDY_UID_KEY)

    @property
    def series_uid(self) -> str | None:
        return self.get_str(SERIES_UID_KEY)

    @property
    def sop_uid(self) -> str | None:
        return self.get_str(SOP_UID_KEY)


def parse_manifest_line(line: str | bytes | Mapping[str, Any], *, where: str = "manifest line") -> ManifestLine:
    """Validate one input manifest line (a JSON string or an already-decoded object).

    Exactly one of ``source`` (non-empty string) or ``source-ref`` is required; ``labels`` may be a
    comma string or a JSON array; other keys are kept. Lines over 100,000 characters are refused.
    """
    if isinstance(line, bytes):
        line = line.decode("utf-8")
    if isinstance(line, str):
        if len(line) > MAX_MANIFEST_LINE_CHARS:
            raise ManifestError(f"{where}: longer than {MAX_MANIFEST_LINE_CHARS} characters")
        try:
            data = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ManifestError(f"{where}: not valid JSON ({exc.msg})") from None
    else:
        data = line
    if not isinstance(data, Mapping):
        raise ManifestError(f"{where}: expected a JSON object")
    has_source, has_ref = SOURCE_KEY in data, SOURCE_REF_KEY in data
    if has_source == has_ref:
        raise ManifestError(f"{where}: exactly one of 'source' or 'source-ref' is required")
    value = data[SOURCE_KEY if has_source else SOURCE_REF_KEY]
    if not isinstance(value, str) or not value.strip():
        raise ManifestError(f"{where}: '{SOURCE_KEY if has_source else SOURCE_REF_KEY}' must be a non-empty string")
    labels = None
    if LABELS_KEY in data and data[LABELS_KEY] not in (None, ""):
        try:
            labels = parse_label_list(data[LABELS_KEY], field=f"{where}: labels")
        except BadRequest as exc:
            raise ManifestError(exc.description) from None
    return ManifestLine(data=dict(data), labels=labels)


def iter_manifest(lines: Iterable[str | bytes]) -> Iterator[ManifestLine]:
    """Parse JSON Lines (blank lines skipped); errors name the 1-based line number."""
    for number, line in enumerate(lines, 1):
        text = line.decode("utf-8") if isinstance(line, bytes) else line
        if text.strip():
            yield parse_manifest_line(text.rstrip("\r\n"), where=f"manifest line {number}")


def dump_line(obj: Mapping[str, Any]) -> str:
    """One compact JSON Lines line (no newline), UTF-8 safe."""
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


def input_line(source: str, labels: str, *, study_uid: str, series_uid: str, sop_uid: str,
               patient_key: str) -> str:
    """dicomlab's input manifest line for one instance: the Ground Truth keys first, then ours.

    ``labels`` is the comma list. The manifest service formats the same line directly
    (``dicomlab_manifest.selection.manifest_line``) and a test checks the bytes are identical.
    """
    line = {SOURCE_KEY: source, LABELS_KEY: labels, STUDY_UID_KEY: study_uid, SERIES_UID_KEY: series_uid,
            SOP_UID_KEY: sop_uid, PATIENT_KEY_KEY: patient_key}
    return json.dumps(line, ensure_ascii=False, separators=INPUT_LINE_SEPARATORS)
