"""The shared token format (:mod:`dicomlab_core.tokens`): signing, rotation, expiry, audience, scope."""

from __future__ import annotations

import pytest

from dicomlab_core.tokens import KeyRing, Scope, TokenError, TokenRejection, TokenSigner


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
    assert not scope.allows(series="2.2")  # every request must name its study
    assert scope.allows(orthanc_id="abc") and not scope.allows(orthanc_id="abd")
    assert not Scope(studies=("1.1",)).allows(orthanc_id="1.1")


def test_keyring_rejects_weak_or_malformed_keys() -> None:
    with pytest.raises(ValueError, match="shorter than 32"):
        KeyRing.parse(["k1:c2hvcnQ"])
    with pytest.raises(ValueError, match="kid:base64url"):
        KeyRing.parse(["no-separator"])
    with pytest.raises(ValueError, match="at least one"):
        KeyRing.parse([])
