"""The whole loop at a tiny size, as `make demo` runs it: images → manifest → labels → SR → model, hard vs soft
labels; the second run adds ``--loop`` (active learning vs random on the demo's images)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dicomlab_cli.processes import free_port
from dicomlab_cli.stack import DEFAULT_PORTS
from dicomlab_core.groundtruth import read_output_manifest

pytestmark = pytest.mark.slow


def test_demo_end_to_end(tmp_path: Path) -> None:
    env = {**os.environ, "DICOMLAB_RUN_DIR": str(tmp_path / "run")}
    for name in DEFAULT_PORTS:
        env[f"DICOMLAB_PORT_{name.upper()}"] = str(free_port())
    args = [sys.executable, "-m", "dicomlab_cli.main", "demo", "--patients", "14", "--size", "128",
            "--train-size", "64", "--epochs", "2", "--seed", "3"]
    try:
        first = subprocess.run(args, env=env, capture_output=True, text=True, timeout=900, check=False)
        assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
        summary = json.loads((tmp_path / "run" / "demo" / "summary.json").read_text())
        # Every image was labelled by 3 readers, consolidated and exported.
        images = summary["images"]
        assert images >= 14
        manifest_path = Path(summary["export"]["manifestUri"].removeprefix("file://"))
        labelled = list(read_output_manifest(manifest_path.read_text().splitlines()))
        assert len(labelled) == summary["export"]["images"] == images
        assert all(obj.values for obj in labelled)
        # SR written back to the PACS: a consensus report per image, plus one per reader's answer.
        assert summary["export"]["sr"]["consensus"] == images and summary["export"]["sr"]["failed"] == 0
        assert summary["export"]["sr"]["readers"] >= images
        # A model, a report with per-label AUROC and plots exist.
        training = summary["training"]
        assert Path(training["best_model"].removeprefix("file://")).exists()
        report = json.loads(Path(training["report"].removeprefix("file://")).read_text())
        assert report
        assert all(Path(p.removeprefix("file://")).exists() for p in training["plots"].values())
        assert "labeling UI: http://127.0.0.1:" in first.stdout
        # Hard vs soft labels: a second model trained on the Dawid–Skene posteriors, both scored on the truth.
        comparison = summary["labels_comparison"]
        assert comparison["heldout_images"] >= 1 and comparison["soft"]["model"] != comparison["hard"]["model"]
        assert Path(comparison["soft"]["model"].removeprefix("file://")).exists()
        assert json.loads(Path(summary["labels_comparison_file"]).read_text()) == comparison
        assert "soft (Dawid–Skene posteriors)" in first.stdout and "hard (consolidated values)" in first.stdout
        assert json.loads((tmp_path / "run" / "credentials.json").read_text())["admin_password"] not in first.stdout
        # Running it again is safe: nothing is uploaded, labelled or exported twice.
        loop = ["--loop", "--loop-rounds", "1", "--loop-budget", "3", "--loop-seeds", "0"]
        second = subprocess.run([*args, *loop], env=env, capture_output=True, text=True, timeout=900, check=False)
        assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
        assert "already in Orthanc" in second.stdout
        again = json.loads((tmp_path / "run" / "demo" / "summary.json").read_text())
        assert again["export"]["sr"]["stored"] == 0
        assert again["export"]["manifestUri"] == summary["export"]["manifestUri"]
        # The loop ran on the demo's images and said where its report is.
        assert f"active-learning loop report: {again['loop']['table']}" in second.stdout
        loop_summary = json.loads(Path(again["loop"]["report"]).read_text())
        assert loop_summary["seeds"] == [0] and set(loop_summary["results"]) == {"uncertainty-first", "random"}
        assert [r["labelled"] for r in loop_summary["results"]["random"]] == [3, 6]
        assert Path(again["loop"]["plot"]).stat().st_size > 5000
    finally:
        subprocess.run([sys.executable, "-m", "dicomlab_cli.main", "stack", "down"], env=env, check=False,
                       capture_output=True, timeout=120)
