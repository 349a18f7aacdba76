#!/usr/bin/env python3
"""Proves the TorchScript NudeNet picsift loads (models/nudenet.pt, made by
convert_nudenet.py with onnx2torch) scores like the original: NudeNet's own
320n.onnx run by onnxruntime (from PyPI), on the same inputs.

Inputs: every photo of tests/data/pdq (letterboxed to 320x320 as NudeNet
and picsift's `fit = "pad"` feed it) and random tensors. For each, the
ONNX model's raw output is reduced as the TorchScript wrapper reduces it
(each label's highest score over all anchors) and compared label by label.

Usage: check_nudenet.py MODEL.pt [--tolerance 1e-4]
Exits 1, naming the worst input and label, when any score differs by more
than the tolerance.
"""
import argparse
import importlib.util
import sys
from pathlib import Path

import numpy as np
import onnxruntime
import torch
from PIL import Image

SIDE = 320
REPO = Path(__file__).resolve().parents[2]
PACKAGE = Path(importlib.util.find_spec("nudenet").submodule_search_locations[0])


def letterboxed(path):
    """The photo scaled to fit 320x320 and padded with black, as 0..1 CHW."""
    img = Image.open(path).convert("RGB")
    scale = SIDE / max(img.size)
    w, h = max(1, round(img.width * scale)), max(1, round(img.height * scale))
    canvas = Image.new("RGB", (SIDE, SIDE))
    canvas.paste(img.resize((w, h), Image.BILINEAR), (0, 0))
    return np.asarray(canvas, dtype=np.float32).transpose(2, 0, 1) / 255.0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", type=Path)
    ap.add_argument("--tolerance", type=float, default=1e-4)
    args = ap.parse_args()
    torch.set_num_threads(1)

    photos = sorted(p for p in (REPO / "tests/data/pdq").rglob("*") if p.suffix.lower() in (".jpg", ".png"))
    inputs = [(p.relative_to(REPO).as_posix(), letterboxed(p)) for p in photos]
    rng = np.random.default_rng(7)
    inputs += [(f"random-{i}", rng.random((3, SIDE, SIDE), dtype=np.float32)) for i in range(4)]

    session = onnxruntime.InferenceSession(str(PACKAGE / "320n.onnx"), providers=["CPUExecutionProvider"])
    feed = session.get_inputs()[0].name
    scripted = torch.jit.load(str(args.model), map_location="cpu").eval()

    worst = (0.0, "", 0)
    for name, x in inputs:
        raw = session.run(None, {feed: x[None]})[0]  # [1, 4 + labels, anchors]
        want = raw[0, 4:, :].max(axis=1)
        with torch.no_grad():
            got = scripted(torch.from_numpy(x[None])).numpy()[0]
        if got.shape != want.shape:
            sys.exit(f"check_nudenet: {name}: TorchScript gives {got.shape} scores, ONNX {want.shape}")
        diff = np.abs(got - want)
        label = int(diff.argmax())
        if diff[label] > worst[0]:
            worst = (float(diff[label]), name, label)
    print(f"check_nudenet: {len(inputs)} inputs ({len(photos)} photos), "
          f"largest score difference {worst[0]:.2e} ({worst[1]}, label {worst[2]}), tolerance {args.tolerance:g}")
    if worst[0] > args.tolerance:
        sys.exit(1)


if __name__ == "__main__":
    main()
