"""One manifest build, full or incremental, resumable, with the same bytes for the same inputs.

Full build: note the changes feed's position L0, page through studies (one checkpoint per page),
note L1, then replay the new instances of changes (L0, L1] that the listing may have missed. The
manifest is then exactly "everything that matched at L1", and its summary records L1 as the cursor
an incremental build continues from. Incremental build (``since_manifest``): replay the changes
after that manifest's cursor up to the current position, and nothing else.

The full listing is a pipeline (:meth:`ManifestBuilder._plan`, :meth:`ManifestBuilder._prefetch`):
the main thread reads a page of studies and, in one bulk request, their series, filters them, and
cuts the page into chunks of whole studies with ~1,000 instances of wanted series; ``workers``
threads fetch chunks ahead (one bulk request for the instances, one for the series' SOP classes)
while the main thread de-duplicates and spools the previous chunk. Orthanc's index work per
instance (see :mod:`dicomlab_manifest.listing`) is the bottleneck, and ours runs beside it, a
fraction of what one request per study and per series cost. More than four workers do not help
(Orthanc serializes SQLite index reads); memory is ``workers`` chunks. The measurements behind this
are in ``benchmarks/results/README.md``.

Lines are ordered by study (Orthanc's index order), series (Series Instance UID) and instance
(Instance Number, SOP Instance UID), or by change sequence in incremental mode; creation time lives
only in the summary. Sampling with a seed keeps the ``max_count`` instances with the smallest
keyed hash (a uniform sample that does not depend on listing order), holding hashes, not lines.
"""

from __future__ import annotations

import json
import logging
import time
from collections import deque
from collections.abc import Callable, Generator, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path
from typing import Any

from dicomlab_core.errors import BadRequest, Conflict, NotFound, ServiceError, UpstreamError
from dicomlab_core.objectstore import ObjectStoreError
from dicomlab_core.orthanc import OrthancClient
from dicomlab_manifest import metrics
from dicomlab_manifest.listing import (
    BULK_INSTANCES,
    InstanceInfo,
    OrthancIndex,
    SeriesInfo,
    StudyInfo,
    series_batches,
)
from dicomlab_manifest.selection import (
    HASH_SPACE,
    BottomK,
    Selector,
    SkipReason,
    classify_instance,
    classify_sop_class,
    line_parts,
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
CHUNK_INSTANCES = BULK_INSTANCES
"""Instances of wanted series per chunk of studies fetched by one worker (whole studies, ~1,000 instances)."""
NEW_SERIES_PER_REQUEST = 8
"""New series of a page of changes listed per bulk request (their size is not known beforehand)."""
SOP_CACHE_SIZE = 4096
"""Series whose SOP class is remembered for the changes replayed after the listing."""


class EmptySelection(ServiceError):
    """The selection matched no qualifying instance and the spec did not allow an empty manifest."""

    status = HTTPStatus.UNPROCESSABLE_ENTITY


@dataclass
class SeriesResult:
    series: SeriesInfo
    skip: SkipReason | None = None
    filtered: bool = False
    instances: list[tuple[InstanceInfo, SkipReason | None]] = field(default_factory=list)

    @property
    def wanted(self) -> bool:
        """Whether the series' instances are listed (not skipped for its modality, not filtered out)."""
        return self.skip is None and not self.filtered


@dataclass
class StudyResult:
    study: StudyInfo
    deleted: bool = False
    series: list[SeriesResult] = field(default_factory=list)


@dataclass(frozen=True)
class PageStart:
    """A page of studies begins in the fetch plan: its size and how many of its studies the filters dropped."""

    studies: int
    filtered: int


@dataclass(frozen=True)
class PageEnd:
    """A page of studies is complete: the cursor moves past it and a checkpoint is taken."""

    studies: int


PlanItem = PageStart | PageEnd | list[StudyResult]
"""One step of the full listing: a page boundary, or a chunk of studies (their instances to fetch, or fetched)."""


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

    def _plan(self, cursor: int) -> Iterator[PlanItem]:
        """Pages of studies from ``cursor`` on, each as a :class:`PageStart`, its chunks and a :class:`PageEnd`.

        Runs in the main thread: one request for the page, one for the series of its matching
        studies; the chunks' instance lists are fetched by the pool.
        """
        while True:
            studies = self.index.study_page(cursor, self.page_size)
            if not studies:
                return
            matching = [s for s in studies if self.selector.study_matches(s)]
            yield PageStart(len(studies), len(studies) - len(matching))
            series = self.index.series_of_studies([s.orthanc_id for s in matching])
            chunk: list[StudyResult] = []
            size = 0
            for study in matching:
                result = self._plan_study(study, series.get(study.orthanc_id))
                chunk.append(result)
                size += sum(len(i.series.instance_ids) for i in result.series if i.wanted)
                if size >= CHUNK_INSTANCES:
                    yield chunk
                    chunk, size = [], 0
            if chunk:
                yield chunk
            yield PageEnd(len(studies))
            cursor += len(studies)

    def _plan_study(self, study: StudyInfo, series: list[SeriesInfo] | None) -> StudyResult:
        """A study with its series classified (skipped, filtered or wanted); no series: it is gone."""
        result = StudyResult(study, deleted=not series)
        for info in series or ():
            item = SeriesResult(info, skip=self.selector.series_skip_reason(info))
            item.filtered = item.skip is None and not self.selector.series_matches(info)
            result.series.append(item)
        return result

    def _fetch_chunk(self, chunk: list[StudyResult]) -> list[StudyResult]:
        """The instances of a chunk's wanted series, qualified (runs in a worker thread).

        One bulk request per ~:data:`CHUNK_INSTANCES` instances, and one for the SOP classes of the
        series' first single-frame instances. A study any of whose wanted series is gone by now
        counts as deleted, as a whole.
        """
        wanted = [item.series for study in chunk if not study.deleted for item in study.series if item.wanted]
        exact = self.spec.sop_class_check == "instance"
        listed: dict[str, list[InstanceInfo]] = {}
        for batch in series_batches(wanted, CHUNK_INSTANCES):
            listed.update(self.index.instances_of_series([s.orthanc_id for s in batch], sop_class=exact))
        first: dict[str, str] = {}
        classes: dict[str, str] = {}
        if not exact:  # the series' SOP class: that of its first instance that is not multi-frame
            first = {sid: next((i.orthanc_id for i in instances if classify_instance(i) is None), "")
                     for sid, instances in listed.items()}
            classes = self.index.sop_classes(sorted({i for i in first.values() if i}))
            series_class = {sid: classes[iid] for sid, iid in first.items() if iid in classes}
            self._remember_sop_classes(series_class)
        for study in chunk:
            for item in study.series:
                if study.deleted or not item.wanted:
                    continue
                instances = listed.get(item.series.orthanc_id)
                if not instances:
                    study.deleted = True
                    continue
                if exact:
                    item.instances = [(i, classify_instance(i) or classify_sop_class(i.sop_class)) for i in instances]
                    continue
                representative = first[item.series.orthanc_id]
                if representative and representative not in classes:
                    study.deleted = True
                    continue
                reason = classify_sop_class(classes[representative]) if representative else None
                item.instances = [(i, classify_instance(i) or reason) for i in instances]
        return chunk

    def _remember_sop_classes(self, classes: dict[str, str]) -> None:
        """Keep the series' SOP classes for the changes replayed after the listing (bounded)."""
        if len(self._sop_cache) + len(classes) > SOP_CACHE_SIZE:
            self._sop_cache.clear()
        self._sop_cache.update(classes)

    def _qualify(self, instance: InstanceInfo, series_id: str) -> SkipReason | None:
        reason = classify_instance(instance)
        if reason is not None:
            return reason
        if self.spec.sop_class_check == "instance":
            return classify_sop_class(self.index.sop_class(instance.orthanc_id))
        sop_class = self._sop_cache.get(series_id)
        if sop_class is None:
            sop_class = self.index.sop_class(instance.orthanc_id)
            self._remember_sop_classes({series_id: sop_class})
        return classify_sop_class(sop_class)

    def _prefetch(self, plan: Iterator[PlanItem],
                  pool: ThreadPoolExecutor) -> Generator[PlanItem, None, None]:
        """The plan's items in order, with up to ``workers`` chunks being fetched ahead by the pool.

        Orthanc works on the next chunks while this thread consumes one: its index work and ours
        overlap, and the memory held is a few chunks, not a page.
        """
        window: deque[PageStart | PageEnd | Future[list[StudyResult]]] = deque()
        in_flight = 0

        def fill() -> None:
            nonlocal in_flight
            while in_flight < self.workers and (item := next(plan, None)) is not None:
                if isinstance(item, list):
                    window.append(pool.submit(self._fetch_chunk, item))
                    in_flight += 1
                else:
                    window.append(item)

        try:
            fill()
            while window:
                head = window.popleft()
                if isinstance(head, Future):
                    in_flight -= 1
                    fill()  # keep ``workers`` chunks in flight while this one is consumed
                    yield head.result()
                else:
                    yield head
                    fill()
        finally:
            for pending in window:
                if isinstance(pending, Future):
                    pending.cancel()

    def _listing(self, state: JobState, pool: ThreadPoolExecutor) -> None:
        progress = state.progress
        page = PageStart(0, 0)
        with closing(self._prefetch(self._plan(progress.cursor), pool)) as items:
            for item in items:
                if isinstance(item, PageStart):
                    page = item
                    progress.add("studies_scanned", item.studies)
                    progress.add("studies_filtered", item.filtered)
                elif isinstance(item, PageEnd):
                    progress.cursor += item.studies
                    self._checkpoint(state)
                else:
                    for result in item:
                        self._consume_study(state, result)
                        if progress.truncated:
                            break
                    if progress.truncated:
                        progress.cursor += page.studies
                        self._checkpoint(state)
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
        batches = [new_series[i:i + NEW_SERIES_PER_REQUEST] for i in range(0, len(new_series), NEW_SERIES_PER_REQUEST)]
        for listed in pool.map(self.index.instances_of_series, batches):
            resolved.update((i.orthanc_id, i) for series in listed.values() for i in series if i.orthanc_id in wanted)
        missing = sorted(wanted - resolved.keys())
        if missing and self.index.bulk:
            resolved.update(self.index.instances(missing))
            return resolved
        if len(missing) > TAIL_LOOKUP_MIN:
            tail = self.index.newest_instances(len(missing) + TAIL_SLACK)
            resolved.update((i.orthanc_id, i) for i in tail if i.orthanc_id in wanted)
            missing = sorted(wanted - resolved.keys())
        for instance_id, info in zip(missing, pool.map(self._instance_or_none, missing), strict=True):
            if info is not None:
                resolved[instance_id] = info
        return resolved

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

        Exclusion and de-duplication are one SQLite statement per batch, not per instance. The batch's
        UIDs are claimed before the loop, so when ``max_count`` truncates it, the rest of the batch is
        recorded as seen too; nothing reads that afterwards (a truncated build goes to its final write).
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
        new = state.claim_new([e[0].sop_uid for e in qualified if not (excluded and self._excluded(e[0], excluded))])
        lines: list[tuple[int, str]] = []
        fraction = spec.sample_fraction * HASH_SPACE if spec.sample_fraction is not None else None
        parts_of: tuple[SeriesInfo, StudyInfo, str] | None = None
        parts = ("", "")
        for instance, series, study, _reason, key in qualified:
            sop = instance.sop_uid
            if excluded and self._excluded(instance, excluded):
                progress.skip(SkipReason.EXCLUDED)
                continue
            if sop not in new:  # selected before, or earlier in this batch
                progress.skip(SkipReason.DUPLICATE)
                continue
            new.discard(sop)
            digest = sample_hash(spec.seed, sop) if self._sampling else 0
            if fraction is not None and digest >= fraction:
                progress.skip(SkipReason.NOT_SAMPLED)
                continue
            if parts_of is None or parts_of[0] is not series or parts_of[1] is not study or parts_of[2] != key:
                parts_of, parts = (series, study, key), line_parts(series, study, self.labels_json, key)
            lines.append((digest, manifest_line(instance, series, study, self.labels_json, key, parts)))
            if self._bottom_k is not None:
                self._bottom_k.add(digest)
            elif spec.max_count is not None and progress.counts.get("candidates", 0) + len(lines) >= spec.max_count:
                progress.truncated = True
                break
        state.append(lines)
        progress.add("candidates", len(lines))

    @staticmethod
    def _excluded(instance: InstanceInfo, excluded: set[str]) -> bool:
        return f"sop:{instance.sop_uid}" in excluded or f"oid:{instance.orthanc_id}" in excluded

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
        if threshold is None:
            yield from state.part_lines_only()
            return
        for digest, line in state.part_lines():
            if digest <= threshold:
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
