"""Build the Ground Truth callback Lambda zip: ``dicomlab labeling lambda-zip --out callbacks.zip``.

What goes in (and nothing else):

- ``dicomlab_core`` (its Python modules) and the labeling modules the callbacks import
  (:data:`LABELING_MODULES`), not the UI, the database layer or the static assets;
- the third-party distributions they import at run time (:data:`DISTRIBUTIONS`): numpy (consolidation),
  orjson (annotation files and answers), requests and its dependencies (Orthanc client), pydicom
  (``source-ref`` header reads);
- ``BUILD-INFO.json``: versions and wheel tags of everything bundled.

boto3/botocore are left out: the Lambda Python runtime provides them. numpy and orjson are the compiled
dependencies (orjson's wheels are manylinux2014, which loads there). By default each is copied from the
current environment, which only runs on Lambda when its wheel tag fits the runtime (python3.11 runs on
Amazon Linux 2, glibc 2.26, so a ``manylinux_2_28`` build will not load there); pass
``--wheel numpy-...-cp311-...manylinux2014_x86_64.whl`` (from
``pip download numpy --platform manylinux2014_x86_64 --python-version 3.11 --only-binary=:all:``) to
bundle that wheel instead. The build warns when a bundled binary tag needs a newer glibc.
"""

from __future__ import annotations

import json
import logging
import re
import zipfile
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import dicomlab_core
import dicomlab_labeling

logger = logging.getLogger(__name__)

LABELING_MODULES = ("__init__", "config", "consensus/__init__", "consensus/agreement", "consensus/consolidation",
                    "consensus/dawid_skene", "groundtruth/__init__", "groundtruth/callbacks",
                    "groundtruth/lambda_handlers")
"""The ``dicomlab_labeling`` modules the two handlers import, relative to the package without ``.py``
(checked by the zip import test)."""

DISTRIBUTIONS = ("numpy", "orjson", "requests", "urllib3", "idna", "charset-normalizer", "certifi", "pydicom")
"""Third-party distributions bundled (boto3/botocore come with the Lambda runtime)."""

LAMBDA_GLIBC = (2, 26)
"""glibc of the python3.11 Lambda runtime (Amazon Linux 2)."""

_FIXED_TIME = (2020, 1, 1, 0, 0, 0)  # reproducible zips: same inputs, same bytes
_SKIP = re.compile(r"(__pycache__/|\.pyc$|/tests?/|\.pyi$|^pydicom/data/(test|charset)_files/|"
                   r"^numpy/(f2py|_pyinstaller|doc)/)")
"""Never bundled: bytecode, stubs, test suites and data, numpy's build/typing tools."""


def _add(zf: zipfile.ZipFile, arcname: str, data: bytes) -> None:
    info = zipfile.ZipInfo(arcname, date_time=_FIXED_TIME)
    info.compress_type = zipfile.ZIP_DEFLATED
    info.external_attr = 0o644 << 16
    zf.writestr(info, data)


def _glibc_needed(tags: Sequence[str]) -> tuple[int, int] | None:
    """The lowest glibc any of a wheel's tags accepts (None for pure-Python wheels)."""
    needed: list[tuple[int, int]] = []
    for tag in tags:
        if "manylinux2014" in tag:
            needed.append((2, 17))
        match = re.search(r"manylinux_(\d+)_(\d+)", tag)
        if match:
            needed.append((int(match.group(1)), int(match.group(2))))
    return min(needed) if needed else None


def _wheel_tags(dist: metadata.Distribution) -> list[str]:
    text = dist.read_text("WHEEL") or ""
    return [line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("Tag:")]


def _add_distribution(zf: zipfile.ZipFile, name: str) -> dict[str, Any]:
    dist = metadata.distribution(name)
    count = 0
    for file in dist.files or []:
        path = str(file)
        if path.startswith("..") or _SKIP.search(path) or path.endswith("RECORD"):
            continue
        located = Path(str(file.locate()))
        if located.is_file():
            _add(zf, path, located.read_bytes())
            count += 1
    tags = _wheel_tags(dist)
    return {"name": name, "version": dist.version, "tags": tags, "files": count, "source": "environment"}


def _add_wheel(zf: zipfile.ZipFile, wheel: Path) -> dict[str, Any]:
    count = 0
    tags: list[str] = []
    with zipfile.ZipFile(wheel) as source:
        for item in source.infolist():
            if item.is_dir() or _SKIP.search(item.filename) or item.filename.endswith("RECORD"):
                continue
            data = source.read(item)
            if item.filename.endswith(".dist-info/WHEEL"):
                tags = [line.split(":", 1)[1].strip() for line in data.decode().splitlines()
                        if line.startswith("Tag:")]
            _add(zf, item.filename, data)
            count += 1
    name = wheel.name.split("-")[0].replace("_", "-").lower()
    return {"name": name, "version": wheel.name.split("-")[1], "tags": tags, "files": count, "source": wheel.name}


def _add_package(zf: zipfile.ZipFile, package_dir: Path, modules: Sequence[str] | None) -> int:
    count = 0
    for path in sorted(package_dir.rglob("*.py")):
        relative = path.relative_to(package_dir)
        if modules is not None and relative.with_suffix("").as_posix() not in modules:
            continue
        if _SKIP.search(relative.as_posix()):
            continue
        _add(zf, f"{package_dir.name}/{relative.as_posix()}", path.read_bytes())
        count += 1
    return count


def build_zip(out: Path, *, wheels: Sequence[Path] = ()) -> dict[str, Any]:
    """Write the Lambda zip to ``out`` and return its build info (also stored as ``BUILD-INFO.json``)."""
    from_wheels = {w.name.split("-")[0].replace("_", "-").lower(): w for w in wheels}
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    info: dict[str, Any] = {"handlers": ["dicomlab_labeling.groundtruth.lambda_handlers.pre_annotation",
                                         "dicomlab_labeling.groundtruth.lambda_handlers.post_annotation"],
                            "runtime": "python3.11", "distributions": [], "warnings": []}
    with zipfile.ZipFile(tmp, "w") as zf:
        info["modules"] = {
            "dicomlab_core": _add_package(zf, Path(dicomlab_core.__file__).parent, None),
            "dicomlab_labeling": _add_package(zf, Path(dicomlab_labeling.__file__).parent, LABELING_MODULES),
        }
        for name in DISTRIBUTIONS:
            wheel = from_wheels.pop(name.lower(), None)
            entry = _add_wheel(zf, wheel) if wheel else _add_distribution(zf, name)
            info["distributions"].append(entry)
            glibc = _glibc_needed(entry["tags"])
            if glibc is not None and glibc > LAMBDA_GLIBC:
                info["warnings"].append(
                    f"{name} {entry['version']} needs glibc {glibc[0]}.{glibc[1]}; the python3.11 Lambda runtime "
                    f"has {LAMBDA_GLIBC[0]}.{LAMBDA_GLIBC[1]}: pass a manylinux2014 wheel with --wheel")
        for wheel in from_wheels.values():
            info["distributions"].append(_add_wheel(zf, wheel))
        _add(zf, "BUILD-INFO.json", json.dumps(info, indent=2).encode())
    tmp.replace(out)
    info["bytes"] = out.stat().st_size
    for warning in info["warnings"]:
        logger.warning(warning)
    return info
