// Admin view: all jobs; per job progress, per-reader throughput and time per image, agreement per
// finding, and the export (Ground Truth output manifest + CSV, optionally DICOM SR).
import { el } from '../viewer/dom.js';
import { describeError, fillTable, row, showMessage } from './ui.js';

const fixed = (v, digits = 2) => (typeof v === 'number' && Number.isFinite(v) ? v.toFixed(digits) : '—');

export default async function admin({ api }) {
  const section = document.getElementById('dl-admin-job');
  const title = document.getElementById('dl-admin-job-title');
  const result = document.getElementById('dl-export-result');
  let jobId = null;

  async function listJobs() {
    const { jobs } = await api('GET', '/api/admin/jobs');
    fillTable(
      document.getElementById('dl-admin-jobs'),
      jobs.map((j) =>
        row(
          j.name,
          j.status,
          String(j.counts.images),
          String(j.counts.complete),
          `${j.counts.answers} / ${j.counts.needed}`,
          el('button', { type: 'button', 'aria-label': `Details of ${j.name}`, onclick: () => openJob(j) }, 'Details'),
        ),
      ),
    );
  }

  async function openJob(job) {
    try {
      jobId = job.id;
      section.hidden = false;
      title.textContent = `Job ${job.name}`;
      result.textContent = '';
      const base = `/api/admin/jobs/${encodeURIComponent(job.id)}`;
      const [progress, { readers }, agreement] = await Promise.all([
        api('GET', `${base}/progress`),
        api('GET', `${base}/readers`),
        api('GET', `${base}/agreement`),
      ]);
      const kv = document.getElementById('dl-admin-progress');
      kv.replaceChildren(...Object.entries(progress).flatMap(([k, v]) => [el('dt', {}, k), el('dd', {}, String(v))]));
      fillTable(
        document.getElementById('dl-admin-readers'),
        readers.map((r) =>
          row(r.username, String(r.submissions), String(r.skips), String(r.expired), fixed(r.meanSecondsPerImage, 1),
            fixed(r.medianSecondsPerImage, 1), fixed(r.imagesPerHour, 1), fixed(r.agreementWithConsensus)),
        ),
      );
      fillTable(
        document.getElementById('dl-admin-agreement'),
        Object.entries(agreement.findings ?? {}).map(([label, a]) =>
          row(label, fixed(a.kappa), fixed(typeof a.percentAgreement === 'number' ? a.percentAgreement * (a.percentAgreement <= 1 ? 100 : 1) : null, 0), fixed(a.prevalence)),
        ),
      );
    } catch (error) {
      showMessage(describeError(error));
    }
  }

  document.getElementById('dl-export').addEventListener('click', async () => {
    if (jobId === null) return;
    result.textContent = 'Exporting…';
    try {
      const out = await api('POST', `/api/admin/jobs/${encodeURIComponent(jobId)}/export`, {
        sr: document.getElementById('dl-export-sr').checked,
      });
      const sr = out.sr ? ` · SR stored ${out.sr.stored}, skipped ${out.sr.skipped}, failed ${out.sr.failed}` : '';
      result.textContent = `Exported ${out.images} images: ${out.manifestUri} and ${out.csvUri}${sr}`;
      result.dataset.manifestUri = out.manifestUri;
    } catch (error) {
      result.textContent = '';
      showMessage(describeError(error));
    }
  });
  await listJobs();
}
