// Image geometry that real files declare badly: Pixel Spacing `0\0`, negative, one value, absurd aspect,
// or missing (only Imager Pixel Spacing, or nothing). Cornerstone sizes the image in world units from
// the spacing, so a zero spacing draws nothing at all (a black canvas). A metadata provider placed
// before the loader's own answers every such image with 1 mm per pixel and says so
// (`spacingFallback`), so the viewer can tell the reader that measurements are in pixels.

import { core } from './cornerstone.js';

const MAX_ASPECT = 20; // rows vs columns spacing: beyond this the values are not a real pixel shape

/** Why a Pixel Spacing pair cannot size the image ('' when it can). */
export function spacingProblem(spacing) {
  if (!Array.isArray(spacing) || spacing.length < 2) return 'no Pixel Spacing';
  const [row, column] = spacing.map(Number);
  if (!Number.isFinite(row) || !Number.isFinite(column)) return 'unreadable Pixel Spacing';
  if (row <= 0 || column <= 0) return 'zero or negative Pixel Spacing';
  if (Math.max(row, column) / Math.min(row, column) > MAX_ASPECT) return 'inconsistent Pixel Spacing';
  return '';
}

let installed = false;
let inside = false;

/** Register the fallback provider once per page (after Cornerstone's init). */
export function installGeometryFallback() {
  if (installed) return;
  installed = true;
  core.metaData.addProvider((type, imageId) => {
    if (type !== core.Enums.MetadataModules.IMAGE_PLANE || inside) return undefined;
    let plane;
    inside = true; // ask the other providers (the loader's) for the declared geometry
    try {
      plane = core.metaData.get(type, imageId);
    } finally {
      inside = false;
    }
    if (!plane) return undefined;
    const problem = spacingProblem(plane.pixelSpacing) || (plane.usingDefaultValues ? 'no Pixel Spacing' : '');
    if (!problem) return plane;
    return {
      ...plane,
      pixelSpacing: [1, 1],
      rowPixelSpacing: 1,
      columnPixelSpacing: 1,
      usingDefaultValues: true,
      spacingFallback: problem,
    };
  }, 10_000);
}

/** The geometry note for the reader: '' when measurements are in millimetres. */
export function geometryNote(imageId) {
  const plane = core.metaData.get(core.Enums.MetadataModules.IMAGE_PLANE, imageId);
  if (!plane) return '';
  if (plane.spacingFallback) return `Measurements in pixels (${plane.spacingFallback})`;
  if (plane.usingDefaultValues) return 'Measurements in pixels (no Pixel Spacing)';
  return '';
}
