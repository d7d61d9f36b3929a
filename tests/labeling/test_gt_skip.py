"""A worker's explicit skip ("Skip: could not load" on the worker page) is no answer.

It is neither an answer of absent findings nor a malformed answer: parsing raises ``AnswerSkipped``
and consolidation lists the worker under ``notLabeledBy``. The browser half (the page submits such
a skip for a refused image) is in ``test_gt_template_browser.py``.
"""

from __future__ import annotations

import json

import pytest

from dicomlab_core.groundtruth import AnswerError, AnswerSkipped, Flag, parse_worker_answer
from dicomlab_core.labels import FindingState
from dicomlab_labeling.config import ConsolidationMethod, ConsolidationSettings
from dicomlab_labeling.consensus.consolidation import collect, consolidate

LABELS = ["Cardiomegaly", "Edema", "No Finding"]
SKIP = {"skipped": {"reason": "could not load", "detail": "HTTP 403 (access refused)"}, "sopInstanceUid": "1.2.3"}


@pytest.mark.parametrize("content", [
    json.dumps(SKIP),  # our page's hidden input, as a JSON string
    SKIP,
    {"answer": json.dumps(SKIP)},  # the crowd-form's whole submission
    json.dumps({"answer": json.dumps(SKIP)}),
])
def test_a_skip_parses_as_skipped_with_its_reason(content: object) -> None:
    with pytest.raises(AnswerSkipped) as caught:
        parse_worker_answer(content, worker_id="w1", labels=frozenset(LABELS))
    assert caught.value.reason == "not labeled: could not load (HTTP 403 (access refused))"


def test_a_skip_carrying_findings_is_an_answer_and_garbage_stays_malformed() -> None:
    answer = parse_worker_answer(json.dumps({**SKIP, "findings": {"Edema": "present"}}), labels=frozenset(LABELS))
    assert answer.findings == {"Edema": FindingState.PRESENT}
    with pytest.raises(AnswerError) as caught:
        parse_worker_answer(json.dumps({"skip": True}), labels=frozenset(LABELS))
    assert not isinstance(caught.value, AnswerSkipped)


def test_consolidation_lists_the_worker_as_not_labeled_and_counts_no_answer() -> None:
    other = json.dumps({"findings": {"Cardiomegaly": "present", "Edema": "absent", "No Finding": "absent"}})
    items = [collect("0", [("w-skip", json.dumps(SKIP)), ("w-two", other)], LABELS),
             collect("1", [("w-skip", json.dumps(SKIP)), ("w-bad", "{not json")], LABELS)]
    assert [len(i.not_labeled) for i in items] == [1, 1] and [len(i.rejected) for i in items] == [0, 1]
    result = consolidate(items, LABELS, ConsolidationSettings(method=ConsolidationMethod.MAJORITY))
    first, second = result.labels
    assert {k: (v.value, v.answers) for k, v in first.findings.items()} == {
        "Cardiomegaly": (FindingState.PRESENT, 1), "Edema": (FindingState.ABSENT, 1),
        "No Finding": (FindingState.ABSENT, 1)}
    # Nobody labelled image 1: undecided and flagged, not "absent" for the skipping worker.
    assert second.flags == (Flag.NO_VALID_ANSWER,)
    assert all(v.value is FindingState.UNCERTAIN and v.answers == 0 for v in second.findings.values())
    contents = list(result.contents())
    assert contents == [label.to_json() for label in result.labels]
    assert contents[0]["notLabeledBy"] == [{"workerId": "w-skip", "answer": json.dumps(SKIP),
                                            "reason": "not labeled: could not load (HTTP 403 (access refused))"}]
    assert "rejected" not in contents[0] and [r["workerId"] for r in contents[1]["rejected"]] == ["w-bad"]
    # The job report counts the skip nowhere as a malformed answer nor as an answer of the worker.
    assert [r.worker_id for r in result.report.rejected] == ["w-bad"]
    assert "w-skip" not in result.report.workers
