#!/usr/bin/env node
// Uploads a file to picsift with tus 1.0 (resumable), through tus-js-client:
// the library the web frontend vendors (gateway/ui/tus.min.js), here in
// Node, so that tests and scripts exercise the server's tus endpoint with
// a client that is not ours.
//
//   node tus_upload.mjs --endpoint URL --key KEY --file PATH
//       [--chunk-size BYTES] [--metadata k=v ...]
//       [--upload-url URL] [--stop-after BYTES]
//
// --endpoint: the creation URL (http://HOST:PORT/v1/uploads).
// --metadata: Upload-Metadata pairs; the server reads filename (the
//   file's name unless given), policy, callback and strict (true/false).
// --upload-url: go on with this upload (HEAD for its offset, then PATCH
//   from there) instead of creating one; fails if the server has lost it.
// --stop-after: stop once the server has acknowledged at least this many
//   bytes (at the end of a chunk: pair it with --chunk-size), leaving the
//   upload unfinished for a later --upload-url; prints
//   {"upload_url", "offset", "bytes", "stopped": true} and exits 0.
//
// On success prints one JSON line: {"upload_url", "batch_id" (the
// Picsift-Batch-Id header of the last response), "bytes", "resumed_from",
// "seconds"}. On an error prints it (with the server's problem detail) on
// stderr and exits 1; 2 for bad arguments.

import fs from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import * as tus from 'tus-js-client';

const USAGE = 'usage: tus_upload.mjs --endpoint URL --key KEY --file PATH [--chunk-size BYTES] [--metadata k=v ...] [--upload-url URL] [--stop-after BYTES]';
const CHUNK_SIZE = 16 * 1024 * 1024; // as the web frontend sends
const RETRY_DELAYS = [0, 1000, 3000, 5000];

function fail(message, code = 1) {
  console.error(`tus_upload: ${message}`);
  process.exit(code);
}

function parse(argv) {
  let values;
  try {
    ({ values } = parseArgs({
      args: argv,
      options: {
        endpoint: { type: 'string' },
        key: { type: 'string' },
        file: { type: 'string' },
        'chunk-size': { type: 'string' },
        metadata: { type: 'string', multiple: true, default: [] },
        'upload-url': { type: 'string' },
        'stop-after': { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
      strict: true,
    }));
  } catch (e) {
    fail(`${e.message}\n${USAGE}`, 2);
  }
  if (values.help) { console.log(USAGE); process.exit(0); }
  for (const name of ['key', 'file']) if (!values[name]) fail(`--${name} is required\n${USAGE}`, 2);
  if (!values.endpoint && !values['upload-url']) fail(`--endpoint (or --upload-url) is required\n${USAGE}`, 2);
  const count = (name, fallback) => {
    if (values[name] === undefined) return fallback;
    const n = Number(values[name]);
    if (!Number.isSafeInteger(n) || n <= 0) fail(`--${name} takes a positive number of bytes, not ${values[name]}`, 2);
    return n;
  };
  const metadata = {};
  for (const pair of values.metadata) {
    const at = pair.indexOf('=');
    if (at <= 0) fail(`--metadata takes key=value, not ${pair}`, 2);
    metadata[pair.slice(0, at)] = pair.slice(at + 1);
  }
  metadata.filename ??= path.basename(values.file);
  return {
    endpoint: values.endpoint,
    key: values.key,
    file: values.file,
    chunkSize: count('chunk-size', CHUNK_SIZE),
    stopAfter: count('stop-after', null),
    uploadUrl: values['upload-url'] ?? null,
    metadata,
  };
}

/** What went wrong, with the server's answer (an RFC 9457 problem's detail) where there was one. */
function describe(err) {
  const res = err.originalResponse;
  if (!res) return err.message; // tus-js-client names the request and the cause
  const status = res.getStatus();
  const body = res.getBody() || '';
  let detail = body.trim();
  try {
    const problem = JSON.parse(body);
    detail = [problem.title, problem.detail].filter(Boolean).join(': ') || detail;
  } catch { /* not JSON: the body as it is */ }
  const req = err.originalRequest;
  // A HEAD answer has no body to say why.
  if (!detail && (status === 404 || status === 410)) detail = 'the server has no such upload (it expired, was terminated, or is another tenant\'s)';
  return `${req ? `${req.getMethod()} ${req.getURL()}: ` : ''}HTTP ${status}${detail ? `: ${detail}` : ''}`;
}

const args = parse(process.argv.slice(2));
let size;
try {
  size = fs.statSync(args.file).size;
} catch (e) {
  fail(`cannot read ${args.file}: ${e.message}`);
}
const started = performance.now();
const seconds = () => Number(((performance.now() - started) / 1000).toFixed(3));
let resumedFrom = 0;

const upload = new tus.Upload(fs.createReadStream(args.file), {
  // With --upload-url and no endpoint a lost upload is an error, not a
  // silent new upload from byte 0.
  endpoint: args.uploadUrl ? null : args.endpoint,
  uploadUrl: args.uploadUrl,
  chunkSize: args.chunkSize,
  retryDelays: RETRY_DELAYS,
  headers: { Authorization: `Bearer ${args.key}` },
  metadata: args.metadata,
  onAfterResponse: (req, res) => {
    if (req.getMethod() === 'HEAD' && res.getStatus() === 200) {
      resumedFrom = Number(res.getHeader('Upload-Offset')) || 0;
    }
  },
  onChunkComplete: (_chunk, accepted) => {
    if (args.stopAfter === null || accepted >= size || accepted < args.stopAfter) return;
    // Leave the upload on the server (no DELETE) for a later --upload-url.
    upload.abort(false).then(() => {
      console.log(JSON.stringify({ upload_url: upload.url, offset: accepted, bytes: size, stopped: true }));
      process.exit(0);
    }, (e) => fail(`cannot stop the upload: ${e.message}`));
  },
  onSuccess: ({ lastResponse }) => {
    const batchId = lastResponse.getHeader('Picsift-Batch-Id') ?? null;
    console.log(JSON.stringify({ upload_url: upload.url, batch_id: batchId, bytes: size, resumed_from: resumedFrom, seconds: seconds() }));
    if (!batchId) fail('the upload is complete but the last response names no batch (no Picsift-Batch-Id header)');
  },
  onError: (err) => fail(describe(err)),
});
upload.start();
