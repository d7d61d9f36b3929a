"""One synthetic image: the phantom's anatomy, changed and overlaid by the findings.

Kept apart from :mod:`.phantom` (normal anatomy) and :mod:`.findings` (which uses the phantom's
geometry), so that neither imports the other both ways.
"""

from __future__ import annotations

import numpy as np

from .canvas import Array, Box, Canvas, resize_bilinear
from .findings import apply_changes, draw_findings
from .phantom import RENDER_MAX, draw_anatomy
from .plan import ImageSpec


def render(spec: ImageSpec) -> tuple[Array, dict[str, Box]]:
    """Render one image: display densities in [0, 1] (before noise and exposure) and finding boxes."""
    # Large images are drawn at RENDER_MAX pixels and interpolated up: the anatomy is smooth, and the
    # quantum noise added afterwards at full resolution keeps the fine grain of a real detector.
    scale = min(1.0, RENDER_MAX / max(spec.rows, spec.columns))
    canvas = Canvas(max(16, round(spec.rows * scale)), max(16, round(spec.columns * scale)), spec.pose)
    changes = apply_changes(spec)
    rng = np.random.default_rng([spec.finding_seed, 99])
    thorax = draw_anatomy(canvas, spec.anatomy, changes, rng)
    boxes = draw_findings(canvas, thorax, spec, changes)
    image_boxes = {name: canvas.image_box(box) for name, box in boxes.items()}
    density = canvas.density
    if (canvas.rows, canvas.columns) != (spec.rows, spec.columns):
        density = resize_bilinear(density, spec.rows, spec.columns)
    return density, image_boxes
