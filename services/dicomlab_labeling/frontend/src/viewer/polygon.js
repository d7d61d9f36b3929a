// A click-to-place polygon ROI: each click adds a vertex; a double-click, a click on the first vertex or
// Enter closes it (3 vertices at least); Escape cancels it; Backspace/Delete removes the last vertex.
// Cornerstone3D's SplineROITool with its LINEAR spline already does the clicks and the double-click
// (OHIF offers the same tool as "LinearSplineROI"); this subclass adds closing and cancelling from the
// keyboard, which the viewer's keyboard handler calls. The freehand polygon (drag) stays
// PlanarFreehandROI; both give a "polygon" ROI in the answer.

import { SplineROITool } from '@cornerstonejs/tools';

export class ClickPolygonTool extends SplineROITool {
  /** True while a polygon is being placed (clicks add vertices). */
  get drawing() {
    return Boolean(this.isDrawing && this.editData?.annotation);
  }

  /** Close the polygon being placed (Enter); false when there is none or it has fewer than 3 vertices. */
  close(element) {
    const annotation = this.editData?.annotation;
    if (!this.isDrawing || !annotation || annotation.data.handles.points.length < 3) return false;
    annotation.data.contour.closed = true;
    annotation.invalidated = true;
    this._endCallback({ detail: { element } });
    return true;
  }

  /** Drop the polygon being placed (Escape). */
  discard(element) {
    if (!this.isDrawing) return false;
    this.cancel(element);
    return true;
  }
}
ClickPolygonTool.toolName = 'ClickPolygonROI';

/** The tool's configuration: straight edges between the clicked vertices. */
export const CLICK_POLYGON_CONFIGURATION = Object.freeze({ spline: { type: 'LINEAR' } });

/**
 * Mean and standard deviation of the pixel values inside a polygon (image pixel coordinates; a pixel
 * counts when its centre is inside, even-odd rule). SplineROITool computes only the area; the other ROI
 * tools give mean and std too, so the click polygon gets them here.
 */
export function polygonStats(pixels, columns, rows, vertices) {
  if (vertices.length < 3) return {};
  const xs = vertices.map((p) => p[0]);
  const ys = vertices.map((p) => p[1]);
  const x0 = Math.max(0, Math.floor(Math.min(...xs)));
  const x1 = Math.min(columns - 1, Math.ceil(Math.max(...xs)));
  const y0 = Math.max(0, Math.floor(Math.min(...ys)));
  const y1 = Math.min(rows - 1, Math.ceil(Math.max(...ys)));
  let n = 0;
  let sum = 0;
  let squares = 0;
  for (let y = y0; y <= y1; y += 1) {
    const cy = y + 0.5;
    for (let x = x0; x <= x1; x += 1) {
      const cx = x + 0.5;
      let inside = false;
      for (let i = 0, j = vertices.length - 1; i < vertices.length; j = i, i += 1) {
        const [xi, yi] = vertices[i];
        const [xj, yj] = vertices[j];
        if (yi > cy !== yj > cy && cx < ((xj - xi) * (cy - yi)) / (yj - yi) + xi) inside = !inside;
      }
      if (!inside) continue;
      const v = pixels[y * columns + x];
      n += 1;
      sum += v;
      squares += v * v;
    }
  }
  if (!n) return {};
  const mean = sum / n;
  return { mean, stdDev: Math.sqrt(Math.max(0, squares / n - mean * mean)) };
}
