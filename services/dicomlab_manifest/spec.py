"""The selection spec: what a manifest build selects, validated field by field.

A spec arrives as JSON (HTTP) or flags (CLI) and is parsed once into a frozen :class:`SelectionSpec`;
every error is a :class:`BadRequest` naming the field and, where there is a fixed set, the allowed
values. Patient IDs given in clear are turned into keyed patient keys at parse time, so a spec that
is stored, logged or copied into a manifest summary never carries a patient ID.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any

from dicomlab_core.errors import BadRequest
from dicomlab_core.labels import CHEXPERT_LABELS, parse_label_list
from dicomlab_manifest.config import SopClassCheck

MAX_LINE_CHARS = 100_000
"""Ground Truth's limit on one manifest line."""
LINE_OVERHEAD_CHARS = 400
"""Upper bound of a line's characters other than the label list (keys, IDs, UIDs, quotes)."""
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
UID_PATTERN = re.compile(r"^[0-9]+(\.[0-9]+)*$")
DATE_PATTERN = re.compile(r"^(\d{4})-?(\d{2})-?(\d{2})$")
MAX_COUNT_LIMIT = 10_000_000
"""Largest ``max_count`` (instances in one manifest): far above any labeling job, and it bounds the sampler's heap."""
SEED_LIMIT = 2**63 - 1
"""Largest ``seed``: a signed 64-bit integer, what JSON readers in every language keep exactly."""


class Modality(StrEnum):
    """Modalities whose series may hold 2D single-frame images (DICOM PS3.3 C.7.3.1.1.1)."""

    CR = "CR"
    DX = "DX"
    MG = "MG"
    IO = "IO"
    PX = "PX"
    RG = "RG"
    XA = "XA"
    RF = "RF"
    CT = "CT"
    MR = "MR"
    US = "US"
    NM = "NM"
    PT = "PT"
    OT = "OT"
    XC = "XC"
    ES = "ES"
    OP = "OP"
    SM = "SM"


DEFAULT_MODALITIES: tuple[str, ...] = (Modality.DX.value, Modality.CR.value)


class PatternSyntax(StrEnum):
    """How description patterns match: shell glob (whole value) or regular expression (search)."""

    GLOB = "glob"
    REGEX = "regex"


@dataclass(frozen=True)
class SelectionSpec:
    """One manifest build. Descriptions and body parts match case-insensitively."""

    name: str
    modalities: tuple[str, ...] = DEFAULT_MODALITIES
    study_date_from: str | None = None
    study_date_to: str | None = None
    body_parts: tuple[str, ...] = ()
    study_description: str | None = None
    series_description: str | None = None
    pattern_syntax: str = PatternSyntax.GLOB.value
    patient_keys: tuple[str, ...] = ()
    study_uids: tuple[str, ...] = ()
    series_uids: tuple[str, ...] = ()
    exclude_manifests: tuple[str, ...] = ()
    max_count: int | None = None
    seed: int | None = None
    sample_fraction: float | None = None
    labels: tuple[str, ...] = CHEXPERT_LABELS
    since_manifest: str | None = None
    sop_class_check: str = SopClassCheck.SERIES.value
    allow_empty: bool = False
    overwrite: bool = field(default=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        """The spec as JSON-ready data (no patient IDs in clear: only keys)."""
        data = asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in data.items()}

    def fingerprint(self) -> str:
        """A hash of everything that determines the manifest's bytes (not ``overwrite``)."""
        data = self.to_dict()
        data.pop("overwrite", None)
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()

    @property
    def incremental(self) -> bool:
        return self.since_manifest is not None


FIELDS = (*tuple(f for f in SelectionSpec.__dataclass_fields__ if f != "patient_keys"), "patient_keys", "patient_ids")
"""Keys a spec may carry (``patient_ids`` is accepted and converted to ``patient_keys``)."""


def _str(data: Mapping[str, Any], key: str) -> str | None:
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise BadRequest(f"{key}: expected a non-empty string")
    return value.strip()


def _str_list(data: Mapping[str, Any], key: str) -> tuple[str, ...]:
    value = data.get(key)
    if value is None:
        return ()
    if isinstance(value, str):
        value = [v for v in value.split(",")]
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise BadRequest(f"{key}: expected a list of non-empty strings")
    return tuple(dict.fromkeys(v.strip() for v in value))


def _date(data: Mapping[str, Any], key: str) -> str | None:
    value = _str(data, key)
    if value is None:
        return None
    match = DATE_PATTERN.match(value)
    if not match or not (1 <= int(match.group(2)) <= 12 and 1 <= int(match.group(3)) <= 31):
        raise BadRequest(f"{key}: {value!r} is not a date (YYYYMMDD or YYYY-MM-DD)")
    return "".join(match.groups())


def _choice(data: Mapping[str, Any], key: str, allowed: type[StrEnum], default: str) -> str:
    value = data.get(key, default)
    names = [str(m.value) for m in allowed]
    if value not in names:
        raise BadRequest(f"{key}: {value!r} is not allowed; allowed values: {', '.join(names)}")
    return str(value)


def _int(data: Mapping[str, Any], key: str, minimum: int, maximum: int) -> int | None:
    """An optional integer in ``[minimum, maximum]``; anything else is a 400 naming the range."""
    value = data.get(key)
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # 100.0 from a JSON writer that has only floats
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadRequest(f"{key}: expected an integer from {minimum} to {maximum}")
    if not minimum <= value <= maximum:
        raise BadRequest(f"{key}: must be from {minimum} to {maximum}")
    return value


def _bool(data: Mapping[str, Any], key: str) -> bool:
    value = data.get(key, False)
    if not isinstance(value, bool):
        raise BadRequest(f"{key}: expected true or false")
    return value


def _pattern(data: Mapping[str, Any], key: str, syntax: str) -> str | None:
    value = _str(data, key)
    if value is not None and syntax == PatternSyntax.REGEX:
        try:
            re.compile(value)
        except re.error as exc:
            raise BadRequest(f"{key}: invalid regular expression ({exc})") from None
    return value


def _labels(data: Mapping[str, Any]) -> tuple[str, ...]:
    value = data.get("labels")
    if value is None:
        return CHEXPERT_LABELS
    labels = parse_label_list(value, field="labels")
    length = len(",".join(labels))
    if length + LINE_OVERHEAD_CHARS > MAX_LINE_CHARS:
        raise BadRequest(f"labels: the label list is {length} characters; a manifest line must stay within "
                         f"{MAX_LINE_CHARS} characters")
    return labels


def parse_spec(data: Any, *, patient_key: Callable[[str], str],
               default_sop_class_check: str = SopClassCheck.SERIES.value) -> SelectionSpec:
    """Validate ``data`` (decoded JSON) into a spec; ``patient_key`` maps a patient ID to its key."""
    if not isinstance(data, Mapping):
        raise BadRequest("the selection spec must be a JSON object")
    unknown = sorted(set(data) - set(FIELDS))
    if unknown:
        raise BadRequest(f"unknown filter {unknown[0]!r}; allowed fields: {', '.join(FIELDS)}")
    name = _str(data, "name")
    if name is None or not NAME_PATTERN.match(name):
        raise BadRequest("name: required; 1-128 characters of letters, digits, '.', '_' or '-', "
                         "starting with a letter or digit")
    modalities = _str_list(data, "modalities") if "modalities" in data else DEFAULT_MODALITIES
    allowed = [m.value for m in Modality]
    for modality in modalities:
        if modality.upper() not in allowed:
            raise BadRequest(f"modalities: {modality!r} is not allowed; allowed values: {', '.join(allowed)}")
    if not modalities:
        raise BadRequest(f"modalities: at least one is required; allowed values: {', '.join(allowed)}")
    syntax = _choice(data, "pattern_syntax", PatternSyntax, PatternSyntax.GLOB.value)
    for key in ("study_uids", "series_uids"):
        for uid in _str_list(data, key):
            if len(uid) > 64 or not UID_PATTERN.match(uid):
                raise BadRequest(f"{key}: {uid[:70]!r} is not a DICOM UID (digits and dots, at most 64 characters)")
    date_from, date_to = _date(data, "study_date_from"), _date(data, "study_date_to")
    if date_from and date_to and date_from > date_to:
        raise BadRequest("study_date_from: must not be after study_date_to")
    fraction = data.get("sample_fraction")
    if fraction is not None and (isinstance(fraction, bool) or not isinstance(fraction, int | float)
                                 or not 0 < fraction <= 1):  # also refuses NaN and Infinity
        raise BadRequest("sample_fraction: expected a number in (0, 1]")
    for key in ("exclude_manifests",):
        for ref in _str_list(data, key):
            if not (ref.startswith(("s3://", "file://")) or NAME_PATTERN.match(ref)):
                raise BadRequest(f"{key}: {ref!r} is neither a manifest name nor an s3:// or file:// URI")
    since = _str(data, "since_manifest")
    if since is not None and not NAME_PATTERN.match(since):
        raise BadRequest(f"since_manifest: {since!r} is not a manifest name")
    keys = list(_str_list(data, "patient_keys"))
    keys.extend(patient_key(pid) for pid in _str_list(data, "patient_ids"))
    return SelectionSpec(
        name=name,
        modalities=tuple(sorted({m.upper() for m in modalities})),
        study_date_from=date_from,
        study_date_to=date_to,
        body_parts=tuple(sorted({b.upper() for b in _str_list(data, "body_parts")})),
        study_description=_pattern(data, "study_description", syntax),
        series_description=_pattern(data, "series_description", syntax),
        pattern_syntax=syntax,
        patient_keys=tuple(sorted(set(keys))),
        study_uids=tuple(sorted(_str_list(data, "study_uids"))),
        series_uids=tuple(sorted(_str_list(data, "series_uids"))),
        exclude_manifests=_str_list(data, "exclude_manifests"),
        max_count=_int(data, "max_count", 1, MAX_COUNT_LIMIT),
        seed=_int(data, "seed", 0, SEED_LIMIT),
        sample_fraction=float(fraction) if fraction is not None else None,
        labels=_labels(data),
        since_manifest=since,
        sop_class_check=_choice(data, "sop_class_check", SopClassCheck, default_sop_class_check),
        allow_empty=_bool(data, "allow_empty"),
        overwrite=_bool(data, "overwrite"),
    )
