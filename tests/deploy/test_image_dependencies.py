"""Every image installs what its service imports: a missing dependency fails here, not in a pod.

The proxy image once lacked pydicom (its de-identification module reads pydicom's data dictionary): it built,
and its pod crash-looped on ``No module named 'pydicom'`` under ``make deploy-smoke``. These tests find such a
gap statically (no podman): the modules reached from each Dockerfile's CMD/ENTRYPOINT against the
distributions its pyproject extra installs (tests/deploy/image_deps.py says how).
"""

from __future__ import annotations

import textwrap

import pytest
from image_deps import (
    CREDENTIAL_SERVICES,
    ImageEntry,
    aws_clients,
    dockerfile_entry,
    imported_modules,
    imports_of,
    installed_distributions,
    kept_botocore_services,
    missing_modules,
)

IMAGES = ("proxy", "manifest", "labeling", "training")


@pytest.mark.parametrize("image", IMAGES)
def test_each_image_installs_what_its_entry_point_imports(image: str) -> None:
    entry = dockerfile_entry(image)
    missing = missing_modules(entry)
    assert not missing, (
        f"docker/{image}.Dockerfile installs '.[{entry.extra}]', which lacks what these modules import "
        f"(module <- first importer): {missing}; add them to that extra in pyproject.toml")


def test_the_entry_points_are_read_from_the_dockerfiles() -> None:
    assert dockerfile_entry("proxy") == ImageEntry(
        "proxy", "proxy", ("dicomlab_core.gunicorn_conf", "dicomlab_proxy.app"))
    training = dockerfile_entry("training")
    assert training.extra == "train"
    assert training.entry_modules == ("dicomlab_training.cli",)
    assert training.eager_modules == ("dicomlab_cli.main",)


def test_the_check_finds_the_proxy_crash_it_exists_for() -> None:
    """Without its extra (the base dependencies only, as before the fix) the proxy lacks pydicom."""
    assert missing_modules(dockerfile_entry("proxy"), extra="") == {"pydicom": "dicomlab_core.deid"}


def test_images_stay_without_what_they_do_not_import() -> None:
    """The other direction: the service images carry no training stack (their extras resolve without it)."""
    for extra in ("proxy", "manifest", "labeling"):
        installed = installed_distributions("dicomlab", [extra])
        assert not installed & {"torch", "monai", "matplotlib", "kubernetes"}, extra
    assert {"torch", "monai"} <= installed_distributions("dicomlab", ["train"])


def test_import_walk_follows_what_runs_and_skips_what_cannot_fail() -> None:
    source = textwrap.dedent("""
        from typing import TYPE_CHECKING
        import requests
        from . import auth
        from .sr import build
        if TYPE_CHECKING:
            import torch
        try:
            import orjson
        except ImportError:
            orjson = None
        def export():
            import highdicom
    """)
    found = imports_of("dicomlab_labeling.routes", source)
    assert "requests" in found and "highdicom" in found
    assert {"dicomlab_labeling.auth", "dicomlab_labeling.sr", "dicomlab_labeling.sr.build"} <= set(found)
    assert "torch" not in found and "orjson" not in found
    assert "highdicom" not in imports_of("dicomlab_labeling.routes", source, lazy=False)


def test_import_walk_reaches_the_whole_service() -> None:
    """From the app factory through routes to the SR export (highdicom) and migrations (alembic)."""
    graph = imported_modules(dockerfile_entry("labeling").entry_modules)
    assert {"highdicom", "sqlalchemy", "alembic", "flask"} <= set(graph.third_party)
    assert "torch" not in graph.third_party


@pytest.mark.parametrize("image", IMAGES)
def test_slimmed_images_keep_the_aws_models_their_code_uses(image: str) -> None:
    """docker/slim_venv.py drops botocore's models of services not named: every client("x") the image's code
    creates, and the credential providers' services, must be kept (else boto3 fails with UnknownServiceError)."""
    kept = kept_botocore_services(image)
    entry = dockerfile_entry(image)
    graph = imported_modules(entry.entry_modules, entry.eager_modules)
    if kept is None or "botocore" not in graph.third_party:
        return
    used = aws_clients(graph.visited)
    assert "s3" in used, "the walk finds the object store's client"
    missing = (set(used) | CREDENTIAL_SERVICES) - kept
    assert not missing, f"docker/{image}.Dockerfile --botocore-services lacks {sorted(missing)} (used by {used})"
