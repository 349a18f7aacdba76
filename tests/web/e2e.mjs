// End to end: the web frontend in headless Chromium against a real
// `picsift serve` (target/debug/picsift, or PICSIFT_BIN). Upload a folder
// with good, duplicate and refused files, see the refusals before the
// upload, follow the batch to completion, check the verdicts, download an
// accepted image and check that its bytes hash to its id, search. Saves a
// screenshot of each page into tests/web/screenshots/ (git-ignored).
//
// Also: the browser's streaming zip writer (gateway/ui/zip.js) sends a
// folder from Node (whose fetch streams request bodies over HTTP/1.1,
// which Chromium's does not) and the server takes it.

import { spawn, execFileSync } from 'node:child_process';
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
const folder = path.join(tmp, 'holiday');
fs.mkdirSync(path.join(folder, 'day2'), { recursive: true });
fs.copyFileSync(path.join(photos, 'photo_0000.jpg'), path.join(folder, 'beach.jpg'));
fs.copyFileSync(path.join(photos, 'photo_0001.jpg'), path.join(folder, 'day2', 'hills.jpg'));
fs.copyFileSync(path.join(photos, 'photo_0002.jpg'), path.join(folder, 'day2', 'town.jpg'));
fs.copyFileSync(path.join(photos, 'photo_0000.jpg'), path.join(folder, 'day2', 'beach-again.jpg'));
fs.writeFileSync(path.join(folder, 'notes.txt'), 'packing list: towel, hat\n');
fs.writeFileSync(path.join(folder, 'icon.png'), png());

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
  log('uploaded: batch', batch);

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
  await page.click('#upload-button');
  await page.waitForURL((u) => !u.hash.endsWith(batch) && /#\/batch\//.test(u.hash));
  await page.locator('#report-box').waitFor({ timeout: 60_000 });
  assert.equal(await count('duplicate'), 1);
  assert.equal(await verdictOf('hills-again.jpg'), 'duplicate');
  log('zip uploaded');

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
  console.log(`web e2e: ok in ${((Date.now() - started) / 1000).toFixed(1)} s; screenshots in ${path.relative(process.cwd(), shots) || '.'}`);
} catch (e) {
  console.error(`web e2e FAILED: ${e.stack || e}`);
  await page?.screenshot({ path: path.join(shots, 'failure.png'), fullPage: true }).catch(() => {});
  console.error(`--- server log ---\n${serverLog}`);
  process.exitCode = 1;
} finally {
  await browser?.close();
  server.kill('SIGTERM');
  fs.rmSync(tmp, { recursive: true, force: true });
}
