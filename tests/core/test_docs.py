"""The documents generated from code stay in step with the code."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_configuration_reference_is_up_to_date() -> None:
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "gen_config_reference.py"), "--check"],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr


def test_every_config_variable_is_documented() -> None:
    """Each row of the reference has a description (an attribute docstring on the config field)."""
    text = (ROOT / "docs" / "configuration.md").read_text()
    rows = [line for line in text.splitlines() if line.startswith("| `")]
    assert len(rows) > 50
    cells = [[cell.strip() for cell in row.strip().strip("|").split("|")] for row in rows]
    assert all(len(row) == 4 for row in cells)
    undocumented = [row[0] for row in cells if not row[3]]
    assert undocumented == []
