"""Paged reading of Orthanc 1.10's index: studies, their series and instances, and the changes feed.

What Orthanc 1.10.1 offers and what this module uses (the cost of each endpoint, measured with
``benchmarks/bench_manifest.py`` and per-endpoint probes, is in ``benchmarks/results/README.md``):

- ``GET /studies?expand&since=N&limit=M`` pages studies with their main tags, the patient's main
  tags and their series IDs (``/tools/find`` with ``Limit``/``Since`` also works but is slower, and
  ``RequestedTags`` is ignored before 1.11). Negligible Orthanc work per instance.
- ``POST /tools/bulk-content`` (``Resources``, ``Level``, ``Metadata``) expands many resources in one
  request, and walks down the hierarchy: study IDs with ``Level: Series`` give the studies' series
  (main tags, ``ParentStudy``, instance IDs; little Orthanc work per instance), series IDs with
  ``Level: Instance`` give their instances (SOPInstanceUID, InstanceNumber, NumberOfFrames,
  ``ParentSeries``). Resources that are gone are left out of the answer (no 404). Given instance
  IDs instead of series IDs, Orthanc looks each one up first (more work per instance).
- Every route to instance main tags in 1.10 expands each instance in its own index transaction,
  at the same Orthanc CPU per instance whichever route asks (``/series/{id}/instances``,
  ``/studies/{id}/instances``, ``/instances?expand&since&limit``, bulk content); a profile of
  Orthanc shows SQLite, its file locks and jsoncpp. That is the floor of a full build, and
  concurrent requests barely lift it (SQLite serializes the index; only the JSON work overlaps).
  What differs is our side: each ``requests`` call costs client CPU, so one request per study and
  per series costs about ten times more per instance than bulk requests of ~1,000 instances.
  ``/instances?expand&since&limit`` is as cheap for Orthanc, but its index order interleaves the
  series of studies stored at the same time: the manifest's order would need every instance spooled
  and regrouped, so it is not used.
  The per-study/per-series routes remain as the fallback for an Orthanc without
  ``/tools/bulk-content`` (it answers 404); the tests check that both give the same bytes.
- The SOP class UID is not a main DICOM tag in 1.10; Orthanc keeps it in the per-instance metadata
  ``SopClassUid`` (``/instances/{id}/metadata/SopClassUid``: one request each, the cost almost all
  client side). Bulk content with ``Metadata: true`` returns it for many instances at once, at a
  clear extra Orthanc cost per instance: so it is read for one instance per series in one request per batch of
  series by default, and for every instance only with ``sop_class_check: instance``
  (see :class:`~dicomlab_manifest.config.SopClassCheck`).
- JSON answers are decoded with orjson (:mod:`dicomlab_core.fastjson`), a few times faster than the
  standard library that ``requests`` uses; answers over 1 MiB (a page's series
  lists, a very large series) with the standard library, for memory (see :func:`decode`).
- DICOMweb QIDO-RS (``/dicom-web/series/{uid}/instances``) includes the SOP class but costs Orthanc
  an order of magnitude more per instance in 1.10 (it reads the files): not used.
- ``GET /changes?since=&limit=`` gives ``NewInstance``/``NewSeries`` events with a sequence number:
  the cursor of incremental builds. ``GET /changes?last`` gives the newest sequence number. A change
  names only the instance ID: new series are listed whole (bulk content, a few series a request),
  and new instances in older series are read by ID in bulk (without bulk content: from the tail of
  ``/instances?expand&since=``, see :meth:`newest_instances`, and the rest one request each).
"""

from __future__ import annotations

import json
import logging
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from operator import itemgetter
from typing import Any, NamedTuple, TypeVar

from dicomlab_core import fastjson
from dicomlab_core.errors import NotFound
from dicomlab_core.orthanc import OrthancClient

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class StudyInfo:
    """One study as a page of ``/studies?expand`` shows it."""

    orthanc_id: str
    study_uid: str
    date: str
    description: str
    patient_id: str
    series_ids: tuple[str, ...]

    @classmethod
    def from_json(cls, item: dict[str, Any]) -> StudyInfo:
        tags = item.get("MainDicomTags", {})
        patient = item.get("PatientMainDicomTags", {})
        return cls(item["ID"], tags.get("StudyInstanceUID", ""), tags.get("StudyDate", ""),
                   tags.get("StudyDescription", ""), patient.get("PatientID", ""), tuple(item.get("Series", ())))


@dataclass(frozen=True)
class SeriesInfo:
    """One series with its main tags and the IDs of its instances."""

    orthanc_id: str
    study_id: str
    series_uid: str
    modality: str
    body_part: str
    description: str
    instance_ids: tuple[str, ...]

    @classmethod
    def from_json(cls, item: dict[str, Any]) -> SeriesInfo:
        tags = item.get("MainDicomTags", {})
        return cls(item["ID"], item.get("ParentStudy", ""), tags.get("SeriesInstanceUID", ""),
                   tags.get("Modality", "").upper(), tags.get("BodyPartExamined", "").upper(),
                   tags.get("SeriesDescription", ""), tuple(item.get("Instances", ())))


class InstanceInfo(NamedTuple):
    """One instance with the main tags Orthanc 1.10 indexes at instance level (a tuple: made ~10^5 times).

    ``sop_class`` is filled only where the listing asked for metadata (``sop_class_check: instance``).
    """

    orthanc_id: str
    series_id: str
    sop_uid: str
    number: int
    frames: int
    sop_class: str = ""

    @classmethod
    def from_json(cls, item: dict[str, Any]) -> InstanceInfo:
        tags = item.get("MainDicomTags", {})
        metadata = item.get("Metadata")
        return cls(item["ID"], item.get("ParentSeries", ""), tags.get("SOPInstanceUID", ""),
                   _to_int(tags.get("InstanceNumber"), 0), _to_int(tags.get("NumberOfFrames"), 1),
                   metadata.get("SopClassUid", "") if metadata else "")

    def sort_key(self) -> tuple[int, str]:
        return (self.number, self.sop_uid)


INSTANCE_ORDER = itemgetter(3, 2)
"""The sort key of :class:`InstanceInfo` (Instance Number, SOP Instance UID) as a C-level getter."""

T = TypeVar("T")

ORJSON_MAX_BYTES = 1 << 20
"""Biggest answer decoded with orjson (an instance chunk is ~450 KB; a page's series list can be more)."""

BULK_INSTANCES = 1000
"""Instances per ``/tools/bulk-content`` request (series are never split; ~450 KB of JSON)."""


def decode(content: bytes) -> Any:
    """A JSON answer: with orjson up to :data:`ORJSON_MAX_BYTES` (faster than ``Response.json()``, which uses
    the standard library), above it with the standard library, whose memory stays near the answer's size
    (orjson's parser holds a multiple of the input while it works; the figures are in
    ``benchmarks/results/README.md``)."""
    return fastjson.loads(content) if len(content) <= ORJSON_MAX_BYTES else json.loads(content)


def _to_int(value: Any, default: int) -> int:
    if value is None:
        return default
    try:
        return int(value if type(value) is str else str(value).strip())  # int() strips whitespace itself
    except (TypeError, ValueError):
        return default


def _each_present(ids: Sequence[str], fetch: Callable[[str], T]) -> dict[str, T]:
    """``fetch`` for each ID, one request each (the fallback without bulk content); gone ones are left out."""
    found: dict[str, T] = {}
    for resource_id in ids:
        try:
            found[resource_id] = fetch(resource_id)
        except NotFound:
            continue
    return found


def series_batches(series: Sequence[SeriesInfo], size: int = BULK_INSTANCES) -> Iterator[list[SeriesInfo]]:
    """Consecutive groups of whole series with about ``size`` instances each (a bigger series is alone)."""
    batch: list[SeriesInfo] = []
    count = 0
    for item in series:
        if batch and count + len(item.instance_ids) > size:
            yield batch
            batch, count = [], 0
        batch.append(item)
        count += len(item.instance_ids)
    if batch:
        yield batch


@dataclass(frozen=True)
class Change:
    """A ``NewInstance`` or ``NewSeries`` event of the changes feed."""

    seq: int
    kind: str
    resource_id: str


class OrthancIndex:
    """Reads Orthanc's index page by page; never one request per instance for listed data.

    ``bulk``: use ``/tools/bulk-content`` (None: yes, until Orthanc answers it with 404, then fall
    back to one request per study and per series for the rest of this object's life; False: never).
    Both ways give the same results; the per-resource way makes ~100x more requests.
    """

    def __init__(self, client: OrthancClient, *, cache_size: int = 256, bulk: bool | None = None) -> None:
        self.client = client
        self._series_cache: OrderedDict[str, SeriesInfo] = OrderedDict()
        self._study_cache: OrderedDict[str, StudyInfo] = OrderedDict()
        self._cache_size = cache_size
        self._bulk = bulk

    def _get(self, path: str, params: dict[str, Any] | None = None) -> Any:
        """GET and decode the JSON answer (see :func:`decode`)."""
        return decode(self.client.request("GET", path, params=params).content)

    def _bulk_content(self, resources: list[str], level: str, *, metadata: bool) -> list[dict[str, Any]] | None:
        """The ``level`` resources of (or below) ``resources`` in one request; None if Orthanc lacks the route."""
        if self._bulk is False:
            return None
        try:
            response = self.client.request("POST", "/tools/bulk-content", idempotent=True,
                                           json={"Resources": resources, "Level": level, "Metadata": metadata})
        except NotFound:
            logger.info("Orthanc has no /tools/bulk-content; listing with one request per study and series")
            self._bulk = False
            return None
        items: list[dict[str, Any]] = decode(response.content)
        return items

    # ------------------------------------------------------------------ full listing

    def study_page(self, since: int, limit: int) -> list[StudyInfo]:
        """Studies ``since .. since+limit`` in Orthanc's index order."""
        items = self._get("/studies", {"expand": "", "since": since, "limit": limit})
        return [StudyInfo.from_json(item) for item in items]

    def series_of(self, study_id: str) -> list[SeriesInfo]:
        """The series of a study, sorted by Series Instance UID (a stable order)."""
        items = self._get(f"/studies/{study_id}/series")
        return sorted((SeriesInfo.from_json(item) for item in items), key=lambda s: s.series_uid)

    def series_of_studies(self, study_ids: list[str]) -> dict[str, list[SeriesInfo]]:
        """The series of several studies by study ID, each list as :meth:`series_of` sorts it.

        A study that is gone has no entry.
        """
        items = self._bulk_content(study_ids, "Series", metadata=False) if study_ids else []
        if items is None:
            return _each_present(study_ids, self.series_of)
        grouped: dict[str, list[SeriesInfo]] = {}
        for item in items:
            series = SeriesInfo.from_json(item)
            grouped.setdefault(series.study_id, []).append(series)
        for listed in grouped.values():
            listed.sort(key=lambda s: s.series_uid)
        return grouped

    def instances_of(self, series_id: str, *, sop_class: bool = False) -> list[InstanceInfo]:
        """The instances of a series, sorted by Instance Number then SOP Instance UID.

        ``sop_class``: also read each instance's SOP class (one more request per instance).
        """
        items = self._get(f"/series/{series_id}/instances")
        instances = sorted((InstanceInfo.from_json(item) for item in items), key=INSTANCE_ORDER)
        if sop_class:
            instances = [i._replace(sop_class=self.sop_class(i.orthanc_id)) for i in instances]
        return instances

    def instances_of_series(self, series_ids: list[str], *, sop_class: bool = False) -> dict[str, list[InstanceInfo]]:
        """The instances of several series by series ID, each list as :meth:`instances_of` sorts it.

        A series that is gone has no entry. Ask for about :data:`BULK_INSTANCES` instances at a time.
        """
        items = self._bulk_content(series_ids, "Instance", metadata=sop_class) if series_ids else []
        if items is None:
            return _each_present(series_ids, lambda series_id: self.instances_of(series_id, sop_class=sop_class))
        grouped: dict[str, list[InstanceInfo]] = {}
        for item in items:
            instance = InstanceInfo.from_json(item)
            listed = grouped.get(instance.series_id)
            if listed is None:
                grouped[instance.series_id] = [instance]
            else:
                listed.append(instance)
        for listed in grouped.values():
            listed.sort(key=INSTANCE_ORDER)
        return grouped

    def sop_class(self, instance_id: str) -> str:
        """The SOP Class UID Orthanc recorded for an instance (metadata ``SopClassUid``)."""
        return self.client.request("GET", f"/instances/{instance_id}/metadata/SopClassUid").text.strip()

    def sop_classes(self, instance_ids: list[str]) -> dict[str, str]:
        """The SOP Class UIDs of several instances by instance ID (an instance that is gone has no entry)."""
        items = self._bulk_content(instance_ids, "Instance", metadata=True) if instance_ids else []
        if items is None:
            return _each_present(instance_ids, self.sop_class)
        return {item["ID"]: str(item.get("Metadata", {}).get("SopClassUid", "")).strip() for item in items}

    # ------------------------------------------------------------------ changes feed

    def last_change(self) -> int:
        """The newest sequence number of the changes feed (0 when empty)."""
        return int(self._get("/changes", {"last": ""}).get("Last", 0))

    def changes(self, since: int, until: int, limit: int) -> Iterator[tuple[int, list[Change]]]:
        """Pages of new-instance/new-series changes with ``since < seq <= until``, with each page's cursor."""
        cursor = since
        while cursor < until:
            page = self.client.changes(cursor, limit)
            entries = page.get("Changes", [])
            kept = [Change(int(c["Seq"]), c["ChangeType"], c["ID"]) for c in entries
                    if c["ChangeType"] in ("NewInstance", "NewSeries") and int(c["Seq"]) <= until]
            if not entries:
                yield until, kept
                return
            next_cursor = min(max(int(c["Seq"]) for c in entries), until)
            yield next_cursor, kept
            cursor = next_cursor

    def newest_instances(self, count: int) -> list[InstanceInfo]:
        """The ``count`` most recently indexed instances, expanded, in one request.

        ``/instances?since=&limit=`` pages in index order, and new instances are indexed last, so the
        tail of the list holds the instances a page of changes names. This is how incremental builds
        resolve new instances in existing series without one request each; whatever the tail does not
        hold (after deletions, or an index that orders differently) is resolved one by one.
        """
        total = int(self._get("/statistics").get("CountInstances", 0))
        since = max(0, total - count)
        items = self._get("/instances", {"expand": "", "since": since, "limit": total - since})
        return [InstanceInfo.from_json(item) for item in items]

    def instance(self, instance_id: str) -> InstanceInfo:
        return InstanceInfo.from_json(self._get(f"/instances/{instance_id}"))

    @property
    def bulk(self) -> bool:
        """Whether ``/tools/bulk-content`` is used (until Orthanc shows it does not have it)."""
        return self._bulk is not False

    def instances(self, instance_ids: list[str]) -> dict[str, InstanceInfo]:
        """Several instances by ID, :data:`BULK_INSTANCES` per request (an instance that is gone has no entry)."""
        found: dict[str, InstanceInfo] = {}
        for start in range(0, len(instance_ids), BULK_INSTANCES):
            chunk = instance_ids[start:start + BULK_INSTANCES]
            items = self._bulk_content(chunk, "Instance", metadata=False)
            if items is None:
                found.update(_each_present(chunk, self.instance))
            else:
                found.update((info.orthanc_id, info) for info in map(InstanceInfo.from_json, items))
        return found

    def series(self, series_id: str) -> SeriesInfo:
        cached = self._series_cache.get(series_id)
        if cached is None:
            cached = SeriesInfo.from_json(self._get(f"/series/{series_id}"))
            self._remember(self._series_cache, series_id, cached)
        return cached

    def study(self, study_id: str) -> StudyInfo:
        cached = self._study_cache.get(study_id)
        if cached is None:
            cached = StudyInfo.from_json(self._get(f"/studies/{study_id}"))
            self._remember(self._study_cache, study_id, cached)
        return cached

    def _remember(self, cache: OrderedDict[str, Any], key: str, value: Any) -> None:
        cache[key] = value
        if len(cache) > self._cache_size:
            cache.popitem(last=False)
