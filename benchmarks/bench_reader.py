"""Benchmark: a scripted reader labels 20 chest images in the self-hosted UI, by keyboard, in Chromium.

The stack is the one the browser tests run: a real Orthanc on free loopback ports holding synthetic
chest radiographs (``dicomlab_core.synth``), the DICOMweb proxy and the labeling app in-process on
threaded werkzeug servers, the built viewer bundle, Debian's headless Chromium driven by Playwright.
One job of ``--images`` images (default 24: 20 labelled, the rest feed the lookahead and the warm
reloads), one reader, all 14 CheXpert findings.

The reader gives a typical answer on each of 20 images, the way the UI intends it to be given:
two findings present by their hotkeys, one ROI drawn first (rectangle tool key, one drag) and tied to
its finding by that finding's key, the rest marked absent in one action (Shift+N), the submit key
(Ctrl+Enter). It never waits on purpose: the figures are what the tool itself costs a
reader (keys, mouse actions, waiting), to set beside the 13–15 s per chest radiograph that
radiologists are reported to spend in clinical reading. Measured in the page (listeners installed
before the bundle runs, ``performance.now()``):

- keystrokes (a chord such as Ctrl+Enter counts once) and mouse actions (pointer presses) per image;
- seconds per image: from an image being displayed to the next one displayed (median, p90);
- time to next image: from the submit key to the next image displayed, and to the page accepting keys;
- time to first image, cold (browser cache cleared) and warm (the same page loaded again), from
  navigation start — the same figure the UI reports to ``/api/ui-metrics``.

    .venv/bin/python benchmarks/bench_reader.py [--images 24] [--size 1024] [--write]

With ``--write``, writes ``benchmarks/results/reader.json``. Not a test: nothing here asserts a time;
the run fails only when the UI did not store the answers the reader gave. The step functions
(``set_present``, ``draw_roi``, ``mark_rest_absent``, ``submit``) are small on purpose: when the
viewer's keyboard changes, adjust them and rerun.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
from machine_info import machine
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

from dicomlab_cli.processes import OrthancServer, free_port
from dicomlab_core.config import Secret
from dicomlab_core.labels import CHEXPERT_LABELS
from dicomlab_core.synth import SynthConfig, upload_study_set
from dicomlab_core.tokens import KeyRing

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results" / "reader.json"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--no-first-run", "--use-angle=swiftshader", "--enable-unsafe-swiftshader",
]
ADMIN = ("admin", "admin-password-1")
READER = ("reader", "reader-password-1")
PRESENT = ("Cardiomegaly", "Pleural Effusion")
"""The two findings the reader marks present on every image; the ROI is drawn for the first."""
CLINICAL_SECONDS = (13.0, 15.0)
"""Seconds per chest radiograph that radiologists are reported to spend in clinical reading."""
LABELED = 20
KLM = {"keystroke": 0.28, "point": 1.1, "button": 0.1, "home": 0.4}
"""Keystroke-level model operator times, seconds (Card, Moran & Newell): K for an average typist, P to
point with a mouse, B to press or release its button, H to move a hand between keyboard and mouse."""

# Installed before any page script: counts what the reader does and when images appear.
INSTRUMENT = r"""
(() => {
  const b = window.__bench = { keys: 0, mouse: 0, submits: [], ready: [], idle: [] };
  const modifiers = new Set(['Control', 'Shift', 'Alt', 'Meta']);
  document.addEventListener('keydown', (e) => {
    if (e.repeat || modifiers.has(e.key)) return;
    b.keys += 1;
    if (e.ctrlKey && e.key === 'Enter') b.submits.push(performance.now());
  }, true);
  document.addEventListener('pointerdown', () => { b.mouse += 1; }, true);
  new MutationObserver((records) => {
    for (const r of records) {
      const t = r.target;
      if (t.id === 'dl-viewer' && r.attributeName === 'data-state' && t.dataset.state === 'ready') {
        b.ready.push({ t: performance.now(), id: document.body.dataset.assignmentId || '' });
      } else if (t === document.body && r.attributeName === 'data-busy' && t.dataset.busy === 'false') {
        b.idle.push(performance.now());
      }
    }
  }).observe(document, { subtree: true, attributes: true, attributeFilter: ['data-state', 'data-busy'] });
})();
"""


class _QuietHandler(WSGIRequestHandler):
    def log_request(self, *args: Any, **kwargs: Any) -> None:
        pass


@contextmanager
def serve(app: Any, port: int) -> Iterator[str]:
    """Run a WSGI app on a threaded werkzeug server on ``port`` (as the browser tests do)."""
    server: BaseWSGIServer = make_server("127.0.0.1", port, app, threaded=True, request_handler=_QuietHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()


class Api:
    """A signed-in JSON API client (session cookie + CSRF header)."""

    def __init__(self, base: str, username: str, password: str) -> None:
        self.base = base
        self.http = requests.Session()
        response = self.http.post(f"{base}/api/auth/login", json={"username": username, "password": password},
                                  timeout=60)
        response.raise_for_status()
        self.csrf = response.json()["csrfToken"]

    def call(self, method: str, path: str, body: Any = None) -> Any:
        response = self.http.request(method, f"{self.base}/api{path}", json=body,
                                     headers={"X-CSRF-Token": self.csrf}, timeout=60)
        if response.status_code >= 400:
            raise RuntimeError(f"{method} {path}: HTTP {response.status_code} {response.text[:300]}")
        return response.json() if response.content else None


@contextmanager
def stack(tmp: Path, images: int, size: int) -> Iterator[dict[str, Any]]:
    """Orthanc with ``images`` synthetic chest images, proxy and labeling app; a job and a reader."""
    from dicomlab_labeling.app import create_app as labeling_app
    from dicomlab_labeling.config import AuthSettings, LabelingConfig
    from dicomlab_proxy.app import create_app as proxy_app
    from dicomlab_proxy.config import Config as ProxyConfig

    orthanc = OrthancServer(tmp / "orthanc").start()
    try:
        client = orthanc.client()
        try:
            # Chest-sized images (DX/CR, MONOCHROME1/2, some VOI LUTs, a fifth compressed), one per study.
            records = upload_study_set(SynthConfig(patients=images, seed=19, rows=size, columns=size,
                                                   studies_per_patient=(1, 1), images_per_study=(1, 1)),
                                       client, workers=2)
        finally:
            client.close()
        store = tmp / "store" / "manifests"
        store.mkdir(parents=True)
        labels = ",".join(CHEXPERT_LABELS)
        (store / "input.manifest").write_text("".join(
            json.dumps({"source": r["orthanc_id"], "labels": labels, "study-uid": r["study_uid"],
                        "series-uid": r["series_uid"], "sop-instance-uid": r["sop_uid"]}) + "\n" for r in records))
        labeling_port, proxy_port = free_port(), free_port()
        config = LabelingConfig(
            token_keys=(Secret(KeyRing.generate_entry("k1")),), orthanc=orthanc.settings(),
            proxy_public_url=f"http://127.0.0.1:{proxy_port}", store_url=f"file://{tmp / 'store'}",
            data_dir=tmp, database_url=Secret(f"sqlite:///{tmp / 'labeling.db'}"), session_secret=Secret("s" * 40),
            auth=AuthSettings(admin_username=ADMIN[0], admin_password=Secret(ADMIN[1]), cookie_secure=False,
                              login_max_failures=5, password_time_cost=1, password_memory_kib=8192))
        proxy = proxy_app(ProxyConfig(token_keys=config.token_keys, orthanc=orthanc.settings(),
                                      allowed_origins=(f"http://127.0.0.1:{labeling_port}",)))
        app = labeling_app(config)
        try:
            with serve(proxy, proxy_port), serve(app, labeling_port) as base:
                admin = Api(base, *ADMIN)
                job = admin.call("POST", "/admin/jobs", {
                    "name": "reader-bench", "manifestUri": "manifests/input.manifest", "readersPerImage": 1,
                    "strategy": "in-order", "leaseSeconds": 900, "allowPatientIdentifiers": True})
                admin.call("POST", "/admin/users", {"username": READER[0], "password": READER[1],
                                                     "role": "annotator"})
                yield {"base": base, "job": job, "admin": admin, "records": records}
        finally:
            app.extensions["dicomlab_labeling_api"].db.dispose()
    finally:
        orthanc.stop()


# ------------------------------------------------------------------------------------------- reader steps
# Each step does what a reader would do with today's UI and nothing else; the counts come from the page.

def wait_shown(page: Any, previous_id: str | None = None, timeout_ms: int = 60_000) -> str:
    """Wait until an image (another than ``previous_id``) is displayed and the page takes keys again."""
    condition = ("document.querySelector('#dl-viewer')?.dataset.state === 'ready' "
                 "&& document.body.dataset.busy === 'false'")
    if previous_id is not None:
        condition += f" && document.body.dataset.assignmentId !== {json.dumps(previous_id)}"
    page.wait_for_function(f"() => {condition}", timeout=timeout_ms)
    return str(page.evaluate("document.body.dataset.assignmentId"))


def hotkeys(page: Any) -> dict[str, str]:
    """Each finding's hotkey as Playwright names it, read from the key shown beside the finding."""
    pairs = page.evaluate("""() => [...document.querySelectorAll('#dl-viewer fieldset.dl-finding')].map(f =>
        [f.querySelector('legend')?.textContent.trim(), f.querySelector('kbd.dl-hotkey')?.textContent.trim()])""")
    keys: dict[str, str] = {}
    for label, shown in pairs:
        if label and shown:
            keys[label] = shown if shown.startswith("Shift+") else shown.lower()
    return keys


def finding_states(page: Any) -> dict[str, str]:
    return dict(page.evaluate("window.dicomlabViewer.getAnswer().findings"))


def set_present(page: Any, label: str, keys: dict[str, str]) -> None:
    """Press the finding's hotkey until it reads present (it cycles the states)."""
    for _ in range(4):
        if finding_states(page).get(label) == "present":
            return
        page.keyboard.press(keys[label])
    raise RuntimeError(f"the hotkey {keys[label]!r} did not make {label!r} present")


def draw_roi(page: Any, label: str, keys: dict[str, str]) -> None:
    """Draw first, choose after: R, one drag, then the finding's key ties the new (selected) ROI to it."""
    rois = page.locator("#dl-viewer .dl-roi-list li")
    before = rois.count()
    page.keyboard.press("r")
    box = page.locator("#dl-viewer .dl-viewport").bounding_box()
    page.mouse.move(box["x"] + box["width"] * 0.35, box["y"] + box["height"] * 0.45)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.65, box["y"] + box["height"] * 0.75, steps=5)
    page.mouse.up()
    page.wait_for_function(f"() => document.querySelectorAll('#dl-viewer .dl-roi-list li').length > {before}")
    if rois.nth(before).get_attribute("data-unassigned") == "true":
        page.keyboard.press(keys[label])
    finding = rois.nth(before).get_attribute("data-finding")
    if finding != label:
        raise RuntimeError(f"the new ROI is tied to {finding!r}, not {label!r}")


def mark_rest_absent(page: Any) -> None:
    """Every finding not looked at yet becomes absent in one action (Shift+N)."""
    page.keyboard.press("Shift+N")
    left = page.evaluate(
        "Object.values(window.dicomlabViewer.getAnswer().findings).filter((s) => s === 'not-looked-at').length")
    if left:
        raise RuntimeError(f"{left} findings still not looked at after Shift+N")


def submit(page: Any) -> None:
    page.keyboard.press("Control+Enter")


# ------------------------------------------------------------------------------------------- measurement

@dataclass
class Run:
    """What one reader session measured."""

    cold_first_image_s: float = 0.0
    warm_first_image_s: list[float] = field(default_factory=list)
    per_image: list[dict[str, float]] = field(default_factory=list)
    submitted_ids: list[str] = field(default_factory=list)


def bench_state(page: Any) -> dict[str, Any]:
    return dict(page.evaluate("JSON.parse(JSON.stringify(window.__bench))"))


def sign_in(page: Any, base: str) -> None:
    page.goto(base + "/ui/login")
    page.get_by_label("User name").fill(READER[0])
    page.get_by_label("Password").fill(READER[1])
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url("**/ui/queue")


def first_image_seconds(page: Any, url: str) -> tuple[float, str]:
    """Navigate to the labeling view; seconds from navigation start to the first image displayed."""
    page.goto(url)
    shown = wait_shown(page)
    ready = bench_state(page)["ready"]
    return round(ready[0]["t"] / 1000, 3), shown


def read(site: dict[str, Any], viewport: Any, warm_loads: int) -> Run:
    from playwright.sync_api import sync_playwright

    run = Run()
    label_url = f"{site['base']}/ui/jobs/{site['job']['id']}/label"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        context = browser.new_context(viewport=viewport)
        context.add_init_script(INSTRUMENT)
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        sign_in(page, site["base"])
        # Cold: nothing cached (the sign-in page loaded the bundle; drop it and everything else).
        context.new_cdp_session(page).send("Network.clearBrowserCache")
        run.cold_first_image_s, current = first_image_seconds(page, label_url)
        keys = hotkeys(page)
        missing = [label for label in PRESENT if label not in keys]
        if missing:
            raise RuntimeError(f"no hotkey shown for {missing}")
        for _ in range(LABELED):
            before = bench_state(page)
            set_present(page, PRESENT[0], keys)
            set_present(page, PRESENT[1], keys)
            draw_roi(page, PRESENT[0], keys)
            mark_rest_absent(page)
            submit(page)
            run.submitted_ids.append(current)
            current = wait_shown(page, current)
            after = bench_state(page)
            shown_at = before["ready"][-1]["t"]
            submitted_at = after["submits"][-1]
            next_ready = after["ready"][-1]["t"]
            next_idle = after["idle"][-1]
            run.per_image.append({
                "keystrokes": after["keys"] - before["keys"], "mouse_actions": after["mouse"] - before["mouse"],
                "seconds": (next_ready - shown_at) / 1000, "to_next_image_s": (next_ready - submitted_at) / 1000,
                "to_keys_accepted_s": (max(next_ready, next_idle) - submitted_at) / 1000,
            })
        for _ in range(warm_loads):
            seconds, current = first_image_seconds(page, label_url)
            run.warm_first_image_s.append(seconds)
        context.close()
        browser.close()
    if errors:
        raise RuntimeError(f"page errors: {errors}")
    return run


def check_stored(site: dict[str, Any], run: Run) -> int:
    """The answers the server stored for the reader: every one with the two findings and one ROI."""
    admin: Api = site["admin"]
    good = 0
    tasks = admin.call("GET", f"/review/jobs/{site['job']['id']}/tasks?filter=all&limit=100")["tasks"]
    for task in tasks:
        if not task["answers"]:
            continue
        for answer in admin.call("GET", f"/review/tasks/{task['taskId']}")["answers"]:
            present = sorted(k for k, v in answer["findings"].items() if v == "present")
            rois = [r["finding"] for r in answer["rois"]]
            if answer["reader"] == READER[0] and present == sorted(PRESENT) and rois == [PRESENT[0]]:
                good += 1
    return good


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def summarize(run: Run) -> dict[str, Any]:
    def col(key: str) -> list[float]:
        return [p[key] for p in run.per_image]

    def stats(values: list[float]) -> dict[str, float]:
        return {"median": round(statistics.median(values), 3), "p90": round(quantile(values, 0.9), 3),
                "min": round(min(values), 3), "max": round(max(values), 3)}

    return {
        "images_labeled": len(run.per_image),
        "keystrokes_per_image": stats(col("keystrokes")),
        "mouse_actions_per_image": stats(col("mouse_actions")),
        "seconds_per_image": stats(col("seconds")),
        "time_to_next_image_s": stats(col("to_next_image_s")),
        "time_to_keys_accepted_s": stats(col("to_keys_accepted_s")),
        "time_to_first_image_s": {"cold": run.cold_first_image_s,
                                  "warm_median": round(statistics.median(run.warm_first_image_s), 3),
                                  "warm": run.warm_first_image_s},
        "motor_seconds_klm": motor_seconds(statistics.median(col("keystrokes")),
                                           statistics.median(col("mouse_actions"))),
        "klm_operator_seconds": KLM,
        "per_image": [{k: round(v, 3) for k, v in p.items()} for p in run.per_image],
    }


def motor_seconds(keys: float, drags: float) -> float:
    """Keystroke-level estimate of a person's hands-on time for ``keys`` keystrokes and ``drags`` drags.

    A drag is point, press, point, release; each drag also moves a hand to the mouse and back.
    Thinking and looking (the reading itself) are not in it.
    """
    drag = 2 * KLM["point"] + 2 * KLM["button"] + 2 * KLM["home"]
    return round(keys * KLM["keystroke"] + drags * drag, 2)


def table(summary: dict[str, Any]) -> str:
    rows = [("What (per image, 20 images)", "median", "p90")]
    for key, name in (("keystrokes_per_image", "keystrokes"), ("mouse_actions_per_image", "mouse actions"),
                      ("seconds_per_image", "seconds per image (scripted, no thinking)"),
                      ("time_to_next_image_s", "submit key → next image shown, s"),
                      ("time_to_keys_accepted_s", "submit key → page takes keys again, s")):
        rows.append((name, f"{summary[key]['median']:g}", f"{summary[key]['p90']:g}"))
    rows.append(("hands-on time by the keystroke-level model, s", f"{summary['motor_seconds_klm']:g}", ""))
    first = summary["time_to_first_image_s"]
    rows.append(("time to first image, cold / warm (median), s", f"{first['cold']:g}", f"{first['warm_median']:g}"))
    rows.append(("clinical reading, reported, s per chest X-ray", f"{CLINICAL_SECONDS[0]:g}–{CLINICAL_SECONDS[1]:g}", ""))
    width = max(len(r[0]) for r in rows)
    return "\n".join(f"{a:<{width}}  {b:>8}  {c:>8}" for a, b, c in rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--images", type=int, default=24, help=f"images in the job (at least {LABELED + 2})")
    parser.add_argument("--size", type=int, default=1024, help="rows and columns of each synthetic image")
    parser.add_argument("--width", type=int, default=1366, help="browser viewport width")
    parser.add_argument("--height", type=int, default=768, help="browser viewport height")
    parser.add_argument("--warm-loads", type=int, default=3, help="warm reloads of the labeling view")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results JSON, with --write")
    parser.add_argument("--write", action="store_true", help="write the results to --out (without it: print only)")
    args = parser.parse_args(argv)
    if args.images < LABELED + 2:
        parser.error(f"--images must be at least {LABELED + 2} (20 labelled, lookahead, warm reloads)")
    if not Path(CHROMIUM).exists():
        parser.error(f"{CHROMIUM} is missing (Debian's chromium package: scripts/install-system-deps.sh)")
    # The bundle, built as `make frontend` builds it (a no-op when it is up to date), as the browser tests do.
    built = subprocess.run([sys.executable, str(ROOT / "scripts" / "build_frontend.py")], check=False)
    if built.returncode != 0:
        print("the viewer bundle could not be built (make frontend)", file=sys.stderr)
        return 2
    logging.disable(logging.INFO)
    with tempfile.TemporaryDirectory(prefix="bench-reader-") as tmp, stack(Path(tmp), args.images, args.size) as site:
        load_at_start = [round(v, 2) for v in os.getloadavg()]
        started = time.perf_counter()
        run = read(site, {"width": args.width, "height": args.height}, args.warm_loads)
        elapsed = time.perf_counter() - started
        stored = check_stored(site, run)
    summary = summarize(run)
    report = {
        "benchmark": "reader", "images_in_job": args.images, "image_size": [args.size, args.size],
        "viewport": [args.width, args.height], "labels": len(CHEXPERT_LABELS),
        "answer": {"present": list(PRESENT), "roi": f"one rectangle on {PRESENT[0]}", "others": "absent"},
        "answers_stored_as_given": stored, **summary,
        "clinical_reading_seconds_reported": list(CLINICAL_SECONDS),
        "session_wall_seconds": round(elapsed, 1),
        "note": "a scripted reader with no thinking time: the seconds are what the tool costs, not a reading time; "
                "stack as in the browser tests (werkzeug threads, SQLite, headless Chromium with SwiftShader)",
        "machine": {**machine(), "load_average_at_start_1m_5m_15m": load_at_start},
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    if args.write:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(table(summary))
    print(json.dumps({k: v for k, v in report.items() if k != "per_image"}, indent=2))
    if stored != LABELED:
        print(f"only {stored} of {LABELED} answers were stored as the reader gave them", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
