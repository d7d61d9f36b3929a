"""Real headless Chromium: a page on another origin loads an image through the proxy — or is blocked."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from proxy_helpers import ALLOWED_ORIGIN_PORT, Proxy, Studies

from dicomlab_cli.processes import free_port

pytestmark = pytest.mark.browser

FETCH_IMAGE = """async ([url, token]) => {
  try {
    const response = await fetch(url, {headers: {Authorization: 'Bearer ' + token}});
    const blob = await response.blob();
    const bitmap = await createImageBitmap(blob);
    return {ok: true, status: response.status, width: bitmap.width, type: blob.type,
            length: response.headers.get('Content-Length')};
  } catch (error) {
    return {ok: false, error: String(error)};
  }
}"""


@contextmanager
def page_server(port: int) -> Iterator[str]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            body = b"<!doctype html><title>viewer</title><img id=i>"
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.shutdown()
        server.server_close()


def test_cross_origin_image_allowed_and_blocked(proxy: Proxy, studies: Studies) -> None:
    from support.browser import browser as shared_browser

    a = studies.a
    token = proxy.study_token(a)
    image = f"{proxy.url}/dicom-web/studies/{a.study}/series/{a.series}/instances/{a.sop}/rendered"
    with page_server(ALLOWED_ORIGIN_PORT) as allowed, page_server(free_port()) as other:
        context = shared_browser().new_context()
        try:
            page = context.new_page()
            page.goto(allowed + "/")
            ok = page.evaluate(FETCH_IMAGE, [image, token])
            assert ok["ok"] and ok["status"] == 200 and ok["width"] == 128 and ok["type"] == "image/jpeg", ok
            # An <img> with the token in the query (the WADO-URI case) renders cross-origin as well.
            wado = (f"{proxy.url}/wado?requestType=WADO&studyUID={a.study}&seriesUID={a.series}"
                    f"&objectUID={a.sop}&token={token}")
            width = page.evaluate("""async (src) => { const img = document.getElementById('i');
                img.crossOrigin = 'anonymous'; img.src = src; await img.decode(); return img.naturalWidth; }""", wado)
            assert width == 128
            page.goto(other + "/")
            blocked = page.evaluate(FETCH_IMAGE, [image, token])
            assert not blocked["ok"] and "Failed to fetch" in blocked["error"], blocked
        finally:
            context.close()
