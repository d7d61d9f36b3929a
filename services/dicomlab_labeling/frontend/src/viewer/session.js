// The reader's work on the current image: what blocks submitting (validate), the answer handed to the
// page, and undo/redo (history.js) over snapshots of findings and ROIs.

import { buildAnswer } from './answer.js';
import { History } from './history.js';
import { orphanRois } from './roiguard.js';

export class AnswerSession {
  /** @param {object} viewer  the LabelingViewer whose findings (panel, model) and ROIs (roiLayer) this reads */
  constructor(viewer) {
    this.viewer = viewer;
    this.history = new History();
    this.restoring = false;
  }

  /** A new image is on screen: its starting state is the first undo step. */
  startImage() {
    this.history.reset(this.snapshot());
  }

  getAnswer() {
    const v = this.viewer;
    const { note, qualityIssue } = v.panel.note();
    return buildAnswer({ findings: v.model.toJSON(), rois: v.rois(), sopInstanceUid: v.sopInstanceUid,
      startedAt: v.startedAt, windowLevel: v.windowLevel(), note, qualityIssue });
  }

  /** Problems that block submitting; shown in the panel. Empty = ready to submit. */
  validate() {
    const v = this.viewer;
    const problems = v.model.problems();
    if (!v.isReady()) problems.unshift('The image is not displayed: it cannot be labelled until it loads.');
    const unassigned = v.roiLayer.unassigned().length;
    if (unassigned) {
      problems.push(`${unassigned === 1 ? 'An ROI has' : `${unassigned} ROIs have`} no finding: select it and ` +
        "press its finding's key (or choose it in the ROI list), or remove it.");
    }
    if (orphanRois(v.rois(), v.model.toJSON()).length) {
      problems.push('An ROI belongs to a finding marked absent: remove the ROI or change the finding.');
    }
    v.panel.showProblems(problems);
    return problems;
  }

  /** After every change: record an undo step (`key` coalesces a drag) and tell the page (autosave). */
  changed(key = null) {
    if (this.restoring) return;
    if (this.viewer.imageId) this.history.record(this.snapshot(), key);
    this.viewer.options.onChange?.(this.getAnswer());
  }

  /** The reader's work as plain JSON: findings and ROIs (image pixel coordinates). */
  snapshot() {
    return { findings: this.viewer.model.toJSON(), rois: this.viewer.roiLayer.snapshot() };
  }

  /** Put back a snapshot (undo / redo): findings, then the ROIs redrawn from their image coordinates. */
  restore(snapshot) {
    const v = this.viewer;
    if (!snapshot || !v.imageId || v.options.readOnly) return;
    this.restoring = true;
    try {
      v.panel.reset(snapshot.findings);
      v.roiLayer.clear();
      if (snapshot.rois.length) v.roiLayer.show(snapshot.rois);
      else v.view.render();
    } finally {
      this.restoring = false;
    }
    v.options.onChange?.(this.getAnswer());
  }

  undo() { this.restore(this.history.undo()); } // prettier-ignore
  redo() { this.restore(this.history.redo()); } // prettier-ignore

  /** Submit through the page's onSubmit, unless something blocks it (then the problems are shown). */
  requestSubmit() {
    if (this.validate().length) return;
    this.viewer.options.onSubmit?.(this.getAnswer());
  }
}
