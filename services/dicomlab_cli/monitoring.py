"""Local monitoring for ``dicomlab stack up --monitoring`` (Prometheus + Pushgateway on loopback)."""

from __future__ import annotations

from pathlib import Path

from dicomlab_cli.processes import StackError


def start(directory: Path, ports: dict[str, int]) -> dict[str, tuple[int, int]]:
    """Start Prometheus and a Pushgateway; returns ``{name: (pid, port)}``."""
    raise StackError("local monitoring has not landed yet")
