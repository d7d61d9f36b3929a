"""No lost work (#19 item 4) in the labeling page at 1366×768 and 1920×1080: the real app, proxy and Orthanc.

Ctrl+Z / Ctrl+Shift+Z undo and redo a finding and a drawn ROI; the work in progress is autosaved as a
draft on the server and put back after a reload, and in another browser (a fresh context, signed in
again); a submit deletes the draft; "Previous image" goes back to the submitted image with its answer,
and submitting it again stores version 2.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from selfhosted_support import PASSWORD
from support.browser import log_in, new_page
from support.site import labeling_site
from ui_support import PageLog

pytestmark = [pytest.mark.browser, pytest.mark.slow]

SIZES = [(1366, 768), (1920, 1080)]


def size_id(size: tuple[int, int]) -> str:
    return f"{size[0]}x{size[1]}"


@pytest.fixture(scope="module")
def site(orthanc: Any, synthetic_set: list[dict[str, Any]],
         tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    with labeling_site(orthanc, tmp_path_factory.mktemp("drafts")) as running:
        # One job and one reader per window size (each run submits its job's first image).
        for size in SIZES:
            running.create_job(f"drafts-{size_id(size)}", synthetic_set[:3], readersPerImage=1, strategy="in-order",
                               leaseSeconds=300, defaultFindingState="absent")
        running.users([f"dora{w}" for w, _ in SIZES])
        yield {"base": running.base}


def open_labeling(site: dict[str, Any], size: tuple[int, int]) -> tuple[Any, PageLog]:
    page, log = new_page({"width": size[0], "height": size[1]})
    log_in(page, site["base"], f"dora{size[0]}", PASSWORD)
    page.get_by_role("link", name=f"Label images of drafts-{size_id(size)}").click()
    wait_ready(page)
    return page, log


def wait_ready(page: Any) -> None:
    page.wait_for_function("() => document.querySelector('#dl-viewer')?.dataset.state === 'ready' "
                           "&& document.body.dataset.busy === 'false'", timeout=60_000)


def work(page: Any) -> dict[str, Any]:
    """What the reader has done on screen: finding states and ROIs (from the page, not the server)."""
    return dict(page.evaluate("(() => { const a = window.dicomlabViewer.getAnswer(); "
                              "return { findings: a.findings, rois: a.rois }; })()"))


def draw_rectangle(page: Any) -> None:
    page.keyboard.press("]")  # new ROIs for the first finding (by default the finding is chosen after drawing)
    page.keyboard.press("r")
    box = page.locator(".dl-viewport").bounding_box()
    x, y = box["x"] + box["width"] * 0.4, box["y"] + box["height"] * 0.4
    page.mouse.move(x, y)
    page.mouse.down()
    page.mouse.move(x + 60, y + 40, steps=6)
    page.mouse.up()
    page.wait_for_function("() => window.dicomlabViewer.rois().length === 1")


@pytest.mark.parametrize("size", SIZES, ids=size_id)
def test_undo_redo_and_drafts_survive_a_reload_and_another_browser(site: dict[str, Any], tmp_path: Path,
                                                                   size: tuple[int, int]) -> None:
    page, log = open_labeling(site, size)
    assignment = page.evaluate("document.body.dataset.assignmentId")
    labels = list(work(page)["findings"])
    first = next(label for label in labels if label != "No Finding")
    key = page.evaluate(f"window.dicomlabViewer.hotkeys.get({json.dumps(first)})")
    start = work(page)
    assert start["findings"][first] == "absent" and start["rois"] == []

    # A finding by its hotkey; an ROI drawn for it (the ROI finding defaults to the first finding).
    page.keyboard.press(key)
    assert work(page)["findings"][first] == "present"
    draw_rectangle(page)
    drawn = work(page)
    assert len(drawn["rois"]) == 1 and drawn["rois"][0]["finding"] == first

    # Undo the ROI, then the finding; redo both.
    page.keyboard.press("Control+z")
    assert work(page)["rois"] == [] and work(page)["findings"][first] == "present"
    page.keyboard.press("Control+z")
    assert work(page) == start
    page.keyboard.press("Control+z")  # nothing more to undo
    assert work(page) == start
    page.keyboard.press("Control+Shift+z")
    assert work(page)["findings"][first] == "present" and work(page)["rois"] == []
    page.keyboard.press("Control+Shift+Z")
    redone = work(page)
    assert redone["rois"] == drawn["rois"], (redone, drawn)

    # Autosaved on the server: a reload puts the findings and the ROI back.
    page.wait_for_function("() => document.querySelector('#dl-draft').textContent === 'Draft saved'")
    puts = [r for r in log.requests if r["method"] == "PUT" and r["url"].endswith(f"/assignments/{assignment}/draft")]
    assert puts, log.requests
    page.reload()
    wait_ready(page)
    assert page.evaluate("document.body.dataset.assignmentId") == assignment
    assert page.locator("#dl-draft").text_content() == "Draft restored"
    restored = work(page)
    assert restored["findings"] == redone["findings"]
    assert [r["points"] for r in restored["rois"]] == [r["points"] for r in redone["rois"]]

    # Another browser (a fresh context, signed in again) gets the same draft.
    other, _ = open_labeling(site, size)
    assert other.evaluate("document.body.dataset.assignmentId") == assignment
    assert work(other)["findings"] == redone["findings"] and len(work(other)["rois"]) == 1
    other.context.close()

    # Submitting deletes the draft; "Previous image" goes back to it with its answer; version 2 is stored.
    page.keyboard.press("Control+Enter")
    page.wait_for_function(f"() => document.body.dataset.assignmentId !== {json.dumps(assignment)}")
    wait_ready(page)
    status = page.evaluate(f"fetch('/api/assignments/{assignment}/draft').then((r) => r.status)")
    assert status == 204
    assert page.locator("#dl-previous").is_enabled()
    page.locator("#dl-previous").click()
    page.wait_for_function(f"() => document.body.dataset.assignmentId === {json.dumps(assignment)}")
    wait_ready(page)
    assert work(page)["findings"] == redone["findings"] and len(work(page)["rois"]) == 1
    page.keyboard.press(key)  # present → uncertain
    page.keyboard.press("Control+Enter")
    page.wait_for_function(f"() => document.body.dataset.assignmentId !== {json.dumps(assignment)}")
    mine = page.evaluate(f"fetch('/api/assignments/{assignment}').then((r) => r.json())")
    assert mine["mySubmission"]["version"] == 2
    assert mine["mySubmission"]["answer"]["findings"][first] == "uncertain"
    page.screenshot(path=str(tmp_path / f"drafts-{size_id(size)}.png"))
    page.context.close()
