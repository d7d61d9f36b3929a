"""Ground Truth formats shared by the manifest service, the labeling service and training.

Three contracts (see ``ground-truth.md``):

- **Input manifest lines** — ``{"source": "<orthanc id>" | "source-ref": "s3://...", "labels": ..., ...}``:
  :func:`parse_manifest_line` / :func:`iter_manifest` give a :class:`ManifestLine` that keeps every key
  as it came (they are copied through to the output manifest unchanged).
- **Worker answers** — our template's clean JSON (optionally wrapped as ``{"answer": "<json>"}``) and
  the reference sample's three-level encoded shape: :func:`parse_worker_answer` gives one typed
  :class:`WorkerAnswer` or raises :class:`AnswerError` with the reason.
- **Output manifest lines** — :func:`output_manifest_line` writes the Ground Truth shape with the
  consolidated content (:class:`ConsolidatedLabel`, defined here once); :func:`read_output_manifest`
  reads ours and real Ground Truth output (both metadata spellings; consolidated, raw per-worker or
  empty ``{}`` + ``worker-response-ref`` content) into :class:`LabeledObject` rows for training.

The consolidated content of one data object::

    {"findings": {"Cardiomegaly": {"value": "present", "confidence": 0.93, "agreement": 0.67, "answers": 3}},
     "method": "dawid-skene",
     "workers": [{"workerId": "...", "answer": <the answer exactly as received (usually a JSON string)>}],
     "rejected": [{"workerId": "...", "reason": "...", "answer": <the malformed answer exactly as received>}],
     "notLabeledBy": [{"workerId": "...", "reason": "not labeled: could not load (HTTP 403)", "answer": ...}],
     "flags": ["no-valid-answer"]}

A worker who could not label an object (the worker page's "Skip: could not load") submits
``{"skipped": {"reason": "could not load", "detail": "HTTP 403"}}`` and no findings:
:func:`parse_worker_answer` raises :class:`AnswerSkipped` for it, and consolidation lists the worker
under ``notLabeledBy`` (no answer from them, not an answer of absent findings, not a malformed one).
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, NamedTuple, TypeGuard, TypeVar

from dicomlab_core import fastjson
from dicomlab_core.errors import BadRequest
from dicomlab_core.labels import NO_FINDING, FindingState, parse_label_list

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

CUSTOM_TYPE = "groundtruth/custom"
"""The metadata ``type`` we write; ``groundTruth/custom`` is read as the same."""
METADATA_SUFFIX = "-metadata"
CREATION_DATE_FORMAT = "%Y-%m-%dT%H:%M:%S.%f"
"""Ground Truth's ``creation-date`` format (no zone; UTC)."""


class Flag(StrEnum):
    """Notes on a consolidated object that a reviewer should see."""

    NO_VALID_ANSWER = "no-valid-answer"
    """Nobody gave a valid answer: every finding is uncertain."""
    SINGLE_ANSWER = "single-answer"
    """Only one valid answer: nothing to agree with."""
    TIE = "tie"
    """At least one finding was a present/absent tie settled by the tie rule."""
    NO_FINDING_CONFLICT = "no-finding-conflict"
    """The consensus had No Finding present together with another finding; No Finding was dropped."""


class RoiTool(StrEnum):
    """The ROI shapes the worker template draws."""

    RECTANGLE = "rectangle"
    ELLIPSE = "ellipse"
    POLYGON = "polygon"


# --------------------------------------------------------------------------------------------- input


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


# --------------------------------------------------------------------------------------------- answers


class AnswerError(ValueError):
    """A worker answer cannot be used; ``reason`` says why (reported, never fatal to a batch)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class AnswerSkipped(AnswerError):
    """The worker submitted no answer on purpose: they could not label the object (e.g. it did not load).

    Not a malformed answer: consolidation records the worker as not having labeled the object.
    """


SKIP_KEY = "skipped"
"""Key of a worker page's explicit skip: ``{"skipped": {"reason": ..., "detail": ...}}`` (no findings)."""


def _skip_reason(value: Any) -> str:
    """``not labeled: <reason> (<detail>)`` from a skip's value (text cut to keep reports small)."""
    reason, detail = "skipped", ""
    if _is_map(value):
        reason = str(value.get("reason") or reason)[:80]
        detail = str(value.get("detail") or "")[:160]
    elif isinstance(value, str) and value:
        reason = value[:80]
    return f"not labeled: {reason}" + (f" ({detail})" if detail else "")


class Roi(NamedTuple):
    """One region drawn by a reader, in image-pixel coordinates (column x, row y).

    A tuple, not a dataclass: a batch builds 100,000s of them and a tuple is several times cheaper.
    """

    tool: RoiTool
    points: tuple[tuple[float, float], ...]
    finding: str | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"tool": self.tool.value, "points": [list(p) for p in self.points]}
        if self.finding is not None:
            out["finding"] = self.finding
        return out


class WorkerAnswer(NamedTuple):
    """One reader's answer for one data object, whatever shape it arrived in.

    A tuple, not a dataclass, for the same reason as :class:`Roi` (one per answer: 100,000s per batch).
    """

    worker_id: str
    findings: dict[str, FindingState]
    """The findings the reader stated; a label missing here was not answered."""
    rois: tuple[Roi, ...] = ()
    sop_uid: str | None = None
    time_spent: float | None = None
    """Seconds the reader spent, as reported by the template."""
    window_level: dict[str, Any] | None = None
    raw: Any = None
    """The answer exactly as received: a JSON string stays a string (kept for audit, re-parseable)."""
    shape: str = "dicomlab"
    """``dicomlab`` (our template) or ``reference-sample`` (the three-level encoded shape)."""

    def to_json(self) -> dict[str, Any]:
        """The normalized answer plus its raw form, as kept in the consolidated content."""
        out: dict[str, Any] = {"workerId": self.worker_id,
                               "findings": {k: v.value for k, v in self.findings.items()},
                               "rois": [r.to_json() for r in self.rois]}
        if self.sop_uid:
            out["sopInstanceUid"] = self.sop_uid
        if self.time_spent is not None:
            out["timeSpentSeconds"] = self.time_spent
        if self.window_level is not None:
            out["windowLevel"] = self.window_level
        out["raw"] = self.raw
        return out


_BOOL_STATES = {True: FindingState.PRESENT, False: FindingState.ABSENT}
_STATE_ALIASES = {"present": FindingState.PRESENT, "absent": FindingState.ABSENT,
                  "uncertain": FindingState.UNCERTAIN, "yes": FindingState.PRESENT, "no": FindingState.ABSENT,
                  "true": FindingState.PRESENT, "false": FindingState.ABSENT, "unsure": FindingState.UNCERTAIN}


def _decode(value: Any, what: str) -> Any:
    """``value`` itself, or its JSON decoding when it is a string (the sample nests JSON in strings)."""
    if type(value) is str or isinstance(value, str | bytes):
        try:
            return fastjson.loads(value)
        except ValueError:
            raise AnswerError(f"{what} is not valid JSON") from None
    return value


_EXACT_STATES: dict[Any, FindingState] = {s.value: s for s in FindingState}


def _state(label: str, value: Any) -> FindingState | None:
    exact = _EXACT_STATES.get(value) if type(value) is str else None
    if exact is not None:  # the common case, kept cheap: 100,000s of findings per batch
        return exact
    if isinstance(value, bool):
        return _BOOL_STATES[value]
    if isinstance(value, str):
        state = _STATE_ALIASES.get(value.strip().lower())
        if state is None:
            raise AnswerError(f"finding {label!r}: unknown state {value[:40]!r}")
        return state
    if isinstance(value, Mapping):
        # crowd-form radio/checkbox groups: {"present": true, "absent": false, "uncertain": false}
        chosen = [k for k, v in value.items() if v is True]
        if not chosen:
            return None
        if len(chosen) > 1:
            raise AnswerError(f"finding {label!r}: several states ticked ({', '.join(sorted(chosen))})")
        return _state(label, chosen[0])
    if value is None:
        return None
    raise AnswerError(f"finding {label!r}: state must be present|absent|uncertain")


def _is_map(value: Any) -> TypeGuard[Mapping[str, Any]]:
    """``isinstance(value, Mapping)``, with the JSON case (a dict) first: the ABC check is slow."""
    return type(value) is dict or isinstance(value, Mapping)


def _finite(c: Any) -> bool:
    return (type(c) is float or type(c) is int) and math.isfinite(c)  # type() excludes bool


def _points(value: Any) -> tuple[tuple[float, float], ...]:
    if type(value) is not list or not value:
        raise AnswerError("ROI points must be a non-empty list of [x, y]")
    out = []
    for point in value:
        if type(point) is not list and _is_map(point):
            point = (point.get("x"), point.get("y"))
        if type(point) not in (list, tuple) or len(point) != 2 or not (_finite(point[0]) and _finite(point[1])):
            raise AnswerError("ROI points must be pairs of finite numbers")
        out.append((float(point[0]), float(point[1])))
    return tuple(out)


_MIN_POINTS = {RoiTool.RECTANGLE: 2, RoiTool.ELLIPSE: 2, RoiTool.POLYGON: 3}
_TOOLS: dict[Any, RoiTool] = {t.value: t for t in RoiTool}


def _roi(value: Any) -> Roi:
    if not _is_map(value):
        raise AnswerError("each ROI must be an object")
    tool = _TOOLS.get(value.get("tool"))
    if tool is None:
        raise AnswerError(f"ROI tool must be one of {', '.join(t.value for t in RoiTool)}")
    points = _points(value.get("points"))
    if len(points) < _MIN_POINTS[tool]:
        raise AnswerError(f"a {tool.value} ROI needs at least {_MIN_POINTS[tool]} points")
    finding = value.get("finding")
    if finding is not None and type(finding) is not str:
        raise AnswerError("ROI finding must be a label name")
    return Roi(tool=tool, points=points, finding=finding)


def _sample_rois(value: Any) -> tuple[Roi, ...]:
    """The reference sample's single ``ROI`` object (cornerstone handles) as a rectangle, when readable."""
    if not _is_map(value):
        return ()
    handles = value.get("handles", value)
    start, end = (handles.get("start"), handles.get("end")) if _is_map(handles) else (None, None)
    if _is_map(start) and _is_map(end):
        try:
            return (Roi(RoiTool.RECTANGLE, _points([start, end])),)
        except AnswerError:
            return ()
    return ()


def parse_worker_answer(content: Any, *, worker_id: str = "",
                        labels: Sequence[str] | AbstractSet[str] | None = None) -> WorkerAnswer:
    """Normalize one worker answer (``annotationData.content`` or a worker-response ``answerContent``).

    Accepts our clean object (``findings``/``rois``/``sopInstanceUid``/``timeSpentSeconds``/``windowLevel``),
    the same wrapped as ``{"answer": "<json>"}``, and the reference sample's
    ``{"disease": {label: bool}, "labels": "<json with label list, imageurl, ROI>"}``. With ``labels``,
    a finding outside the label set is an error (a frozenset of labels is fastest for many answers).
    "No Finding" present together with another present
    finding is an error (the template prevents it; the server checks it).
    """
    if type(content) is str and type(labels) is frozenset:
        quick = _parse_template_text(content, worker_id, labels)
        if quick is not None:
            return quick
    raw = content.decode("utf-8", "replace") if type(content) is bytes else content
    answer = _decode(content, "answer content")
    if _is_map(answer) and "findings" not in answer and "disease" not in answer and "answer" in answer:
        answer = _decode(answer["answer"], "'answer' field")
    if not _is_map(answer):
        raise AnswerError("answer must be a JSON object")
    if SKIP_KEY in answer and "findings" not in answer and "disease" not in answer:
        raise AnswerSkipped(_skip_reason(answer[SKIP_KEY]))
    if "findings" in answer:
        fast = _parse_clean_fast(answer, worker_id, raw, labels) if type(labels) is frozenset else None
        if fast is not None:
            return fast
        parsed = _parse_clean(answer, worker_id, raw)
    elif "disease" in answer or "labels" in answer:
        parsed = _parse_sample(answer, worker_id, raw, labels)
    else:
        raise AnswerError("answer has neither 'findings' nor the reference sample's 'disease'/'labels'")
    _check(parsed, labels)
    return parsed


_PLAIN_FINDINGS: dict[tuple[Any, ...], dict[str, FindingState] | None] = {}
"""Memo of :func:`_plain_findings`: a job's answers repeat a few thousand state combinations."""
_PLAIN_FINDINGS_LIMIT = 8192
"""Entries kept (about 10 MB at 14 labels) before the memo starts over."""
_UNSEEN: dict[str, FindingState] = {}


def _plain_findings(findings_in: dict[str, Any], labels: frozenset[str]) -> dict[str, FindingState] | None:
    """``findings_in`` as states when every label is in ``labels`` and every state is spelled exactly
    and "No Finding" is not present together with another finding; else None. The result is a new dict."""
    key = (labels, tuple(findings_in), tuple(findings_in.values()))
    try:
        known = _PLAIN_FINDINGS.get(key, _UNSEEN)
    except TypeError:  # an unhashable state (a crowd-form object): not plain
        return None
    if known is _UNSEEN:
        known = None
        if findings_in.keys() <= labels:
            try:
                known = {label: _EXACT_STATES[value] for label, value in findings_in.items()}
            except KeyError:  # another spelling, or null
                known = None
            if known is not None and known.get(NO_FINDING) is FindingState.PRESENT and any(
                    state is FindingState.PRESENT and label != NO_FINDING for label, state in known.items()):
                known = None
        if len(_PLAIN_FINDINGS) >= _PLAIN_FINDINGS_LIMIT:
            _PLAIN_FINDINGS.clear()  # a long-lived process moves on to other jobs' combinations
        _PLAIN_FINDINGS[key] = known
    return None if known is None else dict(known)  # a copy: each answer owns its findings


def _plain_points(points_in: Any) -> tuple[tuple[float, float], ...] | None:
    """ROI points when they are a list of [x, y] lists of finite floats, else None."""
    if type(points_in) is not list:
        return None
    if len(points_in) == 2:  # rectangles and ellipses: two corners, unrolled
        p, q = points_in
        if type(p) is list and type(q) is list and len(p) == 2 and len(q) == 2:
            (x0, y0), (x1, y1) = p, q
            if (type(x0) is float and type(y0) is float and type(x1) is float and type(y1) is float
                    and x0 - x0 == 0.0 and y0 - y0 == 0.0 and x1 - x1 == 0.0 and y1 - y1 == 0.0):
                return (x0, y0), (x1, y1)
        return None
    points = []
    for point in points_in:
        if type(point) is not list or len(point) != 2:
            return None
        x, y = point
        # float only (ints are converted by the general path); x - x is 0.0 unless x is inf or nan
        if type(x) is not float or type(y) is not float or x - x != 0.0 or y - y != 0.0:
            return None
        points.append((x, y))
    return tuple(points)


def _parse_clean_fast(answer: Mapping[str, Any], worker_id: str, raw: Any,
                      labels: frozenset[str]) -> WorkerAnswer | None:
    """Our template's answer when it is plainly valid (the bulk of a batch), else None.

    Accepts only what :func:`_parse_clean` + :func:`_check` accept unchanged: exact state names, labels
    in ``labels``, float point coordinates, no "No Finding" conflict. Anything else (including every
    error) returns None so the general path decides and words the reason; the result is equal either way.
    """
    findings_in = answer["findings"]
    if type(findings_in) is not dict:
        return None
    findings = _plain_findings(findings_in, labels)
    if findings is None:
        return None
    rois = _plain_rois(answer.get("rois", []), labels)
    if rois is None:
        return None
    sop = answer.get("sopInstanceUid")
    if sop is not None and type(sop) is not str:
        return None
    spent = answer.get("timeSpentSeconds")
    if spent is not None and not (_finite(spent) and spent >= 0):
        return None
    wl = answer.get("windowLevel")
    return WorkerAnswer(worker_id, findings, rois, sop or None, None if spent is None else float(spent),
                        None if wl is None else dict(wl) if _is_map(wl) else None, raw)


_WS = r"[ \t\n\r]*+"
_TEMPLATE_TEXT = re.compile(
    rf'{_WS}\{{{_WS}"findings"{_WS}:{_WS}(\{{[^}}]*+\}}){_WS},{_WS}"rois"{_WS}:{_WS}(\[.*\]){_WS}'
    rf'(?:,{_WS}"sopInstanceUid"{_WS}:{_WS}"([^"\\\x00-\x1f]*)"{_WS})?'
    rf'(?:,{_WS}"timeSpentSeconds"{_WS}:{_WS}((?:0|[1-9][0-9]{{0,15}})(?:\.[0-9]{{1,17}})?){_WS})?\}}{_WS}', re.DOTALL)
"""Our template's answer text (``JSON.stringify`` or ``json.dumps`` spacing, keys in the template's order).

Only the frame is matched here; the findings object and the ROI list are each decoded by the JSON
parser and must decode alone (a JSON value parses the same alone as inside a document, so a frame
whose pieces all decode is the document's one reading). The SOP UID is matched without escapes, so
its text is its value; the time is a JSON number (no leading zeros) that ``float`` reads as JSON does.
"""
_TEMPLATE_ROIS: dict[tuple[frozenset[str], str], tuple[Roi, ...] | None] = {}
"""Memo of ROI list texts (ROIs are immutable, so answers can share them); bounded like the findings memo."""
_TEMPLATE_FINDINGS: dict[tuple[frozenset[str], str], dict[str, FindingState] | None] = {}


_K = TypeVar("_K")
_V = TypeVar("_V")


def _bounded_memo(cache: dict[_K, _V], key: _K, compute: Callable[[], _V]) -> _V:
    """``cache[key]``, computed on first use; the cache is emptied when it reaches its bound."""
    try:
        return cache[key]
    except KeyError:
        pass
    value = compute()
    if len(cache) >= _PLAIN_FINDINGS_LIMIT:
        cache.clear()
    cache[key] = value
    return value


def _decode_or_none(text: str) -> Any:
    try:
        return fastjson.loads(text)
    except ValueError:
        return None


def _template_findings(text: str, labels: frozenset[str]) -> dict[str, FindingState] | None:
    def compute() -> dict[str, FindingState] | None:
        decoded = _decode_or_none(text)
        return _plain_findings(decoded, labels) if type(decoded) is dict else None

    known = _bounded_memo(_TEMPLATE_FINDINGS, (labels, text), compute)
    return None if known is None else dict(known)  # a copy: each answer owns its findings


def _template_rois(text: str, labels: frozenset[str]) -> tuple[Roi, ...] | None:
    return _bounded_memo(_TEMPLATE_ROIS, (labels, text), lambda: _plain_rois(_decode_or_none(text), labels))


def _parse_template_text(content: str, worker_id: str, labels: frozenset[str]) -> WorkerAnswer | None:
    """Our template's answer straight from its text, without decoding it into objects; else None.

    A batch's answers repeat a few thousand findings combinations and ROI lists, so each distinct text
    is decoded and checked once (as :func:`_parse_clean_fast` would) and memoized. Anything else
    (another shape, an escape in the SOP UID, a window level, an error) returns None: the decoding
    path decides. The result equals that path's.
    """
    match = _TEMPLATE_TEXT.fullmatch(content)
    if match is None:
        return None
    findings_text, rois_text, sop, spent = match.groups()
    findings = _template_findings(findings_text, labels)
    if findings is None:
        return None
    rois = () if rois_text == "[]" else _template_rois(rois_text, labels)
    if rois is None:
        return None
    return WorkerAnswer(worker_id, findings, rois, sop or None, None if spent is None else float(spent), None,
                        content)


def _plain_rois(rois_in: Any, labels: frozenset[str]) -> tuple[Roi, ...] | None:
    """ROIs when every one is plainly valid (see :func:`_parse_clean_fast`), else None."""
    if type(rois_in) is not list:
        return None
    rois: list[Roi] = []
    for item in rois_in:
        if type(item) is not dict:
            return None
        tool = _TOOLS.get(item.get("tool"))
        finding = item.get("finding")
        points = _plain_points(item.get("points"))
        if (tool is None or points is None or len(points) < _MIN_POINTS[tool]
                or (finding is not None and (type(finding) is not str or finding not in labels))):
            return None
        rois.append(Roi(tool, points, finding))
    return tuple(rois)


def _parse_clean(answer: Mapping[str, Any], worker_id: str, raw: Any) -> WorkerAnswer:
    findings_in = answer.get("findings")
    if not _is_map(findings_in):
        raise AnswerError("'findings' must be an object of label: state")
    findings: dict[str, FindingState] = {}
    exact = _EXACT_STATES
    for label, value in findings_in.items():
        state = exact.get(value) if type(value) is str else None
        if state is None:
            state = _state(label, value)
            if state is None:
                continue
        findings[label] = state
    rois_in = answer.get("rois", [])
    if type(rois_in) is not list:
        raise AnswerError("'rois' must be a list")
    sop = answer.get("sopInstanceUid")
    if sop is not None and type(sop) is not str:
        raise AnswerError("'sopInstanceUid' must be a string")
    spent = answer.get("timeSpentSeconds")
    if spent is not None and not (_finite(spent) and spent >= 0):
        raise AnswerError("'timeSpentSeconds' must be a non-negative number")
    wl = answer.get("windowLevel")
    return WorkerAnswer(worker_id, findings, tuple([_roi(r) for r in rois_in]) if rois_in else (),
                        sop or None, None if spent is None else float(spent),
                        dict(wl) if _is_map(wl) else None, raw)


def _parse_sample(answer: Mapping[str, Any], worker_id: str, raw: Any,
                  labels: Sequence[str] | AbstractSet[str] | None) -> WorkerAnswer:
    findings: dict[str, FindingState] = {}
    disease = answer.get("disease")
    if disease is not None:
        if not _is_map(disease):
            raise AnswerError("'disease' must be an object of label: true|false")
        for label, value in disease.items():
            state = _BOOL_STATES[value] if type(value) is bool else _state(str(label), value)
            if state is not None:
                findings[str(label)] = state
    inner = _decode(answer["labels"], "'labels' field") if "labels" in answer else {}
    rois: tuple[Roi, ...] = ()
    if _is_map(inner):
        ticked = inner.get("label", [])
        if isinstance(ticked, str):
            ticked = [ticked]
        if not isinstance(ticked, list) or not all(isinstance(t, str) for t in ticked):
            raise AnswerError("'labels.label' must be a list of label names")
        if disease is None:
            # Only the ticked list: ticked = present, every other label of the job = absent.
            for label in labels or ticked:
                findings[label] = FindingState.ABSENT
        for label in ticked:
            findings[label] = FindingState.PRESENT
        rois = _sample_rois(inner.get("ROI"))
    elif inner not in (None, ""):
        raise AnswerError("'labels' must be an object (or a JSON string of one)")
    return WorkerAnswer(worker_id=worker_id, findings=findings, rois=rois, raw=raw, shape="reference-sample")


def _check(answer: WorkerAnswer, labels: Sequence[str] | AbstractSet[str] | None) -> None:
    if labels is not None:
        allowed = labels if type(labels) is frozenset or isinstance(labels, AbstractSet) else set(labels)
        unknown = [label for label in answer.findings if label not in allowed]
        unknown += [r.finding for r in answer.rois if r.finding is not None and r.finding not in allowed]
        if unknown:
            raise AnswerError(f"unknown label {unknown[0][:64]!r}")
    if answer.findings.get(NO_FINDING) is FindingState.PRESENT:
        others = [k for k, v in answer.findings.items() if k != NO_FINDING and v is FindingState.PRESENT]
        if others:
            raise AnswerError(f"'{NO_FINDING}' is present together with {others[0]!r}")


# --------------------------------------------------------------------------------------------- consolidated


_STATE_TEXT: dict[FindingState, str] = {s: s.value for s in FindingState}


class FindingConsensus(NamedTuple):
    """The consolidated value of one finding on one object (a tuple: 100,000s are built per batch)."""

    value: FindingState
    confidence: float
    """Posterior probability of ``value`` (Dawid–Skene) or the winning vote share (majority), 4 places."""
    agreement: float
    """Fraction of the readers who answered this finding and agree with ``value``, 4 places."""
    answers: int
    """How many readers answered this finding (present/absent/uncertain)."""

    def to_json(self) -> dict[str, Any]:
        return {"value": _STATE_TEXT[self.value], "confidence": self.confidence, "agreement": self.agreement,
                "answers": self.answers}


class RejectedAnswer(NamedTuple):
    """A worker answer excluded from consolidation, kept with its raw text (every raw answer is kept)."""

    worker_id: str
    reason: str
    raw: Any = None
    """The answer exactly as received (None when there was none to keep, e.g. no ``annotationData``)."""

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"workerId": self.worker_id, "reason": self.reason}
        if self.raw is not None:
            out["answer"] = self.raw
        return out


@dataclass(frozen=True)
class ConsolidatedLabel:
    """The consolidated content of one data object: the value of the label attribute."""

    findings: dict[str, FindingConsensus]
    method: str
    workers: tuple[WorkerAnswer, ...] = ()
    rejected: tuple[RejectedAnswer | tuple[str, str], ...] = ()
    """Answers excluded as malformed: (worker id, reason[, raw answer as received])."""
    flags: tuple[Flag, ...] = ()
    not_labeled: tuple[RejectedAnswer, ...] = ()
    """Workers who said they could not label the object (:class:`AnswerSkipped`): no answer from them."""

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"findings": {k: v.to_json() for k, v in self.findings.items()},
                               "method": self.method,
                               "workers": [{"workerId": w.worker_id, "answer": w.raw} for w in self.workers]}
        if self.rejected:
            out["rejected"] = [RejectedAnswer(*r).to_json() for r in self.rejected]
        if self.not_labeled:
            out["notLabeledBy"] = [r.to_json() for r in self.not_labeled]
        if self.flags:
            out["flags"] = [f.value for f in self.flags]
        return out


# --------------------------------------------------------------------------------------------- output


def is_custom_type(value: Any) -> bool:
    """Both spellings of the custom task type (``groundtruth/custom``, ``groundTruth/custom``)."""
    return isinstance(value, str) and value.lower() == CUSTOM_TYPE


def output_metadata(job_name: str, *, creation_date: datetime | None = None,
                    extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The ``<attr>-metadata`` object, hyphenated lower-case as Ground Truth writes it."""
    when = (creation_date or datetime.now(UTC)).astimezone(UTC).replace(tzinfo=None)
    meta: dict[str, Any] = {"type": CUSTOM_TYPE, "job-name": job_name, "human-annotated": "yes",
                            "creation-date": when.strftime(CREATION_DATE_FORMAT)}
    meta.update(extra or {})
    return meta


def output_manifest_line(data_object: ManifestLine | Mapping[str, Any], attribute: str,
                         content: ConsolidatedLabel | Mapping[str, Any], *, job_name: str,
                         creation_date: datetime | None = None,
                         metadata: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """One output manifest object: the input keys unchanged, then ``<attr>`` and ``<attr>-metadata``."""
    if not attribute or attribute.endswith(METADATA_SUFFIX):
        raise ManifestError(f"invalid label attribute name {attribute!r}")
    base = data_object.data if isinstance(data_object, ManifestLine) else data_object
    line = {k: v for k, v in base.items() if k not in (attribute, attribute + METADATA_SUFFIX)}
    line[attribute] = content.to_json() if isinstance(content, ConsolidatedLabel) else dict(content)
    line[attribute + METADATA_SUFFIX] = output_metadata(job_name, creation_date=creation_date, extra=metadata)
    return line


@dataclass(frozen=True)
class LabeledObject:
    """One labelled image from an output manifest, in the form training consumes."""

    source: str
    """``source`` (Orthanc ID) or ``source-ref`` (object URI)."""
    labels: tuple[str, ...]
    values: dict[str, float | None]
    """Per label: 1.0 present, 0.0 absent, None uncertain or unanswered."""
    sop_uid: str | None = None
    study_uid: str | None = None
    series_uid: str | None = None
    attribute: str = ""
    job_name: str | None = None
    confidence: dict[str, float] = field(default_factory=dict)
    """Per label, the consolidation confidence where the manifest has one."""
    worker_response_ref: str | None = None
    """Set when the label attribute was empty and the answers live in a worker-response file."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Every other key of the line (input keys copied through)."""

    @property
    def is_source_ref(self) -> bool:
        return "://" in self.source


_VALUES = {FindingState.PRESENT: 1.0, FindingState.ABSENT: 0.0, FindingState.UNCERTAIN: None}


def label_attributes(line: Mapping[str, Any]) -> list[str]:
    """The Ground Truth custom label attributes of a manifest line (oldest first by ``creation-date``)."""
    attrs = []
    for key, value in line.items():
        if key.endswith(METADATA_SUFFIX) and isinstance(value, Mapping) and is_custom_type(value.get("type")):
            attr = key[: -len(METADATA_SUFFIX)]
            if attr in line:
                attrs.append(attr)
    return sorted(attrs, key=lambda a: str(line[a + METADATA_SUFFIX].get("creation-date", "")))


def _votes(answers: Iterable[WorkerAnswer], labels: Sequence[str]) -> dict[str, float | None]:
    """Per-label majority of raw answers (ties and uncertain-only → None): a reader's fallback only."""
    present = dict.fromkeys(labels, 0)
    absent = dict.fromkeys(labels, 0)
    for answer in answers:
        for label, state in answer.findings.items():
            if label in present:
                if state is FindingState.PRESENT:
                    present[label] += 1
                elif state is FindingState.ABSENT:
                    absent[label] += 1
    return {label: 1.0 if present[label] > absent[label] else 0.0 if absent[label] > present[label] else None
            for label in labels}


def _answers_from(items: Any, labels: Sequence[str] | None) -> list[WorkerAnswer]:
    out = []
    for item in items if isinstance(items, list) else []:
        if not isinstance(item, Mapping):
            continue
        worker = str(item.get("workerId", ""))
        data = item.get("annotationData", item.get("answerContent", item.get("answer", item)))
        content = data.get("content", data) if isinstance(data, Mapping) else data
        try:
            out.append(parse_worker_answer(content, worker_id=worker, labels=labels))
        except AnswerError as exc:
            logger.info("skipping an unreadable worker answer in an output manifest", extra={"reason": exc.reason})
    return out


def _content_values(content: Any, labels: Sequence[str] | None) -> tuple[dict[str, float | None], dict[str, float]]:
    """Values and confidences from a label attribute's content, whichever shape it has."""
    if not isinstance(content, Mapping) or not content:
        return {}, {}
    findings = content.get("findings")
    if isinstance(findings, Mapping) and findings and all(isinstance(v, Mapping) for v in findings.values()):
        values: dict[str, float | None] = {}
        confidence: dict[str, float] = {}
        for label, item in findings.items():
            try:
                state = FindingState(str(item.get("value")))
            except ValueError:
                values[label] = None
                continue
            values[label] = _VALUES[state]
            if isinstance(item.get("confidence"), int | float):
                confidence[label] = float(item["confidence"])
        return values, confidence
    for key in ("annotationsFromAllWorkers", "annotations", "answers"):
        if key in content:
            answers = _answers_from(content[key], labels)
            known = labels or sorted({k for a in answers for k in a.findings})
            return _votes(answers, known), {}
    try:
        single = parse_worker_answer(content, labels=labels)
    except AnswerError:
        return {}, {}
    known = labels or list(single.findings)
    return _votes([single], known), {}


def answer_from_content(content: Any, labels: Sequence[str] | None = None) -> dict[str, Any] | None:
    """A label attribute's content as one clean answer (``{"findings": {label: state}, "rois": [...]}``).

    Used to show a previous job's label in a review/adjustment task. Consolidated content gives its
    consensus states and the ROIs drawn for findings that ended up present; raw answers (one, or
    ``annotationsFromAllWorkers``) give their majority (ties left out) and all their ROIs.
    None when nothing readable is there.
    """
    if not _is_map(content) or not content:
        return None
    findings_in = content.get("findings")
    if _is_map(findings_in) and findings_in and all(_is_map(v) for v in findings_in.values()):
        findings = {label: str(item.get("value")) for label, item in findings_in.items()
                    if str(item.get("value")) in _EXACT_STATES}
        answers = _answers_from([w for w in content.get("workers", []) if _is_map(w)], None)
        rois = [r.to_json() for a in answers for r in a.rois
                if r.finding is None or findings.get(r.finding) == "present"]
        return {"findings": findings, "rois": rois}
    answers = []
    for key in ("annotationsFromAllWorkers", "annotations", "answers"):
        if key in content:
            answers = _answers_from(content[key], labels)
            break
    else:
        try:
            answers = [parse_worker_answer(content, labels=labels)]
        except AnswerError:
            return None
    names = labels or sorted({k for a in answers for k in a.findings})
    votes = _votes(answers, names)
    states = {label: "present" if v == 1.0 else "absent" for label, v in votes.items() if v is not None}
    return {"findings": states, "rois": [r.to_json() for a in answers for r in a.rois]}


def labeled_object(line: Mapping[str, Any], *, attribute: str | None = None, labels: Sequence[str] | None = None,
                   fetch: Callable[[str], bytes] | None = None) -> LabeledObject:
    """Read one output manifest object (see :func:`read_output_manifest`)."""
    base = parse_manifest_line(line, where="output manifest line")
    attrs = label_attributes(line)
    if attribute is None:
        if not attrs:
            raise ManifestError("output manifest line has no Ground Truth custom label attribute")
        # A chained job's line carries every earlier job's attribute: take the newest.
        attribute = attrs[-1]
    elif attribute not in line:
        raise ManifestError(f"output manifest line has no label attribute {attribute!r}")
    meta = line.get(attribute + METADATA_SUFFIX)
    meta = meta if isinstance(meta, Mapping) else {}
    label_set = base.labels or (tuple(labels) if labels else None)
    values, confidence = _content_values(line[attribute], label_set)
    ref = meta.get("worker-response-ref", meta.get("worker_response_ref"))
    if not values and isinstance(ref, str) and fetch is not None:
        try:
            response = json.loads(fetch(ref))
        except ValueError as exc:
            raise ManifestError(f"worker response {ref} is not valid JSON") from exc
        answers = _answers_from(response.get("answers") if isinstance(response, Mapping) else None, label_set)
        values = _votes(answers, label_set or sorted({k for a in answers for k in a.findings}))
    names = label_set or tuple(values)
    skip = {SOURCE_KEY, SOURCE_REF_KEY, LABELS_KEY, attribute, attribute + METADATA_SUFFIX}
    return LabeledObject(
        source=base.ref, labels=tuple(names), values={n: values.get(n) for n in names},
        sop_uid=base.sop_uid, study_uid=base.study_uid, series_uid=base.series_uid, attribute=attribute,
        job_name=meta.get("job-name", meta.get("job_name")), confidence=confidence,
        worker_response_ref=ref if isinstance(ref, str) else None,
        extra={k: v for k, v in line.items() if k not in skip})


def read_output_manifest(lines: Iterable[str | bytes], *, attribute: str | None = None,
                         labels: Sequence[str] | None = None,
                         fetch: Callable[[str], bytes] | None = None) -> Iterator[LabeledObject]:
    """Read a Ground Truth output manifest (ours or AWS's) as :class:`LabeledObject` rows.

    ``attribute`` picks the label attribute (default: the line's Ground Truth custom attribute, the
    newest by ``creation-date`` in chained jobs). ``labels`` is the label set when lines carry none.
    Consolidated content is read as is; raw per-worker answers (``annotationsFromAllWorkers``, the
    reference sample's pass-through output) are reduced by a per-label majority vote with ties as
    None; an empty attribute with a ``worker-response-ref`` is resolved through ``fetch(uri)`` if given.
    """
    for number, text in enumerate(lines, 1):
        line = text.decode("utf-8") if isinstance(text, bytes) else text
        if not line.strip():
            continue
        try:
            data = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ManifestError(f"output manifest line {number}: not valid JSON ({exc.msg})") from None
        if not isinstance(data, Mapping):
            raise ManifestError(f"output manifest line {number}: expected a JSON object")
        try:
            yield labeled_object(data, attribute=attribute, labels=labels, fetch=fetch)
        except ManifestError as exc:
            raise ManifestError(f"output manifest line {number}: {exc.description}") from None
