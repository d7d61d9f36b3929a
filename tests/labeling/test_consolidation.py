"""Consolidation: majority vote with tie rules, Dawid–Skene, agreement statistics, malformed answers."""

from __future__ import annotations

import json

import numpy as np
import pytest

from dicomlab_core.groundtruth import ConsolidatedLabel, Flag, WorkerAnswer
from dicomlab_core.labels import FindingState
from dicomlab_labeling.config import ConsolidationMethod, ConsolidationSettings, TieRule
from dicomlab_labeling.consensus import dawid_skene
from dicomlab_labeling.consensus.agreement import fleiss_kappa, krippendorff_alpha_nominal
from dicomlab_labeling.consensus.consolidation import ObjectAnswers, collect, consolidate

P, A, U = FindingState.PRESENT, FindingState.ABSENT, FindingState.UNCERTAIN
LABELS = ["Cardiomegaly", "Edema", "No Finding"]
MAJORITY = ConsolidationSettings(method=ConsolidationMethod.MAJORITY)


def answers(object_id: str, *findings: dict[str, FindingState]) -> ObjectAnswers:
    return ObjectAnswers(object_id, [WorkerAnswer(f"w{i}", dict(f)) for i, f in enumerate(findings)])


# ------------------------------------------------------------------------------------------- majority vote


def test_majority_vote_value_confidence_agreement() -> None:
    item = answers("0", {"Cardiomegaly": P, "Edema": A}, {"Cardiomegaly": P, "Edema": A},
                   {"Cardiomegaly": A, "Edema": U})
    (label,) = consolidate([item], LABELS, MAJORITY).labels
    card, edema, none = label.findings["Cardiomegaly"], label.findings["Edema"], label.findings["No Finding"]
    assert (card.value, card.answers) == (P, 3)
    assert card.confidence == pytest.approx(2 / 3, abs=1e-4) and card.agreement == pytest.approx(2 / 3, abs=1e-4)
    # Edema: two absent, one uncertain (an abstention): absent with full confidence, 2/3 of readers agree
    assert (edema.value, edema.confidence, edema.answers) == (A, 1.0, 3)
    assert edema.agreement == pytest.approx(2 / 3, abs=1e-4)
    # Nobody answered No Finding: uncertain, nothing to be confident about
    assert (none.value, none.confidence, none.agreement, none.answers) == (U, 0.0, 0.0, 0)
    assert label.method == "majority" and label.flags == ()


@pytest.mark.parametrize(("rule", "expected"), [(TieRule.ABSENT, A), (TieRule.PRESENT, P), (TieRule.UNCERTAIN, U)])
def test_ties_follow_the_tie_rule(rule: TieRule, expected: FindingState) -> None:
    item = answers("0", {"Edema": P}, {"Edema": A})
    settings = ConsolidationSettings(method=ConsolidationMethod.MAJORITY, tie_rule=rule)
    (label,) = consolidate([item], LABELS, settings).labels
    assert label.findings["Edema"].value is expected
    assert label.findings["Edema"].confidence == 0.5
    assert Flag.TIE in label.flags


def test_uncertain_majority_wins_over_a_lone_vote() -> None:
    item = answers("0", {"Edema": U}, {"Edema": U}, {"Edema": P})
    (label,) = consolidate([item], LABELS, MAJORITY).labels
    edema = label.findings["Edema"]
    assert edema.value is U and edema.confidence == pytest.approx(2 / 3, abs=1e-4) and edema.agreement == pytest.approx(2 / 3, abs=1e-4)
    assert Flag.TIE not in label.flags


def test_consensus_no_finding_conflict_is_resolved_and_flagged() -> None:
    item = answers("0", {"No Finding": P, "Edema": A}, {"No Finding": A, "Edema": P},
                   {"No Finding": P, "Edema": P})
    (label,) = consolidate([item], LABELS, MAJORITY).labels
    assert label.findings["Edema"].value is P
    assert label.findings["No Finding"].value is A
    assert Flag.NO_FINDING_CONFLICT in label.flags


# ------------------------------------------------------------------------------------------- malformed, missing


def test_malformed_answers_are_reported_and_excluded_and_every_object_is_covered() -> None:
    good = json.dumps({"findings": {"Edema": "present"}})
    items = [
        collect("0", [("a", good), ("b", "{broken"), ("c", {"findings": {"Edema": "absent"}}),
                      ("d", {"findings": {"No Finding": "present", "Edema": "present"}}),
                      ("a", good)], LABELS),
        collect("1", [("b", {"findings": {"Nope": "present"}})], LABELS),   # only a malformed answer
        collect("2", [], LABELS),                                            # nobody answered in time
        collect("3", [("c", {"findings": {"Edema": "absent", "Cardiomegaly": "present"}})], LABELS),
    ]
    result = consolidate(items, LABELS, MAJORITY)
    assert len(result.labels) == 4
    rejected = {(r.object_id, r.worker_id): r.reason for r in result.report.rejected}
    assert set(rejected) == {("0", "b"), ("0", "d"), ("0", "a"), ("1", "b")}
    assert "not valid JSON" in rejected[("0", "b")]
    assert "No Finding" in rejected[("0", "d")]
    assert "second answer" in rejected[("0", "a")]
    assert "unknown label" in rejected[("1", "b")]
    first, only_bad, nobody, single = result.labels
    assert [w.worker_id for w in first.workers] == ["a", "c"]  # the valid ones, raw answers kept
    assert first.workers[0].raw == good
    assert first.findings["Edema"].value is U and Flag.TIE in first.flags  # 1–1 after exclusions
    assert {r[0] for r in first.rejected} == {"b", "d", "a"}
    # The malformed answers keep their raw text in the consolidated content (not in the logged report).
    kept = [(r["workerId"], r["answer"]) for r in first.to_json()["rejected"]]
    assert kept == [("b", "{broken"), ("d", {"findings": {"No Finding": "present", "Edema": "present"}}),
                    ("a", good)]
    assert only_bad.to_json()["rejected"] == [{"workerId": "b", "reason": rejected[("1", "b")],
                                               "answer": {"findings": {"Nope": "present"}}}]
    assert all("answer" not in r.to_json() for r in result.report.rejected)
    for empty in (only_bad, nobody):
        assert empty.method == "none" and Flag.NO_VALID_ANSWER in empty.flags
        assert all(f.value is U and f.answers == 0 for f in empty.findings.values())
    assert single.findings["Cardiomegaly"].value is P and Flag.SINGLE_ANSWER in single.flags
    workers = result.report.workers
    assert workers["b"].objects == 0 and workers["b"].rejected == 2
    assert workers["c"].objects == 2 and workers["c"].rejected == 0
    assert result.report.flagged[Flag.NO_VALID_ANSWER.value] == 2


def test_fast_json_equals_the_typed_labels() -> None:
    items = [collect("0", [("a", {"findings": {"Edema": "present"}}), ("b", "{bad")], LABELS),
             answers("1", {"Edema": P, "No Finding": P}, {"Edema": P}, {"Edema": A, "Cardiomegaly": U}),
             collect("2", [], LABELS)]
    result = consolidate(items, LABELS, MAJORITY)
    assert list(result.contents()) == [label.to_json() for label in result.labels]
    assert json.loads(json.dumps(list(result.contents()))) == list(result.contents())


def test_empty_batch() -> None:
    result = consolidate([], LABELS)
    assert result.labels == [] and result.report.objects == 0


# ------------------------------------------------------------------------------------------- Dawid–Skene


def _simulate(accuracies: list[float], n: int, seed: int, prevalence: float = 0.4,
              ) -> tuple[list[ObjectAnswers], np.ndarray]:
    rng = np.random.default_rng(seed)
    truth = rng.random(n) < prevalence
    items = []
    for i in range(n):
        readers = []
        for w, accuracy in enumerate(accuracies):
            says = truth[i] if rng.random() < accuracy else not truth[i]
            readers.append(WorkerAnswer(f"w{w}", {"Edema": P if says else A}))
        items.append(ObjectAnswers(str(i), readers))
    return items, truth


def _accuracy(result_labels: list[ConsolidatedLabel], truth: np.ndarray) -> float:
    said = np.array([label.findings["Edema"].value is P for label in result_labels])
    return float((said == truth).mean())


def test_dawid_skene_finds_the_unreliable_reader_and_beats_majority_vote() -> None:
    accuracies = [0.9, 0.85, 0.8, 0.75, 0.55]  # w4 is the planted unreliable reader
    gains = []
    for seed in range(10):
        items, truth = _simulate(accuracies, 300, seed)
        ds = consolidate(items, ["Edema"], ConsolidationSettings(method=ConsolidationMethod.AUTO))
        mv = consolidate(items, ["Edema"], MAJORITY)
        reliability = {w: s.reliability for w, s in ds.report.workers.items()}
        assert min(reliability, key=lambda w: reliability[w] or 0) == "w4", reliability
        assert reliability["w4"] == pytest.approx(0.55, abs=0.08)
        assert reliability["w0"] == pytest.approx(0.9, abs=0.06)
        assert all(label.method == "dawid-skene" for label in ds.labels)
        gains.append(_accuracy(ds.labels, truth) - _accuracy(mv.labels, truth))
    # 300 objects per draw is noisy: DS wins on most draws and on average (≈ +1.5 points here)
    assert sum(g > 0 for g in gains) >= 7, gains
    assert float(np.mean(gains)) > 0.008, gains


def test_dawid_skene_outvotes_a_colluding_majority_of_weak_readers() -> None:
    """Two strong readers against three near-random ones: DS trusts the strong pair, majority cannot."""
    items, truth = _simulate([0.95, 0.95, 0.6, 0.6, 0.6], 400, seed=11)
    ds = consolidate(items, ["Edema"])
    mv = consolidate(items, ["Edema"], MAJORITY)
    assert _accuracy(ds.labels, truth) > _accuracy(mv.labels, truth) + 0.02


def test_dawid_skene_fitted_on_a_sample_scores_every_object() -> None:
    items, truth = _simulate([0.9, 0.85, 0.8, 0.75, 0.55], 600, seed=2)
    full = consolidate(items, ["Edema"])
    sampled = consolidate(items, ["Edema"], ConsolidationSettings(model_fit_objects=200))
    reliability = {w: s.reliability or 0 for w, s in sampled.report.workers.items()}
    assert min(reliability, key=lambda w: reliability[w]) == "w4"
    assert all(label.method == "dawid-skene" for label in sampled.labels)
    assert abs(_accuracy(sampled.labels, truth) - _accuracy(full.labels, truth)) < 0.02


def test_auto_uses_the_model_only_with_enough_answers() -> None:
    items, _ = _simulate([0.9, 0.8, 0.7], 60, seed=3)
    items.append(answers("two", {"Edema": P}, {"Edema": A}))
    result = consolidate(items, ["Edema"], ConsolidationSettings(tie_rule=TieRule.ABSENT))
    assert result.labels[0].method == "dawid-skene"
    assert result.labels[-1].method == "majority"
    assert result.labels[-1].findings["Edema"].value is A  # 1–1 tie under the absent rule


def test_auto_falls_back_to_majority_on_small_batches() -> None:
    items, _ = _simulate([0.9, 0.8, 0.7], 19, seed=3)
    small = consolidate(items, ["Edema"])
    assert {label.method for label in small.labels} == {"majority"}
    assert all(w.reliability is None for w in small.report.workers.values())
    forced = consolidate(items, ["Edema"], ConsolidationSettings(method=ConsolidationMethod.DAWID_SKENE))
    assert {label.method for label in forced.labels} == {"dawid-skene"}
    items2, _ = _simulate([0.9, 0.8, 0.7], 20, seed=3)
    assert {label.method for label in consolidate(items2, ["Edema"]).labels} == {"dawid-skene"}


def test_dawid_skene_posterior_is_the_confidence_and_converges_fast() -> None:
    items, _ = _simulate([0.9, 0.85, 0.8], 500, seed=5)
    objects = np.repeat(np.arange(500), 3)
    readers = np.tile(np.arange(3), 500)
    said = np.array([1 if a.findings["Edema"] is P else 0 for item in items for a in item.answers], dtype=np.int8)
    fit = dawid_skene.fit(objects, readers, said, n_objects=500, n_readers=3)
    assert fit.converged and fit.iterations < 40  # three readers: the slowest case that is still identifiable
    assert np.allclose(fit.confusion.sum(axis=2), 1.0)
    result = consolidate(items, ["Edema"])
    confidence = np.array([label.findings["Edema"].confidence for label in result.labels])
    assert np.allclose(confidence, np.maximum(fit.posterior, 1 - fit.posterior), atol=1e-4)


# ------------------------------------------------------------------------------------------- agreement


def test_fleiss_kappa_matches_the_published_example() -> None:
    # Fleiss (1971) / Wikipedia: 10 subjects, 14 raters, 5 categories → κ = 0.210
    table = np.array([[0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
                      [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7]])
    assert fleiss_kappa(table) == pytest.approx(0.210, abs=5e-4)
    assert fleiss_kappa(np.array([[3, 0], [2, 0]])) is None  # raters vary
    assert fleiss_kappa(np.array([[3, 0], [3, 0]])) is None  # no variation: undefined


def test_krippendorff_alpha_matches_the_published_example() -> None:
    # Krippendorff's reliability data: 4 coders, 12 units, values 1–5 with missing data → α = 0.743
    units = [{1: 3}, {2: 3, 3: 1}, {3: 4}, {3: 4}, {2: 4}, {1: 1, 2: 1, 3: 1, 4: 1}, {4: 4}, {1: 3, 2: 1},
             {2: 4}, {5: 3}, {1: 2}, {3: 1}]
    table = np.zeros((12, 5))
    for i, unit in enumerate(units):
        for value, count in unit.items():
            table[i, value - 1] = count
    assert krippendorff_alpha_nominal(table) == pytest.approx(0.743, abs=5e-4)


def test_job_report_agreement_per_finding_and_reader() -> None:
    items = [answers(str(i), {"Edema": P}, {"Edema": P}, {"Edema": A if i % 4 == 0 else P}) for i in range(8)]
    items += [answers(f"n{i}", {"Edema": A}, {"Edema": A}, {"Edema": A}) for i in range(8)]
    report = consolidate(items, ["Edema"], MAJORITY).report
    edema = report.findings["Edema"]
    counts = np.array([[1, 2, 0]] * 2 + [[0, 3, 0]] * 6 + [[3, 0, 0]] * 8)  # absent, present, uncertain
    assert edema.fleiss_kappa == pytest.approx(fleiss_kappa(counts))
    assert edema.krippendorff_alpha == pytest.approx(krippendorff_alpha_nominal(counts))
    assert edema.objects == 16 and edema.prevalence == 0.5
    assert report.workers["w0"].agreement == 1.0
    assert report.workers["w2"].agreement == pytest.approx(14 / 16, abs=1e-4)
    as_json = report.to_json()
    assert as_json["findings"]["Edema"]["objects"] == 16 and as_json["workers"]["w2"]["objects"] == 16
