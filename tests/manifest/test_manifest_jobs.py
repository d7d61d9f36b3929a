"""Who runs a manifest job, and why a request that waits for one never finds it still ``queued``.

``POST /manifests?sync=true`` under gunicorn once answered 202 after its 30 s wait with the job still
``queued``. Both causes are forced here with events, never with time: (1) the job queued behind
running builds in its worker's small pool; (2) another worker, booting meanwhile, adopted the freshly
queued job (its lock was free until a pool thread took it), so the answering worker had nothing to
wait for. Two runners on one jobs folder stand for two gunicorn workers on one state volume.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dicomlab_manifest.jobs import JobRunner
from dicomlab_manifest.selection import patient_key_function
from dicomlab_manifest.spec import SelectionSpec, parse_spec

WAIT = 60.0
"""An upper bound for events that happen at once; never reached when the code is right."""


def load_spec(data: dict[str, Any]) -> SelectionSpec:
    return parse_spec(data, patient_key=patient_key_function("k"))


class Builds:
    """A builder factory: the job named ``blocker`` runs until :attr:`gate` opens; the others end at once.
    Records which jobs this runner built."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.blocking = threading.Event()
        self.built: list[str] = []

    def __call__(self, spec: SelectionSpec, job_dir: Path, job_id: str,
                 on_progress: Callable[[dict[str, Any]], None]) -> Any:
        builds = self

        class Builder:
            def run(self) -> dict[str, Any]:
                builds.built.append(spec.name)
                if spec.name == "blocker":
                    builds.blocking.set()
                    assert builds.gate.wait(WAIT)
                return {"instances": 0, "name": spec.name}

        return Builder()


def runner(jobs_dir: Path, builds: Builds) -> JobRunner:
    return JobRunner(jobs_dir, builds, load_spec, threads=1)  # type: ignore[arg-type]


def test_a_waiting_request_does_not_queue_behind_running_builds(tmp_path: Path) -> None:
    builds = Builds()
    worker = runner(tmp_path / "jobs", builds)
    try:
        blocker = worker.submit(load_spec({"name": "blocker"}))
        assert builds.blocking.wait(WAIT)  # the pool's only thread is busy now
        waited = worker.submit(load_spec({"name": "waited"}), dedicated=True)
        done = worker.wait(waited["id"], WAIT)
        assert done["status"] == "succeeded", done
        assert worker.get(blocker["id"])["status"] == "running"
        builds.gate.set()
        assert worker.wait(blocker["id"], WAIT)["status"] == "succeeded"
    finally:
        builds.gate.set()
        worker.shutdown()


def test_a_booting_worker_does_not_adopt_a_live_workers_queued_job(tmp_path: Path) -> None:
    first, second = Builds(), Builds()
    serving = runner(tmp_path / "jobs", first)
    booting = runner(tmp_path / "jobs", second)
    try:
        blocker = serving.submit(load_spec({"name": "blocker"}))
        assert first.blocking.wait(WAIT)
        queued = serving.submit(load_spec({"name": "queued"}))  # behind the blocker in the serving pool
        assert serving.get(queued["id"])["status"] == "queued"
        adopted = booting.resume_unfinished()  # what a worker does at start-up
        assert sorted(adopted) == sorted([blocker["id"], queued["id"]])
        for job_id in adopted:
            booting.wait(job_id, WAIT)  # each attempt ends at once: the serving worker holds the locks
        assert second.built == []
        first.gate.set()
        assert serving.wait(queued["id"], WAIT)["status"] == "succeeded"
        assert first.built == ["blocker", "queued"]
    finally:
        first.gate.set()
        serving.shutdown()
        booting.shutdown()


def test_a_dead_workers_job_is_still_resumed(tmp_path: Path) -> None:
    """The lock dies with its holder: a job whose worker is gone is picked up by the next one to start."""
    builds = Builds()
    gone = runner(tmp_path / "jobs", Builds())
    gone.pool.shutdown(wait=True)  # a worker that accepted a job and then died before running it
    with contextlib.suppress(RuntimeError):  # cannot schedule new futures after shutdown: the record stays queued
        gone.submit(load_spec({"name": "orphan"}))
    record = next(iter(gone.list()))
    assert record["status"] == "queued"
    successor = runner(tmp_path / "jobs", builds)
    try:
        assert successor.resume_unfinished() == [record["id"]]
        assert successor.wait(record["id"], WAIT)["status"] == "succeeded"
        assert builds.built == ["orphan"]
    finally:
        successor.shutdown()


def test_sync_request_builds_while_the_job_pool_is_busy(population: Any, tmp_path: Path) -> None:
    """Through the HTTP API: with every pool thread busy, ``?sync=true`` still answers 201 with the result."""
    from manifest_support import make_config

    from dicomlab_manifest.app import create_app

    app = create_app(make_config(population.server, tmp_path, job_threads=1, sync_wait_seconds=WAIT))
    service = app.extensions["dicomlab_manifest"]
    gate = threading.Event()
    busy = service.runner.pool.submit(gate.wait, WAIT)  # the pool's only thread, taken by another build
    try:
        response = app.test_client().post("/manifests?sync=true", headers={"Authorization": "Bearer test-service-token"},
                                          json={"name": "while-busy", "max_count": 2, "seed": 1})
        assert response.status_code == 201, response.get_json()
        assert response.get_json()["status"] == "succeeded" and not busy.done()
    finally:
        gate.set()
        service.close()
