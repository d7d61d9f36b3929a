// The image on screen: one Cornerstone3D stack viewport with its tool group, the grayscale pipeline
// applied to each image, and the view operations (tools, windows, presets, invert, rotate, flip, zoom,
// reset). No findings and no ROIs' meaning here: annotation events go to the viewer's callback.
//
// The viewer's observable state is kept on `root.dataset` (tool, inverted, preset), which the pages'
// styles and the browser tests read.

import { presetRange, sortedSample } from './presets.js';
import { core, initCornerstone, prepareImage as fetchImageMetadata, tools } from './cornerstone.js';
import { el } from './dom.js';
import { installGeometryFallback } from './geometry.js';
import { grayscalePlan, prepareImage, readAttributes, viewportProperties } from './grayscale.js';
import { withTimeout } from './loadstate.js';
import { CLICK_POLYGON_CONFIGURATION } from './polygon.js';

export const TOOL_NAMES = {
  wl: 'WindowLevel',
  pan: 'Pan',
  zoom: 'Zoom',
  rectangle: 'RectangleROI',
  ellipse: 'EllipticalROI',
  polygon: 'ClickPolygonROI', // click to place vertices (polygon.js)
  freehand: 'PlanarFreehandROI', // drag
};
/** The answer's ROI tool of each Cornerstone tool (both polygon tools give a "polygon"). */
export const ROI_TOOL_BY_NAME = {
  RectangleROI: 'rectangle',
  EllipticalROI: 'ellipse',
  ClickPolygonROI: 'polygon',
  PlanarFreehandROI: 'polygon',
};
const ROI_KEYS = ['rectangle', 'ellipse', 'polygon', 'freehand'];
const ANNOTATION_EVENTS = ['ANNOTATION_COMPLETED', 'ANNOTATION_MODIFIED', 'ANNOTATION_REMOVED'];

let engine = null;

/** One rendering engine per page, shared by every viewer (one WebGL context; Cornerstone's design). */
function sharedEngine() {
  if (!engine || engine.hasBeenDestroyed) engine = new core.RenderingEngine('dicomlab-engine');
  return engine;
}

/** Resolves after the viewport element's next IMAGE_RENDERED event (or after `ms`, whichever is first). */
function nextRender(element, ms = 2000) {
  return new Promise((resolve) => {
    const type = core.Enums.Events.IMAGE_RENDERED;
    const done = () => {
      clearTimeout(timer);
      element.removeEventListener(type, done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    element.addEventListener(type, done);
  });
}

export class ImageViewport {
  /**
   * @param {object} options  id (unique per viewer), root (the viewer element: dataset state), cpu,
   *   readOnly, onAnnotation(event) (Cornerstone annotation events), onWindowChange() (after W/L changes),
   *   onToolChange(key), textLines(data, targetId) (the text drawn next to each ROI)
   */
  constructor({ id, root, cpu = false, readOnly = false, onAnnotation, onWindowChange, onToolChange, textLines }) {
    this.textLines = textLines;
    this.id = id;
    this.root = root;
    this.cpu = cpu;
    this.readOnly = readOnly;
    this.onAnnotation = onAnnotation;
    this.onWindowChange = onWindowChange;
    this.onToolChange = onToolChange;
    this.viewport = null;
    this.imageId = null;
    this.plan = null;
    this.range = null;
    this.initialProperties = null;
    this.rotation = 0;
    this.flipH = false;
    this.flipV = false;
    this.activeTool = 'wl';
    this.element = el('div', {
      class: 'dl-viewport',
      tabindex: '0',
      role: 'img',
      'aria-label': 'DICOM image',
      oncontextmenu: (e) => e.preventDefault(),
    });
  }

  // ---------------------------------------------------------------- Cornerstone set-up
  async ensure() {
    if (this.viewport) return this.viewport;
    await initCornerstone({ cpu: this.cpu });
    installGeometryFallback();
    const { Enums } = core;
    this.engine = sharedEngine();
    this.viewportId = `${this.id}-vp`;
    this.engine.enableElement({
      viewportId: this.viewportId,
      type: Enums.ViewportType.STACK,
      element: this.element,
      defaultOptions: { background: [0, 0, 0] },
    });
    this.viewport = this.engine.getViewport(this.viewportId);
    const group = tools.ToolGroupManager.createToolGroup(`${this.id}-tools`);
    const getTextLines = (data, targetId) => this.textLines?.(data, targetId) ?? [];
    for (const [key, name] of Object.entries(TOOL_NAMES)) {
      if (!ROI_KEYS.includes(key)) group.addTool(name);
      else group.addTool(name, { getTextLines, ...(key === 'polygon' ? CLICK_POLYGON_CONFIGURATION : {}) });
    }
    group.addViewport(this.viewportId, this.engine.id);
    const { MouseBindings } = tools.Enums;
    group.setToolActive(TOOL_NAMES.pan, { bindings: [{ mouseButton: MouseBindings.Auxiliary }] });
    group.setToolActive(TOOL_NAMES.zoom, {
      bindings: [{ mouseButton: MouseBindings.Secondary }, { mouseButton: MouseBindings.Wheel }],
    });
    for (const key of ROI_KEYS) group.setToolPassive(TOOL_NAMES[key]);
    group.setToolActive(TOOL_NAMES.wl, { bindings: [{ mouseButton: MouseBindings.Primary }] });
    this.toolGroup = group;
    const { Events } = tools.Enums;
    this.annotationListener = (event) => this.onAnnotation?.(event);
    for (const name of ANNOTATION_EVENTS) core.eventTarget.addEventListener(Events[name], this.annotationListener);
    this.element.addEventListener(core.Enums.Events.VOI_MODIFIED, () => this.onWindowChange?.());
    this.resizeObserver = new ResizeObserver(() => this.engine?.resize(true, true));
    this.resizeObserver.observe(this.element);
    return this.viewport;
  }

  /**
   * Fetch, decode and show image `id` with the grayscale pipeline of its attributes; `stale()` says a newer
   * load overtook this one (then it resolves false and changes nothing more). Throws on any failure.
   */
  async show(id, { timeoutMs, stale }) {
    this.imageId = null;
    this.plan = null;
    const viewport = await this.ensure();
    if (stale()) return false;
    // wadors ids (de-identified jobs) need their instance metadata registered before frames load.
    const image = await withTimeout(
      fetchImageMetadata(id).then(() => core.imageLoader.loadAndCacheImage(id)),
      timeoutMs,
    );
    if (stale()) return false;
    if (image.color) throw new Error('colour images are not supported for labelling');
    this.plan = grayscalePlan(readAttributes(id, image));
    const range = prepareImage(image, this.plan, (o) =>
      core.utilities.VoxelManager.createImageVoxelManager({ ...o, numberOfComponents: 1 }),
    );
    await viewport.setStack([id], 0);
    if (stale()) return false;
    this.imageId = id;
    this.range = range;
    this.rotation = 0;
    this.flipH = this.flipV = false;
    viewport.resetCamera();
    this.initialProperties = viewportProperties(this.plan, range);
    viewport.setProperties({ ...this.initialProperties });
    // "ready" means drawn: wait for the frame (Cornerstone renders on the next animation frame).
    const rendered = nextRender(this.element);
    viewport.render();
    await rendered;
    if (stale()) return false;
    this.root.dataset.inverted = String(this.initialProperties.invert);
    return true;
  }

  /** After a failed load: drop the image from the cache and the viewport with the previous image in it. */
  fail(id) {
    this.forget(id);
    this.plan = null;
    this.imageId = null;
    // Cornerstone would redraw the previous image on the next resize; the next load builds a fresh one.
    this.destroy();
  }

  /** Drop a failed image from Cornerstone's cache so a later load asks the server again. */
  forget(id) {
    try {
      if (core.cache.getImageLoadObject(id)) core.cache.removeImageLoadObject(id);
    } catch {
      // not cached: nothing to drop
    }
  }

  render() {
    this.viewport?.render();
  }

  // ---------------------------------------------------------------- coordinates
  /** Where the whole image is drawn, in page coordinates ({x, y, width, height}); null when none is. */
  imageRectOnScreen() {
    const image = this.imageId ? core.cache.getImage(this.imageId) : null;
    if (!image || !this.viewport) return null;
    const [a, b] = [[0, 0], [image.columns, image.rows]].map((p) =>
      this.viewport.worldToCanvas(core.utilities.imageToWorldCoords(this.imageId, p)),
    );
    const box = this.element.getBoundingClientRect();
    const x = Math.min(a[0], b[0]);
    const y = Math.min(a[1], b[1]);
    return { x: box.x + x, y: box.y + y, width: Math.abs(b[0] - a[0]), height: Math.abs(b[1] - a[1]) };
  }

  // ---------------------------------------------------------------- view operations
  setTool(key) {
    if (!this.toolGroup || !TOOL_NAMES[key]) return;
    if (this.readOnly && ROI_TOOL_BY_NAME[TOOL_NAMES[key]]) return;
    const { MouseBindings } = tools.Enums;
    this.discardPolygon(); // a polygon half placed is dropped, not left listening for clicks
    this.toolGroup.setToolPassive(TOOL_NAMES[this.activeTool]);
    this.toolGroup.setToolActive(TOOL_NAMES[key], { bindings: [{ mouseButton: MouseBindings.Primary }] });
    this.activeTool = key;
    this.markTool();
  }

  polygonTool() {
    return this.toolGroup?.getToolInstance(TOOL_NAMES.polygon) ?? null;
  }

  /** True while a click-to-place polygon is being drawn (Enter closes it, Escape drops it). */
  drawingPolygon() {
    return Boolean(this.polygonTool()?.drawing);
  }

  /** Vertices placed so far on the polygon being drawn (0 when none is). */
  polygonVertices() {
    const tool = this.polygonTool();
    return tool?.drawing ? tool.editData.annotation.data.handles.points.length : 0;
  }

  closePolygon() {
    return Boolean(this.polygonTool()?.close(this.element));
  }

  discardPolygon() {
    return Boolean(this.polygonTool()?.discard(this.element));
  }

  markTool() {
    this.root.dataset.tool = this.activeTool;
    this.onToolChange?.(this.activeTool);
  }

  /** An ascending sample of the displayed image's values (after the modality LUT), computed once per image. */
  imageSample() {
    const image = this.imageId ? core.cache.getImage(this.imageId) : null;
    if (!image) return new Float64Array(0);
    if (!image.dicomlabSample) image.dicomlabSample = sortedSample(image.getPixelData());
    return image.dicomlabSample;
  }

  applyImageWindow(index) {
    if (!this.viewport || !this.plan) return;
    const { voiRange, VOILUTFunction } = viewportProperties(this.plan, this.range, index);
    this.viewport.setProperties({ voiRange, VOILUTFunction });
    this.viewport.render();
    delete this.root.dataset.preset;
    this.onWindowChange?.();
  }

  applyPreset(key, preset) {
    if (!this.viewport || !this.imageId || !preset) return;
    const inverted = Boolean(this.initialProperties?.invert);
    // LINEAR_EXACT: the range is exactly the chosen values (a window's ±0.5 convention does not apply).
    this.viewport.setProperties({
      voiRange: presetRange(preset, { sorted: this.imageSample(), inverted }),
      VOILUTFunction: 'LINEAR_EXACT',
    });
    this.viewport.render();
    this.root.dataset.preset = key;
    this.onWindowChange?.();
  }

  windowLevel() {
    const range = this.viewport?.getProperties?.().voiRange;
    if (!range || !this.imageId) return null;
    if (this.viewport.getProperties().VOILUTFunction === 'LINEAR_EXACT') {
      return { center: (range.upper + range.lower) / 2, width: range.upper - range.lower };
    }
    // LINEAR / SIGMOID: Cornerstone keeps the range as c - 0.5 ± (w - 1) / 2 (PS3.3 C.11.2.1.2.1).
    return { center: (range.upper + range.lower + 1) / 2, width: range.upper - range.lower + 1 };
  }

  invert() {
    if (!this.viewport) return;
    const { invert } = this.viewport.getProperties();
    this.viewport.setProperties({ invert: !invert });
    this.viewport.render();
    this.root.dataset.inverted = String(!invert);
  }

  rotate() {
    if (!this.viewport) return;
    this.rotation = (this.rotation + 90) % 360;
    this.viewport.setViewPresentation({ rotation: this.rotation });
    this.viewport.render();
  }

  flip(axis) {
    if (!this.viewport) return;
    if (axis === 'h') this.flipH = !this.flipH;
    else this.flipV = !this.flipV;
    this.viewport.setCamera(axis === 'h' ? { flipHorizontal: this.flipH } : { flipVertical: this.flipV });
    this.viewport.render();
  }

  zoomBy(factor) {
    if (!this.viewport) return;
    this.viewport.setZoom(this.viewport.getZoom() * factor);
    this.viewport.render();
  }

  /** Camera and window back to how the image was first shown. Resolves nothing; the caller updates its UI. */
  resetView() {
    if (!this.viewport) return false;
    this.rotation = 0;
    this.flipH = this.flipV = false;
    this.viewport.resetCamera();
    // Not viewport.resetProperties(): it recomputes a VOI from the pixels and throws on some images.
    if (this.initialProperties) this.viewport.setProperties({ ...this.initialProperties });
    this.viewport.render();
    delete this.root.dataset.preset;
    this.root.dataset.inverted = String(Boolean(this.initialProperties?.invert));
    return true;
  }

  destroy() {
    if (this.viewport) this.discardPolygon();
    if (this.annotationListener) {
      const { Events } = tools.Enums;
      for (const name of ANNOTATION_EVENTS) core.eventTarget.removeEventListener(Events[name], this.annotationListener);
      this.annotationListener = null;
    }
    this.resizeObserver?.disconnect();
    if (this.toolGroup) tools.ToolGroupManager.destroyToolGroup(this.toolGroup.id);
    if (this.viewportId && this.engine?.getViewport(this.viewportId)) this.engine.disableElement(this.viewportId);
    this.viewport = this.engine = this.toolGroup = null;
    this.activeTool = 'wl';
    this.markTool();
  }
}
