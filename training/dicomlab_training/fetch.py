"""Where DICOM bytes come from: Orthanc (REST by Orthanc ID, or WADO-RS by UIDs), or a folder/bucket.

Every fetcher answers ``fetch(sample) -> bytes`` and raises :class:`SkipImage` (``not_found`` or
``fetch_failed``) instead of letting one bad instance stop a run. The SOP Instance UID in the file is
checked against the manifest's by the decoder (:func:`dicomlab_training.pixels.read_dataset`).
Concurrency is bounded by the caller's thread pool; the Orthanc client pools connections and retries
idempotent requests with backoff.
"""

from __future__ import annotations

import io
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol

import pydicom
from pydicom.errors import InvalidDicomError

from dicomlab_core.errors import NotFound, ServiceError
from dicomlab_core.objectstore import ObjectStore, open_store, split_uri
from dicomlab_core.orthanc import OrthancClient
from dicomlab_training.manifest import Sample
from dicomlab_training.pixels import SkipImage, SkipReason

logger = logging.getLogger(__name__)


class Fetcher(Protocol):
    def fetch(self, sample: Sample) -> bytes: ...


def _from_uri(uri: str) -> bytes:
    store_url, key = split_uri(uri)
    return open_store(store_url).get_bytes(key)


class OrthancFetcher:
    """Instances from Orthanc: WADO-RS when the manifest has study/series/SOP UIDs, else ``/instances/{id}/file``."""

    def __init__(self, client: OrthancClient) -> None:
        self.client = client

    def fetch(self, sample: Sample) -> bytes:
        try:
            if "://" in sample.source:
                return _from_uri(sample.source)
            if sample.study_uid and sample.series_uid and sample.sop_uid:
                return self.client.retrieve_instance(sample.study_uid, sample.series_uid, sample.sop_uid)
            if sample.source:
                return self.client.get_instance_file(sample.source)
            if sample.sop_uid:
                orthanc_id = self.client.lookup_instance(sample.sop_uid)
                if orthanc_id is None:
                    raise SkipImage(SkipReason.NOT_FOUND, "SOP Instance UID not in Orthanc")
                return self.client.get_instance_file(orthanc_id)
        except NotFound:
            raise SkipImage(SkipReason.NOT_FOUND, "instance not in Orthanc") from None
        except ServiceError as exc:
            raise SkipImage(SkipReason.FETCH_FAILED, exc.description) from None
        raise SkipImage(SkipReason.NOT_FOUND, "manifest line has no usable reference")


class FolderFetcher:
    """Files from a folder or object-store prefix, matched by SOP Instance UID (or Orthanc ID) file name.

    Files named ``<SOP UID>.dcm`` (or ``<source>.dcm``) are found directly; otherwise the headers of the
    ``.dcm`` files are read once (local folders only) to map SOP Instance UIDs to files.
    """

    def __init__(self, url: str) -> None:
        self.store: ObjectStore = open_store(url)
        self.keys = [key for key in self.store.list() if key.lower().endswith(".dcm")]
        stems: dict[str, list[str]] = {}
        for key in self.keys:
            stems.setdefault(Path(key).stem, []).append(key)
        self.by_name = {stem: keys[0] for stem, keys in stems.items() if len(keys) == 1}
        self._by_uid: dict[str, str] | None = None
        self._root = Path(self.store.url[len("file://"):]) if self.store.url.startswith("file://") else None
        self._lock = threading.Lock()

    def _header_uid(self, key: str) -> str:
        try:
            source: Any = self._root / key if self._root is not None else io.BytesIO(self.store.get_bytes(key))
            ds = pydicom.dcmread(source, stop_before_pixels=True, specific_tags=["SOPInstanceUID"])
        except (InvalidDicomError, OSError, ValueError, EOFError, ServiceError):
            return ""
        return str(ds.get("SOPInstanceUID", ""))

    def _uid_index(self) -> dict[str, str]:
        with self._lock:
            if self._by_uid is None:
                with ThreadPoolExecutor(max_workers=8) as pool:
                    uids = list(pool.map(self._header_uid, self.keys))
                self._by_uid = {}
                for uid, key in zip(uids, self.keys, strict=True):
                    if uid:
                        self._by_uid.setdefault(uid, key)
            return self._by_uid

    def fetch(self, sample: Sample) -> bytes:
        if "://" in sample.source:
            try:
                return _from_uri(sample.source)
            except NotFound:
                raise SkipImage(SkipReason.NOT_FOUND, "source-ref object missing") from None
            except ServiceError as exc:
                raise SkipImage(SkipReason.FETCH_FAILED, exc.description) from None
        key = None
        for name in (sample.sop_uid, sample.source):
            if name and name in self.by_name:
                key = self.by_name[name]
                break
        if key is None and sample.sop_uid:
            key = self._uid_index().get(sample.sop_uid)
        if key is None:
            raise SkipImage(SkipReason.NOT_FOUND, "no file for this instance in the folder")
        try:
            return self.store.get_bytes(key)
        except ServiceError as exc:
            raise SkipImage(SkipReason.FETCH_FAILED, exc.description) from None
