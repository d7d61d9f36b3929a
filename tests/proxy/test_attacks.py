"""A table of attacks, each refused — sent as raw bytes so no client library normalizes them first."""

from __future__ import annotations

import base64
import json
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
import requests
from proxy_helpers import PATIENT_NAME, SERVICE_TOKEN, Proxy, Studies, raw_request

from dicomlab_cli.processes import OrthancServer
from dicomlab_core.orthanc import OrthancClient
from dicomlab_core.tokens import KeyRing, Scope, TokenSigner


@dataclass(frozen=True)
class Ctx:
    proxy: Proxy
    s: Studies
    orthanc: OrthancServer

    @property
    def token(self) -> str:
        return self.proxy.study_token(self.s.a)

    def auth(self, token: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {token if token is not None else self.token}"}


def _tampered_payload(c: Ctx) -> str:
    good = c.token.split(".")
    other = c.proxy.token(Scope(studies=(c.s.b.study,))).split(".")
    return ".".join([good[0], good[1], other[2], good[3]])


def _flip_signature(c: Ctx) -> str:
    token = c.token
    return token[:-1] + ("A" if token[-1] != "A" else "B")


def _forged_with_own_key(c: Ctx) -> str:
    forged = TokenSigner(KeyRing.parse([KeyRing.generate_entry("t1")]))  # same kid, attacker's key
    return forged.issue(Scope(studies=(c.s.b.study,)), subject="x", ttl_seconds=60)


@dataclass(frozen=True)
class Attack:
    name: str
    method: str
    target: Callable[[Ctx], str]
    expected: tuple[int, ...]
    headers: Callable[[Ctx], dict[str, str]] = field(default=lambda c: c.auth())
    body: bytes = b""


def _a(name: str, method: str, target: Callable[[Ctx], str], *expected: int,
       headers: Callable[[Ctx], dict[str, str]] | None = None, body: bytes = b"") -> Attack:
    return Attack(name, method, target, expected, headers or (lambda c: c.auth()), body)


A_META: Callable[[Ctx], str] = lambda c: f"/dicom-web/studies/{c.s.a.study}/metadata"  # noqa: E731
ATTACKS = [
    # traversal and encoding tricks
    _a("dot-dot", "GET", lambda c: f"/dicom-web/studies/{c.s.a.study}/../../../system", 400),
    _a("encoded-dots", "GET", lambda c: f"/dicom-web/studies/{c.s.a.study}/%2e%2e/%2e%2e/system", 400),
    _a("encoded-dots-upper", "GET", lambda c: "/dicom-web/studies/%2E%2E%2Fsystem", 400),
    _a("encoded-slash", "GET", lambda c: f"/dicom-web/studies/{c.s.a.study}%2f..%2f..%2fsystem", 400),
    _a("double-encoding", "GET", lambda c: "/dicom-web/%252e%252e/%252e%252e/system", 400),
    _a("overlong-utf8", "GET", lambda c: "/dicom-web/%c0%ae%c0%ae/system", 400),
    _a("backslash", "GET", lambda c: "/dicom-web\\..\\..\\system", 400),
    _a("encoded-backslash", "GET", lambda c: "/dicom-web/%5c..%5csystem", 400),
    _a("encoded-nul", "GET", lambda c: f"/instances/{c.s.a.orthanc_id}/file%00.png", 400),
    _a("leading-double-slash", "GET", lambda c: "//system", 400, 404),
    _a("inner-double-slash", "GET", lambda c: f"/dicom-web//studies/{c.s.a.study}/metadata", 400),
    _a("dot-segment", "GET", lambda c: f"/dicom-web/studies/./{c.s.a.study}/metadata", 400),
    _a("semicolon-segment", "GET", lambda c: f"/dicom-web/studies/{c.s.a.study}/..;/..;/system", 400, 404),
    _a("nul-in-query", "GET", lambda c: f"/dicom-web/studies?StudyInstanceUID={c.s.a.study}%00", 400),
    # Orthanc's REST API, tools and writes do not exist here
    _a("rest-system", "GET", lambda c: "/system", 404),
    _a("rest-patients", "GET", lambda c: "/patients", 404),
    _a("rest-instance-tags", "GET", lambda c: f"/instances/{c.s.a.orthanc_id}/tags", 404),
    _a("rest-instance", "GET", lambda c: f"/instances/{c.s.a.orthanc_id}", 404),
    _a("rest-archive", "GET", lambda c: f"/studies/{c.s.a.orthanc_id}/archive", 404),
    _a("tools-execute-script", "POST", lambda c: "/tools/execute-script", 404, 405, body=b'os.execute("id")'),
    _a("tools-find", "POST", lambda c: "/tools/find", 404, 405, body=b'{"Level":"Patient","Query":{}}'),
    _a("tools-reset", "POST", lambda c: "/tools/reset", 404, 405),
    _a("rest-upload", "POST", lambda c: "/instances", 404, 405, body=b"DICM"),
    _a("rest-delete", "DELETE", lambda c: f"/instances/{c.s.a.orthanc_id}", 404, 405),
    _a("delete-file", "DELETE", lambda c: f"/instances/{c.s.a.orthanc_id}/file", 405),
    _a("put-file", "PUT", lambda c: f"/instances/{c.s.a.orthanc_id}/file", 405, body=b"x"),
    _a("stow-disabled", "POST", lambda c: "/dicom-web/studies", 405, body=b"--x--",
       headers=lambda c: {"Authorization": f"Bearer {SERVICE_TOKEN}", "Content-Type": "multipart/related"}),
    _a("dicomweb-servers", "GET", lambda c: "/dicom-web/servers", 404),
    _a("modalities", "POST", lambda c: "/modalities/x/store", 404, 405),
    # method overrides
    _a("override-header", "GET", A_META, 400, headers=lambda c: {**c.auth(), "X-HTTP-Method-Override": "DELETE"}),
    _a("override-x-method", "GET", A_META, 400, headers=lambda c: {**c.auth(), "X-HTTP-Method": "DELETE"}),
    _a("override-param", "GET", lambda c: A_META(c) + "?_method=DELETE", 400),
    # sizes
    _a("oversized-header", "GET", A_META, 400, 431, headers=lambda c: {**c.auth(), "X-Big": "a" * 20000}),
    _a("many-headers", "GET", A_META, 400, 431,
       headers=lambda c: {**c.auth(), **{f"X-H{i}": "v" * 200 for i in range(120)}}),
    _a("oversized-query", "GET", lambda c: A_META(c) + "?includefield=" + "a" * 9000, 400, 414),
    _a("body-on-get", "GET", A_META, 413, headers=lambda c: {**c.auth(), "Content-Length": "5"}, body=b"hello"),
    # tokens
    _a("no-token", "GET", A_META, 401, headers=lambda c: {}),
    _a("empty-bearer", "GET", A_META, 401, headers=lambda c: {"Authorization": "Bearer "}),
    _a("orthanc-basic-credentials", "GET", A_META, 401, headers=lambda c: {
        "Authorization": "Basic " + base64.b64encode(
            f"{c.orthanc.username}:{c.orthanc.password.reveal()}".encode()).decode()}),
    _a("tampered-signature", "GET", A_META, 401, headers=lambda c: c.auth(_flip_signature(c))),
    _a("tampered-payload", "GET", lambda c: f"/dicom-web/studies/{c.s.b.study}/metadata", 401,
       headers=lambda c: c.auth(_tampered_payload(c))),
    _a("forged-same-kid", "GET", lambda c: f"/dicom-web/studies/{c.s.b.study}/metadata", 401,
       headers=lambda c: c.auth(_forged_with_own_key(c))),
    _a("non-ascii-token", "GET", A_META, 401, headers=lambda c: c.auth(c.token[:-1] + "\u00e9")),
    _a("non-ascii-query-token", "GET", lambda c: A_META(c) + "?token=v1.t1.%C3%A9.x", 401, headers=lambda c: {}),
    _a("alg-none-style", "GET", A_META, 401, headers=lambda c: c.auth(".".join(c.token.split(".")[:3]) + ".")),
    _a("expired", "GET", A_META, 401, headers=lambda c: c.auth(TokenSigner(
        KeyRing.parse(c.proxy.config.token_keys), clock=lambda: 1_000_000.0).issue(
        Scope(studies=(c.s.a.study,)), subject="r", ttl_seconds=60))),
    _a("wrong-audience", "GET", A_META, 401,
       headers=lambda c: c.auth(c.proxy.token(Scope(studies=(c.s.a.study,)), audience="dicomlab-labeling"))),
    _a("near-service-token", "GET", A_META, 401, headers=lambda c: c.auth(SERVICE_TOKEN[:-1] + "X")),
    _a("expired-in-query", "GET", lambda c: A_META(c) + "?token=" + TokenSigner(
        KeyRing.parse(c.proxy.config.token_keys), clock=lambda: 1_000_000.0).issue(
        Scope(studies=(c.s.a.study,)), subject="r", ttl_seconds=60), 401, headers=lambda c: {}),
    # scope escapes: a token for study A used for study B
    _a("scope-study-b", "GET", lambda c: f"/dicom-web/studies/{c.s.b.study}/metadata", 403),
    _a("scope-study-b-query-token", "GET", lambda c: f"/dicom-web/studies/{c.s.b.study}?token={c.token}", 403,
       headers=lambda c: {}),
    _a("scope-file-b", "GET", lambda c: f"/instances/{c.s.b.orthanc_id}/file", 403),
    _a("scope-qido-b", "GET", lambda c: f"/dicom-web/studies?StudyInstanceUID={c.s.b.study}", 403),
    _a("scope-qido-no-study", "GET", lambda c: "/dicom-web/studies", 403,  # two grants: the proxy cannot choose
       headers=lambda c: c.auth(c.proxy.token(Scope(studies=(c.s.a.study, c.s.big.study))))),
    _a("scope-qido-wildcard", "GET", lambda c: "/dicom-web/studies?StudyInstanceUID=*", 400),
    _a("scope-qido-list", "GET", lambda c: f"/dicom-web/studies?StudyInstanceUID={c.s.a.study},{c.s.b.study}", 400),
    _a("scope-qido-tag-alias", "GET",
       lambda c: f"/dicom-web/studies?StudyInstanceUID={c.s.a.study}&0020000D={c.s.b.study}", 400),
    _a("scope-qido-lowercase", "GET", lambda c: f"/dicom-web/instances?studyinstanceuid={c.s.b.study}", 403),
    _a("scope-path-vs-query", "GET",
       lambda c: f"/dicom-web/studies/{c.s.a.study}/series?StudyInstanceUID={c.s.b.study}", 400),
    _a("scope-mixed-hierarchy", "GET",
       lambda c: f"/dicom-web/studies/{c.s.a.study}/series/{c.s.b.series}/instances/{c.s.b.sop}", 404),
    _a("scope-wado-uri-b", "GET",
       lambda c: f"/wado?requestType=WADO&studyUID={c.s.b.study}&seriesUID={c.s.b.series}&objectUID={c.s.b.sop}", 403),
    _a("scope-wado-uri-duplicate", "GET", lambda c: f"/wado?requestType=WADO&studyUID={c.s.a.study}&studyUID="
       f"{c.s.b.study}&seriesUID={c.s.b.series}&objectUID={c.s.b.sop}", 400),
    _a("scope-instance-token-other-instance", "GET",
       lambda c: f"/dicom-web/studies/{c.s.big.study}/series/{c.s.big.series}/instances/{c.s.big.sop}", 403,
       headers=lambda c: c.auth(c.proxy.token(Scope(instances=(c.s.a.sop,))))),
    _a("scope-study-token-orthanc-id", "GET", lambda c: f"/instances/{c.s.a.orthanc_id}/file", 403,
       headers=lambda c: c.auth(c.proxy.token(Scope(studies=(c.s.a.study,))))),
]


@pytest.fixture(scope="module")
def ctx(proxy: Proxy, studies: Studies, orthanc: OrthancServer) -> Ctx:
    return Ctx(proxy, studies, orthanc)


@pytest.mark.parametrize("attack", ATTACKS, ids=[a.name for a in ATTACKS])
def test_attack_is_refused(attack: Attack, ctx: Ctx, orthanc_client: OrthancClient) -> None:
    headers = attack.headers(ctx)
    if attack.body and "Content-Length" not in headers:
        headers["Content-Length"] = str(len(attack.body))
    status, got, body = raw_request(ctx.proxy.url, f"{attack.method} {attack.target(ctx)} HTTP/1.1", headers,
                                    attack.body)
    assert status in attack.expected, (status, body[:200])
    assert b"DICM" not in body and PATIENT_NAME.split("^")[0].encode() not in body
    assert ctx.orthanc.password.reveal().encode() not in body
    if status in (401, 403):
        assert json.loads(body)["description"] == "access denied"  # the same for every refusal
        assert got["cache-control"] == "private, no-store" and got["x-content-type-options"] == "nosniff"


def test_writes_did_not_reach_orthanc(ctx: Ctx, orthanc_client: OrthancClient) -> None:
    before = orthanc_client.statistics()["CountInstances"]
    for attack in ATTACKS:
        if attack.method != "GET":
            raw_request(ctx.proxy.url, f"{attack.method} {attack.target(ctx)} HTTP/1.1",
                        {**attack.headers(ctx), "Content-Length": str(len(attack.body))}, attack.body)
    assert orthanc_client.statistics()["CountInstances"] == before
    assert orthanc_client.instance_tags(ctx.s.a.orthanc_id)["SOPInstanceUID"] == ctx.s.a.sop


class Canary:
    """A listening socket that must never be contacted: records any connection."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.sock.settimeout(0.2)
        self.hits = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    @property
    def netloc(self) -> str:
        return f"127.0.0.1:{self.sock.getsockname()[1]}"

    def _run(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.hits += 1
            conn.close()

    def close(self) -> None:
        self.stop.set()
        self.thread.join()
        self.sock.close()


def test_absolute_url_and_host_injection_never_leave_the_fixed_upstream(ctx: Ctx) -> None:
    canary = Canary()
    try:
        a = ctx.s.a
        target = f"http://{canary.netloc}/dicom-web/studies?StudyInstanceUID={a.study}"
        for line, host, extra in [
            (f"GET {target} HTTP/1.1", None, {}),
            (f"GET /dicom-web/studies?StudyInstanceUID={a.study} HTTP/1.1", canary.netloc, {}),
            (f"GET /dicom-web/studies?StudyInstanceUID={a.study} HTTP/1.1", None,
             {"X-Forwarded-Host": canary.netloc, "Forwarded": f"host={canary.netloc};proto=http",
              "X-Original-URL": "/system", "X-Rewrite-URL": "/system"}),
        ]:
            status, _, body = raw_request(ctx.proxy.url, line, {**ctx.auth(), **extra}, host=host)
            assert status == 200, body[:200]
            studies = json.loads(body)
            assert studies[0]["0020000D"]["Value"] == [a.study]
            # URLs written into the answer come from the configured public URL, not the request.
            assert studies[0]["00081190"]["Value"][0].startswith(ctx.proxy.config.public_url + "/dicom-web/")
            assert canary.netloc.encode() not in body
        assert canary.hits == 0
    finally:
        canary.close()


def test_host_header_is_validated_when_no_public_url(start_proxy: object, studies: Studies) -> None:
    with start_proxy(public_url="") as p:  # type: ignore[operator]
        path = f"/dicom-web/studies?StudyInstanceUID={studies.a.study}"
        status, _, _ = raw_request(p.url, f"GET {path} HTTP/1.1", p.headers(p.study_token(studies.a)),
                                      host='evil.example";proto=gopher')
        assert status == 400
        ok = requests.get(p.url + path, headers=p.headers(p.study_token(studies.a)))
        assert ok.json()[0]["00081190"]["Value"][0].startswith(p.url + "/dicom-web/")
