"""The "AI suggestion" panel of the labeling page in headless Chromium, in the three aiAssistance modes.

Real labeling app, proxy and Orthanc; manifests carry ``model-predictions`` as ``dicomlab train
predict`` writes them. ``off``: no panel. ``after-first-answer``: no probability on the page until
the reader records a first answer for that image, then the panel lists them; the next image starts
blind again. ``always``: the probabilities from the start. No console errors.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from selfhosted_support import PASSWORD, Api
from support.site import labeling_site
from test_ai_assist import PREDICTIONS, VERSION, write_predicted_manifest
from test_ui_selfhosted_browser import sign_in, wait_ready

pytestmark = [pytest.mark.browser, pytest.mark.slow]
MODES = ("off", "after-first-answer", "always")


@pytest.fixture(scope="module")
def site(orthanc: Any, synthetic_set: list[dict[str, Any]],
         tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    records = [r for r in synthetic_set if r["compression"] == "none"][:2]
    with labeling_site(orthanc, tmp_path_factory.mktemp("assist")) as running:
        manifest = write_predicted_manifest(running.tmp, records)
        jobs = {mode: running.create_job(f"ui-ai-{mode}", manifest_uri=manifest, readersPerImage=1,
                                         strategy="in-order", allowPatientIdentifiers=True, aiAssistance=mode)
                for mode in MODES}
        running.users(["ann"])
        yield {"base": running.base, "admin": running.admin, "jobs": jobs}


def _open(site: dict[str, Any], mode: str) -> tuple[Any, Any]:
    page, log = sign_in(site, "ann", PASSWORD)
    page.goto(f"{site['base']}/ui/jobs/{site['jobs'][mode]['id']}/label")
    wait_ready(page)
    return page, log


def _panel_text(page: Any) -> str:
    return str(page.evaluate("document.getElementById('dl-assist')?.textContent ?? ''"))


def _no_probability_on_page(page: Any) -> None:
    body = str(page.evaluate("document.body.innerText"))
    assert page.locator("#dl-assist-predictions").count() == 0
    assert "91.4%" not in body and VERSION not in body and "%" not in _panel_text(page)


def _shows_predictions(page: Any) -> None:
    page.wait_for_function("() => document.querySelectorAll('#dl-assist-predictions li').length === 3",
                           timeout=30_000)
    items = page.locator("#dl-assist-predictions li").all_text_contents()
    assert items == [f"{name}: {round(p * 100, 1):g}%" for name, p in PREDICTIONS.items()]
    assert page.locator("#dl-assist").is_visible()
    assert page.get_by_role("heading", name="AI suggestion").is_visible()
    assert VERSION in _panel_text(page)


def _submit_and_wait(page: Any, previous: str) -> None:
    page.keyboard.press("f")  # No Finding
    page.keyboard.press("Control+Enter")
    page.wait_for_function(f"() => document.body.dataset.assignmentId !== {previous!r} "
                           "&& document.body.dataset.busy === 'false'", timeout=60_000)


def test_off_shows_no_panel(site: dict[str, Any]) -> None:
    page, log = _open(site, "off")
    try:
        assert page.locator("#dl-assist").count() == 1 and not page.locator("#dl-assist").is_visible()
        assert page.get_by_text("AI suggestion").count() == 0 or not page.get_by_text("AI suggestion").is_visible()
        _no_probability_on_page(page)
        assert not log.errors, log.errors
    finally:
        page.context.close()


def test_after_first_answer_shows_nothing_before_the_first_answer(site: dict[str, Any]) -> None:
    page, log = _open(site, "after-first-answer")
    try:
        first = str(page.evaluate("document.body.dataset.assignmentId"))
        button = page.get_by_role("button", name="Record my first answer")
        assert button.is_visible()
        _no_probability_on_page(page)
        page.keyboard.press("f")  # the reader's own answer: No Finding
        button.click()
        _shows_predictions(page)
        status, view = Api(base_url=site["base"]).login("ann", PASSWORD).call("GET", f"/assignments/{first}")
        assert status == 200 and view["assistance"]["firstAnswer"]["findings"]["No Finding"] == "present"
        page.keyboard.press("Control+Enter")
        page.wait_for_function(f"() => document.body.dataset.assignmentId !== {first!r} "
                               "&& document.querySelector('#dl-viewer')?.dataset.state === 'ready' "
                               "&& document.body.dataset.busy === 'false'", timeout=60_000)
        # the next image starts blind again: the first answer opened only its own image
        assert page.get_by_role("button", name="Record my first answer").is_visible()
        _no_probability_on_page(page)
        assert not log.errors, log.errors
    finally:
        page.context.close()
    summary = site["admin"].call("GET", f"/admin/jobs/{site['jobs']['after-first-answer']['id']}/assistance")[1]
    assert summary["shown"] == 1 and summary["withFirstAnswer"] == 1


def test_always_shows_the_suggestion_at_once(site: dict[str, Any]) -> None:
    page, log = _open(site, "always")
    try:
        assert page.get_by_role("button", name="Record my first answer").count() == 0
        _shows_predictions(page)
        first = str(page.evaluate("document.body.dataset.assignmentId"))
        _submit_and_wait(page, first)
        _shows_predictions(page)  # and on the next image
        assert not log.errors, log.errors
    finally:
        page.context.close()

