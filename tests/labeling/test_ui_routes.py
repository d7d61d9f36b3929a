"""The UI blueprint: page shells with CSP and SRI tags, the built assets with cache and CORS headers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_gt_template import parse, write_dist

from dicomlab_core.config import Secret
from dicomlab_core.tokens import KeyRing
from dicomlab_labeling import ui_assets
from dicomlab_labeling.workflow.routes_ui import content_security_policy


def add_app_entry(dist: Path) -> None:
    import base64
    import hashlib
    import json

    (dist / "app-xyz.js").write_bytes(b"import './chunks/viewer-def.js';")
    manifest = json.loads((dist / "manifest.json").read_text())
    sri = "sha384-" + base64.b64encode(hashlib.sha384(b"import './chunks/viewer-def.js';").digest()).decode()
    manifest["entries"]["app"] = {"file": "app-xyz.js", "integrity": sri,
                                  "imports": manifest["entries"]["gt-worker"]["imports"], "css": []}
    (dist / "manifest.json").write_text(json.dumps(manifest))
    (dist / ".build-hash").write_text("x")
    (dist / ".vite").mkdir()
    (dist / ".vite" / "manifest.json").write_text("{}")


@pytest.fixture
def client(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    from dicomlab_labeling.app import create_app
    from dicomlab_labeling.config import LabelingConfig

    dist = tmp_path / "dist"
    dist.mkdir()
    write_dist(dist)
    add_app_entry(dist)
    monkeypatch.setattr(ui_assets, "DIST_DIR", dist)
    config = LabelingConfig(token_keys=(Secret(KeyRing.generate_entry()),), data_dir=tmp_path / "data",
                            session_secret=Secret("s" * 40), proxy_public_url="https://pacs.example.org:8443/proxy")
    (tmp_path / "data").mkdir()
    app = create_app(config)
    yield app.test_client()
    app.extensions["dicomlab_labeling_api"].db.dispose()


@pytest.mark.parametrize("path", ["/ui/login", "/ui/queue", "/ui/jobs/3/label", "/ui/review", "/ui/admin"])
def test_pages_load_our_bundle_with_sri_under_a_strict_csp(client: Any, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 200
    csp = response.headers["Content-Security-Policy"]
    assert "script-src 'self' 'wasm-unsafe-eval'" in csp
    assert "worker-src 'self' blob:" in csp
    assert "connect-src 'self' https://pacs.example.org:8443" in csp
    assert "img-src 'self' blob: data:" in csp
    assert "frame-ancestors 'none'" in csp and "unsafe-eval'" not in csp.replace("wasm-unsafe-eval'", "")
    assert response.headers["Cache-Control"] == "no-store"
    tags = parse(response.get_data(as_text=True))
    module = next(a for t, a in tags if t == "script")
    manifest = ui_assets.load_manifest()
    assert module["src"] == "/static/dist/app-xyz.js"
    assert module["integrity"] == manifest.entry("app").module.integrity and module["crossorigin"] == "anonymous"
    assert any(t == "link" and a.get("rel") == "modulepreload" and a.get("integrity") for t, a in tags)
    body = next(a for t, a in tags if t == "body")
    assert body["data-page"] == path.split("/")[-1] if path != "/ui/jobs/3/label" else body["data-job-id"] == "3"


def test_form_controls_have_labels(client: Any) -> None:
    for path in ["/ui/login", "/ui/jobs/1/label", "/ui/review", "/ui/admin"]:
        tags = parse(client.get(path).get_data(as_text=True))
        labelled = {a.get("for") for t, a in tags if t == "label"}
        for tag, attrs in tags:
            if tag in ("input", "select", "textarea") and attrs.get("type") not in ("hidden", "checkbox"):
                assert attrs.get("id") in labelled or attrs.get("aria-label"), (path, tag, attrs)


def test_built_files_are_immutable_public_and_cross_origin(client: Any) -> None:
    response = client.get("/static/dist/gt-worker-abc.js")
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "public, max-age=31536000, immutable"
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    assert response.headers["Content-Type"].startswith("text/javascript")
    assert client.get("/static/dist/manifest.json").headers["Cache-Control"] == "no-cache"
    for hidden in ["/static/dist/.build-hash", "/static/dist/.vite/manifest.json", "/static/dist/../routes_ui.py",
                   "/static/dist/nope.js"]:
        assert client.get(hidden).status_code == 404, hidden


def test_pages_say_clearly_when_the_bundle_was_not_built(client: Any, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ui_assets, "DIST_DIR", tmp_path / "empty")
    response = client.get("/ui/queue")
    assert response.status_code == 503
    assert "make frontend" in response.get_json()["description"]


def test_csp_without_a_proxy_origin() -> None:
    assert "connect-src 'self';" in content_security_policy("")
