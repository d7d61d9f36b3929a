"""The 14 CheXpert findings, each drawn where a radiologist would look for it.

Every finding draws its parameters from its own generator, seeded by the study and the finding,
so adding or removing one finding never moves another (tests render with and without each finding
and compare the region it names). Each drawer returns the finding's bounding box in anatomy
coordinates; :func:`.phantom.render` turns them into image coordinates (the ground truth ROI).

Visual signs: Cardiomegaly → cardiothoracic ratio 0.58–0.68; Enlarged Cardiomediastinum → a
bulging upper mediastinum; Pleural Effusion → a blunted costophrenic angle under a meniscus;
Pneumothorax → a visible pleural line with no lung markings beyond it; Atelectasis → a plate-like
band plus a raised hemidiaphragm (volume loss); Fracture → a broken, stepped rib with callus;
Lung Lesion → a sharp round nodule; Lung Opacity → an ill-defined hazy patch; Consolidation → a
dense homogeneous region with air bronchograms; Pneumonia → a cluster of patchy nodular
opacities; Edema → perihilar (bat-wing) haze with Kerley B lines; Pleural Other → irregular pleural
thickening along the lateral wall; Support Devices → tubes, lines and pacemakers (metal-bright).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import partial

import numpy as np
import numpy.typing as npt

from dicomlab_core.labels import CHEXPERT_LABELS, Finding

from .canvas import Array, Box, Canvas, bezier, ellipse, gaussian, points_box, polyline_distance, ramp, value_noise
from .phantom import SIDES, Changes, Thorax, rib_centre, thorax_for
from .plan import ImageSpec

logger = logging.getLogger(__name__)

Drawer = Callable[[Canvas, Thorax, ImageSpec, Changes, np.random.Generator], Box]


def finding_rng(spec: ImageSpec, finding: Finding, stream: int) -> np.random.Generator:
    return np.random.default_rng([spec.finding_seed, CHEXPERT_LABELS.index(finding), stream])


def _side(rng: np.random.Generator) -> int:
    return SIDES[int(rng.integers(0, 2))]


def apply_changes(spec: ImageSpec) -> Changes:
    """The anatomical changes of the findings present (drawn before the anatomy)."""
    changes = Changes()
    present = spec.findings
    if Finding.CARDIOMEGALY in present:
        changes.heart_ratio = float(finding_rng(spec, Finding.CARDIOMEGALY, 0).uniform(0.58, 0.68))
    if Finding.ENLARGED_CARDIOMEDIASTINUM in present:
        rng = finding_rng(spec, Finding.ENLARGED_CARDIOMEDIASTINUM, 0)
        changes.mediastinal_bulge = float(rng.uniform(0.035, 0.055))
    if Finding.ATELECTASIS in present:
        rng = finding_rng(spec, Finding.ATELECTASIS, 0)
        changes.diaphragm_raise[_side(rng)] = float(rng.uniform(0.03, 0.05))
    if Finding.PLEURAL_EFFUSION in present:
        rng = finding_rng(spec, Finding.PLEURAL_EFFUSION, 0)
        sides = SIDES if rng.random() < 0.35 else (_side(rng),)
        changes.fluid_level = {s: float(rng.uniform(0.05, 0.12)) for s in sides}
    if Finding.PNEUMOTHORAX in present:
        rng = finding_rng(spec, Finding.PNEUMOTHORAX, 0)
        changes.pneumothorax = (_side(rng), float(rng.uniform(0.72, 0.84)))
    if Finding.FRACTURE in present:
        rng = finding_rng(spec, Finding.FRACTURE, 0)
        changes.fracture = (_side(rng), int(rng.integers(3, 8)), float(rng.uniform(0.55, 0.85)),
                            float(rng.uniform(0.022, 0.032)))
    return changes


def _lung_point(t: Thorax, rng: np.random.Generator, side: int, low: float = 0.15, high: float = 0.85,
                lateral: float = 0.6) -> tuple[float, float]:
    """A random point well inside one lung: ``low``/``high`` are fractions from apex to base."""
    x = t.lung_cx[side] + side * float(rng.uniform(-0.2, lateral)) * t.lung_rx * 0.8
    y = t.lung_top + float(rng.uniform(low, high)) * (t.diaphragm[side] - t.lung_top)
    return x, y


def _add(canvas: Canvas, t: Thorax, box: Box, amount: Callable[[Array, Array], Array],
         lung_only: bool = True) -> None:
    rows, cols = canvas.window(box)
    x, y = canvas.x[rows, cols], canvas.y[rows, cols]
    value = amount(x, y)
    if lung_only:
        value = value * t.lung[rows, cols]
    canvas.density[rows, cols] += value


def _cardiomegaly(c: Canvas, t: Thorax, spec: ImageSpec, ch: Changes, rng: np.random.Generator) -> Box:
    return (t.heart_cx - 1.2 * t.heart_rx, t.heart_cy - t.heart_ry, t.heart_cx + 1.2 * t.heart_rx,
            t.heart_cy + t.heart_ry)


def _mediastinum(c: Canvas, t: Thorax, spec: ImageSpec, ch: Changes, rng: np.random.Generator) -> Box:
    half = spec.anatomy.mediastinum + ch.mediastinal_bulge
    return (t.cx - half - 0.01, t.lung_top, t.cx + half + 0.01, t.lung_top + 0.32)


def _effusion(c: Canvas, t: Thorax, spec: ImageSpec, ch: Changes, rng: np.random.Generator) -> Box:
    boxes = [(t.lung_cx[s] - t.lung_rx, t.diaphragm[s] - level - 0.09, t.lung_cx[s] + t.lung_rx,
              t.diaphragm[s] + 0.01) for s, level in ch.fluid_level.items()]
    return _union(boxes)


def _pneumothorax(c: Canvas, t: Thorax, spec: ImageSpec, ch: Changes, rng: np.random.Generator) -> Box:
    assert ch.pneumothorax is not None
    s = ch.pneumothorax[0]
    return (t.lung_cx[s] - t.lung_rx, t.lung_top, t.lung_cx[s] + t.lung_rx, t.diaphragm[s] - 0.05)


def _fracture(c: Canvas, t: Thorax, spec: ImageSpec, ch: Changes, rng: np.random.Generator) -> Box:
    assert ch.fracture is not None
    s, k, at, _ = ch.fracture
    fx = t.cx + s * at * 0.43 * t.body_width
    fy = float(rib_centre(t, spec.anatomy, s, k, at))
    box = (min(fx - 0.04, fx + s * 0.1), fy - 0.04, max(fx + 0.04, fx + s * 0.1), fy + 0.06)
    _add(c, t, box, lambda x, y: 0.28 * gaussian(x, y, fx, fy, 0.018, 0.026), lung_only=False)
    return box


def _atelectasis(c: Canvas, t: Thorax, spec: ImageSpec, ch: Changes, rng: np.random.Generator) -> Box:
    s = next(iter(ch.diaphragm_raise))
    cx = t.lung_cx[s] + s * float(rng.uniform(0.0, 0.35)) * t.lung_rx  # lateral of the heart
    cy = t.diaphragm[s] - 0.06 - float(rng.uniform(0.03, 0.07))  # above the dome, inside the lung
    half, tilt = float(rng.uniform(0.05, 0.075)), float(rng.uniform(-0.025, 0.025))
    thickness = max(float(rng.uniform(0.008, 0.014)), 1.6 / c.rows)
    points = np.array([(cx - half, cy - tilt), (cx + half, cy + tilt)])
    _add(c, t, points_box(points, 0.03), partial(_line, points=points, width=thickness, edge=c.edge, amplitude=0.28))
    bottom = t.diaphragm[s] + ch.diaphragm_raise[s] + 0.01  # the dome's old place
    return (t.lung_cx[s] - t.lung_rx, min(cy - 0.05, t.diaphragm[s] - 0.07), t.lung_cx[s] + t.lung_rx, bottom)


def _lung_opacity(c: Canvas, t: Thorax, spec: ImageSpec, ch: Changes, rng: np.random.Generator) -> Box:
    boxes = []
    for _ in range(int(rng.integers(1, 3))):
        px, py = _lung_point(t, rng, _side(rng), 0.3, 0.8)
        sx, sy = float(rng.uniform(0.045, 0.07)), float(rng.uniform(0.05, 0.08))
        amplitude = float(rng.uniform(0.15, 0.2))
        box = (px - 2.2 * sx, py - 2.2 * sy, px + 2.2 * sx, py + 2.2 * sy)
        seed = int(rng.integers(0, 2**31))

        def haze(x: Array, y: Array, px: float = px, py: float = py, sx: float = sx, sy: float = sy,
                 a: float = amplitude, seed: int = seed) -> Array:
            mottle = value_noise(x.shape[0], x.shape[1], 6, np.random.default_rng(seed))
            return a * gaussian(x, y, px, py, sx, sy) * (0.75 + 0.25 * mottle)

        _add(c, t, box, haze)
        boxes.append(box)
    return _union(boxes)


def _consolidation(c: Canvas, t: Thorax, spec: ImageSpec, ch: Changes, rng: np.random.Generator) -> Box:
    s = _side(rng)
    px, py = _lung_point(t, rng, s, 0.55, 0.75, lateral=0.3)
    rx, ry = float(rng.uniform(0.08, 0.11)), float(rng.uniform(0.07, 0.1))
    box = (px - rx - 0.01, py - ry - 0.01, px + rx + 0.01, py + ry + 0.01)
    seed = int(rng.integers(0, 2**31))
    bronchi = [np.array([(px - s * 0.3 * rx, py - 0.8 * ry), (px + s * float(rng.uniform(-0.1, 0.5)) * rx, py),
                         (px + s * float(rng.uniform(0.0, 0.6)) * rx, py + 0.7 * ry)]) for _ in range(2)]
    width = max(0.003, 1.2 / c.rows)

    def dense(x: Array, y: Array) -> Array:
        edge_noise = value_noise(x.shape[0], x.shape[1], 5, np.random.default_rng(seed))
        # an irregular border: the radius wobbles with a smooth noise field
        radius = np.hypot((x - px) / rx, (y - py) / ry) * (1 - 0.15 * edge_noise)
        region = ramp((radius - 1.0) * min(rx, ry), 0.015)
        air = np.maximum(*(ramp(polyline_distance(x, y, b) - width / 2, c.edge) for b in bronchi))
        return region * (0.30 - 0.12 * air)

    _add(c, t, box, dense)
    return box


def _pneumonia(c: Canvas, t: Thorax, spec: ImageSpec, ch: Changes, rng: np.random.Generator) -> Box:
    s = _side(rng)
    px, py = _lung_point(t, rng, s, 0.45, 0.75, lateral=0.4)
    spots = [(px + float(rng.normal(0, 0.04)), py + float(rng.normal(0, 0.05)), float(rng.uniform(0.010, 0.02)),
              float(rng.uniform(0.12, 0.2))) for _ in range(int(rng.integers(7, 13)))]
    box = (px - 0.14, py - 0.16, px + 0.14, py + 0.16)

    def patchy(x: Array, y: Array) -> Array:
        total = np.zeros_like(x)
        for sx, sy, r, a in spots:
            total += a * gaussian(x, y, sx, sy, r)
        result: Array = np.minimum(total, 0.3)
        return result

    _add(c, t, box, patchy)
    return box


def _lesion(c: Canvas, t: Thorax, spec: ImageSpec, ch: Changes, rng: np.random.Generator) -> Box:
    px, py = _lung_point(t, rng, _side(rng), 0.15, 0.6)
    r = max(float(rng.uniform(0.02, 0.035)), 3.0 / c.rows)
    box = (px - r - 0.01, py - r - 0.01, px + r + 0.01, py + r + 0.01)
    ry = r * float(rng.uniform(0.85, 1.15))
    _add(c, t, box, lambda x, y: 0.26 * ellipse(x, y, px, py, r, ry, c.edge))
    return box


def _edema(c: Canvas, t: Thorax, spec: ImageSpec, ch: Changes, rng: np.random.Generator) -> Box:
    amplitude = float(rng.uniform(0.15, 0.19))
    for s in SIDES:
        hx, hy = t.hilum[s]
        _add(c, t, t.lung_box(s), partial(_haze, cx=hx, cy=hy + 0.03, sx=0.09, sy=0.13, amplitude=amplitude))
        # Kerley B lines: short horizontal lines reaching the lateral wall at the bases
        width = max(0.0035, 1.3 / c.rows)
        base = t.diaphragm[s] - 0.05
        for j in range(int(rng.integers(5, 9))):
            ly = base - j * float(rng.uniform(0.012, 0.018))
            wall = t.lung_cx[s] + s * 0.88 * t.lung_rx
            points = np.array([(wall - s * float(rng.uniform(0.025, 0.045)), ly), (wall, ly)])
            kerley = partial(_line, points=points, width=width, edge=c.edge, amplitude=0.14)
            _add(c, t, points_box(points, 0.01), kerley)
    return _union([t.lung_box(s) for s in SIDES])


def _pleural_other(c: Canvas, t: Thorax, spec: ImageSpec, ch: Changes, rng: np.random.Generator) -> Box:
    s = _side(rng)
    thickness = max(float(rng.uniform(0.03, 0.045)), 2.0 / c.columns)
    y0 = t.lung_top + float(rng.uniform(0.1, 0.3)) * (t.diaphragm[s] - t.lung_top)
    y1 = y0 + float(rng.uniform(0.3, 0.45)) * (t.diaphragm[s] - t.lung_top)
    box = (t.lung_cx[s] - t.lung_rx if s < 0 else t.lung_cx[s] + 0.4 * t.lung_rx, y0,
           t.lung_cx[s] - 0.4 * t.lung_rx if s < 0 else t.lung_cx[s] + t.lung_rx, y1)
    seed = int(rng.integers(0, 2**31))

    def thickening(x: Array, y: Array) -> Array:
        rows, cols = c.window(box)
        radius = t.lung_radius[s][rows, cols]
        lateral = ((x - t.lung_cx[s]) * s > 0.4 * t.lung_rx).astype(np.float32)
        along = ramp(np.abs(y - (y0 + y1) / 2) - (y1 - y0) / 2, 0.02)
        lumpy = 1 + 0.5 * value_noise(x.shape[0], x.shape[1], 4, np.random.default_rng(seed))
        rim = ramp((1 - radius) * t.lung_rx - thickness * lumpy, c.edge)
        return 0.38 * rim * lateral * along

    _add(c, t, box, thickening)
    return box


def _support_devices(c: Canvas, t: Thorax, spec: ImageSpec, ch: Changes, rng: np.random.Generator) -> Box:
    width = max(0.005, 1.6 / c.rows)
    tubes = []
    if rng.random() < 0.5:  # endotracheal tube, tip above the carina
        tubes.append(np.array([(t.cx, 0.0), (t.cx + 0.003, t.lung_top + 0.09)]))
    if rng.random() < 0.35:  # nasogastric tube, down the oesophagus below the diaphragm
        tubes.append(bezier((t.cx - 0.01, 0.0), (t.cx + 0.01, 0.6), (t.cx + 0.09, t.diaphragm[1] + 0.07)))
    if rng.random() < 0.6 or not tubes:  # central venous line from the subclavian vein to the SVC
        s = _side(rng)
        tubes.append(bezier((t.cx + s * 0.3, t.lung_top - 0.03), (t.cx + s * 0.06, t.lung_top),
                            (t.cx + s * 0.02, t.lung_top + float(rng.uniform(0.18, 0.26)))))
    boxes = []
    for points in tubes:
        box = points_box(points, 0.02)
        _add(c, t, box, partial(_line, points=points, width=width, edge=c.edge, amplitude=0.45), lung_only=False)
        boxes.append(box)
    if rng.random() < 0.3:  # pacemaker: generator in the left upper chest, lead into the heart
        gx, gy = t.cx + 0.24 * t.body_width, t.lung_top + 0.03
        lead = bezier((gx, gy), (t.cx + 0.05, t.lung_top + 0.05), (t.heart_cx, t.heart_cy))
        box = points_box(np.vstack([lead, [(gx + 0.05, gy + 0.04)]]), 0.05)
        _add(c, t, box, lambda x, y: 0.75 * ellipse(x, y, gx, gy, 0.04, 0.028, c.edge, power=4.0)
             + 0.45 * ramp(polyline_distance(x, y, lead) - width / 2, c.edge), lung_only=False)
        boxes.append(box)
    return _union(boxes)


def _haze(x: Array, y: Array, *, cx: float, cy: float, sx: float, sy: float, amplitude: float) -> Array:
    return amplitude * gaussian(x, y, cx, cy, sx, sy)


def _line(x: Array, y: Array, *, points: npt.NDArray[np.float64], width: float, edge: float,
          amplitude: float) -> Array:
    """A radio-opaque line (tube, wire, Kerley line) ``width`` wide along a polyline."""
    return amplitude * ramp(polyline_distance(x, y, points) - width / 2, edge)


def _union(boxes: list[Box]) -> Box:
    return (min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes), max(b[3] for b in boxes))


DRAWERS: dict[Finding, Drawer] = {
    Finding.ENLARGED_CARDIOMEDIASTINUM: _mediastinum, Finding.CARDIOMEGALY: _cardiomegaly,
    Finding.LUNG_OPACITY: _lung_opacity, Finding.LUNG_LESION: _lesion, Finding.EDEMA: _edema,
    Finding.CONSOLIDATION: _consolidation, Finding.PNEUMONIA: _pneumonia, Finding.ATELECTASIS: _atelectasis,
    Finding.PNEUMOTHORAX: _pneumothorax, Finding.PLEURAL_EFFUSION: _effusion, Finding.PLEURAL_OTHER: _pleural_other,
    Finding.FRACTURE: _fracture, Finding.SUPPORT_DEVICES: _support_devices,
}
"""One drawer per finding except No Finding; each returns the finding's box in anatomy coordinates."""


def draw_findings(canvas: Canvas, thorax: Thorax, spec: ImageSpec, changes: Changes) -> dict[str, Box]:
    """Draw every finding present on top of the anatomy; return their boxes."""
    boxes: dict[str, Box] = {}
    for finding, drawer in DRAWERS.items():
        if finding in spec.findings:
            boxes[str(finding)] = drawer(canvas, thorax, spec, changes, finding_rng(spec, finding, 1))
    return boxes


__all__ = ["DRAWERS", "apply_changes", "draw_findings", "thorax_for"]
