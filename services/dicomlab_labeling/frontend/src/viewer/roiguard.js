// ROIs belong to findings that are present or uncertain. Setting a finding absent — directly, by
// "No Finding", or by marking the rest absent — while it still has ROIs asks the reader what to do with
// them: remove them, or cancel the change. (The server refuses an answer that keeps them: 400.)

import { el } from './dom.js';

const ROI_STATES = new Set(['present', 'uncertain']);

/** The ROIs whose finding is not present or uncertain in `findings` ({label: state}). */
export function orphanRois(rois, findings) {
  return rois.filter((roi) => roi.finding && !ROI_STATES.has(findings[roi.finding] ?? 'absent'));
}

/**
 * Ask, in a modal dialog inside `host`, whether to remove `rois` (which belong to `labels`).
 * Resolves true (remove them and go on) or false (cancel the change); Escape cancels.
 */
export function askRemoveRois(host, labels, rois) {
  return new Promise((resolve) => {
    const names = [...new Set(labels)].join(', ');
    const dialog = el('dialog', { class: 'dl-roi-guard', 'aria-label': 'ROIs of findings set absent' });
    const finish = (remove) => {
      dialog.close();
      dialog.remove();
      resolve(remove);
    };
    dialog.append(
      el('p', {}, `${rois.length} ROI${rois.length === 1 ? '' : 's'} of ${names}: a finding marked absent keeps no ROI.`),
      el(
        'div',
        { class: 'dl-load-actions' },
        el('button', { type: 'button', class: 'dl-roi-remove', onclick: () => finish(true) }, `Remove ${rois.length === 1 ? 'the ROI' : `the ${rois.length} ROIs`}`),
        el('button', { type: 'button', class: 'dl-roi-keep', onclick: () => finish(false) }, 'Cancel'),
      ),
    );
    dialog.addEventListener('cancel', (event) => {
      event.preventDefault();
      finish(false);
    });
    host.append(dialog);
    dialog.showModal();
    dialog.querySelector('.dl-roi-keep').focus();
  });
}
