"""Manifest builds as background jobs: a small thread pool, with job records on the local state volume.

Each job has a folder ``<state_dir>/jobs/<id>/`` with ``job.json`` (status, spec, progress, error,
result) and ``build/`` (the builder's resumable state). The gunicorn worker that accepts a job takes
an exclusive ``flock`` on the folder *before* the record exists and holds it until the job ends; on
start-up every worker tries to resume the jobs that are still queued or running, and only one that
gets the lock does (a job cut off by a crash or a restart continues from its last checkpoint; the
lock dies with its process).

Why a ``POST /manifests?sync=true`` could answer 202 with the job still ``queued``: the lock used to
be taken only when a pool thread started the job. (1) Starvation: the pool has ``job_threads``
threads (2) per worker, fewer than its request threads, so a sync request's job queued behind
running builds and stayed ``queued`` for the whole wait on a loaded machine. (2) Theft: a worker
booting meanwhile (gunicorn starts them one by one; slow on a loaded machine) saw the fresh
``queued`` record, took the free lock and adopted the job, so the worker that answered had nothing
to wait for. Now the lock is held from the start, and a sync request's job runs on its own thread
(the request holds one of gunicorn's threads while it waits anyway, so these are bounded by them).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
import threading
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from dicomlab_core.errors import NotFound, ServiceError
from dicomlab_manifest.builder import ManifestBuilder
from dicomlab_manifest.spec import SelectionSpec

logger = logging.getLogger(__name__)

BuilderFactory = Callable[[SelectionSpec, Path, str, Callable[[dict[str, Any]], None]], ManifestBuilder]
SpecLoader = Callable[[dict[str, Any]], SelectionSpec]

UNFINISHED = ("queued", "running")


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


class JobRunner:
    """Runs builds in a thread pool and keeps their records in ``jobs_dir``."""

    def __init__(self, jobs_dir: Path, builder_factory: BuilderFactory, spec_loader: SpecLoader,
                 threads: int = 2) -> None:
        self.jobs_dir = jobs_dir
        self.builder_factory = builder_factory
        self.spec_loader = spec_loader
        self.pool = ThreadPoolExecutor(threads, thread_name_prefix="manifest-job")
        self._futures: dict[str, Future[None]] = {}
        self._lock = threading.Lock()
        jobs_dir.mkdir(parents=True, exist_ok=True)

    # ------------------------------------------------------------------ records

    def _dir(self, job_id: str) -> Path:
        if not job_id.isalnum():
            raise NotFound(f"no manifest job {job_id[:40]!r}")
        return self.jobs_dir / job_id

    def get(self, job_id: str) -> dict[str, Any]:
        path = self._dir(job_id) / "job.json"
        try:
            record: dict[str, Any] = json.loads(path.read_text())
        except FileNotFoundError:
            raise NotFound(f"no manifest job {job_id!r}") from None
        return record

    def _write(self, job_id: str, record: dict[str, Any]) -> None:
        directory = self._dir(job_id)
        directory.mkdir(parents=True, exist_ok=True)
        record["updated"] = _now()
        tmp = directory / ".job.json.tmp"
        tmp.write_text(json.dumps(record, indent=2, sort_keys=True))
        os.replace(tmp, directory / "job.json")

    def _update(self, job_id: str, **changes: Any) -> dict[str, Any]:
        with self._lock:
            record = self.get(job_id)
            record.update(changes)
            self._write(job_id, record)
            return record

    # ------------------------------------------------------------------ running

    def submit(self, spec: SelectionSpec, *, dedicated: bool = False) -> dict[str, Any]:
        """Queue a build; returns its record (status ``queued``).

        The job's lock is taken before its record is written, so no other worker's
        :meth:`resume_unfinished` can adopt it. ``dedicated`` (a caller that waits for the result):
        run it on a thread of its own instead of queueing it behind the pool's builds.
        """
        job_id = uuid.uuid4().hex
        self._dir(job_id).mkdir(parents=True, exist_ok=True)
        held = self._lock_file(job_id)
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a new folder: nobody else knows it yet
        record = {"id": job_id, "name": spec.name, "status": "queued", "created": _now(), "spec": spec.to_dict(),
                  "progress": None, "error": None, "result": None}
        try:
            self._write(job_id, record)
            self._start(job_id, held, dedicated=dedicated)
        except BaseException:
            held.close()
            raise
        return self.get(job_id)

    def _start(self, job_id: str, held: IO[str] | None = None, *, dedicated: bool = False) -> None:
        with self._lock:
            if not dedicated:
                self._futures[job_id] = self.pool.submit(self._run, job_id, held)
                return
            future: Future[None] = Future()
            self._futures[job_id] = future

        def run() -> None:
            future.set_running_or_notify_cancel()
            try:
                self._run(job_id, held)
            except BaseException as exc:
                future.set_exception(exc)
            else:
                future.set_result(None)

        threading.Thread(target=run, name=f"manifest-job-{job_id[:8]}", daemon=True).start()

    def wait(self, job_id: str, timeout: float) -> dict[str, Any]:
        """The record once the job has finished, or as it is after ``timeout`` seconds."""
        future = self._futures.get(job_id)
        if future is not None:
            with contextlib.suppress(FutureTimeout):
                future.result(timeout=timeout)
        return self.get(job_id)

    def _lock_file(self, job_id: str) -> IO[str]:
        return (self._dir(job_id) / "lock").open("a")

    @contextlib.contextmanager
    def _exclusive(self, job_id: str, held: IO[str] | None = None) -> Iterator[bool]:
        """Whether this process owns the job: ``held`` is its lock taken at submission, else try for it now."""
        handle = held if held is not None else self._lock_file(job_id)
        try:
            if held is None:
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    yield False
                    return
            yield True
        finally:
            handle.close()

    def _run(self, job_id: str, held: IO[str] | None = None) -> None:
        with self._exclusive(job_id, held) as mine:
            if not mine:
                return
            record = self.get(job_id)
            if record["status"] not in UNFINISHED:
                return
            self._update(job_id, status="running")
            try:
                spec = self.spec_loader(record["spec"])

                def report(progress: dict[str, Any]) -> None:
                    self._update(job_id, progress=progress)

                builder = self.builder_factory(spec, self._dir(job_id) / "build", job_id, report)
                summary = builder.run()
            except ServiceError as exc:
                logger.warning("manifest job failed: %s", exc.description, extra={"job": job_id})
                self._update(job_id, status="failed", error=exc.to_dict())
                return
            except Exception:
                logger.exception("manifest job crashed", extra={"job": job_id})
                self._update(job_id, status="failed",
                             error=ServiceError("internal error while building the manifest").to_dict())
                return
            self._update(job_id, status="succeeded", result=summary)
            shutil.rmtree(self._dir(job_id) / "build", ignore_errors=True)

    def resume_unfinished(self) -> list[str]:
        """Restart the jobs that a previous process left queued or running; returns their IDs."""
        resumed = []
        for path in sorted(self.jobs_dir.glob("*/job.json")):
            try:
                record = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            if record.get("status") in UNFINISHED and record.get("id") not in self._futures:
                resumed.append(record["id"])
                self._start(record["id"])
        if resumed:
            logger.info("resuming manifest jobs", extra={"jobs": len(resumed)})
        return resumed

    def list(self, limit: int = 100) -> list[dict[str, Any]]:
        records = []
        for path in self.jobs_dir.glob("*/job.json"):
            with contextlib.suppress(OSError, ValueError):
                record = json.loads(path.read_text())
                records.append({k: record.get(k) for k in ("id", "name", "status", "created", "updated")})
        return sorted(records, key=lambda r: str(r["created"]), reverse=True)[:limit]

    def shutdown(self, wait: bool = True) -> None:
        self.pool.shutdown(wait=wait, cancel_futures=not wait)
