"""ROIs drawn first and tied to a finding after, and findings "not looked at" (#19 items 5 and 7), in the
labeling page at 1366×768 and 1920×1080: the real app, proxy and Orthanc, keyboard only.

A polygon placed by clicks (G, a click per vertex, Enter) has no finding until the reader presses the
finding's key; its finding's name is drawn next to it on the image; statistics appear only when asked
(Shift+I); the ROI list is on screen without scrolling; an ROI without a finding and a finding not looked
at each block submitting with a message; "mark the rest absent" (Shift+N) sets only the findings not
looked at; a job whose default is ``absent`` starts every finding absent; the admin form sets the option.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
from selfhosted_support import ADMIN, PASSWORD, Api, create_users, make_config, write_manifest
from ui_support import PageLog, browser, ensure_bundle, serve

from dicomlab_cli.processes import free_port

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CHEXPERT = ["No Finding", "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Opacity", "Lung Lesion", "Edema",
            "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax", "Pleural Effusion", "Pleural Other",
            "Fracture", "Support Devices"]
SIZES = [(1366, 768), (1920, 1080)]


@pytest.fixture(scope="module")
def site(orthanc: Any, synthetic_set: list[dict[str, Any]],
         tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    from dicomlab_labeling.app import create_app as labeling_app
    from dicomlab_proxy.app import create_app as proxy_app
    from dicomlab_proxy.config import Config as ProxyConfig

    ensure_bundle()
    tmp = tmp_path_factory.mktemp("roi-findings")
    labeling_port, proxy_port = free_port(), free_port()
    config = make_config(tmp, f"sqlite:///{tmp / 'labeling.db'}", orthanc)
    config = replace(config, proxy_public_url=f"http://127.0.0.1:{proxy_port}")
    proxy = proxy_app(ProxyConfig(token_keys=config.token_keys, orthanc=orthanc.settings(),
                                  allowed_origins=(f"http://127.0.0.1:{labeling_port}",)))
    app = labeling_app(config)
    with serve(proxy, port=proxy_port), serve(app, port=labeling_port) as base:
        admin = Api(base_url=base).login(*ADMIN)
        manifest = write_manifest(tmp, synthetic_set[:6])
        jobs = {}
        for name, extra in (("rois", {"labels": CHEXPERT}), ("starts-absent", {"defaultFindingState": "absent"})):
            status, job = admin.call("POST", "/admin/jobs", {"name": name, "manifestUri": manifest, "readersPerImage": 1,
                                                             "strategy": "in-order", "leaseSeconds": 300, **extra})
            assert status == 201, job
            jobs[name] = job
        assert jobs["rois"]["defaultFindingState"] == "not-looked-at"
        create_users(admin, [f"r{w}" for w, _ in SIZES])
        yield {"base": base, "jobs": jobs, "manifest": manifest}
    app.extensions["dicomlab_labeling_api"].db.dispose()


def open_labeling(site: dict[str, Any], size: tuple[int, int], job: str) -> tuple[Any, PageLog]:
    context = browser().new_context(viewport={"width": size[0], "height": size[1]})
    page = context.new_page()
    log = PageLog()
    log.attach(page)
    page.goto(site["base"] + "/ui/login")
    page.get_by_label("User name").fill(f"r{size[0]}")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url("**/ui/queue")
    page.get_by_role("link", name=f"Label images of {job}").click()
    page.wait_for_function("() => document.querySelector('#dl-viewer')?.dataset.state === 'ready' "
                           "&& document.body.dataset.busy === 'false'", timeout=60_000)
    return page, log


def findings(page: Any) -> dict[str, str]:
    return dict(page.evaluate("window.dicomlabViewer.getAnswer().findings"))


def svg_text(page: Any) -> str:
    """The text Cornerstone draws over the image (its SVG layer), next to each annotation."""
    return str(page.evaluate("[...document.querySelectorAll('.dl-viewport svg text')].map((t) => t.textContent)"
                             ".join(' | ')"))


def submits(log: PageLog) -> list[dict[str, Any]]:
    return [r for r in log.requests if r["method"] == "POST" and r["url"].endswith("/submit")]


def key_of(page: Any, label: str) -> str:
    return str(page.evaluate(f"window.dicomlabViewer.hotkeys.get({json.dumps(label)})"))


def place(page: Any, rect: dict[str, float], vertices: list[tuple[float, float]]) -> None:
    """Click each vertex (fractions of the image on screen), waiting until the polygon tool has taken it
    (Cornerstone holds a click back a moment to tell it from a double-click)."""
    for n, (fx, fy) in enumerate(vertices, 1):
        page.mouse.click(rect["x"] + rect["width"] * fx, rect["y"] + rect["height"] * fy)
        page.wait_for_function(f"() => window.dicomlabViewer.view.polygonVertices() === {n}", timeout=10_000)


def on_screen(page: Any, selector: str, size: tuple[int, int]) -> None:
    """The element is inside the window and inside its scrolled panel, and the page itself is not scrolled."""
    box = page.locator(selector).bounding_box()
    assert box is not None, selector
    assert box["x"] >= 0 and box["x"] + box["width"] <= size[0], (selector, box, size)
    assert box["y"] >= 0 and box["y"] + box["height"] <= size[1], (selector, box, size)
    assert page.evaluate("window.scrollY") == 0
    side = page.locator(".dl-side").bounding_box()
    assert side is not None and side["y"] + side["height"] <= size[1] + 1, (side, size)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_polygon_by_clicks_then_its_finding_by_key_and_the_rest_absent(site: dict[str, Any],
                                                                       size: tuple[int, int]) -> None:
    page, log = open_labeling(site, size, "rois")
    assignment = page.evaluate("document.body.dataset.assignmentId")
    # Every finding starts "not looked at" (the job's default), and says so in its row.
    assert set(findings(page).values()) == {"not-looked-at"}
    assert page.locator(".dl-finding[data-state='not-looked-at'] .dl-not-looked").first.is_visible()
    page.keyboard.press("Control+Enter")
    page.wait_for_timeout(200)
    assert not submits(log)
    assert "Not looked at yet" in (page.locator(".dl-problems").text_content() or "")

    # G, then a click per vertex, then Enter: a four-vertex polygon without a finding yet.
    box = page.locator(".dl-viewport").bounding_box()
    rect = page.evaluate("window.dicomlabViewer.imageRectOnScreen()")
    assert box is not None and rect is not None
    page.keyboard.press("g")
    assert page.evaluate("document.querySelector('#dl-viewer').dataset.tool") == "polygon"
    corners = [(0.35, 0.35), (0.65, 0.35), (0.65, 0.6), (0.4, 0.65)]
    place(page, rect, corners)
    assert page.locator(".dl-roi-list li").count() == 0  # still being placed
    page.keyboard.press("Enter")
    page.wait_for_function("() => document.querySelectorAll('.dl-roi-list li').length === 1", timeout=10_000)
    rois = page.evaluate("window.dicomlabViewer.rois()")
    assert len(rois) == 1 and rois[0]["tool"] == "polygon" and rois[0]["finding"] == ""
    points = rois[0]["points"]
    assert len(points) == 4, points
    columns = rows = 256  # the synthetic images
    for (fx, fy), (x, y) in zip(corners, points, strict=True):
        assert abs(x - fx * columns) < 4 and abs(y - fy * rows) < 4, (corners, points)
    assert page.locator(".dl-roi-list li[data-unassigned='true']").count() == 1
    assert "No finding yet" in svg_text(page)

    # An ROI without a finding blocks submitting, with a message.
    page.keyboard.press("Control+Enter")
    page.wait_for_timeout(200)
    assert not submits(log)
    assert "no finding" in (page.locator(".dl-problems").text_content() or "")

    # The finding's key ties the selected new ROI to it (and says the finding is present).
    page.keyboard.press(key_of(page, "Edema"))
    page.wait_for_function("() => window.dicomlabViewer.rois()[0].finding === 'Edema'")
    assert findings(page)["Edema"] == "present"
    assert page.locator(".dl-roi-list li[data-unassigned='false']").count() == 1
    page.wait_for_function("() => [...document.querySelectorAll('.dl-viewport svg tspan')]"
                           ".some((t) => t.textContent === 'Edema')")
    # With no new ROI selected, the key cycles the finding again.
    cardio = key_of(page, "Cardiomegaly")
    page.keyboard.press(cardio)
    page.keyboard.press(cardio)
    assert findings(page)["Cardiomegaly"] == "uncertain"
    on_screen(page, ".dl-roi-list li", size)

    # Statistics: hidden by default, shown on Shift+I, hidden again.
    assert "Mean" not in svg_text(page)
    page.keyboard.press("Shift+I")
    page.wait_for_function("() => [...document.querySelectorAll('.dl-viewport svg tspan')]"
                           ".some((t) => t.textContent.startsWith('Mean'))")
    assert "Area" in svg_text(page) and "Std" in svg_text(page) and "Edema" in svg_text(page)
    assert page.locator(".dl-roi-stats").is_checked()
    page.keyboard.press("Shift+I")
    page.wait_for_function("() => ![...document.querySelectorAll('.dl-viewport svg tspan')]"
                           ".some((t) => t.textContent.startsWith('Mean'))")
    assert "Edema" in svg_text(page)

    # Shift+N: every finding not looked at becomes absent; the decided ones stay as they are.
    page.keyboard.press("Shift+N")
    states = findings(page)
    assert states["Edema"] == "present" and states["Cardiomegaly"] == "uncertain"
    assert {k: v for k, v in states.items() if k not in ("Edema", "Cardiomegaly")} == {
        k: "absent" for k in CHEXPERT if k not in ("Edema", "Cardiomegaly")}
    page.keyboard.press("Control+Enter")
    page.wait_for_function(f"() => document.body.dataset.assignmentId !== {json.dumps(assignment)}", timeout=30_000)
    stored = page.evaluate(f"fetch('/api/assignments/{assignment}').then((r) => r.json())")
    answer = stored["mySubmission"]["answer"]
    assert answer["findings"] == states
    assert [(r["tool"], r["finding"], len(r["points"])) for r in answer["rois"]] == [("polygon", "Edema", 4)]
    page.context.close()


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_escape_cancels_a_polygon_and_a_job_default_absent_starts_findings_absent(site: dict[str, Any],
                                                                                   size: tuple[int, int]) -> None:
    page, log = open_labeling(site, size, "starts-absent")
    states = findings(page)
    assert states and set(states.values()) == {"absent"}
    assert page.locator(".dl-rest-absent").is_disabled()  # nothing is "not looked at"
    assert page.locator(".dl-finding[data-state='not-looked-at']").count() == 0
    # Escape drops a polygon being placed.
    rect = page.evaluate("window.dicomlabViewer.imageRectOnScreen()")
    page.keyboard.press("g")
    place(page, rect, [(0.3, 0.3), (0.6, 0.3), (0.5, 0.6)])
    page.keyboard.press("Escape")
    page.wait_for_timeout(200)
    assert page.evaluate("window.dicomlabViewer.rois().length") == 0
    assert page.evaluate("window.dicomlabViewer.view.drawingPolygon()") is False
    # A click on the first vertex closes a polygon too; Delete removes the last ROI.
    triangle = [(0.3, 0.3), (0.6, 0.3), (0.5, 0.6)]
    place(page, rect, triangle)
    page.mouse.click(rect["x"] + rect["width"] * triangle[0][0], rect["y"] + rect["height"] * triangle[0][1])
    page.wait_for_function("() => window.dicomlabViewer.rois().length === 1", timeout=10_000)
    assert len(page.evaluate("window.dicomlabViewer.rois()[0].points")) == 3
    page.keyboard.press("Delete")
    page.wait_for_function("() => window.dicomlabViewer.rois().length === 0")
    # A double-click closes it as well (the double-click's point is its last vertex).
    place(page, rect, triangle[:2])
    page.mouse.dblclick(rect["x"] + rect["width"] * 0.45, rect["y"] + rect["height"] * 0.7)
    page.wait_for_function("() => window.dicomlabViewer.rois().length === 1", timeout=10_000)
    assert len(page.evaluate("window.dicomlabViewer.rois()[0].points")) >= 3
    page.keyboard.press("Delete")
    page.wait_for_function("() => window.dicomlabViewer.rois().length === 0")
    # With findings absent by default, "No Finding" alone is a complete answer.
    page.keyboard.press("f")
    page.keyboard.press("Control+Enter")
    page.wait_for_function("() => document.querySelectorAll('.dl-roi-list li').length === 0")
    for _ in range(100):
        if submits(log):
            break
        page.wait_for_timeout(100)
    assert len(submits(log)) == 1
    page.context.close()


def test_the_admin_form_sets_the_default_finding_state(site: dict[str, Any]) -> None:
    context = browser().new_context(viewport={"width": 1366, "height": 768})
    page = context.new_page()
    page.goto(site["base"] + "/ui/login?next=/ui/admin")
    page.get_by_label("User name").fill(ADMIN[0])
    page.get_by_label("Password").fill(ADMIN[1])
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url("**/ui/admin")
    name = site["manifest"].rsplit("/", 1)[-1]
    page.wait_for_selector(f"#dl-job-manifest option[value$='{name}']", state="attached")
    page.fill("#dl-job-name", "from-form")
    value = page.locator(f"#dl-job-manifest option[value$='{name}']").first.get_attribute("value")
    page.select_option("#dl-job-manifest", value)
    page.fill("#dl-job-readers", "1")
    assert page.locator("#dl-job-default-state").input_value() == "not-looked-at"
    page.select_option("#dl-job-default-state", "absent")
    page.get_by_role("button", name="Create job").click()
    page.wait_for_function("() => document.getElementById('dl-message').textContent.includes('from-form')")
    jobs = page.evaluate("fetch('/api/admin/jobs').then((r) => r.json())")["jobs"]
    created = next(j for j in jobs if j["name"] == "from-form")
    assert created["defaultFindingState"] == "absent"
    context.close()
