// Overview: the DAG's members, storage groups with each copy and its queues, and the shadow
// storage of every volume. Read again (at most once a second) when an event arrives. A
// passive copy can be suspended, resumed or made active (switchover) from here, through the
// same endpoints as `shadowcopy dag`, each confirmed, a refusal showing the API's text.
import { get, post, esc, bytes, hex, when, throttle } from './api.js';

/** The buttons of one copy: what makes sense for its role and status. */
function copyActions(c) {
  if (c.role === 'active') return '';
  const data = `data-sg="${esc(c.sg)}" data-node="${esc(c.node)}"`;
  const suspended = /suspend|fail/i.test(c.status);
  return `<button type="button" data-action="${suspended ? 'resume' : 'suspend'}" ${data}>${suspended ? 'Resume' : 'Suspend'}</button>
    <button type="button" data-action="activate" ${data}>Switch over here</button>`;
}

const ACTIONS = {
  suspend: { path: '/v1/copies/suspend', ask: (sg, node) => `Suspend the copy of ${sg} on ${node}? Its log copying and replay stop.`,
    body: (sg, node) => ({ sg, node, reason: 'suspended from the console' }), done: (sg, node) => `The copy of ${sg} on ${node} is suspended.` },
  resume: { path: '/v1/copies/resume', ask: (sg, node) => `Resume the copy of ${sg} on ${node}?`,
    body: (sg, node) => ({ sg, node }), done: (sg, node) => `The copy of ${sg} on ${node} is resumed.` },
  activate: { path: '/v1/copies/activate', ask: (sg, node) => `Switch ${sg} over: make the copy on ${node} the active one?`,
    body: (sg, node) => ({ sg, node }),
    done: (sg, node, r) => `${sg} is active on ${node} (epoch ${r.epoch}, commits paused ${r.pause_ms} ms).` },
};

async function optional(path) {
  try { return { ok: await get(path) }; } catch (e) { return { error: e }; }
}

function dagSection(dag, copies) {
  if (dag.error) {
    return `<h2>DAG</h2><p class="muted" id="dag-none">${esc(dag.error.message)}</p>`;
  }
  const d = dag.ok;
  const members = d.members.map((m) => `<tr data-member="${esc(m.node)}">
      <td>${esc(m.node)}${m.node === d.primary_active_manager ? ' <span class="muted">(primary active manager)</span>' : ''}</td>
      <td class="${m.up ? 'ok' : 'bad'}">${m.up ? 'up' : 'down'}</td>
      <td>${esc(m.replication || '')}</td></tr>`).join('');
  let copyRows = '';
  if (copies.ok) {
    copyRows = `<h2>Copies</h2><table id="copies"><tr><th>Storage group</th><th>Node</th><th>Role</th>
      <th>Status</th><th>Copy queue</th><th>Replay queue</th><th>Replayed</th><th>Last error</th><th></th></tr>
      ${copies.ok.copies.map((c) => `<tr data-copy="${esc(c.sg)}@${esc(c.node)}">
        <td>${esc(c.sg)}</td><td>${esc(c.node)}</td><td>${esc(c.role)}</td>
        <td class="${/healthy|mounted/i.test(c.status) ? 'ok' : /fail|suspend|disconnect/i.test(c.status) ? 'bad' : ''}">${esc(c.status)}</td>
        <td class="num">${c.copy_queue_length}</td><td class="num">${c.replay_queue_length}</td>
        <td class="num">${hex(c.last_replayed_generation)}</td><td>${esc(c.last_error || '')}</td>
        <td>${copyActions(c)}</td></tr>`).join('')}
      </table>
      <table id="groups"><tr><th>Storage group</th><th>Active on</th><th>Epoch</th><th>Mount dial</th><th>Synchronous copies</th></tr>
      ${copies.ok.groups.map((g) => `<tr><td>${esc(g.sg)}</td><td>${esc(g.active)}</td><td class="num">${g.epoch}</td>
        <td>${esc(g.mount_dial)}</td><td>${g.sync_copies} (${esc(g.sync_policy)})</td></tr>`).join('')}</table>`;
  } else if (copies.error) {
    copyRows = `<p class="bad">Copies: ${esc(copies.error.message)}</p>`;
  }
  return `<h2>DAG ${esc(d.dag)} <span class="muted">(cluster database ${d.etcd_reachable ? 'reachable' : 'unreachable'})</span></h2>
    <table id="members"><tr><th>Member</th><th>State</th><th>Replication</th></tr>${members}</table>${copyRows}`;
}

function storeSection(store) {
  if (store.error) return `<p class="bad">${esc(store.error.message)}</p>`;
  const rows = store.ok.storage_groups.map((g) => {
    const log = g.log || {};
    const dbs = g.databases.map((d) => `${esc(d.name)}${d.state ? ` <span class="muted">(${esc(d.state)})</span>` : ''}`).join(', ');
    return `<tr data-sg="${esc(g.name)}">
      <td>${esc(g.name)}</td>
      <td class="${g.mounted ? 'ok' : 'bad'}">${g.mounted ? 'mounted' : 'dismounted'}${g.mount_error ? `: ${esc(g.mount_error)}` : ''}</td>
      <td>${dbs}</td>
      <td class="num">${hex(log.current_generation)}</td><td class="num">${hex(log.checkpoint_generation)}</td>
      <td class="num">${log.log_files ?? '—'}</td>
      <td>${g.backup_in_progress ? `<a href="#/job/${esc(g.backup_in_progress)}">backup in progress</a>` : '—'}</td></tr>`;
  }).join('');
  return `<h2>Storage groups</h2><table id="storage-groups"><tr><th>Name</th><th>State</th><th>Databases</th>
    <th>Log generation</th><th>Checkpoint</th><th>Log files</th><th>Backup</th></tr>${rows}</table>`;
}

function shadowSection(storage, shadows) {
  if (storage.error) return `<p class="bad">${esc(storage.error.message)}</p>`;
  const list = shadows.ok ? shadows.ok.shadows : [];
  const rows = storage.ok.shadow_storage.map((s) => {
    const mine = list.filter((x) => x.volume_label === s.for_label)
      .sort((a, b) => a.created_unix_ms - b.created_unix_ms);
    const oldest = mine[0];
    const pct = s.max_bytes ? ` (${Math.round((100 * s.used_bytes) / s.max_bytes)}%)` : '';
    return `<tr data-volume="${esc(s.for_label)}"><td>${esc(s.for_label)}</td>
      <td class="num">${bytes(s.used_bytes)}${pct}</td><td class="num">${s.max_bytes ? bytes(s.max_bytes) : 'unbounded'}</td>
      <td class="num">${mine.length}</td>
      <td>${oldest ? `${esc(oldest.id.slice(0, 8))} <span class="muted">${when(oldest.created_unix_ms)}</span>` : '—'}</td></tr>`;
  }).join('');
  return `<h2>Shadow storage</h2><table id="shadow-storage"><tr><th>Volume</th><th>Used</th><th>Limit</th>
    <th>Snapshots</th><th>Oldest (deleted next when full)</th></tr>${rows}</table>`;
}

export function show(view) {
  let gone = false;
  // What the last action answered, kept across the redraws the events cause.
  let answer = '';
  view.onclick = async (ev) => {
    const b = ev.target.closest && ev.target.closest('button[data-action]');
    if (!b) return;
    const a = ACTIONS[b.dataset.action];
    const { sg, node } = b.dataset;
    if (!confirm(a.ask(sg, node))) return;
    try {
      const r = await post(a.path, a.body(sg, node));
      answer = `<p class="ok" id="action-result" data-outcome="done">${esc(a.done(sg, node, r))}</p>`;
    } catch (e) {
      answer = `<p class="bad" id="action-result" data-outcome="refused">Refused: ${esc(e.message)}</p>`;
    }
    draw();
  };
  async function draw() {
    const [dag, store, storage, shadows] = await Promise.all([
      optional('/v1/dag'), optional('/v1/store'), optional('/v1/shadowstorage'), optional('/v1/shadows'),
    ]);
    const copies = dag.ok ? await optional('/v1/copies') : {};
    if (gone) return;
    view.innerHTML = `<h1>Overview</h1>${answer}${storeSection(store)}${dagSection(dag, copies)}${shadowSection(storage, shadows)}
      <p class="muted" id="refreshed">Read at ${new Date().toLocaleTimeString()}</p>`;
    view.dataset.page = 'overview';
  }
  draw();
  const again = throttle(draw, 1000);
  // This node's event stream carries this node's events only: the other members' copies
  // change (a resume, a queue draining) without one, so in a DAG the copies are also read
  // again every few seconds.
  const poll = setInterval(() => { if (view.querySelector('#copies')) again(); }, 3000);
  return {
    onEvent: () => again(),
    leave: () => { gone = true; view.onclick = null; clearInterval(poll); },
  };
}
