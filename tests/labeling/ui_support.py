"""Shared pieces of the UI browser tests: the built bundle, in-process servers, one headless Chromium.

Chromium is the Debian binary driven by Playwright (never ``playwright install``); one browser is
started per test session and reused by every UI test module.
"""

from __future__ import annotations

import io
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

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


class _QuietHandler(WSGIRequestHandler):
    def log_request(self, *args: Any, **kwargs: Any) -> None:
        pass


@contextmanager
def serve(app: Any, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Run a WSGI app in a thread (on ``port``, default a free one); yields its base URL."""
    server: BaseWSGIServer = make_server(host, port, app, threaded=True, request_handler=_QuietHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://{host}:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()


def browser() -> Any:
    """The session's shared Chromium (see ``tests/shared_browser.py``)."""
    from shared_browser import browser as shared

    return shared()


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
