"""A job's answers as consolidation input, and its consolidated result (with adjudications applied).

Shared by review (disagreements first), admin statistics, export and SR write-back, so each of them
sees the same numbers. Only each reader's latest submission version counts. Consolidation itself is
:func:`dicomlab_labeling.consensus.consolidation.consolidate` (majority vote / Dawid–Skene), not redone here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from dicomlab_core.groundtruth import AnswerError, ConsolidatedLabel, FindingConsensus, Roi, parse_rois
from dicomlab_core.labels import FindingState
from dicomlab_labeling.config import ConsolidationSettings
from dicomlab_labeling.consensus.consolidation import ConsolidationResult, ObjectAnswers, collect, consolidate
from dicomlab_labeling.workflow.models import Adjudication, Job, Submission, Task, User

ADJUDICATED = "adjudicated"


@dataclass(frozen=True)
class TaskAnswers:
    task: Task
    answers: list[tuple[str, Submission]]
    """(reader username, latest submission) per reader, in submission order."""
    adjudication: Adjudication | None


def load(session: Session, job: Job, task_ids: list[int] | None = None) -> list[TaskAnswers]:
    """Every task of ``job`` (or those in ``task_ids``) with its readers' latest answers."""
    tasks_q = select(Task).where(Task.job_id == job.id).order_by(Task.position, Task.id)
    subs_q = (select(Submission, User.username).join(User, User.id == Submission.user_id)
              .where(Submission.job_id == job.id).order_by(Submission.id))
    adj_q = select(Adjudication).where(Adjudication.job_id == job.id).order_by(Adjudication.id)
    if task_ids is not None:
        tasks_q = tasks_q.where(Task.id.in_(task_ids))
        subs_q = subs_q.where(Submission.task_id.in_(task_ids))
        adj_q = adj_q.where(Adjudication.task_id.in_(task_ids))
    latest: dict[int, dict[str, Submission]] = {}
    for submission, username in session.execute(subs_q):
        latest.setdefault(submission.task_id, {})[username] = submission  # later versions win
    adjudications = {a.task_id: a for a in session.scalars(adj_q)}
    return [TaskAnswers(task, list(latest.get(task.id, {}).items()), adjudications.get(task.id))
            for task in session.scalars(tasks_q)]


def consolidate_job(items: list[TaskAnswers], labels: list[str], settings: ConsolidationSettings,
                    reader_priors: Mapping[str, Mapping[str, Sequence[Sequence[float]]]] | None = None
                    ) -> ConsolidationResult:
    objects: list[ObjectAnswers] = [
        collect(str(item.task.id), [(reader, s.answer) for reader, s in item.answers], labels) for item in items]
    return consolidate(objects, labels, settings, reader_priors)


def apply_adjudication(label: ConsolidatedLabel, adjudication: Adjudication | None,
                       labels: list[str]) -> ConsolidatedLabel:
    """The reviewer's decision replaces the consensus (confidence 1, readers' agreement kept)."""
    if adjudication is None:
        return label
    findings: dict[str, FindingConsensus] = {}
    for name in labels:
        before = label.findings.get(name)
        state = FindingState(adjudication.findings.get(name, FindingState.ABSENT.value))
        answers = before.answers if before else 0
        agreement = 0.0
        if before is not None and before.answers:
            agreement = before.agreement if before.value is state else 0.0
        findings[name] = FindingConsensus(state, 1.0, agreement, answers)
    return ConsolidatedLabel(findings=findings, method=ADJUDICATED, workers=label.workers,
                             rejected=label.rejected, flags=label.flags)


def rois_of(answer: Any, labels: list[str]) -> tuple[Roi, ...]:
    """The ROIs of a stored answer or adjudication (none when it cannot be read)."""
    try:
        return parse_rois(answer.get("rois"), frozenset(labels))
    except (AnswerError, AttributeError):
        return ()


def final_rois(item: TaskAnswers, label: ConsolidatedLabel, labels: list[str]) -> tuple[Roi, ...]:
    """The ROIs that go with an image's final label (consensus SR, COCO export).

    The reviewer's ROIs when the image was adjudicated with ROIs drawn; otherwise the readers' ROIs of
    findings that ended up present (and ROIs tied to no finding), in submission order.
    """
    if label.method == ADJUDICATED and item.adjudication is not None:
        decided = rois_of({"rois": item.adjudication.rois}, labels)
        if decided:
            return decided
    present = {name for name, c in label.findings.items() if c.value is FindingState.PRESENT}
    return tuple(r for _, s in item.answers for r in rois_of(s.answer, labels)
                 if r.finding is None or r.finding in present)


def disagreement(item: TaskAnswers, labels: list[str]) -> tuple[float, list[str]]:
    """Share of findings on which the readers' latest answers differ, and those findings."""
    if len(item.answers) < 2:
        return 0.0, []
    differing = [label for label in labels
                 if len({s.answer.get("findings", {}).get(label, "absent") for _, s in item.answers}) > 1]
    return len(differing) / max(1, len(labels)), differing


def summary(item: TaskAnswers, job: Job) -> dict[str, Any]:
    score, differing = disagreement(item, list(job.labels))
    return {"taskId": item.task.id, "sopInstanceUid": item.task.sop_instance_uid, "answers": len(item.answers),
            "readersPerImage": job.readers_per_image, "disagreement": round(score, 4),
            "disagreeingFindings": differing, "adjudicated": item.adjudication is not None}
