"""Fixtures for the training tests: synthetic study sets on disk with output manifests made from their truth."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from training_synth import SynthSet, make_set


@pytest.fixture(scope="session")
def small_set(tmp_path_factory: pytest.TempPathFactory) -> SynthSet:
    """About 40 images at 48 px, every encoding variant represented."""
    return make_set(tmp_path_factory.mktemp("synth-small") / "dicom", patients=16, rows=48, columns=40, seed=11,
                    monochrome1_fraction=0.4, voi_fraction=0.4, compressed_fraction=0.3)


@pytest.fixture(scope="session")
def learning_set(tmp_path_factory: pytest.TempPathFactory) -> SynthSet:
    """A few hundred images at 64 px for the learning test."""
    return make_set(tmp_path_factory.mktemp("synth-learn") / "dicom", patients=200, rows=64, columns=64, seed=5,
                    monochrome1_fraction=0.3, voi_fraction=0.3, compressed_fraction=0.2)


@pytest.fixture(autouse=True)
def _few_threads() -> Iterator[None]:
    """The machine is shared: keep torch to one thread in tests."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
