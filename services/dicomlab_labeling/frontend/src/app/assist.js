// AI assistance on the labeling page: a small panel, clearly marked "AI suggestion", listing the
// model's probability per finding — only as far as the job's aiAssistance mode lets the server send it:
//   off                 → no panel at all
//   after-first-answer  → first a "Record my first answer" step (the reader's unaided answer is
//                         stored, immutable); the suggestion appears only after the server has it
//   always              → the suggestion from the start
// The probabilities come from the assignment (GET/next) or the first-answer response, never from the
// page guessing: before the first answer the server has not sent any. Styles are set through the
// CSSOM (allowed by the page's CSP) so this module needs no shared stylesheet change.

const PANEL_ID = 'dl-assist';

function node(tag, props = {}, ...children) {
  const element = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key === 'style') Object.assign(element.style, value);
    else if (key === 'dataset') Object.assign(element.dataset, value);
    else if (key === 'onclick') element.addEventListener('click', value);
    else if (value !== undefined && value !== null) element.setAttribute(key, String(value));
  }
  for (const child of children) element.append(child instanceof Node ? child : document.createTextNode(String(child)));
  return element;
}

function percent(probability) {
  return `${Math.round(probability * 1000) / 10}%`;
}

/**
 * Create the panel (placed after the viewer) and return its controller.
 * @param {{api: Function, getAnswer: () => object, validate: () => string[]}} options
 *   api: the page's JSON API caller; getAnswer/validate: the viewer's current answer and its check.
 */
export function createAssist({ api, getAnswer, validate }) {
  const panel = node('section', {
    id: PANEL_ID,
    'aria-label': 'AI suggestion',
    'aria-live': 'polite',
    dataset: { state: 'off' },
    style: { border: '2px dashed #b26a00', padding: '0.5em 0.75em', margin: '0.5em 0', maxWidth: '40em' },
  });
  panel.hidden = true;
  const anchor = document.getElementById('dl-viewer');
  if (anchor?.parentNode) anchor.insertAdjacentElement('afterend', panel);
  else document.body.append(panel);
  let current = null;

  function render(assignment) {
    const assistance = assignment?.assistance;
    const mode = assistance?.mode ?? 'off';
    panel.replaceChildren();
    panel.dataset.state = mode;
    panel.hidden = mode === 'off';
    if (mode === 'off') return;
    panel.append(node('h2', { style: { fontSize: '1em', margin: '0 0 0.25em' } }, 'AI suggestion'));
    if (assistance.firstAnswerRequired) {
      panel.dataset.state = 'first-answer';
      const button = node('button', { type: 'button', id: 'dl-first-answer', onclick: () => recordFirst(assignment, button) },
        'Record my first answer');
      panel.append(
        node('p', {}, 'Answer on your own first. Once your first answer is recorded (it cannot be changed), the AI suggestion is shown and you may revise your answer before submitting.'),
        button,
      );
      return;
    }
    panel.append(node('p', { style: { margin: '0 0 0.25em', fontStyle: 'italic' } },
      'Model output, not a diagnosis: check every finding against the image yourself.'));
    if (!assistance.predictions) {
      panel.dataset.state = 'none';
      panel.append(node('p', {}, 'The model made no prediction for this image.'));
      return;
    }
    panel.dataset.state = 'shown';
    const list = node('ul', { id: 'dl-assist-predictions', style: { margin: '0', paddingLeft: '1.25em' } });
    for (const [finding, probability] of Object.entries(assistance.predictions)) {
      list.append(node('li', { dataset: { finding } }, `${finding}: ${percent(probability)}`));
    }
    panel.append(list);
    if (assistance.modelVersion) panel.append(node('p', { style: { fontSize: '0.85em', margin: '0.25em 0 0' } }, `Model ${assistance.modelVersion}`));
  }

  async function recordFirst(assignment, button) {
    if (validate().length) return; // the viewer shows what is missing
    button.disabled = true;
    try {
      const result = await api('POST', `/api/assignments/${assignment.id}/first-answer`, { answer: getAnswer() });
      assignment.assistance = result.assistance;
      if (current === assignment) render(assignment);
    } catch (error) {
      button.disabled = false;
      panel.append(node('p', { role: 'alert' }, `Could not record the first answer: ${error?.message ?? error}`));
    }
  }

  return {
    /** Show the panel for the assignment now on screen (call on every image change). */
    show(assignment) {
      current = assignment;
      render(assignment);
    },
  };
}
