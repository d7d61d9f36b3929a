"""The selection engine against a real Orthanc: every filter, qualification, sampling, determinism."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from typing import Any

import pytest
from manifest_support import PATIENT_KEY_SECRET, Population, build, manifest_bytes, manifest_lines, sops

from dicomlab_core.errors import BadRequest, Conflict
from dicomlab_core.labels import CHEXPERT_LABELS
from dicomlab_manifest.builder import EmptySelection
from dicomlab_manifest.selection import patient_key_function


def test_default_build_selects_single_frame_dx_and_cr_and_counts_skips(population: Population, make_service: Any) -> None:
    service = make_service()
    summary = build(service, name="default")
    lines = manifest_lines(service, "default")
    expected = population.select()
    assert sorted(sops(lines)) == sorted(expected)  # de-duplicated: each SOP Instance UID once
    by_orthanc_id = {i.orthanc_id: i for i in population.items}
    key = patient_key_function(PATIENT_KEY_SECRET)
    for line in lines:
        assert list(line)[:2] == ["source", "labels"]
        assert line["labels"] == ",".join(CHEXPERT_LABELS)
        item = by_orthanc_id[line["source"]]
        assert line["sop-instance-uid"] == item.sop_uid
        assert line["study-uid"] == item.study_uid and line["series-uid"] == item.series_uid
        assert line["patient-key"] == key(item.patient_id) and len(line["patient-key"]) == 32
    raw = manifest_bytes(service, "default")
    assert b"PAT0" not in raw and b"Test^" not in raw  # no patient IDs or names in clear
    kinds = Counter(i.kind for i in population.items if i.modality not in ("OT",))
    assert summary["skipped"] == {
        "structured-report": kinds["sr"], "presentation-state": kinds["pr"], "non-image": kinds["doc"],
        "multi-frame": sum(1 for i in population.items if i.kind == "multiframe" and i.modality == "DX"),
        "for-processing": kinds["for-processing"], "duplicate": 1,
    }
    assert summary["instances"] == len(lines) == summary["counts"]["selected"]
    assert summary["sha256"] == hashlib.sha256(raw).hexdigest() and summary["bytes"] == len(raw)
    assert summary["source"]["orthanc"] == population.server.url
    assert summary["source"]["changes"]["cursor"] > 0
    assert summary["filters"]["modalities"] == ["CR", "DX"]
    assert "password" not in json.dumps(summary).lower()


def test_instance_level_sop_class_check_finds_a_non_image_hidden_in_a_dx_series(
        population: Population, make_service: Any) -> None:
    service = make_service()
    fast = build(service, "a", name="series-check")
    exact = build(service, "b", name="instance-check", sop_class_check="instance")
    assert set(sops(manifest_lines(service, "instance-check"))) == population.select(hidden=False)
    assert set(sops(manifest_lines(service, "series-check"))) == population.select(hidden=True)
    assert exact["skipped"]["non-image"] == fast["skipped"]["non-image"] + 1


@pytest.mark.parametrize(("spec", "predicate", "modalities"), [
    ({"study_date_from": "2024-01-01", "study_date_to": "20241231"}, lambda i: "20240101" <= i.study_date <= "20241231",
     ("DX", "CR")),
    ({"study_date_from": "20250101"}, lambda i: i.study_date >= "20250101", ("DX", "CR")),
    ({"body_parts": ["abdomen"]}, lambda i: i.body_part == "ABDOMEN", ("DX", "CR")),
    ({"study_description": "chest*"}, lambda i: i.study_description.startswith("CHEST"), ("DX", "CR")),
    ({"series_description": "^lat", "pattern_syntax": "regex"}, lambda i: i.series_description == "LATERAL",
     ("DX", "CR")),
    ({"series_description": "P?"}, lambda i: i.series_description == "PA", ("DX", "CR")),
    ({"modalities": ["CT", "MR"]}, lambda i: True, ("CT", "MR")),
    ({"modalities": ["CR"]}, lambda i: True, ("CR",)),
    ({"patient_ids": ["PAT002", "PAT004"]}, lambda i: i.patient_id in ("PAT002", "PAT004"), ("DX", "CR")),
], ids=["date-range", "date-from", "body-part", "study-glob", "series-regex", "series-glob", "ct-mr", "cr",
        "patients"])
def test_filters(population: Population, make_service: Any, spec: dict[str, Any], predicate: Any,
                 modalities: tuple[str, ...]) -> None:
    service = make_service()
    summary = build(service, name="filtered", **spec)
    got = sops(manifest_lines(service, "filtered"))
    expected = population.select(predicate, modalities=modalities)
    assert expected and sorted(got) == sorted(expected)
    assert summary["instances"] == len(expected)
    assert "patient_ids" not in summary["filters"] and "PAT00" not in json.dumps(summary)


def test_study_and_series_uid_lists(population: Population, make_service: Any) -> None:
    service = make_service()
    images = [i for i in population.items if i.kind == "image" and i.modality in ("DX", "CR")]
    study, series = images[0].study_uid, images[-2].series_uid
    build(service, "a", name="by-study", study_uids=[study])
    build(service, "b", name="by-series", series_uids=[series])
    assert set(sops(manifest_lines(service, "by-study"))) == population.select(lambda i: i.study_uid == study)
    assert set(sops(manifest_lines(service, "by-series"))) == population.select(lambda i: i.series_uid == series)


def test_same_inputs_give_the_same_bytes(make_service: Any) -> None:
    service = make_service()
    one = build(service, "a", name="one", modalities=["DX", "CR", "CT"])
    other = make_service(workers=1, page_size=1)  # same store, different paging and concurrency
    two = build(other, "b", name="two", modalities=["CT", "DX", "CR"])
    assert manifest_bytes(service, "one") == manifest_bytes(service, "two")
    assert one["sha256"] == two["sha256"] and one["created"] <= two["created"]


def test_seeded_sampling_is_deterministic_and_uniform_over_the_selection(population: Population,
                                                                          make_service: Any) -> None:
    service = make_service()
    build(service, "a", name="s1", max_count=25, seed=1)
    build(service, "b", name="s1-again", max_count=25, seed=1, modalities=["CR", "DX"])
    build(service, "c", name="s2", max_count=25, seed=2)
    first, again, other = (sops(manifest_lines(service, n)) for n in ("s1", "s1-again", "s2"))
    assert first == again and len(first) == 25 and len(set(first)) == 25
    assert set(first) <= population.select() and set(first) != set(other)
    summary = service.manifests.summary("s1")
    assert summary["skipped"]["not-sampled"] == len(population.select()) - 25
    # the sample keeps the listing order of the full manifest
    build(service, "d", name="all")
    full = sops(manifest_lines(service, "all"))
    assert first == [s for s in full if s in set(first)]


def test_sample_fraction_and_unseeded_max_count(population: Population, make_service: Any) -> None:
    service = make_service()
    build(service, "a", name="half", sample_fraction=0.5, seed=3)
    half = sops(manifest_lines(service, "half"))
    total = len(population.select())
    assert 0.3 * total < len(half) < 0.7 * total
    summary = build(service, "b", name="first10", max_count=10)
    build(service, "c", name="all")
    assert sops(manifest_lines(service, "first10")) == sops(manifest_lines(service, "all"))[:10]
    assert summary["truncated"] is True


def test_exclusion_of_earlier_input_and_labelled_output_manifests(population: Population, make_service: Any,
                                                                  tmp_path: Any) -> None:
    exports = tmp_path / "labeling-exports"  # another object-store root the service is allowed to read
    exports.mkdir()
    service = make_service(extra_read_stores=(f"file://{exports}",))
    build(service, "a", name="batch1", max_count=30, seed=5)
    first = manifest_lines(service, "batch1")
    # an output manifest of a labeling job: only `source` (Orthanc ID) and a label attribute
    output = exports / "output.manifest"
    labelled = [{"source": line["source"], "labels": line["labels"], "chest": {"findings": []}}
                for line in manifest_lines(service, "batch1")[:5]]
    output.write_text("".join(json.dumps(x) + "\n" for x in labelled))
    summary = build(service, "b", name="batch2", exclude_manifests=["batch1"])
    second = sops(manifest_lines(service, "batch2"))
    assert not set(second) & set(sops(first))
    assert set(second) | set(sops(first)) == population.select()
    # every stored copy of an excluded SOP Instance UID is excluded (one UID is stored twice)
    assert summary["skipped"]["excluded"] == sum(1 for i in population.items if i.sop_uid in set(sops(first)))
    build(service, "c", name="not-labelled", exclude_manifests=[f"file://{output}"])
    remaining = set(sops(manifest_lines(service, "not-labelled")))
    # an output manifest names stored objects (Orthanc IDs): another stored copy of the same UID still qualifies
    labelled_ids = {line["source"] for line in first[:5]}
    assert remaining == population.select(lambda i: i.orthanc_id not in labelled_ids)


def test_custom_label_set_and_line_limit(make_service: Any) -> None:
    service = make_service()
    build(service, name="custom", labels="Pneumothorax,Chest Tube", max_count=3)
    assert {line["labels"] for line in manifest_lines(service, "custom")} == {"Pneumothorax,Chest Tube"}
    too_long = [f"label-{n:04d}-" + "x" * 50 for n in range(1700)]
    with pytest.raises(BadRequest, match=r"labels: .* characters"):
        service.parse({"name": "x", "labels": too_long})


def test_empty_selection_is_an_error_unless_allowed(make_service: Any) -> None:
    service = make_service()
    with pytest.raises(EmptySelection, match="matched no qualifying instance"):
        build(service, "a", name="nothing", study_date_from="20300101")
    assert not service.manifests.exists("nothing")
    summary = build(service, "b", name="nothing-ok", study_date_from="20300101", allow_empty=True)
    assert summary["instances"] == 0 and manifest_bytes(service, "nothing-ok") == b""


def test_existing_name_is_a_conflict_unless_overwrite(make_service: Any) -> None:
    service = make_service()
    build(service, "a", name="taken", max_count=2)
    with pytest.raises(Conflict, match="taken"):
        build(service, "b", name="taken", max_count=3)
    build(service, "c", name="taken", max_count=3, overwrite=True)
    assert len(manifest_lines(service, "taken")) == 3


@pytest.mark.parametrize(("spec", "message"), [
    ({"name": "x", "modality": ["DX"]}, "unknown filter 'modality'; allowed fields: name, modalities"),
    ({"name": "x", "modalities": ["XX"]}, "modalities: 'XX' is not allowed; allowed values: CR, DX"),
    ({"name": "x", "modalities": []}, "modalities: at least one"),
    ({"name": "x", "study_date_from": "2024-13-01"}, "study_date_from: '2024-13-01' is not a date"),
    ({"name": "x", "study_date_from": "20250101", "study_date_to": "20240101"}, "study_date_from: must not be after"),
    ({"name": "x", "series_description": "(", "pattern_syntax": "regex"}, "series_description: invalid regular"),
    ({"name": "x", "pattern_syntax": "sql"}, "pattern_syntax: 'sql' is not allowed; allowed values: glob, regex"),
    ({"name": "x", "sop_class_check": "none"}, "allowed values: series, instance"),
    ({"name": "../etc"}, "name: required"),
    ({}, "name: required"),
    ({"name": "x", "max_count": 0}, "max_count: must be from 1 to 10000000"),
    ({"name": "x", "max_count": 10_000_001}, "max_count: must be from 1 to 10000000"),
    ({"name": "x", "max_count": "5"}, "max_count: expected an integer"),
    ({"name": "x", "max_count": 2.5}, "max_count: expected an integer"),
    ({"name": "x", "seed": -1}, "seed: must be from 0 to 9223372036854775807"),
    ({"name": "x", "seed": 2**63}, "seed: must be from 0 to 9223372036854775807"),
    ({"name": "x", "seed": True}, "seed: expected an integer"),
    ({"name": "x", "sample_fraction": 1.5}, "sample_fraction: expected a number in (0, 1]"),
    ({"name": "x", "sample_fraction": 0}, "sample_fraction: expected a number in (0, 1]"),
    ({"name": "x", "sample_fraction": float("nan")}, "sample_fraction: expected a number in (0, 1]"),
    ({"name": "x", "sample_fraction": float("inf")}, "sample_fraction: expected a number in (0, 1]"),
    ({"name": "x", "labels": '["A", "B"'}, "labels: starts with '[' but is not a JSON array"),
    ({"name": "x", "labels": '["A", 1]'}, "expected a comma-separated string or a list of strings"),
    ({"name": "x", "labels": ['"A"']}, "brackets, quotes, backslashes and control characters are not allowed"),
    ({"name": "x", "labels": ["A\tB"]}, "contains '\\t'"),
    ({"name": "x", "study_uids": ["1.2.x"]}, "study_uids: '1.2.x' is not a DICOM UID"),
    ({"name": "x", "labels": "A,A"}, "labels: label 'A' appears twice"),
    ({"name": "x", "labels": ["A,B"]}, "contains a comma"),
    ({"name": "x", "allow_empty": "yes"}, "allow_empty: expected true or false"),
    ({"name": "x", "exclude_manifests": ["http://x"]}, "exclude_manifests: 'http://x' is neither"),
    ([1, 2], "must be a JSON object"),
])
def test_bad_specs_name_the_field(make_service: Any, spec: Any, message: str) -> None:
    with pytest.raises(BadRequest) as raised:
        make_service().parse(spec)
    assert message in raised.value.description


def test_numeric_bounds_are_inclusive_and_a_json_array_string_is_a_label_list(make_service: Any) -> None:
    spec = make_service().parse({"name": "x", "max_count": 10_000_000, "seed": 2**63 - 1, "sample_fraction": 1,
                                 "labels": '["Atelectasis", "Cardiomegaly"]'})
    assert (spec.max_count, spec.seed, spec.sample_fraction) == (10_000_000, 2**63 - 1, 1.0)
    assert spec.labels == ("Atelectasis", "Cardiomegaly")
    low = make_service().parse({"name": "x", "max_count": 1.0, "seed": 0})  # 1.0: a writer with only floats
    assert (low.max_count, low.seed) == (1, 0) and type(low.max_count) is int


def test_references_to_missing_manifests_are_rejected_before_running(make_service: Any) -> None:
    service = make_service()
    with pytest.raises(BadRequest, match="exclude_manifests: no manifest named 'missing'"):
        service.precheck(service.parse({"name": "x", "exclude_manifests": ["missing"]}))
    with pytest.raises(BadRequest, match="since_manifest: no manifest named 'missing'"):
        service.precheck(service.parse({"name": "x", "since_manifest": "missing"}))


@pytest.mark.parametrize("uid", ["1.2.3.4", 'odd"uid\\with\u00e9', ""])
def test_fast_line_formatting_equals_json_dumps(uid: str) -> None:
    from dicomlab_manifest.listing import InstanceInfo, SeriesInfo, StudyInfo
    from dicomlab_manifest.selection import manifest_line

    instance = InstanceInfo("0a-1b", "s", uid, 1, 1)
    series = SeriesInfo("s", "t", uid + "9", "DX", "CHEST", "PA", ())
    study = StudyInfo("t", "7." + uid, "20240101", "", "P", ())
    labels = "Atelectasis,Pleural \"Other\""
    line = manifest_line(instance, series, study, json.dumps(labels, ensure_ascii=False), "ab12")
    expected = json.dumps({"source": "0a-1b", "labels": labels, "study-uid": "7." + uid, "series-uid": uid + "9",
                           "sop-instance-uid": uid, "patient-key": "ab12"}, ensure_ascii=False,
                          separators=(", ", ": "))
    assert line == expected
