// A minimal zip writer for folders picked in the browser: every entry
// STORED (images barely compress; the server inflates nothing), names in
// UTF-8, no zip64 (at most 65535 entries and 4 GiB in all: larger folders
// go through `picsift upload`). Two shapes of the same archive:
//
// - zipStream(): a ReadableStream that reads each file once, as it is
//   sent. Sizes and CRC-32 are not known when an entry's local header is
//   written, so each entry has a data descriptor after its bytes
//   (general-purpose flag bit 3) and the central directory at the end
//   carries the real values.
// - zipBlob(): a Blob whose parts are the headers and the File objects
//   themselves (a Blob part that is a File references the file on disk, it
//   is not a copy), for when a request body cannot be a stream. Its
//   headers need the CRCs first, so each file is read once beforehand to
//   compute them, a chunk at a time.
//
// Both are deterministic: the same files (names, bytes, modification
// times, in the same order) give the same archive.
//
// Also used from Node by tests/web (no DOM needed).

const TABLE = (() => {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
})();

/** CRC-32 (the zip one) of `bytes`, continuing from `crc` (0 to start). */
export function crc32(crc, bytes) {
  let c = (crc ^ 0xffffffff) >>> 0;
  for (let i = 0; i < bytes.length; i++) c = TABLE[(c ^ bytes[i]) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

const MAX32 = 0xffffffff;
const FLAG_DESCRIPTOR = 1 << 3;
const FLAG_UTF8 = 1 << 11;

// The same files always make the same bytes: a resumed upload (tus, see
// app.js) rebuilds the zip and sends only what the server lacks. So a file
// without a modification time gets the zip epoch (1980-01-01 00:00), not
// the time of zipping.
function dosTime(ms) {
  if (!ms) return { time: 0, date: (1 << 5) | 1 };
  const d = new Date(ms);
  const year = Math.min(Math.max(d.getFullYear(), 1980), 2107);
  return {
    time: (d.getHours() << 11) | (d.getMinutes() << 5) | (d.getSeconds() >> 1),
    date: ((year - 1980) << 9) | ((d.getMonth() + 1) << 5) | d.getDate(),
  };
}

function header(size, fill) {
  const buf = new Uint8Array(size);
  fill(new DataView(buf.buffer));
  return buf;
}

function localHeader(e, flags, crc, size) {
  const out = header(30 + e.nameBytes.length, (v) => {
    v.setUint32(0, 0x04034b50, true);
    v.setUint16(4, 20, true); // version needed: 2.0
    v.setUint16(6, flags, true);
    v.setUint16(8, 0, true); // stored
    v.setUint16(10, e.dos.time, true);
    v.setUint16(12, e.dos.date, true);
    v.setUint32(14, crc, true);
    v.setUint32(18, size, true);
    v.setUint32(22, size, true);
    v.setUint16(26, e.nameBytes.length, true);
    v.setUint16(28, 0, true);
  });
  out.set(e.nameBytes, 30);
  return out;
}

function descriptor(crc, size) {
  return header(16, (v) => {
    v.setUint32(0, 0x08074b50, true);
    v.setUint32(4, crc, true);
    v.setUint32(8, size, true);
    v.setUint32(12, size, true);
  });
}

function centralDirectory(entries, start) {
  const parts = [];
  let size = 0;
  for (const e of entries) {
    const h = header(46 + e.nameBytes.length, (v) => {
      v.setUint32(0, 0x02014b50, true);
      v.setUint16(4, 20, true); // made by: 2.0, MS-DOS attributes
      v.setUint16(6, 20, true);
      v.setUint16(8, e.flags, true);
      v.setUint16(10, 0, true);
      v.setUint16(12, e.dos.time, true);
      v.setUint16(14, e.dos.date, true);
      v.setUint32(16, e.crc, true);
      v.setUint32(20, e.size, true);
      v.setUint32(24, e.size, true);
      v.setUint16(28, e.nameBytes.length, true);
      // extra, comment, disk, internal and external attributes: 0
      v.setUint32(42, e.offset, true);
    });
    h.set(e.nameBytes, 46);
    parts.push(h);
    size += h.length;
  }
  const end = header(22, (v) => {
    v.setUint32(0, 0x06054b50, true);
    v.setUint16(8, entries.length, true);
    v.setUint16(10, entries.length, true);
    v.setUint32(12, size, true);
    v.setUint32(16, start, true);
  });
  parts.push(end);
  return parts;
}

/**
 * Checks that `files` ([{name, file}]) fit a zip without zip64; returns
 * the entries to write. Throws an Error saying what to do otherwise.
 */
function plan(files) {
  if (files.length === 0) throw new Error('there is nothing to zip');
  if (files.length > 65534) throw new Error(`${files.length} files are more than a zip without zip64 holds (65534); upload the folder with \`picsift upload\``);
  const enc = new TextEncoder();
  let total = 22;
  const entries = files.map(({ name, file }) => {
    const nameBytes = enc.encode(name);
    total += 30 + 16 + 46 + 2 * nameBytes.length + file.size;
    return { name, file, nameBytes, dos: dosTime(file.lastModified), crc: 0, size: 0, offset: 0, flags: FLAG_UTF8 };
  });
  if (total > MAX32) throw new Error(`the folder makes a zip of ${total} bytes, more than 4 GiB (zip64 is not written here); upload it with \`picsift upload\``);
  return entries;
}

async function* fileChunks(file) {
  const reader = file.stream().getReader();
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    yield value;
  }
}

/**
 * The zip of `files` ([{name, file}], file: a Blob or File) as a
 * ReadableStream of Uint8Array, each file read once as the stream is
 * pulled. `onBytes(n)` is told of every n bytes of file data produced.
 */
export function zipStream(files, onBytes = () => {}) {
  const entries = plan(files);
  async function* parts() {
    let offset = 0;
    for (const e of entries) {
      e.offset = offset;
      e.flags = FLAG_UTF8 | FLAG_DESCRIPTOR;
      const h = localHeader(e, e.flags, 0, 0);
      offset += h.length;
      yield h;
      let crc = 0;
      let size = 0;
      for await (const chunk of fileChunks(e.file)) {
        crc = crc32(crc, chunk);
        size += chunk.length;
        offset += chunk.length;
        onBytes(chunk.length);
        yield chunk;
      }
      e.crc = crc;
      e.size = size;
      const d = descriptor(crc, size);
      offset += d.length;
      yield d;
    }
    yield* centralDirectory(entries, offset);
  }
  const it = parts();
  return new ReadableStream({
    async pull(controller) {
      try {
        const { value, done } = await it.next();
        if (done) controller.close();
        else controller.enqueue(value);
      } catch (e) {
        controller.error(e);
      }
    },
    cancel() {
      it.return();
    },
  });
}

/**
 * The zip of `files` as a Blob (type application/zip) whose parts are the
 * headers and the files themselves. Reads every file once first for its
 * CRC-32; `onBytes(n)` is told of every n bytes read.
 */
export async function zipBlob(files, onBytes = () => {}) {
  const entries = plan(files);
  const blobParts = [];
  let offset = 0;
  for (const e of entries) {
    let crc = 0;
    for await (const chunk of fileChunks(e.file)) {
      crc = crc32(crc, chunk);
      onBytes(chunk.length);
    }
    e.crc = crc;
    e.size = e.file.size;
    e.offset = offset;
    const h = localHeader(e, e.flags, e.crc, e.size);
    blobParts.push(h, e.file);
    offset += h.length + e.size;
  }
  blobParts.push(...centralDirectory(entries, offset));
  return new Blob(blobParts, { type: 'application/zip' });
}

/**
 * What identifies a zip's contents without reading it all: its central
 * directory (every entry's name, size, time and CRC-32), found from the
 * end record in its last 22 bytes; for a zip whose end record is not
 * there (it has a comment, or is zip64), its last 64 KiB.
 */
export async function zipSummary(blob) {
  const tail = async (n) => new Uint8Array(await blob.slice(Math.max(0, blob.size - n)).arrayBuffer());
  const end = await tail(22);
  const v = new DataView(end.buffer);
  if (end.length === 22 && v.getUint32(0, true) === 0x06054b50 && v.getUint16(20, true) === 0) {
    const size = v.getUint32(12, true);
    const start = v.getUint32(16, true);
    if (start !== MAX32 && start + size + 22 === blob.size) {
      return new Uint8Array(await blob.slice(start, start + size).arrayBuffer());
    }
  }
  return tail(64 * 1024);
}

/**
 * What the leading bytes of a file are: 'jpeg', 'png', 'webp', another
 * known kind ('gif', 'bmp', 'tiff', 'heif', 'avif', 'zip', 'gzip', 'pdf',
 * 'empty'), or null.
 */
/** HEIC, AVIF or another HEIF from an ftyp box's brands, as core/src/isobmff.rs decides. */
function heifBrand(b) {
  const brand = (at) => String.fromCharCode(...b.slice(at, at + 4));
  const kind = (s) => (['heic', 'heix', 'heim', 'heis', 'hevc', 'hevx'].includes(s) ? 'heic'
    : ['avif', 'avis'].includes(s) ? 'avif' : null);
  const major = brand(8);
  if (kind(major)) return kind(major);
  if (!['mif1', 'msf1', 'miaf', 'mif2'].includes(major)) return null;
  const size = ((b[0] << 24) | (b[1] << 16) | (b[2] << 8) | b[3]) >>> 0;
  for (let at = 16; at + 4 <= Math.min(size, b.length); at += 4) {
    if (kind(brand(at))) return kind(brand(at));
  }
  return 'heif';
}

export function sniff(head) {
  const b = head;
  const starts = (...sig) => sig.every((v, i) => b[i] === v);
  const ascii = (at, s) => [...s].every((ch, i) => b[at + i] === ch.charCodeAt(0));
  if (b.length === 0) return 'empty';
  if (starts(0xff, 0xd8, 0xff)) return 'jpeg';
  if (starts(0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a)) return 'png';
  if (ascii(0, 'RIFF') && ascii(8, 'WEBP')) return 'webp';
  if (ascii(0, 'GIF8')) return 'gif';
  if (ascii(0, 'BM')) return 'bmp';
  if (starts(0x49, 0x49, 0x2a, 0x00) || starts(0x4d, 0x4d, 0x00, 0x2a)) return 'tiff';
  if (ascii(4, 'ftyp')) return heifBrand(b);
  if (starts(0x50, 0x4b, 0x03, 0x04) || starts(0x50, 0x4b, 0x05, 0x06)) return 'zip';
  if (starts(0x1f, 0x8b)) return 'gzip';
  if (ascii(0, '%PDF')) return 'pdf';
  return null;
}
