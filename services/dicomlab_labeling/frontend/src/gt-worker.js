// Entry of the Ground Truth worker template (templates/gt-worker.liquid.html).
//
// The template puts `task.input` (the pre-annotation callback's taskInput) as HTML-escaped JSON into
// #dicomlab-task[data-task-input]; this module shows the image, keeps the hidden input
// `answer` of the <crowd-form> filled with the clean answer JSON, and blocks submitting an
// incomplete answer or any answer while the image is not displayed (loading, or failed: the viewer then
// offers Retry, and "Skip: could not load"). Ground Truth has no skip of its own, so that button submits
// an explicit skip and no findings: {"skipped": {"reason": "could not load", "detail": "HTTP 403 …"},
// "sopInstanceUid"}. The consolidation callback lists the worker under "notLabeledBy" for the image
// (no answer from them: neither absent findings nor a malformed answer).
import { LabelingViewer } from './viewer/index.js';

function parseMaybeJson(value) {
  if (typeof value !== 'string') return value ?? null;
  try {
    return JSON.parse(value);
  } catch {
    return null;
  }
}

/** The answer a worker submits when the image could not be loaded: a skip with its reason, no findings. */
export function skipAnswer(detail, sopInstanceUid) {
  const answer = { skipped: { reason: 'could not load', detail: String(detail ?? '').slice(0, 160) } };
  if (sopInstanceUid) answer.sopInstanceUid = sopInstanceUid;
  return answer;
}

function previousAnswerOf(input) {
  const prev = parseMaybeJson(input.previousAnswer);
  if (!prev || typeof prev !== 'object') return null;
  // A consolidated label attribute or a raw answer: take whatever carries "findings".
  if (prev.findings) return prev;
  for (const value of Object.values(prev)) if (value && typeof value === 'object' && value.findings) return value;
  return null;
}

async function main() {
  const host = document.getElementById('dicomlab-task');
  const form = document.querySelector('crowd-form') ?? document.querySelector('form');
  const answerInput = document.getElementById('dicomlab-answer');
  const input = parseMaybeJson(host?.dataset.taskInput) ?? {};
  const write = (answer) => {
    answerInput.value = JSON.stringify(answer);
  };
  let skipping = null; // the skip answer being submitted, if the worker chose "Skip: could not load"
  const viewer = new LabelingViewer(document.getElementById('dicomlab-viewer'), {
    labels: input.labels ?? '',
    // The job's choice is in the template (gt-template --default-finding-state; absent unless chosen); a
    // task input's own value wins. "not-looked-at": the worker sets each finding, or marks the rest absent.
    defaultFindingState:
      (input.defaultFindingState ?? document.getElementById('dicomlab-job')?.dataset.defaultFindingState) ===
      'not-looked-at'
        ? 'not-looked-at'
        : 'absent',
    onChange: write,
    onSubmit: (answer) => {
      write(answer);
      if (typeof form?.submit === 'function') form.submit();
    },
    onState: (state) => {
      if (state !== 'ready') answerInput.value = '';
    },
    onSkipUnloadable: (reason) => {
      // Only while the load failed: a skip never replaces an answer for an image that is displayed.
      if (viewer.isReady()) return;
      skipping = skipAnswer(reason, input.sopInstanceUid);
      viewer.statusEl.textContent =
        `This image could not be loaded (${reason}). Submitted as "not labeled: could not load"; ` +
        'no finding was submitted for it.';
      if (typeof form?.submit === 'function') form.submit();
    },
  });
  window.dicomlabViewer = viewer; // for the browser tests and for debugging in the worker console
  form?.addEventListener('submit', (event) => {
    if (skipping && !viewer.isReady()) {
      write(skipping);
      return;
    }
    skipping = null;
    if (viewer.validate().length) {
      answerInput.value = '';
      event.preventDefault();
      event.stopImmediatePropagation();
      return;
    }
    write(viewer.getAnswer());
  });
  try {
    await viewer.load({
      url: input.taskObject,
      token: input.token,
      sopInstanceUid: input.sopInstanceUid,
      previousAnswer: previousAnswerOf(input),
    });
  } catch (error) {
    console.warn('dicomlab: image failed to load', error?.message ?? error);
  }
}

main();
