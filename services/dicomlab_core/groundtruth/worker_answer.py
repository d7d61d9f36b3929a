"""The worker answer: what a reader submits for one data object, in every shape we accept.

Our template's clean JSON (optionally wrapped as ``{"answer": "<json>"}``) and the reference sample's
three-level encoded shape: :func:`parse_worker_answer` gives one typed :class:`WorkerAnswer` or raises
:class:`AnswerError` with the reason. :meth:`WorkerAnswer.clean_json` is the one serializer of the
stored (clean) form; :func:`parse_rois` reads the ROIs of a stored answer without re-parsing the rest.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from enum import StrEnum
from typing import Any, NamedTuple, TypeGuard, TypeVar

from dicomlab_core import fastjson
from dicomlab_core.labels import NO_FINDING, FindingState

logger = logging.getLogger(__name__)


class RoiTool(StrEnum):
    """The ROI shapes the worker template draws."""

    RECTANGLE = "rectangle"
    ELLIPSE = "ellipse"
    POLYGON = "polygon"


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

    def clean_json(self, labels: Sequence[str] | None = None) -> dict[str, Any]:
        """The answer in our clean schema, the form the self-hosted service stores (the one serializer).

        With ``labels``, ``findings`` has every one of them (unlisted = absent), in that order; without,
        the findings the reader stated.
        """
        if labels is None:
            findings = {k: v.value for k, v in self.findings.items()}
        else:
            findings = {label: self.findings.get(label, FindingState.ABSENT).value for label in labels}
        out: dict[str, Any] = {"findings": findings, "rois": [r.to_json() for r in self.rois]}
        if self.sop_uid:
            out["sopInstanceUid"] = self.sop_uid
        if self.time_spent is not None:
            out["timeSpentSeconds"] = self.time_spent
        if self.window_level is not None:
            out["windowLevel"] = self.window_level
        return out

    def to_json(self) -> dict[str, Any]:
        """The normalized answer plus its raw form, as kept in the consolidated content."""
        return {"workerId": self.worker_id, **self.clean_json(), "raw": self.raw}


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


def parse_rois(rois: Any, labels: AbstractSet[str]) -> tuple[Roi, ...]:
    """The ROIs of a stored answer's ``rois`` list (our clean schema), checked against ``labels``.

    Raises :class:`AnswerError` when one is malformed; the findings are not read.
    """
    return parse_worker_answer({"findings": {}, "rois": rois or []}, labels=labels).rois
