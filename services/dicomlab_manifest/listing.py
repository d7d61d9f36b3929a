"""Paged reading of Orthanc 1.10's index: studies, their series and instances, and the changes feed.

What Orthanc 1.10.1 offers and what this module uses (measured, see the benchmark):

- ``GET /studies?expand&since=N&limit=M`` pages studies with their main tags, the patient's main
  tags and their series IDs (``/tools/find`` with ``Limit``/``Since`` also works but is slower, and
  ``RequestedTags`` is ignored before 1.11).
- ``GET /studies/{id}/series`` and ``GET /series/{id}/instances`` return their children expanded:
  series main tags (Modality, BodyPartExamined, SeriesDescription, ...) and instance main tags
  (SOPInstanceUID, InstanceNumber, NumberOfFrames). One request per study and per series.
- The SOP class UID is not a main DICOM tag in 1.10; Orthanc keeps it in the per-instance metadata
  ``SopClassUid`` (one request per instance, ~2 ms each on this machine), so it is read per series
  by default (see :class:`~dicomlab_manifest.config.SopClassCheck`).
- ``GET /changes?since=&limit=`` gives ``NewInstance``/``NewSeries`` events with a sequence number:
  the cursor of incremental builds. ``GET /changes?last`` gives the newest sequence number. A change
  names only the instance ID: new series are listed whole (one request each), and new instances in
  older series are found in the tail of ``/instances?expand&since=`` (see :meth:`newest_instances`).
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, NamedTuple

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
    """One instance with the main tags Orthanc 1.10 indexes at instance level (a tuple: made ~10^5 times)."""

    orthanc_id: str
    series_id: str
    sop_uid: str
    number: int
    frames: int

    @classmethod
    def from_json(cls, item: dict[str, Any]) -> InstanceInfo:
        tags = item.get("MainDicomTags", {})
        return cls(item["ID"], item.get("ParentSeries", ""), tags.get("SOPInstanceUID", ""),
                   _to_int(tags.get("InstanceNumber"), 0), _to_int(tags.get("NumberOfFrames"), 1))

    def sort_key(self) -> tuple[int, str]:
        return (self.number, self.sop_uid)


def _to_int(value: Any, default: int) -> int:
    try:
        return int(str(value).strip())
    except (TypeError, ValueError):
        return default


@dataclass(frozen=True)
class Change:
    """A ``NewInstance`` or ``NewSeries`` event of the changes feed."""

    seq: int
    kind: str
    resource_id: str


class OrthancIndex:
    """Reads Orthanc's index page by page; never one request per instance for listed data."""

    def __init__(self, client: OrthancClient, *, cache_size: int = 256) -> None:
        self.client = client
        self._series_cache: OrderedDict[str, SeriesInfo] = OrderedDict()
        self._study_cache: OrderedDict[str, StudyInfo] = OrderedDict()
        self._cache_size = cache_size

    # ------------------------------------------------------------------ full listing

    def study_page(self, since: int, limit: int) -> list[StudyInfo]:
        """Studies ``since .. since+limit`` in Orthanc's index order."""
        items = self.client.get_json("/studies", {"expand": "", "since": since, "limit": limit})
        return [StudyInfo.from_json(item) for item in items]

    def series_of(self, study_id: str) -> list[SeriesInfo]:
        """The series of a study, sorted by Series Instance UID (a stable order)."""
        items = self.client.get_json(f"/studies/{study_id}/series")
        return sorted((SeriesInfo.from_json(item) for item in items), key=lambda s: s.series_uid)

    def instances_of(self, series_id: str) -> list[InstanceInfo]:
        """The instances of a series, sorted by Instance Number then SOP Instance UID."""
        items = self.client.get_json(f"/series/{series_id}/instances")
        return sorted((InstanceInfo.from_json(item) for item in items), key=InstanceInfo.sort_key)

    def sop_class(self, instance_id: str) -> str:
        """The SOP Class UID Orthanc recorded for an instance (metadata ``SopClassUid``)."""
        return self.client.request("GET", f"/instances/{instance_id}/metadata/SopClassUid").text.strip()

    # ------------------------------------------------------------------ changes feed

    def last_change(self) -> int:
        """The newest sequence number of the changes feed (0 when empty)."""
        return int(self.client.get_json("/changes", {"last": ""}).get("Last", 0))

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
        total = int(self.client.get_json("/statistics").get("CountInstances", 0))
        since = max(0, total - count)
        items = self.client.get_json("/instances", {"expand": "", "since": since, "limit": total - since})
        return [InstanceInfo.from_json(item) for item in items]

    def instance(self, instance_id: str) -> InstanceInfo:
        return InstanceInfo.from_json(self.client.get_json(f"/instances/{instance_id}"))

    def series(self, series_id: str) -> SeriesInfo:
        cached = self._series_cache.get(series_id)
        if cached is None:
            cached = SeriesInfo.from_json(self.client.get_json(f"/series/{series_id}"))
            self._remember(self._series_cache, series_id, cached)
        return cached

    def study(self, study_id: str) -> StudyInfo:
        cached = self._study_cache.get(study_id)
        if cached is None:
            cached = StudyInfo.from_json(self.client.get_json(f"/studies/{study_id}"))
            self._remember(self._study_cache, study_id, cached)
        return cached

    def _remember(self, cache: OrderedDict[str, Any], key: str, value: Any) -> None:
        cache[key] = value
        if len(cache) > self._cache_size:
            cache.popitem(last=False)
