// The console's page: hash routes (#/overview, #/jobs, #/job/<id>, #/repository, #/logs), one live event stream
// shared by the pages, each page re-reading what it shows when an event says it changed.
import { follow } from './api.js';
import * as overview from './overview.js';
import * as jobs from './jobs.js';
import * as timeline from './timeline.js';
import * as repository from './repository.js';
import * as logs from './logs.js';

const view = document.getElementById('view');
let current = null;

function route() {
  const hash = location.hash || '#/overview';
  const [, page, arg] = hash.split('/');
  for (const a of document.querySelectorAll('header nav a')) {
    a.classList.toggle('current', a.getAttribute('href') === `#/${page}`);
  }
  if (current && current.leave) current.leave();
  view.innerHTML = '<p class="muted">Loading…</p>';
  if (page === 'jobs') current = jobs.show(view);
  else if (page === 'job' && arg) current = timeline.show(view, decodeURIComponent(arg));
  else if (page === 'repository') current = repository.show(view);
  else if (page === 'logs') current = logs.show(view);
  else current = overview.show(view);
}

const live = document.getElementById('live');
follow(
  (event) => { if (current && current.onEvent) current.onEvent(event); },
  (up) => {
    live.textContent = up ? '● live' : '○ reconnecting…';
    live.className = up ? 'ok' : 'warn';
    live.dataset.live = up ? 'yes' : 'no';
  },
);
window.addEventListener('hashchange', route);
route();
