// The labeling view: one image at a time from POST /api/jobs/<job>/next, keyboard-driven
// (Ctrl+Enter submits and opens the next image, Ctrl+S skips), the following image prefetched,
// the lease kept alive by heartbeats and the proxy token refreshed before it expires.
import { LabelingViewer, SHORTCUTS } from '../viewer/index.js';
import { el, replaceChildren } from '../viewer/dom.js';
import { ApiError, uuid } from './api.js';
import { autosaver, loadDraft, previous } from './drafts.js';
import { describeError, showMessage } from './ui.js';
import { createAssist } from './assist.js';

const TOKEN_MARGIN_MS = 60_000;

export default async function label({ api }) {
  const jobId = document.body.dataset.jobId;
  const job = await api('GET', `/api/jobs/${encodeURIComponent(jobId)}`);
  document.getElementById('dl-job-name').textContent = job.name;
  document.getElementById('dl-instructions-text').textContent = job.instructions || '';
  replaceChildren(
    document.getElementById('dl-shortcuts'),
    [...SHORTCUTS, ['Ctrl+S', 'Skip this image']].flatMap(([k, what]) => [el('dt', {}, k), el('dd', {}, what)]),
  );
  const submitButton = document.getElementById('dl-submit');
  const skipButton = document.getElementById('dl-skip');
  const progress = document.getElementById('dl-progress');
  let current = null; // the assignment on screen
  let pendingSubmissionId = null; // reused when a submit is retried, so the server sees a duplicate
  let busy = false;
  let firstImage = true;
  let heartbeatTimer = 0;
  let tokenTimer = 0;
  const draftStatus = document.getElementById('dl-draft');
  const previousButton = document.getElementById('dl-previous');
  const drafts = autosaver(api, {
    onSaved: (id) => current?.id === id && (draftStatus.textContent = 'Draft saved'),
    onError: (error) => (draftStatus.textContent = `Draft not saved: ${describeError(error)}`),
  });

  const viewer = new LabelingViewer(document.getElementById('dl-viewer'), {
    labels: job.labels,
    help: false, // the page lists the shortcuts, with its own (Ctrl+S)
    hotkeys: job.hotkeys ?? {}, // a job's own finding keys, when it names them
    // Findings start "not looked at" (submitting waits until each is set, or the rest marked absent) or absent.
    defaultFindingState: job.defaultFindingState ?? 'not-looked-at',
    windowPresets: job.windowPresets ?? [], // the job's own windows, after the histogram presets
    notes: true, // a note and a "quality issue" flag go with the answer
    onSubmit: () => submit(),
    // Only the displayed image can be submitted; an image that cannot be loaded is skipped with the reason.
    onState: () => updateButtons(),
    // Autosave: every change (undo/redo too) is saved as the assignment's draft a moment later.
    onChange: (answer) => current && viewer.isReady() && drafts.schedule(current.id, answer),
    onSkipUnloadable: (reason) => skip(`could not load: ${reason}`),
  });
  window.dicomlabViewer = viewer;
  // The viewer takes the window's height below the page's bars, so that the image, the findings and the
  // ROI list are all on screen without scrolling the page (1366×768 too).
  const host = document.getElementById('dl-viewer');
  const fit = () => document.documentElement.style.setProperty('--dl-viewer-top', `${host.getBoundingClientRect().top + window.scrollY}px`);
  fit();
  window.addEventListener('resize', fit);
  new ResizeObserver(fit).observe(document.querySelector('.dl-label-bar') ?? host);
  const assist = createAssist({ api, getAnswer: () => viewer.getAnswer(), validate: () => viewer.validate() });

  function updateButtons() {
    submitButton.disabled = busy || !current || !viewer.isReady();
    skipButton.disabled = busy || !current;
    previousButton.disabled = busy || previous.before(current?.id) === null;
  }

  function stopTimers() {
    clearInterval(heartbeatTimer);
    clearTimeout(tokenTimer);
  }

  function scheduleTokenRefresh(assignment) {
    clearTimeout(tokenTimer);
    const expires = Date.parse(assignment.tokenExpiresAt ?? '');
    if (!Number.isFinite(expires)) return;
    const delay = Math.max(5_000, expires - Date.now() - TOKEN_MARGIN_MS);
    tokenTimer = setTimeout(() => refreshToken(assignment), Math.min(delay, 2 ** 31 - 1));
  }

  async function refreshToken(assignment) {
    try {
      const fresh = await api('POST', `/api/assignments/${assignment.id}/token`);
      assignment.token = fresh.token;
      assignment.tokenExpiresAt = fresh.tokenExpiresAt;
      viewer.setToken(fresh.token, assignment.image.viewerUrl);
      scheduleTokenRefresh(assignment);
    } catch (error) {
      showMessage(`Could not refresh the image token: ${describeError(error)}`);
    }
  }

  function startHeartbeat(assignment) {
    clearInterval(heartbeatTimer);
    const every = Math.max(5, Math.min(60, (assignment.leaseSeconds || 900) / 3)) * 1000;
    heartbeatTimer = setInterval(async () => {
      try {
        const result = await api('POST', `/api/assignments/${assignment.id}/heartbeat`);
        assignment.leaseExpiresAt = result.leaseExpiresAt;
      } catch (error) {
        if (error instanceof ApiError && error.status === 409) {
          showMessage('The lease on this image was lost (it went to another reader). Loading the next image.');
          next();
        }
      }
    }, every);
  }

  async function show(assignment) {
    current = assignment;
    pendingSubmissionId = null;
    document.body.dataset.assignmentId = String(assignment.id);
    assist.show(assignment);
    // The lease and the image token are kept while the image loads, and while the reader retries it.
    startHeartbeat(assignment);
    scheduleTokenRefresh(assignment);
    drafts.cancel();
    const draft = await loadDraft(api, assignment.id);
    draftStatus.textContent = draft ? 'Draft restored' : '';
    try {
      await viewer.load({
        url: assignment.image.viewerUrl,
        token: assignment.token,
        sopInstanceUid: assignment.image.sopInstanceUid,
        labels: assignment.labels,
        previousAnswer: draft ?? assignment.mySubmission?.answer ?? null,
        patient: assignment.patient ?? null, // present only when the job allows identifiers
      });
    } catch {
      return; // the viewer shows what failed, with Retry and "Skip: could not load"; submitting stays blocked
    }
    if (firstImage) {
      firstImage = false;
      const seconds = performance.now() / 1000; // since navigation start
      api('POST', '/api/ui-metrics', { event: 'time_to_first_image', seconds: Math.round(seconds * 1000) / 1000 }).catch(
        () => null,
      );
    }
  }

  async function next() {
    stopTimers();
    const result = await api('POST', `/api/jobs/${encodeURIComponent(jobId)}/next`, { lookahead: 1 });
    if (!result) {
      current = null;
      document.body.dataset.assignmentId = '';
      assist.show(null);
      viewer.setStatus('done', 'Nothing left to label in this job. Thank you!');
      progress.textContent = '';
      submitButton.disabled = skipButton.disabled = true;
      return;
    }
    await show(result.assignment);
    for (const upcoming of result.upcoming ?? []) viewer.prefetch({ url: upcoming.image.viewerUrl, token: upcoming.token });
    const fresh = await api('GET', `/api/jobs/${encodeURIComponent(jobId)}`).catch(() => null);
    if (fresh) progress.textContent = `${fresh.counts.mine} labelled by you · ${fresh.counts.complete}/${fresh.counts.images} images complete`;
  }

  async function guarded(action) {
    if (busy) return;
    busy = true;
    document.body.dataset.busy = 'true'; // keys pressed meanwhile are ignored (no double submit)
    submitButton.disabled = skipButton.disabled = true;
    try {
      await action();
    } catch (error) {
      showMessage(describeError(error));
    } finally {
      busy = false;
      document.body.dataset.busy = 'false';
      updateButtons();
    }
  }

  function submit() {
    return guarded(async () => {
      if (!current || !viewer.isReady() || viewer.validate().length) return;
      pendingSubmissionId ??= uuid();
      try {
        await api('POST', `/api/assignments/${current.id}/submit`, {
          clientSubmissionId: pendingSubmissionId,
          answer: viewer.getAnswer(),
        });
      } catch (error) {
        if (!(error instanceof ApiError && error.status === 409)) throw error;
        showMessage(`${error.message} Loading the next image.`);
      }
      drafts.cancel(); // the server deleted the draft with the stored submission
      previous.push(current.id);
      showMessage('');
      await next();
    });
  }

  function skip(givenReason) {
    return guarded(async () => {
      if (!current) return;
      const select = document.getElementById('dl-skip-reason');
      const reason = givenReason || select.value;
      if (!reason) {
        showMessage('Choose why the image is skipped (Skip reason), then skip.');
        select.focus();
        return;
      }
      await api('POST', `/api/assignments/${current.id}/skip`, { reason, abandon: false });
      await next();
    });
  }

  // Back to an image submitted before: its latest answer is shown; submitting stores a new version.
  function back() {
    return guarded(async () => {
      const id = previous.before(current?.id);
      if (id === null) return;
      await drafts.flush();
      stopTimers();
      await show(await api('GET', `/api/assignments/${id}`));
    });
  }

  submitButton.addEventListener('click', () => viewer.requestSubmit());
  previousButton.addEventListener('click', () => back());
  skipButton.addEventListener('click', () => skip());
  document.addEventListener('keydown', (event) => {
    if (event.ctrlKey && !event.altKey && event.key.toLowerCase() === 's') {
      event.preventDefault();
      skip();
    }
  });
  window.addEventListener('pagehide', () => {
    stopTimers();
    drafts.flush();
  });
  await guarded(next);
}
