// Showing one image in the viewer, with its load states (loadstate.js): loading → ready | error. Until
// the new image is on screen nothing can be submitted and the previous image is not shown; a failure
// leaves the viewer in `error` with Retry and "Skip: could not load". A load overtaken by a newer one
// resolves to null (`generation`); a retry asks the server afresh (a new image id).

import { overlayFacts, overlayText } from './overlay.js';
import { core, imageIdFor, setToken } from './cornerstone.js';
import { geometryNote } from './geometry.js';
import { loadTimeout } from './loadstate.js';

export class ImageLoading {
  /** @param {object} viewer  the LabelingViewer whose parts (view, panel, roiLayer, toolbar...) this drives */
  constructor(viewer) {
    this.viewer = viewer;
    this.generation = 0;
    this.lastRequest = null;
    this.retries = 0;
  }

  /** See LabelingViewer.load. */
  async load(request = {}) {
    const v = this.viewer;
    const { url, imageId, token, sopInstanceUid, previousAnswer, labels } = request;
    const generation = ++this.generation;
    if (this.lastRequest !== request) this.retries = 0;
    this.lastRequest = request;
    const started = performance.now();
    v.roiLayer.clear();
    v.view.imageId = null; // nothing is labelled until the new image is displayed
    v.geometryEl.textContent = v.overlayEl.textContent = '';
    v.panel.setNote(previousAnswer);
    v.toolbar.hideImageWindows();
    v.setStatus('loading', 'Loading image…');
    let id = imageId ?? imageIdFor(url, v.options.isolate ? v.id : '');
    // A retry fetches afresh (a new id: the failed or hung request may still sit in the loader's caches).
    if (this.retries) id += `${id.includes('#') ? '-' : '#'}retry${this.retries}`;
    if (token) setToken(token, id);
    if (labels) v.setLabels(labels);
    const stale = () => generation !== this.generation;
    v.panel.reset(previousAnswer?.findings);
    v.panel.focus(0, false);
    try {
      if (!(await v.view.show(id, { timeoutMs: loadTimeout(v.options), stale }))) return null;
    } catch (error) {
      if (stale()) return null;
      v.view.fail(id);
      v.statusEl.textContent = `Could not load the image (${v.loadState.failed(error)})`;
      v.emitState();
      throw error;
    }
    v.toolbar.showImageWindows(v.view.plan);
    v.geometryEl.textContent = geometryNote(id);
    // Age and sex only when the page passes the patient's facts (jobs that allow identifiers).
    v.overlayEl.textContent = overlayText(overlayFacts(id, core.cache.getImage(id), request.patient ?? null));
    v.sopInstanceUid = sopInstanceUid || core.metaData.get('sopCommonModule', id)?.sopInstanceUID || '';
    v.startedAt = Date.now();
    v.loadMs = Math.round(performance.now() - started);
    if (previousAnswer?.rois?.length) v.roiLayer.show(previousAnswer.rois);
    v.session.startImage();
    v.loadState.ready();
    v.setStatus('ready', `Image loaded in ${v.loadMs} ms`);
    v.showWindowLevel();
    v.emitChange();
    v.emitState();
    v.options.onLoad?.({ ms: v.loadMs, imageId: id });
    return v.loadMs;
  }

  /** Load the last requested image again, with a fresh request (the "Retry" button). */
  retry() {
    if (!this.lastRequest) return Promise.resolve(null);
    this.retries += 1;
    return this.load(this.lastRequest).catch(() => null);
  }
}
