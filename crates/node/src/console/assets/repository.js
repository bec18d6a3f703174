// Repository: the backup sets of a repository on the node (type, the copy they came from,
// the chain each belongs to), its sizes and deduplication, each set's verify state, and a
// verify action. The repository is a path on the node: the one last used on this page or in
// a backup from the Jobs page, or a schedule's.
import { get, post, esc, bytes, duration, when, query } from './api.js';

const REMEMBERED = 'shadowcopy.repo';

/** Remembers the repository the page shows (the Jobs page calls it after a backup). */
export function remember(repo) {
  try { localStorage.setItem(REMEMBERED, repo); } catch (_) { /* private mode: not kept */ }
}

function remembered() {
  try { return localStorage.getItem(REMEMBERED) || ''; } catch (_) { return ''; }
}

/** The chain of each set: the full it builds on (a full, or a copy, is its own chain). */
function chainOf(set) {
  return set.base_set || set.id;
}

const short = (id) => esc(String(id).slice(0, 8));

function figures(stats) {
  if (!stats) return '';
  const dedup = stats.raw_bytes ? (stats.set_bytes / stats.raw_bytes).toFixed(2) : '—';
  const comp = stats.stored_bytes ? (stats.raw_bytes / stats.stored_bytes).toFixed(2) : '—';
  return `<table id="repo-figures"><tr><th>Sets</th><th>Bytes in the sets</th><th>Distinct chunks</th>
    <th>Chunk bytes</th><th>Stored</th><th>Deduplication</th><th>Compression</th></tr>
    <tr><td class="num">${stats.sets}</td><td class="num">${bytes(stats.set_bytes)}</td>
    <td class="num">${stats.chunks}</td><td class="num">${bytes(stats.raw_bytes)}</td>
    <td class="num">${bytes(stats.stored_bytes)}</td>
    <td class="num" id="dedup-ratio">${dedup}×</td><td class="num">${comp}×</td></tr></table>`;
}

function verifyCell(v) {
  if (!v) return '<td data-verify="never" class="muted">not verified here</td>';
  if (v.verified) return `<td data-verify="ok" class="ok">verified ${when(v.time_ms)}</td>`;
  return `<td data-verify="failed" class="bad">failed ${when(v.time_ms)}: ${esc(v.error || '')}</td>`;
}

function setTable(list) {
  if (!list.sets.length) return '<p class="muted" id="no-sets">The repository holds no set.</p>';
  const verified = new Map((list.verifications || []).map((v) => [v.set, v]));
  // Newest first, as the chains grow.
  const rows = [...list.sets].reverse().map((s) => {
    const logs = s.log_range ? `${s.log_range.low.toString(16).toUpperCase()}–${s.log_range.high.toString(16).toUpperCase()}` : '—';
    const chain = chainOf(s);
    return `<tr data-set="${esc(s.id)}">
      <td title="${esc(s.id)}">${short(s.id)}</td><td data-type="${esc(s.type)}">${esc(s.type)}</td>
      <td>${esc(s.storage_group)}</td><td>${esc(s.node)}</td>
      <td data-chain="${esc(chain)}">${chain === s.id ? 'its own' : `on full ${short(chain)}`}</td>
      <td>${when(s.created_unix_ms)}</td><td class="num">${s.files}</td><td class="num">${bytes(s.bytes)}</td>
      <td class="num">${logs}</td>
      ${verifyCell(verified.get(s.id))}
      <td>${s.job ? `<a href="#/job/${esc(s.job)}">job</a>` : '—'}
        <button type="button" class="verify" data-verify-set="${esc(s.id)}">Verify</button></td></tr>`;
  }).join('');
  return `<table id="sets"><tr><th>Set</th><th>Type</th><th>Storage group</th><th>Copy (node)</th>
    <th>Chain</th><th>Created</th><th>Files</th><th>Bytes</th><th>Log generations</th><th>Verify</th><th></th></tr>
    ${rows}</table>`;
}

export function show(view) {
  let gone = false;
  view.innerHTML = `<h1>Repository</h1>
    <form class="action" id="repo-form"><label>Repository (a path on the node, or s3://…)
      <input name="repo" id="repo-path" required size="44" list="repo-known" value="${esc(remembered())}"></label>
      <datalist id="repo-known"></datalist>
      <button type="submit" id="repo-show">Show</button></form>
    <div id="action-result"></div><div id="repo"></div>`;
  view.dataset.page = 'repository';
  const input = view.querySelector('#repo-path');
  const out = view.querySelector('#repo');
  const result = view.querySelector('#action-result');

  // The schedules' repositories, offered in the field.
  get('/v1/schedules').then((l) => {
    const repos = [...new Set(l.schedules.map((s) => s.repo))];
    view.querySelector('#repo-known').innerHTML = repos.map((r) => `<option value="${esc(r)}">`).join('');
    if (!input.value && repos.length) { input.value = repos[0]; draw(); }
  }).catch(() => {});

  async function draw() {
    const repo = input.value.trim();
    if (!repo) return;
    try {
      const list = await get(`/v1/backup/sets${query({ repo })}`);
      if (gone) return;
      remember(repo);
      out.innerHTML = `<h2>Sizes and deduplication${list.encrypted ? ' <span class="muted">(encrypted)</span>' : ''}</h2>
        ${figures(list.stats)}<h2>Backup sets</h2>${setTable(list)}`;
      out.dataset.repo = repo;
    } catch (e) {
      if (!gone) out.innerHTML = `<p class="bad" id="repo-error">${esc(e.message)}</p>`;
    }
  }

  view.querySelector('#repo-form').addEventListener('submit', (ev) => { ev.preventDefault(); draw(); });
  out.addEventListener('click', async (ev) => {
    const set = ev.target.dataset && ev.target.dataset.verifySet;
    if (!set) return;
    const repo = out.dataset.repo;
    if (!confirm(`Verify set ${set.slice(0, 8)} of ${repo}? It reads every chunk of the set.`)) return;
    result.className = 'muted';
    result.textContent = 'Verifying…';
    try {
      const r = await post('/v1/backup/verify', { repo, set });
      result.className = 'ok';
      result.textContent = `Set ${r.set.id.slice(0, 8)} verified: ${r.report.files} files, ${bytes(r.report.bytes)}, `
        + `${r.report.pages} pages and ${r.report.records} log records checked in ${duration(r.elapsed_ms)}.`;
    } catch (e) {
      result.className = 'bad';
      result.textContent = `Refused: ${e.message}`;
    }
    draw();
  });
  draw();
  return { leave: () => { gone = true; } };
}
