// The JSON API client of the self-hosted pages (services/dicomlab_labeling/API.md): session cookie
// + the X-CSRF-Token header on every non-GET request.

export class ApiError extends Error {
  constructor(status, body) {
    super(body?.description || `HTTP ${status}`);
    this.status = status;
    this.body = body;
  }
}

let csrfToken = '';

export function setCsrf(token) {
  csrfToken = token || '';
}

/** Call the API; resolves to the parsed JSON (null for 204); rejects with ApiError. */
export async function api(method, path, body) {
  const headers = { Accept: 'application/json' };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  if (method !== 'GET' && csrfToken) headers['X-CSRF-Token'] = csrfToken;
  const response = await fetch(path, {
    method,
    headers,
    credentials: 'same-origin',
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (response.status === 204) return null;
  const text = await response.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = { description: text.slice(0, 200) };
  }
  if (!response.ok) throw new ApiError(response.status, data);
  return data;
}

/** A random UUID (crypto.randomUUID needs a secure context; fall back to getRandomValues). */
export function uuid() {
  if (globalThis.crypto?.randomUUID) return crypto.randomUUID();
  const b = crypto.getRandomValues(new Uint8Array(16));
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const h = [...b].map((x) => x.toString(16).padStart(2, '0')).join('');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}
