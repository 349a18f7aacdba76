#!/usr/bin/env python3
"""Train the two demo classifiers the worker ships with and export them as
TorchScript.

The models exist so that the ML stage of the pipeline has something real to
run in tests, demos and CI without downloading weights: they are trained in
well under a minute on one CPU thread, from images this script draws itself,
so every clone rebuilds the same weights from a seed.

- pattern.pt   "is this a synthetic test pattern or a photo?"
               logits [B,2], labels ["photo", "pattern"], apply softmax.
- watermark.pt "does this image carry a watermark-like overlay?"
               logits [B,1], label ["watermark"], apply sigmoid.

Both take float32 [B,3,64,64] RGB, normalised as (pixel/255 - 0.5)/0.5, any
batch size; the whole image is resized to 64x64 (aspect not kept; area
averaging when shrinking, as the worker does), which is also how the
real-photo checks below feed them. DIR/demo-models.json declares both.

Usage: demo_models.py --out DIR [--seed N] [--corpus DIR]
"""

import argparse
import colorsys
import functools
import io
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFilter, ImageFont

SIZE = 64  # model input side
RENDER = 128  # images are drawn at twice the input size, then downsampled
MEAN = [0.5, 0.5, 0.5]
STD = [0.5, 0.5, 0.5]

# Sized so that both models train in well under a minute on one CPU thread.
# The pattern model gets more: it must hold up on real photos it never saw.
# The watermark model is limited by what a CNN this small learns in seconds
# (tripling its budget gained about three points).
PATTERN_TRAIN, PATTERN_EPOCHS = 4000, 6
WATERMARK_TRAIN, WATERMARK_EPOCHS = 2600, 5
N_HELD_OUT = 1000
BATCH = 64

REPO = Path(__file__).resolve().parents[2]
DEFAULT_CORPUS = REPO / "tests" / "data" / "pdq"

# Real photos held out from training; the pattern model must call them all
# "photo". Several are deliberately hard: a near-flat sky, zebra-like stripes,
# stairs.
CHECK_DIR = "reg-test-input/labelme-subset"
# Real photos that may be cropped into the training data (never CHECK_DIR).
TRAIN_PHOTO_GLOBS = ["bridge-mods/aaa-orig.jpg", "misc-images/*.jpg", "misc-images/*.png"]


# ---------------------------------------------------------------------------
# Drawing helpers. Everything takes an explicit numpy Generator so that the
# data, and hence the weights, depend only on the seed.


def smooth_field(rng, r, cells):
    """Smooth noise: a cells x cells grid of N(0,1) upsampled bicubically."""
    g = rng.standard_normal((cells, cells)).astype(np.float32)
    return np.asarray(Image.fromarray(g, "F").resize((r, r), Image.BICUBIC))


def fractal(rng, r, octaves, base, persistence):
    """Multi-octave noise scaled to 0..1: clouds, terrain, bark, water."""
    out = np.zeros((r, r), np.float32)
    amp, cells = 1.0, base
    for _ in range(octaves):
        out += amp * smooth_field(rng, r, min(cells, r))
        amp *= persistence
        cells *= 2
    lo, hi = out.min(), out.max()
    return (out - lo) / max(hi - lo, 1e-6)


def natural_colour(rng):
    """Muted colours, as most of a photo is (RGB 0..255)."""
    h = rng.uniform()
    s = rng.beta(1.5, 3.0) * 0.9
    v = rng.uniform(0.15, 0.95)
    return np.array(colorsys.hsv_to_rgb(h, s, v), np.float32) * 255


def vivid_colour(rng):
    """Saturated colours, as test patterns use."""
    h = rng.uniform()
    s = rng.uniform(0.6, 1.0)
    v = rng.uniform(0.6, 1.0)
    return np.array(colorsys.hsv_to_rgb(h, s, v), np.float32) * 255


def ramp(rng, t, colours=None):
    """Map a 0..1 field through a random colour ramp."""
    if colours is None:
        colours = [natural_colour(rng) for _ in range(rng.integers(2, 5))]
    stops = np.sort(rng.uniform(0, 1, len(colours)))
    stops[0], stops[-1] = 0.0, 1.0
    return np.stack([np.interp(t, stops, [c[i] for c in colours]) for i in range(3)], -1)


def grid(r):
    y, x = np.mgrid[0:r, 0:r].astype(np.float32)
    return x, y


def to_pil(a):
    return Image.fromarray(np.clip(a, 0, 255).round().astype(np.uint8), "RGB")


def jpeg(img, quality):
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=int(quality))
    buf.seek(0)
    return Image.open(buf).convert("RGB")


RESAMPLERS = [Image.BILINEAR, Image.BICUBIC, Image.LANCZOS, Image.BOX]


def stray_edges(rng, img):
    """Sometimes a 1-2 px line along some edges, as crops and scans leave.
    Both classes get it so that it means nothing."""
    if rng.uniform() < 0.1:
        draw = ImageDraw.Draw(img)
        w, h = img.size
        for side in np.flatnonzero(rng.uniform(size=4) < 0.5):
            t = int(rng.integers(1, 3))
            c = tuple(int(v) for v in rng.uniform(0, 255, 3))
            box = [(0, 0, w, t - 1), (0, h - t, w, h), (0, 0, t - 1, h), (w - t, 0, w, h)][side]
            draw.rectangle(box, fill=c)
    return img


# ---------------------------------------------------------------------------
# Photo-like images. No single generator looks like a photo; together they
# cover what tells a photo from a pattern: irregular shapes, soft edges,
# texture at every scale, uneven light. A few mimic photos that look
# pattern-like (skies, zebra stripes, stairs, facades) so that the model
# cannot get away with "flat" or "striped" means pattern.


def photo_fractal(rng, r):
    t = fractal(rng, r, rng.integers(3, 7), rng.integers(2, 5), rng.uniform(0.35, 0.7))
    return ramp(rng, t)


def photo_blobs(rng, r):
    img = to_pil(photo_fractal(rng, r))
    draw = ImageDraw.Draw(img)
    for _ in range(rng.integers(3, 25)):
        c = tuple(int(v) for v in natural_colour(rng))
        cx, cy = rng.uniform(-0.1, 1.1, 2) * r
        size = rng.uniform(0.05, 0.5) * r
        if rng.uniform() < 0.5:
            draw.ellipse([cx - size, cy - size * rng.uniform(0.3, 1), cx + size, cy + size], fill=c)
        else:
            n = rng.integers(3, 9)
            ang = np.sort(rng.uniform(0, 2 * np.pi, n))
            rad = size * rng.uniform(0.4, 1.0, n)
            draw.polygon([(cx + a * math.cos(b), cy + a * math.sin(b)) for a, b in zip(rad, ang)], fill=c)
    img = img.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 3.0)))
    texture = fractal(rng, r, 4, 8, 0.6) - 0.5
    return np.asarray(img, np.float32) * (1 + rng.uniform(0.05, 0.35) * texture[..., None])


def photo_warped_stripes(rng, r):
    """Stripes bent by smooth noise: zebra, wood grain, sand ripples. Never
    ruler-straight (the bend is at least half a period), often fine and pure
    black and white, which is where they are hardest to tell from drawn
    stripes."""
    x, y = grid(r)
    period = math.exp(rng.uniform(math.log(4), math.log(30)))
    amp = period * rng.uniform(0.5, 3.0)
    x = x + amp * smooth_field(rng, r, rng.integers(2, 6))
    y = y + amp * smooth_field(rng, r, rng.integers(2, 6))
    th = rng.uniform(0, np.pi)
    v = np.sin(2 * np.pi * (x * math.cos(th) + y * math.sin(th)) / period + rng.uniform(0, 6.3))
    v = v + rng.uniform(0, 1.0) * smooth_field(rng, r, rng.integers(3, 10))  # uneven widths, forks
    v = np.tanh(rng.uniform(0.8, 8) * v) * 0.5 + 0.5
    if rng.uniform() < 0.7:
        a, b = np.full(3, rng.uniform(0, 25)), np.full(3, rng.uniform(230, 255))
    else:
        a, b = natural_colour(rng), natural_colour(rng)
    img = a + (b - a) * v[..., None]
    img = np.asarray(to_pil(img).filter(ImageFilter.GaussianBlur(rng.uniform(0.2, 1.5))), np.float32)
    return img * (1 + rng.uniform(0.0, 0.2) * (fractal(rng, r, 3, 8, 0.6)[..., None] - 0.5))


def photo_labyrinth(rng, r):
    """Thresholded band-pass noise: stripes that fork and end, as on zebras,
    fingerprints, tree bark and dunes, often pure black and white."""
    big = int(r * 1.5)
    long_cells, short_cells = rng.integers(2, 10), rng.integers(16, 70)
    g = rng.standard_normal((short_cells, long_cells)).astype(np.float32)
    f = np.asarray(Image.fromarray(g, "F").resize((big, big), Image.BICUBIC))
    f = f - rng.uniform(0, 0.5) * smooth_field(rng, big, 3)
    # Rotate so the stripes run any way, then keep the middle.
    f = np.asarray(Image.fromarray(f, "F").rotate(rng.uniform(0, 180), Image.BILINEAR))
    lo = (big - r) // 2
    v = np.tanh(rng.uniform(1, 20) * f[lo:lo + r, lo:lo + r] / (f.std() + 1e-6)) * 0.5 + 0.5
    if rng.uniform() < 0.6:
        a, b = np.full(3, rng.uniform(0, 25)), np.full(3, rng.uniform(230, 255))
    else:
        a, b = natural_colour(rng), natural_colour(rng)
    return a + (b - a) * v[..., None]


def photo_sky(rng, r):
    """Near-flat skies, walls and fog, with the slight uneven shading real ones have."""
    x, y = grid(r)
    if rng.uniform() < 0.5:
        top = np.array(colorsys.hsv_to_rgb(rng.uniform(0.53, 0.66), rng.uniform(0.1, 0.6), rng.uniform(0.5, 1.0))) * 255
    else:
        top = natural_colour(rng)
    bottom = top + rng.uniform(-40, 40, 3)
    t = (y / r) ** rng.uniform(0.5, 2.0) + rng.uniform(0.0, 0.15) * smooth_field(rng, r, rng.integers(2, 4))
    img = top + (bottom - top) * t[..., None]
    if rng.uniform() < 0.5:  # faint clouds
        img = img + rng.uniform(2, 30) * (fractal(rng, r, 5, 3, 0.55)[..., None] - 0.5)
    if rng.uniform() < 0.4:  # a horizon with textured ground or sea below
        h = int(r * rng.uniform(0.4, 0.95))
        ground = photo_fractal(rng, r)
        if rng.uniform() < 0.5:  # horizontally stretched: water, fields
            ground = np.asarray(to_pil(ground).resize((r // 4, r)).resize((r, r), Image.BICUBIC), np.float32)
        img[h:] = ground[h:]
        img = np.asarray(to_pil(img).filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.2))), np.float32)
    return img


def photo_bands(rng, r):
    """Irregular horizontal bands narrowing with perspective: stairs, shelves, fields."""
    n = rng.integers(4, 16)
    widths = np.geomspace(1.0, rng.uniform(0.3, 3.0), n) * rng.uniform(0.7, 1.3, n)
    edges = np.concatenate([[0], np.cumsum(widths)]) / widths.sum() * r
    base = natural_colour(rng)
    tilt = rng.uniform(-0.15, 0.15)
    x, y = grid(r)
    yy = y + tilt * (x - r / 2) + rng.uniform(1, 4) * smooth_field(rng, r, 4)
    band = np.clip(np.searchsorted(edges, yy) - 1, 0, n - 1)
    shades = base * rng.uniform(0.5, 1.4, (n, 1)) + rng.uniform(-15, 15, (n, 3))
    img = shades[band]
    img = img * (1 + rng.uniform(0.1, 0.4) * (fractal(rng, r, 5, 8, 0.7)[..., None] - 0.5))
    return np.asarray(to_pil(img).filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.5))), np.float32)


def photo_facade(rng, r):
    """Buildings: rows of windows that are almost, never exactly, regular."""
    img = to_pil(photo_sky(rng, r))
    draw = ImageDraw.Draw(img)
    x0 = rng.uniform(-10, 10)
    while x0 < r:
        w = rng.uniform(0.2, 0.6) * r
        top = rng.uniform(0.0, 0.5) * r
        wall = natural_colour(rng)
        draw.rectangle([x0, top, x0 + w, r], fill=tuple(int(v) for v in wall))
        win = natural_colour(rng) * rng.uniform(0.3, 0.8)
        ww, wh = rng.uniform(3, 10), rng.uniform(5, 14)
        for wy in np.arange(top + 4, r - wh, wh * rng.uniform(1.4, 2.2)):
            for wx in np.arange(x0 + 3, x0 + w - ww, ww * rng.uniform(1.5, 2.5)):
                j = rng.uniform(-1.2, 1.2, 4)
                c = tuple(int(v) for v in np.clip(win + rng.uniform(-25, 25, 3), 0, 255))
                draw.rectangle([wx + j[0], wy + j[1], wx + ww + j[2], wy + wh + j[3]], fill=c)
        x0 += w + rng.uniform(-5, 3)
    img = img.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.2)))
    return np.asarray(img, np.float32) * (1 + 0.2 * (fractal(rng, r, 4, 8, 0.6)[..., None] - 0.5))


class CorpusCrops:
    """Random crops of the few real photos we may train on (if present)."""

    def __init__(self, corpus):
        self.images = []
        if corpus is None or not corpus.is_dir():
            return
        for pattern in TRAIN_PHOTO_GLOBS:
            for p in sorted(corpus.glob(pattern)):
                im = Image.open(p).convert("RGB")
                # Skip the tiny and the blank (misc-images/small.jpg is all
                # black, which would teach "flat = photo").
                if min(im.size) >= 64 and np.asarray(im, np.float32).std() > 10:
                    im.thumbnail((512, 512), Image.LANCZOS)
                    self.images.append(im)

    def __call__(self, rng, r):
        im = self.images[rng.integers(len(self.images))]
        w, h = im.size
        side = rng.uniform(0.25, 1.0) * min(w, h)
        cw, ch = side * rng.uniform(0.8, 1.25), side
        cw = min(cw, w)
        x, y = rng.uniform(0, w - cw), rng.uniform(0, h - ch)
        crop = im.resize((r, r), Image.BILINEAR, box=(x, y, x + cw, y + ch))
        if rng.uniform() < 0.5:
            crop = crop.transpose(Image.FLIP_LEFT_RIGHT)
        a = np.asarray(crop, np.float32)
        # Colour jitter so a handful of source photos do not teach "photo = this palette".
        return a * rng.uniform(0.7, 1.3, 3) + rng.uniform(-20, 20, 3)


PHOTO_GENERATORS = [photo_fractal, photo_blobs, photo_warped_stripes, photo_labyrinth, photo_sky, photo_bands,
                    photo_facade]
# For the pattern model, bent stripes three times: they sit closest to drawn
# stripes and rings, and the model needs more of them than of anything else
# to learn the difference (on its own it learns it easily; in a mix with a
# small share it does not, and calls zebras patterns). The watermark model
# gets the plain mix: busy black-and-white stripes hide overlays, and a third
# of them cost it several points of accuracy.
PATTERN_TASK_PHOTOS = PHOTO_GENERATORS + [photo_warped_stripes, photo_warped_stripes]


def photo_like(rng, r, crops, generators=PHOTO_GENERATORS):
    """A base photo-like image at r x r, before camera effects."""
    if crops.images and rng.uniform() < 0.2:
        return crops(rng, r)
    return generators[rng.integers(len(generators))](rng, r)


def camera(rng, img):
    """Uneven light, tone, downsampling, sensor noise, clipping and JPEG, as
    cameras and uploads leave them. Returns a SIZE x SIZE PIL image."""
    r = img.shape[0]
    x, y = grid(r)
    th = rng.uniform(0, 2 * np.pi)
    light = 1 + rng.uniform(0, 0.4) * ((x * math.cos(th) + y * math.sin(th)) / r - 0.5)
    light = light + rng.uniform(0, 0.15) * smooth_field(rng, r, 2)
    img = img * light[..., None]
    img = 255 * (np.clip(img, 0, 255) / 255) ** rng.uniform(0.7, 1.4)
    small = np.asarray(to_pil(img).resize((SIZE, SIZE), RESAMPLERS[rng.integers(len(RESAMPLERS))]), np.float32)
    # Photos shrunk a lot (a 4000 px original to 64) keep no visible noise, so
    # a good share of them are clean: the model must not take "clean" to mean
    # "pattern".
    sigma = rng.uniform(0, 0.5) if rng.uniform() < 0.3 else math.exp(rng.uniform(math.log(0.5), math.log(6.0)))
    noise = rng.standard_normal((SIZE, SIZE, 3)) * sigma
    noise += rng.standard_normal((SIZE, SIZE, 1)) * sigma * rng.uniform(0, 1)  # luma noise
    out = small + noise
    if rng.uniform() < 0.3:
        # Over-contrasty exposures clip shadows and highlights to flat 0 and
        # 255, where no sensor noise survives. Without them the model learns
        # that pure black and white means "pattern" (and calls a zebra one).
        out = (out - 128) * rng.uniform(1.2, 2.5) + 128
    out = stray_edges(rng, to_pil(out))
    if rng.uniform() < 0.15:
        # Black-and-white photos have no colour noise; without them the model
        # learns that chroma noise is what makes a photo.
        out = out.convert("L").convert("RGB")
    if rng.uniform() < 0.5:
        out = jpeg(out, rng.integers(50, 96))
    return out


# ---------------------------------------------------------------------------
# Synthetic test patterns: exact geometry, flat or mathematically smooth
# colour. Drawn at RENDER and downsampled like any upload would be. Nothing
# finer than the output can show: aliased stripes and zone plates turn into
# wavy moire that looks just like a zebra, and would teach the model that
# bent stripes are patterns.


BAR_COLOURS = np.array(
    [[255, 255, 255], [255, 255, 0], [0, 255, 255], [0, 255, 0], [255, 0, 255], [255, 0, 0], [0, 0, 255], [0, 0, 0]],
    np.float32,
)


def two_colours(rng):
    u = rng.uniform()
    if u < 0.4:
        return np.array([255.0] * 3), np.array([0.0] * 3)
    if u < 0.55:  # two greys
        return np.full(3, rng.uniform(0, 100)), np.full(3, rng.uniform(140, 255))
    return vivid_colour(rng), (natural_colour(rng) if rng.uniform() < 0.5 else vivid_colour(rng))


def pixel_size(rng, lo, hi):
    """A cell or period size. Half the time a whole number of output pixels
    (an even number at RENDER), as in a pattern drawn at its own resolution
    and shrunk by a whole factor: then every edge stays perfectly sharp,
    which looks different to the model from edges that fall between pixels."""
    if rng.uniform() < 0.5:
        return 2.0 * rng.integers(max(1, int(lo / 2)), int(hi / 2) + 1)
    return rng.uniform(lo, hi)


def pattern_bars(rng, r):
    n = rng.integers(4, 13)
    if rng.uniform() < 0.6:
        cols = BAR_COLOURS[:n] if n <= 8 else BAR_COLOURS[rng.integers(0, 8, n)]
        cols = cols * rng.choice([0.75, 1.0])
    else:
        cols = np.stack([vivid_colour(rng) for _ in range(n)])
    x, y = grid(r)
    img = cols[np.minimum((x * n / r).astype(int), n - 1)]
    if rng.uniform() < 0.4:  # SMPTE-like lower rows
        h = int(r * rng.uniform(0.6, 0.8))
        img[h:] = pattern_steps(rng, r)[h:]
    return img if rng.uniform() < 0.8 else img.transpose(1, 0, 2)


def pattern_steps(rng, r):
    """Grey or colour step wedge."""
    n = rng.integers(3, 17)
    x, _ = grid(r)
    t = np.floor(x * n / r) / (n - 1)
    hi = np.array([255.0] * 3) if rng.uniform() < 0.6 else vivid_colour(rng)
    img = hi * t[..., None]
    return img if rng.uniform() < 0.5 else img[:, ::-1]


def rotated(rng, r, p):
    """Coordinates rotated by a random angle with probability p."""
    x, y = grid(r)
    if rng.uniform() < p:
        th = rng.choice([np.pi / 4, rng.uniform(0, np.pi)])
        x, y = x * math.cos(th) - y * math.sin(th), x * math.sin(th) + y * math.cos(th)
    return x, y


def pattern_checker(rng, r):
    cell = pixel_size(rng, 3, 32)
    x, y = rotated(rng, r, 0.3)
    a, b = two_colours(rng)
    m = ((np.floor(x / cell) + np.floor(y / cell)) % 2)[..., None]
    return a * m + b * (1 - m)


def pattern_stripes(rng, r):
    period = pixel_size(rng, 5, 40)
    x, y = rotated(rng, r, 0.5)
    phase = (x / period) % 1.0
    a, b = two_colours(rng)
    if rng.uniform() < 0.3:
        m = 0.5 + 0.5 * np.sin(2 * np.pi * phase)
    else:
        m = (phase < rng.uniform(0.2, 0.8)).astype(np.float32)
    return a * m[..., None] + b * (1 - m[..., None])


def pattern_grid(rng, r):
    spacing = pixel_size(rng, 6, 40)
    width = pixel_size(rng, 1, 4)
    x, y = rotated(rng, r, 0.15)
    off = rng.uniform(0, spacing, 2)
    m = (((x + off[0]) % spacing) < width) | (((y + off[1]) % spacing) < width)
    bg, line = two_colours(rng)
    if rng.uniform() < 0.5:
        bg, line = line, bg
    img = np.where(m[..., None], line, bg)
    if rng.uniform() < 0.3:  # dots at the crossings
        d = np.hypot((x + off[0]) % spacing - width / 2, (y + off[1]) % spacing - width / 2)
        img = np.where((d < width * 2)[..., None], vivid_colour(rng), img)
    return img


def pattern_gradient(rng, r):
    x, y = grid(r)
    kind = rng.integers(4)
    if kind == 0:  # linear
        th = rng.choice([0, np.pi / 2, rng.uniform(0, 2 * np.pi)])
        t = (x * math.cos(th) + y * math.sin(th)) / r
    elif kind == 1:  # radial
        c = rng.uniform(0, r, 2)
        t = np.hypot(x - c[0], y - c[1]) / r
    elif kind == 2:  # conic: colour wheels
        c = rng.uniform(0.3, 0.7, 2) * r
        t = (np.arctan2(y - c[1], x - c[0]) / (2 * np.pi)) % 1
    else:  # separate horizontal and vertical ramps
        a, b = vivid_colour(rng), vivid_colour(rng)
        return a * (x / r)[..., None] + b * (y / r)[..., None] * 0.5
    t = (t - t.min()) / max(t.max() - t.min(), 1e-6)
    # Neighbouring stops differ clearly: a ramp between two near-equal colours
    # is indistinguishable from a clear sky at 64x64 and would only add
    # label noise.
    cols, n = [vivid_colour(rng)], rng.integers(2, 4)
    while len(cols) < n:
        c = vivid_colour(rng) if rng.uniform() < 0.7 else natural_colour(rng)
        if np.abs(c - cols[-1]).sum() > 150:
            cols.append(c)
    if kind == 2:
        cols = cols + [cols[0]]
    return ramp(rng, t, cols)


def pattern_rings(rng, r):
    x, y = grid(r)
    c = rng.uniform(0.2, 0.8, 2) * r if rng.uniform() < 0.5 else np.array([r / 2, r / 2])
    d = np.hypot(x - c[0], y - c[1])
    a, b = two_colours(rng)
    if rng.uniform() < 0.3:  # zone plate, kept below the output's Nyquist
        m = 0.5 + 0.5 * np.cos(rng.uniform(0.001, 0.007) * d * d)
    else:
        period = rng.uniform(4, 30)
        m = (d / period) % 1.0
        m = (m < 0.5).astype(np.float32) if rng.uniform() < 0.7 else 0.5 + 0.5 * np.sin(2 * np.pi * m)
    return a * m[..., None] + b * (1 - m[..., None])


def pattern_dots(rng, r):
    spacing = pixel_size(rng, 6, 32)
    radius = spacing * rng.uniform(0.15, 0.45)
    x, y = grid(r)
    dx = (x % spacing) - spacing / 2
    dy = (y % spacing) - spacing / 2
    a, b = two_colours(rng)
    return np.where((np.hypot(dx, dy) < radius)[..., None], a, b)


def pattern_card(rng, r):
    """Test card: regions of different patterns, a circle and crosshair."""
    img = PATTERN_BASES[rng.integers(len(PATTERN_BASES))](rng, r)
    cut = int(r * rng.uniform(0.3, 0.7))
    img[cut:] = PATTERN_BASES[rng.integers(len(PATTERN_BASES))](rng, r)[cut:]
    pil = to_pil(img)
    d = ImageDraw.Draw(pil)
    colour = tuple(int(v) for v in (BAR_COLOURS[rng.integers(8)]))
    w = int(rng.integers(1, 4))
    if rng.uniform() < 0.7:
        m = r * rng.uniform(0.05, 0.25)
        d.ellipse([m, m, r - m, r - m], outline=colour, width=w)
    if rng.uniform() < 0.7:
        d.line([r / 2, 0, r / 2, r], fill=colour, width=w)
        d.line([0, r / 2, r, r / 2], fill=colour, width=w)
    return np.asarray(pil, np.float32)


PATTERN_BASES = [
    pattern_bars,
    pattern_steps,
    pattern_checker,
    pattern_stripes,
    pattern_grid,
    pattern_gradient,
    pattern_rings,
    pattern_dots,
]
# No plain single-colour fills: at 64x64 they cannot be told from a clear sky
# or a white wall, so either label would be wrong half the time.
# Rings twice, to pair with the bent stripes on the photo side (see there).
PATTERN_GENERATORS = PATTERN_BASES + [pattern_rings, pattern_card, pattern_card]


def pattern(rng):
    img = PATTERN_GENERATORS[rng.integers(len(PATTERN_GENERATORS))](rng, RENDER)
    out = np.asarray(to_pil(img).resize((SIZE, SIZE), RESAMPLERS[rng.integers(len(RESAMPLERS))]), np.float32)
    if rng.uniform() < 0.3:
        # Noisy patterns (rendered with dither, screenshots of video, scans)
        # stop the model from reading "clean" as "pattern": geometry and
        # colour must decide, and clean real photos are then safe.
        sigma = math.exp(rng.uniform(math.log(0.5), math.log(4.0)))
        out = out + rng.standard_normal((SIZE, SIZE, 1)) * sigma + rng.standard_normal((SIZE, SIZE, 3)) * sigma
    out = stray_edges(rng, to_pil(out))
    if rng.uniform() < 0.5:
        out = jpeg(out, rng.integers(50, 96))
    return out


# ---------------------------------------------------------------------------
# Watermark overlays.

WORDS = ["SAMPLE", "PREVIEW", "WATERMARK", "STOCK", "DRAFT", "PROOF", "COPYRIGHT", "© photo", "© studio", "CONFIDENTIAL"]


@functools.lru_cache(maxsize=None)
def font(size):
    """Pillow's default font at `size` px (Pillow >= 10.1 bundles a scalable
    one); cached because loading it decodes the font each time."""
    return ImageFont.load_default(size=size)


def random_text(rng):
    if rng.uniform() < 0.6:
        return str(WORDS[rng.integers(len(WORDS))])
    letters = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789.© "
    return "".join(letters[i] for i in rng.integers(0, len(letters), rng.integers(3, 14))).strip() or "X"


def stamp(rng, logo, size, colour):
    """One mark, text or logo, on its own transparent tile. Tiled watermarks
    repeat one mark, so it is drawn once and pasted (font rendering is the
    slow part of drawing them)."""
    if not logo:
        text, f = random_text(rng), font(size)
        left, top, right, bottom = f.getbbox(text)
        tile = Image.new("RGBA", (right - left + 4, bottom - top + 4), (0, 0, 0, 0))
        ImageDraw.Draw(tile).text((2 - left, 2 - top), text, fill=colour, font=f)
        return tile
    side = 2 * size + 4
    tile = Image.new("RGBA", (side, side), (0, 0, 0, 0))
    draw = ImageDraw.Draw(tile)
    c = side / 2
    kind = rng.integers(4)
    w = max(1, int(size * rng.uniform(0.08, 0.2)))
    box = [c - size, c - size, c + size, c + size]
    if kind == 0:  # seal: ring with initials
        draw.ellipse(box, outline=colour, width=w)
        draw.text((c, c), random_text(rng)[:2], fill=colour, font=font(max(6, size)), anchor="mm")
    elif kind == 1:  # star
        pts = [(c + size * (1 if i % 2 == 0 else 0.45) * math.cos(i * math.pi / 5 - math.pi / 2),
                c + size * (1 if i % 2 == 0 else 0.45) * math.sin(i * math.pi / 5 - math.pi / 2)) for i in range(10)]
        draw.polygon(pts, fill=colour)
    elif kind == 2:  # badge: rounded box with letters
        draw.rounded_rectangle(box, radius=size / 3, outline=colour, width=w)
        draw.text((c, c), random_text(rng)[:3], fill=colour, font=font(max(6, int(size * 0.8))), anchor="mm")
    else:  # ring
        draw.ellipse(box, fill=colour)
        draw.ellipse([c - size * 0.55, c - size * 0.55, c + size * 0.55, c + size * 0.55], fill=(0, 0, 0, 0))
    return tile


def overlay(rng, base):
    """Composite a semi-transparent text or logo overlay, single or tiled."""
    r = base.size[0]
    big = 2 * r  # drawn larger so that rotating it leaves no empty corners
    layer = Image.new("RGBA", (big, big), (0, 0, 0, 0))
    # Real watermarks are chosen to show up: light on dark pictures, dark on
    # light ones. An invisible positive would only teach the model noise.
    luma = float(np.asarray(base.convert("L"), np.float32).mean())
    u = rng.uniform()
    if u < 0.25:
        colour = tuple(int(v) for v in vivid_colour(rng))
    elif luma < 100 or (luma < 160 and u < 0.7):
        colour = (255, 255, 255)
    else:
        colour = (0, 0, 0)
    logo = rng.uniform() < 0.3
    tiled = rng.uniform() < 0.5
    size = int(r * (rng.uniform(0.1, 0.22) if tiled else rng.uniform(0.15, 0.35)))
    if logo:
        size = int(size * 0.8)
    tile = stamp(rng, logo, size, colour + (255,))
    tw, th = tile.size

    def put(cx, cy):
        layer.paste(tile, (int(cx - tw / 2), int(cy - th / 2)), tile)

    if tiled:
        step_x = tw * rng.uniform(1.1, 1.8)
        step_y = max(th, size) * rng.uniform(1.5, 3.0)
        # Only the middle of the layer can end up in the picture after rotation.
        lo, hi = big / 2 - 0.75 * r, big / 2 + 0.75 * r
        for row, cy in enumerate(np.arange(lo, hi + step_y, step_y)):
            for cx in np.arange(lo - (row % 2) * step_x / 2, hi + step_x, step_x):
                put(cx, cy)
    else:
        # Single marks sit in the centre or toward a corner, as stock sites put them.
        cx, cy = (big / 2, big / 2) if rng.uniform() < 0.5 else (big / 2 + rng.uniform(-0.3, 0.3) * r,
                                                                    big / 2 + rng.uniform(-0.35, 0.35) * r)
        put(cx, cy)
    angle = rng.choice([0.0, rng.uniform(-45, 45)]) if not tiled else rng.uniform(-45, 45)
    # Rotate about the centre and cut out the middle r x r in one affine
    # resample: rotating the whole layer first costs four times as much.
    cos, sin = math.cos(math.radians(angle)), math.sin(math.radians(angle))
    c = big / 2
    layer = layer.transform((r, r), Image.AFFINE, (cos, sin, c - (cos + sin) * r / 2,
                                                   -sin, cos, c + (sin - cos) * r / 2), Image.BILINEAR)
    if rng.uniform() < 0.3:
        layer = layer.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.0)))
    alpha = np.asarray(layer.getchannel("A"), np.float32) / 255 * rng.uniform(0.25, 0.6)
    rgb = np.asarray(layer.convert("RGB"), np.float32)
    b = np.asarray(base, np.float32)
    return to_pil(b * (1 - alpha[..., None]) + rgb * alpha[..., None])


def watermark_pair(rng, crops):
    """One base image without and with an overlay, otherwise identical (same
    camera effects), so that the overlay is the only thing to learn."""
    base = to_pil(photo_like(rng, RENDER, crops))
    marked = overlay(rng, base)
    cam = rng.integers(2**63)
    # The overlay goes on before the camera effects so that it is degraded
    # (resized, compressed) the same way as the picture under it.
    return [camera(np.random.default_rng(cam), np.asarray(im, np.float32)) for im in (base, marked)]


# ---------------------------------------------------------------------------
# Data sets, model, training.


def to_tensor(images):
    a = np.stack([np.asarray(im.convert("RGB"), np.float32) for im in images])
    t = torch.from_numpy(a).permute(0, 3, 1, 2).contiguous()
    return (t / 255 - 0.5) / 0.5


def pattern_dataset(rng, n, crops):
    labels = rng.integers(0, 2, n)  # 0 photo, 1 pattern
    images = [pattern(rng) if y else camera(rng, photo_like(rng, RENDER, crops, PATTERN_TASK_PHOTOS)) for y in labels]
    return to_tensor(images), torch.from_numpy(labels).long()


def watermark_dataset(rng, n, crops):
    images = [im for _ in range(n // 2) for im in watermark_pair(rng, crops)]
    labels = torch.tensor([0.0, 1.0]).repeat(n // 2)
    return to_tensor(images), labels


class SmallCnn(nn.Module):
    """Four strided conv blocks and global pooling.

    The input is widened with a fixed high-pass copy of itself (each pixel
    minus its 3x3 mean): both tasks hinge on pixel-level detail (sensor noise
    and texture for photos, thin semi-transparent strokes for overlays), and
    handing the network that detail directly lifted held-out accuracy more,
    for the same training time, than extra layers at full resolution did.
    Average and max pooling together let a single overlay stroke count.

    With layout=True the head also sees the final 4x4 map itself, i.e. where
    things are: pooled over the image, local features of concentric rings
    and of a zebra's stripes are the same (curved black-and-white bands);
    only the layout, bands centred on a point or not, tells them apart. A
    watermark can be anywhere, and there the extra weights only overfit."""

    layout: bool

    def __init__(self, outputs: int, layout: bool):
        super().__init__()

        def block(cin, cout):
            return nn.Sequential(nn.Conv2d(cin, cout, 3, 2, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())

        self.features = nn.Sequential(block(6, 16), block(16, 32), block(32, 64), block(64, 64))
        self.layout = layout
        self.head = nn.Linear(192 + (64 * 16 if layout else 0), outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # 3x3 box mean as shifted sums: avg_pool2d takes three times as long
        # on CPU, and this runs on every training step.
        p = F.pad(x, (1, 1, 1, 1), mode="replicate")
        h = p[:, :, :, :-2] + p[:, :, :, 1:-1] + p[:, :, :, 2:]
        detail = x - (h[:, :, :-2, :] + h[:, :, 1:-1, :] + h[:, :, 2:, :]) / 9
        f = self.features(torch.cat([x, 4 * detail], dim=1))
        pooled = [f.mean(dim=(2, 3)), f.amax(dim=(2, 3)), f.std(dim=(2, 3))]
        if self.layout:
            pooled.append(f.flatten(1))
        return self.head(torch.cat(pooled, dim=1))


class Symmetrised(nn.Module):
    """What gets exported: the network's logits averaged over the image's
    mirror images (square=True: all eight symmetries of the square, as in
    training). Near the decision boundary a small CNN's answer swings with
    orientation (a zebra photo scored 0.26 upright and 0.67 turned 90
    degrees); the average is steadier and about a point more accurate, for
    eight passes of a model that costs ~8 MFLOP a pass."""

    def __init__(self, net: nn.Module, square: bool):
        super().__init__()
        self.net = net
        self.square = square

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        views = [x, x.flip(3)]
        if self.square:
            views = views + [x.flip(2), x.flip(2).flip(3)]
            views = views + [v.transpose(2, 3) for v in views]
        out = self.net(torch.cat(views, dim=0))
        return out.view(len(views), x.shape[0], -1).mean(dim=0)


def augment(x, gen, square):
    """Random mirror images, and with square=True all eight symmetries of
    the square: repeated epochs over a small data set are then worth nearly
    as much as fresh data. Patterns and photos do not care about
    orientation; watermark text is near-horizontal (within 45 degrees), and
    teaching the model vertical text too cost it accuracy."""
    x = x.clone()
    for dims in ([3], [2]) if square else ([3],):
        flip = torch.rand(x.shape[0], generator=gen) < 0.5
        x[flip] = x[flip].flip(dims)
    if square:
        swap = torch.rand(x.shape[0], generator=gen) < 0.5
        x[swap] = x[swap].transpose(2, 3)
    return x


def train(model, x, y, loss_fn, epochs, seed, pairs=False, square=True):
    """AdamW with a one-cycle schedule: the most accuracy for a few epochs.
    With pairs, (2i, 2i+1) stay in one batch, so each step sees the same
    picture with and without the thing to detect."""
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
    steps = epochs * math.ceil(len(x) / BATCH)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=steps)
    model.train()
    for _ in range(epochs):
        if pairs:
            order = (torch.randperm(len(x) // 2, generator=gen)[:, None] * 2 + torch.arange(2)).flatten()
        else:
            order = torch.randperm(len(x), generator=gen)
        for i in range(0, len(x), BATCH):
            idx = order[i:i + BATCH]
            opt.zero_grad()
            loss = loss_fn(model(augment(x[idx], gen, square)), y[idx])
            loss.backward()
            opt.step()
            sched.step()
    model.eval()


@torch.no_grad()
def predict(model, x):
    return torch.cat([model(x[i:i + 64]) for i in range(0, len(x), 64)])


def export(model, path, outputs, score):
    """Script, save, reload, and check that scores do not depend on the batch size."""
    model.eval()
    scripted = torch.jit.script(model)
    scripted.save(str(path))
    loaded = torch.jit.load(str(path))
    loaded.eval()
    x = torch.randn(64, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        many = loaded(x)
        one = torch.cat([loaded(x[i:i + 1]) for i in range(len(x))])
    assert many.shape == (64, outputs), many.shape
    diff = (score(many) - score(one)).abs().max().item()
    assert diff < 1e-5, f"{path.name}: scores at batch 1 and batch 64 differ by {diff}"
    print(f"  {path.name}: saved; scores at batch 1 vs 64 differ by at most {diff:.1e}")
    return loaded


def real_photos(corpus):
    d = corpus / CHECK_DIR if corpus is not None else None
    if d is None or not d.is_dir():
        return [], []
    paths = sorted(d.glob("*.jpg"))
    return paths, [Image.open(p).convert("RGB") for p in paths]


def small(images):
    """The worker's preprocessing: whole image to 64x64, area averaging."""
    return to_tensor([im.resize((SIZE, SIZE), Image.BOX) for im in images])


def build_pattern(args, crops, photos):
    t0, c0 = time.perf_counter(), time.process_time()
    x, y = pattern_dataset(np.random.default_rng([args.seed, 1]), PATTERN_TRAIN, crops)
    torch.manual_seed(args.seed)
    model = SmallCnn(2, layout=True)
    train(model, x, y, F.cross_entropy, PATTERN_EPOCHS, args.seed)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    loaded = export(Symmetrised(model, square=True), args.out / "pattern.pt", 2, lambda z: torch.softmax(z, 1))
    hx, hy = pattern_dataset(np.random.default_rng([args.seed, 101]), N_HELD_OUT, crops)
    acc = (predict(loaded, hx).argmax(1) == hy).float().mean().item()
    print(f"pattern: held-out accuracy {acc:.4f} on {N_HELD_OUT} fresh images; "
          f"data+training {wall:.1f}s wall, {cpu:.1f}s CPU")
    paths, images = photos
    if images:
        p = torch.softmax(predict(loaded, small(images)), 1)[:, 1]
        print(f"  real photos ({CHECK_DIR}): {int((p < 0.5).sum())}/{len(paths)} classified photo")
        for path, s in zip(paths, p.tolist()):
            print(f"    {path.name}: P(pattern) = {s:.3f}")
    return {"name": "pattern", "file": "pattern.pt", "labels": ["photo", "pattern"], "output": "softmax",
            "heldOutAccuracy": round(acc, 4), "trainSeconds": round(wall, 1)}


def build_watermark(args, crops, photos):
    t0, c0 = time.perf_counter(), time.process_time()
    x, y = watermark_dataset(np.random.default_rng([args.seed, 2]), WATERMARK_TRAIN, crops)
    torch.manual_seed(args.seed + 1)
    model = SmallCnn(1, layout=False)
    train(model, x, y[:, None], F.binary_cross_entropy_with_logits, WATERMARK_EPOCHS, args.seed + 1,
          pairs=True, square=False)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    loaded = export(Symmetrised(model, square=False), args.out / "watermark.pt", 1, torch.sigmoid)
    hx, hy = watermark_dataset(np.random.default_rng([args.seed, 102]), N_HELD_OUT, crops)
    acc = ((predict(loaded, hx)[:, 0] > 0) == (hy > 0.5)).float().mean().item()
    print(f"watermark: held-out accuracy {acc:.4f} on {N_HELD_OUT} fresh images; "
          f"data+training {wall:.1f}s wall, {cpu:.1f}s CPU")
    paths, images = photos
    if images:
        # The same real photos, bare and with an overlay: how far the model
        # carries over to pictures it was never shown.
        rng = np.random.default_rng([args.seed, 103])
        marked = [overlay(rng, im.resize((RENDER, RENDER), Image.BILINEAR)) for im in images]
        bare = torch.sigmoid(predict(loaded, small(images)))[:, 0]
        over = torch.sigmoid(predict(loaded, small(marked)))[:, 0]
        print(f"  real photos: {int((bare < 0.5).sum())}/{len(bare)} bare ones scored < 0.5, "
              f"{int((over >= 0.5).sum())}/{len(over)} overlaid ones scored >= 0.5")
        for path, b, o in zip(paths, bare.tolist(), over.tolist()):
            print(f"    {path.name}: bare {b:.3f}, with overlay {o:.3f}")
    return {"name": "watermark", "file": "watermark.pt", "labels": ["watermark"], "output": "sigmoid",
            "heldOutAccuracy": round(acc, 4), "trainSeconds": round(wall, 1)}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS,
                    help="PDQ reference corpus (optional; default %(default)s)")
    args = ap.parse_args()

    # One thread: the weights are then the same on machines with different
    # core counts, and the whole run takes well under a minute anyway.
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    args.out.mkdir(parents=True, exist_ok=True)
    corpus = args.corpus if args.corpus.is_dir() else None
    crops = CorpusCrops(corpus)
    print(f"corpus: {corpus or 'not found, generated data only'}; {len(crops.images)} photos to crop for training")
    photos = real_photos(corpus)

    started = time.perf_counter()
    meta = [build_pattern(args, crops, photos), build_watermark(args, crops, photos)]
    for m in meta:
        m.update({"input": {"width": SIZE, "height": SIZE}, "mean": MEAN, "std": STD})
    (args.out / "demo-models.json").write_text(json.dumps(meta, indent=2) + "\n")
    print(f"total {time.perf_counter() - started:.1f}s; wrote {args.out / 'demo-models.json'}")


if __name__ == "__main__":
    main()
