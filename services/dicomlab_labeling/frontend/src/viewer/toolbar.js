// The viewer's toolbar: tool buttons (W/L, pan, zoom and the ROI tools), window presets, the image's own
// windows, and the view operations. It only builds the DOM and shows which tool is active; every action
// is a callback of the viewer.

import { el, replaceChildren } from './dom.js';
import { windowChoices } from './grayscale.js';

/**
 * @param {object} options  readOnly (no ROI tools), presets ({key: {label}}), actions: setTool(key),
 *   applyPreset(key), applyImageWindow(index), invert(), rotate(), flip('h' | 'v'), resetView()
 */
export class Toolbar {
  constructor({ readOnly = false, presets = {}, actions }) {
    const button = (text, label, action, extra = {}) =>
      el('button', { type: 'button', 'aria-label': label, title: label, onclick: action, ...extra }, text);
    this.toolButtons = {};
    const toolButton = (key, text, label) => {
      const b = button(text, label, () => actions.setTool(key), { 'aria-pressed': 'false', dataset: { tool: key } });
      this.toolButtons[key] = b;
      return b;
    };
    this.windowSelect = el('select', {
      class: 'dl-windows',
      'aria-label': "The image's own windows",
      hidden: true,
      onchange: () => actions.applyImageWindow(Number(this.windowSelect.value)),
    });
    this.el = el(
      'div',
      { class: 'dl-toolbar', role: 'toolbar', 'aria-label': 'Viewer tools' },
      toolButton('wl', 'W/L', 'Window/level tool (W)'),
      toolButton('pan', 'Pan', 'Pan tool (P)'),
      toolButton('zoom', 'Zoom', 'Zoom tool (Z)'),
      readOnly ? null : toolButton('rectangle', '▭', 'Rectangle ROI (R)'),
      readOnly ? null : toolButton('ellipse', '◯', 'Ellipse ROI (E)'),
      readOnly ? null : toolButton('polygon', '⬠', 'Polygon ROI: click each vertex, Enter closes (G)'),
      readOnly ? null : toolButton('freehand', '✎', 'Freehand ROI: drag (Shift+G)'),
      el('span', { class: 'dl-sep' }),
      ...Object.entries(presets).map(([key, p], i) =>
        button(p.label, i < 3 ? `${p.label} window (${i + 1})` : `${p.label} window`, () => actions.applyPreset(key), {
          dataset: { preset: key },
        }),
      ),
      this.windowSelect,
      el('span', { class: 'dl-sep' }),
      button('Invert', 'Invert (I)', () => actions.invert()),
      button('Rotate', 'Rotate 90° (T)', () => actions.rotate()),
      button('Flip H', 'Flip horizontal (H)', () => actions.flip('h')),
      button('Flip V', 'Flip vertical (V)', () => actions.flip('v')),
      button('Reset', 'Reset view (0)', () => actions.resetView()),
    );
  }

  /** Show `active` as the pressed tool. */
  markTool(active) {
    for (const [key, b] of Object.entries(this.toolButtons)) b.setAttribute('aria-pressed', String(key === active));
  }

  /** The image's own windows (Window Center/Width with their explanations) as a choice, when it has any. */
  showImageWindows(plan) {
    const choices = plan ? windowChoices(plan) : [];
    replaceChildren(
      this.windowSelect,
      choices.map((c) => el('option', { value: String(c.index) }, `${c.label} (W ${c.width} / L ${c.center})`)),
    );
    this.windowSelect.hidden = choices.length === 0;
    if (choices.length) this.windowSelect.value = '0';
  }

  hideImageWindows() {
    this.windowSelect.hidden = true;
  }

  /** Back to the image's first window (after "reset view"). */
  firstImageWindow() {
    if (this.windowSelect.options.length) this.windowSelect.value = '0';
  }
}
