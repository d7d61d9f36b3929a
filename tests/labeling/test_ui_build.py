"""``make frontend`` (scripts/build_frontend.py): pinned inputs, SRI manifest, incremental, clear errors."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import sys

import pytest
from ui_support import ROOT, ensure_bundle

FRONTEND = ROOT / "services" / "dicomlab_labeling" / "frontend"
DIST = ROOT / "services" / "dicomlab_labeling" / "static" / "dist"
SCRIPT = ROOT / "scripts" / "build_frontend.py"


def test_dependencies_are_pinned_exactly_and_locked() -> None:
    package = json.loads((FRONTEND / "package.json").read_text())
    lock = json.loads((FRONTEND / "package-lock.json").read_text())
    deps = {**package["dependencies"], **package["devDependencies"]}
    for name in ("@cornerstonejs/core", "@cornerstonejs/tools", "@cornerstonejs/dicom-image-loader", "vite"):
        version = deps[name]
        assert version[0].isdigit(), f"{name} is not pinned: {version}"
        assert lock["packages"][f"node_modules/{name}"]["version"] == version
    assert deps["@cornerstonejs/core"].startswith("5.") and deps["vite"].startswith("7.")


@pytest.mark.slow
def test_build_writes_an_sri_manifest_and_is_incremental() -> None:
    ensure_bundle()
    manifest = json.loads((DIST / "manifest.json").read_text())
    assert {"viewer", "gt-worker", "app", "style"} <= set(manifest["entries"])
    for entry in manifest["entries"].values():
        for asset in [entry, *entry["imports"], *entry["css"]]:
            digest = hashlib.sha384((DIST / asset["file"]).read_bytes()).digest()
            assert asset["integrity"] == "sha384-" + base64.b64encode(digest).decode()
    assert [i["file"] for i in manifest["entries"]["gt-worker"]["imports"]] == [manifest["entries"]["viewer"]["file"]]
    assert list(DIST.rglob("*.wasm")), "the WASM codecs are shipped as separate assets"
    assert list(DIST.rglob("decodeImageFrameWorker-*.js")), "the decode worker is a separate ES module"
    # Nothing changed since: neither npm ci nor vite runs again.
    again = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True, timeout=120, check=True)
    assert "up to date" in again.stdout and "npm" not in again.stdout and "vite" not in again.stdout


def test_missing_node_is_a_clear_error() -> None:
    env = {**os.environ, "PATH": "/nonexistent"}
    result = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True, env=env, timeout=60,
                            check=False)
    assert result.returncode == 1
    assert "node and npm are needed" in result.stderr and "Node.js" in result.stderr
