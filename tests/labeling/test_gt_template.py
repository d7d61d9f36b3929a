"""The Ground Truth worker template: rendered with python-liquid, bundle tags with SRI, safe escaping."""

from __future__ import annotations

import base64
import hashlib
import json
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from liquid import Environment

from dicomlab_labeling import ui_assets
from dicomlab_labeling.groundtruth.template import assets_base_for, render_gt_template


def write_dist(root: Path) -> Path:
    """A small built-bundle directory with a manifest in the format build_frontend.py writes."""
    files = {"gt-worker-abc.js": b"import './chunks/viewer-def.js';", "chunks/viewer-def.js": b"export {};",
             "assets/style-123.css": b"body{}"}
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)

    def asset(name: str) -> dict[str, str]:
        digest = base64.b64encode(hashlib.sha384(files[name]).digest()).decode()
        return {"file": name, "integrity": f"sha384-{digest}"}

    manifest = {"version": 1, "entries": {
        "gt-worker": {**asset("gt-worker-abc.js"), "imports": [asset("chunks/viewer-def.js")], "css": []},
        "style": {**asset("assets/style-123.css"), "imports": [], "css": []},
    }}
    (root / "manifest.json").write_text(json.dumps(manifest))
    return root


class Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))


def parse(html: str) -> list[tuple[str, dict[str, str | None]]]:
    parser = Tags()
    parser.feed(html)
    return parser.tags


def gt_render(template: str, task_input: dict[str, Any]) -> str:
    """Ground Truth's pass: Liquid with autoescape and its to_json filter."""
    env = Environment(autoescape=True)
    env.filters["to_json"] = lambda value: json.dumps(value)
    return env.from_string(template).render(task={"input": task_input})


@pytest.fixture
def dist(tmp_path: Path) -> ui_assets.AssetManifest:
    return ui_assets.load_manifest(write_dist(tmp_path))


def test_bundle_tags_carry_sri_and_crossorigin_from_our_host(dist: ui_assets.AssetManifest) -> None:
    html = render_gt_template("https://label.example.org/static/dist/", manifest=dist)
    tags = parse(html)
    scripts = [a for t, a in tags if t == "script"]
    module = next(a for a in scripts if a.get("type") == "module")
    assert module["src"] == "https://label.example.org/static/dist/gt-worker-abc.js"
    assert module["integrity"] == dist.entry("gt-worker").module.integrity
    assert module["crossorigin"] == "anonymous"
    preload = next(a for t, a in tags if t == "link" and a.get("rel") == "modulepreload")
    assert preload["href"] == "https://label.example.org/static/dist/chunks/viewer-def.js"
    assert preload["integrity"] == dist.entry("gt-worker").imports[0].integrity
    style = next(a for t, a in tags if t == "link" and a.get("rel") == "stylesheet")
    assert style["integrity"] == dist.entry("style").module.integrity and style["crossorigin"] == "anonymous"
    # The only third-party script is Ground Truth's own crowd-html-elements runtime.
    external = [a["src"] for a in scripts if a.get("src") and not a["src"].startswith("https://label.example.org/")]
    assert external == ["https://assets.crowd.aws/crowd-html-elements.js"]
    # The per-task part is left for Ground Truth.
    assert "{{ task.input | to_json | escape }}" in html
    assert "<crowd-form>" in html and 'name="answer"' in html


def test_instructions_are_escaped_and_base_must_be_a_url(dist: ui_assets.AssetManifest) -> None:
    html = render_gt_template("https://h/static/dist", manifest=dist, instructions='<script>alert("x")</script>')
    assert "<script>alert" not in html and "&lt;script&gt;alert" in html
    with pytest.raises(ValueError, match="absolute"):
        render_gt_template("/static/dist", manifest=dist)


def test_task_input_round_trips_through_ground_truth_rendering(dist: ui_assets.AssetManifest) -> None:
    hostile = ['No Finding', '"><script>alert(1)</script>', "Edema & <b>'x'</b>"]
    task_input = {"taskObject": "https://proxy/instances/abc/file", "token": "v1.k1.x.y", "labels": hostile,
                  "previousAnswer": '{"findings": {"Edema": "present"}}'}
    page = gt_render(render_gt_template("https://h/static/dist", manifest=dist), task_input)
    assert "<script>alert(1)" not in page
    holder = next(a for t, a in parse(page) if t == "div" and a.get("id") == "dicomlab-task")
    assert json.loads(holder["data-task-input"] or "") == task_input


def test_the_jobs_default_finding_state_is_in_the_template(dist: ui_assets.AssetManifest) -> None:
    def job_state(html: str) -> str | None:
        holder = next(a for t, a in parse(html) if t == "div" and a.get("id") == "dicomlab-job")
        return holder["data-default-finding-state"]

    assert job_state(render_gt_template("https://h/static/dist", manifest=dist)) == "absent"
    chosen = render_gt_template("https://h/static/dist", manifest=dist, default_finding_state="not-looked-at")
    assert job_state(gt_render(chosen, {"labels": ["Edema"]})) == "not-looked-at"  # survives GT's pass
    with pytest.raises(ValueError, match="default_finding_state"):
        render_gt_template("https://h/static/dist", manifest=dist, default_finding_state="present")


def test_missing_build_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ui_assets.AssetsMissing, match="make frontend"):
        render_gt_template("https://h/static/dist", manifest=ui_assets.load_manifest(tmp_path))


def test_cli_writes_the_template(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from dicomlab_cli.main import main

    (tmp_path / "dist").mkdir()
    monkeypatch.setattr(ui_assets, "DIST_DIR", write_dist(tmp_path / "dist"))
    out = tmp_path / "worker.liquid.html"
    assert main(["labeling", "gt-template", "--assets-base", "https://label.example.org/static/dist",
                 "--out", str(out), "--default-finding-state", "not-looked-at"]) == 0
    text = out.read_text()
    assert 'src="https://label.example.org/static/dist/gt-worker-abc.js"' in text
    assert "{{ task.input | to_json | escape }}" in text
    assert 'data-default-finding-state="not-looked-at"' in text


@pytest.mark.parametrize(("given", "expected"), [
    ("https://label.example.org", "https://label.example.org/static/dist"),
    ("https://label.example.org/", "https://label.example.org/static/dist"),
    ("https://example.org/labeling/", "https://example.org/labeling/static/dist"),
    ("https://label.example.org/static/dist/", "https://label.example.org/static/dist"),
])
def test_the_assets_base_is_the_service_url_plus_static_dist(given: str, expected: str) -> None:
    assert assets_base_for(given) == expected


@pytest.mark.parametrize("bad", ["label.example.org", "ftp://h/x", "https://"])
def test_the_assets_base_needs_an_absolute_http_url(bad: str) -> None:
    with pytest.raises(ValueError, match="absolute"):
        assets_base_for(bad)
