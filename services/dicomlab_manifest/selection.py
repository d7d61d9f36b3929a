"""The selection rules shared by the CLI and the HTTP service: filters, qualification, keys, sampling.

Filters are applied as early as the data allows: study filters on the study page (no further
request for a study that does not match), series filters on the study's series list, and only then
are instance lists read. Only 2D single-frame image instances qualify; everything else is skipped
and counted by :class:`SkipReason`.
"""

from __future__ import annotations

import fnmatch
import hashlib
import heapq
import hmac
import json
import re
from collections.abc import Callable, Iterable
from enum import StrEnum

from dicomlab_core.groundtruth.input_manifest import (
    INPUT_LINE_SEPARATORS,
    LABELS_KEY,
    PATIENT_KEY_KEY,
    SERIES_UID_KEY,
    SOP_UID_KEY,
    SOURCE_KEY,
    STUDY_UID_KEY,
)
from dicomlab_manifest.listing import InstanceInfo, SeriesInfo, StudyInfo
from dicomlab_manifest.spec import PatternSyntax, SelectionSpec


class SkipReason(StrEnum):
    """Why an instance that was seen did not make it into the manifest."""

    STRUCTURED_REPORT = "structured-report"
    PRESENTATION_STATE = "presentation-state"
    MULTI_FRAME = "multi-frame"
    NON_IMAGE = "non-image"
    FOR_PROCESSING = "for-processing"
    DUPLICATE = "duplicate"
    EXCLUDED = "excluded"
    NOT_SAMPLED = "not-sampled"
    DELETED = "deleted"


NON_IMAGE_MODALITIES: dict[str, SkipReason] = {
    "SR": SkipReason.STRUCTURED_REPORT, "KO": SkipReason.STRUCTURED_REPORT,
    "PR": SkipReason.PRESENTATION_STATE,
    **{m: SkipReason.NON_IMAGE for m in ("DOC", "SEG", "REG", "RTSTRUCT", "RTPLAN", "RTDOSE", "RTRECORD", "RTIMAGE",
                                         "RWV", "FID", "PLAN", "AU", "ECG", "HD", "EPS", "RESP", "SMR", "OSS", "TG")},
}
"""Series modalities that never hold images, so their instances are counted without listing them."""

_STORAGE = "1.2.840.10008.5.1.4.1.1."
SINGLE_FRAME_IMAGE_CLASSES = frozenset(_STORAGE + s for s in (
    "1", "1.1", "1.2", "1.3", "13.1.4",  # CR, and DX, MG, IO, breast projection "for presentation"
    "2", "4", "6.1", "7", "12.1", "12.2", "20", "128",  # CT, MR, US, SC, XA, RF, NM, PET
    "77.1.1", "77.1.2", "77.1.3", "77.1.4", "77.1.5.1", "77.1.5.2",  # VL and ophthalmic photography
))
"""Image storage SOP classes whose instances are 2D images (one frame unless NumberOfFrames says more)."""
FOR_PROCESSING_CLASSES = frozenset(_STORAGE + s for s in ("1.1.1", "1.2.1", "1.3.1", "13.1.5"))
"""Raw detector images ("for processing"): images, but not meant to be read by people."""
MULTI_FRAME_IMAGE_CLASSES = frozenset(_STORAGE + s for s in (
    "2.1", "2.2", "3.1", "4.1", "4.3", "4.4", "6.2", "7.1", "7.2", "7.3", "7.4", "12.1.1", "12.2.1",
    "13.1.1", "13.1.2", "13.1.3", "77.1.5.4", "77.1.6", "128.1", "130",
))
"""Enhanced and multi-frame image SOP classes (functional-group IODs), skipped as multi-frame."""


def classify_sop_class(sop_class_uid: str) -> SkipReason | None:
    """None for a single-frame image SOP class, else why it does not qualify."""
    if sop_class_uid in SINGLE_FRAME_IMAGE_CLASSES:
        return None
    if sop_class_uid.startswith(_STORAGE + "88."):
        return SkipReason.STRUCTURED_REPORT
    if sop_class_uid.startswith(_STORAGE + "11."):
        return SkipReason.PRESENTATION_STATE
    if sop_class_uid in FOR_PROCESSING_CLASSES:
        return SkipReason.FOR_PROCESSING
    if sop_class_uid in MULTI_FRAME_IMAGE_CLASSES:
        return SkipReason.MULTI_FRAME
    return SkipReason.NON_IMAGE


def classify_instance(instance: InstanceInfo) -> SkipReason | None:
    """What the instance's own main tags say: more than one frame disqualifies it."""
    return SkipReason.MULTI_FRAME if instance.frames > 1 else None


def _matcher(pattern: str | None, syntax: str) -> Callable[[str], bool] | None:
    if pattern is None:
        return None
    if syntax == PatternSyntax.GLOB:
        regex = re.compile(fnmatch.translate(pattern), re.IGNORECASE)
        return lambda value: regex.match(value) is not None
    compiled = re.compile(pattern, re.IGNORECASE)
    return lambda value: compiled.search(value) is not None


class Selector:
    """The filters of one spec, compiled once."""

    def __init__(self, spec: SelectionSpec, patient_key: Callable[[str], str]) -> None:
        self.spec = spec
        self.patient_key = patient_key
        self._study_description = _matcher(spec.study_description, spec.pattern_syntax)
        self._series_description = _matcher(spec.series_description, spec.pattern_syntax)
        self._modalities = frozenset(spec.modalities)
        self._body_parts = frozenset(spec.body_parts)
        self._patient_keys = frozenset(spec.patient_keys)
        self._study_uids = frozenset(spec.study_uids)
        self._series_uids = frozenset(spec.series_uids)

    def study_matches(self, study: StudyInfo) -> bool:
        spec = self.spec
        if self._study_uids and study.study_uid not in self._study_uids:
            return False
        if spec.study_date_from and not (study.date and study.date >= spec.study_date_from):
            return False
        if spec.study_date_to and not (study.date and study.date <= spec.study_date_to):
            return False
        if self._study_description and not self._study_description(study.description):
            return False
        return not (self._patient_keys and self.patient_key(study.patient_id) not in self._patient_keys)

    def series_skip_reason(self, series: SeriesInfo) -> SkipReason | None:
        """The reason a whole series is skipped for what it is (SR, PR, ...), before any filter."""
        return NON_IMAGE_MODALITIES.get(series.modality)

    def series_matches(self, series: SeriesInfo) -> bool:
        if series.modality not in self._modalities:
            return False
        if self._series_uids and series.series_uid not in self._series_uids:
            return False
        if self._body_parts and series.body_part not in self._body_parts:
            return False
        return not (self._series_description and not self._series_description(series.description))


def patient_key_function(secret: str) -> Callable[[str], str]:
    """HMAC-SHA256 of the patient ID under the service's secret, hex, 32 characters: not reversible."""
    key = secret.encode()

    def patient_key(patient_id: str) -> str:
        return hmac.new(key, patient_id.encode(), hashlib.sha256).hexdigest()[:32]

    return patient_key


def sample_hash(seed: int | None, sop_uid: str) -> int:
    """A 128-bit number fixed by (seed, SOP Instance UID): the sampling order, independent of listing order."""
    digest = hashlib.sha256(f"{seed if seed is not None else 0}\0{sop_uid}".encode()).digest()
    return int.from_bytes(digest[:16], "big")


HASH_SPACE = 1 << 128


class BottomK:
    """The ``size`` smallest sample hashes seen so far: a uniform sample of fixed size, holding only numbers."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._heap: list[int] = []  # negated: heapq is a min-heap and we need the largest kept hash on top

    def add(self, digest: int) -> None:
        if len(self._heap) < self.size:
            heapq.heappush(self._heap, -digest)
        elif -digest > self._heap[0]:
            heapq.heapreplace(self._heap, -digest)

    def extend(self, digests: Iterable[int]) -> None:
        for digest in digests:
            self.add(digest)

    def threshold(self) -> int:
        """The largest kept hash: lines with a hash at most this are in the sample."""
        return -self._heap[0]


_PLAIN = re.compile(r"[0-9A-Za-z._-]*\Z").match


def _key(name: str) -> str:
    """``"name": `` as ``json.dumps`` writes a key with the input lines' separators."""
    return json.dumps(name) + INPUT_LINE_SEPARATORS[1]


_KEY_SOURCE, _KEY_LABELS, _KEY_STUDY, _KEY_SERIES, _KEY_SOP, _KEY_PATIENT = (
    _key(k) for k in (SOURCE_KEY, LABELS_KEY, STUDY_UID_KEY, SERIES_UID_KEY, SOP_UID_KEY, PATIENT_KEY_KEY))


def _json_string(value: str) -> str:
    return f'"{value}"' if _PLAIN(value) else json.dumps(value, ensure_ascii=False)


def line_parts(series: SeriesInfo, study: StudyInfo, labels_json: str, patient_key: str) -> tuple[str, str]:
    """The two constant parts of the manifest lines of one series: a line is
    ``'{"source": ' + source + parts[0] + sop_instance_uid + parts[1]`` (values as JSON strings).

    Built once per series, so that a line costs two small string checks and one concatenation. The keys
    are the Ground Truth package's constants (:mod:`dicomlab_core.groundtruth.input_manifest`).
    """
    return (f', {_KEY_LABELS}{labels_json}, {_KEY_STUDY}{_json_string(study.study_uid)}, '
            f'{_KEY_SERIES}{_json_string(series.series_uid)}, {_KEY_SOP}',
            f', {_KEY_PATIENT}{_json_string(patient_key)}}}')


def manifest_line(instance: InstanceInfo, series: SeriesInfo, study: StudyInfo, labels_json: str,
                  patient_key: str, parts: tuple[str, str] | None = None) -> str:
    """One Ground Truth input line: ``source`` and ``labels`` first, then dicomlab's own keys.

    Formatted directly (the hot path of a build); byte-identical to ``json.dumps`` of the same dict
    with ``separators=(", ", ": ")``, which the tests check. ``labels_json`` is the JSON string already;
    ``parts`` are this series' :func:`line_parts` where the caller keeps them.
    """
    middle, tail = parts or line_parts(series, study, labels_json, patient_key)
    return f'{{{_KEY_SOURCE}{_json_string(instance.orthanc_id)}{middle}{_json_string(instance.sop_uid)}{tail}'
