// My queue: active jobs with my progress, and the images I hold a lease on.
import { el, replaceChildren } from '../viewer/dom.js';
import { fillTable, row } from './ui.js';

export default async function queue({ api }) {
  const [{ jobs }, { assignments }] = await Promise.all([api('GET', '/api/jobs'), api('GET', '/api/queue')]);
  const table = document.getElementById('dl-jobs');
  fillTable(
    table,
    jobs.map((job) =>
      row(
        job.name,
        `${job.counts.complete} / ${job.counts.images} images complete`,
        String(job.counts.mine),
        job.dueDate ?? '—',
        el('a', { href: `/ui/jobs/${encodeURIComponent(job.id)}/label`, 'aria-label': `Label images of ${job.name}` }, 'Start labeling'),
      ),
    ),
  );
  if (!jobs.length) fillTable(table, [row('No active job.')]);
  const byJob = new Map(jobs.map((j) => [j.id, j.name]));
  replaceChildren(
    document.getElementById('dl-leased'),
    assignments.map((a) =>
      el('li', {}, el('a', { href: `/ui/jobs/${a.jobId}/label` }, `${byJob.get(a.jobId) ?? `Job ${a.jobId}`}: image ${a.taskId}`), ` (lease until ${a.leaseExpiresAt})`),
    ),
  );
}
