// corral's web page: a small hand-written app over the page's read routes
// (/ui/v1/...), which take the ACL token alone (X-Corral-Token). It keeps
// the token in sessionStorage, reads the cluster once, then follows the
// event stream (ndjson over fetch) and reads again when something changed.
// Everything the server sends is put in the page as text, never as HTML.
'use strict';

const API = '/ui/v1';
const TOKEN_KEY = 'corral-token';
const FEED_MAX = 200;           // events kept in the live feed
const USAGE_BACKLOG = 3000;     // events read back for the plots on load
const WINDOW_MS = 30 * 60e3;    // the plots' time window
const COLORS = ['#3b7dd8', '#d8613b', '#2f9e5a', '#9b59b6', '#c9a227', '#1fa3a3', '#d64f86', '#6d7a88'];

const view = {
  members: [], nodes: [], guests: [], detail: {},
  usage: new Map(),   // node -> [{t, guests: {name: {cpu, mem}}}]
  feed: [],
  cursor: 0,
  selected: null,
};

const $ = (id) => document.getElementById(id);

// el builds an element; children are nodes or strings (as text).
function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') e.className = v;
    else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v);
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

function svg(tag, attrs) {
  const e = document.createElementNS('http://www.w3.org/2000/svg', tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  return e;
}

function token() { return sessionStorage.getItem(TOKEN_KEY) || ''; }

function showError(msg) {
  const box = $('error');
  box.textContent = msg;
  box.hidden = !msg;
}

function setConnected(on, text) {
  const c = $('conn');
  c.className = 'conn ' + (on ? 'on' : 'off');
  c.textContent = text;
}

// APIError carries the server's error code and message.
class APIError extends Error {
  constructor(status, body) {
    const e = (body && body.error) || {};
    super(e.message || ('HTTP ' + status));
    this.status = status;
    this.code = e.code || '';
    this.firstIndex = e.first_index;
  }
}

async function call(path, opts) {
  const resp = await fetch(API + path, {
    headers: { 'X-Corral-Token': token() },
    cache: 'no-store',
    signal: opts && opts.signal,
  });
  if (!resp.ok) {
    let body = null;
    try { body = await resp.json(); } catch (_) { /* not JSON */ }
    throw new APIError(resp.status, body);
  }
  return resp;
}

async function getJSON(path) { return (await call(path)).json(); }

// readLines calls onLine with each parsed line of an ndjson response.
async function readLines(resp, onLine) {
  const reader = resp.body.getReader();
  const dec = new TextDecoder();
  let buf = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buf += dec.decode(value, { stream: true });
    let i;
    while ((i = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, i).trim();
      buf = buf.slice(i + 1);
      if (line) onLine(JSON.parse(line));
    }
  }
  if (buf.trim()) onLine(JSON.parse(buf));
}

async function getLines(path) {
  const out = [];
  await readLines(await call(path), (x) => out.push(x));
  return out;
}

// --- formatting -----------------------------------------------------------

function bytes(n) {
  if (n === undefined || n === null) return '-';
  const u = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (Math.abs(n) >= 1024 && i < u.length - 1) { n /= 1024; i++; }
  return (i ? n.toFixed(1) : String(n)) + ' ' + u[i];
}

function clock(t) { return new Date(t).toLocaleTimeString(); }

function details(e) {
  const p = e.payload || {};
  switch (e.type) {
    case 'node.usage':
      return (p.guests || []).map((g) => g.guest + ' ' + bytes(g.memory_bytes)).join(', ') || 'no guests';
    case 'guest.tuning_applied':
      return p.knob + '=' + p.value;
    case 'guest.exited':
      return [p.exit_code !== undefined ? 'code ' + p.exit_code : '', p.signal || '', p.error || ''].filter(Boolean).join(' ');
    case 'node.eligibility':
      return p.eligibility || '';
  }
  const keys = Object.keys(p).filter((k) => typeof p[k] !== 'object' && !k.includes('secret'));
  return keys.slice(0, 5).map((k) => k + '=' + p[k]).join(' ') + (e.reason ? ' (' + e.reason + ')' : '');
}

function status(text) { return el('span', { class: 's-' + text }, text); }

function bar(used, cap) {
  const pct = cap > 0 ? Math.min(100, (100 * used) / cap) : 0;
  const inner = el('span');
  inner.style.width = pct.toFixed(1) + '%';
  return el('span', { class: 'bar', title: pct.toFixed(0) + '%' }, inner);
}

// --- rendering ------------------------------------------------------------

function fill(table, rows) {
  const tb = $(table).tBodies[0];
  tb.replaceChildren(...rows);
}

function renderMembers() {
  fill('members', view.members.map((m) => el('tr', { 'data-member': m.id },
    el('td', {}, m.id), el('td', { class: 'leader' }, m.leader ? 'leader' : ''), el('td', {}, m.suffrage),
    el('td', {}, m.raft_addr), el('td', {}, m.http_addr || '-'))));
}

function renderNodes() {
  fill('nodes', view.nodes.map((n) => {
    let elig = n.eligibility;
    if (n.drain && n.drain.deadline) elig += ' (deadline ' + n.drain.deadline + ')';
    return el('tr', { 'data-node': n.id },
      el('td', {}, n.id), el('td', { class: 'status' }, status(n.status)), el('td', { class: 'eligibility' }, status(elig)),
      el('td', { class: 'num' }, n.guests),
      el('td', { class: 'num' }, bar(n.allocated_vcpus, n.capacity_vcpus), n.allocated_vcpus + ' / ' + n.capacity_vcpus),
      el('td', { class: 'num' }, bar(n.allocated_memory_bytes, n.capacity_memory_bytes),
        bytes(n.allocated_memory_bytes) + ' / ' + bytes(n.capacity_memory_bytes)));
  }));
}

// tuning lists each knob tuned away from its default, and each the agent
// reported writing: the desired value (the running instance's, else the
// persistent one) and, where the agent applied another or has not answered
// yet, what it applied.
function tuning(g) {
  const want = Object.assign({}, g.tuning || {}, g.live_tuning || {});
  const applied = g.applied || {};
  const knobs = [...new Set([...Object.keys(want), ...Object.keys(applied)])].sort();
  if (!knobs.length) return el('span', { class: 'muted' }, 'defaults');
  return knobs.map((k) => {
    const a = applied[k];
    const failed = g.tuning_failed && g.tuning_failed[k];
    const running = g.status === 'running';
    let text = k + '=' + (k in want ? want[k] : a);
    const off = k in want && running && a !== want[k];
    if (off) text += ' / ' + (a === undefined ? 'not applied yet' : a);
    if (failed) text += ' (refused: ' + (failed.error || 'by the host') + ')';
    return el('span', { class: 'knob' + (off || failed ? ' unapplied' : ''), 'data-knob': k }, text);
  });
}

function renderGuests() {
  fill('guests', view.guests.map((g) => {
    const why = (view.detail[g.name] && view.detail[g.name].unplaced) || [];
    return el('tr', { 'data-guest': g.name, class: 'click', onclick: () => selectGuest(g.name) },
      el('td', {}, g.name), el('td', { class: 'status' }, status(g.status)), el('td', { class: 'desired' }, g.desired),
      el('td', { class: 'node' }, g.node || '-'), el('td', { class: 'num' }, g.vcpus),
      el('td', { class: 'num' }, bytes(g.memory_bytes)), el('td', { class: 'tuning' }, tuning(g)),
      el('td', { class: 'unplaced' }, why.map((w) => el('div', {}, w))));
  }));
}

function renderFeed() {
  const showUsage = $('show-usage').checked;
  const rows = [];
  for (let i = view.feed.length - 1; i >= 0 && rows.length < 100; i--) {
    const e = view.feed[i];
    if (e.type === 'node.usage' && !showUsage) continue;
    rows.push(el('tr', { 'data-index': e.index, 'data-type': e.type },
      el('td', { class: 'num' }, e.index), el('td', {}, clock(e.time)), el('td', {}, e.type),
      el('td', {}, e.guest || ''), el('td', {}, e.node || ''), el('td', {}, e.actor), el('td', {}, details(e))));
  }
  fill('feed', rows);
}

// --- usage plots ----------------------------------------------------------

function addUsage(e) {
  const node = e.node;
  if (!node) return;
  const t = Date.parse(e.time);
  const sample = { t, guests: {} };
  for (const g of (e.payload && e.payload.guests) || []) {
    sample.guests[g.guest] = { cpu: g.cpu_ns, mem: g.memory_bytes, gen: g.generation };
  }
  let list = view.usage.get(node);
  if (!list) view.usage.set(node, (list = []));
  list.push(sample);
  while (list.length && list[0].t < t - WINDOW_MS) list.shift();
}

// series turns a node's samples into per-guest lines: CPU in cores (the
// rise of cumulative CPU time over wall time) and memory in bytes.
function series(samples, only) {
  const cpu = new Map(), mem = new Map();
  for (let i = 0; i < samples.length; i++) {
    const s = samples[i], prev = samples[i - 1];
    for (const [name, u] of Object.entries(s.guests)) {
      if (only && name !== only) continue;
      if (!mem.has(name)) { mem.set(name, []); cpu.set(name, []); }
      mem.get(name).push([s.t, u.mem]);
      const p = prev && prev.guests[name];
      if (p && p.gen === u.gen && s.t > prev.t && u.cpu >= p.cpu) {
        cpu.get(name).push([s.t, (u.cpu - p.cpu) / 1e6 / (s.t - prev.t)]);
      }
    }
  }
  return { cpu, mem };
}

function plot(title, lines, fmt, colorOf) {
  const W = 420, H = 130, L = 60, B = 18;
  let tmin = Infinity, tmax = -Infinity, vmax = 0;
  for (const pts of lines.values()) {
    for (const [t, v] of pts) { tmin = Math.min(tmin, t); tmax = Math.max(tmax, t); vmax = Math.max(vmax, v); }
  }
  const box = el('div', { class: 'plot', 'data-plot': title }, el('div', { class: 'title' }, title));
  const s = svg('svg', { width: W, height: H, viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-label': title });
  s.append(svg('rect', { x: L, y: 4, width: W - L - 4, height: H - B - 4, fill: 'none', stroke: '#d5dae0' }));
  if (!isFinite(tmin)) {
    const t = svg('text', { x: L + 8, y: H / 2, 'font-size': 12, fill: '#5c6670' });
    t.textContent = 'no usage reported yet';
    s.append(t);
    box.append(s);
    return box;
  }
  if (vmax === 0) vmax = 1;
  if (tmax === tmin) tmin = tmax - 1000;
  const x = (t) => L + ((t - tmin) / (tmax - tmin)) * (W - L - 6);
  const y = (v) => H - B - (v / vmax) * (H - B - 8);
  for (const [v, label] of [[vmax, fmt(vmax)], [0, fmt(0)]]) {
    const t = svg('text', { x: L - 4, y: y(v) + 4, 'font-size': 10, 'text-anchor': 'end', fill: '#5c6670' });
    t.textContent = label;
    s.append(t);
  }
  for (const [t, label] of [[tmin, clock(tmin)], [tmax, clock(tmax)]]) {
    const e = svg('text', { x: x(t), y: H - 4, 'font-size': 10, 'text-anchor': t === tmin ? 'start' : 'end', fill: '#5c6670' });
    e.textContent = label;
    s.append(e);
  }
  const legend = el('div', { class: 'legend' });
  for (const [name, pts] of lines) {
    const color = colorOf(name);
    if (pts.length === 1) {
      s.append(svg('circle', { cx: x(pts[0][0]), cy: y(pts[0][1]), r: 2.5, fill: color }));
    } else if (pts.length) {
      s.append(svg('polyline', { points: pts.map(([t, v]) => x(t).toFixed(1) + ',' + y(v).toFixed(1)).join(' '), fill: 'none', stroke: color, 'stroke-width': 1.5 }));
    }
    const sw = el('i');
    sw.style.background = color;
    legend.append(el('span', {}, sw, name));
  }
  box.append(s, legend);
  return box;
}

const colorIndex = new Map();
function colorOf(name) {
  if (!colorIndex.has(name)) colorIndex.set(name, COLORS[colorIndex.size % COLORS.length]);
  return colorIndex.get(name);
}

const cores = (v) => v.toFixed(2) + ' CPU';

function renderUsage() {
  const out = [];
  for (const node of [...view.usage.keys()].sort()) {
    const { cpu, mem } = series(view.usage.get(node));
    out.push(el('div', { class: 'node-usage', 'data-node': node }, el('h3', {}, node),
      el('div', { class: 'plots' }, plot(node + ' CPU', cpu, cores, colorOf), plot(node + ' memory', mem, bytes, colorOf))));
  }
  if (!out.length) out.push(el('p', { class: 'muted' }, 'No node.usage events in the log yet (agents send one every --usage-interval).'));
  $('usage').replaceChildren(...out);
  $('usage-window').textContent = '(last ' + WINDOW_MS / 60e3 + ' minutes)';
  if (view.selected) renderGuestPlots();
}

function renderGuestPlots() {
  const name = view.selected;
  const cpu = new Map(), mem = new Map();
  for (const [node, samples] of view.usage) {
    const sr = series(samples, name);
    if (sr.mem.has(name)) {
      cpu.set(name + ' on ' + node, sr.cpu.get(name));
      mem.set(name + ' on ' + node, sr.mem.get(name));
    }
  }
  $('guest-plots').replaceChildren(plot(name + ' CPU', cpu, cores, colorOf), plot(name + ' memory', mem, bytes, colorOf));
}

// --- a guest's history ----------------------------------------------------

async function selectGuest(name) {
  view.selected = name;
  $('guest-section').hidden = false;
  $('guest-name').textContent = name;
  renderGuestPlots();
  await loadHistory();
}

async function loadHistory() {
  const name = view.selected;
  if (!name) return;
  try {
    const evs = await getLines('/guests/' + encodeURIComponent(name) + '/history');
    if (view.selected !== name) return;
    fill('history', evs.slice(-200).reverse().map((e) => el('tr', { 'data-type': e.type },
      el('td', { class: 'num' }, e.index), el('td', {}, clock(e.time)), el('td', {}, e.type),
      el('td', {}, e.actor), el('td', {}, details(e)))));
  } catch (err) {
    if (err.status === 404) fill('history', [el('tr', {}, el('td', { colspan: 5 }, name + ' no longer exists'))]);
    else failed(err);
  }
}

// --- loading and following ------------------------------------------------

function failed(err) {
  if (err.name === 'AbortError') return;
  showError(err.message + (err.status === 401 || err.status === 403 ? '\nEnter a token with the read policy above.' : ''));
  setConnected(false, err.status === 401 || err.status === 403 ? 'token refused' : 'not connected');
}

async function refresh() {
  const [members, nodes, guests] = await Promise.all([
    getJSON('/cluster/members'), getJSON('/nodes'), getJSON('/guests')]);
  view.members = members || [];
  view.nodes = nodes || [];
  view.guests = guests || [];
  // Only a guest's own view says why it waits for a placement.
  const pending = view.guests.filter((g) => g.status === 'pending');
  const detail = {};
  await Promise.all(pending.map(async (g) => {
    try { detail[g.name] = await getJSON('/guests/' + encodeURIComponent(g.name)); } catch (_) { /* gone meanwhile */ }
  }));
  view.detail = detail;
  renderMembers();
  renderNodes();
  renderGuests();
}

let refreshTimer = null, refreshing = false, again = false;

// scheduleRefresh reads the cluster again soon, at most one read at a time.
function scheduleRefresh() {
  if (refreshTimer) return;
  refreshTimer = setTimeout(async () => {
    refreshTimer = null;
    if (refreshing) { again = true; return; }
    refreshing = true;
    try {
      await refresh();
      if (view.selected) await loadHistory();
    } catch (err) {
      failed(err);
    } finally {
      refreshing = false;
      if (again) { again = false; scheduleRefresh(); }
    }
  }, 150);
}

// lastIndex asks for the events after the largest index: none, but the
// answer's header says where the log ends.
async function lastIndex() {
  const resp = await call('/events?since=' + Number.MAX_SAFE_INTEGER);
  return Number(resp.headers.get('X-Corral-Index') || 0);
}

// backlog reads events after since, moving past what retention dropped.
async function backlog(since, type) {
  const q = type ? '&type=' + type : '';
  try {
    return await getLines('/events?since=' + since + q);
  } catch (err) {
    if (err.status === 410 && err.firstIndex) return getLines('/events?since=' + (err.firstIndex - 1) + q);
    throw err;
  }
}

function onEvent(e) {
  if (e.error) throw new APIError(0, e);
  view.cursor = Math.max(view.cursor, e.index);
  view.feed.push(e);
  if (view.feed.length > FEED_MAX) view.feed.splice(0, view.feed.length - FEED_MAX);
  if (e.type === 'node.usage') {
    addUsage(e);
    scheduleUsage();
  } else {
    scheduleRefresh();
  }
  scheduleFeed();
}

let feedTimer = null, usageTimer = null;
function scheduleFeed() { if (!feedTimer) feedTimer = setTimeout(() => { feedTimer = null; renderFeed(); }, 100); }
function scheduleUsage() { if (!usageTimer) usageTimer = setTimeout(() => { usageTimer = null; renderUsage(); }, 200); }

let session = null;

// start (re)loads everything with the current token and follows the
// stream until the token changes.
async function start() {
  if (session) session.abort();
  const ctl = new AbortController();
  session = ctl;
  view.feed = [];
  view.usage = new Map();
  view.cursor = 0;
  if (!token()) {
    setConnected(false, 'no token');
    showError('This page needs an ACL token: enter one above (corral acl token create --name ui --policy read). It is kept in this tab only.');
    return;
  }
  let delay = 500;
  while (!ctl.signal.aborted) {
    try {
      await refresh();
      if (view.cursor === 0) {
        const last = await lastIndex();
        for (const e of await backlog(Math.max(0, last - USAGE_BACKLOG), 'node.usage')) addUsage(e);
        for (const e of await backlog(Math.max(0, last - FEED_MAX))) {
          if (e.type !== 'node.usage') view.feed.push(e);
        }
        view.cursor = last;
        renderFeed();
        renderUsage();
      }
      showError('');
      setConnected(true, 'live');
      const resp = await call('/events?follow=1&since=' + view.cursor, { signal: ctl.signal });
      delay = 500;
      await readLines(resp, onEvent);
      // The server ended the stream (it shut down, or stepped aside):
      // read again and follow from where we were.
    } catch (err) {
      if (ctl.signal.aborted) return;
      failed(err);
      if (err.status === 401 || err.status === 403) return;
      if (err.status === 410) view.cursor = 0;
    }
    if (ctl.signal.aborted) return;
    setConnected(false, 'reconnecting');
    await new Promise((r) => setTimeout(r, delay));
    delay = Math.min(delay * 2, 10e3);
  }
}

document.addEventListener('DOMContentLoaded', () => {
  $('login').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const t = $('token').value.trim();
    $('token').value = '';
    if (t) sessionStorage.setItem(TOKEN_KEY, t);
    start();
  });
  $('logout').addEventListener('click', () => {
    sessionStorage.removeItem(TOKEN_KEY);
    start();
  });
  $('guest-close').addEventListener('click', () => {
    view.selected = null;
    $('guest-section').hidden = true;
  });
  $('show-usage').addEventListener('change', renderFeed);
  start();
});
