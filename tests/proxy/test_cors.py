"""CORS for the allow-list only, preflights, headers on errors, and what travels upstream."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import requests
from proxy_helpers import ALLOWED_ORIGIN, OTHER_ORIGIN, Proxy, Recorder, Studies, recording_upstream

from dicomlab_core.orthanc import OrthancSettings


def preflight(proxy: Proxy, origin: str, method: str = "GET", headers: str = "authorization") -> requests.Response:
    return requests.options(f"{proxy.url}/dicom-web/studies/1.2.3/metadata",
                            headers={"Origin": origin, "Access-Control-Request-Method": method,
                                     "Access-Control-Request-Headers": headers})


def test_preflight_for_an_allowed_origin(proxy: Proxy) -> None:
    response = preflight(proxy, ALLOWED_ORIGIN)
    assert response.status_code == 204
    assert response.headers["Access-Control-Allow-Origin"] == ALLOWED_ORIGIN
    assert "Authorization" in response.headers["Access-Control-Allow-Headers"]
    assert set(response.headers["Access-Control-Allow-Methods"].split(", ")) == {"GET", "HEAD", "OPTIONS"}
    assert response.headers["Access-Control-Max-Age"] == "600"
    assert "Origin" in response.headers["Vary"]
    assert "*" not in response.headers["Access-Control-Allow-Origin"]


@pytest.mark.parametrize("origin", [OTHER_ORIGIN, "null", ALLOWED_ORIGIN + ".evil.example", ALLOWED_ORIGIN + "/",
                                    ALLOWED_ORIGIN.replace("http:", "https:"), "*"])
def test_preflight_for_other_origins_gets_no_cors(proxy: Proxy, origin: str) -> None:
    response = preflight(proxy, origin)
    assert response.status_code == 403
    assert not [h for h in response.headers if h.lower().startswith("access-control-")]
    assert "Origin" in response.headers["Vary"]


def test_preflight_for_a_write_method_is_refused(proxy: Proxy) -> None:
    response = preflight(proxy, ALLOWED_ORIGIN, method="DELETE")
    assert response.status_code == 403 and "Access-Control-Allow-Origin" not in response.headers


def test_cors_and_security_headers_on_success_and_errors(proxy: Proxy, studies: Studies) -> None:
    a = studies.a
    token = proxy.study_token(a)
    url = f"{proxy.url}/instances/{a.orthanc_id}/file"
    ok = requests.get(url, headers=proxy.headers(token, Origin=ALLOWED_ORIGIN))
    assert ok.status_code == 200 and ok.content == a.data
    assert ok.headers["Access-Control-Allow-Origin"] == ALLOWED_ORIGIN
    assert "Content-Length" in ok.headers["Access-Control-Expose-Headers"]
    assert ok.headers["Cross-Origin-Resource-Policy"] == "cross-origin"
    assert ok.headers["Cache-Control"] == "private, no-store"
    assert ok.headers["X-Content-Type-Options"] == "nosniff"
    assert ok.headers["Referrer-Policy"] == "no-referrer"
    for status, headers in [(401, {"Origin": ALLOWED_ORIGIN}),
                            (403, proxy.headers(proxy.study_token(studies.b), Origin=ALLOWED_ORIGIN))]:
        error = requests.get(url, headers=headers)
        assert error.status_code == status
        assert error.headers["Access-Control-Allow-Origin"] == ALLOWED_ORIGIN  # the browser can read why
        assert "Cross-Origin-Resource-Policy" not in error.headers
    other = requests.get(url, headers=proxy.headers(token, Origin=OTHER_ORIGIN))
    assert other.status_code == 200 and "Access-Control-Allow-Origin" not in other.headers


def test_token_in_query_works_and_is_not_forwarded(start_proxy: Callable[..., Any], key_entry: str) -> None:
    recorder = Recorder(body=b"DICM-bytes" * 1000)
    oid = "0a1b2c3d-0a1b2c3d-0a1b2c3d-0a1b2c3d-0a1b2c3d"
    with recording_upstream(recorder) as upstream_url:
        settings = OrthancSettings(url=upstream_url, username="svc", password=__import__(
            "dicomlab_core.config", fromlist=["Secret"]).Secret("upstream-pw"))
        from dicomlab_core.tokens import Scope

        with start_proxy(orthanc=settings, public_url="https://pacs.example.org/p") as p:
            token = p.token(Scope(orthanc_ids=(oid,)))
            response = requests.get(f"{p.url}/instances/{oid}/file?token={token}&x=1",
                                    headers={"Origin": ALLOWED_ORIGIN, "Cookie": "session=abc",
                                             "X-Forwarded-Host": "evil.example"})
    assert response.status_code == 200 and response.content == recorder.body
    assert "Set-Cookie" not in response.headers and response.headers.get("Server", "") != "upstream-internal"
    sent = recorder.requests[-1]
    assert sent["target"] == f"/instances/{oid}/file?x=1"
    assert token not in str(sent)
    headers = {k.lower(): v for k, v in sent["headers"].items()}
    assert headers["authorization"].startswith("Basic ")
    assert headers["forwarded"] == "host=pacs.example.org/p;proto=https"
    assert headers["x-forwarded-host"] == "pacs.example.org/p" and headers["x-forwarded-proto"] == "https"
    assert "cookie" not in headers and "origin" not in headers
