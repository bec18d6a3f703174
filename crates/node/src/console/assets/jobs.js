// Jobs: every backup and restore of the event trail (the events carry their job's id), with
// its state, type, copy, duration and bytes; and the form that runs a backup through the API.
import { get, post, esc, bytes, duration, when, query, throttle } from './api.js';
import { remember } from './repository.js';

const TYPE_BY_ID = { 2005: 'full', 2008: 'incremental', 2009: 'copy', 2010: 'differential' };
const ENDS = new Set([8011, 2006, 2007, 8205, 2033, 2037]);

/** One job from its events (oldest first). */
export function summarize(id, events) {
  const job = { id, events, kind: 'backup', type: null, sg: null, node: null, copy: null,
    start: events[0].time_ms, end: events[events.length - 1].time_ms, bytes: null,
    state: 'running', failure: null };
  for (const e of events) {
    const f = e.fields || {};
    if (e.id === 8204 || e.id === 9625 || e.id === 8018) job.kind = 'restore';
    if (!job.type && TYPE_BY_ID[e.id]) job.type = TYPE_BY_ID[e.id];
    if (!job.type && f.backup_type && e.source !== 'requester') job.type = String(f.backup_type).toLowerCase();
    job.sg = job.sg || f.storage_group || f.sg || null;
    if (e.source === 'coordinator' && e.id === 8000) job.node = e.node;
    if (e.id === 960) job.copy = `passive copy on ${e.node}`;
    if ((e.id === 8203 || e.id === 8205) && f.bytes !== undefined) job.bytes = Number(f.bytes);
    if (job.bytes === null && e.id === 8200 && f.bytes !== undefined) job.bytes = Number(f.bytes);
    if (ENDS.has(e.id) && job.state === 'running') job.state = 'succeeded';
    if (e.level === 'error' && !job.failure) job.failure = e;
  }
  job.node = job.node || events[0].node;
  job.copy = job.copy || (job.kind === 'backup' ? `active copy on ${job.node}` : job.node);
  if (job.failure) job.state = 'failed';
  return job;
}

/** The jobs of a trail, newest first. */
export function jobsOf(events) {
  const by = new Map();
  for (const e of events) {
    if (!e.job) continue;
    if (!by.has(e.job)) by.set(e.job, []);
    by.get(e.job).push(e);
  }
  return [...by.entries()].map(([id, ev]) => summarize(id, ev)).sort((a, b) => b.start - a.start);
}

const STATE_CLASS = { succeeded: 'ok', failed: 'bad', running: 'warn' };

function table(jobs) {
  if (!jobs.length) return '<p class="muted" id="no-jobs">No job in the event trail yet.</p>';
  return `<table id="jobs"><tr><th>Job</th><th>Kind</th><th>Type</th><th>Storage group</th><th>Copy</th>
    <th>State</th><th>Started</th><th>Duration</th><th>Bytes</th></tr>
    ${jobs.map((j) => `<tr data-job="${esc(j.id)}" class="${j.state === 'failed' ? 'failed' : ''}">
      <td><a href="#/job/${esc(j.id)}">${esc(j.id.slice(0, 8))}</a></td><td>${j.kind}</td><td>${esc(j.type || '—')}</td>
      <td>${esc(j.sg || '—')}</td><td>${esc(j.copy)}</td>
      <td class="${STATE_CLASS[j.state]}" data-state="${j.state}">${j.state}${j.failure ? `: ${esc(j.failure.message)}` : ''}</td>
      <td>${when(j.start)}</td><td class="num">${duration(j.end - j.start)}</td><td class="num">${bytes(j.bytes)}</td></tr>`).join('')}
    </table>`;
}

const FORM = `<form class="action" id="backup-form">
  <label>Type<select name="type" id="backup-type">
    <option>full</option><option>incremental</option><option>differential</option><option>copy</option></select></label>
  <label>Storage group<input name="sg" id="backup-sg" required size="8"></label>
  <label>Repository (a path on the node, or s3://…)<input name="repo" id="backup-repo" required size="34"></label>
  <label>Copy (a DAG member; empty: the active)<input name="from" id="backup-from" size="10"></label>
  <button type="submit" id="backup-run">Run backup</button></form><div id="action-result"></div>`;

export function show(view) {
  let gone = false;
  view.innerHTML = `<h1>Jobs</h1><h2>Run a backup</h2>${FORM}<h2>Backups and restores</h2><div id="job-list"></div>`;
  view.dataset.page = 'jobs';
  const list = view.querySelector('#job-list');
  const result = view.querySelector('#action-result');
  async function draw() {
    try {
      const trail = await get(`/v1/events${query({ limit: 20000 })}`);
      if (!gone) list.innerHTML = table(jobsOf(trail.events));
    } catch (e) {
      if (!gone) list.innerHTML = `<p class="bad">${esc(e.message)}</p>`;
    }
  }
  view.querySelector('#backup-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const f = new FormData(ev.target);
    const req = { type: f.get('type'), sg: f.get('sg').trim(), repo: f.get('repo').trim() };
    if (f.get('from').trim()) req.from = f.get('from').trim();
    if (!confirm(`Run a ${req.type} backup of ${req.sg} into ${req.repo}?`)) return;
    result.className = 'muted';
    result.textContent = 'Backup running…';
    try {
      const report = await post('/v1/backup', req);
      remember(req.repo);
      result.className = 'ok';
      result.innerHTML = `Backup done: set ${esc(report.set.id.slice(0, 8))}, ${bytes(report.bytes)} read in
        ${duration(report.elapsed_ms)} — <a href="#/job/${esc(report.job)}" id="backup-job">its timeline</a>`;
    } catch (e) {
      result.className = 'bad';
      result.id = 'action-result';
      result.textContent = `Refused: ${e.message}`;
    }
    draw();
  });
  draw();
  const again = throttle(draw, 1000);
  return { onEvent: (e) => { if (e.job) again(); }, leave: () => { gone = true; } };
}
