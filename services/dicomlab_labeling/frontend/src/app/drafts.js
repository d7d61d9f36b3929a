// Drafts of the labeling page: the answer on screen is saved to the server (PUT
// /api/assignments/<a>/draft) a moment after each change, so a reload — in this browser or another —
// puts the work back; the server deletes it when the answer is submitted. "Back to my previous image"
// remembers the assignments this tab submitted (ids only) so a submission can be corrected (a new
// version).

const DEBOUNCE_MS = 800;
const PREVIOUS_KEY = 'dicomlab.previousAssignments';

/** The saved draft of an assignment (its answer), or null. A failed read is treated as no draft. */
export async function loadDraft(api, assignmentId) {
  try {
    const draft = await api('GET', `/api/assignments/${assignmentId}/draft`);
    return draft?.answer ?? null;
  } catch {
    return null;
  }
}

/** Debounced autosave: `schedule(id, answer)` after each change; `flush()` before leaving; `cancel()` on submit. */
export function autosaver(api, { onSaved = () => {}, onError = () => {} } = {}) {
  let timer = 0;
  let pending = null;
  const save = async () => {
    clearTimeout(timer);
    if (!pending) return;
    const { id, answer } = pending;
    pending = null;
    try {
      await api('PUT', `/api/assignments/${id}/draft`, { answer });
      onSaved(id);
    } catch (error) {
      onError(error);
    }
  };
  return {
    schedule(id, answer) {
      pending = { id, answer };
      clearTimeout(timer);
      timer = setTimeout(save, DEBOUNCE_MS);
    },
    flush: save,
    cancel() {
      clearTimeout(timer);
      pending = null;
    },
  };
}

/** Assignment ids this tab submitted, newest last (sessionStorage: survives a reload of the tab). */
export const previous = {
  list() {
    try {
      return JSON.parse(sessionStorage.getItem(PREVIOUS_KEY) || '[]').filter(Number.isInteger);
    } catch {
      return [];
    }
  },
  push(id) {
    const ids = previous.list().filter((x) => x !== id);
    ids.push(id);
    sessionStorage.setItem(PREVIOUS_KEY, JSON.stringify(ids.slice(-50)));
  },
  /** The submitted assignment before `current` (or the latest one when `current` is not in the list). */
  before(current) {
    const ids = previous.list();
    const i = ids.indexOf(current);
    return i < 0 ? ids[ids.length - 1] ?? null : ids[i - 1] ?? null;
  },
};
