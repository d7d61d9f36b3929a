// Window presets for projection radiographs (CR/DX), where pixel values are not Hounsfield units and a
// CT window means nothing. A preset here is a range of *displayed brightness* percentiles of the image's
// own pixel values after the modality LUT (the values the viewport windows): "lung" spreads the darker
// three quarters of the image (the lung fields of a chest radiograph) over the whole grey scale,
// "mediastinum" the brighter part (heart, mediastinum, the lungs behind them), "bone" the brightest.
// For MONOCHROME1 images (displayed inverted) the darkest displayed pixels hold the highest values, so
// the percentiles are taken from the other end. A job may add its own presets: percentiles too, or an
// absolute window (center/width in modality values) for data from one known source.
// Pure functions: no Cornerstone, no DOM.

export const HISTOGRAM_PRESETS = Object.freeze({
  lung: { label: 'Lung', percentiles: [0.5, 75] },
  mediastinum: { label: 'Mediastinum', percentiles: [35, 99.5] },
  bone: { label: 'Bone', percentiles: [65, 99.9] },
});

const SAMPLES = 262_144; // enough for percentiles to a tenth of a percent; keeps large radiographs fast

/** Sorted sample of the pixel values (every k-th value, at most SAMPLES of them, NaN dropped). */
export function sortedSample(pixels) {
  const step = Math.max(1, Math.floor(pixels.length / SAMPLES));
  const out = new Float64Array(Math.ceil(pixels.length / step));
  let n = 0;
  for (let i = 0; i < pixels.length; i += step) {
    const v = pixels[i];
    if (Number.isFinite(v)) out[n++] = v;
  }
  return out.subarray(0, n).sort();
}

/** The value at percentile `p` (0–100) of an ascending sample (nearest rank). */
export function percentile(sorted, p) {
  if (!sorted.length) return 0;
  const rank = Math.min(sorted.length - 1, Math.max(0, Math.round((p / 100) * (sorted.length - 1))));
  return sorted[rank];
}

/**
 * The VOI range {lower, upper} (LINEAR_EXACT) for a preset on an image whose ascending value sample is
 * `sorted`. `preset`: {percentiles: [lo, hi]} of displayed brightness, or {center, width} (absolute).
 * `inverted`: the image is displayed inverted (MONOCHROME1), so brightness percentile q is value
 * percentile 100 − q. The range is never empty.
 */
export function presetRange(preset, { sorted, inverted = false }) {
  let lower;
  let upper;
  if (Array.isArray(preset.percentiles)) {
    const [lo, hi] = preset.percentiles;
    const a = percentile(sorted, inverted ? 100 - hi : lo);
    const b = percentile(sorted, inverted ? 100 - lo : hi);
    lower = Math.min(a, b);
    upper = Math.max(a, b);
  } else {
    lower = preset.center - preset.width / 2;
    upper = preset.center + preset.width / 2;
  }
  if (!(upper > lower)) upper = lower + 1;
  return { lower, upper };
}

/** The presets a viewer offers: the histogram ones, then the job's own (keys `job0`, `job1`, ...). */
export function presetsFor(jobPresets = []) {
  const all = { ...HISTOGRAM_PRESETS };
  (Array.isArray(jobPresets) ? jobPresets : []).forEach((p, i) => {
    if (p && typeof p.name === 'string') all[`job${i}`] = { label: p.name, ...p };
  });
  return all;
}
