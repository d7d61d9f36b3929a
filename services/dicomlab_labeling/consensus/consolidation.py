"""Consolidation: several readers' answers per image → one label per finding, plus job agreement.

Used by the Ground Truth post-annotation callback and by the self-hosted labeling export. Input is
one :class:`ObjectAnswers` per data object (answers already parsed into
:class:`~dicomlab_core.groundtruth.WorkerAnswer`; :func:`collect` parses raw ones and records the
malformed as :class:`Rejection`). Output is a :class:`ConsolidatedLabel` per object, in input order,
and a :class:`JobReport`.

Per finding and object:

- "uncertain" answers are abstentions for the present/absent decision; if they are a strict majority of
  the finding's answers the result is uncertain;
- **majority vote** of present vs absent, a tie settled by the tie rule (absent/present/uncertain);
  confidence = the winning share of present/absent votes;
- **Dawid–Skene** (:mod:`dawid_skene`), fitted per finding on every object's answers, decides objects
  with ≥ ``min_answers_for_model`` valid answers in ``auto`` mode, provided the batch has at least
  ``min_objects_for_model`` of them (a handful of objects cannot tell a reader's reliability: small
  batches use majority vote); in ``dawid-skene`` mode it decides every answered object; confidence =
  the posterior of the chosen value (exactly 0.5 → tie rule);
- agreement = share of the readers who answered the finding and gave the consolidated value;
- no valid answer → every finding uncertain with confidence 0, flagged ``no-valid-answer``;
- "No Finding" present together with another present finding in the consensus → No Finding absent,
  flagged ``no-finding-conflict`` (single answers like that are rejected as malformed earlier).
"""

from __future__ import annotations

import logging
import operator
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
from numpy.typing import NDArray

from dicomlab_core.groundtruth import (
    AnswerError,
    AnswerSkipped,
    ConsolidatedLabel,
    FindingConsensus,
    Flag,
    RejectedAnswer,
    WorkerAnswer,
    parse_worker_answer,
)
from dicomlab_core.labels import NO_FINDING, FindingState
from dicomlab_labeling.config import ConsolidationMethod, ConsolidationSettings, TieRule
from dicomlab_labeling.consensus import dawid_skene
from dicomlab_labeling.consensus.agreement import fleiss_kappa, krippendorff_alpha_nominal

logger = logging.getLogger(__name__)

ABSENT, PRESENT, UNCERTAIN, MISSING = 0, 1, 2, -1
"""State codes in the answer matrix (one row per answer, one column per label)."""
_CODES = {FindingState.ABSENT: ABSENT, FindingState.PRESENT: PRESENT, FindingState.UNCERTAIN: UNCERTAIN}
_STATES = (FindingState.ABSENT, FindingState.PRESENT, FindingState.UNCERTAIN)
P, A, U = FindingState.PRESENT, FindingState.ABSENT, FindingState.UNCERTAIN
_TIE = {TieRule.ABSENT: ABSENT, TieRule.PRESENT: PRESENT, TieRule.UNCERTAIN: UNCERTAIN}


@dataclass(frozen=True)
class Rejection:
    """A malformed answer, excluded from consolidation and reported."""

    object_id: str
    worker_id: str
    reason: str
    raw: Any = field(default=None, repr=False, compare=False)
    """The answer exactly as received, kept in the consolidated content (never in the job report or logs)."""

    def to_json(self) -> dict[str, str]:
        """The job-report form: no raw answer (reports are logged; answers stay in the output manifest)."""
        return {"datasetObjectId": self.object_id, "workerId": self.worker_id, "reason": self.reason}

    def consolidated_json(self) -> dict[str, Any]:
        """The form kept in the consolidated content: worker, reason and the raw answer."""
        return RejectedAnswer(self.worker_id, self.reason, self.raw).to_json()


@dataclass
class ObjectAnswers:
    """The valid answers and the rejections of one data object."""

    object_id: str
    answers: list[WorkerAnswer] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)
    not_labeled: list[Rejection] = field(default_factory=list)
    """Workers who could not label the object (an explicit skip): neither an answer nor malformed."""


def _raw(content: Any) -> Any:
    """An answer as kept for audit: bytes become text (JSON has no bytes), anything else is unchanged."""
    return content.decode("utf-8", "replace") if isinstance(content, bytes | bytearray) else content


def collect(object_id: str, raw: Iterable[tuple[str, Any]], labels: Sequence[str] | frozenset[str]) -> ObjectAnswers:
    """Parse ``(worker id, answer content)`` pairs; malformed ones (and repeats of a worker) are rejected,
    explicit skips ("could not load") are kept apart as the worker not having labeled the object."""
    answers: list[WorkerAnswer] = []
    rejected: list[Rejection] = []
    not_labeled: list[Rejection] = []
    seen: set[str] = set()
    allowed = labels if type(labels) is frozenset else frozenset(labels)
    for worker_id, content in raw:
        if worker_id in seen:
            rejected.append(Rejection(object_id, worker_id, "a second answer from the same worker",
                                      _raw(content)))
            continue
        try:
            answer = parse_worker_answer(content, worker_id=worker_id, labels=allowed)
        except AnswerSkipped as exc:
            not_labeled.append(Rejection(object_id, worker_id, exc.reason, _raw(content)))
            continue
        except AnswerError as exc:
            rejected.append(Rejection(object_id, worker_id, exc.reason, _raw(content)))
            continue
        seen.add(worker_id)
        answers.append(answer)
    return ObjectAnswers(object_id, answers, rejected, not_labeled)


@dataclass(frozen=True)
class FindingAgreement:
    """Agreement on one finding over the job."""

    fleiss_kappa: float | None
    """Fleiss' kappa over present/absent/uncertain; None when readers per object vary or it is undefined."""
    krippendorff_alpha: float | None
    """Krippendorff's alpha (nominal); handles varying readers; None when undefined."""
    objects: int
    """Objects with at least one answer on this finding."""
    prevalence: float | None
    """Share of decided objects consolidated as present."""

    def to_json(self) -> dict[str, Any]:
        def r(v: float | None) -> float | None:
            return None if v is None else round(v, 4)

        return {"fleissKappa": r(self.fleiss_kappa), "krippendorffAlpha": r(self.krippendorff_alpha),
                "objects": self.objects, "prevalence": r(self.prevalence)}


@dataclass(frozen=True)
class WorkerStats:
    """One reader over the job."""

    objects: int
    """Objects with a valid answer from this reader."""
    agreement: float | None
    """Share of the reader's answered findings equal to the consensus."""
    reliability: float | None
    """Dawid–Skene balanced accuracy, averaged over findings (weighted by answers); None without the model."""
    rejected: int
    """Answers of this reader excluded as malformed."""
    mean_time_spent: float | None
    """Mean seconds per image, where the template reported it."""

    def to_json(self) -> dict[str, Any]:
        def r(v: float | None) -> float | None:
            return None if v is None else round(v, 4)

        return {"objects": self.objects, "agreement": r(self.agreement), "reliability": r(self.reliability),
                "rejected": self.rejected, "meanTimeSpentSeconds": r(self.mean_time_spent)}


@dataclass(frozen=True)
class JobReport:
    """Job-level statistics of one consolidation run."""

    findings: dict[str, FindingAgreement]
    workers: dict[str, WorkerStats]
    rejected: tuple[Rejection, ...]
    objects: int
    flagged: dict[str, int]
    """How many objects carry each :class:`~dicomlab_core.groundtruth.Flag`."""

    def to_json(self) -> dict[str, Any]:
        return {"objects": self.objects, "findings": {k: v.to_json() for k, v in self.findings.items()},
                "workers": {k: v.to_json() for k, v in self.workers.items()},
                "rejected": [r.to_json() for r in self.rejected], "flagged": self.flagged}


@dataclass(frozen=True)
class _Columns:
    """Per-object results as plain lists (row i = object i), ready for JSON without extra objects."""

    states: list[list[FindingState]]
    confidence: list[list[float]]
    agreement: list[list[float]]
    answers: list[list[int]]
    methods: list[str]
    flags: list[tuple[Flag, ...]]


@dataclass(frozen=True)
class ConsolidationResult:
    """Consolidated labels (in input order) and the job report.

    ``labels`` (typed :class:`ConsolidatedLabel` objects) is built on first use; :meth:`contents` yields
    the same objects' JSON directly, which is what the callback response needs for 100,000s of objects.
    """

    report: JobReport
    items: Sequence[ObjectAnswers]
    label_names: tuple[str, ...]
    columns: _Columns = field(repr=False)

    @cached_property
    def labels(self) -> list[ConsolidatedLabel]:
        c = self.columns
        make = FindingConsensus._make
        return [
            ConsolidatedLabel(
                findings=dict(zip(self.label_names, map(make, zip(c.states[i], c.confidence[i], c.agreement[i],
                                                                  c.answers[i], strict=True)), strict=True)),
                method=c.methods[i], workers=tuple(item.answers),
                rejected=tuple(RejectedAnswer(r.worker_id, r.reason, r.raw) for r in item.rejected),
                flags=c.flags[i],
                not_labeled=tuple(RejectedAnswer(r.worker_id, r.reason, r.raw) for r in item.not_labeled))
            for i, item in enumerate(self.items)]

    def contents(self) -> Iterator[dict[str, Any]]:
        """Each object's consolidated content as JSON, equal to ``labels[i].to_json()``."""
        c = self.columns
        names = self.label_names
        text = {s: s.value for s in FindingState}
        for item, states, confidence, agreement, answers, method, flags in zip(
                self.items, c.states, c.confidence, c.agreement, c.answers, c.methods, c.flags, strict=True):
            findings = {name: {"value": text[v], "confidence": conf, "agreement": agree, "answers": n}
                        for name, v, conf, agree, n in zip(names, states, confidence, agreement, answers, strict=True)}
            out: dict[str, Any] = {"findings": findings, "method": method,
                                   "workers": [{"workerId": w.worker_id, "answer": w.raw} for w in item.answers]}
            if item.rejected:
                out["rejected"] = [r.consolidated_json() for r in item.rejected]
            if item.not_labeled:
                out["notLabeledBy"] = [r.consolidated_json() for r in item.not_labeled]
            if flags:
                out["flags"] = [f.value for f in flags]
            yield out


@dataclass(frozen=True)
class _Matrix:
    """Every valid answer as a row: its object, its reader, and a state code per label."""

    objects: NDArray[np.intp]
    readers: NDArray[np.intp]
    states: NDArray[np.int8]
    worker_ids: list[str]
    time_spent: NDArray[np.float64]
    """Seconds per answer, NaN where the template did not report it."""


def _matrix(items: Sequence[ObjectAnswers], labels: Sequence[str]) -> _Matrix:
    reader_index: dict[str, int] = {}
    objects: list[int] = []
    readers: list[int] = []
    flat: list[int] = []  # row after row: one flat list and one conversion, not a list per answer
    spent: list[float | None] = []
    code = {None: MISSING, P: PRESENT, A: ABSENT, U: UNCERTAIN}.__getitem__
    n_labels = len(labels)
    every_label = operator.itemgetter(*labels) if n_labels > 1 else None
    row_codes: dict[tuple[FindingState, ...], tuple[int, ...]] = {}  # a batch repeats a few thousand rows
    for i, item in enumerate(items):
        for answer in item.answers:
            objects.append(i)
            readers.append(reader_index.setdefault(answer.worker_id, len(reader_index)))
            # findings outside the label set are ignored (answers are validated against it when parsed)
            findings = answer.findings
            if every_label is not None and len(findings) == n_labels:
                try:  # the usual answer states every label: one C call, and its codes are memoized
                    row = every_label(findings)
                except KeyError:
                    flat.extend(map(code, map(findings.get, labels)))
                else:
                    codes = row_codes.get(row)
                    if codes is None:
                        codes = row_codes[row] = tuple(map(code, row))
                    flat.extend(codes)
            else:
                flat.extend(map(code, map(findings.get, labels)))
            spent.append(answer.time_spent)
    states = np.array(flat, dtype=np.int8).reshape(len(objects), len(labels))
    return _Matrix(np.asarray(objects, dtype=np.intp), np.asarray(readers, dtype=np.intp), states,
                   list(reader_index), np.array(spent, dtype=np.float64))


def consolidate(items: Sequence[ObjectAnswers], labels: Sequence[str],
                settings: ConsolidationSettings | None = None,
                reader_priors: Mapping[str, Mapping[str, Sequence[Sequence[float]]]] | None = None
                ) -> ConsolidationResult:
    """Consolidate every object of a job/batch (see the module docstring for the rules).

    ``reader_priors`` (``{label: {reader: [[absent→absent, absent→present], [present→absent,
    present→present]]}}``, counts) are Dawid–Skene pseudo-counts per reader, e.g. from gold images.
    """
    settings = settings or ConsolidationSettings()
    labels = list(labels)
    n, n_labels = len(items), len(labels)
    m = _matrix(items, labels)
    n_readers = len(m.worker_ids)
    # counts[object, label, state] for present/absent/uncertain.
    answered = m.states >= 0
    flat = (m.objects[:, None] * n_labels + np.arange(n_labels)[None, :]) * 3 + m.states
    counts = np.bincount(flat[answered], minlength=n * n_labels * 3).reshape(n, n_labels, 3)
    n_answers = np.bincount(m.objects, minlength=n)
    tie_code = _TIE[settings.tie_rule]

    value = np.full((n, n_labels), UNCERTAIN, dtype=np.int8)
    confidence = np.zeros((n, n_labels))
    tied = np.zeros((n, n_labels), dtype=bool)
    uses_model = np.zeros(n, dtype=bool)
    if settings.method is ConsolidationMethod.DAWID_SKENE:
        uses_model = n_answers >= 1
    elif settings.method is ConsolidationMethod.AUTO:
        uses_model = n_answers >= settings.min_answers_for_model
        if int(uses_model.sum()) < settings.min_objects_for_model:
            uses_model[:] = False  # too little data to estimate each reader's confusion matrix
    reliability_sum = np.zeros(n_readers)
    reliability_weight = np.zeros(n_readers)

    for j in range(n_labels):
        absent, present, unsure = counts[:, j, ABSENT], counts[:, j, PRESENT], counts[:, j, UNCERTAIN]
        decided = absent + present
        share = np.divide(present, decided, out=np.full(n, 0.5), where=decided > 0)
        v = np.where(share > 0.5, PRESENT, np.where(share < 0.5, ABSENT, tie_code)).astype(np.int8)
        conf = np.maximum(share, 1 - share)
        t = (decided > 0) & (share == 0.5)
        if uses_model.any():
            binary = (m.states[:, j] == ABSENT) | (m.states[:, j] == PRESENT)
            if binary.any():
                model = dawid_skene.fit(m.objects[binary], m.readers[binary], m.states[binary, j], n_objects=n,
                                        n_readers=n_readers, max_iterations=settings.max_iterations,
                                        tolerance=settings.tolerance, max_fit_objects=settings.model_fit_objects,
                                        prior_counts=_prior_counts(reader_priors, labels[j], m.worker_ids))
                post = model.posterior
                dv = np.where(post > 0.5, PRESENT, np.where(post < 0.5, ABSENT, tie_code)).astype(np.int8)
                use = uses_model & (decided > 0)
                v = np.where(use, dv, v)
                conf = np.where(use, np.maximum(post, 1 - post), conf)
                t = np.where(use, post == 0.5, t)
                per_reader = np.bincount(m.readers[binary], minlength=n_readers)
                reliability_sum += model.balanced_accuracy * per_reader
                reliability_weight += per_reader
        # Uncertain as a strict majority of the finding's answers, or nothing decided → uncertain.
        majority_unsure = unsure > decided
        v = np.where(majority_unsure | (decided == 0), UNCERTAIN, v)
        total = decided + unsure
        conf = np.where(decided == 0, np.divide(unsure, total, out=np.zeros(n), where=total > 0), conf)
        conf = np.where(majority_unsure & (decided > 0), unsure / np.maximum(total, 1), conf)
        value[:, j] = v
        confidence[:, j] = conf
        tied[:, j] = t & ~majority_unsure

    conflict = np.zeros(n, dtype=bool)
    if NO_FINDING in labels:
        nf = labels.index(NO_FINDING)
        others = np.delete(value, nf, axis=1)
        conflict = (value[:, nf] == PRESENT) & (others == PRESENT).any(axis=1)
        value[conflict, nf] = ABSENT

    total_answers = counts.sum(axis=2)
    agree = np.take_along_axis(counts, value[:, :, None].astype(np.intp), axis=2)[:, :, 0]
    agreement = np.divide(agree, total_answers, out=np.zeros((n, n_labels)), where=total_answers > 0)

    columns = _columns(items, value, confidence, agreement, total_answers, tied, conflict, uses_model)
    reliability = np.divide(reliability_sum, reliability_weight, out=np.full(n_readers, np.nan),
                            where=reliability_weight > 0)
    report = _report(items, labels, m, counts, value, reliability, columns.flags)
    return ConsolidationResult(report, items, tuple(labels), columns)


def _prior_counts(priors: Mapping[str, Mapping[str, Sequence[Sequence[float]]]] | None, label: str,
                  worker_ids: list[str]) -> NDArray[np.float64] | None:
    """The (readers, 2, 2) pseudo-counts of ``label`` in the matrix's reader order (None when there are none)."""
    given = (priors or {}).get(label)
    if not given:
        return None
    counts = np.zeros((len(worker_ids), 2, 2))
    for w, worker in enumerate(worker_ids):
        if worker in given:
            counts[w] = np.asarray(given[worker], dtype=np.float64).reshape(2, 2)
    return counts


def _columns(items: Sequence[ObjectAnswers], value: NDArray[np.int8], confidence: NDArray[np.float64],
             agreement: NDArray[np.float64], total: NDArray[np.int64], tied: NDArray[np.bool_],
             conflict: NDArray[np.bool_], uses_model: NDArray[np.bool_]) -> _Columns:
    tied_any: list[bool] = np.any(tied, axis=1).tolist()
    conflict_l: list[bool] = conflict.tolist()
    model_l: list[bool] = uses_model.tolist()
    methods: list[str] = []
    all_flags: list[tuple[Flag, ...]] = []
    for i, item in enumerate(items):
        flags: list[Flag] = []
        if not item.answers:
            flags.append(Flag.NO_VALID_ANSWER)
            methods.append("none")
        else:
            if len(item.answers) == 1:
                flags.append(Flag.SINGLE_ANSWER)
            methods.append("dawid-skene" if model_l[i] else "majority")
        if tied_any[i]:
            flags.append(Flag.TIE)
        if conflict_l[i]:
            flags.append(Flag.NO_FINDING_CONFLICT)
        all_flags.append(tuple(flags))
    return _Columns(states=np.array(_STATES, dtype=object)[value].tolist(),
                    confidence=np.round(confidence, 4).tolist(), agreement=np.round(agreement, 4).tolist(),
                    answers=total.tolist(), methods=methods, flags=all_flags)


def _report(items: Sequence[ObjectAnswers], labels: Sequence[str], m: _Matrix, counts: NDArray[np.int64],
            value: NDArray[np.int8], reliability: NDArray[np.float64],
            object_flags: Sequence[tuple[Flag, ...]]) -> JobReport:
    findings: dict[str, FindingAgreement] = {}
    for j, label in enumerate(labels):
        c = counts[:, j, :]
        decided = value[:, j] != UNCERTAIN
        present = int((value[:, j] == PRESENT).sum())
        findings[label] = FindingAgreement(
            fleiss_kappa=fleiss_kappa(c), krippendorff_alpha=krippendorff_alpha_nominal(c),
            objects=int((c.sum(axis=1) > 0).sum()),
            prevalence=present / int(decided.sum()) if decided.any() else None)
    # Reader agreement with the consensus over every finding they answered.
    answered = m.states >= 0
    matches = (m.states == value[m.objects]) & answered
    n_readers = len(m.worker_ids)
    hits = np.bincount(m.readers, weights=matches.sum(axis=1), minlength=n_readers)
    cells = np.bincount(m.readers, weights=answered.sum(axis=1), minlength=n_readers)
    objects = np.bincount(m.readers, minlength=n_readers)
    rejected = [r for item in items for r in item.rejected]
    rejected_by: dict[str, int] = {}
    for r in rejected:
        rejected_by[r.worker_id] = rejected_by.get(r.worker_id, 0) + 1
    timed = ~np.isnan(m.time_spent)
    # bincount adds in answer order, as a Python sum over each reader's answers would
    time_sum = np.bincount(m.readers[timed], weights=m.time_spent[timed], minlength=n_readers)
    time_count = np.bincount(m.readers[timed], minlength=n_readers)
    workers: dict[str, WorkerStats] = {}
    for w, worker_id in enumerate(m.worker_ids):
        workers[worker_id] = WorkerStats(
            objects=int(objects[w]), agreement=float(hits[w] / cells[w]) if cells[w] else None,
            reliability=None if np.isnan(reliability[w]) else float(reliability[w]),
            rejected=rejected_by.pop(worker_id, 0),
            mean_time_spent=float(time_sum[w]) / int(time_count[w]) if time_count[w] else None)
    for worker_id, count in rejected_by.items():  # readers whose every answer was malformed
        workers[worker_id] = WorkerStats(objects=0, agreement=None, reliability=None, rejected=count,
                                         mean_time_spent=None)
    flagged: dict[str, int] = {}
    for flags in object_flags:
        for flag in flags:
            flagged[flag.value] = flagged.get(flag.value, 0) + 1
    return JobReport(findings=findings, workers=workers, rejected=tuple(rejected), objects=len(items),
                     flagged=flagged)


def values_by_label(label: ConsolidatedLabel) -> Mapping[str, FindingState]:
    """The consolidated state per finding (a convenience for exports and SR write-back)."""
    return {name: consensus.value for name, consensus in label.findings.items()}
