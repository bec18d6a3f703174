// One job's timeline: its events from every node as swimlanes (one per node and component),
// each mark labelled with its event ID, the freeze and the hold drawn as spans, the time
// between steps listed below, and a failed step in red. Drawn again as events arrive.
import { get, esc, duration, query, throttle } from './api.js';
import { summarize } from './jobs.js';

const COMPONENT = { requester: 'requester', coordinator: 'coordinator', store: 'store writer',
  replication: 'replication writer', engine: 'engine', provider: 'provider' };
const ORDER = ['requester', 'coordinator', 'store', 'replication', 'engine', 'provider'];

// Spans: [from id, to id, lane source, class, label].
const SPANS = [
  [2001, 2003, 'engine', 'freeze', 'freeze (2001→2003)'],
  [2025, 2029, 'replication', 'freeze', 'copying suspended (2025→2029)'],
  [8005, 8006, 'coordinator', 'freeze', 'freeze issued → thaw (8005→8006)'],
];

function lanesOf(events) {
  const lanes = new Map();
  for (const e of events) {
    const key = `${e.node}/${e.source}`;
    if (!lanes.has(key)) lanes.set(key, { node: e.node, source: e.source, events: [] });
    lanes.get(key).events.push(e);
  }
  return [...lanes.values()].sort((a, b) =>
    a.node.localeCompare(b.node) || ORDER.indexOf(a.source) - ORDER.indexOf(b.source));
}

function draw(view, id, trail) {
  const events = trail.events;
  if (!events.length) {
    view.innerHTML = `<h1>Job ${esc(id)}</h1><p class="muted" id="no-events">No event of this job yet.</p>`;
    return;
  }
  const job = summarize(id, events);
  const t0 = events[0].time_ms;
  const span = Math.max(events[events.length - 1].time_ms - t0, 1);
  const x = (t) => `${(100 * (t - t0)) / span}%`;
  const lanes = lanesOf(events).map((lane) => {
    const spans = SPANS.filter(([, , src]) => src === lane.source).map(([a, b, , cls, label]) => {
      const from = lane.events.find((e) => e.id === a);
      const to = lane.events.find((e) => e.id === b && (!from || e.time_ms >= from.time_ms));
      if (!from) return '';
      const end = to ? to.time_ms : events[events.length - 1].time_ms;
      return `<div class="span ${cls}" data-span="${a}-${b}" style="left:${x(from.time_ms)};width:calc(${x(end)} - ${x(from.time_ms)} + 2px)"
        title="${esc(label)}: ${duration(end - from.time_ms)}">${esc(label)} ${duration(end - from.time_ms)}</div>`;
    }).join('');
    // The hold: the coordinator's commit says how long writes were held, ending at the commit.
    const hold = lane.events.filter((e) => e.id === 8007 && e.fields && e.fields.hold_ms !== undefined)
      .map((e) => {
        const ms = Number(e.fields.hold_ms);
        return `<div class="span hold" data-span="hold" style="bottom:2px;left:${x(e.time_ms - ms)};width:calc(${x(e.time_ms)} - ${x(e.time_ms - ms)} + 2px)"
          title="writes held ${ms} ms">hold ${duration(ms)}</div>`;
      }).join('');
    const marks = lane.events.map((e, i) => `<div class="mark ${e.level}" data-event-id="${e.id}"
        style="left:${x(e.time_ms)};top:${4 + (i % 3) * 15}px" title="${esc(`${e.id} ${e.message}`)}">${e.id}</div>`).join('');
    return `<div class="lane" data-lane="${esc(lane.node)}/${esc(lane.source)}">
      <div class="lane-name"><strong>${esc(lane.node)}</strong><br>${esc(COMPONENT[lane.source] || lane.source)}</div>
      <div class="lane-body">${spans}${hold}${marks}</div></div>`;
  }).join('');
  let prev = t0;
  const steps = events.map((e) => {
    const row = `<tr class="${e.level === 'error' ? 'failed' : ''}" data-step="${e.id}">
      <td class="num">+${duration(e.time_ms - t0)}</td><td class="num">${duration(e.time_ms - prev)}</td>
      <td>${esc(e.node)}</td><td>${esc(COMPONENT[e.source] || e.source)}</td><td class="num">${e.id}</td>
      <td class="${e.level === 'error' ? 'error' : e.level === 'warning' ? 'warn' : ''}">${esc(e.message)}</td></tr>`;
    prev = e.time_ms;
    return row;
  }).join('');
  const failure = job.failure
    ? `<div class="failure" id="failure">Failed at event ${job.failure.id} (${esc(job.failure.node)}, ${esc(COMPONENT[job.failure.source] || job.failure.source)}): ${esc(job.failure.message)}</div>`
    : '';
  const missing = trail.unreachable && trail.unreachable.length
    ? `<p class="warn">Events missing from: ${trail.unreachable.map(esc).join('; ')}</p>` : '';
  view.innerHTML = `<h1>Job <span id="job-id">${esc(id)}</span></h1>
    <p>${job.kind} ${esc(job.type || '')} of ${esc(job.sg || '—')}, ${esc(job.copy)} —
      <span class="${job.state === 'failed' ? 'bad' : job.state === 'succeeded' ? 'ok' : 'warn'}" id="job-state">${job.state}</span>,
      ${duration(job.end - job.start)}, ${events.length} events</p>
    ${failure}${missing}
    <div class="timeline" id="timeline">${lanes}</div>
    <div class="axis"><span>0</span><span>${duration(span / 2)}</span><span>${duration(span)}</span></div>
    <h2>Steps</h2><table id="steps"><tr><th>At</th><th>After the previous</th><th>Node</th><th>Component</th><th>ID</th><th>Event</th></tr>${steps}</table>`;
  view.dataset.page = 'job';
}

export function show(view, id) {
  let gone = false;
  async function load() {
    try {
      const trail = await get(`/v1/events${query({ job: id })}`);
      if (!gone) draw(view, id, trail);
    } catch (e) {
      if (!gone) view.innerHTML = `<h1>Job ${esc(id)}</h1><p class="bad">${esc(e.message)}</p>`;
    }
  }
  load();
  const again = throttle(load, 500);
  return { onEvent: (e) => { if (e.job && e.job.startsWith(id)) again(); },
    leave: () => { gone = true; } };
}
