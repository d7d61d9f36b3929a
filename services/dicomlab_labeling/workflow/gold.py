"""Gold-standard images: images with known answers mixed into a job's queue, and each reader's accuracy on them.

A job's ``goldUri`` names a JSON-lines file in the object store (confined to the same read scope as
``manifestUri``). Each line is a manifest line (``source`` or ``source-ref``, and the UIDs as in an
input manifest) that carries its known answers in one of two ways:

- a truth file: ``"gold": {"Cardiomegaly": "present", "Edema": "absent", ...}``;
- an adjudicated export: the output manifest a job's export writes (or any Ground Truth output
  manifest); its newest label attribute's consolidated value per finding is the known answer.

Only findings of the job's label set with a present/absent answer are kept (uncertain ones are not
gold); a line with none of them is refused. Gold tasks are inserted at random places of the queue and
look like every other task to readers (the reader API never serializes ``Task.gold``). They are
scored per reader and left out of consolidation, agreement and export (:func:`ordinary`), so a known
answer never becomes a "new" label nor shifts the consensus of ordinary images.

Accuracy is the share of a reader's answers on gold findings that equal the known answer, per finding
and overall (all gold findings pooled). An "uncertain" answer, or a finding left out of the answer
(which the queue reads as absent, like consolidation does), counts as given: uncertain is never the
known answer, so it is scored wrong.

With ``CONSOLIDATION__GOLD_PRIORS=true`` the readers' gold answers also weight consolidation: they are
added as pseudo-counts to each reader's Dawid–Skene confusion matrix (:func:`prior_counts`), so a
reader who misses known findings counts for less on the ordinary images.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from dicomlab_core.errors import BadRequest
from dicomlab_core.groundtruth import ManifestError, ManifestLine, label_attributes, labeled_object
from dicomlab_core.labels import FindingState
from dicomlab_labeling.config import ConsolidationSettings
from dicomlab_labeling.consensus.consolidation import ConsolidationResult
from dicomlab_labeling.workflow import results
from dicomlab_labeling.workflow.results import TaskAnswers

GOLD_KEY = "gold"
KNOWN = {FindingState.PRESENT.value, FindingState.ABSENT.value}


def known_answers(line: ManifestLine, labels: Sequence[str], number: int) -> dict[str, str]:
    """The known answers of one gold line, restricted to ``labels``; :class:`BadRequest` if it has none."""
    where = f"goldUri line {number}"
    data = line.data
    answers: dict[str, str] = {}
    if GOLD_KEY in data:
        given = data[GOLD_KEY]
        if not isinstance(given, Mapping):
            raise BadRequest(f"{where}: 'gold' must be an object of finding: present|absent")
        for name, value in given.items():
            if name not in labels:
                raise BadRequest(f"{where}: {str(name)[:60]!r} is not a finding of this job")
            if value not in KNOWN:
                raise BadRequest(f"{where}: {str(name)[:60]}: expected 'present' or 'absent'")
            answers[str(name)] = str(value)
    elif label_attributes(data):
        try:
            labeled = labeled_object(data, labels=labels)
        except ManifestError as exc:
            raise BadRequest(f"{where}: {exc.description}") from None
        answers = {name: FindingState.PRESENT.value if value == 1.0 else FindingState.ABSENT.value
                   for name, value in labeled.values.items() if name in labels and value is not None}
    else:
        raise BadRequest(f"{where}: no known answers (a 'gold' object or an export's label attribute)")
    if not answers:
        raise BadRequest(f"{where}: no present/absent answer for any finding of this job")
    return answers


def stored_line(line: ManifestLine) -> dict[str, Any]:
    """The gold line as kept on the task: the input keys without the answers themselves."""
    attrs = set(label_attributes(line.data))
    drop = {GOLD_KEY, *attrs, *(a + "-metadata" for a in attrs)}
    return {k: v for k, v in line.data.items() if k not in drop}


def ordinary(items: list[TaskAnswers]) -> list[TaskAnswers]:
    """The items that are not gold images: what consolidation, agreement and export see."""
    return [item for item in items if item.task.gold is None]


def prior_counts(items: list[TaskAnswers]) -> dict[str, dict[str, list[list[float]]]]:
    """Per finding and reader, the counts ``[truth][answer]`` (0 absent, 1 present) of the reader's
    present/absent answers on gold images: Dawid–Skene reader priors. Uncertain or missing answers are
    not observations there, as in consolidation."""
    code = {FindingState.ABSENT.value: 0, FindingState.PRESENT.value: 1}
    counts: dict[str, dict[str, list[list[float]]]] = {}
    for item in items:
        if item.task.gold is None:
            continue
        for reader, submission in item.answers:
            given = submission.answer.get("findings", {}) if isinstance(submission.answer, Mapping) else {}
            for name, truth in item.task.gold.items():
                answer = code.get(given.get(name))
                if answer is not None:
                    cells = counts.setdefault(name, {}).setdefault(reader, [[0.0, 0.0], [0.0, 0.0]])
                    cells[code[truth]][answer] += 1.0
    return counts


def consolidate(items: list[TaskAnswers], labels: list[str],
                settings: ConsolidationSettings) -> tuple[list[TaskAnswers], ConsolidationResult]:
    """Consolidate the ordinary images of ``items`` (returned with the result, in its order); with
    ``settings.gold_priors`` the readers' gold answers are the Dawid–Skene reader priors."""
    pool = ordinary(items)
    priors = prior_counts(items) if settings.gold_priors else None
    return pool, results.consolidate_job(pool, labels, settings, priors)


@dataclass
class Score:
    correct: int = 0
    total: int = 0

    def add(self, right: bool) -> None:
        self.correct += int(right)
        self.total += 1

    def to_json(self) -> dict[str, Any]:
        return {"correct": self.correct, "total": self.total,
                "accuracy": round(self.correct / self.total, 4) if self.total else None}


@dataclass
class ReaderScore:
    overall: Score = field(default_factory=Score)
    findings: dict[str, Score] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"overall": self.overall.to_json(),
                "findings": {name: s.to_json() for name, s in sorted(self.findings.items())}}


def accuracy(items: list[TaskAnswers]) -> dict[str, ReaderScore]:
    """Each reader's accuracy on the gold images among ``items`` (their latest answers), by username."""
    scores: dict[str, ReaderScore] = {}
    for item in items:
        gold = item.task.gold
        if gold is None:
            continue
        for reader, submission in item.answers:
            given = submission.answer.get("findings", {}) if isinstance(submission.answer, Mapping) else {}
            score = scores.setdefault(reader, ReaderScore())
            for name, truth in gold.items():
                right = given.get(name, FindingState.ABSENT.value) == truth
                score.overall.add(right)
                score.findings.setdefault(name, Score()).add(right)
    return scores


def report(items: list[TaskAnswers]) -> dict[str, Any]:
    """The admin view: how many gold images, and per reader the accuracy (overall and per finding)."""
    return {"images": sum(1 for i in items if i.task.gold is not None),
            "readers": {reader: s.to_json() for reader, s in sorted(accuracy(items).items())}}
