"""One headless Chromium for the whole test session, shared by every browser test.

Playwright's sync API runs an event loop in the thread that started it: a second
``sync_playwright()`` while the first is alive fails ("using Playwright Sync API inside the asyncio
loop"), so browser tests in different folders must share one instance. Debian's chromium is driven
through ``executable_path``; Playwright never downloads a browser here.
"""

from __future__ import annotations

import atexit
from pathlib import Path
from typing import Any

import pytest

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
