"""Browser tests: one headless Chromium for the whole session, page logs, the built viewer bundle.

Playwright's sync API runs an event loop in the thread that started it: a second
``sync_playwright()`` while the first is alive fails ("using Playwright Sync API inside the asyncio
loop"), so browser tests in different folders must share one instance. Debian's chromium is driven
through ``executable_path``; Playwright never downloads a browser here.
"""

from __future__ import annotations

import atexit
import io
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
# Stand-in for Ground Truth's crowd-html-elements runtime (unreachable here): a <crowd-form> that, like the
# real one, renders a Submit button, fires a cancelable "submit" event and then posts every named input
# of the form as one JSON object (here: kept in window.__crowdSubmitted for the test to read).
CROWD_ELEMENTS_STUB = r"""
class CrowdForm extends HTMLElement {
  connectedCallback() {
    if (this._button) return;
    this._button = document.createElement('button');
    this._button.type = 'button';
    this._button.textContent = 'Submit';
    this._button.id = 'crowd-submit';
    this._button.addEventListener('click', () => this.submit());
    this.append(this._button);
  }
  submit() {
    const event = new Event('submit', { cancelable: true });
    if (!this.dispatchEvent(event)) { window.__crowdBlocked = (window.__crowdBlocked || 0) + 1; return; }
    const out = {};
    for (const input of this.querySelectorAll('input[name]')) out[input.name] = input.value;
    window.__crowdSubmitted = JSON.stringify(out);
  }
}
customElements.define('crowd-form', CrowdForm);
"""


def ensure_bundle() -> None:
    """Build the bundle with the same script as ``make frontend`` (a no-op when it is up to date)."""
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "build_frontend.py")],
                            capture_output=True, text=True, timeout=900, check=False)
    if result.returncode != 0:
        pytest.fail(f"make frontend failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")


CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--no-first-run", "--use-angle=swiftshader", "--enable-unsafe-swiftshader",
]

_state: dict[str, Any] = {}


def browser() -> Any:
    """The session's Chromium (started on first use, closed at interpreter exit)."""
    if "browser" not in _state:
        if not CHROMIUM.exists():
            pytest.skip("Debian chromium is not installed (make deps)")
        from playwright.sync_api import sync_playwright

        playwright = sync_playwright().start()
        _state["playwright"] = playwright
        _state["browser"] = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)

        def close() -> None:
            _state["browser"].close()
            playwright.stop()

        atexit.register(close)
    return _state["browser"]


@dataclass
class PageLog:
    """What a page said on its console and which requests it made."""

    errors: list[str] = field(default_factory=list)
    requests: list[dict[str, Any]] = field(default_factory=list)

    def attach(self, page: Any) -> None:
        page.on("console", lambda m: self.errors.append(f"console.{m.type}: {m.text}") if m.type == "error" else None)
        page.on("pageerror", lambda e: self.errors.append(f"pageerror: {e}"))
        page.on("request", lambda r: self.requests.append({"url": r.url, "headers": r.headers, "method": r.method}))
        page.on("response", lambda r: self.errors.append(f"HTTP {r.status} {r.request.method} {r.url}")
                if r.status >= 400 else None)


def pixel_stats(png: bytes) -> tuple[float, int]:
    """Standard deviation and number of distinct grey levels of a screenshot (blank canvas: ~0, 1)."""
    image = np.asarray(Image.open(io.BytesIO(png)).convert("L"), dtype=np.float64)
    return float(image.std()), len(np.unique(image))


def new_page(viewport: dict[str, int] | None = None, init_script: str | None = None,
             **context_options: Any) -> tuple[Any, PageLog]:
    """A page in a fresh context of the shared Chromium (1366×768 unless ``viewport``), its log attached;
    ``init_script`` runs before any page script (e.g. to set ``window.dicomlabConfig``)."""
    context = browser().new_context(viewport=viewport or {"width": 1366, "height": 768}, **context_options)
    if init_script is not None:
        context.add_init_script(init_script)
    page = context.new_page()
    log = PageLog()
    log.attach(page)
    return page, log


def log_in(page: Any, base: str, username: str, password: str, next_path: str | None = None) -> None:
    """Sign in through the labeling service's login page; waits for the queue (or for ``next_path``)."""
    page.goto(base + "/ui/login" + (f"?next={next_path}" if next_path else ""))
    page.get_by_label("User name").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url("**" + (next_path or "/ui/queue"))
