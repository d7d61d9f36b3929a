"""A failed image load never looks like success (the labeling page, real app, proxy and Orthanc).

The first job hides patient identifiers (the default), so the viewer reads WADO-RS metadata and frames;
the second allows them, so the viewer loads whole files (the image loader's own XMLHttpRequest), as the
Ground Truth worker page does. Neither path may leave an uncaught error on the page. Playwright intercepts the image
requests (metadata, frames, or the file) of chosen images and answers 403, 500, a network failure (what
the page also sees when CORS blocks a response: Playwright's own responses bypass CORS, so a block is
not staged), bytes that are not DICOM, or nothing at all (a hang). Each time the
canvas is cleared (the previous image is not shown), the error is shown with "Retry" and "Skip: could
not load", and nothing can be submitted — by button or by Ctrl+Enter — until a retry displays the right
image. "Skip: could not load" gives the image back with that reason.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from selfhosted_support import PASSWORD
from support.browser import log_in, new_page
from support.site import labeling_site
from ui_support import PageLog, pixel_stats

pytestmark = [pytest.mark.browser, pytest.mark.slow]

LOAD_TIMEOUT_MS = 3000
SIZES = [(1366, 768), (1920, 1080)]


def size_id(size: tuple[int, int]) -> str:
    return f"{size[0]}x{size[1]}"


@pytest.fixture(scope="module")
def site(orthanc: Any, synthetic_set: list[dict[str, Any]],
         tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    records = synthetic_set[:4]
    with labeling_site(orthanc, tmp_path_factory.mktemp("loadfail")) as running:
        # One job and one reader per window size (each run labels and skips its job's images).
        jobs = {size: running.create_job(f"load-failures-{size_id(size)}", records, readersPerImage=1,
                                         strategy="in-order", leaseSeconds=300, allowPatientIdentifiers=False)
                for size in SIZES}
        running.create_job("whole-files", records, readersPerImage=1, strategy="in-order",
                           leaseSeconds=300, allowPatientIdentifiers=True)
        running.users([f"flaky{w}" for w, _ in SIZES] + ["whole"])
        yield {"base": running.base, "jobs": jobs, "admin": running.admin, "records": records,
               "origin": running.base}


class ImageRoutes:
    """Per-image behaviour of the image requests: None lets them through."""

    def __init__(self, origin: str, records: list[dict[str, Any]]) -> None:
        self.modes: dict[str, str | None] = {}
        self.origin = origin
        self.hung: list[Any] = []
        # An image is asked for by its Orthanc id (/instances/<id>/file) or by its SOP Instance UID (WADO-RS).
        self.uids = {r["orthanc_id"]: r["sop_uid"] for r in records}

    def handle(self, route: Any) -> None:
        url = route.request.url
        mode = next((m for oid, m in self.modes.items()
                     if f"/instances/{oid}/file" in url or f"/instances/{self.uids[oid]}/" in url), None)
        cors = {"Access-Control-Allow-Origin": self.origin}
        if mode is None or route.request.method == "OPTIONS":
            route.continue_()
        elif mode in ("403", "500"):
            route.fulfill(status=int(mode), body=b'{"description": "refused"}', headers=cors,
                          content_type="application/json")
        elif mode == "abort":
            route.abort("failed")
        elif mode == "garbage":
            route.fulfill(status=200, body=b"this is not a DICOM file" * 40, headers=cors,
                          content_type="application/dicom")
        elif mode == "hang":
            self.hung.append(route)  # never answered
        else:
            raise AssertionError(mode)


def open_labeling(site: dict[str, Any], routes: ImageRoutes, user: str = "flaky1366",
                  job: str = "load-failures-1366x768", viewport: dict[str, int] | None = None) -> tuple[Any, PageLog]:
    page, log = new_page(viewport, init_script=f"window.dicomlabConfig = {{ loadTimeoutMs: {LOAD_TIMEOUT_MS} }};")
    page.route("**/instances/**", routes.handle)
    log_in(page, site["base"], user, PASSWORD)
    page.get_by_role("link", name=f"Label images of {job}").click()
    return page, log


def uncaught(log: PageLog) -> list[str]:
    """Errors the page did not handle (an unhandled rejection of a refused request shows up here)."""
    return [e for e in log.errors if e.startswith("pageerror")]


def viewer_state(page: Any) -> str:
    return str(page.evaluate("document.querySelector('#dl-viewer').dataset.state"))


def wait_state(page: Any, state: str) -> None:
    page.wait_for_function(f"() => document.querySelector('#dl-viewer')?.dataset.state === {json.dumps(state)} "
                           "&& document.body.dataset.busy === 'false'", timeout=60_000)


def in_window(page: Any, target: Any) -> bool:
    box, size = target.bounding_box(), page.viewport_size
    return bool(box) and box["x"] >= 0 and box["y"] >= 0 and (
        box["x"] + box["width"] <= size["width"] and box["y"] + box["height"] <= size["height"])


def submits(log: PageLog) -> list[str]:
    return [r["url"] for r in log.requests if r["method"] == "POST" and r["url"].endswith("/submit")]


def assert_failed_and_blocked(page: Any, log: PageLog, expected: str) -> None:
    """The error is shown, the canvas is blank, and no way of submitting works."""
    wait_state(page, "error")
    panel = page.locator(".dl-load-error")
    assert panel.is_visible()
    text = panel.text_content() or ""
    assert expected in text, text
    assert page.get_by_role("button", name="Retry").is_visible()
    assert page.get_by_role("button", name="Skip: could not load").is_visible()
    # The error and its actions are on screen without scrolling, at either window size.
    for target in (panel, page.get_by_role("button", name="Retry"),
                   page.get_by_role("button", name="Skip: could not load"), page.locator("#dl-submit")):
        assert in_window(page, target), (target, target.bounding_box(), page.viewport_size)
    # Nothing drawn: the viewport's canvases are gone, or hidden and cleared, and the screen shows no image there
    # (the error panel, which sits over the viewport, is set aside for that screenshot).
    canvases = page.evaluate("""() => [...document.querySelectorAll('.dl-viewport canvas')].map((c) => {
        const ctx = c.getContext('2d');
        const data = ctx ? ctx.getImageData(0, 0, c.width, c.height).data : null;
        return { hidden: getComputedStyle(c).visibility === 'hidden', blank: data ? data.every((v) => v === 0) : null };
    })""")
    assert all(c["hidden"] and c["blank"] is not False for c in canvases), canvases
    page.evaluate("document.querySelector('.dl-load-error').style.visibility = 'hidden'")
    std, levels = pixel_stats(page.locator(".dl-viewport").screenshot())
    page.evaluate("document.querySelector('.dl-load-error').style.visibility = ''")
    assert std < 1 and levels <= 2, (std, levels)
    assert "Image loaded" not in (page.locator(".dl-status").text_content() or "")
    assert page.locator("#dl-submit").is_disabled()
    before = len(submits(log))
    page.keyboard.press("y")
    page.keyboard.press("Control+Enter")
    page.wait_for_timeout(300)
    assert len(submits(log)) == before
    assert page.evaluate("window.dicomlabViewer.validate().length") > 0


@pytest.mark.parametrize("size", SIZES, ids=size_id)
def test_failed_loads_clear_the_canvas_block_submission_and_retry(site: dict[str, Any], size: tuple[int, int]) -> None:
    routes = ImageRoutes(site["origin"], site["records"])
    ids = [r["orthanc_id"] for r in site["records"]]
    # Image 2 is refused, image 3 fails in every other way in turn; set before the page prefetches them.
    routes.modes = {ids[1]: "403", ids[2]: "500"}
    page, log = open_labeling(site, routes, user=f"flaky{size[0]}", job=f"load-failures-{size_id(size)}",
                              viewport={"width": size[0], "height": size[1]})

    # Image 1 loads and is labelled.
    wait_state(page, "ready")
    first = page.evaluate("document.body.dataset.assignmentId")
    std, levels = pixel_stats(page.locator(".dl-viewport").screenshot())
    assert std > 5 and levels > 20, (std, levels)
    page.keyboard.press("f")
    page.keyboard.press("Control+Enter")

    # Image 2: 403. The first image must not stay on screen as if it were the second.
    page.wait_for_function(f"() => document.body.dataset.assignmentId !== {json.dumps(first)}")
    assert_failed_and_blocked(page, log, "HTTP 403")
    assert len(submits(log)) == 1
    # The proxy lets it through again: Retry shows it, and it can be labelled and submitted.
    routes.modes[ids[1]] = None
    page.get_by_role("button", name="Retry").click()
    wait_state(page, "ready")
    std, levels = pixel_stats(page.locator(".dl-viewport").screenshot())
    assert std > 5 and levels > 20, (std, levels)
    assert page.locator(".dl-load-error").is_hidden()
    assert page.locator("#dl-submit").is_enabled()
    second = page.evaluate("document.body.dataset.assignmentId")
    page.keyboard.press("f")
    page.keyboard.press("Control+Enter")

    # Image 3: 500, then every other failure on Retry.
    page.wait_for_function(f"() => document.body.dataset.assignmentId !== {json.dumps(second)}")
    assert_failed_and_blocked(page, log, "HTTP 500")
    for mode, expected in (("abort", "network error"), ("garbage", "could not decode"), ("hang", "timed out")):
        routes.modes[ids[2]] = mode
        page.get_by_role("button", name="Retry").click()  # goes to "loading" at once, then fails again
        assert_failed_and_blocked(page, log, expected)
    assert routes.hung, "the hanging request was not made"
    third = page.evaluate("document.body.dataset.assignmentId")
    page.get_by_role("button", name="Skip: could not load").click()
    page.wait_for_function(f"() => document.body.dataset.assignmentId !== {json.dumps(third)}")
    wait_state(page, "ready")

    # The server holds two answers and one skip whose reason says why.
    admin, job = site["admin"], site["jobs"][size]
    progress = admin.call("GET", f"/admin/jobs/{job['id']}/progress")[1]
    assert progress["skipped"] == 1, progress
    assert len(submits(log)) == 2
    assert not uncaught(log), log.errors
    page.context.close()


def test_a_refused_whole_file_fails_cleanly_and_retry_shows_it(site: dict[str, Any]) -> None:
    routes = ImageRoutes(site["origin"], site["records"])
    ids = [r["orthanc_id"] for r in site["records"]]
    routes.modes = {ids[0]: "403", ids[1]: "403"}  # the first image, and the next one the page prefetches
    page, log = open_labeling(site, routes, user="whole", job="whole-files")
    assert_failed_and_blocked(page, log, "HTTP 403")
    assert any(f"/instances/{ids[0]}/file" in r["url"] for r in log.requests), "not the whole-file path"
    routes.modes = {}
    page.get_by_role("button", name="Retry").click()
    wait_state(page, "ready")
    std, levels = pixel_stats(page.locator(".dl-viewport").screenshot())
    assert std > 5 and levels > 20, (std, levels)
    # The refused loads (shown and prefetched) were handled: nothing uncaught on the page.
    assert not uncaught(log), log.errors
    page.context.close()


def test_annotator_opening_review_or_admin_lands_on_the_queue(site: dict[str, Any]) -> None:
    page, _ = open_labeling(site, ImageRoutes(site["origin"], site["records"]), job="whole-files")
    for path in ("/ui/review", "/ui/admin"):
        page.goto(site["base"] + path)
        page.wait_for_url("**/ui/queue")
        assert "403" not in (page.locator("body").text_content() or "")
    page.context.close()
