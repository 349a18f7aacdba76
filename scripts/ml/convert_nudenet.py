#!/usr/bin/env python3
"""Converts NudeNet's bundled YOLOv8 detector (nudenet/320n.onnx; the nudenet
package is MIT, the ONNX file's metadata says AGPL-3.0 from Ultralytics)
into a TorchScript classifier picsift can load with tch.

The wrapper takes [B, 3, 320, 320] RGB in 0..1 (letterboxed, as NudeNet
itself feeds it) and returns, for each of NudeNet's 18 labels in its own
order, the highest class score over all anchors: [B, 18], probabilities.
Boxes are dropped: picsift asks "does this label appear", not "where".

Usage: convert_nudenet.py --out FILE [--batch N] [--device cuda]

Trace on the device the worker will run it on: a trace records the device
of the tensors the model creates, so a CPU trace fails on a GPU (seen on an
H200) — which the worker reports at start, as a configuration error.
Writes FILE and FILE.json (the model's declaration for a policy).
"""
import argparse
import json
import time
from pathlib import Path

import ast
import importlib.util

import onnx
import torch
from onnx2torch import convert

SIDE = 320


# The package is installed without its dependencies (opencv, onnxruntime),
# so it is read, not imported.
PACKAGE = Path(importlib.util.find_spec("nudenet").submodule_search_locations[0])


def labels():
    # NudeNet keeps its label list private to its module; read it from the
    # source so the order can never drift from the model's output rows.
    tree = ast.parse((PACKAGE / "nudenet.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "__labels" for t in node.targets):
            return ast.literal_eval(node.value)
    raise SystemExit("nudenet.py has no __labels list; the package changed")


class MaxScore(torch.nn.Module):
    def __init__(self, detector, n_labels):
        super().__init__()
        self.detector = detector
        self.n_labels = n_labels

    def forward(self, x):
        out = self.detector(x)  # [B, 4 + labels, anchors]
        return out[:, 4:4 + self.n_labels, :].amax(dim=2)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--device", default="cpu", help="cpu or cuda: where the model will run")
    args = ap.parse_args()
    torch.set_num_threads(1)

    onnx_path = PACKAGE / "320n.onnx"
    names = labels()
    device = torch.device(args.device)
    detector = convert(onnx.load(str(onnx_path))).eval().to(device)
    model = MaxScore(detector, len(names)).eval()
    example = torch.rand(args.batch, 3, SIDE, SIDE, device=device)
    with torch.no_grad():
        raw = detector(example)
        assert raw.shape[1] == 4 + len(names), f"unexpected YOLO output {tuple(raw.shape)}"
        traced = torch.jit.trace(model, example, check_trace=False)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    traced.save(str(args.out))
    loaded = torch.jit.load(str(args.out), map_location=device)

    # Does the trace fix the batch size? (ONNX reshapes often bake it in.)
    flexible = True
    with torch.no_grad():
        ref = loaded(example)
        for n in (1, 3):
            if n == args.batch:
                continue
            try:
                x = torch.cat([example[:1]] * n)
                got = loaded(x)
                flexible &= got.shape == (n, len(names)) and torch.allclose(got[0], ref[0], atol=1e-4)
            except Exception:
                flexible = False
        t = time.perf_counter()
        reps = 5
        for _ in range(reps):
            loaded(example)
        per_image = (time.perf_counter() - t) / reps / args.batch
    print(f"nudenet: {len(names)} labels: {', '.join(names)}")
    print(f"nudenet: traced at batch {args.batch}; other batch sizes {'work' if flexible else 'do not work (fixedBatch)'}")
    print(f"nudenet: {per_image * 1000:.1f} ms per 320x320 image on one CPU thread")
    meta = {
        "name": "nudenet",
        "file": args.out.name,
        "input": {"width": SIDE, "height": SIDE},
        "mean": [0.0, 0.0, 0.0],
        "std": [1.0, 1.0, 1.0],
        "fit": "pad",
        "output": "probabilities",
        "labels": names,
        "origin": f"nudenet 320n.onnx (package MIT; model metadata AGPL-3.0, Ultralytics), converted with onnx2torch, traced on {args.device}",
    }
    if not flexible:
        meta["fixedBatch"] = args.batch
    Path(str(args.out) + ".json").write_text(json.dumps(meta, indent=2) + "\n")


if __name__ == "__main__":
    main()
