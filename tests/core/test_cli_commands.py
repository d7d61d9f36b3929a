"""The `dicomlab` CLI leaves out a command whose dependencies an image does not install (each image installs
only its own pyproject extra: `python -m dicomlab_training run` in the training image must not need the
labeling UI's template engine), but never hides a broken import of our own code."""

from __future__ import annotations

import sys
import types

import pytest

from dicomlab_cli import main as cli_main


def _command_module(name: str, missing: str) -> types.ModuleType:
    module = types.ModuleType(name)

    def register(subparsers: object) -> None:
        raise ModuleNotFoundError(f"No module named {missing!r}", name=missing)

    module.register = register  # type: ignore[attr-defined]
    return module


def test_a_command_missing_a_third_party_dependency_is_left_out(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "fake_labeling_cli", _command_module("fake_labeling_cli", "liquid"))
    monkeypatch.setattr(cli_main, "COMMAND_MODULES", ("fake_labeling_cli", "dicomlab_training.cli"))
    parser = cli_main.build_parser()
    args = parser.parse_args(["train", "run", "--epochs", "1"])
    assert args.command == "train"


def test_a_missing_module_of_our_own_still_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "fake_cli", _command_module("fake_cli", "dicomlab_core.gone"))
    monkeypatch.setattr(cli_main, "COMMAND_MODULES", ("fake_cli",))
    with pytest.raises(ModuleNotFoundError):
        cli_main.build_parser()
