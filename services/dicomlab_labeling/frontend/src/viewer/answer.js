// The finding model and the answer JSON: pure functions, no Cornerstone, no DOM.
//
// The answer is the one clean JSON object that both the Ground Truth worker template and the
// self-hosted UI submit (parsed by services/dicomlab_core/groundtruth.py):
//   { findings: { <label>: "present" | "absent" | "uncertain", ...every label... },
//     rois: [ { tool: "rectangle" | "ellipse" | "polygon", finding: <label>, points: [[x, y], ...],
//               imageId? } ],
//     sopInstanceUid, timeSpentSeconds, windowLevel: { center, width },
//     note?: "the reader's words on this image", qualityIssue?: true }
// `note` and `qualityIssue` (a problem with the image that does not stop it being labelled) are left
// out when empty / false; Ground Truth's parser ignores them, so the answer stays valid there.
// ROI points are image pixel coordinates (column x, row y; (0, 0) is the top-left corner of the
// first pixel): rectangle and ellipse = the two opposite corners of the bounding box
// [[xmin, ymin], [xmax, ymax]] (the ellipse is the one inscribed in that box), polygon = its
// vertices in drawing order (closed implicitly).

export const NO_FINDING = 'No Finding';
export const STATES = Object.freeze(['present', 'absent', 'uncertain']);
/**
 * A finding the reader has not decided yet (the job's default state, see `defaultFindingState`). It is
 * never submitted: while any finding is "not looked at" the answer cannot be submitted; drafts keep it.
 */
export const NOT_LOOKED_AT = 'not-looked-at';
export const DEFAULT_STATES = Object.freeze([NOT_LOOKED_AT, 'absent']);
export const TOOLS = Object.freeze(['rectangle', 'ellipse', 'polygon']);

/** Labels from a task input: a comma string (GT manifests) or an array; trimmed, unique, non-empty. */
export function parseLabels(value) {
  const raw = Array.isArray(value) ? value : String(value ?? '').split(',');
  const seen = new Set();
  const labels = [];
  for (const item of raw) {
    const label = String(item).trim();
    if (label && !seen.has(label)) {
      seen.add(label);
      labels.push(label);
    }
  }
  return labels;
}

/**
 * Per-finding states with "No Finding" exclusive: marking it present clears every other finding
 * to absent; marking any other finding present or uncertain sets "No Finding" to absent. Findings start
 * in `defaultState` ("not-looked-at" or "absent"); a finding missing from `initial` gets it too.
 */
export class FindingsModel {
  constructor(labels, initial = {}, defaultState = NOT_LOOKED_AT) {
    this.labels = parseLabels(labels);
    this.defaultState = DEFAULT_STATES.includes(defaultState) ? defaultState : NOT_LOOKED_AT;
    this.states = new Map(this.labels.map((label) => [label, this.defaultState]));
    for (const [label, state] of Object.entries(initial ?? {})) {
      if (this.states.has(label) && (STATES.includes(state) || state === NOT_LOOKED_AT)) this.states.set(label, state);
    }
  }

  get(label) {
    return this.states.get(label);
  }

  /** Set one finding; returns the labels whose state changed (the exclusivity rule may change others). */
  set(label, state) {
    if (!this.states.has(label)) throw new Error(`unknown finding: ${label}`);
    if (!STATES.includes(state)) throw new Error(`unknown state: ${state}`);
    const changed = [];
    const put = (name, value) => {
      if (this.states.get(name) !== value) {
        this.states.set(name, value);
        changed.push(name);
      }
    };
    put(label, state);
    if (label === NO_FINDING && state !== 'absent') {
      for (const other of this.labels) if (other !== NO_FINDING) put(other, 'absent');
    } else if (label !== NO_FINDING && state !== 'absent' && this.states.has(NO_FINDING)) {
      put(NO_FINDING, 'absent');
    }
    return changed;
  }

  toJSON() {
    return Object.fromEntries(this.states);
  }

  /** The findings still "not looked at". */
  notLookedAt() {
    return this.labels.filter((l) => this.states.get(l) === NOT_LOOKED_AT);
  }

  /** "Mark the rest absent": every finding not looked at becomes absent (decided ones are left alone). */
  markRestAbsent() {
    const rest = this.notLookedAt();
    for (const label of rest) this.states.set(label, 'absent');
    return rest;
  }

  /** Problems that block submitting (empty when the answer is complete). */
  problems() {
    const problems = [];
    const rest = this.notLookedAt();
    if (rest.length) {
      const names = rest.length > 3 ? `${rest.slice(0, 3).join(', ')} and ${rest.length - 3} more` : rest.join(', ');
      problems.push(`Not looked at yet: ${names}. Set each finding, or mark the rest absent (Shift+N).`);
      return problems;
    }
    const decided = this.labels.some((l) => l !== NO_FINDING && ['present', 'uncertain'].includes(this.states.get(l)));
    const noFinding = this.states.get(NO_FINDING);
    if (this.states.has(NO_FINDING) && !decided && noFinding === 'absent') {
      problems.push(`Mark at least one finding, or "${NO_FINDING}".`);
    }
    if (noFinding === 'present' && decided) problems.push(`"${NO_FINDING}" excludes every other finding.`);
    return problems;
  }
}

const round = (v) => Math.round(v * 100) / 100;

/** Two opposite corners [[xmin, ymin], [xmax, ymax]] of the points' bounding box. */
export function boundingCorners(points) {
  const xs = points.map((p) => p[0]);
  const ys = points.map((p) => p[1]);
  return [
    [round(Math.min(...xs)), round(Math.min(...ys))],
    [round(Math.max(...xs)), round(Math.max(...ys))],
  ];
}

/** Build the answer object (every label present in `findings`; ROIs validated). */
export const MAX_NOTE_CHARS = 2000;

export function buildAnswer({ findings, rois, sopInstanceUid, startedAt, now = Date.now(), windowLevel, note, qualityIssue }) {
  const labels = new Set(Object.keys(findings));
  const cleanRois = [];
  for (const roi of rois) {
    if (!TOOLS.includes(roi.tool) || !labels.has(roi.finding)) continue;
    const out = { tool: roi.tool, finding: roi.finding, points: roi.points.map(([x, y]) => [round(x), round(y)]) };
    if (roi.imageId) out.imageId = roi.imageId;
    cleanRois.push(out);
  }
  const answer = {
    findings: { ...findings },
    rois: cleanRois,
    sopInstanceUid: sopInstanceUid ?? '',
    timeSpentSeconds: Math.max(0, Math.round((now - startedAt) / 100) / 10),
  };
  if (windowLevel && Number.isFinite(windowLevel.center) && Number.isFinite(windowLevel.width)) {
    answer.windowLevel = { center: round(windowLevel.center), width: round(windowLevel.width) };
  }
  const text = String(note ?? '').trim().slice(0, MAX_NOTE_CHARS);
  if (text) answer.note = text;
  if (qualityIssue) answer.qualityIssue = true;
  return answer;
}
