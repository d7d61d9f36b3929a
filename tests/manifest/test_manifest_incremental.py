"""Incremental builds from the changes feed, on a throw-away Orthanc that receives new instances."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from manifest_support import build, manifest_lines, sops, tiny_dataset, upload
from pydicom.uid import generate_uid
from support.servers import private_orthanc

from dicomlab_cli.processes import OrthancServer
from dicomlab_manifest.builder import EmptySelection


@pytest.fixture(scope="module")
def fresh_orthanc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OrthancServer]:
    with private_orthanc(tmp_path_factory.mktemp("incremental-orthanc")) as server:
        yield server


def study(patient: str, modality_counts: dict[str, int], *, series_uid: str | None = None,
          study_uid: str | None = None, start: int = 1) -> list[tuple[str, Any]]:
    study_uid = study_uid or generate_uid()
    out = []
    for modality, count in modality_counts.items():
        uid = series_uid or generate_uid()
        for n in range(start, start + count):
            kind = "pr" if modality == "PR" else "image"
            extra = {"sop_class": "1.2.840.10008.5.1.4.1.1.11.1", "pixels": False} if modality == "PR" else {}
            out.append((kind, tiny_dataset(patient_id=patient, study_uid=study_uid, series_uid=uid,
                                           modality=modality, number=n, study_date="20240505",
                                           study_description="CHEST", series_description="PA", body_part="CHEST",
                                           **extra)))
    return out


def test_incremental_build_emits_only_new_instances(fresh_orthanc: OrthancServer, make_service: Any,
                                                    tmp_path: Path) -> None:
    client = fresh_orthanc.client()
    first = upload(client, study("INC1", {"DX": 5}) + study("INC2", {"CR": 5, "PR": 1}))
    service = make_service(server=fresh_orthanc)
    v1 = build(service, "v1", name="v1")
    assert v1["instances"] == 10 and v1["mode"] == "full"
    cursor = v1["source"]["changes"]["cursor"]
    assert cursor > 0

    # new: a study with DX + CT + PR, and three more images in an existing DX series
    existing = first[0]
    more = study("INC1", {"DX": 3}, series_uid=existing.series_uid, study_uid=existing.study_uid, start=6)
    second = upload(client, study("INC3", {"DX": 4, "CT": 2, "PR": 1}) + more)
    client.close()
    v2 = build(service, "v2", name="v2", since_manifest="v1")
    new_dx = [i.sop_uid for i in second if i.modality == "DX"]
    assert sorted(sops(manifest_lines(service, "v2"))) == sorted(new_dx)
    assert v2["mode"] == "incremental" and v2["source"]["changes"]["from"] == cursor
    assert v2["source"]["changes"]["cursor"] > cursor
    assert v2["skipped"] == {"presentation-state": 1} and v2["counts"]["instances_filtered"] == 2  # the CT

    with pytest.raises(EmptySelection):
        build(service, "v3", name="v3", since_manifest="v2")
    v3 = build(service, "v3b", name="v3", since_manifest="v2", allow_empty=True)
    assert v3["instances"] == 0

    # a full rebuild sees everything, in listing order, and the union of v1 + v2 equals it
    build(service, "all", name="all")
    assert sorted(sops(manifest_lines(service, "all"))) == sorted(sops(manifest_lines(service, "v1"))
                                                                  + sops(manifest_lines(service, "v2")))


def test_incremental_build_resumes_after_a_failure(fresh_orthanc: OrthancServer, make_service: Any) -> None:
    from test_manifest_faults import FailingClient

    from dicomlab_core.errors import UpstreamError

    service = make_service(server=fresh_orthanc)
    base = build(service, "base", name="base", allow_empty=True)
    client = fresh_orthanc.client()
    added = upload(client, [x for n in range(6) for x in study(f"RES{n}", {"DX": 4})])
    client.close()
    flaky = FailingClient(fresh_orthanc.settings(retries=0), marker="/changes", nth=3)
    crashing = make_service(server=fresh_orthanc, client=flaky, changes_page_size=10)
    with pytest.raises(UpstreamError):
        build(crashing, "inc", name="inc", since_manifest="base")
    resumed = make_service(server=fresh_orthanc, changes_page_size=10)
    summary = build(resumed, "inc", name="inc", since_manifest="base")
    got = sops(manifest_lines(resumed, "inc"))
    assert sorted(got) == sorted(i.sop_uid for i in added)  # no gaps, no repeats
    build(resumed, "ref", name="inc-ref", since_manifest="base")
    assert got == sops(manifest_lines(resumed, "inc-ref"))  # the same order as an uninterrupted run
    assert summary["source"]["changes"]["from"] == base["source"]["changes"]["cursor"]


def test_many_new_instances_in_an_existing_series_are_read_from_the_index_tail(
        fresh_orthanc: OrthancServer, make_service: Any) -> None:
    """More than a handful of new instances without a NewSeries change: one tail read, not one request each."""
    import re

    from dicomlab_core.errors import UpstreamError
    from dicomlab_core.orthanc import OrthancClient

    class NoPerInstanceLookups(OrthancClient):
        def request(self, method: str, path: str, **kwargs: Any) -> Any:
            if re.fullmatch(r"/instances/[0-9a-f-]+", path):
                raise UpstreamError(f"unexpected per-instance lookup {path}")
            return super().request(method, path, **kwargs)

    client = fresh_orthanc.client()
    head = upload(client, study("TAIL", {"DX": 2}))
    service = make_service(server=fresh_orthanc)
    build(service, "t0", name="tail-base", allow_empty=True)
    more = study("TAIL", {"DX": 30}, series_uid=head[0].series_uid, study_uid=head[0].study_uid, start=3)
    added = upload(client, more)
    client.close()
    # every per-instance lookup (GET /instances/{id}) fails: the build must not need any
    tail = make_service(server=fresh_orthanc, client=NoPerInstanceLookups(fresh_orthanc.settings(retries=0)))
    summary = build(tail, "t1", name="tail-new", since_manifest="tail-base")
    assert sorted(sops(manifest_lines(tail, "tail-new"))) == sorted(i.sop_uid for i in added)
    assert summary["instances"] == 30


def test_incremental_build_without_bulk_content_gives_the_same_bytes(fresh_orthanc: OrthancServer,
                                                                     make_service: Any) -> None:
    """New studies and many new instances in an existing series: bulk content and the fallback agree."""
    from manifest_support import manifest_bytes
    from test_manifest_listing import RecordingClient

    client = fresh_orthanc.client()
    head = upload(client, study("SAME", {"DX": 2}))
    service = make_service(server=fresh_orthanc)
    build(service, "s0", name="same-base", allow_empty=True)
    more = study("SAME", {"DX": 25}, series_uid=head[0].series_uid, study_uid=head[0].study_uid, start=3)
    added = upload(client, study("SAME2", {"DX": 3, "CR": 2, "PR": 1}) + more)
    client.close()
    bulk = RecordingClient(fresh_orthanc.settings(retries=0))
    fallback = RecordingClient(fresh_orthanc.settings(retries=0), bulk=False)
    fast = build(make_service(server=fresh_orthanc, client=bulk), "s1", name="same-bulk", since_manifest="same-base")
    slow = build(make_service(server=fresh_orthanc, client=fallback, changes_page_size=1000), "s2",
                 name="same-fallback", since_manifest="same-base")
    assert manifest_bytes(service, "same-bulk") == manifest_bytes(service, "same-fallback")
    assert fast["counts"] == slow["counts"] and fast["skipped"] == slow["skipped"]
    assert sorted(sops(manifest_lines(service, "same-bulk"))) == sorted(
        i.sop_uid for i in added if i.modality in ("DX", "CR"))
    assert "/instances/{id}" not in bulk.routes()  # new instances of old series: read by ID in bulk
    assert fallback.routes()["/instances"] == 1  # the fallback reads them from the tail of the index
