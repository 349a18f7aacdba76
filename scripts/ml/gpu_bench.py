#!/usr/bin/env python3
"""GPU figures for the models and quality measurements picsift runs, through
PyTorch alone: for a GPU machine that cannot build the Rust worker (no Rust
toolchain or network there; libtorch 2.13 with CUDA is gigabytes). It loads
the same TorchScript files the worker loads and, for each, prints images/s
at batch sizes 1, 32 and 128 on the GPU next to the CPU in the same run, and
checks that GPU and CPU scores agree.

Usage: gpu_bench.py DIR   (DIR holds pattern.pt, watermark.pt, nudenet.pt,
and 320n.onnx to re-trace NudeNet on the GPU with onnx2torch)
"""
import sys
import time
from pathlib import Path

import torch

DIR = Path(sys.argv[1])
BATCHES = (1, 32, 128)
cuda = torch.device("cuda")


def timed(fn, reps):
    fn()  # warm-up (kernels, cuDNN autotuning)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(reps):
        fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return (time.perf_counter() - t) / reps


def rate(model, side, batch, device, reps=10):
    x = torch.rand(batch, 3, side, side, device=device)
    with torch.no_grad():
        return batch / timed(lambda: model(x), reps)


def agree(cpu_model, gpu_model, side, batch=4):
    x = torch.rand(batch, 3, side, side)
    with torch.no_grad():
        a = cpu_model(x)
        b = gpu_model(x.to(cuda)).cpu()
    return (a - b).abs().max().item()


def row(name, values):
    print(f"| {name} | " + " | ".join(values) + " |")


print(f"torch {torch.__version__}, GPU {torch.cuda.get_device_name(0)}, CPU threads {torch.get_num_threads()}")
print()
print("| model (input) | CPU 1 thread, batch 32 | CPU all threads, batch 32 | GPU batch 1 | GPU batch 32 | GPU batch 128 | max |GPU − CPU| score |")
print("|---|---|---|---|---|---|---|")
threads = torch.get_num_threads()
for name in ("pattern", "watermark"):
    cpu_model = torch.jit.load(str(DIR / f"{name}.pt"), map_location="cpu").eval()
    gpu_model = torch.jit.load(str(DIR / f"{name}.pt"), map_location=cuda).eval()
    torch.set_num_threads(1)
    one = rate(cpu_model, 64, 32, "cpu", reps=5)
    torch.set_num_threads(threads)
    allt = rate(cpu_model, 64, 32, "cpu", reps=5)
    gpu = [rate(gpu_model, 64, b, cuda) for b in BATCHES]
    row(f"{name} (64×64)", [f"{one:.0f}", f"{allt:.0f}"] + [f"{g:.0f}" for g in gpu] + [f"{agree(cpu_model, gpu_model, 64):.2e}"])

# NudeNet: the CPU trace (batch 1) as the worker loads it, then traces made
# on the GPU at each batch size (a trace records the device of tensors it
# creates, so a CPU trace may not run on the GPU).
cpu_trace = torch.jit.load(str(DIR / "nudenet.pt"), map_location="cpu").eval()
try:
    moved = torch.jit.load(str(DIR / "nudenet.pt"), map_location=cuda).eval()
    with torch.no_grad():
        moved(torch.rand(1, 3, 320, 320, device=cuda))
    print(f"\nnudenet.pt (traced on CPU) runs on the GPU: max |GPU − CPU| {agree(cpu_trace, moved, 320, 1):.2e}")
except Exception as e:  # noqa: BLE001 - the finding is the point
    print(f"\nnudenet.pt (traced on CPU) does NOT run on the GPU: {str(e).splitlines()[0][:200]}")

sys.path.insert(0, "/tmp/site")
import onnx  # noqa: E402
from onnx2torch import convert  # noqa: E402


class MaxScore(torch.nn.Module):
    def __init__(self, detector):
        super().__init__()
        self.detector = detector

    def forward(self, x):
        return self.detector(x)[:, 4:22, :].amax(dim=2)


wrapped = MaxScore(convert(onnx.load(str(DIR / "320n.onnx")))).eval()
torch.set_num_threads(1)
cpu1 = rate(cpu_trace, 320, 1, "cpu", reps=5)
torch.set_num_threads(threads)
cpuall = rate(cpu_trace, 320, 1, "cpu", reps=5)
gpu = []
diff = 0.0
for b in BATCHES:
    x = torch.rand(b, 3, 320, 320, device=cuda)
    with torch.no_grad():
        traced = torch.jit.trace(wrapped.to(cuda), x, check_trace=False)
        gpu.append(rate(traced, 320, b, cuda))
        if b == 1:
            diff = agree(cpu_trace, traced, 320, 1)
row("nudenet (320×320), CPU columns at batch 1", [f"{cpu1:.0f}", f"{cpuall:.0f}"] + [f"{g:.0f}" for g in gpu] + [f"{diff:.2e}"])

# Quality measurements as the worker computes them, batched.
lap = torch.tensor([[0.0, 1, 0], [1, -4, 1], [0, 1, 0]], device=cuda).view(1, 1, 3, 3)


def quality(x):
    n = x.shape[0]
    flat = x.reshape(n, -1)
    contrast = flat.std(1)
    sharp = torch.nn.functional.conv2d(x, lap).reshape(n, -1).var(1)
    over = (x >= 250).float().reshape(n, -1).mean(1)
    under = (x <= 5).float().reshape(n, -1).mean(1)
    return torch.stack([contrast, sharp, over, under], 1).cpu()


q = []
for b in BATCHES:
    x = torch.rand(b, 1, 256, 256, device=cuda) * 255
    q.append(b / timed(lambda: quality(x), 20))
print()
print("quality measurements (256×256 grey) on the GPU, images/s at batch 1 / 32 / 128: " + " / ".join(f"{v:.0f}" for v in q))
