// The findings panel: the reader's findings (a FindingsModel) with one row per finding showing its
// states (radios) and hotkey, the focused row (J/K), an optional note and "quality issue" flag, the
// problems that block submitting, and the shortcut list. Setting a finding absent while it has ROIs asks
// the reader first (roiguard.js). A finding may be "not looked at" (no state chosen; the job's default):
// its row says so, and "Mark the rest absent" sets every such finding absent in one step.

import { FindingsModel, MAX_NOTE_CHARS, NO_FINDING, NOT_LOOKED_AT, STATES } from './answer.js';
import { el } from './dom.js';
import { CYCLE, keyText } from './hotkeys.js';
import { askRemoveRois, orphanRois } from './roiguard.js';

const STATE_NAMES = { present: 'Present', absent: 'Absent', uncertain: 'Uncertain' };

export class FindingsPanel {
  /**
   * @param {object} options  id (unique per viewer), model (FindingsModel), hotkeys (Map label -> key),
   *   readOnly, host (where the ROI dialog opens), rois() (the current ROIs), removeRoi(uid),
   *   onChange(key) (a finding, the note or the flag changed), releaseFocus(control)
   */
  constructor({ id, model, hotkeys, readOnly, host, rois, removeRoi, onChange, releaseFocus }) {
    this.id = id;
    this.model = model;
    const labels = (this.labels = model.labels);
    Object.assign(this, { readOnly, host, rois, removeRoi });
    this.guarding = false;
    this.rows = new Map();
    this.focusIndex = 0;
    this.onChange = onChange;
    this.releaseFocus = releaseFocus;
    this.el = el('div', { class: 'dl-findings' });
    labels.forEach((label, index) => {
      const name = `${id}-f${index}`;
      const radios = STATES.map((state) =>
        el(
          'label',
          { class: `dl-state dl-${state}` },
          el('input', {
            type: 'radio',
            name,
            value: state,
            disabled: readOnly,
            checked: model.get(label) === state,
            onchange: () => this.set(label, state),
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
        el('span', { class: 'dl-not-looked' }, 'not looked at'),
        hotkeys.has(label) ? el('kbd', { class: 'dl-hotkey', title: `Key cycling ${label}` }, keyText(hotkeys.get(label))) : null,
        ...radios,
      );
      row.addEventListener('focusin', () => this.focus(index, false));
      this.rows.set(label, row);
      this.el.append(row);
    });
    this.problemsEl = el('p', { class: 'dl-problems', role: 'alert' });
    this.restButton = readOnly
      ? null
      : el('button', { type: 'button', class: 'dl-rest-absent', title: 'Shift+N', onclick: () => this.markRestAbsent() },
          'Mark the rest absent (Shift+N)');
  }

  /** Every finding still "not looked at" becomes absent; findings already decided are left alone. */
  markRestAbsent() {
    if (this.readOnly || this.guarding) return [];
    const changed = this.model.markRestAbsent();
    this.sync();
    if (changed.length) this.onChange(null);
    return changed;
  }

  /** Start afresh from `findings` ({label: state}; a new image, an undo step). */
  reset(findings) {
    this.model = new FindingsModel(this.labels, findings, this.model.defaultState);
    this.sync();
  }

  /**
   * Set a finding (the "No Finding" rule may set others absent). When that leaves ROIs on a finding that
   * is then absent, the reader chooses: remove those ROIs, or cancel the change. Resolves to whether the
   * change was made.
   */
  async set(label, state) {
    if (this.readOnly || this.guarding) return false;
    const trial = new FindingsModel(this.labels, this.model.toJSON(), this.model.defaultState);
    trial.set(label, state);
    const orphans = orphanRois(this.rois(), trial.toJSON());
    if (orphans.length) {
      this.sync(); // the radios show the current states while the reader decides
      this.guarding = true;
      const remove = await askRemoveRois(this.host, orphans.map((r) => r.finding), orphans).finally(() => {
        this.guarding = false;
      });
      if (!remove) {
        this.sync();
        return false;
      }
      for (const roi of orphans) this.removeRoi(roi.uid);
    }
    this.model.set(label, state);
    this.sync();
    this.onChange(null);
    return true;
  }

  /** Cycle one finding (its hotkey): (not looked at →) present → uncertain → absent → present. */
  cycle(label) {
    const index = this.labels.indexOf(label);
    if (index < 0) return;
    this.focus(index);
    this.set(label, CYCLE[this.model.get(label)] ?? 'present');
  }

  /** An ROI was tied to `label`: drawing an ROI says the finding is there (unless the reader said uncertain). */
  used(label) {
    const state = this.model.get(label);
    if (label && label !== NO_FINDING && (state === 'absent' || state === NOT_LOOKED_AT)) this.model.set(label, 'present');
    this.sync();
  }

  /** Show the model's states (radios and each row's data-state); clears the problems shown. */
  sync() {
    const model = this.model;
    for (const [label, row] of this.rows) {
      const state = model.get(label);
      for (const input of row.querySelectorAll('input')) input.checked = input.value === state;
      row.dataset.state = state;
    }
    if (this.restButton) this.restButton.disabled = model.notLookedAt().length === 0;
    this.problemsEl.textContent = '';
  }

  /** Make row `index` (wrapping) the focused one (J/K, Y/N/U act on it). */
  focus(index, scroll = true) {
    const rows = [...this.rows.values()];
    if (!rows.length) return;
    this.focusIndex = (index + rows.length) % rows.length;
    rows.forEach((row, i) => row.classList.toggle('dl-focused', i === this.focusIndex));
    if (scroll) rows[this.focusIndex].scrollIntoView({ block: 'nearest' });
  }

  focusedLabel() {
    return this.labels[this.focusIndex];
  }

  showProblems(problems) {
    this.problemsEl.textContent = problems.join(' ');
  }

  /** A note on the image and a "quality issue" flag: stored with the answer, no skip needed. */
  buildNotePanel() {
    this.noteEl = el('textarea', {
      id: `${this.id}-note`,
      class: 'dl-note',
      rows: '2',
      maxlength: String(MAX_NOTE_CHARS),
      placeholder: 'Optional note on this image',
      oninput: () => this.onChange('note'),
    });
    this.qualityEl = el('input', {
      id: `${this.id}-quality`,
      type: 'checkbox',
      onchange: () => {
        this.onChange(null);
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

  /** Put the note and flag of an earlier answer back (or clear them). */
  setNote(answer) {
    if (this.noteEl) this.noteEl.value = answer?.note ?? '';
    if (this.qualityEl) this.qualityEl.checked = Boolean(answer?.qualityIssue);
  }

  note() {
    return { note: this.noteEl?.value ?? '', qualityIssue: Boolean(this.qualityEl?.checked) };
  }
}

/** The shortcut list as a collapsible help block. */
export function helpBlock(shortcuts) {
  return el(
    'details',
    { class: 'dl-help' },
    el('summary', {}, 'Keyboard shortcuts'),
    el('dl', {}, shortcuts.flatMap(([keys, what]) => [el('dt', {}, keys), el('dd', {}, what)])),
  );
}
