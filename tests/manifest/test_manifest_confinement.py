"""No file oracle: ``exclude_manifests`` URIs reach only the configured object store, with one refusal."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from flask.testing import FlaskClient
from manifest_support import Population, make_config

from dicomlab_core.errors import BadRequest
from dicomlab_core.objectstore import OUTSIDE_STORE
from dicomlab_manifest.app import create_app

AUTH = {"Authorization": "Bearer test-service-token"}


def test_exclude_manifests_outside_the_store_get_one_answer(population: Population, tmp_path: Path) -> None:
    store = tmp_path / "store"
    store.mkdir()
    outside = tmp_path / "private" / "labelled.manifest"
    outside.parent.mkdir()
    outside.write_text(json.dumps({"source": "x"}) + "\n")
    (store / "leak.jsonl").symlink_to(outside)
    (store / "up").symlink_to(outside.parent)
    uris = [f"file://{outside}", f"file://{tmp_path}/private/missing.manifest", f"file://{outside.parent}",
            f"file://{store}/../private/labelled.manifest", f"file://{store}/leak.jsonl",
            f"file://{store}/up/labelled.manifest", "file:///etc/hostname", "s3://another-bucket/m.jsonl"]
    app = create_app(make_config(population.server, tmp_path), resume_jobs=False)
    try:
        client: FlaskClient = app.test_client()
        answers = set()
        for uri in uris:
            response = client.post("/manifests?sync=true", headers=AUTH,
                                   json={"name": "x", "exclude_manifests": [uri]})
            answers.add((response.status_code, json.dumps(response.get_json(), sort_keys=True)))
        assert answers == {(400, json.dumps({"code": 400, "name": "Bad Request",
                                             "description": f"exclude_manifests: {OUTSIDE_STORE}"},
                                            sort_keys=True))}
        # Every answer, refusals included, tells the browser not to sniff its type.
        for response in (client.get("/manifests", headers=AUTH), client.get("/manifests"), client.get("/healthz"),
                         client.post("/manifests", headers=AUTH, json={"name": "x", "exclude_manifests": [uris[0]]})):
            assert response.headers["X-Content-Type-Options"] == "nosniff", response.status_code
        # The builder itself holds the same line (a job resumed from before the fix is not a way round).
        service = app.extensions["dicomlab_manifest"]
        for uri in uris:
            with pytest.raises(BadRequest) as refused:
                list(service.manifests.read_lines(uri, field="exclude_manifests"))
            assert refused.value.description == f"exclude_manifests: {OUTSIDE_STORE}"
    finally:
        app.extensions["dicomlab_manifest"].close()
