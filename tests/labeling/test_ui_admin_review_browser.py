"""The admin and review pages in headless Chromium at 1366×768 and 1920×1080 against the real labeling
app, proxy and Orthanc: agreement with its reading, readers' reliability, Chart.js charts, the
reader-versus-consensus matrix (a chart with its values as a table, both equal to the API's numbers),
users and jobs created from the page, export download links served by the service; review
pages with a total, filters, readers' findings as text and the adjudication editor prefilled with
the readers' ROIs. Screenshots go to the test's tmp dir (DICOMLAB_SCREENSHOTS=dir keeps a copy)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from selfhosted_support import ADMIN, PASSWORD, Api
from support.browser import log_in, new_page
from support.site import labeling_site
from ui_support import PageLog

pytestmark = [pytest.mark.browser, pytest.mark.slow]

VIEWPORTS = [pytest.param({"width": 1366, "height": 768}, id="1366x768"),
             pytest.param({"width": 1920, "height": 1080}, id="1920x1080")]
ROI = {"tool": "rectangle", "finding": "Edema", "points": [[10.0, 12.0], [40.0, 44.0]]}


@pytest.fixture(scope="module")
def site(orthanc: Any, synthetic_set: list[dict[str, Any]],
         tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    records = sorted(synthetic_set, key=lambda r: r["compression"] != "none")[:3]
    with labeling_site(orthanc, tmp_path_factory.mktemp("admin-ui")) as running:
        base, admin, tmp = running.base, running.admin, running.tmp
        job = running.create_job("charts", records, readersPerImage=2, strategy="in-order",
                                 allowPatientIdentifiers=True)
        running.users(["ann", "bob"])
        running.users(["rev"], role="reviewer")
        # ann and bob answer every image; they disagree on Edema in image 0 only, where ann drew a box.
        for name in ("ann", "bob"):
            reader = Api(base_url=base).login(name, PASSWORD)
            for index in range(3):
                a = reader.call("POST", f"/jobs/{job['id']}/next")[1]["assignment"]
                edema = "present" if index == 0 and name == "ann" else "absent"
                answer = {"findings": {"Edema": edema, "Cardiomegaly": "absent"},
                          "rois": [ROI] if edema == "present" else [], "timeSpentSeconds": 12.0 + index,
                          "sopInstanceUid": a["image"]["sopInstanceUid"]}
                status, data = reader.call("POST", f"/assignments/{a['id']}/submit",
                                           {"clientSubmissionId": f"{name}-{index}", "answer": answer})
                assert status == 201, data
        yield {"base": base, "job": job, "admin": admin, "tmp": tmp}


def sign_in(site: dict[str, Any], username: str, password: str, path: str,
            viewport: dict[str, int] | None = None) -> tuple[Any, PageLog]:
    page, log = new_page(viewport, accept_downloads=True)
    log_in(page, site["base"], username, password, next_path=path)
    return page, log


def keep(site: dict[str, Any], page: Any, name: str) -> Path:
    shot: Path = site["tmp"] / name
    page.screenshot(path=str(shot), full_page=True)
    if os.environ.get("DICOMLAB_SCREENSHOTS"):
        Path(os.environ["DICOMLAB_SCREENSHOTS"]).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(os.environ["DICOMLAB_SCREENSHOTS"]) / name)
    return shot


def cells(page: Any, table: str) -> list[list[str]]:
    return [[c.strip() for c in r.locator("td, th").all_text_contents()]
            for r in page.locator(f"#{table} tbody tr").all()]


@pytest.mark.parametrize("viewport", VIEWPORTS)
def test_admin_page_statistics_charts_users_jobs_export(site: dict[str, Any], viewport: dict[str, int]) -> None:
    size = f"{viewport['width']}x{viewport['height']}"
    page, log = sign_in(site, *ADMIN, "/ui/admin", viewport)
    page.wait_for_selector("#dl-admin-jobs tbody tr")
    jobs = {row[0]: row for row in cells(page, "dl-admin-jobs")}
    # Progress as labelled numbers and percentages: 3 of 3 images complete, 6 of 6 answers.
    assert jobs["charts"][:4] == ["charts", "active", "3 of 3 (100 %)", "6 of 6 (100 %)"], jobs
    page.get_by_role("button", name="Details of charts").click()
    page.wait_for_selector("#dl-admin-agreement tbody tr")
    progress = page.locator("#dl-admin-progress").inner_text()
    assert "Images complete" in progress and "3 of 3 (100 %)" in progress and "answers" not in progress.split()

    agreement = {r[0]: r for r in cells(page, "dl-admin-agreement")}
    api_findings = site["admin"].call("GET", f"/admin/jobs/{site['job']['id']}/agreement")[1]["findings"]
    for label, value in api_findings.items():
        shown = agreement[label]
        kappa = value["fleissKappa"]
        assert shown[1] == ("—" if kappa is None else f"{kappa:.2f}")
        if value["kappaBand"]:
            assert shown[2] == value["kappaBand"]
        if value["alphaBand"]:
            assert shown[4] == value["alphaBand"]
    assert any(r[1] != "—" for r in agreement.values())  # the statistics are actually displayed now

    readers = {r[0]: r for r in cells(page, "dl-admin-readers")}
    assert set(readers) == {"ann", "bob"}
    assert readers["ann"][6] == str(round(3600 / 13.0))  # images/hour from mean time spent (12, 13, 14 s)
    # The reader-versus-consensus matrix: its table (the chart's text alternative) holds the API's numbers.
    activity = site["admin"].call("GET", f"/admin/jobs/{site['job']['id']}/activity")[1]
    header = [h.strip() for h in page.locator("#dl-admin-matrix thead th").all_text_contents()]
    matrix = {r[0]: dict(zip(header[1:], r[1:], strict=True)) for r in cells(page, "dl-admin-matrix")}
    assert set(matrix) == set(activity["readerConsensus"]) == {"ann", "bob"}
    for reader, shares in activity["readerConsensus"].items():
        expected = {label: f"{round(v * 100)} %" for label, v in shares.items() if v is not None}
        assert expected and matrix[reader] == {label: expected.get(label, "—") for label in header[1:]}, matrix
    assert any(v != "100 %" for row in matrix.values() for v in row.values())  # ann and bob disagree once
    figure = page.locator("#dl-chart-matrix")
    assert figure.get_attribute("role") == "img" and figure.get_attribute("aria-describedby")
    box = figure.bounding_box()
    assert box is not None and box["width"] <= viewport["width"] and box["height"] >= 90, box
    assert page.evaluate("document.documentElement.scrollWidth") <= viewport["width"]  # no sideways scrolling

    # Every chart is drawn by Chart.js on its canvas.
    drawn = page.evaluate("""() => ['dl-chart-jobs', 'dl-chart-per-day', 'dl-chart-times', 'dl-chart-kappa',
                                    'dl-chart-matrix']
        .map(id => { const c = document.getElementById(id); return [id, c.width > 0 && c.height > 0,
                     c.getContext('2d').getImageData(0, 0, c.width, c.height).data.some(v => v !== 0)]; })""")
    assert all(ok and painted for _, ok, painted in drawn), drawn
    shot = keep(site, page, f"admin-{size}.png")
    assert shot.stat().st_size > 10_000

    # Export: progress while it runs, then links served by the service (no file:// path on the page).
    page.get_by_role("button", name="Export output manifest and CSV").click()
    page.wait_for_selector("#dl-export-links a")
    text = page.locator("#dl-admin-job").inner_text()
    assert "file://" not in text and "s3://" not in text
    link = page.get_by_role("link", name="Labels CSV")
    href = link.get_attribute("href") or ""
    assert href == f"/api/admin/jobs/{site['job']['id']}/export/csv"
    with page.expect_download() as download:
        link.click()
    csv = Path(download.value.path()).read_text()
    assert "Edema" in csv
    assert requests.get(site["base"] + href, timeout=30).status_code == 401  # not without a session

    # Users: create one, change its role, reset its password, deactivate it.
    dora = f"dora{viewport['width']}"
    page.get_by_label("User name").fill(dora)
    page.locator("#dl-user-role").select_option("reviewer")
    page.get_by_label("Initial password").fill("dora-password-1")
    page.get_by_role("button", name="Create user").click()
    page.wait_for_selector(f"#dl-admin-users tbody tr:has-text('{dora}')")
    Api(base_url=site["base"]).login(dora, "dora-password-1")
    page.get_by_label(f"Role of {dora}").select_option("annotator")
    page.wait_for_function(f"() => document.getElementById('dl-message').textContent.includes('{dora} is now annotator')")
    page.get_by_label(f"New password for {dora}").fill("dora-password-2")
    page.get_by_role("button", name=f"Reset password of {dora}").click()
    page.wait_for_function(f"() => document.getElementById('dl-message').textContent.includes('Password of {dora}')")
    Api(base_url=site["base"]).login(dora, "dora-password-2")
    page.get_by_role("button", name=f"Deactivate {dora}").click()
    page.wait_for_selector(f"#dl-admin-users tbody tr:has-text('{dora}'):has-text('deactivated')")
    users = {u["username"]: u for u in site["admin"].call("GET", "/admin/users")[1]["users"]}
    assert users[dora]["role"] == "annotator" and users[dora]["active"] is False
    log.errors = [e for e in log.errors if "HTTP 401" not in e]

    # Jobs: the manifest is picked from the store's list.
    options = page.locator("#dl-job-manifest option").all_text_contents()
    assert any("manifests/input.manifest" in o for o in options), options
    name = f"from-the-page-{viewport['width']}"
    page.get_by_label("Name", exact=True).fill(name)
    page.locator("#dl-job-manifest").select_option("manifests/input.manifest")
    page.get_by_label("Readers per image").fill("1")
    page.locator("#dl-job-strategy").select_option("random")
    page.get_by_label("Instructions").fill("Look at the apex.")
    page.get_by_label("Due date").fill("2031-05-01")
    page.get_by_role("button", name="Create job").click()
    page.wait_for_selector(f"#dl-admin-jobs tbody tr:has-text('{name}')")
    created = next(j for j in site["admin"].call("GET", "/admin/jobs")[1]["jobs"] if j["name"] == name)
    assert created["readersPerImage"] == 1 and created["strategy"] == "random"
    assert created["instructions"] == "Look at the apex." and created["dueDate"].startswith("2031-05-01")
    assert not log.errors, log.errors
    page.context.close()


@pytest.mark.parametrize("viewport", VIEWPORTS)
def test_review_page_pages_filters_text_states_and_prefilled_rois(site: dict[str, Any],
                                                                  viewport: dict[str, int]) -> None:
    page, log = sign_in(site, "rev", PASSWORD, "/ui/review", viewport)
    page.wait_for_selector("#dl-review-tasks tbody tr button")
    page.locator("#dl-review-job").select_option(str(site["job"]["id"]))
    page.locator("#dl-review-filter").select_option("all")
    page.locator("#dl-review-size").select_option("25")
    page.wait_for_function("() => document.getElementById('dl-review-range').textContent.includes('of 3')")
    assert page.locator("#dl-review-tasks tbody tr").count() == 3
    page.locator("#dl-review-finding").select_option("Edema")
    page.wait_for_function("() => document.getElementById('dl-review-range').textContent.includes('of 1')")
    page.locator("#dl-review-finding").select_option("Cardiomegaly")
    page.wait_for_function("() => document.getElementById('dl-review-range').textContent === 'No tasks'")
    page.locator("#dl-review-finding").select_option("")
    page.locator("#dl-review-level").select_option("0.25")
    page.wait_for_function("() => document.getElementById('dl-review-range').textContent.includes('of 1')")
    row = cells(page, "dl-review-tasks")[0]
    assert row[2] == "ann, bob" and row[4] == "Edema"
    page.get_by_role("button", name=row[0].replace("Task", "Review task")).click()
    page.wait_for_function(
        "() => [...document.querySelectorAll('#dl-review-answers .dl-viewer, #dl-adjudicate-viewer')]"
        ".every(v => v.dataset.state === 'ready') && window.dicomlabViewer", timeout=60_000)
    texts = page.locator("#dl-review-answers .dl-findings-text").all_inner_texts()
    assert any("Edema: present" in t and "differs from consensus" in t for t in texts) or \
        any("Edema: absent" in t and "differs from consensus" in t for t in texts), texts
    prefilled = page.evaluate("window.dicomlabViewer.getAnswer()")
    assert len(prefilled["rois"]) == 1 and prefilled["rois"][0]["finding"] == "Edema"
    keep(site, page, f"review-{viewport['width']}x{viewport['height']}.png")
    assert not log.errors, log.errors
    page.context.close()


def test_progress_shows_no_raw_api_keys(site: dict[str, Any]) -> None:
    """The admin page never shows raw API keys as labels (the old view printed 'activeLeases' etc.)."""
    page, log = sign_in(site, *ADMIN, "/ui/admin")
    page.get_by_role("button", name="Details of charts").click()
    page.wait_for_selector("#dl-admin-progress dt")
    words = page.locator("#dl-admin-progress").inner_text()
    for key in ("activeLeases", "expiredLeases", "oldestWaitingSeconds", "complete:"):
        assert key not in words
    assert not log.errors, log.errors
    page.context.close()
