"""The chest phantom: normal anatomy drawn as a density map (bright = dense, MONOCHROME2 sense).

A PA chest: body, two lungs with vascular markings fading from the hila, mediastinum and heart,
spine, posterior ribs and clavicles, hemidiaphragms with sharp costophrenic angles. The patient's
body comes from :class:`~.plan.Anatomy`; findings first change the anatomy (:class:`Changes`:
a bigger heart, a wider mediastinum, a raised hemidiaphragm, fluid, a collapsed lung edge, a broken
rib) and are then drawn on top by :mod:`.findings` (the two are composed in :mod:`.render`). The image of
patient-right is on the viewer's left (``side = -1``), the heart leans to ``side = +1``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from .canvas import Array, Box, Canvas, ellipse, gaussian, polyline_distance, ramp, value_noise
from .plan import Anatomy, ImageSpec

logger = logging.getLogger(__name__)

SIDES = (-1, 1)
RIB_COUNT = 10
RENDER_MAX = 768
"""Largest side drawn directly, in pixels; bigger images are interpolated from this size."""


@dataclass
class Changes:
    """How the findings present alter the normal anatomy (filled in by :mod:`.findings`)."""

    heart_ratio: float | None = None
    mediastinal_bulge: float = 0.0
    diaphragm_raise: dict[int, float] = field(default_factory=dict)
    fluid_level: dict[int, float] = field(default_factory=dict)
    """Per side: height of pleural fluid above the costophrenic angle (image fraction)."""
    pneumothorax: tuple[int, float] | None = None
    """(side, normalised lung radius beyond which the lung has collapsed away from the wall)."""
    fracture: tuple[int, int, float, float] | None = None
    """(side, rib index, lateral position 0..1 along the rib, step-off)."""


@dataclass
class Thorax:
    """Derived geometry shared by the anatomy and the findings."""

    cx: float
    body_width: float
    lung_top: float
    diaphragm: dict[int, float]
    lung_cx: dict[int, float]
    lung_rx: float
    heart_cx: float
    heart_cy: float
    heart_rx: float
    heart_ry: float
    hilum: dict[int, tuple[float, float]]
    lung: Array = field(default_factory=lambda: np.zeros((0, 0), np.float32))
    """Soft mask of aerated lung (after heart, mediastinum and fluid)."""
    lung_radius: dict[int, Array] = field(default_factory=dict)
    """Per side: normalised radius inside the lung envelope (0 centre, 1 edge)."""

    def lung_box(self, side: int) -> Box:
        cx = self.lung_cx[side]
        return (cx - self.lung_rx, self.lung_top, cx + self.lung_rx, self.diaphragm[side])

    def dome(self, side: int, x: Array) -> Array:
        """y of the hemidiaphragm's upper edge at each x (a dome, highest mid-lung)."""
        u = (x - self.lung_cx[side] - 0.2 * side * self.lung_rx) / (1.3 * self.lung_rx)
        return (self.diaphragm[side] - 0.06 * np.clip(1.0 - u * u, 0.0, 1.0)).astype(np.float32)


def thorax_for(anatomy: Anatomy, changes: Changes) -> Thorax:
    bw = anatomy.body_width
    cx = 0.5
    # the right hemidiaphragm (viewer's left) sits a little higher
    diaphragm = {s: anatomy.diaphragm - (0.015 if s < 0 else 0.0) - changes.diaphragm_raise.get(s, 0.0)
                 for s in SIDES}
    lung_rx = 0.205 * bw
    ratio = changes.heart_ratio or anatomy.heart_ratio
    inner = 2 * 0.41 * bw
    return Thorax(
        cx=cx, body_width=bw, lung_top=anatomy.lung_top, diaphragm=diaphragm,
        lung_cx={s: cx + s * 0.215 * bw for s in SIDES}, lung_rx=lung_rx,
        heart_cx=cx + 0.02 * bw, heart_cy=anatomy.diaphragm - 0.07, heart_rx=ratio * inner / 2,
        heart_ry=0.125 + 0.15 * (ratio - 0.42),
        hilum={s: (cx + s * 0.095 * bw, anatomy.lung_top + 0.27 * (anatomy.diaphragm - anatomy.lung_top))
               for s in SIDES})


def draw_anatomy(canvas: Canvas, anatomy: Anatomy, changes: Changes, rng: np.random.Generator) -> Thorax:
    """Draw the normal chest (as altered by ``changes``) and return its geometry."""
    t = thorax_for(anatomy, changes)
    x, y, e, d = canvas.x, canvas.y, canvas.edge, canvas.density
    d += 0.05  # air
    body = np.maximum(ellipse(x, y, t.cx, 0.60, t.body_width / 2, 0.62, e, power=3.0),
                      ellipse(x, y, t.cx, 0.0, 0.11, 0.25, e))  # thorax and neck
    d += (0.48 + anatomy.soft_tissue) * body
    _draw_lungs(canvas, t, anatomy, changes, rng)
    for hx, hy in t.hilum.values():
        d += 0.10 * gaussian(x, y, hx, hy, 0.025, 0.045) * body
    # trachea (air column) and spine
    d -= 0.10 * ramp(np.abs(x - t.cx) - 0.012, e) * ramp(y - (t.lung_top + 0.12), e)
    vertebrae = 0.8 + 0.2 * np.cos(y * 2 * np.pi * 22).astype(np.float32)
    d += 0.12 * ramp(np.abs(x - t.cx) - 0.032, e) * vertebrae * body
    _draw_ribs(canvas, t, anatomy, changes)
    _draw_clavicles(canvas, t)
    return t


def _draw_lungs(canvas: Canvas, t: Thorax, anatomy: Anatomy, changes: Changes, rng: np.random.Generator) -> None:
    """Aerated lung (dark) with vascular markings, inside the lungs' window only (half the image).

    The window depends on the patient only, never on the findings, so the texture under a finding
    is the same with and without it.
    """
    e = canvas.edge
    rows, cols = canvas.window((t.lung_cx[-1] - t.lung_rx, t.lung_top, t.lung_cx[1] + t.lung_rx,
                                anatomy.diaphragm), margin=0.01)
    x, y, d = canvas.x[rows, cols], canvas.y[rows, cols], canvas.density[rows, cols]
    # lungs: a tall envelope cut by the dome of the hemidiaphragm
    envelope = np.zeros_like(d)
    for s in SIDES:
        # the envelope keeps the unaltered size; volume loss only lifts the dome that cuts it
        ry = (t.diaphragm[s] + changes.diaphragm_raise.get(s, 0.0) - t.lung_top) * 0.62
        cy = t.lung_top + ry
        dx = np.abs(x - t.lung_cx[s]) / t.lung_rx
        dy = np.abs(y - cy) / ry
        radius = (dx**2.4 + dy**2.4) ** (1 / 2.4)
        t.lung_radius[s] = np.full(canvas.density.shape, 9.0, dtype=np.float32)
        t.lung_radius[s][rows, cols] = radius
        inside = ramp((radius - 1.0) * t.lung_rx, e) * ramp(y - t.dome(s, x), e)
        level = changes.fluid_level.get(s)
        if level:
            # pleural fluid: fills the base up to a meniscus that climbs the lateral wall
            lateral = np.clip((x - t.lung_cx[s]) * s / t.lung_rx, 0.0, 1.0)
            surface = t.diaphragm[s] - level - 0.07 * lateral**2
            inside = inside * ramp(-(surface - y), 3 * e)
        np.maximum(envelope, inside, out=envelope)
    mediastinum_hw = anatomy.mediastinum + changes.mediastinal_bulge * np.exp(
        -(((y - (t.lung_top + 0.16)) / 0.11) ** 2))
    mediastinum = ramp(np.abs(x - t.cx) - mediastinum_hw, e) * ramp(y - t.heart_cy, e)
    dxh = x - t.heart_cx
    heart_rx = np.where(dxh > 0, t.heart_rx * 1.2, t.heart_rx * 0.8).astype(np.float32)
    heart = ramp((np.sqrt((dxh / heart_rx) ** 2 + ((y - t.heart_cy) / t.heart_ry) ** 2) - 1) * t.heart_ry, e)
    lung = (envelope * (1 - np.maximum(mediastinum, heart))).astype(np.float32)
    t.lung = np.zeros(canvas.density.shape, dtype=np.float32)
    t.lung[rows, cols] = lung
    d -= 0.36 * lung
    # vascular markings: ridges of smooth noise (1 - |n|, sharpened) look like branching vessels,
    # strongest at the hila, absent beyond a pneumothorax
    texture = _ridges(value_noise(x.shape[0], x.shape[1], 12, rng))
    texture += 0.7 * _ridges(value_noise(x.shape[0], x.shape[1], 26, rng))
    near = np.maximum(*(np.exp(-np.hypot(x - hx, y - hy) / 0.16) for hx, hy in t.hilum.values()))
    markings = texture * (0.35 + near) * lung
    if changes.pneumothorax:
        side, edge_radius = changes.pneumothorax
        upper_lateral = _upper_lateral(t, side, x, y)
        radius = t.lung_radius[side][rows, cols]
        collapsed = ramp((edge_radius - radius) * t.lung_rx, e) * upper_lateral
        markings *= 1 - collapsed
        d -= 0.05 * collapsed * lung
        pleural_line = np.exp(-(((radius - edge_radius) * t.lung_rx / (0.6 * e)) ** 2))
        d += 0.18 * pleural_line * lung * upper_lateral
    d += 0.16 * markings


def _ridges(noise: Array) -> Array:
    """Thin bright ridges along the zero lines of a smooth noise: ``(1 - |n|) ** 8``."""
    ridge = 1 - np.abs(noise)
    ridge *= ridge
    ridge *= ridge
    ridge *= ridge
    return ridge


def _upper_lateral(t: Thorax, side: int, x: Array, y: Array) -> Array:
    """Weight of the upper and lateral part of one lung, where a pneumothorax shows first."""
    lateral = np.clip(((x - t.lung_cx[side]) * side / t.lung_rx + 0.6) / 0.8, 0.0, 1.0)
    upper = np.clip((t.diaphragm[side] - 0.05 - y) / 0.15, 0.0, 1.0)
    apex = (y < t.lung_top + 0.15) & ((x - t.cx) * side > 0)
    result: Array = (np.maximum(lateral, apex.astype(np.float32)) * upper).astype(np.float32)
    return result


def rib_centre(t: Thorax, anatomy: Anatomy, side: int, k: int, u: Array | float) -> Array | float:
    """y of rib ``k``'s centre line at lateral position ``u`` (0 at the spine, 1 at the wall)."""
    spacing = (anatomy.diaphragm - t.lung_top) / 8.6  # ribs do not move with the diaphragm
    y0 = t.lung_top - 0.015 + k * spacing * (0.9 + 0.02 * k)
    return y0 - 0.03 * u + anatomy.rib_tilt * 0.14 * u * u


def _draw_ribs(canvas: Canvas, t: Thorax, anatomy: Anatomy, changes: Changes) -> None:
    e = canvas.edge
    half = 0.43 * t.body_width
    thickness = 0.42 * (anatomy.diaphragm - t.lung_top) / 8.6
    for s in SIDES:
        for k in range(RIB_COUNT):
            # each rib only inside its own strip: ten full-image passes per side would dominate the time
            ends = [float(rib_centre(t, anatomy, s, k, u)) for u in (0.0, 0.1, 1.05)]
            x_ends = (t.cx, t.cx + s * 1.07 * half)
            box = (min(x_ends), min(ends) - 0.05, max(x_ends), max(ends) + 0.05)
            if box[1] > anatomy.diaphragm + 0.06:
                continue
            rows, cols = canvas.window(box)
            x, y = canvas.x[rows, cols], canvas.y[rows, cols]
            u = np.clip((x - t.cx) * s / half, 0.0, 1.2)
            # ribs frame the lungs: none below the hemidiaphragm, none outside the body
            within = ramp(np.abs(u - 0.55) - 0.5, 0.05) * ramp(y - (anatomy.diaphragm + 0.04), 0.03)
            offset = y - rib_centre(t, anatomy, s, k, u)
            gap: Array | float = 1.0
            if changes.fracture and changes.fracture[:2] == (s, k):
                _, _, at, step = changes.fracture
                # the lateral fragment is displaced, most at the break (an angulated fracture)
                offset = offset - step * (u > at) * np.exp(-np.clip(u - at, 0.0, None) / 0.1)
                gap = 1 - np.exp(-(((u - at) / 0.035) ** 2))
            band = ramp(np.abs(offset) - thickness / 2, e)
            cortex = np.exp(-(((np.abs(offset) - thickness / 2) / (0.25 * thickness)) ** 2))
            canvas.density[rows, cols] += (0.07 * band + 0.05 * cortex) * within * gap


def _draw_clavicles(canvas: Canvas, t: Thorax) -> None:
    for s in SIDES:
        points = np.array([(t.cx + s * 0.03, t.lung_top + 0.02), (t.cx + s * 0.18, t.lung_top - 0.01),
                           (t.cx + s * 0.33 * t.body_width / 0.9, t.lung_top - 0.05)])
        rows, cols = canvas.window((float(points[:, 0].min()), float(points[:, 1].min()),
                                    float(points[:, 0].max()), float(points[:, 1].max())), margin=0.03)
        dist = polyline_distance(canvas.x[rows, cols], canvas.y[rows, cols], points)
        canvas.density[rows, cols] += 0.12 * ramp(dist - 0.011, canvas.edge)


def expose(density: Array, spec: ImageSpec) -> Array:
    """Apply the acquisition's exposure and quantum noise: values in [0, 1], MONOCHROME2 sense."""
    rng = np.random.default_rng(spec.noise_seed)
    exposure = spec.exposure
    value = np.clip(density * exposure.gain, 0.0, 1.0) ** exposure.gamma
    value += rng.standard_normal(value.shape, dtype=np.float32) * exposure.noise
    result: Array = np.clip(value, 0.0, 1.0).astype(np.float32)
    return result
