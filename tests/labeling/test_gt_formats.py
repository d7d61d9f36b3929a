"""Ground Truth formats (dicomlab_core.groundtruth): input lines, worker answers, output manifests."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime

import pytest

from dicomlab_core.groundtruth import (
    MAX_MANIFEST_LINE_CHARS,
    AnswerError,
    ConsolidatedLabel,
    FindingConsensus,
    ManifestError,
    RejectedAnswer,
    RoiTool,
    iter_manifest,
    output_manifest_line,
    parse_manifest_line,
    parse_worker_answer,
    read_output_manifest,
)
from dicomlab_core.labels import CHEXPERT_LABELS, FindingState

ORTHANC_ID = "502b0a4b-5cb43965-7f092716-bd6fe6d6-4f7fc3ce"
LABELS = ",".join(CHEXPERT_LABELS)


# ------------------------------------------------------------------------------------------- input lines


def test_manifest_line_with_source_keeps_every_key() -> None:
    line = parse_manifest_line(json.dumps({"source": ORTHANC_ID, "labels": LABELS, "study-uid": "1.2.3",
                                           "sop-instance-uid": "1.2.3.4.5", "custom": {"a": 1}}))
    assert line.source == ORTHANC_ID and line.source_ref is None and line.ref == ORTHANC_ID
    assert line.labels == CHEXPERT_LABELS
    assert line.study_uid == "1.2.3" and line.sop_uid == "1.2.3.4.5" and line.series_uid is None
    assert line.data["custom"] == {"a": 1}


def test_manifest_line_labels_as_json_array_and_source_ref() -> None:
    line = parse_manifest_line({"source-ref": "s3://bucket/a/b.dcm", "labels": ["Edema", "No Finding"]})
    assert line.source is None and line.source_ref == "s3://bucket/a/b.dcm"
    assert line.labels == ("Edema", "No Finding")
    # A JSON array written as a string is decoded, not split on commas.
    as_text = parse_manifest_line({"source": "x", "labels": '["Atelectasis", "Cardiomegaly"]'})
    assert as_text.labels == ("Atelectasis", "Cardiomegaly")
    assert as_text.data["labels"] == '["Atelectasis", "Cardiomegaly"]'  # copied through unchanged


@pytest.mark.parametrize(("line", "message"), [
    ("not json", "not valid JSON"),
    ("[1, 2]", "expected a JSON object"),
    (json.dumps({"labels": "A"}), "exactly one of"),
    (json.dumps({"source": "x", "source-ref": "s3://b/k"}), "exactly one of"),
    (json.dumps({"source": ""}), "non-empty string"),
    (json.dumps({"source": 12}), "non-empty string"),
    (json.dumps({"source": "x", "labels": "A,A"}), "appears twice"),
    (json.dumps({"source": "x", "labels": [1, 2]}), "comma-separated string or a list"),
    (json.dumps({"source": "x", "labels": '["A", "B"'}), "starts with '\\[' but is not a JSON array"),
    (json.dumps({"source": "x", "labels": '{"A": 1}'}), "contains '\\{'"),
    (json.dumps({"source": "x", "labels": ["[A]"]}), "contains '\\['"),
    (json.dumps({"source": "x", "labels": ['A"B']}), "brackets, quotes"),
    (json.dumps({"source": "x", "labels": ["A'B"]}), "brackets, quotes"),
    (json.dumps({"source": "x", "labels": ["A\nB"]}), "control characters"),
    (json.dumps({"source": "x", "labels": ["A\u0085B"]}), "control characters"),
    (json.dumps({"source": "x", "labels": ["A\\B"]}), "backslashes"),
])
def test_manifest_line_errors_say_why(line: str, message: str) -> None:
    with pytest.raises(ManifestError, match=message):
        parse_manifest_line(line)


def test_manifest_line_length_limit() -> None:
    at_limit = json.dumps({"source": "x", "pad": ""})
    at_limit = at_limit[:-2] + "a" * (MAX_MANIFEST_LINE_CHARS - len(at_limit)) + '"}'
    assert len(at_limit) == MAX_MANIFEST_LINE_CHARS
    assert parse_manifest_line(at_limit).source == "x"
    too_long = at_limit[:-2] + 'a"}'
    with pytest.raises(ManifestError, match="longer than 100000"):
        parse_manifest_line(too_long)


def test_iter_manifest_skips_blank_lines_and_names_the_bad_line() -> None:
    lines = [json.dumps({"source": "a"}), "", json.dumps({"source": "b"}) + "\r\n"]
    assert [m.source for m in iter_manifest(lines)] == ["a", "b"]
    with pytest.raises(ManifestError, match="manifest line 2"):
        list(iter_manifest([json.dumps({"source": "a"}), "{"]))


# ------------------------------------------------------------------------------------------- worker answers

CLEAN = {
    "findings": {"Cardiomegaly": "present", "Edema": "uncertain", "No Finding": "absent", "Fracture": "absent"},
    "rois": [{"tool": "rectangle", "finding": "Cardiomegaly", "points": [[10, 20], [110, 220.5]]},
             {"tool": "polygon", "finding": "Cardiomegaly", "points": [[1, 1], [5, 1], [3, 4]]},
             {"tool": "ellipse", "finding": "Edema", "points": [{"x": 3, "y": 4}, {"x": 30, "y": 40}]}],
    "sopInstanceUid": "1.2.826.0.1.3680043.8.498.1",
    "timeSpentSeconds": 41.5,
    "windowLevel": {"center": -600, "width": 1500, "preset": "lung"},
}


def test_clean_answer_parses_to_typed_fields() -> None:
    answer = parse_worker_answer(json.dumps(CLEAN), worker_id="private.us-east-1.w1", labels=CHEXPERT_LABELS)
    assert answer.worker_id == "private.us-east-1.w1"
    assert answer.findings == {"Cardiomegaly": FindingState.PRESENT, "Edema": FindingState.UNCERTAIN,
                               "No Finding": FindingState.ABSENT, "Fracture": FindingState.ABSENT}
    assert [r.tool for r in answer.rois] == [RoiTool.RECTANGLE, RoiTool.POLYGON, RoiTool.ELLIPSE]
    assert answer.rois[0].points == ((10.0, 20.0), (110.0, 220.5))
    assert answer.rois[2].points == ((3.0, 4.0), (30.0, 40.0)) and answer.rois[2].finding == "Edema"
    assert answer.sop_uid == CLEAN["sopInstanceUid"] and answer.time_spent == 41.5
    assert answer.window_level == CLEAN["windowLevel"]
    assert answer.raw == json.dumps(CLEAN) and answer.shape == "dicomlab"  # kept exactly as received


def test_crowd_form_answer_wrapper_is_unwrapped() -> None:
    wrapped = {"answer": json.dumps(CLEAN)}
    answer = parse_worker_answer(json.dumps(wrapped), worker_id="w")
    assert answer.findings["Cardiomegaly"] is FindingState.PRESENT
    assert answer.raw == json.dumps(wrapped)  # the raw answer is kept exactly as it came


def test_crowd_form_radio_groups_are_read() -> None:
    content = {"findings": {"Edema": {"present": False, "absent": True, "uncertain": False},
                            "Fracture": {"present": False, "absent": False, "uncertain": False}}}
    answer = parse_worker_answer(content, worker_id="w")
    assert answer.findings == {"Edema": FindingState.ABSENT}  # nothing ticked = not answered


def test_reference_sample_three_level_shape() -> None:
    roi = {"handles": {"start": {"x": 12.5, "y": 30}, "end": {"x": 80, "y": 95}, "textBox": {"x": 1, "y": 1}}}
    inner = json.dumps({"label": ["Cardiomegaly"], "imageurl": f"https://host/instances/{ORTHANC_ID}/file",
                        "ROI": roi})
    disease = dict.fromkeys(CHEXPERT_LABELS, False) | {"Cardiomegaly": True}
    content = json.dumps({"disease": disease, "labels": inner})
    # The annotation file holds `content` as a string inside JSON: three levels of encoding.
    file_text = json.dumps([{"annotationData": {"content": content}}])
    decoded = json.loads(file_text)[0]["annotationData"]["content"]
    answer = parse_worker_answer(decoded, worker_id="w2", labels=CHEXPERT_LABELS)
    assert answer.shape == "reference-sample"
    assert answer.findings["Cardiomegaly"] is FindingState.PRESENT
    assert answer.findings["Edema"] is FindingState.ABSENT
    assert len(answer.findings) == len(CHEXPERT_LABELS)
    assert answer.rois[0].tool is RoiTool.RECTANGLE
    assert answer.rois[0].points == ((12.5, 30.0), (80.0, 95.0))  # the handles, not the text box


def test_reference_sample_with_only_the_ticked_list() -> None:
    content = {"labels": json.dumps({"label": ["Edema"], "imageurl": "x"})}
    answer = parse_worker_answer(content, worker_id="w", labels=["Edema", "Fracture", "No Finding"])
    assert answer.findings == {"Edema": FindingState.PRESENT, "Fracture": FindingState.ABSENT,
                               "No Finding": FindingState.ABSENT}


@pytest.mark.parametrize(("content", "reason"), [
    ("{not json", "not valid JSON"),
    ("[]", "must be a JSON object"),
    ({"something": 1}, "neither 'findings'"),
    ({"findings": {"Edema": "maybe"}}, "unknown state"),
    ({"findings": {"Edema": 3}}, "present|absent|uncertain"),
    ({"findings": {"Edema": {"present": True, "absent": True}}}, "several states"),
    ({"findings": {"Made Up": "present"}}, "unknown label"),
    ({"findings": {"No Finding": "present", "Edema": "present"}}, "No Finding' is present together"),
    ({"findings": {}, "rois": [{"tool": "circle", "points": [[1, 2], [3, 4]]}]}, "ROI tool"),
    ({"findings": {}, "rois": [{"tool": "polygon", "points": [[1, 2], [3, 4]]}]}, "at least 3 points"),
    ({"findings": {}, "rois": [{"tool": "rectangle", "points": [[1, "a"], [3, 4]]}]}, "finite numbers"),
    ({"findings": {}, "rois": [{"tool": "rectangle", "finding": "Nope", "points": [[1, 2], [3, 4]]}]},
     "unknown label"),
    ({"findings": {}, "timeSpentSeconds": -1}, "non-negative"),
    ({"disease": {"Edema": True}, "labels": "{broken"}, "'labels' field is not valid JSON"),
])
def test_malformed_answers_raise_with_a_reason(content: object, reason: str) -> None:
    with pytest.raises(AnswerError, match=reason):
        parse_worker_answer(content, worker_id="w", labels=CHEXPERT_LABELS)


def test_no_finding_alone_is_fine() -> None:
    answer = parse_worker_answer({"findings": {"No Finding": "present", "Edema": "absent"}}, worker_id="w")
    assert answer.findings["No Finding"] is FindingState.PRESENT


# ------------------------------------------------------------------------------------------- output manifests


def _consolidated() -> ConsolidatedLabel:
    answer = parse_worker_answer(CLEAN, worker_id="w1")
    return ConsolidatedLabel(
        findings={"Cardiomegaly": FindingConsensus(FindingState.PRESENT, 0.93, 0.6667, 3),
                  "Edema": FindingConsensus(FindingState.UNCERTAIN, 0.5, 0.5, 2),
                  "Fracture": FindingConsensus(FindingState.ABSENT, 0.99, 1.0, 3)},
        method="dawid-skene", workers=(answer,), rejected=(("w9", "unknown label 'X'"),))


def test_output_line_copies_input_keys_and_writes_hyphenated_metadata() -> None:
    data = parse_manifest_line({"source": ORTHANC_ID, "labels": ["Cardiomegaly", "Edema", "Fracture"],
                                "study-uid": "1.2", "note": "kept"})
    when = datetime(2021, 1, 15, 5, 22, 56, tzinfo=UTC)
    line = output_manifest_line(data, "chest-findings", _consolidated(), job_name="job-1", creation_date=when)
    assert list(line)[:4] == ["source", "labels", "study-uid", "note"]
    assert line["labels"] == ["Cardiomegaly", "Edema", "Fracture"]  # unchanged, array stays an array
    assert line["chest-findings-metadata"] == {"type": "groundtruth/custom", "job-name": "job-1",
                                               "human-annotated": "yes",
                                               "creation-date": "2021-01-15T05:22:56.000000"}
    content = line["chest-findings"]
    assert content["findings"]["Cardiomegaly"] == {"value": "present", "confidence": 0.93, "agreement": 0.6667,
                                                   "answers": 3}
    assert content["method"] == "dawid-skene"
    assert content["workers"] == [{"workerId": "w1", "answer": CLEAN}]  # raw answer kept
    assert content["rejected"] == [{"workerId": "w9", "reason": "unknown label 'X'"}]
    kept = replace(_consolidated(), rejected=(RejectedAnswer("w9", "not valid JSON", "{trunc"),))
    assert kept.to_json()["rejected"] == [{"workerId": "w9", "reason": "not valid JSON", "answer": "{trunc"}]
    with pytest.raises(ManifestError):
        output_manifest_line(data, "bad-metadata", _consolidated(), job_name="j")


def test_round_trip_through_our_output_manifest() -> None:
    data = parse_manifest_line({"source": ORTHANC_ID, "labels": "Cardiomegaly,Edema,Fracture",
                                "sop-instance-uid": "1.2.3", "study-uid": "1.2", "series-uid": "1.2.9"})
    text = json.dumps(output_manifest_line(data, "attr", _consolidated(), job_name="j"))
    (obj,) = read_output_manifest([text])
    assert obj.source == ORTHANC_ID and obj.sop_uid == "1.2.3" and obj.study_uid == "1.2"
    assert obj.series_uid == "1.2.9" and obj.attribute == "attr" and obj.job_name == "j"
    assert obj.labels == ("Cardiomegaly", "Edema", "Fracture")
    assert obj.values == {"Cardiomegaly": 1.0, "Edema": None, "Fracture": 0.0}
    assert obj.confidence["Cardiomegaly"] == 0.93
    assert not obj.is_source_ref


def test_reads_aws_spelling_and_the_reference_samples_pass_through_output() -> None:
    """The sample's consolidation Lambda passed raw answers through (annotationsFromAllWorkers)."""
    def sample_answer(ticked: list[str]) -> str:
        disease = {k: k in ticked for k in ("Cardiomegaly", "Edema", "Fracture")}
        return json.dumps({"disease": disease, "labels": json.dumps({"label": ticked, "imageurl": "u"})})

    line = {
        "source-ref": "s3://bucket/images/a.dcm", "labels": "Cardiomegaly,Edema,Fracture",
        "dicom-label-job": {"annotationsFromAllWorkers": [
            {"workerId": "a", "annotationData": {"content": sample_answer(["Cardiomegaly", "Edema"])}},
            {"workerId": "b", "annotationData": {"content": json.loads(sample_answer(["Cardiomegaly"]))}},
        ]},
        "dicom-label-job-metadata": {"type": "groundTruth/custom", "job_name": "dicom-label-job",
                                     "human-annotated": "yes", "creation-date": "2021-01-15T05:22:56.000000"},
    }
    (obj,) = read_output_manifest([json.dumps(line)])
    assert obj.is_source_ref and obj.source == "s3://bucket/images/a.dcm"
    assert obj.job_name == "dicom-label-job"
    # two readers: both say Cardiomegaly (1.0), neither Fracture (0.0), Edema is a 1–1 tie (None)
    assert obj.values == {"Cardiomegaly": 1.0, "Edema": None, "Fracture": 0.0}


def test_reads_empty_attribute_with_worker_response_ref() -> None:
    ref = "s3://out/job/annotations/worker-response/iteration-1/0/2021-01-15_05:22:56.json"
    line = {"source": ORTHANC_ID, "labels": ["Edema", "Fracture"], "job": {},
            "job-metadata": {"type": "groundtruth/custom", "job-name": "job", "human-annotated": "yes",
                             "creation-date": "2021-01-15T05:22:56.000000", "worker-response-ref": ref}}
    (unresolved,) = read_output_manifest([json.dumps(line)])
    assert unresolved.worker_response_ref == ref
    assert unresolved.values == {"Edema": None, "Fracture": None}
    response = {"answers": [{"workerId": "a", "answerContent": {"findings": {"Edema": "present", "Fracture": "absent"}}},
                            {"workerId": "b", "answerContent": {"findings": {"Edema": "present"}}}]}
    fetched: list[str] = []

    def fetch(uri: str) -> bytes:
        fetched.append(uri)
        return json.dumps(response).encode()

    (resolved,) = read_output_manifest([json.dumps(line)], fetch=fetch)
    assert fetched == [ref]
    assert resolved.values == {"Edema": 1.0, "Fracture": 0.0}


def test_chained_jobs_pick_the_newest_attribute_unless_named() -> None:
    def meta(date: str) -> dict[str, str]:
        return {"type": "groundtruth/custom", "job-name": "x", "human-annotated": "yes", "creation-date": date}

    line = {"source": "s", "labels": "Edema",
            "first": {"findings": {"Edema": {"value": "present"}}}, "first-metadata": meta("2021-01-01T00:00:00.0"),
            "review": {"findings": {"Edema": {"value": "absent"}}}, "review-metadata": meta("2021-02-01T00:00:00.0")}
    assert next(read_output_manifest([json.dumps(line)])).values == {"Edema": 0.0}
    assert next(read_output_manifest([json.dumps(line)], attribute="first")).values == {"Edema": 1.0}
    with pytest.raises(ManifestError, match=r"line 1: .*no label attribute 'other'"):
        next(read_output_manifest([json.dumps(line)], attribute="other"))
    with pytest.raises(ManifestError, match="no Ground Truth custom label attribute"):
        next(read_output_manifest([json.dumps({"source": "s"})]))
