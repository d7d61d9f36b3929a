// Helpers shared by the pages: the alert region and text-only table rows.
import { ApiError } from './api.js';
import { el, replaceChildren } from '../viewer/dom.js';

/** Show a message in the page's alert region (role=alert, read by screen readers). */
export function showMessage(text, kind = 'error') {
  const box = document.getElementById('dl-message');
  if (!box) return;
  box.textContent = text || '';
  box.className = kind === 'error' ? 'dl-error' : 'dl-info';
}

export function describeError(error) {
  if (error instanceof ApiError) return `${error.message} (HTTP ${error.status})`;
  return String(error?.message ?? error);
}

/** A table row of text cells (all through textContent). */
export function row(...cells) {
  return el('tr', {}, ...cells.map((c) => (c instanceof Node ? el('td', {}, c) : el('td', {}, c ?? ''))));
}

export function fillTable(table, rows) {
  replaceChildren(table.tBodies[0], rows);
}

