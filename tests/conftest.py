"""Session fixtures shared by every test: real Orthanc, real PostgreSQL, an S3-compatible server.

Nothing here is mocked: Orthanc is the Debian binary with the DICOMweb plugin on a free loopback
port (authentication on), PostgreSQL is a throw-away cluster from the Debian package, and S3 is
moto's server mode over HTTP (the one component that cannot run for real here).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dicomlab_cli.processes import OrthancServer, PostgresServer, free_port
from dicomlab_core.orthanc import OrthancClient

S3_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",  # moto's dummy credentials
          "AWS_DEFAULT_REGION": "us-east-1", "AWS_REGION": "us-east-1"}


@pytest.fixture(scope="session")
def orthanc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OrthancServer]:
    """A real, empty-at-start Orthanc (SQLite index) for the whole session."""
    server = OrthancServer(tmp_path_factory.mktemp("orthanc")).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def orthanc_client(orthanc: OrthancServer) -> Iterator[OrthancClient]:
    client = orthanc.client()
    yield client
    client.close()


@pytest.fixture(scope="session")
def postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresServer]:
    """A real PostgreSQL cluster started for this test run (temp data dir, 'postgres' user as root), without
    fsync: what is tested is PostgreSQL's SQL, not its durability, and every test creates a database."""
    # As root the cluster runs as 'postgres', which cannot traverse pytest's 0700 temp dirs: use /tmp then.
    directory = (Path(tempfile.mkdtemp(prefix="dicomlab-pg-")) if os.geteuid() == 0
                 else tmp_path_factory.mktemp("postgres"))
    server = PostgresServer(directory, durable=False).start()  # throw-away: commits need not reach the disk
    yield server
    server.stop()
    if os.geteuid() == 0:
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """moto's S3-compatible server on a free loopback port; boto3 is pointed at it via env."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    saved = {k: os.environ.get(k) for k in [*S3_ENV, "DICOMLAB_S3_ENDPOINT_URL"]}
    os.environ.update(S3_ENV)
    os.environ["DICOMLAB_S3_ENDPOINT_URL"] = endpoint
    yield endpoint
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    server.stop()


@pytest.fixture
def s3_bucket(s3_endpoint: str, request: pytest.FixtureRequest) -> str:
    """A fresh bucket on the S3 server; returns ``s3://bucket``."""
    import boto3

    name = "t-" + "".join(c for c in request.node.name.lower() if c.isalnum())[:40] + f"-{free_port()}"
    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket=name)
    return f"s3://{name}"


def pytest_report_header(config: Any) -> list[str]:
    return [f"orthanc binary: {Path('/usr/sbin/Orthanc').exists()}"]


@pytest.fixture(scope="session")
def synthetic_config() -> Any:
    """The :class:`~dicomlab_core.synth.SynthConfig` of ``synthetic_set``: 12 patients, 20 images at 256²,
    a mix of DX/CR, MONOCHROME1/2, VOI windows/LUTs, RLE/JPEG Lossless/JPEG-LS/JPEG 2000 (re-render any image
    from it with ``dicomlab_core.synth.plan`` + ``make_image``)."""
    from dicomlab_core.synth import SynthConfig

    return SynthConfig(patients=12, seed=2024, rows=256, columns=256, studies_per_patient=(1, 2),
                       images_per_study=(1, 1), monochrome1_fraction=0.4, voi_fraction=0.4,
                       compressed_fraction=0.35)


@pytest.fixture(scope="session")
def synthetic_set(orthanc: OrthancServer, synthetic_config: Any) -> list[dict[str, Any]]:
    """Upload a small synthetic study set to the session Orthanc once; return its ground truth.

    One record per image (:meth:`dicomlab_core.synth.SynthImage.truth_record`: patient_id, study/series/SOP
    UIDs, modality, photometric, transfer_syntax, voi, findings as 0/1 per CheXpert label, regions) plus
    ``orthanc_id``, Orthanc's instance ID.
    """
    from dicomlab_core.synth import upload_study_set

    client = orthanc.client()
    try:
        return upload_study_set(synthetic_config, client, workers=2)
    finally:
        client.close()


CHART_TOOLS = ("deploy_chart", "helm_python", "checkov", "hadolint", "kubernetes_validate")
"""Names whose mention in a test module means it runs the chart/container tools (Helm, checkov, hadolint,
Kubernetes schemas): its tests get the ``chart`` marker, so ``make test-fast`` can leave them out."""


SLOW_HERE = frozenset({
    "tests/training/test_preemption.py::test_sigterm_to_torchrun_stops_every_rank_at_one_step",
    "tests/training/test_training.py::test_kill_and_resume_match_an_uninterrupted_run",
    "tests/training/test_training.py::test_two_process_ddp_matches_one_process",
})
"""Multi-process training runs measured at 30 s or more on the 2-core machine (``--durations``): ``slow``,
set here so the training test files stay as they are."""


BROWSER_USE = "browser()"
"""A test module that calls the shared Chromium (:func:`support.browser.browser`) gets the ``browser`` marker
(the OHIF test did not carry it, so ``make test-fast`` ran a real browser)."""


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Markers by place and by tool, so no test file has to carry them: ``e2e`` for ``tests/e2e``, ``chart``
    for modules that use :data:`CHART_TOOLS`, ``browser`` for those that call :data:`BROWSER_USE`, ``slow`` for
    :data:`SLOW_HERE`."""
    uses_tools: dict[Path, bool] = {}
    uses_browser: dict[Path, bool] = {}
    root = Path(str(config.rootpath))
    for item in items:
        path = Path(str(item.path))
        with contextlib.suppress(ValueError):
            if f"{path.relative_to(root).as_posix()}::{item.name.split('[')[0]}" in SLOW_HERE:
                item.add_marker(pytest.mark.slow)
        if "e2e" in path.parts:
            item.add_marker(pytest.mark.e2e)
        if path not in uses_tools:
            text = path.read_text(errors="replace") if path.suffix == ".py" else ""
            uses_tools[path] = any(name in text for name in CHART_TOOLS)
            uses_browser[path] = BROWSER_USE in text
        if uses_tools[path]:
            item.add_marker(pytest.mark.chart)
        if uses_browser[path]:
            item.add_marker(pytest.mark.browser)
