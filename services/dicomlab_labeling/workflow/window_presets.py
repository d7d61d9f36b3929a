"""Per-job window presets (#19 item 6): extra windows the labeling viewer offers besides the image's own
VOI windows and its histogram presets (lung, mediastinum, bone).

A preset is ``{"name": str, "percentiles": [low, high]}`` — a range of displayed-brightness percentiles
(0–100) of the image's modality values, meaningful on any radiograph — or ``{"name": str, "center": c,
"width": w}``, an absolute window in modality values for data from one known source. Checked here so a
bad one is a 400 naming it, never a viewer that cannot draw.
"""

from __future__ import annotations

import math
from typing import Any

from dicomlab_core.errors import BadRequest

MAX_PRESETS = 6
MAX_NAME = 40


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def check_window_presets(value: Any, field: str = "windowPresets") -> list[dict[str, Any]]:
    """The presets, normalized (→ 400 naming the first problem). ``None`` means none."""
    if value is None:
        return []
    if not isinstance(value, list) or len(value) > MAX_PRESETS:
        raise BadRequest(f"{field}: a list of at most {MAX_PRESETS} presets")
    presets: list[dict[str, Any]] = []
    for i, item in enumerate(value):
        where = f"{field}[{i}]"
        if not isinstance(item, dict):
            raise BadRequest(f"{where}: an object with name and percentiles, or name, center and width")
        name = item.get("name")
        if not isinstance(name, str) or not name.strip() or len(name.strip()) > MAX_NAME:
            raise BadRequest(f"{where}.name: 1–{MAX_NAME} characters")
        percentiles = item.get("percentiles")
        if percentiles is not None:
            if (not isinstance(percentiles, list) or len(percentiles) != 2 or not all(map(_number, percentiles))
                    or not 0 <= percentiles[0] < percentiles[1] <= 100):
                raise BadRequest(f"{where}.percentiles: [low, high] with 0 ≤ low < high ≤ 100")
            presets.append({"name": name.strip(), "percentiles": [float(percentiles[0]), float(percentiles[1])]})
            continue
        center, width = item.get("center"), item.get("width")
        if not isinstance(center, int | float) or not isinstance(width, int | float) or not _number(center) \
                or not _number(width) or width <= 0:
            raise BadRequest(f"{where}: percentiles [low, high], or a numeric center and a width above 0")
        presets.append({"name": name.strip(), "center": float(center), "width": float(width)})
    return presets
