"""Short-lived, scoped access tokens: issued by the labeling service, checked by the DICOMweb proxy.

Format (compact, URL-safe, no padding)::

    v1.<kid>.<base64url(payload JSON)>.<base64url(HMAC-SHA256(key[kid], "v1.<kid>.<payload>"))>

The payload carries ``aud`` (audience), ``iat``/``exp`` (seconds since the epoch), ``sub`` (an
opaque subject such as a reader or task id, never a name), ``jti`` and the ``scope``: the study,
series and SOP Instance UIDs and Orthanc instance IDs the bearer may read. A token scoped to a
study reaches everything below it; a token scoped to instances reaches only those.

Keys rotate through a :class:`KeyRing`: ``kid:secret`` entries, the first one signs, all verify,
so a new key can be added first and the old one removed after the longest token lifetime.
Verification failures raise :class:`TokenError` with a ``reason`` for metrics; the message shown
to a client is always the same, so nothing helps an attacker.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import secrets
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from dicomlab_core.config import Secret

VERSION = "v1"
PROXY_AUDIENCE = "dicomlab-proxy"
"""The audience of tokens that the DICOMweb proxy accepts."""
MAX_TOKEN_CHARS = 4096
CLOCK_SKEW_SECONDS = 30
VERIFIED_CACHE_SIZE = 1024
"""Verified tokens a signer remembers (each at most ``MAX_TOKEN_CHARS``): a few MiB at worst."""
_TOKEN_CHARS = re.compile(r"[A-Za-z0-9_.-]+")


class TokenRejection(StrEnum):
    """Why a token was refused (a metric label; never shown to the client)."""

    MISSING = "missing"
    MALFORMED = "malformed"
    UNKNOWN_KEY = "unknown_key"
    BAD_SIGNATURE = "bad_signature"
    EXPIRED = "expired"
    NOT_YET_VALID = "not_yet_valid"
    WRONG_AUDIENCE = "wrong_audience"
    OUT_OF_SCOPE = "out_of_scope"


class TokenError(Exception):
    """A token was refused. ``reason`` is for metrics and logs; clients get a generic message."""

    def __init__(self, reason: TokenRejection) -> None:
        super().__init__(f"token rejected: {reason}")
        self.reason = reason


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def _b64decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True)
class KeyRing:
    """Signing keys by id; ``active`` signs, every key verifies."""

    keys: dict[str, bytes]
    active: str

    @classmethod
    def parse(cls, entries: Iterable[Secret | str]) -> KeyRing:
        """Build from ``kid:base64url-secret`` entries (the first is active). Secrets ≥ 32 bytes."""
        keys: dict[str, bytes] = {}
        order: list[str] = []
        for entry in entries:
            text = entry.reveal() if isinstance(entry, Secret) else entry
            kid, sep, encoded = text.partition(":")
            if not sep or not kid or not kid.isalnum():
                raise ValueError("token keys must look like 'kid:base64url-secret' with an alphanumeric kid")
            try:
                secret = _b64decode(encoded)
            except (ValueError, TypeError):
                raise ValueError(f"token key {kid!r} is not valid base64url") from None
            if len(secret) < 32:
                raise ValueError(f"token key {kid!r} is shorter than 32 bytes")
            keys[kid] = secret
            order.append(kid)
        if not order:
            raise ValueError("at least one token key is required")
        return cls(keys=keys, active=order[0])

    @staticmethod
    def generate_entry(kid: str = "k1") -> str:
        """A new random ``kid:secret`` entry (for ``dicomlab`` set-up and the chart's NOTES)."""
        return f"{kid}:{_b64encode(secrets.token_bytes(32))}"


@dataclass(frozen=True)
class Scope:
    """What a token lets its bearer read. Empty tuples mean "nothing at that level"."""

    studies: tuple[str, ...] = ()
    """Study Instance UIDs: everything below them is readable."""
    series: tuple[str, ...] = ()
    """Series Instance UIDs readable (with all their instances)."""
    instances: tuple[str, ...] = ()
    """SOP Instance UIDs readable."""
    orthanc_ids: tuple[str, ...] = ()
    """Orthanc instance IDs readable through ``/instances/{id}/file``."""

    def to_json(self) -> dict[str, list[str]]:
        out = {"st": list(self.studies), "se": list(self.series), "in": list(self.instances),
               "oi": list(self.orthanc_ids)}
        return {k: v for k, v in out.items() if v}

    @classmethod
    def from_json(cls, data: Any) -> Scope:
        if not isinstance(data, dict):
            raise TokenError(TokenRejection.MALFORMED)

        def strings(key: str) -> tuple[str, ...]:
            value = data.get(key, [])
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise TokenError(TokenRejection.MALFORMED)
            return tuple(value)

        return cls(strings("st"), strings("se"), strings("in"), strings("oi"))

    def allows(self, *, study: str | None = None, series: str | None = None, instance: str | None = None,
               orthanc_id: str | None = None) -> bool:
        """Whether a request naming these identifiers stays inside the scope.

        Every DICOMweb request names its study; a study grant covers everything below it, a series
        grant its instances, an instance grant that instance only (Orthanc itself refuses a UID that
        does not belong to the study/series in the path). An Orthanc ID must be granted explicitly.
        """
        if orthanc_id is not None:
            return orthanc_id in self.orthanc_ids
        if study is None:
            return False
        if study in self.studies:
            return True
        if series is not None and series in self.series:
            return True
        return instance is not None and instance in self.instances


@dataclass(frozen=True)
class Claims:
    """A verified token's content."""

    subject: str
    audience: str
    issued_at: int
    expires_at: int
    scope: Scope
    token_id: str
    extra: dict[str, Any] = field(default_factory=dict)


class TokenSigner:
    """Issues and verifies tokens with a :class:`KeyRing`."""

    def __init__(self, keyring: KeyRing, *, clock: Any = time.time, cache_size: int = VERIFIED_CACHE_SIZE) -> None:
        self.keyring = keyring
        self._clock = clock
        self._cache_size = cache_size
        self._verified: dict[str, Claims] = {}
        """Tokens whose signature and payload checked out, by the whole token text (signature included)."""

    def _sign(self, kid: str, signing_input: str) -> str:
        return _b64encode(hmac.new(self.keyring.keys[kid], signing_input.encode("ascii"), hashlib.sha256).digest())

    def issue(self, scope: Scope, *, subject: str, ttl_seconds: int, audience: str = PROXY_AUDIENCE,
              extra: dict[str, Any] | None = None) -> str:
        """A token for ``scope`` valid for ``ttl_seconds`` from now."""
        if ttl_seconds <= 0:
            raise ValueError("ttl_seconds must be positive")
        now = int(self._clock())
        payload: dict[str, Any] = {"aud": audience, "iat": now, "exp": now + ttl_seconds, "sub": subject,
                                   "jti": secrets.token_hex(8), "scope": scope.to_json()}
        if extra:
            payload["ext"] = extra
        body = _b64encode(json.dumps(payload, separators=(",", ":"), sort_keys=True).encode())
        kid = self.keyring.active
        signing_input = f"{VERSION}.{kid}.{body}"
        return f"{signing_input}.{self._sign(kid, signing_input)}"

    def verify(self, token: str | None, *, audience: str = PROXY_AUDIENCE) -> Claims:
        """The claims of a valid token, else :class:`TokenError` with the reason.

        A viewer presents the same token for every frame, so a token whose signature checked out is
        remembered (bounded, by its whole text): the next time only expiry, validity start and
        audience are checked, and those always are.
        """
        if not token:
            raise TokenError(TokenRejection.MISSING)
        claims = self._verified.get(token)
        if claims is None:
            claims = self._decode(token)
            if len(self._verified) >= self._cache_size:
                self._verified.clear()  # rare, atomic and cheap: re-verifying costs tens of microseconds
            self._verified[token] = claims
        now = self._clock()
        if now >= claims.expires_at:
            raise TokenError(TokenRejection.EXPIRED)
        if claims.issued_at > now + CLOCK_SKEW_SECONDS:
            raise TokenError(TokenRejection.NOT_YET_VALID)
        if claims.audience != audience:
            raise TokenError(TokenRejection.WRONG_AUDIENCE)
        return claims

    def _decode(self, token: str) -> Claims:
        """Format, key, signature and payload checks: the claims as signed, not yet checked against time."""
        if len(token) > MAX_TOKEN_CHARS or not _TOKEN_CHARS.fullmatch(token):
            # Only the base64url alphabet and dots: anything else (non-ASCII included, which
            # would break the ASCII signing input and compare_digest) is malformed, not a crash.
            raise TokenError(TokenRejection.MALFORMED)
        parts = token.split(".")
        if len(parts) != 4 or parts[0] != VERSION:
            raise TokenError(TokenRejection.MALFORMED)
        _, kid, body, signature = parts
        if kid not in self.keyring.keys:
            raise TokenError(TokenRejection.UNKNOWN_KEY)
        expected = self._sign(kid, f"{VERSION}.{kid}.{body}")
        if not hmac.compare_digest(expected, signature):
            raise TokenError(TokenRejection.BAD_SIGNATURE)
        try:
            payload = json.loads(_b64decode(body))
        except (ValueError, UnicodeDecodeError):
            raise TokenError(TokenRejection.MALFORMED) from None
        if not isinstance(payload, dict):
            raise TokenError(TokenRejection.MALFORMED)
        try:
            exp, iat = int(payload["exp"]), int(payload["iat"])
            aud, sub, jti = str(payload["aud"]), str(payload["sub"]), str(payload["jti"])
        except (KeyError, TypeError, ValueError):
            raise TokenError(TokenRejection.MALFORMED) from None
        extra = payload.get("ext", {})
        return Claims(subject=sub, audience=aud, issued_at=iat, expires_at=exp,
                      scope=Scope.from_json(payload.get("scope", {})), token_id=jti,
                      extra=extra if isinstance(extra, dict) else {})


def signer_from_entries(entries: Sequence[Secret | str]) -> TokenSigner:
    """Shortcut: a signer from ``kid:secret`` entries as they come from config."""
    return TokenSigner(KeyRing.parse(entries))
