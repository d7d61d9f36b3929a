"""HTTP API: ``POST /manifests``, ``GET /manifests``, ``GET /manifests/<name>``, ``GET /manifests/jobs/<id>``.

Every route needs ``Authorization: Bearer <service token>`` (compared in constant time): the
manifest service is called by other services and operators, never by browsers.
"""

from __future__ import annotations

import hmac
from http import HTTPStatus
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request, url_for

from dicomlab_core.errors import BadRequest, Unauthorized
from dicomlab_manifest.service import ManifestService
from dicomlab_manifest.spec import NAME_PATTERN

blueprint = Blueprint("manifests", __name__)


def _service() -> ManifestService:
    service: ManifestService = current_app.extensions["dicomlab_manifest"]
    return service


@blueprint.before_request
def _authenticate() -> None:
    expected = _service().config.service_token.reveal().encode()
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), expected):
        raise Unauthorized("a valid bearer service token is required",
                           headers={"WWW-Authenticate": 'Bearer realm="dicomlab-manifest"'})


def _job_body(record: dict[str, Any]) -> dict[str, Any]:
    return {**record, "links": {"self": url_for("manifests.get_job", job_id=record["id"])}}


@blueprint.post("/manifests")
def create_manifest() -> tuple[Response, int, dict[str, str]]:
    """Validate a selection spec and start a build: 202 + job, or with ``?sync=true`` 201 + result."""
    service = _service()
    sync = request.args.get("sync", "false").lower()
    if sync not in ("true", "false", "1", "0"):
        raise BadRequest("sync: expected true or false")
    data = request.get_json(silent=True)
    if data is None:
        raise BadRequest("the request body must be a JSON selection spec (Content-Type: application/json)")
    spec = service.parse(data)
    service.precheck(spec)
    wait = sync in ("true", "1")
    record = service.runner.submit(spec, dedicated=wait)  # a waiting request never queues behind other builds
    headers = {"Location": url_for("manifests.get_job", job_id=record["id"])}
    if wait:
        record = service.runner.wait(record["id"], service.config.sync_wait_seconds)
        if record["status"] == "succeeded":
            return jsonify(_job_body(record)), HTTPStatus.CREATED, headers
        if record["status"] == "failed":
            error = record["error"] or {}
            return jsonify({**error, "job": record["id"]}), int(error.get("code", 500)), headers
    return jsonify(_job_body(record)), HTTPStatus.ACCEPTED, headers


@blueprint.get("/manifests/jobs/<job_id>")
def get_job(job_id: str) -> Response:
    return jsonify(_job_body(_service().runner.get(job_id)))


@blueprint.get("/manifests/jobs")
def list_jobs() -> Response:
    return jsonify({"jobs": _service().runner.list()})


@blueprint.get("/manifests")
def list_manifests() -> Response:
    return jsonify({"manifests": _service().manifests.list()})


@blueprint.get("/manifests/<name>")
def get_manifest(name: str) -> Response:
    if not NAME_PATTERN.match(name):
        raise BadRequest(f"name: {name[:40]!r} is not a manifest name")
    return jsonify(_service().manifests.summary(name))

