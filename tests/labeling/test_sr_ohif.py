"""OHIF, the viewer people will open our SRs in, loads a dicomlab report and lists its findings and ROIs.

The built OHIF app (npm's ``@ohif/app``, its ``dist/`` only, pinned by version and integrity) is served on
loopback with a DICOMweb data source pointing at our proxy; headless Chromium opens the study with a
study-scoped token, opens the SR series, accepts tracking, and the measurement panel must list one
measurement per ROI, named by its finding, on the labelled image. (OHIF's own renderer here is CPU-only;
the ROI outlines are not asserted on screen, the panel is.)
"""

from __future__ import annotations

import base64
import hashlib
import http.server
import io
import shutil
import subprocess
import tarfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
from ui_support import browser, serve

from dicomlab_cli.processes import OrthancServer, free_port
from dicomlab_core.config import Secret
from dicomlab_core.groundtruth import Roi, RoiTool
from dicomlab_core.labels import CHEXPERT_LABELS, FindingState, finding_code
from dicomlab_core.orthanc import OrthancClient
from dicomlab_core.tokens import KeyRing, Scope, TokenSigner
from dicomlab_labeling.workflow.sr_report import Observer, ReportContent, build_report
from dicomlab_proxy.app import create_app
from dicomlab_proxy.config import Config

OHIF = "@ohif/app@3.13.2"
OHIF_INTEGRITY = ("sha512-WZdxmpmG7rqFgW9ZJLcbgr3XCtLi1KDNPoMaeY5PPe6j4G4fjEjjkycZM6C6Zk2F87BKxFfpq+jd5xXZB9E8EA==")
CACHE = Path(__file__).parent / "sr_readback" / "node_modules" / ".ohif-app-3.13.2"
ROIS = (Roi(RoiTool.RECTANGLE, ((40.0, 60.0), (180.0, 200.0)), "Cardiomegaly"),
        Roi(RoiTool.ELLIPSE, ((20.0, 30.0), (80.0, 50.0)), "Lung Lesion"),
        Roi(RoiTool.POLYGON, ((100.0, 100.0), (200.0, 120.0), (150.0, 220.0)), "Pneumothorax"))

pytestmark = pytest.mark.skipif(shutil.which("chromium") is None or shutil.which("npm") is None,
                                reason="needs Debian's chromium and npm")


@pytest.fixture(scope="module")
def ohif_dist() -> Path:
    """OHIF's built app, from the npm tarball (checked against its pinned integrity), cached."""
    dist = CACHE / "package" / "dist"
    if (dist / "index.html").is_file():
        return dist
    CACHE.mkdir(parents=True, exist_ok=True)
    subprocess.run(["npm", "pack", OHIF, "--pack-destination", str(CACHE)], check=True, capture_output=True,
                   timeout=600)
    (tarball,) = CACHE.glob("ohif-app-*.tgz")
    digest = "sha512-" + base64.b64encode(hashlib.sha512(tarball.read_bytes()).digest()).decode()
    assert digest == OHIF_INTEGRITY, f"{tarball.name} does not match its pinned integrity"
    with tarfile.open(tarball) as archive:
        archive.extractall(CACHE, members=[m for m in archive.getmembers() if m.name.startswith("package/dist/")],
                           filter="data")
    tarball.unlink()
    return dist


def _app_config(dist: Path, dicomweb: str) -> bytes:
    """OHIF's default app-config.js with one DICOMweb data source: our proxy."""
    text = (dist / "app-config.js").read_text()
    start = text.index("dataSources: [")
    end = text.index("\n  ],", start)
    source = f"""dataSources: [{{
      namespace: '@ohif/extension-default.dataSourcesModule.dicomweb', sourceName: 'dicomlab',
      configuration: {{ friendlyName: 'dicomlab', name: 'dicomlab', wadoUriRoot: '{dicomweb}',
        qidoRoot: '{dicomweb}', wadoRoot: '{dicomweb}', qidoSupportsIncludeField: false, imageRendering: 'wadors',
        thumbnailRendering: 'wadors', enableStudyLazyLoad: true, supportsFuzzyMatching: false,
        supportsWildcard: false, staticWado: false, singlepart: 'bulkdata,video',
        bulkDataURI: {{ enabled: true, relativeResolution: 'studies' }}, omitQuotationForMultipartRequest: true }} }}"""
    text = text[:start] + source + text[end:]
    return text.replace("defaultDataSourceName: 'ohif'", "defaultDataSourceName: 'dicomlab'").encode()


def _static(dist: Path, config: bytes, port: int) -> http.server.ThreadingHTTPServer:
    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, directory=str(dist), **kwargs)

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/app-config.js":
                self.send_response(200)
                self.send_header("Content-Type", "application/javascript")
                self.send_header("Content-Length", str(len(config)))
                self.end_headers()
                self.wfile.write(config)
                return
            if not (dist / path.lstrip("/")).is_file():
                self.path = "/index.html"  # the single-page app's routes
            super().do_GET()

    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture(scope="module")
def study(orthanc_client: OrthancClient) -> dict[str, str]:
    """A synthetic chest image and a dicomlab reader report on it, stored in the session Orthanc."""
    from dicomlab_core.synth import SynthConfig, make_image, plan, to_bytes

    image = make_image(next(plan(SynthConfig(patients=1, seed=11, rows=256, columns=256, voi_fraction=0.0,
                                             monochrome1_fraction=0.0)))).dataset
    # OHIF 3.13's CPU path refuses a VOI LUT Function it is given ("Invalid VOI LUT function"), even LINEAR,
    # the default; the image states none, which means the same.
    image.pop("VOILUTFunction", None)
    # Fresh UIDs: the synthetic plan's UIDs follow its seed, and another test of the session may already
    # have stored that image (with its VOI LUT Function) in the shared Orthanc, which keeps the first copy.
    image.StudyInstanceUID, image.SeriesInstanceUID = pydicom.uid.generate_uid(), pydicom.uid.generate_uid()
    image.SOPInstanceUID = image.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
    findings = {label: FindingState.ABSENT for label in CHEXPERT_LABELS}
    findings.update({r.finding: FindingState.PRESENT for r in ROIS if r.finding})
    content = ReportContent(findings=findings, rois=ROIS, observer=Observer(person="reader-1"),
                            description="dicomlab ohif reader-1")
    report = build_report(image, content, series_instance_uid=pydicom.uid.generate_uid(), series_number=9902,
                          sop_instance_uid=pydicom.uid.generate_uid(),
                          tracking_uids=[pydicom.uid.generate_uid() for _ in ROIS])
    buffer = io.BytesIO()
    report.save_as(buffer, enforce_file_format=True)
    orthanc_client.stow([to_bytes(image), buffer.getvalue()], study_uid=str(image.StudyInstanceUID))
    return {"study": str(image.StudyInstanceUID), "sop": str(image.SOPInstanceUID)}


@pytest.fixture(scope="module")
def ohif(ohif_dist: Path, orthanc: OrthancServer) -> Iterator[dict[str, Any]]:
    ohif_port, proxy_port = free_port(), free_port()
    origin = f"http://127.0.0.1:{ohif_port}"
    config = Config(token_keys=(Secret(KeyRing.generate_entry("o1")),), orthanc=orthanc.settings(read_timeout=20.0),
                    allowed_origins=(origin,), public_url=f"http://127.0.0.1:{proxy_port}",
                    service_tokens=(Secret("s" * 40),), rate_limit_per_second=1000, rate_limit_burst=5000)
    static = _static(ohif_dist, _app_config(ohif_dist, f"http://127.0.0.1:{proxy_port}/dicom-web"), ohif_port)
    try:
        with serve(create_app(config), port=proxy_port):
            yield {"origin": origin, "signer": TokenSigner(KeyRing.parse(config.token_keys))}
    finally:
        static.shutdown()
        static.server_close()


def _open_sr_measurements(page: Any, origin: str, study: dict[str, str], token: str) -> str:
    """Open the study in OHIF, load our SR, track its measurements; the page's text afterwards."""
    page.goto(f"{origin}/viewer?StudyInstanceUIDs={study['study']}&token={token}"
              "&useNextViewports=true&viewportRendering=cpu")
    sr = page.get_by_text("dicomlab ohif reader-1").first
    sr.wait_for(timeout=90_000)
    # OHIF's first-visit tour and notices sit on top of everything; they are not what is tested.
    page.evaluate("() => document.querySelectorAll('.shepherd-element, .shepherd-modal-overlay-container')"
                  ".forEach(e => e.remove())")
    sr.dblclick(force=True)
    page.get_by_role("button", name="Yes").first.click(timeout=90_000, force=True)  # track the SR's measurements
    page.locator("[data-cy='trackedMeasurements-btn']").first.click(timeout=30_000, force=True)
    page.get_by_text(f"Measurements ({len(ROIS)})").first.wait_for(timeout=60_000)
    time.sleep(1)
    return str(page.inner_text("body"))


def test_ohif_opens_our_sr_and_lists_each_roi_by_finding(ohif: dict[str, Any], study: dict[str, str]) -> None:
    token = ohif["signer"].issue(Scope(studies=(study["study"],)), subject="reader-1", ttl_seconds=600)
    page = browser().new_page(viewport={"width": 1400, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    try:
        text = _open_sr_measurements(page, ohif["origin"], study, token)
        assert "Something went wrong" not in text, (text[:2000], errors)
        listed = [finding_code(r.finding).meaning for r in ROIS if r.finding]
        for meaning in listed:
            assert meaning in text, meaning
        assert [e for e in errors if "ReferencedSOPSequence" in e or "reading 'UID'" in e] == []
    finally:
        page.close()
