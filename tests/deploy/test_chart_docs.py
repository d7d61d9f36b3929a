"""values.yaml is the single source of the chart's documentation and schema: every key has an
``@param`` line, the README table is generated from them, and values.schema.json (draft-07, strict)
describes exactly the keys values.yaml has."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest
import yaml
from deploy_chart import CHART, REPO

SCRIPT = REPO / "scripts" / "gen_chart_readme.py"


def test_readme_parameter_table_is_up_to_date() -> None:
    result = subprocess.run([sys.executable, str(SCRIPT), "--check"], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr


def test_generator_refuses_undocumented_and_unknown_keys(tmp_path: Any) -> None:
    chart = tmp_path / "chart"
    chart.mkdir()
    (chart / "values.yaml").write_text("## @param a.b Documented\na:\n  b: 1\n  c: 2\n## @param zzz Ghost\n")
    result = subprocess.run([sys.executable, str(SCRIPT), "--chart", str(chart)], capture_output=True, text=True,
                            check=False)
    assert result.returncode == 2
    assert "a.c has no @param line" in result.stderr and "@param zzz names no key" in result.stderr
    (chart / "values.yaml").write_text("## @section S\n## @param a.b Doc | with pipe\na:\n  b: [1, 2]\n")
    subprocess.run([sys.executable, str(SCRIPT), "--chart", str(chart)], check=True)
    readme = (chart / "README.md").read_text()
    assert "| `a.b` | Doc \\| with pipe | `[1, 2]` |" in readme
    assert "### S" in readme


def schema_paths(schema: dict[str, Any], prefix: str = "") -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for key, sub in schema.get("properties", {}).items():
        path = f"{prefix}{key}"
        out[path] = sub
        out.update(schema_paths(sub, f"{path}."))
    return out


def value_paths(values: dict[str, Any], prefix: str = "", free: frozenset[str] = frozenset()) -> set[str]:
    out: set[str] = set()
    for key, value in values.items():
        path = f"{prefix}{key}"
        out.add(path)
        if isinstance(value, dict) and path not in free:
            out |= value_paths(value, f"{path}.", free)
    return out


def test_schema_is_strict_draft7_and_matches_values() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    assert schema["$schema"] == "http://json-schema.org/draft-07/schema#"
    assert schema["additionalProperties"] is False
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    described = schema_paths(schema)
    free = frozenset(p for p, s in described.items() if s.get("type") == "object" and "properties" not in s)
    for path, sub in described.items():
        if "properties" in sub:
            assert sub.get("additionalProperties") is False, f"{path} is not strict"
    assert value_paths(values, free=free) == set(described)


@pytest.mark.parametrize("path", ["orthanc.image.digest", "services.proxy.image.digest"])
def test_digests_are_validated(path: str) -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    assert schema_paths(schema)[path]["pattern"] == "^(sha256:[a-f0-9]{64})?$"
