"""Login limits keyed on account + client address, their atomicity, and sessions ended by a password change.

Against the real app on SQLite and PostgreSQL (and a real threaded HTTP server for the parallel case).
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
from flask import Flask
from selfhosted_support import ADMIN, PASSWORD, Api, create_users, database_url, make_config, serve
from sqlalchemy import select, update

from dicomlab_cli.processes import OrthancServer, PostgresServer
from dicomlab_labeling.app import create_app
from dicomlab_labeling.workflow.auth import LoginLimit, client_address
from dicomlab_labeling.workflow.models import LoginThrottle, utcnow

FREE = 5
DELAY = 60.0
WRONG = "not-the-password"


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    postgres: PostgresServer | None = request.getfixturevalue("postgres") if request.param == "postgres" else None
    return database_url(request.param, tmp_path, postgres)


def _app(tmp_path: Path, db_url: str, orthanc: OrthancServer, **auth: Any) -> Flask:
    config = make_config(tmp_path, db_url, orthanc)
    settings = {"login_max_failures": FREE, "login_delay_seconds": DELAY, "login_max_delay_seconds": 3600, **auth}
    return create_app(replace(config, auth=replace(config.auth, **settings)))


@pytest.fixture
def app(tmp_path: Path, db_url: str, orthanc: OrthancServer) -> Iterator[Flask]:
    application = _app(tmp_path, db_url, orthanc)
    yield application
    application.extensions["dicomlab_labeling_api"].db.dispose()


def _login(client: Any, password: str, address: str, *, username: str = ADMIN[0],
           forwarded_for: str | None = None) -> Any:
    headers = {"X-Forwarded-For": forwarded_for} if forwarded_for is not None else {}
    return client.post("/api/auth/login", json={"username": username, "password": password}, headers=headers,
                       environ_base={"REMOTE_ADDR": address})


def test_failures_from_one_address_never_block_the_account_elsewhere(app: Flask) -> None:
    client = app.test_client()
    for _ in range(FREE):
        assert _login(client, WRONG, "203.0.113.7").status_code == 401
    limited = _login(client, ADMIN[1], "203.0.113.7")
    assert limited.status_code == 429
    assert 1 <= int(limited.headers["Retry-After"]) <= DELAY
    # The real admin at another address signs in at once, and its own wrong guesses count for it alone.
    assert _login(app.test_client(), ADMIN[1], "198.51.100.20").status_code == 200
    assert _login(app.test_client(), WRONG, "198.51.100.21").status_code == 401
    # Another account from the guessing address is not delayed either.
    create_users(Api(app).login(*ADMIN), ["ann"])
    assert _login(app.test_client(), PASSWORD, "203.0.113.7", username="ann").status_code == 200


def test_delays_grow_and_a_success_resets_them(app: Flask) -> None:
    client = app.test_client()
    api = app.extensions["dicomlab_labeling_api"]

    def wait_over() -> None:
        with api.db.session() as session:
            session.execute(update(LoginThrottle).values(blocked_until=utcnow() - timedelta(seconds=1)))

    for _ in range(FREE):
        assert _login(client, WRONG, "203.0.113.7").status_code == 401
    first = int(_login(client, WRONG, "203.0.113.7").headers["Retry-After"])
    wait_over()
    assert _login(client, WRONG, "203.0.113.7").status_code == 401  # the wait is over: one more try
    second = int(_login(client, WRONG, "203.0.113.7").headers["Retry-After"])
    assert first <= DELAY < second <= 2 * DELAY  # the delay doubled, no long hard lockout
    wait_over()
    assert _login(client, ADMIN[1], "203.0.113.7").status_code == 200
    assert _login(client, WRONG, "203.0.113.7").status_code == 401  # counting starts afresh


def test_delay_schedule() -> None:
    limit = LoginLimit(free_failures=3, window_seconds=900, delay_seconds=1.0, max_delay_seconds=300)
    assert [limit.delay(n) for n in range(1, 8)] == [0.0, 0.0, 1.0, 2.0, 4.0, 8.0, 16.0]
    assert limit.delay(10_000) == 300.0
    assert LoginLimit.key("Admin ", "10.0.0.1") == LoginLimit.key("admin", "10.0.0.1") != LoginLimit.key(
        "admin", "10.0.0.2")
    assert "admin" not in LoginLimit.key("admin", "10.0.0.1")


def test_client_address_from_forwarded_for_only_through_trusted_proxies() -> None:
    proxies = ("10.0.0.0/8",)
    assert client_address("192.0.2.1", ["198.51.100.9"], ()) == "192.0.2.1"
    assert client_address("192.0.2.1", ["198.51.100.9"], proxies) == "192.0.2.1"  # peer is not a proxy
    assert client_address("10.0.0.2", ["198.51.100.9"], proxies) == "198.51.100.9"
    # The client may prepend anything; the right-most untrusted hop is what our proxy saw.
    assert client_address("10.0.0.2", ["1.2.3.4, 198.51.100.9, 10.0.0.3"], proxies) == "198.51.100.9"
    assert client_address("10.0.0.2", ["1.2.3.4", "198.51.100.9"], proxies) == "198.51.100.9"
    assert client_address("10.0.0.2", ["not-an-address"], proxies) == "10.0.0.2"
    assert client_address("10.0.0.2", [], proxies) == "10.0.0.2"


def test_forwarded_for_keys_the_limit_behind_a_trusted_ingress(tmp_path: Path, db_url: str,
                                                               orthanc: OrthancServer) -> None:
    application = _app(tmp_path, db_url, orthanc, forwarded_for_proxies=("10.0.0.0/8",))
    try:
        client = application.test_client()
        for _ in range(FREE):
            assert _login(client, WRONG, "10.0.0.5", forwarded_for="203.0.113.7").status_code == 401
        assert _login(client, ADMIN[1], "10.0.0.5", forwarded_for="203.0.113.7").status_code == 429
        # Every user arrives from the ingress address, yet the real admin is not locked out.
        assert _login(client, ADMIN[1], "10.0.0.5", forwarded_for="198.51.100.20").status_code == 200
        # From an untrusted peer the header is ignored: it cannot be used to dodge the limit.
        for _ in range(FREE):
            assert _login(client, WRONG, "192.0.2.50", forwarded_for="1.1.1.1").status_code == 401
        assert _login(client, ADMIN[1], "192.0.2.50", forwarded_for="2.2.2.2").status_code == 429
    finally:
        application.extensions["dicomlab_labeling_api"].db.dispose()


def test_parallel_wrong_logins_never_exceed_the_allowance(app: Flask) -> None:
    with serve(app) as base_url:
        def attempt(_: int) -> int:
            response = requests.post(f"{base_url}/api/auth/login", json={"username": ADMIN[0], "password": WRONG},
                                     timeout=60)
            return response.status_code

        with ThreadPoolExecutor(max_workers=30) as pool:
            statuses = list(pool.map(attempt, range(30)))
    assert sorted(set(statuses)) == [401, 429]
    assert statuses.count(401) == FREE, statuses  # exactly the allowance reached the password check
    assert statuses.count(429) == 30 - FREE


def test_password_change_ends_the_accounts_other_sessions(app: Flask) -> None:
    create_users(Api(app).login(*ADMIN), ["ann"])
    laptop, phone = Api(app).login("ann", PASSWORD), Api(app).login("ann", PASSWORD)
    assert phone.call("GET", "/auth/me")[0] == 200
    status, _ = laptop.call("POST", "/auth/password", {"currentPassword": PASSWORD, "newPassword": "a-new-password-2"})
    assert status == 204
    assert laptop.call("GET", "/auth/me")[0] == 200  # the session that changed it stays
    assert phone.call("GET", "/auth/me")[0] == 401
    Api(app).login("ann", "a-new-password-2")
    # An admin's reset ends every session of the account.
    tablet = Api(app).login("ann", "a-new-password-2")
    admin = Api(app).login(*ADMIN)
    users = admin.call("GET", "/admin/users")[1]["users"]
    ann_id = next(u["id"] for u in users if u["username"] == "ann")
    assert admin.call("PATCH", f"/admin/users/{ann_id}", {"password": "reset-password-3"})[0] == 200
    assert tablet.call("GET", "/auth/me")[0] == 401 and laptop.call("GET", "/auth/me")[0] == 401
    assert admin.call("GET", "/auth/me")[0] == 200


def test_forgotten_pairs_are_cleaned_up(app: Flask) -> None:
    api = app.extensions["dicomlab_labeling_api"]
    with api.db.session() as session:
        session.add(LoginThrottle(key="0" * 64, failures=3, last_failure_at=utcnow() - timedelta(days=2)))
    assert _login(app.test_client(), WRONG, "203.0.113.7").status_code == 401
    with api.db.session(readonly=True) as session:
        keys = set(session.scalars(select(LoginThrottle.key)))
    assert "0" * 64 not in keys and len(keys) == 1  # the stale pair went; the fresh one is counted


def test_guessing_the_current_password_is_limited_too(app: Flask) -> None:
    admin = Api(app).login(*ADMIN)
    for _ in range(FREE):
        assert admin.call("POST", "/auth/password", {"currentPassword": WRONG, "newPassword": "x" * 12})[0] == 401
    assert admin.call("POST", "/auth/password", {"currentPassword": ADMIN[1], "newPassword": "x" * 12})[0] == 429
