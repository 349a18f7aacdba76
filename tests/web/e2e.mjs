// End to end: the web frontend in headless Chromium against a real
// `picsift serve` (target/debug/picsift, or PICSIFT_BIN). Upload a folder
// with good, duplicate and refused files, see the refusals before the
// upload, follow the batch to completion, check the verdicts, download an
// accepted image and check that its bytes hash to its id, search. Saves a
// screenshot of each page into tests/web/screenshots/ (git-ignored).
//
// Uploads go through tus (resumable): a ~40 MB zip in small chunks goes
// on by itself after the browser goes offline and back, and after the
// connection drops and the page is reloaded mid-upload, picking the same
// zip again resumes at the server's offset. A server without tus (older,
// its OPTIONS /v1/uploads answered 404 here) still gets the upload in one
// request. tus-js-client in Node (tests/node/tus_upload.mjs) stops an
// upload halfway and finishes it later, and sees a strict upload refused.
//
// Also: the browser's streaming zip writer (gateway/ui/zip.js) sends a
// folder from Node (whose fetch streams request bodies over HTTP/1.1,
// which Chromium's does not) and the server takes it.

import { spawn, execFile, execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { deflateSync } from 'node:zlib';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import assert from 'node:assert/strict';
import { chromium } from 'playwright-core';
import { zipBlob, zipStream } from '../../gateway/ui/zip.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, '../..');
const bin = process.env.PICSIFT_BIN || path.join(root, 'target/debug/picsift');
const fixturesBin = path.join(root, 'target/debug/picsift-fixtures');
const shots = path.join(here, 'screenshots');
const started = Date.now();
const log = (...a) => console.log(`[${((Date.now() - started) / 1000).toFixed(1)}s]`, ...a);

for (const b of [bin, fixturesBin]) {
  if (!fs.existsSync(b)) throw new Error(`${b} is missing: build it first (cargo build --workspace --bins)`);
}
fs.mkdirSync(shots, { recursive: true });
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'picsift-web-'));

// ------------------------------------------------------------------ fixtures

/** A valid 8×8 PNG (a format the default policy refuses). */
function png() {
  const crcTable = Array.from({ length: 256 }, (_, n) => {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    return c >>> 0;
  });
  const crc = (buf) => {
    let c = 0xffffffff;
    for (const b of buf) c = crcTable[(c ^ b) & 0xff] ^ (c >>> 8);
    return (c ^ 0xffffffff) >>> 0;
  };
  const chunk = (type, data) => {
    const len = Buffer.alloc(4);
    len.writeUInt32BE(data.length);
    const body = Buffer.concat([Buffer.from(type), data]);
    const c = Buffer.alloc(4);
    c.writeUInt32BE(crc(body));
    return Buffer.concat([len, body, c]);
  };
  const ihdr = Buffer.from([0, 0, 0, 8, 0, 0, 0, 8, 8, 2, 0, 0, 0]);
  const rows = Buffer.concat(Array.from({ length: 8 }, (_, y) => Buffer.from([0, ...Array.from({ length: 24 }, (_, i) => (i * 31 + y * 17) & 0xff)])));
  return Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    chunk('IHDR', ihdr), chunk('IDAT', deflateSync(rows)), chunk('IEND', Buffer.alloc(0)),
  ]);
}

const photos = path.join(tmp, 'photos');
execFileSync(fixturesBin, ['photos', photos, '6', '480', '360'], { stdio: 'ignore' });
// ~40 MB of JPEGs for the resumable upload (17 of 4000×3000, about 2.4 MB
// each; the first six are the photos above, larger): written while the
// first scenarios run, it takes a while.
const bigPhotos = path.join(tmp, 'big');
let bigPhotosJob;
const bigPhotosWritten = new Promise((resolve, reject) => {
  bigPhotosJob = execFile(fixturesBin, ['photos', bigPhotos, '17', '4000', '3000'], (err) => (err ? reject(err) : resolve()));
});
bigPhotosWritten.catch(() => {}); // awaited (and reported) where used
const folder = path.join(tmp, 'holiday');
fs.mkdirSync(path.join(folder, 'day2'), { recursive: true });
fs.copyFileSync(path.join(photos, 'photo_0000.jpg'), path.join(folder, 'beach.jpg'));
fs.copyFileSync(path.join(photos, 'photo_0001.jpg'), path.join(folder, 'day2', 'hills.jpg'));
fs.copyFileSync(path.join(photos, 'photo_0002.jpg'), path.join(folder, 'day2', 'town.jpg'));
fs.copyFileSync(path.join(photos, 'photo_0000.jpg'), path.join(folder, 'day2', 'beach-again.jpg'));
fs.writeFileSync(path.join(folder, 'notes.txt'), 'packing list: towel, hat\n');
fs.writeFileSync(path.join(folder, 'icon.png'), png());

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Waits until `cond()` holds, polling; `what` names it in the error. */
async function until(what, cond, ms = 60_000) {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out after ${ms / 1000} s waiting for ${what}`);
    await sleep(25);
  }
}

/** Scrolls every image under `scope` into view (they load lazily) and waits until each shows. */
async function allImagesLoaded(page, scope) {
  for (const img of await page.locator(`${scope} img`).all()) await img.scrollIntoViewIfNeeded();
  await page.waitForFunction((s) => [...document.querySelectorAll(`${s} img`)].every((i) => i.complete && i.naturalWidth > 0), scope);
  await page.evaluate(() => window.scrollTo(0, 0));
}

// -------------------------------------------------------------------- server

const data = path.join(tmp, 'data');
// JPEG only, so that the page's own check of formats has something to refuse.
const server = spawn(bin, ['serve', '--data', data, '--listen', '127.0.0.1:0', '--concurrency', '2', '--formats', 'jpeg'], {
  env: { ...process.env, PICSIFT_LOG: 'warn' },
  stdio: ['ignore', 'ignore', 'pipe'],
});
let serverLog = '';
const base = await new Promise((resolve, reject) => {
  const timer = setTimeout(() => reject(new Error(`picsift serve did not listen within 30 s:\n${serverLog}`)), 30_000);
  server.stderr.on('data', (d) => {
    serverLog += d;
    const m = serverLog.match(/listening on (http:\/\/\S+)\s/);
    if (m) { clearTimeout(timer); resolve(m[1]); }
  });
  server.on('exit', (code) => reject(new Error(`picsift serve exited (${code}):\n${serverLog}`)));
});
const adminKey = fs.readFileSync(path.join(data, 'admin.key'), 'utf8').trim();
log('server at', base);
const auth = { Authorization: `Bearer ${adminKey}` };

/** The server's offset of a tus upload (HEAD), asked again while it is locked (423). */
async function uploadOffset(url) {
  for (let i = 0; ; i++) {
    const r = await fetch(url, { method: 'HEAD', headers: { ...auth, 'Tus-Resumable': '1.0.0' } });
    if (r.status === 423 && i < 50) { await sleep(100); continue; }
    assert.equal(r.status, 200, `HEAD ${url}`);
    return Number(r.headers.get('upload-offset'));
  }
}

/** Polls a batch until it is final; returns its status. */
async function batchDone(id) {
  let status;
  for (let i = 0; i < 1200; i++) {
    status = await (await fetch(`${base}/v1/batches/${id}`, { headers: auth })).json();
    if (['completed', 'failed', 'expired'].includes(status.phase)) return status;
    await sleep(100);
  }
  throw new Error(`batch ${id} is not done after 120 s: ${JSON.stringify(status)}`);
}

let browser;
let page;
try {
  // ------------------------------------------------------------ public page
  const page0 = await fetch(`${base}/`);
  assert.equal(page0.status, 200, 'the page needs no key');
  assert.match(page0.headers.get('content-security-policy'), /default-src 'none'/);
  assert.equal((await fetch(`${base}/v1/policy`)).status, 401, 'the API still needs a key');

  browser = await chromium.launch({ executablePath: process.env.CHROMIUM || '/usr/bin/chromium', args: ['--no-sandbox'] });
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 }, acceptDownloads: true });
  page = await context.newPage();
  const problems = [];
  page.on('console', (m) => { if (m.type() === 'error') problems.push(`${m.text()} (${m.location().url})`); });
  page.on('pageerror', (e) => problems.push(String(e)));
  page.on('response', (r) => { if (r.status() >= 400) problems.push(`${r.status()} ${r.url()}`); });
  const requests = [];
  page.on('request', (r) => requests.push(r.url()));
  const offsite = () => requests.filter((u) => !u.startsWith(base) && !u.startsWith('blob:') && !u.startsWith('data:'));

  // ---------------------------------------------------------------- sign in
  await page.goto(`${base}/`);
  await page.locator('#view-signin').waitFor();
  await page.fill('#signin-key', 'psk_wrong');
  await page.click('#signin-form button[type=submit]');
  await page.locator('#signin-error', { hasText: 'Not signed in' }).waitFor();
  problems.length = 0; // that 401 was expected
  await page.screenshot({ path: path.join(shots, '1-sign-in.png') });
  await page.fill('#signin-key', adminKey);
  await page.keyboard.press('Enter');
  await page.locator('#view-upload').waitFor();
  assert.equal(await page.evaluate(() => sessionStorage.getItem('picsift.key')), adminKey);
  await page.locator('#policy-summary', { hasText: 'JPEG' }).waitFor();
  log('signed in');

  // ----------------------------------------------------------------- upload
  await page.setInputFiles('#pick-folder', folder);
  await page.locator('#selection-summary', { hasText: '6 files' }).waitFor();
  const refused = await page.locator('#refused li').allTextContents();
  assert.equal(refused.length, 2, `two refusals listed: ${refused}`);
  assert.ok(refused.some((t) => t.includes('notes.txt') && t.includes('not an image')), refused.join('\n'));
  assert.ok(refused.some((t) => t.includes('icon.png') && t.includes('accepts only JPEG')), refused.join('\n'));
  await page.screenshot({ path: path.join(shots, '2-upload-selected.png'), fullPage: true });
  await page.click('#upload-button');
  await page.waitForURL(/#\/batch\/[0-9a-f-]+$/, { timeout: 30_000 });
  const batch = page.url().split('/').pop();
  assert.ok(requests.some((u) => u.startsWith(`${base}/v1/uploads/`)), 'the folder went up with tus');
  assert.ok(!requests.includes(`${base}/v1/batches`), 'not in one POST /v1/batches');
  log('uploaded with tus: batch', batch);

  // ------------------------------------------------------------------ batch
  await page.locator('#report-box').waitFor({ timeout: 60_000 });
  assert.ok(requests.some((u) => u.endsWith(`/v1/batches/${batch}/events`)), 'followed by server-sent events');
  assert.equal(await page.textContent('#batch-phase'), 'completed');
  const count = async (k) => Number(await page.textContent(`[data-count=${k}] dd`));
  assert.deepEqual(
    { accepted: await count('accepted'), duplicate: await count('duplicate'), rejected: await count('rejected'), failed: await count('failed') },
    { accepted: 3, duplicate: 1, rejected: 2, failed: 0 },
  );
  const verdictOf = async (name) => page.locator('#report tbody tr', { has: page.locator('td.name', { hasText: new RegExp(`^${name}$`) }) }).locator('td').nth(2).textContent();
  assert.equal(await verdictOf('notes.txt'), 'rejected');
  assert.equal(await verdictOf('icon.png'), 'rejected');
  assert.equal(await verdictOf('day2/hills.jpg'), 'accepted');
  // The refused entries say why and what to do.
  const txtRow = page.locator('#report tbody tr', { has: page.locator('td.name', { hasText: 'notes.txt' }) });
  assert.match(await txtRow.textContent(), /not_an_image.*Upload only image files/s);
  // A duplicate beside its original: the file as uploaded and the stored one.
  const dupRow = page.locator('#report tbody tr[data-verdict=duplicate]');
  await dupRow.locator('img').nth(1).waitFor();
  assert.equal(await dupRow.locator('img').count(), 2, 'uploaded and original side by side');
  await allImagesLoaded(page, '#report');
  await page.screenshot({ path: path.join(shots, '3-batch.png'), fullPage: true });

  await page.selectOption('#filter-verdict', 'rejected');
  assert.equal(await page.locator('#report tbody tr').count(), 2);
  await page.selectOption('#filter-verdict', '');
  await page.selectOption('#filter-reason', 'format_not_allowed');
  assert.equal(await page.locator('#report tbody tr').count(), 1);
  await page.selectOption('#filter-reason', '');

  // Download an accepted image: its bytes hash to its id.
  const accRow = page.locator('#report tbody tr[data-verdict=accepted]').first();
  const imageId = await accRow.locator('img').getAttribute('data-id');
  const [dl] = await Promise.all([page.waitForEvent('download'), accRow.getByRole('button', { name: /Download/ }).click()]);
  const saved = path.join(tmp, 'downloaded');
  await dl.saveAs(saved);
  const hash = createHash('sha256').update(fs.readFileSync(saved)).digest('hex');
  assert.equal(hash, imageId, 'the downloaded bytes hash to the image id');
  log('verdicts checked; downloaded', imageId.slice(0, 12), 'and its hash matches');

  // The page can be left and come back to.
  await page.goto(`${base}/#/upload`);
  await page.locator('#recent a', { hasText: batch }).waitFor();
  await page.goto(`${base}/#/batch/${batch}`);
  await page.locator('#report-box').waitFor();

  // Phone-sized: nothing wider than the screen but the scrolling table.
  await page.setViewportSize({ width: 375, height: 800 });
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth);
  assert.ok(overflow <= 375, `page is ${overflow}px wide at 375px`);
  await page.screenshot({ path: path.join(shots, '4-batch-375px.png'), fullPage: true });
  await page.setViewportSize({ width: 1280, height: 900 });

  // ---------------------------------------------------------------- batches
  await page.click('nav a[href="#/batches"]');
  await page.locator(`#batches a[href="#/batch/${batch}"]`).waitFor();
  assert.match(await page.locator('#batches tbody tr').first().textContent(), /default/);
  await page.fill('#b-owner', 'nobody');
  await page.click('#batches-form button[type=submit]');
  await page.locator('#batches tbody tr').first().waitFor({ state: 'detached' });
  await page.screenshot({ path: path.join(shots, '4b-batches.png'), fullPage: true });
  await page.fill('#b-owner', '');
  log('batches listed');

  // ----------------------------------------------------------------- images
  await page.click('nav a[href="#/images"]');
  await page.locator('#view-images').waitFor();
  await page.locator('#results li').nth(2).waitFor();
  assert.equal(await page.locator('#results li').count(), 3);
  await page.fill('#s-min-width', '1000');
  await page.click('#search-form button[type=submit]');
  await page.locator('#results-summary', { hasText: '0 images' }).waitFor();
  await page.fill('#s-min-width', '');
  await page.click('#search-form button[type=submit]');
  await page.locator('#results-summary', { hasText: '3 images' }).waitFor();
  await allImagesLoaded(page, '#results');
  await page.screenshot({ path: path.join(shots, '5-images.png'), fullPage: true });
  await page.setInputFiles('#similar-file', path.join(photos, 'photo_0001.jpg'));
  await page.locator('#results-title', { hasText: 'Similar images' }).waitFor();
  const first = page.locator('#results li').first();
  assert.match(await first.textContent(), /0 bits apart/);
  await page.screenshot({ path: path.join(shots, '6-similar.png'), fullPage: true });
  log('images searched');

  // A zip picked as it is (this one written by the page's own zip writer).
  const zipPath = path.join(tmp, 'again.zip');
  const again = await zipBlob([{ name: 'hills-again.jpg', file: await fs.openAsBlob(path.join(photos, 'photo_0001.jpg')) }]);
  fs.writeFileSync(zipPath, Buffer.from(await again.arrayBuffer()));
  await page.click('nav a[href="#/upload"]');
  // The view renders after the hash change: wait for it, then check the focus.
  await page.waitForFunction(() => document.activeElement?.id === 'upload-title', null, { timeout: 5000 }).catch(() => {});
  assert.equal(await page.evaluate(() => document.activeElement.id), 'upload-title', 'the focus moves to the new view');
  await page.setInputFiles('#pick-files', zipPath);
  await page.locator('#selection-summary', { hasText: 'sent as it is' }).waitFor();
  // This time as to a server from before tus: its OPTIONS /v1/uploads is
  // a 404 (what such a server answers), and the page sends the zip in one
  // POST /v1/batches, as it always did.
  const oldServer = (route) => (route.request().method() === 'OPTIONS'
    ? route.fulfill({ status: 404, contentType: 'application/problem+json', body: JSON.stringify({ type: 'https://picsift.io/problems/not-found', title: 'Not found', status: 404, detail: 'no such endpoint' }) })
    : route.continue());
  await page.route(`${base}/v1/uploads`, oldServer);
  await page.click('#upload-button');
  await page.waitForURL((u) => !u.hash.endsWith(batch) && /#\/batch\//.test(u.hash));
  await page.unroute(`${base}/v1/uploads`, oldServer);
  assert.ok(requests.includes(`${base}/v1/batches`), 'one POST /v1/batches without tus');
  for (let i = problems.length - 1; i >= 0; i--) if (problems[i].includes('/v1/uploads')) problems.splice(i, 1); // that 404 was the point
  await page.locator('#report-box').waitFor({ timeout: 60_000 });
  assert.equal(await count('duplicate'), 1);
  assert.equal(await verdictOf('hills-again.jpg'), 'duplicate');
  log('zip uploaded (in one request, as to a server without tus)');

  // ---------------------------------------------------------------- sign out
  await page.click('#signout');
  await page.locator('#view-signin').waitFor();
  assert.equal(await page.evaluate(() => sessionStorage.getItem('picsift.key')), null);

  assert.deepEqual(offsite(), [], 'no request leaves the origin');
  assert.deepEqual(problems, [], 'no console errors (CSP violations included)');

  // ------------------------------------------- the streaming zip, from Node
  const files = [];
  for (const [i, name] of [[3, 'ünïcode/straße.jpg'], [4, 'b.jpg'], [5, 'c/d/e.jpg']]) {
    files.push({ name, file: await fs.openAsBlob(path.join(photos, `photo_000${i}.jpg`)) });
  }
  const up = await fetch(`${base}/v1/batches`, {
    method: 'POST', duplex: 'half', body: zipStream(files),
    headers: { Authorization: `Bearer ${adminKey}`, 'Content-Type': 'application/zip' },
  });
  assert.equal(up.status, 202, await up.clone().text());
  const { id } = await up.json();
  let status;
  for (let i = 0; i < 600; i++) {
    status = await (await fetch(`${base}/v1/batches/${id}`, { headers: { Authorization: `Bearer ${adminKey}` } })).json();
    if (['completed', 'failed'].includes(status.phase)) break;
    await new Promise((r) => setTimeout(r, 100));
  }
  assert.equal(status.counts.accepted, 3, JSON.stringify(status));
  const rep = await (await fetch(`${base}/v1/batches/${id}/report`, { headers: { Authorization: `Bearer ${adminKey}` } })).json();
  assert.deepEqual(rep.entries.map((e) => e.entry), files.map((f) => f.name));
  log('streamed zip accepted');

  // -------------------------------------------- resumable upload (tus)
  // Last of the uploads: its first six photos are the ones above again,
  // larger (the same seeds), and would be duplicates there.
  await bigPhotosWritten;
  const bigNames = fs.readdirSync(bigPhotos).sort();
  const big = await zipBlob(await Promise.all(bigNames.map(async (n) => ({ name: `big/${n}`, file: await fs.openAsBlob(path.join(bigPhotos, n)) }))));
  const bigZip = path.join(tmp, 'big.zip');
  fs.writeFileSync(bigZip, Buffer.from(await big.arrayBuffer()));
  const CHUNK = 4 * 1024 * 1024;
  log(`resumable upload: ${big.size} bytes, ${Math.ceil(big.size / CHUNK)} chunks of ${CHUNK}`);

  await page.goto(`${base}/`);
  await page.fill('#signin-key', adminKey);
  await page.keyboard.press('Enter');
  await page.locator('#view-upload').waitFor();
  const storedUploads = () => page.evaluate(() => Object.keys(localStorage).filter((k) => k.startsWith('tus::'))
    .map((k) => JSON.parse(localStorage.getItem(k)).uploadUrl));

  // A zip the server refuses once it has it all (no image in it): the
  // page says why, and forgets the upload.
  const textZip = path.join(tmp, 'text.zip');
  fs.writeFileSync(textZip, Buffer.from(await (await zipBlob([{ name: 'notes.txt', file: await fs.openAsBlob(path.join(folder, 'notes.txt')) }])).arrayBuffer()));
  await page.setInputFiles('#pick-files', textZip);
  await page.locator('#selection-summary', { hasText: 'sent as it is' }).waitFor();
  await page.click('#upload-button');
  await page.locator('#upload-error', { hasText: 'Upload failed' }).waitFor({ timeout: 30_000 });
  assert.match(await page.textContent('#upload-error'), /^Upload failed: .*image/, 'the server\'s reason (problem detail)');
  assert.deepEqual(await storedUploads(), [], 'a refused upload is forgotten');
  for (let i = problems.length - 1; i >= 0; i--) if (/\b400\b.*\/v1\/uploads\//.test(problems[i])) problems.splice(i, 1); // that refusal was the point
  await page.click('#clear-button');

  // Small chunks, so that the upload has several.
  await page.evaluate((n) => localStorage.setItem('picsiftChunkSize', String(n)), CHUNK);
  const patches = { acked: 0, failed: 0 };
  const heads = [];
  const creations = [];
  page.on('response', (r) => {
    const m = r.request().method();
    if (m === 'PATCH' && r.status() === 204) patches.acked++;
    if (m === 'HEAD' && r.url().startsWith(`${base}/v1/uploads/`)) heads.push({ status: r.status(), offset: Number(r.headers()['upload-offset']) });
  });
  page.on('request', (r) => { if (r.method() === 'POST' && r.url() === `${base}/v1/uploads`) creations.push(r.url()); });
  page.on('requestfailed', (r) => { if (r.method() === 'PATCH') patches.failed++; });
  // Each chunk held back a little, so that the test acts between chunks;
  // once `cut`, every PATCH fails as if the network were gone.
  let cut = false;
  const slowOrCut = async (route) => {
    try {
      if (route.request().method() !== 'PATCH') return await route.continue();
      if (cut) return await route.abort('internetdisconnected');
      await sleep(200);
      return await route.continue();
    } catch { /* the page went offline or away meanwhile */ }
  };
  await page.route(`${base}/v1/uploads/*`, slowOrCut);

  await page.setInputFiles('#pick-files', bigZip);
  await page.locator('#selection-summary', { hasText: 'sent as it is' }).waitFor();
  await page.click('#upload-button');
  await until('two chunks acknowledged', () => patches.acked >= 2);
  const [uploadUrl] = await storedUploads();
  assert.match(uploadUrl, new RegExp(`^${base}/v1/uploads/[^/]+$`), 'the upload URL is kept in localStorage');

  // Offline, then back: the same page goes on from the server's offset.
  await context.setOffline(true);
  await page.locator('#upload-phase', { hasText: 'Offline' }).waitFor();
  const offlineAt = await uploadOffset(uploadUrl);
  assert.ok(offlineAt >= 2 * CHUNK && offlineAt < big.size, `the server has ${offlineAt} bytes while the browser is offline`);
  const ackedBefore = patches.acked;
  await context.setOffline(false);
  await until('two more chunks after the network came back', () => patches.acked >= ackedBefore + 2);
  assert.deepEqual(await storedUploads(), [uploadUrl], 'still the same upload');
  log('offline at', offlineAt, 'and back: the upload went on');

  // The connection drops for good; the page is reloaded mid-upload.
  const failedBefore = patches.failed;
  cut = true;
  await until('a chunk cut off', () => patches.failed > failedBefore);
  await page.locator('#upload-phase', { hasText: 'trying again' }).waitFor();
  const cutAt = await uploadOffset(uploadUrl);
  assert.ok(cutAt > offlineAt && cutAt < big.size, `the server has ${cutAt} bytes when the connection drops`);
  // Reloaded while every PATCH still fails: a retry the page sends
  // between the offset read above and the reload must not reach the
  // server (a tus server keeps what a cut request sent, and the offset
  // would move on from `cutAt`).
  await page.reload();
  await page.unroute(`${base}/v1/uploads/*`, slowOrCut);
  cut = false;
  await page.locator('#view-upload').waitFor();
  creations.length = 0;
  heads.length = 0;
  await page.route(`${base}/v1/uploads/*`, slowOrCut);
  // Every text the phase label shows, however briefly.
  await page.evaluate(() => {
    window.phases = [];
    new MutationObserver(() => window.phases.push(document.getElementById('upload-phase').textContent))
      .observe(document.getElementById('upload-phase'), { childList: true, characterData: true, subtree: true });
  });
  await page.setInputFiles('#pick-files', bigZip);
  await page.locator('#selection-summary', { hasText: 'sent as it is' }).waitFor();
  await page.click('#upload-button');
  await page.waitForURL(/#\/batch\/[0-9a-f-]+$/, { timeout: 60_000 });
  const bigBatch = page.url().split('/').pop();
  await page.unroute(`${base}/v1/uploads/*`, slowOrCut);
  const phases = await page.evaluate(() => window.phases);
  assert.ok(phases.some((t) => /^Resuming at (?!0 B)\S+ \S+ of \S+ MiB$/.test(t)), `the page says where it resumes: ${JSON.stringify(phases)}`);
  assert.equal(heads[0]?.status, 200, 'the page asked the server for its offset');
  assert.equal(heads[0].offset, cutAt, 'and resumed where the server\'s copy ends');
  assert.deepEqual(creations, [], 'no new upload after the reload');
  assert.deepEqual(await storedUploads(), [], 'a finished upload is forgotten');
  await page.locator('#report-box').waitFor({ timeout: 120_000 });
  assert.equal(await page.textContent('#batch-phase'), 'completed');
  assert.equal(await page.locator('#report tbody tr').count(), bigNames.length);
  assert.equal((await count('rejected')) + (await count('failed')), 0, 'every image taken');
  const bigStatus = await (await fetch(`${base}/v1/batches/${bigBatch}`, { headers: auth })).json();
  assert.equal(bigStatus.upload_bytes, big.size, 'the batch has every byte of the zip');
  await page.screenshot({ path: path.join(shots, '7-resumed-batch.png'), fullPage: true });
  // Only the cut-off requests failed (Chromium logs each as an error).
  for (let i = problems.length - 1; i >= 0; i--) if (/net::ERR_(INTERNET_DISCONNECTED|FAILED)/.test(problems[i])) problems.splice(i, 1);
  assert.deepEqual(problems, [], 'no other console errors');
  assert.deepEqual(offsite(), [], 'no request leaves the origin');
  log('reloaded at', cutAt, 'and resumed: batch', bigBatch, 'completed');

  // ------------------------------------ tus-js-client in Node (tests/node)
  const cli = (...args) => new Promise((resolve) => {
    execFile(path.join(root, 'tests/node/run.sh'), args, (err, stdout, stderr) => {
      resolve({ code: err ? err.code : 0, stderr, out: stdout.trim() ? JSON.parse(stdout.trim().split('\n').pop()) : null });
    });
  });
  const common = ['--key', adminKey, '--file', bigZip, '--chunk-size', String(CHUNK)];
  const half = await cli('--endpoint', `${base}/v1/uploads`, ...common, '--stop-after', String(3 * CHUNK));
  assert.equal(half.code, 0, half.stderr);
  assert.equal(half.out.stopped, true);
  assert.equal(half.out.offset, 3 * CHUNK);
  assert.equal(await uploadOffset(half.out.upload_url), 3 * CHUNK, 'the server kept the stopped upload');
  const rest = await cli('--upload-url', half.out.upload_url, ...common);
  assert.equal(rest.code, 0, rest.stderr);
  assert.equal(rest.out.resumed_from, 3 * CHUNK);
  assert.equal(rest.out.bytes, big.size);
  const cliStatus = await batchDone(rest.out.batch_id);
  assert.equal(cliStatus.total_entries, bigNames.length, JSON.stringify(cliStatus));
  assert.equal(cliStatus.counts.duplicate, bigNames.length, 'the same images again: all duplicates');
  // strict=true: an entry that is no image refuses the whole upload at its
  // last PATCH, with a problem saying why.
  const mixedZip = path.join(tmp, 'mixed.zip');
  const mixed = await zipBlob(await Promise.all(['beach.jpg', 'notes.txt'].map(async (n) => ({ name: n, file: await fs.openAsBlob(path.join(folder, n)) }))));
  fs.writeFileSync(mixedZip, Buffer.from(await mixed.arrayBuffer()));
  const refusedUpload = await cli('--endpoint', `${base}/v1/uploads`, '--key', adminKey, '--file', mixedZip, '--metadata', 'strict=true');
  assert.equal(refusedUpload.code, 1, `a strict upload with a text file is refused: ${JSON.stringify(refusedUpload)}`);
  assert.match(refusedUpload.stderr, /PATCH \S+: HTTP 4\d\d: \S/, refusedUpload.stderr);
  // The page's tus-js-client is the one pinned in tests/node.
  const vendored = fs.readFileSync(path.join(root, 'gateway/ui/tus.min.js'), 'utf8');
  const pinned = JSON.parse(fs.readFileSync(path.join(root, 'tests/node/package.json'), 'utf8')).dependencies['tus-js-client'];
  const dist = fs.readFileSync(path.join(root, 'tests/node/node_modules/tus-js-client/dist/tus.min.js'), 'utf8');
  assert.ok(vendored.startsWith(`/*!\n * tus-js-client ${pinned} `), `gateway/ui/tus.min.js names tus-js-client ${pinned}`);
  assert.equal(vendored.slice(vendored.indexOf('\n */\n') + 5), dist.replace(/\n\/\/# sourceMappingURL=\S+\s*$/, '\n'), `gateway/ui/tus.min.js is tus-js-client ${pinned}'s dist/tus.min.js`);
  log('tus-js-client in Node: stopped at', half.out.offset, 'and finished; a strict upload refused');

  console.log(`web e2e: ok in ${((Date.now() - started) / 1000).toFixed(1)} s; screenshots in ${path.relative(process.cwd(), shots) || '.'}`);
} catch (e) {
  console.error(`web e2e FAILED: ${e.stack || e}`);
  await page?.screenshot({ path: path.join(shots, 'failure.png'), fullPage: true }).catch(() => {});
  console.error(`--- server log ---\n${serverLog}`);
  process.exitCode = 1;
} finally {
  await browser?.close();
  server.kill('SIGTERM');
  // Still writing when an earlier step failed: stopped before its folder goes.
  if (bigPhotosJob.exitCode === null && bigPhotosJob.signalCode === null) {
    const exited = new Promise((r) => bigPhotosJob.once('exit', r));
    bigPhotosJob.kill('SIGTERM');
    await exited;
  }
  fs.rmSync(tmp, { recursive: true, force: true });
}
