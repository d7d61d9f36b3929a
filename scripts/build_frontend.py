#!/usr/bin/env python3
"""Build the labeling UI bundle (``make frontend``): ``npm ci`` + ``vite build`` + an SRI manifest.

Steps, each skipped when its inputs did not change:

1. ``npm ci`` in ``services/dicomlab_labeling/frontend`` when ``node_modules`` is missing or
   ``package-lock.json`` changed since the last install (hash kept in ``node_modules/.dicomlab-lock.sha256``).
2. ``npx vite build`` into ``services/dicomlab_labeling/static/dist`` when a source, the Vite config or
   the lock file changed (hash kept in ``static/dist/.build-hash``).
3. ``static/dist/manifest.json``: entry name -> file, SRI ``sha384`` integrity, imported chunks and CSS
   (each with its own integrity), read by ``dicomlab_labeling.ui_assets``.

Needs only ``node`` (>= 20.19) and ``npm`` on PATH. ``--force`` rebuilds everything.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
FRONTEND = ROOT / "services" / "dicomlab_labeling" / "frontend"
DIST = ROOT / "services" / "dicomlab_labeling" / "static" / "dist"
LOCK_STAMP = "node_modules/.dicomlab-lock.sha256"
BUILD_STAMP = ".build-hash"
MANIFEST = "manifest.json"
BUILD_INPUTS = ("package.json", "package-lock.json", "vite.config.js", "src")
MIN_NODE = (20, 19)


class BuildError(Exception):
    """The build cannot go on; the message says why and what to do."""


def sha256_of(paths: list[Path], base: Path) -> str:
    """One hash over the relative names and contents of ``paths`` (files, or directories walked)."""
    digest = hashlib.sha256()
    files: list[Path] = []
    for path in paths:
        files.extend(sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path])
    for file in files:
        digest.update(str(file.relative_to(base)).encode())
        digest.update(b"\0")
        digest.update(file.read_bytes())
        digest.update(b"\0")
    return digest.hexdigest()


def sri(path: Path) -> str:
    """The Subresource Integrity value (``sha384-<base64>``) of a file."""
    return "sha384-" + base64.b64encode(hashlib.sha384(path.read_bytes()).digest()).decode("ascii")


def check_node() -> tuple[str, str]:
    node, npm = shutil.which("node"), shutil.which("npm")
    if not node or not npm:
        raise BuildError(
            "node and npm are needed to build the labeling UI (services/dicomlab_labeling/frontend) "
            f"but {'node' if not node else 'npm'} is not on PATH: install Node.js >= "
            f"{MIN_NODE[0]}.{MIN_NODE[1]} (e.g. `make deps`, or https://nodejs.org) and run `make frontend` again."
        )
    version = subprocess.run([node, "--version"], capture_output=True, text=True, check=True).stdout.strip()
    major, minor = (int(part) for part in version.lstrip("v").split(".")[:2])
    if (major, minor) < MIN_NODE:
        raise BuildError(f"Node.js {version} is too old for Vite 7: need >= {MIN_NODE[0]}.{MIN_NODE[1]}")
    return node, npm


def run(cmd: list[str]) -> None:
    print("frontend: $", " ".join(cmd), flush=True)
    result = subprocess.run(cmd, cwd=FRONTEND, check=False)
    if result.returncode != 0:
        raise BuildError(f"`{' '.join(cmd)}` failed with exit status {result.returncode} (in {FRONTEND})")


def install(npm: str, *, force: bool) -> bool:
    """``npm ci`` when node_modules is missing or the lock file changed; True when it ran."""
    lock = FRONTEND / "package-lock.json"
    if not lock.is_file():
        raise BuildError(f"{lock} is missing: run `npm install` in {FRONTEND} once and commit the lock file")
    wanted = sha256_of([lock], FRONTEND)
    stamp = FRONTEND / LOCK_STAMP
    if not force and (FRONTEND / "node_modules").is_dir() and stamp.is_file() and stamp.read_text().strip() == wanted:
        return False
    run([npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"])
    stamp.write_text(wanted + "\n")
    return True


def build(npm: str, *, force: bool) -> bool:
    """``vite build`` when the sources changed; True when it ran."""
    wanted = sha256_of([FRONTEND / name for name in BUILD_INPUTS], FRONTEND)
    stamp = DIST / BUILD_STAMP
    if not force and (DIST / MANIFEST).is_file() and stamp.is_file() and stamp.read_text().strip() == wanted:
        return False
    npx = str(Path(npm).with_name("npx")) if Path(npm).with_name("npx").exists() else "npx"
    run([npx, "--no-install", "vite", "build"])
    write_manifest()
    stamp.write_text(wanted + "\n")
    return True


def write_manifest() -> dict[str, Any]:
    """Turn Vite's ``.vite/manifest.json`` into ours: entry -> file + integrity, imports, css."""
    vite_manifest = json.loads((DIST / ".vite" / "manifest.json").read_text())

    def asset(file: str) -> dict[str, str]:
        return {"file": file, "integrity": sri(DIST / file)}

    def imports_of(key: str, seen: set[str]) -> list[str]:
        files: list[str] = []
        for child in vite_manifest[key].get("imports", []):
            if child in seen:
                continue
            seen.add(child)
            files.append(vite_manifest[child]["file"])
            files.extend(imports_of(child, seen))
        return files

    entries: dict[str, Any] = {}
    for key, chunk in vite_manifest.items():
        if not chunk.get("isEntry"):
            continue
        name = chunk.get("name") or Path(key).stem
        css = list(chunk.get("css", []))
        if chunk["file"].endswith(".css"):
            entries[name] = {**asset(chunk["file"]), "imports": [], "css": []}
            continue
        entries[name] = {
            **asset(chunk["file"]),
            "imports": [asset(f) for f in imports_of(key, set())],
            "css": [asset(f) for f in css],
        }
    manifest = {"version": 1, "entries": entries}
    (DIST / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return manifest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--force", action="store_true", help="reinstall and rebuild even when nothing changed")
    args = parser.parse_args(argv)
    try:
        _, npm = check_node()
        install(npm, force=args.force)
        built = build(npm, force=args.force)  # the lock file is a build input: a new install rebuilds
    except BuildError as exc:
        print(f"frontend: error: {exc}", file=sys.stderr)
        return 1
    manifest = json.loads((DIST / MANIFEST).read_text())
    sizes = {name: (DIST / e["file"]).stat().st_size for name, e in manifest["entries"].items()}
    state = "built" if built else "up to date"
    print(f"frontend: {state}: " + ", ".join(f"{n} {s / 1024:.0f} KiB" for n, s in sorted(sizes.items())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
