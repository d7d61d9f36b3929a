"""A job that hides patient identifiers, labelled in headless Chromium: no identifying value reaches the page.

The labeling service mints de-identified proxy tokens for such a job; the viewer reads WADO-RS
metadata (de-identified by the proxy) and frames instead of the whole DICOM file. Every response
body the page received — labeling API, proxy metadata, frames, the bundle — is searched for the
patient name, ID and birth date of the images in the job (read from Orthanc, so the check cannot be
vacuous). Real labeling app, real proxy, real Orthanc, real browser.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import Error as PlaywrightError
from selfhosted_support import PASSWORD, Api
from support.browser import log_in, new_page
from support.site import labeling_site
from ui_support import PageLog, pixel_stats

from dicomlab_cli.processes import OrthancServer

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture(scope="module")
def site(orthanc: OrthancServer, synthetic_set: list[dict[str, Any]],
         tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    # A compressed image and an uncompressed MONOCHROME1 one: both decode paths of the frames loader.
    compressed = next(r for r in synthetic_set if r["compression"] != "none")
    plain = next(r for r in synthetic_set if r["compression"] == "none" and r["photometric"] == "MONOCHROME1")
    records = [compressed, plain]
    client = orthanc.client()
    try:
        identities = [client.instance_tags(r["orthanc_id"]) for r in records]
    finally:
        client.close()
    with labeling_site(orthanc, tmp_path_factory.mktemp("deid")) as running:
        job = running.create_job("deid-batch", records, manifest="deid.manifest", readersPerImage=1,
                                 strategy="in-order", allowPatientIdentifiers=False)
        running.users(["dora"])
        running.users(["rita"], role="reviewer")
        yield {"base": running.base, "job": job, "identities": identities, "admin": running.admin}


def identifying_values(identities: list[dict[str, Any]]) -> list[str]:
    """Patient name (as stored and as displayed), ID and birth date of every image; none may be empty."""
    values = []
    for tags in identities:
        name, pid, birth = (str(tags.get(k) or "") for k in ("PatientName", "PatientID", "PatientBirthDate"))
        assert name and pid and birth, tags  # the check below must have something to look for
        values += [name, name.replace("^", " "), pid, birth]
    return values


class Recorder:
    """Every response body a page receives: read as it arrives, labeling API answers through a route."""

    def __init__(self, page: Any, base: str) -> None:
        self.bodies: list[tuple[str, bytes]] = []
        self.unread: list[tuple[int, str]] = []
        page.on("response", self._keep)
        page.route(base + "/api/**", self._through)

    def _keep(self, response: Any) -> None:
        try:
            self.bodies.append((response.url, response.body()))
        except PlaywrightError:  # redirects, and answers of a page already navigated away from
            self.unread.append((response.status, response.url))

    def _through(self, route: Any) -> None:
        response = route.fetch()
        self.bodies.append((route.request.url, response.body()))
        route.fulfill(response=response)

    def check(self, secrets: list[str]) -> None:
        """No body holds a secret; every body was searched (those the event missed came through the route)."""
        for url, body in self.bodies:
            for value in secrets:
                assert value.encode() not in body, (value, url)
        assert len(self.bodies) > 5
        searched = {url for url, _ in self.bodies}
        assert all(status == 204 or 300 <= status < 400 or url in searched for status, url in self.unread), \
            self.unread


def sign_in(site: dict[str, Any], username: str) -> tuple[Any, PageLog, Recorder]:
    page, log = new_page({"width": 1400, "height": 950})
    recorder = Recorder(page, site["base"])
    log_in(page, site["base"], username, PASSWORD)
    return page, log, recorder


def image_urls(log: PageLog) -> list[str]:
    return [r["url"] for r in log.requests if "/dicom-web/" in r["url"] or "/instances/" in r["url"]]


def test_deidentified_job_never_sends_identifiers_to_the_browser(site: dict[str, Any]) -> None:
    page, log, recorder = sign_in(site, "dora")
    try:
        page.get_by_role("link", name="Label images of deid-batch").click()
        ready = ("() => document.querySelector('#dl-viewer')?.dataset.state === 'ready'"
                 " && document.body.dataset.busy === 'false'")
        page.wait_for_function(ready, timeout=60_000)
        first = page.evaluate("document.body.dataset.assignmentId")
        std, levels = pixel_stats(page.locator(".dl-viewport").screenshot())
        assert std > 5 and levels > 20, (std, levels)  # the image is on screen, not a blank canvas
        page.keyboard.press("f")  # No Finding
        page.keyboard.press("Control+Enter")
        page.wait_for_function(f"() => ({ready[6:]}) && document.body.dataset.assignmentId !== '{first}'",
                               timeout=60_000)
        std, levels = pixel_stats(page.locator(".dl-viewport").screenshot())
        assert std > 5 and levels > 20, (std, levels)
        page.keyboard.press("f")
        page.keyboard.press("Control+Enter")
        page.wait_for_function("() => document.querySelector('#dl-viewer').dataset.state === 'done'",
                               timeout=30_000)
    finally:
        page.context.close()
    recorder.check(identifying_values(site["identities"]))
    assert not [e for e in log.errors if "HTTP 4" in e or "HTTP 5" in e or "pageerror" in e], log.errors
    urls = image_urls(log)
    assert any(u.endswith("/metadata") for u in urls) and any("/frames/" in u for u in urls)
    assert not any(u.endswith("/file") for u in urls), urls  # no whole DICOM file was asked for


def test_reviewer_of_a_deidentified_job_sees_images_without_identifiers(site: dict[str, Any]) -> None:
    """The review page's side-by-side viewers (one image id per viewer) take the same de-identified path."""
    job = site["job"]
    dora = Api(base_url=site["base"]).login("dora", PASSWORD)
    while True:  # answers to review, whatever ran before
        status, data = dora.call("POST", f"/jobs/{job['id']}/next")
        if status != 200 or not data:
            break
        dora.submit(data["assignment"]["id"], {"Edema": "present"}, sop=data["assignment"]["image"]["sopInstanceUid"])
    page, log, recorder = sign_in(site, "rita")
    try:
        page.get_by_role("link", name="Review").click()
        page.wait_for_url("**/ui/review")
        page.select_option("#dl-review-filter", "all")
        page.wait_for_selector("#dl-review-tasks button")
        page.locator("#dl-review-tasks tbody tr").first.get_by_role("button").click()
        page.wait_for_function(
            "() => { const v = [...document.querySelectorAll('#dl-review-answers .dl-viewer, "
            "#dl-adjudicate-viewer')]; return v.length >= 2 && v.every(x => x.dataset.state === 'ready'); }",
            timeout=60_000)
        std, levels = pixel_stats(page.locator("#dl-review-answers .dl-viewport").first.screenshot())
        assert std > 5 and levels > 20, (std, levels)
    finally:
        page.context.close()
    recorder.check(identifying_values(site["identities"]))
    assert not [e for e in log.errors if "HTTP 4" in e or "HTTP 5" in e or "pageerror" in e], log.errors
    urls = image_urls(log)
    assert any(u.endswith("/metadata") for u in urls) and not any(u.endswith("/file") for u in urls), urls
