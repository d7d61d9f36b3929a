"""The fast paths of post-annotation (orjson, the clean-answer shortcut) give exactly the general result."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest

from dicomlab_core import fastjson
from dicomlab_core.groundtruth import worker_answer
from dicomlab_core.labels import CHEXPERT_LABELS, NO_FINDING
from dicomlab_labeling.config import ConsolidationSettings
from dicomlab_labeling.consensus.consolidation import consolidate
from dicomlab_labeling.groundtruth.callbacks import consolidation_response, load_annotations

LABELS = list(CHEXPERT_LABELS)
SETTINGS = ConsolidationSettings(min_objects_for_model=5)


def _clean(rng: random.Random, i: int) -> dict[str, Any]:
    findings = {label: rng.choice(["present", "absent", "absent", "uncertain"]) for label in LABELS}
    findings[NO_FINDING] = "absent"
    rois = [{"tool": "rectangle", "finding": "Edema", "points": [[1.5, 2.0], [30.25, 40.0]]},
            {"tool": "polygon", "points": [[0.0, 0.0], [5.0, 0.5], [2.0, 7.0]]}][: rng.randint(0, 2)]
    return {"findings": findings, "rois": rois, "sopInstanceUid": f"1.2.3.{i}", "timeSpentSeconds": 12.5}


def _odd(rng: random.Random, i: int) -> str:
    """Answers that are valid but not plain, or malformed: the general path must decide them."""
    base = _clean(rng, i)
    variants: list[Any] = [
        {**base, "findings": {**base["findings"], "Edema": "YES"}},  # an alias
        {**base, "findings": {**base["findings"], "Edema": {"present": True, "absent": False}}},  # crowd form
        {**base, "findings": {**base["findings"], "Edema": None}},  # unanswered
        {**base, "findings": {**base["findings"], "Edema": "maybe"}},  # unknown state
        {**base, "findings": {**base["findings"], "Tumour": "present"}},  # unknown label
        {**base, "findings": {**base["findings"], NO_FINDING: "present", "Edema": "present"}},  # conflict
        {**base, "findings": {**dict.fromkeys(LABELS, "absent"), NO_FINDING: "present"}},  # No Finding alone
        {**base, "rois": [{"tool": "ellipse", "points": [[1, 2], [3, 4]]}]},  # int coordinates
        {**base, "rois": [{"tool": "ellipse", "points": [{"x": 1.0, "y": 2.0}, {"x": 3.0, "y": 4.0}]}]},
        {**base, "rois": [{"tool": "polygon", "points": [[1.0, 2.0], [3.0, 4.0]]}]},  # too few points
        {**base, "rois": [{"tool": "circle", "points": [[1.0, 2.0], [3.0, 4.0]]}]},
        {**base, "rois": [{"tool": "rectangle", "finding": "Tumour", "points": [[1.0, 2.0], [3.0, 4.0]]}]},
        {**base, "rois": "none"},
        {**base, "timeSpentSeconds": -1},
        {**base, "timeSpentSeconds": 7},
        {**base, "sopInstanceUid": 5},
        {**base, "windowLevel": {"center": 40, "width": 400}},
        {"answer": json.dumps(base)},  # wrapped
        {"findings": "present"},
        [1, 2],
    ]
    texts = [  # our template's text, not quite plain: the text shortcut must leave these to the decoder
        '{"findings": {"Edema": "present", "Edema": "absent"}, "rois": []}',  # a repeated key: the last wins
        '{"findings":{"Edema":"present"},"rois":[],"sopInstanceUid":"1.2\\u0033","timeSpentSeconds":3}',
        '{"findings": {"Edema": "present"}, "rois": [], "timeSpentSeconds": 012}',  # not JSON
        '{"findings": {"Edema": "present"}, "rois": [], "timeSpentSeconds": 1e3}',
        '{"findings": {"Edema": "present"}, "rois": [], "timeSpentSeconds": 0.1000000000000000055511151231257827}',
        '\n {"findings": {"Edema": "absent"}, "rois": [{"tool": "polygon", "points": [[1.0, 2.0]]}], "x": 1}',
        '{"findings": {"Edema": "absent"}, "rois": [{"tool": "ellipse", "points": [[1.0, 2.0], [3.0, 4.5]]}]} ',
        '{"findings": {}, "rois": [], "sopInstanceUid": ""}',
        '{"findings": {"Edema": "absent"}, "rois": ["], \\"sopInstanceUid\\": \\"x"], "sopInstanceUid": "y"}',
    ]
    if i % 7 == 6:
        return texts[i % len(texts)]
    pick = variants[i % len(variants)]
    if i % len(variants) == 3 and i % 2:
        return json.dumps(base).replace('"timeSpentSeconds": 12.5', '"timeSpentSeconds": NaN')
    return json.dumps(pick)


def _sample(rng: random.Random, i: int) -> str:
    disease = {label: rng.random() < 0.2 for label in LABELS if label != NO_FINDING}
    ticked = [label for label, v in disease.items() if v]
    return json.dumps({"disease": disease, "labels": json.dumps({"label": ticked, "imageurl": f"u/{i}", "ROI": {}})})


def _file(n: int = 120) -> bytes:
    rng = random.Random(11)
    entries: list[Any] = []
    for i in range(n):
        annotations: list[Any] = []
        for w in range(3):
            kind = rng.random()
            content = (_sample(rng, i) if kind < 0.2 else _odd(rng, i * 3 + w) if kind < 0.5
                       else '{"findings": {"Edema": "absent"' if kind < 0.53
                       else json.dumps(_clean(rng, i), separators=(",", ":")) if kind < 0.65  # JSON.stringify
                       else json.dumps(_clean(rng, i)))
            annotations.append({"workerId": f"reader{rng.randrange(6)}", "annotationData": {"content": content}})
        if i % 17 == 0:
            annotations.append({"workerId": "reader9"})  # no annotationData
        entries.append({"datasetObjectId": str(i), "dataObject": {"content": f"o{i}"}, "annotations": annotations})
    entries.append({"datasetObjectId": 123456789012345678901234567890, "annotations": []})  # beyond 64 bits
    return json.dumps(entries).encode()


def _run(data: bytes) -> tuple[bytes, dict[str, Any], list[Any]]:
    objects = load_annotations(data, LABELS)
    result = consolidate(objects, LABELS, SETTINGS)
    response = consolidation_response(objects, result, "findings")
    return (json.dumps(response, sort_keys=True).encode(), result.report.to_json(),
            [[a.to_json() for a in obj.answers] for obj in objects])


def test_fast_paths_and_the_general_path_consolidate_identically(monkeypatch: pytest.MonkeyPatch) -> None:
    data = _file()
    used = {"_parse_clean_fast": 0, "_parse_template_text": 0}

    def counting(name: str) -> Any:
        fast = getattr(worker_answer, name)

        def count(*args: Any) -> Any:
            out = fast(*args)
            used[name] += out is not None
            return out

        return count

    for name in used:
        monkeypatch.setattr(worker_answer, name, counting(name))
    quick = _run(data)
    assert used["_parse_template_text"] > 100  # the text shortcut really took the plain answers
    assert used["_parse_clean_fast"] > 10  # and the decoded shortcut those it leaves
    assert quick[0].count(b'"datasetObjectId": "123456789012345678901234567890"') == 1

    monkeypatch.setattr(worker_answer, "_parse_clean_fast", lambda *args: None)
    monkeypatch.setattr(worker_answer, "_parse_template_text", lambda *args: None)
    monkeypatch.setattr(fastjson, "orjson", None)  # the standard library only
    general = _run(data)
    assert quick[0] == general[0]  # the response, byte for byte
    assert quick[1] == general[1]  # the job report: agreement, readers, rejections with reasons
    assert quick[2] == general[2]  # every parsed answer, ROIs included
    assert len(quick[1]["rejected"]) > 20


def test_fastjson_reads_like_the_standard_library() -> None:
    for text in ['{"a": 1, "a": 2}', "[NaN, Infinity]", "[1e400]", '"\\ud800"', "[18446744073709551615]",
                 '{"x": [1.5, -0.0, 2]}']:
        assert repr(fastjson.loads(text)) == repr(json.loads(text))
    with pytest.raises(ValueError, match="Expecting"):
        fastjson.loads('{"a": ')
    assert json.loads(fastjson.dumps({"k": ["é", 1, 2.5, None, 2**70]})) == {"k": ["é", 1, 2.5, None, 2**70]}
