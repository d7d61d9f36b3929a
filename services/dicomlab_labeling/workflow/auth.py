"""Accounts, login sessions, CSRF and trusted-header SSO for the self-hosted labeling UI.

- Passwords are argon2id hashes (argon2-cffi defaults), rehashed on login when the parameters change.
- A login creates a server-side session: the cookie carries a random token, the database only its
  HMAC under the session secret, so a database dump does not yield usable cookies and logout
  really revokes. The cookie is HttpOnly, SameSite=Strict and Secure (configurable for local http).
- Every state-changing request must echo the session's CSRF token in ``X-CSRF-Token``.
- Behind oauth2-proxy, ``X-Forwarded-Email``/``X-Forwarded-User`` sign a user in, but only when the
  request comes straight from a trusted proxy address: anyone else could set those headers.
- Failed logins are counted per (account, client address) pair in the database (shared by every
  gunicorn worker); past a free allowance each attempt waits a delay that doubles per failure,
  answered 429 with ``Retry-After`` (:class:`LoginLimit`). The client address comes from
  ``X-Forwarded-For`` only through configured trusted proxies (:func:`client_address`).
- A password change ends the account's other sessions (:func:`end_other_sessions`).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
import math
import secrets
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import wraps
from typing import Any, TypeVar, cast

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from flask import g, request
from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from dicomlab_core.errors import BadRequest, Conflict, Forbidden, TooManyRequests, Unauthorized
from dicomlab_labeling.workflow.models import LoginSession, LoginThrottle, Role, User, utcnow

logger = logging.getLogger(__name__)

COOKIE_NAME = "dicomlab_session"
CSRF_HEADER = "X-CSRF-Token"
MIN_PASSWORD_LENGTH = 10
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

_hasher = PasswordHasher()
F = TypeVar("F", bound=Callable[..., Any])


def set_password_cost(*, time_cost: int, memory_kib: int) -> None:
    """Parameters of new hashes (existing hashes verify with their own and are upgraded at login); also
    computes the dummy hash for these parameters now, at start-up, not at a first login."""
    global _hasher, _dummy_hash
    if (_hasher.time_cost, _hasher.memory_cost) != (time_cost, memory_kib):
        _hasher = PasswordHasher(time_cost=time_cost, memory_cost=memory_kib)
        _dummy_hash = None
    _dummy()


def hash_password(password: str) -> str:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise BadRequest(f"password: at least {MIN_PASSWORD_LENGTH} characters are required")
    return _hasher.hash(password)


# A fixed hash to verify against when the account does not exist: the answer takes as long either way.
# Computed by set_password_cost (the app's start) or on first use, not at import: an argon2 hash at the
# default cost is most of a second that every process importing this module (the CLI's) would pay.
_dummy_hash: str | None = None


def _dummy() -> str:
    global _dummy_hash
    if _dummy_hash is None:
        _dummy_hash = _hasher.hash(secrets.token_urlsafe(16))
    return _dummy_hash


def verify_password(user: User | None, password: str) -> bool:
    """Whether ``password`` is ``user``'s; upgrades the stored hash when argon2's parameters changed."""
    stored = user.password_hash if user is not None and user.password_hash else _dummy()
    try:
        _hasher.verify(stored, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False
    if user is None or not user.password_hash or not user.active:
        return False
    if _hasher.check_needs_rehash(stored):
        user.password_hash = _hasher.hash(password)
    return True


def check_username(username: str) -> str:
    name = username.strip()
    if not name or len(name) > 150 or any(c.isspace() or not c.isprintable() for c in name):
        raise BadRequest("username: 1–150 printable characters without spaces")
    return name


def create_user(session: Session, username: str, *, password: str | None, role: Role | str,
                email: str = "") -> User:
    """A new account (``password=None``: SSO only). Raises :class:`Conflict` if the name is taken."""
    name = check_username(username)
    try:
        role = Role(role)
    except ValueError:
        raise BadRequest(f"role: one of {', '.join(r.value for r in Role)}") from None
    if session.scalar(select(User.id).where(User.username == name)) is not None:
        raise Conflict(f"user {name!r} already exists")
    user = User(username=name, role=role.value, email=email,
                password_hash=hash_password(password) if password is not None else None)
    session.add(user)
    session.flush()
    return user


def ensure_admin(session: Session, username: str, password: str) -> User:
    """Create the start-up admin, or make the existing account an active admin with this password."""
    user = session.scalar(select(User).where(User.username == username))
    if user is None:
        return create_user(session, username, password=password, role=Role.ADMIN)
    user.role = Role.ADMIN.value
    user.active = True
    if not user.password_hash or not verify_password(user, password):
        user.password_hash = hash_password(password)
    return user


def has_role(user: User, role: Role) -> bool:
    return Role(user.role).rank >= role.rank


# ------------------------------------------------------------------ sessions


def _token_hash(secret: str, token: str) -> str:
    return hmac.new(secret.encode(), token.encode(), hashlib.sha256).hexdigest()


def start_session(session: Session, user: User, *, secret: str, hours: int) -> tuple[str, LoginSession]:
    """A new login session for ``user``; returns the cookie value (shown once) and the row."""
    token = secrets.token_urlsafe(32)
    row = LoginSession(token_hash=_token_hash(secret, token), user_id=user.id, csrf_token=secrets.token_urlsafe(32),
                       expires_at=utcnow() + timedelta(hours=hours))
    session.add(row)
    session.flush()
    return token, row


def find_session(session: Session, *, secret: str, token: str) -> tuple[LoginSession, User] | None:
    """The live session and its (active) user for a cookie value, or None."""
    if not token or len(token) > 200:
        return None
    row = session.scalar(select(LoginSession).where(LoginSession.token_hash == _token_hash(secret, token)))
    if row is None or row.revoked or row.expires_at <= utcnow():
        return None
    user = session.get(User, row.user_id)
    if user is None or not user.active:
        return None
    return row, user


# ------------------------------------------------------------------ rate limiting


@dataclass(frozen=True)
class LoginLimit:
    """Growing delays for failed logins, per account *and* client address.

    The first ``free_failures`` attempts of an (account, client) pair pass at once; after that each
    attempt must wait ``delay_seconds``, doubling with every further failure up to
    ``max_delay_seconds``. A pair's count is forgotten after ``window_seconds`` without an attempt
    and reset by a successful login. Keying on the pair means someone guessing ``admin``'s password
    from one address never delays the real admin signing in from another.

    :meth:`reserve` counts an attempt *before* its password is checked, in one transaction that
    locks the pair's row (``SELECT ... FOR UPDATE`` on PostgreSQL, ``BEGIN IMMEDIATE`` on SQLite):
    parallel attempts are serialized, so no more than the allowance is ever checked.
    """

    free_failures: int
    window_seconds: int
    delay_seconds: float = 1.0
    max_delay_seconds: int = 300

    @staticmethod
    def key(username: str, client: str) -> str:
        """The row key of (account, client): a hash, so typed-in user names are not stored."""
        material = f"{username.strip().lower()[:150]}\x00{client[:64]}"
        return hashlib.sha256(material.encode()).hexdigest()

    def delay(self, failures: int) -> float:
        """Seconds the next attempt must wait after ``failures`` counted attempts (0 within the allowance)."""
        over = failures - self.free_failures
        if over < 0:
            return 0.0
        return min(float(self.max_delay_seconds), self.delay_seconds * 2.0 ** min(over, 40))

    def reserve(self, session: Session, key: str) -> None:
        """Count one attempt for ``key``, or raise :class:`TooManyRequests` while it must still wait.

        Runs in the caller's write transaction, which should commit before the password is checked.
        """
        now = utcnow()
        row = None
        while row is None:  # another request's clean-up may remove a stale row between these two statements
            self._insert_if_missing(session, key, now)
            row = session.scalar(select(LoginThrottle).where(LoginThrottle.key == key).with_for_update())
        if now - row.last_failure_at > timedelta(seconds=self.window_seconds):
            row.failures, row.blocked_until = 0, None
        if row.blocked_until is not None and row.blocked_until > now:
            wait = math.ceil((row.blocked_until - now).total_seconds())
            raise TooManyRequests("too many failed logins for this account from this address; try again later",
                                  headers={"Retry-After": str(max(1, wait))})
        row.failures += 1
        row.last_failure_at = now
        wait_next = self.delay(row.failures)
        row.blocked_until = now + timedelta(seconds=wait_next) if wait_next else None
        # Keep the table small: forget pairs past their window and their delay. Rows another attempt
        # holds locked are skipped (and left for later), so two clean-ups never wait on each other.
        stale = now - timedelta(seconds=self.window_seconds + self.max_delay_seconds)
        old = (select(LoginThrottle.key).where(LoginThrottle.last_failure_at < stale, LoginThrottle.key != key)
               .limit(100).with_for_update(skip_locked=True))
        session.execute(delete(LoginThrottle).where(LoginThrottle.key.in_(old)))

    @staticmethod
    def _insert_if_missing(session: Session, key: str, now: datetime) -> None:
        dialect = session.get_bind().dialect.name
        insert: Any
        if dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        else:
            from sqlalchemy.dialects.sqlite import insert
        session.execute(insert(LoginThrottle).values(key=key, failures=0, last_failure_at=now)
                        .on_conflict_do_nothing(index_elements=["key"]))

    def clear(self, session: Session, key: str) -> None:
        """A successful login: the pair starts afresh."""
        session.execute(delete(LoginThrottle).where(LoginThrottle.key == key))


def client_address(peer: str | None, forwarded_for: Iterable[str], proxies: Sequence[str]) -> str:
    """The client's address: the direct peer, unless the peer is one of ``proxies``.

    Behind trusted proxies the client is the right-most ``X-Forwarded-For`` entry that is not itself a
    trusted proxy (each proxy appends the address it saw; entries further left are the client's own
    claims). Without trusted proxies the header is ignored: anyone could write it.
    """
    address = peer or ""
    if not proxies or not trusted(address, proxies):
        return address
    hops = [hop.strip() for value in forwarded_for for hop in value.split(",") if hop.strip()]
    for hop in reversed(hops):
        try:
            ip = ipaddress.ip_address(hop)
        except ValueError:
            return address  # a proxy we trust wrote nonsense: fall back to the proxy's own address
        if not trusted(str(ip), proxies):
            return str(ip)
    return hops[0] if hops else address


def end_other_sessions(session: Session, user_id: int, keep: int | None = None) -> int:
    """Revoke every live session of ``user_id`` but ``keep`` (after a password change); returns how many."""
    query = update(LoginSession).where(LoginSession.user_id == user_id, LoginSession.revoked.is_(False))
    if keep is not None:
        query = query.where(LoginSession.id != keep)
    result = session.execute(query.values(revoked=True))
    return int(getattr(result, "rowcount", 0) or 0)


# ------------------------------------------------------------------ trusted-header SSO


def trusted(address: str | None, proxies: Iterable[str]) -> bool:
    """Whether ``address`` lies in one of the trusted proxy networks."""
    if not address:
        return False
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    for entry in proxies:
        try:
            if ip in ipaddress.ip_network(entry, strict=False):
                return True
        except ValueError:
            logger.warning("ignoring invalid trusted proxy entry %r", entry)
    return False


def sso_identity(headers: Any, *, user_header: str, email_header: str) -> tuple[str, str] | None:
    """(username, email) from oauth2-proxy's headers, or None when it sent none."""
    email = (headers.get(email_header) or "").strip()
    user = (headers.get(user_header) or "").strip() or email
    if not user:
        return None
    return check_username(user), email


def sso_user(session: Session, username: str, email: str, *, auto_create: bool) -> User:
    user = session.scalar(select(User).where(User.username == username))
    if user is None:
        if not auto_create:
            raise Forbidden("this account is not registered for labeling; ask an admin")
        user = create_user(session, username, password=None, role=Role.ANNOTATOR, email=email)
        logger.info("created SSO account", extra={"user_id": user.id})
    if not user.active:
        raise Forbidden("this account is disabled")
    return user


# ------------------------------------------------------------------ request guards


def current_user() -> User:
    """The signed-in user of this request (set by the API blueprint's ``before_request``)."""
    user = g.get("labeling_user")
    if user is None:
        raise Unauthorized("sign in first")
    return cast(User, user)


def check_csrf(expected: str | None) -> None:
    """Refuse a state-changing request whose ``X-CSRF-Token`` does not match the session's."""
    if request.method in SAFE_METHODS:
        return
    sent = request.headers.get(CSRF_HEADER, "")
    if not expected or not sent or not hmac.compare_digest(sent, expected):
        raise Forbidden(f"missing or wrong {CSRF_HEADER} header")


def require(role: Role) -> Callable[[F], F]:
    """Decorator: the view needs a signed-in user with at least ``role``."""

    def decorate(view: F) -> F:
        @wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            user = current_user()
            if not has_role(user, role):
                raise Forbidden(f"this needs the {role.value} role")
            return view(*args, **kwargs)

        return cast(F, wrapper)

    return decorate


def session_expiry(hours: int) -> datetime:
    return utcnow() + timedelta(hours=hours)
