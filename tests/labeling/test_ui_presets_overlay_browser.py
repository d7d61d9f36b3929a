"""Window presets that mean something on radiographs (#19 item 6) and the image overlay, note and
quality flag (item 8), in the labeling page at 1366×768 and 1920×1080 (real app, proxy and Orthanc).

Two chest-like projection images are uploaded: MONOCHROME2 and the same anatomy as MONOCHROME1, both
with View Position AP and the patient's age and sex. The histogram presets' ranges are checked against
percentiles computed here from the file's own pixel values (after the modality LUT): "lung" takes the
darker displayed part (the high values of a MONOCHROME1 image), "mediastinum" the brighter part, and the
lung window shows the image brighter than the mediastinum window. The overlay shows the view position
always, and age and sex only in a job that allows patient identifiers. A note and the quality flag are
submitted with the answer, without skipping. At both window sizes everything needed to label (image,
overlay, tools and presets, findings, note, quality flag, submit and skip) is on screen without
scrolling, and the image gets most of the screen.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from typing import Any

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from selfhosted_support import PASSWORD
from support.browser import log_in, new_page
from support.site import labeling_site

pytestmark = [pytest.mark.browser, pytest.mark.slow]

LABELS = "No Finding,Cardiomegaly,Edema,Pneumothorax"
SIZE = 256
WINDOWS = [(1366, 768), (1920, 1080)]


def window_id(window: tuple[int, int]) -> str:
    return f"{window[0]}x{window[1]}"


def chest_values(seed: int = 7) -> np.ndarray:
    """A chest-like 12-bit picture (MONOCHROME2 sense): dark air, darker-grey lungs, bright mediastinum and spine."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:SIZE, 0:SIZE]
    image = np.full((SIZE, SIZE), 300.0)
    body = ((x - 128) / 120) ** 2 + ((y - 135) / 125) ** 2 < 1
    image[body] = 1800
    for cx in (80, 176):
        lung = ((x - cx) / 38) ** 2 + ((y - 125) / 80) ** 2 < 1
        image[lung] = 900 + (y[lung] - 45) * 3
    image[(abs(x - 128) < 22) & body] = 2900
    image[(abs(x - 128) < 7) & body] = 3600
    image += rng.normal(0, 40, image.shape)
    return np.clip(image, 0, 4095).astype(np.uint16)


def dicom_bytes(values: np.ndarray, photometric: str, patient_id: str) -> tuple[bytes, str]:
    ds = pydicom.Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"  # Digital X-Ray, for presentation
    sop = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = sop
    ds.SOPClassUID, ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPClassUID, sop
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.PatientID, ds.PatientName, ds.PatientAge, ds.PatientSex = patient_id, "Test^Preset", "058Y", "F"
    ds.PatientBirthDate = "19680101"
    ds.Modality, ds.ViewPosition, ds.ImageLaterality = "DX", "AP", "U"
    ds.Rows = ds.Columns = SIZE
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.RescaleSlope, ds.RescaleIntercept = 1, 0
    ds.PixelData = values.tobytes()
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue(), sop


def percentile(sorted_values: np.ndarray, p: float) -> float:
    """Nearest rank, as the viewer takes it (JavaScript's Math.round: halves go up)."""
    rank = int(np.floor(p / 100 * (len(sorted_values) - 1) + 0.5))
    return float(sorted_values[min(len(sorted_values) - 1, max(0, rank))])


@pytest.fixture(scope="module")
def site(orthanc: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("presets")
    values = chest_values()
    client = orthanc.client()
    images = []
    for photometric, stored in (("MONOCHROME2", values), ("MONOCHROME1", (4095 - values).astype(np.uint16))):
        data, sop = dicom_bytes(stored, photometric, f"PRESET-{photometric}")
        images.append({"orthanc_id": client.upload_instance(data)["ID"], "sop": sop, "values": stored,
                       "photometric": photometric})
    client.close()
    store = tmp / "store" / "manifests"
    store.mkdir(parents=True)
    (store / "presets.manifest").write_text("".join(
        json.dumps({"source": i["orthanc_id"], "labels": LABELS}) + "\n" for i in images))
    with labeling_site(orthanc, tmp) as running:
        # Per window size: a de-identified job and one that allows identifiers, and a reader.
        for window in WINDOWS:
            for name, allowed in (("presets-deid", False), ("presets-ids", True)):
                running.create_job(f"{name}-{window_id(window)}", manifest_uri="manifests/presets.manifest",
                                   readersPerImage=1, strategy="in-order", allowPatientIdentifiers=allowed)
        running.users([f"rita{w}" for w, _ in WINDOWS])
        yield {"base": running.base, "images": images, "tmp": tmp}


def open_job(site: dict[str, Any], job: str, window: tuple[int, int]) -> Any:
    page, _ = new_page({"width": window[0], "height": window[1]})
    log_in(page, site["base"], f"rita{window[0]}", PASSWORD)
    page.get_by_role("link", name=f"Label images of {job}-{window_id(window)}").click()
    wait_ready(page)
    return page


def wait_ready(page: Any) -> None:
    page.wait_for_function("() => document.querySelector('#dl-viewer')?.dataset.state === 'ready' "
                           "&& document.body.dataset.busy === 'false'", timeout=60_000)


def voi(page: Any) -> dict[str, float]:
    return dict(page.evaluate("window.dicomlabViewer.viewport.getProperties().voiRange"))


def mean_brightness(page: Any) -> float:
    png = page.locator(".dl-viewport").screenshot()
    return float(np.asarray(Image.open(io.BytesIO(png)).convert("L"), dtype=np.float64).mean())


def check_presets(page: Any, values: np.ndarray, inverted: bool) -> None:
    ordered = np.sort(values.astype(np.float64).ravel())
    full = voi(page)
    brightness = {}
    for key, name, (low, high) in (("1", "lung", (0.5, 75)), ("2", "mediastinum", (35, 99.5))):
        page.keyboard.press(key)
        page.wait_for_function(f"() => document.querySelector('#dl-viewer').dataset.preset === {json.dumps(name)}")
        got = voi(page)
        lo, hi = (100 - high, 100 - low) if inverted else (low, high)
        assert got["lower"] == pytest.approx(percentile(ordered, lo)), (name, got)
        assert got["upper"] == pytest.approx(percentile(ordered, hi)), (name, got)
        assert full["lower"] <= got["lower"] < got["upper"] <= full["upper"], (name, got, full)
        page.wait_for_timeout(100)  # the canvas is drawn on the next animation frame
        brightness[name] = mean_brightness(page)
    # The lung window spreads the dark part over the grey scale: the picture as a whole gets brighter.
    assert brightness["lung"] > brightness["mediastinum"] + 20, brightness
    lung_upper = percentile(ordered, 25 if inverted else 75)
    if inverted:  # MONOCHROME1: the dark (displayed) lungs are the high values
        assert voi(page)["lower"] < lung_upper
    page.keyboard.press("0")


# (The overlay lets the mouse through to the image, so hit-testing cannot see it: its box is checked.)
SHOWN_AT_CENTRE = """(e) => { if (getComputedStyle(e).pointerEvents === 'none') return true;
    const r = e.getBoundingClientRect();
    const hit = document.elementFromPoint(r.x + r.width / 2, r.y + r.height / 2);
    return Boolean(hit) && (e === hit || e.contains(hit)); }"""


def assert_all_on_screen(page: Any, window: tuple[int, int]) -> None:
    """Everything needed to label is inside the window, the page does not scroll, the image has most of it."""
    width, height = window
    assert page.evaluate("document.scrollingElement.scrollHeight <= window.innerHeight"), (
        window, page.evaluate("[document.scrollingElement.scrollHeight, window.innerHeight]"))
    assert page.evaluate("document.scrollingElement.scrollWidth <= window.innerWidth"), window
    needed = [page.locator(".dl-viewport"), page.locator(".dl-overlay"), page.locator(".dl-toolbar"),
              page.get_by_label("Note"), page.get_by_label("Quality issue (label it anyway)"),
              page.locator("#dl-submit"), page.locator("#dl-skip")]
    needed += [page.locator(".dl-finding").nth(i) for i in range(page.locator(".dl-finding").count())]
    assert len(needed) >= 7 + len(LABELS.split(","))
    for target in needed:
        box = target.bounding_box()
        assert box is not None and target.is_visible(), target
        assert box["x"] >= 0 and box["y"] >= 0, (target, box, window)
        assert box["x"] + box["width"] <= width + 1 and box["y"] + box["height"] <= height + 1, (target, box, window)
        # Not clipped by a scrolled panel either: what is drawn at its centre is the element itself.
        assert target.evaluate(SHOWN_AT_CENTRE), (target, box, window)
    image = page.locator(".dl-viewport").bounding_box()
    assert image["width"] * image["height"] > 0.5 * width * height, (image, window)


@pytest.mark.parametrize("window", WINDOWS, ids=window_id)
def test_histogram_presets_overlay_note_and_quality_flag(site: dict[str, Any], window: tuple[int, int]) -> None:
    images = site["images"]
    page = open_job(site, "presets-deid", window)
    assert_all_on_screen(page, window)
    # De-identified job: the view position (laterality U, unpaired, says nothing), never age or sex.
    assert page.locator(".dl-overlay").text_content() == "AP"
    check_presets(page, images[0]["values"], inverted=False)
    # A note and the quality flag go with the answer; the image is not skipped.
    first = page.evaluate("document.body.dataset.assignmentId")
    page.get_by_label("Note").fill("rotated, AP portable")
    page.get_by_label("Quality issue (label it anyway)").check()
    page.keyboard.press("f")
    page.screenshot(path=str(site["tmp"] / f"presets-{window_id(window)}.png"))
    page.keyboard.press("Control+Enter")
    page.wait_for_function(f"() => document.body.dataset.assignmentId !== {json.dumps(first)}")
    wait_ready(page)
    stored = page.evaluate(f"fetch('/api/assignments/{first}').then((r) => r.json())")
    assert stored["status"] == "submitted"
    assert stored["mySubmission"]["answer"]["note"] == "rotated, AP portable"
    assert stored["mySubmission"]["answer"]["qualityIssue"] is True
    # The next image starts with an empty note and no flag.
    assert page.get_by_label("Note").input_value() == ""
    assert not page.get_by_label("Quality issue (label it anyway)").is_checked()
    check_presets(page, images[1]["values"], inverted=True)
    page.context.close()

    # A job that allows identifiers: age and sex too.
    page = open_job(site, "presets-ids", window)
    overlay = page.locator(".dl-overlay").text_content() or ""
    assert overlay == "AP · 58 y · F", overlay
    page.context.close()


