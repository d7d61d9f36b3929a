"""What the benchmarks record about the machine beside their figures (imported by the bench scripts,
which run with ``benchmarks/`` on ``sys.path``)."""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path
from typing import Any


def cpu_model() -> str:
    """The CPU's model name from ``/proc/cpuinfo`` ("" where there is none)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def machine(**extra: Any) -> dict[str, Any]:
    """Python, platform, CPU model and count, the load average now (1, 5, 15 min), plus ``extra``."""
    return {"python": sys.version.split()[0], "platform": platform.platform(), "cpu": cpu_model(),
            "cpus": os.cpu_count(), "load_average_1m_5m_15m": [round(v, 2) for v in os.getloadavg()], **extra}
