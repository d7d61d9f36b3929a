"""Typed configuration from environment variables."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

import pytest

from dicomlab_core.config import Secret, describe_config, load_config, masked
from dicomlab_core.errors import ConfigError
from dicomlab_core.orthanc import OrthancSettings


class Mode(StrEnum):
    FAST = "fast"
    SAFE = "safe"


@dataclass(frozen=True)
class Example:
    api_key: Secret
    """The API key (required)."""
    orthanc: OrthancSettings = field(default_factory=OrthancSettings)
    """Where Orthanc is."""
    workers: int = 4
    """Worker threads."""
    ratio: float = 0.5
    """A ratio between 0 and 1."""
    debug: bool = False
    """Verbose mode."""
    origins: tuple[str, ...] = ("https://a.example",)
    """Allowed origins."""
    mode: Mode = Mode.SAFE
    """How to run."""
    data_dir: Path | None = None
    """Optional data folder."""

    def validate(self) -> None:
        if not 0 <= self.ratio <= 1:
            raise ValueError("RATIO must be between 0 and 1")


def test_loads_typed_values_with_nesting() -> None:
    env = {"APP__API_KEY": "s3cret", "APP__ORTHANC__URL": "http://pacs:8042", "APP__ORTHANC__READ_TIMEOUT": "7.5",
           "APP__WORKERS": "8", "APP__DEBUG": "yes", "APP__ORIGINS": "https://x.org, https://y.org",
           "APP__MODE": "fast", "APP__DATA_DIR": "/tmp/d"}
    config = load_config(Example, "APP", env)
    assert config.api_key.reveal() == "s3cret"
    assert config.orthanc.url == "http://pacs:8042"
    assert config.orthanc.read_timeout == 7.5
    assert config.orthanc.connect_timeout == OrthancSettings().connect_timeout
    assert config.workers == 8
    assert config.debug is True
    assert config.origins == ("https://x.org", "https://y.org")
    assert config.mode is Mode.FAST
    assert config.data_dir == Path("/tmp/d")


def test_missing_required_secret_names_the_variable() -> None:
    with pytest.raises(ConfigError, match=r"APP__API_KEY is required"):
        load_config(Example, "APP", {})


@pytest.mark.parametrize(("name", "value", "expected"), [
    ("APP__WORKERS", "many", "expected integer"),
    ("APP__DEBUG", "perhaps", "expected boolean"),
    ("APP__MODE", "turbo", "one of fast|safe"),
    ("APP__ORTHANC__READ_TIMEOUT", "soon", "expected number"),
])
def test_bad_values_name_the_variable_and_the_expected_type(name: str, value: str, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(Example, "APP", {"APP__API_KEY": "k", name: value})
    assert name in str(info.value)
    assert expected in str(info.value)


def test_validate_hook_runs() -> None:
    with pytest.raises(ConfigError, match="RATIO must be between 0 and 1"):
        load_config(Example, "APP", {"APP__API_KEY": "k", "APP__RATIO": "2"})


def test_secret_never_shows_itself() -> None:
    config = load_config(Example, "APP", {"APP__API_KEY": "hunter2", "APP__ORTHANC__PASSWORD": "pw-xyz"})
    text = repr(config) + str(masked(config))
    assert "hunter2" not in text
    assert "pw-xyz" not in text
    assert masked(config)["api_key"] == "****"
    assert masked(config)["orthanc"]["url"] == OrthancSettings().url


def test_invalid_secret_value_is_not_echoed() -> None:
    @dataclass(frozen=True)
    class Keys:
        keys: tuple[Secret, ...] = ()

    config = load_config(Keys, "K", {"K__KEYS": "a:1,b:2"})
    assert [k.reveal() for k in config.keys] == ["a:1", "b:2"]
    assert masked(config)["keys"] == ["****", "****"]


def test_describe_config_lists_every_variable_with_its_docstring() -> None:
    rows = {row.env: row for row in describe_config(Example, "APP")}
    assert rows["APP__API_KEY"].required
    assert rows["APP__API_KEY"].doc == "The API key (required)."
    assert rows["APP__WORKERS"].default == "4"
    assert rows["APP__ORTHANC__URL"].doc.startswith("Orthanc's base URL")
    assert rows["APP__ORIGINS"].type == "comma-separated list of string"
