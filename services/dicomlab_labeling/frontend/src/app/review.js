// Reviewer view: tasks with disagreements first; a task's answers side by side (read-only viewers,
// each with that reader's findings and ROIs); an editable viewer prefilled with the consolidated
// labels (or the last adjudication) to adjudicate.
import { LabelingViewer, STATES } from '../viewer/index.js';
import { el, replaceChildren } from '../viewer/dom.js';
import { describeError, fillTable, row, showMessage } from './ui.js';

export default async function review({ api }) {
  const jobSelect = document.getElementById('dl-review-job');
  const filterSelect = document.getElementById('dl-review-filter');
  const table = document.getElementById('dl-review-tasks');
  const detail = document.getElementById('dl-review-detail');
  const note = document.getElementById('dl-adjudicate-note');
  let viewers = [];
  let adjudicator = null;
  let openTask = null;

  const { jobs } = await api('GET', '/api/jobs');
  replaceChildren(jobSelect, jobs.map((j) => el('option', { value: String(j.id) }, j.name)));
  const requested = new URLSearchParams(location.search).get('job');
  if (requested) jobSelect.value = requested;

  async function listTasks() {
    if (!jobSelect.value) {
      fillTable(table, [row('No job to review.')]);
      return;
    }
    const { tasks } = await api(
      'GET',
      `/api/review/jobs/${encodeURIComponent(jobSelect.value)}/tasks?filter=${encodeURIComponent(filterSelect.value)}&limit=50`,
    );
    fillTable(
      table,
      tasks.map((t) =>
        row(
          `Task ${t.taskId}`,
          `${t.answers} / ${t.readersPerImage}`,
          `${Math.round((t.disagreement ?? 0) * 100)} %`,
          (t.disagreeingFindings ?? []).join(', '),
          t.adjudicated ? 'yes' : 'no',
          el('button', { type: 'button', 'aria-label': `Review task ${t.taskId}`, onclick: () => openDetail(t.taskId) }, 'Review'),
        ),
      ),
    );
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
        );
        viewers.push(new LabelingViewer(host, { labels: d.labels, readOnly: true, keyboard: false, help: false, isolate: true }));
        return panel;
      });
      replaceChildren(document.getElementById('dl-review-answers'), panels);
      await Promise.all(
        viewers.map((v, i) => v.load({ ...source, previousAnswer: { findings: d.answers[i].findings, rois: d.answers[i].rois } })),
      );
      const start = d.adjudication ?? { findings: consolidatedFindings(d.consolidated), rois: [] };
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
  jobSelect.addEventListener('change', () => listTasks().catch((e) => showMessage(describeError(e))));
  filterSelect.addEventListener('change', () => listTasks().catch((e) => showMessage(describeError(e))));
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
