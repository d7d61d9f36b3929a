"""Who is calling and what they may read: tokens, service identities, scope checks, rate limits.

Browser callers present a short-lived token from the labeling service (:mod:`dicomlab_core.tokens`)
in ``Authorization: Bearer`` or the ``token`` query parameter (for ``<img src>`` / WADO-URI cases).
Service callers (training, STOW-RS) present one of the configured service secrets instead, compared
in constant time, and only in the ``Authorization`` header: a service secret grants full read
without expiry, so it must never sit in a URL (browser history, referrers, logs of other hops).
Every refusal carries the same generic body (see :mod:`dicomlab_proxy.errors`); the reason only
goes to the ``dicomlab_proxy_token_rejections_total`` metric.

The rate limit is an in-process token bucket per token id: each gunicorn worker keeps its own
buckets, so the effective limit is ``workers ×`` the configured one. It stops a runaway or
scraping client, not a distributed attack (that belongs in front of the proxy).
"""

from __future__ import annotations

import hmac
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import NoReturn

from dicomlab_core.config import Secret
from dicomlab_core.errors import TooManyRequests
from dicomlab_core.tokens import Claims, Grant, RouteLevel, TokenError, TokenRejection, TokenSigner
from dicomlab_proxy.errors import forbidden, unauthorized
from dicomlab_proxy.metrics import RATE_LIMITED, TOKEN_REJECTIONS

TOKEN_PARAM = "token"  # noqa: S105 - a parameter name, not a secret
"""The query parameter that may carry the token (stripped before forwarding)."""


@dataclass(frozen=True)
class Identity:
    """An authenticated caller: a token holder or a service."""

    key: str
    """Rate-limit key: the token id (``jti``) or ``service:<n>``; safe to log."""
    claims: Claims | None = None
    service: bool = False

    @property
    def deidentified(self) -> bool:
        """The caller reads de-identified data only (a token with the ``deid`` claim)."""
        return self.claims is not None and self.claims.deidentified

    @property
    def subject(self) -> str | None:
        """The token's opaque subject (``assignment:42``), for the access log; None for services."""
        return self.claims.subject if self.claims is not None else None


@dataclass(frozen=True)
class Presented:
    """The credential a request carries and where it was found."""

    value: str | None
    in_query: bool = False


def bearer_token(authorization: str | None, query_token: str | None) -> Presented:
    """The presented credential: the Bearer header wins over the query parameter."""
    if authorization:
        scheme, _, value = authorization.strip().partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return Presented(value.strip())
        return Presented("")  # some other scheme (Basic...): present but not a token we accept
    return Presented(query_token, in_query=query_token is not None)


class Authenticator:
    """Verifies tokens and service secrets."""

    def __init__(self, signer: TokenSigner, service_tokens: Iterable[Secret]) -> None:
        self.signer = signer
        self._service = [t.reveal().encode() for t in service_tokens]

    def _service_index(self, presented: str) -> int | None:
        data = presented.encode()
        found: int | None = None
        for index, secret in enumerate(self._service):  # compare with all of them: no early exit
            if hmac.compare_digest(secret, data):
                found = index
        return found

    def authenticate(self, credential: Presented) -> Identity:
        """The caller's identity, or a 401 :class:`~dicomlab_core.errors.Unauthorized`.

        A service secret counts only in the ``Authorization`` header; in ``?token=`` it is refused
        like any unknown credential.
        """
        presented = credential.value
        if presented and not presented.startswith("v1."):
            index = self._service_index(presented)
            if index is not None:
                if not credential.in_query:
                    return Identity(key=f"service:{index}", service=True)
                TOKEN_REJECTIONS.labels(str(TokenRejection.SERVICE_TOKEN_IN_QUERY)).inc()
                raise unauthorized()
        try:
            claims = self.signer.verify(presented)
        except TokenError as exc:
            TOKEN_REJECTIONS.labels(str(exc.reason)).inc()
            raise unauthorized() from None
        return Identity(key=claims.token_id, claims=claims)


def require_scope(identity: Identity, level: RouteLevel, *, study: str | None = None, series: str | None = None,
                  instance: str | None = None, orthanc_id: str | None = None) -> Grant | None:
    """The grant that opens a route of ``level`` whose path names these identifiers, else a 403.

    Services read everything (None: no grant needed); tokens go through
    :data:`~dicomlab_core.tokens.SCOPE_TABLE`.
    """
    if identity.service:
        return None
    assert identity.claims is not None
    grant = identity.claims.scope.permits(level, study=study, series=series, instance=instance,
                                          orthanc_id=orthanc_id)
    if grant is None:
        deny()
    return grant


def deny(reason: TokenRejection = TokenRejection.OUT_OF_SCOPE) -> NoReturn:
    """Count a refused request by ``reason`` and refuse it (403, the generic body)."""
    TOKEN_REJECTIONS.labels(str(reason)).inc()
    raise forbidden()


def require_service(identity: Identity) -> None:
    if not identity.service:
        TOKEN_REJECTIONS.labels(str(TokenRejection.OUT_OF_SCOPE)).inc()
        raise forbidden()


class RateLimiter:
    """Token buckets keyed by caller, at most ``max_keys`` of them (least recently used evicted)."""

    def __init__(self, rate: float, burst: int, *, max_keys: int = 10_000, clock: object = time.monotonic) -> None:
        self.rate = rate
        self.burst = float(max(burst, 1))
        self.max_keys = max_keys
        self._clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._lock = threading.Lock()

    def check(self, key: str) -> None:
        """Take one request from ``key``'s bucket, or raise 429 with ``Retry-After``."""
        if self.rate <= 0:
            return
        now: float = self._clock()  # type: ignore[operator]
        with self._lock:
            tokens, last = self._buckets.pop(key, (self.burst, now))
            tokens = min(self.burst, tokens + (now - last) * self.rate)
            allowed = tokens >= 1.0
            if allowed:
                tokens -= 1.0
            self._buckets[key] = (tokens, now)
            while len(self._buckets) > self.max_keys:
                self._buckets.popitem(last=False)
        if not allowed:
            RATE_LIMITED.inc()
            retry = max(1, int((1.0 - tokens) / self.rate + 0.999))
            raise TooManyRequests("rate limit exceeded", headers={"Retry-After": str(retry)})
