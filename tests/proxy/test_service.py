"""Service callers and STOW-RS, the per-token rate limit, token-rejection and request metrics, the local-stack wiring."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pydicom
import requests
from dicomweb_client.api import DICOMwebClient
from prometheus_client import REGISTRY
from proxy_helpers import ALLOWED_ORIGIN, SERVICE_TOKEN, Studies, make_dicom

from dicomlab_cli.wiring import LocalContext, stack_env
from dicomlab_core.config import load_config
from dicomlab_core.metrics import render_latest
from dicomlab_core.multipart import encode_related
from dicomlab_core.orthanc import OrthancClient
from dicomlab_core.tokens import KeyRing, Scope
from dicomlab_proxy.config import PREFIX, Config


def test_stow_only_for_service_callers(start_proxy: Callable[..., Any], orthanc_client: OrthancClient) -> None:
    data = make_dicom("MR_small.dcm")
    ds = pydicom.dcmread(io.BytesIO(data))
    with start_proxy(stow_enabled=True) as p:
        body, content_type = encode_related([data])
        url = f"{p.url}/dicom-web/studies"
        reader = p.token(Scope(studies=(ds.StudyInstanceUID,)))
        refused = requests.post(url, data=body, headers={"Content-Type": content_type, **p.headers(reader)})
        assert refused.status_code == 403
        assert requests.post(url, data=body, headers={"Content-Type": "application/dicom",
                                                      **p.headers(SERVICE_TOKEN)}).status_code == 415
        chunked = requests.post(url, data=iter([body]), headers={"Content-Type": content_type,
                                                                 **p.headers(SERVICE_TOKEN)})
        assert chunked.status_code == 411
        assert orthanc_client.lookup_instance(ds.SOPInstanceUID) is None
        client = DICOMwebClient(url=f"{p.url}/dicom-web", headers=p.headers(SERVICE_TOKEN))
        client.store_instances([ds])
        assert orthanc_client.lookup_instance(ds.SOPInstanceUID) is not None
        # A service caller reads everything (the training job), without a study in its QIDO query.
        assert any(s["0020000D"]["Value"][0] == ds.StudyInstanceUID for s in client.search_for_studies())
        assert requests.options(url, headers={"Origin": ALLOWED_ORIGIN, "Access-Control-Request-Method": "POST"}
                                ).headers["Access-Control-Allow-Methods"] == "GET, HEAD, OPTIONS, POST"


def test_rate_limit_per_token(start_proxy: Callable[..., Any], studies: Studies) -> None:
    a = studies.a
    with start_proxy(rate_limit_per_second=0.5, rate_limit_burst=3) as p:
        url = f"{p.url}/dicom-web/studies/{a.study}/series"
        first, second = p.study_token(a), p.study_token(a)
        statuses = [requests.get(url, headers=p.headers(first)).status_code for _ in range(5)]
        assert statuses == [200, 200, 200, 429, 429]
        limited = requests.get(url, headers=p.headers(first, Origin=ALLOWED_ORIGIN))
        assert int(limited.headers["Retry-After"]) >= 1
        assert limited.headers["Access-Control-Allow-Origin"] == ALLOWED_ORIGIN
        assert requests.get(url, headers=p.headers(second)).status_code == 200  # another token, its own bucket


def _rejections(reason: str) -> float:
    return REGISTRY.get_sample_value("dicomlab_proxy_token_rejections_total", {"reason": reason}) or 0.0


def test_token_rejections_are_counted_by_reason(start_proxy: Callable[..., Any], studies: Studies) -> None:
    a, b = studies.a, studies.b
    with start_proxy() as p:
        url = f"{p.url}/dicom-web/studies/{a.study}/metadata"
        token = p.study_token(a)
        cases = [("missing", {}), ("bad_signature", p.headers(token[:-2] + ("AA" if token[-2:] != "AA" else "BB"))),
                 ("wrong_audience", p.headers(p.token(Scope(studies=(a.study,)), audience="other"))),
                 ("unknown_key", p.headers(KeyRing.generate_entry("zz") and "v1.zz." + token.split(".", 2)[2]))]
        for reason, headers in cases:
            before = _rejections(reason)
            assert requests.get(url, headers=headers).status_code == 401
            assert _rejections(reason) == before + 1, reason
        before = _rejections("out_of_scope")
        assert requests.get(f"{p.url}/dicom-web/studies/{b.study}/metadata", headers=p.headers(token)).status_code == 403
        assert _rejections("out_of_scope") == before + 1
        assert requests.get(f"{p.url}/metrics").status_code == 404  # only on the metrics port
        metrics = render_latest()[0].decode()  # this in-process proxy's registry
        assert "dicomlab_proxy_response_bytes_total" in metrics and "dicomlab_http_request_duration_seconds" in metrics


def test_made_up_methods_do_not_make_new_metric_series(start_proxy: Callable[..., Any]) -> None:
    """gunicorn accepts any upper-case token as a method; the request metrics must stay bounded."""
    labels = {"dicomlab_service": "proxy", "method": "OTHER", "route": "unmatched", "status": "405"}
    before = REGISTRY.get_sample_value("dicomlab_http_requests_total", labels) or 0
    with start_proxy() as p:
        for i in range(5):
            assert requests.request(f"BREW{'X' * i}", f"{p.url}/dicom-web/studies").status_code == 405
    assert REGISTRY.get_sample_value("dicomlab_http_requests_total", labels) == before + 5
    series = [sample.labels["method"] for metric in REGISTRY.collect() if metric.name == "dicomlab_http_requests"
              for sample in metric.samples]
    assert series and not any(method.startswith("BREW") for method in series)


def test_local_stack_environment_makes_a_valid_config(tmp_path: Path) -> None:
    creds = {"token_key": KeyRing.generate_entry("k1"), "service_token": "s" * 32}
    ctx = LocalContext(run_dir=tmp_path, orthanc_url="http://127.0.0.1:8042", orthanc_username="dicomlab",
                       orthanc_password="pw", ports={"proxy": 8081, "labeling": 8083}, credentials=creds,
                       store_url=f"file://{tmp_path}")
    config = load_config(Config, PREFIX, stack_env(ctx, "proxy"))
    assert "http://127.0.0.1:8083" in config.allowed_origins
    assert config.public_url == "http://127.0.0.1:8081"
    assert config.orthanc.password.reveal() == "pw" and config.token_keys[0].reveal() == creds["token_key"]


def test_config_refuses_wildcards_and_missing_keys() -> None:
    import pytest

    from dicomlab_core.errors import ConfigError

    with pytest.raises(ConfigError, match="DICOMLAB_PROXY__TOKEN_KEYS is required"):
        load_config(Config, PREFIX, {})
    key = KeyRing.generate_entry()
    for name, value in [("ALLOWED_ORIGINS", "*"), ("ALLOWED_ORIGINS", "https://a.example/path"),
                        ("PUBLIC_URL", "javascript:alert(1)"), ("SERVICE_TOKENS", "short"),
                        ("TOKEN_KEYS", "k1:dG9vLXNob3J0"), ("SEND_TIMEOUT", "0"), ("CHUNK_BYTES", "1024")]:
        env = {f"{PREFIX}__TOKEN_KEYS": key, f"{PREFIX}__{name}": value}
        with pytest.raises(ConfigError):
            load_config(Config, PREFIX, env)
