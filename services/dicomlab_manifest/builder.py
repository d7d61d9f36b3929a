"""One manifest build, full or incremental, resumable, with the same bytes for the same inputs.

Full build: note the changes feed's position L0, page through studies (one checkpoint per page),
note L1, then replay the new instances of changes (L0, L1] that the listing may have missed. The
manifest is then exactly "everything that matched at L1", and its summary records L1 as the cursor
an incremental build continues from. Incremental build (``since_manifest``): replay the changes
after that manifest's cursor up to the current position, and nothing else.

Lines are ordered by study (Orthanc's index order), series (Series Instance UID) and instance
(Instance Number, SOP Instance UID), or by change sequence in incremental mode; creation time lives
only in the summary. Sampling with a seed keeps the ``max_count`` instances with the smallest
keyed hash (a uniform sample that does not depend on listing order), holding hashes, not lines.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path
from typing import Any

from dicomlab_core.errors import BadRequest, Conflict, NotFound, ServiceError, UpstreamError
from dicomlab_core.objectstore import ObjectStoreError
from dicomlab_core.orthanc import OrthancClient
from dicomlab_manifest import metrics
from dicomlab_manifest.listing import InstanceInfo, OrthancIndex, SeriesInfo, StudyInfo
from dicomlab_manifest.selection import (
    HASH_SPACE,
    BottomK,
    Selector,
    SkipReason,
    classify_instance,
    classify_sop_class,
    manifest_line,
    sample_hash,
)
from dicomlab_manifest.spec import SelectionSpec
from dicomlab_manifest.state import JobState
from dicomlab_manifest.writer import ManifestStore, compose_summary, exclusion_keys

logger = logging.getLogger(__name__)

ProgressCallback = Callable[[dict[str, Any]], None]
Entry = tuple[InstanceInfo, SeriesInfo, StudyInfo, SkipReason | None, str]
"""An instance with its series, study, disqualification (if any) and patient key."""


TAIL_LOOKUP_MIN = 20
"""Unresolved new instances in one page of changes above which the tail of the index is read at once."""
TAIL_SLACK = 200
"""Extra instances read with the tail (instances indexed after the page's changes)."""


class EmptySelection(ServiceError):
    """The selection matched no qualifying instance and the spec did not allow an empty manifest."""

    status = HTTPStatus.UNPROCESSABLE_ENTITY


@dataclass
class SeriesResult:
    series: SeriesInfo
    skip: SkipReason | None = None
    filtered: bool = False
    instances: list[tuple[InstanceInfo, SkipReason | None]] = field(default_factory=list)


@dataclass
class StudyResult:
    study: StudyInfo
    deleted: bool = False
    series: list[SeriesResult] = field(default_factory=list)


class ManifestBuilder:
    """Runs one spec against one Orthanc into one manifest store, with its state in ``job_dir``."""

    def __init__(self, spec: SelectionSpec, *, client: OrthancClient, manifests: ManifestStore, job_dir: Path,
                 patient_key: Callable[[str], str], page_size: int = 100, changes_page_size: int = 1000,
                 workers: int = 4, job_id: str = "", on_progress: ProgressCallback | None = None) -> None:
        self.spec = spec
        self.client = client
        self.index = OrthancIndex(client)
        self.manifests = manifests
        self.job_dir = job_dir
        self.patient_key = patient_key
        self.selector = Selector(spec, patient_key)
        self.page_size = page_size
        self.changes_page_size = changes_page_size
        self.workers = workers
        self.job_id = job_id or job_dir.name
        self.on_progress = on_progress
        self.labels_json = json.dumps(",".join(spec.labels), ensure_ascii=False)
        self._sampling = spec.seed is not None or spec.sample_fraction is not None
        self._bottom_k = BottomK(spec.max_count) if spec.max_count is not None and spec.seed is not None else None
        self._sop_cache: dict[str, str] = {}
        self._reported: tuple[dict[str, int], dict[str, int]] = ({}, {})

    # ------------------------------------------------------------------ entry point

    def run(self) -> dict[str, Any]:
        """Build (or resume) the manifest; returns its summary."""
        started = time.monotonic()
        mode = "incremental" if self.spec.incremental else "full"
        state = JobState(self.job_dir, self.spec.fingerprint())
        metrics.JOBS_RUNNING.inc()
        outcome = "failed"
        try:
            done = state.load_result()
            if state.progress.phase == "done" and done is not None:
                outcome = "succeeded"
                return done
            result = self._run(state)
            outcome = "succeeded"
            return result
        except UpstreamError as exc:
            if not isinstance(exc, ObjectStoreError):
                metrics.ORTHANC_ERRORS.inc()
            raise
        finally:
            metrics.JOBS_RUNNING.dec()
            metrics.JOB_DURATION.labels(mode, outcome).observe(time.monotonic() - started)
            state.close()

    def _run(self, state: JobState) -> dict[str, Any]:
        progress = state.progress
        if state.resumed:
            logger.info("resuming manifest build", extra={"job": self.job_id, "phase": progress.phase,
                                                           "cursor": progress.cursor})
            if self._bottom_k is not None:
                self._bottom_k.extend(digest for digest, _line in state.part_lines())
            self._reported = (dict(progress.counts), dict(progress.skipped))
        if progress.phase == "init":
            self._init(state)
        with ThreadPoolExecutor(self.workers, thread_name_prefix="manifest-fetch") as pool:
            if progress.phase == "listing":
                self._listing(state, pool)
            if progress.phase in ("catchup", "changes"):
                self._changes(state, pool)
        if progress.phase == "scanned":
            return self._finalize(state)
        raise RuntimeError(f"unexpected build phase {progress.phase!r}")

    def _init(self, state: JobState) -> None:
        spec, progress = self.spec, state.progress
        if not spec.overwrite and self.manifests.exists(spec.name):
            raise Conflict(f"name: a manifest named {spec.name!r} exists; choose another name or set overwrite")
        keys = (key for ref in spec.exclude_manifests
                for key in exclusion_keys(self.manifests.read_lines(ref, field="exclude_manifests")))
        state.load_exclusions(keys)
        if spec.since_manifest is not None:
            try:
                previous = self.manifests.summary(spec.since_manifest)
            except NotFound:
                raise BadRequest(f"since_manifest: no manifest named {spec.since_manifest!r}") from None
            progress.low = int(previous.get("source", {}).get("changes", {}).get("cursor", 0))
            progress.high = self.index.last_change()
            progress.phase, progress.cursor = "changes", progress.low
        else:
            progress.low = self.index.last_change()
            progress.phase, progress.cursor = "listing", 0
        state.checkpoint()

    # ------------------------------------------------------------------ full listing

    def _fetch_study(self, study: StudyInfo) -> StudyResult:
        """Everything about one matching study that the main thread needs (runs in a worker thread)."""
        result = StudyResult(study)
        try:
            for series in self.index.series_of(study.orthanc_id):
                item = SeriesResult(series, skip=self.selector.series_skip_reason(series))
                result.series.append(item)
                if item.skip is not None:
                    continue
                if not self.selector.series_matches(series):
                    item.filtered = True
                    continue
                instances = self.index.instances_of(series.orthanc_id)
                item.instances = [(i, self._qualify(i, series.orthanc_id)) for i in instances]
        except NotFound:
            result.deleted = True
        return result

    def _qualify(self, instance: InstanceInfo, series_id: str) -> SkipReason | None:
        reason = classify_instance(instance)
        if reason is not None:
            return reason
        if self.spec.sop_class_check == "instance":
            return classify_sop_class(self.index.sop_class(instance.orthanc_id))
        sop_class = self._sop_cache.get(series_id)
        if sop_class is None:
            sop_class = self.index.sop_class(instance.orthanc_id)
            if len(self._sop_cache) > 4096:
                self._sop_cache.clear()
            self._sop_cache[series_id] = sop_class
        return classify_sop_class(sop_class)

    def _listing(self, state: JobState, pool: ThreadPoolExecutor) -> None:
        progress = state.progress
        while True:
            studies = self.index.study_page(progress.cursor, self.page_size)
            if not studies:
                break
            progress.add("studies_scanned", len(studies))
            matching = [s for s in studies if self.selector.study_matches(s)]
            progress.add("studies_filtered", len(studies) - len(matching))
            for result in pool.map(self._fetch_study, matching):
                self._consume_study(state, result)
                if progress.truncated:
                    break
            progress.cursor += len(studies)
            self._checkpoint(state)
            if progress.truncated:
                progress.high = self.index.last_change()
                progress.phase = "scanned"
                self._checkpoint(state)
                return
        progress.high = self.index.last_change()
        progress.phase, progress.cursor = "catchup", progress.low
        self._checkpoint(state)

    def _consume_study(self, state: JobState, result: StudyResult) -> None:
        progress = state.progress
        if result.deleted:
            progress.add("studies_deleted")
            return
        key = self.patient_key(result.study.patient_id)
        for item in result.series:
            progress.add("series_scanned")
            count = len(item.series.instance_ids)
            if item.skip is not None:
                progress.add("instances_scanned", count)
                progress.skip(item.skip, count)
                continue
            if item.filtered:
                progress.add("series_filtered")
                progress.add("instances_filtered", count)
                continue
            self._consider(state, [(i, item.series, result.study, reason, key) for i, reason in item.instances])
            if progress.truncated:
                return

    # ------------------------------------------------------------------ changes feed

    def _changes(self, state: JobState, pool: ThreadPoolExecutor) -> None:
        progress = state.progress
        catchup = progress.phase == "catchup"
        for next_cursor, changes in self.index.changes(progress.cursor, progress.high, self.changes_page_size):
            resolved = self._resolve(changes, pool)
            if catchup:  # instances the listing already saw are not news
                seen = state.seen_among([i.sop_uid for i in resolved.values()])
                resolved = {k: i for k, i in resolved.items() if i.sop_uid not in seen}
            entries: list[Entry] = []
            for change in changes:
                if change.kind != "NewInstance" or (catchup and change.resource_id not in resolved):
                    continue
                entry = self._change_entry(state, resolved.get(change.resource_id))
                if entry is not None:
                    entries.append(entry)
            self._consider(state, entries)
            progress.cursor = next_cursor
            self._checkpoint(state)
            if progress.truncated:
                break
        progress.phase = "scanned"
        self._checkpoint(state)

    def _resolve(self, changes: list[Any], pool: ThreadPoolExecutor) -> dict[str, InstanceInfo]:
        """Instance main tags for a page of changes: by series where a new series came with them."""
        wanted = {c.resource_id for c in changes if c.kind == "NewInstance"}
        resolved: dict[str, InstanceInfo] = {}
        new_series = [c.resource_id for c in changes if c.kind == "NewSeries"]
        for listed in pool.map(self._instances_or_empty, new_series):
            resolved.update((i.orthanc_id, i) for i in listed if i.orthanc_id in wanted)
        missing = sorted(wanted - resolved.keys())
        if len(missing) > TAIL_LOOKUP_MIN:
            tail = self.index.newest_instances(len(missing) + TAIL_SLACK)
            resolved.update((i.orthanc_id, i) for i in tail if i.orthanc_id in wanted)
            missing = sorted(wanted - resolved.keys())
        for instance_id, info in zip(missing, pool.map(self._instance_or_none, missing), strict=True):
            if info is not None:
                resolved[instance_id] = info
        return resolved

    def _instances_or_empty(self, series_id: str) -> list[InstanceInfo]:
        try:
            return self.index.instances_of(series_id)
        except NotFound:
            return []

    def _instance_or_none(self, instance_id: str) -> InstanceInfo | None:
        try:
            return self.index.instance(instance_id)
        except NotFound:
            return None

    def _change_entry(self, state: JobState, instance: InstanceInfo | None) -> Entry | None:
        """The instance of a change with its series and study, or None when it is counted as filtered/gone."""
        progress = state.progress
        try:
            if instance is None:
                raise NotFound("deleted")
            series = self.index.series(instance.series_id)
            study = self.index.study(series.study_id)
        except NotFound:
            progress.add("instances_scanned")
            progress.skip(SkipReason.DELETED)
            return None
        skip = self.selector.series_skip_reason(series)
        if skip is not None:
            progress.add("instances_scanned")
            progress.skip(skip)
            return None
        if not (self.selector.study_matches(study) and self.selector.series_matches(series)):
            progress.add("instances_filtered")
            return None
        return (instance, series, study, self._qualify(instance, series.orthanc_id), self.patient_key(study.patient_id))

    # ------------------------------------------------------------------ instances, a batch at a time

    def _consider(self, state: JobState, entries: list[Entry]) -> None:
        """Qualify, exclude, de-duplicate, sample and spool a batch (one series or one page of changes).

        Exclusion and de-duplication are one SQLite query per batch, not per instance.
        """
        progress, spec = state.progress, self.spec
        progress.add("instances_scanned", len(entries))
        qualified = []
        for entry in entries:
            if entry[3] is not None:
                progress.skip(entry[3])
            else:
                qualified.append(entry)
        if not qualified:
            return
        excluded = state.excluded_among([key for e in qualified
                                         for key in (f"sop:{e[0].sop_uid}", f"oid:{e[0].orthanc_id}")])
        seen = state.seen_among([e[0].sop_uid for e in qualified])
        new_seen: list[str] = []
        lines: list[tuple[int, str]] = []
        fraction = spec.sample_fraction * HASH_SPACE if spec.sample_fraction is not None else None
        for instance, series, study, _reason, key in qualified:
            sop = instance.sop_uid
            if excluded and (f"sop:{sop}" in excluded or f"oid:{instance.orthanc_id}" in excluded):
                progress.skip(SkipReason.EXCLUDED)
                continue
            if sop in seen:
                progress.skip(SkipReason.DUPLICATE)
                continue
            seen.add(sop)
            new_seen.append(sop)
            digest = sample_hash(spec.seed, sop) if self._sampling else 0
            if fraction is not None and digest >= fraction:
                progress.skip(SkipReason.NOT_SAMPLED)
                continue
            lines.append((digest, manifest_line(instance, series, study, self.labels_json, key)))
            if self._bottom_k is not None:
                self._bottom_k.add(digest)
            elif spec.max_count is not None and progress.counts.get("candidates", 0) + len(lines) >= spec.max_count:
                progress.truncated = True
                break
        state.mark_seen(new_seen)
        state.append(lines)
        progress.add("candidates", len(lines))

    # ------------------------------------------------------------------ checkpoints and the result

    def _checkpoint(self, state: JobState) -> None:
        state.checkpoint()
        self._report(state)

    def _report(self, state: JobState) -> None:
        """Publish what changed since the last checkpoint (metrics are bumped per page, not per instance)."""
        counts, skipped = state.progress.counts, state.progress.skipped
        metrics.publish(counts, skipped, *self._reported)
        self._reported = (dict(counts), dict(skipped))
        if self.on_progress is not None:
            self.on_progress({"phase": state.progress.phase, "counts": dict(counts), "skipped": dict(skipped)})

    def _lines(self, state: JobState, threshold: int | None) -> Iterator[bytes]:
        for digest, line in state.part_lines():
            if threshold is None or digest <= threshold:
                yield line

    def _finalize(self, state: JobState) -> dict[str, Any]:
        progress, spec = state.progress, self.spec
        candidates = progress.counts.get("candidates", 0)
        threshold = None
        if self._bottom_k is not None and candidates > self._bottom_k.size:
            threshold = self._bottom_k.threshold()
        if candidates == 0 and not spec.allow_empty:
            raise EmptySelection(
                f"the selection matched no qualifying instance (scanned {progress.counts.get('instances_scanned', 0)}, "
                f"skipped {dict(sorted(progress.skipped.items()))}); nothing was written; "
                "set allow_empty to write an empty manifest")
        count, size, sha256 = self.manifests.write_manifest(spec.name, self._lines(state, threshold))
        if count < candidates:
            progress.skip(SkipReason.NOT_SAMPLED, candidates - count)
        progress.counts["selected"] = count
        metrics.INSTANCES_SELECTED.inc(count)
        manifest = self.manifests.store.uri(self.manifests.keys(spec.name).manifest)
        summary = compose_summary(spec, progress, manifest=manifest, lines=count, size=size, sha256=sha256,
                                  orthanc_url=self.client.settings.base, job_id=self.job_id)
        self.manifests.write_summary(spec.name, summary)
        state.save_result(summary)
        progress.phase = "done"
        self._checkpoint(state)
        logger.info("manifest written", extra={"manifest": spec.name, "instances": count, "job": self.job_id})
        return summary
