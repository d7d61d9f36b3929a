// Sign-in page: POST /api/auth/login, then go to ?next= (only our own /ui/ pages) or the queue.
import { describeError, showMessage } from './ui.js';

export default async function login({ api, setCsrf }) {
  const form = document.getElementById('dl-login');
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    showMessage('');
    const data = new FormData(form);
    try {
      const result = await api('POST', '/api/auth/login', {
        username: String(data.get('username') ?? ''),
        password: String(data.get('password') ?? ''),
      });
      setCsrf(result.csrfToken);
      const next = new URLSearchParams(location.search).get('next') ?? '';
      location.assign(/^\/ui\/[A-Za-z0-9/_?=&.-]*$/.test(next) && !next.startsWith('//') ? next : '/ui/queue');
    } catch (error) {
      showMessage(error.status === 401 ? 'Wrong user name or password.' : describeError(error));
    }
  });
  document.getElementById('dl-username').focus();
}
