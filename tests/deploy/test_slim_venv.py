"""docker/slim_venv.py, run on a small made-up venv: what it removes, and what it must keep."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SLIM = Path(__file__).resolve().parents[2] / "docker" / "slim_venv.py"


def make_venv(root: Path) -> Path:
    site = root / "lib" / "python3.11" / "site-packages"
    files = {
        "numpy/__init__.py": "", "numpy/_core/tests/test_big.py": "x = 1\n", "numpy/f2py/__init__.py": "",
        "numpy/__init__.pyi": "", "numpy/__pycache__/__init__.cpython-311.pyc": "stale",
        "dicomlab_core/__init__.py": "", "dicomlab_core/tests/helper.py": "y = 2\n",
        "botocore/data/endpoints.json": "{}", "botocore/data/s3/2006-03-01/service-2.json.gz": "",
        "botocore/data/ec2/2016-11-15/service-2.json.gz": "",
        "babel/locale-data/root.dat": "", "babel/locale-data/en_US.dat": "", "babel/locale-data/de.dat": "",
        "highdicom/_standard/module_attribute_map.json": json.dumps({"m": [{"keyword": "A" * 100}] * 20000},
                                                                    indent=2),
    }
    for name, text in files.items():
        path = site / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    (root / "bin").mkdir()
    (root / "bin" / "python").symlink_to(sys.executable)
    return site


def test_slim_venv_drops_what_services_never_load_and_keeps_the_rest(tmp_path: Path) -> None:
    site = make_venv(tmp_path)
    data = json.loads((site / "highdicom/_standard/module_attribute_map.json").read_text())
    subprocess.run([sys.executable, str(SLIM), str(tmp_path), "--import", "", "--botocore-services", "s3"],
                   check=True, capture_output=True)
    gone = ["numpy/_core/tests", "numpy/f2py", "numpy/__init__.pyi", "numpy/__pycache__/__init__.cpython-311.pyc",
            "botocore/data/ec2", "babel/locale-data/de.dat"]
    kept = ["numpy/__init__.py", "dicomlab_core/tests/helper.py", "botocore/data/endpoints.json",
            "botocore/data/s3/2006-03-01/service-2.json.gz", "babel/locale-data/root.dat",
            "babel/locale-data/en_US.dat"]
    assert [p for p in gone if (site / p).exists()] == []
    assert [p for p in kept if not (site / p).exists()] == []
    minified = site / "highdicom/_standard/module_attribute_map.json"
    assert json.loads(minified.read_text()) == data
    assert "\n" not in minified.read_text()
    assert list((site / "dicomlab_core").glob("__pycache__/*.pyc")), "our own packages are byte-compiled"


def test_slim_venv_refuses_a_botocore_service_it_does_not_have(tmp_path: Path) -> None:
    make_venv(tmp_path)
    result = subprocess.run([sys.executable, str(SLIM), str(tmp_path), "--import", "",
                             "--botocore-services", "s3,sagemaker"], capture_output=True, text=True)
    assert result.returncode != 0
    assert "sagemaker" in result.stderr
