"""What the viewer draws, pixel for pixel, against the standard's grayscale pipeline.

Real Orthanc holds real-world radiographs from ``pydicom-data`` (a CR chest film with Pixel Spacing
``0\\0``, 15 bits, MONOCHROME1, uncompressed and JPEG 2000; one without any spacing; a VOI LUT Sequence;
a Modality LUT Sequence; signed JPEG Lossless) and a synthetic matrix: every transfer syntax we
support × MONOCHROME1/2 × with/without Presentation LUT Shape × windows (LINEAR, LINEAR_EXACT,
SIGMOID; two with explanations) / VOI LUT Sequence / none. Each file goes through the real proxy into
the viewer in headless Chromium; the drawn image is compared with the training decoder's rendering of
the same bytes (``grayscale_support``), a comparison that an inverted image fails.
"""

from __future__ import annotations

import io
import json
import mimetypes
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from grayscale_support import REAL_FILES, Agreement, agreement, reference_grey, screenshot_grey, synthetic_variants
from ui_support import ROOT, PageLog, browser, ensure_bundle, serve

from dicomlab_core.config import Secret
from dicomlab_core.tokens import KeyRing, Scope, signer_from_entries

pytestmark = [pytest.mark.browser, pytest.mark.slow]

DIST = ROOT / "services" / "dicomlab_labeling" / "static" / "dist"


def _page_app(viewer_file: str, style_file: str) -> Any:
    """A page with one viewer filling the window (and the bundle, same origin), as the labeling pages embed it."""
    html = f"""<!doctype html><html><head><link rel="stylesheet" href="/dist/{style_file}"></head>
<body style="margin:0"><div id="v" style="width:100vw;height:100vh"></div>
<script type="module">
import {{ LabelingViewer }} from '/dist/{viewer_file}';
window.viewer = new LabelingViewer(document.getElementById('v'), {{ labels: ['Cardiomegaly', 'No Finding'],
  help: false, keyboard: false }});
</script></body></html>""".encode()

    def app(environ: Any, start_response: Any) -> list[bytes]:
        path = environ.get("PATH_INFO", "/")
        if path.startswith("/dist/"):
            file = (DIST / path.removeprefix("/dist/")).resolve()
            if DIST.resolve() in file.parents and file.is_file():
                kind = mimetypes.guess_type(file.name)[0] or "application/octet-stream"
                if file.suffix == ".js":
                    kind = "text/javascript"
                start_response("200 OK", [("Content-Type", kind)])
                return [file.read_bytes()]
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [b"not found"]
        start_response("200 OK", [("Content-Type", "text/html; charset=utf-8")])
        return [html]

    return app


@pytest.fixture(scope="module")
def cases(orthanc_client: Any) -> dict[str, dict[str, Any]]:
    """Every test file uploaded to Orthanc: name -> {orthanc_id, sop_uid, reference}."""
    from pydicom.data import get_testdata_file

    files: dict[str, bytes] = {}
    for name in REAL_FILES:
        path = get_testdata_file(name)
        assert path, f"{name} is missing: pydicom-data is a test dependency"
        files[f"real:{name}"] = Path(str(path)).read_bytes()
    for variant in synthetic_variants():
        files[f"synth:{variant.name}"] = variant.data
    out = {}
    for name, data in files.items():
        stored = orthanc_client.upload_instance(data)
        sop = str(pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True).SOPInstanceUID)
        out[name] = {"orthanc_id": stored["ID"], "sop_uid": sop, "reference": reference_grey(data)}
    return out


@pytest.fixture(scope="module")
def served(orthanc: Any, cases: dict[str, dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """The viewer page and the real proxy in front of Orthanc, with a token per case."""
    from dicomlab_proxy.app import create_app as proxy_app
    from dicomlab_proxy.config import Config as ProxyConfig

    ensure_bundle()
    manifest = json.loads((DIST / "manifest.json").read_text())["entries"]
    key = KeyRing.generate_entry("k1")
    with serve(_page_app(manifest["viewer"]["file"], manifest["style"]["file"])) as page_url:
        proxy = proxy_app(ProxyConfig(token_keys=(Secret(key),), orthanc=orthanc.settings(),
                                      allowed_origins=(page_url,)))
        with serve(proxy) as proxy_url:
            signer = signer_from_entries([key])

            def token(case: dict[str, Any]) -> str:
                return signer.issue(Scope(instances=(case["sop_uid"],), orthanc_ids=(case["orthanc_id"],)),
                                    subject="grayscale-test", ttl_seconds=600)

            yield {"url": page_url, "proxy": proxy_url, "token": token}


def open_tab(served: dict[str, Any], width: int, height: int) -> Any:
    """The viewer page in a fresh context of the shared Chromium, window ``width``×``height``."""
    context = browser().new_context(viewport={"width": width, "height": height})
    tab = context.new_page()
    log = PageLog()
    log.attach(tab)
    tab.goto(served["url"] + "/")
    try:
        tab.wait_for_function("() => Boolean(window.viewer)", timeout=60_000)
    except Exception:
        pytest.fail(f"the viewer page did not start: {log.errors}")
    tab.dicomlab = {"proxy": served["proxy"], "token": served["token"], "log": log}
    return tab


@pytest.fixture(scope="module")
def page(served: dict[str, Any]) -> Iterator[Any]:
    tab = open_tab(served, 1366, 768)
    yield tab
    tab.context.close()


@pytest.fixture(scope="module")
def wide_page(served: dict[str, Any]) -> Iterator[Any]:
    tab = open_tab(served, 1920, 1080)
    yield tab
    tab.context.close()


def show(page: Any, case: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """Load one case into the viewer; return the drawn image (0..1) and the viewer's state."""
    setup = page.dicomlab
    error = page.evaluate("""async ({url, token}) => {
        try { await window.viewer.load({ url, token }); return null; } catch (e) { return String(e && e.message || e); }
    }""", {"url": f"{setup['proxy']}/instances/{case['orthanc_id']}/file", "token": setup["token"](case)})
    state = page.evaluate("""() => ({ state: document.getElementById('v').dataset.state,
        status: document.querySelector('.dl-status').textContent,
        geometry: document.querySelector('.dl-geometry').textContent,
        windows: [...document.querySelectorAll('.dl-windows option')].map((o) => o.textContent),
        rect: window.viewer.imageRectOnScreen() })""")
    state["error"] = error
    assert error is None and state["state"] == "ready", (state, setup["log"].errors[-5:])
    rect = state["rect"]
    assert rect and rect["width"] > 50 and rect["height"] > 50, state
    # The whole image is on screen, without scrolling.
    size = page.viewport_size
    assert rect["x"] >= 0 and rect["y"] >= 0, state
    assert rect["x"] + rect["width"] <= size["width"] + 1 and rect["y"] + rect["height"] <= size["height"] + 1, state
    shot = page.screenshot(clip={k: rect[k] for k in ("x", "y", "width", "height")})
    return screenshot_grey(shot), state


def check(name: str, shown: Any, reference: Any) -> Agreement:
    result = agreement(shown, reference)
    # The comparison itself must tell polarity apart for this image: the inverted reference fails it.
    inverted = agreement(shown, 1.0 - reference)
    assert not inverted.ok, (name, "the comparison cannot detect an inversion here", inverted)
    assert result.ok, (name, result)
    return result


@pytest.mark.parametrize("name", [f"real:{n}" for n in REAL_FILES])
def test_real_world_files_match_the_reference(page: Any, cases: dict[str, dict[str, Any]], name: str) -> None:
    case = cases[name]
    shown, state = show(page, case)
    check(name, shown, case["reference"])
    rows, columns = case["reference"].shape
    # The whole image is drawn with its own aspect ratio (1 mm per pixel when spacing is unusable).
    assert abs(state["rect"]["width"] / state["rect"]["height"] - columns / rows) < 0.02, state
    if name.startswith("real:RG"):
        # RG1: Pixel Spacing 0\\0; RG3: no Pixel Spacing at all.
        assert "Measurements in pixels" in state["geometry"], state


def test_chest_radiograph_polarity(page: Any, cases: dict[str, dict[str, Any]]) -> None:
    """The real chest film: lungs dark, spine and mediastinum bright (an independent sanity check)."""
    shown, _ = show(page, cases["real:RG1_UNCI.dcm"])
    h, w = shown.shape
    lungs = float(np.mean([shown[int(h * 0.35):int(h * 0.6), int(w * f):int(w * (f + 0.1))].mean()
                           for f in (0.2, 0.7)]))
    spine = float(shown[int(h * 0.35):int(h * 0.6), int(w * 0.46):int(w * 0.54)].mean())
    assert spine > lungs + 0.1, (spine, lungs)


def test_synthetic_matrix_matches_the_reference(page: Any, cases: dict[str, dict[str, Any]]) -> None:
    failures = {}
    names = [n for n in cases if n.startswith("synth:")]
    assert len(names) >= 40
    for name in names:
        shown, state = show(page, cases[name])
        result = agreement(shown, cases[name]["reference"])
        inverted = agreement(shown, 1.0 - cases[name]["reference"])
        if not result.ok or inverted.ok:
            failures[name] = (result, inverted)
        if name.endswith(("LINEAR", "LINEAR_EXACT", "SIGMOID")):
            # Both windows of the file are offered, by their explanations.
            assert [w.split(" (")[0] for w in state["windows"]] == ["TEST LUNG", "TEST FULL"], state
    assert not failures, "\n".join(f"{name}: {result} (inverted: {inverted})"
                                    for name, (result, inverted) in failures.items())


def test_representative_files_at_1920x1080(page: Any, wide_page: Any, cases: dict[str, dict[str, Any]]) -> None:
    """At 1920×1080 (the matrix runs at 1366×768): the real chest film and a MONOCHROME1 Presentation LUT
    Shape INVERSE file match the reference, drawn larger than at 1366×768 with their aspect ratio."""
    inverse = next(n for n in cases if "-MONOCHROME1-INVERSE-window" in n)
    for name in ("real:RG1_UNCI.dcm", inverse):
        case = cases[name]
        shown, state = show(wide_page, case)
        check(name, shown, case["reference"])
        rows, columns = case["reference"].shape
        rect = state["rect"]
        assert abs(rect["width"] / rect["height"] - columns / rows) < 0.02, state
        _, narrow = show(page, case)
        assert rect["height"] > narrow["rect"]["height"] * 1.2, (rect, narrow["rect"])
