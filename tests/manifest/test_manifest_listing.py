"""The two ways of reading Orthanc's index write the same manifests.

Bulk content (``POST /tools/bulk-content``, the default: a few requests per page of studies) and the
fallback for an Orthanc without it (one request per study, per series and per SOP class check).
"""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any

import pytest
from manifest_support import Population, build, manifest_bytes

from dicomlab_core.errors import NotFound
from dicomlab_core.orthanc import OrthancClient


class RecordingClient(OrthancClient):
    """The real client, recording the path of every request; ``bulk=False`` answers bulk content with 404."""

    def __init__(self, *args: Any, bulk: bool = True, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.bulk = bulk
        self.paths: list[str] = []
        self.lock = threading.Lock()

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        if kwargs.get("idempotent") is not False:  # a retried POST comes back here with idempotent=False
            with self.lock:
                self.paths.append(path)
        if not self.bulk and path == "/tools/bulk-content":
            raise NotFound("not found in Orthanc: POST /tools/bulk-content")
        return super().request(method, path, **kwargs)

    def routes(self) -> Counter[str]:
        """Requests by route (identifiers replaced by ``{id}``)."""
        return Counter("/".join("{id}" if len(part) == 44 else part for part in p.split("/")) for p in self.paths)


@pytest.mark.parametrize("spec", [
    {},
    {"sop_class_check": "instance", "modalities": ["DX", "CR", "CT", "MR"]},
    {"seed": 3, "max_count": 25, "body_parts": ["CHEST"]},
    {"max_count": 7},
    {"series_description": "PA", "study_date_from": "20240101"},
], ids=["default", "instance-check", "sampled", "truncated", "filtered"])
def test_bulk_and_per_series_listings_write_the_same_bytes(population: Population, make_service: Any,
                                                           spec: dict[str, Any]) -> None:
    bulk = RecordingClient(population.server.settings(retries=0))
    fallback = RecordingClient(population.server.settings(retries=0), bulk=False)
    fast = build(make_service(client=bulk), "bulk", name="bulk", **spec)
    slow_service = make_service(client=fallback, workers=1)
    slow = build(slow_service, "per-series", name="per-series", **spec)
    assert manifest_bytes(slow_service, "bulk") == manifest_bytes(slow_service, "per-series")
    assert fast["counts"] == slow["counts"] and fast["skipped"] == slow["skipped"]
    assert fast["sha256"] == slow["sha256"]

    routes = bulk.routes()
    assert set(routes) <= {"/changes", "/studies", "/tools/bulk-content"}, routes  # nothing per study or series
    # per page of 3 studies (~50 instances): its series, its instances, and its series' SOP classes
    assert routes["/tools/bulk-content"] <= 3 * routes["/studies"]
    assert fallback.routes()["/tools/bulk-content"] == 1  # tried once, then the per-series requests
    assert fallback.routes()["/series/{id}/instances"] > 0


def test_bulk_listing_counts_a_study_deleted_after_its_page_was_read(population: Population,
                                                                      make_service: Any) -> None:
    """A study that disappears between the page of studies and its series is counted as deleted, not failed."""
    gone: list[str] = []

    class ForgetsOneStudy(RecordingClient):
        def request(self, method: str, path: str, **kwargs: Any) -> Any:
            body = kwargs.get("json")
            if path == "/tools/bulk-content" and body and body["Level"] == "Series" and not gone:
                gone.append(body["Resources"][0])
                kwargs["json"] = {**body, "Resources": body["Resources"][1:]}
            return super().request(method, path, **kwargs)

    reference = build(make_service(), "ref", name="reference")
    summary = build(make_service(client=ForgetsOneStudy(population.server.settings(retries=0))), "gone",
                    name="one-gone")
    assert gone and summary["counts"]["studies_deleted"] == 1
    assert summary["instances"] < reference["instances"]
