"""The self-hosted pages in headless Chromium against the real labeling app, proxy and Orthanc.

An annotator signs in, labels three images with keyboard shortcuts (one with an ROI) while the next
image is prefetched; a second reader answers differently through the API; a reviewer adjudicates a
disagreement side by side; an admin opens the job's statistics and exports. No console errors.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from selfhosted_support import ADMIN, PASSWORD, Api
from support.browser import log_in, new_page
from support.site import labeling_site
from ui_support import PageLog, browser, pixel_stats

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture(scope="module")
def site(orthanc: Any, synthetic_set: list[dict[str, Any]],
         tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    # Four images: a compressed one among them, so the WASM decoders run too.
    records = sorted(synthetic_set, key=lambda r: r["compression"] == "none")[:4]
    # Image tokens live 65 s, so the labeling view must refresh them silently (60 s before expiry).
    with labeling_site(orthanc, tmp_path_factory.mktemp("selfhosted"), token_ttl_seconds=65) as running:
        job = running.create_job(
            "ui-batch", records, readersPerImage=2, instructions="Mark every finding you see.",
            strategy="in-order", leaseSeconds=300,
            # Identifiers shown: the viewer reads whole files here (test_ui_deid_browser covers the other path).
            allowPatientIdentifiers=True)
        running.users(["ann", "bob"])
        running.users(["rev"], role="reviewer")
        yield {"base": running.base, "job": job, "admin": running.admin, "records": records,
               "store": running.tmp / "store", "proxy": running.proxy}


def sign_in(site: dict[str, Any], username: str, password: str) -> tuple[Any, PageLog]:
    page, log = new_page({"width": 1500, "height": 1000})
    log_in(page, site["base"], username, password)
    return page, log


def wait_ready(page: Any, assignment_id: str | None = None) -> str:
    condition = "document.querySelector('#dl-viewer')?.dataset.state === 'ready' && document.body.dataset.busy === 'false'"
    if assignment_id is not None:
        condition += f" && document.body.dataset.assignmentId !== {json.dumps(assignment_id)}"
    page.wait_for_function(f"() => {condition}", timeout=60_000)
    return str(page.evaluate("document.body.dataset.assignmentId"))


def test_annotate_review_adjudicate_export(site: dict[str, Any]) -> None:
    job, admin = site["job"], site["admin"]

    # ---- annotator: queue -> labeling view, three images by keyboard, one ROI
    page, log = sign_in(site, "ann", PASSWORD)
    start = page.get_by_role("link", name="Label images of ui-batch")
    start.wait_for()
    assert "0 / 4 images complete" in (page.locator("#dl-jobs").text_content() or "")
    start.click()
    first = wait_ready(page)
    std, levels = pixel_stats(page.locator(".dl-viewport").screenshot())
    assert std > 5 and levels > 20, (std, levels)
    # The next image was prefetched (leased with lookahead) while the first one is on screen.
    def image_gets() -> list[str]:
        return [r["url"] for r in log.requests if "/instances/" in r["url"] and r["method"] == "GET"]

    for _ in range(100):
        if len(set(image_gets())) >= 2:
            break
        page.wait_for_timeout(100)
    assert len(set(image_gets())) == 2, image_gets()

    # Silent token refresh: POST /api/assignments/<id>/token about 5 s after the image appeared.
    for _ in range(150):
        if any(r["method"] == "POST" and r["url"].endswith(f"/api/assignments/{first}/token") for r in log.requests):
            break
        page.wait_for_timeout(100)
    else:
        pytest.fail("the image token was not refreshed")

    ids = [first]
    page.keyboard.press("j")  # Cardiomegaly
    page.keyboard.press("y")
    box = page.locator(".dl-viewport").bounding_box()
    page.keyboard.press("r")
    page.mouse.move(box["x"] + box["width"] * 0.4, box["y"] + box["height"] * 0.4)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.6, box["y"] + box["height"] * 0.6, steps=6)
    page.mouse.up()
    page.wait_for_function("() => document.querySelectorAll('.dl-roi-list li').length === 1")
    # Drawn first, its finding after: Cardiomegaly's key ties the new ROI to it.
    page.keyboard.press(page.evaluate("window.dicomlabViewer.hotkeys.get('Cardiomegaly')"))
    page.keyboard.press("Shift+N")  # the findings not looked at are absent
    page.keyboard.press("Control+Enter")
    ids.append(wait_ready(page, ids[-1]))
    page.keyboard.press("f")  # No Finding
    page.keyboard.press("Control+Enter")
    ids.append(wait_ready(page, ids[-1]))
    page.keyboard.press("j")
    page.keyboard.press("j")
    page.keyboard.press("u")  # Edema uncertain
    page.keyboard.press("Shift+N")
    page.keyboard.press("Control+Enter")
    ids.append(wait_ready(page, ids[-1]))
    assert len(set(ids)) == 4
    # Skipping asks for a reason first: Ctrl+S without one skips nothing.
    page.keyboard.press("Control+s")
    page.wait_for_function("() => document.querySelector('#dl-message').textContent.includes('Choose why')")
    assert admin.call("GET", f"/admin/jobs/{job['id']}/progress")[1]["skipped"] == 0
    # The fourth image is skipped with a reason and Ctrl+S; then nothing is left for this reader.
    page.select_option("#dl-skip-reason", "image quality")
    page.keyboard.press("Control+s")
    try:
        page.wait_for_function("() => document.querySelector('#dl-viewer').dataset.state === 'done'", timeout=30_000)
    except Exception:
        pytest.fail(f"skip did not finish: {page.locator('#dl-message').text_content()!r} "
                    f"{page.locator('.dl-status').text_content()!r} {log.errors}")
    assert admin.call("GET", f"/admin/jobs/{job['id']}/progress")[1]["skipped"] == 1
    # The UI reported its time to first image.
    assert any(r["method"] == "POST" and r["url"].endswith("/api/ui-metrics") for r in log.requests)
    # Every image was fetched once: the prefetched one came from the cache when it was shown.
    gets = image_gets()
    assert len(gets) == len(set(gets)) == 4, gets
    assert all(r["headers"].get("authorization", "").startswith("Bearer v1.") for r in log.requests
               if "/instances/" in r["url"] and r["method"] == "GET")
    assert not log.errors, log.errors
    page.context.close()

    # What the UI submitted is what the server stored.
    tasks_status, tasks = admin.call("GET", f"/review/jobs/{job['id']}/tasks?filter=all")
    assert tasks_status == 200
    answered = [t for t in tasks["tasks"] if t["answers"] >= 1]
    assert len(answered) == 3
    details = {t["taskId"]: admin.call("GET", f"/review/tasks/{t['taskId']}")[1] for t in answered}
    answers = [a for d in details.values() for a in d["answers"] if a["reader"] == "ann"]
    assert len(answers) == 3
    by_state = sorted(json.dumps(sorted(k for k, v in a["findings"].items() if v != "absent")) for a in answers)
    assert by_state == sorted([json.dumps(["Cardiomegaly"]), json.dumps(["No Finding"]), json.dumps(["Edema"])])
    with_roi = [a for a in answers if a["rois"]]
    assert len(with_roi) == 1 and with_roi[0]["rois"][0]["tool"] == "rectangle"
    assert with_roi[0]["rois"][0]["finding"] == "Cardiomegaly"

    # ---- a second reader disagrees on every image (through the API)
    bob = Api(base_url=site["base"]).login("bob", PASSWORD)
    for _ in range(3):
        status, data = bob.call("POST", f"/jobs/{job['id']}/next")
        assert status == 200, data
        a = data["assignment"]
        status, data = bob.submit(a["id"], {"Pneumothorax": "present"}, sop=a["image"]["sopInstanceUid"])
        assert status == 201, data

    # ---- reviewer: disagreements first, answers side by side, adjudicate
    page, log = sign_in(site, "rev", PASSWORD)
    page.get_by_role("link", name="Review").click()
    page.wait_for_url("**/ui/review")
    page.wait_for_selector("#dl-review-tasks button")
    first_row = page.locator("#dl-review-tasks tbody tr").first
    task_label = (first_row.locator("td").first.text_content() or "").strip()
    task_id = int(task_label.split()[-1])
    first_row.get_by_role("button").click()
    page.wait_for_function(
        "() => [...document.querySelectorAll('#dl-review-answers .dl-viewer')].length === 2 && "
        "[...document.querySelectorAll('#dl-review-answers .dl-viewer, #dl-adjudicate-viewer')]"
        ".every(v => v.dataset.state === 'ready')", timeout=60_000)
    readers = page.locator("#dl-review-answers h3").all_text_contents()
    assert any("ann" in r for r in readers) and any("bob" in r for r in readers)
    shown = admin.call("GET", f"/review/tasks/{task_id}")[1]
    rois = sum(len(a["rois"]) for a in shown["answers"])
    assert page.locator("#dl-review-answers .dl-roi-list li").count() == rois
    page.evaluate("window.dicomlabViewer.setFinding('Pneumothorax', 'present')")
    page.get_by_label("Note").fill("Pneumothorax visible at the apex.")
    page.get_by_role("button", name="Save adjudication").click()
    page.wait_for_function("() => document.getElementById('dl-message').textContent.includes('saved')")
    assert not log.errors, log.errors
    page.context.close()
    detail = admin.call("GET", f"/review/tasks/{task_id}")[1]
    assert detail["adjudication"]["findings"]["Pneumothorax"] == "present"
    assert detail["adjudication"]["note"] == "Pneumothorax visible at the apex."
    # The editor started from the readers' ROIs (each once); the reviewer kept them all.
    started = {json.dumps(r, sort_keys=True) for a in shown["answers"] for r in a["rois"]}
    assert len(detail["adjudication"]["rois"]) == len(started)

    # ---- admin: job statistics and export
    page, log = sign_in(site, *ADMIN)
    page.get_by_role("link", name="Admin").click()
    page.wait_for_url("**/ui/admin")
    page.get_by_role("button", name="Details of ui-batch").click()
    page.wait_for_selector("#dl-admin-readers tbody tr")
    readers_text = page.locator("#dl-admin-readers").text_content() or ""
    assert "ann" in readers_text and "bob" in readers_text
    assert page.locator("#dl-admin-agreement tbody tr").count() == len(job["labels"])
    page.get_by_role("button", name="Export output manifest and CSV").click()
    page.wait_for_function("() => document.getElementById('dl-export-result').dataset.manifestUri")
    manifest_uri = page.locator("#dl-export-result").get_attribute("data-manifest-uri") or ""
    assert manifest_uri.endswith("output.manifest")
    exported = Path(manifest_uri.removeprefix("file://")) if manifest_uri.startswith("file://") else None
    if exported is None:
        exported = next(site["store"].rglob("output.manifest"))
    lines = [json.loads(line) for line in exported.read_text().splitlines() if line.strip()]
    assert len(lines) >= 3
    assert not log.errors, log.errors
    page.context.close()


def test_login_page_rejects_a_wrong_password(site: dict[str, Any]) -> None:
    context = browser().new_context()
    page = context.new_page()
    page.goto(site["base"] + "/ui/login")
    page.get_by_label("User name").fill("ann")
    page.get_by_label("Password").fill("not-the-password")
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_function("() => document.getElementById('dl-message').textContent.length > 0")
    assert "Wrong user name or password" in (page.locator("#dl-message").text_content() or "")
    assert page.url.endswith("/ui/login")
    context.close()

