// The grayscale display pipeline of the DICOM standard, in one place (PS3.3 C.11, PS3.4 N.2):
//
//   stored value → Modality LUT (Modality LUT Sequence, else Rescale Slope/Intercept)
//                → VOI LUT (VOI LUT Sequence, else Window Center/Width — several windows, each with
//                  its explanation — with VOI LUT Function LINEAR / LINEAR_EXACT / SIGMOID; neither:
//                  the image's own value range) → 0..1
//                → Presentation LUT Shape / Photometric Interpretation: MONOCHROME1 (minimum = white)
//                  and Presentation LUT Shape INVERSE name ONE inversion (DX requires INVERSE together
//                  with MONOCHROME1; PS3.3 C.8.11.6.1.2), never two.
//
// These are the rules of the training decoder (training/dicomlab_training/pixels.py), which the browser
// tests use as the reference rendering. The pure part (attributes → plan → display value) needs no
// Cornerstone; `readAttributes` reads the file the loader parsed, `prepareImage` adapts a decoded Cornerstone image to the plan (non-linear tables and
// rescales the GPU path cannot apply are baked into the pixel buffer once) and `viewportProperties`
// gives the viewport's VOI range, VOI function and inversion.

import dicomImageLoader from '@cornerstonejs/dicom-image-loader';
import { core } from './cornerstone.js';

export const VOI_FUNCTIONS = Object.freeze(['LINEAR', 'LINEAR_EXACT', 'SIGMOID']);

const upper = (value) => String(value ?? '').trim().toUpperCase();

function numbers(text) {
  if (text === undefined || text === null || text === '') return [];
  return String(text)
    .split('\\')
    .map((v) => v.trim())
    .filter((v) => v !== '')
    .map(Number);
}

/** One LUT item (Modality or VOI LUT Sequence) of a dicom-parser DataSet, little endian. */
function lutFromItem(item, signedFirst) {
  const descriptor = item.elements.x00283002;
  const data = item.elements.x00283006;
  if (!descriptor || !data) return null;
  const entries = item.uint16('x00283002', 0) || 65536;
  const signed = descriptor.vr === 'SS' || (descriptor.vr === undefined && signedFirst);
  const first = signed ? item.int16('x00283002', 1) : item.uint16('x00283002', 1);
  const bits = item.uint16('x00283002', 2);
  const count = Math.min(entries, Math.floor(data.length / 2));
  const values = new Float64Array(count);
  for (let i = 0; i < count; i += 1) values[i] = item.uint16('x00283006', i);
  return { entries: count, first, bits, data: values, explanation: item.string('x00283003') ?? '' };
}

/**
 * The pipeline's attributes from a parsed Part 10 file (a dicom-parser DataSet, as the wadouri loader
 * keeps it). Returns a plain object (see `grayscalePlan`).
 */
export function attributesFromDataSet(ds) {
  const pixelRepresentation = ds.uint16('x00280103') ?? 0;
  const firstItem = (tag) => ds.elements[tag]?.items?.[0]?.dataSet ?? null;
  const modalityItem = firstItem('x00283000');
  const rescaleSigned =
    pixelRepresentation === 1 || (ds.elements.x00281052 && Number(ds.string('x00281052')) < 0);
  const voiItems = (ds.elements.x00283010?.items ?? []).map((i) => i.dataSet).filter(Boolean);
  return {
    photometric: upper(ds.string('x00280004')),
    presentationLutShape: upper(ds.string('x20500020')),
    bitsStored: ds.uint16('x00280101') ?? 16,
    pixelRepresentation,
    rescaleSlope: ds.elements.x00281053 ? Number(ds.string('x00281053')) : undefined,
    rescaleIntercept: ds.elements.x00281052 ? Number(ds.string('x00281052')) : undefined,
    modalityLut: modalityItem ? lutFromItem(modalityItem, pixelRepresentation === 1) : null,
    voiLuts: voiItems.map((item) => lutFromItem(item, rescaleSigned)).filter(Boolean),
    windowCenters: numbers(ds.string('x00281050')),
    windowWidths: numbers(ds.string('x00281051')),
    windowExplanations: String(ds.string('x00281055') ?? '')
      .split('\\')
      .map((v) => v.trim()),
    voiLutFunction: upper(ds.string('x00281056')),
  };
}

const list = (value) => (value === undefined || value === null ? [] : Array.isArray(value) ? value : [value]);

function lutFromNatural(item) {
  const descriptor = list(item?.LUTDescriptor).map(Number);
  const raw = item?.LUTData;
  if (descriptor.length < 3 || raw === undefined || raw === null) return null;
  let values;
  if (Array.isArray(raw) && (raw.length === 0 || typeof Number(raw[0]) === 'number') && !(raw[0] instanceof ArrayBuffer)) {
    values = Float64Array.from(raw, Number);
  } else {
    const buffer = Array.isArray(raw) ? raw[0] : raw;
    const bytes = buffer instanceof ArrayBuffer ? new Uint8Array(buffer) : new Uint8Array(buffer.buffer, buffer.byteOffset, buffer.byteLength);
    values = Float64Array.from(new Uint16Array(bytes.slice().buffer, 0, Math.floor(bytes.length / 2)));
  }
  const entries = Math.min(descriptor[0] || 65536, values.length);
  return { entries, first: descriptor[1], bits: descriptor[2], data: values, explanation: String(item.LUTExplanation ?? '') };
}

/** The pipeline's attributes from a naturalized dataset (DICOM keywords, as Cornerstone's loaders keep it). */
export function attributesFromNatural(d) {
  const one = (value) => (list(value).length ? list(value)[0] : undefined);
  const num = (value) => (one(value) === undefined ? undefined : Number(one(value)));
  return {
    photometric: upper(one(d.PhotometricInterpretation)),
    presentationLutShape: upper(one(d.PresentationLUTShape)),
    bitsStored: num(d.BitsStored) ?? 16,
    pixelRepresentation: num(d.PixelRepresentation) ?? 0,
    rescaleSlope: num(d.RescaleSlope),
    rescaleIntercept: num(d.RescaleIntercept),
    modalityLut: lutFromNatural(one(d.ModalityLUTSequence)),
    voiLuts: list(d.VOILUTSequence).map(lutFromNatural).filter(Boolean),
    windowCenters: list(d.WindowCenter).map(Number),
    windowWidths: list(d.WindowWidth).map(Number),
    windowExplanations: list(d.WindowCenterWidthExplanation).map((v) => String(v).trim()),
    voiLutFunction: upper(one(d.VOILUTFunction)),
  };
}

/**
 * The attributes of a loaded `image`: from the Part 10 file the wadouri loader parsed, else (other
 * loaders) from Cornerstone's metadata modules, which know no Presentation LUT Shape.
 */
export function readAttributes(imageId, image = null) {
  // The wadouri loader leaves the parsed file on the image (`image.data`): naturalized (keywords) or a
  // dicom-parser DataSet, depending on its path; it may have dropped the file from its own cache.
  const data = image?.data;
  if (data && !data.elements && typeof data === 'object' && 'PhotometricInterpretation' in data) {
    return attributesFromNatural(data);
  }
  let dataSet = image?.data?.elements && typeof image.data.string === 'function' ? image.data : null;
  if (!dataSet && imageId.startsWith('wadouri:')) {
    dataSet = dicomImageLoader.wadouri.dataSetCacheManager.get(dicomImageLoader.wadouri.parseImageId(imageId).url);
  }
  if (dataSet) return attributesFromDataSet(dataSet);
  const pixel = core.metaData.get('imagePixelModule', imageId) ?? {};
  const modality = core.metaData.get('modalityLutModule', imageId) ?? {};
  const voi = core.metaData.get('voiLutModule', imageId) ?? {};
  const table = (lut) =>
    lut ? { entries: lut.lut.length, first: lut.firstValueMapped, bits: lut.numBitsPerEntry, data: lut.lut, explanation: '' } : null;
  return {
    photometric: upper(pixel.photometricInterpretation),
    presentationLutShape: '',
    bitsStored: pixel.bitsStored ?? 16,
    pixelRepresentation: pixel.pixelRepresentation ?? 0,
    rescaleSlope: modality.rescaleSlope,
    rescaleIntercept: modality.rescaleIntercept,
    modalityLut: table(modality.modalityLUTSequence?.[0]),
    voiLuts: (voi.voiLUTSequence ?? []).map(table).filter(Boolean),
    windowCenters: [].concat(voi.windowCenter ?? []).map(Number),
    windowWidths: [].concat(voi.windowWidth ?? []).map(Number),
    windowExplanations: [],
    voiLutFunction: upper(voi.voiLUTFunction),
  };
}

/**
 * The display plan of one image from its attributes: what each stage does. `windows` lists every valid
 * window (the first is the default); `voi.kind` is 'lut' (a VOI LUT Sequence is preferred over windows,
 * as pydicom's `apply_voi_lut(prefer_lut=True)` does), 'window' or 'range'.
 */
export function grayscalePlan(attrs) {
  const photometric = attrs.photometric || 'MONOCHROME2';
  const shape = attrs.presentationLutShape || '';
  const modality = attrs.modalityLut
    ? { kind: 'lut', lut: attrs.modalityLut }
    : Number.isFinite(attrs.rescaleSlope) && Number.isFinite(attrs.rescaleIntercept)
      ? { kind: 'rescale', slope: attrs.rescaleSlope, intercept: attrs.rescaleIntercept }
      : { kind: 'rescale', slope: 1, intercept: 0 };
  const fn = VOI_FUNCTIONS.includes(attrs.voiLutFunction) ? attrs.voiLutFunction : 'LINEAR';
  const windows = [];
  const n = Math.min(attrs.windowCenters?.length ?? 0, attrs.windowWidths?.length ?? 0);
  for (let i = 0; i < n; i += 1) {
    const center = attrs.windowCenters[i];
    const width = attrs.windowWidths[i];
    // LINEAR needs a width of at least 1, the others a positive width (PS3.3 C.11.2.1.2).
    const valid = Number.isFinite(center) && Number.isFinite(width) && (fn === 'LINEAR' ? width >= 1 : width > 0);
    if (valid) windows.push({ center, width, explanation: attrs.windowExplanations?.[i] || `Window ${i + 1}` });
  }
  let voi;
  if (attrs.voiLuts?.length) voi = { kind: 'lut', lut: attrs.voiLuts[0] };
  else if (windows.length) voi = { kind: 'window', fn, window: windows[0] };
  else voi = { kind: 'range' };
  const monochrome1 = photometric === 'MONOCHROME1';
  return {
    photometric,
    presentationLutShape: shape,
    modality,
    voi,
    windows,
    voiFunction: fn,
    // One inversion for MONOCHROME1, for Presentation LUT Shape INVERSE, or for both together.
    invert: monochrome1 || shape === 'INVERSE',
  };
}

function lookup(lut, value) {
  const index = Math.min(lut.entries - 1, Math.max(0, Math.round(value) - lut.first));
  return lut.data[index];
}

/** Modality LUT stage: stored value → modality value. */
export function modalityValue(plan, stored) {
  if (plan.modality.kind === 'lut') return lookup(plan.modality.lut, stored);
  return stored * plan.modality.slope + plan.modality.intercept;
}

/** A window as a 0..1 function of the modality value (PS3.3 C.11.2.1.2/3). */
export function windowValue(fn, { center, width }, x) {
  if (fn === 'SIGMOID') return 1 / (1 + Math.exp((-4 * (x - center)) / width));
  if (fn === 'LINEAR_EXACT') {
    if (x <= center - width / 2) return 0;
    if (x > center + width / 2) return 1;
    return (x - center) / width + 0.5;
  }
  if (x <= center - 0.5 - (width - 1) / 2) return 0;
  if (x > center - 0.5 + (width - 1) / 2) return 1;
  return (x - (center - 0.5)) / (width - 1) + 0.5;
}

/**
 * The displayed brightness (0 black .. 1 white) of a stored value, through the whole pipeline.
 * `range` ({min, max} of the modality values) serves images without any VOI.
 */
export function displayValue(plan, stored, range = { min: 0, max: 1 }) {
  const x = modalityValue(plan, stored);
  let y;
  if (plan.voi.kind === 'lut') y = lookup(plan.voi.lut, x) / (2 ** plan.voi.lut.bits - 1);
  else if (plan.voi.kind === 'window') y = windowValue(plan.voi.fn, plan.voi.window, x);
  else y = range.max > range.min ? (x - range.min) / (range.max - range.min) : 0;
  y = Math.min(1, Math.max(0, y));
  return plan.invert ? 1 - y : y;
}

/** The VOI range {lower, upper} Cornerstone needs to apply `window` with `fn` (its own convention). */
export function voiRangeOf(fn, { center, width }) {
  if (fn === 'LINEAR_EXACT') return { lower: center - width / 2, upper: center + width / 2 };
  // LINEAR and SIGMOID: Cornerstone's toLowHighRange (width - 1 between the ends; sigmoid recovers c, w).
  return { lower: center - 0.5 - (width - 1) / 2, upper: center - 0.5 + (width - 1) / 2 };
}

const CS_FUNCTION = { LINEAR: 'LINEAR', LINEAR_EXACT: 'LINEAR_EXACT', SIGMOID: 'SIGMOID' };

/**
 * Make a decoded Cornerstone image carry the values the viewport's VOI stage works on, once per image
 * (the cache keeps the result): the modality values, or the VOI LUT output when a VOI LUT Sequence
 * applies. Cornerstone's GPU path only applies a rescale it did itself while decoding; a Modality LUT
 * Sequence, a VOI LUT Sequence, or a rescale it skipped are applied here, through one lookup table over
 * the stored value range. Returns the image's `{ min, max }` after this step.
 */
export function prepareImage(image, plan, makeVoxelManager) {
  if (image.dicomlabGrayscale) return image.dicomlabGrayscale.range;
  const pixels = image.getPixelData();
  const scaled = image.preScale?.scaled === true;
  const slope = scaled ? image.preScale.scalingParameters?.rescaleSlope ?? 1 : 1;
  const intercept = scaled ? image.preScale.scalingParameters?.rescaleIntercept ?? 0 : 0;
  const toStored = (v) => Math.round((v - intercept) / slope);
  const rescaleDone =
    plan.modality.kind === 'rescale' && scaled
      ? slope === plan.modality.slope && intercept === plan.modality.intercept
      : plan.modality.kind === 'rescale' && plan.modality.slope === 1 && plan.modality.intercept === 0;
  const bake = plan.voi.kind === 'lut' || plan.modality.kind === 'lut' || !rescaleDone;
  let min = Infinity;
  let max = -Infinity;
  if (!bake) {
    for (let i = 0; i < pixels.length; i += 1) {
      const v = pixels[i];
      if (v < min) min = v;
      if (v > max) max = v;
    }
  } else {
    let sMin = Infinity;
    let sMax = -Infinity;
    for (let i = 0; i < pixels.length; i += 1) {
      const s = toStored(pixels[i]);
      if (s < sMin) sMin = s;
      if (s > sMax) sMax = s;
    }
    const table = new Float32Array(sMax - sMin + 1);
    for (let s = sMin; s <= sMax; s += 1) {
      const m = modalityValue(plan, s);
      table[s - sMin] = plan.voi.kind === 'lut' ? lookup(plan.voi.lut, m) : m;
    }
    const out = new Float32Array(pixels.length);
    for (let i = 0; i < pixels.length; i += 1) {
      const v = table[toStored(pixels[i]) - sMin];
      out[i] = v;
      if (v < min) min = v;
      if (v > max) max = v;
    }
    image.imageFrame && (image.imageFrame.pixelData = out);
    image.getPixelData = () => out;
    image.voxelManager = makeVoxelManager({ scalarData: out, width: image.columns, height: image.rows });
    image.dataType = 'Float32Array';
    image.slope = 1;
    image.intercept = 0;
    image.preScale = { enabled: true, scaled: true, scalingParameters: { rescaleSlope: 1, rescaleIntercept: 0 } };
    image.modalityLUT = undefined;
    image.voiLUT = undefined;
  }
  image.minPixelValue = min;
  image.maxPixelValue = max;
  const range = { min, max };
  image.dicomlabGrayscale = { plan, range, baked: bake };
  return range;
}

/**
 * Viewport properties for the plan with window `index` (into plan.windows; -1 = the plan's own VOI):
 * `{ voiRange, VOILUTFunction, invert }`.
 */
export function viewportProperties(plan, range, index = -1) {
  const invert = plan.invert;
  const window = index >= 0 && plan.voi.kind !== 'lut' ? plan.windows[index] : plan.voi.kind === 'window' ? plan.voi.window : null;
  if (window) {
    return { voiRange: voiRangeOf(plan.voiFunction, window), VOILUTFunction: CS_FUNCTION[plan.voiFunction], invert };
  }
  if (plan.voi.kind === 'lut') {
    // The buffer holds the VOI LUT output: its full scale is the LUT's bit depth.
    return { voiRange: { lower: 0, upper: 2 ** plan.voi.lut.bits - 1 }, VOILUTFunction: 'LINEAR_EXACT', invert };
  }
  const upperValue = range.max > range.min ? range.max : range.min + 1;
  return { voiRange: { lower: range.min, upper: upperValue }, VOILUTFunction: 'LINEAR_EXACT', invert };
}

/** The window choices to offer: the image's own windows with their explanations. */
export function windowChoices(plan) {
  if (plan.voi.kind === 'lut') return []; // the buffer holds the VOI LUT's output: no window applies to it
  return plan.windows.map((w, i) => ({ index: i, label: w.explanation, center: w.center, width: w.width }));
}
