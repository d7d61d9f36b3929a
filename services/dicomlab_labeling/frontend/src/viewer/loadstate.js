// The viewer's load states: loading → ready | error. A reader must never label the previous image as
// the new one, so any state but `ready` hides and clears the canvas, and `error` shows what failed with
// "Retry" and "Skip: could not load". The viewer's `imageId` is only set in `ready`, which is what
// blocks submitting (LabelingViewer.validate).

import { el } from './dom.js';

export const DEFAULT_LOAD_TIMEOUT_MS = 30_000;

/** The load timeout: `options.loadTimeoutMs`, else the page's `window.dicomlabConfig.loadTimeoutMs`. */
export function loadTimeout(options = {}) {
  const value = Number(options.loadTimeoutMs ?? globalThis.dicomlabConfig?.loadTimeoutMs);
  return Number.isFinite(value) && value > 0 ? value : DEFAULT_LOAD_TIMEOUT_MS;
}

export class LoadTimeoutError extends Error {
  constructor(ms) {
    super(`no answer within ${Math.round(ms / 1000)} s`);
    this.name = 'LoadTimeoutError';
  }
}

/** Resolve like `promise`, or reject with LoadTimeoutError after `ms`. */
export function withTimeout(promise, ms) {
  let timer = 0;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new LoadTimeoutError(ms)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** A short reason for the reader: the HTTP status, a timeout, a network/CORS refusal or a decode error. */
export function describeLoadError(error) {
  if (!error) return 'unknown error';
  if (error instanceof LoadTimeoutError) return `timed out: ${error.message}`;
  // The loader rejects with the XMLHttpRequest itself, or with {error: xhr | Error, dataSet}.
  const candidates = [error, error.error, error.request, error.xhr, error.error?.request].filter(Boolean);
  const request = candidates.find((c) => typeof c === 'object' && 'readyState' in c && 'status' in c);
  const status = request?.status ?? candidates.map((c) => c.status).find((v) => Number.isFinite(v) && v > 0);
  if (status) return `HTTP ${status}${status === 401 || status === 403 ? ' (access refused)' : ''}`;
  if (request) return 'network error or blocked by CORS';
  const message = String(error.message ?? error.error?.message ?? error);
  if (/network|failed to fetch|cors/i.test(message) || message === '[object ProgressEvent]') {
    return 'network error or blocked by CORS';
  }
  // Anything else failed on the bytes: not DICOM, no pixel data, a codec error. URLs are left out.
  return `could not decode the image: ${message.replace(/\S+:\/\/\S+/g, '…').slice(0, 160)}`;
}

/** The error panel and the state attribute of one viewer. */
export class LoadState {
  /** @param {object} o root (the viewer element), viewport (its image element), onRetry, onSkip */
  constructor({ root, viewport, onRetry, onSkip }) {
    this.root = root;
    this.viewport = viewport;
    this.messageEl = el('p', { class: 'dl-load-message' });
    this.retryButton = el('button', { type: 'button', class: 'dl-retry', onclick: () => onRetry() }, 'Retry');
    this.skipButton = onSkip
      ? el('button', { type: 'button', class: 'dl-skip-unloadable', onclick: () => onSkip(this.reason) }, 'Skip: could not load')
      : null;
    this.panel = el(
      'div',
      { class: 'dl-load-error', role: 'alert', hidden: true },
      el('strong', {}, 'The image could not be loaded.'),
      this.messageEl,
      el('div', { class: 'dl-load-actions' }, this.retryButton, this.skipButton),
    );
    this.reason = '';
  }

  get state() {
    return this.root.dataset.state ?? '';
  }

  /** Clear what is on the canvas now (the element stays, Cornerstone draws into it again on success). */
  clearCanvas() {
    for (const canvas of this.viewport.querySelectorAll('canvas')) {
      const ctx = canvas.getContext('2d');
      if (ctx) ctx.clearRect(0, 0, canvas.width, canvas.height);
    }
  }

  loading() {
    this.panel.hidden = true;
    this.clearCanvas();
    this.root.dataset.state = 'loading';
  }

  ready() {
    this.panel.hidden = true;
    this.reason = '';
    this.root.dataset.state = 'ready';
  }

  failed(error) {
    this.reason = describeLoadError(error);
    this.clearCanvas();
    this.messageEl.textContent = this.reason;
    this.panel.hidden = false;
    this.root.dataset.state = 'error';
    return this.reason;
  }
}
