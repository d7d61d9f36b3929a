"""Simulated readers: label a job through the same HTTP API the browser UI uses.

For demos and load tests. Each reader signs in (session cookie + CSRF header), asks for the next
image with one image of lookahead (like the UI's prefetch), sends a heartbeat and a token refresh
now and then, and submits an answer derived from the ground truth with reader noise:

- with probability ``accuracy`` a finding is reported as it truly is, else flipped;
- a small share of findings (``uncertain_rate``) is answered "uncertain";
- "No Finding" is made consistent with the other findings (present only when nothing else is);
- the reported time per image is drawn from a log-normal distribution around ``seconds_per_image``.

A reader with a low accuracy (e.g. 0.6) plays the unreliable one that Dawid–Skene should discount.
Submissions are retried with the same ``clientSubmissionId`` on 503 (the API is idempotent).
"""

from __future__ import annotations

import logging
import math
import random
import time
import uuid
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import requests

from dicomlab_core.labels import NO_FINDING, FindingState

logger = logging.getLogger(__name__)

RETRYABLE = {502, 503, 504}


@dataclass(frozen=True)
class ReaderSpec:
    username: str
    password: str
    accuracy: float


@dataclass
class ReaderOutcome:
    username: str
    submitted: int = 0
    skipped: int = 0
    errors: list[str] = field(default_factory=list)
    answers: dict[str, dict[str, str]] = field(default_factory=dict)
    """SOP Instance UID → the findings this reader submitted."""


class ApiClient:
    """A minimal signed-in client of the labeling API."""

    def __init__(self, base_url: str, *, timeout: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.http = requests.Session()
        self.timeout = timeout
        self.csrf = ""

    def call(self, method: str, path: str, body: Any = None, *, retries: int = 3) -> tuple[int, Any]:
        for attempt in range(retries + 1):
            try:
                response = self.http.request(method, f"{self.base_url}/api{path}", json=body, timeout=self.timeout,
                                             headers={"X-CSRF-Token": self.csrf} if self.csrf else {})
            except requests.ConnectionError:
                if attempt == retries:
                    raise
                time.sleep(0.5 * 2 ** attempt)
                continue
            if response.status_code in RETRYABLE and attempt < retries:
                time.sleep(0.5 * 2 ** attempt)
                continue
            return response.status_code, (response.json() if response.content else None)
        raise AssertionError("unreachable")

    def login(self, username: str, password: str) -> None:
        status, data = self.call("POST", "/auth/login", {"username": username, "password": password})
        if status != 200:
            raise RuntimeError(f"login of {username!r} failed: {status} {data}")
        self.csrf = data["csrfToken"]


def _truth_state(value: Any) -> bool:
    if isinstance(value, str):
        return value.lower() in ("present", "1", "true", "yes")
    return bool(value)


def noisy_answer(truth: Mapping[str, Any], labels: Sequence[str], accuracy: float, rng: random.Random,
                 uncertain_rate: float = 0.03) -> dict[str, str]:
    """One reader's findings for an image with the given truth (see the module docstring)."""
    findings: dict[str, str] = {}
    for label in labels:
        if label == NO_FINDING:
            continue
        present = _truth_state(truth.get(label, False))
        if rng.random() >= accuracy:
            present = not present
        if rng.random() < uncertain_rate:
            findings[label] = FindingState.UNCERTAIN.value
        else:
            findings[label] = (FindingState.PRESENT if present else FindingState.ABSENT).value
    if NO_FINDING in labels:
        anything = any(v == FindingState.PRESENT.value for v in findings.values())
        findings[NO_FINDING] = (FindingState.ABSENT if anything else FindingState.PRESENT).value
    return findings


def _run_reader(base_url: str, job_id: int, spec: ReaderSpec, truth: Mapping[str, Mapping[str, Any]],
                rng: random.Random, seconds_per_image: float, max_images: int | None) -> ReaderOutcome:
    outcome = ReaderOutcome(spec.username)
    client = ApiClient(base_url)
    client.login(spec.username, spec.password)
    first = True
    while max_images is None or outcome.submitted < max_images:
        status, data = client.call("POST", f"/jobs/{job_id}/next", {"lookahead": 1})
        if status == 204:
            break
        if status != 200:
            outcome.errors.append(f"next: {status} {data}")
            break
        assignment = data["assignment"]
        if first:
            client.call("POST", "/ui-metrics", {"event": "time_to_first_image",
                                                "seconds": round(rng.uniform(0.4, 2.0), 3)})
            first = False
        sop = assignment["image"]["sopInstanceUid"]
        image_truth = truth.get(sop)
        if image_truth is None:
            client.call("POST", f"/assignments/{assignment['id']}/skip", {"reason": "no ground truth for image"})
            outcome.skipped += 1
            continue
        if rng.random() < 0.2:
            client.call("POST", f"/assignments/{assignment['id']}/heartbeat")
            client.call("POST", f"/assignments/{assignment['id']}/token")
        findings = noisy_answer(image_truth, assignment["labels"], spec.accuracy, rng)
        seconds = round(min(600.0, rng.lognormvariate(math.log(seconds_per_image), 0.4)), 1)
        body = {"clientSubmissionId": str(uuid.UUID(int=rng.getrandbits(128))),
                "answer": {"findings": findings, "rois": [], "sopInstanceUid": sop, "timeSpentSeconds": seconds}}
        status, data = client.call("POST", f"/assignments/{assignment['id']}/submit", body)
        if status not in (200, 201):
            outcome.errors.append(f"submit: {status} {data}")
            continue
        outcome.submitted += 1
        outcome.answers[sop] = findings
    return outcome


def simulate_readers(base_url: str, job_id: int, readers: Sequence[tuple[str, str, float]],
                     truth: Mapping[str, Mapping[str, Any]], *, seed: int = 0, seconds_per_image: float = 20.0,
                     max_images_per_reader: int | None = None, parallel: bool = True) -> list[ReaderOutcome]:
    """Let ``readers`` (username, password, accuracy) label job ``job_id`` until nothing is left for them.

    ``truth`` maps SOP Instance UID → {label: present (bool/0/1/"present")}. Returns one outcome per
    reader (counts, errors, and the answers it gave).
    """
    specs = [ReaderSpec(u, p, a) for u, p, a in readers]
    rngs = [random.Random(f"{seed}:{spec.username}") for spec in specs]
    if not parallel:
        return [_run_reader(base_url, job_id, s, truth, r, seconds_per_image, max_images_per_reader)
                for s, r in zip(specs, rngs, strict=True)]
    with ThreadPoolExecutor(max_workers=max(1, len(specs))) as pool:
        futures = [pool.submit(_run_reader, base_url, job_id, s, truth, r, seconds_per_image, max_images_per_reader)
                   for s, r in zip(specs, rngs, strict=True)]
        return [f.result() for f in futures]
