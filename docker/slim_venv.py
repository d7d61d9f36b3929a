"""Slim a service image's virtualenv in its Dockerfile's build stage, after pip install (test-free, data-lean).

    python slim_venv.py /opt/venv --import MOD[,MOD...] [--botocore-services s3,sts] [--babel-locales en]

What goes, and why it is safe for our services (the deploy smoke runs every image after this):
- third-party test suites (``tests`` folders: numpy alone ships 16 MB) and type stubs (``*.pyi``);
- botocore's models of AWS services the image never creates a client for (``--botocore-services``: the
  rest of botocore/data, 28 MB, is ~450 services; tests/deploy/test_image_dependencies.py checks that every
  ``client("<service>")`` the image's code makes is kept);
- Babel's locale data except ``--babel-locales`` and ``root`` (python-liquid imports Babel for its message
  catalogue and its optional locale filters, which our templates do not use);
- parts of packages nothing of ours loads (:data:`UNUSED`): numpy's f2py, distutils and C headers (numpy
  imports them only on request), pydicom's bundled test files, Pillow's AVIF codec (its plugin treats a
  missing codec as "not supported");
- whitespace in large JSON data files (highdicom's 22 MB attribute map is indented; the same data, minified);
- debug sections of compiled extensions (``strip --strip-debug``, when binutils is in the build stage:
  SQLAlchemy's Cython modules and CharLS ship with them, 15 MB), except where auditwheel's patchelf has
  been (see :func:`patched_by_auditwheel`); symbols stay;
- byte code of modules the service never imports: every ``__pycache__`` is removed, then byte code is written
  for what importing ``--import`` loads (the gunicorn config, the app, the migrations, the SR export) and for
  all of our own packages. The pods run with a read-only root, so byte code they would otherwise compile at
  every start must be in the image; modules outside that set compile in memory on first use.
"""

from __future__ import annotations

import argparse
import compileall
import ctypes
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

UNUSED = ("numpy/f2py", "numpy/distutils", "numpy/_core/include", "numpy/_pyinstaller", "pydicom/data/test_files",
          "PIL/_avif.*.so", "pillow.libs/libavif-*")
"""Relative to site-packages; globs allowed. Nothing here is imported unless a caller asks for it by name."""

OUR_PACKAGES = ("dicomlab_core", "dicomlab_cli", "dicomlab_proxy", "dicomlab_manifest", "dicomlab_labeling",
                "dicomlab_training")


def size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())


def remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def prune_tests_and_stubs(site: Path) -> None:
    for package in site.iterdir():
        if not package.is_dir() or package.name in OUR_PACKAGES or package.name.endswith(".dist-info"):
            continue
        for folder in sorted(package.rglob("tests"), reverse=True):
            if folder.is_dir():
                remove(folder)
        for stub in package.rglob("*.pyi"):
            remove(stub)


def prune_unused(site: Path) -> None:
    for pattern in UNUSED:
        for path in site.glob(pattern):
            remove(path)


def minify_json(site: Path, threshold: int = 1_000_000) -> None:
    for path in site.rglob("*.json"):
        if path.stat().st_size > threshold and not path.is_symlink():
            data = json.loads(path.read_bytes())
            path.write_text(json.dumps(data, separators=(",", ":"), ensure_ascii=False), encoding="utf-8")


def patched_by_auditwheel(path: Path, readelf: str) -> bool:
    """Libraries auditwheel rewrote with patchelf (the bundled ``*.libs`` and extensions with an RPATH to
    them): strip re-lays their segments out and the loader then refuses them ("not page-aligned")."""
    if any(part.endswith(".libs") for part in path.parts):
        return True
    dynamic = subprocess.run([readelf, "-d", str(path)], capture_output=True, text=True, check=True).stdout
    return "(RPATH)" in dynamic or "(RUNPATH)" in dynamic


def strip_debug(site: Path) -> None:
    strip, readelf = shutil.which("strip"), shutil.which("readelf")
    if strip is None or readelf is None:
        print("slim_venv: no strip (binutils) here; extensions keep their debug sections", file=sys.stderr)
        return
    libraries = [str(p) for p in site.rglob("*.so*")
                 if p.is_file() and not p.is_symlink() and not patched_by_auditwheel(p, readelf)]
    if libraries:
        subprocess.run([strip, "--strip-debug", *libraries], check=True)
        for library in libraries:  # each still loads (the imports below only reach some of them)
            ctypes.CDLL(library)


def prune_botocore(site: Path, keep: set[str]) -> None:
    data = site / "botocore" / "data"
    if not data.is_dir():
        return
    missing = keep - {p.name for p in data.iterdir()}
    if missing:
        raise SystemExit(f"slim_venv: botocore has no model for {sorted(missing)}")
    for entry in data.iterdir():
        if entry.is_dir() and entry.name not in keep:  # files (endpoints, partitions, retries) all stay
            remove(entry)


def prune_babel(site: Path, locales: set[str]) -> None:
    data = site / "babel" / "locale-data"
    if not data.is_dir():
        return
    for entry in data.iterdir():
        language = entry.stem.split("_")[0]
        if language not in locales and entry.stem != "root":
            remove(entry)


def compile_used(venv: Path, site: Path, modules: list[str]) -> None:
    for cache in sorted(site.rglob("__pycache__"), reverse=True):
        remove(cache)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    code = "import importlib, sys\nfor name in sys.argv[1:]:\n    importlib.import_module(name)\n"
    subprocess.run([str(venv / "bin" / "python"), "-c", code, *modules], check=True, env=env)
    for package in OUR_PACKAGES:
        if (site / package).is_dir() and not compileall.compile_dir(site / package, quiet=1):
            raise SystemExit(f"slim_venv: {package} does not compile")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("venv", type=Path)
    parser.add_argument("--import", dest="modules", required=True, help="comma-separated modules the service loads")
    parser.add_argument("--botocore-services", default="", help="comma-separated AWS services to keep models of")
    parser.add_argument("--babel-locales", default="en", help="comma-separated languages to keep")
    args = parser.parse_args()
    (site,) = args.venv.glob("lib/python3*/site-packages")
    before = size(args.venv)
    prune_tests_and_stubs(site)
    prune_botocore(site, {s for s in args.botocore_services.split(",") if s})
    prune_babel(site, {s for s in args.babel_locales.split(",") if s})
    prune_unused(site)
    minify_json(site)
    strip_debug(site)
    compile_used(args.venv, site, [m for m in args.modules.split(",") if m])
    print(f"slim_venv: {args.venv} {before / 1e6:.0f} MB -> {size(args.venv) / 1e6:.0f} MB", file=sys.stderr)


if __name__ == "__main__":
    main()
