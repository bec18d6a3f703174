// The node's typed API (/v1/...), called with the session cookie the login opened.
// There is no API of the console's own: what the CLI can ask, the page asks the same way.

/** An error the API answered: its stable code and its message, shown as they are. */
export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

async function call(method, path, body) {
  const init = { method, credentials: 'same-origin', headers: { Accept: 'application/json' } };
  if (body !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  const r = await fetch(path, init);
  if (r.status === 401) {
    // The session expired (or the node restarted): log in again.
    location.href = '/ui/login';
    throw new ApiError(401, 'unauthorized', 'the session has ended');
  }
  const data = await r.json().catch(() => null);
  if (!r.ok) {
    const e = (data && data.error) || {};
    throw new ApiError(r.status, e.code || 'error', e.message || `${method} ${path}: ${r.status}`);
  }
  return data;
}

export const get = (path) => call('GET', path);
export const post = (path, body) => call('POST', path, body);

/** A query string from an object (undefined values left out). */
export function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== '') q.set(k, v);
  const s = q.toString();
  return s ? `?${s}` : '';
}

/** Follows the event trail live (server-sent events); `onEvent` gets each api Event. */
export function follow(onEvent, onState) {
  const es = new EventSource('/v1/events/stream');
  es.onopen = () => onState(true);
  es.onerror = () => onState(false);
  es.onmessage = (m) => {
    try { onEvent(JSON.parse(m.data)); } catch (e) { console.warn('bad event', e); }
  };
  return es;
}

/** Runs `f` at most once per `ms`, the last call winning (many events, one refresh). */
export function throttle(f, ms) {
  let timer = null;
  return () => {
    if (timer) return;
    timer = setTimeout(() => { timer = null; f(); }, ms);
  };
}

/** Escapes text for HTML. */
export function esc(s) {
  return String(s ?? '').replace(/[&<>"']/g, (c) =>
    ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]);
}

export function bytes(n) {
  if (n === null || n === undefined) return '—';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
}

export function duration(ms) {
  if (ms === null || ms === undefined) return '—';
  return ms < 1000 ? `${Math.round(ms)} ms` : `${(ms / 1000).toFixed(2)} s`;
}

export function when(ms) {
  return ms ? new Date(ms).toLocaleString() : '—';
}

export const hex = (g) => (g === null || g === undefined ? '—' : `0x${g.toString(16).toUpperCase()}`);
