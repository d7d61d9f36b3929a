"""AI assistance in labeling: when readers see the model's predictions, and what they saw when answering.

A job's ``aiAssistance`` mode decides whether the reader API shows an assignment's model
predictions (the manifest line's ``model-predictions``, written by ``dicomlab train predict`` and
kept on the task with the whole line):

- ``off`` (default): never.
- ``after-first-answer``: only once the reader has recorded an unaided first answer for that
  assignment (``POST /api/assignments/<id>/first-answer``; stored once, never changed).
- ``always``: from the start.

Every submission stores what the reader had seen (:func:`record`), so the first answer, the final
answer and the model can be compared: :func:`summary` counts how often a final answer moved toward
the model after the reader saw it (automation bias), and the export writes the records per image
(:func:`export_entry`). Readers never see other readers' answers here either.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from datetime import datetime
from enum import StrEnum
from typing import Any

from dicomlab_core.errors import BadRequest, Conflict
from dicomlab_labeling.workflow.models import Assignment, AssignmentStatus, Job, Submission, Task

PREDICTIONS_KEY = "model-predictions"
VERSION_KEY = "model-version"
THRESHOLD = 0.5
"""A probability at or above this is the model saying "present" (for the moved-toward comparison)."""


class Mode(StrEnum):
    OFF = "off"
    AFTER_FIRST_ANSWER = "after-first-answer"
    ALWAYS = "always"


def check_mode(value: Any) -> str:
    try:
        return Mode(value).value
    except ValueError:
        raise BadRequest(f"aiAssistance: one of {', '.join(m.value for m in Mode)}") from None


def predictions(task: Task, labels: Iterable[str]) -> dict[str, float] | None:
    """The model's probability per finding of the job (job order), or None when the line has none."""
    raw = task.manifest_line.get(PREDICTIONS_KEY) if isinstance(task.manifest_line, dict) else None
    if not isinstance(raw, dict):
        return None
    out = {label: float(raw[label]) for label in labels
           if isinstance(raw.get(label), int | float) and not isinstance(raw.get(label), bool)
           and math.isfinite(float(raw[label])) and 0.0 <= float(raw[label]) <= 1.0}
    return out or None


def model_version(task: Task) -> str | None:
    value = task.manifest_line.get(VERSION_KEY) if isinstance(task.manifest_line, dict) else None
    return value if isinstance(value, str) and value else None


def shown(job: Job, assignment: Assignment) -> bool:
    """Whether this reader may see the model's predictions on this assignment now."""
    if job.ai_assistance == Mode.ALWAYS.value:
        return True
    return job.ai_assistance == Mode.AFTER_FIRST_ANSWER.value and assignment.first_answer is not None


def reader_view(job: Job, task: Task, assignment: Assignment) -> dict[str, Any]:
    """The ``assistance`` part of an assignment as its reader gets it: predictions only when allowed."""
    visible = shown(job, assignment)
    probabilities = predictions(task, job.labels) if visible else None
    return {"mode": job.ai_assistance,
            "firstAnswerRequired": job.ai_assistance == Mode.AFTER_FIRST_ANSWER.value
            and assignment.first_answer is None,
            "firstAnswer": assignment.first_answer,
            "predictions": probabilities,
            "modelVersion": model_version(task) if probabilities is not None else None}


def record_first_answer(job: Job, assignment: Assignment, answer: dict[str, Any], now: datetime) -> bool:
    """Store the reader's unaided answer once; returns False when the same answer was already stored.

    Refused (409) for a job that does not ask for one, once the image was submitted, or when a
    different first answer is already recorded: it cannot be changed after the predictions were shown.
    """
    if job.ai_assistance != Mode.AFTER_FIRST_ANSWER.value:
        raise Conflict(f"job {job.name!r} does not ask for a first answer (aiAssistance is {job.ai_assistance})")
    if assignment.first_answer is not None:
        if assignment.first_answer.get("findings") == answer.get("findings"):
            return False
        raise Conflict("the first answer of this image is already recorded and cannot be changed")
    if assignment.status != AssignmentStatus.ACTIVE.value:
        raise Conflict("a first answer can only be recorded while the image is leased and not yet submitted")
    assignment.first_answer = {"findings": dict(answer["findings"])}
    assignment.first_answer_at = now
    return True


def record(job: Job, task: Task, assignment: Assignment) -> dict[str, Any]:
    """What the reader had seen when submitting: stored on the submission, immutable like it."""
    visible = shown(job, assignment)
    first = assignment.first_answer
    return {"mode": job.ai_assistance, "shown": visible and predictions(task, job.labels) is not None,
            "modelVersion": model_version(task),
            "firstAnswer": dict(first["findings"]) if first is not None else None}


def reader_record(assistance: dict[str, Any] | None) -> dict[str, Any] | None:
    """A submission's record as its own reader gets it back: the model version only if it was shown."""
    if assistance is None:
        return None
    return {**assistance, "modelVersion": assistance.get("modelVersion") if assistance.get("shown") else None}


def _model_call(probability: float) -> str:
    return "present" if probability >= THRESHOLD else "absent"


def export_entry(job: Job, task: Task, answers: list[tuple[str, Submission]]) -> dict[str, Any] | None:
    """The per-image ``<job>-assistance`` object of the output manifest (None for ``off`` jobs)."""
    if job.ai_assistance == Mode.OFF.value:
        return None
    return {"mode": job.ai_assistance, "model-version": model_version(task),
            "model-predictions": predictions(task, job.labels),
            "answers": [{"worker-id": reader, "shown": bool((s.assistance or {}).get("shown")),
                         "first-answer": (s.assistance or {}).get("firstAnswer"),
                         "final-answer": dict(s.answer.get("findings", {}))} for reader, s in answers]}


def summary(job: Job, items: Iterable[tuple[Task, list[tuple[str, Submission]]]]) -> dict[str, Any]:
    """How the readers' answers relate to the model's, over each reader's latest submission.

    A *compared* finding has a prediction, a first answer and a final answer made after the model was
    shown. Of those where the first answer differed from the model's call (``p >= 0.5`` → present),
    ``movedTowardModel`` counts the final answers that took the model's call; ``movedAwayFromModel``
    counts first answers that agreed with the model and final answers that did not.
    """
    answers = shown_count = with_first = compared = disagreed = toward = away = agree_final = calls = 0
    readers: dict[str, dict[str, int]] = {}
    for task, latest in items:
        probabilities = predictions(task, job.labels) or {}
        for reader, submission in latest:
            answers += 1
            seen = submission.assistance or {}
            if not seen.get("shown"):
                continue
            shown_count += 1
            final = submission.answer.get("findings", {})
            first = seen.get("firstAnswer")
            per = readers.setdefault(reader, {"compared": 0, "disagreedFirst": 0, "movedTowardModel": 0})
            if isinstance(first, dict):
                with_first += 1
            for label, probability in probabilities.items():
                call = _model_call(probability)
                calls += 1
                agree_final += final.get(label) == call
                if not isinstance(first, dict):
                    continue
                compared += 1
                per["compared"] += 1
                if first.get(label) != call:
                    disagreed += 1
                    per["disagreedFirst"] += 1
                    if final.get(label) == call:
                        toward += 1
                        per["movedTowardModel"] += 1
                elif final.get(label) != call:
                    away += 1
    return {"mode": job.ai_assistance, "threshold": THRESHOLD, "answers": answers, "shown": shown_count,
            "withFirstAnswer": with_first, "comparedFindings": compared, "disagreedFirst": disagreed,
            "movedTowardModel": toward, "movedAwayFromModel": away,
            "towardRate": round(toward / disagreed, 4) if disagreed else None,
            "finalAgreesWithModel": round(agree_final / calls, 4) if calls else None,
            "readers": readers}
