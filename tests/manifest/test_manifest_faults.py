"""Crashes and faults: resume from the checkpoint with the same bytes, object stores that refuse writes."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from manifest_support import Population, build, make_config, manifest_bytes, manifest_lines

from dicomlab_core.errors import NotFound, UpstreamError
from dicomlab_core.objectstore import ObjectStoreError
from dicomlab_core.orthanc import OrthancClient


class FailingClient(OrthancClient):
    """The real client, except that the ``nth`` request whose path contains ``marker`` fails once.

    ``bulk=False``: answer ``/tools/bulk-content`` with 404, as an Orthanc without it would, so that
    the listing falls back to one request per study and per series.
    """

    def __init__(self, *args: Any, marker: str, nth: int, bulk: bool = True, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.marker, self.nth, self.seen, self.bulk = marker, nth, 0, bulk
        self.lock = threading.Lock()  # the builder's workers share the client

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        if not self.bulk and path == "/tools/bulk-content":
            raise NotFound("not found in Orthanc: POST /tools/bulk-content")
        if self.marker in path:
            with self.lock:
                self.seen += 1
                fail = self.seen == self.nth
            if fail:
                raise UpstreamError(f"Orthanc at {self.settings.base} is unreachable: ConnectionError")
        return super().request(method, path, **kwargs)


@pytest.mark.parametrize(("marker", "nth", "bulk"), [
    ("/studies", 3, True), ("/tools/bulk-content", 2, True), ("/tools/bulk-content", 5, True),
    ("/instances", 7, False), ("/metadata/SopClassUid", 5, False), ("/series", 4, False),
])
def test_resume_after_orthanc_failure_gives_the_bytes_of_an_uninterrupted_run(
        population: Population, make_service: Any, marker: str, nth: int, bulk: bool) -> None:
    """With bulk content and with the per-study/per-series fallback (the reference uses bulk content)."""
    reference = make_service()
    expected = build(reference, "ref", name="reference", seed=9, max_count=60, exclude_manifests=[])
    flaky = FailingClient(population.server.settings(retries=0), marker=marker, nth=nth, bulk=bulk)
    service = make_service(client=flaky)
    with pytest.raises(UpstreamError, match="unreachable"):
        build(service, "crash", name="resumed", seed=9, max_count=60)
    state = sqlite3.connect(service.config.state_dir / "crash" / "state.sqlite")
    progress = json.loads(state.execute("SELECT value FROM meta WHERE key = 'progress'").fetchone()[0])
    state.close()
    assert progress["phase"] == "listing"
    assert not service.manifests.exists("resumed")
    healthy = make_service()
    summary = build(healthy, "crash", name="resumed", seed=9, max_count=60)  # same job state: resumes
    assert manifest_bytes(healthy, "resumed") == manifest_bytes(reference, "reference")
    assert summary["counts"] == expected["counts"] and summary["skipped"] == expected["skipped"]


def test_orthanc_stopped_mid_listing_then_restarted(tmp_path: Path, population: Population,
                                                   make_service: Any) -> None:
    """A real outage: the throw-away Orthanc is stopped between two pages of a build and started again."""
    from manifest_support import population_datasets, upload

    from dicomlab_cli.processes import OrthancServer

    server = OrthancServer(tmp_path / "orthanc").start()
    try:
        client = server.client()
        upload(client, population_datasets()[:120])
        client.close()
        reference = make_service(server=server)
        build(reference, "ref", name="reference")

        class StopsOrthanc(OrthancClient):
            calls = 0

            def request(self, method: str, path: str, **kwargs: Any) -> Any:
                if path == "/tools/bulk-content":
                    StopsOrthanc.calls += 1
                    if StopsOrthanc.calls == 4:
                        server.stop()
                return super().request(method, path, **kwargs)

        service = make_service(server=server, client=StopsOrthanc(server.settings(retries=0)), workers=1)
        with pytest.raises(UpstreamError, match=f"Orthanc at {server.url} is unreachable"):
            build(service, "outage", name="after-outage")
        server.start()
        build(make_service(server=server), "outage", name="after-outage")
        assert manifest_bytes(reference, "after-outage") == manifest_bytes(reference, "reference")
    finally:
        server.stop()


def test_s3_backend_writes_the_same_bytes(population: Population, make_service: Any, s3_bucket: str) -> None:
    local = make_service(extra_read_stores=(s3_bucket + "/team",))
    build(local, "a", name="xr", max_count=40, seed=4)
    remote = make_service(store_url=s3_bucket + "/team")
    summary = build(remote, "b", name="xr", max_count=40, seed=4)
    assert summary["manifest"] == f"{s3_bucket}/team/manifests/xr.jsonl"
    assert manifest_bytes(remote, "xr") == manifest_bytes(local, "xr")
    assert remote.manifests.summary("xr")["sha256"] == summary["sha256"]
    assert [m["name"] for m in remote.manifests.list()] == ["xr"]
    # exclusion across backends, by URI
    build(local, "c", name="rest", exclude_manifests=[summary["manifest"]])
    excluded = {line["sop-instance-uid"] for line in manifest_lines(remote, "xr")}
    assert local.manifests.summary("rest")["skipped"]["excluded"] == sum(
        1 for i in population.items if i.sop_uid in excluded)  # every stored copy of each excluded UID


def test_missing_bucket_names_bucket_and_key_and_resumes_without_rescanning(
        population: Population, make_service: Any, s3_endpoint: str) -> None:
    import boto3

    bucket = f"later-bucket-{os.getpid()}"
    service = make_service(store_url=f"s3://{bucket}")
    with pytest.raises(ObjectStoreError, match=rf"s3://{bucket}/manifests/late\.jsonl.*NoSuchBucket"):
        build(service, "job", name="late")
    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket=bucket)
    assert list(service.manifests.store.list()) == []  # nothing partial became visible
    counted = FailingClient(service.config.orthanc, marker="/", nth=1)  # any Orthanc call would fail now
    resumed = make_service(client=counted, store_url=f"s3://{bucket}")
    summary = resumed.builder(resumed.parse({"name": "late"}), service.config.state_dir / "job").run()
    assert summary["instances"] == len(population.select())
    assert resumed.manifests.store.exists("manifests/late.jsonl")
    assert counted.seen == 0  # finished from the saved state: no new listing


def test_unwritable_file_store_names_the_path_and_leaves_nothing(make_service: Any, tmp_path: Path) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where the store's folder should be")
    service = make_service(store_url=f"file://{blocker}/store")
    with pytest.raises(ObjectStoreError, match=rf"cannot write {blocker}/store/manifests/x\.jsonl"):
        build(service, name="x", max_count=5)
    assert blocker.read_text().startswith("a file")


def test_cli_killed_mid_run_resumes_to_the_same_bytes(population: Population, tmp_path: Path,
                                                      make_service: Any) -> None:
    config = make_config(population.server, tmp_path)
    env = {**os.environ, "DICOMLAB_MANIFEST__ORTHANC__URL": population.server.url,
           "DICOMLAB_MANIFEST__ORTHANC__USERNAME": population.server.username,
           "DICOMLAB_MANIFEST__ORTHANC__PASSWORD": population.server.password.reveal(),
           "DICOMLAB_MANIFEST__PATIENT_KEY_SECRET": config.patient_key_secret.reveal(),
           "DICOMLAB_MANIFEST__STORE_URL": config.store_url, "DICOMLAB_MANIFEST__STATE_DIR": str(config.state_dir),
           "DICOMLAB_MANIFEST__PAGE_SIZE": "1", "DICOMLAB_MANIFEST__WORKERS": "1"}
    argv = [sys.executable, "-m", "dicomlab_cli.main", "manifest", "build", "--name", "killed",
            "--modality", "DX,CR,CT,MR", "--sop-class-check", "instance"]
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    state_db = None
    deadline = time.monotonic() + 60
    cursor = 0
    while time.monotonic() < deadline and proc.poll() is None:
        found = list((config.state_dir / "cli").glob("killed-*/state.sqlite"))
        if found:
            state_db = found[0]
            try:
                db = sqlite3.connect(f"file:{state_db}?mode=ro", uri=True, timeout=0.1)
                row = db.execute("SELECT value FROM meta WHERE key = 'progress'").fetchone()
                db.close()
                cursor = json.loads(row[0])["cursor"] if row else 0
            except sqlite3.Error:
                cursor = 0
            if cursor >= 3:
                proc.send_signal(signal.SIGKILL)
                break
        time.sleep(0.01)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, "the build finished before it could be killed"
    assert state_db is not None
    rerun = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
    assert rerun.returncode == 0, rerun.stderr
    assert json.loads(rerun.stdout)["instances"] > 0
    assert not state_db.exists()  # state is dropped after success
    service = make_service()
    build(service, "ref", name="uninterrupted", modalities=["DX", "CR", "CT", "MR"], sop_class_check="instance")
    assert manifest_bytes(service, "killed") == manifest_bytes(service, "uninterrupted")
