// Logs: per storage group and copy, the current log generation, the checkpoint, the last
// truncation and what limited the last attempt (its 225: "why were the logs not
// truncated?"). Read again (at most once a second) when an engine or replication event
// arrives.
import { get, esc, hex, when, throttle } from './api.js';

function attempt(a) {
  if (!a) return '<td class="muted" data-attempt="none">no truncation attempted yet</td>';
  const what = a.truncated
    ? `deleted ${esc(a.first)} to ${esc(a.last)}`
    : 'nothing deleted';
  const limit = a.limit ? `<div class="${a.truncated ? 'muted' : 'warn'}" data-limit>${a.truncated ? 'kept: ' : 'why: '}${esc(a.limit)}</div>` : '';
  const job = a.job ? ` <a href="#/job/${esc(a.job)}">job</a>` : '';
  return `<td data-attempt="${a.event_id}" title="${esc(a.message)}">
    <span class="mark-id">${a.event_id}</span> ${what} <span class="muted">${when(a.time_ms)}</span>${job}${limit}</td>`;
}

function lastTruncated(t) {
  const a = t && t.last_truncated;
  if (!a) return '<td class="muted" data-last-truncated="none">never</td>';
  return `<td data-last-truncated="${esc(a.last)}">${esc(a.first)} to ${esc(a.last)} <span class="muted">${when(a.time_ms)}</span></td>`;
}

function rows(g) {
  const out = [];
  if (g.log || g.truncation) {
    const log = g.log || {};
    out.push(`<tr data-logs="${esc(g.name)}/active">
      <td>${esc(g.name)}</td><td>this node's ${g.mounted ? 'mounted' : 'dismounted'} copy</td>
      <td class="num" data-generation>${hex(log.current_generation)}</td>
      <td class="num" data-checkpoint>${hex(log.checkpoint_generation)}</td>
      <td class="num">${log.log_files ?? '—'}${log.lowest_generation !== null && log.lowest_generation !== undefined
        ? ` <span class="muted">(${hex(log.lowest_generation)}–${hex(log.highest_generation)})</span>` : ''}</td>
      ${lastTruncated(g.truncation)}${attempt(g.truncation && g.truncation.last_attempt)}</tr>`);
  }
  if (g.copy_databases && g.copy_databases.length || g.copy_truncation) {
    out.push(`<tr data-logs="${esc(g.name)}/copy">
      <td>${esc(g.name)}</td><td>this node's passive copy</td><td class="num">—</td><td class="num">—</td><td>—</td>
      ${lastTruncated(g.copy_truncation)}${attempt(g.copy_truncation && g.copy_truncation.last_attempt)}</tr>`);
  }
  return out.join('');
}

/** The copies on the DAG's other members: their queues and replayed generation. */
function copies(list) {
  if (!list) return '';
  return `<h2>Copies in the DAG</h2><table id="log-copies"><tr><th>Storage group</th><th>Node</th><th>Role</th>
    <th>Status</th><th>Copy queue</th><th>Replay queue</th><th>Last replayed</th></tr>
    ${list.copies.map((c) => `<tr><td>${esc(c.sg)}</td><td>${esc(c.node)}</td><td>${esc(c.role)}</td>
      <td>${esc(c.status)}</td><td class="num">${c.copy_queue_length}</td><td class="num">${c.replay_queue_length}</td>
      <td class="num">${hex(c.last_replayed_generation)}</td></tr>`).join('')}</table>
    <p class="muted">A full or incremental backup deletes only the generations every copy has replayed.</p>`;
}

export function show(view) {
  let gone = false;
  async function draw() {
    try {
      const store = await get('/v1/store');
      const dag = await get('/v1/copies').catch(() => null);
      if (gone) return;
      view.innerHTML = `<h1>Logs</h1>
        <table id="logs"><tr><th>Storage group</th><th>Copy</th><th>Log generation</th><th>Checkpoint</th>
          <th>Log files</th><th>Last truncation</th><th>Last attempt (224 / 225)</th></tr>
          ${store.storage_groups.map(rows).join('')}</table>${copies(dag)}`;
      view.dataset.page = 'logs';
    } catch (e) {
      if (!gone) view.innerHTML = `<h1>Logs</h1><p class="bad">${esc(e.message)}</p>`;
    }
  }
  draw();
  const again = throttle(draw, 1000);
  return {
    onEvent: (e) => { if (e.source === 'engine' || e.source === 'replication') again(); },
    leave: () => { gone = true; },
  };
}
