"""The Ground Truth worker template in headless Chromium, end to end with real servers.

Orthanc (real) holds a synthetic 12-bit DX chest image; the real DICOMweb proxy serves it with CORS for
the worker page's origin; the real labeling app serves the bundle. The template is rendered twice
as in production: by ``render_gt_template`` (bundle URLs + SRI) and then, as Ground Truth does per
task, by a Liquid engine with ``task.input`` from a pre-annotation-style taskInput. The page itself
is served from a third origin, so the bundle, its decode worker and the image are all cross-origin.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
import requests
from liquid import Environment
from ui_support import CROWD_ELEMENTS_STUB, PageLog, browser, ensure_bundle, pixel_stats, serve

from dicomlab_core.config import Secret
from dicomlab_core.groundtruth import parse_worker_answer
from dicomlab_core.labels import CHEXPERT_LABELS
from dicomlab_core.synth import SynthConfig, generate, to_bytes
from dicomlab_core.tokens import KeyRing, Scope, signer_from_entries

pytestmark = [pytest.mark.browser, pytest.mark.slow]

HOSTILE_LABEL = '<img src=x onerror="window.__xss=1">Mass & "Nodule"'
LABELS = [*CHEXPERT_LABELS, HOSTILE_LABEL]


@pytest.fixture(scope="module")
def stack(orthanc: Any, orthanc_client: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    from dicomlab_labeling.app import create_app as labeling_app
    from dicomlab_labeling.config import LabelingConfig
    from dicomlab_proxy.app import create_app as proxy_app
    from dicomlab_proxy.config import Config as ProxyConfig

    ensure_bundle()
    # JPEG 2000: decoded by the WASM codec inside the decode worker, both loaded cross-origin.
    image = next(generate(SynthConfig(patients=1, rows=320, columns=256, seed=11, monochrome1_fraction=0.0,
                                      compressed_fraction=1.0, compressions=("jpeg2000",), modalities=("DX",))))
    assert image.transfer_syntax == "1.2.840.10008.1.2.4.90"
    data = to_bytes(image.dataset)
    stored = orthanc_client.upload_instance(data)
    ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
    key = KeyRing.generate_entry("k1")
    worker_page: dict[str, str] = {"html": ""}

    def worker_page_app(environ: Any, start_response: Any) -> list[bytes]:
        body = f"<!doctype html><html><body>{worker_page['html']}</body></html>".encode()
        start_response("200 OK", [("Content-Type", "text/html; charset=utf-8"), ("Cache-Control", "no-store")])
        return [body]

    with serve(worker_page_app) as page_server, serve(labeling_app(LabelingConfig(token_keys=(Secret(key),), data_dir=tmp_path_factory.mktemp("lab"),
                                           session_secret=Secret("s" * 40)))) as labeling_url:
        # The worker page lives on another origin (GT: https://s3.amazonaws.com); here: "localhost:<port>".
        page_origin = page_server.replace("127.0.0.1", "localhost")
        proxy = proxy_app(ProxyConfig(token_keys=(Secret(key),), orthanc=orthanc.settings(),
                                      allowed_origins=(page_origin,)))
        with serve(proxy) as proxy_url:
            token = signer_from_entries([key]).issue(
                Scope(instances=(ds.SOPInstanceUID,), orthanc_ids=(stored["ID"],)), subject="worker-1",
                ttl_seconds=600)
            yield {"labeling": labeling_url, "proxy": proxy_url, "page_origin": page_origin, "token": token,
                   "orthanc_id": stored["ID"], "ds": ds, "labels": LABELS,
                   "worker_page": worker_page}


def render_for_task(stack: dict[str, Any], *, default_finding_state: str = "absent", **overrides: Any) -> str:
    """Both rendering passes: ours (assets, the job's default finding state) and Ground Truth's
    (task.input, autoescaped, to_json)."""
    from dicomlab_labeling.groundtruth.template import render_gt_template

    template = render_gt_template(stack["labeling"] + "/static/dist", instructions="Mark every finding.",
                                  default_finding_state=default_finding_state)
    ds = stack["ds"]
    task_input = {
        "taskObject": f"{stack['proxy']}/instances/{stack['orthanc_id']}/file",
        "wadoRsRoot": f"{stack['proxy']}/dicom-web",
        "studyInstanceUid": ds.StudyInstanceUID, "seriesInstanceUid": ds.SeriesInstanceUID,
        "sopInstanceUid": ds.SOPInstanceUID, "token": stack["token"], "labels": stack["labels"],
        **overrides,
    }
    env = Environment(autoescape=True)
    env.filters["to_json"] = lambda value: json.dumps(value)
    return env.from_string(template).render(task={"input": task_input})


def open_worker_page(stack: dict[str, Any], html: str, image_route: Any = None) -> tuple[Any, PageLog]:
    context = browser().new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    log = PageLog()
    log.attach(page)
    page.route("https://assets.crowd.aws/**", lambda route: route.fulfill(
        status=200, content_type="text/javascript", body=CROWD_ELEMENTS_STUB))
    if image_route is not None:
        page.route(stack["proxy"] + "/instances/**", image_route)
    stack["worker_page"]["html"] = html
    page.goto(stack["page_origin"] + "/worker-task.html")
    try:
        page.wait_for_selector("#dicomlab-viewer[data-state=ready], #dicomlab-viewer[data-state=error]",
                               state="attached", timeout=60_000)
    except Exception:
        pytest.fail(f"viewer did not load: {page.locator('#dicomlab-viewer').text_content()!r} {log.errors}")
    return page, log


def drag(page: Any, box: dict[str, float], start: tuple[float, float], end: tuple[float, float],
         via: list[tuple[float, float]] | None = None) -> None:
    def at(fx: float, fy: float) -> tuple[float, float]:
        return box["x"] + box["width"] * fx, box["y"] + box["height"] * fy

    page.mouse.move(*at(*start))
    page.mouse.down()
    for point in [*(via or []), end]:
        page.mouse.move(*at(*point), steps=6)
    page.mouse.up()


def test_worker_template_shows_image_draws_rois_and_submits_clean_json(stack: dict[str, Any]) -> None:
    page, log = open_worker_page(stack, render_for_task(stack))
    viewer = page.locator("#dicomlab-viewer")
    assert viewer.get_attribute("data-state") == "ready", page.locator(".dl-status").text_content()

    # The image is really drawn: the viewport has many grey levels, not a blank canvas.
    viewport = page.locator(".dl-viewport")
    shot = viewport.screenshot()
    std, levels = pixel_stats(shot)
    assert std > 10 and levels > 30, (std, levels)

    # Label names are text, never markup.
    legends = page.locator(".dl-finding legend").all_text_contents()
    assert legends == LABELS
    assert page.locator(".dl-finding legend img").count() == 0
    assert page.evaluate("window.__xss") is None

    # Presets and invert change the rendering and the W/L readout.
    before = page.locator(".dl-wl").text_content()
    page.keyboard.press("1")
    lung = page.locator(".dl-wl").text_content()
    assert lung != before
    page.keyboard.press("3")
    assert page.locator(".dl-wl").text_content() not in (lung, before)
    page.keyboard.press("0")
    assert page.locator(".dl-wl").text_content() == before

    # "No Finding" is exclusive with every other finding (keyboard: J/K move, Y/N/U set, F = No Finding).
    page.keyboard.press("j")  # second row: Enlarged Cardiomediastinum
    page.keyboard.press("y")
    page.keyboard.press("f")
    states = page.evaluate("window.dicomlabViewer.getAnswer().findings")
    assert states["No Finding"] == "present"
    assert all(v == "absent" for k, v in states.items() if k != "No Finding")
    page.keyboard.press("j")
    page.keyboard.press("u")  # third row: Cardiomegaly uncertain
    states = page.evaluate("window.dicomlabViewer.getAnswer().findings")
    assert states["Cardiomegaly"] == "uncertain" and states["No Finding"] == "absent"

    # Three ROIs with three tools, each tied to a finding.
    box = viewport.bounding_box()
    assert box is not None
    page.get_by_label("Finding for new ROIs").select_option("Cardiomegaly")
    page.keyboard.press("r")
    drag(page, box, (0.35, 0.45), (0.65, 0.7))
    page.get_by_label("Finding for new ROIs").select_option("Pleural Effusion")
    page.keyboard.press("e")
    drag(page, box, (0.3, 0.83), (0.38, 0.92))  # an ellipse is drawn from its centre outwards
    page.get_by_label("Finding for new ROIs").select_option(HOSTILE_LABEL)
    page.keyboard.press("Shift+G")  # freehand (G places a polygon by clicks)
    drag(page, box, (0.55, 0.2), (0.57, 0.22), via=[(0.7, 0.2), (0.7, 0.35), (0.55, 0.35)])
    page.wait_for_function("document.querySelectorAll('.dl-roi-list li').length === 3", timeout=10_000)

    page.locator("#crowd-submit").click()
    submitted = page.evaluate("window.__crowdSubmitted")
    assert submitted, "crowd-form did not submit"
    answer = json.loads(json.loads(submitted)["answer"])

    ds = stack["ds"]
    assert set(answer) >= {"findings", "rois", "sopInstanceUid", "timeSpentSeconds", "windowLevel"}
    assert list(answer["findings"]) == LABELS
    assert answer["findings"]["Cardiomegaly"] == "uncertain"  # an ROI does not override the reader's "uncertain"
    assert answer["findings"]["Pleural Effusion"] == "present"  # ... but marks an absent finding present
    assert answer["findings"]["No Finding"] == "absent"
    assert answer["sopInstanceUid"] == ds.SOPInstanceUID
    assert answer["timeSpentSeconds"] >= 0
    assert answer["windowLevel"]["width"] > 0
    tools = {roi["tool"]: roi for roi in answer["rois"]}
    assert set(tools) == {"rectangle", "ellipse", "polygon"}
    assert tools["rectangle"]["finding"] == "Cardiomegaly"
    assert tools["ellipse"]["finding"] == "Pleural Effusion"
    assert tools["polygon"]["finding"] == HOSTILE_LABEL
    for roi in answer["rois"]:
        for x, y in roi["points"]:
            assert -1 <= x <= ds.Columns + 1 and -1 <= y <= ds.Rows + 1, roi
    (x0, y0), (x1, y1) = tools["rectangle"]["points"]
    assert x0 < x1 and y0 < y1 and (x1 - x0) > 0.1 * ds.Columns
    assert len(tools["polygon"]["points"]) >= 4

    # The backend's own parser accepts what the template submitted.
    parsed = parse_worker_answer(json.loads(submitted), worker_id="w1", labels=LABELS)
    assert parsed is not None

    # The image went through the proxy with the token in a header, never in the URL.
    image_requests = [r for r in log.requests if "/instances/" in r["url"] and r["method"] == "GET"]
    assert image_requests and all("token=" not in r["url"] for r in image_requests)
    assert all(r["headers"].get("authorization") == f"Bearer {stack['token']}" for r in image_requests)
    assert not log.errors, log.errors
    page.context.close()


def test_worker_template_blocks_an_incomplete_answer_and_restores_a_previous_one(stack: dict[str, Any]) -> None:
    previous = {"findings": {"Edema": "present", "No Finding": "absent"},
                "rois": [{"tool": "rectangle", "finding": "Edema", "points": [[20, 30], [120, 150]]}],
                "sopInstanceUid": stack["ds"].SOPInstanceUID, "timeSpentSeconds": 3}
    page, log = open_worker_page(stack, render_for_task(stack, previousAnswer=json.dumps(previous)))
    assert page.locator("#dicomlab-viewer").get_attribute("data-state") == "ready"
    answer = page.evaluate("window.dicomlabViewer.getAnswer()")
    assert answer["findings"]["Edema"] == "present"
    assert [r["tool"] for r in answer["rois"]] == ["rectangle"]
    assert answer["rois"][0]["points"] == [[20, 30], [120, 150]]

    # Clear the only finding (its ROI goes with it, after asking): nothing is marked, so submitting is
    # refused with a visible reason.
    page.evaluate("() => { window.dicomlabViewer.setFinding('Edema', 'absent'); }")
    page.get_by_role("dialog").get_by_role("button", name="Remove the ROI").click()
    page.locator("#crowd-submit").click()
    assert page.evaluate("window.__crowdSubmitted") is None
    assert page.evaluate("window.__crowdBlocked") == 1
    assert "No Finding" in (page.locator(".dl-problems").text_content() or "")
    assert not log.errors, log.errors
    page.context.close()


def test_a_job_choosing_not_looked_at_makes_the_worker_set_every_finding(stack: dict[str, Any]) -> None:
    page, log = open_worker_page(stack, render_for_task(stack, default_finding_state="not-looked-at"))
    assert page.locator("#dicomlab-viewer").get_attribute("data-state") == "ready"
    states = page.evaluate("window.dicomlabViewer.getAnswer().findings")
    assert set(states.values()) == {"not-looked-at"}, states
    page.locator("#crowd-submit").click()
    assert page.evaluate("window.__crowdSubmitted") is None  # nothing decided yet: refused, with a reason
    assert "Not looked at yet" in (page.locator(".dl-problems").text_content() or "")

    page.keyboard.press("f")  # a normal image: No Finding present, then the rest absent in one action
    page.keyboard.press("Shift+N")
    states = page.evaluate("window.dicomlabViewer.getAnswer().findings")
    assert states.pop("No Finding") == "present" and set(states.values()) == {"absent"}, states
    page.locator("#crowd-submit").click()
    submitted = page.evaluate("window.__crowdSubmitted")
    assert submitted, "crowd-form did not submit"
    answer = json.loads(json.loads(submitted)["answer"])
    assert answer["findings"] == {label: "present" if label == "No Finding" else "absent" for label in LABELS}
    assert not log.errors, log.errors
    page.context.close()


def test_worker_template_failed_load_blocks_submission_until_retry_shows_the_image(stack: dict[str, Any]) -> None:
    refuse = {"on": True}

    def image_route(route: Any) -> None:
        if refuse["on"] and route.request.method == "GET":
            route.fulfill(status=403, body=b"{}", content_type="application/json",
                          headers={"Access-Control-Allow-Origin": stack["page_origin"]})
        else:
            route.continue_()

    page, log = open_worker_page(stack, render_for_task(stack), image_route)
    viewer = page.locator("#dicomlab-viewer")
    assert viewer.get_attribute("data-state") == "error"
    assert "HTTP 403" in (page.locator(".dl-load-error").text_content() or "")
    assert page.get_by_role("button", name="Retry").is_visible()
    # Nothing is drawn, and a complete-looking answer cannot be submitted for an image nobody saw.
    page.evaluate("document.querySelector('.dl-load-error').style.visibility = 'hidden'")
    std, levels = pixel_stats(page.locator(".dl-viewport").screenshot())
    page.evaluate("document.querySelector('.dl-load-error').style.visibility = ''")
    assert std < 1 and levels <= 2, (std, levels)
    page.evaluate("window.dicomlabViewer.setFinding('No Finding', 'present')")
    page.locator("#crowd-submit").click()
    assert page.evaluate("window.__crowdSubmitted") is None
    assert page.evaluate("window.__crowdBlocked") == 1
    assert page.evaluate("document.getElementById('dicomlab-answer').value") == ""

    refuse["on"] = False
    page.get_by_role("button", name="Retry").click()
    page.wait_for_function("() => document.getElementById('dicomlab-viewer').dataset.state === 'ready'",
                           timeout=60_000)
    std, levels = pixel_stats(page.locator(".dl-viewport").screenshot())
    assert std > 10 and levels > 30, (std, levels)
    page.evaluate("window.dicomlabViewer.setFinding('No Finding', 'present')")
    page.locator("#crowd-submit").click()
    submitted = json.loads(page.evaluate("window.__crowdSubmitted"))
    answer = json.loads(submitted["answer"])
    assert answer["findings"]["No Finding"] == "present"
    assert answer["sopInstanceUid"] == stack["ds"].SOPInstanceUID
    assert not [e for e in log.errors if e.startswith("pageerror")], log.errors  # the refusal was handled
    page.context.close()


def test_skip_could_not_load_submits_no_finding_and_consolidation_marks_the_worker_not_labeled(
        stack: dict[str, Any], tmp_path: Path) -> None:
    from dicomlab_labeling.config import LabelingConfig
    from dicomlab_labeling.groundtruth.callbacks import CallbackContext, post_annotation

    def refuse(route: Any) -> None:  # the proxy refuses this worker's image
        if route.request.method == "GET":
            route.fulfill(status=403, body=b"{}", content_type="application/json",
                          headers={"Access-Control-Allow-Origin": stack["page_origin"]})
        else:
            route.continue_()

    page, _ = open_worker_page(stack, render_for_task(stack), refuse)
    assert page.locator("#dicomlab-viewer").get_attribute("data-state") == "error"
    # Findings set before the skip (e.g. by keys) must not travel with it.
    page.evaluate("window.dicomlabViewer.setFinding('No Finding', 'present')")
    page.get_by_role("button", name="Skip: could not load").click()
    page.wait_for_function("() => window.__crowdSubmitted !== undefined", timeout=10_000)
    submitted = json.loads(page.evaluate("window.__crowdSubmitted"))
    skipped = json.loads(submitted["answer"])
    assert "findings" not in skipped and "rois" not in skipped, skipped
    assert skipped["skipped"]["reason"] == "could not load" and "HTTP 403" in skipped["skipped"]["detail"]
    assert skipped["sopInstanceUid"] == stack["ds"].SOPInstanceUID
    assert "not labeled" in (page.locator(".dl-status").text_content() or "")
    page.context.close()

    # The consolidation callback reads what the crowd-form posted: image 0 has the skip and another
    # worker's answer, image 1 only the skip. The skip is no answer: not absent findings, not malformed.
    labels = list(CHEXPERT_LABELS)
    other = json.dumps({"findings": {label: ("present" if label == "Edema" else "absent") for label in labels},
                        "rois": []})
    batch = [{"datasetObjectId": "0", "dataObject": {"content": stack["orthanc_id"]},
              "annotations": [{"workerId": "private.w-skip", "annotationData": {"content": json.dumps(submitted)}},
                              {"workerId": "private.w-two", "annotationData": {"content": other}}]},
             {"datasetObjectId": "1", "dataObject": {"content": stack["orthanc_id"]},
              "annotations": [{"workerId": "private.w-skip", "annotationData": {"content": json.dumps(submitted)}}]}]
    (tmp_path / "batch.json").write_text(json.dumps(batch))
    config = LabelingConfig(token_keys=(Secret(KeyRing.generate_entry("k9")),), store_url=f"file://{tmp_path}")
    ctx = CallbackContext(config=config, orthanc=None,  # type: ignore[arg-type]  # consolidation reads no image
                          signer=signer_from_entries(config.token_keys))
    response = post_annotation({"version": "2018-10-16", "labelingJobArn": "arn:aws:sagemaker:us-east-1:1:labeling-job/j",
                                "labelCategories": labels, "labelAttributeName": "findings",
                                "payload": {"s3Uri": f"file://{tmp_path / 'batch.json'}"}}, ctx)
    first, second = (entry["consolidatedAnnotation"]["content"]["findings"] for entry in response)
    for content in (first, second):
        assert [w["workerId"] for w in content["notLabeledBy"]] == ["private.w-skip"]
        assert content["notLabeledBy"][0]["reason"].startswith("not labeled: could not load (HTTP 403")
        assert "rejected" not in content  # a skip is not a malformed answer
        assert "private.w-skip" not in [w["workerId"] for w in content["workers"]]
    # Image 0 rests on the one real answer; No Finding (set before the skip) counts for nobody.
    assert first["findings"]["Edema"] == {**first["findings"]["Edema"], "value": "present", "answers": 1}
    assert first["findings"]["No Finding"]["value"] == "absent" and first["findings"]["No Finding"]["answers"] == 1
    # Image 1 has no answer at all: every finding undecided, flagged, none of them "absent".
    assert second["flags"] == ["no-valid-answer"]
    assert all(f["answers"] == 0 and f["value"] == "uncertain" for f in second["findings"].values())


def test_setting_a_finding_with_rois_absent_asks_to_remove_them(stack: dict[str, Any]) -> None:
    page, _ = open_worker_page(stack, render_for_task(stack))
    box = page.locator(".dl-viewport").bounding_box()
    assert box is not None
    page.get_by_label("Finding for new ROIs").select_option("Edema")
    page.keyboard.press("r")
    drag(page, box, (0.35, 0.45), (0.6, 0.7))
    page.wait_for_function("document.querySelectorAll('.dl-roi-list li').length === 1", timeout=10_000)

    def findings() -> dict[str, str]:
        return dict(page.evaluate("window.dicomlabViewer.getAnswer().findings"))

    assert findings()["Edema"] == "present"  # drawing the ROI said so
    edema = stack["labels"].index("Edema")
    page.evaluate(f"window.dicomlabViewer.focusFinding({edema})")
    dialog = page.get_by_role("dialog")

    # N (absent) on Edema: the reader is asked; Cancel keeps the ROI and the finding.
    page.keyboard.press("n")
    dialog.wait_for()
    assert "1 ROI of Edema" in (dialog.text_content() or "")
    page.keyboard.press("y")  # shortcuts do not act behind the dialog
    dialog.get_by_role("button", name="Cancel").click()
    assert findings()["Edema"] == "present" and page.locator(".dl-roi-list li").count() == 1
    # "No Finding" would set Edema absent too: asked again; Escape cancels.
    page.keyboard.press("f")
    dialog.wait_for()
    page.keyboard.press("Escape")
    assert findings()["No Finding"] == "absent" and page.locator(".dl-roi-list li").count() == 1
    # Remove: the ROI goes, then the finding is set absent; the answer holds no orphan ROI.
    page.keyboard.press("n")
    dialog.get_by_role("button", name="Remove the ROI").click()
    answer = page.evaluate("window.dicomlabViewer.getAnswer()")
    assert answer["findings"]["Edema"] == "absent" and answer["rois"] == []
    assert page.locator(".dl-roi-list li").count() == 0
    page.context.close()


@pytest.mark.parametrize("option", ["--service-url", "--assets-base"])
def test_cli_template_from_the_service_url_loads_every_asset_with_matching_sri(
        stack: dict[str, Any], tmp_path: Path, option: str) -> None:
    """The README's command with the service's root URL: every asset URL answers 200 and matches its SRI."""
    from dicomlab_cli.main import main

    out = tmp_path / "worker.liquid.html"
    assert main(["labeling", "gt-template", option, stack["labeling"] + "/", "--out", str(out)]) == 0
    text = out.read_text()
    assets = re.findall(r'(?:src|href)="([^"]+)" integrity="([^"]+)"', text)
    assert len(assets) >= 2, text[:2000]  # the entry script and at least its stylesheet or a chunk
    for url, integrity in assets:
        assert url.startswith(stack["labeling"] + "/static/dist/"), url
        response = requests.get(url, timeout=30)
        assert response.status_code == 200, url
        digest = "sha384-" + base64.b64encode(hashlib.sha384(response.content).digest()).decode()
        assert digest == integrity, url


def test_finding_hotkeys_cycle_states_and_no_control_traps_the_keyboard(stack: dict[str, Any]) -> None:
    page, _ = open_worker_page(stack, render_for_task(stack))

    def state(label: str) -> str:
        return str(page.evaluate(f"window.dicomlabViewer.getAnswer().findings[{json.dumps(label)}]"))

    row = page.locator(".dl-finding", has=page.locator("legend", has_text="Edema"))
    key = (row.locator("kbd.dl-hotkey").text_content() or "").strip()
    keys = page.locator("kbd.dl-hotkey").all_text_contents()
    assert key and len(set(keys)) == len(keys) == len(stack["labels"])  # one distinct key per finding, shown
    press = key.lower() if len(key) == 1 else key  # "A" is the key a; "Shift+A" is pressed as written
    assert state("Edema") == "absent"
    for expected in ("present", "uncertain", "absent"):
        page.keyboard.press(press)
        assert state("Edema") == expected
    # A radio used with the mouse keeps its focus: arrow keys must not change the answer, keys still work.
    row.get_by_label("Present").click()
    assert state("Edema") == "present"
    page.keyboard.press("ArrowDown")
    page.keyboard.press("ArrowRight")
    assert state("Edema") == "present"
    page.keyboard.press(press)
    assert state("Edema") == "uncertain"
    # Choosing the finding for new ROIs with the mouse does not trap the keyboard in the select.
    page.get_by_label("Finding for new ROIs").select_option("Cardiomegaly")
    page.keyboard.press(press)
    assert state("Edema") == "absent"
    page.context.close()


def test_template_source_has_no_cdn_and_no_credentials() -> None:
    source = (Path(__file__).resolve().parents[2] / "services/dicomlab_labeling/templates/gt-worker.liquid.html").read_text()
    assert "unpkg" not in source and "jsdelivr" not in source and "cdnjs" not in source
    assert "orthanc:orthanc" not in source and "Basic " not in source
