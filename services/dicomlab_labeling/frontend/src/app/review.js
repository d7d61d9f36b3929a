// Reviewer view: tasks with disagreements first, paged with a total and filtered by finding, reader and
// disagreement level; a task's answers side by side (read-only viewers, each with that reader's
// findings and ROIs, and the findings also as text); an editable viewer prefilled with the
// consolidated labels and every reader's ROIs (or the last adjudication) to adjudicate.
import { LabelingViewer, STATES } from '../viewer/index.js';
import { el, replaceChildren } from '../viewer/dom.js';
import { describeError, fillTable, row, showMessage } from './ui.js';

export default async function review({ api }) {
  const jobSelect = document.getElementById('dl-review-job');
  const filterSelect = document.getElementById('dl-review-filter');
  const findingSelect = document.getElementById('dl-review-finding');
  const readerSelect = document.getElementById('dl-review-reader');
  const levelSelect = document.getElementById('dl-review-level');
  const sizeSelect = document.getElementById('dl-review-size');
  const range = document.getElementById('dl-review-range');
  const prev = document.getElementById('dl-review-prev');
  const next = document.getElementById('dl-review-next');
  const table = document.getElementById('dl-review-tasks');
  const detail = document.getElementById('dl-review-detail');
  const note = document.getElementById('dl-adjudicate-note');
  let viewers = [];
  let adjudicator = null;
  let openTask = null;
  let offset = 0;
  let total = 0;

  const { jobs } = await api('GET', '/api/jobs');
  replaceChildren(jobSelect, jobs.map((j) => el('option', { value: String(j.id) }, j.name)));
  const requested = new URLSearchParams(location.search).get('job');
  if (requested) jobSelect.value = requested;

  /** Keep a filter select's options in step with the job (its labels, its readers). */
  function options(select, values, any) {
    const keep = select.value;
    replaceChildren(select, [el('option', { value: '' }, any), ...values.map((v) => el('option', { value: v }, v))]);
    select.value = values.includes(keep) ? keep : '';
  }

  async function listTasks() {
    if (!jobSelect.value) {
      fillTable(table, [row('No job to review.')]);
      range.textContent = '';
      return;
    }
    const size = Number(sizeSelect.value);
    const query = new URLSearchParams({
      filter: filterSelect.value, limit: String(size), offset: String(offset),
      finding: findingSelect.value, reader: readerSelect.value, minDisagreement: levelSelect.value,
    });
    const page = await api('GET', `/api/review/jobs/${encodeURIComponent(jobSelect.value)}/tasks?${query}`);
    total = page.total;
    options(findingSelect, page.labels ?? [], 'Any finding');
    options(readerSelect, page.readers ?? [], 'Any reader');
    fillTable(
      table,
      page.tasks.length
        ? page.tasks.map((t) =>
            row(
              `Task ${t.taskId}`,
              `${t.answers} / ${t.readersPerImage}`,
              (t.readers ?? []).join(', '),
              `${Math.round((t.disagreement ?? 0) * 100)} %`,
              (t.disagreeingFindings ?? []).join(', ') || 'none',
              t.adjudicated ? 'yes' : 'no',
              el('button', { type: 'button', 'aria-label': `Review task ${t.taskId}`, onclick: () => openDetail(t.taskId) }, 'Review'),
            ),
          )
        : [row('No task matches these filters.')],
    );
    range.textContent = total
      ? `Tasks ${offset + 1}–${offset + page.tasks.length} of ${total}`
      : 'No tasks';
    prev.disabled = offset === 0;
    next.disabled = offset + page.tasks.length >= total;
  }

  function destroyViewers() {
    for (const v of viewers) v.destroy();
    adjudicator?.destroy();
    viewers = [];
    adjudicator = null;
  }

  async function openDetail(taskId) {
    try {
      destroyViewers();
      const d = await api('GET', `/api/review/tasks/${encodeURIComponent(taskId)}`);
      openTask = d;
      detail.hidden = false;
      const source = { url: d.image.viewerUrl, token: d.token, sopInstanceUid: d.image.sopInstanceUid };
      const panels = d.answers.map((answer) => {
        const host = el('div', {});
        const panel = el(
          'section',
          { class: 'dl-answer', 'aria-label': `Answer of ${answer.reader}` },
          el('h3', {}, `${answer.reader} (v${answer.version}, ${answer.timeSpentSeconds ?? '?'} s)`),
          host,
          findingsText(answer.findings, d.consolidated),
        );
        viewers.push(new LabelingViewer(host, { labels: d.labels, readOnly: true, keyboard: false, help: false, isolate: true }));
        return panel;
      });
      replaceChildren(document.getElementById('dl-review-answers'), panels);
      await Promise.all(
        viewers.map((v, i) => v.load({ ...source, previousAnswer: { findings: d.answers[i].findings, rois: d.answers[i].rois } })),
      );
      const start = d.adjudication ?? { findings: consolidatedFindings(d.consolidated), rois: readersRois(d.answers) };
      adjudicator = new LabelingViewer(document.getElementById('dl-adjudicate-viewer'), { labels: d.labels, isolate: true });
      window.dicomlabViewer = adjudicator;
      await adjudicator.load({ ...source, previousAnswer: start });
      note.value = d.adjudication?.note ?? '';
      detail.scrollIntoView({ block: 'start' });
    } catch (error) {
      showMessage(describeError(error));
    }
  }

  document.getElementById('dl-adjudicate').addEventListener('click', async () => {
    if (!openTask || !adjudicator) return;
    if (adjudicator.validate().length) return;
    const { findings, rois } = adjudicator.getAnswer();
    try {
      await api('POST', `/api/review/tasks/${encodeURIComponent(openTask.task.taskId)}/adjudicate`, {
        findings,
        rois,
        note: note.value,
      });
      showMessage(`Adjudication of task ${openTask.task.taskId} saved.`, 'info');
      await listTasks();
    } catch (error) {
      showMessage(describeError(error));
    }
  });
  const refresh = (keepPage = false) => {
    if (!keepPage) offset = 0;
    listTasks().catch((e) => showMessage(describeError(e)));
  };
  jobSelect.addEventListener('change', () => {
    findingSelect.value = '';
    readerSelect.value = '';
    refresh();
  });
  for (const select of [filterSelect, findingSelect, readerSelect, levelSelect, sizeSelect]) {
    select.addEventListener('change', () => refresh());
  }
  prev.addEventListener('click', () => {
    offset = Math.max(0, offset - Number(sizeSelect.value));
    refresh(true);
  });
  next.addEventListener('click', () => {
    offset += Number(sizeSelect.value);
    refresh(true);
  });
  await listTasks();
}

/** {label: {value, confidence, agreement}} → {label: state}; unknown values become "uncertain". */
function consolidatedFindings(consolidated) {
  const out = {};
  for (const [label, item] of Object.entries(consolidated ?? {})) {
    const value = typeof item === 'object' && item !== null ? item.value : item;
    out[label] = STATES.includes(value) ? value : 'uncertain';
  }
  return out;
}

/** Every reader's ROIs, each once (the adjudicator keeps or deletes them). */
function readersRois(answers) {
  const seen = new Set();
  const out = [];
  for (const answer of answers ?? []) {
    for (const roi of answer.rois ?? []) {
      const key = JSON.stringify(roi);
      if (seen.has(key)) continue;
      seen.add(key);
      out.push(roi);
    }
  }
  return out;
}

/** A reader's findings as text ("Edema: present — differs from consensus (absent)"). */
function findingsText(findings, consolidated) {
  const entries = Object.entries(findings ?? {});
  if (!entries.length) return el('p', { class: 'dl-findings-text' }, 'No finding answered.');
  return el(
    'ul',
    { class: 'dl-findings-text', 'aria-label': 'Findings as text' },
    entries.map(([label, state]) => {
      const agreed = consolidated?.[label]?.value;
      const differs = agreed !== undefined && agreed !== state;
      return el('li', { dataset: { differs: String(differs) } }, `${label}: ${state}`, differs ? ` — differs from consensus (${agreed})` : '');
    }),
  );
}
