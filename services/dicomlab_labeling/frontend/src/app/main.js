// Entry of the self-hosted pages: <body data-page="login|queue|label|review|admin">.
import { api, ApiError, setCsrf } from './api.js';
import { describeError, showMessage } from './ui.js';

import admin from './admin.js';
import label from './label.js';
import login from './login.js';
import queue from './queue.js';
import review from './review.js';

// Static imports on purpose: every chunk a page runs is then listed in the build manifest and
// loaded with an SRI hash (modulepreload), and the viewer chunk is shared and cached across pages.
const PAGES = { login, queue, label, review, admin };
const RANK = { annotator: 0, reviewer: 1, admin: 2 };
const NEEDS = { review: 'reviewer', admin: 'admin' }; // pages above the annotator's: others go to their queue

/** The signed-in user (redirects to the login page when there is none). */
async function session() {
  try {
    const me = await api('GET', '/api/auth/me');
    setCsrf(me.csrfToken);
    return me.user;
  } catch (error) {
    if (error instanceof ApiError && error.status === 401) {
      const next = encodeURIComponent(location.pathname + location.search);
      location.assign(`/ui/login?next=${next}`);
      return new Promise(() => {});
    }
    throw error;
  }
}

function decorate(user) {
  const who = document.getElementById('dl-user');
  if (who) who.textContent = `${user.username} (${user.role})`;
  for (const link of document.querySelectorAll('[data-role]')) {
    link.hidden = RANK[user.role] < RANK[link.dataset.role];
  }
  document.getElementById('dl-logout')?.addEventListener('click', async () => {
    await api('POST', '/api/auth/logout').catch(() => null);
    location.assign('/ui/login');
  });
}

async function main() {
  const page = document.body.dataset.page;
  const run = PAGES[page];
  if (!run) return;
  try {
    if (page === 'login') {
      await run({ api, setCsrf });
      return;
    }
    const user = await session();
    if (NEEDS[page] && RANK[user.role] < RANK[NEEDS[page]]) {
      location.replace('/ui/queue');
      return;
    }
    decorate(user);
    await run({ api, user });
  } catch (error) {
    showMessage(describeError(error));
  }
}

main();
