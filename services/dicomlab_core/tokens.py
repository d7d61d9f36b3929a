"""Short-lived, scoped access tokens: issued by the labeling service, checked by the DICOMweb proxy.

Format (compact, URL-safe, no padding)::

    v1.<kid>.<base64url(payload JSON)>.<base64url(HMAC-SHA256(key[kid], "v1.<kid>.<payload>"))>

The payload carries ``aud`` (audience), ``iat``/``exp`` (whole seconds since the epoch, at most
:data:`MAX_LIFETIME_SECONDS` apart), ``sub`` (an opaque subject such as a reader or task id, never a
name), ``jti`` (the token id the proxy's access log records), ``deid`` (true: the bearer reads
de-identified data only) and the ``scope``: the study, series and SOP Instance UIDs and Orthanc
instance IDs the bearer may read. What each kind of grant opens is :data:`SCOPE_TABLE`, the one
statement of the rule (the README's security model shows the same table).

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
from types import MappingProxyType
from typing import Any

from dicomlab_core.config import Secret

VERSION = "v1"
PROXY_AUDIENCE = "dicomlab-proxy"
"""The audience of tokens that the DICOMweb proxy accepts."""
MAX_TOKEN_CHARS = 4096
CLOCK_SKEW_SECONDS = 30
MAX_LIFETIME_SECONDS = 7 * 24 * 3600
"""Longest ``exp - iat`` a token may carry: a signed token claiming more is refused as malformed."""
MAX_EPOCH_SECONDS = 2**40
"""Largest ``iat``/``exp`` accepted (year ~36,800): bounds the arithmetic on absurd values."""
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
    DEIDENTIFIED = "deidentified"
    """A de-identified token asked for a route that returns a whole DICOM header."""
    SERVICE_TOKEN_IN_QUERY = "service_token_in_query"  # noqa: S105 - a metric label, not a secret
    """A service secret was sent as ``?token=`` (accepted only in the ``Authorization`` header)."""


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


class Grant(StrEnum):
    """The kinds of identifier a token's scope lists."""

    STUDY = "study"
    """A Study Instance UID (``st``)."""
    SERIES = "series"
    """A Series Instance UID (``se``)."""
    INSTANCE = "instance"
    """A SOP Instance UID (``in``)."""
    ORTHANC_ID = "orthanc_id"
    """An Orthanc instance ID (``oi``), for ``/instances/{id}/file``."""


class RouteLevel(StrEnum):
    """What a proxy route can return, named by the identifiers in its path (never its query)."""

    STUDY = "study"
    """``/studies/{study}[/metadata|/rendered|/thumbnail]``: a whole study."""
    SERIES = "series"
    """``/studies/{study}/series/{series}[/...]``: a whole series."""
    INSTANCE = "instance"
    """``.../instances/{sop}[/metadata|/frames/..|/rendered|/thumbnail|/bulk/..]`` and WADO-URI: one instance."""
    ORTHANC_FILE = "orthanc_file"
    """``/instances/{orthanc id}/file``: one instance, named by its Orthanc ID."""
    SEARCH_STUDIES = "search_studies"
    """QIDO ``/studies``: study-level attributes."""
    SEARCH_SERIES = "search_series"
    """QIDO ``/series``, ``/studies/{study}/series``: series-level attributes."""
    SEARCH_INSTANCES = "search_instances"
    """QIDO ``/instances``, ``/studies/{study}[/series/{series}]/instances``: instance-level attributes."""


SCOPE_TABLE: MappingProxyType[RouteLevel, frozenset[Grant]] = MappingProxyType({
    RouteLevel.STUDY: frozenset({Grant.STUDY}),
    RouteLevel.SERIES: frozenset({Grant.STUDY, Grant.SERIES}),
    RouteLevel.INSTANCE: frozenset({Grant.STUDY, Grant.SERIES, Grant.INSTANCE}),
    RouteLevel.ORTHANC_FILE: frozenset({Grant.ORTHANC_ID}),
    RouteLevel.SEARCH_STUDIES: frozenset({Grant.STUDY}),
    RouteLevel.SEARCH_SERIES: frozenset({Grant.STUDY, Grant.SERIES}),
    RouteLevel.SEARCH_INSTANCES: frozenset({Grant.STUDY, Grant.SERIES, Grant.INSTANCE}),
})
"""Route level × grant → allowed: the whole scope rule, written once.

A request is allowed when one of the grants listed for its route level names the identifier of that
grant's kind *in the request path* (for searches: in the UID filter the proxy itself sets). A study
grant reaches everything in the study, a series grant its series and instances, an instance grant
that instance's own routes only, an Orthanc-ID grant that instance's ``/file``. Orthanc refuses a
path whose study/series/instance do not belong together, so the path's identifiers are exactly
what the response can contain; query parameters never take part.
"""


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

    def granted(self, grant: Grant) -> tuple[str, ...]:
        """The identifiers of one kind this scope lists."""
        return {Grant.STUDY: self.studies, Grant.SERIES: self.series, Grant.INSTANCE: self.instances,
                Grant.ORTHANC_ID: self.orthanc_ids}[grant]

    def permits(self, level: RouteLevel, *, study: str | None = None, series: str | None = None,
                instance: str | None = None, orthanc_id: str | None = None) -> Grant | None:
        """The grant that opens a route of ``level`` whose path names these identifiers, or None.

        Applies :data:`SCOPE_TABLE`; pass only identifiers from the path (or a filter the proxy set).
        """
        named = {Grant.STUDY: study, Grant.SERIES: series, Grant.INSTANCE: instance, Grant.ORTHANC_ID: orthanc_id}
        for grant in Grant:  # broadest first, so the audit names the widest grant used
            value = named[grant]
            if grant in SCOPE_TABLE[level] and value is not None and value in self.granted(grant):
                return grant
        return None

    def allows(self, *, study: str | None = None, series: str | None = None, instance: str | None = None,
               orthanc_id: str | None = None) -> bool:
        """:meth:`permits` for a path naming these identifiers, its level being the most specific one named."""
        if orthanc_id is not None:
            level = RouteLevel.ORTHANC_FILE
        elif instance is not None:
            level = RouteLevel.INSTANCE
        elif series is not None:
            level = RouteLevel.SERIES
        else:
            level = RouteLevel.STUDY
        return self.permits(level, study=study, series=series, instance=instance, orthanc_id=orthanc_id) is not None


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
    deidentified: bool = False
    """The bearer reads de-identified data only (the ``deid`` claim): see the proxy's :mod:`~dicomlab_proxy.deid`."""


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
              extra: dict[str, Any] | None = None, deidentified: bool = False) -> str:
        """A token for ``scope`` valid for ``ttl_seconds`` from now, with a fresh random ``jti``.

        ``deidentified``: the bearer gets de-identified metadata and pixels only, never a whole header.
        """
        if not 0 < ttl_seconds <= MAX_LIFETIME_SECONDS:
            raise ValueError(f"ttl_seconds must be between 1 and {MAX_LIFETIME_SECONDS}")
        now = int(self._clock())
        payload: dict[str, Any] = {"aud": audience, "iat": now, "exp": now + ttl_seconds, "sub": subject,
                                   "jti": secrets.token_hex(8), "scope": scope.to_json()}
        if deidentified:
            payload["deid"] = True
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
        exp, iat = _epoch(payload.get("exp")), _epoch(payload.get("iat"))
        if not iat < exp <= iat + MAX_LIFETIME_SECONDS:
            raise TokenError(TokenRejection.MALFORMED)
        aud, sub, jti = payload.get("aud"), payload.get("sub"), payload.get("jti")
        if not (isinstance(aud, str) and isinstance(sub, str) and isinstance(jti, str) and jti):
            raise TokenError(TokenRejection.MALFORMED)
        deid = payload.get("deid", False)
        if not isinstance(deid, bool):
            raise TokenError(TokenRejection.MALFORMED)
        extra = payload.get("ext", {})
        return Claims(subject=sub, audience=aud, issued_at=iat, expires_at=exp,
                      scope=Scope.from_json(payload.get("scope", {})), token_id=jti,
                      extra=extra if isinstance(extra, dict) else {}, deidentified=deid)


def _epoch(value: Any) -> int:
    """A time claim: a JSON integer (not a bool, float or string) in ``0..MAX_EPOCH_SECONDS``.

    A correctly signed token with ``exp`` = 1e999 (infinity), NaN, "soon" or 10**30 is malformed (a
    401), never an arithmetic error (a 500) or a token that never expires.
    """
    if type(value) is not int or not 0 <= value <= MAX_EPOCH_SECONDS:
        raise TokenError(TokenRejection.MALFORMED)
    return value


def signer_from_entries(entries: Sequence[Secret | str]) -> TokenSigner:
    """Shortcut: a signer from ``kid:secret`` entries as they come from config."""
    return TokenSigner(KeyRing.parse(entries))
