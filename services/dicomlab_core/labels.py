"""The finding vocabulary: the one source of truth for label names.

The default label set is the 14 CheXpert observations, in the order CheXpert publishes them.
Every list of labels elsewhere (manifests, the UI, the model head, the chart defaults, the docs)
is derived from :data:`CHEXPERT_LABELS`.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Sequence
from enum import StrEnum
from typing import NamedTuple

from dicomlab_core.errors import BadRequest

MAX_LABEL_LENGTH = 64
"""Ground Truth rejects label names longer than this (characters)."""

_FORBIDDEN = re.compile(r'[\[\]{}"\'`\\\x00-\x1f\x7f-\x9f\u2028\u2029]')
"""Characters a label may not hold: brackets, braces, quotes, backslash and control characters.

A label with any of them is almost always a mis-parsed JSON array (``["Atelectasis"``), and it would
not survive the comma string, the Liquid template or a DICOM code meaning unchanged.
"""


class Finding(StrEnum):
    """The 14 CheXpert observations."""

    NO_FINDING = "No Finding"
    ENLARGED_CARDIOMEDIASTINUM = "Enlarged Cardiomediastinum"
    CARDIOMEGALY = "Cardiomegaly"
    LUNG_OPACITY = "Lung Opacity"
    LUNG_LESION = "Lung Lesion"
    EDEMA = "Edema"
    CONSOLIDATION = "Consolidation"
    PNEUMONIA = "Pneumonia"
    ATELECTASIS = "Atelectasis"
    PNEUMOTHORAX = "Pneumothorax"
    PLEURAL_EFFUSION = "Pleural Effusion"
    PLEURAL_OTHER = "Pleural Other"
    FRACTURE = "Fracture"
    SUPPORT_DEVICES = "Support Devices"


CHEXPERT_LABELS: tuple[str, ...] = tuple(f.value for f in Finding)
"""The default label set, in CheXpert order."""

NO_FINDING: str = Finding.NO_FINDING.value
"""The label that is mutually exclusive with every other finding."""


class FindingState(StrEnum):
    """What a reader can say about one finding on one image."""

    PRESENT = "present"
    ABSENT = "absent"
    UNCERTAIN = "uncertain"


class DefaultFindingState(StrEnum):
    """The state a finding starts in before the reader sets it (a job's choice, in both labeling paths).

    ``not-looked-at`` exists only in the viewer and in drafts: an answer must turn it into a
    :class:`FindingState` before it is submitted.
    """

    NOT_LOOKED_AT = "not-looked-at"
    ABSENT = "absent"


class StandardCode(NamedTuple):
    """A coded concept as DICOM writes it (Code Value, Coding Scheme Designator, Code Meaning)."""

    value: str
    scheme: str
    meaning: str


PRIVATE_SCHEME = "99DCMLAB"
"""dicomlab's private coding scheme, for findings no standard terminology names (PS3.3 8.2: "99" prefix)."""
PRIVATE_SCHEME_NAME = "dicomlab finding codes"
PRIVATE_SCHEME_UID = "2.25.22043606408185171301360025325983122910299880294838233883031"
"""Coding Scheme UID of :data:`PRIVATE_SCHEME`, declared in every SR's Coding Scheme Identification Sequence."""

FINDING_CODES: dict[Finding, StandardCode] = {
    # Sources: "PS3.16" = DICOM PS3.16 (Content Mapping Resource) context groups, as shipped in pydicom's
    # pydicom.sr code dictionary; "SNOMED CT" = SNOMED CT International Edition concept (SCTID and
    # preferred term as in the SNOMED International browser). Private codes (99DCMLAB) only where
    # neither SNOMED CT nor DICOM has a concept with the CheXpert meaning.
    Finding.NO_FINDING: StandardCode("17621005", "SCT", "Normal"),                     # PS3.16 CID 222 Normality
    Finding.ENLARGED_CARDIOMEDIASTINUM: StandardCode(
        "ENLCARDMED", PRIVATE_SCHEME, "Enlarged cardiomediastinum"),                   # no standard concept
    Finding.CARDIOMEGALY: StandardCode("8186001", "SCT", "Cardiomegaly"),              # SNOMED CT 8186001
    Finding.LUNG_OPACITY: StandardCode("112001", "DCM", "Opacity"),                    # PS3.16 CID 6102/6104
    Finding.LUNG_LESION: StandardCode("LUNGLESION", PRIVATE_SCHEME, "Lung lesion"),    # no standard concept
    Finding.EDEMA: StandardCode("19242006", "SCT", "Pulmonary edema"),                 # PS3.16 CID 3700
    Finding.CONSOLIDATION: StandardCode("95436008", "SCT", "Lung consolidation"),      # SNOMED CT 95436008
    Finding.PNEUMONIA: StandardCode("233604007", "SCT", "Pneumonia"),                  # SNOMED CT 233604007
    Finding.ATELECTASIS: StandardCode("46621007", "SCT", "Atelectasis"),               # SNOMED CT 46621007
    Finding.PNEUMOTHORAX: StandardCode("36118008", "SCT", "Pneumothorax"),             # PS3.16 CID 6102/6105
    Finding.PLEURAL_EFFUSION: StandardCode("60046008", "SCT", "Pleural effusion"),     # PS3.16 CID 645
    Finding.PLEURAL_OTHER: StandardCode("PLEURALOTH", PRIVATE_SCHEME, "Pleural other"),  # no standard concept
    Finding.FRACTURE: StandardCode("125605004", "SCT", "Fracture of bone"),            # SNOMED CT 125605004
    Finding.SUPPORT_DEVICES: StandardCode("49062001", "SCT", "Device"),                # SNOMED CT 49062001
}
"""The code of every CheXpert finding: the one table that SR, exports and docs derive codes from."""

FINDING_STATE_CODES: dict[FindingState, StandardCode] = {
    FindingState.PRESENT: StandardCode("52101004", "SCT", "Present"),       # PS3.16 CID 240 Present-Absent
    FindingState.ABSENT: StandardCode("272519000", "SCT", "Absent"),        # PS3.16 CID 240
    FindingState.UNCERTAIN: StandardCode("373068000", "SCT", "Undetermined"),  # PS3.16 CID 240
}
"""A reader's answer on a finding, as the values of PS3.16 CID 240 (Present-Absent)."""


def finding_code(label: str) -> StandardCode:
    """The code of ``label``: :data:`FINDING_CODES` for CheXpert labels, else a 99DCMLAB code.

    A custom label (jobs may use their own label sets) gets a stable private code derived from a hash
    of its name (16 characters, the SH limit), so two labels never share a code; the meaning is the name.
    """
    try:
        return FINDING_CODES[Finding(label)]
    except ValueError:
        pass
    return StandardCode("L" + hashlib.sha256(label.encode()).hexdigest()[:15].upper(), PRIVATE_SCHEME, label[:64])


def validate_label_set(labels: Iterable[str], *, field: str = "labels") -> tuple[str, ...]:
    """Return ``labels`` as a tuple after checking the Ground Truth constraints.

    Labels must be non-empty, unique, free of commas (the manifest joins them with commas), of
    brackets, quotes, backslashes and control characters (:data:`_FORBIDDEN`), and at most
    :data:`MAX_LABEL_LENGTH` characters. Raises :class:`BadRequest` naming ``field``.
    """
    result = tuple(label.strip() for label in labels)
    if not result:
        raise BadRequest(f"{field}: at least one label is required")
    seen: set[str] = set()
    for label in result:
        if not label:
            raise BadRequest(f"{field}: empty label name")
        if "," in label:
            raise BadRequest(f"{field}: label {label!r} contains a comma")
        bad = _FORBIDDEN.search(label)
        if bad is not None:
            raise BadRequest(f"{field}: label {label[:40]!r} contains {bad.group()!r}; brackets, quotes, "
                             "backslashes and control characters are not allowed")
        if len(label) > MAX_LABEL_LENGTH:
            raise BadRequest(f"{field}: label {label[:20]!r}... is longer than {MAX_LABEL_LENGTH} characters")
        if label in seen:
            raise BadRequest(f"{field}: label {label!r} appears twice")
        seen.add(label)
    return result


def parse_label_list(value: str | Sequence[str], *, field: str = "labels") -> tuple[str, ...]:
    """Parse a label list given as a comma string or a JSON array (both appear in manifests).

    A string that starts with ``[`` is a JSON array written as a string (``"[\\"A\\", \\"B\\"]"``, as some
    manifest writers emit it) and is decoded as one; splitting it on commas would make labels such as
    ``["A"`` that match nothing.
    """
    if isinstance(value, str):
        if value.lstrip().startswith("["):
            try:
                decoded = json.loads(value)
            except json.JSONDecodeError as exc:
                raise BadRequest(f"{field}: starts with '[' but is not a JSON array ({exc.msg})") from None
            if not isinstance(decoded, list):
                raise BadRequest(f"{field}: expected a JSON array of strings")
            return parse_label_list(decoded, field=field)
        return validate_label_set(value.split(","), field=field)
    if isinstance(value, Sequence) and all(isinstance(v, str) for v in value):
        return validate_label_set(value, field=field)
    raise BadRequest(f"{field}: expected a comma-separated string or a list of strings")
