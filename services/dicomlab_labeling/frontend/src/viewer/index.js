// The labeling viewer: one Cornerstone3D stack viewport with W/L, zoom, pan, invert, rotate, flip,
// rectangle/ellipse/polygon ROIs tied to findings, a findings panel (present/absent/uncertain,
// "No Finding" exclusive) and keyboard shortcuts. Shared by the Ground Truth worker template
// (src/gt-worker.js) and the self-hosted pages (src/app/*).
//
//   const viewer = new LabelingViewer(element, { labels, onChange, onSubmit });
//   await viewer.load({ url: proxyFileUrl, token, sopInstanceUid });   // or { imageId, token }
//   viewer.getAnswer();  // the clean answer object (answer.js)

import { boundingCorners, buildAnswer, FindingsModel, MAX_NOTE_CHARS, STATES, NO_FINDING } from './answer.js';
import { presetRange, presetsFor, sortedSample } from './presets.js';
import { overlayFacts, overlayText } from './overlay.js';
import { core, initCornerstone, prefetchImage, prepareImage as fetchImageMetadata, setToken, tools } from './cornerstone.js';
import { el, isTyping, replaceChildren } from './dom.js';
import { geometryNote, installGeometryFallback } from './geometry.js';
import { grayscalePlan, prepareImage, readAttributes, viewportProperties, windowChoices } from './grayscale.js';
import { LoadState, loadTimeout, withTimeout } from './loadstate.js';
import { askRemoveRois, orphanRois } from './roiguard.js';
import { assignHotkeys, CYCLE, keyText, labelForKey } from './hotkeys.js';

import { History } from './history.js';
export * from './answer.js';
export { History } from './history.js';
export * as presets from './presets.js';
export * as grayscale from './grayscale.js';
export { initCornerstone, prefetchImage, setToken } from './cornerstone.js';
export { el, replaceChildren, isTyping } from './dom.js';

const TOOL_NAMES = {
  wl: 'WindowLevel',
  pan: 'Pan',
  zoom: 'Zoom',
  rectangle: 'RectangleROI',
  ellipse: 'EllipticalROI',
  polygon: 'PlanarFreehandROI',
};
const ROI_TOOL_BY_NAME = { RectangleROI: 'rectangle', EllipticalROI: 'ellipse', PlanarFreehandROI: 'polygon' };
const STATE_NAMES = { present: 'Present', absent: 'Absent', uncertain: 'Uncertain' };

export const SHORTCUTS = Object.freeze([
  ['W', 'Window/level tool (left drag)'],
  ['P', 'Pan tool (also middle drag)'],
  ['Z', 'Zoom tool (also right drag, wheel)'],
  ['R / E / G', 'Draw rectangle / ellipse / polygon ROI'],
  ['1 / 2 / 3', 'Lung / mediastinum / bone window (from the image\'s histogram)'],
  ['I', 'Invert'],
  ['T', 'Rotate 90°'],
  ['H / V', 'Flip horizontal / vertical'],
  ['0', 'Reset view'],
  ['J / K', 'Next / previous finding'],
  ['Y / N / U', 'Selected finding present / absent / uncertain'],
  ['Key beside a finding', 'Cycle that finding: present → uncertain → absent'],
  ['F', '"No Finding" present'],
  ['[ / ]', 'Previous / next finding for new ROIs'],
  ['Delete', 'Remove the last ROI'],
  ['Ctrl+Z / Ctrl+Shift+Z', 'Undo / redo (findings and ROIs)'],
  ['Ctrl+Enter', 'Submit'],
]);

/**
 * Image id for a proxy URL: `/instances/{id}/file` is a DICOM file (wadouri). `key` makes the id unique
 * to one viewer (a URL fragment, never sent): Cornerstone ties annotations to image ids, so viewers
 * showing the same image side by side would otherwise share (and submit) each other's ROIs.
 */
export function imageIdFor(url, key = '') {
  const id = url.startsWith('wadouri:') || url.startsWith('wadors:') ? url : `wadouri:${url}`;
  return key ? `${id}#${key}` : id;
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

let counter = 0;
let engine = null;

function sharedEngine() {
  if (!engine || engine.hasBeenDestroyed) engine = new core.RenderingEngine('dicomlab-engine');
  return engine;
}

export class LabelingViewer {
  /**
   * @param {HTMLElement} root  element to render into (its children are replaced)
   * @param {object} options  labels (array or comma string), readOnly, keyboard (default true),
   *   onChange(answer), onSubmit(answer), onLoad({ms, imageId}), onState(state) (loading / ready / error),
   *   onSkipUnloadable(reason) (offers "Skip: could not load" after a failed load), loadTimeoutMs,
   *   cpu (force CPU rendering), title, notes (offer a note and a "quality issue" flag with the answer),
   *   windowPresets (the job's own window presets, see presets.js), hotkeys ({label: key})
   */
  constructor(root, options = {}) {
    this.root = root;
    this.options = { keyboard: true, readOnly: false, ...options };
    this.id = `dl${++counter}`;
    this.model = new FindingsModel(options.labels ?? [], options.initialFindings);
    this.hotkeys = assignHotkeys(this.model.labels, options.hotkeys);
    this.roiFinding = this.model.labels.find((l) => l !== NO_FINDING) ?? this.model.labels[0];
    this.focusIndex = 0;
    this.findingsByAnnotation = new Map();
    this.imageId = null;
    this.sopInstanceUid = '';
    this.startedAt = Date.now();
    this.rotation = 0;
    this.flipH = false;
    this.flipV = false;
    this.activeTool = 'wl';
    this.loadGeneration = 0;
    this.lastRequest = null;
    this.retries = 0;
    this.history = new History();
    this.presets = presetsFor(options.windowPresets);
    this.restoring = false;
    this.buildDom();
    this.onKeyDown = this.onKeyDown.bind(this);
    if (this.options.keyboard) document.addEventListener('keydown', this.onKeyDown);
  }

  // ---------------------------------------------------------------- DOM
  buildDom() {
    const ro = this.options.readOnly;
    const button = (text, label, action, extra = {}) =>
      el('button', { type: 'button', 'aria-label': label, title: label, onclick: action, ...extra }, text);
    this.toolButtons = {};
    const toolButton = (key, text, label) => {
      const b = button(text, label, () => this.setTool(key), { 'aria-pressed': 'false', dataset: { tool: key } });
      this.toolButtons[key] = b;
      return b;
    };
    const toolbar = el(
      'div',
      { class: 'dl-toolbar', role: 'toolbar', 'aria-label': 'Viewer tools' },
      toolButton('wl', 'W/L', 'Window/level tool (W)'),
      toolButton('pan', 'Pan', 'Pan tool (P)'),
      toolButton('zoom', 'Zoom', 'Zoom tool (Z)'),
      ro ? null : toolButton('rectangle', '▭', 'Rectangle ROI (R)'),
      ro ? null : toolButton('ellipse', '◯', 'Ellipse ROI (E)'),
      ro ? null : toolButton('polygon', '⬠', 'Polygon ROI (G)'),
      el('span', { class: 'dl-sep' }),
      ...Object.entries(this.presets).map(([key, p], i) =>
        button(p.label, i < 3 ? `${p.label} window (${i + 1})` : `${p.label} window`, () => this.applyPreset(key), {
          dataset: { preset: key },
        }),
      ),
      (this.windowSelect = el('select', {
        class: 'dl-windows',
        'aria-label': "The image's own windows",
        hidden: true,
        onchange: () => this.applyImageWindow(Number(this.windowSelect.value)),
      })),
      el('span', { class: 'dl-sep' }),
      button('Invert', 'Invert (I)', () => this.invert()),
      button('Rotate', 'Rotate 90° (T)', () => this.rotate()),
      button('Flip H', 'Flip horizontal (H)', () => this.flip('h')),
      button('Flip V', 'Flip vertical (V)', () => this.flip('v')),
      button('Reset', 'Reset view (0)', () => this.resetView()),
    );
    this.viewportEl = el('div', {
      class: 'dl-viewport',
      tabindex: '0',
      role: 'img',
      'aria-label': 'DICOM image',
      oncontextmenu: (e) => e.preventDefault(),
    });
    this.statusEl = el('div', { class: 'dl-status', role: 'status', 'aria-live': 'polite' }, 'No image');
    this.wlEl = el('span', { class: 'dl-wl' });
    this.geometryEl = el('span', { class: 'dl-geometry' });
    this.loadState = new LoadState({
      root: this.root,
      viewport: this.viewportEl,
      onRetry: () => this.retry(),
      onSkip: this.options.onSkipUnloadable ? (reason) => this.options.onSkipUnloadable(reason) : null,
    });
    this.roiSelect = el('select', {
      id: `${this.id}-roi-finding`,
      onchange: () => {
        this.roiFinding = this.roiSelect.value;
        this.releaseFocus(this.roiSelect);
      },
    });
    for (const label of this.model.labels) this.roiSelect.append(el('option', { value: label }, label));
    this.roiSelect.value = this.roiFinding ?? '';
    this.roiList = el('ul', { class: 'dl-roi-list', 'aria-label': 'Regions of interest' });
    this.findingsEl = el('div', { class: 'dl-findings' });
    this.findingRows = new Map();
    this.model.labels.forEach((label, index) => {
      const name = `${this.id}-f${index}`;
      const radios = STATES.map((state) =>
        el(
          'label',
          { class: `dl-state dl-${state}` },
          el('input', {
            type: 'radio',
            name,
            value: state,
            disabled: ro,
            checked: this.model.get(label) === state,
            onchange: () => this.setFinding(label, state),
            // Arrow keys would move the radio group's choice, silently changing the answer.
            onkeydown: (event) => {
              if (event.key.startsWith('Arrow')) event.preventDefault();
            },
          }),
          STATE_NAMES[state],
        ),
      );
      const row = el(
        'fieldset',
        { class: 'dl-finding', dataset: { index: String(index) } },
        el('legend', {}, label),
        this.hotkeys.has(label)
          ? el('kbd', { class: 'dl-hotkey', title: `Key cycling ${label}` }, keyText(this.hotkeys.get(label)))
          : null,
        ...radios,
      );
      row.addEventListener('focusin', () => this.focusFinding(index, false));
      this.findingRows.set(label, row);
      this.findingsEl.append(row);
    });
    const side = el(
      'div',
      { class: 'dl-side' },
      el('h2', {}, 'Findings'),
      this.findingsEl,
      el(
        'div',
        { class: 'dl-roi-panel' },
        el('h2', {}, 'ROIs'),
        ro ? null : el('label', { for: `${this.id}-roi-finding` }, 'Finding for new ROIs '),
        ro ? null : this.roiSelect,
        this.roiList,
      ),
      ro || !this.options.notes ? null : this.buildNotePanel(),
      this.problemsEl = el('p', { class: 'dl-problems', role: 'alert' }),
      this.options.help === false
        ? null
        : el(
            'details',
            { class: 'dl-help' },
            el('summary', {}, 'Keyboard shortcuts'),
            el('dl', {}, SHORTCUTS.flatMap(([keys, what]) => [el('dt', {}, keys), el('dd', {}, what)])),
          ),
    );
    this.overlayEl = el('div', { class: 'dl-overlay', 'aria-label': 'Image facts' });
    const stage = el('div', { class: 'dl-stage' }, this.viewportEl, this.overlayEl, this.loadState.panel);
    const bar = el('div', { class: 'dl-bar' }, this.statusEl, this.geometryEl, this.wlEl);
    const main = el('div', { class: 'dl-main' }, toolbar, stage, bar);
    this.root.classList.add('dl-viewer');
    replaceChildren(this.root, main, side);
    this.focusFinding(0, false);
    this.markTool();
  }

  /** A note on the image and a "quality issue" flag: stored with the answer, no skip needed. */
  buildNotePanel() {
    this.noteEl = el('textarea', {
      id: `${this.id}-note`,
      class: 'dl-note',
      rows: '2',
      maxlength: String(MAX_NOTE_CHARS),
      placeholder: 'Optional note on this image',
      oninput: () => this.emitChange('note'),
    });
    this.qualityEl = el('input', {
      id: `${this.id}-quality`,
      type: 'checkbox',
      onchange: () => {
        this.emitChange();
        this.releaseFocus(this.qualityEl);
      },
    });
    return el(
      'div',
      { class: 'dl-note-panel' },
      el('label', { for: `${this.id}-note` }, 'Note'),
      this.noteEl,
      el('label', { class: 'dl-quality' }, this.qualityEl, ' Quality issue (label it anyway)'),
    );
  }

  // ---------------------------------------------------------------- Cornerstone
  async ensureViewport() {
    if (this.viewport) return this.viewport;
    await initCornerstone({ cpu: this.options.cpu });
    installGeometryFallback();
    const { Enums } = core;
    // One rendering engine per page, shared by every viewer (one WebGL context; Cornerstone's design).
    this.engine = sharedEngine();
    this.viewportId = `${this.id}-vp`;
    this.engine.enableElement({
      viewportId: this.viewportId,
      type: Enums.ViewportType.STACK,
      element: this.viewportEl,
      defaultOptions: { background: [0, 0, 0] },
    });
    this.viewport = this.engine.getViewport(this.viewportId);
    const group = tools.ToolGroupManager.createToolGroup(`${this.id}-tools`);
    for (const name of Object.values(TOOL_NAMES)) group.addTool(name);
    group.addViewport(this.viewportId, this.engine.id);
    const { MouseBindings } = tools.Enums;
    group.setToolActive(TOOL_NAMES.pan, { bindings: [{ mouseButton: MouseBindings.Auxiliary }] });
    group.setToolActive(TOOL_NAMES.zoom, {
      bindings: [{ mouseButton: MouseBindings.Secondary }, { mouseButton: MouseBindings.Wheel }],
    });
    for (const name of ['rectangle', 'ellipse', 'polygon']) group.setToolPassive(TOOL_NAMES[name]);
    group.setToolActive(TOOL_NAMES.wl, { bindings: [{ mouseButton: MouseBindings.Primary }] });
    this.toolGroup = group;
    const { Events } = tools.Enums;
    this.onAnnotation = (event) => this.handleAnnotation(event);
    core.eventTarget.addEventListener(Events.ANNOTATION_COMPLETED, this.onAnnotation);
    core.eventTarget.addEventListener(Events.ANNOTATION_MODIFIED, this.onAnnotation);
    core.eventTarget.addEventListener(Events.ANNOTATION_REMOVED, this.onAnnotation);
    this.viewportEl.addEventListener(core.Enums.Events.VOI_MODIFIED, () => this.showWindowLevel());
    this.resizeObserver = new ResizeObserver(() => this.engine?.resize(true, true));
    this.resizeObserver.observe(this.viewportEl);
    return this.viewport;
  }

  /**
   * Show one image. `url`: the proxy URL of the DICOM file (or `imageId`); `token`: the proxy token sent
   * as a bearer header; `previousAnswer`: an earlier answer to start from (review/adjustment jobs).
   * Until the new image is on screen nothing can be submitted and the previous image is not shown; a
   * failure (HTTP error, CORS, decoding, timeout) leaves the viewer in state `error` with Retry and
   * "Skip: could not load", and rejects. A load overtaken by a newer one resolves to null.
   */
  async load(request = {}) {
    const { url, imageId, token, sopInstanceUid, previousAnswer, labels } = request;
    const generation = ++this.loadGeneration;
    if (this.lastRequest !== request) this.retries = 0;
    this.lastRequest = request;
    const started = performance.now();
    this.clearAnnotations();
    this.imageId = null; // nothing is labelled until the new image is displayed
    this.plan = null;
    this.geometryEl.textContent = '';
    this.overlayEl.textContent = '';
    if (this.noteEl) this.noteEl.value = previousAnswer?.note ?? '';
    if (this.qualityEl) this.qualityEl.checked = Boolean(previousAnswer?.qualityIssue);
    this.windowSelect.hidden = true;
    this.setStatus('loading', 'Loading image…');
    let id = imageId ?? imageIdFor(url, this.options.isolate ? this.id : '');
    // A retry fetches afresh (a new id: the failed or hung request may still sit in the loader's caches).
    if (this.retries) id += `${id.includes('#') ? '-' : '#'}retry${this.retries}`;
    if (token) setToken(token, id);
    if (labels) this.setLabels(labels);
    const stale = () => generation !== this.loadGeneration;
    let range;
    try {
      const viewport = await this.ensureViewport();
      if (stale()) return null;
      this.model = new FindingsModel(this.model.labels, previousAnswer?.findings);
      this.syncFindings();
      this.focusFinding(0, false);
      // wadors ids (de-identified jobs) need their instance metadata registered before frames load.
      const image = await withTimeout(
        fetchImageMetadata(id).then(() => core.imageLoader.loadAndCacheImage(id)),
        loadTimeout(this.options),
      );
      if (stale()) return null;
      if (image.color) throw new Error('colour images are not supported for labelling');
      this.plan = grayscalePlan(readAttributes(id, image));
      range = prepareImage(image, this.plan, (o) => core.utilities.VoxelManager.createImageVoxelManager({ ...o, numberOfComponents: 1 }));
      await viewport.setStack([id], 0);
      if (stale()) return null;
    } catch (error) {
      if (stale()) return null;
      this.forget(id);
      this.plan = null;
      // Drop the viewport with the previous image in it (Cornerstone would redraw it on the next resize);
      // the next load builds a fresh one.
      this.destroyViewport();
      const reason = this.loadState.failed(error);
      this.statusEl.textContent = `Could not load the image (${reason})`;
      this.emitState();
      throw error;
    }
    const viewport = this.viewport;
    this.imageId = id;
    this.range = range;
    this.rotation = 0;
    this.flipH = this.flipV = false;
    viewport.resetCamera();
    this.initialProperties = viewportProperties(this.plan, range);
    viewport.setProperties({ ...this.initialProperties });
    // "ready" means drawn: wait for the frame (Cornerstone renders on the next animation frame).
    const rendered = nextRender(this.viewportEl);
    viewport.render();
    await rendered;
    if (stale()) return null;
    this.showImageWindows();
    this.root.dataset.inverted = String(this.initialProperties.invert);
    this.geometryEl.textContent = geometryNote(id);
    // Age and sex only when the page passes the patient's facts (jobs that allow identifiers).
    this.overlayEl.textContent = overlayText(overlayFacts(id, core.cache.getImage(id), request.patient ?? null));
    const sop = core.metaData.get('sopCommonModule', id);
    this.sopInstanceUid = sopInstanceUid || sop?.sopInstanceUID || '';
    this.startedAt = Date.now();
    this.loadMs = Math.round(performance.now() - started);
    if (previousAnswer?.rois?.length) this.showRois(previousAnswer.rois);
    this.history.reset(this.snapshot());
    this.loadState.ready();
    this.setStatus('ready', `Image loaded in ${this.loadMs} ms`);
    this.showWindowLevel();
    this.emitChange();
    this.emitState();
    this.options.onLoad?.({ ms: this.loadMs, imageId: id });
    return this.loadMs;
  }

  /** Load the last requested image again, with a fresh request (the "Retry" button). */
  retry() {
    if (!this.lastRequest) return Promise.resolve(null);
    this.retries += 1;
    return this.load(this.lastRequest).catch(() => null);
  }

  /** Drop a failed image from Cornerstone's cache so a later load asks the server again. */
  forget(id) {
    try {
      if (core.cache.getImageLoadObject(id)) core.cache.removeImageLoadObject(id);
    } catch {
      // not cached: nothing to drop
    }
  }

  /** True when an image is displayed and may be labelled. */
  isReady() {
    return Boolean(this.imageId) && this.root.dataset.state === 'ready';
  }

  /** Where the whole image is drawn, in page coordinates ({x, y, width, height}); null when none is. */
  imageRectOnScreen() {
    const image = this.isReady() ? core.cache.getImage(this.imageId) : null;
    if (!image) return null;
    const [a, b] = [[0, 0], [image.columns, image.rows]].map((p) =>
      this.viewport.worldToCanvas(core.utilities.imageToWorldCoords(this.imageId, p)),
    );
    const box = this.viewportEl.getBoundingClientRect();
    const x = Math.min(a[0], b[0]);
    const y = Math.min(a[1], b[1]);
    return { x: box.x + x, y: box.y + y, width: Math.abs(b[0] - a[0]), height: Math.abs(b[1] - a[1]) };
  }

  emitState() {
    this.options.onState?.(this.root.dataset.state);
  }

  /** Prefetch another image into the cache (next task), with its token. */
  prefetch({ url, imageId, token }) {
    const id = imageId ?? imageIdFor(url);
    if (token) setToken(token, id);
    return prefetchImage(id);
  }

  /** Replace the token for the current image (silent refresh) or for `url`. */
  setToken(token, url) {
    setToken(token, url ? imageIdFor(url) : this.imageId ?? '');
  }

  setLabels(labels) {
    const current = this.model.labels.join('\n');
    const next = new FindingsModel(labels).labels;
    if (next.join('\n') === current) return;
    this.model = new FindingsModel(next);
    this.hotkeys = assignHotkeys(next, this.options.hotkeys);
    this.roiFinding = next.find((l) => l !== NO_FINDING) ?? next[0];
    this.buildDom();
    if (this.viewport) {
      // buildDom replaced the viewport element: re-enable on the new one.
      this.destroyViewport();
    }
  }

  setStatus(state, text) {
    if (state === 'loading') this.loadState.loading();
    else this.root.dataset.state = state;
    this.statusEl.textContent = text;
  }

  // ---------------------------------------------------------------- view operations
  setTool(key) {
    if (!this.toolGroup || !TOOL_NAMES[key]) return;
    if (this.options.readOnly && ROI_TOOL_BY_NAME[TOOL_NAMES[key]]) return;
    const { MouseBindings } = tools.Enums;
    this.toolGroup.setToolPassive(TOOL_NAMES[this.activeTool]);
    this.toolGroup.setToolActive(TOOL_NAMES[key], { bindings: [{ mouseButton: MouseBindings.Primary }] });
    this.activeTool = key;
    this.markTool();
  }

  markTool() {
    for (const [key, b] of Object.entries(this.toolButtons)) b.setAttribute('aria-pressed', String(key === this.activeTool));
    this.root.dataset.tool = this.activeTool;
  }

  /** An ascending sample of the displayed image's values (after the modality LUT), computed once per image. */
  imageSample() {
    const image = this.imageId ? core.cache.getImage(this.imageId) : null;
    if (!image) return new Float64Array(0);
    if (!image.dicomlabSample) image.dicomlabSample = sortedSample(image.getPixelData());
    return image.dicomlabSample;
  }

  /** The image's own windows (Window Center/Width with their explanations) as a choice, when it has any. */
  showImageWindows() {
    const choices = this.plan ? windowChoices(this.plan) : [];
    replaceChildren(
      this.windowSelect,
      choices.map((c) => el('option', { value: String(c.index) }, `${c.label} (W ${c.width} / L ${c.center})`)),
    );
    this.windowSelect.hidden = choices.length === 0;
    if (choices.length) this.windowSelect.value = '0';
  }

  applyImageWindow(index) {
    if (!this.viewport || !this.plan) return;
    const { voiRange, VOILUTFunction } = viewportProperties(this.plan, this.range, index);
    this.viewport.setProperties({ voiRange, VOILUTFunction });
    this.viewport.render();
    delete this.root.dataset.preset;
    this.showWindowLevel();
  }

  applyPreset(key) {
    if (!this.viewport || !this.imageId) return;
    const preset = this.presets[key];
    if (!preset) return;
    const inverted = Boolean(this.initialProperties?.invert);
    // LINEAR_EXACT: the range is exactly the chosen values (a window's ±0.5 convention does not apply).
    this.viewport.setProperties({
      voiRange: presetRange(preset, { sorted: this.imageSample(), inverted }),
      VOILUTFunction: 'LINEAR_EXACT',
    });
    this.viewport.render();
    this.root.dataset.preset = key;
    this.showWindowLevel();
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

  showWindowLevel() {
    const wl = this.windowLevel();
    this.wlEl.textContent = wl ? `W ${Math.round(wl.width)} / L ${Math.round(wl.center)}` : '';
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

  resetView() {
    if (!this.viewport) return;
    this.rotation = 0;
    this.flipH = this.flipV = false;
    this.viewport.resetCamera();
    // Not viewport.resetProperties(): it recomputes a VOI from the pixels and throws on some images.
    if (this.initialProperties) this.viewport.setProperties({ ...this.initialProperties });
    this.viewport.render();
    if (this.windowSelect.options.length) this.windowSelect.value = '0';
    delete this.root.dataset.preset;
    this.root.dataset.inverted = String(Boolean(this.initialProperties?.invert));
    this.showWindowLevel();
  }

  // ---------------------------------------------------------------- findings
  /**
   * Set a finding (the "No Finding" rule may set others absent). When that leaves ROIs on a finding that
   * is then absent, the reader chooses: remove those ROIs, or cancel the change. Resolves to whether the
   * change was made.
   */
  async setFinding(label, state) {
    if (this.options.readOnly || this.guarding) return false;
    const trial = new FindingsModel(this.model.labels, this.model.toJSON());
    trial.set(label, state);
    const orphans = orphanRois(this.rois(), trial.toJSON());
    if (orphans.length) {
      this.syncFindings(); // the radios show the current states while the reader decides
      this.guarding = true;
      const remove = await askRemoveRois(this.root, orphans.map((r) => r.finding), orphans).finally(() => {
        this.guarding = false;
      });
      if (!remove) {
        this.syncFindings();
        return false;
      }
      for (const roi of orphans) this.removeRoi(roi.uid);
    }
    this.model.set(label, state);
    this.syncFindings();
    this.emitChange();
    return true;
  }

  syncFindings() {
    for (const [label, row] of this.findingRows) {
      const state = this.model.get(label);
      for (const input of row.querySelectorAll('input')) input.checked = input.value === state;
      row.dataset.state = state;
    }
    this.problemsEl.textContent = '';
  }

  focusFinding(index, moveFocus = true) {
    const rows = [...this.findingRows.values()];
    if (!rows.length) return;
    this.focusIndex = (index + rows.length) % rows.length;
    rows.forEach((row, i) => row.classList.toggle('dl-focused', i === this.focusIndex));
    if (moveFocus) rows[this.focusIndex].scrollIntoView({ block: 'nearest' });
  }

  /** Cycle one finding (its hotkey): absent → present → uncertain → absent. */
  cycleFinding(label) {
    const index = this.model.labels.indexOf(label);
    if (index < 0) return;
    this.focusFinding(index);
    this.setFinding(label, CYCLE[this.model.get(label)] ?? 'present');
  }

  /** After a choice in a select, give the keyboard back to the viewer (a focused select eats shortcuts). */
  releaseFocus(control) {
    control.blur();
    this.viewportEl.focus({ preventScroll: true });
  }

  focusedLabel() {
    return this.model.labels[this.focusIndex];
  }

  cycleRoiFinding(step) {
    const labels = this.model.labels.filter((l) => l !== NO_FINDING);
    if (!labels.length) return;
    const i = labels.indexOf(this.roiFinding);
    this.roiFinding = labels[(i + step + labels.length) % labels.length];
    this.roiSelect.value = this.roiFinding;
  }

  // ---------------------------------------------------------------- ROIs
  ourAnnotations() {
    if (!this.imageId) return [];
    const all = tools.annotation.state.getAllAnnotations?.() ?? [];
    return all.filter(
      (a) => ROI_TOOL_BY_NAME[a.metadata?.toolName] && a.metadata?.referencedImageId === this.imageId && !a.isPreview,
    );
  }

  handleAnnotation(event) {
    const a = event.detail?.annotation;
    if (!a || !ROI_TOOL_BY_NAME[a.metadata?.toolName]) return;
    if (event.type === tools.Enums.Events.ANNOTATION_COMPLETED && !this.findingsByAnnotation.has(a.annotationUID)) {
      if (a.metadata?.referencedImageId !== this.imageId) return;
      const finding = this.roiFinding;
      this.findingsByAnnotation.set(a.annotationUID, finding);
      a.data.label = finding;
      // Drawing an ROI for a finding says the finding is there (unless the reader said uncertain).
      if (finding && finding !== NO_FINDING && this.model.get(finding) === 'absent') this.model.set(finding, 'present');
      this.syncFindings();
    }
    this.renderRoiList();
    // An ROI being drawn is not part of the answer yet (it is when completed); one handle drag fires many
    // "modified" events: they make one undo step.
    const modified = event.type === tools.Enums.Events.ANNOTATION_MODIFIED;
    if (modified && !this.findingsByAnnotation.has(a.annotationUID)) return;
    this.emitChange(modified ? `modify:${a.annotationUID}` : null);
  }

  roiPoints(a) {
    const toImage = (p) => core.utilities.worldToImageCoords(this.imageId, p);
    const tool = ROI_TOOL_BY_NAME[a.metadata.toolName];
    if (tool === 'polygon') {
      const polyline = a.data?.contour?.polyline ?? a.data?.polyline ?? [];
      return polyline.map(toImage).map(([x, y]) => [x, y]);
    }
    const handles = (a.data?.handles?.points ?? []).map(toImage);
    return handles.length ? boundingCorners(handles) : [];
  }

  rois() {
    return this.ourAnnotations()
      .map((a) => ({
        uid: a.annotationUID,
        tool: ROI_TOOL_BY_NAME[a.metadata.toolName],
        finding: this.findingsByAnnotation.get(a.annotationUID) ?? a.data?.label ?? '',
        points: this.roiPoints(a),
        imageId: this.imageId,
      }))
      .filter((r) => r.points.length >= 2);
  }

  renderRoiList() {
    const items = this.rois().map((roi, i) => {
      const select = el('select', {
        'aria-label': `Finding of ROI ${i + 1}`,
        disabled: this.options.readOnly,
        onchange: () => {
          this.findingsByAnnotation.set(roi.uid, select.value);
          const a = tools.annotation.state.getAnnotation(roi.uid);
          if (a) a.data.label = select.value;
          // As when drawing: an ROI says its finding is there.
          if (select.value !== NO_FINDING && this.model.get(select.value) === 'absent') {
            this.model.set(select.value, 'present');
            this.syncFindings();
          }
          this.releaseFocus(select);
          this.viewport?.render();
          this.emitChange();
        },
      });
      for (const label of this.model.labels) select.append(el('option', { value: label }, label));
      select.value = roi.finding;
      return el(
        'li',
        { dataset: { tool: roi.tool } },
        el('span', {}, `${i + 1}. ${roi.tool} `),
        select,
        this.options.readOnly
          ? null
          : el('button', { type: 'button', 'aria-label': `Remove ROI ${i + 1}`, onclick: () => this.removeRoi(roi.uid) }, '✕'),
      );
    });
    replaceChildren(this.roiList, items);
  }

  removeRoi(uid) {
    tools.annotation.state.removeAnnotation(uid);
    this.findingsByAnnotation.delete(uid);
    this.viewport?.render();
    this.renderRoiList();
    this.emitChange();
  }

  removeLastRoi() {
    const rois = this.rois();
    if (rois.length) this.removeRoi(rois[rois.length - 1].uid);
  }

  clearAnnotations() {
    for (const a of this.ourAnnotations()) tools.annotation.state.removeAnnotation(a.annotationUID);
    this.findingsByAnnotation.clear();
    this.renderRoiList();
  }

  /** Draw ROIs of an earlier answer (image pixel coordinates) as annotations. */
  showRois(rois) {
    const camera = this.viewport.getCamera();
    const toWorld = (p) => core.utilities.imageToWorldCoords(this.imageId, p);
    for (const roi of rois) {
      const toolName = Object.entries(ROI_TOOL_BY_NAME).find(([, t]) => t === roi.tool)?.[0];
      if (!toolName || !Array.isArray(roi.points) || roi.points.length < 2) continue;
      let points;
      let data;
      if (roi.tool === 'polygon') {
        const polyline = roi.points.map(toWorld);
        data = { handles: { points: [], activeHandleIndex: null, textBox: {} }, contour: { polyline, closed: true } };
      } else {
        const [[x0, y0], [x1, y1]] = roi.points;
        points =
          roi.tool === 'rectangle'
            ? [[x0, y0], [x1, y0], [x0, y1], [x1, y1]]
            : [[(x0 + x1) / 2, y1], [(x0 + x1) / 2, y0], [x0, (y0 + y1) / 2], [x1, (y0 + y1) / 2]];
        data = { handles: { points: points.map(toWorld), activeHandleIndex: null, textBox: {} } };
      }
      data.label = roi.finding;
      data.cachedStats = {};
      const uid = core.utilities.uuidv4();
      tools.annotation.state.addAnnotation(
        {
          annotationUID: uid,
          highlighted: false,
          invalidated: true,
          isLocked: Boolean(this.options.readOnly),
          metadata: {
            toolName,
            referencedImageId: this.imageId,
            FrameOfReferenceUID: this.viewport.getFrameOfReferenceUID(),
            viewPlaneNormal: camera.viewPlaneNormal,
            viewUp: camera.viewUp,
          },
          data,
        },
        this.viewportEl,
      );
      this.findingsByAnnotation.set(uid, roi.finding);
    }
    this.viewport.render();
    this.renderRoiList();
  }

  // ---------------------------------------------------------------- answer
  getAnswer() {
    return buildAnswer({
      findings: this.model.toJSON(),
      rois: this.rois(),
      sopInstanceUid: this.sopInstanceUid,
      startedAt: this.startedAt,
      windowLevel: this.windowLevel(),
      note: this.noteEl?.value ?? '',
      qualityIssue: Boolean(this.qualityEl?.checked),
    });
  }

  /** Problems that block submitting; shown in the panel. Empty = ready to submit. */
  validate() {
    const problems = this.model.problems();
    if (!this.isReady()) problems.unshift('The image is not displayed: it cannot be labelled until it loads.');
    if (orphanRois(this.rois(), this.model.toJSON()).length) {
      problems.push('An ROI belongs to a finding marked absent: remove the ROI or change the finding.');
    }
    this.problemsEl.textContent = problems.join(' ');
    return problems;
  }

  /** After every change: record an undo step (`key` coalesces a drag) and tell the page (autosave). */
  emitChange(key = null) {
    if (this.restoring) return;
    if (this.imageId) this.history.record(this.snapshot(), key);
    this.options.onChange?.(this.getAnswer());
  }

  // ---------------------------------------------------------------- undo / redo
  /** The reader's work as plain JSON: findings and ROIs (image pixel coordinates). */
  snapshot() {
    return {
      findings: this.model.toJSON(),
      rois: this.rois()
        .filter((r) => this.findingsByAnnotation.has(r.uid))
        .map(({ tool, finding, points }) => ({ tool, finding, points })),
    };
  }

  /** Put back a snapshot: findings, then the ROIs redrawn from their image coordinates. */
  restore(snapshot) {
    if (!snapshot || !this.imageId || this.options.readOnly) return;
    this.restoring = true;
    try {
      this.model = new FindingsModel(this.model.labels, snapshot.findings);
      this.clearAnnotations();
      if (snapshot.rois.length) this.showRois(snapshot.rois);
      else this.viewport?.render();
      this.syncFindings();
    } finally {
      this.restoring = false;
    }
    this.options.onChange?.(this.getAnswer());
  }

  undo() {
    this.restore(this.history.undo());
  }

  redo() {
    this.restore(this.history.redo());
  }

  requestSubmit() {
    if (this.validate().length) return;
    this.options.onSubmit?.(this.getAnswer());
  }

  // ---------------------------------------------------------------- keyboard
  onKeyDown(event) {
    if (isTyping(event) || event.altKey || event.metaKey) return;
    if (this.guarding || this.root.querySelector('dialog[open]')) return; // the dialog has the keyboard
    if (event.ctrlKey) {
      const key = event.key.toLowerCase();
      if (event.key === 'Enter') {
        event.preventDefault();
        this.requestSubmit();
      } else if (key === 'z' || key === 'y') {
        event.preventDefault();
        if (key === 'y' || event.shiftKey) this.redo();
        else this.undo();
      }
      return;
    }
    const ro = this.options.readOnly;
    const hot = labelForKey(this.hotkeys, event);
    if (hot) {
      event.preventDefault();
      if (!ro) this.cycleFinding(hot);
      return;
    }
    const key = event.key.length === 1 ? event.key.toLowerCase() : event.key;
    const actions = {
      w: () => this.setTool('wl'),
      p: () => this.setTool('pan'),
      z: () => this.setTool('zoom'),
      r: () => this.setTool('rectangle'),
      e: () => this.setTool('ellipse'),
      g: () => this.setTool('polygon'),
      ...Object.fromEntries(Object.keys(this.presets).slice(0, 3).map((k, i) => [String(i + 1), () => this.applyPreset(k)])),
      i: () => this.invert(),
      t: () => this.rotate(),
      h: () => this.flip('h'),
      v: () => this.flip('v'),
      0: () => this.resetView(),
      '+': () => this.zoomBy(1.25),
      '-': () => this.zoomBy(0.8),
      j: () => this.focusFinding(this.focusIndex + 1),
      k: () => this.focusFinding(this.focusIndex - 1),
      y: () => !ro && this.setFinding(this.focusedLabel(), 'present'),
      n: () => !ro && this.setFinding(this.focusedLabel(), 'absent'),
      u: () => !ro && this.setFinding(this.focusedLabel(), 'uncertain'),
      f: () => !ro && this.model.labels.includes(NO_FINDING) && this.setFinding(NO_FINDING, 'present'),
      '[': () => this.cycleRoiFinding(-1),
      ']': () => this.cycleRoiFinding(1),
      Delete: () => !ro && this.removeLastRoi(),
      Backspace: () => !ro && this.removeLastRoi(),
    };
    const action = actions[key];
    if (action) {
      event.preventDefault();
      action();
    }
  }

  destroyViewport() {
    if (this.onAnnotation) {
      const { Events } = tools.Enums;
      for (const type of [Events.ANNOTATION_COMPLETED, Events.ANNOTATION_MODIFIED, Events.ANNOTATION_REMOVED]) {
        core.eventTarget.removeEventListener(type, this.onAnnotation);
      }
    }
    this.resizeObserver?.disconnect();
    if (this.toolGroup) tools.ToolGroupManager.destroyToolGroup(this.toolGroup.id);
    if (this.viewportId && this.engine?.getViewport(this.viewportId)) this.engine.disableElement(this.viewportId);
    this.viewport = this.engine = this.toolGroup = null;
    this.activeTool = 'wl';
    if (this.toolButtons) this.markTool();
  }

  destroy() {
    document.removeEventListener('keydown', this.onKeyDown);
    this.clearAnnotations();
    this.destroyViewport();
  }
}
