"""Fixtures of the manifest tests: a real Orthanc of our own holding a controlled population.

See :mod:`manifest_support` for what the population contains.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from manifest_support import Population, make_config, population_datasets, upload
from support.servers import private_orthanc

from dicomlab_cli.processes import OrthancServer
from dicomlab_core.orthanc import OrthancClient
from dicomlab_manifest.service import ManifestService


@pytest.fixture(scope="session")
def population(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Population]:
    with private_orthanc(tmp_path_factory.mktemp("manifest-orthanc")) as server:
        client = server.client()
        try:
            yield Population(server, upload(client, population_datasets()))
        finally:
            client.close()


@pytest.fixture
def make_service(population: Population, tmp_path: Path) -> Iterator[Callable[..., ManifestService]]:
    """Factory of services against the population's Orthanc with a ``file://`` store in ``tmp_path``."""
    made: list[ManifestService] = []

    def factory(server: OrthancServer | None = None, client: OrthancClient | None = None,
                **overrides: Any) -> ManifestService:
        service = ManifestService(make_config(server or population.server, tmp_path, **overrides), client=client)
        made.append(service)
        return service

    yield factory
    for service in made:
        service.close()


