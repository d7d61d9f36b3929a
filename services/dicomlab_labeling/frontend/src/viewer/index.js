// The labeling viewer, composed of its parts: the toolbar (toolbar.js), the image (viewport.js), the
// findings panel (findings.js), the ROIs (rois.js) and the keyboard (keyboard.js); loading an image and
// its failures (loading.js, loadstate.js), and the answer with its checks and undo (session.js). Shared by the Ground Truth worker template (src/gt-worker.js)
// and the self-hosted pages (src/app/*).
//
//   const viewer = new LabelingViewer(element, { labels, onChange, onSubmit });
//   await viewer.load({ url: proxyFileUrl, token, sopInstanceUid });   // or { imageId, token }
//   viewer.getAnswer();  // the clean answer object (answer.js)

import { FindingsModel } from './answer.js';
import { presetsFor } from './presets.js';
import { imageIdFor, prefetchImage, setToken } from './cornerstone.js';
import { el, replaceChildren } from './dom.js';
import { LoadState } from './loadstate.js';
import { ImageLoading } from './loading.js';
import { AnswerSession } from './session.js';
import { assignHotkeys } from './hotkeys.js';
import { Toolbar } from './toolbar.js';
import { ImageViewport } from './viewport.js';
import { FindingsPanel, helpBlock } from './findings.js';
import { RoiLayer } from './rois.js';
import { keyHandler, SHORTCUTS } from './keyboard.js';

export * from './answer.js';
export { History } from './history.js';
export * as presets from './presets.js';
export * as grayscale from './grayscale.js';
export { imageIdFor, initCornerstone, prefetchImage, setToken } from './cornerstone.js';
export { el, replaceChildren, isTyping } from './dom.js';
export { SHORTCUTS } from './keyboard.js';

let counter = 0;

export class LabelingViewer {
  /**
   * @param {HTMLElement} root  element to render into (its children are replaced)
   * @param {object} options  labels (array or comma string), readOnly, keyboard (default true),
   *   onChange(answer), onSubmit(answer), onLoad({ms, imageId}), onState(state) (loading / ready / error),
   *   onSkipUnloadable(reason) (offers "Skip: could not load" after a failed load), loadTimeoutMs,
   *   cpu (force CPU rendering), help (false: no shortcut list), isolate (image ids unique to this viewer),
   *   notes (a note and a "quality issue" flag with the answer), windowPresets (the job's own window
   *   presets, see presets.js), hotkeys ({label: key}), defaultFindingState ('not-looked-at', the default:
   *   nothing can be submitted until every finding is set; or 'absent')
   */
  constructor(root, options = {}) {
    this.root = root;
    this.options = { keyboard: true, readOnly: false, ...options };
    this.id = `dl${++counter}`;
    Object.assign(this, { sopInstanceUid: '', startedAt: Date.now(), presets: presetsFor(options.windowPresets) });
    [this.loading, this.session] = [new ImageLoading(this), new AnswerSession(this)];
    this.buildDom(new FindingsModel(options.labels ?? [], options.initialFindings, options.defaultFindingState));
    this.onKeyDown = keyHandler(this);
    if (this.options.keyboard) document.addEventListener('keydown', this.onKeyDown);
  }

  buildDom(model) {
    const { readOnly: ro, cpu } = this.options;
    const [change, releaseFocus] = [(key) => this.emitChange(key), (control) => this.releaseFocus(control)];
    this.hotkeys = assignHotkeys(model.labels, this.options.hotkeys);
    const view = (this.view = new ImageViewport({
      id: this.id, root: this.root, cpu, readOnly: ro, onAnnotation: (event) => this.roiLayer.handle(event),
      onWindowChange: () => this.showWindowLevel(), onToolChange: (key) => this.toolbar?.markTool(key),
      textLines: (data, targetId) => this.roiLayer.textLines(data, targetId),
    }));
    this.actions = {
      setTool: (key) => view.setTool(key), applyPreset: (key) => view.applyPreset(key, this.presets[key]),
      applyImageWindow: (index) => view.applyImageWindow(index), invert: () => view.invert(),
      rotate: () => view.rotate(), flip: (axis) => view.flip(axis), resetView: () => this.resetView(),
    };
    this.toolbar = new Toolbar({ readOnly: ro, presets: this.presets, actions: this.actions });
    this.roiLayer = new RoiLayer({ id: this.id, labels: model.labels, readOnly: ro, view, onChange: change,
      releaseFocus, onFindingUsed: (label) => this.panel.used(label) });
    this.panel = new FindingsPanel({ id: this.id, model, hotkeys: this.hotkeys, readOnly: ro, host: this.root,
      rois: () => this.rois(), removeRoi: (uid) => this.roiLayer.remove(uid), onChange: change, releaseFocus });
    this.statusEl = el('div', { class: 'dl-status', role: 'status', 'aria-live': 'polite' }, 'No image');
    [this.wlEl, this.geometryEl] = [el('span', { class: 'dl-wl' }), el('span', { class: 'dl-geometry' })];
    this.overlayEl = el('div', { class: 'dl-overlay', 'aria-label': 'Image facts' });
    this.loadState = new LoadState({ root: this.root, viewport: view.element, onRetry: () => this.retry(),
      onSkip: this.options.onSkipUnloadable ? (reason) => this.options.onSkipUnloadable(reason) : null });
    const side = el('div', { class: 'dl-side' }, el('h2', {}, 'Findings'), this.panel.el, this.panel.restButton, this.roiLayer.el,
      ro || !this.options.notes ? null : this.panel.buildNotePanel(), this.panel.problemsEl,
      this.options.help === false ? null : helpBlock(SHORTCUTS));
    const stage = el('div', { class: 'dl-stage' }, view.element, this.overlayEl, this.loadState.panel);
    const bar = el('div', { class: 'dl-bar' }, this.statusEl, this.geometryEl, this.wlEl);
    this.root.classList.add('dl-viewer');
    replaceChildren(this.root, el('div', { class: 'dl-main' }, this.toolbar.el, stage, bar), side);
    this.panel.focus(0, false);
    view.markTool();
  }

  get model() { return this.panel.model; } // prettier-ignore
  get viewport() { return this.view.viewport; } // prettier-ignore
  get imageId() { return this.view.imageId; } // prettier-ignore

  /**
   * Show one image. `url`: the proxy URL of the DICOM file (or `imageId`); `token`: the proxy token sent
   * as a bearer header; `previousAnswer`: an earlier answer to start from (review/adjustment jobs).
   * Until the new image is on screen nothing can be submitted and the previous image is not shown; a
   * failure (HTTP error, CORS, decoding, timeout) leaves the viewer in state `error` with Retry and
   * "Skip: could not load", and rejects. A load overtaken by a newer one resolves to null.
   */
  load(request = {}) { return this.loading.load(request); } // prettier-ignore
  /** Load the last requested image again, with a fresh request (the "Retry" button). */
  retry() { return this.loading.retry(); } // prettier-ignore

  /** True when an image is displayed and may be labelled. */
  isReady() {
    return Boolean(this.imageId) && this.root.dataset.state === 'ready';
  }

  /** Where the whole image is drawn, in page coordinates ({x, y, width, height}); null when none is. */
  imageRectOnScreen() {
    return this.isReady() ? this.view.imageRectOnScreen() : null;
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
    const next = new FindingsModel(labels, {}, this.model.defaultState);
    if (next.labels.join('\n') === this.model.labels.join('\n')) return;
    this.view.destroy(); // buildDom replaces the viewport element: the next load enables the new one
    this.buildDom(next);
  }

  setStatus(state, text) {
    if (state === 'loading') this.loadState.loading();
    else this.root.dataset.state = state;
    this.statusEl.textContent = text;
  }

  resetView() {
    if (!this.view.resetView()) return;
    this.toolbar.firstImageWindow();
    this.showWindowLevel();
  }

  windowLevel() {
    return this.view.windowLevel();
  }

  showWindowLevel() {
    const wl = this.windowLevel();
    this.wlEl.textContent = wl ? `W ${Math.round(wl.width)} / L ${Math.round(wl.center)}` : '';
  }

  setFinding(label, state) { return this.panel.set(label, state); } // prettier-ignore
  cycleFinding(label) { this.panel.cycle(label); } // prettier-ignore
  focusFinding(index, scroll = true) { this.panel.focus(index, scroll); } // prettier-ignore
  rois() { return this.roiLayer.rois(); } // prettier-ignore
  markRestAbsent() { return this.panel.markRestAbsent(); } // prettier-ignore

  /** Give ROI `uid` its finding (drawn first, the finding chosen after: its key or the list). */
  assignRoi(uid, label) {
    if (this.options.readOnly || !this.model.labels.includes(label)) return;
    this.roiLayer.assign(uid, label);
    this.emitChange();
  }

  /** After a choice in a select, give the keyboard back to the viewer (a focused select eats shortcuts). */
  releaseFocus(control) {
    control.blur();
    this.view.element.focus({ preventScroll: true });
  }

  getAnswer() { return this.session.getAnswer(); } // prettier-ignore
  /** Problems that block submitting; shown in the panel. Empty = ready to submit. */
  validate() { return this.session.validate(); } // prettier-ignore
  /** After every change: record an undo step (`key` coalesces a drag) and tell the page (autosave). */
  emitChange(key = null) { this.session.changed(key); } // prettier-ignore
  undo() { this.session.undo(); } // prettier-ignore
  redo() { this.session.redo(); } // prettier-ignore
  requestSubmit() { this.session.requestSubmit(); } // prettier-ignore

  destroy() {
    document.removeEventListener('keydown', this.onKeyDown);
    this.roiLayer.clear();
    this.view.destroy();
  }
}
