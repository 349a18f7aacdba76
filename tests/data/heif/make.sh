#!/usr/bin/env bash
# Makes the HEIC and AVIF test files in this folder from the PDQ reference
# photos (../pdq, BSD licence: ../pdq/LICENSE.ThreatExchange), with
# Debian bookworm's encoders: heif-enc (libheif-examples 1.15: x265 for
# HEIC, libaom for AVIF) and avifenc (libavif-bin 0.11). Run once; the
# outputs are committed, so the tests need no encoder.
set -euo pipefail
cd "$(dirname "$0")"
pdq=../pdq
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

"${PYTHON:-python3}" - "$pdq" "$tmp" <<'PY'  # needs Pillow
import sys
from PIL import Image
pdq, tmp = sys.argv[1], sys.argv[2]
orig = Image.open(f"{pdq}/bridge-mods/aaa-orig.jpg")
exif = orig.info.get("exif", b"")
small = orig.resize((640, 402))
# With the original's EXIF (and so metadata to blank).
small.save(f"{tmp}/photo.jpg", quality=92, exif=exif)
# A portrait phone photo: sideways pixels with EXIF orientation 6.
rot = Image.open(f"{pdq}/reg-test-input/exif-rotn/exif-rotn-6.jpg")
rot.resize((504, 378)).save(f"{tmp}/rotated.jpg", quality=92, exif=rot.info["exif"])
# With alpha: the photo, its right half half-transparent.
rgba = small.convert("RGBA")
alpha = Image.new("L", small.size, 255)
alpha.paste(128, (320, 0, 640, 402))
rgba.putalpha(alpha)
rgba.save(f"{tmp}/alpha.png")
# 16 bits per channel, for a 10-bit HEIC (Pillow writes no 16-bit RGB PNG).
import struct, zlib
w, h = small.size
px = small.tobytes()
rows = b"".join(b"\0" + b"".join(bytes([v, v]) for v in px[y * w * 3:(y + 1) * w * 3]) for y in range(h))
def chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
with open(f"{tmp}/photo16.png", "wb") as f:
    f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))
# A Display P3 photo (the profile: display-p3.icc, written by moxcms's
# ColorProfile::new_display_p3, committed beside this script).
# (heif-enc 1.15 takes a profile from a JPEG's APP2, not from a PNG's iCCP.)
small.save(f"{tmp}/p3.jpg", quality=92, icc_profile=open("display-p3.icc", "rb").read())
# Two different photos, for a collection of top-level images.
Image.open(f"{pdq}/bridge-mods/high-contrast.jpg").resize((640, 402)).save(f"{tmp}/second.jpg", quality=92)
# A 2×2 grid's tiles come from one 640×400 picture.
small.crop((0, 0, 640, 400)).save(f"{tmp}/grid.png")
for i, (x, y) in enumerate([(0, 0), (320, 0), (0, 200), (320, 200)]):
    small.crop((0, 0, 640, 400)).crop((x, y, x + 320, y + 200)).save(f"{tmp}/tile{i}.png")
PY

heif-enc -q 60 -o photo.heic "$tmp/photo.jpg"
heif-enc -A -q 60 -o photo.avif "$tmp/photo.jpg"
heif-enc -q 60 -o alpha.heic "$tmp/alpha.png"
heif-enc -q 60 -o p3.heic "$tmp/p3.jpg"
heif-enc -q 60 -o collection.heic "$tmp/photo.jpg" "$tmp/second.jpg"
heif-enc -q 60 -b 10 -o ten-bit.heic "$tmp/photo16.png"
avif() { avifenc -s 10 --min 30 --max 40 "$@" >/dev/null; }
avif -d 10 "$tmp/photo.jpg" ten-bit.avif
avif --icc display-p3.icc "$tmp/photo.jpg" p3.avif
# The container turns the sideways pixels upright: irot 3 (270° anticlockwise),
# what EXIF orientation 6 says in a JPEG. (heif-enc 1.15 cannot write irot.)
avif --ignore-exif --irot 3 "$tmp/rotated.jpg" rotated.avif
avif -g 2x2 "$tmp/grid.png" grid.avif
# heif-enc 1.15 cannot tile either: each tile is its own HEIC, and
# grid_heic.py joins them into one grid item, as iPhones write.
for i in 0 1 2 3; do heif-enc -q 60 -o "$tmp/tile$i.heic" "$tmp/tile$i.png" >/dev/null; done
python3 grid_heic.py "$tmp"/tile{0,1,2,3}.heic grid.heic
avif "$tmp/photo.jpg" "$tmp/second.jpg" sequence.avifs
ls -l ./*.heic ./*.avif ./*.avifs
