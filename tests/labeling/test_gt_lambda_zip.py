"""The callback Lambda zip: builds, holds only what it should, and runs without site-packages."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from dicomlab_cli.main import main


def test_lambda_zip_builds_and_the_handlers_run_from_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "callbacks.zip"
    assert main(["labeling", "lambda-zip", "--out", str(out)]) == 0
    info = json.loads(capsys.readouterr().out.strip().splitlines()[-1])  # logs may precede the summary
    names = zipfile.ZipFile(out).namelist()
    assert "dicomlab_labeling/groundtruth/lambda_handlers.py" in names and "dicomlab_core/groundtruth/worker_answer.py" in names
    assert "numpy/__init__.py" in names and "requests/__init__.py" in names and "orjson/__init__.py" in names
    assert not any(n.startswith(("boto3/", "botocore/", "flask/", "sqlalchemy/")) for n in names)
    labeling = {n for n in names if n.startswith("dicomlab_labeling/")}  # no workflow, UI, static or migrations
    assert labeling == {"dicomlab_labeling/__init__.py", "dicomlab_labeling/config.py",
                        "dicomlab_labeling/consensus/__init__.py", "dicomlab_labeling/consensus/agreement.py",
                        "dicomlab_labeling/consensus/consolidation.py", "dicomlab_labeling/consensus/dawid_skene.py",
                        "dicomlab_labeling/groundtruth/__init__.py", "dicomlab_labeling/groundtruth/callbacks.py",
                        "dicomlab_labeling/groundtruth/lambda_handlers.py"}
    assert not any("__pycache__" in n for n in names)
    assert not any(n.startswith(("pydicom/data/test_files/", "numpy/f2py/")) for n in names)
    build = json.loads(zipfile.ZipFile(out).read("BUILD-INFO.json"))
    assert build["handlers"] == info["handlers"] == ["dicomlab_labeling.groundtruth.lambda_handlers.pre_annotation",
                                                     "dicomlab_labeling.groundtruth.lambda_handlers.post_annotation"]
    assert set(info["distributions"]) == {"numpy", "orjson", "requests", "urllib3", "idna", "charset-normalizer", "certifi",
                                          "pydicom"}
    assert info["bytes"] < 60 * 1024 * 1024  # Lambda's unzipped limit is 250 MB; the zip stays lean

    root = tmp_path / "unzipped"
    zipfile.ZipFile(out).extractall(root)
    (tmp_path / "answers.json").write_text(json.dumps([
        {"datasetObjectId": "0", "dataObject": {"content": "x"}, "annotations": [
            {"workerId": "a", "annotationData": {"content": json.dumps({"findings": {"Edema": "present"}})}},
            {"workerId": "b", "annotationData": {"content": json.dumps({"findings": {"Edema": "present"}})}}]}]))
    script = f"""
import json, sys
assert not any('site-packages' in p for p in sys.path), sys.path
from dicomlab_labeling.groundtruth import lambda_handlers
event = {{"labelAttributeName": "a", "labelCategories": ["Edema"],
          "payload": {{"s3Uri": "file://{tmp_path}/answers.json"}}}}
print(json.dumps(lambda_handlers.post_annotation(event, None)))
"""
    # -S -s: no site-packages at all, so everything the handler imports must come from the zip
    run = subprocess.run([sys.executable, "-S", "-s", "-c", script], cwd=root, env={"PYTHONPATH": str(root),
                         "DICOMLAB_LOG_LEVEL": "WARNING",
                         "DICOMLAB_LABELING__EXTRA_READ_STORES": f"file://{tmp_path}"}, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    response = json.loads(run.stdout.strip().splitlines()[-1])
    assert response[0]["consolidatedAnnotation"]["content"]["a"]["findings"]["Edema"]["value"] == "present"

