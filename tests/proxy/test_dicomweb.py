"""The real ``dicomweb-client`` through the proxy gets exactly what Orthanc serves, and no internal address."""

from __future__ import annotations

import json
from urllib.parse import urlsplit

import pytest
import requests
from dicomweb_client.api import DICOMwebClient
from proxy_helpers import Proxy, Studies

from dicomlab_cli.processes import OrthancServer
from dicomlab_core.multipart import decode_related


def forwarded_for(proxy: Proxy) -> dict[str, str]:
    """The header the proxy sends upstream, so a direct request builds the same absolute URLs."""
    public = urlsplit(proxy.config.public_url)
    return {"Forwarded": f"host={public.netloc}{public.path};proto={public.scheme}"}


@pytest.fixture
def client(proxy: Proxy, studies: Studies) -> DICOMwebClient:
    return DICOMwebClient(url=f"{proxy.url}/dicom-web", headers=proxy.headers(proxy.study_token(studies.a)))


def test_qido_results_match_orthanc(client: DICOMwebClient, proxy: Proxy, studies: Studies,
                                    direct: requests.Session, orthanc: OrthancServer) -> None:
    a = studies.a
    found = client.search_for_studies(search_filters={"StudyInstanceUID": a.study})
    assert [s["0020000D"]["Value"][0] for s in found] == [a.study]
    assert client.search_for_series(a.study) and client.search_for_instances(a.study, a.series)
    hdr = forwarded_for(proxy)
    for path in (f"/dicom-web/studies?StudyInstanceUID={a.study}", f"/dicom-web/studies/{a.study}/series",
                 f"/dicom-web/studies/{a.study}/series/{a.series}/instances",
                 f"/dicom-web/instances?StudyInstanceUID={a.study}"):
        via = requests.get(proxy.url + path, headers=proxy.headers(proxy.study_token(a)))
        raw = direct.get(orthanc.url + path, headers=hdr)
        assert via.status_code == raw.status_code == 200
        assert via.content == raw.content, path
        assert via.headers["Content-Type"] == raw.headers["Content-Type"]


def test_wado_rs_instance_metadata_frames_match(client: DICOMwebClient, proxy: Proxy, studies: Studies,
                                                direct: requests.Session, orthanc: OrthancServer) -> None:
    a = studies.a
    ds = client.retrieve_instance(a.study, a.series, a.sop)
    assert ds.SOPInstanceUID == a.sop
    # Orthanc 1.10 refuses the client's default `type="*/*"` for frames (as it does directly): name one.
    frames = client.retrieve_instance_frames(a.study, a.series, a.sop, frame_numbers=[1],
                                             media_types=(("application/octet-stream", "*"),))
    metadata = client.retrieve_instance_metadata(a.study, a.series, a.sop)
    base = f"/dicom-web/studies/{a.study}/series/{a.series}/instances/{a.sop}"
    hdr = forwarded_for(proxy)
    raw_meta = direct.get(orthanc.url + base + "/metadata", headers=hdr).json()
    assert metadata == raw_meta[0]
    raw_frames = direct.get(orthanc.url + base + "/frames/1", headers=hdr)
    assert frames == decode_related(raw_frames.content, raw_frames.headers["Content-Type"])
    raw_file = direct.get(orthanc.url + base, headers=hdr)
    via_file = requests.get(proxy.url + base, headers=proxy.headers(proxy.study_token(a)))
    # Orthanc draws a new boundary per response: the parts, and the framing around them, are identical.
    assert decode_related(via_file.content, via_file.headers["Content-Type"]) == \
        decode_related(raw_file.content, raw_file.headers["Content-Type"]) == [a.data]
    assert len(via_file.content) == len(raw_file.content) == int(via_file.headers["Content-Length"])


def test_bulkdata_urls_point_back_through_the_proxy(proxy: Proxy, studies: Studies, orthanc: OrthancServer) -> None:
    a = studies.a
    token = proxy.study_token(a)
    meta = requests.get(f"{proxy.url}/dicom-web/studies/{a.study}/metadata", headers=proxy.headers(token))
    text = meta.text
    uris = [v["BulkDataURI"] for v in meta.json()[0].values() if isinstance(v, dict) and "BulkDataURI" in v]
    assert uris and all(u.startswith(f"{proxy.url}/dicom-web/studies/{a.study}/") for u in uris)
    bulk = requests.get(uris[0], headers=proxy.headers(token))
    assert bulk.status_code == 200 and bulk.headers["Content-Type"].startswith("multipart/related")
    assert urlsplit(orthanc.url).netloc not in text


def test_public_url_with_prefix(start_proxy: object, studies: Studies) -> None:
    a = studies.a
    with start_proxy(public_url="https://pacs.example.org/imaging") as p:  # type: ignore[operator]
        found = requests.get(f"{p.url}/dicom-web/studies?StudyInstanceUID={a.study}",
                             headers=p.headers(p.study_token(a))).json()
    assert found[0]["00081190"]["Value"] == [f"https://pacs.example.org/imaging/dicom-web/studies/{a.study}"]


def test_no_response_leaks_the_internal_address(proxy: Proxy, studies: Studies, orthanc: OrthancServer) -> None:
    a, internal = studies.a, urlsplit(orthanc.url).netloc.encode()
    token = proxy.study_token(a)
    base = f"/dicom-web/studies/{a.study}/series/{a.series}/instances/{a.sop}"
    paths = [f"/dicom-web/studies?StudyInstanceUID={a.study}", f"/dicom-web/studies/{a.study}/series",
             f"/dicom-web/studies/{a.study}/metadata", f"/dicom-web/studies/{a.study}", base, base + "/metadata",
             base + "/frames/1", base + "/rendered", base + "/thumbnail", f"/dicom-web/studies/{a.study}/rendered",
             f"/wado?requestType=WADO&studyUID={a.study}&seriesUID={a.series}&objectUID={a.sop}",
             f"/instances/{a.orthanc_id}/file", "/dicom-web/studies/1.2.3/metadata", "/readyz", "/healthz"]
    statuses = {}
    for path in paths:
        response = requests.get(proxy.url + path, headers=proxy.headers(token))
        statuses[path] = response.status_code
        blob = response.content + json.dumps(dict(response.headers)).encode()
        assert internal not in blob, path
        assert orthanc.password.reveal().encode() not in blob
        assert b"Basic " not in blob
    assert statuses[base + "/rendered"] == 200 and statuses["/dicom-web/studies/1.2.3/metadata"] == 403
