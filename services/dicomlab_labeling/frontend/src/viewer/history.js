// Undo/redo of the reader's work on one image: a list of snapshots ({findings, rois} in image pixel
// coordinates, plain JSON) with a cursor. Pure: no Cornerstone, no DOM. The viewer records a snapshot
// after every change and restores one on Ctrl+Z / Ctrl+Shift+Z; dragging an ROI's handle records many
// "modified" events, which `key` coalesces into one step.

const LIMIT = 200;

export class History {
  constructor(limit = LIMIT) {
    this.limit = limit;
    this.reset(null);
  }

  /** Start afresh from `snapshot` (a newly loaded image): nothing to undo or redo. */
  reset(snapshot) {
    this.steps = snapshot ? [{ snapshot: clone(snapshot), key: null }] : [];
    this.cursor = this.steps.length - 1;
  }

  /**
   * Record the state after a change. Nothing is recorded when it equals the current one; a step with the
   * same non-empty `key` as the current step replaces it (one drag = one step). Redo steps are dropped.
   */
  record(snapshot, key = null) {
    const current = this.steps[this.cursor];
    if (current && same(current.snapshot, snapshot)) return false;
    this.steps.length = this.cursor + 1;
    if (key && current?.key === key && this.cursor > 0) this.steps[this.cursor] = { snapshot: clone(snapshot), key };
    else this.steps.push({ snapshot: clone(snapshot), key });
    if (this.steps.length > this.limit) this.steps.splice(0, this.steps.length - this.limit);
    this.cursor = this.steps.length - 1;
    return true;
  }

  canUndo() {
    return this.cursor > 0;
  }

  canRedo() {
    return this.cursor < this.steps.length - 1;
  }

  /** The snapshot to restore for an undo, or null. */
  undo() {
    if (!this.canUndo()) return null;
    this.cursor -= 1;
    return clone(this.steps[this.cursor].snapshot);
  }

  redo() {
    if (!this.canRedo()) return null;
    this.cursor += 1;
    return clone(this.steps[this.cursor].snapshot);
  }
}

function clone(value) {
  return JSON.parse(JSON.stringify(value));
}

function same(a, b) {
  return JSON.stringify(a) === JSON.stringify(b);
}
