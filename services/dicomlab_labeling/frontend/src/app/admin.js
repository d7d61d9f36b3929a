// Admin view: jobs (create, progress), per job the readers' throughput and reliability, agreement per
// finding with its reading, charts (Chart.js), the reader-versus-consensus matrix, the export with
// download links served by the service; user accounts (create, role, reset password, deactivate).
import { el, replaceChildren } from '../viewer/dom.js';
import { describeError, fillTable, row, showMessage } from './ui.js';
import { agreementChart, histogramChart, matrixChart, perDayChart, progressChart } from './charts.js';

const fixed = (v, digits = 2) => (typeof v === 'number' && Number.isFinite(v) ? v.toFixed(digits) : '—');
const percent = (part, whole) => (whole > 0 ? `${Math.round((100 * part) / whole)} %` : '—');
const share = (v) => (typeof v === 'number' && Number.isFinite(v) ? `${Math.round(v * 100)} %` : '—');

/** "3 min", "2 h 5 min" from seconds. */
function duration(seconds) {
  if (!(seconds > 0)) return 'none waiting';
  const minutes = Math.round(seconds / 60);
  if (minutes < 60) return `${minutes} min`;
  return `${Math.floor(minutes / 60)} h ${minutes % 60} min`;
}

/** The progress response as labelled numbers and percentages. */
export function progressEntries(p) {
  return [
    ['Images', String(p.images)],
    ['Images complete', `${p.complete} of ${p.images} (${percent(p.complete, p.images)})`],
    ['Answers given', `${p.answers} of ${p.needed} needed (${percent(p.answers, p.needed)})`],
    ['Being read now', String(p.activeLeases)],
    ['Leases expired', String(p.expiredLeases)],
    ['Skipped or abandoned', String(p.skipped)],
    ['Oldest image waiting', duration(p.oldestWaitingSeconds)],
  ];
}

function goldText(score) {
  const overall = score?.overall;
  if (!overall || !overall.total) return '—';
  return `${share(overall.accuracy)} (${overall.correct} of ${overall.total})`;
}

export default async function admin({ api, user }) {
  const section = document.getElementById('dl-admin-job');
  const title = document.getElementById('dl-admin-job-title');
  const result = document.getElementById('dl-export-result');
  const links = document.getElementById('dl-export-links');
  const exportButton = document.getElementById('dl-export');
  const exportProgress = document.getElementById('dl-export-progress');
  const charts = {};
  let jobId = null;

  function draw(name, make) {
    charts[name]?.destroy();
    charts[name] = make();
  }

  async function listJobs() {
    const { jobs } = await api('GET', '/api/admin/jobs');
    fillTable(
      document.getElementById('dl-admin-jobs'),
      jobs.map((j) =>
        row(
          j.name,
          j.status,
          `${j.counts.complete} of ${j.counts.images} (${percent(j.counts.complete, j.counts.images)})`,
          `${j.counts.answers} of ${j.counts.needed} (${percent(j.counts.answers, j.counts.needed)})`,
          j.dueDate ? j.dueDate.slice(0, 10) : '—',
          el('button', { type: 'button', 'aria-label': `Details of ${j.name}`, onclick: () => openJob(j) }, 'Details'),
        ),
      ),
    );
    draw('jobs', () => progressChart(document.getElementById('dl-chart-jobs'), jobs));
  }

  function fillMatrix(activity) {
    const table = document.getElementById('dl-admin-matrix');
    const readers = Object.keys(activity.readerConsensus);
    const labels = activity.labels.filter((l) => readers.some((r) => activity.readerConsensus[r][l] != null));
    replaceChildren(table.tHead.rows[0], [
      el('th', { scope: 'col' }, 'Reader'),
      ...labels.map((l) => el('th', { scope: 'col' }, l)),
    ]);
    fillTable(
      table,
      readers.map((r) =>
        el(
          'tr',
          {},
          el('th', { scope: 'row' }, r),
          ...labels.map((l) => {
            const v = activity.readerConsensus[r][l];
            // The number is the content; the shade only repeats it (darker = more agreement).
            const cell = el('td', { 'data-share': v == null ? '' : String(v) }, share(v));
            if (typeof v === 'number') cell.style.setProperty('--share', String(v));
            return cell;
          }),
        ),
      ),
    );
    // The same numbers as a chart; the table stays as its text alternative.
    const canvas = document.getElementById('dl-chart-matrix');
    canvas.parentElement.style.height = `${90 + 34 * Math.max(1, readers.length)}px`;
    draw('matrix', () => matrixChart(canvas, readers, labels, activity.readerConsensus));
  }

  async function openJob(job) {
    try {
      jobId = job.id;
      section.hidden = false;
      title.textContent = `Job ${job.name}`;
      result.textContent = '';
      replaceChildren(links, []);
      const base = `/api/admin/jobs/${encodeURIComponent(job.id)}`;
      const [progress, { readers }, agreement, activity] = await Promise.all([
        api('GET', `${base}/progress`),
        api('GET', `${base}/readers`),
        api('GET', `${base}/agreement`),
        api('GET', `${base}/activity`),
      ]);
      document
        .getElementById('dl-admin-progress')
        .replaceChildren(...progressEntries(progress).flatMap(([k, v]) => [el('dt', {}, k), el('dd', {}, v)]));
      fillTable(
        document.getElementById('dl-admin-readers'),
        readers.map((r) =>
          row(
            r.username,
            String(r.submissions),
            String(r.skips),
            String(r.expired),
            fixed(r.meanSecondsPerImage, 1),
            fixed(r.medianSecondsPerImage, 1),
            fixed(r.imagesPerHour, 0),
            share(r.agreementWithConsensus),
            share(r.reliability),
            goldText(r.goldAccuracy),
          ),
        ),
      );
      const findings = Object.entries(agreement.findings ?? {});
      fillTable(
        document.getElementById('dl-admin-agreement'),
        findings.map(([label, a]) =>
          row(
            label,
            fixed(a.fleissKappa),
            a.kappaBand ?? (a.fleissKappa == null ? 'undefined (readers vary or no variation)' : '—'),
            fixed(a.krippendorffAlpha),
            a.alphaBand ?? (a.krippendorffAlpha == null ? 'undefined' : '—'),
            String(a.objects),
            share(a.prevalence),
          ),
        ),
      );
      draw('kappa', () => agreementChart(document.getElementById('dl-chart-kappa'), findings));
      draw('perDay', () => perDayChart(document.getElementById('dl-chart-per-day'), activity.perDay));
      draw('times', () => histogramChart(document.getElementById('dl-chart-times'), activity.secondsPerImage));
      fillMatrix(activity);
    } catch (error) {
      showMessage(describeError(error));
    }
  }

  exportButton.addEventListener('click', async () => {
    if (jobId === null) return;
    exportButton.disabled = true;
    exportProgress.hidden = false;
    result.textContent = 'Exporting: consolidating answers and writing the files…';
    replaceChildren(links, []);
    try {
      const out = await api('POST', `/api/admin/jobs/${encodeURIComponent(jobId)}/export`, {
        sr: document.getElementById('dl-export-sr').checked,
      });
      const sr = out.sr ? ` · SR stored ${out.sr.stored}, skipped ${out.sr.skipped}, failed ${out.sr.failed}` : '';
      result.textContent = `Exported ${out.images} images${sr}. Download:`;
      const names = { manifest: 'Output manifest', csv: 'Labels CSV', coco: 'COCO JSON', chexpert: 'CheXpert CSV' };
      replaceChildren(
        links,
        Object.entries(out.downloads ?? {}).map(([kind, href]) =>
          el('li', {}, el('a', { href, download: '' }, names[kind] ?? kind)),
        ),
      );
      result.dataset.manifestUri = out.manifestUri;
    } catch (error) {
      result.textContent = '';
      showMessage(describeError(error));
    } finally {
      exportButton.disabled = false;
      exportProgress.hidden = true;
    }
  });

  await Promise.all([listJobs(), listManifests(api), listUsers(api, user)]);
  setUpJobForm(api, listJobs);
  setUpUserForm(api, user);
}

async function listManifests(api) {
  const select = document.getElementById('dl-job-manifest');
  const { manifests } = await api('GET', '/api/admin/manifests');
  replaceChildren(
    select,
    manifests.length
      ? manifests.map((m) =>
          el('option', { value: m.key }, m.instances == null ? m.key : `${m.key} (${m.instances} images)`),
        )
      : [el('option', { value: '' }, 'No manifest in the object store')],
  );
}

function setUpJobForm(api, refresh) {
  const form = document.getElementById('dl-new-job');
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const value = (id) => document.getElementById(id).value.trim();
    const body = {
      name: value('dl-job-name'),
      manifestUri: value('dl-job-manifest'),
      readersPerImage: Number(value('dl-job-readers')),
      strategy: value('dl-job-strategy'),
      instructions: value('dl-job-instructions'),
      defaultFindingState: value('dl-job-default-state'),
    };
    const labels = value('dl-job-labels');
    if (labels) body.labels = labels.split(',').map((l) => l.trim()).filter(Boolean);
    const due = value('dl-job-due');
    if (due) body.dueDate = `${due}T23:59:59Z`;
    try {
      const job = await api('POST', '/api/admin/jobs', body);
      showMessage(`Job ${job.name} created with ${job.counts.images} images.`, 'info');
      form.reset();
      await refresh();
    } catch (error) {
      showMessage(describeError(error));
    }
  });
}

async function listUsers(api, me) {
  const { users } = await api('GET', '/api/admin/users');
  // The message comes after the table is redrawn: what it announces is then what the page shows, and
  // nobody types into a row that is about to be replaced.
  const change = async (u, body, done) => {
    try {
      await api('PATCH', `/api/admin/users/${encodeURIComponent(u.id)}`, body);
    } catch (error) {
      showMessage(describeError(error));
      return;
    }
    try {
      await listUsers(api, me);
    } catch (error) {
      showMessage(`${done} The list could not be refreshed: ${describeError(error)}`);
      return;
    }
    showMessage(done, 'info');
  };
  fillTable(
    document.getElementById('dl-admin-users'),
    users.map((u) => {
      const role = el(
        'select',
        { 'aria-label': `Role of ${u.username}` },
        ...['annotator', 'reviewer', 'admin'].map((r) => el('option', { value: r }, r)),
      );
      role.value = u.role;
      role.addEventListener('change', () => change(u, { role: role.value }, `${u.username} is now ${role.value}.`));
      const password = el('input', {
        type: 'password', 'aria-label': `New password for ${u.username}`, autocomplete: 'new-password', minlength: '10',
      });
      const reset = el('button', {
        type: 'button',
        onclick: () => {
          if (password.value.length < 10) {
            showMessage('A new password needs at least 10 characters.');
            return;
          }
          change(u, { password: password.value }, `Password of ${u.username} reset; their sessions ended.`);
        },
      }, `Reset password of ${u.username}`);
      const self = me && me.username === u.username;
      const toggle = el('button', {
        type: 'button',
        disabled: Boolean(self),
        onclick: () => change(u, { active: !u.active }, `${u.username} ${u.active ? 'deactivated' : 'reactivated'}.`),
      }, u.active ? `Deactivate ${u.username}` : `Reactivate ${u.username}`);
      return row(u.username, role, u.active ? 'active' : 'deactivated', el('span', { class: 'dl-actions' }, password, reset, toggle));
    }),
  );
}

function setUpUserForm(api, me) {
  const form = document.getElementById('dl-new-user');
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const value = (id) => document.getElementById(id).value.trim();
    try {
      const created = await api('POST', '/api/admin/users', {
        username: value('dl-user-name'),
        role: value('dl-user-role'),
        password: document.getElementById('dl-user-password').value,
        email: value('dl-user-email'),
      });
      showMessage(`User ${created.username} (${created.role}) created.`, 'info');
      form.reset();
      await listUsers(api, me);
    } catch (error) {
      showMessage(describeError(error));
    }
  });
}
