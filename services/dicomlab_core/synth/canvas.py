"""Vectorised drawing primitives on a normalised, slightly rotated coordinate grid.

Everything is drawn in *anatomy coordinates*: ``x`` and ``y`` run from 0 to 1 across the image
(x to the viewer's right, y downwards) after the patient's small in-plane rotation and shift are
undone. Shapes have soft edges about one pixel wide, so nothing needs a blur (there is no SciPy),
and small shapes are drawn only inside their bounding window so a 2048² image stays fast.
"""

from __future__ import annotations

import itertools
import logging
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

logger = logging.getLogger(__name__)

Array = npt.NDArray[np.floating[Any]]
Box = tuple[float, float, float, float]
"""A bounding box in normalised coordinates: (x0, y0, x1, y1)."""


@dataclass(frozen=True)
class Pose:
    """Where the patient sits in the image: in-plane rotation (degrees) and shift (image fractions)."""

    angle: float = 0.0
    dx: float = 0.0
    dy: float = 0.0


class Canvas:
    """The density map being drawn plus the anatomy coordinates of every pixel."""

    def __init__(self, rows: int, columns: int, pose: Pose) -> None:
        self.rows = rows
        self.columns = columns
        self.pose = pose
        self.density: Array = np.zeros((rows, columns), dtype=np.float32)
        self.edge = max(0.004, 1.2 / min(rows, columns))
        """Width of a soft edge, in normalised units (at least about one pixel)."""
        self._cos = math.cos(math.radians(pose.angle))
        self._sin = math.sin(math.radians(pose.angle))
        ys = (np.arange(rows, dtype=np.float32) + 0.5) / rows - 0.5
        xs = (np.arange(columns, dtype=np.float32) + 0.5) / columns - 0.5
        # image -> anatomy: rotate about the centre, then undo the shift
        self.x: Array = (self._cos * xs[None, :] + self._sin * ys[:, None] + 0.5 - pose.dx).astype(np.float32)
        self.y: Array = (-self._sin * xs[None, :] + self._cos * ys[:, None] + 0.5 - pose.dy).astype(np.float32)

    def to_image(self, x: float, y: float) -> tuple[float, float]:
        """Anatomy coordinates of a point -> normalised image coordinates."""
        ax, ay = x - 0.5 + self.pose.dx, y - 0.5 + self.pose.dy
        return (self._cos * ax - self._sin * ay + 0.5, self._sin * ax + self._cos * ay + 0.5)

    def image_box(self, box: Box) -> Box:
        """The axis-aligned image box enclosing an anatomy box, clipped to the image."""
        x0, y0, x1, y1 = box
        corners = [self.to_image(x, y) for x, y in ((x0, y0), (x1, y0), (x0, y1), (x1, y1))]
        xs, ys = [c[0] for c in corners], [c[1] for c in corners]
        return (max(0.0, min(xs)), max(0.0, min(ys)), min(1.0, max(xs)), min(1.0, max(ys)))

    def window(self, box: Box, margin: float = 0.0) -> tuple[slice, slice]:
        """Row/column slices of the pixels that can fall inside an anatomy box (plus a margin)."""
        x0, y0, x1, y1 = self.image_box((box[0] - margin, box[1] - margin, box[2] + margin, box[3] + margin))
        r0, r1 = max(0, int(y0 * self.rows) - 2), min(self.rows, math.ceil(y1 * self.rows) + 2)
        c0, c1 = max(0, int(x0 * self.columns) - 2), min(self.columns, math.ceil(x1 * self.columns) + 2)
        return slice(r0, max(r0, r1)), slice(c0, max(c0, c1))


def ramp(signed_distance: Array, width: float) -> Array:
    """1 inside (negative distance), 0 outside, a linear ramp ``width`` wide across the edge."""
    result: Array = np.clip(0.5 - signed_distance / width, 0.0, 1.0).astype(np.float32)
    return result


def ellipse(x: Array, y: Array, cx: float, cy: float, rx: float, ry: float, edge: float,
            power: float = 2.0) -> Array:
    """Soft mask of a (super)ellipse; ``power`` > 2 squares it off."""
    dx = np.abs(x - cx) / rx
    dy = np.abs(y - cy) / ry
    r = (dx**power + dy**power) ** (1.0 / power) if power != 2.0 else np.sqrt(dx * dx + dy * dy)
    return ramp((r - 1.0) * min(rx, ry), edge)


def gaussian(x: Array, y: Array, cx: float, cy: float, sx: float, sy: float | None = None) -> Array:
    """An unnormalised 2-D Gaussian bump (peak 1)."""
    sy = sx if sy is None else sy
    return np.exp(-0.5 * (((x - cx) / sx) ** 2 + ((y - cy) / sy) ** 2)).astype(np.float32)


def polyline_distance(x: Array, y: Array, points: npt.NDArray[np.float64]) -> Array:
    """Distance from every pixel to a polyline given as an (n, 2) array of (x, y) points."""
    best = np.full(x.shape, np.inf, dtype=np.float32)
    for (ax, ay), (bx, by) in itertools.pairwise(points):
        vx, vy = bx - ax, by - ay
        length2 = max(vx * vx + vy * vy, 1e-12)
        t = np.clip(((x - ax) * vx + (y - ay) * vy) / length2, 0.0, 1.0)
        d = np.hypot(x - (ax + t * vx), y - (ay + t * vy))
        np.minimum(best, d, out=best)
    return best


def bezier(p0: tuple[float, float], p1: tuple[float, float], p2: tuple[float, float],
           n: int = 16) -> npt.NDArray[np.float64]:
    """Points on a quadratic Bézier curve (a smooth tube, line or lead)."""
    t = np.linspace(0.0, 1.0, n)[:, None]
    a, b, c = np.array(p0), np.array(p1), np.array(p2)
    result: npt.NDArray[np.float64] = (1 - t) ** 2 * a + 2 * (1 - t) * t * b + t**2 * c
    return result


def points_box(points: npt.NDArray[np.float64], margin: float) -> Box:
    return (float(points[:, 0].min() - margin), float(points[:, 1].min() - margin),
            float(points[:, 0].max() + margin), float(points[:, 1].max() + margin))


def value_noise(rows: int, columns: int, cells: int, rng: np.random.Generator) -> Array:
    """Smooth random texture in [-1, 1]: a ``cells``-square random grid, bilinearly upsampled."""
    grid = rng.uniform(-1.0, 1.0, size=(cells + 1, cells + 1)).astype(np.float32)
    fy = np.linspace(0, cells, rows, dtype=np.float32)
    fx = np.linspace(0, cells, columns, dtype=np.float32)
    iy = np.minimum(fy.astype(np.int32), cells - 1)
    ix = np.minimum(fx.astype(np.int32), cells - 1)
    ty = (fy - iy)[:, None]
    tx = (fx - ix)[None, :]
    # smoothstep weights hide the grid
    ty, tx = ty * ty * (3 - 2 * ty), tx * tx * (3 - 2 * tx)
    top = grid[iy][:, ix] * (1 - tx) + grid[iy][:, ix + 1] * tx
    bottom = grid[iy + 1][:, ix] * (1 - tx) + grid[iy + 1][:, ix + 1] * tx
    result: Array = (top * (1 - ty) + bottom * ty).astype(np.float32)
    return result


def resize_bilinear(image: Array, rows: int, columns: int) -> Array:
    """Bilinear resampling to ``rows`` x ``columns`` (pixel centres aligned), in float32."""
    def axis(n_in: int, n_out: int) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp], Array]:
        pos = np.clip((np.arange(n_out, dtype=np.float32) + 0.5) * (n_in / n_out) - 0.5, 0, n_in - 1)
        low = np.minimum(pos.astype(np.intp), n_in - 2) if n_in > 1 else np.zeros(n_out, np.intp)
        high = np.minimum(low + 1, n_in - 1)
        return low, high, (pos - low).astype(np.float32)

    r0, r1, wr = axis(image.shape[0], rows)
    c0, c1, wc = axis(image.shape[1], columns)
    tall = image[r0] * (1 - wr[:, None]) + image[r1] * wr[:, None]
    result: Array = (tall[:, c0] * (1 - wc) + tall[:, c1] * wc).astype(np.float32)
    return result
