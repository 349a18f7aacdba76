"""Joins four single-image HEICs (320x200 tiles, from heif-enc) into one
2x2 grid HEIC, as iPhones write their photos: a `grid` item whose tiles are
hidden `hvc1` items (ISO/IEC 23008-12, 6.6.2.3)."""
import struct, sys

def boxes(b, off=0, end=None):
    end = len(b) if end is None else end
    while off < end:
        size, typ = struct.unpack('>I4s', b[off:off + 8])
        yield typ.decode(), off, off + 8, off + size
        off += size

def child(b, start, end, name):
    return next((o, d, e) for t, o, d, e in boxes(b, start, end) if t == name)

def box(typ, body):
    return struct.pack('>I4s', 8 + len(body), typ.encode()) + body

def full(typ, version, flags, body):
    return box(typ, struct.pack('>I', version << 24 | flags) + body)

def tile(path):
    """A heif-enc file's hvcC, ispe and pixi boxes and its coded data."""
    b = open(path, 'rb').read()
    _, md, me = child(b, 0, len(b), 'meta')
    props = {}
    _, pd, pe = child(b, md + 4, me, 'iprp')
    _, cd, ce = child(b, pd, pe, 'ipco')
    for t, o, d, e in boxes(b, cd, ce):
        props[t] = b[o:e]
    _, ld, le = child(b, md + 4, me, 'iloc')
    # heif-enc 1.15: iloc v0, 4-byte offset/length/base offset, one extent.
    item_count, = struct.unpack('>H', b[ld + 6:ld + 8])
    assert b[ld:ld + 6] == bytes.fromhex('000000004440') and item_count == 1
    _, _, base, extents, off, length = struct.unpack('>HHIHII', b[ld + 8:ld + 26])
    assert extents == 1
    return props, b[base + off:base + off + length]

tiles = [tile(p) for p in sys.argv[1:5]]
out = sys.argv[5]
hvcc = [p['hvcC'] for p, _ in tiles]
distinct = list(dict.fromkeys(hvcc))
ipco_boxes = distinct + [tiles[0][0]['ispe'], tiles[0][0]['pixi'],
                         full('ispe', 0, 0, struct.pack('>II', 640, 400))]
ispe_tile, pixi, ispe_grid = len(distinct) + 1, len(distinct) + 2, len(distinct) + 3
ids = [2, 3, 4, 5]

def meta(offsets):
    hdlr = full('hdlr', 0, 0, b'\0' * 4 + b'pict' + b'\0' * 12 + b'\0')
    pitm = full('pitm', 0, 0, struct.pack('>H', 1))
    iloc = struct.pack('>BBH', 0x44, 0x00, 5)
    iloc += struct.pack('>HHHHII', 1, 1, 0, 1, 0, 8)  # the grid: in idat
    for i, off in zip(ids, offsets):
        iloc += struct.pack('>HHHHII', i, 0, 0, 1, off, len(tiles[i - 2][1]))
    iloc = full('iloc', 1, 0, iloc)
    infe = lambda i, t, flags: full('infe', 2, flags, struct.pack('>HH4s', i, 0, t) + b'\0')
    iinf = full('iinf', 0, 0, struct.pack('>H', 5) + infe(1, b'grid', 0)
                + b''.join(infe(i, b'hvc1', 1) for i in ids))
    iref = full('iref', 0, 0, box('dimg', struct.pack('>HH4H', 1, 4, *ids)))
    ipma = struct.pack('>I', 5) + struct.pack('>HBBB', 1, 2, ispe_grid, pixi)
    for i in ids:
        h = distinct.index(hvcc[i - 2]) + 1
        ipma += struct.pack('>HBBBB', i, 3, 0x80 | h, ispe_tile, pixi)
    iprp = box('iprp', box('ipco', b''.join(ipco_boxes)) + full('ipma', 0, 0, ipma))
    idat = box('idat', struct.pack('>BBBBHH', 0, 0, 1, 1, 640, 400))
    return full('meta', 0, 0, hdlr + pitm + iloc + iinf + iref + iprp + idat)

ftyp = box('ftyp', b'heic' + struct.pack('>I', 0) + b'mif1heic')
head = len(ftyp) + len(meta([0] * 4)) + 8
offsets, at = [], head
for _, data in tiles:
    offsets.append(at)
    at += len(data)
mdat = box('mdat', b''.join(d for _, d in tiles))
open(out, 'wb').write(ftyp + meta(offsets) + mdat)
