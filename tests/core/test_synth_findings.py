"""Every finding is visible: it changes the pixels, and mostly inside the region it reports."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from dicomlab_core.labels import CHEXPERT_LABELS, NO_FINDING, Finding
from dicomlab_core.synth import ImageSpec, SynthConfig, plan
from dicomlab_core.synth.render import render

SIZE = 160
FINDINGS = [label for label in CHEXPERT_LABELS if label != NO_FINDING]
BRIGHTER = set(FINDINGS) - {str(Finding.PNEUMOTHORAX), str(Finding.FRACTURE)}
"""Findings that add density (brighter in MONOCHROME2) in their region."""


def specs(count: int = 3) -> list[ImageSpec]:
    """A few different patients, so each finding is checked at several places and sizes."""
    return [next(plan(SynthConfig(patients=1, seed=seed, rows=SIZE, columns=SIZE))) for seed in range(count)]


def box_mask(box: tuple[float, float, float, float], margin: float = 0.02) -> np.ndarray:
    x0, y0, x1, y1 = box
    mask = np.zeros((SIZE, SIZE), dtype=bool)
    mask[max(0, int((y0 - margin) * SIZE)):int(np.ceil((y1 + margin) * SIZE)),
         max(0, int((x0 - margin) * SIZE)):int(np.ceil((x1 + margin) * SIZE))] = True
    return mask


@pytest.mark.parametrize("finding", FINDINGS)
def test_finding_changes_its_region(finding: str) -> None:
    for spec in specs():
        normal, no_boxes = render(dataclasses.replace(spec, findings=frozenset([NO_FINDING])))
        sick, boxes = render(dataclasses.replace(spec, findings=frozenset([finding])))
        assert no_boxes == {} and set(boxes) == {finding}
        diff = sick - normal
        inside = box_mask(boxes[finding])
        energy = np.abs(diff)
        assert energy[inside].sum() > 0.9 * energy.sum(), "the change must lie in the reported region"
        # visible: a real change in intensity over a real number of pixels, not a one-pixel speck
        changed = energy > 0.03
        assert changed.sum() >= 12, f"{finding}: only {changed.sum()} pixels changed visibly"
        if finding in BRIGHTER:
            assert diff[inside].sum() > 0, f"{finding} should add density"


def test_pneumothorax_removes_lung_markings_and_shows_a_pleural_line() -> None:
    spec = specs(1)[0]
    normal, _ = render(dataclasses.replace(spec, findings=frozenset([NO_FINDING])))
    sick, boxes = render(dataclasses.replace(spec, findings=frozenset([Finding.PNEUMOTHORAX])))
    inside = box_mask(boxes[Finding.PNEUMOTHORAX], margin=0)
    diff = (sick - normal)[inside]
    assert diff.min() < -0.03 and diff.max() > 0.05  # darker collapsed space, brighter pleural line
    # markings gone: the collapsed zone has less fine texture (horizontal gradient; the ribs run across)
    darker = (sick - normal) < -0.02
    interior = darker.copy()
    for shift in (-3, 3):  # away from the zone's edges (the pleural line, the chest wall)
        interior &= np.roll(darker, shift, axis=0) & np.roll(darker, shift, axis=1)
    interior = interior[:, 1:]
    assert interior.sum() > 100
    texture = {name: np.median(np.abs(np.diff(image, axis=1))[interior]) for name, image in
               (("sick", sick), ("normal", normal))}
    assert texture["sick"] < 0.8 * texture["normal"], texture


def test_fracture_breaks_the_rib_line() -> None:
    spec = specs(1)[0]
    normal, _ = render(dataclasses.replace(spec, findings=frozenset([NO_FINDING])))
    broken, boxes = render(dataclasses.replace(spec, findings=frozenset([Finding.FRACTURE])))
    diff = broken - normal
    inside = box_mask(boxes[Finding.FRACTURE], margin=0)
    assert diff[inside].min() < -0.03 and diff[inside].max() > 0.05  # a gap and a callus / step-off


def test_findings_are_independent_of_each_other() -> None:
    """Adding a second finding does not move the first: each draws from its own generator."""
    spec = specs(1)[0]
    _, one = render(dataclasses.replace(spec, findings=frozenset([Finding.LUNG_LESION])))
    _, two = render(dataclasses.replace(spec, findings=frozenset([Finding.LUNG_LESION, Finding.SUPPORT_DEVICES])))
    assert one[Finding.LUNG_LESION] == two[Finding.LUNG_LESION]


def test_cardiomegaly_raises_the_cardiothoracic_ratio() -> None:
    spec = specs(1)[0]
    normal, _ = render(dataclasses.replace(spec, findings=frozenset([NO_FINDING])))
    big, _ = render(dataclasses.replace(spec, findings=frozenset([Finding.CARDIOMEGALY])))
    row = int(SIZE * (spec.anatomy.diaphragm - 0.08))
    # the heart is the dense run between the lungs: count bright pixels across the row's centre
    threshold = (normal[row].max() + normal[row].min()) / 2

    def heart_width(image: np.ndarray) -> int:
        centre = SIZE // 2
        line = image[row] > threshold
        left = right = centre
        while left > 0 and line[left - 1]:
            left -= 1
        while right < SIZE - 1 and line[right + 1]:
            right += 1
        return right - left

    assert heart_width(big) > 1.2 * heart_width(normal)
