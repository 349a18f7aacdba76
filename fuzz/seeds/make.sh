#!/usr/bin/env bash
# Regenerates the small seed files in this folder (a few KB in all):
# JPEGs from cjpeg (libjpeg-turbo-progs) over a generated 16x8 picture, a
# hand-built PNG and WebP, and zips of those made with Python's zipfile.
# The outputs are committed; run this only to change them.
set -euo pipefail
cd "$(dirname "$0")"
rm -rf jpeg png webp zip
mkdir -p jpeg png webp zip
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

python3 - "$tmp" <<'PY'
import sys
out = sys.argv[1]
w, h = 16, 8
rgb = bytes(v for y in range(h) for x in range(w) for v in (x * 16, y * 32, 128))
with open(f"{out}/in.ppm", "wb") as f:
    f.write(b"P6\n%d %d\n255\n" % (w, h) + rgb)
PY

cjpeg -quality 90 "$tmp/in.ppm" > jpeg/baseline.jpg
cjpeg -quality 75 -sample 1x1 -optimize "$tmp/in.ppm" > jpeg/444-optimized.jpg
cjpeg -progressive "$tmp/in.ppm" > jpeg/progressive.jpg
cjpeg -grayscale "$tmp/in.ppm" > jpeg/grayscale.jpg
cjpeg -restart 1B "$tmp/in.ppm" > jpeg/restart.jpg
cjpeg -arithmetic "$tmp/in.ppm" > jpeg/arithmetic.jpg
cjpeg -rgb "$tmp/in.ppm" > jpeg/rgb.jpg

python3 - <<'PY'
import struct, zlib, zipfile

def segment(marker, body):
    return bytes([0xFF, marker]) + struct.pack(">H", len(body) + 2) + body

base = open("jpeg/baseline.jpg", "rb").read()
# EXIF with orientation 6 (big-endian TIFF), a comment and an ICC-looking
# APP2, inserted after SOI: what strip_metadata must remove or keep.
exif = b"Exif\0\0MM\0\x2a\0\0\0\x08\0\x01" + bytes([1, 0x12, 0, 3, 0, 0, 0, 1, 0, 6, 0, 0]) + b"\0\0\0\0"
meta = segment(0xE1, exif) + segment(0xFE, b"GPS 51.5N") + segment(0xE2, b"ICC_PROFILE\0\x01\x01fake")
open("jpeg/metadata.jpg", "wb").write(base[:2] + meta + base[2:])

def chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

w, h = 4, 4
raw = b"".join(b"\0" + bytes(v for x in range(w) for v in (x * 60, y * 60, 90)) for y in range(h))
png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
       + chunk(b"tEXt", b"Comment\0hello") + chunk(b"IDAT", zlib.compress(raw, 9))
       + chunk(b"IEND", b""))
open("png/rgb.png", "wb").write(png)

# A 1x1 lossless WebP inside a VP8X container with an EXIF chunk.
vp8l = b"\x2f\x00\x00\x00\x10\x07\x10\x11\x11\x88\x88\xfe\x07\x00"
def wchunk(kind, data):
    return kind + struct.pack("<I", len(data)) + data + (b"\0" if len(data) % 2 else b"")
simple = wchunk(b"VP8L", vp8l)
open("webp/lossless.webp", "wb").write(b"RIFF" + struct.pack("<I", 4 + len(simple)) + b"WEBP" + simple)
body = wchunk(b"VP8X", bytes([0x08, 0, 0, 0]) + b"\0\0\0" + b"\0\0\0") + simple + wchunk(b"EXIF", b"MM\0\x2a\0\0\0\x08\0\0")
open("webp/extended.webp", "wb").write(b"RIFF" + struct.pack("<I", 4 + len(body)) + b"WEBP" + body)

jpegs = {n: open(f"jpeg/{n}.jpg", "rb").read() for n in ("baseline", "progressive", "metadata")}
fixed = (1980, 1, 1, 0, 0, 0)
def add(z, name, data, method):
    info = zipfile.ZipInfo(name, fixed)
    info.compress_type = method
    z.writestr(info, data)

with zipfile.ZipFile("zip/images.zip", "w") as z:
    add(z, "a.jpg", jpegs["baseline"], zipfile.ZIP_STORED)
    add(z, "dir/b.jpg", jpegs["progressive"], zipfile.ZIP_DEFLATED)
with zipfile.ZipFile("zip/mixed.zip", "w") as z:
    add(z, "photos/", b"", zipfile.ZIP_STORED)
    add(z, "photos/c.jpg", jpegs["metadata"], zipfile.ZIP_DEFLATED)
    add(z, "../escape.jpg", jpegs["baseline"], zipfile.ZIP_STORED)
    add(z, "notes.txt", b"not an image " * 8, zipfile.ZIP_DEFLATED)
    add(z, "inner.zip", b"PK\x05\x06" + b"\0" * 18, zipfile.ZIP_STORED)
with zipfile.ZipFile("zip/empty.zip", "w") as z:
    pass
PY
ls -l jpeg png webp zip
