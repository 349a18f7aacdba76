#!/usr/bin/env bash
# The GPU check (run once whenever a CUDA machine is available; about 5–8
# minutes on a warm cache): builds the worker, runs the ML tests on CUDA,
# then prints pipeline images/s on the same images with CPU inference and
# with GPU inference at batch sizes 1, 32 and 128. Record the figures in
# docs/benchmarks.md.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/torch-env.sh
./scripts/models.sh

python -c "import torch; assert torch.cuda.is_available(), 'no CUDA GPU visible to torch'; print('GPU:', torch.cuda.get_device_name(0))"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true

export CARGO_TERM_COLOR=never
cargo build --release --locked -p picsift-ml -p picsift-tests --benches --tests
# The ML tests with every model on the GPU (PICSIFT_ML_DEVICE is read by the tests).
PICSIFT_ML_DEVICE=cuda cargo test --release --locked -p picsift-ml -p picsift-tests --test ml --test quality
# Pipeline throughput: CPU inference, then GPU inference at three batch sizes.
PICSIFT_BENCH_IMAGES=${PICSIFT_BENCH_IMAGES:-256} \
PICSIFT_BENCH_DEVICES="cpu:32,cuda:1,cuda:32,cuda:128" \
    cargo bench --locked -p picsift-tests --bench ml
