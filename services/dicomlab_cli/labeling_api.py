"""A signed-in session against the labeling service's JSON API (cookie + CSRF), as the browser UI holds
one: what the demo and the deploy smoke drive the labeling service with.

Unlike the simulated readers' client (:class:`dicomlab_labeling.workflow.simulate.ApiClient`) it never
retries: creating a job or running an export twice is not harmless.
"""

from __future__ import annotations

from typing import Any

import requests

from dicomlab_cli.processes import StackError


class LabelingSession:
    """Signed in as ``username`` at ``base`` (the service's root URL); :meth:`call` takes ``/api/...`` paths."""

    def __init__(self, base: str, username: str, password: str, *, timeout: float = 600) -> None:
        self.base = base
        self.timeout = timeout
        self.http = requests.Session()
        response = self.http.post(f"{base}/api/auth/login", json={"username": username, "password": password},
                                  timeout=30)
        if response.status_code != 200:
            raise StackError(f"login as {username} failed: {response.status_code} {response.text[:200]}")
        self.http.headers["X-CSRF-Token"] = response.json()["csrfToken"]

    def call(self, method: str, path: str, expect: tuple[int, ...] = (200, 201), **kwargs: Any) -> Any:
        """The JSON answer of ``method path`` (``requests`` keyword arguments pass through); a status not
        in ``expect`` raises :class:`StackError` naming the request and the answer's start."""
        response = self.http.request(method, f"{self.base}{path}", timeout=self.timeout, **kwargs)
        if response.status_code not in expect:
            raise StackError(f"{method} {path}: {response.status_code} {response.text[:300]}")
        return response.json() if response.content else None
