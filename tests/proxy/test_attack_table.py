"""Issue 14's outside attack, as a table: every row against the real proxy in front of the real Orthanc.

Two patients are uploaded: Alpha (study A: instances A1 and A2 in one series) and Bravo (study B,
instance B1). The attacker holds tokens for Alpha's data only (an instance token for A1, a series
token, a study token, a de-identified instance token). Every row is sent as raw bytes (no client
library normalizes it) and asserts the exact status *and* that the answer carries nothing of
Bravo (name, ID, birth date, UIDs, Orthanc ID), no Orthanc credential and no internal address;
rows with a de-identified token also assert that nothing identifying Alpha comes back.

Families: token forgery, scope escape (every route level x every place an identifier can hide:
path, query by name, by tag number, lower case, repeated, comma list, ``*`` and ``?`` wildcards),
searches the proxy constrains, WADO-URI, ``/instances/{id}/file``, Orthanc's REST API, write
methods and method overrides, path tricks, request smuggling, CORS, oversize requests and the
de-identified mode.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import pydicom
import pytest
from proxy_helpers import ALLOWED_ORIGIN, SERVICE_TOKEN, Proxy, StoredInstance, make_dicom, raw_request, upload
from support.servers import PROXY_APP, gunicorn, proxy_env

from dicomlab_cli.processes import GunicornService, OrthancServer, free_port
from dicomlab_core.config import Secret
from dicomlab_core.orthanc import OrthancClient
from dicomlab_core.tokens import KeyRing, Scope, TokenSigner
from dicomlab_proxy.config import Config

ALPHA = {"name": "Alphapatient^Anna", "id": "PID-ALPHA-4711", "birth": "19450817"}
BRAVO = {"name": "Bravopatient^Boris", "id": "PID-BRAVO-0815", "birth": "19600229"}


def patient_file(patient: dict[str, str], *, study: str | None = None, series: str | None = None) -> bytes:
    """A small CT instance of ``patient`` (fresh SOP UID; in ``study``/``series`` when given)."""
    ds = pydicom.dcmread(io.BytesIO(make_dicom("CT_small.dcm", patient=patient["name"])))
    ds.PatientID, ds.PatientBirthDate = patient["id"], patient["birth"]
    if study is not None and series is not None:
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


@dataclass(frozen=True)
class Patients:
    a1: StoredInstance
    a2: StoredInstance
    b1: StoredInstance


@pytest.fixture(scope="module")
def patients(orthanc_client: OrthancClient) -> Patients:
    a1 = upload(orthanc_client, patient_file(ALPHA))
    a2 = upload(orthanc_client, patient_file(ALPHA, study=a1.study, series=a1.series))
    b1 = upload(orthanc_client, patient_file(BRAVO))
    return Patients(a1, a2, b1)


@dataclass(frozen=True)
class Ctx:
    proxy: Proxy
    p: Patients
    orthanc: OrthancServer

    def token(self, scope: Scope, **kwargs: Any) -> str:
        return self.proxy.token(scope, **kwargs)

    @property
    def instance(self) -> str:
        return self.token(Scope(instances=(self.p.a1.sop,), orthanc_ids=(self.p.a1.orthanc_id,)))

    @property
    def series(self) -> str:
        return self.token(Scope(series=(self.p.a1.series,)))

    @property
    def study(self) -> str:
        return self.token(Scope(studies=(self.p.a1.study,)))

    @property
    def deid(self) -> str:
        return self.token(Scope(instances=(self.p.a1.sop,), orthanc_ids=(self.p.a1.orthanc_id,)), deidentified=True)

    def auth(self, token: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"}


Target = Callable[[Ctx], str]
Headers = Callable[[Ctx], dict[str, str]]
Check = Callable[[Ctx, dict[str, str], bytes], None]


@dataclass(frozen=True)
class Row:
    name: str
    method: str
    target: Target
    expected: tuple[int, ...]
    headers: Headers
    body: bytes = b""
    check: Check | None = None
    """Extra assertions on (headers, body) of the answer."""
    deid: bool = False
    """The row uses a de-identified token: nothing identifying Alpha may come back either."""
    raw_headers: str = ""
    """Header lines sent verbatim (duplicates, smuggling), after the generated ones."""


ROWS: list[Row] = []


def row(name: str, method: str, target: Target, *expected: int, headers: Headers | None = None, body: bytes = b"",
        check: Check | None = None, deid: bool = False, raw_headers: str = "") -> None:
    ROWS.append(Row(name, method, target, expected, headers or (lambda c: c.auth(c.instance)), body, check, deid,
                    raw_headers))


def web(path: str) -> str:
    return "/dicom-web" + path


def inst(s: StoredInstance) -> str:
    return f"/studies/{s.study}/series/{s.series}/instances/{s.sop}"


def signed(c: Ctx, payload: dict[str, Any], *, key: bytes | None = None, kid: str | None = None) -> str:
    """A token with exactly this payload, signed with the proxy's key (or ``key``)."""
    ring = KeyRing.parse(c.proxy.config.token_keys)
    kid = kid or ring.active
    body = base64.urlsafe_b64encode(json.dumps(payload).encode()).decode().rstrip("=")
    signing_input = f"v1.{kid}.{body}"
    mac = hmac.new(key or ring.keys[ring.active], signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{base64.urlsafe_b64encode(mac).decode().rstrip('=')}"


def claims(c: Ctx, **changes: Any) -> dict[str, Any]:
    """A valid payload for A1 (an instance grant), with ``changes``."""
    import time

    now = int(time.time())
    base = {"aud": "dicomlab-proxy", "iat": now, "exp": now + 300, "sub": "attacker", "jti": "j1",
            "scope": {"in": [c.p.a1.sop], "oi": [c.p.a1.orthanc_id]}}
    return {**base, **changes}


# ------------------------------------------------------------------------------------ token forgery

A1_META: Target = lambda c: web(inst(c.p.a1) + "/metadata")  # noqa: E731
B1_META: Target = lambda c: web(inst(c.p.b1) + "/metadata")  # noqa: E731


def forgery(name: str, token: Callable[[Ctx], str], target: Target = A1_META) -> None:
    row(f"forge-{name}", "GET", target, 401, headers=lambda c: c.auth(token(c)))


forgery("alg-none-jwt", lambda c: "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0." + base64.urlsafe_b64encode(
    json.dumps(claims(c, scope={"st": [c.p.b1.study]})).encode()).decode().rstrip("=") + ".", B1_META)
forgery("empty-signature", lambda c: c.instance.rsplit(".", 1)[0] + ".")
forgery("no-signature", lambda c: c.instance.rsplit(".", 1)[0])
forgery("wrong-key-same-kid", lambda c: signed(c, claims(c, scope={"st": [c.p.b1.study]}), key=b"k" * 32), B1_META)
forgery("unknown-kid", lambda c: signed(c, claims(c), kid="zz9"))
forgery("version-2", lambda c: "v2" + c.instance[2:])


def tampered(c: Ctx) -> str:
    """A1's genuine token with its payload swapped for one granting Bravo's study (old signature kept)."""
    version, kid, _, signature = c.instance.split(".")
    payload = base64.urlsafe_b64encode(json.dumps(claims(c, scope={"st": [c.p.b1.study]})).encode())
    return ".".join([version, kid, payload.decode().rstrip("="), signature])


def flipped(c: Ctx) -> str:
    token = c.instance
    return token[:-2] + ("AA" if not token.endswith("AA") else "BB")


forgery("tampered-payload", tampered, B1_META)
forgery("flipped-signature", flipped)
forgery("expired", lambda c: signed(c, claims(c, iat=1_000_000, exp=1_000_060)))
forgery("not-yet-valid", lambda c: signed(c, claims(c, iat=claims(c)["iat"] + 3600, exp=claims(c)["iat"] + 3900)))
forgery("wrong-audience", lambda c: signed(c, claims(c, aud="dicomlab-labeling")))
for label, exp in [("huge", 10**30), ("negative", -5), ("float", 1.5e9), ("string", "9999999999"), ("bool", True),
                   ("null", None), ("list", [1])]:
    forgery(f"absurd-exp-{label}", lambda c, exp=exp: signed(c, claims(c, exp=exp)))
forgery("absurd-exp-infinity", lambda c: signed(c, claims(c, exp=float("inf"))))  # JSON `Infinity`
forgery("absurd-exp-nan", lambda c: signed(c, claims(c, exp=float("nan"))))
forgery("absurd-iat-huge", lambda c: signed(c, claims(c, iat=10**30)))
forgery("lifetime-beyond-limit", lambda c: signed(c, claims(c, exp=claims(c)["iat"] + 400 * 24 * 3600)))
forgery("deid-not-boolean", lambda c: signed(c, claims(c, deid="false")))
forgery("scope-not-object", lambda c: signed(c, claims(c, scope=["st", c.p.b1.study])), B1_META)
forgery("garbage", lambda c: "not-a-token")
forgery("oversized", lambda c: "v1.t1." + "A" * 5000 + ".x")
row("forge-service-token-in-query", "GET", lambda c: B1_META(c) + f"?token={SERVICE_TOKEN}", 401, headers=lambda c: {})
row("forge-service-token-in-query-wado", "GET", lambda c: f"/wado?requestType=WADO&studyUID={c.p.b1.study}"
    f"&seriesUID={c.p.b1.series}&objectUID={c.p.b1.sop}&token={SERVICE_TOKEN}", 401, headers=lambda c: {})
row("forge-service-token-near-miss", "GET", B1_META, 401, headers=lambda c: c.auth(SERVICE_TOKEN.upper()))
row("forge-orthanc-basic", "GET", B1_META, 401, headers=lambda c: {"Authorization": "Basic " + base64.b64encode(
    f"{c.orthanc.username}:{c.orthanc.password.reveal()}".encode()).decode()})


# ------------------------------------------------------------------------------------ scope escape

ROUTES: dict[str, tuple[str, Callable[[StoredInstance], str]]] = {
    # name: (level, path builder)
    "study-retrieve": ("study", lambda s: f"/studies/{s.study}"),
    "study-metadata": ("study", lambda s: f"/studies/{s.study}/metadata"),
    "study-rendered": ("study", lambda s: f"/studies/{s.study}/rendered"),
    "series-retrieve": ("series", lambda s: f"/studies/{s.study}/series/{s.series}"),
    "series-metadata": ("series", lambda s: f"/studies/{s.study}/series/{s.series}/metadata"),
    "series-rendered": ("series", lambda s: f"/studies/{s.study}/series/{s.series}/rendered"),
    "instance-retrieve": ("instance", inst),
    "instance-metadata": ("instance", lambda s: inst(s) + "/metadata"),
    "instance-rendered": ("instance", lambda s: inst(s) + "/rendered"),
    "instance-frames": ("instance", lambda s: inst(s) + "/frames/1"),
    "instance-bulk": ("instance", lambda s: inst(s) + "/bulk/7FE00010"),
}
LEVELS = ("study", "series", "instance")
KEY_BY_LEVEL = {"study": ("StudyInstanceUID", "0020000D"), "series": ("SeriesInstanceUID", "0020000E"),
                "instance": ("SOPInstanceUID", "00080018")}
HIDES = ("none", "name", "tag", "lower", "repeated", "list", "star", "question")


def hidden(how: str, level: str, own: str, other: str) -> tuple[str, bool]:
    """A query naming ``own`` at ``level`` hidden ``how``, and whether it is malformed (a 400)."""
    name, tag = KEY_BY_LEVEL[level]
    return {"none": ("", False), "name": (f"{name}={own}", False), "tag": (f"{tag}={own}", False),
            "lower": (f"{name.lower()}={own}", False), "repeated": (f"{name}={own}&{tag}={own}", False),
            "list": (f"{name}={own},{other}", True), "star": (f"{name}=*", True),
            "question": (f"{name}={own[:-1]}?", True)}[how]


def uid_of(s: StoredInstance, level: str) -> str:
    return {"study": s.study, "series": s.series, "instance": s.sop}[level]


TOKENS: dict[str, tuple[str, Callable[[Ctx], str]]] = {
    "instance-token": ("instance", lambda c: c.instance),
    "series-token": ("series", lambda c: c.series),
    "study-token": ("study", lambda c: c.study),
}


def escape_rows() -> None:
    """Each token on every route of the other patient, its own identifier hidden everywhere a query can hide it.

    The instance token also on its own patient's study and series routes and on the sibling A2 (the issue's
    escape). Expected: 400 when the query is malformed or contradicts the path at the same level, else 403.
    """
    for token_name, (grant_level, token) in TOKENS.items():
        hides = HIDES if token_name == "instance-token" else ("none", "name", "tag", "repeated", "star")
        for route_name, (route_level, path) in ROUTES.items():
            victims: list[tuple[str, Callable[[Ctx], StoredInstance]]] = [("B1", lambda c: c.p.b1)]
            if token_name == "instance-token":
                if route_level != "instance":
                    victims.append(("own-study", lambda c: c.p.a1))
                else:
                    victims.append(("sibling-A2", lambda c: c.p.a2))
            for victim_name, victim in victims:
                for how in hides:
                    def target(c: Ctx, how: str = how, victim: Callable[[Ctx], StoredInstance] = victim,
                               path: Callable[[StoredInstance], str] = path, level: str = grant_level) -> str:
                        query, _ = hidden(how, level, uid_of(c.p.a1, level), uid_of(victim(c), level))
                        return web(path(victim(c))) + ("?" + query if query else "")

                    malformed = hidden(how, grant_level, "1.2", "1.3")[1]
                    # The query names the token's own UID at a level the path also names (with the victim's UID).
                    contradicts = how != "none" and LEVELS.index(route_level) >= LEVELS.index(grant_level)
                    expected = 400 if malformed or contradicts else 403
                    row(f"escape-{token_name}-{route_name}-{victim_name}-{how}", "GET", target, expected,
                        headers=lambda c, token=token: c.auth(token(c)))


escape_rows()


# ------------------------------------------------------------------------------------ searches


UID_TAG = {"sop": "00080018", "series": "0020000E", "study": "0020000D"}


def only(kind: str, *names: str) -> Check:
    """The search answered exactly these datasets of Alpha (``kind`` sop/series/study; names a1/a2)."""
    def check(c: Ctx, _headers: dict[str, str], body: bytes) -> None:
        found = [d[UID_TAG[kind]]["Value"][0] for d in json.loads(body)]
        attribute = {"sop": "sop", "series": "series", "study": "study"}[kind]
        assert sorted(found) == sorted(getattr(getattr(c.p, n), attribute) for n in names)
    return check


def empty(c: Ctx, _headers: dict[str, str], body: bytes) -> None:
    assert body in (b"", b"[]") or json.loads(body) == []


I = lambda c: c.auth(c.instance)  # noqa: E731,E741
SE = lambda c: c.auth(c.series)  # noqa: E731
ST = lambda c: c.auth(c.study)  # noqa: E731
row("search-instance-token-studies", "GET", lambda c: web("/studies"), 403, headers=I)
row("search-instance-token-series", "GET", lambda c: web("/series"), 403, headers=I)
row("search-instance-token-study-series", "GET", lambda c: web(f"/studies/{c.p.a1.study}/series"), 403, headers=I)
row("search-instance-token-instances", "GET", lambda c: web("/instances"), 200, headers=I, check=only("sop", "a1"))
row("search-instance-token-instances-patient-wildcard", "GET", lambda c: web("/instances?PatientName=*"), 200,
    headers=I, check=only("sop", "a1"))
row("search-instance-token-instances-other-patient-id", "GET", lambda c: web(f"/instances?PatientID={BRAVO['id']}"),
    200, headers=I, check=empty)
row("search-instance-token-b-sop", "GET", lambda c: web(f"/instances?SOPInstanceUID={c.p.b1.sop}"), 403, headers=I)
row("search-instance-token-b-sop-tag", "GET", lambda c: web(f"/instances?00080018={c.p.b1.sop}"), 403, headers=I)
row("search-instance-token-b-sop-lower", "GET", lambda c: web(f"/instances?sopinstanceuid={c.p.b1.sop}"), 403,
    headers=I)
row("search-instance-token-sibling-sop", "GET", lambda c: web(f"/instances?SOPInstanceUID={c.p.a2.sop}"), 403,
    headers=I)
row("search-instance-token-own-and-b", "GET",
    lambda c: web(f"/instances?SOPInstanceUID={c.p.a1.sop}&sop-instance-uid={c.p.b1.sop}"), 400, headers=I)
row("search-instance-token-own-list", "GET", lambda c: web(f"/instances?SOPInstanceUID={c.p.a1.sop},{c.p.b1.sop}"),
    400, headers=I)
row("search-instance-token-star", "GET", lambda c: web("/instances?SOPInstanceUID=*"), 400, headers=I)
row("search-instance-token-study-b-filter", "GET", lambda c: web(f"/instances?StudyInstanceUID={c.p.b1.study}"),
    200, headers=I, check=empty)
row("search-instance-token-study-b-path", "GET", lambda c: web(f"/studies/{c.p.b1.study}/instances"), 200,
    headers=I, check=empty)
row("search-instance-token-series-b-path", "GET",
    lambda c: web(f"/studies/{c.p.b1.study}/series/{c.p.b1.series}/instances?SOPInstanceUID={c.p.a1.sop}"), 200,
    headers=I, check=empty)
row("search-study-token-studies", "GET", lambda c: web("/studies"), 200, headers=ST, check=only("study", "a1"))
row("search-study-token-b", "GET", lambda c: web(f"/studies?StudyInstanceUID={c.p.b1.study}"), 403, headers=ST)
row("search-study-token-b-tag", "GET", lambda c: web(f"/studies?0020000D={c.p.b1.study}"), 403, headers=ST)
row("search-study-token-b-mixed-case", "GET", lambda c: web(f"/studies?sTuDyInStAnCeUiD={c.p.b1.study}"), 403,
    headers=ST)
row("search-study-token-repeated", "GET",
    lambda c: web(f"/studies?StudyInstanceUID={c.p.a1.study}&StudyInstanceUID={c.p.b1.study}"), 400, headers=ST)
row("search-study-token-list", "GET", lambda c: web(f"/studies?StudyInstanceUID={c.p.a1.study},{c.p.b1.study}"), 400,
    headers=ST)
row("search-study-token-star", "GET", lambda c: web("/studies?StudyInstanceUID=*"), 400, headers=ST)
row("search-study-token-question", "GET", lambda c: web(f"/studies?StudyInstanceUID={c.p.b1.study[:-1]}?"), 400,
    headers=ST)
row("search-study-token-other-name", "GET", lambda c: web("/studies?PatientName=Bravo*"), 200, headers=ST,
    check=empty)
row("search-study-token-series-of-b", "GET", lambda c: web(f"/studies/{c.p.b1.study}/series"), 403, headers=ST)
row("search-study-token-instances", "GET", lambda c: web("/instances"), 200, headers=ST, check=only("sop", "a1", "a2"))
row("search-series-token-studies", "GET", lambda c: web("/studies"), 403, headers=SE)
row("search-series-token-series", "GET", lambda c: web("/series"), 200, headers=SE, check=only("series", "a1"))
row("search-series-token-instances", "GET", lambda c: web("/instances"), 200, headers=SE,
    check=only("sop", "a1", "a2"))
row("search-series-token-b-series", "GET", lambda c: web(f"/series?SeriesInstanceUID={c.p.b1.series}"), 403,
    headers=SE)
row("search-series-token-study-b-path", "GET", lambda c: web(f"/studies/{c.p.b1.study}/series"), 200, headers=SE,
    check=empty)


# ------------------------------------------------------------------------------------ WADO-URI and /file

def wado(s: Callable[[Ctx], StoredInstance], extra: str = "", *, study: Callable[[Ctx], StoredInstance] | None = None,
         series: Callable[[Ctx], StoredInstance] | None = None) -> Target:
    def target(c: Ctx) -> str:
        st, se = (study or s)(c), (series or s)(c)
        return (f"/wado?requestType=WADO&studyUID={st.study}&seriesUID={se.series}&objectUID={s(c).sop}"
                + extra)
    return target


A1: Callable[[Ctx], StoredInstance] = lambda c: c.p.a1  # noqa: E731
A2: Callable[[Ctx], StoredInstance] = lambda c: c.p.a2  # noqa: E731
B1: Callable[[Ctx], StoredInstance] = lambda c: c.p.b1  # noqa: E731
row("wado-own", "GET", wado(A1, "&contentType=image/jpeg"), 200)
row("wado-own-dicom", "GET", wado(A1, "&contentType=application/dicom"), 200)
row("wado-b", "GET", wado(B1), 403)
row("wado-sibling", "GET", wado(A2), 403)
row("wado-b-object-own-study", "GET", wado(B1, study=A1, series=A1), 403)
row("wado-duplicate-object", "GET", lambda c: wado(A1)(c) + f"&objectUID={c.p.b1.sop}", 400)
row("wado-case-variant-object", "GET", lambda c: wado(A1)(c) + f"&ObjectUID={c.p.b1.sop}", 400)
row("wado-missing-object", "GET", lambda c: f"/wado?requestType=WADO&studyUID={c.p.a1.study}"
    f"&seriesUID={c.p.a1.series}", 400)
row("wado-wildcard-object", "GET", lambda c: f"/wado?requestType=WADO&studyUID={c.p.a1.study}"
    f"&seriesUID={c.p.a1.series}&objectUID=*", 400)
row("wado-series-token-b-object", "GET", wado(B1, study=A1, series=A1), 404, headers=SE)  # Orthanc: not in series
row("wado-study-token-b-object", "GET", wado(B1, study=A1), 404, headers=ST)
row("wado-study-token-b", "GET", wado(B1), 403, headers=ST)
row("file-own", "GET", lambda c: f"/instances/{c.p.a1.orthanc_id}/file", 200)
row("file-b", "GET", lambda c: f"/instances/{c.p.b1.orthanc_id}/file", 403)
row("file-sibling", "GET", lambda c: f"/instances/{c.p.a2.orthanc_id}/file", 403)
row("file-study-token-no-orthanc-grant", "GET", lambda c: f"/instances/{c.p.a1.orthanc_id}/file", 403, headers=ST)


# ------------------------------------------------------------------------------------ Orthanc REST, writes

for label, method, target in [
    ("system", "GET", lambda c: "/system"), ("statistics", "GET", lambda c: "/statistics"),
    ("patients", "GET", lambda c: "/patients"), ("patients-expand", "GET", lambda c: "/patients?expand"),
    ("studies-rest", "GET", lambda c: "/studies"), ("changes", "GET", lambda c: "/changes"),
    ("instance-rest", "GET", lambda c: f"/instances/{c.p.b1.orthanc_id}"),
    ("instance-tags", "GET", lambda c: f"/instances/{c.p.b1.orthanc_id}/tags"),
    ("instance-simplified-tags", "GET", lambda c: f"/instances/{c.p.b1.orthanc_id}/simplified-tags"),
    ("instance-content", "GET", lambda c: f"/instances/{c.p.b1.orthanc_id}/content/0010-0010"),
    ("own-instance-tags", "GET", lambda c: f"/instances/{c.p.a1.orthanc_id}/tags"),
    ("tools-find-get", "GET", lambda c: "/tools/find"), ("tools-lookup", "GET", lambda c: "/tools/lookup"),
    ("explorer", "GET", lambda c: "/app/explorer.html"), ("ui", "GET", lambda c: "/ui/app/"),
    ("plugins", "GET", lambda c: "/plugins"), ("jobs", "GET", lambda c: "/jobs"),
    ("dicomweb-servers", "GET", lambda c: "/dicom-web/servers"), ("modalities", "GET", lambda c: "/modalities"),
    ("peers", "GET", lambda c: "/peers"),
]:
    row(f"rest-{label}", method, target, 404)
for label, target in [("tools-find", "/tools/find"), ("tools-execute-script", "/tools/execute-script"),
                      ("instances-upload", "/instances"), ("tools-reset", "/tools/reset"),
                      ("tools-create-archive", "/tools/create-archive")]:
    row(f"rest-post-{label}", "POST", lambda c, t=target: t, 404, 405, body=b'{"Level":"Patient","Query":{}}',
        headers=lambda c: {**c.auth(c.instance), "Content-Type": "application/json"})
for method in ("POST", "PUT", "DELETE", "PATCH", "FOO"):
    row(f"write-{method.lower()}-instance", method, lambda c: web(inst(c.p.a1)), 405, body=b"x" if method != "DELETE"
        else b"", headers=lambda c: {**c.auth(c.instance), "Content-Type": "application/dicom"})
for method in ("DELETE", "PUT"):
    row(f"write-{method.lower()}-file", method, lambda c: f"/instances/{c.p.a1.orthanc_id}/file", 405)
row("write-stow-service-disabled", "POST", lambda c: web("/studies"), 405, body=b"--x--",
    headers=lambda c: {"Authorization": f"Bearer {SERVICE_TOKEN}", "Content-Type": "multipart/related"})
row("write-stow-token", "POST", lambda c: web(f"/studies/{c.p.a1.study}"), 405, body=b"--x--",
    headers=lambda c: {**c.auth(c.study), "Content-Type": "multipart/related"})
for header in ("X-HTTP-Method-Override", "X-HTTP-Method", "X-Method-Override"):
    for verb in ("DELETE", "PUT"):
        row(f"override-{header.lower()}-{verb.lower()}", "GET", A1_META, 400,
            headers=lambda c, h=header, v=verb: {**c.auth(c.instance), h: v})
for param in ("_method=DELETE", "x-http-method-override=PUT", "_METHOD=POST"):
    row(f"override-param-{param.split('=')[0]}", "GET", lambda c, p=param: A1_META(c) + "?" + p, 400)


# ------------------------------------------------------------------------------------ path tricks

for label, target, expected in [
    ("dot-dot", lambda c: web(f"/studies/{c.p.a1.study}/../../studies/{c.p.b1.study}/metadata"), (400,)),
    ("dot-dot-to-rest", lambda c: web(f"/studies/{c.p.a1.study}/../../../patients"), (400,)),
    ("encoded-dots", lambda c: web(f"/studies/{c.p.a1.study}/%2e%2e/{c.p.b1.study}/metadata"), (400,)),
    ("encoded-dots-mixed", lambda c: web(f"/studies/%2E%2e/{c.p.b1.study}"), (400,)),
    ("encoded-slash", lambda c: web(f"/studies/{c.p.a1.study}%2f..%2f{c.p.b1.study}"), (400,)),
    ("double-encoded", lambda c: web("/%252e%252e/patients"), (400,)),
    ("double-slash-front", lambda c: "//patients", (400, 404)),
    ("double-slash-inner", lambda c: web(f"//studies/{c.p.b1.study}/metadata"), (400,)),
    ("dot-segment", lambda c: web(f"/studies/./{c.p.b1.study}/metadata"), (400,)),
    ("backslash", lambda c: "/dicom-web\\..\\patients", (400,)),
    ("encoded-backslash", lambda c: web("/%5c..%5cpatients"), (400,)),
    ("encoded-nul", lambda c: f"/instances/{c.p.a1.orthanc_id}/file%00", (400,)),
    ("semicolon", lambda c: web(f"/studies/{c.p.b1.study};/metadata"), (404,)),
    ("overlong-utf8-dot", lambda c: web("/%c0%ae%c0%ae/patients"), (400,)),
    ("trailing-dot-dot", lambda c: web(f"/studies/{c.p.b1.study}/.."), (400,)),
    ("absolute-form-other-host", lambda c: f"http://evil.example/dicom-web{inst(c.p.b1)}/metadata", (403,)),
]:
    row(f"path-{label}", "GET", target, *expected)


# ------------------------------------------------------------------------------------ smuggling

SMUGGLED = "GET /patients HTTP/1.1\r\nHost: x\r\n\r\n"
CHUNKED = f"0\r\n\r\n{SMUGGLED}"
row("smuggle-cl-te", "GET", A1_META, 400, 413, body=CHUNKED.encode(),
    raw_headers=f"Content-Length: {len(CHUNKED)}\r\nTransfer-Encoding: chunked")
row("smuggle-te-cl", "GET", A1_META, 400, 413, body=f"0\r\n\r\n{SMUGGLED}".encode(),
    raw_headers="Transfer-Encoding: chunked\r\nContent-Length: 4")
row("smuggle-duplicate-cl", "GET", A1_META, 400, 413, body=SMUGGLED.encode(),
    raw_headers=f"Content-Length: 0\r\nContent-Length: {len(SMUGGLED)}")
row("smuggle-te-obfuscated", "GET", A1_META, 400, 413, 501, body=f"0\r\n\r\n{SMUGGLED}".encode(),
    raw_headers="Transfer-Encoding: xchunked\r\nContent-Length: 5")
row("smuggle-body-on-get", "GET", A1_META, 413, body=b"hello", raw_headers="Content-Length: 5")


# ------------------------------------------------------------------------------------ CORS


def no_cors(c: Ctx, headers: dict[str, str], _body: bytes) -> None:
    assert "access-control-allow-origin" not in headers


def cors_for_allowed(c: Ctx, headers: dict[str, str], _body: bytes) -> None:
    assert headers.get("access-control-allow-origin") == ALLOWED_ORIGIN
    assert "access-control-allow-credentials" not in headers


row("cors-foreign-origin", "GET", A1_META, 200, headers=lambda c: {**c.auth(c.instance), "Origin": "https://evil.example"},
    check=no_cors)
row("cors-null-origin", "GET", A1_META, 200, headers=lambda c: {**c.auth(c.instance), "Origin": "null"},
    check=no_cors)
row("cors-prefix-origin", "GET", A1_META, 200,
    headers=lambda c: {**c.auth(c.instance), "Origin": ALLOWED_ORIGIN + ".evil.example"}, check=no_cors)
row("cors-allowed-origin", "GET", A1_META, 200, headers=lambda c: {**c.auth(c.instance), "Origin": ALLOWED_ORIGIN},
    check=cors_for_allowed)
row("cors-preflight-foreign", "OPTIONS", B1_META, 403, headers=lambda c: {
    "Origin": "https://evil.example", "Access-Control-Request-Method": "GET"}, check=no_cors)
row("cors-preflight-null", "OPTIONS", B1_META, 403, headers=lambda c: {
    "Origin": "null", "Access-Control-Request-Method": "GET"}, check=no_cors)
row("cors-preflight-delete", "OPTIONS", B1_META, 403, headers=lambda c: {
    "Origin": ALLOWED_ORIGIN, "Access-Control-Request-Method": "DELETE"}, check=no_cors)


# ------------------------------------------------------------------------------------ oversize

row("oversize-header", "GET", A1_META, 431, headers=lambda c: {**c.auth(c.instance), "X-Big": "a" * 20000})
row("oversize-many-headers", "GET", A1_META, 431,
    headers=lambda c: {**c.auth(c.instance), **{f"X-H{i}": "v" * 200 for i in range(120)}})
row("oversize-cookie", "GET", A1_META, 431, headers=lambda c: {**c.auth(c.instance), "Cookie": "c=" + "x" * 17000})
row("oversize-query", "GET", lambda c: A1_META(c) + "?includefield=" + "a" * 9000, 414)
row("oversize-path", "GET", lambda c: web("/studies/" + "1." * 1100), 414)
row("oversize-frame-list", "GET", lambda c: web(inst(c.p.a1) + "/frames/" + ",".join(["1"] * 300)), 404)


# ------------------------------------------------------------------------------------ de-identified mode

D = lambda c: c.auth(c.deid)  # noqa: E731


def json_without_alpha(c: Ctx, headers: dict[str, str], body: bytes) -> None:
    assert headers["content-type"].startswith("application/dicom+json")
    assert headers["x-content-type-options"] == "nosniff"
    found = json.loads(body)
    assert found and all("00100010" not in d and "00100020" not in d and "00100030" not in d for d in found)
    assert c.p.a1.sop.encode() in body  # the UIDs stay (PS3.15 Retain UIDs option)


for label, target, expected, check in [
    ("file", lambda c: f"/instances/{c.p.a1.orthanc_id}/file", 403, None),
    ("instance-retrieve", lambda c: web(inst(c.p.a1)), 403, None),
    ("wado-default", wado(A1), 403, None),
    ("wado-dicom", wado(A1, "&contentType=application/dicom"), 403, None),
    ("wado-dicom-and-jpeg", wado(A1, "&contentType=image/jpeg&contentType=application/dicom"), 403, None),
    ("wado-jpeg", wado(A1, "&contentType=image/jpeg"), 200, None),
    ("bulk-patient-name", lambda c: web(inst(c.p.a1) + "/bulk/00100010"), 403, None),
    ("bulk-nested", lambda c: web(inst(c.p.a1) + "/bulk/00081140/0/00100010"), 403, None),
    ("bulk-pixel-data", lambda c: web(inst(c.p.a1) + "/bulk/7FE00010"), 200, None),
    ("frames", lambda c: web(inst(c.p.a1) + "/frames/1"), 200, None),
    ("rendered", lambda c: web(inst(c.p.a1) + "/rendered"), 200, None),
    ("metadata", lambda c: web(inst(c.p.a1) + "/metadata"), 200, json_without_alpha),
    ("search", lambda c: web("/instances"), 200, json_without_alpha),
    ("search-includefield-all", lambda c: web("/instances?includefield=all"), 200, json_without_alpha),
    ("search-name-oracle", lambda c: web("/instances?PatientName=Alpha*"), 400, None),
    ("search-id-oracle-tag", lambda c: web(f"/instances?00100020={ALPHA['id']}"), 400, None),
    ("search-birth-oracle", lambda c: web(f"/instances?PatientBirthDate={ALPHA['birth']}"), 400, None),
]:
    row(f"deid-{label}", "GET", target, expected, headers=D, check=check, deid=True)


# ------------------------------------------------------------------------------------ the test


@pytest.fixture(scope="module")
def served(orthanc: OrthancServer, key_entry: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[
        tuple[Proxy, GunicornService]]:
    """The proxy as deployed: gunicorn with the project's config, in front of the shared Orthanc."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = proxy_env(orthanc, key_entry, service_tokens=SERVICE_TOKEN, allowed_origins=ALLOWED_ORIGIN, public_url=url,
                    rate_limit_per_second="0")
    config = Config(token_keys=(Secret(key_entry),), service_tokens=(Secret(SERVICE_TOKEN),), public_url=url)
    with gunicorn("proxy", PROXY_APP, tmp_path_factory.mktemp("attack"), env, workers=1, threads=4,
                  port=port) as service:
        yield Proxy(url, config, TokenSigner(KeyRing.parse(config.token_keys))), service


@pytest.fixture(scope="module")
def ctx(served: tuple[Proxy, GunicornService], patients: Patients, orthanc: OrthancServer) -> Ctx:
    return Ctx(served[0], patients, orthanc)


def send(c: Ctx, r: Row) -> tuple[int, dict[str, str], bytes]:
    headers = r.headers(c)
    if r.body and "Content-Length" not in headers and not r.raw_headers:
        headers["Content-Length"] = str(len(r.body))
    extra = r.raw_headers.split("\r\n") if r.raw_headers else []
    return raw_request(c.proxy.url, f"{r.method} {r.target(c)} HTTP/1.1", headers, r.body, extra_lines=extra)


def forbidden_bytes(c: Ctx, deid: bool) -> Iterator[bytes]:
    """What no answer may contain: Bravo, Orthanc's credential and address; Alpha's identity for deid rows."""
    b = c.p.b1
    yield from (v.encode() for v in (*BRAVO.values(), "Bravopatient", b.study, b.series, b.sop, b.orthanc_id))
    yield c.orthanc.password.reveal().encode()
    yield urlsplit(c.orthanc.url).netloc.encode()
    yield b"Basic "
    if deid:
        yield from (v.encode() for v in (*ALPHA.values(), "Alphapatient"))


def test_the_table_is_big_enough() -> None:
    assert len(ROWS) >= 150 and len({r.name for r in ROWS}) == len(ROWS)


@pytest.mark.parametrize("r", ROWS, ids=[r.name for r in ROWS])
def test_attack(r: Row, ctx: Ctx) -> None:
    status, headers, body = send(ctx, r)
    assert status in r.expected, (status, body[:300])
    blob = body + json.dumps(headers).encode()
    for secret in forbidden_bytes(ctx, r.deid):
        assert secret not in blob, secret
    if status >= 400 and body:
        assert status < 500 or status in r.expected  # only gunicorn's 501 for an unknown transfer coding
        if status in (401, 403):
            assert json.loads(body)["description"] == "access denied"
    if headers.get("content-type", "").startswith(("application/json", "application/dicom+json")):
        assert headers.get("x-content-type-options") == "nosniff"
    if r.check is not None:
        r.check(ctx, headers, body)


def test_no_write_reached_orthanc(ctx: Ctx, orthanc_client: OrthancClient) -> None:
    before = orthanc_client.statistics()["CountInstances"]
    for r in ROWS:
        if r.method not in ("GET", "OPTIONS"):
            send(ctx, r)
    assert orthanc_client.statistics()["CountInstances"] == before
    assert orthanc_client.instance_tags(ctx.p.a1.orthanc_id)["PatientName"] == ALPHA["name"]
