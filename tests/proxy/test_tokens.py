"""The shared token format (:mod:`dicomlab_core.tokens`): signing, rotation, expiry, audience, scope."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json

import pytest

from dicomlab_core.tokens import (
    MAX_LIFETIME_SECONDS,
    SCOPE_TABLE,
    Grant,
    KeyRing,
    RouteLevel,
    Scope,
    TokenError,
    TokenRejection,
    TokenSigner,
)


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def signer(*entries: str, clock: Clock | None = None) -> TokenSigner:
    return TokenSigner(KeyRing.parse(entries), clock=clock or Clock())


def test_round_trip_and_rotation() -> None:
    old, new = KeyRing.generate_entry("old"), KeyRing.generate_entry("new")
    token = signer(old).issue(Scope(studies=("1.2.3",)), subject="r1", ttl_seconds=60)
    claims = signer(new, old).verify(token)  # rotated: new signs, old still verifies
    assert claims.scope.studies == ("1.2.3",) and claims.subject == "r1"
    with pytest.raises(TokenError) as info:
        signer(new).verify(token)  # old key retired
    assert info.value.reason is TokenRejection.UNKNOWN_KEY


@pytest.mark.parametrize(("mutate", "reason"), [
    (lambda t: t[:-2] + ("AA" if not t.endswith("AA") else "BB"), TokenRejection.BAD_SIGNATURE),
    (lambda t: t.replace("v1.", "v2.", 1), TokenRejection.MALFORMED),
    (lambda t: ".".join(t.split(".")[:3]), TokenRejection.MALFORMED),
    (lambda t: "", TokenRejection.MISSING),
    (lambda t: t + "." * 5000, TokenRejection.MALFORMED),
    (lambda t: t[:-1] + "\u00e9", TokenRejection.MALFORMED),
    (lambda t: t.replace(".", ".\u00ff", 1), TokenRejection.MALFORMED),
    (lambda t: t + " ", TokenRejection.MALFORMED),
])
def test_tampering_is_rejected(mutate: object, reason: TokenRejection) -> None:
    entry = KeyRing.generate_entry()
    token = signer(entry).issue(Scope(studies=("1.2.3",)), subject="r1", ttl_seconds=60)
    with pytest.raises(TokenError) as info:
        signer(entry).verify(mutate(token))  # type: ignore[operator]
    assert info.value.reason is reason


def test_payload_swap_with_old_signature_is_rejected() -> None:
    entry = KeyRing.generate_entry()
    s = signer(entry)
    one = s.issue(Scope(studies=("1.2.3",)), subject="r1", ttl_seconds=60).split(".")
    two = s.issue(Scope(studies=("9.9.9",)), subject="r1", ttl_seconds=60).split(".")
    with pytest.raises(TokenError) as info:
        s.verify(".".join([one[0], one[1], two[2], one[3]]))
    assert info.value.reason is TokenRejection.BAD_SIGNATURE


def test_expiry_not_yet_valid_and_audience() -> None:
    entry, clock = KeyRing.generate_entry(), Clock()
    s = signer(entry, clock=clock)
    token = s.issue(Scope(studies=("1.2",)), subject="r", ttl_seconds=10)
    clock.now += 10
    with pytest.raises(TokenError) as info:
        s.verify(token)
    assert info.value.reason is TokenRejection.EXPIRED
    future = signer(entry, clock=Clock(clock.now + 3600)).issue(Scope(), subject="r", ttl_seconds=10)
    with pytest.raises(TokenError) as info:
        s.verify(future)
    assert info.value.reason is TokenRejection.NOT_YET_VALID
    other = s.issue(Scope(studies=("1.2",)), subject="r", ttl_seconds=10, audience="labeling")
    with pytest.raises(TokenError) as info:
        s.verify(other)
    assert info.value.reason is TokenRejection.WRONG_AUDIENCE


def test_a_remembered_token_is_still_checked_for_time_and_audience() -> None:
    entry, clock = KeyRing.generate_entry(), Clock()
    s = signer(entry, clock=clock)
    token = s.issue(Scope(studies=("1.2",)), subject="r", ttl_seconds=10)
    assert s.verify(token).subject == "r"  # now remembered
    with pytest.raises(TokenError) as info:
        s.verify(token, audience="labeling")
    assert info.value.reason is TokenRejection.WRONG_AUDIENCE
    tampered = token[:-2] + ("AA" if not token.endswith("AA") else "BB")
    with pytest.raises(TokenError) as info:
        s.verify(tampered)  # the memory is keyed by the whole text, signature included
    assert info.value.reason is TokenRejection.BAD_SIGNATURE
    clock.now += 10
    with pytest.raises(TokenError) as info:
        s.verify(token)
    assert info.value.reason is TokenRejection.EXPIRED


def test_the_memory_of_verified_tokens_is_bounded() -> None:
    entry = KeyRing.generate_entry()
    s = TokenSigner(KeyRing.parse([entry]), clock=Clock(), cache_size=3)
    tokens = [s.issue(Scope(), subject=f"r{i}", ttl_seconds=60) for i in range(10)]
    for token in tokens:
        assert s.verify(token).subject == f"r{tokens.index(token)}"
        assert len(s._verified) <= 3
    assert s.verify(tokens[0]).subject == "r0"  # forgotten ones verify again from scratch


def test_scope_levels() -> None:
    scope = Scope(studies=("1.1",), series=("2.2",), instances=("3.3",), orthanc_ids=("abc",))
    assert scope.allows(study="1.1", series="anything")
    assert scope.allows(study="9.9", series="2.2", instance="x")
    assert scope.allows(study="9.9", series="8.8", instance="3.3")
    assert not scope.allows(study="9.9", series="8.8", instance="7.7")
    assert not scope.allows(study="9.9")
    assert scope.allows(orthanc_id="abc") and not scope.allows(orthanc_id="abd")
    assert not Scope(studies=("1.1",)).allows(orthanc_id="1.1")


# (route level, grant kind) pairs that open the route when the grant names the path's identifier.
OPENS = {
    (RouteLevel.STUDY, Grant.STUDY),
    (RouteLevel.SERIES, Grant.STUDY), (RouteLevel.SERIES, Grant.SERIES),
    (RouteLevel.INSTANCE, Grant.STUDY), (RouteLevel.INSTANCE, Grant.SERIES), (RouteLevel.INSTANCE, Grant.INSTANCE),
    (RouteLevel.ORTHANC_FILE, Grant.ORTHANC_ID),
    (RouteLevel.SEARCH_STUDIES, Grant.STUDY),
    (RouteLevel.SEARCH_SERIES, Grant.STUDY), (RouteLevel.SEARCH_SERIES, Grant.SERIES),
    (RouteLevel.SEARCH_INSTANCES, Grant.STUDY), (RouteLevel.SEARCH_INSTANCES, Grant.SERIES),
    (RouteLevel.SEARCH_INSTANCES, Grant.INSTANCE),
}


@pytest.mark.parametrize("level", list(RouteLevel))
@pytest.mark.parametrize("grant", list(Grant))
def test_scope_table(level: RouteLevel, grant: Grant) -> None:
    """Every cell of the route level x grant table; an instance grant never opens a study or series route."""
    ids = {"study": "1.1", "series": "2.2", "instance": "3.3", "orthanc_id": "abc"}
    scope = Scope(**{{Grant.STUDY: "studies", Grant.SERIES: "series", Grant.INSTANCE: "instances",
                      Grant.ORTHANC_ID: "orthanc_ids"}[grant]: (ids[grant.value],)})
    assert (SCOPE_TABLE[level] >= {grant}) == ((level, grant) in OPENS)
    assert (scope.permits(level, **ids) is grant) == ((level, grant) in OPENS)
    other = {k: "9.9" for k in ids}  # the grant names the token's own identifier, the path another one
    assert scope.permits(level, **other) is None


def test_instance_grant_with_its_own_uid_elsewhere_opens_nothing_above_it() -> None:
    """The escape of issue 14: an instance token, its own UID anywhere but the path's instance position."""
    scope = Scope(instances=("3.3",))
    assert scope.permits(RouteLevel.STUDY, study="3.3") is None
    assert scope.permits(RouteLevel.SERIES, study="9.9", series="3.3") is None
    assert scope.permits(RouteLevel.STUDY, study="9.9", instance="3.3") is None  # a level takes its own grants only
    assert scope.permits(RouteLevel.INSTANCE, study="9.9", series="8.8", instance="3.3") is Grant.INSTANCE


@pytest.mark.parametrize("exp", [10**30, -1, float("inf"), float("nan"), "9999999999", 1.5e9, True, None, [1]])
def test_absurd_expiry_is_malformed_not_a_crash(exp: object) -> None:
    """A correctly signed token whose ``exp`` is absurd is refused as malformed (the proxy's 401)."""
    entry = KeyRing.generate_entry()
    s = signer(entry)
    with pytest.raises(TokenError) as info:
        s.verify(sign_payload(s, {"aud": "dicomlab-proxy", "iat": 1_000_000, "exp": exp, "sub": "r", "jti": "j",
                                  "scope": {"st": ["1.2"]}}))
    assert info.value.reason is TokenRejection.MALFORMED


@pytest.mark.parametrize("field", ["jti", "sub", "aud"])
def test_missing_or_non_string_ids_are_malformed(field: str) -> None:
    entry = KeyRing.generate_entry()
    s = signer(entry)
    payload: dict[str, object] = {"aud": "dicomlab-proxy", "iat": 1_000_000, "exp": 1_000_060, "sub": "r",
                                  "jti": "j", "scope": {}}
    for value in (None, 5):
        payload[field] = value
        with pytest.raises(TokenError):
            s.verify(sign_payload(s, payload))


def test_lifetime_is_bounded_and_deid_claim_round_trips() -> None:
    entry = KeyRing.generate_entry()
    s = signer(entry)
    with pytest.raises(ValueError, match="ttl_seconds"):
        s.issue(Scope(), subject="r", ttl_seconds=MAX_LIFETIME_SECONDS + 1)
    too_long = {"aud": "dicomlab-proxy", "iat": 1_000_000, "exp": 1_000_000 + MAX_LIFETIME_SECONDS + 1, "sub": "r",
                "jti": "j", "scope": {}}
    with pytest.raises(TokenError):
        s.verify(sign_payload(s, too_long))
    assert s.verify(s.issue(Scope(), subject="r", ttl_seconds=60, deidentified=True)).deidentified
    assert not s.verify(s.issue(Scope(), subject="r", ttl_seconds=60)).deidentified
    with pytest.raises(TokenError):
        s.verify(sign_payload(s, {**too_long, "exp": 1_000_060, "deid": "yes"}))


def sign_payload(s: TokenSigner, payload: dict[str, object]) -> str:
    """A token with exactly this payload, correctly signed by ``s``'s active key (what a key holder could mint)."""
    body = base64.urlsafe_b64encode(json.dumps(payload).encode()).decode().rstrip("=")
    kid = s.keyring.active
    signing_input = f"v1.{kid}.{body}"
    mac = hmac.new(s.keyring.keys[kid], signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{base64.urlsafe_b64encode(mac).decode().rstrip('=')}"


def test_keyring_rejects_weak_or_malformed_keys() -> None:
    with pytest.raises(ValueError, match="shorter than 32"):
        KeyRing.parse(["k1:c2hvcnQ"])
    with pytest.raises(ValueError, match="kid:base64url"):
        KeyRing.parse(["no-separator"])
    with pytest.raises(ValueError, match="at least one"):
        KeyRing.parse([])


def test_readme_states_the_same_scope_table() -> None:
    """The README's security model shows SCOPE_TABLE; the two cannot drift apart."""
    from pathlib import Path

    text = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    block = text.split("<!-- scope-table:start -->")[1].split("<!-- scope-table:end -->")[0]
    rows = [[cell.strip() for cell in line.strip().strip("|").split("|")] for line in block.strip().splitlines()]
    header, body = rows[0], rows[2:]
    grants = [Grant.STUDY, Grant.SERIES, Grant.INSTANCE, Grant.ORTHANC_ID]
    assert header[2:] == ["study grant", "series grant", "instance grant", "Orthanc-ID grant"]
    stated = {RouteLevel(cells[0].strip("`")): frozenset(g for g, cell in zip(grants, cells[2:], strict=True)
                                                          if cell == "yes") for cells in body}
    assert stated == dict(SCOPE_TABLE)
