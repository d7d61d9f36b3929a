"""The "AI suggestion" panel of the labeling page in headless Chromium, in the three aiAssistance modes.

Real labeling app, proxy and Orthanc; manifests carry ``model-predictions`` as ``dicomlab train
predict`` writes them. ``off``: no panel. ``after-first-answer``: no probability on the page until
the reader records a first answer for that image, then the panel lists them; the next image starts
blind again. ``always``: the probabilities from the start. No console errors.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
from selfhosted_support import ADMIN, PASSWORD, Api, create_users, make_config
from test_ai_assist import PREDICTIONS, VERSION, write_predicted_manifest
from test_ui_selfhosted_browser import sign_in, wait_ready
from ui_support import ensure_bundle, serve

from dicomlab_cli.processes import free_port

pytestmark = [pytest.mark.browser, pytest.mark.slow]
MODES = ("off", "after-first-answer", "always")


@pytest.fixture(scope="module")
def site(orthanc: Any, synthetic_set: list[dict[str, Any]],
         tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    from dicomlab_labeling.app import create_app as labeling_app
    from dicomlab_proxy.app import create_app as proxy_app
    from dicomlab_proxy.config import Config as ProxyConfig

    ensure_bundle()
    tmp = tmp_path_factory.mktemp("assist")
    labeling_port, proxy_port = free_port(), free_port()
    config = make_config(tmp, f"sqlite:///{tmp / 'labeling.db'}", orthanc)
    config = replace(config, proxy_public_url=f"http://127.0.0.1:{proxy_port}")
    proxy = proxy_app(ProxyConfig(token_keys=config.token_keys, orthanc=orthanc.settings(),
                                  allowed_origins=(f"http://127.0.0.1:{labeling_port}",)))
    app = labeling_app(config)
    records = [r for r in synthetic_set if r["compression"] == "none"][:2]
    manifest = write_predicted_manifest(tmp, records)
    with serve(proxy, port=proxy_port), serve(app, port=labeling_port) as base:
        admin = Api(base_url=base).login(*ADMIN)
        jobs = {}
        for mode in MODES:
            status, job = admin.call("POST", "/admin/jobs", {
                "name": f"ui-ai-{mode}", "manifestUri": manifest, "readersPerImage": 1, "strategy": "in-order",
                "allowPatientIdentifiers": True, "aiAssistance": mode})
            assert status == 201, job
            jobs[mode] = job
        create_users(admin, ["ann"])
        yield {"base": base, "admin": admin, "jobs": jobs}
    app.extensions["dicomlab_labeling_api"].db.dispose()


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

