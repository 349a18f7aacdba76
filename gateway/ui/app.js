// The picsift web frontend: sign in with an API key, upload a folder or a
// zip, follow a batch, browse and search stored images. Plain modules, no
// framework; every request goes to this origin with the key as Bearer.
// Uploads go through tus (resumable) with tus-js-client, which index.html
// loads before this module as a classic script (tus.min.js: window.tus).

import { sniff, zipBlob, zipStream, zipSummary } from './zip.js';

const KEY = 'picsift.key';
const RECENT = 'picsift.recent';
const $ = (id) => document.getElementById(id);

// ---------------------------------------------------------------- helpers

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') e.className = v;
    else if (k === 'text') e.textContent = v;
    else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? '' : v);
  }
  for (const c of children.flat()) if (c !== null && c !== undefined) e.append(c);
  return e;
}

export function bytes(n) {
  if (!Number.isFinite(n)) return '?';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return `${i === 0 ? n : n.toFixed(n < 10 ? 1 : 0)} ${units[i]}`;
}

function announce(text) {
  const a = $('announce');
  a.textContent = '';
  setTimeout(() => { a.textContent = text; }, 50);
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function key() { return sessionStorage.getItem(KEY); }

class ApiError extends Error {
  constructor(status, problem) {
    super(problem?.detail || problem?.title || `HTTP ${status}`);
    this.status = status;
    this.problem = problem;
  }
}

/** A request to the API with the key; retries 429 and 503 a few times. */
async function api(path, opts = {}) {
  for (let attempt = 0; ; attempt++) {
    const headers = new Headers(opts.headers || {});
    headers.set('Authorization', `Bearer ${key()}`);
    const r = await fetch(path, { ...opts, headers });
    if ((r.status === 429 || r.status === 503) && attempt < 4) {
      const wait = Number(r.headers.get('Retry-After')) || 1;
      await sleep(Math.min(wait, 10) * 1000);
      continue;
    }
    if (r.status === 401 && key()) {
      signOut('The server refused the key (unknown or revoked). Sign in again.');
      throw new ApiError(401, null);
    }
    if (!r.ok) {
      let problem = null;
      try { problem = await r.json(); } catch { /* not JSON */ }
      throw new ApiError(r.status, problem);
    }
    return r;
  }
}

const apiJson = async (path, opts) => (await api(path, opts)).json();

let policy = null;
async function loadPolicy() {
  if (!policy) policy = await apiJson('/v1/policy');
  return policy;
}
function remedy(code) {
  return policy?.reasons?.find((r) => r.code === code)?.remedy || '';
}

// Thumbnails: fetched with the key (an <img src> cannot send it), a few at
// a time, kept as blob: URLs until sign-out.
const thumbs = new Map();
let thumbActive = 0;
const thumbQueue = [];
function thumbnail(id, size = 192) {
  const k = `${id}/${size}`;
  if (!thumbs.has(k)) {
    thumbs.set(k, new Promise((resolve, reject) => {
      thumbQueue.push({ id, size, resolve, reject });
      pumpThumbs();
    }));
  }
  return thumbs.get(k);
}
function pumpThumbs() {
  while (thumbActive < 4 && thumbQueue.length) {
    const job = thumbQueue.shift();
    thumbActive++;
    api(`/v1/images/${job.id}/thumbnail?size=${job.size}`)
      .then((r) => r.blob())
      .then((b) => job.resolve(URL.createObjectURL(b)), job.reject)
      .finally(() => { thumbActive--; pumpThumbs(); });
  }
}
const seen = new IntersectionObserver((items) => {
  for (const it of items) {
    if (!it.isIntersecting) continue;
    seen.unobserve(it.target);
    const img = it.target;
    thumbnail(img.dataset.id).then((url) => { img.src = url; }, () => { img.alt += ' (could not load)'; });
  }
}, { rootMargin: '200px' });
function thumbImg(id, alt) {
  const img = el('img', { class: 'thumb', alt, 'data-id': id, width: 96, height: 96 });
  seen.observe(img);
  return img;
}

async function sha256Hex(blob) {
  if (!crypto.subtle) return null; // only in secure contexts (https, localhost)
  const d = await crypto.subtle.digest('SHA-256', await blob.arrayBuffer());
  return [...new Uint8Array(d)].map((b) => b.toString(16).padStart(2, '0')).join('');
}

/** Downloads a stored image with the key, checks its hash, saves it. */
async function download(id, name, button) {
  const label = button.textContent;
  button.disabled = true;
  button.textContent = 'Downloading…';
  try {
    const r = await api(`/v1/images/${id}`);
    const blob = await r.blob();
    const hash = await sha256Hex(blob);
    if (hash && hash !== id) throw new Error(`the bytes hash to ${hash}, not to the image id`);
    const ext = { 'image/jpeg': 'jpg', 'image/png': 'png', 'image/webp': 'webp', 'image/heic': 'heic', 'image/avif': 'avif' }[blob.type] || 'bin';
    const url = URL.createObjectURL(blob);
    const a = el('a', { href: url, download: name || `${id}.${ext}` });
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 60_000);
    announce(hash ? 'Downloaded; its SHA-256 matches its id.' : 'Downloaded.');
  } catch (e) {
    announce(`Download failed: ${e.message}`);
    button.after(el('span', { class: 'error', role: 'alert', text: ` ${e.message}` }));
  } finally {
    button.disabled = false;
    button.textContent = label;
  }
}

// ----------------------------------------------------------------- routing

let leaving = new AbortController();

let shown = null;
function show(view) {
  for (const s of document.querySelectorAll('main > section')) s.hidden = s.id !== `view-${view}`;
  // A new view: move the focus to its heading, as a page load would.
  if (shown !== null && shown !== view) $(`view-${view}`).querySelector('h1').focus();
  shown = view;
  $('nav').hidden = view === 'signin';
  for (const a of document.querySelectorAll('nav a')) {
    if (a.dataset.view === view) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
}

async function route() {
  leaving.abort();
  leaving = new AbortController();
  const hash = location.hash;
  if (!key()) {
    show('signin');
    document.title = 'Sign in · picsift';
    return;
  }
  const m = hash.match(/^#\/batch\/([A-Za-z0-9_-]+)$/);
  try {
    if (m) {
      show('batch');
      document.title = `Batch ${m[1]} · picsift`;
      await batchPage(m[1], leaving.signal);
    } else if (hash === '#/batches') {
      show('batches');
      document.title = 'Batches · picsift';
      await listBatches(true);
    } else if (hash === '#/images') {
      show('images');
      document.title = 'Images · picsift';
      await imagesPage();
    } else {
      show('upload');
      document.title = 'Upload · picsift';
      await uploadPage();
    }
  } catch (e) {
    if (e.name !== 'AbortError' && e.status !== 401) announce(`Error: ${e.message}`);
  }
}

function signOut(message = '') {
  sessionStorage.removeItem(KEY);
  policy = null;
  for (const p of thumbs.values()) p.then((u) => URL.revokeObjectURL(u), () => {});
  thumbs.clear();
  localFiles = null;
  $('signin-error').textContent = message;
  $('signin-key').value = '';
  location.hash = '#/';
  route();
  $('signin-key').focus();
}

// ----------------------------------------------------------------- sign-in

$('signin-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const k = $('signin-key').value.trim();
  $('signin-error').textContent = '';
  if (!k.startsWith('psk_')) {
    $('signin-error').textContent = 'An API key starts with psk_.';
    return;
  }
  const r = await fetch('/v1/policy', { headers: { Authorization: `Bearer ${k}` } });
  if (!r.ok) {
    let detail = `HTTP ${r.status}`;
    try { detail = (await r.json()).detail; } catch { /* keep the status */ }
    $('signin-error').textContent = `Not signed in: ${detail}`;
    return;
  }
  policy = await r.json();
  sessionStorage.setItem(KEY, k);
  $('signin-key').value = '';
  await route();
});
$('signout').addEventListener('click', () => signOut('Signed out.'));
$('skip').addEventListener('click', (ev) => { ev.preventDefault(); $('main').focus(); });

// ------------------------------------------------------------------ upload

// What was picked: [{name, file, kind, refusal}], and the folder its
// names were relative to (if any); and, after an upload, the files by entry
// name, to show a duplicate next to its original.
let picked = [];
let pickedFolder = '';
let localFiles = null;

function recent() {
  try { return JSON.parse(localStorage.getItem(RECENT)) || []; } catch { return []; }
}
function remember(id, label) {
  const list = [{ id, label, at: new Date().toISOString() }, ...recent().filter((r) => r.id !== id)].slice(0, 10);
  localStorage.setItem(RECENT, JSON.stringify(list));
}

async function uploadPage() {
  const p = await loadPolicy();
  $('policy-summary').textContent = `This server accepts ${p.formats.map((f) => f.toUpperCase()).join(', ')} images, `
    + `at most ${p.max_entries} files and ${bytes(p.max_upload_bytes)} per upload.`;
  const list = recent();
  $('recent-box').hidden = list.length === 0;
  $('recent').replaceChildren(...list.map((r) => el('li', {},
    el('a', { href: `#/batch/${r.id}`, text: r.id }), ` ${r.label || ''} · ${new Date(r.at).toLocaleString()}`)));
}

/** Strips the folder all names share (kept in `pickedFolder`), and leading slashes. */
function relativeNames(items) {
  const names = items.map((i) => i.name.replace(/^\/+/, ''));
  const first = names[0]?.split('/')[0];
  const shared = names.length > 0 && names.every((n) => n.includes('/') && n.split('/')[0] === first);
  items.forEach((it, i) => { it.name = shared ? names[i].slice(first.length + 1) : names[i]; });
  pickedFolder = shared ? first : '';
  return items;
}

function refusal(kind, allowed) {
  if (kind && allowed.includes(kind)) return null;
  if (kind === 'empty') return 'empty file: not an image';
  if (kind === 'zip' || kind === 'gzip') return `a ${kind} archive inside the upload: nested archives are refused`;
  if (['jpeg', 'png', 'webp', 'heic', 'avif'].includes(kind)) return `${kind.toUpperCase()}, but this server accepts only ${allowed.map((f) => f.toUpperCase()).join(', ')}`;
  if (kind) return `${kind.toUpperCase()} is not an accepted format (${allowed.map((f) => f.toUpperCase()).join(', ')} only)`;
  return 'not an image (its first bytes match no image format; the name does not matter)';
}

async function pick(items) {
  const p = await loadPolicy();
  $('upload-error').textContent = '';
  picked = relativeNames(items.filter((i) => i.file.size >= 0));
  for (const it of picked) {
    it.kind = sniff(new Uint8Array(await it.file.slice(0, 32).arrayBuffer()));
    it.refusal = refusal(it.kind, p.formats);
  }
  // One zip on its own is sent as it is.
  const zip = picked.length === 1 && picked[0].kind === 'zip';
  const refused = zip ? [] : picked.filter((i) => i.refusal);
  const total = picked.reduce((n, i) => n + i.file.size, 0);
  $('selection').hidden = picked.length === 0;
  $('selection-summary').textContent = zip
    ? `A zip, ${picked[0].name} (${bytes(total)}): sent as it is; the server checks its entries.`
    : `${picked.length} file${picked.length === 1 ? '' : 's'}, ${bytes(total)}, zipped in the browser as they are sent.`;
  $('refused-box').hidden = refused.length === 0;
  $('refused-title').textContent = `${refused.length} file${refused.length === 1 ? '' : 's'} will be refused`;
  $('refused').replaceChildren(...refused.map((i) => el('li', {}, el('code', { text: i.name }), ` — ${i.refusal}`)));
  announce(refused.length ? `${picked.length} files selected; ${refused.length} will be refused.` : `${picked.length} files selected.`);
}

$('pick-folder').addEventListener('change', (ev) => {
  pick([...ev.target.files].map((f) => ({ name: f.webkitRelativePath || f.name, file: f })));
});
$('pick-files').addEventListener('change', (ev) => {
  pick([...ev.target.files].map((f) => ({ name: f.name, file: f })));
});
$('clear-button').addEventListener('click', () => {
  picked = [];
  $('pick-folder').value = '';
  $('pick-files').value = '';
  $('selection').hidden = true;
});

/** The files under a dropped entry (folders walked). */
async function walk(entry, out) {
  if (entry.isFile) {
    const file = await new Promise((res, rej) => entry.file(res, rej));
    out.push({ name: entry.fullPath, file });
  } else if (entry.isDirectory) {
    const reader = entry.createReader();
    for (;;) {
      const batch = await new Promise((res, rej) => reader.readEntries(res, rej));
      if (batch.length === 0) break;
      for (const e of batch) await walk(e, out);
    }
  }
}

function dropZone(zone, onItems) {
  zone.addEventListener('dragover', (ev) => { ev.preventDefault(); zone.classList.add('over'); });
  zone.addEventListener('dragleave', () => zone.classList.remove('over'));
  zone.addEventListener('drop', async (ev) => {
    ev.preventDefault();
    zone.classList.remove('over');
    const entries = [...ev.dataTransfer.items].map((i) => i.webkitGetAsEntry?.()).filter(Boolean);
    const out = [];
    if (entries.length) for (const e of entries) await walk(e, out);
    else for (const f of ev.dataTransfer.files) out.push({ name: f.name, file: f });
    onItems(out);
  });
}
dropZone($('drop'), pick);

/**
 * Whether this browser can send a ReadableStream as a request body.
 * Chromium can, but only over HTTP/2 or QUIC: over HTTP/1.1 (what picsift
 * serves itself) the fetch fails at once, so streaming is tried only on
 * https (a proxy in front may speak HTTP/2) and the Blob upload is the
 * fallback.
 */
function requestStreams() {
  if (location.protocol !== 'https:') return false;
  let duplex = false;
  const hasType = new Request('/', {
    body: new ReadableStream(), method: 'POST',
    get duplex() { duplex = true; return 'half'; },
  }).headers.has('Content-Type');
  return duplex && !hasType;
}

function xhrUpload(body, onProgress) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open('POST', '/v1/batches');
    xhr.setRequestHeader('Authorization', `Bearer ${key()}`);
    xhr.setRequestHeader('Content-Type', 'application/zip');
    xhr.responseType = 'json';
    xhr.upload.onprogress = (e) => onProgress(e.loaded, e.lengthComputable ? e.total : body.size);
    xhr.onload = () => (xhr.status === 202 ? resolve(xhr.response) : reject(new ApiError(xhr.status, xhr.response)));
    xhr.onerror = () => reject(new Error('the connection failed'));
    xhr.send(body);
  });
}

/** Shows `done` of `all` bytes on the bar; the rate counts from `from` (where a resumed upload starts). */
function progressReporter(total, from = 0) {
  const start = performance.now();
  return (done, all = total) => {
    const secs = (performance.now() - start) / 1000;
    $('upload-bar').max = all || 1;
    $('upload-bar').value = done;
    const rate = secs > 0 ? Math.max(0, done - from) / secs : 0;
    const left = rate > 0 ? Math.max(0, (all - done) / rate) : NaN;
    $('upload-speed').textContent = `${bytes(done)} of ${bytes(all)} · ${bytes(rate)}/s`
      + (Number.isFinite(left) && done < all ? ` · about ${Math.ceil(left)} s left` : '');
  };
}

// ------------------------------------------------------------- upload (tus)

// tus 1.0 at POST /v1/uploads: the zip goes up in chunks (PATCH), each one
// acknowledged, so a dropped connection costs at most a chunk, and the
// upload's URL is kept in localStorage (by tus-js-client, under a
// fingerprint of the selection) so that picking the same files again after
// a reload, or another day, goes on from the server's offset. When the
// last byte is in, the server makes the batch, as POST /v1/batches would.

const CHUNK_SIZE = 16 * 1024 * 1024;
// A failed request is tried again after 0, 1, 3 and 5 s, then the error is
// shown (Upload again goes on from the server's offset); a browser that
// knows it is offline waits for the network instead.
const RETRY_DELAYS = [0, 1000, 3000, 5000];

function chunkSize() {
  // tests/web sets a small one, to cut a test upload into several chunks.
  const n = Number(localStorage.getItem('picsiftChunkSize'));
  return Number.isSafeInteger(n) && n > 0 ? n : CHUNK_SIZE;
}

/**
 * Whether the server takes tus uploads: {maxSize} when OPTIONS /v1/uploads
 * names tus 1.0.0, else null (a server from before tus answers 404; then
 * the page uploads in one request, as it did).
 */
async function tusSupport() {
  if (!globalThis.tus?.isSupported) return null;
  try {
    const r = await fetch('/v1/uploads', { method: 'OPTIONS', headers: { Authorization: `Bearer ${key()}` } });
    const versions = (r.headers.get('Tus-Version') || '').split(',').map((v) => v.trim());
    if (!r.ok || !versions.includes('1.0.0')) return null;
    return { maxSize: Number(r.headers.get('Tus-Max-Size')) || Infinity };
  } catch {
    return null;
  }
}

/**
 * cyrb53 (bryc, public domain): a fast 53-bit hash. The fingerprint only
 * picks which of this browser's own earlier uploads to go on with (and
 * the size must match too), so it needs to spread, not to resist attack.
 */
function hash53(bytes, seed = 0) {
  let h1 = 0xdeadbeef ^ seed;
  let h2 = 0x41c6ce57 ^ seed;
  for (let i = 0; i < bytes.length; i++) {
    h1 = Math.imul(h1 ^ bytes[i], 2654435761);
    h2 = Math.imul(h2 ^ bytes[i], 1597334677);
  }
  h1 = Math.imul(h1 ^ (h1 >>> 16), 2246822507) ^ Math.imul(h2 ^ (h2 >>> 13), 3266489909);
  h2 = Math.imul(h2 ^ (h2 >>> 16), 2246822507) ^ Math.imul(h1 ^ (h1 >>> 13), 3266489909);
  return (4294967296 * (2097151 & h2) + (h1 >>> 0)).toString(16).padStart(14, '0');
}

/**
 * The key under which tus-js-client keeps the upload URL of `body` (a zip)
 * in localStorage: the same for the same selection picked again (a zip
 * file: its name, size and time; a folder: the zip built from it, which
 * is the same bytes again), and different for anything else. Both also
 * hash the zip's central directory, which holds every entry's CRC-32, so
 * changed contents under the same names and times start a new upload
 * instead of finishing the old one with other bytes. The key's public id
 * (psk_ID_secret) keeps one key from picking up another's uploads.
 */
async function fingerprint(body, file) {
  const keyId = (key() || '').split('_')[1] || '';
  const what = file ? `zip:${file.name}:${file.lastModified}` : `folder:${pickedFolder}`;
  return ['picsift', keyId, what, body.size, hash53(await zipSummary(body))].join(':');
}

/** A tus-js-client error as the page shows it: the server's problem detail when it sent one. */
function tusError(err) {
  const res = err.originalResponse;
  if (!res) return err.originalRequest ? new Error('the connection failed') : err;
  let problem = null;
  try { problem = JSON.parse(res.getBody()); } catch { /* not JSON */ }
  return new ApiError(res.getStatus(), problem);
}

/**
 * Uploads the zip `body` with tus; resolves to the batch id. Goes on with
 * this browser's earlier upload of the same selection where there is one,
 * showing where it resumes.
 */
async function tusUpload(body, { fingerprint: fp, filename }) {
  const total = body.size;
  const phase = $('upload-phase').textContent;
  let report = progressReporter(total);
  let upload;
  const done = new Promise((resolve, reject) => {
    upload = new globalThis.tus.Upload(body, {
      endpoint: new URL('/v1/uploads', location.href).href,
      chunkSize: chunkSize(),
      retryDelays: RETRY_DELAYS,
      headers: { Authorization: `Bearer ${key()}` },
      metadata: { filename },
      fingerprint: () => Promise.resolve(fp),
      // A finished upload is a batch; the same files picked again are a new upload.
      removeFingerprintOnSuccess: true,
      onProgress: (sent, all) => report(sent, all),
      onAfterResponse: (req, res) => {
        // A HEAD asks the server where its copy ends: when going on with
        // an earlier upload, and again after every dropped connection.
        if (req.getMethod() !== 'HEAD' || res.getStatus() !== 200) return;
        const offset = Number(res.getHeader('Upload-Offset'));
        if (!(offset > 0 && offset < total)) return;
        $('upload-phase').textContent = `Resuming at ${bytes(offset)} of ${bytes(total)}`;
        announce(`Resuming the upload at ${bytes(offset)} of ${bytes(total)}.`);
        report = progressReporter(total, offset);
        report(offset);
      },
      onShouldRetry: (err, attempt, options) => {
        const retry = globalThis.tus.defaultOptions.onShouldRetry(err, attempt, options);
        if (retry) $('upload-phase').textContent = `The connection dropped; trying again (${attempt + 1} of ${RETRY_DELAYS.length})`;
        return retry;
      },
      onSuccess: ({ lastResponse }) => {
        const id = lastResponse.getHeader('Picsift-Batch-Id');
        if (id) resolve(id);
        else reject(new Error('the server took every byte but named no batch (no Picsift-Batch-Id); see the batches page'));
      },
      onError: (err) => {
        if (!navigator.onLine) {
          // Retrying offline is pointless: wait for the network, then go on
          // from the server's offset (start() asks it with a HEAD).
          $('upload-phase').textContent = 'Offline: the upload goes on when the network is back';
          announce('Offline: the upload goes on when the network is back.');
          window.addEventListener('online', () => { $('upload-phase').textContent = phase; upload.start(); }, { once: true });
          return;
        }
        const e = tusError(err);
        if (e.status === 401 && key()) signOut('The server refused the key (unknown or revoked). Sign in again.');
        // Refused (the archive, or the upload is gone): picking the same
        // files again starts afresh instead of asking for this one again.
        if (e.status >= 400 && e.status < 500 && ![401, 409, 423].includes(e.status)) {
          upload.findPreviousUploads()
            .then((list) => Promise.all(list.map((p) => globalThis.tus.defaultOptions.urlStorage.removeUpload(p.urlStorageKey))))
            .catch(() => {});
        }
        reject(e);
      },
    });
  });
  // The newest earlier upload of these bytes; any of another size is stale.
  const previous = (await upload.findPreviousUploads())
    .filter((p) => p.size === total && p.uploadUrl)
    .sort((a, b) => Date.parse(b.creationTime) - Date.parse(a.creationTime));
  if (previous.length) upload.resumeFromPreviousUpload(previous[0]);
  upload.start();
  return done;
}

$('upload-button').addEventListener('click', async () => {
  const btn = $('upload-button');
  const zip = picked.length === 1 && picked[0].kind === 'zip';
  const files = zip ? picked : picked.filter((i) => !($('skip-refused').checked && i.refusal));
  if (files.length === 0) { $('upload-error').textContent = 'Nothing to upload.'; return; }
  btn.disabled = true;
  $('upload-error').textContent = '';
  $('upload-progress').hidden = false;
  $('upload-speed').textContent = '';
  try {
    const total = files.reduce((n, i) => n + i.file.size, 0);
    const tusServer = await tusSupport();
    let answer;
    if (tusServer) {
      let body = files[0].file;
      if (!zip) {
        // tus sends slices of a Blob: the zip is built as one (its parts
        // are the files, not copies), the same bytes each time.
        $('upload-phase').textContent = 'Reading the files (CRC-32)';
        let read = 0;
        const reading = progressReporter(total);
        body = await zipBlob(files, (n) => { read += n; reading(read); });
      }
      if (body.size > tusServer.maxSize) {
        throw new Error(`the upload is ${bytes(body.size)}; this server takes at most ${bytes(tusServer.maxSize)} in one upload`);
      }
      $('upload-phase').textContent = zip ? 'Uploading the zip' : 'Uploading';
      const id = await tusUpload(body, {
        fingerprint: await fingerprint(body, zip ? files[0].file : null),
        filename: zip ? files[0].name : `${pickedFolder || 'files'}.zip`,
      });
      answer = { id };
    } else if (zip) {
      $('upload-phase').textContent = 'Uploading the zip';
      answer = await xhrUpload(files[0].file, progressReporter(total));
    } else if (requestStreams()) {
      $('upload-phase').textContent = 'Zipping and uploading';
      let sent = 0;
      const report = progressReporter(total);
      const r = await api('/v1/batches', {
        method: 'POST', duplex: 'half',
        headers: { 'Content-Type': 'application/zip' },
        body: zipStream(files, (n) => { sent += n; report(sent); }),
      });
      answer = await r.json();
    } else {
      // The Blob's parts are the files themselves (no copy); its headers
      // need each file's CRC-32 first.
      $('upload-phase').textContent = 'Reading the files (CRC-32)';
      let read = 0;
      const reading = progressReporter(total);
      const blob = await zipBlob(files, (n) => { read += n; reading(read); });
      $('upload-phase').textContent = 'Uploading';
      answer = await xhrUpload(blob, progressReporter(blob.size));
    }
    localFiles = { id: answer.id, files: new Map(files.map((f) => [f.name, f.file])) };
    remember(answer.id, zip ? files[0].name : `${files.length} files`);
    announce(`Uploaded: batch ${answer.id}.`);
    location.hash = `#/batch/${answer.id}`;
  } catch (e) {
    $('upload-error').textContent = `Upload failed: ${e.message}`;
  } finally {
    btn.disabled = false;
    $('upload-progress').hidden = true;
  }
});

// ------------------------------------------------------------------- batch

const FINAL = ['completed', 'failed', 'expired'];
const COUNTS = ['accepted', 'duplicate', 'rejected', 'failed', 'pending'];

function showStatus(s) {
  $('batch-phase').textContent = s.phase;
  const c = s.counts || {};
  const decided = (s.total_entries || 0) - (c.pending || 0);
  $('batch-bar').max = s.total_entries || 1;
  $('batch-bar').value = s.phase === 'received' ? 0 : decided;
  $('batch-bar-label').textContent = `Entries decided: ${s.phase === 'received' ? 0 : decided} of ${s.total_entries}`;
  $('batch-counts').replaceChildren(...COUNTS.map((k) => el('div', { 'data-count': k },
    el('dt', { text: k }), el('dd', { text: String(c[k] ?? 0) }))));
  $('batch-error').textContent = s.error || '';
}

/** Reads server-sent events from a fetch() body (EventSource cannot send the key). */
async function readEvents(id, onStatus, signal) {
  const r = await api(`/v1/batches/${id}/events`, { headers: { Accept: 'text/event-stream' }, signal });
  const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
  let buf = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buf += value.replace(/\r\n?/g, '\n');
    let at;
    while ((at = buf.indexOf('\n\n')) >= 0) {
      const block = buf.slice(0, at);
      buf = buf.slice(at + 2);
      const data = block.split('\n').filter((l) => l.startsWith('data:')).map((l) => l.slice(5).replace(/^ /, '')).join('\n');
      if (data) onStatus(JSON.parse(data));
    }
  }
}

/** Follows a batch to a final phase: events, else polling. */
async function follow(id, signal) {
  let last = null;
  const seenStatus = (s) => { last = s; showStatus(s); };
  let live = true;
  while (!signal.aborted && !(last && FINAL.includes(last.phase))) {
    if (live) {
      $('batch-live').textContent = '· live';
      try {
        const before = last;
        await readEvents(id, seenStatus, signal);
        // The stream ended: after a final phase, or its time ran out
        // (reconnect); without a single event, poll instead.
        if (last !== before) continue;
        live = false;
      } catch (e) {
        if (signal.aborted || e.status === 404 || e.status === 401) throw e;
        live = false; // no events (a proxy that buffers, say): poll instead
      }
    }
    $('batch-live').textContent = '· polling';
    seenStatus(await apiJson(`/v1/batches/${id}`, { signal }));
    if (!FINAL.includes(last.phase)) await sleep(1000);
  }
  $('batch-live').textContent = '';
  return last;
}

let report = [];
let reportLimit = 200;
const previews = new WeakMap(); // File -> blob: URL of an uploaded duplicate

async function batchPage(id, signal) {
  $('batch-title').textContent = `Batch ${id}`;
  $('report-box').hidden = true;
  $('batch-error').textContent = '';
  $('batch-counts').replaceChildren();
  await loadPolicy();
  let status;
  try {
    status = await follow(id, signal);
  } catch (e) {
    if (e.name === 'AbortError') return;
    $('batch-error').textContent = e.status === 404 ? `There is no batch ${id} (or it is not yours).` : e.message;
    return;
  }
  if (signal.aborted) return;
  announce(`Batch ${status.phase}: ${status.counts.accepted} accepted, ${status.counts.duplicate} duplicates, ${status.counts.rejected} rejected, ${status.counts.failed} failed.`);
  report = [];
  let after = '';
  for (;;) {
    const page = await apiJson(`/v1/batches/${id}/report?limit=1000${after ? `&after=${after}` : ''}`, { signal });
    report.push(...page.entries);
    if (!page.next) break;
    after = page.next;
  }
  const verdicts = [...new Set(report.map((e) => e.verdict))];
  const reasons = [...new Set(report.map((e) => e.reason).filter(Boolean))].sort();
  const opts = (sel, values) => sel.replaceChildren(el('option', { value: '', text: 'all' }), ...values.map((v) => el('option', { value: v, text: v })));
  opts($('filter-verdict'), verdicts);
  opts($('filter-reason'), reasons);
  $('filter-name').value = '';
  reportLimit = 200;
  $('report-box').hidden = false;
  renderReport(id);
}

function entryRow(batch, e) {
  const why = [];
  if (e.reason) {
    why.push(el('code', { text: e.reason }));
    if (e.detail) why.push(`: ${e.detail}`);
    const r = remedy(e.reason);
    if (r) why.push(el('span', { class: 'remedy', text: r }));
  } else if (e.verdict === 'duplicate') {
    why.push(`${e.duplicate_kind || ''} duplicate${e.distance != null ? `, ${e.distance} bits apart` : ''}`);
    if (!e.duplicate_of) why.push(el('span', { class: 'remedy', text: 'The original is another tenant\u2019s: its id is not shown.' }));
  } else if (e.detail) {
    why.push(e.detail);
  }
  let image = '';
  if (e.verdict === 'accepted' && e.image_id) {
    image = el('div', { class: 'pair' },
      el('figure', {}, thumbImg(e.image_id, `Stored image of ${e.entry}`)),
      el('button', { type: 'button', class: 'link', text: 'Download', 'aria-label': `Download ${e.entry}`, onclick: (ev) => download(e.image_id, e.entry.split('/').pop(), ev.target) }));
  } else if (e.verdict === 'duplicate') {
    const local = localFiles?.id === batch ? localFiles.files.get(e.entry) : null;
    const figs = [];
    if (local) {
      if (!previews.has(local)) previews.set(local, URL.createObjectURL(local));
      figs.push(el('figure', {}, el('img', { class: 'thumb', src: previews.get(local), alt: `Uploaded ${e.entry}` }), el('figcaption', { text: 'uploaded' })));
    }
    if (e.duplicate_of) {
      figs.push(el('figure', {}, thumbImg(e.duplicate_of, `Original of ${e.entry}`), el('figcaption', { text: `original ${e.duplicate_of.slice(0, 12)}…` })));
    }
    image = el('div', { class: 'pair' }, figs);
  }
  return el('tr', { 'data-verdict': e.verdict, 'data-index': e.index },
    el('td', { 'data-label': '#', text: String(e.index) }),
    el('td', { 'data-label': 'Entry', class: 'name' }, e.entry),
    el('td', { 'data-label': 'Verdict', class: `v-${e.verdict}`, text: e.verdict }),
    el('td', { 'data-label': 'Why', class: 'why' }, why),
    el('td', { 'data-label': 'Image' }, image));
}

function renderReport(batch) {
  const v = $('filter-verdict').value;
  const r = $('filter-reason').value;
  const n = $('filter-name').value.toLowerCase();
  const rows = report.filter((e) => (!v || e.verdict === v) && (!r || e.reason === r) && (!n || e.entry.toLowerCase().includes(n)));
  $('report-shown').textContent = `${rows.length} of ${report.length} entries${rows.length > reportLimit ? `, the first ${reportLimit} shown` : ''}.`;
  $('report').tBodies[0].replaceChildren(...rows.slice(0, reportLimit).map((e) => entryRow(batch, e)));
  $('report-more').hidden = rows.length <= reportLimit;
}
for (const id of ['filter-verdict', 'filter-reason', 'filter-name']) {
  $(id).addEventListener('input', () => { reportLimit = 200; renderReport(currentBatch()); });
}
$('report-filter').addEventListener('submit', (ev) => ev.preventDefault());
$('report-more').addEventListener('click', () => { reportLimit += 200; renderReport(currentBatch()); });
function currentBatch() { return location.hash.split('/')[2]; }

// ------------------------------------------------------------------ images

let searchNext = null;
let searchQuery = '';

async function imagesPage() {
  await loadPolicy();
  if (!$('results').children.length) await search(true);
}

function searchParams() {
  const q = new URLSearchParams();
  for (const input of $('search-form').querySelectorAll('input, select')) {
    let v = input.value.trim();
    if (!v) continue;
    if (input.type === 'datetime-local') v = `${v.length === 16 ? `${v}:00` : v}Z`;
    q.set(input.name, v);
  }
  if (q.get('sort') === '-created') q.delete('sort');
  return q;
}

function imageCard(img, extra) {
  const name = img.entry ? img.entry.split('/').pop() : `${img.id}.${img.format === 'jpeg' ? 'jpg' : img.format}`;
  return el('li', { 'data-id': img.id },
    thumbImg(img.id, img.entry ? `Image ${img.entry}` : `Image ${img.id.slice(0, 12)}`),
    el('span', { class: 'id', text: img.id }),
    extra ? el('span', { text: extra }) : null,
    img.width ? el('span', { text: `${img.format} · ${img.width}×${img.height} · ${bytes(img.size)}` }) : null,
    img.created_at ? el('span', { class: 'muted', text: new Date(img.created_at).toLocaleString() }) : null,
    img.entry ? el('span', { class: 'muted', text: `${img.entry}${img.batch ? ` (batch ${img.batch.slice(0, 8)}…)` : ''}` }) : null,
    el('div', { class: 'actions' },
      el('button', { type: 'button', class: 'secondary', text: 'Download', 'aria-label': `Download ${name}`, onclick: (ev) => download(img.id, name, ev.target) }),
      el('button', { type: 'button', class: 'secondary', text: 'Similar', 'aria-label': `Images similar to ${name}`, onclick: () => similar({ image_id: img.id }) })));
}

async function search(fresh) {
  $('images-error').textContent = '';
  try {
    if (fresh) { searchQuery = searchParams().toString(); searchNext = null; }
    const q = new URLSearchParams(searchQuery);
    q.set('limit', '48');
    if (searchNext) q.set('after', searchNext);
    const page = await apiJson(`/v1/images?${q}`);
    const cards = page.images.map((i) => imageCard(i));
    if (fresh) $('results').replaceChildren(...cards);
    else $('results').append(...cards);
    searchNext = page.next;
    $('results-more').hidden = !page.next;
    $('results-title').textContent = 'Results';
    $('results-summary').textContent = `${$('results').children.length} image${$('results').children.length === 1 ? '' : 's'}${page.next ? ' (more below)' : ''}.`;
  } catch (e) {
    $('images-error').textContent = `Search failed: ${e.message}`;
  }
}

async function similar(body) {
  $('images-error').textContent = '';
  try {
    let page;
    if (body instanceof Blob) {
      page = await apiJson('/v1/search/similar?limit=48', { method: 'POST', headers: { 'Content-Type': body.type || 'application/octet-stream' }, body });
    } else {
      page = await apiJson('/v1/search/similar', { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ ...body, limit: 48 }) });
    }
    const cards = await Promise.all(page.matches.map(async (m) => {
      let meta = { id: m.image_id };
      try { meta = await apiJson(`/v1/images/${m.image_id}/metadata`); } catch { /* shown by id */ }
      return imageCard(meta, `${m.distance} bits apart`);
    }));
    $('results').replaceChildren(...cards);
    $('results-more').hidden = true;
    $('results-title').textContent = 'Similar images';
    $('results-summary').textContent = `${cards.length} similar image${cards.length === 1 ? '' : 's'} (PDQ, nearest first).`;
    $('results-title').scrollIntoView({ block: 'start' });
  } catch (e) {
    $('images-error').textContent = `Similar search failed: ${e.message}`;
  }
}

$('search-form').addEventListener('submit', (ev) => { ev.preventDefault(); search(true); });
$('results-more').addEventListener('click', () => search(false));
$('similar-file').addEventListener('change', (ev) => { if (ev.target.files[0]) similar(ev.target.files[0]); });
dropZone($('similar-drop'), (items) => { if (items[0]) similar(items[0].file); });

// -------------------------------------------------------------------- start

window.addEventListener('hashchange', route);
route();

// ----------------------------------------------------------------- batches

let batchesNext = null;
async function listBatches(fresh) {
  const body = $('batches').querySelector('tbody');
  $('batches-error').textContent = '';
  const q = new URLSearchParams();
  const owner = $('b-owner').value.trim();
  if (owner) q.set('owner', owner);
  if (!fresh && batchesNext) q.set('after', batchesNext);
  let page;
  try {
    page = await apiJson(`/v1/batches?${q}`);
  } catch (e) {
    $('batches-error').textContent = e.problem ? `${e.problem.title}: ${e.problem.detail}` : e.message;
    return;
  }
  if (fresh) body.replaceChildren();
  for (const b of page.batches) {
    body.append(el('tr', {},
      el('td', {}, el('a', { href: `#/batch/${b.id}`, text: b.id })),
      el('td', { text: b.owner }),
      el('td', { text: b.phase }),
      el('td', { text: String(b.total_entries) }),
      el('td', { text: String(b.counts.accepted) }),
      el('td', { text: String(b.counts.duplicate) }),
      el('td', { text: String(b.counts.rejected + b.counts.failed) }),
      el('td', { text: new Date(b.created_at).toLocaleString() })));
  }
  batchesNext = page.next;
  $('batches-more').hidden = !page.next;
  announce(`${body.children.length} batches listed.`);
}
$('batches-form').addEventListener('submit', (ev) => { ev.preventDefault(); listBatches(true); });
$('batches-more').addEventListener('click', () => listBatches(false));
