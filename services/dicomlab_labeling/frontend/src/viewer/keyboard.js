// The viewer's keyboard: one document-level keydown listener mapping keys to the viewer's actions.
// Keys are ignored while the reader types in a text field or a dialog of the viewer is open; a finding's
// own hotkey (hotkeys.js) comes before the fixed keys below.

import { NO_FINDING } from './answer.js';
import { isTyping } from './dom.js';
import { labelForKey } from './hotkeys.js';

export const SHORTCUTS = Object.freeze([
  ['W', 'Window/level tool (left drag)'],
  ['P', 'Pan tool (also middle drag)'],
  ['Z', 'Zoom tool (also right drag, wheel)'],
  ['R / E / G', 'Draw rectangle / ellipse / polygon ROI (polygon: click each vertex)'],
  ['Enter / Escape', 'Close / cancel the polygon being placed (or double-click, or click its first vertex)'],
  ['Shift+G', 'Draw a freehand ROI (drag)'],
  ['1 / 2 / 3', 'Lung / mediastinum / bone window (from the image\'s histogram)'],
  ['I', 'Invert'],
  ['T', 'Rotate 90°'],
  ['H / V', 'Flip horizontal / vertical'],
  ['0', 'Reset view'],
  ['J / K', 'Next / previous finding'],
  ['Y / N / U', 'Selected finding present / absent / uncertain'],
  ['Key beside a finding', 'Cycle that finding: present → uncertain → absent; with a new ROI selected: its finding'],
  ['Shift+N', 'Mark the rest absent (the findings not looked at yet)'],
  ['F', '"No Finding" present'],
  ['[ / ]', 'Previous / next finding for new ROIs'],
  ['Delete', 'Remove the last ROI'],
  ['Shift+I', 'Show / hide ROI statistics (mean, std, area)'],
  ['Ctrl+Z / Ctrl+Shift+Z', 'Undo / redo (findings and ROIs)'],
  ['Ctrl+Enter', 'Submit'],
]);

/** The plain keys (no modifier) of viewer `v`: key -> action. */
function actionsOf(v) {
  const ro = v.options.readOnly;
  const a = v.actions;
  return {
    w: () => a.setTool('wl'),
    p: () => a.setTool('pan'),
    z: () => a.setTool('zoom'),
    r: () => a.setTool('rectangle'),
    e: () => a.setTool('ellipse'),
    g: () => a.setTool('polygon'),
    ...Object.fromEntries(Object.keys(v.presets).slice(0, 3).map((k, i) => [String(i + 1), () => a.applyPreset(k)])),
    i: () => a.invert(),
    t: () => a.rotate(),
    h: () => a.flip('h'),
    v: () => a.flip('v'),
    0: () => a.resetView(),
    '+': () => v.view.zoomBy(1.25),
    '-': () => v.view.zoomBy(0.8),
    j: () => v.focusFinding(v.panel.focusIndex + 1),
    k: () => v.focusFinding(v.panel.focusIndex - 1),
    y: () => !ro && v.setFinding(v.panel.focusedLabel(), 'present'),
    n: () => !ro && v.setFinding(v.panel.focusedLabel(), 'absent'),
    u: () => !ro && v.setFinding(v.panel.focusedLabel(), 'uncertain'),
    f: () => !ro && v.model.labels.includes(NO_FINDING) && v.setFinding(NO_FINDING, 'present'),
    '[': () => v.roiLayer.cycleNewFinding(-1),
    ']': () => v.roiLayer.cycleNewFinding(1),
    Delete: () => !ro && v.roiLayer.removeLast(),
    Backspace: () => !ro && v.roiLayer.removeLast(),
  };
}

/** The keydown listener of viewer `v`. */
export function keyHandler(v) {
  return (event) => {
    if (isTyping(event) || event.altKey || event.metaKey) return;
    if (v.panel.guarding || v.root.querySelector('dialog[open]')) return; // the dialog has the keyboard
    if (v.view.drawingPolygon()) {
      // Placing a polygon: Enter closes it, Escape drops it; Backspace/Delete go to the tool (last vertex).
      if (event.key === 'Enter' && !event.ctrlKey) {
        event.preventDefault();
        v.view.closePolygon();
        return;
      }
      if (event.key === 'Escape') {
        event.preventDefault();
        v.view.discardPolygon();
        return;
      }
      if (event.key === 'Backspace' || event.key === 'Delete') return;
    }
    if (event.ctrlKey) {
      const key = event.key.toLowerCase();
      if (event.key === 'Enter') {
        event.preventDefault();
        v.requestSubmit();
      } else if (key === 'z' || key === 'y') {
        event.preventDefault();
        if (key === 'y' || event.shiftKey) v.redo();
        else v.undo();
      }
      return;
    }
    const hot = labelForKey(v.hotkeys, event);
    if (hot) {
      event.preventDefault();
      if (v.options.readOnly) return;
      const roi = v.roiLayer.selectedUnassigned(); // draw first, then the finding's key
      if (roi) v.assignRoi(roi, hot);
      else v.cycleFinding(hot);
      return;
    }
    const shifted = {
      G: () => v.actions.setTool('freehand'),
      N: () => !v.options.readOnly && v.markRestAbsent(),
      I: () => v.roiLayer.setShowStats(!v.roiLayer.showStats),
    };
    if (event.shiftKey && shifted[event.key]) {
      event.preventDefault();
      shifted[event.key]();
      return;
    }
    const key = event.key.length === 1 ? event.key.toLowerCase() : event.key;
    const action = actionsOf(v)[key];
    if (action) {
      event.preventDefault();
      action();
    }
  };
}
