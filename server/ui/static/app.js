// share's web page: plain JavaScript, no framework, no build step.
// It talks to the JSON API of the daemon that served it:
//   GET /v1/session         who am I, which mode, which features
//   GET /v1/shares          the list (polled every POLL_MS while visible)
//   /v1/uploads...          resumable upload sessions (the server hashes each chunk)
//   GET /v1/status          a peer's status (polled every STATUS_MS on the status view)
'use strict';

const POLL_MS = 2000;
const STATUS_MS = 1000;
// Bytes per chunk request (a run of whole chunks; the server keeps each whole
// chunk it got, so a cut request loses at most one chunk) and requests in
// flight per upload: two uploads at once then leave room for the list's
// polls within a browser's six HTTP/1.1 connections per host. Measured with
// BenchmarkPageUpload (cmd/share): runs of 8 to 64 MiB and 2 to 8 requests
// made little difference; the browser's own upload path was the limit.
// Sending a file share as ONE request whose body is the File itself (not a
// slice) lets Chromium's network process read the file directly: a fifth
// less browser CPU per byte, but a fifth slower (all of it on one thread).
const RUN_BYTES = 32 << 20;
const IN_FLIGHT = 4;
const MAX_BACKOFF_MS = 10000;

const $ = (id) => document.getElementById(id);
const state = {
  session: null,
  shares: [],
  sessions: [], // the server's open upload sessions
  sort: { key: 'created', dir: -1 },
  filter: '',
  type: '',
  jobs: new Map(), // upload id or local id -> Job
  prev: null,      // previous status sample, for rates
  timer: 0,
};

// ---- formatting -------------------------------------------------------------

function human(n) {
  if (n == null || isNaN(n)) return '';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
  let i = 0;
  while (Math.abs(n) >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return (i === 0 ? String(Math.round(n)) : n.toFixed(n < 10 ? 2 : n < 100 ? 1 : 0)) + '\u00a0' + units[i];
}
const rate = (bps) => human(bps) + '/s';
function duration(s) {
  if (!isFinite(s) || s < 0) return '';
  s = Math.round(s);
  if (s < 60) return s + ' s';
  if (s < 3600) return Math.floor(s / 60) + ' min ' + (s % 60) + ' s';
  return Math.floor(s / 3600) + ' h ' + Math.floor((s % 3600) / 60) + ' min';
}
function ago(iso) {
  const t = new Date(iso), s = (Date.now() - t.getTime()) / 1000;
  if (isNaN(s)) return '';
  if (s < 60) return 'just now';
  if (s < 3600) return Math.floor(s / 60) + ' min ago';
  if (s < 86400) return Math.floor(s / 3600) + ' h ago';
  if (s < 86400 * 30) return Math.floor(s / 86400) + ' d ago';
  return t.toLocaleDateString();
}

// Names are shown as text, never as HTML, the way the server's rule writes
// them for people (display_name: look-alikes of '.', '/' and '\' written as
// \uFF0F escapes, see transfer.DisplayName). A backslash in a display name
// always starts such an escape: the page shows each in red.
const ESCAPE = /\\(?:u[0-9A-F]{4}|U[0-9A-F]{8}|x[0-9A-F]{2})/g;
function nameNode(display) {
  const frag = document.createDocumentFragment();
  let last = 0;
  for (const m of display.matchAll(ESCAPE)) {
    if (m.index > last) frag.append(display.slice(last, m.index));
    frag.append(el('span', { class: 'escaped', title: 'a character that looks like another one, shown escaped' }, m[0]));
    last = m.index + m[0].length;
  }
  if (last < display.length) frag.append(display.slice(last));
  return frag;
}
const shown = (x) => x.display_name ?? x.name;
// shortID shortens a share ID for the eye (the full ID is in the title and
// the Copy ID button): its head and tail, as kubo's web UI shows CIDs.
const shortID = (id) => id.length > 24 ? id.slice(0, 14) + '…' + id.slice(-8) : id;

function el(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v == null || v === false) continue;
    if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? '' : v);
  }
  for (const k of kids) if (k != null) e.append(k);
  return e;
}

let toastTimer = 0;
function toast(msg) {
  const t = $('toast');
  t.textContent = msg;
  t.classList.add('show');
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => t.classList.remove('show'), 2500);
}
function banner(msg) {
  const b = $('banner');
  b.textContent = msg || '';
  b.hidden = !msg;
}

// ---- API --------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, code, message) { super(message); this.status = status; this.code = code; }
}

// abs makes a request URL from a path. A page opened as http://user:token@host/
// has its credentials in location.href, and fetch refuses URLs resolved
// against it; location.origin has none.
const abs = (path) => location.origin + path;

async function api(method, path, body, headers) {
  let resp;
  try {
    resp = await fetch(abs(path), { method, body, credentials: 'same-origin', headers: { Accept: 'application/json', ...headers } });
  } catch (e) {
    throw new ApiError(0, 'network', 'cannot reach the server (' + e.message + ')');
  }
  if (resp.status === 204) return null;
  const text = await resp.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { /* not JSON */ }
  if (!resp.ok) {
    if (resp.status === 401 && state.session) loggedOut();
    throw new ApiError(resp.status, data?.code || '', data?.error || resp.statusText || ('HTTP ' + resp.status));
  }
  return data;
}

// ---- session and views ------------------------------------------------------

async function boot() {
  try {
    state.session = await api('GET', '/v1/session');
  } catch (e) {
    banner('Cannot reach the server: ' + e.message);
    setTimeout(boot, 3000);
    return;
  }
  banner('');
  const s = state.session;
  $('mode').textContent = s.mode === 'peer' ? 'peer' : 'server';
  $('mode').hidden = false;
  $('tabs').hidden = false;
  $('tab-status').hidden = s.mode !== 'peer';
  $('logout').hidden = !(s.authenticated && s.method === 'cookie');
  $('login-open').hidden = s.authenticated;
  route();
}

function loggedOut() {
  state.session.authenticated = false;
  $('logout').hidden = true;
  $('login-open').hidden = false;
  route();
}

function canRead() { return state.session.authenticated || state.session.public_read; }

function route() {
  const s = state.session;
  if (!s) return;
  const want = location.hash === '#status' && s.mode === 'peer' ? 'status' : location.hash === '#login' ? 'login' : 'shares';
  const view = !canRead() || (want === 'login' && !s.authenticated) ? 'login' : want === 'login' ? 'shares' : want;
  $('login-view').hidden = view !== 'login';
  $('shares-view').hidden = view !== 'shares';
  $('status-view').hidden = view !== 'status';
  $('tab-shares').toggleAttribute('aria-current', view === 'shares');
  $('tab-status').toggleAttribute('aria-current', view === 'status');
  if (view === 'shares') $('tab-shares').setAttribute('aria-current', 'page');
  if (view === 'status') $('tab-status').setAttribute('aria-current', 'page');
  $('upload-area').hidden = !(s.authenticated && s.uploads);
  document.title = view === 'status' ? 'share: peer status' : view === 'login' ? 'share: log in' : 'share';
  if (view === 'login') $('token').focus();
  state.view = view;
  schedule(0);
}

function schedule(ms) {
  clearTimeout(state.timer);
  state.timer = setTimeout(poll, ms);
}

async function poll() {
  if (document.hidden) return; // resumed by visibilitychange
  try {
    if (state.view === 'shares') await refreshShares();
    else if (state.view === 'status') await refreshStatus();
    if (state.view !== 'login') banner('');
  } catch (e) {
    if (e.status !== 401) banner(e.message);
  }
  if (state.view !== 'login') schedule(state.view === 'status' ? STATUS_MS : POLL_MS);
}
document.addEventListener('visibilitychange', () => { if (!document.hidden) schedule(0); });
window.addEventListener('hashchange', route);

$('login-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const err = $('login-error');
  err.hidden = true;
  try {
    await api('POST', '/login', new URLSearchParams({ token: $('token').value.trim() }));
    $('token').value = '';
    if (location.hash === '#login') history.replaceState(null, '', '#shares');
    await boot();
  } catch (e) {
    err.textContent = e.status === 401 ? 'That is not the token of this server.' : e.message;
    err.hidden = false;
    $('token').select();
  }
});
$('login-open').addEventListener('click', () => { location.hash = '#login'; route(); });
$('logout').addEventListener('click', async () => {
  try { await api('POST', '/logout'); } catch (e) { toast(e.message); }
  await boot();
});

// ---- the list of shares -------------------------------------------------------

async function refreshShares() {
  const list = await api('GET', '/v1/shares');
  state.shares = list.shares || [];
  if (state.session.authenticated && state.session.uploads) {
    const ups = await api('GET', '/v1/uploads');
    state.sessions = ups.uploads || [];
  } else {
    state.sessions = [];
  }
  renderShares();
  renderOrphans();
}

function shareRows() {
  const rows = state.shares.map((s) => ({ ...s, shown: shown(s), kind: 'share', frac: s.chunks ? s.have / s.chunks : 1 }));
  for (const u of state.sessions) {
    // An upload this page feeds shows its live progress, not the last poll's.
    const job = state.jobs.get(u.id);
    const have = job && job.cs ? Math.max(u.have, Math.floor(job.done / job.cs)) : u.have;
    rows.push({ id: u.id, name: u.name, shown: shown(u), size: u.size, type: u.type, created: u.created, kind: 'upload',
      complete: false, chunks: u.chunks, have, frac: u.chunks ? have / u.chunks : 0, files: u.files });
  }
  const f = state.filter.toLowerCase();
  const filtered = rows.filter((r) => (!f || r.name.toLowerCase().includes(f) || r.id.toLowerCase().includes(f)) &&
    (!state.type || (state.type === 'partial' ? !r.complete : r.type === state.type)));
  const { key, dir } = state.sort;
  const val = (r) => key === 'state' ? (r.complete ? 2 : r.frac) : key === 'created' ? Date.parse(r.created) : r[key];
  filtered.sort((a, b) => {
    const x = val(a), y = val(b);
    const c = typeof x === 'string' ? x.localeCompare(y) : x - y;
    return c * dir || a.name.localeCompare(b.name);
  });
  return { rows: filtered, total: rows.length };
}

function stateCell(r) {
  const td = el('td', { class: 'state', 'data-label': 'State' });
  if (r.damaged > 0) {
    td.append(el('span', { class: 'state-damaged' }, r.damaged + ' damaged chunk' + (r.damaged > 1 ? 's' : '')));
    return td;
  }
  if (r.complete) {
    td.append(el('span', { class: 'state-complete' }, 'complete'));
    return td;
  }
  const pct = Math.floor(r.frac * 100);
  const label = r.kind === 'upload' ? 'uploading' : 'partial';
  td.append(el('progress', { max: r.chunks || 1, value: r.have, 'aria-label': r.shown + ': ' + pct + ' %' }), ' ',
    el('span', { class: 'state-partial' }, label + ' ' + pct + ' %'),
    el('span', { class: 'muted' }, ' (' + r.have + ' of ' + r.chunks + ' chunks)'));
  return td;
}

function shellQuote(s) { return "'" + s.replace(/'/g, "'\\''") + "'"; }

function curlCommand(r) {
  const file = r.type === 'dir' ? r.name + '.tar' : r.name;
  const auth = state.session.public_read ? '' : '-H "Authorization: Bearer $SHARE_TOKEN" ';
  return 'curl ' + auth + '-o ' + shellQuote(file) + ' ' + location.origin + '/v1/shares/' + r.id;
}

async function copy(text, what) {
  try {
    if (navigator.clipboard && window.isSecureContext) await navigator.clipboard.writeText(text);
    else {
      const ta = el('textarea', { readonly: true, style: 'position:fixed;left:-9999px' }, text);
      document.body.append(ta);
      ta.select();
      document.execCommand('copy');
      ta.remove();
    }
    toast(what + ' copied');
  } catch (e) {
    toast('Copy failed: ' + e.message);
  }
}

function renderShares() {
  const { rows, total } = shareRows();
  const tbody = document.querySelector('#shares tbody');
  const focused = document.activeElement?.dataset?.focusKey;
  const auth = state.session.authenticated;
  const out = [];
  for (const r of rows) {
    const name = el('td', { class: 'name', 'data-label': 'Name' });
    if (r.kind === 'share' && r.complete) {
      const file = r.type === 'dir' ? r.name + '.tar' : r.name;
      name.append(el('a', { href: '/v1/shares/' + r.id, download: file, 'data-focus-key': 'dl:' + r.id,
        title: 'Download ' + r.shown + (r.type === 'dir' ? '.tar' : '') }, nameNode(r.shown), r.type === 'dir' ? '.tar' : ''));
    } else {
      name.append(nameNode(r.shown));
    }
    name.append(el('code', { class: 'id', title: r.id }, r.kind === 'upload' ? 'upload ' + r.id.slice(0, 12) + '…' : shortID(r.id)));
    const actions = el('td', { class: 'actions' });
    if (r.kind === 'share') {
      actions.append(
        el('button', { type: 'button', class: 'small secondary', 'data-focus-key': 'id:' + r.id, 'aria-label': 'Copy the ID of ' + r.shown,
          onclick: () => copy(r.id, 'ID') }, 'Copy ID'),
        el('button', { type: 'button', class: 'small secondary', 'data-focus-key': 'curl:' + r.id, 'aria-label': 'Copy a curl command for ' + r.shown,
          onclick: () => copy(curlCommand(r), 'curl command'), disabled: !r.complete }, 'Copy curl'));
      if (auth) {
        actions.append(el('button', { type: 'button', class: 'small danger', 'data-focus-key': 'rm:' + r.id, 'aria-label': 'Delete ' + r.shown,
          onclick: () => confirmDelete(r) }, 'Delete'));
      }
    } else if (!state.jobs.has(r.id)) {
      actions.append(el('button', { type: 'button', class: 'small danger', 'data-focus-key': 'discard:' + r.id,
        'aria-label': 'Discard the upload of ' + r.shown, onclick: () => discardSession(r) }, 'Discard'));
    }
    out.push(el('tr', { 'data-id': r.id },
      name,
      el('td', { class: 'num', 'data-label': 'Size' }, human(r.size)),
      stateCell(r),
      el('td', { 'data-label': 'Created', title: new Date(r.created).toLocaleString() }, ago(r.created)),
      el('td', { 'data-label': 'Type' }, r.type === 'dir' ? 'folder (' + r.files + ' files)' : 'file'),
      actions));
  }
  tbody.replaceChildren(...out);
  if (focused) document.querySelector(`[data-focus-key="${CSS.escape(focused)}"]`)?.focus();
  $('count').textContent = rows.length === total ? '(' + total + ')' : '(' + rows.length + ' of ' + total + ')';
  $('empty').hidden = rows.length > 0;
  $('empty').textContent = total === 0 ? (auth ? 'No shares yet: drop a file above.' : 'No shares yet.') : 'No share matches the filter.';
}

document.querySelectorAll('#shares th[data-key] button').forEach((b) => b.addEventListener('click', () => {
  const th = b.parentElement, key = th.dataset.key;
  state.sort = { key, dir: state.sort.key === key ? -state.sort.dir : (key === 'name' || key === 'type' ? 1 : -1) };
  document.querySelectorAll('#shares th[data-key]').forEach((h) => h.setAttribute('aria-sort', 'none'));
  th.setAttribute('aria-sort', state.sort.dir > 0 ? 'ascending' : 'descending');
  renderShares();
}));
$('filter').addEventListener('input', (e) => { state.filter = e.target.value; renderShares(); });
$('type-filter').addEventListener('change', (e) => { state.type = e.target.value; renderShares(); });

function confirmDelete(r) {
  const d = $('confirm');
  $('confirm-text').replaceChildren('Delete ', el('strong', {}, nameNode(r.shown)), ' (' + human(r.size) + ') from this ' +
    state.session.mode + '? Anyone with its ID will no longer be able to download it from here.');
  d.returnValue = '';
  d.onclose = async () => {
    if (d.returnValue !== 'ok') return;
    try {
      await api('DELETE', '/v1/shares/' + r.id);
      toast('Deleted ' + r.shown);
      schedule(0);
    } catch (e) {
      toast('Delete failed: ' + e.message);
    }
  };
  d.showModal();
}

async function discardSession(r) {
  try {
    await api('DELETE', '/v1/uploads/' + r.id);
    schedule(0);
  } catch (e) {
    toast(e.message);
  }
}

// ---- uploads ------------------------------------------------------------------

// Files are ordered by the UTF-8 bytes of their paths, as the manifest does
// (JavaScript's own string order, by UTF-16 units, differs beyond the BMP).
const enc = new TextEncoder();
function cmpUTF8(a, b) {
  const x = enc.encode(a), y = enc.encode(b);
  for (let i = 0; i < Math.min(x.length, y.length); i++) if (x[i] !== y[i]) return x[i] - y[i];
  return x.length - y.length;
}

// fingerprint is the session key: the same files (paths, sizes, modification
// times) give the same key, so a reload finds its session again.
function fingerprint(name, entries) {
  let h1 = 0x811c9dc5, h2 = 0x01000193 ^ 0x5bd1e995;
  const feed = (s) => {
    for (let i = 0; i < s.length; i++) {
      const c = s.charCodeAt(i);
      h1 = Math.imul(h1 ^ c, 0x01000193) >>> 0;
      h2 = Math.imul(h2 ^ c, 0x5bd1e995) >>> 0;
      h2 ^= h2 >>> 15;
    }
  };
  feed(name);
  let size = 0;
  for (const e of entries) {
    feed('\n' + e.path + '\t' + e.file.size + '\t' + e.file.lastModified);
    size += e.file.size;
  }
  return ['v1', size, entries.length, h1.toString(16).padStart(8, '0') + h2.toString(16).padStart(8, '0'), name].join(':').slice(0, 1000);
}

// transient says whether a failed request may pass if tried again: a lost
// connection, or a restarting, busy or overloaded server.
const transient = (e) => [0, 408, 502, 503, 504].includes(e.status);

let localIds = 0;
let lastListRender = 0;

class Job {
  // entries: [{file, path}] with paths relative to the share (a file share: one entry).
  constructor(name, isDir, entries, emptyDirs) {
    this.name = name;
    this.isDir = isDir;
    this.entries = entries.sort((a, b) => cmpUTF8(a.path, b.path));
    this.emptyDirs = emptyDirs || [];
    this.size = entries.reduce((n, e) => n + e.file.size, 0);
    this.id = 'local-' + (++localIds);
    this.xhrs = new Set();
    this.done = 0;       // bytes of chunks the server holds
    this.inflight = new Map(); // xhr -> bytes sent so far
    this.samples = [];   // [time, bytes] for the rate
    this.state = 'starting';
    this.render();
  }

  spec() {
    const cs = state.session.chunk_size;
    if (!this.isDir) return { name: this.name, type: 'file', chunk_size: cs, files: [{ size: this.size }], key: fingerprint(this.name, this.entries) };
    const dirs = new Set(this.emptyDirs);
    for (const e of this.entries) {
      const parts = e.path.split('/');
      for (let i = 1; i < parts.length; i++) dirs.add(parts.slice(0, i).join('/'));
    }
    return {
      name: this.name, type: 'dir', chunk_size: cs, key: fingerprint(this.name, this.entries),
      files: this.entries.map((e) => ({ path: e.path, size: e.file.size, mode: 0o644 })),
      dirs: [...dirs].sort(cmpUTF8).map((p) => ({ path: p, mode: 0o755 })),
    };
  }

  // blob returns the bytes [off, end) of the share's stream: a slice of one
  // file, or slices of consecutive files.
  blob(off, end) {
    if (!this.isDir) return this.entries[0].file.slice(off, end);
    const parts = [];
    let pos = 0;
    for (const e of this.entries) {
      const s = pos, t = pos + e.file.size;
      pos = t;
      if (t <= off || e.file.size === 0) continue;
      if (s >= end) break;
      parts.push(e.file.slice(Math.max(off, s) - s, Math.min(end, t) - s));
    }
    return new Blob(parts);
  }

  async start() {
    try {
      this.setState('starting', 'Preparing…');
      const info = await api('POST', '/v1/uploads', JSON.stringify(this.spec()), { 'Content-Type': 'application/json' });
      state.jobs.delete(this.id);
      this.id = info.id;
      state.jobs.set(this.id, this);
      this.info = info;
      if (info.display_name && info.display_name !== this.name) {
        this.nameEl.replaceChildren(nameNode(info.display_name), this.isDir ? ' (folder, ' + this.entries.length + ' files)' : '');
      }
      this.cs = info.chunk_size;
      this.chunks = info.chunks;
      this.done = info.received;
      this.resumed = info.received > 0;
      this.queue = this.missing(info, 0, this.chunks);
      this.started = performance.now();
      this.startBytes = this.done;
      this.setState('sending');
      if (this.cancelled) return;
      await Promise.all(Array.from({ length: Math.min(IN_FLIGHT, this.queue.length) }, () => this.worker()));
      if (this.cancelled) return;
      this.setState('committing', 'Finishing…');
      const sh = await this.retry(() => api('POST', '/v1/uploads/' + this.id + '/commit'));
      this.share = sh;
      const secs = (performance.now() - this.started) / 1000;
      this.setState('done', 'Done: ' + human(this.size) + (secs > 0.5 ? ' at ' + rate((this.size - this.startBytes) / secs) : '') +
        (this.resumed ? ' (resumed)' : ''));
      state.jobs.delete(this.id);
      schedule(0);
    } catch (e) {
      if (this.cancelled) return;
      this.setState('failed', 'Failed: ' + e.message);
    }
  }

  // missing returns the runs [i, j) of chunks in [from, to) that the upload
  // session info says the server lacks, each at most RUN_BYTES.
  missing(info, from, to) {
    const have = Uint8Array.from(atob(info.bitfield || ''), (c) => c.charCodeAt(0));
    const held = (i) => (have[i >> 3] & (0x80 >> (i & 7))) !== 0;
    const per = Math.max(1, Math.floor(RUN_BYTES / this.cs));
    const runs = [];
    for (let i = from; i < to;) {
      if (held(i)) { i++; continue; }
      let j = i;
      while (j < to && !held(j) && j - i < per) j++;
      runs.push([i, j]);
      i = j;
    }
    return runs;
  }

  // bytes returns the size of the chunks [i, j).
  bytes(i, j) {
    return Math.min(j * this.cs, this.size) - i * this.cs;
  }

  async worker() {
    let failures = 0;
    while (this.queue.length && !this.cancelled) {
      const [i, j] = this.queue.shift();
      try {
        await this.put(i, i * this.cs, i * this.cs + this.bytes(i, j));
        failures = 0;
      } catch (e) {
        // A 409 "held": the run starts at a chunk the server holds, a body
        // the browser sent again by itself after a broken connection.
        const held = e.status === 409 && e.code === 'held';
        if (this.cancelled || !(held || transient(e))) {
          this.queue.length = 0;
          throw e;
        }
        // The server kept every whole chunk that arrived before the cut:
        // once it answers again, ask it which and send only the rest.
        if (!held) await this.pause(failures++);
        const info = await this.retry(() => api('GET', '/v1/uploads/' + this.id));
        const rest = this.missing(info, i, j);
        this.done += this.bytes(i, j) - rest.reduce((n, [a, b]) => n + this.bytes(a, b), 0);
        this.queue.unshift(...rest);
      }
    }
  }

  // pause waits before the next try after n failures in a row (0.5 s,
  // doubling, at most MAX_BACKOFF_MS), and says so.
  async pause(n) {
    const wait = Math.min(MAX_BACKOFF_MS, 500 * 2 ** n);
    this.setState('sending', 'Connection lost: retrying in ' + Math.ceil(wait / 1000) + ' s');
    await new Promise((r) => setTimeout(r, wait));
    this.setState('sending');
  }

  // retry runs fn until it succeeds, waiting longer after each failure that
  // may pass (a lost connection, a restarting or busy server).
  async retry(fn) {
    for (let n = 0; ; n++) {
      try {
        return await fn();
      } catch (e) {
        if (this.cancelled) throw e;
        if (!transient(e)) throw e;
        await this.pause(n);
      }
    }
  }

  put(first, off, end) {
    return new Promise((resolve, reject) => {
      const xhr = new XMLHttpRequest();
      this.xhrs.add(xhr);
      this.inflight.set(xhr, 0);
      const finish = () => { this.xhrs.delete(xhr); this.inflight.delete(xhr); };
      xhr.open('PUT', abs('/v1/uploads/' + this.id + '/chunks/' + first));
      xhr.setRequestHeader('Content-Type', 'application/octet-stream');
      xhr.setRequestHeader('Accept', 'application/json');
      xhr.upload.onprogress = (e) => { this.inflight.set(xhr, e.loaded); this.tick(); };
      xhr.onload = () => {
        if (xhr.status >= 200 && xhr.status < 300) {
          this.done += end - off;
          finish();
          return resolve();
        }
        finish();
        let body = {};
        try { body = JSON.parse(xhr.responseText); } catch { /* not JSON */ }
        if (xhr.status === 401) loggedOut();
        reject(new ApiError(xhr.status, body.code || '', body.error || 'HTTP ' + xhr.status));
      };
      xhr.onerror = () => { finish(); reject(new ApiError(0, 'network', 'network error')); };
      xhr.onabort = () => { finish(); reject(new ApiError(0, 'aborted', 'cancelled')); };
      xhr.send(this.blob(off, end));
    });
  }

  sent() {
    let n = this.done;
    for (const v of this.inflight.values()) n += v;
    return Math.min(n, this.size);
  }

  tick() {
    const now = performance.now();
    if (now - (this.lastTick || 0) < 250) return;
    this.lastTick = now;
    this.samples.push([now, this.sent()]);
    while (this.samples.length > 2 && now - this.samples[0][0] > 5000) this.samples.shift();
    this.render();
    if (now - lastListRender > 1000 && state.view === 'shares') { lastListRender = now; renderShares(); }
  }

  rate() {
    if (this.samples.length < 2) return 0;
    const [t0, b0] = this.samples[0], [t1, b1] = this.samples[this.samples.length - 1];
    return t1 > t0 ? (b1 - b0) / ((t1 - t0) / 1000) : 0;
  }

  setState(s, msg) {
    this.state = s;
    this.msg = msg || '';
    this.render();
  }

  async cancel() {
    this.cancelled = true;
    for (const x of this.xhrs) x.abort();
    state.jobs.delete(this.id);
    this.setState('cancelled', 'Cancelled');
    if (!this.id.startsWith('local-')) {
      try { await api('DELETE', '/v1/uploads/' + this.id); } catch { /* gone already */ }
    }
    setTimeout(() => this.li?.remove(), 1500);
    schedule(0);
  }

  render() {
    if (!this.li) {
      this.bar = el('progress', { max: 1, value: 0 });
      this.meta = el('span', { class: 'meta' });
      this.btn = el('button', { type: 'button', class: 'small secondary', onclick: () => this.cancel() }, 'Cancel');
      this.li = el('li', { class: 'upload' },
        this.nameEl = el('span', { class: 'name' }, this.name, this.isDir ? ' (folder, ' + this.entries.length + ' files)' : ''),
        el('span', { class: 'btns' }, this.btn), this.meta, this.bar);
      this.bar.setAttribute('aria-label', 'Upload of ' + this.name);
      $('uploads').prepend(this.li);
    }
    const sent = this.sent();
    this.bar.max = Math.max(this.size, 1);
    this.bar.value = this.state === 'done' ? this.bar.max : sent;
    this.li.className = 'upload ' + this.state;
    this.btn.hidden = this.state === 'done' || this.state === 'cancelled';
    if (this.state === 'failed') {
      this.btn.textContent = 'Dismiss';
      this.btn.onclick = () => { this.cancel(); };
    }
    if (this.msg) { this.meta.textContent = this.msg; return; }
    const r = this.rate();
    const pct = this.size ? Math.floor((sent / this.size) * 100) : 100;
    this.meta.textContent = human(sent) + ' of ' + human(this.size) + ' (' + pct + ' %)' +
      (r > 0 ? ' · ' + rate(r) + ' · ' + duration((this.size - sent) / r) + ' left' : '') +
      (this.resumed ? ' · resumed' : '');
  }
}

function upload(name, isDir, entries, emptyDirs) {
  if (!name) return;
  const job = new Job(name, isDir, entries, emptyDirs);
  state.jobs.set(job.id, job);
  job.start();
}

// Server sessions that no upload of this page is feeding: left by a reload,
// a closed tab or another browser.
function renderOrphans() {
  for (const u of state.sessions) {
    if (state.jobs.has(u.id)) continue;
    const id = 'orphan-' + u.id;
    let li = $(id);
    const pct = u.chunks ? Math.floor((u.have / u.chunks) * 100) : 0;
    const text = 'Interrupted at ' + pct + ' % (' + human(u.received) + ' of ' + human(u.size) +
      '). To resume, choose or drop the same ' + (u.type === 'dir' ? 'folder' : 'file') + ' again.';
    if (!li) {
      li = el('li', { class: 'upload', id },
        el('span', { class: 'name' }, nameNode(shown(u))),
        el('span', { class: 'btns' }, el('button', { type: 'button', class: 'small secondary', onclick: () => discardSession(u) }, 'Discard')),
        el('span', { class: 'meta' }, text), el('progress', { max: u.chunks || 1, value: u.have, 'aria-label': 'Interrupted upload of ' + shown(u) }));
      $('uploads').append(li);
    } else {
      li.querySelector('.meta').textContent = text;
    }
  }
  for (const li of document.querySelectorAll('#uploads li[id^="orphan-"]')) {
    const uid = li.id.slice(7);
    if (state.jobs.has(uid) || !state.sessions.some((u) => u.id === uid)) li.remove();
  }
}

// Chosen with the pickers: each file a share; a folder one share.
$('pick-files').addEventListener('click', () => $('file-input').click());
$('pick-folder').addEventListener('click', () => $('folder-input').click());
$('file-input').addEventListener('change', (e) => {
  for (const f of e.target.files) upload(f.name, false, [{ file: f, path: f.name }]);
  e.target.value = '';
});
$('folder-input').addEventListener('change', (e) => {
  const tops = new Map();
  for (const f of e.target.files) {
    const rel = f.webkitRelativePath || f.name;
    const i = rel.indexOf('/');
    const top = i < 0 ? '' : rel.slice(0, i);
    if (!tops.has(top)) tops.set(top, []);
    tops.get(top).push({ file: f, path: i < 0 ? rel : rel.slice(i + 1) });
  }
  for (const [top, entries] of tops) {
    if (top) upload(top, true, entries);
    else for (const en of entries) upload(en.file.name, false, [en]);
  }
  e.target.value = '';
});

// Drag and drop: files and whole folders (walked with the File System Entry API).
const drop = $('drop');
drop.addEventListener('keydown', (e) => {
  if (e.target === drop && (e.key === 'Enter' || e.key === ' ')) { e.preventDefault(); $('file-input').click(); }
});
['dragenter', 'dragover'].forEach((t) => document.addEventListener(t, (e) => {
  if (!e.dataTransfer?.types?.includes('Files') || $('upload-area').hidden) return;
  e.preventDefault();
  e.dataTransfer.dropEffect = 'copy';
  drop.classList.add('over');
}));
['dragleave', 'dragend'].forEach((t) => document.addEventListener(t, (e) => {
  if (!e.relatedTarget) drop.classList.remove('over');
}));
document.addEventListener('drop', async (e) => {
  drop.classList.remove('over');
  if (!e.dataTransfer || $('upload-area').hidden) return;
  e.preventDefault();
  const entries = [...e.dataTransfer.items].map((it) => it.webkitGetAsEntry?.()).filter(Boolean);
  if (!entries.length) {
    for (const f of e.dataTransfer.files) upload(f.name, false, [{ file: f, path: f.name }]);
    return;
  }
  for (const en of entries) {
    try {
      if (en.isFile) {
        const f = await new Promise((res, rej) => en.file(res, rej));
        upload(f.name, false, [{ file: f, path: f.name }]);
      } else if (en.isDirectory) {
        const files = [], dirs = [];
        await walk(en, '', files, dirs);
        upload(en.name, true, files, dirs);
      }
    } catch (err) {
      toast('Cannot read ' + en.name + ': ' + err.message);
    }
  }
});

async function walk(dirEntry, prefix, files, dirs) {
  const reader = dirEntry.createReader();
  let any = false;
  for (;;) {
    const batch = await new Promise((res, rej) => reader.readEntries(res, rej));
    if (!batch.length) break;
    for (const en of batch) {
      any = true;
      const p = prefix ? prefix + '/' + en.name : en.name;
      if (en.isFile) files.push({ file: await new Promise((res, rej) => en.file(res, rej)), path: p });
      else if (en.isDirectory) await walk(en, p, files, dirs);
    }
  }
  if (!any && prefix) dirs.push(prefix);
}

window.addEventListener('beforeunload', (e) => {
  for (const j of state.jobs.values()) {
    if (j.state === 'sending' || j.state === 'starting') { e.preventDefault(); e.returnValue = ''; return; }
  }
});

// ---- peer status ----------------------------------------------------------------

const KNOWN_STATUS = new Set(['mode', 'peer_id', 'addrs', 'peers', 'routing_table', 'shares', 'version', 'private', 'nat']);

// swarmText says whether the peer is in a private swarm (a pre-shared key,
// an allow-list) or the open one.
function swarmText(p) {
  if (!p) return '';
  const parts = [p.swarm_key ? 'private (swarm key ' + p.swarm_key + ')' : 'public (no swarm key)'];
  if (p.allow_peers?.length) parts.push(p.allow_peers.length + ' peers allowed');
  if (p.refused) parts.push(p.refused + ' connections refused');
  if (p.transports?.length) parts.push('transports: ' + p.transports.join(', '));
  return parts.join(' · ');
}

// natNodes shows AutoNAT's verdict, relays and hole punching.
function natNodes(n) {
  if (!n) return [];
  const out = [el('div', {}, 'reachability: ' + (n.reachability || 'unknown') +
    (n.hole_punches ? ' · hole punches: ' + n.hole_punches.succeeded + ' of ' + n.hole_punches.tried + ' succeeded' : '') +
    ' · chunk bytes direct ' + human(n.bytes_direct || 0) + ', relayed ' + human(n.bytes_relayed || 0))];
  if (n.relay_service) out.push(el('div', {}, 'relays for others: ' + n.relay_service));
  for (const a of n.relay_addrs || []) out.push(el('div', {}, 'via relay: ', el('code', {}, a)));
  return out;
}

async function refreshStatus() {
  const st = await api('GET', '/v1/status');
  const now = performance.now();
  const prev = state.prev;
  state.prev = { t: now, shares: new Map((st.shares || []).map((s) => [s.id, s])) };
  const dt = prev ? (now - prev.t) / 1000 : 0;
  const rateOf = (s, field) => {
    const p = prev?.shares.get(s.id);
    return p && dt > 0 ? Math.max(0, (s[field] - p[field]) / dt) : 0;
  };
  $('peer-id').textContent = st.peer_id || '';
  $('peer-addrs').replaceChildren(...(st.addrs || []).map((a) => el('li', {}, el('code', {}, a))));
  const peers = st.peers || [];
  $('peer-count').textContent = String(peers.length);
  $('peer-count2').textContent = String(peers.length);
  $('peer-list').replaceChildren(...peers.map((p) => el('li', {}, p.id + ' ', el('span', { class: 'muted' }, (p.addr || '') +
    (p.relayed ? (p.limited ? ' (relayed, limited: no chunks)' : ' (relayed)') : '')))));
  $('peer-swarm').textContent = swarmText(st.private);
  $('peer-nat').replaceChildren(...natNodes(st.nat));
  $('peer-rt').textContent = st.routing_table + (st.routing_table === 1 ? ' peer' : ' peers');
  const extra = Object.entries(st).filter(([k, v]) => !KNOWN_STATUS.has(k) && v !== null && v !== '' && !(Array.isArray(v) && !v.length));
  $('extra-title').hidden = $('peer-extra').hidden = !extra.length;
  $('peer-extra').replaceChildren(...extra.map(([k, v]) => el('div', {}, el('span', { class: 'muted' }, k.replace(/_/g, ' ') + ': '),
    typeof v === 'object' ? JSON.stringify(v) : String(v))));
  let up = 0, down = 0;
  const rows = (st.shares || []).map((s) => {
    const ru = rateOf(s, 'bytes_up'), rd = rateOf(s, 'bytes_down');
    up += ru; down += rd;
    const frac = s.chunks ? s.have / s.chunks : 1;
    const stateTd = stateCell({ ...s, shown: shown(s), frac, kind: 'share', type: 'file' });
    if (s.downloading) stateTd.append(el('span', { class: 'muted' }, ' · downloading'));
    if (s.last_error) stateTd.append(el('div', { class: 'error' }, s.last_error));
    return el('tr', {},
      el('td', { class: 'name', 'data-label': 'Name' }, nameNode(shown(s)), el('code', { class: 'id', title: s.id }, shortID(s.id))),
      stateTd,
      el('td', { class: 'num', 'data-label': 'Providers' }, String(s.providers ?? 0)),
      el('td', { class: 'num', 'data-label': 'From seed / peers' }, (s.chunks_from_seed ?? 0) + ' / ' + (s.chunks_from_peers ?? 0)),
      el('td', { class: 'num', 'data-label': 'Up' }, rate(ru), el('div', { class: 'muted' }, human(s.bytes_up) + ' total')),
      el('td', { class: 'num', 'data-label': 'Down' }, rate(rd), el('div', { class: 'muted' }, human(s.bytes_down) + ' total')));
  });
  document.querySelector('#peer-shares tbody').replaceChildren(...rows);
  $('peer-rates').textContent = '↑ ' + rate(up) + '   ↓ ' + rate(down);
}
$('copy-peer').addEventListener('click', () => copy($('peer-id').textContent, 'Peer ID'));

boot();
